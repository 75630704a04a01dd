//! PDF text layer via `pdf-extract` (on `lopdf`), page by page.
//!
//! Each page's text is split into paragraphs at blank lines and every block
//! keeps its 1-based page number. Encrypted PDFs that open with the empty user
//! password are read; others are refused as [`ParseError::Encrypted`].
//!
//! pdf-extract is known to panic (`unwrap`/`expect`) on some malformed input,
//! so loading and every page extraction run under `catch_unwind`; a panic
//! becomes [`ParseError::Malformed`] (or skips the page). It also recurses
//! through the page tree (`/Parent`) and through form XObjects (`Do`), which a
//! hostile file can make cyclic: those structures are checked iteratively
//! first, since a stack overflow cannot be caught.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use lopdf::{Dictionary, Document, Object, ObjectId};

use super::{collapse_whitespace, Builder};
use crate::{Limits, Location, ParseError, Parsed, Role};

/// Deepest `/Parent` chain accepted.
const MAX_PAGE_TREE_DEPTH: usize = 64;
/// Deepest nesting of form XObjects accepted.
const MAX_FORM_DEPTH: usize = 32;

/// Extract the text layer, page by page.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let document = load(bytes)?;
    let pages = document.get_pages();
    if pages.is_empty() {
        return Err(ParseError::Corrupt("the PDF has no pages".into()));
    }
    let mut out = Builder::new(limits);
    let mut first_failure = None;
    let mut failed_pages = 0;
    for (&number, &page_id) in &pages {
        match page_text(&document, number, page_id) {
            Ok(text) => push_page(&mut out, number, &text)?,
            Err(reason) => {
                failed_pages += 1;
                first_failure.get_or_insert(reason);
            }
        }
    }
    if failed_pages == pages.len() {
        let reason = first_failure.unwrap_or_default();
        return Err(ParseError::Malformed(format!(
            "no page of the PDF could be read ({reason})"
        )));
    }
    if out.is_empty() {
        return Err(ParseError::NoText);
    }
    Ok(out.finish())
}

/// Parse the file structure, decrypting with the empty password if needed.
fn load(bytes: &[u8]) -> Result<Document, ParseError> {
    let loaded = catch_unwind(|| Document::load_mem(bytes))
        .map_err(|_| ParseError::Malformed("the PDF structure could not be read".into()))?;
    let document = loaded.map_err(|error| load_error(&error, bytes))?;
    if document.is_encrypted() {
        return Err(ParseError::Encrypted);
    }
    Ok(document)
}

/// Tell a password-protected file from a damaged one.
fn load_error(error: &lopdf::Error, bytes: &[u8]) -> ParseError {
    let encrypted = matches!(
        error,
        lopdf::Error::Decryption(_) | lopdf::Error::InvalidPassword
    ) || contains(bytes, b"/Encrypt");
    if encrypted {
        ParseError::Encrypted
    } else {
        ParseError::Corrupt(format!("the PDF cannot be opened: {error}"))
    }
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The text of one page, or why it could not be read.
fn page_text(document: &Document, number: u32, page_id: ObjectId) -> Result<String, String> {
    check_page_structure(document, page_id)?;
    let extracted = catch_unwind(AssertUnwindSafe(|| {
        let mut text = String::new();
        let mut output = pdf_extract::PlainTextOutput::new(&mut text);
        pdf_extract::output_doc_page(document, &mut output, number).map(|()| text)
    }));
    match extracted {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(error)) => Err(format!("page {number}: {error}")),
        Err(_) => Err(format!("page {number}: the text extractor failed")),
    }
}

/// Add a page's paragraphs (separated by blank lines) as blocks.
fn push_page(out: &mut Builder, number: u32, text: &str) -> Result<(), ParseError> {
    let location = Location {
        page: Some(number),
        ..Location::default()
    };
    let mut paragraph = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            out.push(
                Role::Paragraph,
                &collapse_whitespace(&paragraph),
                location.clone(),
            )?;
            paragraph.clear();
        } else {
            paragraph.push_str(line);
            paragraph.push(' ');
        }
    }
    Ok(())
}

