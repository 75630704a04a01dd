//! `cairn eval retrieval`: retrieval quality over a dataset in BEIR layout (`corpus.jsonl`,
//! `queries.jsonl`, `qrels/test.tsv`), measured as nDCG@10, recall@100 and MRR@10 for each
//! search mode.
//!
//! The corpus goes through Cairn's own chunker into a throwaway store, is embedded with the
//! configured model, and every query runs through [`super::search`] exactly as the API runs
//! it. A document's rank is the rank of its best chunk.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use cairn_ingest::Kind;
use cairn_store::documents::{ChunkRow, DocumentRow};
use cairn_store::{Id, Json, Store};
use serde::{Deserialize, Serialize};

use super::{Mode, Request};
use crate::app::AppState;

#[derive(Deserialize)]
struct CorpusLine {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// A dataset read from disk.
pub struct Dataset {
    pub corpus: Vec<(String, String, String)>,
    pub queries: Vec<(String, String)>,
    /// query id → (corpus id → relevance grade)
    pub qrels: HashMap<String, HashMap<String, u32>>,
}

fn jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not a valid record", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

impl Dataset {
    /// Read `dir`; with `max_queries`, keep only that many of the judged queries.
    pub fn load(dir: &Path, max_queries: Option<usize>) -> anyhow::Result<Dataset> {
        let corpus: Vec<CorpusLine> = jsonl(&dir.join("corpus.jsonl"))?;
        let queries: Vec<QueryLine> = jsonl(&dir.join("queries.jsonl"))?;
        let qrels_path = dir.join("qrels").join("test.tsv");
        let text = std::fs::read_to_string(&qrels_path)
            .with_context(|| format!("cannot read {}", qrels_path.display()))?;
        let mut qrels: HashMap<String, HashMap<String, u32>> = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() < 3 || (n == 0 && cols[0] == "query-id") {
                continue;
            }
            let grade: u32 = cols[2].trim().parse().with_context(|| {
                format!(
                    "{}:{}: the score is not a whole number",
                    qrels_path.display(),
                    n + 1
                )
            })?;
            if grade > 0 {
                qrels
                    .entry(cols[0].to_owned())
                    .or_default()
                    .insert(cols[1].to_owned(), grade);
            }
        }
        let mut queries: Vec<(String, String)> = queries
            .into_iter()
            .filter(|q| qrels.contains_key(&q.id))
            .map(|q| (q.id, q.text))
            .collect();
        if let Some(n) = max_queries {
            queries.truncate(n);
        }
        anyhow::ensure!(!queries.is_empty(), "no query has a relevance judgement");
        Ok(Dataset {
            corpus: corpus
                .into_iter()
                .map(|c| (c.id, c.title, c.text))
                .collect(),
            queries,
            qrels,
        })
    }
}

/// Scores of one mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeScores {
    pub mode: Mode,
    pub ndcg_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
    pub queries: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// nDCG@k of `ranked` corpus ids against graded judgements.
pub fn ndcg(ranked: &[String], judged: &HashMap<String, u32>, k: usize) -> f64 {
    let gain = |g: u32| f64::from(2u32.saturating_pow(g).saturating_sub(1));
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, id)| gain(*judged.get(id).unwrap_or(&0)) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<u32> = judged.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| gain(*g) / ((i + 2) as f64).log2())
        .sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

/// Share of the relevant documents found in the first `k`.
pub fn recall(ranked: &[String], judged: &HashMap<String, u32>, k: usize) -> f64 {
    if judged.is_empty() {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|id| judged.contains_key(*id))
        .count();
    found as f64 / judged.len() as f64
}

/// 1 / rank of the first relevant document within `k` (0 when none).
pub fn reciprocal_rank(ranked: &[String], judged: &HashMap<String, u32>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|id| judged.contains_key(id))
        .map(|i| 1.0 / (i + 1) as f64)
        .unwrap_or(0.0)
}

