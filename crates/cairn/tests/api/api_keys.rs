//! API keys: shown once, scoped, stored hashed, revocable, expiring, and never stronger than
//! their owner.

use serde_json::json;

use crate::helpers::{error_body, on_both_backends, Backend, TestApp};

async fn get_with_key(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

on_both_backends!(keys_act_for_their_owner_within_their_scopes_until_revoked);

async fn keys_act_for_their_owner_within_their_scopes_until_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let member = app.user_with("m@example.com", "member", "active").await;

    let resp = app
        .client
        .post(app.url("/api/me/api-keys"))
        .bearer_auth(&member.access)
        .json(
            &json!({ "name": "laptop script", "scopes": ["read", "chat"], "expires_in_days": 30 }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: serde_json::Value = resp.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("cairn_"));
    assert_eq!(created["scopes"], json!(["read", "chat"]));
    assert!(created["expires_at"].is_string());

    // Shown once: the list never carries it, and the database holds only a hash.
    let listed: serde_json::Value = app
        .get_as("/api/me/api-keys", &member)
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"][0].get("key").is_none());
    assert!(!listed.to_string().contains(&key[20..]));

    let me = get_with_key(&app, "/api/me", &key).await;
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["email"], "m@example.com");
    let listed: serde_json::Value = app
        .get_as("/api/me/api-keys", &member)
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"][0]["last_used_at"].is_string());

    // Routes for sessions refuse keys; routes for other scopes ask for theirs.
    let pw = app
        .client
        .put(app.url("/api/me/password"))
        .bearer_auth(&key)
        .json(&json!({ "current_password": "x", "new_password": "y" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(pw, 403).await["code"], "api_key_not_allowed");
    let users = get_with_key(&app, "/api/users", &key).await;
    let e = error_body(users, 403).await;
    assert_eq!(
        (e["code"].as_str(), e["details"]["required_scope"].as_str()),
        (Some("insufficient_scope"), Some("admin"))
    );

    // A member cannot mint admin keys; bad requests store nothing.
    for body in [
        json!({ "name": "x", "scopes": ["admin"] }),
        json!({ "name": "x", "scopes": [] }),
        json!({ "name": "x", "scopes": ["everything"] }),
        json!({ "name": "", "scopes": ["read"] }),
        json!({ "name": "x", "scopes": ["read"], "expires_in_days": 0 }),
    ] {
        let r = app
            .client
            .post(app.url("/api/me/api-keys"))
            .bearer_auth(&member.access)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_body(r, 422).await["code"], "invalid_fields", "{body}");
    }
    let listed: serde_json::Value = app
        .get_as("/api/me/api-keys", &member)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    // Forged keys: right prefix, wrong secret; garbage.
    let (head, _) = key.rsplit_once('_').unwrap();
    for forged in [
        format!("{head}_wrongsecret"),
        "cairn_nothing".to_owned(),
        "cairn_abcdefabcdef_x".to_owned(),
    ] {
        assert_eq!(
            error_body(get_with_key(&app, "/api/me", &forged).await, 401).await["code"],
            "invalid_token"
        );
    }

    // Suspending the owner stops the key at once; reactivating restores it.
    let member_id = app
        .state
        .store
        .user_by_email("m@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let suspend = app
        .client
        .post(app.url(&format!("/api/users/{member_id}/suspend")))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(suspend.status(), 200);
    assert_eq!(
        error_body(get_with_key(&app, "/api/me", &key).await, 403).await["code"],
        "account_suspended"
    );
    let back = app
        .client
        .post(app.url(&format!("/api/users/{member_id}/reactivate")))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200);
    assert_eq!(get_with_key(&app, "/api/me", &key).await.status(), 200);

    // Another member cannot revoke it; its owner can, and it stops working.
    let other = app.user_with("o@example.com", "member", "active").await;
    let id = created["id"].as_str().unwrap();
    let r = app
        .client
        .delete(app.url(&format!("/api/me/api-keys/{id}")))
        .bearer_auth(&other.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let fresh = crate::helpers::Session::from_body(
        &app.sign_in("m@example.com", crate::helpers::PASSWORD)
            .await
            .json()
            .await
            .unwrap(),
    );
    let r = app
        .client
        .delete(app.url(&format!("/api/me/api-keys/{id}")))
        .bearer_auth(&fresh.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get_with_key(&app, "/api/me", &key).await.status(), 401);
}

#[tokio::test]
async fn an_admin_key_of_a_demoted_admin_opens_no_admin_route() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let owner = app.create_owner().await;
    let admin = app.user_with("a@example.com", "admin", "active").await;
    let key = app.api_key(&admin, &["admin"]).await;
    assert_eq!(get_with_key(&app, "/api/users", &key).await.status(), 200);
    let id = app
        .state
        .store
        .user_by_email("a@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let demote = app
        .client
        .put(app.url(&format!("/api/users/{id}/role")))
        .bearer_auth(&owner.access)
        .json(&json!({ "role": "member" }))
        .send()
        .await
        .unwrap();
    assert_eq!(demote.status(), 200);
    assert_eq!(
        error_body(get_with_key(&app, "/api/users", &key).await, 403).await["code"],
        "forbidden"
    );
}
