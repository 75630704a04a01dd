//! The in-process search index (SQLite): BM25 over an inverted index and cosine over 8-bit
//! quantised vectors, both held in memory, so a query at 100,000 chunks costs milliseconds
//! instead of FTS5 scoring every matching row and `vec0` reading every float from disk.
//!
//! The database stays the only source of truth. Every change to the chunks (a chunk added or
//! removed, a vector stored) is appended by triggers to `search_changes` in the same
//! transaction, with ids that only grow and have no gaps (SQLite has one writer and the
//! sequence rolls back with its transaction). Before each query the index reads the changes
//! after the last one it applied — usually none, one indexed lookup — so it answers exactly as
//! the tables would, including writes made by another process (`cairn worker`, `cairn
//! import`). It is built in the background on first use or at start; until it is ready, and
//! whenever it cannot catch up (changes pruned while it was not looking, a huge backlog), the
//! query runs on FTS5 and `vec0` instead, and a rebuild starts.
//!
//! Access is still decided by the database: each query first reads the collection (and,
//! with filters, document) keys the caller may read, and the index keeps only those; the
//! chosen chunks are read back through [`Store::found_chunks`], which checks again.
//!
//! Memory: postings are delta- and varint-coded (about 1.5 bytes per word occurrence kept),
//! vectors one byte per dimension plus a scale. Removed chunks are skipped while scoring and
//! dropped by a rebuild once they are a quarter of the index.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rust_stemmers::{Algorithm, Stemmer};
use rustc_hash::{FxHashMap, FxHashSet};
use sqlx::Row;
use unicode_normalization::UnicodeNormalization;

use crate::{StoreError, StoreResult};

/// BM25 parameters, as FTS5's `bm25()` uses them.
const K1: f32 = 1.2;
const B: f32 = 0.75;
/// How long a query waits for a build in progress before using the SQL indexes.
const READY_WAIT: Duration = Duration::from_secs(2);
/// More changes than this behind (and more than the index holds): rebuild rather than replay.
const REPLAY_LIMIT: i64 = 50_000;
/// Longest word indexed, in bytes.
const MAX_WORD_BYTES: usize = 64;
/// Vector sets at least this large are scanned on two threads.
const PARALLEL_SCAN_ROWS: usize = 32_768;
/// Rows read per round trip while building.
const BUILD_BATCH: i64 = 4_000;

/// Change kinds in `search_changes.op`.
const OP_ADDED: i64 = 1;
const OP_REMOVED: i64 = 2;
const OP_VECTOR: i64 = 3;

/// The words of `text` as the index stores them: runs of letters and digits, lower-cased,
/// without diacritics, stemmed (Snowball English).
pub fn index_terms(text: &str) -> Vec<String> {
    let stemmer = Stemmer::create(Algorithm::English);
    let mut out = Vec::new();
    folded_words(text, &mut String::new(), |w| out.push(stem(&stemmer, w)));
    out
}

/// Whether the index keeps a folded word: not empty, not over-long.
fn kept(folded: &str) -> bool {
    !folded.is_empty() && folded.len() <= MAX_WORD_BYTES
}

fn is_number(word: &str) -> bool {
    word.bytes().all(|b| b.is_ascii_digit())
}

/// A folded word's stem. Numbers are their own stems (no suffix rule applies to digits).
fn stem(stemmer: &Stemmer, folded: &str) -> String {
    if is_number(folded) {
        folded.to_owned()
    } else {
        stemmer.stem(folded).into_owned()
    }
}

/// Each word of `text` the index keeps (not empty, not over-long), folded, in order. ASCII
/// text, the usual case, is split and lower-cased byte by byte.
fn folded_words(text: &str, buf: &mut String, mut each: impl FnMut(&str)) {
    if !text.is_ascii() {
        for word in raw_words(text) {
            fold(word, buf);
            if kept(buf) {
                each(buf);
            }
        }
        return;
    }
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if !bytes[at].is_ascii_alphanumeric() {
            at += 1;
            continue;
        }
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_alphanumeric() {
            at += 1;
        }
        buf.clear();
        buf.push_str(&text[start..at]);
        buf.make_ascii_lowercase();
        if kept(buf) {
            each(buf);
        }
    }
}

