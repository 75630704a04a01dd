//! People and their sessions: users, sessions (refresh-token families), refresh tokens and
//! per-user preferences. What a role or state *allows* is decided by the server's policy; this
//! module only stores and updates them, atomically where a race would matter.

use crate::db::BeginWrite;
use std::sync::Arc;

use serde::Serialize;
use sqlx::types::Json;

use crate::error::{StoreError, StoreResult};
use crate::standing::{Standing, StandingKey};
use crate::types::{Id, Timestamp};
use crate::{on_pool, Store};

/// A user row. `role` and `state` are the stored words; the server parses them.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct UserRow {
    pub id: Id,
    pub email: String,
    pub display_name: String,
    #[serde(skip)]
    pub password_hash: String,
    pub role: String,
    pub state: String,
    #[serde(skip)]
    pub totp_secret: Option<Vec<u8>>,
    pub totp_enabled: bool,
    pub failed_sign_ins: i32,
    pub locked_until: Option<Timestamp>,
    pub tokens_valid_after: Timestamp,
    pub last_sign_in_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

pub(crate) const USER_COLUMNS: &str =
    "id, email, display_name, password_hash, role, state, totp_secret, \
    totp_enabled, failed_sign_ins, locked_until, tokens_valid_after, last_sign_in_at, created_at, \
    updated_at";

/// What is needed to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: String,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct SessionRow {
    pub id: Id,
    pub user_id: Id,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub revoked_reason: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_used_at, expires_at, revoked_at, revoked_reason, user_agent, ip";

/// A refresh token joined with its session.
#[derive(sqlx::FromRow)]
struct RefreshLookup {
    spent_at: Option<Timestamp>,
    #[sqlx(flatten)]
    session: SessionRow,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Refresh {
    /// The token was live: it is now spent and `new_token_hash` is the session's live token.
    Rotated(SessionRow),
    /// The token had already been spent: someone replayed it, so the whole session is revoked.
    Reused { session_id: Id, user_id: Id },
    /// Unknown token, or its session is revoked or expired.
    Invalid,
}

impl Store {
    pub async fn create_user(&self, new: &NewUser) -> StoreResult<UserRow> {
        let now = Timestamp::now();
        let sql = format!(
            "INSERT INTO users (id, email, display_name, password_hash, role, state, \
             tokens_valid_after, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7) \
             RETURNING {USER_COLUMNS}"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, UserRow>(&sql)
            .bind(Id::new()).bind(&new.email).bind(&new.display_name).bind(&new.password_hash)
            .bind(&new.role).bind(&new.state).bind(now)
            .fetch_one(p).await)?,
        )
    }

