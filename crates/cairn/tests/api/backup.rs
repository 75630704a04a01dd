//! Backups: made through the API while the server runs, and offline; restored into a fresh
//! workspace with every table's rows and every file identical; refused when damaged, from
//! another key, over a live workspace, or over data without `--replace`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn::backup::{self, BackupError, Context};
use cairn_store::{Db, Pool};
use reqwest::Method;
use serde_json::Value;

use crate::documents::{new_collection, settled, upload};
use crate::helpers::*;

/// Every row of every table (but the migration ledger, whose install times differ), as text,
/// sorted: two workspaces with equal dumps hold the same data.
async fn dump(db: &Db) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    match db.pool() {
        Pool::Sqlite(p) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                 AND name <> '_sqlx_migrations' AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
            )
            .fetch_all(p)
            .await
            .unwrap();
            for t in tables {
                let cols: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
                    .bind(&t)
                    .fetch_all(p)
                    .await
                    .unwrap();
                let expr = cols
                    .iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                let mut rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT {expr} FROM \"{t}\""))
                        .fetch_all(p)
                        .await
                        .unwrap();
                rows.sort();
                out.insert(t, rows);
            }
        }
        Pool::Postgres(p) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
                 AND tablename <> '_sqlx_migrations' ORDER BY 1",
            )
            .fetch_all(p)
            .await
            .unwrap();
            for t in tables {
                let mut rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT x::text FROM \"{t}\" x"))
                        .fetch_all(p)
                        .await
                        .unwrap();
                rows.sort();
                out.insert(t, rows);
            }
        }
    }
    out
}

