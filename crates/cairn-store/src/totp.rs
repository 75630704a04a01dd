//! Two-factor state: the user's encrypted TOTP secret (sealed by the server; opaque here), the
//! last accepted time step (so no code works twice), and single-use backup codes (hashed).

use crate::db::BeginWrite;
use crate::error::StoreResult;
use crate::types::{Id, Timestamp};
use crate::{on_pool, Store};

impl Store {
    /// Store a new, not yet confirmed, sealed TOTP secret (replacing an unconfirmed one).
    pub async fn set_pending_totp(&self, user_id: Id, sealed: &[u8]) -> StoreResult<bool> {
        let sql = "UPDATE users SET totp_secret = $2, totp_last_step = NULL, updated_at = $3 \
                   WHERE id = $1 AND totp_enabled = $4";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(user_id).bind(sealed)
            .bind(Timestamp::now()).bind(false).execute(p).await.map(|r| r.rows_affected()))?;
        self.standing.forget(user_id);
        Ok(n == 1)
    }

    /// Turn two-factor sign-in on and replace the backup codes, in one transaction.
    pub async fn enable_totp(
        &self,
        user_id: Id,
        step: i64,
        code_hashes: &[String],
    ) -> StoreResult<()> {
        let now = Timestamp::now();
        let enable = "UPDATE users SET totp_enabled = $2, totp_last_step = $3, updated_at = $4 WHERE id = $1";
        let clear = "DELETE FROM backup_codes WHERE user_id = $1";
        let insert =
            "INSERT INTO backup_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)";
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(enable).bind(user_id).bind(true).bind(step).bind(now).execute(&mut *tx).await?;
            sqlx::query(clear).bind(user_id).execute(&mut *tx).await?;
            for h in code_hashes {
                sqlx::query(insert).bind(user_id).bind(h).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        self.standing.forget(user_id);
        Ok(())
    }

    /// Turn two-factor sign-in off and forget the secret and backup codes.
    pub async fn disable_totp(&self, user_id: Id) -> StoreResult<()> {
        let off = "UPDATE users SET totp_enabled = $2, totp_secret = NULL, totp_last_step = NULL, \
                   updated_at = $3 WHERE id = $1";
        let clear = "DELETE FROM backup_codes WHERE user_id = $1";
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(off).bind(user_id).bind(false).bind(Timestamp::now()).execute(&mut *tx).await?;
            sqlx::query(clear).bind(user_id).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        self.standing.forget(user_id);
        Ok(())
    }

    /// Accept TOTP time step `step` for the user only if it is later than any accepted before.
    pub async fn claim_totp_step(&self, user_id: Id, step: i64) -> StoreResult<bool> {
        let sql = "UPDATE users SET totp_last_step = $2 WHERE id = $1 \
                   AND (totp_last_step IS NULL OR totp_last_step < $2)";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(user_id).bind(step)
            .execute(p).await.map(|r| r.rows_affected()))?;
        self.standing.forget(user_id);
        Ok(n == 1)
    }

    /// Spend a backup code; false when it is unknown or already used.
    pub async fn use_backup_code(&self, user_id: Id, code_hash: &str) -> StoreResult<bool> {
        let sql = "UPDATE backup_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 \
                   AND used_at IS NULL";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(user_id).bind(code_hash)
            .bind(Timestamp::now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Backup codes not yet used.
    pub async fn backup_codes_left(&self, user_id: Id) -> StoreResult<i64> {
        let sql = "SELECT COUNT(*) FROM backup_codes WHERE user_id = $1 AND used_at IS NULL";
        Ok(on_pool!(self.db.pool(), p => sqlx::query_scalar(sql).bind(user_id).fetch_one(p).await)?)
    }
}
