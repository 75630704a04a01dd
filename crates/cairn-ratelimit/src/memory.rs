//! The in-process store: 64 shards of `key hash → TAT`, bounded in total, sweeping keys whose
//! allowance has fully recovered (they carry no information) when a shard is full.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{gcra, Decision, Quota};

const SHARDS: usize = 64;

/// Keys are already hashes: store them as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, u64, BuildHasherDefault<Identity>>;

pub struct MemoryLimiter {
    shards: Vec<Mutex<Shard>>,
    max_per_shard: usize,
    /// Random per process, so keys cannot be chosen to collide.
    seed: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MemoryLimiter {
    /// A limiter tracking at most `max_keys` keys at once.
    pub fn new(max_keys: usize) -> Self {
        let max_per_shard = max_keys.div_ceil(SHARDS).max(1);
        let seed = {
            let mut h = DefaultHasher::new();
            now_ms().hash(&mut h);
            std::process::id().hash(&mut h);
            (&h as *const DefaultHasher as usize).hash(&mut h);
            h.finish()
        };
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            max_per_shard,
            seed,
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        let mut h = DefaultHasher::new();
        self.seed.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    /// Count one request for `key` under `quota`.
    pub fn check(&self, key: &[u8], quota: &Quota) -> Decision {
        self.check_at(key, quota, now_ms())
    }

    pub(crate) fn check_at(&self, key: &[u8], quota: &Quota, now: u64) -> Decision {
        let h = self.hash(key);
        let shard = &self.shards[(h as usize) % SHARDS];
        let mut map = match shard.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let tat = map.get(&h).copied().unwrap_or(0);
        let (decision, new_tat) = gcra(quota, tat, now);
        if let Some(new_tat) = new_tat {
            if !map.contains_key(&h) && map.len() >= self.max_per_shard {
                // Keys whose TAT has passed are back to a full allowance: forget them.
                map.retain(|_, t| *t > now);
                if map.len() >= self.max_per_shard {
                    // Still full of active keys: drop the one that frees up soonest.
                    if let Some(k) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                        map.remove(&k);
                    }
                }
            }
            map.insert(h, new_tat);
        }
        decision
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_limited_independently() {
        let l = MemoryLimiter::new(1000);
        let q = Quota::per_minute(2);
        assert!(l.check_at(b"a", &q, 1_000).allowed);
        assert!(l.check_at(b"a", &q, 1_000).allowed);
        assert!(!l.check_at(b"a", &q, 1_000).allowed);
        assert!(l.check_at(b"b", &q, 1_000).allowed);
    }

    #[test]
    fn the_number_of_tracked_keys_stays_bounded() {
        let l = MemoryLimiter::new(640);
        let q = Quota::per_minute(5);
        for i in 0..10_000u32 {
            l.check_at(&i.to_le_bytes(), &q, 1_000_000);
        }
        assert!(l.len() <= 640, "{}", l.len());
        // Once their allowance recovers, keys are swept when room is needed.
        for i in 10_000..10_640u32 {
            l.check_at(&i.to_le_bytes(), &q, 10_000_000);
        }
        assert!(l.len() <= 640);
    }
}
