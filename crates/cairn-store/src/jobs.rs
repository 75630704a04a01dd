//! The durable job queue, in the database on both backends. A worker claims the oldest queued
//! job whose time has come by giving it a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//! workers never wait on each other; one statement under SQLite's single writer); heartbeats
//! extend the lease and report progress; a watchdog re-queues jobs whose lease ran out. A job
//! that fails is retried with backoff until `max_attempts`, then ends `failed` with its error.
//! The queue knows nothing of what jobs do: `kind` names the handler, `payload` its input.

use serde::Serialize;
use sqlx::types::Json;

use crate::db::{Backend, BeginWrite};
use crate::error::{StoreError, StoreResult};
use crate::types::{Id, Timestamp};
use crate::{on_pool, Store};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: Id,
    pub kind: String,
    pub subject: Option<String>,
    pub payload: Json<serde_json::Value>,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub run_at: Timestamp,
    pub lease_until: Option<Timestamp>,
    pub worker: Option<String>,
    pub last_error: Option<String>,
    pub progress_done: i64,
    pub progress_total: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub subject: Option<String>,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
    pub timeout_secs: i32,
}

pub(crate) const JOB_COLUMNS: &str = "id, kind, subject, payload, status, attempts, max_attempts, \
    timeout_secs, run_at, lease_until, worker, last_error, progress_done, progress_total, \
    created_at, updated_at, finished_at";

pub(crate) const INSERT_JOB: &str = "INSERT INTO jobs (id, kind, subject, payload, status, \
    attempts, max_attempts, timeout_secs, run_at, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $7, $7, $7)";

/// What the watchdog did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Jobs put back in the queue for another attempt.
    pub requeued: u64,
    /// Jobs out of attempts, now `failed` (their owners may need to record it).
    pub failed: Vec<JobRow>,
}

impl Store {
    pub async fn enqueue_job(&self, job: &NewJob) -> StoreResult<Id> {
        let id = Id::new();
        on_pool!(self.db.pool(), p => sqlx::query(INSERT_JOB)
            .bind(id).bind(&job.kind).bind(&job.subject).bind(Json(&job.payload))
            .bind(job.max_attempts).bind(job.timeout_secs).bind(Timestamp::now())
            .execute(p).await.map(|_| ()))?;
        Ok(id)
    }

