//! Queue workers and the sweeps that keep the queue and storage tidy.
//!
//! A worker claims one job at a time, heartbeats while it runs (extending its lease and
//! noticing cancellation), and completes, retries or fails it. The watchdog re-queues jobs whose
//! worker vanished. Maintenance purges deleted documents past their retention (blob first, then
//! row), removes blobs no document refers to, and clears upload leftovers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_store::documents::DocumentRow;
use cairn_store::jobs::{JobRow, NewJob};
use cairn_store::{Id, Timestamp};
use tokio::task::JoinSet;

use super::ingest::{self, Outcome};
use crate::app::AppState;

/// How long an idle worker waits before looking at the queue again (jobs enqueued by this
/// process wake it at once).
const IDLE_POLL: Duration = Duration::from_millis(500);
const WATCHDOG_EVERY: Duration = Duration::from_secs(15);
/// Blobs without a document, and upload leftovers, younger than this are left alone (an upload
/// may still be in flight).
const ORPHAN_AGE: Duration = Duration::from_secs(3600);
/// Finished jobs are kept this long for inspection.
const JOB_HISTORY: Duration = Duration::from_secs(7 * 86_400);

/// Jobs this process is running, so stopping can hand them back at once.
type Running = Arc<std::sync::Mutex<Vec<(Id, String)>>>;

/// The running workers; [`Workers::stop`] ends them.
pub struct Workers {
    set: JoinSet<()>,
    running: Running,
}

impl Workers {
    /// Stop every loop and put the jobs they held back in the queue now, rather than when
    /// their leases run out (their work so far is simply redone).
    pub async fn stop(mut self, state: &AppState) {
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
        let held = self
            .running
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        for (job, worker) in held {
            match state.store.release_job(job, &worker).await {
                Ok(_) => tracing::info!(%job, "handed an interrupted job back to the queue"),
                Err(e) => {
                    tracing::warn!(%job, error = %e, "could not hand a job back; its lease will expire")
                }
            }
        }
    }
}

/// Start `n` workers plus the watchdog and maintenance loops.
pub fn spawn(state: &AppState, workers: usize) -> Workers {
    let mut set = JoinSet::new();
    let running: Running = Arc::default();
    let host = hostname();
    for i in 0..workers {
        let name = format!("{host}:{}:{i}", std::process::id());
        set.spawn(work(state.clone(), name, running.clone()));
    }
    set.spawn(watchdog(state.clone()));
    if workers > 0 {
        // Documents embedded with another model (or none) get vectors from this one.
        let s = state.clone();
        set.spawn(async move {
            match crate::search::embed::queue_reembedding(&s).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "queued re-embedding for the configured model"),
                Err(e) => tracing::warn!(error = %e, "could not queue re-embedding"),
            }
        });
    }
    Workers { set, running }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "cairn".into())
}

async fn work(state: AppState, name: String, running: Running) {
    loop {
        let kinds: &[&str] = if state.embedder.is_some() {
            &[
                super::INGEST_JOB,
                crate::search::embed::EMBED_JOB,
                MAINTENANCE_JOB,
                crate::backup::BACKUP_JOB,
            ]
        } else {
            &[
                super::INGEST_JOB,
                MAINTENANCE_JOB,
                crate::backup::BACKUP_JOB,
            ]
        };
        match state.store.claim_job(&name, kinds).await {
            Ok(Some(job)) => {
                let id = job.id;
                if let Ok(mut r) = running.lock() {
                    r.push((id, name.clone()));
                }
                run_job(&state, &name, job).await;
                if let Ok(mut r) = running.lock() {
                    r.retain(|(j, _)| *j != id);
                }
            }
            Ok(None) => {
                let _ = tokio::time::timeout(IDLE_POLL, state.jobs_ready.notified()).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not claim a job");
                tokio::time::sleep(IDLE_POLL * 4).await;
            }
        }
    }
}

