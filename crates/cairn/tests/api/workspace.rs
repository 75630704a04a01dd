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
