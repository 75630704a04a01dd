use std::collections::BTreeMap;
use std::path::Path;

use super::production::{self, weakness};
use super::*;

const GOOD_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn inputs(env: &[(&str, &str)], file: Option<&Path>, flags: &[(&str, &str)]) -> Inputs {
    Inputs {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        config_file: file.map(Path::to_owned),
        flags: flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string(), format!("--set {k}")))
            .collect(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn defaults_alone_make_a_valid_development_config() {
    let c = Config::load(&inputs(&[], None, &[("data_dir", "/nonexistent/x")])).unwrap();
    assert_eq!(c.mode, Mode::Development);
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.http.body_limit_bytes, 10 * 1024 * 1024);
    assert!(c.database_url.is_none());
    assert_eq!(c.source_of("listen"), Source::Default);
}

#[test]
fn each_layer_overrides_the_one_below_and_is_named_as_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "c.toml",
        "listen = \"127.0.0.1:1000\"\n[http]\nrequest_timeout_secs = 7\nbody_limit_bytes = 2048\n[metrics]\ntoken = \"from-file\"\n",
    );
    let secret = write(tmp.path(), "token", &format!("{GOOD_HEX}\n"));
    let env = [
        ("CAIRN_LISTEN", "127.0.0.1:2000"),
        ("CAIRN_HTTP__BODY_LIMIT_BYTES", "4096"),
        ("CAIRN_METRICS__TOKEN", "from-env"),
        ("CAIRN_METRICS__TOKEN_FILE", secret.to_str().unwrap()),
    ];
    let c = Config::load(&inputs(&env, Some(&file), &[("listen", "127.0.0.1:3000")])).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(c.source_of("listen"), Source::Flag("--set listen".into()));
    assert_eq!(c.http.body_limit_bytes, 4096);
    assert_eq!(
        c.source_of("http.body_limit_bytes"),
        Source::Env("CAIRN_HTTP__BODY_LIMIT_BYTES".into())
    );
    assert_eq!(c.http.request_timeout.as_secs(), 7);
    assert_eq!(
        c.source_of("http.request_timeout_secs"),
        Source::File(file.clone())
    );
    // The secret file wins over the plain variable, and its trailing newline is dropped.
    assert_eq!(c.metrics.token.as_ref().unwrap().expose(), GOOD_HEX);
    assert!(matches!(
        c.source_of("metrics.token"),
        Source::SecretFile { .. }
    ));
}

#[test]
fn the_data_dir_config_file_is_read_when_present() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "cairn.toml", "listen = \"127.0.0.1:4444\"\n");
    let c = Config::load(&inputs(
        &[("CAIRN_DATA_DIR", tmp.path().to_str().unwrap())],
        None,
        &[],
    ))
    .unwrap();
    assert_eq!(c.listen.port(), 4444);
    assert_eq!(c.file(), Some(&tmp.path().join("cairn.toml")));
}

#[test]
fn conventional_database_and_redis_urls_are_accepted_below_cairn_ones() {
    let env = [
        ("DATABASE_URL", "postgres://a:pw@db/one"),
        ("REDIS_URL", "redis://r:6379"),
    ];
    let c = Config::load(&inputs(&env, None, &[])).unwrap();
    assert_eq!(
        c.database_url.as_ref().unwrap().expose(),
        "postgres://a:pw@db/one"
    );
    assert_eq!(
        c.source_of("database_url"),
        Source::Env("DATABASE_URL".into())
    );
    assert!(c.redis_url.is_some());
    let env = [
        ("DATABASE_URL", "postgres://a:pw@db/one"),
        ("CAIRN_DATABASE_URL", "postgres://b:pw@db/two"),
    ];
    let c = Config::load(&inputs(&env, None, &[])).unwrap();
    assert_eq!(
        c.database_url.as_ref().unwrap().expose(),
        "postgres://b:pw@db/two"
    );
}

#[test]
fn unknown_keys_in_the_file_and_environment_are_errors_that_name_them() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "c.toml",
        "lisen = \"x\"\n[http]\nbody_limit = 5\n",
    );
    let errors = Config::load(&inputs(&[("CAIRN_LISTN", "x")], Some(&file), &[])).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 3, "{text:?}");
    assert!(text
        .iter()
        .any(|t| t.starts_with("lisen (from file") && t.contains("did you mean `listen`")));
    assert!(text
        .iter()
        .any(|t| t.starts_with("http.body_limit (from file")));
    assert!(text
        .iter()
        .any(|t| t.contains("CAIRN_LISTN") && t.contains("did you mean CAIRN_LISTEN")));
}

