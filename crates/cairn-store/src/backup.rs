//! The database side of backups: a consistent snapshot out, and a snapshot back in.
//!
//! - SQLite: `VACUUM INTO` a new file — one read transaction, so the copy is consistent while
//!   the server keeps writing, and compact (no free pages, no WAL).
//! - PostgreSQL: every table `COPY`-ed out in text format inside one `REPEATABLE READ READ ONLY`
//!   transaction (one snapshot for all tables, no locks that block writers). Restoring
//!   migrates an empty database to the backup's schema version with Cairn's own migrations,
//!   then `COPY`-es the rows in, parents before children, in one transaction, and moves each
//!   identity sequence past the highest restored value. Decision 0010 says why not `pg_dump`.
//!
//! The archive around these files (compression, encryption, checksums, blobs) is the server's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use futures::TryStreamExt;
use sqlx::Connection;
use tokio::io::AsyncWriteExt;

use crate::db::Db;
use crate::error::{StoreError, StoreResult};
use crate::{migrate, Pool};

/// One table in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableInfo {
    pub name: String,
    /// Columns in the dump, in order (PostgreSQL; empty for SQLite, whose snapshot is a file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    pub rows: u64,
}

/// What a snapshot holds besides its files.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub schema_version: i64,
    /// Tables in restore order (a table after every table it refers to).
    pub tables: Vec<TableInfo>,
    /// Blob keys of every document in the snapshot.
    pub blob_keys: Vec<String>,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Tables of the current schema that hold Cairn's data (the migration ledger is rebuilt by
/// migrating, not copied; SQLite's own tables and the shadow tables of virtual tables travel
/// inside the file).
async fn sqlite_tables(conn: &mut sqlx::SqliteConnection) -> StoreResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations' AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
    )
    .fetch_all(conn)
    .await?)
}

/// Counts, schema version and blob keys of a SQLite database file (a snapshot, or a restored
/// file before it replaces the live one).
pub async fn inspect_sqlite_file(path: &Path) -> StoreResult<Snapshot> {
    crate::db::register_sqlite_vec();
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
    let check: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&mut conn)
        .await?;
    if check != "ok" {
        return Err(StoreError::Internal(format!(
            "the database file fails SQLite's check: {check}"
        )));
    }
    let mut tables = Vec::new();
    for name in sqlite_tables(&mut conn).await? {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote(&name)))
            .fetch_one(&mut conn)
            .await?;
        tables.push(TableInfo {
            name,
            columns: Vec::new(),
            rows: u64::try_from(rows).unwrap_or(0),
        });
    }
    let schema_version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await?;
    let blob_keys = sqlx::query_scalar("SELECT blob_key FROM documents ORDER BY blob_key")
        .fetch_all(&mut conn)
        .await?;
    conn.close().await?;
    Ok(Snapshot {
        schema_version,
        tables,
        blob_keys,
    })
}

/// Write a consistent copy of a SQLite database to `dest` (which must not exist).
pub async fn snapshot_sqlite(db: &Db, dest: &Path) -> StoreResult<Snapshot> {
    let Pool::Sqlite(pool) = db.pool() else {
        return Err(StoreError::Internal("not a SQLite database".into()));
    };
    let target = dest
        .to_str()
        .ok_or_else(|| StoreError::Internal("the staging path is not UTF-8".into()))?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(pool)
        .await?;
    inspect_sqlite_file(dest).await
}

async fn pg_tables(conn: &mut sqlx::PgConnection) -> StoreResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
         AND c.relname <> '_sqlx_migrations' ORDER BY c.relname",
    )
    .fetch_all(conn)
    .await?)
}

/// Order `tables` so that each comes after the tables it refers to.
async fn pg_restore_order(
    conn: &mut sqlx::PgConnection,
    tables: Vec<String>,
) -> StoreResult<Vec<String>> {
    let edges: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, p.relname::text FROM pg_constraint k \
         JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE k.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(conn)
    .await?;
    let mut needs: BTreeMap<String, BTreeSet<String>> = tables
        .iter()
        .map(|t| (t.clone(), BTreeSet::new()))
        .collect();
    for (child, parent) in edges {
        if child != parent && needs.contains_key(&parent) {
            if let Some(n) = needs.get_mut(&child) {
                n.insert(parent);
            }
        }
    }
    let mut order = Vec::with_capacity(tables.len());
    while !needs.is_empty() {
        let ready: Vec<String> = needs
            .iter()
            .filter(|(_, n)| n.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
        if ready.is_empty() {
            return Err(StoreError::Internal(
                "the tables' foreign keys form a cycle".into(),
            ));
        }
        for t in &ready {
            needs.remove(t);
        }
        for n in needs.values_mut() {
            for t in &ready {
                n.remove(t);
            }
        }
        order.extend(ready);
    }
    Ok(order)
}

async fn pg_columns(conn: &mut sqlx::PgConnection, table: &str) -> StoreResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relname = $1 AND a.attnum > 0 \
         AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
    )
    .bind(table)
    .fetch_all(conn)
    .await?)
}