/// Runs of letters and digits.
fn raw_words(text: &str) -> impl Iterator<Item = &str> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// `word` lower-cased and without diacritics, into `buf`.
fn fold(word: &str, buf: &mut String) {
    buf.clear();
    if word.is_ascii() {
        buf.extend(word.chars().map(|c| c.to_ascii_lowercase()));
    } else {
        buf.extend(
            word.nfd()
                .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
                .flat_map(char::to_lowercase),
        );
    }
}

#[derive(Debug, Clone, Copy)]
struct Doc {
    seq: i64,
    /// `collections.rowid` and `documents.rowid`.
    collection: i64,
    document: i64,
    /// Words in the chunk (BM25's document length).
    len: u32,
    live: bool,
}

/// One term's postings: (chunk index delta, occurrences) pairs, varint-coded.
#[derive(Debug, Default)]
struct Postings {
    data: Vec<u8>,
    last: u32,
    /// Chunks containing the term, removed ones included until the next rebuild.
    df: u32,
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> u32 {
    let mut v = 0u32;
    let mut shift = 0;
    while let Some(&b) = data.get(*at) {
        *at += 1;
        v |= u32::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    v
}

/// The vectors of one model (and dimension), quantised to i8 with a scale per vector.
#[derive(Debug)]
struct VectorSet {
    model_key: i64,
    dims: usize,
    data: Vec<i8>,
    scale: Vec<f32>,
    /// The chunk index of each row.
    doc: Vec<u32>,
    row_of: FxHashMap<u32, u32>,
}

impl VectorSet {
    fn new(model_key: i64, dims: usize) -> Self {
        VectorSet {
            model_key,
            dims,
            data: Vec::new(),
            scale: Vec::new(),
            doc: Vec::new(),
            row_of: FxHashMap::default(),
        }
    }

    fn put(&mut self, ix: u32, v: &[f32]) {
        let (q, scale) = quantise(v);
        match self.row_of.get(&ix) {
            Some(&row) => {
                let at = row as usize * self.dims;
                self.data[at..at + self.dims].copy_from_slice(&q);
                self.scale[row as usize] = scale;
            }
            None => {
                let row = self.doc.len() as u32;
                self.data.extend_from_slice(&q);
                self.scale.push(scale);
                self.doc.push(ix);
                self.row_of.insert(ix, row);
            }
        }
    }
}

fn quantise(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; v.len()], 0.0);
    }
    let k = 127.0 / max;
    (
        v.iter()
            .map(|x| (x * k).round().clamp(-127.0, 127.0) as i8)
            .collect(),
        max / 127.0,
    )
}

/// The integer dot product, compiled for AVX2 and SSE4.1 as well as the baseline and chosen by
/// the CPU at run time (`multiversion`): the portable build's SSE2 code is about three times
/// slower (i8 products widen to i16 and add pairwise with `pmaddwd`/`vpmaddwd`).
#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&p, &q)| i32::from(i16::from(p) * i16::from(q)))
        .sum()
}

/// What the caller may see, as the database said just before the query.
pub(crate) struct Allowed {
    pub collections: FxHashSet<i64>,
    /// With document filters: the documents that pass them.
    pub documents: Option<FxHashSet<i64>>,
}

impl Allowed {
    fn admits(&self, d: &Doc) -> bool {
        d.live
            && self.collections.contains(&d.collection)
            && self
                .documents
                .as_ref()
                .is_none_or(|docs| docs.contains(&d.document))
    }
}

#[derive(Debug, Default)]
struct Index {
    /// The last `search_changes` id applied.
    last_change: i64,
    docs: Vec<Doc>,
    by_seq: FxHashMap<i64, u32>,
    terms: FxHashMap<Box<str>, u32>,
    postings: Vec<Postings>,
    total_len: u64,
    live: u32,
    dead: u32,
    vectors: Vec<VectorSet>,
    /// Folded word → term, so a word seen before is not stemmed again (bounded by
    /// [`WORD_CACHE`]).
    words: FxHashMap<Box<str>, u32>,
    /// The terms of the chunk being added (reused).
    scratch: Vec<u32>,
}

/// Folded words remembered with their terms; past this, words are stemmed each time.
const WORD_CACHE: usize = 65_536;

/// A chunk row as the index reads it.
struct ChunkText {
    seq: i64,
    text: String,
    collection: i64,
    document: i64,
}

/// Sizes, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub chunks: u64,
    pub removed: u64,
    pub terms: u64,
    pub vectors: u64,
    /// Approximate heap bytes held.
    pub bytes: u64,
}