/// A running heartbeat; it stops when dropped — also when the worker running the job is
/// itself stopped mid-job, which must not leave it beating (and holding the server's state).
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Extend `job`'s lease every third of its timeout until dropped; `alive` turns false when
/// the job is no longer this worker's (cancelled, or taken back by the watchdog).
fn heartbeat(state: &AppState, worker: &str, job: &JobRow, alive: Arc<AtomicBool>) -> Heartbeat {
    let state = state.clone();
    let worker = worker.to_owned();
    let every = Duration::from_secs(u64::try_from(job.timeout_secs).unwrap_or(300).max(3) / 3);
    let id = job.id;
    Heartbeat(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match state.store.heartbeat_job(id, &worker, None).await {
                Ok(true) => {}
                Ok(false) => {
                    alive.store(false, Ordering::Release);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "job heartbeat failed"),
            }
        }
    }))
}

/// Run one claimed job to its end, heartbeating meanwhile.
pub async fn run_job(state: &AppState, worker: &str, job: JobRow) {
    if job.kind == MAINTENANCE_JOB || job.kind == crate::backup::BACKUP_JOB {
        return run_system_job(state, worker, job).await;
    }
    let alive = Arc::new(AtomicBool::new(true));
    let beat = heartbeat(state, worker, &job, alive.clone());
    let document = job
        .payload
        .0
        .get("document_id")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<Id>().ok());
    let still = {
        let alive = alive.clone();
        move || alive.load(Ordering::Acquire)
    };
    let is_ingest = job.kind == super::INGEST_JOB;
    let result = match document {
        Some(id) if !is_ingest => reembed(state, id, &still).await,
        Some(id) => ingest::run(state, id, &still).await,
        None => Ok(Outcome::Rejected {
            code: "bad_job",
            message: "the job names no document".into(),
        }),
    };
    drop(beat);
    let store = &state.store;
    let outcome = match result {
        Ok(Outcome::Done) => store.complete_job(job.id, worker).await.map(|_| ()),
        Ok(Outcome::Rejected { code, message }) => {
            tracing::info!(job = %job.id, code, "document rejected: {message}");
            store
                .fail_job(job.id, worker, &format!("{code}: {message}"), None)
                .await
                .map(|_| ())
        }
        Err(e) => {
            let retry_at = Timestamp::now()
                .plus_millis(i64::try_from(ingest::backoff(job.attempts).as_millis()).unwrap_or(0));
            tracing::warn!(job = %job.id, attempt = job.attempts, error = %e, "ingestion attempt failed");
            // The detail (which may name hosts or paths) stays in the log; members see this.
            let shown = "a storage or database error; it is retried (details in the server log)";
            match store.fail_job(job.id, worker, shown, Some(retry_at)).await {
                Ok(Some(j)) if j.status == "failed" => {
                    if let Some(id) = document.filter(|_| is_ingest) {
                        let _ = store
                            .fail_document(
                                id,
                                "ingest_failed",
                                &format!(
                                    "Gave up after {} attempts because of storage or database errors (details in the server log).",
                                    j.attempts
                                ),
                            )
                            .await;
                    }
                    Ok(())
                }
                Ok(_) => {
                    if let Some(id) = document.filter(|_| is_ingest) {
                        let _ = store.set_document_stage(id, "queued", (0, 0)).await;
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(job = %job.id, error = %e, "could not record a job's end; the watchdog will");
    }
}

/// An `embed` job: give a ready document's chunks vectors from the current model.
async fn reembed(
    state: &AppState,
    document: Id,
    alive: &(dyn Fn() -> bool + Sync),
) -> Result<Outcome, ingest::Transient> {
    let Some(embedder) = &state.embedder else {
        return Ok(Outcome::Done);
    };
    crate::search::embed::embed_document(
        &state.store,
        embedder,
        document,
        alive,
        false,
        Some(&state.metrics),
    )
    .await
    .map_err(|e| ingest::Transient(e.to_string()))?;
    Ok(Outcome::Done)
}

async fn watchdog(state: AppState) {
    let mut every = tokio::time::interval(WATCHDOG_EVERY);
    loop {
        every.tick().await;
        sweep_once(&state).await;
    }
}

/// Re-queue jobs whose lease ran out; fail the documents of those out of attempts.
pub async fn sweep_once(state: &AppState) {
    match state.store.sweep_expired_jobs().await {
        Ok(swept) => {
            if swept.requeued > 0 {
                tracing::warn!(
                    jobs = swept.requeued,
                    "re-queued jobs whose worker stopped heartbeating"
                );
                state.jobs_ready.notify_waiters();
            }
            for job in swept.failed {
                if let Some(id) = job.subject.as_deref().and_then(|s| s.parse::<Id>().ok()) {
                    let _ = state
                        .store
                        .fail_document(
                            id,
                            "timed_out",
                            "Ingestion stopped responding too many times.",
                        )
                        .await;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "the job watchdog could not run"),
    }
}

/// How old a budget reservation must be to count as abandoned: longer than any answer streams.
const STALE_RESERVATION: Duration = Duration::from_secs(6 * 3600);

/// The job kind of a maintenance round.
pub const MAINTENANCE_JOB: &str = "maintenance.run";

/// Queue maintenance every `maintenance.every_minutes` and backups on `backup.schedule`. Each
/// slot's job is named by the slot (its subject), so several replicas queue it once, and a
/// process that starts within an hour after a missed backup slot still queues it.
pub fn spawn_scheduler(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        // The newest backup there is, so a restart does not reset its age to "none".
        if let Ok(destination) = crate::backup::Destination::from_config(&state.config) {
            if let Ok(backups) = destination.list().await {
                let newest = backups
                    .iter()
                    .filter(|b| b.problem.is_none())
                    .map(|b| b.created().timestamp())
                    .max();
                if let Some(newest) = newest {
                    state.metrics.backup_seen(newest);
                }
            }
        }
        let mut tick = tokio::time::interval(SCHEDULER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Queueing takes the write lock: only when a slot begins (or at start).
        let mut queued = None;
        loop {
            tick.tick().await;
            let now = chrono::Utc::now();
            let slots = due_slots(&state.config, now);
            if queued != Some(slots) {
                let fresh_slot = schedule_due(&state, now).await;
                if queued.is_none() && !fresh_slot {
                    // This slot's round already ran (or is queued) before this start; run one
                    // more now, so changed retention settings apply from the start.
                    queue_start_maintenance(&state).await;
                }
                queued = Some(slots);
            }
        }
    })
}

const SCHEDULER_TICK: Duration = Duration::from_secs(30);
/// How late a missed backup slot may still be run.
const BACKUP_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The maintenance slot holding `now` and, within its grace, the latest backup slot (Unix
/// seconds of their starts).
fn due_slots(
    config: &crate::config::Config,
    now: chrono::DateTime<chrono::Utc>,
) -> (i64, Option<i64>) {
    let every = config.retention.maintenance_every.as_secs().max(60) as i64;
    let slot = now.timestamp() - now.timestamp().rem_euclid(every);
    let backup = config
        .backup
        .schedule
        .as_ref()
        .and_then(|cron| cron.find_previous_occurrence(&now, true).ok())
        .filter(|due| now - *due <= BACKUP_GRACE)
        .map(|due| due.timestamp());
    (slot, backup)
}

/// A maintenance round for this start, outside the slots.
async fn queue_start_maintenance(state: &AppState) {
    let job = NewJob {
        kind: MAINTENANCE_JOB.into(),
        subject: Some(format!("start:{}", Id::new())),
        payload: serde_json::json!({}),
        max_attempts: 1,
        timeout_secs: 600,
    };
    match state.store.enqueue_job(&job).await {
        Ok(_) => state.jobs_ready.notify_waiters(),
        Err(e) => tracing::warn!(error = %e, "could not queue maintenance at start"),
    }
}

/// Queue the jobs whose slot has come at `now` (unless queued already); whether this call
/// queued the slot's maintenance.
pub async fn schedule_due(state: &AppState, now: chrono::DateTime<chrono::Utc>) -> bool {
    let (slot, backup_slot) = due_slots(&state.config, now);
    let maintenance = NewJob {
        kind: MAINTENANCE_JOB.into(),
        subject: Some(format!("slot:{slot}")),
        payload: serde_json::json!({}),
        max_attempts: 1,
        timeout_secs: 600,
    };
    let mut queued = false;
    match state.store.enqueue_job_once(&maintenance).await {
        Ok(Some(_)) => queued = true,
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not queue maintenance"),
    }
    let maintenance_queued = queued;
    if let Some(due) = backup_slot {
        let mut job = crate::backup::routes::backup_job("scheduled");
        job.subject = Some(format!("slot:{due}"));
        match state.store.enqueue_job_once(&job).await {
            Ok(Some(_)) => queued = true,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not queue a scheduled backup"),
        }
    }
    if queued {
        state.jobs_ready.notify_waiters();
    }
    maintenance_queued
}

/// Maintenance and backups: run, then complete or fail the job.
async fn run_system_job(state: &AppState, worker: &str, job: JobRow) {
    let beat = heartbeat(state, worker, &job, Arc::new(AtomicBool::new(true)));
    let result: Result<(), String> = if job.kind == MAINTENANCE_JOB {
        maintain_once(state).await;
        Ok(())
    } else {
        let trigger = job
            .payload
            .0
            .get("trigger")
            .and_then(|t| t.as_str())
            .unwrap_or("scheduled")
            .to_owned();
        let ctx = crate::backup::Context {
            config: &state.config,
            db: state.store.db(),
            blobs: &state.blobs,
            data_key: &state.keys.data_key,
        };
        match crate::backup::create(&ctx, &trigger).await {
            Ok(created) => {
                state.metrics.backup_succeeded(&created);
                if let Err(e) = crate::backup::rotate(&state.config).await {
                    tracing::warn!(error = %e, "could not rotate backups");
                }
                Ok(())
            }
            Err(e) => {
                state.metrics.backup_failed();
                tracing::error!(error = %e, "backup failed; older backups are untouched");
                Err(e.to_string())
            }
        }
    };
    drop(beat);
    let done = match result {
        Ok(()) => state.store.complete_job(job.id, worker).await.map(|_| ()),
        Err(message) => {
            let retry = Timestamp::now().plus_millis(60_000);
            state
                .store
                .fail_job(job.id, worker, &message, Some(retry))
                .await
                .map(|_| ())
        }
    };
    if let Err(e) = done {
        tracing::warn!(job = %job.id, error = %e, "could not record a job's end");
    }
}

/// One round of maintenance: purge deleted documents, orphan blobs, upload leftovers, old
/// jobs, expired credentials, data past its retention; then SQLite's `PRAGMA optimize`.
pub async fn maintain_once(state: &AppState) {
    let now = Timestamp::now();
    let before = |keep: Duration| now.plus_millis(-i64::try_from(keep.as_millis()).unwrap_or(0));
    match state.store.prune_expired_credentials(now).await {
        Ok(p) if p != Default::default() => tracing::info!(
            sessions = p.sessions,
            invites = p.invites,
            password_resets = p.password_resets,
            "removed ended sessions and links"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not prune ended sessions"),
    }
    if let Some(keep) = state.config.audit_retention {
        match state.store.prune_audit(before(keep)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned audit entries past their retention"),
            Err(e) => tracing::warn!(error = %e, "could not prune the audit log"),
        }
    }
    if let Some(keep) = state.config.retention.conversations {
        match state.store.prune_conversations(before(keep)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "deleted conversations past their retention"),
            Err(e) => tracing::warn!(error = %e, "could not prune conversations"),
        }
    }
    if let Some(keep) = state.config.retention.usage {
        match state.store.prune_usage(before(keep)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "deleted usage records past their retention"),
            Err(e) => tracing::warn!(error = %e, "could not prune usage records"),
        }
    }
    maintain_documents(state).await;
    if let Err(e) = state.store.optimize().await {
        tracing::warn!(error = %e, "could not optimize the database");
    }
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || clean_temp_dir(&s)).await;
}

/// Staging left in `<data_dir>/tmp` by a backup or restore that was killed.
fn clean_temp_dir(state: &AppState) {
    let dir = state.config.data_dir.join("tmp");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(6 * 3600))
            .unwrap_or(false);
        if old {
            let path = e.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            tracing::info!(path = %path.display(), "removed leftover temporary files");
        }
    }
}

/// Documents: purge, orphan blobs, upload leftovers, old jobs, stale reservations.
async fn maintain_documents(state: &AppState) {
    let cutoff = match state.config.ingest.deleted_retention {
        Some(keep) => Timestamp::now().plus_millis(-i64::try_from(keep.as_millis()).unwrap_or(0)),
        None => Timestamp::now(),
    };
    match state.store.documents_due_for_purge(cutoff, 500).await {
        Ok(due) => {
            for doc in due {
                purge_one(state, &doc).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list documents to purge"),
    }
    if let Err(e) = sweep_orphans(state, ORPHAN_AGE).await {
        tracing::warn!(error = %e, "could not sweep orphan blobs");
    }
    // A directory walk: off the async runtime.
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || clean_upload_leftovers(&s, ORPHAN_AGE)).await;
    // Budget reservations of answers whose process died mid-stream.
    let stale =
        Timestamp::now().plus_millis(-i64::try_from(STALE_RESERVATION.as_millis()).unwrap_or(0));
    match state.store.release_stale_reservations(stale).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            reservations = n,
            "released budget reservations of calls that never settled"
        ),
        Err(e) => tracing::warn!(error = %e, "could not release stale budget reservations"),
    }
    let history =
        Timestamp::now().plus_millis(-i64::try_from(JOB_HISTORY.as_millis()).unwrap_or(0));
    if let Err(e) = state.store.prune_jobs(history).await {
        tracing::warn!(error = %e, "could not prune finished jobs");
    }
    // The in-memory search index's change feed: a process that slept through a day rebuilds.
    let feed = Timestamp::now().plus_millis(-SEARCH_CHANGES_KEPT_MS);
    if let Err(e) = state.store.prune_search_changes(feed).await {
        tracing::warn!(error = %e, "could not prune the search change feed");
    }
}

