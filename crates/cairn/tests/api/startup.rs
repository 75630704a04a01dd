//! Starting and stopping: the data directory, secrets, production refusals, binding, and
//! graceful shutdown.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use cairn::app::StartError;
use cairn::Application;

use crate::helpers::{on_both_backends, Backend, TestApp};

on_both_backends!(
    secrets_are_generated_once_owner_only_and_reused_after_a_restart,
    shutdown_lets_in_flight_requests_finish,
);

async fn secrets_are_generated_once_owner_only_and_reused_after_a_restart(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let app = TestApp::builder(backend).data_dir(&dir).spawn().await;
    let kid = app.state.keys.signing_kid.clone();
    let data_key = *app.state.keys.data_key;
    app.stop().await.unwrap();

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("secrets")), 0o700);
    for f in ["signing_key.pem", "data_key", "cookie_key"] {
        assert_eq!(mode(&dir.join("secrets").join(f)), 0o600, "{f}");
    }

    let app = TestApp::builder(backend).data_dir(&dir).spawn().await;
    assert_eq!(app.state.keys.signing_kid, kid);
    assert_eq!(*app.state.keys.data_key, data_key);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn provided_secrets_override_the_generated_ones() {
    let key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let app = TestApp::builder(Backend::Sqlite)
        .set("data_key", key)
        .spawn()
        .await;
    assert_eq!(hex::encode(*app.state.keys.data_key), key);
}

#[tokio::test]
async fn a_malformed_provided_key_stops_the_start_naming_it() {
    let result = TestApp::builder(Backend::Sqlite)
        .set("data_key", "abcd")
        .try_spawn()
        .await;
    let err = result
        .err()
        .expect("started with a 2-byte data key")
        .to_string();
    assert!(
        err.contains("data_key") && err.contains("32 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn production_refuses_to_start_listing_every_problem() {
    let mut builder = TestApp::builder(Backend::Sqlite)
        .set("env", "production")
        .set("cors.allowed_origins", "*")
        .set("metrics.public", "true")
        .set("cookie_key", "changeme-changeme-changeme-changeme-changeme");
    let (config, _tmp) = builder.config().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match Application::build_with_listener(config, listener, None).await {
        Err(StartError::Unsafe(problems)) => {
            let checks: Vec<_> = problems.iter().map(|p| p.check).collect();
            assert_eq!(
                checks,
                [
                    "weak_secret",
                    "cors_any_origin_with_credentials",
                    "public_url_missing",
                    "metrics_open"
                ]
            );
            let text = StartError::Unsafe(problems).to_string();
            assert!(
                text.contains("fix:") && text.contains("cors.allowed_origins"),
                "{text}"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("production started with unsafe settings"),
    }
}

#[tokio::test]
async fn a_port_in_use_is_reported_with_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (config, _tmp) = TestApp::builder(Backend::Sqlite)
        .set("listen", &addr)
        .config()
        .await
        .unwrap();
    let err = Application::build(config)
        .await
        .err()
        .expect("bound a port in use")
        .to_string();
    assert!(err.contains(&addr) && err.contains("CAIRN_LISTEN"), "{err}");
}

async fn shutdown_lets_in_flight_requests_finish(backend: Backend) {
    let mut app = TestApp::builder(backend)
        .set("http.shutdown_grace_secs", "10")
        .spawn()
        .await;
    let client = app.client.clone();
    let url = app.url("/test/slow?ms=1000");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    // Let the request reach the handler, then ask the server to stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let server = app.begin_shutdown();
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "done");
    server.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing listens any more.
    assert!(app
        .client
        .get(app.url("/api/health/live"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn shutdown_gives_up_on_requests_that_outlast_the_grace_period() {
    let mut app = TestApp::builder(Backend::Sqlite)
        .set("http.shutdown_grace_secs", "1")
        .set("http.request_timeout_secs", "60")
        .spawn()
        .await;
    let client = app.client.clone();
    let url = app.url("/test/slow?ms=30000");
    let _in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.begin_shutdown().await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn audit_entries_past_their_retention_are_pruned_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let app = TestApp::builder(Backend::Sqlite)
        .data_dir(&dir)
        .spawn()
        .await;
    let mut old = cairn_store::audit::AuditEntry::new("auth.sign_in");
    old.at = cairn_store::Timestamp::now().plus_millis(-3 * 86_400_000);
    app.state.store.append_audit(&old).await.unwrap();
    app.state
        .store
        .append_audit(&cairn_store::audit::AuditEntry::new("auth.sign_in"))
        .await
        .unwrap();
    // This slot's maintenance round runs before the restart (with no retention set), so the
    // restart must run one of its own.
    let cairn_store::Pool::Sqlite(pool) = app.state.store.db().pool() else {
        unreachable!()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE kind = 'maintenance.run' AND status = 'succeeded'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if done > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no maintenance round at start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await.unwrap();
    let app = TestApp::builder(Backend::Sqlite)
        .data_dir(&dir)
        .set("audit.retention_days", "2")
        .spawn()
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = app
            .state
            .store
            .list_audit(&Default::default(), None, 10)
            .await
            .unwrap();
        if left.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "old entry not pruned: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