impl Index {
    fn add(&mut self, chunk: &ChunkText, stemmer: &Stemmer) {
        if let Some(&old) = self.by_seq.get(&chunk.seq) {
            self.remove_ix(old);
        }
        let ix = self.docs.len() as u32;
        let mut found = std::mem::take(&mut self.scratch);
        found.clear();
        let (words, terms, postings) = (&mut self.words, &mut self.terms, &mut self.postings);
        folded_words(&chunk.text, &mut String::new(), |word| {
            let term = match words.get(word) {
                Some(&t) => t,
                None => {
                    let stem = stem(stemmer, word);
                    let t = match terms.get(stem.as_str()) {
                        Some(&t) => t,
                        None => {
                            let t = postings.len() as u32;
                            terms.insert(stem.into(), t);
                            postings.push(Postings::default());
                            t
                        }
                    };
                    // Numbers are mostly one-offs (and need no stemming): not remembered.
                    if words.len() < WORD_CACHE && !is_number(word) {
                        words.insert(word.into(), t);
                    }
                    t
                }
            };
            found.push(term);
        });
        let len = found.len() as u32;
        // Occurrences per term: sorting a chunk's few hundred terms beats a map.
        found.sort_unstable();
        for run in found.chunk_by(|a, b| a == b) {
            let p = &mut self.postings[run[0] as usize];
            let delta = if p.df == 0 { ix } else { ix - p.last };
            put_varint(&mut p.data, delta);
            put_varint(&mut p.data, run.len() as u32);
            p.last = ix;
            p.df += 1;
        }
        self.scratch = found;
        self.docs.push(Doc {
            seq: chunk.seq,
            collection: chunk.collection,
            document: chunk.document,
            len,
            live: true,
        });
        self.by_seq.insert(chunk.seq, ix);
        self.total_len += u64::from(len);
        self.live += 1;
    }

    fn remove_ix(&mut self, ix: u32) {
        if let Some(d) = self.docs.get_mut(ix as usize) {
            if d.live {
                d.live = false;
                self.total_len = self.total_len.saturating_sub(u64::from(d.len));
                self.live = self.live.saturating_sub(1);
                self.dead += 1;
            }
        }
    }

    fn remove(&mut self, seq: i64) {
        if let Some(ix) = self.by_seq.remove(&seq) {
            self.remove_ix(ix);
        }
    }

    fn put_vector(&mut self, seq: i64, model_key: i64, v: &[f32]) {
        let Some(&ix) = self.by_seq.get(&seq) else {
            return;
        };
        // A chunk has one vector: drop one of another model, if any.
        for set in &mut self.vectors {
            if set.model_key != model_key || set.dims != v.len() {
                if let Some(row) = set.row_of.remove(&ix) {
                    set.scale[row as usize] = 0.0;
                }
            }
        }
        let set = match self
            .vectors
            .iter()
            .position(|s| s.model_key == model_key && s.dims == v.len())
        {
            Some(i) => &mut self.vectors[i],
            None => {
                self.vectors.push(VectorSet::new(model_key, v.len()));
                let last = self.vectors.len() - 1;
                &mut self.vectors[last]
            }
        };
        set.put(ix, v);
    }

    fn needs_compaction(&self) -> bool {
        self.dead > 1_000 && self.dead > self.live / 3
    }

    fn stats(&self) -> IndexStats {
        let postings: usize = self.postings.iter().map(|p| p.data.capacity() + 16).sum();
        let terms: usize = self.terms.keys().map(|k| k.len() + 24).sum::<usize>()
            + self.words.keys().map(|k| k.len() + 24).sum::<usize>();
        let vectors: usize = self
            .vectors
            .iter()
            .map(|s| {
                s.data.capacity()
                    + s.scale.capacity() * 4
                    + s.doc.capacity() * 4
                    + s.row_of.len() * 12
            })
            .sum();
        let docs = self.docs.capacity() * std::mem::size_of::<Doc>() + self.by_seq.len() * 16;
        IndexStats {
            chunks: u64::from(self.live),
            removed: u64::from(self.dead),
            terms: self.postings.len() as u64,
            vectors: self
                .vectors
                .iter()
                .map(|s| {
                    s.row_of
                        .iter()
                        .filter(|(&ix, &row)| {
                            self.docs[ix as usize].live && s.scale[row as usize] != 0.0
                        })
                        .count() as u64
                })
                .sum(),
            bytes: (postings + terms + vectors + docs) as u64,
        }
    }