/// Export every table to `<dir>/<table>.copy` (COPY text format) from one snapshot.
pub async fn export_postgres(db: &Db, dir: &Path) -> StoreResult<Snapshot> {
    let Pool::Postgres(pool) = db.pool() else {
        return Err(StoreError::Internal("not a PostgreSQL database".into()));
    };
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let schema_version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *tx)
            .await?;
    let names = pg_tables(&mut tx).await?;
    let names = pg_restore_order(&mut tx, names).await?;
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let columns = pg_columns(&mut tx, &name).await?;
        let cols = columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let path = dir.join(format!("{name}.copy"));
        let mut file = tokio::io::BufWriter::with_capacity(
            256 * 1024,
            tokio::fs::File::create(&path)
                .await
                .map_err(|e| StoreError::Internal(format!("{}: {e}", path.display())))?,
        );
        let mut rows = 0u64;
        {
            let mut stream = tx
                .copy_out_raw(&format!("COPY {} ({cols}) TO STDOUT", quote(&name)))
                .await?;
            while let Some(piece) = stream.try_next().await? {
                // Text format escapes newlines inside values: one line is one row.
                rows += memchr_count(&piece);
                file.write_all(&piece)
                    .await
                    .map_err(|e| StoreError::Internal(format!("{}: {e}", path.display())))?;
            }
        }
        file.flush()
            .await
            .map_err(|e| StoreError::Internal(format!("{}: {e}", path.display())))?;
        file.get_ref()
            .sync_all()
            .await
            .map_err(|e| StoreError::Internal(format!("{}: {e}", path.display())))?;
        tables.push(TableInfo {
            name,
            columns,
            rows,
        });
    }
    let blob_keys = sqlx::query_scalar("SELECT blob_key FROM documents ORDER BY blob_key")
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Snapshot {
        schema_version,
        tables,
        blob_keys,
    })
}

fn memchr_count(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// How many tables of Cairn's (migrated or not) the database has.
pub async fn table_count(db: &Db) -> StoreResult<usize> {
    match db.pool() {
        Pool::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            Ok(sqlite_tables(&mut conn).await?.len())
        }
        Pool::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            Ok(pg_tables(&mut conn).await?.len())
        }
    }
}

/// Other sessions connected to the same PostgreSQL database (replicas still running).
pub async fn other_postgres_sessions(db: &Db) -> StoreResult<i64> {
    let Pool::Postgres(pool) = db.pool() else {
        return Ok(0);
    };
    let all: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND backend_type = 'client backend'",
    )
    .fetch_one(pool)
    .await?;
    // This process's own pool is not "other".
    Ok((all - i64::from(db.pool_stats().size)).max(0))
}

/// Drop every table of the current schema (PostgreSQL), to restore over an existing database.
pub async fn drop_postgres_tables(db: &Db) -> StoreResult<()> {
    let Pool::Postgres(pool) = db.pool() else {
        return Err(StoreError::Internal("not a PostgreSQL database".into()));
    };
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')",
    )
    .fetch_all(&mut *tx)
    .await?;
    if !names.is_empty() {
        let list = names
            .iter()
            .map(|n| quote(n))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(&format!("DROP TABLE IF EXISTS {list} CASCADE"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Load a PostgreSQL export into a database migrated to `snapshot.schema_version` and holding
/// no rows: every table from `<dir>/<table>.copy`, in one transaction.
pub async fn import_postgres(db: &Db, dir: &Path, tables: &[TableInfo]) -> StoreResult<()> {
    let Pool::Postgres(pool) = db.pool() else {
        return Err(StoreError::Internal("not a PostgreSQL database".into()));
    };
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    for t in tables {
        let path = dir.join(format!("{}.copy", t.name));
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| StoreError::Internal(format!("{}: {e}", path.display())))?;
        let cols = t
            .columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let mut copy = tx
            .copy_in_raw(&format!("COPY {} ({cols}) FROM STDIN", quote(&t.name)))
            .await?;
        copy.read_from(tokio::io::BufReader::with_capacity(256 * 1024, file))
            .await?;
        let rows = copy.finish().await?;
        if rows != t.rows {
            return Err(StoreError::Internal(format!(
                "table {} restored {rows} rows; the backup lists {}",
                t.name, t.rows
            )));
        }
    }
    // Identity and serial columns continue after the restored rows.
    let sequences: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() \
         AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (table, column) in sequences {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({c}), 1), MAX({c}) IS NOT NULL) FROM {t}",
            c = quote(&column),
            t = quote(&table)
        );
        sqlx::query(&sql)
            .bind(quote(&table))
            .bind(&column)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Apply this binary's migrations up to and including `version` (to restore a backup of an
/// older schema before its rows go in; the rest are applied after).
pub async fn migrate_to(db: &Db, version: i64) -> StoreResult<()> {
    migrate::run_to(db, version).await.map(|_| ())
}
