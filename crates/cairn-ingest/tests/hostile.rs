//! Hostile and oversized input: deep nesting, huge lines, bad encodings.
//! Nothing may panic, overflow the stack or take quadratic time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use cairn_ingest::chunk::{chunk, ChunkOptions};
use cairn_ingest::{parse, Kind, Limits, ParseError};

/// Generous in debug builds, where dependencies are optimised but this crate is not.
fn budget(seconds: u64) -> Duration {
    Duration::from_secs(if cfg!(debug_assertions) {
        seconds * 5
    } else {
        seconds
    })
}

#[test]
fn deeply_nested_html_is_fine() {
    let depth = 100_000;
    let html = format!(
        "<html><body>{}deep text{}<p>after</p></body></html>",
        "<div>".repeat(depth),
        "</div>".repeat(depth)
    );
    let started = Instant::now();
    let parsed = parse(Kind::Html, html.as_bytes(), &Limits::default()).unwrap();
    println!("100k nested divs parsed in {:?}", started.elapsed());
    assert!(started.elapsed() < budget(10));
    let texts: Vec<_> = parsed.blocks.iter().map(|b| b.text.as_str()).collect();
    assert_eq!(texts, ["deep text", "after"]);
}

#[test]
fn deeply_nested_inline_html_is_fine() {
    let html = format!(
        "<p>{}x</p>{}",
        "<b><i><span>".repeat(30_000),
        "<p>p".repeat(10_000)
    );
    let started = Instant::now();
    let parsed = parse(Kind::Html, html.as_bytes(), &Limits::default()).unwrap();
    println!(
        "90k nested inline elements parsed in {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < budget(10));
    assert_eq!(parsed.blocks[0].text, "x");
    assert_eq!(parsed.blocks.len(), 10_001);
}

#[test]
fn deeply_nested_markdown_is_fine() {
    for doc in [
        ">".repeat(100_000) + " quoted",
        "- ".repeat(50_000) + "item",
        "[".repeat(100_000),
    ] {
        let started = Instant::now();
        let parsed = parse(Kind::Markdown, doc.as_bytes(), &Limits::default()).unwrap();
        assert!(started.elapsed() < budget(10), "{:?}", started.elapsed());
        assert!(!parsed.blocks.is_empty());
    }
}

#[test]
fn deeply_nested_xml_in_office_files_is_fine() {
    // 50k levels: about 0.7 MB of XML, under the size where the ratio limit applies.
    let body = format!(
        "{}<w:p><w:r><w:t>deep</w:t></w:r></w:p>{}",
        "<w:sdt>".repeat(50_000),
        "</w:sdt>".repeat(50_000)
    );
    let doc = format!(r#"<w:document xmlns:w="w"><w:body>{body}</w:body></w:document>"#);
    let bytes = zip_one("word/document.xml", doc.as_bytes());
    let parsed = parse(Kind::Docx, &bytes, &Limits::default()).unwrap();
    assert_eq!(parsed.blocks[0].text, "deep");
}

fn zip_one(name: &str, content: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    writer.start_file(name, options).unwrap();
    writer.write_all(content).unwrap();
    writer.finish().unwrap().into_inner()
}

#[test]
fn invalid_utf8_is_refused_by_every_text_parser() {
    let bad = b"hello \xff\xfe world";
    for kind in [
        Kind::Text,
        Kind::Markdown,
        Kind::Html,
        Kind::Csv,
        Kind::Json,
        Kind::Vtt,
        Kind::Srt,
    ] {
        assert_eq!(
            parse(kind, bad, &Limits::default()),
            Err(ParseError::InvalidUtf8),
            "{kind}"
        );
    }
}

#[test]
fn garbage_never_panics() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut noise = vec![0u8; 4096];
    for round in 0..50 {
        for byte in &mut noise {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *byte = seed as u8;
        }
        let prefixes: [&[u8]; 3] = [b"%PDF-1.4\n", b"PK\x03\x04", b""];
        let mut input = prefixes[round % 3].to_vec();
        input.extend_from_slice(&noise);
        for kind in [
            Kind::Pdf,
            Kind::Docx,
            Kind::Pptx,
            Kind::Xlsx,
            Kind::Odt,
            Kind::Text,
            Kind::Html,
        ] {
            let _ = parse(kind, &input, &Limits::default());
        }
        let _ = cairn_ingest::detect::sniff(&input, "x.txt");
        let _ = cairn_ingest::detect::zip_kind(&input);
    }
}

#[test]
fn text_cap_is_enforced() {
    let limits = Limits {
        max_text_bytes: 1000,
        ..Limits::default()
    };
    let text = "word ".repeat(1000);
    assert_eq!(
        parse(Kind::Text, text.as_bytes(), &limits),
        Err(ParseError::TooMuchText { limit: 1000 })
    );
}

/// A single 20 MB line (100 MB in release builds) is parsed and chunked in
/// linear time, into chunks within the hard cap.
#[test]
fn a_huge_single_line_is_linear() {
    let megabytes = if cfg!(debug_assertions) { 20 } else { 100 };
    let line = "lorem ipsum dolor sit amet consectetur ".repeat(megabytes * 1024 * 1024 / 39);
    let limits = Limits {
        max_text_bytes: 128 << 20,
        ..Limits::default()
    };
    let started = Instant::now();
    let parsed = parse(Kind::Text, line.as_bytes(), &limits).unwrap();
    let chunks = chunk(&parsed, &ChunkOptions::default());
    let elapsed = started.elapsed();
    println!(
        "{megabytes} MB single line: parse+chunk in {elapsed:?} ({} chunks)",
        chunks.len()
    );
    assert!(chunks.iter().all(|c| c.token_count as usize <= 512));
    assert!(chunks.len() > 1000);
    assert!(elapsed < budget(10), "{elapsed:?}");

    let word = "x".repeat(4 * 1024 * 1024);
    let chunks = chunk(
        &parse(Kind::Text, word.as_bytes(), &limits).unwrap(),
        &ChunkOptions::default(),
    );
    assert!(chunks.iter().all(|c| c.token_count as usize <= 512));
    assert_eq!(
        chunks.iter().map(|c| c.text.len()).sum::<usize>(),
        word.len()
    );
}
