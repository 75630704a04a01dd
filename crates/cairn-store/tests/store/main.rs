//! The store's own suite: the same story of operations on SQLite and PostgreSQL (when
//! `CAIRN_TEST_POSTGRES_URL` names a server), the two migration series compared, and the
//! schema-version guards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_store::accounts::{NewUser, Refresh, SessionRow};
use cairn_store::audit::{AuditEntry, AuditFilter};
use cairn_store::settings::Expect;
use cairn_store::Timestamp;
use cairn_store::{migrate, schema, testing, Backend, ConnectOptions, Db, Id, Store, StoreError};
use serde_json::json;

mod chat;
mod documents;
mod upgrade;
use chat::*;
use documents::*;
use upgrade::*;

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
    collections_story,
    documents_and_chunks_story,
    job_queue_story,
    search_story,
    conversations_story,
    models_and_prices_story,
    budgets_story,
    concurrent_claims_never_share_a_job,
    accounts_story,
    concurrent_refreshes_with_one_token_rotate_once,
    audit_story,
    migrations_are_idempotent_and_report_status,
    a_database_from_a_newer_release_is_refused,
    concurrent_migrations_apply_each_version_once,
    upgrades_from_schema_8,
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

fn new_user(email: &str, role: &str) -> NewUser {
    NewUser {
        email: email.into(),
        display_name: email.split('@').next().unwrap_or("x").into(),
        password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        role: role.into(),
        state: "active".into(),
    }
}

fn session_for(user_id: Id, ttl_ms: i64) -> SessionRow {
    let now = Timestamp::now();
    SessionRow {
        id: Id::new(),
        user_id,
        created_at: now,
        last_used_at: now,
        expires_at: now.plus_millis(ttl_ms),
        revoked_at: None,
        revoked_reason: None,
        user_agent: Some("test-agent".into()),
        ip: Some("127.0.0.1".into()),
    }
}

async fn accounts_story(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    assert!(!store.has_owner().await.unwrap());
    let owner = store
        .create_user(&new_user("owner@example.com", "owner"))
        .await
        .unwrap();
    assert!(store.has_owner().await.unwrap());
    assert_eq!(owner.role, "owner");
    assert!(!owner.totp_enabled);
    // One owner at most, and one account per email.
    let second = store
        .create_user(&new_user("other@example.com", "owner"))
        .await;
    assert!(
        matches!(second, Err(StoreError::Conflict { .. })),
        "{second:?}"
    );
    let dup = store
        .create_user(&new_user("owner@example.com", "member"))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict { .. })), "{dup:?}");
    let bad_role = store
        .create_user(&new_user("x@example.com", "emperor"))
        .await;
    assert!(bad_role.is_err());

    let member = store
        .create_user(&new_user("m@example.com", "member"))
        .await
        .unwrap();
    assert_eq!(
        store.user_by_email("m@example.com").await.unwrap().unwrap(),
        member
    );
    assert_eq!(
        store.user(member.id).await.unwrap().unwrap().email,
        "m@example.com"
    );
    assert!(store.user(Id::new()).await.unwrap().is_none());

    // Failed sign-ins count up and lock; a success resets.
    let until = Timestamp::now().plus_millis(60_000);
    store.record_failed_sign_in(member.id, None).await.unwrap();
    store
        .record_failed_sign_in(member.id, Some(until))
        .await
        .unwrap();
    let m = store.user(member.id).await.unwrap().unwrap();
    assert_eq!((m.failed_sign_ins, m.locked_until), (2, Some(until)));
    store.record_sign_in(member.id).await.unwrap();
    let m = store.user(member.id).await.unwrap().unwrap();
    assert_eq!((m.failed_sign_ins, m.locked_until), (0, None));
    assert!(m.last_sign_in_at.is_some());

    // A session rotates its refresh token; replaying a spent one revokes the family.
    let s = session_for(member.id, 3_600_000);
    store.create_session(&s, "h1").await.unwrap();
    let now = Timestamp::now();
    match store.rotate_refresh_token("h1", "h2", now).await.unwrap() {
        Refresh::Rotated(row) => assert_eq!((row.id, row.user_id), (s.id, member.id)),
        other => panic!("expected a rotation, got {other:?}"),
    }
    let rotated = store.rotate_refresh_token("h2", "h3", now).await.unwrap();
    assert!(matches!(rotated, Refresh::Rotated(_)));
    let replay = store.rotate_refresh_token("h1", "h4", now).await.unwrap();
    assert_eq!(
        replay,
        Refresh::Reused {
            session_id: s.id,
            user_id: member.id
        }
    );
    // The live token of a revoked family is dead too.
    assert_eq!(
        store.rotate_refresh_token("h3", "h5", now).await.unwrap(),
        Refresh::Invalid
    );
    assert_eq!(
        store.rotate_refresh_token("nope", "h6", now).await.unwrap(),
        Refresh::Invalid
    );
    let revoked = store.session(s.id).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_reason.as_deref(),
        Some("refresh_token_reused")
    );
    let since = store
        .sessions_revoked_since(now.plus_millis(-1000))
        .await
        .unwrap();
    assert_eq!(
        since.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![s.id]
    );

    // Expired sessions do not refresh.
    let old = session_for(member.id, -1);
    store.create_session(&old, "old1").await.unwrap();
    let later = Timestamp::now();
    assert_eq!(
        store
            .rotate_refresh_token("old1", "old2", later)
            .await
            .unwrap(),
        Refresh::Invalid
    );

    // Listing, revoking one (only the owner's), revoking all on a password change.
    let a = session_for(member.id, 3_600_000);
    let b = session_for(member.id, 3_600_000);
    store.create_session(&a, "a1").await.unwrap();
    store.create_session(&b, "b1").await.unwrap();
    assert_eq!(store.active_sessions(member.id).await.unwrap().len(), 2);
    assert!(
        !store
            .revoke_session(a.id, owner.id, "logout")
            .await
            .unwrap(),
        "not the owner's session"
    );
    assert!(store
        .revoke_session(a.id, member.id, "logout")
        .await
        .unwrap());
    assert_eq!(store.active_sessions(member.id).await.unwrap().len(), 1);
    let before = store
        .user(member.id)
        .await
        .unwrap()
        .unwrap()
        .tokens_valid_after;
    let changed_at = store
        .set_password(member.id, "$argon2id$new")
        .await
        .unwrap();
    assert!(changed_at >= before);
    assert!(store.active_sessions(member.id).await.unwrap().is_empty());
    assert_eq!(
        store.user(member.id).await.unwrap().unwrap().password_hash,
        "$argon2id$new"
    );

    let suspended = store.set_user_state(member.id, "suspended").await.unwrap();
    assert_eq!(suspended.state, "suspended");
    assert!(matches!(
        store.set_user_state(Id::new(), "active").await,
        Err(StoreError::NotFound)
    ));

    // Preferences are per user.
    assert_eq!(store.preference(member.id, "theme").await.unwrap(), None);
    store
        .put_preference(member.id, "theme", json!("dark"))
        .await
        .unwrap();
    store
        .put_preference(member.id, "theme", json!("light"))
        .await
        .unwrap();
    assert_eq!(
        store.preference(member.id, "theme").await.unwrap(),
        Some(json!("light"))
    );
    assert_eq!(store.preference(owner.id, "theme").await.unwrap(), None);
}

