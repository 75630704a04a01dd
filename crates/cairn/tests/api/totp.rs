//! Two-factor sign-in: enrolment, codes used once, backup codes, turning it off, admin reset.

use serde_json::json;
use totp_rs::{Algorithm, Secret, TOTP};

use crate::helpers::{
    error_body, on_both_backends, Backend, Session, TestApp, OWNER_EMAIL, PASSWORD,
};

fn code_for(secret_b32: &str, offset_steps: i64) -> String {
    let bytes = Secret::Encoded(secret_b32.to_owned()).to_bytes().unwrap();
    let totp = TOTP::new(Algorithm::SHA1, 6, 1, 30, bytes, None, "x".into()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    totp.generate((now + offset_steps * 30) as u64)
}

async fn sign_in_with(app: &TestApp, extra: serde_json::Value) -> reqwest::Response {
    let mut body = json!({ "email": OWNER_EMAIL, "password": PASSWORD });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    app.client
        .post(app.url("/api/auth/sign-in"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

on_both_backends!(totp_enrolment_sign_in_backup_codes_and_reset);

async fn totp_enrolment_sign_in_backup_codes_and_reset(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let start = app
        .client
        .post(app.url("/api/me/totp"))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 200);
    let enrol: serde_json::Value = start.json().await.unwrap();
    let secret = enrol["secret"].as_str().unwrap().to_owned();
    let uri = enrol["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains("issuer=Cairn") && uri.contains(&secret),
        "{uri}"
    );

    // The secret is stored sealed: neither its bytes nor its base32 form are in the row.
    let row = app
        .state
        .store
        .user_by_email(OWNER_EMAIL)
        .await
        .unwrap()
        .unwrap();
    let sealed = row.totp_secret.clone().unwrap();
    let raw = Secret::Encoded(secret.clone()).to_bytes().unwrap();
    assert!(!sealed.windows(raw.len()).any(|w| w == raw.as_slice()));
    assert!(!String::from_utf8_lossy(&sealed).contains(&secret));
    // Not on until confirmed.
    assert_eq!(sign_in_with(&app, json!({})).await.status(), 200);

    let wrong = app
        .client
        .post(app.url("/api/me/totp/confirm"))
        .bearer_auth(&owner.access)
        .json(&json!({ "code": "000000" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(wrong, 422).await["code"], "invalid_totp_code");
    let ok = app
        .client
        .post(app.url("/api/me/totp/confirm"))
        .bearer_auth(&owner.access)
        .json(&json!({ "code": code_for(&secret, 0) }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let codes: Vec<String> = serde_json::from_value(
        ok.json::<serde_json::Value>().await.unwrap()["backup_codes"].clone(),
    )
    .unwrap();
    assert_eq!(codes.len(), 10);
    let me: serde_json::Value = app.get_as("/api/me", &owner).await.json().await.unwrap();
    assert_eq!(me["totp_enabled"], true);

    // Sign-in now needs the second factor; the code that confirmed enrolment is spent.
    assert_eq!(
        error_body(sign_in_with(&app, json!({})).await, 401).await["code"],
        "totp_required"
    );
    assert_eq!(
        error_body(
            sign_in_with(&app, json!({ "totp_code": "123456" })).await,
            401
        )
        .await["code"],
        "invalid_totp_code"
    );
    let reused = sign_in_with(&app, json!({ "totp_code": code_for(&secret, 0) })).await;
    let next = sign_in_with(&app, json!({ "totp_code": code_for(&secret, 1) })).await;
    assert!(
        reused.status() == 401 || next.status() == 200,
        "a fresh step works; the spent one does not"
    );
    assert_eq!(next.status(), 200);
    assert_eq!(
        sign_in_with(&app, json!({ "totp_code": code_for(&secret, 1) }))
            .await
            .status(),
        401,
        "each step once"
    );

    // A backup code works once, in any case and with or without its dash.
    let first = codes[0].to_uppercase().replace('-', "");
    assert_eq!(
        sign_in_with(&app, json!({ "backup_code": first }))
            .await
            .status(),
        200
    );
    assert_eq!(
        sign_in_with(&app, json!({ "backup_code": codes[0] }))
            .await
            .status(),
        401
    );
    assert_eq!(
        sign_in_with(&app, json!({ "backup_code": codes[1] }))
            .await
            .status(),
        200
    );

    // Turning it off needs the password.
    let fresh = Session::from_body(
        &sign_in_with(&app, json!({ "backup_code": codes[2] }))
            .await
            .json()
            .await
            .unwrap(),
    );
    let bad = app
        .client
        .delete(app.url("/api/me/totp"))
        .bearer_auth(&fresh.access)
        .json(&json!({ "password": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(bad, 403).await["code"], "invalid_credentials");
    let off = app
        .client
        .delete(app.url("/api/me/totp"))
        .bearer_auth(&fresh.access)
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 204);
    assert_eq!(sign_in_with(&app, json!({})).await.status(), 200);

    // An admin can reset a member's 2FA (a lost phone); the audit log records it.
    let member = app.user_with("m@example.com", "member", "active").await;
    let s = app
        .client
        .post(app.url("/api/me/totp"))
        .bearer_auth(&member.access)
        .send()
        .await
        .unwrap();
    let msecret = s.json::<serde_json::Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = app
        .client
        .post(app.url("/api/me/totp/confirm"))
        .bearer_auth(&member.access)
        .json(&json!({ "code": code_for(&msecret, 0) }))
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 200);
    let id = app
        .state
        .store
        .user_by_email("m@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let admin = Session::from_body(&sign_in_with(&app, json!({})).await.json().await.unwrap());
    let reset = app
        .client
        .post(app.url(&format!("/api/users/{id}/reset-2fa")))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(app.sign_in("m@example.com", PASSWORD).await.status(), 200);
    let audit = app
        .state
        .store
        .list_audit(&Default::default(), None, 100)
        .await
        .unwrap();
    for a in [
        "auth.totp.enabled",
        "auth.totp.disabled",
        "admin.user.totp_reset",
        "auth.sign_in.totp_failed",
    ] {
        assert!(audit.iter().any(|e| e.action == a), "{a}");
    }
}

#[tokio::test]
async fn required_two_factor_confines_unenrolled_accounts_to_enrolment() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("auth.require_2fa", "admins")
        .spawn()
        .await;
    let owner = app.create_owner().await;
    let member = app.user_with("m@example.com", "member", "active").await;
    // The member is not concerned; the owner may only see their profile and enrol.
    assert_eq!(app.get_as("/api/me/api-keys", &member).await.status(), 200);
    assert_eq!(app.get_as("/api/me", &owner).await.status(), 200);
    let e = error_body(app.get_as("/api/users", &owner).await, 403).await;
    assert_eq!(e["code"], "totp_enrolment_required");
    let start = app
        .client
        .post(app.url("/api/me/totp"))
        .bearer_auth(&owner.access)
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 200);
    let secret = start.json::<serde_json::Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirm = app
        .client
        .post(app.url("/api/me/totp/confirm"))
        .bearer_auth(&owner.access)
        .json(&json!({ "code": code_for(&secret, 0) }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), 200);
    // Enrolled: the same session now reaches admin routes.
    assert_eq!(app.get_as("/api/users", &owner).await.status(), 200);
}