/// Refuse a page whose `/Parent` chain or form XObjects are cyclic or too
/// deep, which would send pdf-extract into unbounded recursion.
fn check_page_structure(document: &Document, page_id: ObjectId) -> Result<(), String> {
    let page = document
        .get_dictionary(page_id)
        .map_err(|e| e.to_string())?;
    let ancestors = ancestors(document, page)?;
    let resources = std::iter::once(page)
        .chain(ancestors)
        .find_map(|dict| dictionary_entry(document, dict, b"Resources"));
    match resources {
        Some(resources) => check_forms(document, resources),
        None => Ok(()),
    }
}

/// The page-tree nodes above `page`, nearest first.
fn ancestors<'a>(
    document: &'a Document,
    page: &'a Dictionary,
) -> Result<Vec<&'a Dictionary>, String> {
    let mut seen = HashSet::new();
    let mut chain = Vec::new();
    let mut current = page;
    while let Ok(parent_id) = current.get(b"Parent").and_then(Object::as_reference) {
        if !seen.insert(parent_id) || chain.len() >= MAX_PAGE_TREE_DEPTH {
            return Err("the page tree is cyclic or too deep".into());
        }
        let Ok(parent) = document.get_dictionary(parent_id) else {
            break;
        };
        chain.push(parent);
        current = parent;
    }
    Ok(chain)
}

/// `dict[key]` as a dictionary, following a reference.
fn dictionary_entry<'a>(
    document: &'a Document,
    dict: &'a Dictionary,
    key: &[u8],
) -> Option<&'a Dictionary> {
    let object = dict.get(key).ok()?;
    let (_, object) = document.dereference(object).ok()?;
    object.as_dict().ok()
}

/// One step of the iterative depth-first walk over form XObjects.
enum Visit<'a> {
    Enter {
        resources: &'a Dictionary,
        key: (usize, usize),
        depth: usize,
    },
    Leave((usize, usize)),
}

/// Walk the form XObjects reachable from `resources` as pdf-extract would
/// (a form without its own resources uses its caller's) and fail on a cycle
/// or on nesting deeper than [`MAX_FORM_DEPTH`].
fn check_forms(document: &Document, resources: &Dictionary) -> Result<(), String> {
    let root_key = (0, std::ptr::from_ref(resources) as usize);
    let mut stack = vec![Visit::Enter {
        resources,
        key: root_key,
        depth: 0,
    }];
    let mut on_path = HashSet::new();
    let mut done = HashSet::new();
    while let Some(visit) = stack.pop() {
        let (resources, key, depth) = match visit {
            Visit::Leave(key) => {
                on_path.remove(&key);
                done.insert(key);
                continue;
            }
            Visit::Enter {
                resources,
                key,
                depth,
            } => (resources, key, depth),
        };
        if on_path.contains(&key) || depth > MAX_FORM_DEPTH {
            return Err("drawing forms are nested cyclically or too deep".into());
        }
        if done.contains(&key) {
            continue;
        }
        on_path.insert(key);
        stack.push(Visit::Leave(key));
        for (form, form_resources) in forms(document, resources) {
            let child_key = (
                std::ptr::from_ref(form) as usize,
                std::ptr::from_ref(form_resources) as usize,
            );
            stack.push(Visit::Enter {
                resources: form_resources,
                key: child_key,
                depth: depth + 1,
            });
        }
    }
    Ok(())
}

/// The form XObjects named in `resources`, each with the resources its
/// content is drawn with.
fn forms<'a>(
    document: &'a Document,
    resources: &'a Dictionary,
) -> Vec<(&'a lopdf::Stream, &'a Dictionary)> {
    let Some(xobjects) = dictionary_entry(document, resources, b"XObject") else {
        return Vec::new();
    };
    xobjects
        .iter()
        .filter_map(|(_, object)| document.dereference(object).ok()?.1.as_stream().ok())
        .filter(|stream| {
            stream
                .dict
                .get(b"Subtype")
                .and_then(Object::as_name)
                .is_ok_and(|name| name == b"Form")
        })
        .map(|stream| {
            (
                stream,
                dictionary_entry(document, &stream.dict, b"Resources").unwrap_or(resources),
            )
        })
        .collect()
}
