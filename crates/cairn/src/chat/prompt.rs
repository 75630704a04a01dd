//! The prompt: instructions and numbered sources as the system message, as much recent history
//! as fits, then the question — all within the model's context window, with room left for the
//! answer.

use cairn_llm::{tokens, Message, Role};

/// What a message costs beyond its text (role markers), as chat formats count it.
const PER_MESSAGE: u64 = 4;

const INSTRUCTIONS: &str = "You are Cairn, an assistant that answers questions from the \
team's documents. Use only the numbered sources below. After each statement, cite the source \
it comes from with its number in square brackets, like [1] or [2][3]. If the sources do not \
contain the answer, say that the documents do not cover it; never invent an answer or a \
citation.";

const PLAIN_INSTRUCTIONS: &str = "You are Cairn, a helpful assistant for a team. Answer \
clearly and concisely.";

/// A source as the prompt shows it.
pub struct PromptSource<'a> {
    pub label: String,
    pub text: &'a str,
}

/// A prompt ready to send.
#[derive(Debug)]
pub struct Built {
    pub messages: Vec<Message>,
    /// How many of the sources fit (the first ones).
    pub sources_used: usize,
    /// How many history messages fit (the most recent ones).
    pub history_used: usize,
    /// The prompt's size, estimated.
    pub tokens: u64,
}

/// The question does not fit the context window even alone.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong {
    pub question_tokens: u64,
    pub room: u64,
}

/// Build the prompt. `grounded`: answer from sources (even when none fit) rather than freely.
pub fn build(
    sources: &[PromptSource<'_>],
    grounded: bool,
    history: &[Message],
    question: &str,
    context_tokens: u64,
    max_output_tokens: u64,
) -> Result<Built, TooLong> {
    let instructions = if grounded {
        INSTRUCTIONS
    } else {
        PLAIN_INSTRUCTIONS
    };
    let question_tokens = tokens::count(question) + PER_MESSAGE;
    let base = tokens::count(instructions) + PER_MESSAGE + 16;
    let room = context_tokens.saturating_sub(max_output_tokens);
    if base + question_tokens > room {
        return Err(TooLong {
            question_tokens,
            room: room.saturating_sub(base),
        });
    }
    let mut left = room - base - question_tokens;
    let mut system = instructions.to_owned();
    let mut sources_used = 0;
    if grounded {
        system.push_str("\n\nSources:");
        for (i, s) in sources.iter().enumerate() {
            let block = format!("\n\n[{}] {}\n{}", i + 1, s.label, s.text.trim());
            let cost = tokens::count(&block);
            if cost > left {
                break;
            }
            left -= cost;
            system.push_str(&block);
            sources_used += 1;
        }
        if sources_used == 0 {
            // Not even the best passage fits whole: give as much of it as fits, rather than
            // answering that nothing was found.
            if let Some(first) = sources.first() {
                let head = format!("\n\n[1] {}\n", first.label);
                let room = left.saturating_sub(tokens::count(&head) + 8);
                if room >= 32 {
                    let (cut, _) = tokens::truncate(first.text.trim(), room);
                    let block = format!("{head}{cut} …");
                    left = left.saturating_sub(tokens::count(&block));
                    system.push_str(&block);
                    sources_used = 1;
                }
            }
            if sources_used == 0 {
                system.push_str("\n\n(none)");
            }
        }
    }
    // The most recent history that still fits, kept in order.
    let mut kept: Vec<&Message> = Vec::new();
    for m in history.iter().rev() {
        let cost = tokens::count(&m.content) + PER_MESSAGE;
        if cost > left {
            break;
        }
        left -= cost;
        kept.push(m);
    }
    kept.reverse();
    let mut messages = Vec::with_capacity(kept.len() + 2);
    messages.push(Message::new(Role::System, system));
    let history_used = kept.len();
    messages.extend(kept.into_iter().cloned());
    messages.push(Message::new(Role::User, question));
    Ok(Built {
        messages,
        sources_used,
        history_used,
        tokens: room - left,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(n: usize, words: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("source {i} {}", "lorem ipsum ".repeat(words)))
            .collect()
    }

    #[test]
    fn numbers_sources_and_fits_the_window() {
        let texts = sources(10, 200);
        let srcs: Vec<PromptSource<'_>> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| PromptSource {
                label: format!("Doc {i}, page {}", i + 1),
                text: t,
            })
            .collect();
        let history = vec![
            Message::new(Role::User, "earlier question"),
            Message::new(Role::Assistant, "earlier answer"),
        ];
        let built = build(&srcs, true, &history, "What now?", 2048, 512).unwrap();
        assert!(
            built.sources_used >= 2 && built.sources_used < 10,
            "{built:?}"
        );
        assert!(built.tokens <= 2048 - 512);
        let system = &built.messages[0].content;
        assert!(system.contains("[1] Doc 0, page 1\nsource 0"));
        assert!(!system.contains(&format!("[{}]", built.sources_used + 1)));
        assert_eq!(built.messages.last().unwrap().content, "What now?");

        // Plenty of room: everything fits, history in order.
        let built = build(&srcs, true, &history, "What now?", 100_000, 1000).unwrap();
        assert_eq!((built.sources_used, built.history_used), (10, 2));
        assert_eq!(built.messages[1].content, "earlier question");
        assert_eq!(built.messages[2].content, "earlier answer");
    }

    #[test]
    fn a_question_larger_than_the_window_is_refused() {
        let q = "word ".repeat(5000);
        let err = build(&[], true, &[], &q, 4096, 1024).unwrap_err();
        assert!(err.question_tokens > 4096);
    }

    #[test]
    fn the_best_source_is_cut_to_fit_rather_than_dropped() {
        let long = "lorem ipsum ".repeat(2000);
        let srcs = [PromptSource {
            label: "Big".into(),
            text: &long,
        }];
        let built = build(&srcs, true, &[], "What?", 1024, 256).unwrap();
        assert_eq!(built.sources_used, 1);
        assert!(built.tokens <= 1024 - 256, "{}", built.tokens);
        assert!(built.messages[0].content.contains("[1] Big\nlorem ipsum"));
        assert!(built.messages[0].content.ends_with(" …"));
    }

    #[test]
    fn ungrounded_prompts_have_no_sources() {
        let built = build(&[], false, &[], "Hello", 4096, 1024).unwrap();
        assert!(!built.messages[0].content.contains("Sources"));
    }
}