/// Load `dataset` into `state`'s (throwaway) store: one collection, one document per corpus
/// entry, chunked like an upload, then embedded when a model is configured. Returns the
/// account that owns it and the corpus id of each document.
pub async fn load_corpus(
    state: &AppState,
    dataset: &Dataset,
    progress: bool,
) -> anyhow::Result<(Id, HashMap<Id, String>)> {
    let store = &state.store;
    let user = store
        .create_user(&cairn_store::accounts::NewUser {
            email: format!("eval-{}@cairn.invalid", Id::new()),
            display_name: "Retrieval evaluation".into(),
            password_hash: "!".into(),
            role: "member".into(),
            state: "active".into(),
        })
        .await?
        .id;
    let collection = store.create_collection(user, "Evaluation", "").await?;
    let options = crate::documents::chunk_options(&state.config);
    let limits = crate::documents::limits(&state.config);
    let mut docs = HashMap::new();
    let started = Instant::now();
    let mut chunks_total = 0usize;
    for (i, (cid, title, text)) in dataset.corpus.iter().enumerate() {
        let body = if title.is_empty() {
            text.clone()
        } else {
            format!("{title}\n\n{text}")
        };
        let doc = DocumentRow {
            size_bytes: i64::try_from(body.len()).unwrap_or(i64::MAX),
            content_sha256: format!("eval-{i}"),
            ..DocumentRow::queued(
                Id::new(),
                collection.id,
                user,
                format!("{cid}.txt"),
                Kind::Text.as_str(),
            )
        };
        let job = crate::documents::ingest_job(&state.config, doc.id);
        store.insert_document(user, &doc, &job, None).await?;
        let parsed = cairn_ingest::parse(Kind::Text, body.as_bytes(), &limits)
            .with_context(|| format!("corpus entry {cid}"))?;
        let rows: Vec<ChunkRow> = cairn_ingest::chunk::chunk(&parsed, &options)
            .into_iter()
            .map(|c| ChunkRow {
                id: Id::new(),
                document_id: doc.id,
                collection_id: collection.id,
                ordinal: i32::try_from(c.ordinal).unwrap_or(i32::MAX),
                token_count: i32::try_from(c.token_count).unwrap_or(i32::MAX),
                location: Json(serde_json::to_value(&c.location).unwrap_or_default()),
                text: c.text,
            })
            .collect();
        chunks_total += rows.len();
        let title = (!title.is_empty()).then_some(title.as_str());
        store.store_chunks(doc.id, title, &rows).await?;
        docs.insert(doc.id, cid.clone());
    }
    if progress {
        eprintln!(
            "indexed {} documents ({} chunks) for keywords in {:.1} s",
            dataset.corpus.len(),
            chunks_total,
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(embedder) = &state.embedder {
        let started = Instant::now();
        let model = embedder.model_id();
        store
            .set_collection_embedding(collection.id, &model, embedder.dimensions())
            .await?;
        let mut done = 0usize;
        loop {
            let pending = store.any_chunks_needing_vectors(&model, 256).await?;
            if pending.is_empty() {
                break;
            }
            let texts = pending.iter().map(|c| c.text.clone()).collect();
            let vectors = embedder.embed(texts).await?;
            let pairs: Vec<(i64, Vec<f32>)> = pending.iter().map(|c| c.seq).zip(vectors).collect();
            store.store_vectors(&model, &pairs).await?;
            done += pairs.len();
            if progress {
                eprint!(
                    "\rembedded {done}/{chunks_total} chunks ({:.1}/s)",
                    done as f64 / started.elapsed().as_secs_f64().max(1e-9)
                );
            }
        }
        if progress {
            eprintln!();
        }
    }
    Ok((user, docs))
}

/// Run every query in `mode`; `None` when the mode cannot run (no embedding model).
pub async fn score_mode(
    state: &AppState,
    store: &Store,
    user: Id,
    docs: &HashMap<Id, String>,
    dataset: &Dataset,
    mode: Mode,
) -> anyhow::Result<Option<ModeScores>> {
    if mode != Mode::Keyword && state.embedder.is_none() {
        return Ok(None);
    }
    let ranking = &state.config.search.ranking;
    let (mut ndcg_sum, mut recall_sum, mut rr_sum) = (0.0, 0.0, 0.0);
    let mut took = Vec::with_capacity(dataset.queries.len());
    for (qid, text) in &dataset.queries {
        let request = Request {
            query: text.clone(),
            mode,
            top_k: 100,
            filter: Default::default(),
            vector: None,
        };
        let t = Instant::now();
        let outcome = super::search(
            store,
            state.embedder.as_ref(),
            None,
            ranking,
            user,
            &request,
        )
        .await
        .with_context(|| format!("query {qid}"))?;
        took.push(t.elapsed().as_secs_f64() * 1000.0);
        let mut seen = HashSet::new();
        let ranked: Vec<String> = outcome
            .results
            .iter()
            .filter_map(|h| docs.get(&h.document.id))
            .filter(|cid| seen.insert(cid.as_str()))
            .cloned()
            .collect();
        let judged = dataset.qrels.get(qid).cloned().unwrap_or_default();
        ndcg_sum += ndcg(&ranked, &judged, 10);
        recall_sum += recall(&ranked, &judged, 100);
        rr_sum += reciprocal_rank(&ranked, &judged, 10);
    }
    let n = dataset.queries.len() as f64;
    took.sort_by(f64::total_cmp);
    let pct = |p: f64| took[((took.len() as f64 - 1.0) * p).round() as usize];
    Ok(Some(ModeScores {
        mode,
        ndcg_at_10: ndcg_sum / n,
        recall_at_100: recall_sum / n,
        mrr_at_10: rr_sum / n,
        queries: dataset.queries.len(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    }))
}

/// The table `cairn eval retrieval` prints.
pub fn table(scores: &[ModeScores]) -> String {
    let mut out = String::from(
        "| mode     | nDCG@10 | recall@100 | MRR@10 | queries | p50 ms | p99 ms |\n\
         |----------|---------|------------|--------|---------|--------|--------|\n",
    );
    for s in scores {
        out.push_str(&format!(
            "| {:<8} | {:>7.4} | {:>10.4} | {:>6.4} | {:>7} | {:>6.1} | {:>6.1} |\n",
            s.mode.as_str(),
            s.ndcg_at_10,
            s.recall_at_100,
            s.mrr_at_10,
            s.queries,
            s.p50_ms,
            s.p99_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(ids: &[(&str, u32)]) -> HashMap<String, u32> {
        ids.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    fn ranked(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let j = judged(&[("a", 1), ("b", 1)]);
        // Perfect ranking.
        assert!((ndcg(&ranked(&["a", "b", "x"]), &j, 10) - 1.0).abs() < 1e-12);
        // Relevant at ranks 2 and 3: (1/log2 3 + 1/log2 4) / (1 + 1/log2 3).
        let expected = (1.0 / 3f64.log2() + 0.5) / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg(&ranked(&["x", "a", "b"]), &j, 10) - expected).abs() < 1e-12);
        assert_eq!(recall(&ranked(&["x", "a"]), &j, 100), 0.5);
        assert_eq!(recall(&ranked(&["x", "a"]), &j, 1), 0.0);
        assert_eq!(
            reciprocal_rank(&ranked(&["x", "y", "b"]), &j, 10),
            1.0 / 3.0
        );
        assert_eq!(reciprocal_rank(&ranked(&["x"]), &j, 10), 0.0);
        // Grades: a grade-2 document first is worth more than a grade-1 one.
        let g = judged(&[("a", 2), ("b", 1)]);
        assert!(ndcg(&ranked(&["a", "b"]), &g, 10) > ndcg(&ranked(&["b", "a"]), &g, 10));
        assert_eq!(ndcg(&ranked(&["x"]), &HashMap::new(), 10), 0.0);
    }
}
