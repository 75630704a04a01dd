//! The authorization matrix: every route the router has × every kind of caller → the expected
//! outcome. The route list comes from the router's own rule table, and must equal the table
//! below: a new route without a row here fails `every_route_has_a_row_in_the_matrix`.

use cairn::auth::{Access, Scope};

use crate::helpers::{on_both_backends, Backend, Session, TestApp};

/// Every API route and who may call it.
const MATRIX: &[(&str, &str, Access, Option<Scope>)] = &[
    ("GET", "/api/health", Access::Public, None),
    ("GET", "/api/health/live", Access::Public, None),
    ("GET", "/api/health/ready", Access::Public, None),
    ("GET", "/metrics", Access::Public, None),
    ("GET", "/api/setup", Access::Public, None),
    ("POST", "/api/setup", Access::Public, None),
    ("POST", "/api/auth/sign-up", Access::Public, None),
    ("POST", "/api/auth/sign-in", Access::Public, None),
    ("POST", "/api/auth/refresh", Access::Public, None),
    ("POST", "/api/auth/sign-out", Access::SignedIn, None),
    (
        "POST",
        "/api/auth/sign-out-everywhere",
        Access::SignedIn,
        None,
    ),
    ("GET", "/api/me", Access::SignedIn, Some(Scope::Read)),
    ("PATCH", "/api/me", Access::Member, None),
    (
        "GET",
        "/api/users/lookup",
        Access::Member,
        Some(Scope::Read),
    ),
    ("PUT", "/api/me/password", Access::Member, None),
    ("GET", "/api/me/sessions", Access::SignedIn, None),
    ("DELETE", "/api/me/sessions/{id}", Access::SignedIn, None),
    ("GET", "/api/users", Access::Admin, Some(Scope::Admin)),
    ("GET", "/api/users/{id}", Access::Admin, Some(Scope::Admin)),
    (
        "POST",
        "/api/users/{id}/approve",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "POST",
        "/api/users/{id}/deny",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "POST",
        "/api/users/{id}/suspend",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "POST",
        "/api/users/{id}/reactivate",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "POST",
        "/api/users/{id}/revoke-sessions",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "PUT",
        "/api/users/{id}/role",
        Access::Owner,
        Some(Scope::Admin),
    ),
    ("GET", "/api/audit", Access::Admin, Some(Scope::Admin)),
    ("POST", "/api/me/api-keys", Access::Member, None),
    ("GET", "/api/me/api-keys", Access::SignedIn, None),
    ("DELETE", "/api/me/api-keys/{id}", Access::SignedIn, None),
    ("POST", "/api/me/totp", Access::Member, None),
    ("POST", "/api/me/totp/confirm", Access::Member, None),
    ("DELETE", "/api/me/totp", Access::Member, None),
    (
        "POST",
        "/api/users/{id}/reset-2fa",
        Access::Admin,
        Some(Scope::Admin),
    ),
    ("POST", "/api/invites", Access::Admin, Some(Scope::Admin)),
    ("GET", "/api/invites", Access::Admin, Some(Scope::Admin)),
    (
        "DELETE",
        "/api/invites/{id}",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "POST",
        "/api/users/{id}/password-reset",
        Access::Admin,
        Some(Scope::Admin),
    ),
    ("POST", "/api/auth/password-reset", Access::Public, None),
    (
        "GET",
        "/api/me/preferences",
        Access::SignedIn,
        Some(Scope::Read),
    ),
    ("PUT", "/api/me/preferences/{key}", Access::SignedIn, None),
    (
        "DELETE",
        "/api/me/preferences/{key}",
        Access::SignedIn,
        None,
    ),
    ("GET", "/api/workspace", Access::SignedIn, Some(Scope::Read)),
    ("GET", "/api/workspace/public", Access::Public, None),
    ("GET", "/api/openapi.json", Access::Public, None),
    ("GET", "/api/docs", Access::Public, None),
    ("PATCH", "/api/workspace", Access::Admin, Some(Scope::Admin)),
    ("GET", "/api/collections", Access::Member, Some(Scope::Read)),
    (
        "POST",
        "/api/collections",
        Access::Member,
        Some(Scope::Ingest),
    ),
    (
        "GET",
        "/api/collections/{id}",
        Access::Member,
        Some(Scope::Read),
    ),
    (
        "PATCH",
        "/api/collections/{id}",
        Access::Member,
        Some(Scope::Ingest),
    ),
    ("DELETE", "/api/collections/{id}", Access::Member, None),
    (
        "GET",
        "/api/collections/{id}/members",
        Access::Member,
        Some(Scope::Read),
    ),
    (
        "PUT",
        "/api/collections/{id}/members/{user_id}",
        Access::Member,
        None,
    ),
    (
        "DELETE",
        "/api/collections/{id}/members/{user_id}",
        Access::Member,
        None,
    ),
    (
        "POST",
        "/api/collections/{id}/documents",
        Access::Member,
        Some(Scope::Ingest),
    ),
    (
        "GET",
        "/api/collections/{id}/documents",
        Access::Member,
        Some(Scope::Read),
    ),
    (
        "GET",
        "/api/documents/{id}",
        Access::Member,
        Some(Scope::Read),
    ),
    ("POST", "/api/search", Access::Member, Some(Scope::Read)),
    (
        "GET",
        "/api/documents/{id}/chunks",
        Access::Member,
        Some(Scope::Read),
    ),
    (
        "GET",
        "/api/documents/{id}/content",
        Access::Member,
        Some(Scope::Read),
    ),
    (
        "DELETE",
        "/api/documents/{id}",
        Access::Member,
        Some(Scope::Ingest),
    ),
    (
        "POST",
        "/api/documents/{id}/retry",
        Access::Member,
        Some(Scope::Ingest),
    ),
    (
        "POST",
        "/api/documents/{id}/cancel",
        Access::Member,
        Some(Scope::Ingest),
    ),
    (
        "POST",
        "/api/documents/{id}/restore",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "GET",
        "/api/deleted-documents",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "POST",
        "/api/documents/reprocess",
        Access::Admin,
        Some(Scope::Admin),
    ),
    ("GET", "/api/jobs", Access::Admin, Some(Scope::Admin)),
    ("GET", "/api/models", Access::Member, Some(Scope::Chat)),
    (
        "GET",
        "/api/conversations",
        Access::Member,
        Some(Scope::Chat),
    ),
    (
        "POST",
        "/api/conversations",
        Access::Member,
        Some(Scope::Chat),
    ),
    (
        "GET",
        "/api/conversations/{id}",
        Access::Member,
        Some(Scope::Chat),
    ),
    (
        "PATCH",
        "/api/conversations/{id}",
        Access::Member,
        Some(Scope::Chat),
    ),
    (
        "DELETE",
        "/api/conversations/{id}",
        Access::Member,
        Some(Scope::Chat),
    ),
    (
        "GET",
        "/api/conversations/{id}/messages",
        Access::Member,
        Some(Scope::Chat),
    ),
    (
        "POST",
        "/api/conversations/{id}/messages",
        Access::Member,
        Some(Scope::Chat),
    ),
    (
        "GET",
        "/api/conversations/{id}/export",
        Access::Member,
        Some(Scope::Chat),
    ),
    ("GET", "/api/usage", Access::Member, Some(Scope::Chat)),
    ("GET", "/v1/models", Access::Member, Some(Scope::Chat)),
    (
        "POST",
        "/v1/chat/completions",
        Access::Member,
        Some(Scope::Chat),
    ),
    ("POST", "/v1/embeddings", Access::Member, Some(Scope::Chat)),
    (
        "GET",
        "/api/admin/providers",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "POST",
        "/api/admin/providers",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "PATCH",
        "/api/admin/providers/{id}",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "DELETE",
        "/api/admin/providers/{id}",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "POST",
        "/api/admin/providers/{id}/check",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "GET",
        "/api/admin/models",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "POST",
        "/api/admin/models",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "PATCH",
        "/api/admin/models/{id}",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "DELETE",
        "/api/admin/models/{id}",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "GET",
        "/api/admin/prices",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "PUT",
        "/api/admin/prices/{model}",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "DELETE",
        "/api/admin/prices/{model}",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "GET",
        "/api/admin/budgets",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "PUT",
        "/api/admin/budgets/workspace",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "DELETE",
        "/api/admin/budgets/workspace",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "PUT",
        "/api/admin/budgets/users/{id}",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "DELETE",
        "/api/admin/budgets/users/{id}",
        Access::Admin,
        Some(Scope::Admin),
    ),
    ("GET", "/api/admin/usage", Access::Admin, Some(Scope::Admin)),
    (
        "GET",
        "/api/admin/backups",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "POST",
        "/api/admin/backups",
        Access::Admin,
        Some(Scope::Admin),
    ),
    (
        "GET",
        "/api/admin/backups/{name}",
        Access::Owner,
        Some(Scope::Admin),
    ),
    (
        "DELETE",
        "/api/admin/backups/{name}",
        Access::Owner,
        Some(Scope::Admin),
    ),
    (
        "GET",
        "/api/admin/jobs/{id}",
        Access::Admin,
        Some(Scope::Admin),
    ),
];

