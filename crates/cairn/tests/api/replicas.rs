//! Several replicas on one PostgreSQL database: each remembers callers' standing for a while
//! (`auth.standing_cache_secs`), and a change made on one is seen by the others at once —
//! through PostgreSQL notifications, or Redis when `redis_url` is set.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// Two replicas sharing a database and secrets; `extra` settings apply to both.
async fn pair(extra: &[(&str, &str)]) -> (TestApp, TestApp) {
    // A long memory, so only an announcement can explain a replica noticing a change.
    let mut a = TestApp::builder(Backend::Postgres).set("auth.standing_cache_secs", "300");
    for (k, v) in extra {
        a = a.set(k, v);
    }
    let a = a.spawn().await;
    let url = a.state.config.effective_database_url();
    let mut b = TestApp::builder(Backend::Postgres)
        .data_dir(&a.data_dir)
        .set("database_url", &url)
        .set("auth.standing_cache_secs", "300");
    for (k, v) in extra {
        b = b.set(k, v);
    }
    (a, b.spawn().await)
}

/// Poll `path` on `app` as `s` until it answers `status`; how long that took.
async fn until_status(app: &TestApp, path: &str, s: &Session, status: u16) -> Duration {
    let start = Instant::now();
    loop {
        if app.get_as(path, s).await.status() == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{path} never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn changes_on_one_replica_reach_the_other(a: TestApp, b: TestApp) {
    let admin = a.create_owner().await;
    let member = a.user_with("member@example.com", "member", "active").await;
    let key = a.api_key(&member, &["read"]).await;
    let by_key = Session {
        session_id: String::new(),
        access: key,
        refresh: String::new(),
    };
    // Both replicas have now seen (and remembered) the member's session and key.
    for app in [&a, &b] {
        assert_eq!(app.get_as("/api/me", &member).await.status(), 200);
        assert_eq!(app.get_as("/api/me", &by_key).await.status(), 200);
    }
    let me: serde_json::Value = b.get_as("/api/me", &member).await.json().await.unwrap();
    let id = me["id"].as_str().unwrap().to_owned();

    // Suspension on A (which also ends the member's sessions): B refuses the session and the
    // key, whose owner is suspended.
    let resp = a
        .client
        .post(a.url(&format!("/api/users/{id}/suspend")))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let took = until_status(&b, "/api/me", &by_key, 403).await;
    eprintln!("suspension seen by the other replica after {took:?}");
    assert_eq!(b.get_as("/api/me", &member).await.status(), 401);

    // Reactivation on B: A accepts the key again (A had remembered it as suspended).
    assert_eq!(a.get_as("/api/me", &by_key).await.status(), 403);
    let resp = b
        .client
        .post(b.url(&format!("/api/users/{id}/reactivate")))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    until_status(&a, "/api/me", &by_key, 200).await;

    // Signing out on A ends the session on B.
    let resp = a.sign_in("member@example.com", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let again = Session::from_body(&resp.json().await.unwrap());
    assert_eq!(b.get_as("/api/me", &again).await.status(), 200);
    let resp = a
        .client
        .post(a.url("/api/auth/sign-out"))
        .bearer_auth(&again.access)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    until_status(&b, "/api/me", &again, 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_postgres_notifications() {
    if !postgres_available() {
        return;
    }
    let (a, b) = pair(&[]).await;
    changes_on_one_replica_reach_the_other(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_redis() {
    if !postgres_available() {
        return;
    }
    let Some(redis) = redis_url() else { return };
    let prefix = format!("test-{}:", uuid::Uuid::now_v7().simple());
    let (a, b) = pair(&[("redis_url", &redis), ("redis_key_prefix", &prefix)]).await;
    changes_on_one_replica_reach_the_other(a, b).await;
}
