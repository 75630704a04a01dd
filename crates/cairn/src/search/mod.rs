//! Hybrid retrieval: keyword candidates (BM25) and vector candidates (cosine) from the store,
//! each already filtered to what the caller may read, fused with weighted Reciprocal Rank
//! Fusion, near-duplicates collapsed, then snippets with the matched words marked.
//!
//! [`search`] takes the store and the embedder rather than the whole server state, so the
//! retrieval evaluation (`cairn eval retrieval`) runs exactly the code the API runs.

pub mod embed;
pub mod eval;
pub mod routes;
pub mod text;

use std::collections::HashMap;
use std::time::Instant;

use cairn_embed::Embedder;
use cairn_store::search::{Candidate, FoundChunk, SearchFilter};
use cairn_store::{Id, Store, StoreError};
use serde::Serialize;

/// How results are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Hybrid,
    Keyword,
    Semantic,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Hybrid, Mode::Keyword, Mode::Semantic];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Keyword => "keyword",
            Mode::Semantic => "semantic",
        }
    }
}

/// Ranking settings (`[search]`).
#[derive(Debug, Clone)]
pub struct Ranking {
    /// RRF's k: larger flattens the difference between ranks.
    pub rrf_k: f64,
    pub keyword_weight: f64,
    pub semantic_weight: f64,
    /// Candidates each index contributes before fusion.
    pub candidates: u32,
    /// Characters of chunk text around the matches in a snippet.
    pub snippet_chars: usize,
    /// Word-shingle overlap (Jaccard) at which two results count as the same passage.
    pub duplicate_overlap: f64,
}

impl Default for Ranking {
    fn default() -> Self {
        Ranking {
            rrf_k: 60.0,
            keyword_weight: 1.0,
            semantic_weight: 1.0,
            candidates: 100,
            snippet_chars: 240,
            duplicate_overlap: 0.8,
        }
    }
}

/// A search to run for one caller.
#[derive(Debug, Clone)]
pub struct Request {
    pub query: String,
    pub mode: Mode,
    pub top_k: u32,
    pub filter: SearchFilter,
    /// The query's vector and its model, when the caller already has it (benchmarks, tests);
    /// otherwise the embedder computes it.
    pub vector: Option<(String, Vec<f32>)>,
}

