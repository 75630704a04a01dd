//! The audit log: an append-only record of security events (who did what to whom, from where).
//! Rows are only ever inserted, and pruned by age under the retention setting.

use serde::Serialize;
use sqlx::types::Json;

use crate::error::StoreResult;
use crate::types::{Id, Timestamp};
use crate::{on_pool, Store};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: Id,
    pub at: Timestamp,
    pub actor_id: Option<Id>,
    /// Dotted event name, e.g. `auth.sign_in.failed`.
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: Option<Json<serde_json::Value>>,
}

impl AuditEntry {
    /// A new entry for `action`, stamped now.
    pub fn new(action: &str) -> Self {
        Self {
            id: Id::new(),
            at: Timestamp::now(),
            actor_id: None,
            action: action.to_owned(),
            target_type: None,
            target_id: None,
            ip: None,
            user_agent: None,
            details: None,
        }
    }
}

/// Which entries to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_id: Option<Id>,
    /// Entries whose action starts with this (e.g. `auth.`).
    pub action_prefix: Option<String>,
    pub target_id: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

const COLUMNS: &str = "id, at, actor_id, action, target_type, target_id, ip, user_agent, details";

impl Store {
    pub async fn append_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        on_pool!(self.db.pool(), p => sqlx::query(&sql)
            .bind(e.id).bind(e.at).bind(e.actor_id).bind(&e.action).bind(&e.target_type)
            .bind(&e.target_id).bind(&e.ip).bind(&e.user_agent).bind(&e.details)
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Newest first, starting before the entry `before` (a cursor), at most `limit`.
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        before: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE ($1 IS NULL OR actor_id = $1) \
             AND ($2 IS NULL OR substr(action, 1, length($2)) = $2) \
             AND ($3 IS NULL OR target_id = $3) AND ($4 IS NULL OR at >= $4) \
             AND ($5 IS NULL OR at < $5) AND ($6 IS NULL OR id < $6) \
             ORDER BY id DESC LIMIT $7"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, AuditEntry>(&sql)
            .bind(filter.actor_id).bind(&filter.action_prefix).bind(&filter.target_id)
            .bind(filter.since).bind(filter.until).bind(before).bind(i64::from(limit))
            .fetch_all(p).await)?,
        )
    }

    /// Delete entries older than `before`; returns how many.
    pub async fn prune_audit(&self, before: Timestamp) -> StoreResult<u64> {
        let sql = "DELETE FROM audit_log WHERE at < $1";
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query(sql).bind(before).execute(p).await.map(|r| r.rows_affected()))?)
    }
}