async fn wait_for_job(app: &TestApp, s: &Session, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let job: Value = app
            .get_as(&format!("/api/admin/jobs/{id}"), s)
            .await
            .json()
            .await
            .unwrap();
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return job;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "stuck: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

const HANDBOOK: &str = "# Leave\n\nEveryone gets thirty days of paid leave a year.\n\n## Travel\n\nTrain journeys under six hours are booked in second class.\n";

async fn backup_round_trip(backend: Backend) {
    // The data directory outlives the first server: the offline backup reads it.
    let original = tempfile::tempdir().unwrap();
    let app = TestApp::builder(backend)
        .data_dir(&original.path().join("data"))
        .spawn()
        .await;
    let owner = app.create_owner().await;
    let admin = app.user_with("admin@example.com", "admin", "active").await;
    let member = app
        .user_with("member@example.com", "member", "active")
        .await;
    let coll = new_collection(&app, &owner, "Handbook").await;
    let mut docs = Vec::new();
    for (name, body) in [
        ("handbook.md", HANDBOOK.as_bytes().to_vec()),
        (
            "notes.txt",
            "Quarterly planning happens in the first week of each quarter.\n"
                .repeat(200)
                .into_bytes(),
        ),
    ] {
        let resp = upload(&app, &owner, &coll, name, body.clone()).await;
        assert_eq!(resp.status(), 202);
        let d: Value = resp.json().await.unwrap();
        let id = d["id"].as_str().unwrap().to_owned();
        assert_eq!(settled(&app, &owner, &id).await["status"], "ready");
        docs.push((id, body));
    }

    // Through the API, while the server runs.
    assert_eq!(
        app.get_as("/api/admin/backups", &member).await.status(),
        403
    );
    let resp = app
        .call(Method::POST, "/api/admin/backups", &admin, None)
        .await;
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let job = wait_for_job(&app, &admin, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let listing: Value = app
        .get_as("/api/admin/backups", &admin)
        .await
        .json()
        .await
        .unwrap();
    let items = listing["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listing}");
    let name = items[0]["name"].as_str().unwrap().to_owned();
    let want_backend = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(items[0]["header"]["backend"], want_backend);
    assert_eq!(items[0]["header"]["trigger"], "api");
    assert_eq!(listing["schedule"], "0 3 * * *");
    // Downloading is the owner's.
    let path = format!("/api/admin/backups/{name}");
    assert_eq!(app.get_as(&path, &admin).await.status(), 403);
    let resp = app.get_as(&path, &owner).await;
    assert_eq!(resp.status(), 200);
    let downloaded = resp.bytes().await.unwrap();
    let on_disk = std::fs::read(app.data_dir.join("backups").join(&name)).unwrap();
    assert_eq!(downloaded.len(), on_disk.len());
    assert!(downloaded[..] == on_disk[..]);
    assert_eq!(
        app.get_as("/api/admin/backups/..%2Fcairn.db", &owner)
            .await
            .status(),
        404
    );

    // Offline, for an exact comparison.
    let config = app.state.config.clone();
    let key = *app.state.keys.data_key;
    let data_dir = app.data_dir.clone();
    app.stop().await.unwrap();
    let db = cairn::app::connect_db(&config).await.unwrap();
    let blobs = cairn::blobs::BlobStore::from_config(&config).unwrap();
    let ctx = Context {
        config: &config,
        db: &db,
        blobs: &blobs,
        data_key: &key,
    };
    let created = backup::create(&ctx, "manual").await.unwrap();
    assert_eq!(created.blobs, 2);
    assert_eq!(created.missing_blobs, 0);
    let before = dump(&db).await;
    db.close().await;
    assert!(before["chunks"].len() >= 2 && before["users"].len() == 3);
    let file = data_dir.join("backups").join(&created.name);
    let file = file.to_str().unwrap();
    let manifest = backup::verify(&config, &key, file).await.unwrap();
    assert_eq!(manifest.blobs, 2);
    // The name works as well as the path.
    backup::verify(&config, &key, &created.name).await.unwrap();

    // A fresh machine: another data directory (and database) with only the secrets kept.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_dir = fresh.path().join("data");
    copy_dir(&data_dir.join("secrets"), &fresh_dir.join("secrets"));
    let mut builder = TestApp::builder(backend).data_dir(&fresh_dir);
    let (config_b, _) = builder.config().await.unwrap();
    cairn::datadir::prepare(&fresh_dir).unwrap();
    let db_b = cairn::app::connect_db(&config_b).await.unwrap();
    let blobs_b = cairn::blobs::BlobStore::from_config(&config_b).unwrap();
    let restored = backup::restore(&config_b, &db_b, &blobs_b, &key, file, false)
        .await
        .unwrap();
    assert_eq!(restored.blobs, 2);
    db_b.close().await;
    let db_b = cairn::app::connect_db(&config_b).await.unwrap();
    cairn_store::migrate::run(&db_b).await.unwrap();
    let after = dump(&db_b).await;
    // Over a workspace that has data, only with `replace`.
    let again = backup::restore(&config_b, &db_b, &blobs_b, &key, file, false).await;
    assert!(matches!(again, Err(BackupError::Refused(_))), "{again:?}");
    db_b.close().await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (table, rows) in &before {
        assert!(
            rows == &after[table],
            "table {table} differs after the restore"
        );
    }

    // The restored workspace serves: the owner signs in, files come back byte for byte,
    // search finds them.
    let mut b = TestApp::builder(backend).data_dir(&fresh_dir);
    if let Some(url) = &config_b.database_url {
        b = b.set("database_url", url.expose());
    }
    let app_b = b.spawn().await;
    let resp = app_b.sign_in(OWNER_EMAIL, PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let owner_b = Session::from_body(&resp.json::<Value>().await.unwrap());
    for (id, body) in &docs {
        let resp = app_b
            .get_as(&format!("/api/documents/{id}/content"), &owner_b)
            .await;
        assert_eq!(resp.status(), 200);
        assert!(resp.bytes().await.unwrap()[..] == body[..]);
    }
    let hits: Value = app_b
        .call(
            Method::POST,
            "/api/search",
            &owner_b,
            Some(serde_json::json!({ "query": "paid leave", "mode": "keyword" })),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        hits["results"].as_array().is_some_and(|h| !h.is_empty()),
        "{hits}"
    );
    app_b.stop().await.unwrap();
}

on_both_backends!(backup_round_trip);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_foreign_and_unsafe_restores_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let owner = app.create_owner().await;
    let coll = new_collection(&app, &owner, "Notes").await;
    let resp = upload(&app, &owner, &coll, "a.md", HANDBOOK.as_bytes().to_vec()).await;
    let d: Value = resp.json().await.unwrap();
    settled(&app, &owner, d["id"].as_str().unwrap()).await;
    let config = app.state.config.clone();
    let key = *app.state.keys.data_key;
    let ctx = Context {
        config: &config,
        db: app.state.store.db(),
        blobs: &app.state.blobs,
        data_key: &key,
    };
    // Online: the server keeps running.
    let created = backup::create(&ctx, "manual").await.unwrap();
    let file = app.data_dir.join("backups").join(&created.name);
    let bytes = std::fs::read(&file).unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // Cut short, at any point.
    for keep in [bytes.len() - 1, bytes.len() / 2, 40, 5] {
        let cut = tmp.path().join(format!("cut-{keep}.cairnbackup"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        let err = backup::verify(&config, &key, cut.to_str().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, BackupError::Corrupt(_)), "{keep}: {err}");
    }
    // One changed byte.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 200;
    flipped[at] ^= 0x20;
    let f = tmp.path().join("flipped.cairnbackup");
    std::fs::write(&f, &flipped).unwrap();
    let err = backup::verify(&config, &key, f.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Corrupt(_)), "{err}");
    // Another workspace's key.
    let err = backup::verify(&config, &[9u8; 32], file.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::WrongKey), "{err}");
    // Not a backup at all.
    let junk = tmp.path().join("junk.cairnbackup");
    std::fs::write(&junk, b"PK\x03\x04 definitely a zip").unwrap();
    assert!(matches!(
        backup::verify(&config, &key, junk.to_str().unwrap()).await,
        Err(BackupError::Corrupt(_))
    ));
    // While the server holds the data directory, a restore cannot take it.
    let busy = cairn::datadir::hold_exclusive(&app.data_dir).unwrap_err();
    assert!(busy.contains("stop it first"), "{busy}");
    // The damaged files were never listed, and the good backup still verifies.
    let listed = backup::Destination::from_config(&config)
        .unwrap()
        .list()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    backup::verify(&config, &key, &created.name).await.unwrap();
    app.stop().await.unwrap();
}

fn cairn_cli(data_dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--data-dir").arg(data_dir);
    cmd
}

fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains('#'))
                .collect()
        })
        .unwrap_or_default()
}

