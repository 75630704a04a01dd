//! A backend-neutral description of the live schema (tables, columns, indexes), so a test can
//! prove the SQLite and PostgreSQL migration series describe the same tables, and operators'
//! tools can show what a database holds.

use std::collections::BTreeMap;

use crate::db::{Backend, Db};
use crate::error::StoreResult;
use crate::on_pool;

/// How a column is stored, in terms both backends share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StorageClass {
    /// SQLite INTEGER; PostgreSQL integer types, boolean and timestamptz (ms in SQLite).
    Integer,
    /// SQLite TEXT; PostgreSQL text, uuid and jsonb.
    Text,
    /// SQLite BLOB; PostgreSQL bytea and vector.
    Blob,
    /// SQLite REAL; PostgreSQL floating point.
    Real,
    /// A type this table does not know: always reported as drift.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    pub name: String,
    pub class: StorageClass,
    pub nullable: bool,
}

/// Tables (without the migration bookkeeping table) → columns sorted by name, and index names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub tables: BTreeMap<String, Vec<Column>>,
    pub indexes: Vec<String>,
}

fn sqlite_class(declared: &str) -> StorageClass {
    // SQLite's own affinity rules (https://sqlite.org/datatype3.html §3.1).
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        StorageClass::Integer
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        StorageClass::Text
    } else if t.contains("BLOB") || t.is_empty() {
        StorageClass::Blob
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        StorageClass::Real
    } else {
        StorageClass::Other
    }
}

fn postgres_class(udt: &str) -> StorageClass {
    match udt {
        "int2" | "int4" | "int8" | "bool" | "timestamptz" => StorageClass::Integer,
        "text" | "varchar" | "uuid" | "jsonb" | "json" | "tsvector" => StorageClass::Text,
        "bytea" | "vector" => StorageClass::Blob,
        "float4" | "float8" => StorageClass::Real,
        _ => StorageClass::Other,
    }
}

/// The search indexes differ by dialect on purpose — an FTS5 table (and its shadow tables) and
/// `vec0` vector tables, the in-process index's change feed and the FTS5 switch
/// (`search_state`) on SQLite, a `search_tsv`
/// column with its GIN index and a pgvector table on PostgreSQL — and are left out of the
/// comparison.
fn is_search_index(name: &str) -> bool {
    name.contains("_fts")
        || name.ends_with("search_tsv")
        || name.starts_with("chunk_vectors")
        || name.starts_with("search_changes")
        || name == "search_state"
}

/// Read the schema the database has now.
pub async fn describe(db: &Db) -> StoreResult<Schema> {
    let mut schema = Schema::default();
    match db.backend() {
        Backend::Sqlite => {
            let sql = "SELECT m.name, p.name, p.type, p.\"notnull\", p.pk \
                       FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                       WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
                       AND m.name NOT LIKE '\\_sqlx%' ESCAPE '\\'";
            let rows: Vec<(String, String, String, bool, i64)> =
                on_pool!(db.pool(), p => sqlx::query_as(sql).fetch_all(p).await)?;
            for (table, name, declared, notnull, pk) in rows {
                schema.tables.entry(table).or_default().push(Column {
                    name,
                    class: sqlite_class(&declared),
                    nullable: !notnull && pk == 0,
                });
            }
            let sql = "SELECT name FROM sqlite_master WHERE type = 'index' \
                       AND name NOT LIKE 'sqlite_autoindex%'";
            schema.indexes = on_pool!(db.pool(), p => sqlx::query_scalar(sql).fetch_all(p).await)?;
        }
        Backend::Postgres => {
            let sql = "SELECT table_name::text, column_name::text, udt_name::text, \
                       is_nullable = 'YES' FROM information_schema.columns \
                       WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_sqlx%'";
            let rows: Vec<(String, String, String, bool)> =
                on_pool!(db.pool(), p => sqlx::query_as(sql).fetch_all(p).await)?;
            for (table, name, udt, nullable) in rows {
                schema.tables.entry(table).or_default().push(Column {
                    name,
                    class: postgres_class(&udt),
                    nullable,
                });
            }
            // Primary keys and unique constraints are implied by the tables on both sides.
            let sql = "SELECT i.indexname::text FROM pg_indexes i \
                       WHERE i.schemaname = current_schema() AND NOT EXISTS ( \
                         SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)";
            schema.indexes = on_pool!(db.pool(), p => sqlx::query_scalar(sql).fetch_all(p).await)?;
        }
    }
    schema.tables.retain(|table, _| !is_search_index(table));
    for columns in schema.tables.values_mut() {
        columns.retain(|c| !is_search_index(&c.name));
        columns.sort();
    }
    schema.indexes.retain(|i| !is_search_index(i));
    schema.indexes.sort();
    Ok(schema)
}