    pub async fn user(&self, id: Id) -> StoreResult<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, UserRow>(&sql).bind(id).fetch_optional(p).await)?)
    }

    /// The user with this (already normalised) email.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, UserRow>(&sql).bind(email).fetch_optional(p).await)?)
    }

    /// The workspace's owner, once set up.
    pub async fn owner(&self) -> StoreResult<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE role = 'owner' LIMIT 1");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, UserRow>(&sql).fetch_optional(p).await)?)
    }

    /// Whether an owner exists (the workspace has been set up).
    pub async fn has_owner(&self) -> StoreResult<bool> {
        let sql = "SELECT COUNT(*) FROM users WHERE role = 'owner'";
        let n: i64 = on_pool!(self.db.pool(), p => sqlx::query_scalar(sql).fetch_one(p).await)?;
        Ok(n > 0)
    }

    /// Count a failed sign-in; `lock_until` (if any) refuses sign-ins until then.
    pub async fn record_failed_sign_in(
        &self,
        id: Id,
        lock_until: Option<Timestamp>,
    ) -> StoreResult<()> {
        let sql = "UPDATE users SET failed_sign_ins = failed_sign_ins + 1, \
                   locked_until = COALESCE($2, locked_until) WHERE id = $1";
        on_pool!(self.db.pool(), p =>
            sqlx::query(sql).bind(id).bind(lock_until).execute(p).await.map(|_| ()))?;
        self.standing.forget(id);
        Ok(())
    }

    pub async fn record_sign_in(&self, id: Id) -> StoreResult<()> {
        let sql = "UPDATE users SET failed_sign_ins = 0, locked_until = NULL, \
                   last_sign_in_at = $2 WHERE id = $1";
        on_pool!(self.db.pool(), p =>
            sqlx::query(sql).bind(id).bind(Timestamp::now()).execute(p).await.map(|_| ()))?;
        self.standing.forget(id);
        Ok(())
    }

    /// Replace the password hash and void every token issued before now.
    pub async fn set_password(&self, id: Id, password_hash: &str) -> StoreResult<Timestamp> {
        let now = Timestamp::now();
        let sql = "UPDATE users SET password_hash = $2, tokens_valid_after = $3, updated_at = $3, \
                   failed_sign_ins = 0, locked_until = NULL WHERE id = $1";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(password_hash)
            .bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        self.standing.forget(id);
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        self.revoke_user_sessions(id, "password_changed").await?;
        Ok(now)
    }

    /// Void every token the user holds: sessions revoked, access tokens issued before now void.
    pub async fn revoke_all_for_user(&self, id: Id, reason: &str) -> StoreResult<Timestamp> {
        let now = Timestamp::now();
        let sql = "UPDATE users SET tokens_valid_after = $2, updated_at = $2 WHERE id = $1";
        on_pool!(self.db.pool(), p =>
            sqlx::query(sql).bind(id).bind(now).execute(p).await.map(|_| ()))?;
        self.standing.forget(id);
        self.revoke_user_sessions(id, reason).await?;
        Ok(now)
    }

    pub async fn set_user_state(&self, id: Id, state: &str) -> StoreResult<UserRow> {
        let sql = format!(
            "UPDATE users SET state = $2, updated_at = $3 WHERE id = $1 RETURNING {USER_COLUMNS}"
        );
        let row = on_pool!(self.db.pool(), p => sqlx::query_as::<_, UserRow>(&sql)
            .bind(id).bind(state).bind(Timestamp::now()).fetch_optional(p).await)?;
        self.standing.forget(id);
        row.ok_or(StoreError::NotFound)
    }

    /// Change a user's display name.
    pub async fn set_display_name(&self, id: Id, name: &str) -> StoreResult<UserRow> {
        let sql = format!(
            "UPDATE users SET display_name = $2, updated_at = $3 WHERE id = $1 \
             RETURNING {USER_COLUMNS}"
        );
        let row = on_pool!(self.db.pool(), p => sqlx::query_as::<_, UserRow>(&sql)
            .bind(id).bind(name).bind(Timestamp::now()).fetch_optional(p).await)?;
        self.standing.forget(id);
        row.ok_or(StoreError::NotFound)
    }

    /// Users matching `query` (in email or display name) and `state`, in id order after
    /// `after`, at most `limit`.
    pub async fn list_users(
        &self,
        query: Option<&str>,
        state: Option<&str>,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<UserRow>> {
        let pattern = query.map(|q| {
            let escaped = q
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE ($1 IS NULL OR email LIKE $1 ESCAPE '\\' \
             OR lower(display_name) LIKE $1 ESCAPE '\\') AND ($2 IS NULL OR state = $2) \
             AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, UserRow>(&sql)
            .bind(&pattern).bind(state).bind(after).bind(i64::from(limit)).fetch_all(p).await)?,
        )
    }

    pub async fn set_user_role(&self, id: Id, role: &str) -> StoreResult<UserRow> {
        let sql = format!(
            "UPDATE users SET role = $2, updated_at = $3 WHERE id = $1 RETURNING {USER_COLUMNS}"
        );
        let row = on_pool!(self.db.pool(), p => sqlx::query_as::<_, UserRow>(&sql)
            .bind(id).bind(role).bind(Timestamp::now()).fetch_optional(p).await)?;
        self.standing.forget(id);
        row.ok_or(StoreError::NotFound)
    }

    /// Start a session with its first refresh token.
    pub async fn create_session(
        &self,
        session: &SessionRow,
        refresh_token_hash: &str,
    ) -> StoreResult<()> {
        let insert_session = format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        let insert_token =
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)";
        let s = session;
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(&insert_session)
                .bind(s.id).bind(s.user_id).bind(s.created_at).bind(s.last_used_at)
                .bind(s.expires_at).bind(s.revoked_at).bind(&s.revoked_reason)
                .bind(&s.user_agent).bind(&s.ip)
                .execute(&mut *tx).await?;
            sqlx::query(insert_token)
                .bind(refresh_token_hash).bind(s.id).bind(s.created_at)
                .execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// Spend refresh token `token_hash` and make `new_token_hash` the session's live token —
    /// or, if it was already spent, revoke the whole session. One transaction: two concurrent
    /// refreshes with the same token cannot both succeed.
    pub async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        new_token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Refresh> {
        let find = format!(
            "SELECT t.spent_at, {} FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1",
            SESSION_COLUMNS
                .split(", ")
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let spend =
            "UPDATE refresh_tokens SET spent_at = $2 WHERE token_hash = $1 AND spent_at IS NULL";
        let insert =
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)";
        let touch = "UPDATE sessions SET last_used_at = $2 WHERE id = $1";
        let revoke =
            "UPDATE sessions SET revoked_at = $2, revoked_reason = 'refresh_token_reused' \
                      WHERE id = $1 AND revoked_at IS NULL";
        let outcome = on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            let row: Option<RefreshLookup> =
                sqlx::query_as(&find).bind(token_hash).fetch_optional(&mut *tx).await?;
            let Some(RefreshLookup { spent_at, session }) = row else {
                return Ok(Refresh::Invalid);
            };
            let SessionRow { id, user_id, created_at, last_used_at: _, expires_at, revoked_at,
                revoked_reason, user_agent, ip } = session;
            if revoked_at.is_some() || expires_at <= now {
                return Ok(Refresh::Invalid);
            }
            let spent_now = spent_at.is_none() && sqlx::query(spend).bind(token_hash).bind(now)
                .execute(&mut *tx).await?.rows_affected() == 1;
            if !spent_now {
                sqlx::query(revoke).bind(id).bind(now).execute(&mut *tx).await?;
                tx.commit().await?;
                // (An early return leaves the function: announce the change here.)
                self.standing.forget(user_id);
                return Ok(Refresh::Reused { session_id: id, user_id });
            }
            sqlx::query(insert).bind(new_token_hash).bind(id).bind(now).execute(&mut *tx).await?;
            sqlx::query(touch).bind(id).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Refresh::Rotated(SessionRow {
                id, user_id, created_at, last_used_at: now, expires_at, revoked_at,
                revoked_reason, user_agent, ip,
            }))
        });
        if let Ok(Refresh::Rotated(s)) = &outcome {
            self.standing.forget(s.user_id);
        }
        outcome
    }

    /// The user and session an access token names, in one query.
    pub async fn auth_context(
        &self,
        user_id: Id,
        session_id: Id,
    ) -> StoreResult<Option<Arc<(UserRow, SessionRow)>>> {
        let key = StandingKey::Session(session_id);
        if let Some(Standing::Session(found)) = self.standing.get(&key) {
            if found.0.id == user_id {
                return Ok(Some(found));
            }
        }
        let ticket = self.standing.ticket();
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND user_id = $2");
        let user_sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        // Two statements on one connection: both backends answer them from their primary keys.
        let found = on_pool!(self.db.pool(), p => {
            let mut conn = p.acquire().await?;
            let Some(session) = sqlx::query_as::<_, SessionRow>(&sql)
                .bind(session_id).bind(user_id).fetch_optional(&mut *conn).await? else {
                return Ok(None);
            };
            let user = sqlx::query_as::<_, UserRow>(&user_sql)
                .bind(user_id).fetch_optional(&mut *conn).await?;
            Ok::<_, sqlx::Error>(user.map(|u| Arc::new((u, session))))
        })?;
        if let Some(found) = &found {
            self.standing
                .put(key, Standing::Session(found.clone()), ticket);
        }
        Ok(found)
    }

    pub async fn session(&self, id: Id) -> StoreResult<Option<SessionRow>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, SessionRow>(&sql).bind(id).fetch_optional(p).await)?)
    }

    /// The user's sessions that are neither revoked nor expired, newest first.
    pub async fn active_sessions(&self, user_id: Id) -> StoreResult<Vec<SessionRow>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
             AND expires_at > $2 ORDER BY created_at DESC"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, SessionRow>(&sql)
            .bind(user_id).bind(Timestamp::now()).fetch_all(p).await)?,
        )
    }

    /// Revoke one session of `user_id`; false when there was no such live session.
    pub async fn revoke_session(&self, id: Id, user_id: Id, reason: &str) -> StoreResult<bool> {
        let sql = "UPDATE sessions SET revoked_at = $3, revoked_reason = $4 \
                   WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(user_id)
            .bind(Timestamp::now()).bind(reason).execute(p).await.map(|r| r.rows_affected()))?;
        self.standing.forget(user_id);
        Ok(n == 1)
    }

    pub async fn revoke_user_sessions(&self, user_id: Id, reason: &str) -> StoreResult<u64> {
        let sql = "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 \
                   WHERE user_id = $1 AND revoked_at IS NULL";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(user_id)
            .bind(Timestamp::now()).bind(reason).execute(p).await.map(|r| r.rows_affected()))?;
        self.standing.forget(user_id);
        Ok(n)
    }

    /// Sessions revoked after `since` (to rebuild the in-memory revocation list at start).
    pub async fn sessions_revoked_since(
        &self,
        since: Timestamp,
    ) -> StoreResult<Vec<(Id, Timestamp)>> {
        let sql = "SELECT id, revoked_at FROM sessions WHERE revoked_at > $1";
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as(sql).bind(since).fetch_all(p).await)?)
    }

    pub async fn preference(
        &self,
        user_id: Id,
        key: &str,
    ) -> StoreResult<Option<serde_json::Value>> {
        let sql = "SELECT value FROM user_preferences WHERE user_id = $1 AND key = $2";
        let v: Option<Json<serde_json::Value>> = on_pool!(self.db.pool(), p =>
            sqlx::query_scalar(sql).bind(user_id).bind(key).fetch_optional(p).await)?;
        Ok(v.map(|j| j.0))
    }

    /// All of the user's preferences, by key.
    pub async fn preferences(&self, user_id: Id) -> StoreResult<Vec<(String, serde_json::Value)>> {
        let sql = "SELECT key, value FROM user_preferences WHERE user_id = $1 ORDER BY key";
        let rows: Vec<(String, Json<serde_json::Value>)> = on_pool!(self.db.pool(), p =>
            sqlx::query_as(sql).bind(user_id).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(k, v)| (k, v.0)).collect())
    }

    /// Remove one preference; false when it was not set.
    pub async fn delete_preference(&self, user_id: Id, key: &str) -> StoreResult<bool> {
        let sql = "DELETE FROM user_preferences WHERE user_id = $1 AND key = $2";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(user_id).bind(key)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    pub async fn put_preference(
        &self,
        user_id: Id,
        key: &str,
        value: serde_json::Value,
    ) -> StoreResult<()> {
        let sql = "INSERT INTO user_preferences (user_id, key, value, updated_at) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key) \
                   DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
        on_pool!(self.db.pool(), p => sqlx::query(sql).bind(user_id).bind(key).bind(Json(value))
            .bind(Timestamp::now()).execute(p).await.map(|_| ()))?;
        Ok(())
    }
}
