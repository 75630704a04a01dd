//! Passwords: the policy new passwords must meet (NIST SP 800-63B by default: a minimum length
//! and no common passwords; the classic composition rule as an option), and Argon2id hashing on
//! a bounded pool of blocking threads, so a flood of sign-ins queues instead of starving the
//! server.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

pub const MAX_PASSWORD_LEN: usize = 256;

static COMMON: OnceLock<HashSet<&'static str>> = OnceLock::new();

fn common_passwords() -> &'static HashSet<&'static str> {
    COMMON.get_or_init(|| {
        include_str!("common_passwords.txt")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect()
    })
}

/// What new passwords must satisfy.
#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    pub min_length: usize,
    /// Require a lower-case letter, an upper-case letter, a digit and a symbol.
    pub require_classes: bool,
}

impl PasswordPolicy {
    /// Every reason `password` falls short (empty when it is acceptable).
    pub fn check(&self, password: &str, email: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let len = password.chars().count();
        if len < self.min_length {
            problems.push(format!(
                "must be at least {} characters long",
                self.min_length
            ));
        }
        if len > MAX_PASSWORD_LEN {
            problems.push(format!(
                "must be at most {MAX_PASSWORD_LEN} characters long"
            ));
        }
        let lower = password.to_lowercase();
        if common_passwords().contains(lower.as_str()) {
            problems.push("is one of the most common passwords".into());
        }
        let local = email.split('@').next().unwrap_or("");
        if local.len() >= 4 && lower.contains(local) {
            problems.push("must not contain your email address".into());
        }
        if password.chars().collect::<HashSet<_>>().len() < 4 && len > 0 {
            problems.push("must not repeat the same few characters".into());
        }
        if self.require_classes {
            let has = |f: fn(char) -> bool| password.chars().any(f);
            if !(has(char::is_lowercase)
                && has(char::is_uppercase)
                && has(|c| c.is_ascii_digit())
                && has(|c| !c.is_alphanumeric()))
            {
                problems.push(
                    "must contain a lower-case letter, an upper-case letter, a digit and a symbol"
                        .into(),
                );
            }
        }
        problems
    }
}

/// The hashing pool and policy the configuration asks for.
pub fn from_config(
    auth: &crate::config::AuthConfig,
) -> Result<(PasswordHasherPool, PasswordPolicy), HashError> {
    let concurrency = match auth.hash_concurrency {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let pool = PasswordHasherPool::new(
        HashParams {
            memory_kib: auth.argon2_memory_kib,
            iterations: auth.argon2_iterations,
            parallelism: 1,
        },
        concurrency,
    )?;
    let policy = PasswordPolicy {
        min_length: auth.password_min_length,
        require_classes: auth.password_require_classes,
    };
    Ok((pool, policy))
}

/// Argon2id parameters.
#[derive(Debug, Clone, Copy)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// Hashes and verifies passwords on at most `concurrency` blocking threads at once.
#[derive(Clone)]
pub struct PasswordHasherPool {
    argon: Arc<Argon2<'static>>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified when the account does not exist, so that an
    /// unknown email takes as long to refuse as a wrong password.
    dummy_hash: Arc<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the hashing pool is shut down")]
    Closed,
}

impl PasswordHasherPool {
    pub fn new(params: HashParams, concurrency: usize) -> Result<Self, HashError> {
        let p = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| HashError::Params(e.to_string()))?;
        let argon = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, p));
        let dummy = hash_with(&argon, "cairn-timing-equaliser-password")?;
        Ok(Self {
            argon,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: Arc::new(dummy),
        })
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashError::Closed)?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || hash_with(&argon, &password))
            .await
            .map_err(|e| HashError::Hash(e.to_string()))?
    }

    /// Whether `password` matches `hash`. With `hash = None` (no such account) a dummy hash is
    /// verified instead and the answer is always false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashError::Closed)?;
        let argon = self.argon.clone();
        let real = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| argon.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .map_err(|e| HashError::Hash(e.to_string()))?;
        Ok(ok && real)
    }
}

fn hash_with(argon: &Argon2<'static>, password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| HashError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Hash(e.to_string()))?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy {
            min_length: 12,
            require_classes: false,
        }
    }

    #[test]
    fn long_uncommon_passwords_pass_without_composition_rules() {
        assert!(policy()
            .check("correct horse battery staple", "ann@example.com")
            .is_empty());
    }

    #[test]
    fn short_common_repetitive_or_email_based_passwords_fail() {
        assert_eq!(policy().check("short", "a@b.c").len(), 1);
        assert!(
            policy()
                .check("Password1234", "a@b.c")
                .iter()
                .any(|p| p.contains("common")),
            "{:?}",
            policy().check("Password1234", "a@b.c")
        );
        assert!(policy()
            .check("aaaaaaaaaaaaaaaa", "a@b.c")
            .iter()
            .any(|p| p.contains("repeat")));
        assert!(policy()
            .check("annabel-secret-words", "annabel@example.com")
            .iter()
            .any(|p| p.contains("email")));
    }

    #[test]
    fn the_classic_rule_is_available_as_an_option() {
        let strict = PasswordPolicy {
            min_length: 12,
            require_classes: true,
        };
        assert!(!strict
            .check("correct horse battery staple", "a@b.c")
            .is_empty());
        assert!(strict
            .check("Correct horse battery 5taple!", "a@b.c")
            .is_empty());
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_do() {
        let pool = PasswordHasherPool::new(
            HashParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            2,
        )
        .unwrap();
        let h = pool.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(pool
            .verify("correct horse".into(), Some(h.clone()))
            .await
            .unwrap());
        assert!(!pool.verify("wrong horse".into(), Some(h)).await.unwrap());
        assert!(!pool
            .verify("cairn-timing-equaliser-password".into(), None)
            .await
            .unwrap());
        assert!(!pool
            .verify("x".into(), Some("not a phc string".into()))
            .await
            .unwrap());
    }
}
