//! PowerPoint presentations: one pass per slide, slides in the numeric order
//! of their part names (`ppt/slides/slide1.xml`, `slide2.xml`, ...).
//!
//! A slide's title placeholder becomes a level-1 heading (so the rest of the
//! slide sits under it), other text frames paragraphs, and table rows are
//! rendered with the first row's cells as headers. Every block carries its
//! 1-based slide number.

use quick_xml::events::BytesStart;

use super::xml::{self, attribute, Handler};
use super::zipguard::Archive;
use super::{Builder, HeaderedRows, InlineText};
use crate::{Limits, Location, ParseError, Parsed, Role};

/// Parse a PPTX file.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let mut archive = Archive::open(bytes, limits)?;
    let names = archive.names();
    if !names.iter().any(|name| name == "ppt/presentation.xml") {
        return Err(ParseError::Malformed(
            "not a PowerPoint file: ppt/presentation.xml is missing".into(),
        ));
    }
    let slides = slide_parts(names);
    let mut out = Builder::new(limits);
    for (index, part) in slides.iter().enumerate() {
        let Some(xml) = archive.read(part)? else {
            continue;
        };
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        out.reset_headings();
        let mut slide = Slide::new(&mut out, number);
        xml::drive(&xml, part, &mut slide)?;
    }
    Ok(out.finish())
}

/// The slide part names, ordered by their number.
fn slide_parts(names: Vec<String>) -> Vec<String> {
    let mut slides: Vec<(u64, String)> = names
        .into_iter()
        .filter_map(|name| {
            let number = name
                .strip_prefix("ppt/slides/slide")?
                .strip_suffix(".xml")?
                .parse()
                .ok()?;
            Some((number, name))
        })
        .collect();
    slides.sort();
    slides.into_iter().map(|(_, name)| name).collect()
}

/// A table being read.
#[derive(Default)]
struct Table {
    rows: HeaderedRows,
    cells: Vec<String>,
    cell: InlineText,
}

/// Walks one slide.
struct Slide<'a> {
    out: &'a mut Builder,
    number: u32,
    text: InlineText,
    in_title_shape: bool,
    in_run_text: bool,
    tables: Vec<Table>,
}

impl<'a> Slide<'a> {
    fn new(out: &'a mut Builder, number: u32) -> Self {
        Slide {
            out,
            number,
            text: InlineText::default(),
            in_title_shape: false,
            in_run_text: false,
            tables: Vec::new(),
        }
    }

    fn location(&self) -> Location {
        Location {
            slide: Some(self.number),
            ..Location::default()
        }
    }

    /// A paragraph ended: emit it, or add it to its table cell.
    fn end_paragraph(&mut self) -> Result<(), ParseError> {
        let text = self.text.take();
        if let Some(table) = self.tables.last_mut() {
            table.cell.push(" ");
            table.cell.push(&text);
            return Ok(());
        }
        let role = if self.in_title_shape {
            Role::Heading { level: 1 }
        } else {
            Role::Paragraph
        };
        let location = self.location();
        self.out.push(role, &text, location)
    }

    /// A row ended: emit it.
    fn end_row(&mut self) -> Result<(), ParseError> {
        let location = self.location();
        let Some(table) = self.tables.last_mut() else {
            return Ok(());
        };
        let cells = std::mem::take(&mut table.cells);
        match table.rows.row(cells) {
            Some(row) => self.out.push(Role::TableRow, &row, location),
            None => Ok(()),
        }
    }

    /// A table ended: emit its header row if it had no other.
    fn end_table(&mut self) -> Result<(), ParseError> {
        let location = self.location();
        let Some(table) = self.tables.pop() else {
            return Ok(());
        };
        match table.rows.finish() {
            Some(row) => self.out.push(Role::TableRow, &row, location),
            None => Ok(()),
        }
    }
}

impl Handler for Slide<'_> {
    fn open(&mut self, name: &str, element: &BytesStart<'_>) -> Result<(), ParseError> {
        match name {
            "sp" => self.in_title_shape = false,
            "ph" => {
                let kind = attribute(element, "type").unwrap_or_default();
                self.in_title_shape = matches!(kind.as_str(), "title" | "ctrTitle");
            }
            "t" => self.in_run_text = true,
            "br" => self.text.push_separator("\n"),
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
        match name {
            "p" => return self.end_paragraph(),
            "t" => self.in_run_text = false,
            "sp" => self.in_title_shape = false,
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
        if self.in_run_text {
            self.text.push(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides_sort_numerically() {
        let names = [
            "ppt/slides/slide10.xml",
            "ppt/slides/slide2.xml",
            "ppt/slides/_rels/slide1.xml.rels",
            "ppt/slides/slide1.xml",
        ];
        let parts = slide_parts(names.iter().map(|n| n.to_string()).collect());
        assert_eq!(
            parts,
            [
                "ppt/slides/slide1.xml",
                "ppt/slides/slide2.xml",
                "ppt/slides/slide10.xml"
            ]
        );
    }
}
