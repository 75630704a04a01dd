//! One-time tokens with a purpose: invitations (a limited number of sign-ups, as a role) and
//! password-reset links. Both are stored as the SHA-256 of their token and consumed with a
//! single conditional update, so a token cannot be used more often than it allows, even by
//! concurrent requests.

use serde::Serialize;

use crate::error::{StoreError, StoreResult};
use crate::types::{Id, Timestamp};
use crate::{on_pool, Store};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct InviteRow {
    pub id: Id,
    #[serde(skip)]
    pub token_hash: String,
    pub role: String,
    pub created_by: Option<Id>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub max_uses: i32,
    pub uses: i32,
    pub revoked_at: Option<Timestamp>,
}

const COLUMNS: &str =
    "id, token_hash, role, created_by, created_at, expires_at, max_uses, uses, revoked_at";

impl Store {
    pub async fn create_invite(&self, i: &InviteRow) -> StoreResult<()> {
        let sql =
            format!("INSERT INTO invites ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        on_pool!(self.db.pool(), p => sqlx::query(&sql)
            .bind(i.id).bind(&i.token_hash).bind(&i.role).bind(i.created_by).bind(i.created_at)
            .bind(i.expires_at).bind(i.max_uses).bind(i.uses).bind(i.revoked_at)
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Count one use of the invite with `token_hash` if it is live; returns it.
    pub async fn use_invite(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<InviteRow>> {
        let sql = format!(
            "UPDATE invites SET uses = uses + 1 WHERE token_hash = $1 AND uses < max_uses \
             AND expires_at > $2 AND revoked_at IS NULL RETURNING {COLUMNS}"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, InviteRow>(&sql)
            .bind(token_hash).bind(now).fetch_optional(p).await)?,
        )
    }

    /// Give back a use taken by [`use_invite`](Self::use_invite) when the sign-up then failed.
    pub async fn release_invite(&self, id: Id) -> StoreResult<()> {
        let sql = "UPDATE invites SET uses = uses - 1 WHERE id = $1 AND uses > 0";
        on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn list_invites(&self) -> StoreResult<Vec<InviteRow>> {
        let sql = format!("SELECT {COLUMNS} FROM invites ORDER BY id DESC LIMIT 500");
        Ok(on_pool!(self.db.pool(), p => sqlx::query_as::<_, InviteRow>(&sql).fetch_all(p).await)?)
    }

    pub async fn revoke_invite(&self, id: Id) -> StoreResult<()> {
        let sql = "UPDATE invites SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(Timestamp::now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn create_password_reset(
        &self,
        token_hash: &str,
        user_id: Id,
        created_by: Option<Id>,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        let sql = "INSERT INTO password_resets (token_hash, user_id, created_by, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5)";
        on_pool!(self.db.pool(), p => sqlx::query(sql).bind(token_hash).bind(user_id)
            .bind(created_by).bind(Timestamp::now()).bind(expires_at).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// The user a live reset token is for, without spending it.
    pub async fn password_reset_user(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<Id>> {
        let sql = "SELECT user_id FROM password_resets WHERE token_hash = $1 \
                   AND used_at IS NULL AND expires_at > $2";
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_scalar(sql).bind(token_hash).bind(now).fetch_optional(p).await)?)
    }

    /// Spend a live reset token; the user it was for.
    pub async fn use_password_reset(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<Id>> {
        let sql = "UPDATE password_resets SET used_at = $2 WHERE token_hash = $1 \
                   AND used_at IS NULL AND expires_at > $2 RETURNING user_id";
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_scalar(sql).bind(token_hash).bind(now).fetch_optional(p).await)?)
    }
}
