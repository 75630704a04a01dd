//! The search indexes: keyword candidates (FTS5 BM25 on SQLite, `tsvector` on PostgreSQL) and
//! vector candidates (sqlite-vec `vec0` on SQLite, pgvector HNSW on PostgreSQL), each filtered
//! to the collections the caller may read *inside* the statement, plus the vectors' upkeep.
//!
//! Fusion, snippets and the API live in the server; this module answers "which chunks, with
//! what score" and nothing a caller may not see ever leaves it.

use crate::db::BeginWrite;
use serde::Serialize;

use crate::collections::CollectionRole;
use crate::{on_pool, Backend, Id, Json, Store, StoreError, StoreResult, Timestamp};

/// What a search may be narrowed to, on top of the caller's own access.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    pub collections: Option<Vec<Id>>,
    pub documents: Option<Vec<Id>>,
    pub kinds: Option<Vec<String>>,
    /// Documents added at or after this time.
    pub created_after: Option<Timestamp>,
    /// Documents added before this time.
    pub created_before: Option<Timestamp>,
}

impl SearchFilter {
    /// Whether anything narrows the documents (beyond collections).
    fn narrows_documents(&self) -> bool {
        self.documents.is_some()
            || self.kinds.is_some()
            || self.created_after.is_some()
            || self.created_before.is_some()
    }
}

/// A chunk found by one of the indexes: `score` is larger for better (BM25 negated on SQLite,
/// `ts_rank_cd` on PostgreSQL; cosine similarity for vectors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub seq: i64,
    pub score: f64,
}

/// A found chunk with its document, for the answer.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct FoundChunk {
    pub seq: i64,
    pub id: Id,
    pub document_id: Id,
    pub collection_id: Id,
    pub ordinal: i32,
    pub text: String,
    pub token_count: i32,
    pub location: Json<serde_json::Value>,
    pub title: Option<String>,
    pub filename: String,
    pub kind: String,
    pub document_created_at: Timestamp,
}

/// A chunk waiting for its vector.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingChunk {
    pub seq: i64,
    pub text: String,
}

