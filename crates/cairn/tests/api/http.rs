//! The shared HTTP behaviour every route gets: request ids, security headers, the error body,
//! limits, timeouts, panics, CORS and metrics access.

use std::collections::HashSet;

use crate::helpers::{error_body, Backend, TestApp};

#[tokio::test]
async fn every_response_has_a_fresh_request_id_and_the_security_headers() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut ids = HashSet::new();
    for path in ["/api/health", "/api/health/live", "/nowhere"] {
        let resp = app.get(path).await;
        let h = resp.headers();
        ids.insert(h["x-request-id"].to_str().unwrap().to_owned());
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS over plain HTTP"
        );
    }
    assert_eq!(ids.len(), 3);
    // A client cannot choose its request id unless it is a trusted proxy.
    let resp = app
        .client
        .get(app.url("/api/health/live"))
        .header("x-request-id", "chosen-by-client")
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"], "chosen-by-client");
}

#[tokio::test]
async fn a_trusted_proxy_may_forward_its_request_id() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("http.trusted_proxies", "127.0.0.1/32")
        .spawn()
        .await;
    let resp = app
        .client
        .get(app.url("/api/health/live"))
        .header("x-request-id", "edge-1234")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "edge-1234");
}

#[tokio::test]
async fn hsts_is_sent_when_the_public_url_is_https() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("public_url", "https://cairn.example.com")
        .spawn()
        .await;
    let resp = app.get("/api/health/live").await;
    assert!(resp.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .starts_with("max-age="));
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let e = error_body(app.get("/api/nothing-here").await, 404).await;
    assert_eq!(e["code"], "not_found");
    let resp = app
        .client
        .delete(app.url("/api/health"))
        .send()
        .await
        .unwrap();
    let e = error_body(resp, 405).await;
    assert_eq!(e["code"], "method_not_allowed");
}

#[tokio::test]
async fn the_web_app_answers_outside_the_api_and_its_routes_fall_back_to_the_page() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // The app's own routes get the page (or, in a build without it, a page saying so).
    for path in ["/", "/chat/0192f0c4", "/admin/users"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        assert!(resp.headers().contains_key("content-security-policy"));
    }
    // A missing file is a 404, not the page; the API's unknown paths stay JSON.
    for path in ["/assets/missing-abc.js", "/favicon-missing.ico"] {
        let e = error_body(app.get(path).await, 404).await;
        assert_eq!(e["code"], "not_found", "{path}");
    }
    for path in ["/api/nothing", "/v1/nothing", "/api"] {
        let e = error_body(app.get(path).await, 404).await;
        assert_eq!(e["code"], "not_found", "{path}");
    }
    // Only reads.
    let resp = app.client.post(app.url("/chat")).send().await.unwrap();
    assert_eq!(error_body(resp, 405).await["code"], "method_not_allowed");
    // Revalidation: the ETag of the page answers 304.
    let first = app.get("/").await;
    if let Some(etag) = first.headers().get("etag").cloned() {
        let again = app
            .client
            .get(app.url("/"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_naming_the_limit() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("http.body_limit_bytes", "2048")
        .spawn()
        .await;
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(4096));
    let resp = app
        .client
        .post(app.url("/test/echo"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let e = error_body(resp, 413).await;
    assert_eq!(e["code"], "payload_too_large");
    assert_eq!(e["details"]["limit_bytes"], 2048);
    // Just under the limit is fine.
    let ok = app
        .client
        .post(app.url("/test/echo"))
        .json(&serde_json::json!({ "name": "x".repeat(1000) }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn bad_json_gets_a_clear_error_for_each_kind_of_mistake() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let post = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/test/echo"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let e = error_body(post("{\"name\":", "application/json").await.unwrap(), 400).await;
    assert_eq!(e["code"], "malformed_json");
    let e = error_body(
        post("{\"name\":\"a\",\"admin\":true}", "application/json")
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(e["code"], "unknown_field");
    let e = error_body(post("{\"name\":\"a\"}", "text/plain").await.unwrap(), 415).await;
    assert_eq!(e["code"], "unsupported_media_type");
    let e = error_body(
        post("{\"name\":42}", "application/json").await.unwrap(),
        422,
    )
    .await;
    assert_eq!(e["code"], "invalid_request");
    let ok = post("{\"name\":\"a\"}", "application/json").await.unwrap();
    assert_eq!(ok.json::<serde_json::Value>().await.unwrap()["name"], "a");
}

#[tokio::test]
async fn internal_errors_and_panics_are_opaque_500s_carrying_only_the_request_id() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for path in ["/test/internal", "/test/panic"] {
        let resp = app.get(path).await;
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        let e = error_body(resp, 500).await;
        assert_eq!(e["code"], "internal");
        assert_eq!(e["details"]["request_id"], id.as_str());
        let text = e.to_string();
        assert!(
            !text.contains("leaked") && !text.contains("probe panic"),
            "{text}"
        );
    }
    // The server is unharmed.
    assert_eq!(app.get("/api/health/live").await.status(), 200);
}

#[tokio::test]
async fn a_request_past_the_timeout_gets_503_request_timeout() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("http.request_timeout_secs", "1")
        .spawn()
        .await;
    let started = std::time::Instant::now();
    let e = error_body(app.get("/test/slow?ms=5000").await, 503).await;
    assert_eq!(e["code"], "request_timeout");
    assert_eq!(e["details"]["timeout_secs"], 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[tokio::test]
async fn cors_answers_listed_origins_only() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("cors.allowed_origins", "https://app.example.com")
        .spawn()
        .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/health"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn metrics_are_served_to_allowed_networks_and_token_holders_only() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.get("/api/health").await;
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200, "loopback is allowed by default");
    let text = resp.text().await.unwrap();
    for needle in [
        "cairn_http_requests_total{method=\"GET\",route=\"/api/health\",status=\"200\"}",
        "cairn_http_request_duration_seconds_bucket",
        "cairn_db_pool_connections{state=\"idle\"}",
        "cairn_build_info{version=",
        "cairn_process_resident_memory_bytes",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    let token = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
    let app = TestApp::builder(Backend::Sqlite)
        .set("metrics.allow_networks", "10.0.0.0/8")
        .set("metrics.token", token)
        .spawn()
        .await;
    let e = error_body(app.get("/metrics").await, 403).await;
    assert_eq!(e["code"], "forbidden");
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let right = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);

    let app = TestApp::builder(Backend::Sqlite)
        .set("metrics.allow_networks", "10.0.0.0/8")
        .set("metrics.public", "true")
        .spawn()
        .await;
    assert_eq!(app.get("/metrics").await.status(), 200);
    let app = TestApp::builder(Backend::Sqlite)
        .set("metrics.enabled", "false")
        .spawn()
        .await;
    assert_eq!(app.get("/metrics").await.status(), 404);
}