#[test]
fn every_invalid_value_is_reported_at_once_with_its_layer() {
    let env = [
        ("CAIRN_LISTEN", "not-an-address"),
        ("CAIRN_ENV", "staging"),
        ("CAIRN_HTTP__BODY_LIMIT_BYTES", "ten"),
        ("CAIRN_METRICS__ALLOW_NETWORKS", "10.0.0.0/8,bogus"),
        ("CAIRN_DATABASE_URL", "mysql://u:topsecret@h/db"),
        (
            "CAIRN_CORS__ALLOWED_ORIGINS",
            "https://ok.example,https://bad.example/path",
        ),
    ];
    let errors = Config::load(&inputs(&env, None, &[])).unwrap_err();
    let text = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(errors.len(), 6, "{text}");
    assert!(text.contains("listen (from env CAIRN_LISTEN)"));
    assert!(text.contains("env (from env CAIRN_ENV): `staging` is not one of"));
    assert!(text.contains("`bogus` is not a network"));
    assert!(text.contains("https://bad.example/path"));
    assert!(
        !text.contains("topsecret"),
        "a password leaked into an error: {text}"
    );
}

#[test]
fn a_malformed_file_is_reported_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "c.toml", "listen = \n");
    let errors = Config::load(&inputs(&[], Some(&file), &[])).unwrap_err();
    assert!(errors[0].to_string().contains("not valid TOML"));
    assert_eq!(errors[0].source, Source::File(file));
    let missing = tmp.path().join("missing.toml");
    let errors = Config::load(&inputs(&[], Some(&missing), &[])).unwrap_err();
    assert!(errors[0].message.contains("cannot read configuration file"));
}

#[test]
fn an_unreadable_secret_file_is_an_error_naming_the_variable() {
    let errors = Config::load(&inputs(
        &[("CAIRN_DATA_KEY_FILE", "/nonexistent/key")],
        None,
        &[],
    ))
    .unwrap_err();
    assert_eq!(errors[0].key, "data_key");
    assert!(errors[0]
        .to_string()
        .contains("CAIRN_DATA_KEY_FILE=/nonexistent/key"));
}

#[test]
fn lists_come_from_toml_arrays_and_comma_separated_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "c.toml",
        "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.1\"]\n",
    );
    let c = Config::load(&inputs(&[], Some(&file), &[])).unwrap();
    assert_eq!(c.http.trusted_proxies.len(), 2);
    let c = Config::load(&inputs(
        &[("CAIRN_HTTP__TRUSTED_PROXIES", "10.0.0.0/8, ::1")],
        None,
        &[],
    ))
    .unwrap();
    assert_eq!(c.http.trusted_proxies.len(), 2);
}

#[test]
fn config_show_redacts_secrets_and_database_passwords() {
    let env = [
        (
            "CAIRN_DATABASE_URL",
            "postgres://cairn:hunter2hunter2@db/cairn",
        ),
        ("CAIRN_COOKIE_KEY", GOOD_HEX),
    ];
    let c = Config::load(&inputs(&env, None, &[])).unwrap();
    let shown = format!("{:?}", c.entries());
    assert!(
        !shown.contains("hunter2hunter2") && !shown.contains(GOOD_HEX),
        "{shown}"
    );
    assert!(shown.contains("postgres://cairn:***@db/cairn"));
    assert!(format!("{c:?}").contains("<redacted>") && !format!("{c:?}").contains(GOOD_HEX));
}

#[test]
fn production_lists_every_unsafe_setting_at_once() {
    let env = [
        ("CAIRN_ENV", "production"),
        ("CAIRN_DATA_KEY", "changeme-changeme-changeme-changeme"),
        (
            "CAIRN_COOKIE_KEY",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        ("CAIRN_METRICS__TOKEN", "short"),
        ("CAIRN_CORS__ALLOWED_ORIGINS", "*"),
        ("CAIRN_PUBLIC_URL", "http://cairn.example.com"),
        ("CAIRN_METRICS__PUBLIC", "true"),
    ];
    let c = Config::load(&inputs(&env, None, &[])).unwrap();
    let problems = production::problems(&c);
    let ids: Vec<&str> = problems.iter().map(|p| p.check).collect();
    assert_eq!(
        ids,
        [
            "weak_secret",
            "weak_secret",
            "weak_secret",
            "cors_any_origin_with_credentials",
            "plain_http"
        ],
        "{problems:#?}"
    );
    assert!(
        problems[0].message.contains("data_key") && problems[0].message.contains("known default")
    );
    assert!(problems[1].message.contains("cookie_key") && problems[1].message.contains("entropy"));
    assert!(
        problems[2].message.contains("metrics.token") && problems[2].message.contains("too short")
    );
    // The metrics token is set (weak, but set), so metrics are not "open without a token".
    let env = [
        ("CAIRN_ENV", "production"),
        ("CAIRN_METRICS__PUBLIC", "true"),
    ];
    let c = Config::load(&inputs(&env, None, &[])).unwrap();
    let ids: Vec<&str> = production::problems(&c).iter().map(|p| p.check).collect();
    assert_eq!(ids, ["public_url_missing", "metrics_open"]);
}

#[test]
fn production_refuses_the_mock_model_unless_allowed() {
    let base = [
        ("CAIRN_ENV", "production"),
        ("CAIRN_PUBLIC_URL", "https://cairn.example.com"),
        ("CAIRN_HTTP__TRUSTED_PROXIES", "10.0.0.0/8"),
        ("CAIRN_DATA_KEY", GOOD_HEX),
        ("CAIRN_CHAT__DEFAULT_MODEL", "mock"),
    ];
    let c = Config::load(&inputs(&base, None, &[])).unwrap();
    let ids: Vec<&str> = production::problems(&c).iter().map(|p| p.check).collect();
    assert_eq!(ids, ["mock_model"]);
    assert!(!crate::chat::mock_allowed(&c));
    let mut allowed = base.to_vec();
    allowed.push(("CAIRN_CHAT__ALLOW_MOCK", "true"));
    let c = Config::load(&inputs(&allowed, None, &[])).unwrap();
    assert_eq!(production::problems(&c), vec![]);
    assert!(crate::chat::mock_allowed(&c));
    // Development always offers it.
    let c = Config::load(&inputs(&[], None, &[])).unwrap();
    assert!(crate::chat::mock_allowed(&c));
    // Bad chat settings are reported.
    let bad = [
        ("CAIRN_CHAT__CURRENCY", "dollars"),
        ("CAIRN_CHAT__MIN_SIMILARITY", "2"),
    ];
    let errors = Config::load(&inputs(&bad, None, &[])).unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["chat.currency", "chat.min_similarity"], "{errors:?}");
}

