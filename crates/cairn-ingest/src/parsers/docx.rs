//! Word documents: `word/document.xml` read as a stream.
//!
//! Headings come from paragraph styles (`Heading1`..`Heading9`, `Title`, or any
//! style `word/styles.xml` names "heading N" or gives an outline level), list
//! paragraphs (`w:numPr`) become list items, and table rows are rendered with
//! the first row's cells as headers.

use std::collections::HashMap;

use quick_xml::events::BytesStart;

use super::xml::{self, attribute, Handler};
use super::zipguard::Archive;
use super::{Builder, HeaderedRows, InlineText};
use crate::{Limits, Location, ParseError, Parsed, Role};

/// What a paragraph style makes of a paragraph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StyleKind {
    Title,
    Heading(u8),
}

/// Parse a DOCX file.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let mut archive = Archive::open(bytes, limits)?;
    let document = archive.read("word/document.xml")?.ok_or_else(|| {
        ParseError::Malformed("not a Word document: word/document.xml is missing".into())
    })?;
    let mut styles = StyleReader::default();
    if let Some(xml) = archive.read("word/styles.xml")? {
        xml::drive(&xml, "word/styles.xml", &mut styles)?;
    }
    let mut body = Body::new(limits, styles.kinds);
    xml::drive(&document, "word/document.xml", &mut body)?;
    Ok(body.out.finish())
}

/// Heading level of a style id such as `Heading2`, or of a name such as `heading 2`.
fn style_kind(style: &str) -> Option<StyleKind> {
    let lower = style.to_ascii_lowercase();
    if lower == "title" {
        return Some(StyleKind::Title);
    }
    let level = lower.strip_prefix("heading")?.trim().parse::<u8>().ok()?;
    (1..=9)
        .contains(&level)
        .then_some(StyleKind::Heading(level.min(6)))
}

/// Collects heading styles from `word/styles.xml`.
#[derive(Default)]
struct StyleReader {
    kinds: HashMap<String, StyleKind>,
    current: Option<String>,
}

