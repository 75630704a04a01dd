//! The standing cache: what an authenticated request needs to know about its caller (the user
//! row and the session or API key it presented), kept in memory for a few seconds so the request
//! path does not read the database each time.
//!
//! The database stays the source of truth. Every [`Store`](crate::Store) method that changes a
//! user, a session or an API key calls [`StandingCache::forget`] for that user after it commits,
//! which voids the user's cached entries at once and announces the user on
//! [`StandingCache::subscribe`], so the server can tell its other replicas (through Redis or
//! PostgreSQL `NOTIFY`); they call [`StandingCache::forget_remote`]. The time-to-live bounds how
//! long a change made outside any server (a direct SQL edit, the CLI on SQLite) can go unseen.
//!
//! Reads race writes safely: a reader notes the clock before it reads the database, and its
//! entry is only believed if no change to that user was announced after that tick.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::accounts::{SessionRow, UserRow};
use crate::api_keys::ApiKeyRow;
use crate::types::Id;

const SHARDS: usize = 16;

/// What an entry is looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StandingKey {
    Session(Id),
    ApiKey(String),
}

/// A cached answer.
#[derive(Debug, Clone)]
pub enum Standing {
    Session(Arc<(UserRow, SessionRow)>),
    ApiKey(Arc<(ApiKeyRow, UserRow)>),
}

impl Standing {
    fn user_id(&self) -> Id {
        match self {
            Standing::Session(s) => s.0.id,
            Standing::ApiKey(k) => k.1.id,
        }
    }
}

#[derive(Debug)]
struct Entry {
    value: Standing,
    /// The clock when the database read that produced it began.
    read_at: u64,
    expires: Instant,
}

/// A tick taken before reading the database; hand it back to [`StandingCache::put`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

#[derive(Debug)]
pub struct StandingCache {
    entries: Box<[Mutex<HashMap<StandingKey, Entry>>]>,
    /// Per user, the tick of the last change announced for them.
    changed: Box<[Mutex<HashMap<Id, u64>>]>,
    clock: AtomicU64,
    /// Entries read before this tick are void (set by [`forget_all`](Self::forget_all)).
    floor: AtomicU64,
    /// False while changes from other replicas might be missed (the feed is down).
    trusted: AtomicBool,
    ttl: Duration,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
    changes: broadcast::Sender<Id>,
}