/// One index's view of a result.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Part {
    /// 1 is best.
    pub rank: u32,
    /// BM25 (keyword) or cosine similarity (semantic).
    pub score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScoreParts {
    pub keyword: Option<Part>,
    pub semantic: Option<Part>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DocumentRef {
    pub id: Id,
    pub collection_id: Id,
    pub title: Option<String>,
    pub filename: String,
    pub kind: String,
    pub created_at: cairn_store::Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub chunk_id: Id,
    pub document: DocumentRef,
    pub ordinal: i32,
    /// Where in the document: page, heading path, time range, speakers…
    pub location: serde_json::Value,
    pub text: String,
    /// A passage of `text` around the matched words.
    pub snippet: String,
    /// The matched words in `snippet`, as `[start, end)` offsets in Unicode scalar values.
    pub highlights: Vec<[usize; 2]>,
    /// The fused score (RRF): only its order means anything.
    pub score: f64,
    pub scores: ScoreParts,
    /// Near-identical passages folded into this one.
    pub duplicates: u32,
    #[serde(skip)]
    pub seq: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub mode: Mode,
    /// The embedding model the semantic part used, when it ran.
    pub model: Option<String>,
    pub results: Vec<Hit>,
    /// Something the caller should know (e.g. semantic search is not configured).
    pub warnings: Vec<String>,
    pub took_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("semantic search needs an embedding model, and none is configured")]
    NoEmbedder,
    #[error("{0}")]
    Embedding(#[from] cairn_embed::EmbedError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The hook for a second-stage reranker (a cross-encoder, an LLM judge…): given the query and
/// the fused results, best first, return them reordered. None is configured by default.
pub trait Reranker: Send + Sync {
    fn rerank<'a>(
        &'a self,
        query: &'a str,
        hits: Vec<Hit>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Hit>> + Send + 'a>>;
}

/// Run `request` for `actor`.
pub async fn search(
    store: &Store,
    embedder: Option<&Embedder>,
    reranker: Option<&dyn Reranker>,
    ranking: &Ranking,
    actor: Id,
    request: &Request,
) -> Result<Outcome, SearchError> {
    let started = Instant::now();
    let mut warnings = Vec::new();
    let mut mode = request.mode;
    if embedder.is_none() && request.vector.is_none() {
        match mode {
            Mode::Semantic => return Err(SearchError::NoEmbedder),
            Mode::Hybrid => {
                mode = Mode::Keyword;
                warnings.push(
                    "Semantic search is off (no embedding model is configured): these are \
                     keyword results."
                        .to_owned(),
                );
            }
            Mode::Keyword => {}
        }
    }
    let top_k = request.top_k.max(1);
    let pool = ranking.candidates.max(top_k);
    let terms = text::query_terms(&request.query);

    let keyword = async {
        if mode == Mode::Semantic {
            return Ok::<_, SearchError>(Vec::new());
        }
        Ok(store
            .keyword_candidates(actor, &terms.index, &request.filter, pool)
            .await?)
    };
    let semantic = async {
        if mode == Mode::Keyword {
            return Ok::<_, SearchError>(Vec::new());
        }
        let (model, vector) = match (&request.vector, embedder) {
            (Some((model, v)), _) => (model.clone(), v.clone()),
            (None, Some(e)) => (e.model_id(), e.embed_one(&request.query).await?),
            (None, None) => return Ok(Vec::new()),
        };
        Ok(store
            .vector_candidates(actor, &model, &vector, &request.filter, pool)
            .await?)
    };
    let (keyword, semantic) = tokio::join!(keyword, semantic);
    let (keyword, semantic) = (keyword?, semantic?);

    let fused = fuse(&keyword, &semantic, mode, ranking);
    // Fetch a few more than asked, so that folding duplicates still fills `top_k`.
    let wanted = usize::try_from(top_k)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .saturating_add(8);
    let seqs: Vec<i64> = fused.iter().take(wanted).map(|f| f.seq).collect();
    let chunks: HashMap<i64, FoundChunk> = store
        .found_chunks(actor, &seqs)
        .await?
        .into_iter()
        .map(|c| (c.seq, c))
        .collect();

    let mut hits: Vec<Hit> = Vec::new();
    let mut shingles: Vec<std::collections::HashSet<u64>> = Vec::new();
    for f in fused.iter().take(wanted) {
        let Some(chunk) = chunks.get(&f.seq) else {
            continue;
        };
        let sh = text::shingles(&chunk.text);
        if let Some(i) = shingles
            .iter()
            .position(|s| text::overlap(s, &sh) >= ranking.duplicate_overlap)
        {
            hits[i].duplicates += 1;
            continue;
        }
        if hits.len() >= usize::try_from(top_k).unwrap_or(usize::MAX) {
            break;
        }
        shingles.push(sh);
        let (snippet, highlights) = text::snippet(&chunk.text, &terms.stems, ranking.snippet_chars);
        hits.push(Hit {
            chunk_id: chunk.id,
            document: DocumentRef {
                id: chunk.document_id,
                collection_id: chunk.collection_id,
                title: chunk.title.clone(),
                filename: chunk.filename.clone(),
                kind: chunk.kind.clone(),
                created_at: chunk.document_created_at,
            },
            ordinal: chunk.ordinal,
            location: chunk.location.0.clone(),
            text: chunk.text.clone(),
            snippet,
            highlights,
            score: f.score,
            scores: ScoreParts {
                keyword: f.keyword,
                semantic: f.semantic,
            },
            duplicates: 0,
            seq: chunk.seq,
        });
    }
    if let Some(r) = reranker {
        hits = r.rerank(&request.query, hits).await;
    }
    Ok(Outcome {
        mode,
        model: if mode == Mode::Keyword {
            None
        } else {
            request
                .vector
                .as_ref()
                .map(|(m, _)| m.clone())
                .or_else(|| embedder.map(Embedder::model_id))
        },
        results: hits,
        warnings,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// A candidate after fusion.
#[derive(Debug, Clone, Copy)]
struct Fused {
    seq: i64,
    score: f64,
    keyword: Option<Part>,
    semantic: Option<Part>,
}

/// Weighted Reciprocal Rank Fusion: each list adds `weight / (k + rank)` for every chunk it
/// ranks. In a single mode the other list is empty, so the order is that list's own.
fn fuse(keyword: &[Candidate], semantic: &[Candidate], mode: Mode, r: &Ranking) -> Vec<Fused> {
    let mut by_seq: HashMap<i64, Fused> = HashMap::new();
    let lists: [(&[Candidate], f64, bool); 2] = [
        (
            keyword,
            if mode == Mode::Semantic {
                0.0
            } else {
                r.keyword_weight
            },
            true,
        ),
        (
            semantic,
            if mode == Mode::Keyword {
                0.0
            } else {
                r.semantic_weight
            },
            false,
        ),
    ];
    for (list, weight, is_keyword) in lists {
        for (i, c) in list.iter().enumerate() {
            let rank = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let e = by_seq.entry(c.seq).or_insert(Fused {
                seq: c.seq,
                score: 0.0,
                keyword: None,
                semantic: None,
            });
            // In a single mode the weight may be set to 0; the order must still follow the list.
            e.score += weight.max(1e-9) / (r.rrf_k + f64::from(rank));
            let part = Some(Part {
                rank,
                score: c.score,
            });
            if is_keyword {
                e.keyword = part;
            } else {
                e.semantic = part;
            }
        }
    }
    let mut out: Vec<Fused> = by_seq.into_values().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.seq.cmp(&b.seq)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(seq: i64) -> Candidate {
        Candidate { seq, score: 1.0 }
    }

    #[test]
    fn rrf_prefers_what_both_lists_rank_well() {
        let r = Ranking::default();
        let kw = [c(1), c(2), c(3)];
        let sem = [c(3), c(4), c(1)];
        let fused = fuse(&kw, &sem, Mode::Hybrid, &r);
        let order: Vec<i64> = fused.iter().map(|f| f.seq).collect();
        // 1: 1/61 + 1/63; 3: 1/63 + 1/61 — tie broken by seq; then 2 (1/62) and 4 (1/62).
        assert_eq!(order, vec![1, 3, 2, 4]);
        assert_eq!(fused[0].keyword.map(|p| p.rank), Some(1));
        assert_eq!(fused[0].semantic.map(|p| p.rank), Some(3));
    }

    #[test]
    fn weights_tilt_the_fusion() {
        let r = Ranking {
            semantic_weight: 3.0,
            ..Ranking::default()
        };
        let fused = fuse(&[c(1)], &[c(2)], Mode::Hybrid, &r);
        assert_eq!(fused[0].seq, 2);
    }

    #[test]
    fn a_single_mode_keeps_its_list_order() {
        let r = Ranking {
            keyword_weight: 0.0,
            ..Ranking::default()
        };
        let fused = fuse(&[c(5), c(6), c(7)], &[], Mode::Keyword, &r);
        let order: Vec<i64> = fused.iter().map(|f| f.seq).collect();
        assert_eq!(order, vec![5, 6, 7]);
    }
}
