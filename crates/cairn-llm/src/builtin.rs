//! The answerers that need no model.
//!
//! `extractive` picks the sentences of the retrieved passages that share the most (and the
//! rarest) words with the question and lists them, each with its source number, so a fresh
//! install answers from its documents with nothing configured. `mock` returns a fixed
//! demonstration answer citing the first source.

use std::collections::{HashMap, HashSet};

use crate::{Event, EventStream, LlmError};

/// A numbered source passage.
#[derive(Debug, Clone)]
pub struct Passage {
    /// The number the answer cites it by (`[n]`).
    pub n: usize,
    pub text: String,
}

const STOPWORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from",
    "has", "have", "how", "i", "in", "is", "it", "its", "of", "on", "or", "our", "should", "that",
    "the", "their", "there", "this", "to", "was", "we", "what", "when", "where", "which", "who",
    "why", "will", "with", "you", "your",
];

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The first five characters of a word: a cheap stem that matches `restarts` with `restart`.
fn stem(word: &str) -> String {
    word.chars().take(5).collect()
}

/// Sentences of `text`, whitespace collapsed.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '\n' && chars.get(i + 1) == Some(&'\n') {
            push_sentence(&mut out, &mut current);
            continue;
        }
        current.push(if c.is_whitespace() { ' ' } else { c });
        let ends = matches!(c, '.' | '!' | '?' | '。')
            && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        if ends {
            push_sentence(&mut out, &mut current);
        }
    }
    push_sentence(&mut out, &mut current);
    out
}

fn push_sentence(out: &mut Vec<String>, current: &mut String) {
    let s = current.split_whitespace().collect::<Vec<_>>().join(" ");
    current.clear();
    let n = s.split(' ').count();
    if n >= 3 {
        // Very long "sentences" (tables, lists without stops) are cut to stay readable.
        if n > 60 {
            let cut: Vec<&str> = s.split(' ').take(60).collect();
            out.push(format!("{} …", cut.join(" ")));
        } else {
            out.push(s);
        }
    }
}

/// An answer assembled from the passages' sentences that best match `question`, each cited.
/// With no passages, says that nothing was found.
pub fn extractive_answer(question: &str, passages: &[Passage], max_sentences: usize) -> String {
    if passages.is_empty() {
        return NOTHING_FOUND.to_owned();
    }
    let terms: HashSet<String> = words(question)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect();
    // (passage index, position, sentence, stems)
    let mut all: Vec<(usize, usize, String, HashSet<String>)> = Vec::new();
    for (pi, p) in passages.iter().enumerate() {
        for (si, s) in sentences(&p.text).into_iter().enumerate() {
            let stems = words(&s).map(|w| stem(&w)).collect();
            all.push((pi, si, s, stems));
        }
    }
    let mut df: HashMap<&str, usize> = HashMap::new();
    for (_, _, _, stems) in &all {
        for t in &terms {
            if stems.contains(t) {
                *df.entry(t.as_str()).or_default() += 1;
            }
        }
    }
    let n = all.len().max(1) as f64;
    let mut scored: Vec<(f64, usize)> = all
        .iter()
        .enumerate()
        .map(|(i, (pi, _, _, stems))| {
            let s: f64 = terms
                .iter()
                .filter(|t| stems.contains(*t))
                .map(|t| (1.0 + n / (1.0 + df.get(t.as_str()).copied().unwrap_or(0) as f64)).ln())
                .sum();
            // Earlier (better-ranked) passages win ties.
            (s + 0.01 / (1.0 + *pi as f64), i)
        })
        .filter(|(s, _)| *s >= 0.05)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut chosen: Vec<usize> = Vec::new();
    let mut per_passage: HashMap<usize, usize> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (_, i) in &scored {
        let (pi, _, s, _) = &all[*i];
        if chosen.len() >= max_sentences.max(1) {
            break;
        }
        let count = per_passage.entry(*pi).or_default();
        if *count >= 2 || !seen.insert(s.as_str()) {
            continue;
        }
        *count += 1;
        chosen.push(*i);
    }
    if chosen.is_empty() {
        // No sentence shares a word with the question (the passages matched by meaning):
        // lead with the opening of the two best passages.
        for pi in 0..passages.len().min(2) {
            if let Some(i) = all.iter().position(|(p, _, _, _)| *p == pi) {
                chosen.push(i);
            }
        }
    }
    chosen.sort_by_key(|i| (all[*i].0, all[*i].1));
    if chosen.is_empty() {
        return NOTHING_FOUND.to_owned();
    }
    let mut answer = String::from("From the documents:\n\n");
    for i in chosen {
        let (pi, _, s, _) = &all[i];
        answer.push_str(&format!("- {s} [{}]\n", passages[*pi].n));
    }
    answer
}

