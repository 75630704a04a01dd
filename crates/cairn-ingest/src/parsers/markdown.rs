//! Markdown via `pulldown-cmark`: headings build the heading path; paragraphs,
//! list items, code blocks and table rows become blocks.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use super::text::decode_text;
use super::{render_row, Builder, InlineText};
use crate::{Limits, Location, ParseError, Parsed, Role};

/// Parse CommonMark with tables, strikethrough and task lists.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let text = decode_text(bytes)?;
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut walker = Walker::new(limits);
    for event in Parser::new_ext(&text, options) {
        walker.event(event)?;
    }
    walker.flush(Role::Paragraph)?;
    Ok(walker.out.finish())
}

/// The state of the walk over pulldown-cmark events.
struct Walker {
    out: Builder,
    buf: InlineText,
    heading: Option<u8>,
    in_code: bool,
    list_items: usize,
    table: Option<Table>,
}

/// Rows of the table being read.
#[derive(Default)]
struct Table {
    headers: Vec<String>,
    cells: Vec<String>,
}

impl Walker {
    fn new(limits: &Limits) -> Self {
        Walker {
            out: Builder::new(limits),
            buf: InlineText::default(),
            heading: None,
            in_code: false,
            list_items: 0,
            table: None,
        }
    }

    /// Handle one event.
    fn event(&mut self, event: Event<'_>) -> Result<(), ParseError> {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) if self.in_code => {
                self.buf.push_raw(&text);
                Ok(())
            }
            Event::Text(text) | Event::Code(text) => {
                self.buf.push(&text);
                Ok(())
            }
            Event::SoftBreak => {
                self.buf.push(" ");
                Ok(())
            }
            Event::HardBreak => {
                self.buf.push_separator("\n");
                Ok(())
            }
            Event::Rule => self.flush(self.default_role()),
            _ => Ok(()),
        }
    }

    fn start(&mut self, tag: Tag<'_>) -> Result<(), ParseError> {
        match tag {
            Tag::Heading { level, .. } => {
                self.flush(self.default_role())?;
                self.heading = Some(heading_level(level));
            }
            Tag::CodeBlock(_) => {
                self.flush(self.default_role())?;
                self.in_code = true;
            }
            Tag::Item => {
                self.flush(self.default_role())?;
                self.list_items += 1;
            }
            Tag::Paragraph | Tag::List(_) | Tag::BlockQuote(_) => {
                self.flush(self.default_role())?;
            }
            Tag::Table(_) => {
                self.flush(self.default_role())?;
                self.table = Some(Table::default());
            }
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self, tag: TagEnd) -> Result<(), ParseError> {
        match tag {
            TagEnd::Heading(_) => {
                let level = self.heading.take().unwrap_or(1);
                if level == 1 {
                    self.out.offer_title(self.buf.as_str());
                }
                self.flush(Role::Heading { level })
            }
            TagEnd::CodeBlock => {
                self.in_code = false;
                self.flush(Role::Code)
            }
            TagEnd::Item => {
                self.flush(Role::ListItem)?;
                self.list_items = self.list_items.saturating_sub(1);
                Ok(())
            }
            TagEnd::Paragraph | TagEnd::BlockQuote(_) => self.flush(self.default_role()),
            TagEnd::TableCell => {
                let cell = self.buf.take();
                if let Some(table) = &mut self.table {
                    table.cells.push(cell);
                }
                Ok(())
            }
            TagEnd::TableHead => {
                if let Some(table) = &mut self.table {
                    table.headers = std::mem::take(&mut table.cells);
                }
                Ok(())
            }
            TagEnd::TableRow => self.flush_row(),
            TagEnd::Table => {
                self.table = None;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Emit the table row just read.
    fn flush_row(&mut self) -> Result<(), ParseError> {
        let Some(table) = &mut self.table else {
            return Ok(());
        };
        let cells = std::mem::take(&mut table.cells);
        let row = render_row(&table.headers, &cells);
        self.out.push(Role::TableRow, &row, Location::default())
    }

    /// Paragraph, or list item inside a list.
    fn default_role(&self) -> Role {
        if self.list_items > 0 {
            Role::ListItem
        } else {
            Role::Paragraph
        }
    }

    /// Emit the text collected so far as a block of `role`.
    fn flush(&mut self, role: Role) -> Result<(), ParseError> {
        if self.buf.is_blank() {
            self.buf.take();
            return Ok(());
        }
        let text = self.buf.take();
        self.out.push(role, &text, Location::default())
    }
}

/// 1 for `#`, 6 for `######`.
fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Guide\n\nIntro *text*\nwrapped.\n\n## Install\n\n- one\n- two `code`\n\n```sh\n  cargo build\n```\n\n### Deep\n\n| Name | Age |\n|------|-----|\n| Ada  | 36  |\n\n## Use\n\n> quoted\n";

    #[test]
    fn blocks_roles_and_heading_paths() {
        let parsed = parse(DOC.as_bytes(), &Limits::default()).unwrap();
        let got: Vec<(Role, &str, String)> = parsed
            .blocks
            .iter()
            .map(|b| (b.role, b.text.as_str(), b.location.heading_path.join(" > ")))
            .collect();
        let h = |level| Role::Heading { level };
        assert_eq!(
            got,
            vec![
                (h(1), "Guide", "Guide".to_owned()),
                (Role::Paragraph, "Intro text wrapped.", "Guide".to_owned()),
                (h(2), "Install", "Guide > Install".to_owned()),
                (Role::ListItem, "one", "Guide > Install".to_owned()),
                (Role::ListItem, "two code", "Guide > Install".to_owned()),
                (Role::Code, "  cargo build", "Guide > Install".to_owned()),
                (h(3), "Deep", "Guide > Install > Deep".to_owned()),
                (
                    Role::TableRow,
                    "Name: Ada; Age: 36",
                    "Guide > Install > Deep".to_owned()
                ),
                (h(2), "Use", "Guide > Use".to_owned()),
                (Role::Paragraph, "quoted", "Guide > Use".to_owned()),
            ]
        );
        assert_eq!(parsed.title.as_deref(), Some("Guide"));
    }

    #[test]
    fn loose_and_nested_lists() {
        let parsed = parse(b"- a\n\n  more\n- b\n  - c\n", &Limits::default()).unwrap();
        let got: Vec<_> = parsed
            .blocks
            .iter()
            .map(|b| (b.role, b.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Role::ListItem, "a"),
                (Role::ListItem, "more"),
                (Role::ListItem, "b"),
                (Role::ListItem, "c"),
            ]
        );
    }
}
