//! Sign-up under each registration policy, and the admin API for people and the audit log.

use serde_json::json;

use crate::helpers::{error_body, on_both_backends, Backend, Session, TestApp, PASSWORD};

async fn sign_up(app: &TestApp, email: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/sign-up"))
        .json(&json!({ "email": email, "password": PASSWORD, "display_name": "New Person" }))
        .send()
        .await
        .unwrap()
}

async fn post_as(app: &TestApp, s: &Session, path: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&s.access)
        .send()
        .await
        .unwrap()
}

on_both_backends!(
    sign_up_waits_for_approval_and_an_admin_approves_or_denies,
    suspension_and_reactivation_take_effect_at_once,
    users_can_be_searched_and_paged,
);

async fn sign_up_waits_for_approval_and_an_admin_approves_or_denies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let resp = sign_up(&app, "New.Person@Example.com").await;
    assert_eq!(resp.status(), 201);
    let newbie = Session::from_body(&resp.json().await.unwrap());
    let me: serde_json::Value = app.get_as("/api/me", &newbie).await.json().await.unwrap();
    assert_eq!(
        (me["state"].as_str(), me["role"].as_str()),
        (Some("pending"), Some("member"))
    );
    // Same address in another case or form: taken.
    assert_eq!(
        error_body(sign_up(&app, "new.person@EXAMPLE.com").await, 409).await["code"],
        "email_taken"
    );

    let pending: serde_json::Value = app
        .get_as("/api/users?state=pending", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["items"].as_array().unwrap().len(), 1);
    let id = pending["items"][0]["id"].as_str().unwrap().to_owned();
    let approved = post_as(&app, &owner, &format!("/api/users/{id}/approve")).await;
    assert_eq!(approved.status(), 200);
    let body: serde_json::Value = approved.json().await.unwrap();
    assert_eq!(body["state"], "active");
    // Approving twice is a state conflict.
    let again = post_as(&app, &owner, &format!("/api/users/{id}/approve")).await;
    assert_eq!(error_body(again, 409).await["code"], "invalid_state");
    // The approved member now reaches member routes with the same token.
    let sessions = app.get_as("/api/me/sessions", &newbie).await;
    assert_eq!(sessions.status(), 200);

    // A denied sign-up loses its session and cannot sign in.
    let resp = sign_up(&app, "other@example.com").await;
    let other = Session::from_body(&resp.json().await.unwrap());
    let other_id = app
        .state
        .store
        .user_by_email("other@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    assert_eq!(
        post_as(&app, &owner, &format!("/api/users/{other_id}/deny"))
            .await
            .status(),
        200
    );
    assert_eq!(app.get_as("/api/me", &other).await.status(), 401);
    assert_eq!(
        error_body(app.sign_in("other@example.com", PASSWORD).await, 403).await["code"],
        "account_suspended"
    );

    let audit: serde_json::Value = app
        .get_as("/api/audit?action=admin.user.", &owner)
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["admin.user.denied", "admin.user.approved"]);
    assert_eq!(audit["items"][1]["target_id"], id.as_str());
}

