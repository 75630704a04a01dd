//! Office containers: telling them apart, parsing them, and refusing bombs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cairn_ingest::detect::{self, DetectError, Sniffed};
use cairn_ingest::{parse, Kind, Limits, ParseError, Role};

fn rows(parsed: &cairn_ingest::Parsed) -> Vec<(Role, &str, String)> {
    parsed
        .blocks
        .iter()
        .map(|b| (b.role, b.text.as_str(), b.location.heading_path.join(" > ")))
        .collect()
}

#[test]
fn zip_containers_are_told_apart() {
    let docx = common::docx(&common::w_p(None, "x"));
    let pptx = common::pptx(&[common::pptx_slide("T", &[])]);
    let xlsx = common::xlsx(&[("S", vec![vec!["a"]])]);
    let odt = common::odt("<text:p>x</text:p>");
    for (bytes, kind) in [
        (&docx, Kind::Docx),
        (&pptx, Kind::Pptx),
        (&xlsx, Kind::Xlsx),
        (&odt, Kind::Odt),
    ] {
        assert_eq!(
            detect::sniff(&bytes[..bytes.len().min(8192)], "upload.bin"),
            Ok(Sniffed::Zip)
        );
        assert_eq!(detect::zip_kind(bytes), Ok(kind));
    }
    let other = common::zip(&[("readme.txt", b"hello")]);
    assert!(matches!(
        detect::zip_kind(&other),
        Err(DetectError::Unsupported(_))
    ));
    let ods = common::zip(&[(
        "mimetype",
        b"application/vnd.oasis.opendocument.spreadsheet",
    )]);
    assert_eq!(
        detect::zip_kind(&ods),
        Err(DetectError::Unsupported(
            "an OpenDocument spreadsheet (.ods)".into()
        ))
    );
    assert!(matches!(
        detect::zip_kind(b"PK\x03\x04broken"),
        Err(DetectError::Corrupt(_))
    ));
}

#[test]
fn docx_headings_lists_and_tables() {
    let body = [
        common::w_p(Some("Title"), "Annual &amp; Report"),
        common::w_p(Some("Heading1"), "Intro"),
        common::w_p(None, "Hello <w:r><w:t>world</w:t></w:r>"),
        r#"<w:p><w:pPr><w:numPr><w:ilvl w:val="0"/></w:numPr></w:pPr><w:r><w:t>a list item</w:t></w:r></w:p>"#.to_owned(),
        common::w_p(Some("Berschrift2"), "Localised heading"),
        "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Name</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Age</w:t></w:r></w:p></w:tc></w:tr><w:tr><w:tc><w:p><w:r><w:t>Ada</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>36</w:t></w:r></w:p></w:tc></w:tr></w:tbl>".to_owned(),
        r#"<w:p><w:r><w:t>kept</w:t></w:r><mc:AlternateContent xmlns:mc="mc"><mc:Choice><w:r><w:t> choice</w:t></w:r></mc:Choice><mc:Fallback><w:r><w:t> fallback</w:t></w:r></mc:Fallback></mc:AlternateContent></w:p>"#.to_owned(),
    ]
    .concat();
    let parsed = parse(Kind::Docx, &common::docx(&body), &Limits::default()).unwrap();
    assert_eq!(parsed.title.as_deref(), Some("Annual & Report"));
    let h = |level| Role::Heading { level };
    assert_eq!(
        rows(&parsed),
        vec![
            (h(1), "Annual & Report", "Annual & Report".to_owned()),
            (h(1), "Intro", "Intro".to_owned()),
            (Role::Paragraph, "Hello world", "Intro".to_owned()),
            (Role::ListItem, "a list item", "Intro".to_owned()),
            (
                h(2),
                "Localised heading",
                "Intro > Localised heading".to_owned()
            ),
            (
                Role::TableRow,
                "Name: Ada; Age: 36",
                "Intro > Localised heading".to_owned()
            ),
            (
                Role::Paragraph,
                "kept choice",
                "Intro > Localised heading".to_owned()
            ),
        ]
    );
}

#[test]
fn pptx_slides_in_numeric_order_with_titles() {
    let slides: Vec<String> = (1..=11)
        .map(|n| {
            common::pptx_slide(
                &format!("Slide {n}"),
                &[&format!("Point {n}a"), &format!("Point {n}b")],
            )
        })
        .collect();
    let parsed = parse(Kind::Pptx, &common::pptx(&slides), &Limits::default()).unwrap();
    assert_eq!(parsed.blocks.len(), 33);
    let first: Vec<_> = parsed.blocks[..3]
        .iter()
        .map(|b| (b.role, b.text.as_str(), b.location.slide))
        .collect();
    assert_eq!(
        first,
        [
            (Role::Heading { level: 1 }, "Slide 1", Some(1)),
            (Role::Paragraph, "Point 1a", Some(1)),
            (Role::Paragraph, "Point 1b", Some(1)),
        ]
    );
    let last = &parsed.blocks[32];
    assert_eq!(
        (last.text.as_str(), last.location.slide),
        ("Point 11b", Some(11))
    );
    assert_eq!(last.location.heading_path, ["Slide 11"]);
}

