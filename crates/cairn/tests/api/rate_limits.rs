//! Rate limits: per address on authentication routes, per account on sign-in, per principal
//! everywhere else; 429 with `Retry-After` and `RateLimit-*`; in process and through Redis.

use serde_json::json;

use crate::helpers::{error_body, redis_url, Backend, TestApp, OWNER_EMAIL, PASSWORD};

#[tokio::test]
async fn authentication_routes_are_limited_per_address_with_retry_after() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("rate_limit.auth_per_minute", "3")
        .spawn()
        .await;
    app.create_owner().await; // one authentication request
    assert_eq!(
        app.sign_in(OWNER_EMAIL, "wrong wrong wrong").await.status(),
        401
    );
    let last = app.sign_in(OWNER_EMAIL, PASSWORD).await;
    assert_eq!(last.status(), 200);
    assert_eq!(last.headers()["ratelimit-limit"], "3");
    assert_eq!(last.headers()["ratelimit-remaining"], "0");
    let refused = app.sign_in(OWNER_EMAIL, PASSWORD).await;
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    let e = error_body(refused, 429).await;
    assert_eq!(e["code"], "rate_limited");
    assert_eq!(e["details"]["limit"], 3);
    // Health checks are never limited.
    for _ in 0..20 {
        assert_eq!(app.get("/api/health/live").await.status(), 200);
    }
}

#[tokio::test]
async fn sign_in_is_limited_per_account_across_addresses() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("rate_limit.account_per_minute", "2")
        .spawn()
        .await;
    app.create_owner().await;
    for _ in 0..2 {
        assert_eq!(
            app.sign_in(OWNER_EMAIL, "wrong wrong wrong").await.status(),
            401
        );
    }
    assert_eq!(
        error_body(app.sign_in("OWNER@example.com", PASSWORD).await, 429).await["code"],
        "rate_limited"
    );
    // Another account is unaffected.
    assert_eq!(
        app.sign_in("nobody@example.com", PASSWORD).await.status(),
        401
    );
}

#[tokio::test]
async fn other_routes_are_limited_per_principal() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("rate_limit.general_per_minute", "5")
        .spawn()
        .await;
    let owner = app.create_owner().await;
    let member = app.user_with("m@example.com", "member", "active").await;
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = app.get_as("/api/me", &owner).await;
        assert_eq!(r.status(), 200);
        remaining.push(
            r.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
    assert_eq!(
        error_body(app.get_as("/api/me", &owner).await, 429).await["code"],
        "rate_limited"
    );
    assert_eq!(
        app.get_as("/api/me", &member).await.status(),
        200,
        "limits are per principal"
    );
}

#[tokio::test]
async fn limits_disabled_means_no_limits() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("rate_limit.enabled", "false")
        .set("rate_limit.auth_per_minute", "1")
        .spawn()
        .await;
    app.create_owner().await;
    for _ in 0..5 {
        let r = app.sign_in(OWNER_EMAIL, PASSWORD).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn replicas_share_their_counts_through_redis() {
    let Some(redis) = redis_url() else { return };
    let prefix = format!("shared-{}:", uuid::Uuid::now_v7().simple());
    let replica = || {
        TestApp::builder(Backend::Sqlite)
            .set("redis_url", &redis)
            .set("redis_key_prefix", &prefix)
            .set("rate_limit.auth_per_minute", "4")
            .spawn()
    };
    let a = replica().await;
    let b = replica().await;
    let attempt = |app: &TestApp| {
        app.client
            .post(app.url("/api/auth/sign-in"))
            .json(&json!({ "email": "x@example.com", "password": PASSWORD }))
            .send()
    };
    assert_eq!(attempt(&a).await.unwrap().status(), 401);
    assert_eq!(attempt(&b).await.unwrap().status(), 401);
    assert_eq!(attempt(&a).await.unwrap().status(), 401);
    let r = attempt(&b).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    // The fifth, on either replica, is over the shared limit.
    assert_eq!(
        error_body(attempt(&a).await.unwrap(), 429).await["code"],
        "rate_limited"
    );
    assert_eq!(
        error_body(attempt(&b).await.unwrap(), 429).await["code"],
        "rate_limited"
    );
}
