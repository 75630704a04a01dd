//! Health: each dependency checked with a timeout, results cached briefly so a busy load
//! balancer cannot turn health checks into database load, and a report shaped
//! `{"status","version","uptime_secs","checks":{name:{"ok","latency_ms"}}}`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::app::AppState;

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub ok: bool,
    pub latency_ms: f64,
    /// Why it failed, in a word (`timeout`, `error`): details go to the log, not to clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

pub type Checks = BTreeMap<&'static str, CheckResult>;

/// The last results and when they were taken.
#[derive(Default)]
pub struct HealthCache {
    last: RwLock<Option<(Instant, Arc<Checks>)>>,
    refresh: tokio::sync::Mutex<()>,
}

async fn timed<F, E>(timeout: Duration, name: &str, check: F) -> CheckResult
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let (ok, error) = match tokio::time::timeout(timeout, check).await {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => {
            tracing::warn!(check = name, error = %e, "health check failed");
            (false, Some("error"))
        }
        Err(_) => {
            tracing::warn!(
                check = name,
                timeout_ms = timeout.as_millis() as u64,
                "health check timed out"
            );
            (false, Some("timeout"))
        }
    };
    CheckResult {
        ok,
        latency_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        error,
    }
}

async fn run_checks(state: &AppState) -> Checks {
    let timeout = state.config.health.check_timeout;
    let mut checks = Checks::new();
    checks.insert(
        "database",
        timed(timeout, "database", state.store.db().ping()).await,
    );
    if let Some(redis) = &state.redis {
        let mut conn = redis.clone();
        let ping = async move {
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
        };
        checks.insert("redis", timed(timeout, "redis", ping).await);
    }
    checks.insert(
        "storage",
        timed(timeout, "storage", state.blobs.ping()).await,
    );
    checks
}

/// Current check results, re-run at most once per `health.check_cache_ms` however many
/// callers ask at once.
pub async fn checks(state: &AppState) -> Arc<Checks> {
    let max_age = state.config.health.check_cache;
    let fresh = |cache: &HealthCache| -> Option<Arc<Checks>> {
        let guard = cache.last.read().ok()?;
        let (at, checks) = guard.as_ref()?;
        (at.elapsed() < max_age).then(|| checks.clone())
    };
    if let Some(c) = fresh(&state.health) {
        return c;
    }
    let _refreshing = state.health.refresh.lock().await;
    if let Some(c) = fresh(&state.health) {
        return c;
    }
    let checks = Arc::new(run_checks(state).await);
    if let Ok(mut guard) = state.health.last.write() {
        *guard = Some((Instant::now(), checks.clone()));
    }
    checks
}

#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_secs: u64,
    pub checks: Arc<Checks>,
}

pub async fn report(state: &AppState) -> HealthReport {
    let checks = checks(state).await;
    let all_ok = checks.values().all(|c| c.ok);
    HealthReport {
        status: if all_ok { "ok" } else { "unavailable" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        checks,
    }
}