impl StandingCache {
    /// A cache keeping entries for `ttl` (zero turns it off), at most about `capacity`.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self {
            entries: (0..SHARDS).map(|_| Mutex::default()).collect(),
            changed: (0..SHARDS).map(|_| Mutex::default()).collect(),
            clock: AtomicU64::new(1),
            floor: AtomicU64::new(0),
            trusted: AtomicBool::new(true),
            ttl,
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: Default::default(),
            changes,
        }
    }

    /// A cache that keeps nothing.
    pub fn disabled() -> Self {
        Self::new(Duration::ZERO, 0)
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn shard<K: Hash>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Note the clock before reading the database for an entry.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.clock.load(Ordering::SeqCst))
    }

    pub fn get(&self, key: &StandingKey) -> Option<Standing> {
        if !self.enabled() || !self.trusted.load(Ordering::Acquire) {
            return None;
        }
        let value = {
            let shard = self.entries[self.shard(key)].lock().ok()?;
            let entry = shard.get(key)?;
            if entry.expires <= Instant::now() || entry.read_at < self.floor.load(Ordering::SeqCst)
            {
                return None;
            }
            (entry.value.clone(), entry.read_at)
        };
        let (value, read_at) = value;
        if self.changed_since(value.user_id(), read_at) {
            return None;
        }
        Some(value)
    }

    fn changed_since(&self, user: Id, tick: u64) -> bool {
        self.changed[self.shard(&user)]
            .lock()
            .map(|m| m.get(&user).is_some_and(|&t| t > tick))
            .unwrap_or(true)
    }

    /// Keep `value`, read from the database after `ticket` was taken.
    pub fn put(&self, key: StandingKey, value: Standing, ticket: Ticket) {
        if !self.enabled() || !self.trusted.load(Ordering::Acquire) {
            return;
        }
        if ticket.0 < self.floor.load(Ordering::SeqCst)
            || self.changed_since(value.user_id(), ticket.0)
        {
            return;
        }
        let now = Instant::now();
        let Ok(mut shard) = self.entries[self.shard(&key)].lock() else {
            return;
        };
        if shard.len() >= self.per_shard {
            shard.retain(|_, e| e.expires > now);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(
            key,
            Entry {
                value,
                read_at: ticket.0,
                expires: now + self.ttl,
            },
        );
    }

    fn mark(&self, user: Id) {
        let tick = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut m) = self.changed[self.shard(&user)].lock() {
            // The marks only matter for entries that can still be alive; keep the map small.
            if m.len() > self.per_shard * 4 {
                m.clear();
                self.floor.store(tick, Ordering::SeqCst);
            }
            m.insert(user, tick);
        }
    }

    /// A change to `user` was committed here: void their entries and tell subscribers.
    pub fn forget(&self, user: Id) {
        self.mark(user);
        let _ = self.changes.send(user);
    }

    /// Another replica changed `user`.
    pub fn forget_remote(&self, user: Id) {
        self.mark(user);
    }

    /// Void every entry (when announcements from other replicas may have been missed).
    pub fn forget_all(&self) {
        let tick = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        self.floor.store(tick, Ordering::SeqCst);
    }

    /// Whether entries may be believed. Set false while the feed of changes from other replicas
    /// is down; setting it true again voids what was cached before.
    pub fn set_trusted(&self, trusted: bool) {
        if trusted {
            self.forget_all();
        }
        self.trusted.store(trusted, Ordering::Release);
    }

    /// Users changed on this replica, as they are committed.
    pub fn subscribe(&self) -> broadcast::Receiver<Id> {
        self.changes.subscribe()
    }

    /// Entries held (for metrics and tests).
    pub fn len(&self) -> usize {
        self.entries
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The PostgreSQL channel replicas announce changes on.
const PG_CHANNEL: &str = "cairn_standing";

/// A listening PostgreSQL connection for announcements from other replicas.
pub struct StandingListener(sqlx::postgres::PgListener);

impl StandingListener {
    /// The next announcement's payload; `None` when the connection dropped (announcements in
    /// between are lost; listening again reconnects).
    pub async fn recv(&mut self) -> crate::StoreResult<Option<String>> {
        Ok(self.0.try_recv().await?.map(|n| n.payload().to_owned()))
    }
}

impl crate::Store {
    /// Listen for announcements on PostgreSQL; `None` on SQLite, which has one server.
    pub async fn listen_standing(&self) -> crate::StoreResult<Option<StandingListener>> {
        let crate::Pool::Postgres(pool) = self.db.pool() else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(PG_CHANNEL).await?;
        Ok(Some(StandingListener(listener)))
    }

    /// Announce `payload` to every PostgreSQL listener (nothing on SQLite).
    pub async fn announce_standing(&self, payload: &str) -> crate::StoreResult<()> {
        if let crate::Pool::Postgres(pool) = self.db.pool() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(PG_CHANNEL)
                .bind(payload)
                .execute(pool)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::Timestamp;

    fn session_of(user: Id) -> (StandingKey, Standing) {
        let now = Timestamp::now();
        let user_row = UserRow {
            id: user,
            email: "a@example.com".into(),
            display_name: "A".into(),
            password_hash: String::new(),
            role: "member".into(),
            state: "active".into(),
            totp_secret: None,
            totp_enabled: false,
            failed_sign_ins: 0,
            locked_until: None,
            tokens_valid_after: now,
            last_sign_in_at: None,
            created_at: now,
            updated_at: now,
        };
        let session = SessionRow {
            id: Id::new(),
            user_id: user,
            created_at: now,
            last_used_at: now,
            expires_at: now,
            revoked_at: None,
            revoked_reason: None,
            user_agent: None,
            ip: None,
        };
        (
            StandingKey::Session(session.id),
            Standing::Session(Arc::new((user_row, session))),
        )
    }

    fn cache() -> StandingCache {
        StandingCache::new(Duration::from_secs(60), 1000)
    }

    #[test]
    fn remembers_until_the_user_changes() {
        let c = cache();
        let user = Id::new();
        let (key, value) = session_of(user);
        c.put(key.clone(), value, c.ticket());
        assert!(c.get(&key).is_some());
        let mut announced = c.subscribe();
        c.forget(user);
        assert!(c.get(&key).is_none());
        assert_eq!(announced.try_recv().unwrap(), user);
        // Other users' entries survive.
        let (other_key, other) = session_of(Id::new());
        c.put(other_key.clone(), other, c.ticket());
        c.forget(user);
        assert!(c.get(&other_key).is_some());
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let c = cache();
        let user = Id::new();
        let (key, value) = session_of(user);
        let ticket = c.ticket(); // the read begins
        c.forget_remote(user); // a change commits meanwhile
        c.put(key.clone(), value.clone(), ticket); // the (stale) read ends
        assert!(c.get(&key).is_none());
        c.put(key.clone(), value, c.ticket());
        assert!(c.get(&key).is_some());
    }

    #[test]
    fn distrust_and_forget_all_void_everything() {
        let c = cache();
        let (key, value) = session_of(Id::new());
        c.put(key.clone(), value.clone(), c.ticket());
        c.set_trusted(false);
        assert!(c.get(&key).is_none());
        c.put(key.clone(), value.clone(), c.ticket());
        c.set_trusted(true);
        assert!(
            c.get(&key).is_none(),
            "entries from before distrust are void"
        );
        c.put(key.clone(), value, c.ticket());
        assert!(c.get(&key).is_some());
        c.forget_all();
        assert!(c.get(&key).is_none());
    }

    #[test]
    fn expires_and_stays_bounded() {
        let c = StandingCache::new(Duration::from_millis(1), 32);
        let (key, value) = session_of(Id::new());
        c.put(key.clone(), value, c.ticket());
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.get(&key).is_none());
        let c = StandingCache::new(Duration::from_secs(60), 32);
        for _ in 0..1000 {
            let (key, value) = session_of(Id::new());
            c.put(key, value, c.ticket());
        }
        assert!(c.len() <= 32, "{} entries", c.len());
        assert!(StandingCache::disabled().get(&key).is_none());
    }
}