    /// BM25 over `terms` (already as [`index_terms`] makes them), best first.
    fn keyword(&self, terms: &[String], allowed: &Allowed, limit: usize) -> Vec<(i64, f64)> {
        let n = self.live.max(1) as f32;
        let avgdl = (self.total_len as f32 / n).max(1.0);
        let mut ids: Vec<u32> = terms
            .iter()
            .filter_map(|t| self.terms.get(t.as_str()).copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut acc = vec![0f32; self.docs.len()];
        let mut touched: Vec<u32> = Vec::new();
        for term in ids {
            let p = &self.postings[term as usize];
            let df = p.df as f32;
            let idf = ((n - df + 0.5) / (df + 0.5)).ln();
            let idf = if idf > 0.0 { idf } else { 1e-6 };
            let (mut at, mut ix) = (0usize, 0u32);
            for i in 0..p.df {
                let delta = get_varint(&p.data, &mut at);
                ix = if i == 0 { delta } else { ix + delta };
                let tf = get_varint(&p.data, &mut at) as f32;
                let d = &self.docs[ix as usize];
                if !d.live {
                    continue;
                }
                let norm = K1 * (1.0 - B + B * d.len as f32 / avgdl);
                let slot = &mut acc[ix as usize];
                if *slot == 0.0 {
                    touched.push(ix);
                }
                *slot += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let scored = touched
            .into_iter()
            .filter(|&ix| allowed.admits(&self.docs[ix as usize]))
            .map(|ix| (ix, acc[ix as usize]));
        self.best(scored, limit)
    }

    /// The chunks whose `model_key` vectors are nearest `query` (unit length), best first.
    fn nearest(
        &self,
        model_key: i64,
        query: &[f32],
        allowed: &Allowed,
        limit: usize,
    ) -> Vec<(i64, f64)> {
        let Some(set) = self
            .vectors
            .iter()
            .find(|s| s.model_key == model_key && s.dims == query.len())
        else {
            return Vec::new();
        };
        let (q, qscale) = quantise(query);
        let scan = |rows: std::ops::Range<usize>| {
            let dims = set.dims;
            let scored = rows.filter_map(|row| {
                let scale = set.scale[row];
                let ix = set.doc[row];
                if scale == 0.0 || !allowed.admits(&self.docs[ix as usize]) {
                    return None;
                }
                let v = &set.data[row * dims..(row + 1) * dims];
                Some((ix, dot_i8(v, &q) as f32 * scale * qscale))
            });
            self.best(scored, limit)
        };
        let rows = set.doc.len();
        if rows < PARALLEL_SCAN_ROWS {
            return scan(0..rows);
        }
        // Large sets: the other half on a second thread (the scan is bound by memory reads).
        let half = rows / 2;
        let (mut a, b) = std::thread::scope(|s| {
            let other = s.spawn(|| scan(half..rows));
            let mine = scan(0..half);
            (mine, other.join().unwrap_or_default())
        });
        a.extend(b);
        a.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        a.truncate(limit);
        a
    }

    /// The `limit` highest scores, best first (ties: older chunk first).
    fn best(&self, scored: impl Iterator<Item = (u32, f32)>, limit: usize) -> Vec<(i64, f64)> {
        use std::cmp::{Ordering as O, Reverse};
        use std::collections::BinaryHeap;
        #[derive(PartialEq)]
        struct Entry(f32, Reverse<i64>);
        impl Eq for Entry {}
        impl PartialOrd for Entry {
            fn partial_cmp(&self, other: &Self) -> Option<O> {
                Some(self.cmp(other))
            }
        }
        impl Ord for Entry {
            fn cmp(&self, other: &Self) -> O {
                self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
            }
        }
        if limit == 0 {
            return Vec::new();
        }
        // A min-heap of the best so far.
        let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::with_capacity(limit + 1);
        for (ix, score) in scored {
            let e = Entry(score, Reverse(self.docs[ix as usize].seq));
            if heap.len() < limit {
                heap.push(Reverse(e));
            } else if heap.peek().is_some_and(|Reverse(min)| e > *min) {
                heap.pop();
                heap.push(Reverse(e));
            }
        }
        let mut out: Vec<Entry> = heap.into_iter().map(|Reverse(e)| e).collect();
        out.sort_by(|a, b| b.cmp(a));
        out.into_iter()
            .map(|Entry(score, Reverse(seq))| (seq, f64::from(score)))
            .collect()
    }
}

/// The index and its upkeep; one per [`crate::Store`] (shared by its clones).
#[derive(Default)]
pub struct MemIndex {
    disabled: AtomicBool,
    index: RwLock<Option<Index>>,
    /// One catch-up (or swap after a build) at a time.
    sync: tokio::sync::Mutex<()>,
    building: AtomicBool,
    built: tokio::sync::Notify,
    /// A background catch-up is running ([`MemIndex::nudge`]); another was asked for during it.
    catching_up: AtomicBool,
    again: AtomicBool,
}

impl std::fmt::Debug for MemIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemIndex")
            .field("enabled", &self.enabled())
            .field("stats", &self.stats())
            .finish()
    }
}

impl MemIndex {
    pub fn set_enabled(&self, on: bool) {
        self.disabled.store(!on, Ordering::Relaxed);
        if !on {
            if let Ok(mut g) = self.index.write() {
                *g = None;
            }
        }
    }

