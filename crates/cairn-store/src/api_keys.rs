//! API keys: long-lived credentials for tools, scoped, stored as a lookup prefix plus the
//! SHA-256 of their secret, revocable, optionally expiring.

use std::sync::Arc;

use serde::Serialize;

use crate::accounts::UserRow;
use crate::error::{StoreError, StoreResult};
use crate::standing::{Standing, StandingKey};
use crate::types::{Id, Timestamp};
use crate::{on_pool, Store};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: Id,
    pub user_id: Id,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub secret_hash: String,
    pub scopes: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

const COLUMNS: &str =
    "id, user_id, name, prefix, secret_hash, scopes, created_at, expires_at, last_used_at, revoked_at";

impl Store {
    pub async fn create_api_key(&self, key: &ApiKeyRow) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        on_pool!(self.db.pool(), p => sqlx::query(&sql)
            .bind(key.id).bind(key.user_id).bind(&key.name).bind(&key.prefix)
            .bind(&key.secret_hash).bind(&key.scopes).bind(key.created_at).bind(key.expires_at)
            .bind(key.last_used_at).bind(key.revoked_at)
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// The key with `prefix` and its owner, in one round trip.
    pub async fn api_key_with_owner(
        &self,
        prefix: &str,
    ) -> StoreResult<Option<Arc<(ApiKeyRow, UserRow)>>> {
        let cache_key = StandingKey::ApiKey(prefix.to_owned());
        if let Some(Standing::ApiKey(found)) = self.standing.get(&cache_key) {
            return Ok(Some(found));
        }
        let ticket = self.standing.ticket();
        let key_sql = format!("SELECT {COLUMNS} FROM api_keys WHERE prefix = $1");
        let user_sql = format!(
            "SELECT {} FROM users WHERE id = $1",
            crate::accounts::USER_COLUMNS
        );
        let found = on_pool!(self.db.pool(), p => {
            let mut conn = p.acquire().await?;
            let Some(key) = sqlx::query_as::<_, ApiKeyRow>(&key_sql)
                .bind(prefix).fetch_optional(&mut *conn).await? else {
                return Ok(None);
            };
            let user = sqlx::query_as::<_, UserRow>(&user_sql)
                .bind(key.user_id).fetch_optional(&mut *conn).await?;
            Ok::<_, sqlx::Error>(user.map(|u| Arc::new((key, u))))
        })?;
        if let Some(found) = &found {
            self.standing
                .put(cache_key, Standing::ApiKey(found.clone()), ticket);
        }
        Ok(found)
    }

    /// Record use of `user_id`'s key, at most once a minute per key.
    pub async fn touch_api_key(&self, id: Id, user_id: Id, now: Timestamp) -> StoreResult<()> {
        let sql = "UPDATE api_keys SET last_used_at = $2 \
                   WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)";
        on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(now)
            .bind(now.plus_millis(-60_000)).execute(p).await.map(|_| ()))?;
        self.standing.forget(user_id);
        Ok(())
    }

    /// The user's keys, newest first (revoked ones included, marked).
    pub async fn api_keys_of(&self, user_id: Id) -> StoreResult<Vec<ApiKeyRow>> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY id DESC");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, ApiKeyRow>(&sql).bind(user_id).fetch_all(p).await)?)
    }

    /// Revoke one of `user_id`'s keys; [`StoreError::NotFound`] if it has no such live key.
    pub async fn revoke_api_key(&self, id: Id, user_id: Id) -> StoreResult<()> {
        let sql = "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND user_id = $2 \
                   AND revoked_at IS NULL";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(user_id)
            .bind(Timestamp::now()).execute(p).await.map(|r| r.rows_affected()))?;
        self.standing.forget(user_id);
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
