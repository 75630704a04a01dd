//! The store's own suite: the same story of operations on SQLite and PostgreSQL (when
//! `CAIRN_TEST_POSTGRES_URL` names a server), the two migration series compared, and the
//! schema-version guards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_store::settings::Expect;
use cairn_store::{migrate, schema, testing, Backend, ConnectOptions, Db, Id, Store, StoreError};
use serde_json::json;

/// A fresh, migrated store on `backend`, or `None` when that backend is not configured.
async fn fresh(backend: Backend) -> Option<(Store, Option<tempfile::TempDir>)> {
    let (url, dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (
                format!("sqlite://{}", dir.path().join("t.db").display()),
                Some(dir),
            )
        }
        Backend::Postgres => {
            let Some(admin) = testing::postgres_admin_url() else {
                assert!(
                    std::env::var_os("CAIRN_TEST_REQUIRE_POSTGRES").is_none(),
                    "CAIRN_TEST_REQUIRE_POSTGRES is set but CAIRN_TEST_POSTGRES_URL is not"
                );
                eprintln!("skipped: CAIRN_TEST_POSTGRES_URL is not set");
                return None;
            };
            (
                testing::create_postgres_database(&admin).await.unwrap(),
                None,
            )
        }
    };
    let db = Db::connect(&ConnectOptions::new(url)).await.unwrap();
    migrate::run(&db).await.unwrap();
    Some((Store::new(db), dir))
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(cairn_store::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(cairn_store::Backend::Postgres).await
            }
        }
    )*};
}

on_both_backends!(
    settings_story,
    migrations_are_idempotent_and_report_status,
    a_database_from_a_newer_release_is_refused,
    concurrent_migrations_apply_each_version_once,
);

/// The conformance story: one sequence of store operations whose every outcome is pinned.
async fn settings_story(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    assert_eq!(store.backend(), backend);
    store.db().ping().await.unwrap();

    assert!(store.setting("workspace.name").await.unwrap().is_none());
    let admin = Id::new();
    let s = store
        .put_setting("workspace.name", json!("Acme"), Expect::Absent, Some(admin))
        .await
        .unwrap();
    assert_eq!((s.version, s.updated_by), (1, Some(admin)));
    assert_eq!(s.value.0, json!("Acme"));

    // Creating it again conflicts; so does an update at a stale version.
    let again = store
        .put_setting("workspace.name", json!("X"), Expect::Absent, None)
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    let s2 = store
        .put_setting(
            "workspace.name",
            json!({"name": "Acme Ltd"}),
            Expect::Version(1),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s2.version, 2);
    assert_eq!(s2.updated_by, None);
    assert!(s2.updated_at >= s.updated_at);
    let stale = store
        .put_setting("workspace.name", json!("Y"), Expect::Version(1), None)
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let missing = store
        .put_setting("nope", json!(1), Expect::Version(1), None)
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    // Upserts bump the version whether or not the row existed.
    store
        .put_setting("a.first", json!(1), Expect::Any, None)
        .await
        .unwrap();
    let up = store
        .put_setting("a.first", json!([1, 2]), Expect::Any, None)
        .await
        .unwrap();
    assert_eq!(up.version, 2);

    // What was read back equals what was written, time to the millisecond included.
    let read = store.setting("workspace.name").await.unwrap().unwrap();
    assert_eq!(read, s2);

    // Paging by key cursor.
    for k in ["b.x", "c.y", "d.z"] {
        store
            .put_setting(k, json!(k), Expect::Absent, None)
            .await
            .unwrap();
    }
    let page1 = store.list_settings(None, 2).await.unwrap();
    let keys1: Vec<_> = page1.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys1, ["a.first", "b.x"]);
    let page2 = store.list_settings(Some("b.x"), 10).await.unwrap();
    let keys2: Vec<_> = page2.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys2, ["c.y", "d.z", "workspace.name"]);

    store.delete_setting("c.y").await.unwrap();
    assert!(matches!(
        store.delete_setting("c.y").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_settings(None, 100).await.unwrap().len(), 4);

    let stats = store.db().pool_stats();
    assert!(stats.size >= 1 && stats.idle <= stats.size);
    store.db().close().await;
}

