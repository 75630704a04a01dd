//! Chunking behaviour on parsed documents, and throughput.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use cairn_ingest::chunk::{chunk, chunk_with, count_tokens, Chunk, ChunkOptions};
use cairn_ingest::{parse, Block, Kind, Limits, Location, Parsed, Role};

fn sentence(n: usize) -> String {
    format!("Sentence number {n} talks about retrieval and chunking in plain words.")
}

fn paragraph(from: usize, sentences: usize) -> String {
    (from..from + sentences)
        .map(sentence)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn token_counts_are_a_reasonable_approximation() {
    assert_eq!(count_tokens(""), 0);
    assert_eq!(count_tokens("Hello, world!"), 4);
    assert_eq!(count_tokens("internationalization"), 5);
    assert_eq!(count_tokens("日本語"), 3);
    assert_eq!(count_tokens("  café  au lait "), 3);
    // ASCII text is counted byte by byte; the same text with one more (non-ASCII) word takes
    // the character path and must count exactly one token more.
    for text in [
        "Hello, world!\t(x = 42)\r\n",
        "a\x0bb\x0cc -- internationalization_2024",
        "  ",
    ] {
        assert_eq!(
            count_tokens(&format!("{text} é")),
            count_tokens(text) + 1,
            "{text:?}"
        );
    }
}

#[test]
fn chunks_respect_sizes_and_overlap() {
    let text: String = (0..40)
        .map(|p| paragraph(p * 10, 10))
        .collect::<Vec<_>>()
        .join("\n\n");
    let parsed = parse(Kind::Text, text.as_bytes(), &Limits::default()).unwrap();
    let options = ChunkOptions::default();
    let chunks = chunk(&parsed, &options);
    assert!(chunks.len() > 5);
    for (index, c) in chunks.iter().enumerate() {
        assert_eq!(c.ordinal as usize, index);
        assert!(
            c.token_count as usize <= options.max_tokens,
            "chunk {index}: {}",
            c.token_count
        );
        assert_eq!(c.token_count as usize, count_tokens(&c.text));
    }
    for c in &chunks[..chunks.len() - 1] {
        assert!(
            c.token_count as usize >= options.target_tokens / 2,
            "{}",
            c.token_count
        );
    }
    for pair in chunks.windows(2) {
        let (previous, next) = (&pair[0].text, &pair[1].text);
        let head: String = next.chars().take(60).collect();
        assert!(
            previous.contains(&head),
            "chunk should start with the previous tail: {head:?}"
        );
    }
}

#[test]
fn oversized_blocks_split_at_sentences() {
    let text = paragraph(0, 200);
    let parsed = parse(Kind::Text, text.as_bytes(), &Limits::default()).unwrap();
    let chunks = chunk(&parsed, &ChunkOptions::default());
    assert!(chunks.len() > 2);
    for c in &chunks {
        assert!(c.token_count <= 512);
        assert!(c.text.starts_with("Sentence number"), "{}", &c.text[..40]);
        assert!(
            c.text.ends_with("words."),
            "{}",
            &c.text[c.text.len() - 40..]
        );
    }
}

fn markdown_doc() -> String {
    let mut doc = String::from("# Guide\n\n");
    for section in 0..4 {
        doc.push_str(&format!("## Part {section}\n\n"));
        for p in 0..6 {
            doc.push_str(&paragraph(section * 100 + p * 5, 5));
            doc.push_str("\n\n");
        }
        doc.push_str(&format!("### Detail {section}\n\nShort detail.\n\n"));
    }
    doc
}

#[test]
fn headings_start_chunks_and_give_context() {
    let parsed = parse(
        Kind::Markdown,
        markdown_doc().as_bytes(),
        &Limits::default(),
    )
    .unwrap();
    let chunks = chunk(&parsed, &ChunkOptions::default());
    for section in 1..4 {
        let heading = format!("Part {section}");
        let starts = chunks.iter().find(|c| c.text.contains(&heading)).unwrap();
        assert!(
            starts.text.starts_with(&heading),
            "a section heading opens its chunk: {:?}",
            &starts.text[..30]
        );
        assert_eq!(starts.location.heading_path, ["Guide", heading.as_str()]);
    }
    let deep = chunks
        .iter()
        .find(|c| c.text.contains("Short detail"))
        .unwrap();
    assert!(deep
        .location
        .heading_path
        .starts_with(&["Guide".to_owned()]));
    assert!(
        chunks
            .iter()
            .all(|c| !c.text.trim_end().ends_with("Detail 0")),
        "no chunk ends on a heading"
    );
}

fn located(text: &str, location: Location, role: Role) -> Block {
    Block {
        text: text.to_owned(),
        role,
        location,
    }
}

#[test]
fn page_ranges_are_carried() {
    let blocks = (1..=6)
        .map(|page| {
            located(
                &sentence(page),
                Location {
                    page: Some(page as u32),
                    ..Location::default()
                },
                Role::Paragraph,
            )
        })
        .collect();
    let parsed = Parsed {
        title: None,
        blocks,
    };
    let options = ChunkOptions {
        target_tokens: 120,
        overlap_tokens: 0,
        max_tokens: 200,
    };
    let chunks = chunk(&parsed, &options);
    let ranges: Vec<_> = chunks
        .iter()
        .map(|c| (c.location.page_start, c.location.page_end))
        .collect();
    // Each page holds 16 tokens: a new page starts a new chunk once the chunk
    // is more than a quarter full (30 tokens), so after two pages.
    assert_eq!(count_tokens(&sentence(1)), 16);
    assert_eq!(
        ranges,
        [(Some(1), Some(2)), (Some(3), Some(4)), (Some(5), Some(6))]
    );
}

#[test]
fn transcripts_keep_time_ranges_and_speakers() {
    let mut vtt = String::from("WEBVTT\n\n");
    for i in 0..60u64 {
        let speaker = ["Ada", "Grace", "Linus"][(i / 2 % 3) as usize];
        vtt.push_str(&format!(
            "{:02}:{:02}.000 --> {:02}:{:02}.500\n<v {speaker}>{}\n\n",
            i / 60,
            i % 60,
            i / 60,
            i % 60,
            sentence(i as usize)
        ));
    }
    let parsed = parse(Kind::Vtt, vtt.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(
        parsed.blocks.len(),
        30,
        "consecutive cues of a speaker merge"
    );
    let options = ChunkOptions {
        target_tokens: 100,
        overlap_tokens: 20,
        max_tokens: 150,
    };
    let chunks = chunk(&parsed, &options);
    assert!(chunks.len() > 3);
    let first = &chunks[0].location;
    assert_eq!(first.start_ms, Some(0));
    assert_eq!(first.speakers[..2], ["Ada".to_owned(), "Grace".to_owned()]);
    let last = &chunks.last().unwrap().location;
    assert_eq!(last.end_ms, Some(59_500));
    for pair in chunks.windows(2) {
        assert!(pair[0].location.start_ms <= pair[1].location.start_ms);
    }
}

#[test]
fn spreadsheet_rows_and_sheets() {
    let csv: String = std::iter::once("id,name,notes".to_owned())
        .chain((1..=200).map(|i| format!("{i},person {i},{}", sentence(i))))
        .collect::<Vec<_>>()
        .join("\n");
    let parsed = parse(Kind::Csv, csv.as_bytes(), &Limits::default()).unwrap();
    let chunks = chunk(&parsed, &ChunkOptions::default());
    assert_eq!(chunks[0].location.row_start, Some(2));
    assert_eq!(chunks.last().unwrap().location.row_end, Some(201));
    let mut blocks = parsed.blocks[..20].to_vec();
    for block in &mut blocks[10..] {
        block.location.sheet = Some("B".into());
    }
    for block in &mut blocks[..10] {
        block.location.sheet = Some("A".into());
    }
    let chunks = chunk(
        &Parsed {
            title: None,
            blocks,
        },
        &ChunkOptions::default(),
    );
    let sheets: Vec<_> = chunks.iter().map(|c| c.location.sheet.as_deref()).collect();
    assert_eq!(
        sheets,
        [Some("A"), Some("B")],
        "a new sheet starts a new chunk"
    );
}

#[test]
fn a_custom_token_counter_is_used() {
    let text = paragraph(0, 50);
    let parsed = parse(Kind::Text, text.as_bytes(), &Limits::default()).unwrap();
    let bytes = |s: &str| s.len();
    let options = ChunkOptions {
        target_tokens: 300,
        overlap_tokens: 0,
        max_tokens: 400,
    };
    let chunks: Vec<Chunk> = chunk_with(&parsed, &options, &bytes);
    for c in &chunks {
        assert!(
            c.text.len() <= c.token_count as usize && c.token_count <= 400,
            "{} {}",
            c.text.len(),
            c.token_count
        );
    }
}

#[test]
fn chunk_locations_serialise_compactly() {
    let parsed = Parsed {
        title: None,
        blocks: vec![located("hello", Location::default(), Role::Paragraph)],
    };
    let chunks = chunk(&parsed, &ChunkOptions::default());
    let json = serde_json::to_string(&chunks[0]).unwrap();
    assert_eq!(
        json,
        r#"{"ordinal":0,"text":"hello","token_count":1,"location":{}}"#
    );
}

/// Throughput of parse + chunk on ~20 MB of text and Markdown. Run in release
/// to get meaningful numbers:
/// `cargo test --release -p cairn-ingest --test chunking throughput -- --nocapture`
#[test]
fn throughput() {
    let size = 20 * 1024 * 1024;
    let mut text = String::with_capacity(size + 4096);
    let mut n = 0;
    while text.len() < size {
        text.push_str(&paragraph(n, 6));
        text.push_str("\n\n");
        n += 6;
    }
    let mut markdown = String::with_capacity(size + 4096);
    let mut section = 0;
    while markdown.len() < size {
        markdown.push_str(&format!(
            "## Section {section}\n\n{}\n\n- {}\n- {}\n\n",
            paragraph(section, 8),
            sentence(1),
            sentence(2)
        ));
        section += 1;
    }
    for (kind, input) in [(Kind::Text, &text), (Kind::Markdown, &markdown)] {
        let started = Instant::now();
        let parsed = parse(kind, input.as_bytes(), &Limits::default()).unwrap();
        let parsed_at = started.elapsed();
        let chunks = chunk(&parsed, &ChunkOptions::default());
        let elapsed = started.elapsed();
        let mb = input.len() as f64 / 1e6;
        println!(
            "{kind}: {mb:.1} MB parse {parsed_at:?} + chunk {:?} = {:.1} MB/s ({} chunks)",
            elapsed - parsed_at,
            mb / elapsed.as_secs_f64(),
            chunks.len()
        );
        if !cfg!(debug_assertions) {
            assert!(mb / elapsed.as_secs_f64() > 20.0);
        }
    }
}
