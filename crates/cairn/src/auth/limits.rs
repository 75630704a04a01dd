//! Rate limits as part of the access layer: each route's [`Limit`] class picks a quota and a key
//! (the signed-in user, else the client address), the answer carries `RateLimit-*` headers, and a
//! refusal is 429 `rate_limited` with `Retry-After`. Counts live in Redis when it is configured
//! (every replica shares them) and in a bounded in-process table otherwise — or whenever Redis
//! stops answering, so a Redis outage degrades to per-replica limits rather than none.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use cairn_ratelimit::{Decision, MemoryLimiter, Quota, RedisLimiter};
use serde_json::json;

use crate::config::RateLimitConfig;
use crate::http::error::ApiError;

/// Which quota a route counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `rate_limit.general_per_minute` per user, or per address when anonymous.
    General,
    /// `rate_limit.auth_per_minute` per address (credential guessing).
    Auth,
    /// Not limited (health checks, metrics scrapes).
    Exempt,
}

pub struct Limiter {
    config: RateLimitConfig,
    memory: MemoryLimiter,
    redis: Option<RedisLimiter>,
}

impl Limiter {
    pub fn new(
        config: &RateLimitConfig,
        redis: Option<redis::aio::ConnectionManager>,
        redis_prefix: &str,
    ) -> Self {
        Self {
            config: config.clone(),
            memory: MemoryLimiter::new(config.max_tracked_keys),
            redis: redis.map(|c| RedisLimiter::new(c, &format!("{redis_prefix}rl:"))),
        }
    }

    /// Count one request for `key` against `quota`.
    pub async fn check(&self, key: &str, per_minute: u32) -> Option<Decision> {
        if !self.config.enabled {
            return None;
        }
        let quota = Quota::per_minute(per_minute);
        if let Some(redis) = &self.redis {
            match redis.check(key.as_bytes(), &quota).await {
                Ok(d) => return Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiting falls back to this process: Redis did not answer")
                }
            }
        }
        Some(self.memory.check(key.as_bytes(), &quota))
    }

    pub fn quota(&self, limit: Limit) -> Option<u32> {
        match limit {
            Limit::General => Some(self.config.general_per_minute),
            Limit::Auth => Some(self.config.auth_per_minute),
            Limit::Exempt => None,
        }
    }

    pub fn account_per_minute(&self) -> u32 {
        self.config.account_per_minute
    }
}

fn secs_ceil(d: std::time::Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// The `RateLimit-*` headers for a decision.
pub fn headers(d: &Decision, into: &mut HeaderMap) {
    into.insert("ratelimit-limit", HeaderValue::from(d.limit));
    into.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    into.insert(
        "ratelimit-reset",
        HeaderValue::from(secs_ceil(d.reset_after)),
    );
}

/// The 429 for a refused decision.
pub fn refused(d: &Decision) -> ApiError {
    let retry = secs_ceil(d.retry_after).max(1);
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many requests; slow down and retry after the indicated time.",
    )
    .with_details(json!({ "retry_after_secs": retry, "limit": d.limit }))
    .with_header(header::RETRY_AFTER, HeaderValue::from(retry));
    let mut h = HeaderMap::new();
    headers(d, &mut h);
    for (name, value) in h {
        if let Some(name) = name {
            e = e.with_header(name, value);
        }
    }
    e
}
