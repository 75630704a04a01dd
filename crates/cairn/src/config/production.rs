//! The checks production mode refuses to start without, as one table: each row says what it
//! looks for, finds every instance in a [`Config`], and names the setting that fixes it. The
//! same table is printed in development as the list of what is relaxed, and is rendered into
//! `docs/configuration.md`.

use std::fmt;

use super::{Config, Secret};
use crate::keys;

pub struct Check {
    pub id: &'static str,
    pub what: &'static str,
    pub fix: &'static str,
    find: fn(&Config) -> Vec<String>,
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub check: &'static str,
    pub message: String,
    pub fix: &'static str,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} — fix: {}", self.message, self.fix)
    }
}

pub const CHECKS: &[Check] = &[
    Check {
        id: "weak_secret",
        what: "A secret that was provided (`signing_key`, `data_key`, `cookie_key`, `metrics.token`) is a known default, too short, or low in entropy.",
        fix: "Unset it so Cairn generates one in the data directory, or provide a random one: `cairn secrets generate --out DIR`.",
        find: weak_secrets,
    },
    Check {
        id: "cors_any_origin_with_credentials",
        what: "CORS allows any origin (`*`) to send credentials.",
        fix: "List the origins in `cors.allowed_origins`, or set `cors.allow_credentials = false`.",
        find: cors_any_origin,
    },
    Check {
        id: "public_url_missing",
        what: "`public_url` is not set, so links and cookie security cannot be derived.",
        fix: "Set `public_url` to the address people use, e.g. `https://cairn.example.com`.",
        find: public_url_missing,
    },
    Check {
        id: "plain_http",
        what: "The public URL is plain HTTP, or HTTPS with nothing declared to terminate it (neither `tls.mode` nor a trusted proxy).",
        fix: "Use an `https://` `public_url`, and either set `tls.mode` (Cairn serves HTTPS itself) or list the TLS-terminating reverse proxy in `http.trusted_proxies`.",
        find: plain_http,
    },
    Check {
        id: "metrics_open",
        what: "`/metrics` is open to everyone without a token.",
        fix: "Set `metrics.token`, or set `metrics.public = false` and keep `metrics.allow_networks` to your monitoring networks.",
        find: metrics_open,
    },
    Check {
        id: "mock_model",
        what: "The default chat model is `mock`, which answers with a fixed demonstration text.",
        fix: "Set `chat.default_model` to `extractive` or a configured model, or set `chat.allow_mock = true` for a demo workspace.",
        find: mock_model,
    },
];

fn mock_model(config: &Config) -> Vec<String> {
    if config.chat.default_model == "mock" && !config.chat.allow_mock {
        vec![format!(
            "`chat.default_model` (from {}) is `mock`",
            config.source_of("chat.default_model")
        )]
    } else {
        Vec::new()
    }
}

/// Every problem in `config`, in table order.
pub fn problems(config: &Config) -> Vec<Problem> {
    CHECKS
        .iter()
        .flat_map(|check| {
            (check.find)(config).into_iter().map(|message| Problem {
                check: check.id,
                message,
                fix: check.fix,
            })
        })
        .collect()
}

/// Values shipped in examples and tutorials, never acceptable as secrets.
const KNOWN_DEFAULTS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "replaceme",
    "replace-me",
    "secret",
    "password",
    "default",
    "example",
    "your-",
    "dev-key",
    "devkey",
    "test-key",
    "cairn",
    "123456",
    "qwerty",
];

fn weak_secrets(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |key: &str, secret: &Option<Secret>, min_bytes: usize| {
        if let Some(s) = secret {
            if let Some(reason) = weakness(s.expose(), min_bytes) {
                out.push(format!("`{key}` (from {}) {reason}", config.source_of(key)));
            }
        }
    };
    check("data_key", &config.data_key, 32);
    check("cookie_key", &config.cookie_key, 32);
    check("metrics.token", &config.metrics.token, 24);
    if let Some(pem) = &config.signing_key {
        if let Ok(key) = keys::parse_signing_key(pem.expose()) {
            if distinct(&key.to_bytes()) < 12 {
                out.push(format!(
                    "`signing_key` (from {}) has too little entropy",
                    config.source_of("signing_key")
                ));
            }
        }
    }
    out
}

/// Why `value` is not a good secret of at least `min_bytes` bytes, if it is not.
pub fn weakness(value: &str, min_bytes: usize) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    if KNOWN_DEFAULTS.iter().any(|d| lower.contains(d)) {
        return Some("is a known default value".into());
    }
    let bytes = keys::decode_key_text(value);
    if bytes.len() < min_bytes {
        return Some(format!(
            "is too short: {} bytes, at least {min_bytes} needed",
            bytes.len()
        ));
    }
    // Hex carries 4 bits a character and base64 6; ask for at least 96 bits of character
    // entropy in the text and a spread of distinct byte values in what it decodes to.
    if shannon_bits(value) < 96.0 || distinct(&bytes) < min_bytes.min(16) / 2 {
        return Some("has too little entropy (looks typed, not random)".into());
    }
    None
}

fn distinct(bytes: &[u8]) -> usize {
    let mut seen = [false; 256];
    bytes.iter().for_each(|b| seen[usize::from(*b)] = true);
    seen.iter().filter(|s| **s).count()
}

/// Total Shannon entropy of `text` in bits, from its own character frequencies.
fn shannon_bits(text: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in text.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let per_char: f64 = counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum();
    per_char * n as f64
}

fn cors_any_origin(config: &Config) -> Vec<String> {
    if config.cors.any_origin && config.cors.allow_credentials {
        vec![format!(
            "`cors.allowed_origins` (from {}) contains `*` while `cors.allow_credentials` is true",
            config.source_of("cors.allowed_origins")
        )]
    } else {
        Vec::new()
    }
}

fn public_url_missing(config: &Config) -> Vec<String> {
    if config.public_url.is_none() {
        vec!["`public_url` is not set".into()]
    } else {
        Vec::new()
    }
}

fn plain_http(config: &Config) -> Vec<String> {
    match &config.public_url {
        Some(url) if url.scheme() == "http" => vec![format!(
            "`public_url` is {url}: people would reach Cairn unencrypted"
        )],
        Some(_) if config.tls.enabled() => Vec::new(),
        Some(url) if config.http.trusted_proxies.is_empty() => vec![format!(
            "`public_url` is {url} but `http.trusted_proxies` is empty: nothing is declared to terminate HTTPS"
        )],
        _ => Vec::new(),
    }
}

fn metrics_open(config: &Config) -> Vec<String> {
    let m = &config.metrics;
    if !m.enabled || m.token.is_some() {
        return Vec::new();
    }
    let everyone = m.allow_networks.iter().any(|n| n.prefix_len() == 0);
    if m.public || everyone {
        vec!["`/metrics` is served to every client and `metrics.token` is not set".into()]
    } else {
        Vec::new()
    }
}
