//! Budgets and usage: monthly limits per user and for the workspace, money reserved for calls
//! in flight and settled to what they cost, and one usage row per model call.
//!
//! A call reserves its most expensive outcome before it starts. The reservation is one
//! conditional `UPDATE … WHERE spent + reserved + amount <= limit` per subject: SQLite runs
//! writers one at a time and PostgreSQL re-checks the condition on the locked row, so two
//! concurrent calls can never both pass a limit only one fits under.

use crate::db::BeginWrite;
use serde::Serialize;

use crate::error::{StoreError, StoreResult};
use crate::types::{Id, Timestamp};
use crate::{on_pool, Store};

/// The workspace's budget subject.
pub const WORKSPACE: &str = "workspace";

/// A user's budget subject.
pub fn user_subject(user: Id) -> String {
    format!("user:{user}")
}

/// The month a time falls in, as budgets count it (UTC, `2026-11`).
pub fn month_of(t: Timestamp) -> String {
    t.as_datetime().format("%Y-%m").to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BudgetRow {
    pub subject: String,
    pub monthly_limit_micros: i64,
    pub updated_at: Timestamp,
    pub updated_by: Option<Id>,
}

/// Where one subject stands this month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Standing {
    pub subject: String,
    pub month: String,
    /// `None`: no limit.
    pub limit_micros: Option<i64>,
    pub spent_micros: i64,
    pub reserved_micros: i64,
    /// `None` without a limit; never negative.
    pub remaining_micros: Option<i64>,
}

/// A refused reservation: the subject whose limit it would pass, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub standing: Standing,
    pub asked_micros: i64,
}

/// One model call's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub user_id: Id,
    pub model: String,
    /// `chat` or `embedding`.
    pub kind: &'static str,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub estimated: bool,
    pub cost_micros: i64,
}

/// Usage summed over one group (a user or a model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UsageGroup {
    pub key: String,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
}

/// How to group a usage summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    User,
    Model,
    /// By UTC day (`YYYY-MM-DD`), oldest first; days without usage are absent.
    Day,
}

