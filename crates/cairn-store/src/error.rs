//! The store's one error type. Callers see three outcomes that matter to them — the row is not
//! there, the write conflicts with another, or the schema is not one this binary can use — and
//! everything else stays an opaque [`StoreError::Other`] to be logged, never shown.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique or check constraint, or an optimistic version check, refused the write.
    #[error("conflict{}", .constraint.as_deref().map(|c| format!(" on {c}")).unwrap_or_default())]
    Conflict { constraint: Option<String> },
    /// The database has migrations this binary does not know: it was written by a newer Cairn.
    #[error(
        "the database schema is at version {database}, newer than this binary's {binary}: \
         run the Cairn release that wrote it (or newer), or restore a backup made by this release"
    )]
    SchemaTooNew { database: i64, binary: i64 },
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Other(sqlx::Error),
    /// A failure inside the store itself (a background task that died, a poisoned lock).
    #[error("{0}")]
    Internal(String),
    /// The keyword index cannot answer yet (SQLite: the in-memory index is still being built
    /// and there is no FTS5 table to fall back on). Retrying shortly works.
    #[error("the search index is still being built")]
    IndexBuilding,
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(ref db)
                if db.is_unique_violation() || db.is_check_violation() =>
            {
                StoreError::Conflict {
                    constraint: db.constraint().map(str::to_owned),
                }
            }
            other => StoreError::Other(other),
        }
    }
}
