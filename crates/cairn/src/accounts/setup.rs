//! First run. While no owner exists, the server keeps a one-time setup token — printed in its
//! log and written owner-only to `<data_dir>/setup-token` — and `POST /api/setup` creates the
//! owner only with it, so a stranger who reaches a fresh server first cannot take it over. The
//! token's hash lives in the database, so any replica accepts it; it is deleted on use.

use std::path::PathBuf;

use cairn_store::settings::Expect;
use cairn_store::{Store, StoreError};
use serde_json::json;

use super::tokens::{random_token, token_hash};
use crate::config::Config;
use crate::keys::write_owner_only;

pub const TOKEN_HASH_SETTING: &str = "setup.token_hash";
pub const TOKEN_PREFIX: &str = "cairn_setup_";

pub fn token_path(config: &Config) -> PathBuf {
    config.data_dir.join("setup-token")
}

/// If the workspace has no owner yet, the setup token to print (reusing the one on disk).
pub async fn ensure_token(store: &Store, config: &Config) -> anyhow::Result<Option<String>> {
    if store.has_owner().await? {
        return Ok(None);
    }
    let path = token_path(config);
    let existing = std::fs::read_to_string(&path)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| t.starts_with(TOKEN_PREFIX));
    let token = match existing {
        Some(t) => t,
        None => {
            let t = random_token(TOKEN_PREFIX).map_err(|e| anyhow::anyhow!("{e}"))?;
            let _ = std::fs::remove_file(&path);
            write_owner_only(&path, format!("{t}\n").as_bytes())?;
            t
        }
    };
    store
        .put_setting(
            TOKEN_HASH_SETTING,
            json!(token_hash(&token)),
            Expect::Any,
            None,
        )
        .await?;
    Ok(Some(token))
}

/// Whether `token` is the current setup token (constant time).
pub async fn token_ok(store: &Store, token: &str) -> Result<bool, StoreError> {
    use subtle::ConstantTimeEq;
    let Some(stored) = store.setting(TOKEN_HASH_SETTING).await? else {
        return Ok(false);
    };
    let expected = stored.value.0.as_str().unwrap_or_default().to_owned();
    let given = token_hash(token.trim());
    Ok(!expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes())))
}

/// Forget the token once the owner exists.
pub async fn consume(store: &Store, config: &Config) {
    let _ = store.delete_setting(TOKEN_HASH_SETTING).await;
    let _ = std::fs::remove_file(token_path(config));
}
