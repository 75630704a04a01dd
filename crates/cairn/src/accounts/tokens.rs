//! Tokens: short-lived access tokens (JWT, EdDSA/Ed25519, `kid` header so keys can rotate),
//! opaque refresh tokens (only their SHA-256 is stored), and CSRF tokens derived from the
//! session with the cookie key. Verification accepts exactly one algorithm and known keys only,
//! so `alg: none`, HMAC-with-the-public-key and unknown-`kid` tokens are refused.

use std::collections::HashMap;

use base64::Engine;
use cairn_store::{Id, Timestamp};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const ISSUER: &str = "cairn";
pub const REFRESH_PREFIX: &str = "cairn_rt_";

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user.
    pub sub: Id,
    /// The session it was issued for.
    pub sid: Id,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    /// Issue time in milliseconds, compared with the user's `tokens_valid_after`.
    pub iat_ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token's signature or claims are invalid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

/// Signs and verifies access tokens; knows the current key and any older ones still trusted.
///
/// Signature checks cost tens of microseconds, and a client presents the same token on every
/// request for its lifetime, so successful verifications are remembered: the cache is keyed by
/// a hash of the token but always compares the whole token, holds at most
/// [`VERIFIED_CACHE_SIZE`] entries, and never outlives a token's expiry.
pub struct TokenKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    cookie_key: Vec<u8>,
    verified: Vec<std::sync::Mutex<VerifiedShard>>,
    cache_keys: std::collections::hash_map::RandomState,
}

/// Token hash → (the whole token, its claims).
type VerifiedShard = HashMap<u64, (Box<str>, AccessClaims)>;

pub const VERIFIED_CACHE_SIZE: usize = 65_536;
const CACHE_SHARDS: usize = 16;

impl TokenKeys {
    pub fn new(signing: &SigningKey, kid: &str, cookie_key: &[u8]) -> Result<Self, String> {
        let der = signing.to_pkcs8_der().map_err(|e| e.to_string())?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let mut decoding = HashMap::new();
        decoding.insert(
            kid.to_owned(),
            DecodingKey::from_ed_der(signing.verifying_key().as_bytes()),
        );
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        Ok(Self {
            kid: kid.to_owned(),
            encoding,
            decoding,
            validation,
            cookie_key: cookie_key.to_vec(),
            verified: (0..CACHE_SHARDS).map(|_| Default::default()).collect(),
            cache_keys: std::collections::hash_map::RandomState::new(),
        })
    }

    pub fn issue(
        &self,
        user: Id,
        session: Id,
        now: Timestamp,
        ttl_secs: i64,
    ) -> Result<String, String> {
        let iat = now.as_millis() / 1000;
        let claims = AccessClaims {
            sub: user,
            sid: session,
            iss: ISSUER.into(),
            iat,
            exp: iat + ttl_secs,
            iat_ms: now.as_millis(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| e.to_string())
    }

    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = self.cache_keys.build_hasher();
        hasher.write(token.as_bytes());
        let h = hasher.finish();
        let shard = &self.verified[(h as usize) % CACHE_SHARDS];
        let now = Timestamp::now().as_millis() / 1000;
        if let Ok(map) = shard.lock() {
            if let Some((t, claims)) = map.get(&h) {
                if &**t == token && claims.exp > now {
                    return Ok(claims.clone());
                }
            }
        }
        let claims = self.verify_uncached(token)?;
        if let Ok(mut map) = shard.lock() {
            if map.len() >= VERIFIED_CACHE_SIZE / CACHE_SHARDS {
                map.retain(|_, (_, c)| c.exp > now);
                if map.len() >= VERIFIED_CACHE_SIZE / CACHE_SHARDS {
                    map.clear();
                }
            }
            map.insert(h, (token.into(), claims.clone()));
        }
        Ok(claims)
    }

    /// Check signature and claims, without the cache.
    pub fn verify_uncached(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// The CSRF token for a session: HMAC-SHA256 of its id under the cookie key.
    pub fn csrf_token(&self, session: Id) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.cookie_key) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(b"cairn-csrf:");
        mac.update(session.to_string().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `given` is the CSRF token of `session` (constant time).
    pub fn csrf_ok(&self, session: Id, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.csrf_token(session);
        !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
    }
}

/// A fresh opaque token with `prefix`: 256 random bits, URL-safe.
pub fn random_token(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// How opaque tokens are stored: hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (TokenKeys, SigningKey) {
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        (TokenKeys::new(&signing, "k1", &[9u8; 32]).unwrap(), signing)
    }

    fn b64(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let (k, _) = keys();
        let (u, s) = (Id::new(), Id::new());
        let t = k.issue(u, s, Timestamp::now(), 900).unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!((c.sub, c.sid, c.iss.as_str()), (u, s, ISSUER));
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn forged_and_stale_tokens_are_refused() {
        let (k, signing) = keys();
        let now = Timestamp::now();
        let good = k.issue(Id::new(), Id::new(), now, 900).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap(),
        )
        .unwrap();

        // alg: none, no signature.
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "kid": "k1"})),
            parts[1]
        );
        assert!(k.verify(&none).is_err());
        // HS256 signed with the public key as the secret.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let hs = jsonwebtoken::encode(
            &h,
            &claims,
            &EncodingKey::from_secret(signing.verifying_key().as_bytes()),
        )
        .unwrap();
        assert_eq!(k.verify(&hs), Err(TokenError::Invalid));
        // Expired.
        let old = k
            .issue(Id::new(), Id::new(), now.plus_millis(-3_600_000), 900)
            .unwrap();
        assert_eq!(k.verify(&old), Err(TokenError::Expired));
        // Unknown kid, and no kid.
        let other = TokenKeys::new(&SigningKey::from_bytes(&[8u8; 32]), "k2", &[0u8; 32]).unwrap();
        let foreign = other.issue(Id::new(), Id::new(), now, 900).unwrap();
        assert_eq!(k.verify(&foreign), Err(TokenError::UnknownKey));
        // A key we know under the right kid but a different signer.
        let impostor =
            TokenKeys::new(&SigningKey::from_bytes(&[8u8; 32]), "k1", &[0u8; 32]).unwrap();
        assert_eq!(
            k.verify(&impostor.issue(Id::new(), Id::new(), now, 900).unwrap()),
            Err(TokenError::Invalid)
        );
        // Tampered payload with the original signature.
        let mut tampered = claims.clone();
        tampered["sub"] = serde_json::json!(Id::new());
        let forged = format!("{}.{}.{}", parts[0], b64(&tampered), parts[2]);
        assert_eq!(k.verify(&forged), Err(TokenError::Invalid));
        assert_eq!(k.verify("garbage"), Err(TokenError::Malformed));
    }

    #[test]
    fn cached_verifications_still_compare_the_whole_token() {
        let (k, _) = keys();
        let t = k
            .issue(Id::new(), Id::new(), Timestamp::now(), 900)
            .unwrap();
        assert!(k.verify(&t).is_ok());
        assert!(k.verify(&t).is_ok(), "second time from the cache");
        // A token differing in its last signature character is not served from the cache.
        let mut forged = t.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(k.verify(&forged).is_err());
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        let (k, _) = keys();
        let s = Id::new();
        let t = k.csrf_token(s);
        assert!(k.csrf_ok(s, &t));
        assert!(!k.csrf_ok(Id::new(), &t));
        assert!(!k.csrf_ok(s, ""));
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_hashed() {
        let a = random_token(REFRESH_PREFIX).unwrap();
        let b = random_token(REFRESH_PREFIX).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(REFRESH_PREFIX));
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }
}