async fn concurrent_refreshes_with_one_token_rotate_once(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    let user = store
        .create_user(&new_user("c@example.com", "member"))
        .await
        .unwrap();
    let s = session_for(user.id, 3_600_000);
    store.create_session(&s, "t0").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .rotate_refresh_token("t0", &format!("t1-{i}"), Timestamp::now())
                .await
        }));
    }
    let mut rotated = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Refresh::Rotated(_)) => rotated += 1,
            Ok(_) => {}
            // SQLite may refuse a concurrent writer outright; that is a failed refresh, not a second rotation.
            Err(e) => assert!(backend == Backend::Sqlite, "{e}"),
        }
    }
    assert_eq!(rotated, 1, "exactly one refresh may win");
}

async fn audit_story(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    let actor = Id::new();
    let mut ids = Vec::new();
    for (i, action) in [
        "auth.sign_in",
        "auth.sign_in.failed",
        "admin.user.suspended",
        "auth.sign_in",
    ]
    .iter()
    .enumerate()
    {
        let mut e = AuditEntry::new(action);
        e.actor_id = (i % 2 == 0).then_some(actor);
        e.ip = Some("192.0.2.1".into());
        e.target_id = Some(format!("t{i}"));
        e.details = Some(sqlx::types::Json(json!({ "n": i })));
        store.append_audit(&e).await.unwrap();
        ids.push(e.id);
    }
    let all = store
        .list_audit(&AuditFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(all[0].details.as_ref().unwrap().0, json!({ "n": 3 }));
    let auth = AuditFilter {
        action_prefix: Some("auth.".into()),
        ..AuditFilter::default()
    };
    assert_eq!(store.list_audit(&auth, None, 10).await.unwrap().len(), 3);
    let by_actor = AuditFilter {
        actor_id: Some(actor),
        ..AuditFilter::default()
    };
    assert_eq!(
        store.list_audit(&by_actor, None, 10).await.unwrap().len(),
        2
    );
    let page = store
        .list_audit(&AuditFilter::default(), Some(ids[2]), 10)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[1], ids[0]]
    );
    assert_eq!(
        store
            .prune_audit(Timestamp::now().plus_millis(1000))
            .await
            .unwrap(),
        4
    );
}