    pub fn enabled(&self) -> bool {
        !self.disabled.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> Option<IndexStats> {
        self.index.read().ok()?.as_ref().map(Index::stats)
    }

    /// Live chunks of one document (`documents.rowid`) in the index; `None` when not built.
    pub(crate) fn chunks_of_document(&self, document: i64) -> Option<u64> {
        let g = self.index.read().ok()?;
        let index = g.as_ref()?;
        Some(
            index
                .docs
                .iter()
                .filter(|d| d.live && d.document == document)
                .count() as u64,
        )
    }

    fn is_built(&self) -> bool {
        self.index.read().map(|g| g.is_some()).unwrap_or(false)
    }

    /// Catch up with the database in the background (a no-op until the index is built: the
    /// build reads everything).
    pub(crate) fn nudge(self: &Arc<Self>, pool: sqlx::SqlitePool) {
        if !self.is_built() {
            return;
        }
        if self.catching_up.swap(true, Ordering::AcqRel) {
            self.again.store(true, Ordering::Release);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.again.store(false, Ordering::Release);
                if let Err(e) = me.fresh(&pool).await {
                    tracing::debug!(error = %e, "search index catch-up failed; the next query retries");
                }
                if !me.again.swap(false, Ordering::AcqRel) {
                    break;
                }
            }
            me.catching_up.store(false, Ordering::Release);
        });
    }

