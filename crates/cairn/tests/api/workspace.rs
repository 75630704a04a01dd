//! Workspace settings: everyone signed in reads them, admins change them with optimistic
//! versions, and every change is audited with before and after.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

async fn workspace_settings_are_versioned_validated_and_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let member = app.user_with("m@example.com", "member", "active").await;

    // Setup recorded the name; members read it.
    let got: Value = app
        .get_as("/api/workspace", &member)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "Acme");
    assert_eq!(got["version"], 1);

    // A change with the version read succeeds and bumps it.
    let resp = app
        .call(
            Method::PATCH,
            "/api/workspace",
            &owner,
            Some(json!({ "name": "  Acme Research ", "version": 1 })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["name"], "Acme Research");
    assert_eq!(got["version"], 2);

    // A stale version is refused and changes nothing.
    let stale = app
        .call(
            Method::PATCH,
            "/api/workspace",
            &owner,
            Some(json!({ "name": "Overwritten", "version": 1 })),
        )
        .await;
    assert_eq!(error_body(stale, 409).await["code"], "version_conflict");

    // Bad values and unknown fields: clear errors, nothing stored.
    for (body, status) in [
        (json!({ "name": "" }), 422),
        (json!({ "name": "x".repeat(101) }), 422),
        (json!({ "name": "tab\there" }), 422),
        (json!({ "name": 5 }), 422),
        (json!({ "colour": "red" }), 400),
    ] {
        let resp = app
            .call(Method::PATCH, "/api/workspace", &owner, Some(body.clone()))
            .await;
        assert_eq!(resp.status(), status, "{body}");
    }
    let got: Value = app
        .get_as("/api/workspace", &member)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "Acme Research");
    assert_eq!(got["version"], 2);

    // `null` clears the name.
    let resp = app
        .call(
            Method::PATCH,
            "/api/workspace",
            &owner,
            Some(json!({ "name": null })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["name"], Value::Null);

    // Each change is in the audit log with what it was and what it became.
    let audit: Value = app
        .get_as("/api/audit?action=settings.changed", &owner)
        .await
        .json()
        .await
        .unwrap();
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{audit}");
    let renamed = items
        .iter()
        .find(|e| e["details"]["after"]["name"] == "Acme Research")
        .expect("the rename is audited");
    assert_eq!(renamed["details"]["before"]["name"], "Acme");
    assert_eq!(renamed["target_id"], "workspace");
}

on_both_backends!(workspace_settings_are_versioned_validated_and_audited);

/// A 1×1 PNG.
const PNG_1PX: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

async fn branding_is_validated_and_the_public_part_shown_before_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // Before setup: the sign-in page learns that setup is still to be done.
    let public: Value = app.get("/api/workspace/public").await.json().await.unwrap();
    assert_eq!(public["setup_needed"], true);
    assert_eq!(public["registration"], "approval");

    let owner = app.create_owner().await;
    let member = app.user_with("m@example.com", "member", "active").await;
    let logo = format!("data:image/png;base64,{PNG_1PX}");
    let resp = app
        .call(
            Method::PATCH,
            "/api/workspace",
            &owner,
            Some(json!({
                "logo": logo,
                "accent_color": "#3B82F6",
                "welcome_message": "  Ask about the **handbook**.  ",
                "suggested_prompts": ["How do I book leave?", " Who is on call? "],
            })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["accent_color"], "#3b82f6");
    assert_eq!(got["welcome_message"], "Ask about the **handbook**.");
    assert_eq!(
        got["suggested_prompts"],
        json!(["How do I book leave?", "Who is on call?"])
    );

    // Anyone (signed in or not) sees name, logo and colour; only members see the rest.
    let public: Value = app.get("/api/workspace/public").await.json().await.unwrap();
    assert_eq!(public["setup_needed"], false);
    assert_eq!(public["name"], "Acme");
    assert_eq!(public["logo"], logo.as_str());
    assert_eq!(public["accent_color"], "#3b82f6");
    assert!(public.get("welcome_message").is_none(), "{public}");
    let full: Value = app
        .get_as("/api/workspace", &member)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(full["suggested_prompts"][1], "Who is on call?");

    // Bad branding: clear errors, nothing stored.
    for body in [
        json!({ "logo": "https://evil.example/logo.png" }),
        json!({ "logo": "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=" }),
        json!({ "logo": format!("data:image/jpeg;base64,{PNG_1PX}") }),
        json!({ "logo": "data:image/png;base64,!!!" }),
        json!({ "logo": format!("data:image/png;base64,{}", "A".repeat(300_000)) }),
        json!({ "accent_color": "red" }),
        json!({ "accent_color": "#12345g" }),
        json!({ "welcome_message": "x".repeat(4001) }),
        json!({ "suggested_prompts": vec!["q"; 9] }),
        json!({ "suggested_prompts": [""] }),
    ] {
        let resp = app
            .call(Method::PATCH, "/api/workspace", &owner, Some(body.clone()))
            .await;
        let e = error_body(resp, 422).await;
        assert_eq!(e["code"], "invalid_fields", "{body}");
    }
    let full: Value = app
        .get_as("/api/workspace", &member)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(full["logo"], logo.as_str());
    assert_eq!(full["accent_color"], "#3b82f6");

    // The audit log keeps the logo's digest, not its bytes; `null` removes it.
    let resp = app
        .call(
            Method::PATCH,
            "/api/workspace",
            &owner,
            Some(json!({ "logo": null, "welcome_message": "" })),
        )
        .await;
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["logo"], Value::Null);
    assert_eq!(got["welcome_message"], Value::Null);
    let audit: Value = app
        .get_as("/api/audit?action=settings.changed", &owner)
        .await
        .json()
        .await
        .unwrap();
    let text = audit.to_string();
    assert!(!text.contains(PNG_1PX), "the logo's bytes are not audited");
    assert!(text.contains("sha256"), "{text}");
}

