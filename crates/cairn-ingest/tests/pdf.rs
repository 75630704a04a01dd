//! PDF extraction: page numbers, damaged and protected files, speed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Instant;

use cairn_ingest::detect::{self, Sniffed};
use cairn_ingest::{parse, Kind, Limits, ParseError};

fn page(number: usize) -> Vec<Vec<String>> {
    let lines = |p: usize| -> Vec<String> {
        (0..4)
            .map(|l| {
                format!("Page {number} paragraph {p} line {l} with some ordinary words in it.")
            })
            .collect()
    };
    vec![lines(1), lines(2), lines(3)]
}

#[test]
fn pages_are_numbered_and_paragraphs_split() {
    let bytes = common::pdf(&[page(1), page(2)]);
    assert_eq!(
        detect::sniff(&bytes[..64], "x.pdf"),
        Ok(Sniffed::Known(Kind::Pdf))
    );
    let parsed = parse(Kind::Pdf, &bytes, &Limits::default()).unwrap();
    let got: Vec<_> = parsed.blocks.iter().map(|b| b.location.page).collect();
    assert_eq!(got, [Some(1), Some(1), Some(1), Some(2), Some(2), Some(2)]);
    let first = &parsed.blocks[0].text;
    assert!(
        first.starts_with("Page 1 paragraph 1 line 0 with"),
        "{first}"
    );
    assert!(
        first.contains("line 3"),
        "lines of a paragraph stay together: {first}"
    );
    assert!(
        parsed.blocks[5].text.starts_with("Page 2 paragraph 3"),
        "{}",
        parsed.blocks[5].text
    );
}

#[test]
fn hundred_pages_parse_fast() {
    let pages: Vec<_> = (1..=100).map(page).collect();
    let bytes = common::pdf(&pages);
    let started = Instant::now();
    let parsed = parse(Kind::Pdf, &bytes, &Limits::default()).unwrap();
    let elapsed = started.elapsed();
    println!(
        "100-page PDF ({} KiB) parsed in {elapsed:?}",
        bytes.len() / 1024
    );
    assert_eq!(parsed.blocks.len(), 300);
    assert_eq!(parsed.blocks.last().unwrap().location.page, Some(100));
    assert!(parsed
        .blocks
        .last()
        .unwrap()
        .text
        .starts_with("Page 100 paragraph 3"));
    let budget = if cfg!(debug_assertions) { 20.0 } else { 1.0 };
    assert!(elapsed.as_secs_f64() < budget, "took {elapsed:?}");
}

#[test]
fn truncated_pdf_is_corrupt() {
    let bytes = common::pdf(&[page(1)]);
    for cut in [bytes.len() / 2, 40, 9] {
        let err = parse(Kind::Pdf, &bytes[..cut], &Limits::default()).unwrap_err();
        assert!(
            matches!(err.code(), "corrupt" | "malformed"),
            "cut at {cut}: {err}"
        );
    }
    let err = parse(Kind::Pdf, b"%PDF-1.4\ngarbage", &Limits::default()).unwrap_err();
    assert!(matches!(err.code(), "corrupt" | "malformed"), "{err}");
}

#[test]
fn encrypted_pdf_is_refused() {
    let err = parse(Kind::Pdf, &common::encrypted_pdf(), &Limits::default()).unwrap_err();
    assert_eq!(err, ParseError::Encrypted);
    assert_eq!(err.code(), "pdf_encrypted");
}

#[test]
fn pdf_without_text_has_no_text() {
    let bytes = common::pdf(&[vec![], vec![]]);
    assert_eq!(
        parse(Kind::Pdf, &bytes, &Limits::default()),
        Err(ParseError::NoText)
    );
}

#[test]
fn cyclic_forms_do_not_overflow_the_stack() {
    use lopdf::{dictionary, Object, Stream};
    let mut doc = common::pdf_document(&[page(1)]);
    let form_id = doc.new_object_id();
    let resources = dictionary! { "XObject" => dictionary! { "X" => form_id } };
    let form = Stream::new(
        dictionary! { "Type" => "XObject", "Subtype" => "Form", "Resources" => resources },
        b"/X Do".to_vec(),
    );
    doc.objects.insert(form_id, Object::Stream(form));
    let pages_id = doc
        .catalog()
        .unwrap()
        .get(b"Pages")
        .unwrap()
        .as_reference()
        .unwrap();
    let pages = doc.get_object_mut(pages_id).unwrap().as_dict_mut().unwrap();
    pages.set(
        "Resources",
        dictionary! { "XObject" => dictionary! { "X" => form_id } },
    );
    let err = parse(Kind::Pdf, &common::save(doc), &Limits::default()).unwrap_err();
    assert_eq!(err.code(), "malformed", "{err}");
}
