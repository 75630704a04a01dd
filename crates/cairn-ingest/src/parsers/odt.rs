//! OpenDocument text: `content.xml` read as a stream.
//!
//! `text:h` elements are headings (`text:outline-level`), `text:p` paragraphs,
//! paragraphs inside `text:list-item` list items, and table rows are rendered
//! with the first row's cells as headers. Annotations and tracked deletions
//! are left out.

use quick_xml::events::BytesStart;

use super::xml::{self, attribute, Handler};
use super::zipguard::Archive;
use super::{Builder, HeaderedRows, InlineText};
use crate::{Limits, Location, ParseError, Parsed, Role};

/// Elements whose content is not part of the document's text.
const SKIPPED: &[&str] = &[
    "annotation",
    "tracked-changes",
    "note-citation",
    "sequence-decls",
];

/// Parse an ODT file.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let mut archive = Archive::open(bytes, limits)?;
    let content = archive.read("content.xml")?.ok_or_else(|| {
        ParseError::Malformed("not an OpenDocument file: content.xml is missing".into())
    })?;
    let mut body = Body::new(limits);
    xml::drive(&content, "content.xml", &mut body)?;
    Ok(body.out.finish())
}

/// A table being read.
#[derive(Default)]
struct Table {
    rows: HeaderedRows,
    cells: Vec<String>,
    cell: InlineText,
}

/// Walks `content.xml`.
struct Body {
    out: Builder,
    text: InlineText,
    heading: Option<u8>,
    paragraph_depth: usize,
    list_items: usize,
    skipped: usize,
    tables: Vec<Table>,
}

impl Body {
    fn new(limits: &Limits) -> Self {
        Body {
            out: Builder::new(limits),
            text: InlineText::default(),
            heading: None,
            paragraph_depth: 0,
            list_items: 0,
            skipped: 0,
            tables: Vec::new(),
        }
    }

    /// A paragraph or heading ended: emit it, or add it to its table cell.
    fn end_paragraph(&mut self) -> Result<(), ParseError> {
        let text = self.text.take();
        let heading = self.heading.take();
        if let Some(table) = self.tables.last_mut() {
            table.cell.push(" ");
            table.cell.push(&text);
            return Ok(());
        }
        let role = match heading {
            Some(level) => {
                if level == 1 {
                    self.out.offer_title(&text);
                }
                Role::Heading { level }
            }
            None if self.list_items > 0 => Role::ListItem,
            None => Role::Paragraph,
        };
        self.out.push(role, &text, Location::default())
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

/// The heading level of a `text:h` element (default 1, at most 6).
fn heading_level(element: &BytesStart<'_>) -> u8 {
    attribute(element, "outline-level")
        .and_then(|level| level.parse::<u8>().ok())
        .map_or(1, |level| level.clamp(1, 6))
}

impl Handler for Body {
    fn open(&mut self, name: &str, element: &BytesStart<'_>) -> Result<(), ParseError> {
        if self.skipped > 0 || SKIPPED.contains(&name) {
            self.skipped += 1;
            return Ok(());
        }
        match name {
            "p" | "h" => {
                self.paragraph_depth += 1;
                if self.paragraph_depth > 1 {
                    self.text.push(" ");
                } else if name == "h" {
                    self.heading = Some(heading_level(element));
                }
            }
            "s" | "tab" => self.text.push(" "),
            "line-break" => self.text.push_separator("\n"),
            "list-item" => self.list_items += 1,
            "table" => self.tables.push(Table::default()),
            "table-cell" => {
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
            "p" | "h" => {
                self.paragraph_depth = self.paragraph_depth.saturating_sub(1);
                if self.paragraph_depth == 0 {
                    return self.end_paragraph();
                }
            }
            "list-item" => self.list_items = self.list_items.saturating_sub(1),
            "table-cell" => {
                if let Some(table) = self.tables.last_mut() {
                    let cell = table.cell.take();
                    table.cells.push(cell);
                }
            }
            "table-row" => return self.end_row(),
            "table" => return self.end_table(),
            _ => {}
        }
        Ok(())
    }

    fn text(&mut self, text: &str) {
        if self.paragraph_depth > 0 && self.skipped == 0 {
            self.text.push(text);
        }
    }
}
