//! Opening the database: which backend a URL names, the pool for it with the pragmas and limits
//! Cairn relies on, bounded retries while the server comes up, and a cheap liveness ping.
//!
//! Queries elsewhere in the crate are written once and run on either pool through
//! [`on_pool!`](crate::on_pool); see `docs/decisions/0001-one-store-two-backends.md`.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use thiserror::Error;

use crate::url::redact_url;

/// Which engine stores Cairn's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names, if Cairn supports it.
    pub fn from_url(url: &str) -> Option<Backend> {
        let scheme = url.split_once(':').map(|(s, _)| s)?;
        match scheme {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A pool on one of the two backends. Match on it with [`on_pool!`](crate::on_pool).
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run one expression against whichever pool `$db` holds, binding the pool to `$pool`.
///
/// The expression is compiled once per backend, so a query written with it is type-checked
/// against both drivers; it must use SQL that both accept (`$1` placeholders work on both).
#[macro_export]
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Pool::Sqlite($pool) => $body,
            $crate::Pool::Postgres($pool) => $body,
        }
    };
}

/// Begin a transaction that is going to write. On SQLite it is `BEGIN IMMEDIATE`: the write
/// lock is taken at the start, waiting up to the busy timeout for another writer, instead of a
/// deferred transaction that reads first and then fails at once with `SQLITE_BUSY` when it
/// tries to write after another connection committed (what concurrent uploads hit). Read-only
/// snapshots keep plain `begin()`.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send
    {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send
    {
        self.begin()
    }
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `sqlite://…` or `postgres://…`.
    pub url: String,
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// How long a query may wait for a free connection, and each connect attempt may take.
    pub acquire_timeout: Duration,
    /// Connection attempts before giving up (the first included).
    pub connect_attempts: u32,
    /// How long SQLite waits on a locked database before failing a statement.
    pub sqlite_busy_timeout: Duration,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            connect_attempts: 5,
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }

    /// Options for a SQLite file at `path`.
    pub fn sqlite_file(path: &Path) -> Self {
        Self::new(format!("sqlite://{}", path.display()))
    }
}

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error(
        "unsupported database URL {0}: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB"
    )]
    Unsupported(String),
    #[error("invalid database URL {url}: {reason}")]
    Invalid { url: String, reason: String },
    #[error(
        "could not connect to {url} after {attempts} attempt(s) over {secs:.1} s: {last_error}. \
         Check that the database is running and reachable, and that the URL (CAIRN_DATABASE_URL) is right"
    )]
    Unreachable {
        url: String,
        attempts: u32,
        secs: f64,
        last_error: String,
    },
}

/// Make the `sqlite-vec` extension (the `vec0` virtual table used for vector search) part of
/// every SQLite connection opened from now on, in this process. Idempotent.
#[allow(unsafe_code)]
pub(crate) fn register_sqlite_vec() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        type Init = unsafe extern "C" fn(
            *mut libsqlite3_sys::sqlite3,
            *mut *mut std::os::raw::c_char,
            *const libsqlite3_sys::sqlite3_api_routines,
        ) -> std::os::raw::c_int;
        // SAFETY: `sqlite3_config` is called before SQLite initialises (which
        // `sqlite3_auto_extension` does next); after that it only returns SQLITE_MISUSE and
        // changes nothing. Without memory statistics, each of SQLite's allocations skips a
        // global mutex (Cairn reads none of those statistics).
        unsafe {
            libsqlite3_sys::sqlite3_config(libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS, 0);
        }
        // SAFETY: `sqlite3_vec_init` is the extension's entry point, whose real signature is
        // `Init`; the crate declares it without arguments only to avoid a dependency on SQLite
        // types. SQLite calls it for each new connection, as for any auto extension.
        unsafe {
            let init: Init =
                std::mem::transmute::<*const (), Init>(sqlite_vec::sqlite3_vec_init as *const ());
            libsqlite3_sys::sqlite3_auto_extension(Some(init));
        }
    });
}

/// An open database: its backend and its pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    backend: Backend,
}

impl Db {
    /// Open the pool, retrying with exponential backoff (250 ms doubling, at most 5 s) while the
    /// database is unreachable, up to `connect_attempts` attempts.
    pub async fn connect(opts: &ConnectOptions) -> Result<Db, ConnectError> {
        let redacted = redact_url(&opts.url);
        let backend = Backend::from_url(&opts.url)
            .ok_or_else(|| ConnectError::Unsupported(redacted.clone()))?;
        let invalid = |e: sqlx::Error| ConnectError::Invalid {
            url: redacted.clone(),
            reason: e.to_string(),
        };
        let started = Instant::now();
        let attempts = opts.connect_attempts.max(1);
        let mut backoff = Duration::from_millis(250);
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            let result = match backend {
                Backend::Sqlite => {
                    register_sqlite_vec();
                    let connect = SqliteConnectOptions::from_str(&opts.url)
                        .map_err(invalid)?
                        .create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .foreign_keys(true)
                        .busy_timeout(opts.sqlite_busy_timeout)
                        .pragma("temp_store", "memory")
                        // Up to 16 MiB of page cache per connection, used only as pages are
                        // touched: it helps building the keyword index while ingesting.
                        .pragma("cache_size", "-16384");
                    SqlitePoolOptions::new()
                        .max_connections(opts.max_connections.max(1))
                        .min_connections(1)
                        .acquire_timeout(opts.acquire_timeout)
                        .connect_with(connect)
                        .await
                        .map(Pool::Sqlite)
                }
                Backend::Postgres => {
                    let connect = PgConnectOptions::from_str(&opts.url)
                        .map_err(invalid)?
                        .application_name("cairn");
                    PgPoolOptions::new()
                        .max_connections(opts.max_connections.max(1))
                        .acquire_timeout(opts.acquire_timeout)
                        .connect_with(connect)
                        .await
                        .map(Pool::Postgres)
                }
            };
            match result {
                Ok(pool) => return Ok(Db { pool, backend }),
                Err(err) => {
                    last_error = err.to_string();
                    if attempt < attempts {
                        tracing::warn!(
                            url = %redacted, attempt, of = attempts, error = %last_error,
                            retry_in_ms = backoff.as_millis() as u64,
                            "database not reachable yet"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        Err(ConnectError::Unreachable {
            url: redacted,
            attempts,
            secs: started.elapsed().as_secs_f64(),
            last_error,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// One round trip to the database.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(&self.pool, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
    }

    /// The database server's clock (PostgreSQL; SQLite runs in this process, on its clock).
    pub async fn server_time(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, sqlx::Error> {
        match &self.pool {
            Pool::Postgres(p) => Ok(Some(sqlx::query_scalar("SELECT now()").fetch_one(p).await?)),
            Pool::Sqlite(_) => Ok(None),
        }
    }

    /// Connections open in the pool, and how many of them are idle.
    pub fn pool_stats(&self) -> PoolStats {
        let (size, idle) = on_pool!(&self.pool, p => (p.size(), p.num_idle()));
        PoolStats {
            size,
            idle: idle as u32,
        }
    }

    /// Close every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        on_pool!(&self.pool, p => p.close().await)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
}