on_both_backends!(branding_is_validated_and_the_public_part_shown_before_sign_in);

/// People rename themselves; the change is checked and audited.
async fn people_change_their_own_name(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let member = app.user_with("m@example.com", "member", "active").await;
    let resp = app
        .call(
            Method::PATCH,
            "/api/me",
            &member,
            Some(json!({ "display_name": "  Mia Q. " })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["display_name"], "Mia Q.");
    let again: Value = app.get_as("/api/me", &member).await.json().await.unwrap();
    assert_eq!(again["display_name"], "Mia Q.");
    // Blank takes the email's local part; bad values and unknown fields are refused.
    let resp = app
        .call(
            Method::PATCH,
            "/api/me",
            &member,
            Some(json!({ "display_name": "" })),
        )
        .await;
    assert_eq!(resp.json::<Value>().await.unwrap()["display_name"], "m");
    for (body, status) in [
        (json!({ "display_name": "x".repeat(101) }), 422),
        (json!({ "display_name": "a\u{7}b" }), 422),
        (json!({ "email": "new@example.com" }), 400),
    ] {
        let resp = app
            .call(Method::PATCH, "/api/me", &member, Some(body.clone()))
            .await;
        assert_eq!(resp.status(), status, "{body}");
    }
    let audit: Value = app
        .get_as("/api/audit?action=account.renamed", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
    assert_eq!(audit["items"][1]["details"]["to"], "Mia Q.");
}

on_both_backends!(people_change_their_own_name);

/// Members find an active colleague by exact email (to share a collection), nothing more.
async fn members_look_up_an_active_colleague_by_exact_email(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let _owner = app.create_owner().await;
    let member = app.user_with("m@example.com", "member", "active").await;
    let _colleague = app
        .user_with("colleague@example.com", "member", "active")
        .await;
    let _pending = app.user_with("p@example.com", "member", "pending").await;
    let found: Value = app
        .get_as("/api/users/lookup?email=COLLEAGUE@example.com", &member)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["email"], "colleague@example.com");
    assert!(found["id"].is_string());
    assert!(
        found.get("role").is_none() && found.get("state").is_none(),
        "{found}"
    );
    for q in [
        "email=p@example.com",
        "email=nobody@example.com",
        "email=colleague@",
    ] {
        let resp = app.get_as(&format!("/api/users/lookup?{q}"), &member).await;
        assert!(
            matches!(resp.status().as_u16(), 404 | 422),
            "{q}: {}",
            resp.status()
        );
    }
    let resp = app
        .get_as("/api/users/lookup?email=colleague%", &member)
        .await;
    assert_ne!(resp.status(), 200);
    let resp = app.get_as("/api/users/lookup", &member).await;
    assert_eq!(resp.status(), 400);
}

on_both_backends!(members_look_up_an_active_colleague_by_exact_email);
