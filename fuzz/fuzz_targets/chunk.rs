//! Fuzz the chunker on text parsed as Markdown (headings, lists, code), with
//! small sizes so that splitting and overlap paths are exercised; checks the
//! hard cap holds.
#![no_main]

use cairn_ingest::chunk::{chunk, ChunkOptions};
use cairn_ingest::{parse, Kind, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&size, text)) = data.split_first() else {
        return;
    };
    let Ok(parsed) = parse(Kind::Markdown, text, &Limits::default()) else {
        return;
    };
    let max_tokens = usize::from(size % 64) + 1;
    let options = ChunkOptions { target_tokens: max_tokens * 3 / 4 + 1, overlap_tokens: max_tokens / 4, max_tokens };
    for piece in chunk(&parsed, &options) {
        assert!(piece.token_count as usize <= max_tokens, "chunk over the hard cap");
    }
});
