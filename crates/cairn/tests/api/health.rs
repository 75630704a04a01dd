//! `/api/health`, `/api/health/live`, `/api/health/ready`.

use crate::helpers::{on_both_backends, redis_url, Backend, TestApp};

on_both_backends!(
    health_reports_version_uptime_and_a_timed_database_check,
    health_is_503_when_the_database_stops_answering,
    dependency_checks_are_cached_between_calls,
);

async fn health_reports_version_uptime_and_a_timed_database_check(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let resp = app.get("/api/health").await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_secs"].is_u64());
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert!(body["checks"]["database"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(body["checks"]["storage"]["ok"], true, "{body}");
    assert!(body["checks"].get("redis").is_none(), "no Redis configured");

    let live = app.get("/api/health/live").await;
    assert_eq!(live.status(), 200);
    let ready = app.get("/api/health/ready").await;
    assert_eq!(ready.status(), 200);
    app.stop().await.unwrap();
}

async fn health_is_503_when_the_database_stops_answering(backend: Backend) {
    let app = TestApp::builder(backend)
        .set("health.check_cache_ms", "0")
        .spawn()
        .await;
    app.state.store.db().close().await;
    let resp = app.get("/api/health").await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"]["ok"], false);
    assert_eq!(body["checks"]["database"]["error"], "error");
    assert_eq!(app.get("/api/health/ready").await.status(), 503);
    // Liveness is about the process, not its dependencies.
    assert_eq!(app.get("/api/health/live").await.status(), 200);
}

async fn dependency_checks_are_cached_between_calls(backend: Backend) {
    let app = TestApp::builder(backend)
        .set("health.check_cache_ms", "600000")
        .spawn()
        .await;
    assert_eq!(app.get("/api/health").await.status(), 200);
    app.state.store.db().close().await;
    // Within the cache window the last result stands: health checks cannot hammer the database.
    assert_eq!(app.get("/api/health").await.status(), 200);
}

#[tokio::test]
async fn a_configured_redis_is_checked() {
    let Some(redis) = redis_url() else { return };
    let app = TestApp::builder(Backend::Sqlite)
        .set("redis_url", &redis)
        .spawn()
        .await;
    let body: serde_json::Value = app.get("/api/health").await.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["ok"], true, "{body}");
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn an_unreachable_redis_stops_the_start_naming_it_without_its_password() {
    let result = TestApp::builder(Backend::Sqlite)
        .set("redis_url", "redis://:hunter2hunter2@127.0.0.1:1")
        .set("database.connect_attempts", "2")
        .try_spawn()
        .await;
    let err = match result {
        Ok(_) => panic!("started without its Redis"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("cannot reach Redis") && err.contains("127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("hunter2hunter2"), "{err}");
}