/// `kill -9` in the middle of a backup leaves nothing that lists or verifies as a backup; a
/// full disk fails cleanly and keeps older backups; a restore will not run beside a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_and_failing_backups_leave_older_ones_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let app = TestApp::builder(Backend::Sqlite)
        .data_dir(&data)
        .spawn()
        .await;
    let owner = app.create_owner().await;
    let coll = new_collection(&app, &owner, "Big").await;
    // About 8 MB of varied text: slow to compress at zstd's highest level.
    let mut text = String::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while text.len() < 8_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("Line {x:x} of the archive, entry {}.\n", x % 9973));
    }
    let resp = upload(&app, &owner, &coll, "big.txt", text.into_bytes()).await;
    let d: Value = resp.json().await.unwrap();
    settled(&app, &owner, d["id"].as_str().unwrap()).await;
    app.stop().await.unwrap();
    let backups = data.join("backups");

    // A first, good backup.
    let out = cairn_cli(&data)
        .args(["backup", "create"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = std::fs::read_dir(&backups).unwrap().count();
    assert_eq!(good, 1);

    // Killed half-way.
    let mut child = cairn_cli(&data)
        .args(["backup", "create", "--set", "backup.compression_level=19"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while partials(&backups).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no partial upload appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup ended before it could be killed"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = partials(&backups);
    assert_eq!(left.len(), 1, "{left:?}");
    let out = cairn_cli(&data)
        .args(["backup", "list", "--json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let out = cairn_cli(&data)
        .args(["backup", "verify"])
        .arg(backups.join(&left[0]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt"));

    // A disk that fills up (a file-size limit stands in for it): a clean failure. (The killed
    // run's staging stays until maintenance clears leftovers; this one's must not.)
    let staged = || {
        std::fs::read_dir(data.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let staged_before = staged();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 4096; exec \"$0\" --data-dir '{}' backup create",
            data.display()
        ))
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .env_remove("CAIRN_DATA_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("older backups are untouched"), "{stderr}");
    let out = cairn_cli(&data)
        .args(["backup", "list", "--json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let name = listed[0]["name"].as_str().unwrap();
    let out = cairn_cli(&data)
        .args(["backup", "verify", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(staged(), staged_before, "staging was left behind");
    assert_eq!(
        partials(&backups).len(),
        1,
        "the failed run left a partial upload"
    );

    // Not beside a running server.
    let app = TestApp::builder(Backend::Sqlite)
        .data_dir(&data)
        .spawn()
        .await;
    let out = cairn_cli(&data)
        .args(["backup", "restore", name, "--replace"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop it first"));
    app.stop().await.unwrap();
    // Stopped, it restores over the workspace and keeps the old file.
    let out = cairn_cli(&data)
        .args(["backup", "restore", name, "--replace"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("the previous database is kept at"),
        "{stdout}"
    );
}

async fn set_expiry(db: &Db, at: cairn_store::Timestamp) {
    let sql = "UPDATE sessions SET expires_at = $1";
    match db.pool() {
        Pool::Sqlite(p) => {
            sqlx::query(sql).bind(at).execute(p).await.unwrap();
        }
        Pool::Postgres(p) => {
            sqlx::query(sql).bind(at).execute(p).await.unwrap();
        }
    }
}

/// Maintenance and backups are queued once per slot however many processes notice it, and
/// maintenance removes what has ended.
async fn scheduled_jobs_are_queued_once_per_slot(backend: Backend) {
    let app = TestApp::builder(backend)
        .set("ingest.workers", "0")
        .set("backup.schedule", "0 3 * * *")
        .spawn()
        .await;
    let state = &app.state;
    let _owner = app.create_owner().await;
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let db = state.store.db().clone();
    let count = |kind: &'static str, slot: &'static str| {
        let db = db.clone();
        async move {
            let subject = format!("slot:{}", at(slot).timestamp());
            let sql = "SELECT COUNT(*) FROM jobs WHERE kind = $1 AND subject = $2";
            let n: i64 = match db.pool() {
                Pool::Sqlite(p) => sqlx::query_scalar(sql)
                    .bind(kind)
                    .bind(&subject)
                    .fetch_one(p)
                    .await
                    .unwrap(),
                Pool::Postgres(p) => sqlx::query_scalar(sql)
                    .bind(kind)
                    .bind(&subject)
                    .fetch_one(p)
                    .await
                    .unwrap(),
            };
            n
        }
    };
    // Two replicas notice 03:10 at once, then again a minute later.
    tokio::join!(
        cairn::documents::worker::schedule_due(state, at("2030-01-01T03:10:00Z")),
        cairn::documents::worker::schedule_due(state, at("2030-01-01T03:10:00Z")),
    );
    cairn::documents::worker::schedule_due(state, at("2030-01-01T03:11:00Z")).await;
    assert_eq!(count("backup.create", "2030-01-01T03:00:00Z").await, 1);
    assert_eq!(count("maintenance.run", "2030-01-01T03:00:00Z").await, 1);
    // Past the hour's grace, a missed backup slot is left for the next one.
    cairn::documents::worker::schedule_due(state, at("2030-01-02T04:30:00Z")).await;
    assert_eq!(count("backup.create", "2030-01-02T03:00:00Z").await, 0);
    assert_eq!(count("maintenance.run", "2030-01-02T04:00:00Z").await, 1);

    // Sessions ended over a week ago go.
    let db = state.store.db();
    set_expiry(
        db,
        cairn_store::Timestamp::now().plus_millis(-8 * 86_400_000),
    )
    .await;
    cairn::documents::worker::maintain_once(state).await;
    let pruned = state
        .store
        .prune_expired_credentials(cairn_store::Timestamp::now())
        .await
        .unwrap();
    assert_eq!(pruned.sessions, 0, "maintenance already removed them");
    let left: i64 = match db.pool() {
        Pool::Sqlite(p) => sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(p)
            .await
            .unwrap(),
        Pool::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(p)
            .await
            .unwrap(),
    };
    assert_eq!(left, 0);
    app.stop().await.unwrap();
}

on_both_backends!(scheduled_jobs_are_queued_once_per_slot);

/// `cairn doctor` reports each dependency, and fails (exit 1) naming the fix when one is down.
#[test]
fn doctor_reports_findings_with_fixes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = cairn_cli(&data)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let findings: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    for want in [
        "configuration",
        "data directory",
        "free disk",
        "database",
        "schema",
        "file storage",
        "backups",
    ] {
        assert!(checks.contains(&want), "{want} missing from {findings}");
    }
    // A fresh database is not migrated by the doctor: it says so, with the fix.
    let schema = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "schema")
        .unwrap();
    assert_eq!(schema["level"], "warn", "{schema}");
    assert!(schema["fix"].as_str().unwrap().contains("cairn migrate"));

    let out = cairn_cli(&data)
        .args([
            "doctor",
            "--set",
            "database_url=postgres://nobody:hunter2pw@127.0.0.1:1/none",
            "--set",
            "database.connect_attempts=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  database"), "{stdout}");
    assert!(stdout.contains("fix:"), "{stdout}");
    assert!(
        !stdout.contains("hunter2pw"),
        "the password leaked: {stdout}"
    );
}

/// Files and backups both in S3 (moto): a backup made through the API lands under the prefix as
/// one complete object, and restores on a fresh machine that has only the data key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_to_s3_restore_on_a_fresh_machine() {
    let Some(s3) = s3_url() else { return };
    let http = reqwest::Client::new();
    let files = format!("cairn-files-{}", uuid::Uuid::now_v7().simple());
    let vault = format!("cairn-backups-{}", uuid::Uuid::now_v7().simple());
    for bucket in [&files, &vault] {
        let resp = http.put(format!("{s3}/{bucket}")).send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    let s3_settings = |b: crate::helpers::TestAppBuilder| {
        b.set("storage.backend", "s3")
            .set("storage.s3_bucket", &files)
            .set("storage.s3_endpoint", &s3)
            .set("storage.s3_allow_http", "true")
            .set("storage.s3_access_key_id", "cairn-test")
            .set(
                "storage.s3_secret_access_key",
                "cairn-test-secret-key-0123456789",
            )
            .set("backup.destination", "s3")
            .set("backup.s3_bucket", &vault)
            .set("backup.s3_prefix", "nightly/")
    };
    let original = tempfile::tempdir().unwrap();
    let data_dir = original.path().join("data");
    let app = s3_settings(TestApp::builder(Backend::Sqlite).data_dir(&data_dir))
        .spawn()
        .await;
    let owner = app.create_owner().await;
    let coll = new_collection(&app, &owner, "Handbook").await;
    let body = HANDBOOK.repeat(50).into_bytes();
    let resp = upload(&app, &owner, &coll, "handbook.md", body.clone()).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(settled(&app, &owner, &id).await["status"], "ready");

    let resp = app
        .call(Method::POST, "/api/admin/backups", &owner, None)
        .await;
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let job = wait_for_job(&app, &owner, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let listing: Value = app
        .get_as("/api/admin/backups", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listing["destination"],
        format!("S3 bucket {vault}"),
        "{listing}"
    );
    let items = listing["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listing}");
    let name = items[0]["name"].as_str().unwrap().to_owned();
    // One complete object under the prefix, and nothing else in the bucket.
    let keys = http
        .get(format!("{s3}/{vault}?list-type=2"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(keys.matches("<Key>").count(), 1, "{keys}");
    assert!(
        keys.contains(&format!("<Key>nightly/{name}</Key>")),
        "{keys}"
    );
    let object = http
        .get(format!("{s3}/{vault}/nightly/{name}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(object.starts_with(b"CAIRNBACKUP1"));
    let downloaded = app
        .get_as(&format!("/api/admin/backups/{name}"), &owner)
        .await
        .bytes()
        .await
        .unwrap();
    assert!(downloaded[..] == object[..]);
    let key = *app.state.keys.data_key;
    app.stop().await.unwrap();

    // A fresh machine with only the secrets, the same buckets, and an empty file bucket: the
    // restore brings the files back into it.
    let emptied = format!("cairn-files-{}", uuid::Uuid::now_v7().simple());
    let resp = http.put(format!("{s3}/{emptied}")).send().await.unwrap();
    assert!(resp.status().is_success());
    let fresh = tempfile::tempdir().unwrap();
    let fresh_dir = fresh.path().join("data");
    copy_dir(&data_dir.join("secrets"), &fresh_dir.join("secrets"));
    let mut builder = s3_settings(TestApp::builder(Backend::Sqlite).data_dir(&fresh_dir))
        .set("storage.s3_bucket", &emptied);
    let (config_b, _) = builder.config().await.unwrap();
    cairn::datadir::prepare(&fresh_dir).unwrap();
    let manifest = backup::verify(&config_b, &key, &name).await.unwrap();
    assert_eq!(manifest.blobs, 1);
    let db_b = cairn::app::connect_db(&config_b).await.unwrap();
    let blobs_b = cairn::blobs::BlobStore::from_config(&config_b).unwrap();
    let restored = backup::restore(&config_b, &db_b, &blobs_b, &key, &name, false)
        .await
        .unwrap();
    assert_eq!(restored.blobs, 1);
    db_b.close().await;
    let app_b = s3_settings(TestApp::builder(Backend::Sqlite).data_dir(&fresh_dir))
        .set("storage.s3_bucket", &emptied)
        .spawn()
        .await;
    let resp = app_b.sign_in(OWNER_EMAIL, PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let owner_b = Session::from_body(&resp.json::<Value>().await.unwrap());
    let back = app_b
        .get_as(&format!("/api/documents/{id}/content"), &owner_b)
        .await;
    assert_eq!(back.status(), 200);
    assert!(back.bytes().await.unwrap()[..] == body[..]);
    // The restarted server knows how old the newest backup is.
    let metrics = app_b.get("/metrics").await.text().await.unwrap();
    let created = items[0]["header"]["created_at"].as_str().unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(created)
        .unwrap()
        .timestamp();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut metrics = metrics;
    while !metrics.contains(&format!(
        "cairn_backup_last_success_timestamp_seconds {created}"
    )) {
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = app_b.get("/metrics").await.text().await.unwrap();
    }
    app_b.stop().await.unwrap();
}
