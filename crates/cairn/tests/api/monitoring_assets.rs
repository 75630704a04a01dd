//! The monitoring files in `deploy/` (Prometheus alert rules and their unit tests, the Grafana
//! dashboard) name only series the server's `/metrics` really carries, and every alert points
//! at a section of `docs/operations.md` that exists.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::helpers::{Backend, TestApp};

const RULES: &str = "deploy/prometheus/alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/alerts_test.yml";
const DASHBOARD: &str = "deploy/grafana/cairn-dashboard.json";

fn repo_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every identifier in `text` that begins with `cairn_`.
fn cairn_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("cairn_") {
        let start = from + at;
        let len = bytes[start..]
            .iter()
            .take_while(|b| is_name_byte(**b))
            .count();
        if start == 0 || !is_name_byte(bytes[start - 1]) {
            names.insert(text[start..start + len].to_owned());
        }
        from = start + len;
    }
    names
}

/// The series names an exposition can carry, from its `# TYPE` lines (present even for a
/// family with no series yet): counters are sampled as `_total`, histograms as `_bucket`,
/// `_sum` and `_count`, info metrics as `_info`, gauges under their own name.
fn exposed_series(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

/// GitHub's anchors for the headings of a Markdown document (outside fenced code).
fn heading_anchors(doc: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut in_code = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let anchor = line
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect::<String>();
        anchors.insert(anchor);
    }
    anchors
}

#[tokio::test]
async fn monitoring_files_name_only_series_the_server_exposes() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // One request first, so that series created on first use are there too.
    assert_eq!(app.get("/api/health").await.status(), 200);
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200, "loopback may read /metrics by default");
    let exposition = resp.text().await.unwrap();
    let exposed = exposed_series(&exposition);
    for name in [
        "cairn_http_requests_total",
        "cairn_http_request_duration_seconds_bucket",
        "cairn_build_info",
    ] {
        assert!(exposed.contains(name), "{name} not read from\n{exposition}");
    }

    for file in [RULES, RULE_TESTS, DASHBOARD] {
        let names = cairn_names(&repo_file(file));
        assert!(!names.is_empty(), "{file} names no Cairn metric");
        let unknown: Vec<&String> = names.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{file} names series that /metrics does not carry: {unknown:?}\nit carries: {exposed:?}"
        );
    }
}

#[test]
fn every_alert_has_a_duration_a_severity_and_a_runbook_section() {
    let rules = repo_file(RULES);
    let count = |key: &str| {
        rules
            .lines()
            .filter(|l| l.trim_start().starts_with(key))
            .count()
    };
    let alerts = count("- alert:");
    assert!(alerts > 0, "{RULES} has no alert");
    for key in [
        "for:",
        "severity:",
        "summary:",
        "description:",
        "runbook_url:",
    ] {
        assert_eq!(count(key), alerts, "every alert in {RULES} needs `{key}`");
    }

    let anchors = heading_anchors(&repo_file("docs/operations.md"));
    for line in rules.lines() {
        let Some(url) = line.trim_start().strip_prefix("runbook_url:") else {
            continue;
        };
        let url = url.trim().trim_matches('"');
        let anchor = url
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("a runbook outside docs/operations.md: {url}"));
        assert!(
            anchors.contains(anchor),
            "docs/operations.md has no heading for #{anchor}"
        );
    }
}

#[test]
fn the_dashboard_is_json_on_the_templated_data_source_and_instances() {
    let text = repo_file(DASHBOARD);
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for name in ["DS_PROMETHEUS", "instance"] {
        assert!(variables.contains(&name), "no `{name}` variable");
    }

    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "two panels share the id of {title}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains(r#"instance=~"$instance""#),
                "{title} ignores the instance variable: {expr}"
            );
            queries += 1;
        }
    }
    assert!(queries > 0, "the dashboard has no query");
}