impl Handler for StyleReader {
    fn open(&mut self, name: &str, element: &BytesStart<'_>) -> Result<(), ParseError> {
        match name {
            "style" => self.current = attribute(element, "styleId"),
            "name" | "outlineLvl" => {
                let Some(id) = self.current.clone() else {
                    return Ok(());
                };
                let value = attribute(element, "val").unwrap_or_default();
                let kind = if name == "name" {
                    style_kind(&value)
                } else {
                    outline_kind(&value)
                };
                if let Some(kind) = kind {
                    self.kinds.entry(id).or_insert(kind);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, name: &str) -> Result<(), ParseError> {
        if name == "style" {
            self.current = None;
        }
        Ok(())
    }

    fn text(&mut self, _text: &str) {}
}

/// Heading level from a 0-based `w:outlineLvl` value (9 means body text).
fn outline_kind(value: &str) -> Option<StyleKind> {
    let level = value.parse::<u8>().ok()?;
    (level < 9).then(|| StyleKind::Heading((level + 1).min(6)))
}

/// The paragraph being read.
#[derive(Default)]
struct Paragraph {
    text: InlineText,
    kind: Option<StyleKind>,
    list: bool,
}

/// A table being read.
#[derive(Default)]
struct Table {
    rows: HeaderedRows,
    cells: Vec<String>,
    cell: InlineText,
}

/// Walks `word/document.xml`.
struct Body {
    out: Builder,
    styles: HashMap<String, StyleKind>,
    paragraph: Paragraph,
    paragraph_depth: usize,
    in_run_text: bool,
    skipped: usize,
    tables: Vec<Table>,
}

impl Body {
    fn new(limits: &Limits, styles: HashMap<String, StyleKind>) -> Self {
        Body {
            out: Builder::new(limits),
            styles,
            paragraph: Paragraph::default(),
            paragraph_depth: 0,
            in_run_text: false,
            skipped: 0,
            tables: Vec::new(),
        }
    }

    /// A paragraph ended: emit it, or add it to the table cell it is in.
    fn end_paragraph(&mut self) -> Result<(), ParseError> {
        let paragraph = std::mem::take(&mut self.paragraph);
        let mut text = paragraph.text;
        if let Some(table) = self.tables.last_mut() {
            table.cell.push(" ");
            table.cell.push(text.as_str());
            return Ok(());
        }
        let role = match paragraph.kind {
            Some(StyleKind::Title) => {
                self.out.offer_title(text.as_str());
                Role::Heading { level: 1 }
            }
            Some(StyleKind::Heading(level)) => Role::Heading { level },
            None if paragraph.list => Role::ListItem,
            None => Role::Paragraph,
        };
        self.out.push(role, &text.take(), Location::default())
    }

    /// A row ended: emit it.
    fn end_row(&mut self) -> Result<(), ParseError> {
        let Some(table) = self.tables.last_mut() else {
            return Ok(());
        };
        let cells = std::mem::take(&mut table.cells);
        match table.rows.row(cells) {
            Some(row) => self.out.push(Role::TableRow, &row, Location::default()),
            None => Ok(()),
        }
    }

    /// A table ended: emit its header row if it had no other.
    fn end_table(&mut self) -> Result<(), ParseError> {
        let Some(table) = self.tables.pop() else {
            return Ok(());
        };
        match table.rows.finish() {
            Some(row) => self.out.push(Role::TableRow, &row, Location::default()),
            None => Ok(()),
        }
    }
}

impl Handler for Body {
    fn open(&mut self, name: &str, element: &BytesStart<'_>) -> Result<(), ParseError> {
        if self.skipped > 0 || name == "Fallback" {
            // mc:Fallback repeats the content of mc:Choice for old readers.
            self.skipped += 1;
            return Ok(());
        }
        match name {
            "p" => {
                self.paragraph_depth += 1;
                if self.paragraph_depth > 1 {
                    self.paragraph.text.push(" ");
                }
            }
            "pStyle" => {
                let style = attribute(element, "val").unwrap_or_default();
                self.paragraph.kind = self
                    .styles
                    .get(&style)
                    .copied()
                    .or_else(|| style_kind(&style));
            }
            "outlineLvl" if self.paragraph.kind.is_none() => {
                self.paragraph.kind = outline_kind(&attribute(element, "val").unwrap_or_default());
            }
            "numPr" => self.paragraph.list = true,
            "t" => self.in_run_text = true,
            "tab" => self.paragraph.text.push(" "),
            "br" | "cr" => self.paragraph.text.push_separator("\n"),
            "tbl" => self.tables.push(Table::default()),
            "tc" => {
                if let Some(table) = self.tables.last_mut() {
                    table.cell = InlineText::default();
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, name: &str) -> Result<(), ParseError> {
        if self.skipped > 0 {
            self.skipped -= 1;
            return Ok(());
        }
        match name {
            "p" => {
                self.paragraph_depth = self.paragraph_depth.saturating_sub(1);
                if self.paragraph_depth == 0 {
                    return self.end_paragraph();
                }
            }
            "t" => self.in_run_text = false,
            "tc" => {
                if let Some(table) = self.tables.last_mut() {
                    let cell = table.cell.take();
                    table.cells.push(cell);
                }
            }
            "tr" => return self.end_row(),
            "tbl" => return self.end_table(),
            _ => {}
        }
        Ok(())
    }

    fn text(&mut self, text: &str) {
        if self.in_run_text && self.skipped == 0 {
            self.paragraph.text.push(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn style_names_and_ids_map_to_levels() {
        assert_eq!(style_kind("Heading2"), Some(StyleKind::Heading(2)));
        assert_eq!(style_kind("heading 3"), Some(StyleKind::Heading(3)));
        assert_eq!(style_kind("Heading9"), Some(StyleKind::Heading(6)));
        assert_eq!(style_kind("Title"), Some(StyleKind::Title));
        assert_eq!(style_kind("Normal"), None);
        assert_eq!(outline_kind("0"), Some(StyleKind::Heading(1)));
        assert_eq!(outline_kind("9"), None);
    }
}