#[tokio::test]
async fn registration_can_be_closed_or_open() {
    let closed = TestApp::builder(Backend::Sqlite)
        .set("auth.registration", "closed")
        .spawn()
        .await;
    closed.create_owner().await;
    assert_eq!(
        error_body(sign_up(&closed, "x@example.com").await, 403).await["code"],
        "registration_closed"
    );
    assert!(closed
        .state
        .store
        .user_by_email("x@example.com")
        .await
        .unwrap()
        .is_none());

    let open = TestApp::builder(Backend::Sqlite)
        .set("auth.registration", "open")
        .spawn()
        .await;
    open.create_owner().await;
    let resp = sign_up(&open, "y@example.com").await;
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["user"]["state"], "active");
    // Bad input stores nothing.
    let weak = open
        .client
        .post(open.url("/api/auth/sign-up"))
        .json(&json!({ "email": "z@example.com", "password": "password1234" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(weak, 422).await["code"], "weak_password");
    let long_name = open
        .client
        .post(open.url("/api/auth/sign-up"))
        .json(&json!({ "email": "z@example.com", "password": PASSWORD, "display_name": "n".repeat(500) }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(long_name, 422).await["code"], "invalid_fields");
    assert!(open
        .state
        .store
        .user_by_email("z@example.com")
        .await
        .unwrap()
        .is_none());
}

async fn suspension_and_reactivation_take_effect_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let admin = app.user_with("admin@example.com", "admin", "active").await;
    let member = app.user_with("m@example.com", "member", "active").await;
    let admin2 = app.user_with("admin2@example.com", "admin", "active").await;
    let id = |email: &'static str| {
        let store = app.state.store.clone();
        async move { store.user_by_email(email).await.unwrap().unwrap().id }
    };
    let (member_id, admin2_id, owner_id, admin_id) = (
        id("m@example.com").await,
        id("admin2@example.com").await,
        id("owner@example.com").await,
        id("admin@example.com").await,
    );

    // Admins manage members, not other admins or the owner, and never themselves.
    assert_eq!(
        error_body(
            post_as(&app, &admin, &format!("/api/users/{admin2_id}/suspend")).await,
            403
        )
        .await["code"],
        "forbidden"
    );
    assert_eq!(
        error_body(
            post_as(&app, &admin, &format!("/api/users/{owner_id}/suspend")).await,
            403
        )
        .await["code"],
        "forbidden"
    );
    assert_eq!(
        error_body(
            post_as(&app, &admin, &format!("/api/users/{admin_id}/suspend")).await,
            409
        )
        .await["code"],
        "cannot_change_self"
    );
    assert_eq!(
        post_as(
            &app,
            &admin,
            &format!("/api/users/{}/suspend", cairn_store::Id::new())
        )
        .await
        .status(),
        404
    );

    assert_eq!(
        post_as(&app, &admin, &format!("/api/users/{member_id}/suspend"))
            .await
            .status(),
        200
    );
    assert_eq!(
        error_body(app.get_as("/api/me", &member).await, 401).await["code"],
        "invalid_token"
    );
    assert_eq!(
        post_as(&app, &admin, &format!("/api/users/{member_id}/reactivate"))
            .await
            .status(),
        200
    );
    assert_eq!(app.sign_in("m@example.com", PASSWORD).await.status(), 200);

    // The owner changes roles; the new role applies on the next request.
    let promote = app
        .client
        .put(app.url(&format!("/api/users/{member_id}/role")))
        .bearer_auth(&owner.access)
        .json(&json!({ "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(promote.status(), 200);
    let fresh = Session::from_body(
        &app.sign_in("m@example.com", PASSWORD)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(app.get_as("/api/users", &fresh).await.status(), 200);
    let to_owner = app
        .client
        .put(app.url(&format!("/api/users/{member_id}/role")))
        .bearer_auth(&owner.access)
        .json(&json!({ "role": "owner" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(to_owner, 422).await["code"], "invalid_fields");
    // The owner can suspend an admin, whose sessions end.
    assert_eq!(
        post_as(&app, &owner, &format!("/api/users/{admin2_id}/suspend"))
            .await
            .status(),
        200
    );
    assert_eq!(app.get_as("/api/me", &admin2).await.status(), 401);
    // Ending someone's sessions.
    assert_eq!(
        post_as(
            &app,
            &owner,
            &format!("/api/users/{member_id}/revoke-sessions")
        )
        .await
        .status(),
        204
    );
    assert_eq!(app.get_as("/api/me", &fresh).await.status(), 401);
}

async fn users_can_be_searched_and_paged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    for i in 0..5 {
        app.user_with(&format!("team{i}@example.com"), "member", "active")
            .await;
    }
    app.user_with("100%_odd@example.com", "member", "active")
        .await;
    let page1: serde_json::Value = app
        .get_as("/api/users?q=TEAM&limit=3", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2: serde_json::Value = app
        .get_as(
            &format!("/api/users?q=team&limit=3&cursor={cursor}"),
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page2["items"].as_array().unwrap().len(), 2);
    assert!(page2["next_cursor"].is_null());
    // LIKE wildcards in the query are literal.
    let odd: serde_json::Value = app
        .get_as("/api/users?q=100%25_", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(odd["items"].as_array().unwrap().len(), 1);
    let none: serde_json::Value = app
        .get_as("/api/users?q=%25", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        none["items"].as_array().unwrap().len(),
        1,
        "only the address containing a % matches"
    );
    for bad in [
        "/api/users?limit=0",
        "/api/users?limit=1000",
        "/api/users?state=royal",
        "/api/users?cursor=zzz",
        "/api/users?bogus=1",
    ] {
        assert_eq!(
            error_body(app.get_as(bad, &owner).await, 400).await["code"],
            "invalid_query",
            "{bad}"
        );
    }
}
