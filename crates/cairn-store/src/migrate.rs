//! Schema migrations: one forward-only series per backend (`migrations/sqlite`,
//! `migrations/postgres`), embedded in the binary and applied by `cairn serve` and `cairn migrate`.
//!
//! On PostgreSQL the run holds an advisory lock, so replicas that start together apply each
//! migration once. Either backend refuses a database that has migrations this binary does not
//! know (it was written by a newer Cairn) before touching anything.

use sqlx::migrate::Migrator;

use crate::db::{Backend, Db};
use crate::error::{StoreError, StoreResult};
use crate::on_pool;

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    }
}

/// One migration, applied or pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationInfo {
    pub version: i64,
    pub description: String,
}

/// Where a database stands against this binary's migrations.
#[derive(Debug, Clone)]
pub struct SchemaStatus {
    /// Highest applied version (0 for an empty database).
    pub current: i64,
    /// Highest version this binary knows.
    pub latest: i64,
    /// Migrations this binary would apply, oldest first.
    pub pending: Vec<MigrationInfo>,
}

/// The newest schema version this binary knows.
pub fn latest_version(backend: Backend) -> i64 {
    migrator(backend)
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

async fn applied_versions(db: &Db) -> StoreResult<Vec<i64>> {
    let exists_sql = match db.backend() {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
        }
    };
    let exists: i64 = on_pool!(db.pool(), p => sqlx::query_scalar(exists_sql).fetch_one(p).await)?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let sql = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
    Ok(on_pool!(db.pool(), p => sqlx::query_scalar(sql).fetch_all(p).await)?)
}

/// Compare the database with this binary's migrations without changing anything.
pub async fn status(db: &Db) -> StoreResult<SchemaStatus> {
    let applied = applied_versions(db).await?;
    let migrator = migrator(db.backend());
    let latest = latest_version(db.backend());
    let current = applied.iter().copied().max().unwrap_or(0);
    let pending = migrator
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| MigrationInfo {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect();
    Ok(SchemaStatus {
        current,
        latest,
        pending,
    })
}

/// Apply every pending migration; returns those applied.
pub async fn run(db: &Db) -> StoreResult<Vec<MigrationInfo>> {
    let before = status(db).await?;
    if before.current > before.latest {
        return Err(StoreError::SchemaTooNew {
            database: before.current,
            binary: before.latest,
        });
    }
    let migrator = migrator(db.backend());
    on_pool!(db.pool(), p => migrator.run(p).await)?;
    Ok(before.pending)
}

/// Apply pending migrations up to and including `version`; returns those applied.
pub async fn run_to(db: &Db, version: i64) -> StoreResult<Vec<MigrationInfo>> {
    let before = status(db).await?;
    if before.current > version {
        return Err(StoreError::SchemaTooNew {
            database: before.current,
            binary: version,
        });
    }
    let all = migrator(db.backend());
    // The fields are how `migrate!` builds a migrator; sqlx is pinned by the lockfile.
    let some = Migrator {
        migrations: std::borrow::Cow::Owned(
            all.iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect(),
        ),
        ignore_missing: false,
        locking: all.locking,
        no_tx: all.no_tx,
    };
    on_pool!(db.pool(), p => some.run(p).await)?;
    Ok(before
        .pending
        .into_iter()
        .filter(|m| m.version <= version)
        .collect())
}
