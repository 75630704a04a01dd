//! Keyed rate limiting with the generic cell rate algorithm (GCRA): each key keeps one number,
//! its *theoretical arrival time* (TAT). A request is allowed when `TAT - now` stays within the
//! burst allowance, and then pushes TAT forward by one emission interval. This is a token
//! bucket without a refill task, exact, and a single integer per key.
//!
//! Two stores: [`MemoryLimiter`] (sharded, bounded, idle keys evicted) and [`RedisLimiter`]
//! (the same arithmetic in one Lua script, so every replica shares the counts).

mod memory;
mod redis_store;

use std::time::Duration;

pub use memory::MemoryLimiter;
pub use redis_store::RedisLimiter;

/// `limit` requests per `period`, all of which may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period: Duration,
}

impl Quota {
    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit: limit.max(1),
            period: Duration::from_secs(60),
        }
    }

    /// Time between requests at the sustained rate, in milliseconds (at least 1).
    fn interval_ms(&self) -> u64 {
        (self.period.as_millis() as u64 / u64::from(self.limit.max(1))).max(1)
    }

    /// How far ahead of now a key's TAT may run and still admit a request.
    fn burst_ms(&self) -> u64 {
        self.interval_ms() * u64::from(self.limit.max(1))
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests that could still be made right now.
    pub remaining: u32,
    /// Until the key is back to its full allowance.
    pub reset_after: Duration,
    /// When refused: until the next request would be allowed.
    pub retry_after: Duration,
}

/// GCRA on one key: the decision and the new TAT (if the request was admitted).
fn gcra(quota: &Quota, tat_ms: u64, now_ms: u64) -> (Decision, Option<u64>) {
    let interval = quota.interval_ms();
    let burst = quota.burst_ms();
    let tat = tat_ms.max(now_ms);
    let new_tat = tat + interval;
    let allowed = new_tat <= now_ms + burst;
    let effective = if allowed { new_tat } else { tat };
    let used_ms = effective.saturating_sub(now_ms);
    let remaining = ((burst.saturating_sub(used_ms)) / interval) as u32;
    let retry_after = if allowed {
        0
    } else {
        new_tat.saturating_sub(now_ms + burst)
    };
    (
        Decision {
            allowed,
            limit: quota.limit,
            remaining: remaining.min(quota.limit),
            reset_after: Duration::from_millis(used_ms),
            retry_after: Duration::from_millis(retry_after),
        },
        allowed.then_some(new_tat),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("rate-limit store unavailable: {0}")]
    Redis(#[from] redis::RedisError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_limit_passes_then_requests_wait_one_interval() {
        let q = Quota::per_minute(3);
        let mut tat = 0;
        let now = 1_000_000;
        for expected_remaining in [2, 1, 0] {
            let (d, new) = gcra(&q, tat, now);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = new.unwrap();
        }
        let (d, new) = gcra(&q, tat, now);
        assert!(!d.allowed && new.is_none());
        assert_eq!(d.retry_after, Duration::from_secs(20));
        // One interval later, one more is allowed.
        let (d, _) = gcra(&q, tat, now + 20_000);
        assert!(d.allowed);
    }

    #[test]
    fn an_idle_key_recovers_its_whole_allowance() {
        let q = Quota::per_minute(10);
        let (d, _) = gcra(&q, 5_000, 1_000_000);
        assert_eq!(d.remaining, 9);
        assert_eq!(d.reset_after, Duration::from_millis(6_000));
    }
}