#[test]
fn a_safe_production_config_has_no_problems() {
    let env = [
        ("CAIRN_ENV", "production"),
        ("CAIRN_PUBLIC_URL", "https://cairn.example.com"),
        ("CAIRN_HTTP__TRUSTED_PROXIES", "10.0.0.0/8"),
        ("CAIRN_DATA_KEY", GOOD_HEX),
    ];
    let c = Config::load(&inputs(&env, None, &[])).unwrap();
    assert_eq!(production::problems(&c), vec![]);
    assert!(c.served_over_https());
}

#[test]
fn secret_strength_rules() {
    assert_eq!(weakness(GOOD_HEX, 32), None);
    assert!(weakness(
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        32
    )
    .is_some());
    assert!(weakness("your-secret-key-here-please-change-it-now", 32).is_some());
    assert!(weakness("deadbeef", 32).is_some());
}

#[test]
fn the_configuration_reference_in_docs_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == reference_markdown(),
        "docs/configuration.md is out of date: run `cargo run -- config reference > docs/configuration.md`"
    );
}

#[test]
fn every_setting_has_a_unique_key_and_variable() {
    let mut keys = std::collections::HashSet::new();
    let mut vars = std::collections::HashSet::new();
    for s in spec::SETTINGS {
        assert!(keys.insert(s.key), "duplicate key {}", s.key);
        assert!(
            vars.insert(s.env_var()),
            "duplicate variable {}",
            s.env_var()
        );
        assert!(!s.help.is_empty());
    }
}

#[test]
fn tls_settings_that_cannot_work_are_refused_and_tls_satisfies_production() {
    let errors = |flags: &[(&str, &str)]| {
        let mut all = vec![("data_dir", "/nonexistent/x")];
        all.extend_from_slice(flags);
        Config::load(&inputs(&[], None, &all))
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(errors(&[("tls.mode", "files")]).contains("needs both `tls.cert_file`"));
    assert!(
        errors(&[("tls.mode", "acme"), ("tls.acme_challenge", "http-01")])
            .contains("set `tls.redirect_listen`")
    );
    assert!(errors(&[("tls.redirect_listen", "0.0.0.0:80")]).contains("it needs `tls.mode`"));
    assert!(errors(&[
        ("tls.mode", "self-signed"),
        ("tls.redirect_listen", "port 80")
    ])
    .contains("expected an address"));
    assert!(errors(&[("tls.hosts", "ok.example.com, bad_name, -x.com")]).contains("`bad_name`"));
    assert!(errors(&[
        ("tls.mode", "self-signed"),
        ("tls.hosts", "cairn.example.com, 10.0.0.1")
    ])
    .is_empty());
    assert!(errors(&[("tls.mode", "acme"), ("tls.hosts", "10.0.0.1")]).contains("`http-01`"));
    // Names are kept in one spelling.
    let c = Config::load(&inputs(
        &[],
        None,
        &[
            ("data_dir", "/nonexistent/x"),
            (
                "tls.hosts",
                "Cairn.Example.com, 2001:0db8::1, cairn.example.com",
            ),
        ],
    ))
    .unwrap();
    assert_eq!(c.tls.hosts, ["cairn.example.com", "2001:db8::1"]);

    // An https public URL with Cairn terminating TLS needs no trusted proxy, and gets HSTS.
    let c = Config::load(&inputs(
        &[],
        None,
        &[
            ("data_dir", "/nonexistent/x"),
            ("public_url", "https://cairn.example.com"),
            ("tls.mode", "acme"),
            ("tls.hsts_max_age_secs", "600"),
        ],
    ))
    .unwrap();
    assert!(!production::problems(&c)
        .iter()
        .any(|p| p.check == "plain_http"));
    assert_eq!(c.tls_hosts(), vec!["cairn.example.com".to_owned()]);
    let hsts = crate::http::security_headers(&c)
        .into_iter()
        .find(|(k, _)| k == "strict-transport-security")
        .map(|(_, v)| v);
    assert_eq!(hsts.unwrap(), "max-age=600; includeSubDomains");
}
