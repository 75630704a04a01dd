//! The web app: the single-page app built from `web/` (its `dist/` output is committed and
//! embedded in the binary, so building Cairn never needs Node). Every GET outside `/api`, `/v1`
//! and `/metrics` lands here: a file of the build when one has that path, otherwise
//! `index.html`, so the app's own routes (`/chat/…`, `/admin/users`) survive a reload.
//!
//! Hashed assets (`/assets/…`) are cached for a year as immutable; everything else must be
//! revalidated (`no-cache` plus an `ETag` from the file's SHA-256), so a new release is picked
//! up on the next load. Text files are sent gzip-compressed to clients that accept it,
//! compressed once per process.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::error::ApiError;

#[derive(RustEmbed)]
#[folder = "../../web/dist/"]
#[allow_missing = true]
struct Dist;

/// Answer a request that matched no route: the API's JSON 404 under `/api`, `/v1` and
/// `/metrics`, the web app elsewhere.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if is_api(path) {
        return ApiError::not_found().into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::method_not_allowed().into_response();
    }
    let mut response = serve(path, &headers);
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    response
}

fn is_api(path: &str) -> bool {
    path == "/api"
        || path.starts_with("/api/")
        || path == "/v1"
        || path.starts_with("/v1/")
        || path == "/metrics"
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let relative = path.trim_start_matches('/');
    let (name, file) = match Dist::get(relative).filter(|_| !relative.is_empty()) {
        Some(file) => (relative, file),
        // A missing asset is a 404: answering it with the page would hand a script tag HTML.
        None if relative.starts_with("assets/") || looks_like_file(relative) => {
            return ApiError::not_found().into_response()
        }
        None => match Dist::get("index.html") {
            Some(file) => ("index.html", file),
            None => return missing_build(),
        },
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = if if_none_match(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = file.metadata.mimetype().to_owned();
        let gzip = compressible(&mime) && accepts_gzip(headers);
        let body = if gzip {
            Body::from(gzipped(name, &file.data))
        } else {
            Body::from(file.data.into_owned())
        };
        let mut r = Response::new(body);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&mime)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}

/// A last path segment with an extension (`/favicon.ico`, `/robots.txt`): a file, not a route
/// of the app.
fn looks_like_file(relative: &str) -> bool {
    relative
        .rsplit('/')
        .next()
        .and_then(|last| last.rsplit_once('.'))
        .is_some_and(|(stem, ext)| {
            !stem.is_empty()
                && (1..=5).contains(&ext.len())
                && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn compressible(mime: &str) -> bool {
    mime.starts_with("text/")
        || mime.starts_with("application/javascript")
        || mime.starts_with("application/json")
        || mime.starts_with("image/svg+xml")
        || mime.ends_with("+json")
}

/// The file compressed, once per process (later requests share the bytes).
fn gzipped(name: &str, data: &[u8]) -> bytes::Bytes {
    static CACHE: OnceLock<Mutex<HashMap<String, bytes::Bytes>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(name).cloned()) {
        return hit;
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let compressed = encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    if compressed.is_empty() {
        return bytes::Bytes::copy_from_slice(data);
    }
    let compressed = bytes::Bytes::from(compressed);
    if let Ok(mut c) = cache.lock() {
        c.insert(name.to_owned(), compressed.clone());
    }
    compressed
}

/// A binary built without the web app (`web/dist` absent): say so instead of a blank page.
fn missing_build() -> Response {
    let page = "<!doctype html><meta charset=utf-8><title>Cairn</title>\
        <p>This build of Cairn has no web app (<code>web/dist</code> was empty when it was \
        built). The API is served under <a href=\"/api/docs\">/api</a>.</p>";
    let mut r = Response::new(Body::from(page));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_routes_are_told_apart() {
        assert!(looks_like_file("favicon.ico"));
        assert!(looks_like_file("assets/index-abc123.js"));
        assert!(!looks_like_file("chat/0192f0c4-1b2c"));
        assert!(!looks_like_file("admin/users"));
        assert!(!looks_like_file(".well-known"));
        assert!(is_api("/api/x") && is_api("/v1/models") && is_api("/metrics"));
        assert!(!is_api("/apis") && !is_api("/v1x"));
    }

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("W/\"ab\", \"cd\""),
        );
        assert!(if_none_match(&h, "\"ab\"") && if_none_match(&h, "\"cd\""));
        assert!(!if_none_match(&h, "\"ef\""));
    }
}