/// A FTS5 query matching any of `terms`, each quoted so that no character of it is syntax.
fn fts5_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// A `websearch_to_tsquery` text matching any of `terms` (that function never fails on syntax).
fn websearch_query(terms: &[String]) -> String {
    terms
        .iter()
        .filter(|t| !t.eq_ignore_ascii_case("or"))
        .map(|t| t.replace(['"', '-'], " "))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A model's name as the integer the SQLite vector table filters on (FNV-1a, 64 bits).
fn model_key(model: &str) -> i64 {
    let h = model.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    i64::from_ne_bytes(h.to_ne_bytes())
}

fn vector_text(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 10 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

fn vector_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn candidates(found: Vec<(i64, f64)>) -> Vec<Candidate> {
    found
        .into_iter()
        .map(|(seq, score)| Candidate { seq, score })
        .collect()
}

fn json_ids(ids: &Option<Vec<Id>>) -> Option<Json<Vec<String>>> {
    ids.as_ref()
        .map(|v| Json(v.iter().map(|i| i.to_string()).collect()))
}

/// How long a keyword query waits for the in-memory index when there is no FTS5 table to
/// fall back on (its build at start takes seconds per 100,000 chunks).
const INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Store {
    /// Turn the in-process search index on or off (on by default; SQLite only). Off, every
    /// query runs on FTS5 and `vec0`.
    pub fn set_search_index(&self, on: bool) {
        self.memindex.set_enabled(on);
    }

    /// SQLite: keep the FTS5 keyword table (`on`), or leave it empty and unmaintained because
    /// the in-memory index answers every keyword query. Switching empties it, or rebuilds it
    /// from the chunks (which takes a while on a large database), in one write transaction,
    /// so it is never partial. Returns whether anything changed. Every process on one database
    /// should agree (`search.memory_index`); the last to start decides.
    pub async fn set_keyword_tables(&self, on: bool) -> StoreResult<bool> {
        let crate::Pool::Sqlite(p) = self.db.pool() else {
            return Ok(false);
        };
        self.fts_off
            .store(!on, std::sync::atomic::Ordering::Relaxed);
        let mut tx = p.begin_write().await?;
        let current: i64 = sqlx::query_scalar("SELECT fts FROM search_state WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        if (current == 1) == on {
            return Ok(false);
        }
        sqlx::query("UPDATE search_state SET fts = $1 WHERE id = 1")
            .bind(i64::from(on))
            .execute(&mut *tx)
            .await?;
        let command = if on { "rebuild" } else { "delete-all" };
        sqlx::query(&format!(
            "INSERT INTO chunks_fts (chunks_fts) VALUES ('{command}')"
        ))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether keyword queries may fall back to the FTS5 table (SQLite).
    pub(crate) fn fts_available(&self) -> bool {
        !self.fts_off.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Start building the in-process search index now rather than at the first query.
    pub fn warm_search_index(&self) {
        if let crate::Pool::Sqlite(p) = self.db.pool() {
            if self.memindex.enabled() {
                self.memindex.start_build(p.clone());
            }
        }
    }

    /// Bring the in-process index up to date in the background after a write, so the next
    /// query does not pay for a whole batch of new chunks. One catch-up runs at a time; nudges
    /// during it run one more.
    pub fn nudge_search_index(&self) {
        if let crate::Pool::Sqlite(p) = self.db.pool() {
            if self.memindex.enabled() {
                self.memindex.nudge(p.clone());
            }
        }
    }

    /// Keep the in-process index following writes made by other processes (`cairn worker`,
    /// `cairn import`): a catch-up every `every`, so their chunks are folded in as they land
    /// rather than all at once in the first search after them. A look that finds nothing new
    /// costs one indexed read. `None` on PostgreSQL, which has no such index.
    pub fn follow_search_index(
        &self,
        every: std::time::Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let crate::Pool::Sqlite(_) = self.db.pool() else {
            return None;
        };
        let store = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                store.nudge_search_index();
            }
        }))
    }

    /// Wait (up to `timeout`) until the in-process index is built and current; whether it is.
    pub async fn search_index_ready(&self, timeout: std::time::Duration) -> StoreResult<bool> {
        let crate::Pool::Sqlite(p) = self.db.pool() else {
            return Ok(false);
        };
        let until = std::time::Instant::now() + timeout;
        loop {
            if self.memindex.fresh(p).await? {
                return Ok(true);
            }
            if !self.memindex.enabled() || std::time::Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The in-process index's size, once built.
    pub fn search_index_stats(&self) -> Option<crate::memindex::IndexStats> {
        self.memindex.stats()
    }

    /// Forget search changes older than `before` (SQLite; an index that has not seen them by
    /// then rebuilds). Returns how many were removed.
    pub async fn prune_search_changes(&self, before: Timestamp) -> StoreResult<u64> {
        let crate::Pool::Sqlite(p) = self.db.pool() else {
            return Ok(0);
        };
        let r = sqlx::query("DELETE FROM search_changes WHERE created_at < $1")
            .bind(before)
            .execute(p)
            .await?;
        Ok(r.rows_affected())
    }

    /// What the in-process index may return to `actor` under `filter`: readable collections
    /// (and documents passing the filters), as their row keys. `None`: the index cannot answer
    /// now (not built in time, disabled, PostgreSQL).
    async fn index_access(
        &self,
        actor: Id,
        filter: &SearchFilter,
    ) -> StoreResult<Option<crate::memindex::Allowed>> {
        let crate::Pool::Sqlite(p) = self.db.pool() else {
            return Ok(None);
        };
        if !self.memindex.fresh(p).await? {
            return Ok(None);
        }
        let roles = crate::collections::role_list(CollectionRole::Viewer);
        let sql = format!(
            "SELECT c.rowid FROM collections c JOIN collection_members m              ON m.collection_id = c.id WHERE m.user_id = $1 AND m.role IN ({roles})              AND ($2 IS NULL OR c.id IN (SELECT value FROM json_each($2)))"
        );
        let collections: Vec<i64> = sqlx::query_scalar(&sql)
            .bind(actor)
            .bind(json_ids(&filter.collections))
            .fetch_all(p)
            .await?;
        let documents = if filter.narrows_documents() {
            let member =
                crate::collections::member_check("d.collection_id", "$1", CollectionRole::Viewer);
            let sql = format!(
                "SELECT d.rowid FROM documents d WHERE d.deleted_at IS NULL AND {member}                  AND ($2 IS NULL OR d.id IN (SELECT value FROM json_each($2)))                  AND ($3 IS NULL OR d.kind IN (SELECT value FROM json_each($3)))                  AND ($4 IS NULL OR d.created_at >= $4) AND ($5 IS NULL OR d.created_at < $5)"
            );
            let keys: Vec<i64> = sqlx::query_scalar(&sql)
                .bind(actor)
                .bind(json_ids(&filter.documents))
                .bind(filter.kinds.clone().map(Json))
                .bind(filter.created_after)
                .bind(filter.created_before)
                .fetch_all(p)
                .await?;
            Some(keys.into_iter().collect())
        } else {
            None
        };
        Ok(Some(crate::memindex::Allowed {
            collections: collections.into_iter().collect(),
            documents,
        }))
    }

    /// Up to `limit` chunks matching any of `terms` (plain words; nothing in them is query
    /// syntax), best first, in collections `actor` may read.
    pub async fn keyword_candidates(
        &self,
        actor: Id,
        terms: &[String],
        filter: &SearchFilter,
        limit: u32,
    ) -> StoreResult<Vec<Candidate>> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(allowed) = self.index_access(actor, filter).await? {
            if let Some(found) = self.memindex.keyword(terms, &allowed, limit as usize) {
                return Ok(candidates(found));
            }
        }
        if self.backend() == Backend::Sqlite && !self.fts_available() {
            // No FTS5 to fall back on: wait for the index (built at start, or rebuilding).
            if self.search_index_ready(INDEX_WAIT).await? {
                if let Some(allowed) = self.index_access(actor, filter).await? {
                    if let Some(found) = self.memindex.keyword(terms, &allowed, limit as usize) {
                        return Ok(candidates(found));
                    }
                }
            }
            return Err(StoreError::IndexBuilding);
        }
        let member =
            crate::collections::member_check("c.collection_id", "$1", CollectionRole::Viewer);
        let collections = json_ids(&filter.collections);
        let documents = json_ids(&filter.documents);
        let kinds = filter.kinds.clone().map(Json);
        // The dialects differ in the match and in list handling; the parameters are the same.
        let (sql, text) = match self.db.backend() {
            Backend::Sqlite => (
                format!("SELECT c.seq, -bm25(chunks_fts) AS score FROM chunks_fts \
                     JOIN chunks c ON c.seq = chunks_fts.rowid \
                     JOIN documents d ON d.id = c.document_id \
                     WHERE chunks_fts MATCH $2 AND d.deleted_at IS NULL AND {member} \
                     AND ($3 IS NULL OR c.collection_id IN (SELECT value FROM json_each($3))) \
                     AND ($4 IS NULL OR c.document_id IN (SELECT value FROM json_each($4))) \
                     AND ($5 IS NULL OR d.kind IN (SELECT value FROM json_each($5))) \
                     AND ($6 IS NULL OR d.created_at >= $6) AND ($7 IS NULL OR d.created_at < $7) \
                     ORDER BY score DESC LIMIT $8"),
                fts5_query(terms),
            ),
            Backend::Postgres => (
                format!("WITH q AS (SELECT websearch_to_tsquery('english', $2) AS q) \
                     SELECT c.seq, ts_rank_cd(c.search_tsv, q.q)::float8 AS score \
                     FROM q, chunks c JOIN documents d ON d.id = c.document_id \
                     WHERE c.search_tsv @@ q.q AND d.deleted_at IS NULL AND {member} \
                     AND ($3::jsonb IS NULL OR c.collection_id IN \
                          (SELECT (jsonb_array_elements_text($3::jsonb))::uuid)) \
                     AND ($4::jsonb IS NULL OR c.document_id IN \
                          (SELECT (jsonb_array_elements_text($4::jsonb))::uuid)) \
                     AND ($5::jsonb IS NULL OR d.kind IN (SELECT jsonb_array_elements_text($5::jsonb))) \
                     AND ($6::timestamptz IS NULL OR d.created_at >= $6) \
                     AND ($7::timestamptz IS NULL OR d.created_at < $7) \
                     ORDER BY score DESC, c.seq LIMIT $8"),
                websearch_query(terms),
            ),
        };
        let rows: Vec<(i64, f64)> = on_pool!(self.db.pool(), p => sqlx::query_as(&sql)
            .bind(actor)
            .bind(text)
            .bind(collections)
            .bind(documents)
            .bind(kinds)
            .bind(filter.created_after)
            .bind(filter.created_before)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)?;
        Ok(rows
            .into_iter()
            .map(|(seq, score)| Candidate { seq, score })
            .collect())
    }

    /// Up to `limit` chunks whose `model` vectors are nearest to `query` (a unit vector), best
    /// first, in collections `actor` may read.
    pub async fn vector_candidates(
        &self,
        actor: Id,
        model: &str,
        query: &[f32],
        filter: &SearchFilter,
        limit: u32,
    ) -> StoreResult<Vec<Candidate>> {
        let dims = query.len();
        if dims == 0 || !self.has_vector_index(dims).await? {
            return Ok(Vec::new());
        }
        if let Some(allowed) = self.index_access(actor, filter).await? {
            if let Some(found) =
                self.memindex
                    .nearest(model_key(model), query, &allowed, limit as usize)
            {
                return Ok(candidates(found));
            }
        }
        let roles = crate::collections::role_list(CollectionRole::Viewer);
        let collections = json_ids(&filter.collections);
        let documents = json_ids(&filter.documents);
        let kinds = filter.kinds.clone().map(Json);
        let mut rows: Vec<(i64, f64)> = match self.db.pool() {
            crate::Pool::Sqlite(p) => {
                // vec0 takes the collection and document constraints itself, as `IN` lists of
                // integer keys (short to compare, unlike ids), so the k nearest are the k nearest
                // the caller may read, not fewer.
                let narrow = if filter.narrows_documents() {
                    "AND v.document_key IN (SELECT d.rowid FROM documents d \
                     WHERE d.deleted_at IS NULL \
                     AND ($5 IS NULL OR d.id IN (SELECT value FROM json_each($5))) \
                     AND ($6 IS NULL OR d.kind IN (SELECT value FROM json_each($6))) \
                     AND ($7 IS NULL OR d.created_at >= $7) AND ($8 IS NULL OR d.created_at < $8))"
                } else {
                    "AND ($5 IS NULL OR 1) AND ($6 IS NULL OR 1) AND ($7 IS NULL OR 1) \
                     AND ($8 IS NULL OR 1)"
                };
                let sql = format!(
                    "SELECT v.rowid, 1.0 - v.distance FROM chunk_vectors_{dims} v \
                     WHERE v.embedding MATCH $1 AND v.k = $2 AND v.model_key = $3 \
                     AND v.collection_key IN (SELECT c.rowid FROM collections c \
                         JOIN collection_members m ON m.collection_id = c.id \
                         WHERE m.user_id = $4 AND m.role IN ({roles}) \
                         AND ($9 IS NULL OR c.id IN (SELECT value FROM json_each($9)))) \
                     {narrow} ORDER BY v.distance"
                );
                sqlx::query_as(&sql)
                    .bind(vector_blob(query))
                    .bind(i64::from(limit))
                    .bind(model_key(model))
                    .bind(actor)
                    .bind(documents)
                    .bind(kinds)
                    .bind(filter.created_after)
                    .bind(filter.created_before)
                    .bind(collections)
                    .fetch_all(p)
                    .await?
            }
            crate::Pool::Postgres(p) => {
                let member = crate::collections::member_check(
                    "v.collection_id",
                    "$4",
                    CollectionRole::Viewer,
                );
                let sql = format!(
                    "SELECT v.seq, (1.0 - (v.embedding::vector({dims}) <=> $1::text::vector({dims})))::float8 \
                     FROM chunk_vectors v \
                     WHERE v.dimensions = {dims} AND v.model = $3 AND {member} \
                     AND ($9::jsonb IS NULL OR v.collection_id IN \
                          (SELECT (jsonb_array_elements_text($9::jsonb))::uuid)) \
                     AND ($5::jsonb IS NULL OR v.document_id IN \
                          (SELECT (jsonb_array_elements_text($5::jsonb))::uuid)) \
                     AND (($6::jsonb IS NULL AND $7::timestamptz IS NULL AND $8::timestamptz IS NULL) \
                          OR v.document_id IN (SELECT d.id FROM documents d WHERE \
                          ($6::jsonb IS NULL OR d.kind IN (SELECT jsonb_array_elements_text($6::jsonb))) \
                          AND ($7::timestamptz IS NULL OR d.created_at >= $7) \
                          AND ($8::timestamptz IS NULL OR d.created_at < $8))) \
                     ORDER BY v.embedding::vector({dims}) <=> $1::text::vector({dims}) LIMIT $2"
                );
                let mut tx = p.begin_write().await?;
                // Filtered HNSW scans keep going until `limit` rows pass the filter (pgvector
                // 0.8 iterative scans) rather than returning fewer.
                let ef = limit.clamp(40, 1000);
                sqlx::query(&format!("SET LOCAL hnsw.ef_search = {ef}"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order")
                    .execute(&mut *tx)
                    .await?;
                let rows = sqlx::query_as(&sql)
                    .bind(vector_text(query))
                    .bind(i64::from(limit))
                    .bind(model)
                    .bind(actor)
                    .bind(documents)
                    .bind(kinds)
                    .bind(filter.created_after)
                    .bind(filter.created_before)
                    .bind(collections)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows
            }
        };
        // Relaxed-order scans may return neighbours slightly out of order.
        rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(rows
            .into_iter()
            .map(|(seq, score)| Candidate { seq, score })
            .collect())
    }

    /// The chunks `seqs` with their documents, those `actor` may read only.
    pub async fn found_chunks(&self, actor: Id, seqs: &[i64]) -> StoreResult<Vec<FoundChunk>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let member =
            crate::collections::member_check("c.collection_id", "$1", CollectionRole::Viewer);
        let list = Json(seqs.to_vec());
        let select = "SELECT c.seq, c.id, c.document_id, c.collection_id, c.ordinal, c.text, \
                      c.token_count, c.location, d.title, d.filename, d.kind, \
                      d.created_at AS document_created_at \
                      FROM chunks c JOIN documents d ON d.id = c.document_id";
        let sql = match self.db.backend() {
            Backend::Sqlite => format!(
                "{select} WHERE c.seq IN (SELECT value FROM json_each($2)) \
                 AND d.deleted_at IS NULL AND {member}"
            ),
            Backend::Postgres => format!(
                "{select} WHERE c.seq IN (SELECT (jsonb_array_elements_text($2::jsonb))::bigint) \
                 AND d.deleted_at IS NULL AND {member}"
            ),
        };
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, FoundChunk>(&sql)
            .bind(actor).bind(list).fetch_all(p).await)?,
        )
    }

    /// Whether vectors of `dims` dimensions can be stored and searched; creates their index
    /// the first time (`create`), else only checks.
    async fn vector_index(&self, dims: usize, create: bool) -> StoreResult<bool> {
        if let Ok(known) = self.vector_indexes.lock() {
            if known.contains(&dims) {
                return Ok(true);
            }
        }
        let exists: bool = match self.db.pool() {
            crate::Pool::Sqlite(p) => {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
                )
                .bind(format!("chunk_vectors_{dims}"))
                .fetch_one(p)
                .await?;
                if n == 0 && create {
                    let mut tx = p.begin_write().await?;
                    sqlx::query(&format!(
                        "CREATE VIRTUAL TABLE IF NOT EXISTS chunk_vectors_{dims} USING vec0(\
                         embedding float[{dims}] distance_metric=cosine, \
                         collection_key integer, document_key integer, model_key integer)"
                    ))
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(&format!(
                        "CREATE TRIGGER IF NOT EXISTS chunk_vectors_{dims}_delete \
                         AFTER DELETE ON chunks WHEN old.embedded_with IS NOT NULL BEGIN \
                         DELETE FROM chunk_vectors_{dims} WHERE rowid = old.seq; END"
                    ))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    true
                } else {
                    n > 0
                }
            }
            crate::Pool::Postgres(p) => {
                let name = format!("chunk_vectors_hnsw_{dims}");
                let n: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM pg_indexes WHERE indexname = $1")
                        .bind(&name)
                        .fetch_one(p)
                        .await?;
                if n == 0 && create {
                    // One creator at a time across replicas; the others wait, then find it.
                    let mut tx = p.begin_write().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock(7305162001)")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(&format!(
                        "CREATE INDEX IF NOT EXISTS {name} ON chunk_vectors USING hnsw \
                         ((embedding::vector({dims})) vector_cosine_ops) WHERE dimensions = {dims}"
                    ))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    true
                } else {
                    n > 0
                }
            }
        };
        if exists {
            if let Ok(mut known) = self.vector_indexes.lock() {
                known.insert(dims);
            }
        }
        Ok(exists)
    }

    async fn has_vector_index(&self, dims: usize) -> StoreResult<bool> {
        self.vector_index(dims, false).await
    }

    /// Make sure vectors of `dims` dimensions have their index.
    pub async fn ensure_vector_index(&self, dims: usize) -> StoreResult<()> {
        self.vector_index(dims, true).await.map(|_| ())
    }

    /// Up to `limit` chunks of `document` without a `model` vector, in order.
    pub async fn chunks_needing_vectors(
        &self,
        document: Id,
        model: &str,
        limit: u32,
    ) -> StoreResult<Vec<PendingChunk>> {
        let sql = "SELECT seq, text FROM chunks WHERE document_id = $1 \
                   AND (embedded_with IS NULL OR embedded_with <> $2) ORDER BY ordinal LIMIT $3";
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, PendingChunk>(sql)
            .bind(document).bind(model).bind(i64::from(limit)).fetch_all(p).await)?,
        )
    }

    /// Up to `limit` chunks of any document without a `model` vector, in storage order (bulk
    /// embedding: a fresh import, an evaluation corpus).
    pub async fn any_chunks_needing_vectors(
        &self,
        model: &str,
        limit: u32,
    ) -> StoreResult<Vec<PendingChunk>> {
        let sql = "SELECT seq, text FROM chunks WHERE embedded_with IS NULL \
                   OR embedded_with <> $1 ORDER BY seq LIMIT $2";
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_as::<_, PendingChunk>(sql)
            .bind(model).bind(i64::from(limit)).fetch_all(p).await)?,
        )
    }

    /// How many of `document`'s chunks have a `model` vector, of how many.
    pub async fn vector_progress(&self, document: Id, model: &str) -> StoreResult<(i64, i64)> {
        let sql = "SELECT COALESCE(SUM(CASE WHEN embedded_with = $2 THEN 1 ELSE 0 END), 0), \
                   COUNT(*) FROM chunks WHERE document_id = $1";
        let (done, total): (i64, i64) = on_pool!(self.db.pool(), p => sqlx::query_as(sql)
            .bind(document).bind(model).fetch_one(p).await)?;
        Ok((done, total))
    }

    /// Store `vectors` (chunk seq, unit vector) of `model` in one transaction, replacing older
    /// ones; chunks gone meanwhile (document reprocessed or deleted) are skipped. Returns how
    /// many were stored.
    pub async fn store_vectors(
        &self,
        model: &str,
        vectors: &[(i64, Vec<f32>)],
    ) -> StoreResult<u64> {
        let Some(dims) = vectors.first().map(|v| v.1.len()) else {
            return Ok(0);
        };
        self.ensure_vector_index(dims).await?;
        let mut stored = 0;
        match self.db.pool() {
            crate::Pool::Sqlite(p) => {
                let mut tx = p.begin_write().await?;
                let mark = "UPDATE chunks SET embedded_with = $2 WHERE seq = $1 RETURNING \
                            (SELECT rowid FROM collections WHERE id = chunks.collection_id), \
                            (SELECT rowid FROM documents WHERE id = chunks.document_id)";
                let remove = format!("DELETE FROM chunk_vectors_{dims} WHERE rowid = $1");
                let insert = format!(
                    "INSERT INTO chunk_vectors_{dims} (rowid, embedding, collection_key, \
                     document_key, model_key) VALUES ($1, $2, $3, $4, $5)"
                );
                let key = model_key(model);
                for (seq, v) in vectors {
                    let row: Option<(i64, i64)> = sqlx::query_as(mark)
                        .bind(seq)
                        .bind(model)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some((collection, document)) = row else {
                        continue;
                    };
                    sqlx::query(&remove).bind(seq).execute(&mut *tx).await?;
                    sqlx::query(&insert)
                        .bind(seq)
                        .bind(vector_blob(v))
                        .bind(collection)
                        .bind(document)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                    stored += 1;
                }
                tx.commit().await?;
            }
            crate::Pool::Postgres(p) => {
                let mark = "UPDATE chunks SET embedded_with = $2 WHERE seq = $1 \
                            RETURNING collection_id, document_id";
                let mut tx = p.begin_write().await?;
                let upsert = "INSERT INTO chunk_vectors (seq, collection_id, document_id, model, \
                              dimensions, embedding) VALUES ($1, $2, $3, $4, $5, $6::text::vector) \
                              ON CONFLICT (seq) DO UPDATE SET model = EXCLUDED.model, \
                              dimensions = EXCLUDED.dimensions, embedding = EXCLUDED.embedding";
                for (seq, v) in vectors {
                    let row: Option<(Id, Id)> = sqlx::query_as(mark)
                        .bind(seq)
                        .bind(model)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some((collection, document)) = row else {
                        continue;
                    };
                    sqlx::query(upsert)
                        .bind(seq)
                        .bind(collection)
                        .bind(document)
                        .bind(model)
                        .bind(i32::try_from(dims).unwrap_or(i32::MAX))
                        .bind(vector_text(v))
                        .execute(&mut *tx)
                        .await?;
                    stored += 1;
                }
                tx.commit().await?;
            }
        }
        Ok(stored)
    }

    /// The embedding model a collection's vectors come from, and their dimension.
    pub async fn collection_embedding(&self, id: Id) -> StoreResult<Option<(String, i32)>> {
        let sql = "SELECT embedding_model, embedding_dimensions FROM collections WHERE id = $1";
        let row: Option<(Option<String>, Option<i32>)> = on_pool!(self.db.pool(), p =>
            sqlx::query_as(sql).bind(id).fetch_optional(p).await)?;
        Ok(row.and_then(|(m, d)| Some((m?, d?))))
    }

    /// Record that `collection` is (being) embedded with `model`.
    pub async fn set_collection_embedding(
        &self,
        collection: Id,
        model: &str,
        dims: usize,
    ) -> StoreResult<()> {
        let sql = "UPDATE collections SET embedding_model = $2, embedding_dimensions = $3 \
                   WHERE id = $1";
        on_pool!(self.db.pool(), p => sqlx::query(sql).bind(collection).bind(model)
            .bind(i32::try_from(dims).unwrap_or(i32::MAX)).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Collections whose recorded model is not `model` (or none yet) and that have chunks.
    pub async fn collections_to_embed(
        &self,
        model: &str,
    ) -> StoreResult<Vec<(Id, Option<String>)>> {
        let sql = "SELECT c.id, c.embedding_model FROM collections c \
                   WHERE (c.embedding_model IS NULL OR c.embedding_model <> $1) \
                   AND EXISTS (SELECT 1 FROM chunks k WHERE k.collection_id = c.id) ORDER BY c.id";
        Ok(on_pool!(self.db.pool(), p => sqlx::query_as(sql).bind(model).fetch_all(p).await)?)
    }

    /// Live, ready documents of `collection` with chunks lacking a `model` vector.
    pub async fn documents_to_embed(&self, collection: Id, model: &str) -> StoreResult<Vec<Id>> {
        let sql = "SELECT d.id FROM documents d WHERE d.collection_id = $1 \
                   AND d.deleted_at IS NULL AND d.status = 'ready' AND EXISTS \
                   (SELECT 1 FROM chunks c WHERE c.document_id = d.id \
                    AND (c.embedded_with IS NULL OR c.embedded_with <> $2)) ORDER BY d.id";
        Ok(
            on_pool!(self.db.pool(), p => sqlx::query_scalar(sql).bind(collection)
            .bind(model).fetch_all(p).await)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts5_terms_are_quoted_so_nothing_is_syntax() {
        let q = fts5_query(&["NEAR".into(), "a\"b".into(), "-x".into(), "*".into()]);
        assert_eq!(q, "\"NEAR\" OR \"a\"\"b\" OR \"-x\" OR \"*\"");
    }

    #[test]
    fn websearch_terms_drop_operators() {
        assert_eq!(
            websearch_query(&["black".into(), "or".into(), "-white".into(), "\"x".into()]),
            "black or  white or  x"
        );
    }

    #[test]
    fn vectors_render_for_pgvector() {
        assert_eq!(vector_text(&[0.5, -1.0, 0.25]), "[0.5,-1,0.25]");
        assert_eq!(vector_blob(&[1.0]), 1.0f32.to_le_bytes().to_vec());
    }
}
