//! System settings: workspace-wide values an admin changes at run time, stored as JSON under a
//! dotted key, each write bumping a version so concurrent editors cannot overwrite each other
//! unseen. Typed access (which keys exist, their shapes and defaults) belongs to the server.

use serde::Serialize;
use sqlx::types::Json;

use crate::error::{StoreError, StoreResult};
use crate::types::{Id, Timestamp};
use crate::{on_pool, Store};

/// One stored setting.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct SystemSetting {
    pub key: String,
    pub value: Json<serde_json::Value>,
    pub version: i64,
    pub updated_at: Timestamp,
    pub updated_by: Option<Id>,
}

/// What a writer believes about the row it is about to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there (or create it).
    Any,
    /// Create it; fail with [`StoreError::Conflict`] if it exists.
    Absent,
    /// Replace the row at exactly this version; otherwise [`StoreError::Conflict`].
    Version(i64),
}

const COLUMNS: &str = "key, value, version, updated_at, updated_by";

impl Store {
    pub async fn setting(&self, key: &str) -> StoreResult<Option<SystemSetting>> {
        let sql = format!("SELECT {COLUMNS} FROM system_settings WHERE key = $1");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, SystemSetting>(&sql).bind(key).fetch_optional(p).await)?)
    }

    /// Write `value` under `key`, checking `expect` in the same statement.
    pub async fn put_setting(
        &self,
        key: &str,
        value: serde_json::Value,
        expect: Expect,
        by: Option<Id>,
    ) -> StoreResult<SystemSetting> {
        let now = Timestamp::now();
        let value = Json(value);
        let row = match expect {
            Expect::Absent => {
                let sql = format!(
                    "INSERT INTO system_settings ({COLUMNS}) VALUES ($1, $2, 1, $3, $4) \
                     RETURNING {COLUMNS}"
                );
                on_pool!(self.db.pool(), p => sqlx::query_as::<_, SystemSetting>(&sql)
                    .bind(key).bind(&value).bind(now).bind(by).fetch_one(p).await)?
            }
            Expect::Any => {
                let sql = format!(
                    "INSERT INTO system_settings ({COLUMNS}) VALUES ($1, $2, 1, $3, $4) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                     version = system_settings.version + 1, updated_at = excluded.updated_at, \
                     updated_by = excluded.updated_by RETURNING {COLUMNS}"
                );
                on_pool!(self.db.pool(), p => sqlx::query_as::<_, SystemSetting>(&sql)
                    .bind(key).bind(&value).bind(now).bind(by).fetch_one(p).await)?
            }
            Expect::Version(version) => {
                let sql = format!(
                    "UPDATE system_settings SET value = $2, version = version + 1, \
                     updated_at = $3, updated_by = $4 WHERE key = $1 AND version = $5 \
                     RETURNING {COLUMNS}"
                );
                let row = on_pool!(self.db.pool(), p => sqlx::query_as::<_, SystemSetting>(&sql)
                    .bind(key).bind(&value).bind(now).bind(by).bind(version)
                    .fetch_optional(p).await)?;
                match row {
                    Some(row) => row,
                    None if self.setting(key).await?.is_some() => {
                        return Err(StoreError::Conflict {
                            constraint: Some("system_settings.version".into()),
                        })
                    }
                    None => return Err(StoreError::NotFound),
                }
            }
        };
        Ok(row)
    }

    /// Settings in key order, starting after `after` (a cursor), at most `limit`.
    pub async fn list_settings(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<SystemSetting>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM system_settings WHERE $1 IS NULL OR key > $1 \
             ORDER BY key LIMIT $2"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, SystemSetting>(&sql)
            .bind(after).bind(i64::from(limit)).fetch_all(p).await)?,
        )
    }

    /// Remove `key`; [`StoreError::NotFound`] if it was not there.
    pub async fn delete_setting(&self, key: &str) -> StoreResult<()> {
        let sql = "DELETE FROM system_settings WHERE key = $1";
        let done = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(key).execute(p).await
            .map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