impl Store {
    pub async fn set_budget(&self, subject: &str, limit: i64, by: Option<Id>) -> StoreResult<()> {
        let sql = "INSERT INTO budgets (subject, monthly_limit_micros, updated_at, updated_by) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT (subject) DO UPDATE SET \
                   monthly_limit_micros = excluded.monthly_limit_micros, \
                   updated_at = excluded.updated_at, updated_by = excluded.updated_by";
        on_pool!(self.db.pool(), p => sqlx::query(sql).bind(subject).bind(limit)
            .bind(Timestamp::now()).bind(by).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn remove_budget(&self, subject: &str) -> StoreResult<()> {
        let n = on_pool!(self.db.pool(), p =>
            sqlx::query("DELETE FROM budgets WHERE subject = $1")
            .bind(subject).execute(p).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn budgets(&self) -> StoreResult<Vec<BudgetRow>> {
        let sql = "SELECT subject, monthly_limit_micros, updated_at, updated_by FROM budgets \
                   ORDER BY subject";
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, BudgetRow>(sql).fetch_all(p).await)?)
    }

    /// Where `subject` stands in `month`.
    pub async fn budget_standing(&self, subject: &str, month: &str) -> StoreResult<Standing> {
        let limit_sql = "SELECT monthly_limit_micros FROM budgets WHERE subject = $1";
        let spend_sql = "SELECT spent_micros, reserved_micros FROM budget_spend \
                         WHERE subject = $1 AND month = $2";
        let (limit, spend) = on_pool!(self.db.pool(), p => {
            let mut conn = p.acquire().await?;
            let limit: Option<i64> = sqlx::query_scalar(limit_sql).bind(subject)
                .fetch_optional(&mut *conn).await?;
            let spend: Option<(i64, i64)> = sqlx::query_as(spend_sql).bind(subject).bind(month)
                .fetch_optional(&mut *conn).await?;
            Ok::<_, sqlx::Error>((limit, spend))
        })?;
        let (spent, reserved) = spend.unwrap_or((0, 0));
        Ok(Standing {
            subject: subject.to_owned(),
            month: month.to_owned(),
            limit_micros: limit,
            spent_micros: spent,
            reserved_micros: reserved,
            remaining_micros: limit.map(|l| (l - spent - reserved).max(0)),
        })
    }

    /// Set `amount` aside for a call by `user` this `month`, against the user's and the
    /// workspace's limits. `Ok(Err(refusal))` names the first limit it would pass.
    pub async fn reserve_budget(
        &self,
        user: Id,
        month: &str,
        amount: i64,
    ) -> StoreResult<Result<Id, Refusal>> {
        let subjects = [user_subject(user), WORKSPACE.to_owned()];
        let ensure = "INSERT INTO budget_spend (subject, month) VALUES ($1, $2) \
                      ON CONFLICT (subject, month) DO NOTHING";
        let reserve = "UPDATE budget_spend SET reserved_micros = reserved_micros + $3 \
                       WHERE subject = $1 AND month = $2 AND spent_micros + reserved_micros + $3 \
                       <= COALESCE((SELECT monthly_limit_micros FROM budgets WHERE subject = $1), \
                       9000000000000000000)";
        let record = "INSERT INTO budget_reservations (id, user_id, month, amount_micros, \
                      created_at) VALUES ($1, $2, $3, $4, $5)";
        let id = Id::new();
        let refused: Option<String> = on_pool!(self.db.pool(), p => async {
            let mut tx = p.begin_write().await?;
            for s in &subjects {
                sqlx::query(ensure).bind(s).bind(month).execute(&mut *tx).await?;
            }
            for s in &subjects {
                let n = sqlx::query(reserve).bind(s).bind(month).bind(amount)
                    .execute(&mut *tx).await?.rows_affected();
                if n == 0 {
                    tx.rollback().await?;
                    return Ok::<_, sqlx::Error>(Some(s.clone()));
                }
            }
            sqlx::query(record).bind(id).bind(user).bind(month).bind(amount)
                .bind(Timestamp::now()).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(None)
        }.await)?;
        match refused {
            None => Ok(Ok(id)),
            Some(subject) => Ok(Err(Refusal {
                standing: self.budget_standing(&subject, month).await?,
                asked_micros: amount,
            })),
        }
    }

    /// Settle a reservation: release what was set aside, add what the call cost, and record
    /// its usage, in one transaction. A reservation already released (by the sweep of a long
    /// call) still gets its cost counted.
    pub async fn settle_budget(
        &self,
        reservation: Option<Id>,
        event: &UsageEvent,
    ) -> StoreResult<()> {
        let now = Timestamp::now();
        let month = month_of(now);
        let subjects = [user_subject(event.user_id), WORKSPACE.to_owned()];
        let take = "DELETE FROM budget_reservations WHERE id = $1 RETURNING amount_micros, month";
        let ensure = "INSERT INTO budget_spend (subject, month) VALUES ($1, $2) \
                      ON CONFLICT (subject, month) DO NOTHING";
        let release = "UPDATE budget_spend SET reserved_micros = reserved_micros - $3 \
                       WHERE subject = $1 AND month = $2";
        let spend = "UPDATE budget_spend SET spent_micros = spent_micros + $3 \
                     WHERE subject = $1 AND month = $2";
        let record = "INSERT INTO usage_events (id, user_id, model, kind, input_tokens, \
                      output_tokens, estimated, cost_micros, created_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            if let Some(r) = reservation {
                let held: Option<(i64, String)> = sqlx::query_as(take).bind(r)
                    .fetch_optional(&mut *tx).await?;
                if let Some((amount, held_month)) = held {
                    for s in &subjects {
                        sqlx::query(release).bind(s).bind(&held_month).bind(amount)
                            .execute(&mut *tx).await?;
                    }
                }
            }
            for s in &subjects {
                sqlx::query(ensure).bind(s).bind(&month).execute(&mut *tx).await?;
                sqlx::query(spend).bind(s).bind(&month).bind(event.cost_micros)
                    .execute(&mut *tx).await?;
            }
            sqlx::query(record).bind(Id::new()).bind(event.user_id).bind(&event.model)
                .bind(event.kind).bind(event.input_tokens).bind(event.output_tokens)
                .bind(event.estimated).bind(event.cost_micros).bind(now)
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        })?;
        Ok(())
    }

    /// Release reservations older than `before` (their process died mid-call); returns how
    /// many.
    pub async fn release_stale_reservations(&self, before: Timestamp) -> StoreResult<u64> {
        let take = "DELETE FROM budget_reservations WHERE created_at < $1 \
                    RETURNING user_id, amount_micros, month";
        let release = "UPDATE budget_spend SET reserved_micros = reserved_micros - $3 \
                       WHERE subject = $1 AND month = $2";
        Ok(on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            let stale: Vec<(Id, i64, String)> = sqlx::query_as(take).bind(before)
                .fetch_all(&mut *tx).await?;
            for (user, amount, month) in &stale {
                for s in [user_subject(*user), WORKSPACE.to_owned()] {
                    sqlx::query(release).bind(&s).bind(month).bind(amount)
                        .execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(stale.len() as u64)
        })?)
    }

    /// Usage between `from` and `to`, grouped, optionally for one user; most expensive first (by
    /// day: oldest first).
    pub async fn usage_summary(
        &self,
        group: GroupBy,
        from: Timestamp,
        to: Timestamp,
        user: Option<Id>,
    ) -> StoreResult<Vec<UsageGroup>> {
        let key = match (group, self.backend()) {
            (GroupBy::Model, _) => "model",
            (GroupBy::User, crate::Backend::Postgres) => "COALESCE(user_id::text, '')",
            (GroupBy::User, crate::Backend::Sqlite) => "COALESCE(user_id, '')",
            (GroupBy::Day, crate::Backend::Postgres) => {
                "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            }
            (GroupBy::Day, crate::Backend::Sqlite) => {
                "strftime('%Y-%m-%d', created_at / 1000, 'unixepoch')"
            }
        };
        let order = match group {
            GroupBy::Day => "key",
            _ => "cost_micros DESC, key",
        };
        let sql = format!(
            "SELECT {key} AS key, COUNT(*) AS calls, \
             CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros \
             FROM usage_events WHERE created_at >= $1 AND created_at < $2 \
             AND ($3 IS NULL OR user_id = $3) GROUP BY {key} ORDER BY {order}"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, UsageGroup>(&sql)
            .bind(from).bind(to).bind(user).fetch_all(p).await)?,
        )
    }
}
