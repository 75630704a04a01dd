//! Token estimates, for providers that report no usage and for fitting a prompt into a
//! model's context window: OpenAI's `cl100k_base` encoding (through `tiktoken-rs`). Other
//! models' tokenizers differ by a few percent, which is why an estimate is marked as one.

/// Tokens in `text`.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// Load the encoding now (about a tenth of a second), so the first request does not wait.
pub fn warm_up() {
    let _ = count("warm up");
}

/// `text` cut to at most `max` tokens (at a token boundary), and whether it was cut.
pub fn truncate(text: &str, max: u64) -> (String, bool) {
    let bpe = tiktoken_rs::cl100k_base_singleton();
    let ids = bpe.encode_ordinary(text);
    if ids.len() as u64 <= max {
        return (text.to_owned(), false);
    }
    match bpe.decode(&ids[..max as usize]) {
        Ok(s) => (s, true),
        // A cut inside a multi-byte character: fall back to a character-based cut.
        Err(_) => (text.chars().take((max * 3) as usize).collect(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_cl100k() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        assert!(count(&"word ".repeat(100)) >= 100);
    }

    #[test]
    fn truncates_at_a_boundary() {
        let (t, cut) = truncate("one two three four five", 2);
        assert!(cut);
        assert_eq!(t, "one two");
        let (t, cut) = truncate("short", 10);
        assert!(!cut);
        assert_eq!(t, "short");
    }
}
