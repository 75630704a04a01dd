//! Search figures:
//! - local embedding throughput (256-token chunks) next to the bound the model's arithmetic and
//!   this CPU allow (measured single-precision matrix-multiply rate);
//! - query latency p50/p99 per mode at 10,000 and 100,000 chunks, on SQLite and (when
//!   `CAIRN_BENCH_POSTGRES_URL` is set) PostgreSQL, through the same code `POST /api/search`
//!   runs, the query's own embedding excluded;
//! - end-to-end ingestion with local embeddings (MB/s and chunks/s), through the server.
//!
//! Needs the model directory in `CAIRN_BENCH_MODEL_DIR` (or `CAIRN_TEST_MODEL_DIR`) for the
//! embedding figures; `CAIRN_BENCH_POSTGRES_URL` (an admin URL) adds PostgreSQL, and
//! `CAIRN_BENCH_BACKENDS` chooses (`sqlite`, `postgres`, or both).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use cairn::search::{Mode, Ranking, Request};
use cairn_embed::local::{LocalModel, LocalOptions};
use cairn_store::documents::{ChunkRow, DocumentRow};
use cairn_store::{Id, Json, Store};
use serde_json::json;

const MODEL: &str = "bench/random-384";
const DIMS: usize = 384;

pub fn model_dir() -> Option<PathBuf> {
    ["CAIRN_BENCH_MODEL_DIR", "CAIRN_TEST_MODEL_DIR"]
        .iter()
        .find_map(|k| std::env::var_os(k).filter(|v| !v.is_empty()))
        .map(PathBuf::from)
}

/// A small deterministic generator (xorshift), so runs compare.
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A Zipf-like rank in 0..n (frequent words are frequent, as in real text).
    pub(crate) fn zipf(&mut self, n: usize) -> usize {
        let x = self.unit();
        ((n as f64).powf(x) - 1.0) as usize % n
    }
}

pub(crate) fn vocabulary(n: usize) -> Vec<String> {
    let syllables = [
        "ka", "lo", "mi", "ter", "on", "sa", "rui", "ven", "do", "pel", "ar", "is", "tu", "ne",
        "gra", "bel", "cor", "fi", "han", "jo",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let len = 2 + (i % 3);
            let mut w: String = (0..len)
                .map(|_| syllables[(rng.next() % syllables.len() as u64) as usize])
                .collect();
            w.push_str(&format!("{}", i % 7));
            w
        })
        .collect()
}

fn random_unit(rng: &mut Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIMS).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect();
    cairn_embed::normalize(&mut v);
    v
}

/// Fill `store` with `n` chunks (about 180 words each) with random unit vectors, in documents
/// of 50 chunks in one collection owned by the returned user.
pub(crate) async fn fill(store: &Store, n: usize) -> anyhow::Result<Id> {
    let user = store
        .create_user(&cairn_store::accounts::NewUser {
            email: format!("bench-{}@cairn.invalid", Id::new()),
            display_name: "Bench".into(),
            password_hash: "!".into(),
            role: "member".into(),
            state: "active".into(),
        })
        .await?
        .id;
    fill_for(store, user, n).await?;
    Ok(user)
}