    /// Enqueue `job` unless a job of its kind with its subject exists (in any state): for
    /// scheduled work, whose subject names the slot, so replicas that all notice a slot
    /// queue it once. Returns the new job's id, or `None` when it was already there.
    pub async fn enqueue_job_once(&self, job: &NewJob) -> StoreResult<Option<Id>> {
        let subject = job.subject.as_deref().unwrap_or_default();
        let id = Id::new();
        let backend = self.db.backend();
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            if backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(subject).execute(&mut *tx).await?;
            }
            let exists: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE kind = $1 AND subject = $2")
                .bind(&job.kind).bind(subject).fetch_one(&mut *tx).await?;
            if exists > 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            sqlx::query(INSERT_JOB)
                .bind(id).bind(&job.kind).bind(subject).bind(Json(&job.payload))
                .bind(job.max_attempts).bind(job.timeout_secs).bind(Timestamp::now())
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(Some(id))
        })
    }

    /// A queued or running job of `kind`, if there is one.
    pub async fn active_job_of_kind(&self, kind: &str) -> StoreResult<Option<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE kind = $1 AND status IN ('queued', 'running') \
             ORDER BY id LIMIT 1"
        );
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, JobRow>(&sql).bind(kind).fetch_optional(p).await)?)
    }

    pub async fn job(&self, id: Id) -> StoreResult<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, JobRow>(&sql).bind(id).fetch_optional(p).await)?)
    }

    /// The newest job about `subject`.
    pub async fn latest_job_for(&self, subject: &str) -> StoreResult<Option<JobRow>> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE subject = $1 ORDER BY id DESC LIMIT 1");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, JobRow>(&sql).bind(subject).fetch_optional(p).await)?)
    }

    /// Claim the oldest due job of one of `kinds` for `worker`, leasing it for its timeout.
    pub async fn claim_job(&self, worker: &str, kinds: &[&str]) -> StoreResult<Option<JobRow>> {
        let now = Timestamp::now();
        let kinds_sql = kinds
            .iter()
            .map(|k| format!("'{}'", k.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let (lease, lock) = match self.backend() {
            Backend::Postgres => (
                "$1 + make_interval(secs => timeout_secs)",
                "FOR UPDATE SKIP LOCKED",
            ),
            Backend::Sqlite => ("$1 + timeout_secs * 1000", ""),
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = {lease}, \
             worker = $2, updated_at = $1 WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
             AND run_at <= $1 AND kind IN ({kinds_sql}) ORDER BY run_at, id LIMIT 1 {lock}) \
             RETURNING {JOB_COLUMNS}"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, JobRow>(&sql)
            .bind(now).bind(worker).fetch_optional(p).await)?,
        )
    }

    /// Extend `worker`'s lease on a running job and record progress. False when the job is no
    /// longer this worker's (cancelled, or re-queued after its lease ran out): stop working.
    pub async fn heartbeat_job(
        &self,
        id: Id,
        worker: &str,
        progress: Option<(i64, i64)>,
    ) -> StoreResult<bool> {
        let lease = match self.backend() {
            Backend::Postgres => "$3 + make_interval(secs => timeout_secs)",
            Backend::Sqlite => "$3 + timeout_secs * 1000",
        };
        let sql = format!(
            "UPDATE jobs SET lease_until = {lease}, updated_at = $3, \
             progress_done = COALESCE($4, progress_done), \
             progress_total = COALESCE($5, progress_total) \
             WHERE id = $1 AND worker = $2 AND status = 'running'"
        );
        let (done, total) = progress.unzip();
        let n = on_pool!(self.db.pool(), p => sqlx::query(&sql).bind(id).bind(worker)
            .bind(Timestamp::now()).bind(done).bind(total)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Mark `worker`'s job done. False when it was no longer theirs.
    pub async fn complete_job(&self, id: Id, worker: &str) -> StoreResult<bool> {
        let sql = "UPDATE jobs SET status = 'succeeded', finished_at = $3, updated_at = $3, \
                   lease_until = NULL WHERE id = $1 AND worker = $2 AND status = 'running'";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(worker)
            .bind(Timestamp::now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Record a failed attempt: back in the queue at `retry_at` while attempts remain (and
    /// `retry_at` is given), else `failed` for good. Returns the job as it now stands, or
    /// `None` when it was no longer `worker`'s.
    pub async fn fail_job(
        &self,
        id: Id,
        worker: &str,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> StoreResult<Option<JobRow>> {
        let now = Timestamp::now();
        let sql = format!(
            "UPDATE jobs SET last_error = $3, updated_at = $4, lease_until = NULL, worker = NULL, \
             status = CASE WHEN $5 IS NOT NULL AND attempts < max_attempts THEN 'queued' \
                           ELSE 'failed' END, \
             run_at = CASE WHEN $5 IS NOT NULL AND attempts < max_attempts THEN $5 \
                           ELSE run_at END, \
             finished_at = CASE WHEN $5 IS NOT NULL AND attempts < max_attempts THEN NULL \
                           ELSE $4 END \
             WHERE id = $1 AND worker = $2 AND status = 'running' RETURNING {JOB_COLUMNS}"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, JobRow>(&sql)
            .bind(id).bind(worker).bind(error).bind(now).bind(retry_at)
            .fetch_optional(p).await)?,
        )
    }

    /// Give a running job back to the queue without counting the attempt (its worker is
    /// stopping). False when it was no longer `worker`'s.
    pub async fn release_job(&self, id: Id, worker: &str) -> StoreResult<bool> {
        let sql =
            "UPDATE jobs SET status = 'queued', attempts = attempts - 1, lease_until = NULL, \
                   worker = NULL, run_at = $3, updated_at = $3 \
                   WHERE id = $1 AND worker = $2 AND status = 'running'";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(worker)
            .bind(Timestamp::now()).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Cancel a queued or running job (a running worker notices at its next heartbeat).
    pub async fn cancel_job(&self, id: Id) -> StoreResult<bool> {
        let sql = "UPDATE jobs SET status = 'cancelled', finished_at = $2, updated_at = $2, \
                   lease_until = NULL WHERE id = $1 AND status IN ('queued', 'running')";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(Timestamp::now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// The watchdog: jobs whose lease ran out go back to the queue, or fail when out of
    /// attempts.
    pub async fn sweep_expired_jobs(&self) -> StoreResult<Swept> {
        let now = Timestamp::now();
        let fail = format!(
            "UPDATE jobs SET status = 'failed', finished_at = $1, updated_at = $1, \
             lease_until = NULL, worker = NULL, \
             last_error = 'timed out: no heartbeat within the lease' \
             WHERE status = 'running' AND lease_until < $1 AND attempts >= max_attempts \
             RETURNING {JOB_COLUMNS}"
        );
        let requeue = "UPDATE jobs SET status = 'queued', updated_at = $1, lease_until = NULL, \
                       worker = NULL, last_error = 'timed out: no heartbeat within the lease' \
                       WHERE status = 'running' AND lease_until < $1";
        let failed = on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, JobRow>(&fail).bind(now).fetch_all(p).await)?;
        let requeued = on_pool!(self.db.pool(), p =>
            sqlx::query(requeue).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(Swept { requeued, failed })
    }

    /// Put a failed or cancelled job back in the queue with fresh attempts.
    pub async fn retry_job(&self, id: Id) -> StoreResult<()> {
        let sql = "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $2, updated_at = $2, \
                   finished_at = NULL, last_error = NULL, progress_done = 0, progress_total = 0 \
                   WHERE id = $1 AND status IN ('failed', 'cancelled')";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(Timestamp::now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::Conflict {
                constraint: Some("jobs.status".into()),
            });
        }
        Ok(())
    }

    /// Jobs by status, for the admin view and metrics.
    pub async fn job_counts(&self) -> StoreResult<Vec<(String, String, i64)>> {
        let sql =
            "SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status ORDER BY kind, status";
        Ok(on_pool!(self.db.pool(), p => sqlx::query_as(sql).fetch_all(p).await)?)
    }

    /// Forget finished jobs older than `before`.
    pub async fn prune_jobs(&self, before: Timestamp) -> StoreResult<u64> {
        let sql = "DELETE FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled') \
                   AND finished_at < $1";
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query(sql).bind(before).execute(p).await.map(|r| r.rows_affected()))?)
    }
}