    /// Start building in the background, unless a build is running.
    pub(crate) fn start_build(self: &Arc<Self>, pool: sqlx::SqlitePool) {
        if self.building.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            match build(&pool).await {
                Ok(index) => {
                    let stats = index.stats();
                    {
                        let _sync = me.sync.lock().await;
                        if me.enabled() {
                            if let Ok(mut g) = me.index.write() {
                                *g = Some(index);
                            }
                        }
                    }
                    tracing::info!(
                        chunks = stats.chunks,
                        terms = stats.terms,
                        vectors = stats.vectors,
                        megabytes = stats.bytes / 1_000_000,
                        ms = started.elapsed().as_millis() as u64,
                        "search index built in memory"
                    );
                }
                Err(e) => tracing::warn!(error = %e,
                    "could not build the in-memory search index; searching the database"),
            }
            me.building.store(false, Ordering::Release);
            me.built.notify_waiters();
        });
    }

    /// Bring the index up to date with the database; `false` when it cannot answer this query
    /// (not built in time, or behind beyond replay), in which case the SQL indexes must.
    pub(crate) async fn fresh(self: &Arc<Self>, pool: &sqlx::SqlitePool) -> StoreResult<bool> {
        if !self.enabled() {
            return Ok(false);
        }
        if !self.is_built() {
            let wait = self.built.notified();
            self.start_build(pool.clone());
            if !self.is_built() {
                let _ = tokio::time::timeout(READY_WAIT, wait).await;
            }
            if !self.is_built() {
                return Ok(false);
            }
        }
        let _sync = self.sync.lock().await;
        let last = match self.index.read() {
            Ok(g) => match g.as_ref() {
                Some(i) => i.last_change,
                None => return Ok(false),
            },
            Err(_) => return Ok(false),
        };
        let mut tx = pool.begin().await?;
        let max: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'search_changes'), 0)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if max == last {
            return Ok(true);
        }
        let held = self.stats().map_or(0, |s| s.chunks as i64);
        if max < last || max - last > REPLAY_LIMIT.max(held) {
            drop(tx);
            self.start_build(pool.clone());
            return Ok(false);
        }
        let changes: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT id, seq, op FROM search_changes WHERE id > $1 AND id <= $2 ORDER BY id",
        )
        .bind(last)
        .bind(max)
        .fetch_all(&mut *tx)
        .await?;
        if changes.len() as i64 != max - last {
            // Some were pruned before this process saw them.
            drop(tx);
            self.start_build(pool.clone());
            return Ok(false);
        }
        let added: Vec<i64> = changes
            .iter()
            .filter(|c| c.2 == OP_ADDED)
            .map(|c| c.1)
            .collect::<FxHashSet<_>>()
            .into_iter()
            .collect();
        let mut vectored: Vec<i64> = changes
            .iter()
            .filter(|c| c.2 == OP_VECTOR)
            .map(|c| c.1)
            .collect::<FxHashSet<_>>()
            .into_iter()
            .collect();
        vectored.sort_unstable();
        let rows = chunk_rows(&mut tx, &added).await?;
        let rows_len = rows.len();
        let vectors = vector_rows(&mut tx, &vectored).await?;
        tx.commit().await?;

        let apply = move |index: &mut Index| {
            let stemmer = Stemmer::create(Algorithm::English);
            let rows: FxHashMap<i64, ChunkText> = rows.into_iter().map(|r| (r.seq, r)).collect();
            let vectors: FxHashMap<i64, (i64, Vec<f32>)> =
                vectors.into_iter().map(|(s, k, v)| (s, (k, v))).collect();
            for (_, seq, op) in &changes {
                match *op {
                    OP_ADDED => {
                        if let Some(row) = rows.get(seq) {
                            index.add(row, &stemmer);
                        }
                    }
                    OP_REMOVED => index.remove(*seq),
                    _ => {
                        if let Some((key, v)) = vectors.get(seq) {
                            index.put_vector(*seq, *key, v);
                        }
                    }
                }
            }
            index.last_change = max;
        };
        // Tokenising many chunks takes a while: off the async runtime then.
        let heavy = rows_len > 500;
        let me = self.clone();
        let work = move || -> StoreResult<Option<bool>> {
            let mut g = me
                .index
                .write()
                .map_err(|_| StoreError::Internal("search index lock poisoned".into()))?;
            Ok(g.as_mut().map(|index| {
                apply(index);
                index.needs_compaction()
            }))
        };
        let outcome = if heavy {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| StoreError::Internal(format!("search index update: {e}")))??
        } else {
            work()?
        };
        let Some(compact) = outcome else {
            return Ok(false);
        };
        if compact {
            // The current index keeps answering until the new one is swapped in.
            self.start_build(pool.clone());
        }
        Ok(true)
    }

    pub(crate) fn keyword(
        &self,
        terms: &[String],
        allowed: &Allowed,
        limit: usize,
    ) -> Option<Vec<(i64, f64)>> {
        let stemmer = Stemmer::create(Algorithm::English);
        let mut buf = String::new();
        let stems: Vec<String> = terms
            .iter()
            .filter_map(|t| {
                fold(t, &mut buf);
                kept(&buf).then(|| stem(&stemmer, &buf))
            })
            .collect();
        let g = self.index.read().ok()?;
        Some(g.as_ref()?.keyword(&stems, allowed, limit))
    }

    pub(crate) fn nearest(
        &self,
        model_key: i64,
        query: &[f32],
        allowed: &Allowed,
        limit: usize,
    ) -> Option<Vec<(i64, f64)>> {
        let g = self.index.read().ok()?;
        Some(g.as_ref()?.nearest(model_key, query, allowed, limit))
    }
}

/// The vector tables (`chunk_vectors_<dims>`) this database has, by dimension.
async fn vector_tables(conn: &mut sqlx::SqliteConnection) -> StoreResult<Vec<usize>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'chunk\\_vectors\\_%' ESCAPE '\\'",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(names
        .iter()
        .filter_map(|n| n.strip_prefix("chunk_vectors_")?.parse().ok())
        .collect())
}