/// Error codes that mean "the authorization layer refused".
const DENIALS: &[&str] = &[
    "totp_enrolment_required",
    "api_key_not_allowed",
    "insufficient_scope",
    "unauthenticated",
    "invalid_token",
    "account_pending",
    "account_suspended",
    "forbidden",
    "csrf_failed",
];

#[tokio::test]
async fn every_route_has_a_row_in_the_matrix() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut routes: Vec<(String, &str, Access, Option<Scope>)> = app
        .state
        .routes
        .entries()
        .iter()
        .map(|e| (e.method.to_string(), e.path, e.rule.access, e.rule.api_key))
        .collect();
    let mut expected: Vec<(String, &str, Access, Option<Scope>)> = MATRIX
        .iter()
        .map(|(m, p, a, k)| (m.to_string(), *p, *a, *k))
        .collect();
    routes.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(
        routes, expected,
        "the router's routes and the matrix differ: add a row for each new route"
    );
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Anonymous,
    Pending,
    Member,
    Admin,
    Owner,
    Suspended,
    /// An API key with this one scope, belonging to an active admin.
    Key(Scope),
}

fn allowed(access: Access, scope: Option<Scope>, caller: Caller) -> bool {
    if let Caller::Key(k) = caller {
        return access == Access::Public
            || (scope == Some(k) && allowed(access, None, Caller::Admin));
    }
    match (access, caller) {
        (Access::Public, _) => true,
        (_, Caller::Anonymous | Caller::Suspended) => false,
        (Access::SignedIn, _) => true,
        (Access::Member, Caller::Member | Caller::Admin) => true,
        (Access::Admin, Caller::Admin | Caller::Owner) => true,
        (Access::Owner, Caller::Owner) => true,
        (Access::Member, Caller::Owner) => true,
        _ => false,
    }
}

