//! Housekeeping the scheduled maintenance job runs: expired credentials, data past its
//! retention, and the query planner's statistics.

use crate::error::StoreResult;
use crate::types::Timestamp;
use crate::{on_pool, Store};

/// What one pruning pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub sessions: u64,
    pub invites: u64,
    pub password_resets: u64,
}

/// Ended credentials are kept this long after they end (for the sessions list and audits).
const ENDED_KEPT_MS: i64 = 7 * 86_400 * 1000;
const INVITES_KEPT_MS: i64 = 30 * 86_400 * 1000;

impl Store {
    /// Delete sessions (with their refresh tokens) that expired or were revoked over a week
    /// ago, invitations over 30 days past their end, and password-reset links a week past
    /// theirs.
    pub async fn prune_expired_credentials(&self, now: Timestamp) -> StoreResult<Pruned> {
        let ended = now.plus_millis(-ENDED_KEPT_MS);
        let invites_ended = now.plus_millis(-INVITES_KEPT_MS);
        let sessions = on_pool!(self.db.pool(), p => sqlx::query(
            "DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1")
            .bind(ended).execute(p).await.map(|r| r.rows_affected()))?;
        let invites = on_pool!(self.db.pool(), p => sqlx::query(
            "DELETE FROM invites WHERE expires_at < $1 OR revoked_at < $1")
            .bind(invites_ended).execute(p).await.map(|r| r.rows_affected()))?;
        let password_resets = on_pool!(self.db.pool(), p => sqlx::query(
            "DELETE FROM password_resets WHERE expires_at < $1")
            .bind(ended).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(Pruned {
            sessions,
            invites,
            password_resets,
        })
    }

    /// Delete conversations (and their messages) last touched before `before`.
    pub async fn prune_conversations(&self, before: Timestamp) -> StoreResult<u64> {
        Ok(on_pool!(self.db.pool(), p => sqlx::query(
            "DELETE FROM conversations WHERE updated_at < $1")
            .bind(before).execute(p).await.map(|r| r.rows_affected()))?)
    }

    /// Delete usage records of model calls made before `before`.
    pub async fn prune_usage(&self, before: Timestamp) -> StoreResult<u64> {
        Ok(on_pool!(self.db.pool(), p => sqlx::query(
            "DELETE FROM usage_events WHERE created_at < $1")
            .bind(before).execute(p).await.map(|r| r.rows_affected()))?)
    }

    /// Refresh the query planner's statistics where they changed: SQLite's `PRAGMA optimize`
    /// (PostgreSQL's autovacuum does this on its own).
    pub async fn optimize(&self) -> StoreResult<()> {
        if let crate::Pool::Sqlite(p) = self.db.pool() {
            sqlx::query("PRAGMA optimize").execute(p).await?;
        }
        Ok(())
    }
}