/// `n` chunks (with random vectors) in a new collection of `user`.
pub(crate) async fn fill_for(store: &Store, user: Id, n: usize) -> anyhow::Result<()> {
    let collection = store.create_collection(user, "Bench", "").await?;
    let vocab = vocabulary(20_000);
    let mut rng = Rng(42);
    let per_doc = 50;
    let started = Instant::now();
    for d in 0..n.div_ceil(per_doc) {
        let doc = DocumentRow {
            content_sha256: format!("bench-{d}"),
            ..DocumentRow::queued(
                Id::new(),
                collection.id,
                user,
                format!("doc-{d}.md"),
                "markdown",
            )
        };
        let job = cairn_store::jobs::NewJob {
            kind: "bench".into(),
            subject: None,
            payload: json!({}),
            max_attempts: 1,
            timeout_secs: 60,
        };
        store.insert_document(user, &doc, &job, None).await?;
        let count = per_doc.min(n - d * per_doc);
        let rows: Vec<ChunkRow> = (0..count)
            .map(|o| ChunkRow {
                id: Id::new(),
                document_id: doc.id,
                collection_id: collection.id,
                ordinal: o as i32,
                text: (0..180)
                    .map(|_| vocab[rng.zipf(vocab.len())].as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                token_count: 256,
                location: Json(json!({})),
            })
            .collect();
        store.store_chunks_then(doc.id, None, &rows, false).await?;
        let pending = store.chunks_needing_vectors(doc.id, MODEL, 1000).await?;
        let vectors: Vec<(i64, Vec<f32>)> = pending
            .iter()
            .map(|c| (c.seq, random_unit(&mut rng)))
            .collect();
        store.store_vectors(MODEL, &vectors).await?;
        store.finish_document(doc.id).await?;
    }
    eprintln!(
        "  loaded {n} chunks with vectors in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// p50/p99 in ms of `queries` searches in `mode`.
async fn latency(
    store: &Store,
    user: Id,
    mode: Mode,
    queries: usize,
) -> anyhow::Result<(f64, f64)> {
    let vocab = vocabulary(20_000);
    let mut rng = Rng(7);
    let ranking = Ranking::default();
    let mut took = Vec::with_capacity(queries);
    for i in 0..queries + 20 {
        // Three to five words of middling frequency.
        let words: Vec<&str> = (0..3 + i % 3)
            .map(|_| vocab[50 + rng.zipf(vocab.len() - 50)].as_str())
            .collect();
        let request = Request {
            query: words.join(" "),
            mode,
            top_k: 10,
            filter: Default::default(),
            vector: Some((MODEL.to_owned(), random_unit(&mut rng))),
        };
        let t = Instant::now();
        let out = cairn::search::search(store, None, None, &ranking, user, &request).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(
            mode == Mode::Keyword || !out.results.is_empty(),
            "no results in {mode:?}"
        );
        if i >= 20 {
            took.push(ms);
        }
    }
    took.sort_by(f64::total_cmp);
    Ok((percentile(&took, 0.5), percentile(&took, 0.99)))
}

pub(crate) async fn open(url: &str) -> anyhow::Result<Store> {
    let db = cairn_store::Db::connect(&cairn_store::ConnectOptions::new(url)).await?;
    cairn_store::migrate::run(&db).await?;
    Ok(Store::new(db))
}

/// Query latency at each size on each backend.
async fn query_latency(rows: &mut Vec<serde_json::Value>) -> anyhow::Result<()> {
    // CAIRN_BENCH_BACKENDS: "sqlite", "postgres" or both (default: both when a PostgreSQL
    // admin URL is in CAIRN_BENCH_POSTGRES_URL).
    let wanted = std::env::var("CAIRN_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let mut backends = Vec::new();
    if wanted.contains("sqlite") {
        backends.push(("sqlite", None));
    }
    if let (true, Ok(url)) = (
        wanted.contains("postgres"),
        std::env::var("CAIRN_BENCH_POSTGRES_URL"),
    ) {
        backends.push(("postgres", Some(url)));
    }
    for (backend, admin) in backends {
        for size in [10_000usize, 100_000] {
            let dir = tempfile::tempdir()?;
            let url = match &admin {
                None => format!("sqlite://{}", dir.path().join("bench.db").display()),
                Some(admin) => cairn_store::testing::create_postgres_database(admin).await?,
            };
            eprintln!("search: {backend}, {size} chunks");
            let store = open(&url).await?;
            let user = fill(&store, size).await?;
            // SQLite: with the in-memory index (the default), then on FTS5 and sqlite-vec alone.
            let variants: &[(&str, bool)] = if admin.is_none() {
                &[("memory", true), ("tables", false)]
            } else {
                &[("tables", false)]
            };
            for &(index, on) in variants {
                store.set_search_index(on);
                if on {
                    // Open the database afresh, as a restarted server would, and time the build.
                    let t = Instant::now();
                    anyhow::ensure!(
                        store
                            .search_index_ready(std::time::Duration::from_secs(600))
                            .await?,
                        "the in-memory index was not built"
                    );
                    let build_s = t.elapsed().as_secs_f64();
                    let stats = store.search_index_stats().unwrap_or_default();
                    eprintln!(
                        "  in-memory index: built in {build_s:.2} s, {} chunks, {} terms, {:.1} MB",
                        stats.chunks,
                        stats.terms,
                        stats.bytes as f64 / 1e6
                    );
                    rows.push(json!({
                        "backend": backend, "chunks": size, "index_build_s": build_s,
                        "index_mb": stats.bytes as f64 / 1e6, "index_terms": stats.terms,
                    }));
                }
                for mode in Mode::ALL {
                    let (p50, p99) = latency(&store, user, mode, 200).await?;
                    eprintln!(
                        "  {:<8} {index:<6} p50 {p50:.2} ms  p99 {p99:.2} ms",
                        mode.as_str()
                    );
                    rows.push(json!({
                        "backend": backend, "chunks": size, "mode": mode.as_str(),
                        "index": index, "p50_ms": p50, "p99_ms": p99,
                    }));
                }
            }
            store.db().close().await;
        }
    }
    Ok(())
}

/// Chunks of about 256 tokens per second through the local model, and the bound.
fn embedding_throughput(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let model = LocalModel::load(dir, "all-MiniLM-L6-v2", LocalOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let vocab = vocabulary(5000);
    let mut rng = Rng(3);
    // Text that tokenizes to at least 256 word pieces (truncated there).
    let texts: Vec<String> = (0..64)
        .map(|_| {
            (0..260)
                .map(|_| vocab[rng.zipf(vocab.len())].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    anyhow::ensure!(model.count_tokens(&texts[0]) >= 256);
    model
        .embed_blocking(&texts[..8])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rates = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        for batch in texts.chunks(32) {
            model
                .embed_blocking(batch)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        rates.push(texts.len() as f64 / t.elapsed().as_secs_f64());
    }
    let rate = crate::median(&mut rates);
    // FLOPs per 256-token chunk: 6 layers of Q/K/V/output projections (4·h²), the feed-forward
    // pair (2·h·4h) per token, attention scores and mixing (2·n·h per token), each a multiply
    // and an add.
    let (h, layers, n) = (384.0f64, 6.0, 256.0);
    let per_token = layers * (4.0 * h * h + 2.0 * h * 4.0 * h + 2.0 * n * h) * 2.0;
    let flops_per_chunk = per_token * n;
    let gflops = matmul_gflops()?;
    let bound = gflops * 1e9 / flops_per_chunk;
    Ok(json!({
        "chunks_per_s": rate,
        "gflop_per_chunk": flops_per_chunk / 1e9,
        "matmul_gflops": gflops,
        "bound_chunks_per_s": bound,
        "ratio": rate / bound,
    }))
}

/// What this CPU does in large single-precision matrix products, through the same library:
/// the practical ceiling for the model's arithmetic.
fn matmul_gflops() -> anyhow::Result<f64> {
    use candle_core::{Device, Tensor};
    let n = 1024usize;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let _ = a.matmul(&b)?;
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        let _ = c.sum_all()?.to_scalar::<f32>()?;
        rates.push(2.0 * (n as f64).powi(3) / t.elapsed().as_secs_f64() / 1e9);
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() - 1])
}

pub fn run(
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    json_path: &Path,
) -> anyhow::Result<()> {
    let mut out = serde_json::Map::new();
    if let Some(dir) = model_dir() {
        eprintln!("search: local embedding throughput");
        let e = embedding_throughput(&dir)?;
        eprintln!(
            "  {:.1} chunks/s (256 tokens); bound {:.1} chunks/s at {:.1} GFLOP/s; ratio {:.2}",
            e["chunks_per_s"].as_f64().unwrap_or(0.0),
            e["bound_chunks_per_s"].as_f64().unwrap_or(0.0),
            e["matmul_gflops"].as_f64().unwrap_or(0.0),
            e["ratio"].as_f64().unwrap_or(0.0)
        );
        out.insert("embedding".into(), e);
        eprintln!("search: ingestion with local embeddings");
        let (mb_s, chunks_s) = crate::documents::ingestion_with_embeddings(binary, &dir)?;
        eprintln!("  {mb_s:.2} MB/s, {chunks_s:.1} chunks/s");
        out.insert(
            "ingestion_with_embeddings".into(),
            json!({ "mb_per_s": mb_s, "chunks_per_s": chunks_s }),
        );
    } else {
        eprintln!("search: no model directory (CAIRN_BENCH_MODEL_DIR): embedding figures skipped");
    }
    let mut rows = Vec::new();
    runtime.block_on(query_latency(&mut rows))?;
    out.insert("query_latency".into(), serde_json::Value::Array(rows));
    let path = json_path.with_file_name("search.json");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&out)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("search: figures written to {}", path.display());
    Ok(())
}
