//! The `cairn` binary as an operator runs it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn cairn(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") || k == "DATABASE_URL" || k == "REDIS_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn version_and_help_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, _) = run(cairn(tmp.path()).arg("version"));
    assert_eq!(
        (code, out.trim()),
        (0, concat!("cairn ", env!("CARGO_PKG_VERSION")))
    );
    let (code, out, _) = run(cairn(tmp.path()).args(["version", "--json"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["schema"]["sqlite"].as_i64().unwrap() >= 1);
    let (code, out, _) = run(cairn(tmp.path()).arg("--help"));
    assert_eq!(code, 0);
    for sub in ["serve", "migrate", "config", "secrets", "health", "version"] {
        assert!(out.contains(sub), "--help does not mention {sub}");
    }
}

#[test]
fn config_check_lists_every_problem_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = run(cairn(tmp.path())
        .args(["config", "check"])
        .env("CAIRN_LISTEN", "nowhere")
        .env("CAIRN_HTTP__BODY_LIMIT_BYTES", "-1")
        .env("CAIRN_DATBASE_URL", "x"));
    assert_ne!(code, 0);
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(err.contains("listen (from env CAIRN_LISTEN)"), "{err}");
    assert!(err.contains("did you mean CAIRN_DATABASE_URL"), "{err}");

    let (code, out, _) = run(cairn(tmp.path()).args(["config", "check"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("production mode would refuse"), "{out}");
    let (code, _, err) = run(cairn(tmp.path()).args(["config", "check", "--production"]));
    assert_eq!(code, 1);
    assert!(err.contains("public_url"), "{err}");
}

#[test]
fn config_show_names_each_source_and_hides_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("c.toml"),
        "[http]\nrequest_timeout_secs = 9\n",
    )
    .unwrap();
    let key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    std::fs::write(tmp.path().join("cookie"), key).unwrap();
    let (code, out, err) = run(cairn(tmp.path())
        .args([
            "--config",
            "c.toml",
            "config",
            "show",
            "--set",
            "http.shutdown_grace_secs=3",
        ])
        .env("DATABASE_URL", "postgres://cairn:hunter2hunter2@db/cairn")
        .env("CAIRN_COOKIE_KEY_FILE", tmp.path().join("cookie"))
        .env("CAIRN_DATA_KEY", key));
    assert_eq!(code, 0, "{err}");
    let line = |k: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{k} ")))
            .unwrap()
            .to_owned()
    };
    assert!(line("listen").ends_with("default"));
    assert!(line("http.request_timeout_secs").contains("file c.toml"));
    assert!(line("http.shutdown_grace_secs").contains("flag --set http.shutdown_grace_secs"));
    assert!(line("database_url").contains("postgres://cairn:***@db/cairn"));
    assert!(line("database_url").contains("env DATABASE_URL"));
    assert!(
        line("cookie_key").contains("<redacted>")
            && line("cookie_key").contains("secret file CAIRN_COOKIE_KEY_FILE")
    );
    assert!(line("data_key").contains("env CAIRN_DATA_KEY"));
    assert!(
        !out.contains("hunter2hunter2") && !out.contains(key),
        "{out}"
    );
}

