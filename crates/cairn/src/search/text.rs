//! Text handling for search: the words of a query (never its syntax), snippets with the
//! matched words marked, and word shingles for spotting near-duplicate passages.

use std::collections::HashSet;

use rust_stemmers::{Algorithm, Stemmer};

/// Most words a query contributes to the keyword index (the rest still reach the embedder).
pub const MAX_TERMS: usize = 32;
/// Longest word kept.
const MAX_TERM_CHARS: usize = 64;

/// Common English words: they match nearly every chunk, so searching the keyword index for
/// them costs much and tells little. Kept when a query has nothing else.
const STOPWORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can",
    "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from",
    "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how",
    "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "no",
    "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out",
    "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under",
    "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who",
    "whom", "why", "will", "with", "would", "you", "your", "yours",
];

/// The words of a query.
#[derive(Debug, Clone, Default)]
pub struct Terms {
    /// Lower-case words to look up in the keyword index (stop words dropped when others exist).
    pub index: Vec<String>,
    /// Their stems, for marking matches in snippets.
    pub stems: HashSet<String>,
}

fn stemmer() -> Stemmer {
    Stemmer::create(Algorithm::English)
}

/// Split `text` into words: runs of letters and digits (any script), lower-cased, with the
/// byte range each came from.
pub fn words(text: &str) -> impl Iterator<Item = (usize, usize, String)> + '_ {
    let mut it = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = it.peek() {
            if c.is_alphanumeric() {
                break;
            }
            it.next();
        }
        let &(start, _) = it.peek()?;
        let mut end = start;
        while let Some(&(i, c)) = it.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            end = i + c.len_utf8();
            it.next();
        }
        Some((start, end, text[start..end].to_lowercase()))
    })
}

/// The words of `query`, in order, each once.
pub fn query_terms(query: &str) -> Terms {
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for (_, _, w) in words(query) {
        if w.chars().count() > MAX_TERM_CHARS || !seen.insert(w.clone()) {
            continue;
        }
        all.push(w);
        if all.len() >= MAX_TERMS * 2 {
            break;
        }
    }
    let content: Vec<String> = all
        .iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .cloned()
        .collect();
    let mut index = if content.is_empty() { all } else { content };
    index.truncate(MAX_TERMS);
    let stemmer = stemmer();
    let stems = index.iter().map(|w| stemmer.stem(w).into_owned()).collect();
    Terms { index, stems }
}

/// A passage of about `max_chars` characters of `text` holding the most distinct matched words,
/// cut at word boundaries, and where the matches are in it (offsets in characters).
pub fn snippet(text: &str, stems: &HashSet<String>, max_chars: usize) -> (String, Vec<[usize; 2]>) {
    let stemmer = stemmer();
    let all: Vec<(usize, usize, String)> = words(text).collect();
    // A stem keeps its word's first letters (only endings change), so only words starting like
    // some stem are worth stemming: most words of a chunk are skipped at the cost of a compare.
    let heads: Vec<String> = stems.iter().map(|s| s.chars().take(3).collect()).collect();
    let matches: Vec<(usize, usize, String)> = all
        .iter()
        .filter(|(_, _, w)| heads.iter().any(|h| w.starts_with(h.as_str())))
        .filter_map(|(s, e, w)| {
            let stem = stemmer.stem(w).into_owned();
            stems.contains(&stem).then_some((*s, *e, stem))
        })
        .collect();
    // Byte window [from, to) of about `max_chars` characters.
    let char_len = |a: usize, b: usize| text[a..b].chars().count();
    let mut from = 0;
    if let Some(best) = (0..matches.len()).max_by_key(|&i| {
        let start = matches[i].0;
        let distinct: HashSet<&str> = matches[i..]
            .iter()
            .take_while(|m| char_len(start, m.1) <= max_chars)
            .map(|m| m.2.as_str())
            .collect();
        // More distinct words first; among equals, the earliest.
        (distinct.len(), usize::MAX - i)
    }) {
        // Start a little before the first match, at a word start.
        let lead = max_chars / 6;
        let target = matches[best].0;
        from = target;
        for (s, _, _) in all.iter().rev().filter(|(s, _, _)| *s <= target) {
            if char_len(*s, target) > lead {
                break;
            }
            from = *s;
        }
    }
    let mut to = text.len();
    for (_, e, _) in all.iter().filter(|(s, _, _)| *s >= from) {
        if char_len(from, *e) > max_chars {
            break;
        }
        to = *e;
    }
    if !text[to..].chars().any(char::is_alphanumeric) {
        // Only punctuation and space remain: keep them rather than mark a cut.
        to = text.len();
    }
    if char_len(from, to) > max_chars {
        // One enormous word: cut it at a character boundary.
        to = text[from..]
            .char_indices()
            .nth(max_chars)
            .map(|(i, _)| from + i)
            .unwrap_or(text.len());
    }
    let prefix = if from > 0 { "… " } else { "" };
    let suffix = if to < text.len() { " …" } else { "" };
    let body = text[from..to].trim();
    let trimmed_start = from + (text[from..to].len() - text[from..to].trim_start().len());
    let mut out = String::with_capacity(body.len() + 8);
    out.push_str(prefix);
    out.push_str(body);
    out.push_str(suffix);
    let base = prefix.chars().count();
    let highlights = matches
        .iter()
        .filter(|(s, e, _)| *s >= trimmed_start && *e <= trimmed_start + body.len())
        .map(|(s, e, _)| {
            let start = base + char_len(trimmed_start, *s);
            [start, start + char_len(*s, *e)]
        })
        .collect();
    (out, highlights)
}

