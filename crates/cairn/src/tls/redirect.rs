//! The plain-HTTP listener beside HTTPS (`tls.redirect_listen`): it answers ACME HTTP-01
//! challenges and sends everything else permanently to the same path over HTTPS. It serves
//! nothing else, so no page, cookie or token ever travels unencrypted.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use url::Url;

use super::Http01Tokens;

#[derive(Clone)]
struct Redirect {
    tokens: Arc<Http01Tokens>,
    /// Where to send people: `public_url`'s origin when it is https.
    origin: Option<String>,
    /// The HTTPS port, added to the Host header's name when no origin is configured.
    https_port: u16,
}

pub fn router(tokens: Arc<Http01Tokens>, public_url: Option<&Url>, https_port: u16) -> Router {
    let origin = public_url
        .filter(|u| u.scheme() == "https")
        .map(|u| u.origin().ascii_serialization());
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(redirect)
        .with_state(Redirect {
            tokens,
            origin,
            https_port,
        })
}

async fn challenge(State(r): State<Redirect>, Path(token): Path<String>) -> Response {
    match r.tokens.get(&token) {
        Some(answer) => ([(header::CONTENT_TYPE, "text/plain")], answer).into_response(),
        None => (StatusCode::NOT_FOUND, "no such challenge\n").into_response(),
    }
}

async fn redirect(State(r): State<Redirect>, headers: HeaderMap, uri: Uri) -> Response {
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        Some(p) if p.starts_with('/') => p,
        _ => "/",
    };
    let origin = match &r.origin {
        Some(origin) => origin.clone(),
        None => {
            // HTTP/1.1 sends Host; HTTP/2 the `:authority`, which arrives in the URI.
            let authority = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| uri.authority().map(|a| a.as_str()));
            let Some(host) = authority.and_then(host_name) else {
                return (StatusCode::BAD_REQUEST, "a Host header is required\n").into_response();
            };
            if r.https_port == 443 {
                format!("https://{host}")
            } else {
                format!("https://{host}:{}", r.https_port)
            }
        }
    };
    (
        StatusCode::PERMANENT_REDIRECT,
        [
            (header::LOCATION, format!("{origin}{path}")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// The host part of a Host header, without its port, if it is a plausible host name or IP.
fn host_name(value: &str) -> Option<&str> {
    let host = if value.starts_with('[') {
        let end = value.find(']')?;
        &value[..=end]
    } else {
        value.split(':').next()?
    };
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names_lose_their_port_and_bad_ones_are_refused() {
        assert_eq!(host_name("cairn.example.com:80"), Some("cairn.example.com"));
        assert_eq!(host_name("cairn.example.com"), Some("cairn.example.com"));
        assert_eq!(host_name("[::1]:8080"), Some("[::1]"));
        assert_eq!(host_name("evil.com/path"), None);
        assert_eq!(host_name("a b"), None);
        assert_eq!(host_name(""), None);
    }
}
