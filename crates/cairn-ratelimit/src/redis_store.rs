//! The shared store: the same GCRA arithmetic in one Lua script, run atomically by Redis, with
//! each key expiring once its allowance has recovered — so replicas share counts and Redis
//! holds nothing for idle keys.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use crate::memory::now_ms;
use crate::{Decision, LimitError, Quota};

/// KEYS[1] = key; ARGV = now_ms, interval_ms, burst_ms.
/// Returns {allowed (0/1), remaining, reset_after_ms, retry_after_ms}.
const GCRA_LUA: &str = r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat <= now + burst then
  redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
  return {1, math.floor((burst - (new_tat - now)) / interval), new_tat - now, 0}
end
return {0, math.floor((burst - (tat - now)) / interval), tat - now, new_tat - now - burst}
"#;

#[derive(Clone)]
pub struct RedisLimiter {
    conn: ConnectionManager,
    script: Script,
    prefix: String,
}

impl RedisLimiter {
    /// Keys are stored under `prefix` (e.g. `cairn:rl:`).
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            script: Script::new(GCRA_LUA),
            prefix: prefix.to_owned(),
        }
    }

    pub async fn check(&self, key: &[u8], quota: &Quota) -> Result<Decision, LimitError> {
        let mut conn = self.conn.clone();
        let mut full_key = self.prefix.as_bytes().to_vec();
        full_key.extend_from_slice(key);
        let (allowed, remaining, reset_ms, retry_ms): (i64, i64, i64, i64) = self
            .script
            .key(full_key)
            .arg(now_ms())
            .arg(quota.interval_ms())
            .arg(quota.burst_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: quota.limit,
            remaining: remaining.clamp(0, i64::from(quota.limit)) as u32,
            reset_after: Duration::from_millis(reset_ms.max(0) as u64),
            retry_after: Duration::from_millis(retry_ms.max(0) as u64),
        })
    }
}
