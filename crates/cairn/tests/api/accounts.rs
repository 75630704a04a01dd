//! First run, sign-in, sessions, tokens and passwords, end to end over HTTP.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    error_body, on_both_backends, Backend, Session, TestApp, OWNER_EMAIL, PASSWORD,
};

on_both_backends!(
    first_run_needs_the_setup_token_and_creates_exactly_one_owner,
    the_setup_race_creates_one_owner,
    sign_in_refresh_and_sign_out_work_and_replayed_refresh_tokens_end_the_session,
    changing_the_password_ends_every_other_session,
    repeated_failures_slow_an_account_down_with_retry_after,
    a_suspended_user_loses_access_at_once,
    cookie_sessions_need_the_csrf_header_for_changes,
);

async fn first_run_needs_the_setup_token_and_creates_exactly_one_owner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let status: serde_json::Value = app.get("/api/setup").await.json().await.unwrap();
    assert_eq!(status["needed"], true);
    let token = app.setup_token();
    assert!(token.starts_with("cairn_setup_"));

    let attempt = |token: String| {
        app.client
            .post(app.url("/api/setup"))
            .json(&json!({ "setup_token": token, "email": OWNER_EMAIL, "password": PASSWORD }))
            .send()
    };
    let e = error_body(attempt("cairn_setup_guess".into()).await.unwrap(), 403).await;
    assert_eq!(e["code"], "invalid_setup_token");
    assert!(
        !app.state.store.has_owner().await.unwrap(),
        "nothing stored on refusal"
    );

    // Bad values are refused without storing anything.
    let weak = app
        .client
        .post(app.url("/api/setup"))
        .json(&json!({ "setup_token": token, "email": OWNER_EMAIL, "password": "password1234" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(weak, 422).await["code"], "weak_password");
    let bad_email = app
        .client
        .post(app.url("/api/setup"))
        .json(&json!({ "setup_token": token, "email": "own\u{200B}er@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(bad_email, 422).await["code"], "invalid_fields");
    assert!(!app.state.store.has_owner().await.unwrap());

    let owner = app.create_owner().await;
    let me: serde_json::Value = app.get_as("/api/me", &owner).await.json().await.unwrap();
    assert_eq!(
        (me["role"].as_str(), me["state"].as_str()),
        (Some("owner"), Some("active"))
    );
    assert_eq!(me["display_name"], "Olive Owner");
    assert!(me.get("password_hash").is_none());
    let ws = app.state.store.setting("workspace").await.unwrap().unwrap();
    assert_eq!(ws.value.0["name"], json!("Acme"));
    // The token is spent.
    assert!(!app.data_dir.join("setup-token").exists());
    let again = attempt(token).await.unwrap();
    assert_eq!(error_body(again, 409).await["code"], "already_set_up");
    let status: serde_json::Value = app.get("/api/setup").await.json().await.unwrap();
    assert_eq!(status["needed"], false);
}

async fn the_setup_race_creates_one_owner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.setup_token();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = app.client.clone();
        let url = app.url("/api/setup");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({ "setup_token": token, "email": format!("racer{i}@example.com"), "password": PASSWORD }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409 || *s == 403),
        "{statuses:?}"
    );
}

async fn sign_in_refresh_and_sign_out_work_and_replayed_refresh_tokens_end_the_session(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.create_owner().await;

    let e = error_body(app.sign_in(OWNER_EMAIL, "wrong password here").await, 401).await;
    assert_eq!(e["code"], "invalid_credentials");
    let e = error_body(app.sign_in("nobody@example.com", PASSWORD).await, 401).await;
    assert_eq!(
        e["code"], "invalid_credentials",
        "unknown emails look like wrong passwords"
    );
    // Emails are matched case- and form-insensitively.
    let resp = app.sign_in("  OWNER@Example.COM", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let s1 = Session::from_body(&resp.json().await.unwrap());
    assert_eq!(app.get_as("/api/me", &s1).await.status(), 200);

    let anonymous = app.get("/api/me").await;
    assert!(anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(error_body(anonymous, 401).await["code"], "unauthenticated");

    // Refresh rotates: the new pair works, the old refresh token is spent.
    let refresh = |token: &str| {
        app.client
            .post(app.url("/api/auth/refresh"))
            .json(&json!({ "refresh_token": token }))
            .send()
    };
    let resp = refresh(&s1.refresh).await.unwrap();
    assert_eq!(resp.status(), 200);
    let s2 = Session::from_body(&resp.json().await.unwrap());
    assert_ne!(s2.refresh, s1.refresh);
    assert_eq!(s2.session_id, s1.session_id);
    assert_eq!(app.get_as("/api/me", &s2).await.status(), 200);

    // Replaying the spent token revokes the whole family: even the newest tokens die.
    let e = error_body(refresh(&s1.refresh).await.unwrap(), 401).await;
    assert_eq!(e["code"], "refresh_token_reused");
    assert_eq!(
        error_body(refresh(&s2.refresh).await.unwrap(), 401).await["code"],
        "invalid_refresh_token"
    );
    assert_eq!(
        error_body(app.get_as("/api/me", &s2).await, 401).await["code"],
        "invalid_token"
    );

    // Sign-out ends that session only.
    let a = Session::from_body(
        &app.sign_in(OWNER_EMAIL, PASSWORD)
            .await
            .json()
            .await
            .unwrap(),
    );
    let b = Session::from_body(
        &app.sign_in(OWNER_EMAIL, PASSWORD)
            .await
            .json()
            .await
            .unwrap(),
    );
    let sessions: serde_json::Value = app
        .get_as("/api/me/sessions", &a)
        .await
        .json()
        .await
        .unwrap();
    // a, b and the session first-run setup started.
    assert_eq!(sessions["items"].as_array().unwrap().len(), 3);
    let current: Vec<_> = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], a.session_id.as_str());
    let out = app
        .client
        .post(app.url("/api/auth/sign-out"))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(app.get_as("/api/me", &a).await.status(), 401);
    assert_eq!(app.get_as("/api/me", &b).await.status(), 200);
    // Everywhere ends them all.
    let out = app
        .client
        .post(app.url("/api/auth/sign-out-everywhere"))
        .bearer_auth(&b.access)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(app.get_as("/api/me", &b).await.status(), 401);
    assert_eq!(refresh(&b.refresh).await.unwrap().status(), 401);

    // The audit log saw it all.
    let entries = app
        .state
        .store
        .list_audit(&Default::default(), None, 100)
        .await
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    for expected in [
        "setup.completed",
        "auth.sign_in.failed",
        "auth.sign_in",
        "auth.refresh_token.reused",
        "auth.sign_out",
        "auth.sign_out_everywhere",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let failed = entries
        .iter()
        .find(|e| e.action == "auth.sign_in.failed")
        .unwrap();
    assert_eq!(failed.ip.as_deref(), Some("127.0.0.1"));
}

async fn changing_the_password_ends_every_other_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let other = Session::from_body(
        &app.sign_in(OWNER_EMAIL, PASSWORD)
            .await
            .json()
            .await
            .unwrap(),
    );
    let put = |s: &Session, current: &str, new: &str| {
        app.client
            .put(app.url("/api/me/password"))
            .bearer_auth(&s.access)
            .json(&json!({ "current_password": current, "new_password": new }))
            .send()
    };
    let e = error_body(
        put(&owner, "not it", "a brand new long passphrase")
            .await
            .unwrap(),
        403,
    )
    .await;
    assert_eq!(e["code"], "invalid_credentials");
    let e = error_body(put(&owner, PASSWORD, "short").await.unwrap(), 422).await;
    assert_eq!(e["code"], "weak_password");
    assert!(e["details"]["problems"][0]
        .as_str()
        .unwrap()
        .contains("12 characters"));

    let resp = put(&owner, PASSWORD, "a brand new long passphrase")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let fresh = Session::from_body(&resp.json().await.unwrap());
    assert_eq!(app.get_as("/api/me", &fresh).await.status(), 200);
    assert_eq!(app.get_as("/api/me", &owner).await.status(), 401);
    assert_eq!(app.get_as("/api/me", &other).await.status(), 401);
    assert_eq!(app.sign_in(OWNER_EMAIL, PASSWORD).await.status(), 401);
    assert_eq!(
        app.sign_in(OWNER_EMAIL, "a brand new long passphrase")
            .await
            .status(),
        200
    );
}

async fn repeated_failures_slow_an_account_down_with_retry_after(backend: Backend) {
    let app = TestApp::builder(backend)
        .set("auth.sign_in_free_failures", "3")
        .spawn()
        .await;
    app.create_owner().await;
    for _ in 0..3 {
        assert_eq!(
            app.sign_in(OWNER_EMAIL, "wrong wrong wrong").await.status(),
            401
        );
    }
    // The third failure locked it: even the right password waits.
    let locked = app.sign_in(OWNER_EMAIL, PASSWORD).await;
    let retry: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31).contains(&retry), "{retry}");
    assert_eq!(error_body(locked, 429).await["code"], "sign_in_locked");
    // Other accounts are unaffected.
    let member = app.user_with("m@example.com", "member", "active").await;
    assert_eq!(app.get_as("/api/me", &member).await.status(), 200);
    // The lock ends by itself (it is a slow-down, not a lockout): expire it and sign in.
    let owner = app
        .state
        .store
        .user_by_email(OWNER_EMAIL)
        .await
        .unwrap()
        .unwrap();
    app.state
        .store
        .record_failed_sign_in(
            owner.id,
            Some(cairn_store::Timestamp::now().plus_millis(-1)),
        )
        .await
        .unwrap();
    assert_eq!(app.sign_in(OWNER_EMAIL, PASSWORD).await.status(), 200);
}