on_both_backends!(every_route_enforces_its_row_for_every_kind_of_caller);

async fn every_route_enforces_its_row_for_every_kind_of_caller(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_owner().await;
    let callers = [
        Caller::Anonymous,
        Caller::Pending,
        Caller::Member,
        Caller::Admin,
        Caller::Owner,
        Caller::Suspended,
        Caller::Key(Scope::Read),
        Caller::Key(Scope::Chat),
        Caller::Key(Scope::Ingest),
        Caller::Key(Scope::TracesWrite),
        Caller::Key(Scope::Admin),
    ];
    let mut failures = Vec::new();
    let mut n = 0;
    for (method, path, access, scope) in MATRIX {
        for caller in callers {
            n += 1;
            // A fresh account per call: some routes (sign-out, password) end the session they use.
            let session: Option<Session> = match caller {
                Caller::Key(scope) => {
                    let admin = app
                        .user_with(&format!("k{n}@example.com"), "admin", "active")
                        .await;
                    Some(crate::helpers::Session {
                        access: app.api_key(&admin, &[scope.as_str()]).await,
                        ..admin
                    })
                }
                Caller::Anonymous => None,
                Caller::Pending => Some(
                    app.user_with(&format!("p{n}@example.com"), "member", "pending")
                        .await,
                ),
                Caller::Member => Some(
                    app.user_with(&format!("m{n}@example.com"), "member", "active")
                        .await,
                ),
                Caller::Admin => Some(
                    app.user_with(&format!("a{n}@example.com"), "admin", "active")
                        .await,
                ),
                Caller::Owner => Some(Session::from_body(
                    &app.sign_in(crate::helpers::OWNER_EMAIL, crate::helpers::PASSWORD)
                        .await
                        .json()
                        .await
                        .unwrap(),
                )),
                Caller::Suspended => Some(
                    app.user_with(&format!("s{n}@example.com"), "member", "suspended")
                        .await,
                ),
            };
            let url = app.url(&path.replace("{id}", &cairn_store::Id::new().to_string()));
            let mut req = app.client.request(method.parse().unwrap(), url);
            if *method != "GET" {
                req = req.json(&serde_json::json!({}));
            }
            if let Some(s) = &session {
                req = req.bearer_auth(&s.access);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or("");
            let denied = DENIALS.contains(&code);
            let expect_allowed = allowed(*access, *scope, caller);
            if denied == expect_allowed {
                failures.push(format!(
                    "{method} {path} as {caller:?}: got {status} {code}, expected {}",
                    if expect_allowed { "allowed" } else { "denied" }
                ));
            }
            // Denials carry the right status.
            if denied {
                let want = if code == "unauthenticated" || code == "invalid_token" {
                    401
                } else {
                    403
                };
                if status != want {
                    failures.push(format!(
                        "{method} {path} as {caller:?}: {code} with status {status}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