/// What an answer says when retrieval found nothing relevant.
pub const NOTHING_FOUND: &str = "I could not find anything about this in the selected documents, \
so I cannot answer it from them. Try other words, or choose other collections.";

/// The fixed answer of the `mock` model.
pub fn mock_answer(question: &str, passages: &[Passage]) -> String {
    let asked: String = question.chars().take(80).collect();
    match passages.first() {
        Some(p) => {
            let first = sentences(&p.text).into_iter().next().unwrap_or_default();
            format!(
                "This is a demonstration answer from Cairn's mock model, not a language model. \
                 You asked: \"{asked}\". The best source begins: \"{first}\" [{}]",
                p.n
            )
        }
        None => format!(
            "This is a demonstration answer from Cairn's mock model, not a language model. \
             You asked: \"{asked}\"."
        ),
    }
}

/// `text` as a stream of tokens (a word and the space before it each), then `stop`.
pub fn stream_text(text: String) -> EventStream {
    let mut pieces: Vec<Result<Event, LlmError>> = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_whitespace() && !current.trim().is_empty() {
            pieces.push(Ok(Event::Token(std::mem::take(&mut current))));
        }
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(Ok(Event::Token(current)));
    }
    pieces.push(Ok(Event::Finish("stop".into())));
    Box::pin(futures::stream::iter(pieces))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passages() -> Vec<Passage> {
        vec![
            Passage {
                n: 1,
                text: "The office opens at nine. Parking is behind the building.\n\n\
                       Visitors sign in at the front desk."
                    .into(),
            },
            Passage {
                n: 2,
                text: "To restart the backup service, run systemctl restart cairn-backup. \
                       Backups run nightly at two."
                    .into(),
            },
        ]
    }

    #[test]
    fn picks_the_matching_sentences_and_cites_them() {
        let a = extractive_answer("How do I restart the backup service?", &passages(), 3);
        assert!(
            a.contains("- To restart the backup service, run systemctl restart cairn-backup. [2]"),
            "{a}"
        );
        assert!(!a.contains("Parking"), "{a}");
    }

    #[test]
    fn nothing_found_without_passages() {
        assert_eq!(extractive_answer("anything", &[], 3), NOTHING_FOUND);
    }

    #[test]
    fn falls_back_to_the_best_passages() {
        let a = extractive_answer("zzz qqq", &passages(), 3);
        assert!(a.contains("The office opens at nine. [1]"), "{a}");
        assert!(a.contains("[2]"), "{a}");
    }

    #[test]
    fn mock_cites_the_first_source() {
        let a = mock_answer("Where do visitors go?", &passages());
        assert!(a.ends_with("\"The office opens at nine.\" [1]"), "{a}");
    }

    #[tokio::test]
    async fn streams_words_then_stop() {
        use futures::StreamExt;
        let events: Vec<_> = stream_text("one two  three".into()).collect().await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(Event::Token(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "one two  three");
        assert_eq!(events.len(), 4);
        assert_eq!(events.last(), Some(&Ok(Event::Finish("stop".into()))));
    }
}