#[test]
fn xlsx_rows_with_headers_sheet_and_row() {
    let bytes = common::xlsx(&[
        (
            "People",
            vec![
                vec!["Name", "Age", "City"],
                vec!["Ada", "36", "London"],
                vec![],
                vec!["Grace", "", "New York"],
            ],
        ),
        ("Empty", vec![]),
        ("Notes", vec![vec!["Note"], vec!["remember"]]),
    ]);
    let parsed = parse(Kind::Xlsx, &bytes, &Limits::default()).unwrap();
    let got: Vec<_> = parsed
        .blocks
        .iter()
        .map(|b| {
            (
                b.text.as_str(),
                b.location.sheet.as_deref(),
                b.location.row,
                b.role,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "Name: Ada; Age: 36; City: London",
                Some("People"),
                Some(2),
                Role::TableRow
            ),
            (
                "Name: Grace; City: New York",
                Some("People"),
                Some(4),
                Role::TableRow
            ),
            ("Note: remember", Some("Notes"), Some(2), Role::TableRow),
        ]
    );
}

#[test]
fn odt_headings_lists_and_tables() {
    let body = r#"<text:h text:outline-level="1">Chapter</text:h>
<text:p>Some<text:s/>text<text:tab/>here.</text:p>
<text:list><text:list-item><text:p>first item</text:p></text:list-item></text:list>
<text:h text:outline-level="2">Section</text:h>
<table:table><table:table-row><table:table-cell><text:p>K</text:p></table:table-cell><table:table-cell><text:p>V</text:p></table:table-cell></table:table-row><table:table-row><table:table-cell><text:p>a</text:p></table:table-cell><table:table-cell><text:p>1</text:p></table:table-cell></table:table-row></table:table>
<text:p>Visible<office:annotation><text:p>hidden comment</text:p></office:annotation></text:p>"#;
    let parsed = parse(Kind::Odt, &common::odt(body), &Limits::default()).unwrap();
    assert_eq!(parsed.title.as_deref(), Some("Chapter"));
    assert_eq!(
        rows(&parsed),
        vec![
            (Role::Heading { level: 1 }, "Chapter", "Chapter".to_owned()),
            (Role::Paragraph, "Some text here.", "Chapter".to_owned()),
            (Role::ListItem, "first item", "Chapter".to_owned()),
            (
                Role::Heading { level: 2 },
                "Section",
                "Chapter > Section".to_owned()
            ),
            (Role::TableRow, "K: a; V: 1", "Chapter > Section".to_owned()),
            (Role::Paragraph, "Visible", "Chapter > Section".to_owned()),
        ]
    );
}

#[test]
fn wrong_container_is_malformed() {
    let pptx = common::pptx(&[common::pptx_slide("T", &[])]);
    let err = parse(Kind::Docx, &pptx, &Limits::default()).unwrap_err();
    assert_eq!(err.code(), "malformed");
    assert!(err.to_string().contains("word/document.xml"), "{err}");
}

/// A DOCX whose document.xml is `size` bytes of zeros: it compresses ~1000:1.
fn zero_bomb(size: usize) -> Vec<u8> {
    common::zip(&[("word/document.xml", &vec![0u8; size])])
}

#[test]
fn zip_bombs_are_refused() {
    // 8 MiB of zeros: over the default ratio limit (compressed to ~8 KiB).
    let err = parse(Kind::Docx, &zero_bomb(8 << 20), &Limits::default()).unwrap_err();
    assert_eq!(err.code(), "zip_bomb");
    assert!(
        matches!(err, ParseError::ZipBomb { ref what, limit: 100 } if what.contains("ratio")),
        "{err}"
    );

    // Over the total size limit, with the ratio check relaxed.
    let limits = Limits {
        max_uncompressed_bytes: 1 << 20,
        max_compression_ratio: u64::MAX,
        ..Limits::default()
    };
    let err = parse(Kind::Docx, &zero_bomb(2 << 20), &limits).unwrap_err();
    assert!(
        matches!(err, ParseError::ZipBomb { ref what, limit } if what.contains("size") && limit == 1 << 20),
        "{err}"
    );

    // Too many entries.
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let limits = Limits {
        max_zip_entries: 10,
        ..Limits::default()
    };
    let err = parse(Kind::Xlsx, &common::zip(&entries), &limits).unwrap_err();
    assert_eq!(
        err,
        ParseError::ZipBomb {
            what: "number of entries".into(),
            limit: 10
        }
    );
}

#[test]
fn lying_headers_are_caught_while_inflating() {
    // Patch the declared uncompressed size (local and central headers) down to
    // 1 KiB: the guard must count the bytes actually produced.
    let mut bytes = zero_bomb(8 << 20);
    let declared = (8u32 << 20).to_le_bytes();
    let small = 1024u32.to_le_bytes();
    let mut patched = 0;
    for at in 0..bytes.len() - 4 {
        if bytes[at..at + 4] == declared {
            bytes[at..at + 4].copy_from_slice(&small);
            patched += 1;
        }
    }
    assert!(patched >= 2, "declared sizes found: {patched}");
    let err = parse(Kind::Docx, &bytes, &Limits::default()).unwrap_err();
    assert!(matches!(err.code(), "zip_bomb" | "corrupt"), "{err}");
}

#[test]
fn xlsx_bombs_are_refused_before_calamine() {
    let bomb = common::zip(&[("xl/workbook.xml", &vec![b' '; 8 << 20])]);
    assert_eq!(
        parse(Kind::Xlsx, &bomb, &Limits::default())
            .unwrap_err()
            .code(),
        "zip_bomb"
    );
}
