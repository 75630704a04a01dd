//! Key material: the Ed25519 token-signing key, the 256-bit data-encryption key and the cookie
//! key. Each is taken from configuration when provided, else read from the data directory's
//! `secrets/` folder, else generated there (owner-only) on first start. None is ever logged:
//! [`KeyRing`]'s `Debug` shows only the signing key's id.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::config::{Config, Secret};

pub const SIGNING_KEY_FILE: &str = "signing_key.pem";
pub const DATA_KEY_FILE: &str = "data_key";
pub const COOKIE_KEY_FILE: &str = "cookie_key";
pub const METRICS_TOKEN_FILE: &str = "metrics_token";

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{key} (from {origin}) is not valid: {reason}")]
    Invalid {
        key: &'static str,
        origin: String,
        reason: String,
    },
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The keys a running server uses.
pub struct KeyRing {
    pub signing: SigningKey,
    /// Identifies the signing key in token headers (`kid`), so keys can rotate.
    pub signing_kid: String,
    pub data_key: Zeroizing<[u8; 32]>,
    pub cookie_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid)
            .finish_non_exhaustive()
    }
}

/// Decode key text: hex, else base64 (standard or URL-safe), else its raw bytes.
pub fn decode_key_text(text: &str) -> Vec<u8> {
    let t = text.trim();
    if t.len().is_multiple_of(2) {
        if let Ok(b) = hex::decode(t) {
            return b;
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    b64.decode(t)
        .or_else(|_| b64url.decode(t.trim_end_matches('=')))
        .unwrap_or_else(|_| t.as_bytes().to_vec())
}

pub fn parse_signing_key(pem: &str) -> Result<SigningKey, String> {
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
        format!("expected an Ed25519 private key in PKCS#8 PEM (`openssl genpkey -algorithm ed25519`): {e}")
    })
}

/// The `kid` for a signing key: the first 16 characters of the URL-safe base64 SHA-256 of its
/// public key.
pub fn key_id(key: &SigningKey) -> String {
    let digest = Sha256::digest(key.verifying_key().as_bytes());
    let mut kid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    kid.truncate(16);
    kid
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, KeyError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::fill(bytes.as_mut()).map_err(|e| KeyError::Io {
        action: "draw random bytes for",
        path: PathBuf::from("a new key"),
        error: std::io::Error::other(e.to_string()),
    })?;
    Ok(bytes)
}

/// Every secret file Cairn can generate, in the order `cairn secrets generate` writes them.
pub const ALL_FILES: &[&str] = &[
    SIGNING_KEY_FILE,
    DATA_KEY_FILE,
    COOKIE_KEY_FILE,
    METRICS_TOKEN_FILE,
];

/// Fresh material for the secret stored in file `name`, as the file's text.
pub fn generate(name: &str) -> Result<Zeroizing<String>, KeyError> {
    let text = match name {
        SIGNING_KEY_FILE => {
            let signing = SigningKey::from_bytes(&*random::<32>()?);
            let pem = signing
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| KeyError::Invalid {
                    key: "signing_key",
                    origin: "generator".into(),
                    reason: e.to_string(),
                })?;
            pem.to_string()
        }
        METRICS_TOKEN_FILE => hex::encode(*random::<24>()?) + "\n",
        _ => hex::encode(*random::<32>()?) + "\n",
    };
    Ok(Zeroizing::new(text))
}

/// Write `contents` to `path` readable by the owner only, failing if it exists.
pub fn write_owner_only(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let io = |error| KeyError::Io {
        action: "write",
        path: path.to_owned(),
        error,
    };
    let tmp = path.with_extension("partial");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    // A hard link publishes the file only if nothing is there yet, never replacing a key.
    fs::hard_link(&tmp, path).map_err(io)?;
    fs::remove_file(&tmp).map_err(io)?;
    Ok(())
}

/// What [`KeyRing::load_or_generate`] did, for the start-up log.
#[derive(Debug, Default)]
pub struct KeyReport {
    pub generated: Vec<&'static str>,
}

