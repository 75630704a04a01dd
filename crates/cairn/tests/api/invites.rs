//! Invitations under the `invite` policy, and admin-issued password-reset links.

use serde_json::json;

use crate::helpers::{error_body, on_both_backends, Backend, Session, TestApp, PASSWORD};

async fn sign_up(app: &TestApp, email: &str, invite: Option<&str>) -> reqwest::Response {
    let mut body = json!({ "email": email, "password": PASSWORD });
    if let Some(t) = invite {
        body["invite_token"] = json!(t);
    }
    app.client
        .post(app.url("/api/auth/sign-up"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn invite(app: &TestApp, s: &Session, body: serde_json::Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/invites"))
        .bearer_auth(&s.access)
        .json(&body)
        .send()
        .await
        .unwrap()
}

on_both_backends!(
    invitations_admit_a_limited_number_of_people,
    reset_links_set_a_new_password_once
);

async fn invitations_admit_a_limited_number_of_people(backend: Backend) {
    let app = TestApp::builder(backend)
        .set("auth.registration", "invite")
        .spawn()
        .await;
    let owner = app.create_owner().await;
    assert_eq!(
        error_body(sign_up(&app, "a@example.com", None).await, 403).await["code"],
        "invite_required"
    );

    let resp = invite(
        &app,
        &owner,
        json!({ "max_uses": 2, "expires_in_hours": 24 }),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let inv: serde_json::Value = resp.json().await.unwrap();
    let token = inv["token"].as_str().unwrap().to_owned();
    assert_eq!(
        (inv["role"].as_str(), inv["max_uses"].as_i64()),
        (Some("member"), Some(2))
    );

    let first = sign_up(&app, "a@example.com", Some(&token)).await;
    assert_eq!(first.status(), 201);
    assert_eq!(
        first.json::<serde_json::Value>().await.unwrap()["user"]["state"],
        "active"
    );
    // A failed sign-up (taken email) does not use the invitation up.
    assert_eq!(
        error_body(sign_up(&app, "a@example.com", Some(&token)).await, 409).await["code"],
        "email_taken"
    );
    assert_eq!(
        sign_up(&app, "b@example.com", Some(&token)).await.status(),
        201
    );
    assert_eq!(
        error_body(sign_up(&app, "c@example.com", Some(&token)).await, 403).await["code"],
        "invalid_invite"
    );
    assert_eq!(
        error_body(
            sign_up(&app, "c@example.com", Some("cairn_inv_forged")).await,
            403
        )
        .await["code"],
        "invalid_invite"
    );

    // Only the owner invites administrators; a revoked invitation admits nobody.
    let admin = app.user_with("adm@example.com", "admin", "active").await;
    assert_eq!(
        error_body(invite(&app, &admin, json!({ "role": "admin" })).await, 403).await["code"],
        "forbidden"
    );
    let as_admin: serde_json::Value = invite(&app, &owner, json!({ "role": "admin" }))
        .await
        .json()
        .await
        .unwrap();
    let id = as_admin["id"].as_str().unwrap();
    let listed: serde_json::Value = app
        .get_as("/api/invites", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(listed["items"][0].get("token").is_none());
    let r = app
        .client
        .delete(app.url(&format!("/api/invites/{id}")))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let revoked = sign_up(&app, "d@example.com", as_admin["token"].as_str()).await;
    assert_eq!(error_body(revoked, 403).await["code"], "invalid_invite");
    for bad in [
        json!({ "max_uses": 0 }),
        json!({ "expires_in_hours": 100000 }),
        json!({ "role": "owner" }),
    ] {
        assert_eq!(
            error_body(invite(&app, &owner, bad.clone()).await, 422).await["code"],
            "invalid_fields",
            "{bad}"
        );
    }
}

async fn reset_links_set_a_new_password_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let member = app.user_with("m@example.com", "member", "active").await;
    let id = app
        .state
        .store
        .user_by_email("m@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let resp = app
        .client
        .post(app.url(&format!("/api/users/{id}/password-reset")))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let token = resp.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let reset = |password: &'static str| {
        app.client
            .post(app.url("/api/auth/password-reset"))
            .json(&json!({ "token": token, "new_password": password }))
            .send()
    };
    // A weak password is refused and does not burn the link.
    assert_eq!(
        error_body(reset("short").await.unwrap(), 422).await["code"],
        "weak_password"
    );
    assert_eq!(
        reset("a fresh and long passphrase").await.unwrap().status(),
        204
    );
    assert_eq!(
        error_body(reset("another long passphrase").await.unwrap(), 401).await["code"],
        "invalid_reset_token"
    );
    assert_eq!(
        app.get_as("/api/me", &member).await.status(),
        401,
        "old sessions end"
    );
    assert_eq!(
        app.sign_in("m@example.com", "a fresh and long passphrase")
            .await
            .status(),
        200
    );
}