fn floats(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

const CHUNK_SELECT: &str = "SELECT c.seq, c.text, col.rowid AS collection_key, \
    d.rowid AS document_key FROM chunks c JOIN collections col ON col.id = c.collection_id \
    JOIN documents d ON d.id = c.document_id";

fn chunk_text(row: &sqlx::sqlite::SqliteRow) -> StoreResult<ChunkText> {
    Ok(ChunkText {
        seq: row.try_get("seq")?,
        text: row.try_get("text")?,
        collection: row.try_get("collection_key")?,
        document: row.try_get("document_key")?,
    })
}

async fn chunk_rows(
    conn: &mut sqlx::SqliteConnection,
    seqs: &[i64],
) -> StoreResult<Vec<ChunkText>> {
    let mut out = Vec::with_capacity(seqs.len());
    for part in seqs.chunks(2_000) {
        let sql = format!("{CHUNK_SELECT} WHERE c.seq IN (SELECT value FROM json_each($1))");
        let list = serde_json::to_string(part).unwrap_or_default();
        for row in sqlx::query(&sql).bind(list).fetch_all(&mut *conn).await? {
            out.push(chunk_text(&row)?);
        }
    }
    Ok(out)
}

/// The stored vectors of `seqs`: (seq, model key, vector).
async fn vector_rows(
    conn: &mut sqlx::SqliteConnection,
    seqs: &[i64],
) -> StoreResult<Vec<(i64, i64, Vec<f32>)>> {
    let mut out = Vec::new();
    if seqs.is_empty() {
        return Ok(out);
    }
    for dims in vector_tables(conn).await? {
        let sql = format!(
            "SELECT rowid, model_key, embedding FROM chunk_vectors_{dims} WHERE rowid = $1"
        );
        for &seq in seqs {
            if let Some(row) = sqlx::query(&sql)
                .bind(seq)
                .fetch_optional(&mut *conn)
                .await?
            {
                let blob: Vec<u8> = row.try_get("embedding")?;
                out.push((seq, row.try_get("model_key")?, floats(&blob)));
            }
        }
    }
    Ok(out)
}

/// Read everything, in one snapshot, into a new index.
async fn build(pool: &sqlx::SqlitePool) -> StoreResult<Index> {
    let mut tx = pool.begin().await?;
    let last_change: i64 = sqlx::query_scalar(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'search_changes'), 0)",
    )
    .fetch_one(&mut *tx)
    .await?;
    let mut index = Index {
        last_change,
        ..Index::default()
    };
    let mut after = i64::MIN;
    loop {
        let sql = format!("{CHUNK_SELECT} WHERE c.seq > $1 ORDER BY c.seq LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(BUILD_BATCH)
            .fetch_all(&mut *tx)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("seq")?;
        let texts = rows
            .iter()
            .map(chunk_text)
            .collect::<StoreResult<Vec<_>>>()?;
        // Tokenising is the expensive part: off the async runtime.
        index = tokio::task::spawn_blocking(move || {
            let stemmer = Stemmer::create(Algorithm::English);
            for t in &texts {
                index.add(t, &stemmer);
            }
            index
        })
        .await
        .map_err(|e| StoreError::Internal(format!("search index build: {e}")))?;
    }
    for dims in vector_tables(&mut tx).await? {
        let sql = format!("SELECT rowid, model_key, embedding FROM chunk_vectors_{dims}");
        let mut rows = sqlx::query(&sql).fetch(&mut *tx);
        use futures::TryStreamExt;
        while let Some(row) = rows.try_next().await? {
            let seq: i64 = row.try_get("rowid")?;
            let key: i64 = row.try_get("model_key")?;
            let blob: Vec<u8> = row.try_get("embedding")?;
            index.put_vector(seq, key, &floats(&blob));
        }
    }
    tx.commit().await?;
    index.docs.shrink_to_fit();
    for p in &mut index.postings {
        p.data.shrink_to_fit();
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: i64, collection: i64, text: &str) -> ChunkText {
        ChunkText {
            seq,
            text: text.into(),
            collection,
            document: seq,
        }
    }

    fn allowed(cols: &[i64]) -> Allowed {
        Allowed {
            collections: cols.iter().copied().collect(),
            documents: None,
        }
    }

    #[test]
    fn varints_round_trip() {
        let mut buf = Vec::new();
        for v in [0u32, 1, 127, 128, 16_383, 16_384, u32::MAX] {
            put_varint(&mut buf, v);
        }
        let mut at = 0;
        for v in [0u32, 1, 127, 128, 16_383, 16_384, u32::MAX] {
            assert_eq!(get_varint(&buf, &mut at), v);
        }
    }

    #[test]
    fn terms_fold_case_diacritics_and_stems() {
        assert_eq!(
            index_terms("Running CAFÉ naïve-runs"),
            vec!["run", "cafe", "naiv", "run"]
        );
    }

    #[test]
    fn ascii_text_splits_and_folds_as_unicode_text_does() {
        let long = "x".repeat(MAX_WORD_BYTES + 1);
        let ascii = format!("Hello, WORLD!\tit's 2024_x10s--done\x0bRuns {long} ok");
        let terms = index_terms(&ascii);
        assert_eq!(
            terms,
            vec!["hello", "world", "it", "s", "2024", "x10s", "done", "run", "ok"]
        );
        // The same text with one non-ASCII word takes the char-by-char path.
        let mut unicode = index_terms(&format!("{ascii} Été"));
        assert_eq!(unicode.pop().as_deref(), Some("ete"));
        assert_eq!(unicode, terms);
    }

    #[test]
    fn bm25_ranks_like_fts5_and_respects_access_and_removal() {
        let stemmer = Stemmer::create(Algorithm::English);
        let mut ix = Index::default();
        ix.add(&chunk(1, 10, "the cat sat on the mat"), &stemmer);
        ix.add(&chunk(2, 10, "cats and dogs and cats"), &stemmer);
        ix.add(&chunk(3, 20, "a dog barked at the cat"), &stemmer);
        ix.add(&chunk(4, 10, "nothing to see"), &stemmer);
        let q = index_terms("cats");
        let all = ix.keyword(&q, &allowed(&[10, 20]), 10);
        // Two occurrences in a short chunk beat one.
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 1, 3]);
        // Collection 20 is not readable: its chunk never comes back.
        let some = ix.keyword(&q, &allowed(&[10]), 10);
        assert_eq!(some.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 1]);
        ix.remove(2);
        let after = ix.keyword(&q, &allowed(&[10, 20]), 1);
        assert_eq!(after.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1]);
        // Re-adding a seq replaces its text.
        ix.add(&chunk(1, 10, "only dogs now"), &stemmer);
        assert!(ix.keyword(&q, &allowed(&[10]), 10).is_empty());
    }

    #[test]
    fn quantised_vectors_keep_the_order_of_cosines() {
        let stemmer = Stemmer::create(Algorithm::English);
        let mut ix = Index::default();
        let unit = |v: [f32; 3]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.map(|x| x / n)
        };
        for (seq, v) in [
            (1, [1.0, 0.0, 0.0]),
            (2, [0.8, 0.6, 0.0]),
            (3, [0.0, 1.0, 0.0]),
        ] {
            ix.add(&chunk(seq, 10, "x"), &stemmer);
            ix.put_vector(seq, 7, &unit(v));
        }
        let got = ix.nearest(7, &unit([0.9, 0.1, 0.0]), &allowed(&[10]), 3);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        let exact = unit([0.9, 0.1, 0.0])[0];
        assert!((got[0].1 - f64::from(exact)).abs() < 0.01, "{got:?}");
        // Another model's vectors are not compared.
        assert!(ix
            .nearest(8, &unit([1.0, 0.0, 0.0]), &allowed(&[10]), 3)
            .is_empty());
    }

    #[test]
    fn a_large_set_scanned_on_two_threads_gives_the_same_best() {
        let mut ix = Index::default();
        let n = PARALLEL_SCAN_ROWS + 5_000;
        for seq in 0..n as i64 {
            ix.docs.push(Doc {
                seq,
                collection: 10 + seq % 2,
                document: seq,
                len: 1,
                live: true,
            });
            ix.by_seq.insert(seq, seq as u32);
            // One chunk in each half points along x; the rest along y, more or less.
            let v = if seq == 7 || seq == (n - 3) as i64 {
                [1.0, 0.0, 0.0, 0.0]
            } else {
                let tilt = (seq % 100) as f32 / 400.0;
                [tilt, 1.0, 0.0, 0.0]
            };
            ix.put_vector(seq, 7, &v);
        }
        ix.live = n as u32;
        let got = ix.nearest(7, &[1.0, 0.0, 0.0, 0.0], &allowed(&[10, 11]), 5);
        assert_eq!(got.len(), 5);
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!((got[0].0, got[1].0), (7, (n - 3) as i64), "{got:?}");
        // Odd chunks are in collection 11: not readable, never returned.
        let even = ix.nearest(7, &[1.0, 0.0, 0.0, 0.0], &allowed(&[10]), 5);
        assert!(even.iter().all(|r| r.0 % 2 == 0), "{even:?}");
    }
}
