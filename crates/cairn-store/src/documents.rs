//! Documents and their chunks. Reads and writes that act for a user check that user's
//! collection membership inside the statement (see [`crate::collections`]); the ingestion
//! worker's writes act for the system and are keyed by document id alone, each idempotent so a
//! retried step never duplicates chunks.

use crate::db::BeginWrite;
use serde::Serialize;
use sqlx::types::Json;

use crate::collections::{member_check, CollectionRole};
use crate::error::{StoreError, StoreResult};
use crate::jobs::{NewJob, INSERT_JOB};
use crate::types::{Id, Timestamp};
use crate::{on_pool, Store};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DocumentRow {
    pub id: Id,
    pub collection_id: Id,
    pub uploaded_by: Option<Id>,
    pub filename: String,
    pub kind: String,
    pub size_bytes: i64,
    pub content_sha256: String,
    #[serde(skip)]
    pub blob_key: String,
    #[serde(skip)]
    pub sealed_key: Vec<u8>,
    pub status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub progress_done: i64,
    pub progress_total: i64,
    pub title: Option<String>,
    pub chunk_count: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
    pub deleted_by: Option<Id>,
}

impl DocumentRow {
    /// A new document queued for ingestion, with no file details yet (size, hash, blob and
    /// sealed key empty): callers fill those in with struct-update syntax.
    pub fn queued(
        id: Id,
        collection: Id,
        uploader: Id,
        filename: impl Into<String>,
        kind: impl Into<String>,
    ) -> DocumentRow {
        let now = Timestamp::now();
        DocumentRow {
            id,
            collection_id: collection,
            uploaded_by: Some(uploader),
            filename: filename.into(),
            kind: kind.into(),
            size_bytes: 0,
            content_sha256: String::new(),
            blob_key: String::new(),
            sealed_key: Vec::new(),
            status: "queued".into(),
            error_code: None,
            error_message: None,
            progress_done: 0,
            progress_total: 0,
            title: None,
            chunk_count: 0,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            deleted_by: None,
        }
    }
}

const COLUMNS: &str = "id, collection_id, uploaded_by, filename, kind, size_bytes, \
    content_sha256, blob_key, sealed_key, status, error_code, error_message, progress_done, \
    progress_total, title, chunk_count, created_at, updated_at, deleted_at, deleted_by";