#[test]
fn secrets_generate_writes_owner_only_files_ready_for_file_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("provisioned");
    let (code, out, err) = run(cairn(tmp.path())
        .args(["secrets", "generate", "--out"])
        .arg(&out_dir));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("CAIRN_DATA_KEY_FILE="), "{out}");
    assert_eq!(
        std::fs::metadata(&out_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for f in ["signing_key.pem", "data_key", "cookie_key", "metrics_token"] {
        let mode = std::fs::metadata(out_dir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // They pass production's secret checks when used through *_FILE.
    let (code, out, err) = run(cairn(tmp.path())
        .args(["config", "check", "--production"])
        .env("CAIRN_PUBLIC_URL", "https://cairn.example.com")
        .env("CAIRN_HTTP__TRUSTED_PROXIES", "10.0.0.0/8")
        .env("CAIRN_SIGNING_KEY_FILE", out_dir.join("signing_key.pem"))
        .env("CAIRN_DATA_KEY_FILE", out_dir.join("data_key"))
        .env("CAIRN_COOKIE_KEY_FILE", out_dir.join("cookie_key"))
        .env("CAIRN_METRICS__TOKEN_FILE", out_dir.join("metrics_token")));
    assert_eq!(code, 0, "{out}{err}");
    // Never overwritten by accident.
    let before = std::fs::read(out_dir.join("data_key")).unwrap();
    let (code, _, err) = run(cairn(tmp.path())
        .args(["secrets", "generate", "--out"])
        .arg(&out_dir));
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(out_dir.join("data_key")).unwrap(), before);
}

#[test]
fn migrate_dry_run_lists_pending_then_migrate_applies_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, err) = run(cairn(tmp.path()).args(["migrate", "--dry-run"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("schema version 0") && out.contains("would apply 0001"),
        "{out}"
    );
    let (code, out, _) = run(cairn(tmp.path()).arg("migrate"));
    assert_eq!(code, 0);
    assert!(out.contains("applied 0001"), "{out}");
    let (code, out, _) = run(cairn(tmp.path()).args(["migrate", "--dry-run"]));
    assert_eq!(code, 0);
    assert!(out.contains("nothing would run"), "{out}");
}

#[tokio::test]
async fn a_database_from_a_newer_release_stops_migrate_and_serve_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(run(cairn(tmp.path()).arg("migrate")).0, 0);
    let url = format!(
        "sqlite://{}",
        tmp.path().join("cairn-data/cairn.db").display()
    );
    let db = cairn_store::Db::connect(&cairn_store::ConnectOptions::new(url))
        .await
        .unwrap();
    if let cairn_store::Pool::Sqlite(p) = db.pool() {
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (42, 'future', 1, x'00', 0)")
            .execute(p)
            .await
            .unwrap();
    }
    db.close().await;
    let (code, _, err) = run(cairn(tmp.path()).arg("migrate"));
    assert_eq!(code, 1);
    let latest = cairn_store::migrate::latest_version(cairn_store::Backend::Sqlite);
    assert!(
        err.contains("version 42") && err.contains(&format!("binary's {latest}")),
        "{err}"
    );
    let (code, _, err) = run(cairn(tmp.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CAIRN_LOG_FORMAT", "json"));
    assert_eq!(code, 1);
    assert!(err.contains("version 42"), "{err}");
}

#[test]
fn bad_starts_exit_non_zero_saying_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("not-a-dir"), "x").unwrap();
    let (code, _, err) = run(cairn(tmp.path()).args(["serve", "--data-dir", "not-a-dir"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("not a directory") && err.contains("CAIRN_DATA_DIR"),
        "{err}"
    );

    std::fs::write(tmp.path().join("bad.toml"), "[http\n").unwrap();
    let (code, _, err) = run(cairn(tmp.path()).args(["--config", "bad.toml", "serve"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("not valid TOML") && err.contains("bad.toml"),
        "{err}"
    );

    let (code, _, err) = run(cairn(tmp.path())
        .arg("serve")
        .env(
            "CAIRN_DATABASE_URL",
            "postgres://cairn:hunter2hunter2@127.0.0.1:1/cairn",
        )
        .env("CAIRN_DATABASE__CONNECT_ATTEMPTS", "2")
        .env("CAIRN_DATABASE__ACQUIRE_TIMEOUT_SECS", "1"));
    assert_eq!(code, 1);
    assert!(
        err.contains("postgres://cairn:***@127.0.0.1:1/cairn") && !err.contains("hunter2hunter2"),
        "{err}"
    );
}

/// The README's first command, end to end: serve, health (as a container check would), SIGTERM.
#[test]
fn serve_prints_its_url_answers_health_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = cairn(tmp.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CAIRN_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = loop {
        assert!(Instant::now() < deadline, "no URL printed");
        let line = lines.next().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(url) = v["url"].as_str() {
            break url.to_owned();
        }
    };
    assert!(url.starts_with("http://127.0.0.1:"));
    let (code, out, err) =
        run(cairn(tmp.path()).args(["health", "--url", &format!("{url}/api/health")]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"status\":\"ok\""), "{out}");

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let (code, _, _) = run(cairn(tmp.path()).args([
        "health",
        "--url",
        &format!("{url}/api/health"),
        "--timeout-secs",
        "2",
    ]));
    assert_eq!(code, 1, "health must fail once the server is gone");
}

fn with_stdin(cmd: &mut Command, input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn admin_create_makes_the_owner_then_admins_and_reset_password_ends_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let fast = [
        "--set",
        "auth.argon2_memory_kib=1024",
        "--set",
        "auth.argon2_iterations=1",
    ];
    let (code, out, err) = with_stdin(
        cairn(tmp.path()).args(fast).args([
            "admin",
            "create",
            "--email",
            "Boss@Example.com",
            "--password-stdin",
        ]),
        "correct horse battery staple\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "created owner boss@example.com");
    let (code, out, _) = with_stdin(
        cairn(tmp.path()).args(fast).args([
            "admin",
            "create",
            "--email",
            "ops@example.com",
            "--password-stdin",
        ]),
        "another long passphrase\n",
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "created admin ops@example.com");
    // Refusals: a weak password, a duplicate, a second owner, nothing on stdin.
    let (code, _, err) = with_stdin(
        cairn(tmp.path()).args(fast).args([
            "admin",
            "create",
            "--email",
            "x@example.com",
            "--password-stdin",
        ]),
        "password\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("at least 12 characters"), "{err}");
    let (code, _, err) = with_stdin(
        cairn(tmp.path()).args(fast).args([
            "admin",
            "create",
            "--email",
            "ops@example.com",
            "--password-stdin",
        ]),
        "yet another long passphrase\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = with_stdin(
        cairn(tmp.path()).args(fast).args([
            "admin",
            "create",
            "--email",
            "o2@example.com",
            "--role",
            "owner",
            "--password-stdin",
        ]),
        "yet another long passphrase\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("already has an owner"), "{err}");
    let (code, _, err) = with_stdin(
        cairn(tmp.path()).args(fast).args([
            "admin",
            "reset-password",
            "--email",
            "nobody@example.com",
            "--password-stdin",
        ]),
        "yet another long passphrase\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("no account"), "{err}");
    let (code, out, err) = with_stdin(
        cairn(tmp.path()).args(fast).args([
            "admin",
            "reset-password",
            "--email",
            "BOSS@example.com",
            "--password-stdin",
        ]),
        "a completely new passphrase\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("boss@example.com"), "{out}");
    // The setup token is gone once an owner exists.
    assert!(!tmp.path().join("cairn-data/setup-token").exists());
}

#[test]
fn import_brings_folders_in_and_a_second_run_skips_what_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    let fast = [
        "--set",
        "auth.argon2_memory_kib=1024",
        "--set",
        "auth.argon2_iterations=1",
    ];
    let (code, _, err) = with_stdin(
        cairn(tmp.path()).args(fast).args([
            "admin",
            "create",
            "--email",
            "owner@example.com",
            "--password-stdin",
        ]),
        "correct horse battery staple\n",
    );
    assert_eq!(code, 0, "{err}");
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(docs.join("meetings")).unwrap();
    std::fs::create_dir_all(docs.join(".git")).unwrap();
    std::fs::write(
        docs.join("readme.md"),
        "# Readme\n\nHow the trail is kept.\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("meetings/standup.vtt"),
        "WEBVTT\n\n00:00:01.000 --> 00:00:04.000\n<v Ada>We cleared the north trail.\n\n00:00:05.000 --> 00:00:07.500\n<v Ben>Good, the cairns are up.\n",
    )
    .unwrap();
    std::fs::write(docs.join(".git/config"), "ignored").unwrap();
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.resize(300, 0);
    std::fs::write(docs.join("tool.txt"), elf).unwrap();
    let data = tmp.path().join("cairn-data");
    let import = || {
        run(cairn(tmp.path())
            .args(["--data-dir"])
            .arg(&data)
            .args([
                "--set",
                "uploads.profile=all",
                "import",
                "--collection",
                "Handbook",
            ])
            .arg(&docs))
    };
    let (code, out, err) = import();
    // The binary masquerading as text is refused (exit 1), the rest ingested.
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("2 new, 0 already in \"Handbook\", 1 refused"),
        "{out}"
    );
    assert!(out.contains("tool.txt"), "{out}");
    assert!(out.contains("2 ingested, 0 failed"), "{out}");
    std::fs::remove_file(docs.join("tool.txt")).unwrap();
    let (code, out, err) = import();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 new, 2 already in \"Handbook\", 0 refused"),
        "{out}"
    );
}