async fn a_suspended_user_loses_access_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_owner().await;
    let m = app.user_with("m@example.com", "member", "active").await;
    assert_eq!(app.get_as("/api/me", &m).await.status(), 200);
    let user = app
        .state
        .store
        .user_by_email("m@example.com")
        .await
        .unwrap()
        .unwrap();
    app.state
        .store
        .set_user_state(user.id, "suspended")
        .await
        .unwrap();
    let e = error_body(app.get_as("/api/me", &m).await, 403).await;
    assert_eq!(e["code"], "account_suspended");
    let refresh = app
        .client
        .post(app.url("/api/auth/refresh"))
        .json(&json!({ "refresh_token": m.refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 403);
    assert_eq!(
        error_body(app.sign_in("m@example.com", PASSWORD).await, 403).await["code"],
        "account_suspended"
    );
}

async fn cookie_sessions_need_the_csrf_header_for_changes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_owner().await;
    let resp = app
        .client
        .post(app.url("/api/auth/sign-in"))
        .json(&json!({ "email": OWNER_EMAIL, "password": PASSWORD, "session": "cookie" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body.get("access_token").is_none() && body.get("refresh_token").is_none(),
        "{body}"
    );
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let access = cookies
        .iter()
        .find(|c| c.starts_with("cairn_access="))
        .unwrap();
    assert!(access.contains("HttpOnly") && access.contains("SameSite=Lax"));
    let jar: String = cookies
        .iter()
        .map(|c| c.split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    let me = app
        .client
        .get(app.url("/api/me"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // A change without the CSRF header is refused; with it, it goes through.
    let out = app
        .client
        .post(app.url("/api/auth/sign-out"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(out, 403).await["code"], "csrf_failed");
    let out = app
        .client
        .post(app.url("/api/auth/sign-out"))
        .header("cookie", &jar)
        .header("x-csrf-token", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 403);
    // Refresh through the cookie rotates and keeps the tokens out of the body.
    let r = app
        .client
        .post(app.url("/api/auth/refresh"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rb: serde_json::Value = r.json().await.unwrap();
    assert!(rb.get("refresh_token").is_none());
    let out = app
        .client
        .post(app.url("/api/auth/sign-out"))
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(out
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().contains("Max-Age=0")));
}

#[tokio::test]
async fn forged_access_tokens_are_refused_over_http() {
    use base64::Engine;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let owner = app.create_owner().await;
    let parts: Vec<&str> = owner.access.split('.').collect();
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    let swapped_alg = format!(
        "{}.{}.{}",
        b64(json!({"alg": "HS256", "kid": "x"})),
        parts[1],
        parts[2]
    );
    let truncated = format!("{}.{}", parts[0], parts[1]);
    for token in [none, swapped_alg, truncated, "not-a-token".to_owned()] {
        let resp = app
            .client
            .get(app.url("/api/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_body(resp, 401).await["code"],
            "invalid_token",
            "{token}"
        );
    }
    // An expired token, signed with the real key.
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    let user: cairn_store::Id = claims["sub"].as_str().unwrap().parse().unwrap();
    let sid: cairn_store::Id = claims["sid"].as_str().unwrap().parse().unwrap();
    let old = app
        .state
        .tokens
        .issue(
            user,
            sid,
            cairn_store::Timestamp::now().plus_millis(-7_200_000),
            900,
        )
        .unwrap();
    let resp = app
        .client
        .get(app.url("/api/me"))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    let e = error_body(resp, 401).await;
    assert!(e["message"].as_str().unwrap().contains("expired"));
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn a_member_cannot_end_another_members_session() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_owner().await;
    let a = app.user_with("a@example.com", "member", "active").await;
    let b = app.user_with("b@example.com", "member", "active").await;
    let resp = app
        .client
        .delete(app.url(&format!("/api/me/sessions/{}", a.session_id)))
        .bearer_auth(&b.access)
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(resp, 404).await["code"], "not_found");
    assert_eq!(app.get_as("/api/me", &a).await.status(), 200);
    let own = app
        .client
        .delete(app.url(&format!("/api/me/sessions/{}", a.session_id)))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 204);
    assert_eq!(app.get_as("/api/me", &a).await.status(), 401);
}

#[tokio::test]
async fn a_pending_user_can_sign_in_only_to_see_their_status() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_owner().await;
    let p = app.user_with("p@example.com", "member", "pending").await;
    let me: serde_json::Value = app.get_as("/api/me", &p).await.json().await.unwrap();
    assert_eq!(me["state"], "pending");
    let resp = app
        .client
        .put(app.url("/api/me/password"))
        .bearer_auth(&p.access)
        .json(&json!({ "current_password": PASSWORD, "new_password": "another long passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(resp, 403).await["code"], "account_pending");
}

on_both_backends!(preferences_belong_to_their_owner);

async fn preferences_belong_to_their_owner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let member = app.user_with("m@example.com", "member", "active").await;
    let put = |s: &Session, key: &str, body: serde_json::Value| {
        app.client
            .put(app.url(&format!("/api/me/preferences/{key}")))
            .bearer_auth(&s.access)
            .json(&body)
            .send()
    };
    assert_eq!(
        put(&owner, "theme", json!({ "value": "dark" }))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        put(
            &owner,
            "chat.default_model",
            json!({ "value": { "id": "x" } })
        )
        .await
        .unwrap()
        .status(),
        204
    );
    assert_eq!(
        put(&owner, "theme", json!({ "value": "light" }))
            .await
            .unwrap()
            .status(),
        204
    );
    let mine: serde_json::Value = app
        .get_as("/api/me/preferences", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        mine,
        json!({ "chat.default_model": { "id": "x" }, "theme": "light" })
    );
    let theirs: serde_json::Value = app
        .get_as("/api/me/preferences", &member)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs, json!({}));
    // Bad keys and oversized values store nothing.
    assert_eq!(
        error_body(
            put(&owner, "Bad Key", json!({ "value": 1 })).await.unwrap(),
            422
        )
        .await["code"],
        "invalid_fields"
    );
    let big = json!({ "value": "x".repeat(20_000) });
    assert_eq!(
        error_body(put(&owner, "big", big).await.unwrap(), 422).await["code"],
        "invalid_fields"
    );
    assert_eq!(
        error_body(
            put(&owner, "theme", json!({ "val": 1 })).await.unwrap(),
            400
        )
        .await["code"],
        "unknown_field"
    );
    let del = app
        .client
        .delete(app.url("/api/me/preferences/theme"))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let again = app
        .client
        .delete(app.url("/api/me/preferences/theme"))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let mine: serde_json::Value = app
        .get_as("/api/me/preferences", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine, json!({ "chat.default_model": { "id": "x" } }));
}