fn prefixed(alias: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ChunkRow {
    pub id: Id,
    pub document_id: Id,
    pub collection_id: Id,
    pub ordinal: i32,
    pub text: String,
    pub token_count: i32,
    pub location: Json<serde_json::Value>,
}

/// Filters for listing a collection's documents.
#[derive(Debug, Default, Clone)]
pub struct DocumentFilter {
    /// Any of these statuses (plain words: `queued`, `ready`…).
    pub statuses: Option<Vec<String>>,
    pub after: Option<Id>,
    pub limit: u32,
}

/// Statuses in which ingestion is under way.
pub const IN_PROGRESS: [&str; 4] = ["queued", "parsing", "chunking", "indexing"];

impl Store {
    /// Store a new document and queue its ingestion, in one transaction, if `actor` may edit
    /// the collection and, with `quota_bytes`, the uploader's documents stay within it (checked
    /// under a lock on the uploader, so concurrent uploads cannot overrun it together).
    /// [`StoreError::NotFound`]: no such collection for them; [`StoreError::Conflict`]: the same
    /// content is already in the collection, or (constraint `storage_quota`) the quota is full.
    pub async fn insert_document(
        &self,
        actor: Id,
        doc: &DocumentRow,
        job: &NewJob,
        quota_bytes: Option<i64>,
    ) -> StoreResult<Id> {
        let sql = format!(
            "INSERT INTO documents ({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19, $20 WHERE {}",
            member_check("$2", "$21", CollectionRole::Editor)
        );
        let job_id = Id::new();
        let d = doc;
        // SQLite has one writer at a time already; PostgreSQL locks the uploader's row.
        let lock = match self.backend() {
            crate::Backend::Postgres => Some("SELECT id FROM users WHERE id = $1 FOR UPDATE"),
            crate::Backend::Sqlite => None,
        };
        let used_sql = "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM documents \
                        WHERE uploaded_by = $1";
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            if let (Some(quota), Some(uploader)) = (quota_bytes, d.uploaded_by) {
                if let Some(lock) = lock {
                    sqlx::query(lock).bind(uploader).execute(&mut *tx).await?;
                }
                let used: i64 = sqlx::query_scalar(used_sql).bind(uploader)
                    .fetch_one(&mut *tx).await?;
                if used.saturating_add(d.size_bytes) > quota {
                    return Err(StoreError::Conflict { constraint: Some("storage_quota".into()) });
                }
            }
            let n = sqlx::query(&sql)
                .bind(d.id).bind(d.collection_id).bind(d.uploaded_by).bind(&d.filename)
                .bind(&d.kind).bind(d.size_bytes).bind(&d.content_sha256).bind(&d.blob_key)
                .bind(&d.sealed_key).bind(&d.status).bind(&d.error_code).bind(&d.error_message)
                .bind(d.progress_done).bind(d.progress_total).bind(&d.title).bind(d.chunk_count)
                .bind(d.created_at).bind(d.updated_at).bind(d.deleted_at).bind(d.deleted_by)
                .bind(actor)
                .execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query(INSERT_JOB).bind(job_id).bind(&job.kind).bind(&job.subject)
                .bind(Json(&job.payload)).bind(job.max_attempts).bind(job.timeout_secs)
                .bind(Timestamp::now()).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(job_id)
        })
    }

    /// The live document with this content in the collection, if any (no membership check:
    /// callers have checked the collection).
    pub async fn document_by_content(
        &self,
        collection: Id,
        sha256: &str,
    ) -> StoreResult<Option<DocumentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM documents WHERE collection_id = $1 AND content_sha256 = $2 \
             AND deleted_at IS NULL"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, DocumentRow>(&sql)
            .bind(collection).bind(sha256).fetch_optional(p).await)?,
        )
    }

    /// A live document `actor` may see with at least `role` in its collection.
    pub async fn document_for(
        &self,
        actor: Id,
        id: Id,
        role: CollectionRole,
    ) -> StoreResult<Option<DocumentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM documents d WHERE d.id = $2 AND d.deleted_at IS NULL AND {}",
            member_check("d.collection_id", "$1", role)
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, DocumentRow>(&sql)
            .bind(actor).bind(id).fetch_optional(p).await)?,
        )
    }

    /// A collection's live documents, for a member, in id order.
    pub async fn documents_in(
        &self,
        actor: Id,
        collection: Id,
        filter: &DocumentFilter,
    ) -> StoreResult<Vec<DocumentRow>> {
        // `,queued,parsing,`: one parameter both dialects match with LIKE.
        let statuses = filter
            .statuses
            .as_ref()
            .map(|s| format!(",{},", s.join(",")));
        let sql = format!(
            "SELECT {} FROM documents d WHERE d.collection_id = $2 AND d.deleted_at IS NULL \
             AND ($3 IS NULL OR $3 LIKE '%,' || d.status || ',%') \
             AND ($4 IS NULL OR d.id > $4) AND {} \
             ORDER BY d.id LIMIT $5",
            prefixed("d"),
            member_check("d.collection_id", "$1", CollectionRole::Viewer)
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, DocumentRow>(&sql)
            .bind(actor).bind(collection).bind(statuses).bind(filter.after)
            .bind(i64::from(filter.limit)).fetch_all(p).await)?,
        )
    }

    /// Any document by id, deleted or not, for the system (the worker, admins' restore).
    pub async fn document(&self, id: Id) -> StoreResult<Option<DocumentRow>> {
        let sql = format!("SELECT {COLUMNS} FROM documents WHERE id = $1");
        Ok(on_pool!(self.db.pool(), p =>
            sqlx::query_as::<_, DocumentRow>(&sql).bind(id).fetch_optional(p).await)?)
    }

    /// Bytes of documents `user` uploaded that still occupy storage (soft-deleted ones count
    /// until they are purged).
    pub async fn storage_used_by(&self, user: Id) -> StoreResult<i64> {
        let sql = "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM documents WHERE uploaded_by = $1";
        let n: i64 = on_pool!(self.db.pool(), p => sqlx::query_scalar(sql).bind(user)
            .fetch_one(p).await)?;
        Ok(n)
    }

    /// Move a document through ingestion, unless it was deleted or its ingestion cancelled
    /// meanwhile (then false: stop).
    pub async fn set_document_stage(
        &self,
        id: Id,
        status: &str,
        progress: (i64, i64),
    ) -> StoreResult<bool> {
        let sql = "UPDATE documents SET status = $2, progress_done = $3, progress_total = $4, \
                   updated_at = $5, error_code = NULL, error_message = NULL \
                   WHERE id = $1 AND deleted_at IS NULL AND status IN \
                   ('queued', 'parsing', 'chunking', 'indexing')";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(status)
            .bind(progress.0).bind(progress.1).bind(Timestamp::now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// End an `indexing` document as `ready` with all its chunks done. False when it was
    /// deleted or cancelled meanwhile.
    pub async fn finish_document(&self, id: Id) -> StoreResult<bool> {
        let sql = "UPDATE documents SET status = 'ready', progress_done = chunk_count, \
                   progress_total = chunk_count, updated_at = $2 \
                   WHERE id = $1 AND deleted_at IS NULL AND status = 'indexing'";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(Timestamp::now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Record the exact kind found during ingestion (an office container's).
    pub async fn set_document_kind(&self, id: Id, kind: &str) -> StoreResult<()> {
        let sql = "UPDATE documents SET kind = $2 WHERE id = $1";
        on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(kind)
            .execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// End a document's ingestion as failed with a reason.
    pub async fn fail_document(&self, id: Id, code: &str, message: &str) -> StoreResult<()> {
        let sql = "UPDATE documents SET status = 'failed', error_code = $2, error_message = $3, \
                   updated_at = $4 WHERE id = $1 AND status IN \
                   ('queued', 'parsing', 'chunking', 'indexing')";
        on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(code).bind(message)
            .bind(Timestamp::now()).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Replace the document's chunks with `chunks` and mark it ready, in one transaction:
    /// run twice, the result is the same. False (nothing written) when the document was deleted
    /// or its ingestion cancelled meanwhile.
    pub async fn store_chunks(
        &self,
        id: Id,
        title: Option<&str>,
        chunks: &[ChunkRow],
    ) -> StoreResult<bool> {
        self.store_chunks_then(id, title, chunks, true).await
    }

    /// [`Store::store_chunks`], leaving the document `indexing` (progress 0 of its chunks)
    /// unless `ready`: the vectors come next, and [`Store::finish_document`] ends it.
    pub async fn store_chunks_then(
        &self,
        id: Id,
        title: Option<&str>,
        chunks: &[ChunkRow],
        ready: bool,
    ) -> StoreResult<bool> {
        let claim = "UPDATE documents SET status = CASE WHEN $5 THEN 'ready' ELSE 'indexing' END, \
                     chunk_count = $2, title = $3, \
                     progress_done = CASE WHEN $5 THEN $2 ELSE 0 END, progress_total = $2, \
                     updated_at = $4 WHERE id = $1 AND deleted_at IS NULL AND status IN \
                     ('queued', 'parsing', 'chunking', 'indexing')";
        let clear = "DELETE FROM chunks WHERE document_id = $1";
        // Many rows per statement: one round trip per batch, not per chunk.
        const BATCH: usize = 200;
        let count = i64::try_from(chunks.len()).unwrap_or(i64::MAX);
        // SQLite finds a numbered parameter's name by walking a list of all of them, once per
        // bound value: with 1,400 of them that walk was a twentieth of ingestion's CPU.
        // Anonymous `?` parameters are bound by position and skip it.
        let anonymous = matches!(self.db.pool(), crate::Pool::Sqlite(_));
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(claim).bind(id).bind(count).bind(title).bind(Timestamp::now())
                .bind(ready).execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Ok(false);
            }
            sqlx::query(clear).bind(id).execute(&mut *tx).await?;
            for batch in chunks.chunks(BATCH) {
                let mut sql = String::from("INSERT INTO chunks (id, document_id, collection_id, \
                    ordinal, text, token_count, location) VALUES ");
                for i in 0..batch.len() {
                    let b = i * 7;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    if anonymous {
                        sql.push_str("(?, ?, ?, ?, ?, ?, ?)");
                    } else {
                        sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                            b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7));
                    }
                }
                let mut q = sqlx::query(&sql);
                for c in batch {
                    q = q.bind(c.id).bind(c.document_id).bind(c.collection_id).bind(c.ordinal)
                        .bind(&c.text).bind(c.token_count).bind(&c.location);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// A document's chunks in order, for a member of its collection.
    pub async fn chunks_of(
        &self,
        actor: Id,
        document: Id,
        after_ordinal: Option<i32>,
        limit: u32,
    ) -> StoreResult<Vec<ChunkRow>> {
        let sql = format!(
            "SELECT c.id, c.document_id, c.collection_id, c.ordinal, c.text, c.token_count, \
             c.location FROM chunks c JOIN documents d ON d.id = c.document_id \
             WHERE c.document_id = $2 AND d.deleted_at IS NULL AND ($3 IS NULL OR c.ordinal > $3) \
             AND {} ORDER BY c.ordinal LIMIT $4",
            member_check("d.collection_id", "$1", CollectionRole::Viewer)
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, ChunkRow>(&sql)
            .bind(actor).bind(document).bind(after_ordinal).bind(i64::from(limit))
            .fetch_all(p).await)?,
        )
    }

    /// Soft-delete a document `actor` may edit: it disappears from every listing and search at
    /// once (its chunks are removed now); the blob stays until it is purged.
    pub async fn delete_document(&self, actor: Id, id: Id) -> StoreResult<DocumentRow> {
        let mark = format!(
            "UPDATE documents SET deleted_at = $3, deleted_by = $1, updated_at = $3, \
             status = CASE WHEN status IN ('queued', 'parsing', 'chunking', 'indexing') \
                           THEN 'cancelled' ELSE status END \
             WHERE id = $2 AND deleted_at IS NULL AND {} RETURNING {COLUMNS}",
            member_check("documents.collection_id", "$1", CollectionRole::Editor)
        );
        let clear = "DELETE FROM chunks WHERE document_id = $1";
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            let Some(row) = sqlx::query_as::<_, DocumentRow>(&mark).bind(actor).bind(id)
                .bind(Timestamp::now()).fetch_optional(&mut *tx).await? else {
                return Err(StoreError::NotFound);
            };
            sqlx::query(clear).bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Soft-deleted documents (for admins), newest deletion first.
    pub async fn deleted_documents(
        &self,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<DocumentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM documents WHERE deleted_at IS NOT NULL \
             AND ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, DocumentRow>(&sql)
            .bind(after).bind(i64::from(limit)).fetch_all(p).await)?,
        )
    }

    /// Undo a soft delete and queue the document's ingestion again (its chunks were removed).
    /// [`StoreError::Conflict`]: the same content has been added to the collection since.
    pub async fn restore_document(&self, id: Id, job: &NewJob) -> StoreResult<Id> {
        let sql = "UPDATE documents SET deleted_at = NULL, deleted_by = NULL, status = 'queued', \
                   error_code = NULL, error_message = NULL, progress_done = 0, \
                   progress_total = 0, chunk_count = 0, updated_at = $2 \
                   WHERE id = $1 AND deleted_at IS NOT NULL";
        let job_id = Id::new();
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(sql).bind(id).bind(Timestamp::now())
                .execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query(INSERT_JOB).bind(job_id).bind(&job.kind).bind(&job.subject)
                .bind(Json(&job.payload)).bind(job.max_attempts).bind(job.timeout_secs)
                .bind(Timestamp::now()).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(job_id)
        })
    }

    /// Put a document back through ingestion (retry after failure, reprocess, cancel undone):
    /// status `queued`, chunks kept until the new ones replace them.
    pub async fn requeue_document(&self, id: Id, job: &NewJob) -> StoreResult<Id> {
        let sql = "UPDATE documents SET status = 'queued', error_code = NULL, \
                   error_message = NULL, progress_done = 0, progress_total = 0, updated_at = $2 \
                   WHERE id = $1 AND deleted_at IS NULL";
        let job_id = Id::new();
        on_pool!(self.db.pool(), p => {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(sql).bind(id).bind(Timestamp::now())
                .execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query(INSERT_JOB).bind(job_id).bind(&job.kind).bind(&job.subject)
                .bind(Json(&job.payload)).bind(job.max_attempts).bind(job.timeout_secs)
                .bind(Timestamp::now()).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(job_id)
        })
    }

    /// Stop a document's ingestion: status `cancelled`. False when it was not in progress.
    pub async fn cancel_document(&self, id: Id) -> StoreResult<bool> {
        let sql = "UPDATE documents SET status = 'cancelled', updated_at = $2 WHERE id = $1 \
                   AND status IN ('queued', 'parsing', 'chunking', 'indexing')";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id).bind(Timestamp::now())
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Live document ids, in id order after `after` (for reprocess-all).
    pub async fn live_document_ids(&self, after: Option<Id>, limit: u32) -> StoreResult<Vec<Id>> {
        let sql = "SELECT id FROM documents WHERE deleted_at IS NULL AND ($1 IS NULL OR id > $1) \
                   ORDER BY id LIMIT $2";
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_scalar(sql).bind(after)
            .bind(i64::from(limit)).fetch_all(p).await)?,
        )
    }

    /// Documents soft-deleted before `before`: due to be purged.
    pub async fn documents_due_for_purge(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<DocumentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM documents WHERE deleted_at IS NOT NULL AND deleted_at < $1 \
             ORDER BY deleted_at LIMIT $2"
        );
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, DocumentRow>(&sql)
            .bind(before).bind(i64::from(limit)).fetch_all(p).await)?,
        )
    }

    /// Remove a soft-deleted document's row for good (its chunks go with it); false when it is
    /// not deleted (restored meanwhile) or already gone. The caller removes the blob after.
    pub async fn purge_document(&self, id: Id) -> StoreResult<bool> {
        let sql = "DELETE FROM documents WHERE id = $1 AND deleted_at IS NOT NULL";
        let n = on_pool!(self.db.pool(), p => sqlx::query(sql).bind(id)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// How many chunk rows and keyword-index entries a document has (zero after deletion).
    pub async fn index_rows_of(&self, document: Id) -> StoreResult<(i64, i64)> {
        let chunks = "SELECT COUNT(*) FROM chunks WHERE document_id = $1";
        let n: i64 = on_pool!(self.db.pool(), p =>
            sqlx::query_scalar(chunks).bind(document).fetch_one(p).await)?;
        if let (crate::Pool::Sqlite(p), false) = (self.db.pool(), self.fts_available()) {
            // The in-memory index is the keyword index: count its entries for the document.
            let rowid: Option<i64> =
                sqlx::query_scalar("SELECT rowid FROM documents WHERE id = $1")
                    .bind(document)
                    .fetch_optional(p)
                    .await?;
            let indexed = match rowid {
                Some(rowid)
                    if self
                        .search_index_ready(std::time::Duration::from_secs(60))
                        .await? =>
                {
                    self.memindex.chunks_of_document(rowid).unwrap_or(0) as i64
                }
                Some(_) => {
                    return Err(StoreError::Internal(
                        "the in-memory search index is not built".into(),
                    ))
                }
                None => 0,
            };
            return Ok((n, indexed));
        }
        let indexed: i64 =
            match self.db.pool() {
                crate::Pool::Sqlite(p) => {
                    // The FTS table's own row count for this document's chunk rows.
                    sqlx::query_scalar(
                        "SELECT COUNT(*) FROM chunks_fts f JOIN chunks c ON c.seq = f.rowid \
                     WHERE c.document_id = $1",
                    )
                    .bind(document)
                    .fetch_one(p)
                    .await?
                }
                crate::Pool::Postgres(p) => sqlx::query_scalar(
                    "SELECT COUNT(*) FROM chunks WHERE document_id = $1 AND search_tsv IS NOT NULL",
                )
                .bind(document)
                .fetch_one(p)
                .await?,
            };
        Ok((n, indexed))
    }

    /// Chunks matching a keyword query in collections `actor` may read (a plain full-text
    /// match; ranking and hybrid search come with the search capability).
    pub async fn keyword_match_count(&self, actor: Id, query: &str) -> StoreResult<i64> {
        let member = member_check("c.collection_id", "$1", CollectionRole::Viewer);
        if self.backend() == crate::Backend::Sqlite && !self.fts_available() {
            // The same match through the in-memory index (any of the query's words).
            let terms: Vec<String> = query.split_whitespace().map(str::to_owned).collect();
            // Every match: as many as the index holds.
            self.search_index_ready(std::time::Duration::from_secs(60))
                .await?;
            let all = self
                .search_index_stats()
                .map_or(1, |s| u32::try_from(s.chunks).unwrap_or(u32::MAX).max(1));
            let found = self
                .keyword_candidates(actor, &terms, &crate::search::SearchFilter::default(), all)
                .await?;
            return Ok(found.len() as i64);
        }
        let n: i64 = match self.db.pool() {
            crate::Pool::Sqlite(p) => {
                let sql = format!(
                    "SELECT COUNT(*) FROM chunks_fts f JOIN chunks c ON c.seq = f.rowid \
                     WHERE chunks_fts MATCH $2 AND {member}"
                );
                sqlx::query_scalar(&sql)
                    .bind(actor)
                    .bind(query)
                    .fetch_one(p)
                    .await?
            }
            crate::Pool::Postgres(p) => {
                let sql = format!(
                    "SELECT COUNT(*) FROM chunks c WHERE c.search_tsv @@ \
                     websearch_to_tsquery('english', $2) AND {member}"
                );
                sqlx::query_scalar(&sql)
                    .bind(actor)
                    .bind(query)
                    .fetch_one(p)
                    .await?
            }
        };
        Ok(n)
    }
}