/// A cheap, stable 64-bit hash of a word (FNV-1a): shingles are compared, never exposed.
fn word_hash(w: &str) -> u64 {
    w.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Hashes of the word 3-grams of `text`.
pub fn shingles(text: &str) -> HashSet<u64> {
    let ws: Vec<u64> = words(text).map(|(_, _, w)| word_hash(&w)).collect();
    let mut out = HashSet::with_capacity(ws.len());
    if ws.len() < 3 {
        out.insert(ws.iter().fold(7u64, |h, w| h.rotate_left(21) ^ w));
        return out;
    }
    for w in ws.windows(3) {
        out.insert(w[0].rotate_left(42) ^ w[1].rotate_left(21) ^ w[2]);
    }
    out
}

/// Jaccard overlap of two shingle sets.
pub fn overlap(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let common = a.intersection(b).count();
    common as f64 / (a.len() + b.len() - common) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_terms_are_words_not_syntax() {
        let t = query_terms("\"NEAR\"(a* -b) OR 'x'; DROP TABLE chunks; --");
        assert_eq!(t.index, vec!["near", "b", "x", "drop", "table", "chunks"]);
        let t = query_terms("the and of");
        assert_eq!(
            t.index,
            vec!["the", "and", "of"],
            "only stop words: keep them"
        );
        assert!(query_terms("  ¿¡!! ").index.is_empty());
        let t = query_terms("Überweisung café 東京");
        assert_eq!(t.index, vec!["überweisung", "café", "東京"]);
    }

    #[test]
    fn terms_are_capped() {
        let long: String = (0..500).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_terms(&long).index.len(), MAX_TERMS);
    }

    #[test]
    fn snippets_mark_stemmed_matches() {
        let text = "Cairns mark trails. Walkers build cairns on summits, and the marked path \
                    follows them down the valley.";
        let t = query_terms("marking cairn");
        let (s, h) = snippet(text, &t.stems, 400);
        assert_eq!(s, text);
        let marked: Vec<String> = h
            .iter()
            .map(|[a, b]| s.chars().skip(*a).take(b - a).collect())
            .collect();
        assert_eq!(marked, vec!["Cairns", "mark", "cairns", "marked"]);
    }

    #[test]
    fn snippets_find_the_densest_passage_and_stay_on_char_boundaries() {
        let filler = "lorem ipsum dolor ".repeat(40);
        let text = format!("{filler}ünïcödé granite ridge granite {filler}");
        let t = query_terms("granite ridge");
        let (s, h) = snippet(&text, &t.stems, 60);
        assert!(s.starts_with("… ") && s.ends_with(" …"), "{s}");
        assert!(s.contains("granite ridge granite"));
        assert_eq!(h.len(), 3);
        for [a, b] in h {
            let w: String = s.chars().skip(a).take(b - a).collect();
            assert!(w == "granite" || w == "ridge", "{w}");
        }
        // No match: the start of the text.
        let (s, h) = snippet(&text, &query_terms("absent").stems, 30);
        assert!(s.starts_with("lorem") && h.is_empty());
        // One huge word.
        let (s, _) = snippet(&"é".repeat(1000), &HashSet::new(), 10);
        assert_eq!(s, format!("{} …", "é".repeat(10)));
    }

    #[test]
    fn near_duplicates_overlap() {
        let a = shingles("the quick brown fox jumps over the lazy dog again and again");
        let b = shingles("the quick brown fox jumps over the lazy dog again and again!");
        let c = shingles("a completely different passage about granite ridges");
        assert!(overlap(&a, &b) > 0.99);
        assert!(overlap(&a, &c) < 0.1);
    }
}