/// How long search index changes are kept for processes catching up.
const SEARCH_CHANGES_KEPT_MS: i64 = 24 * 3600 * 1000;

/// Remove a deleted document for good: its row (and chunks) first — only if it is still
/// deleted, so an admin's restore at the same moment wins — then its blob. A crash in between
/// leaves a blob no row names, which the orphan sweep removes.
pub async fn purge_one(state: &AppState, doc: &DocumentRow) {
    match state.store.purge_document(doc.id).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, document = %doc.id, "could not purge a document");
            return;
        }
    }
    match state.blobs.delete(&doc.blob_key).await {
        Ok(()) => tracing::debug!(document = %doc.id, "purged a deleted document"),
        Err(e) => tracing::warn!(error = %e, document = %doc.id,
            "could not remove a purged document's blob; the orphan sweep will"),
    }
}

/// Blobs under `documents/` that no document row names, older than `min_age` (an upload
/// interrupted between storing its blob and its row).
pub async fn sweep_orphans(state: &AppState, min_age: Duration) -> anyhow::Result<usize> {
    let now = chrono::Utc::now();
    let mut removed = 0;
    for (key, modified) in state.blobs.list("documents").await? {
        let age = now
            .signed_duration_since(modified)
            .to_std()
            .unwrap_or_default();
        if age < min_age {
            continue;
        }
        let Some(id) = key
            .strip_prefix("documents/")
            .and_then(|s| s.parse::<Id>().ok())
        else {
            continue;
        };
        if state.store.document(id).await?.is_none() {
            state.blobs.delete(&key).await?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(blobs = removed, "removed blobs no document refers to");
    }
    Ok(removed)
}

/// Partial files a crashed upload left in the local blob directory (`name#n` staging files),
/// older than `min_age`.
pub fn clean_upload_leftovers(state: &AppState, min_age: Duration) {
    let Some(dir) = state.blobs.local_dir() else {
        return;
    };
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let staging = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains('#'));
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if staging && old {
                if let Err(err) = std::fs::remove_file(&path) {
                    tracing::warn!(error = %err, path = %path.display(), "could not remove an upload leftover");
                }
            }
        }
    }
}
