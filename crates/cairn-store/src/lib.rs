//! Cairn's data layer: one [`Store`] over SQLite (the default: a file in the data directory) or
//! PostgreSQL (for several replicas), with a forward-only migration series for each.
//!
//! Every query is written once in SQL both engines accept and type-checked against both
//! drivers through [`on_pool!`]; the few parts that differ by dialect (full-text, vectors,
//! locking) choose their SQL by [`Backend`]. Why one crate and not one per backend:
//! `docs/decisions/0001-one-store-two-backends.md`.
//!
//! - [`db`] — opening the pool, retries, ping.
//! - [`migrate`] — the embedded migrations and the schema-version checks.
//! - [`schema`] — a neutral description of the live schema (for the drift test).
//! - [`types`] — [`Id`] and [`Timestamp`], mapped to each backend's natural type.
//! - [`settings`] — system settings with optimistic versions.
//! - [`accounts`] — users, sessions and refresh-token rotation, preferences.
//! - [`api_keys`] — scoped API keys, stored hashed.
//! - [`audit`] — the append-only audit log.
//! - [`collections`], [`documents`] — collections and their members, documents and chunks
//!   (membership checked inside every statement that acts for a user).
//! - [`jobs`] — the durable job queue.
//! - [`search`] — keyword and vector candidates, access-filtered inside each statement.
//! - [`chat`] — model providers and models, prices, conversations and messages (ownership
//!   checked inside every statement).
//! - [`usage`] — budgets (reserve, then settle) and usage per model call.
//! - [`backup`] — consistent snapshots out (VACUUM INTO, COPY) and back in.
//! - [`standing`] — the short-lived cache of callers' standing, voided on every change.

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod backup;
pub mod chat;
pub mod collections;
pub mod db;
pub mod documents;
pub mod error;
pub mod invites;
pub mod jobs;
pub mod maintenance;
pub mod memindex;
pub mod migrate;
pub mod schema;
pub mod search;
pub mod settings;
pub mod standing;
pub mod testing;
pub mod totp;
pub mod types;
mod url;
pub mod usage;

pub use db::{Backend, ConnectError, ConnectOptions, Db, Pool, PoolStats};
pub use error::{StoreError, StoreResult};
/// JSON columns (`jsonb` on PostgreSQL, `TEXT` on SQLite).
pub use sqlx::types::Json;
pub use types::{Id, Timestamp};
pub use url::redact_url;

/// The data layer the server talks to. Cheap to clone; all clones share one pool.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    standing: std::sync::Arc<standing::StandingCache>,
    /// Vector dimensions whose index this store knows exists.
    vector_indexes: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<usize>>>,
    /// The in-process search index (SQLite; see [`memindex`]).
    memindex: std::sync::Arc<memindex::MemIndex>,
    /// SQLite: the FTS5 keyword table is not maintained (the in-memory index is the keyword
    /// index; see [`Store::set_keyword_tables`]).
    fts_off: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// A store without a standing cache (every authentication reads the database).
    pub fn new(db: Db) -> Self {
        Self::with_standing_cache(db, standing::StandingCache::disabled())
    }

    pub fn with_standing_cache(db: Db, cache: standing::StandingCache) -> Self {
        Self {
            db,
            standing: std::sync::Arc::new(cache),
            vector_indexes: Default::default(),
            memindex: Default::default(),
            fts_off: Default::default(),
        }
    }

    pub fn standing(&self) -> &standing::StandingCache {
        &self.standing
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }
}