async fn migrations_are_idempotent_and_report_status(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    let status = migrate::status(store.db()).await.unwrap();
    assert_eq!(status.current, migrate::latest_version(backend));
    assert!(status.pending.is_empty());
    assert!(migrate::run(store.db()).await.unwrap().is_empty());
}

async fn a_database_from_a_newer_release_is_refused(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    // What a newer Cairn would leave behind: a migration this binary has never heard of.
    let sql =
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
               VALUES (9999, 'from the future', TRUE, $1, 0)";
    cairn_store::on_pool!(store.db().pool(), p =>
        { sqlx::query(sql).bind(vec![0u8; 48]).execute(p).await.unwrap(); });
    let err = migrate::run(store.db()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::SchemaTooNew { database: 9999, .. }),
        "{text}"
    );
    assert!(text.contains("9999") && text.contains(&migrate::latest_version(backend).to_string()));
}

async fn concurrent_migrations_apply_each_version_once(backend: Backend) {
    let (url, _dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (
                format!("sqlite://{}", dir.path().join("t.db").display()),
                Some(dir),
            )
        }
        Backend::Postgres => match testing::postgres_admin_url() {
            Some(admin) => (
                testing::create_postgres_database(&admin).await.unwrap(),
                None,
            ),
            None => return,
        },
    };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let db = Db::connect(&ConnectOptions::new(url)).await.unwrap();
            migrate::run(&db).await.map(|applied| applied.len())
        }));
    }
    let mut applied_total = 0;
    let mut failures = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(n) => applied_total += n,
            Err(e) => failures.push(e.to_string()),
        }
    }
    let db = Db::connect(&ConnectOptions::new(url)).await.unwrap();
    let rows: i64 = cairn_store::on_pool!(db.pool(), p =>
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(p).await.unwrap());
    assert_eq!(
        rows,
        migrate::latest_version(backend),
        "each migration recorded once"
    );
    if backend == Backend::Postgres {
        // The advisory lock serialises replicas: every one succeeds.
        assert!(failures.is_empty(), "{failures:?}");
    }
    assert!(applied_total >= 1 || !failures.is_empty());
}

#[tokio::test]
async fn the_sqlite_and_postgres_schemas_describe_the_same_tables() {
    let Some((sqlite, _dir)) = fresh(Backend::Sqlite).await else {
        return;
    };
    let Some((postgres, _)) = fresh(Backend::Postgres).await else {
        return;
    };
    let a = schema::describe(sqlite.db()).await.unwrap();
    let b = schema::describe(postgres.db()).await.unwrap();
    assert!(!a.tables.is_empty());
    assert_eq!(
        a.tables, b.tables,
        "the two migration series have drifted apart"
    );
    assert_eq!(
        a.indexes, b.indexes,
        "the two migration series have different indexes"
    );
}

#[tokio::test]
async fn an_unreachable_database_fails_after_bounded_retries_naming_the_url_without_its_password() {
    let mut opts = ConnectOptions::new("postgres://cairn:topsecret@127.0.0.1:1/cairn");
    opts.connect_attempts = 2;
    opts.acquire_timeout = std::time::Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = Db::connect(&opts).await.unwrap_err().to_string();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        err.contains("postgres://cairn:***@127.0.0.1:1/cairn"),
        "{err}"
    );
    assert!(err.contains("2 attempt(s)"), "{err}");
    assert!(!err.contains("topsecret"), "{err}");
}

#[tokio::test]
async fn an_unsupported_database_url_is_refused_clearly() {
    let err = Db::connect(&ConnectOptions::new("mysql://u:pw@h/db"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unsupported database URL") && !err.contains(":pw@"),
        "{err}"
    );
}