impl KeyRing {
    /// Keys from configuration, else from `<data_dir>/secrets`, generating what is missing.
    pub fn load_or_generate(config: &Config) -> Result<(KeyRing, KeyReport), KeyError> {
        let dir = config.data_dir.join("secrets");
        let mut report = KeyReport::default();
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(|error| KeyError::Io {
                action: "create",
                path: dir.clone(),
                error,
            })?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|error| {
                KeyError::Io {
                    action: "restrict",
                    path: dir.clone(),
                    error,
                }
            })?;
        }
        let mut take = |name: &'static str,
                        provided: &Option<Secret>,
                        key: &'static str|
         -> Result<(Zeroizing<String>, String), KeyError> {
            if let Some(s) = provided {
                let source = config.source_of(key).to_string();
                return Ok((Zeroizing::new(s.expose().to_owned()), source));
            }
            let path = dir.join(name);
            if !path.exists() {
                write_owner_only(&path, generate(name)?.as_bytes())?;
                report.generated.push(key);
            }
            let text = fs::read_to_string(&path).map_err(|error| KeyError::Io {
                action: "read",
                path: path.clone(),
                error,
            })?;
            Ok((Zeroizing::new(text), format!("file {}", path.display())))
        };

        let (pem, src) = take(SIGNING_KEY_FILE, &config.signing_key, "signing_key")?;
        let signing = parse_signing_key(&pem).map_err(|reason| KeyError::Invalid {
            key: "signing_key",
            origin: src,
            reason,
        })?;
        let (text, src) = take(DATA_KEY_FILE, &config.data_key, "data_key")?;
        let bytes = Zeroizing::new(decode_key_text(&text));
        let data_key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Invalid {
            key: "data_key",
            origin: src,
            reason: format!(
                "must be exactly 32 bytes (64 hex characters), got {} bytes",
                bytes.len()
            ),
        })?;
        let (text, src) = take(COOKIE_KEY_FILE, &config.cookie_key, "cookie_key")?;
        let cookie_key = Zeroizing::new(decode_key_text(&text));
        if cookie_key.len() < 32 {
            return Err(KeyError::Invalid {
                key: "cookie_key",
                origin: src,
                reason: format!("must be at least 32 bytes, got {}", cookie_key.len()),
            });
        }
        let signing_kid = key_id(&signing);
        Ok((
            KeyRing {
                signing,
                signing_kid,
                data_key: Zeroizing::new(data_key),
                cookie_key,
            },
            report,
        ))
    }
}

/// Problems with secrets given in configuration (format only; generated ones are fine by
/// construction). Reads and writes nothing.
pub fn validate_provided(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(pem) = &config.signing_key {
        if let Err(reason) = parse_signing_key(pem.expose()) {
            out.push(format!(
                "signing_key (from {}): {reason}",
                config.source_of("signing_key")
            ));
        }
    }
    if let Some(key) = &config.data_key {
        let n = decode_key_text(key.expose()).len();
        if n != 32 {
            out.push(format!(
                "data_key (from {}): must be exactly 32 bytes (64 hex characters), got {n} bytes",
                config.source_of("data_key")
            ));
        }
    }
    if let Some(key) = &config.cookie_key {
        let n = decode_key_text(key.expose()).len();
        if n < 32 {
            out.push(format!(
                "cookie_key (from {}): must be at least 32 bytes, got {n}",
                config.source_of("cookie_key")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_decodes_hex_then_base64_then_raw() {
        assert_eq!(decode_key_text("00ff"), vec![0, 255]);
        assert_eq!(decode_key_text("AP8="), vec![0, 255]);
        assert_eq!(decode_key_text("not key!"), b"not key!".to_vec());
    }

    #[test]
    fn generated_keys_parse_and_have_stable_ids() {
        let pem = generate(SIGNING_KEY_FILE).unwrap();
        let key = parse_signing_key(&pem).unwrap();
        assert_eq!(key_id(&key), key_id(&parse_signing_key(&pem).unwrap()));
        assert_eq!(key_id(&key).len(), 16);
        assert_eq!(decode_key_text(&generate(DATA_KEY_FILE).unwrap()).len(), 32);
        assert_ne!(
            generate(DATA_KEY_FILE).unwrap(),
            generate(DATA_KEY_FILE).unwrap()
        );
    }
}
