//! The OpenAPI document (`GET /api/openapi.json`) and a browsable page beside it
//! (`GET /api/docs`), both generated from the route table every route is registered in — so
//! neither can list a route that does not exist or miss one that does. Each operation carries
//! its access rule (`x-cairn-access`), the API-key scope that opens it (`x-cairn-api-key-scope`),
//! its security requirements, path parameters and the error responses the authorization layer
//! can give. Request and response bodies are described in `docs/api.md`.

use axum::extract::State;
use axum::http::{header, HeaderValue, Method};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::auth::limits::Limit;
use crate::auth::{Access, ApiRoutes, RouteTable, Rule};

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .route(Method::GET, "/api/openapi.json", Rule::PUBLIC, openapi_json)
        .route(Method::GET, "/api/docs", Rule::PUBLIC, docs_page)
}

fn access_name(a: Access) -> &'static str {
    match a {
        Access::Public => "public",
        Access::SignedIn => "signed_in",
        Access::Member => "member",
        Access::Admin => "admin",
        Access::Owner => "owner",
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != "api") {
        id.push('_');
        id.push_str(
            &part
                .trim_matches(|c| c == '{' || c == '}')
                .replace(['-', '.'], "_"),
        );
    }
    id
}

/// The whole document for this route table.
pub fn document(table: &RouteTable) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    let mut entries: Vec<_> = table.entries().to_vec();
    entries.sort_by(|a, b| (a.path, a.method.as_str()).cmp(&(b.path, b.method.as_str())));
    for e in entries {
        let rule = e.rule;
        let params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|p| p.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let tag = e
            .path
            .trim_start_matches("/api/")
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("api")
            .to_owned();
        let mut responses = Map::new();
        if rule.stream {
            responses.insert(
                "2XX".into(),
                json!({ "description": "Success: a stream of Server-Sent Events (see docs/api.md), or JSON where the request asks for no stream",
                        "content": { "text/event-stream": { "schema": { "type": "string" } },
                                     "application/json": { "schema": { "type": "object" } } } }),
            );
        } else {
            responses.insert("2XX".into(), json!({ "description": "Success" }));
        }
        responses.insert("400".into(), error_response("Malformed request"));
        if rule.access != Access::Public {
            responses.insert(
                "401".into(),
                error_response("Not signed in, or the token is not valid"),
            );
            responses.insert("403".into(), error_response("Signed in but not allowed"));
            responses.insert("404".into(), error_response("Not found, or not yours"));
        }
        if rule.limit != Limit::Exempt {
            responses.insert(
                "429".into(),
                error_response("Rate-limited (see Retry-After)"),
            );
        }
        let security = if rule.access == Access::Public {
            json!([])
        } else {
            json!([{ "bearer": [] }, { "cookie": [] }])
        };
        let mut op = json!({
            "operationId": operation_id(&e.method, e.path),
            "tags": [tag],
            "parameters": params,
            "security": security,
            "responses": responses,
            "x-cairn-access": access_name(rule.access),
            "x-cairn-api-key-scope": rule.api_key.map(|s| s.as_str()),
        });
        if rule.upload {
            op["requestBody"] = json!({
                "required": true,
                "content": { "multipart/form-data": { "schema": {
                    "type": "object",
                    "properties": { "file": { "type": "string", "format": "binary" } },
                    "required": ["file"]
                } } }
            });
        } else if matches!(e.method, Method::POST | Method::PUT | Method::PATCH) {
            op["requestBody"] = json!({
                "required": false,
                "content": { "application/json": { "schema": { "type": "object" } } }
            });
        }
        paths
            .entry(e.path.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| m.insert(e.method.as_str().to_ascii_lowercase(), op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Cairn",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Cairn's HTTP API. Conventions, request and response bodies and every error code: docs/api.md."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "An access token (from sign-in) or an API key (`cairn_…`)." },
                "cookie": { "type": "apiKey", "in": "cookie", "name": "__Host-cairn_access", "description": "Browsers: the session cookie, with the X-CSRF-Token header on changes." }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "string" },
                            "message": { "type": "string" },
                            "details": { "type": "object" }
                        }
                    } }
                }
            }
        }
    })
}

async fn openapi_json(State(state): State<AppState>) -> Response {
    let mut r = axum::Json(document(&state.routes)).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A plain page listing every operation, rendered on the server (no scripts).
async fn docs_page(State(state): State<AppState>) -> Html<String> {
    let mut entries: Vec<_> = state.routes.entries().to_vec();
    entries.sort_by(|a, b| (a.path, a.method.as_str()).cmp(&(b.path, b.method.as_str())));
    let rows: String = entries
        .iter()
        .map(|e| {
            format!(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                e.method,
                escape(e.path),
                access_name(e.rule.access),
                e.rule.api_key.map(|s| s.as_str()).unwrap_or("—"),
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Cairn API</title>\
         <style>body{{font:15px system-ui,sans-serif;margin:2rem;max-width:60rem}}\
         td,th{{padding:.2rem .8rem;text-align:left;border-bottom:1px solid #ddd}}</style></head>\
         <body><h1>Cairn API {}</h1><p>Machine-readable: <a href=\"/api/openapi.json\">/api/openapi.json</a> \
         (OpenAPI 3.1). Conventions and error codes: <code>docs/api.md</code>.</p>\
         <table><tr><th>Method</th><th>Path</th><th>Who</th><th>API-key scope</th></tr>{rows}</table>\
         </body></html>",
        env!("CARGO_PKG_VERSION")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_stable_and_unique() {
        let (_, table) = crate::http::api_routes().into_parts();
        let doc = document(&table);
        let mut ids = Vec::new();
        for (_, ops) in doc["paths"].as_object().unwrap() {
            for (_, op) in ops.as_object().unwrap() {
                ids.push(op["operationId"].as_str().unwrap().to_owned());
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "operation ids collide");
        assert_eq!(n, table.entries().len());
        assert_eq!(
            operation_id(&Method::GET, "/api/documents/{id}/chunks"),
            "get_documents_id_chunks"
        );
    }

    #[test]
    fn the_checked_in_document_matches_the_code() {
        let (_, table) = crate::http::api_routes().into_parts();
        let generated = serde_json::to_string_pretty(&document(&table)).unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "docs/openapi.json is out of date: run `cargo run -- openapi > docs/openapi.json`"
        );
    }
}
