//! One parser per [`Kind`], and the helpers they share.

mod csv;
mod docx;
mod html;
mod json;
mod markdown;
mod odt;
mod pdf;
mod pptx;
pub(crate) mod text;
pub(crate) mod transcript;
mod xlsx;
mod xml;
pub(crate) mod zipguard;

use crate::{Block, Kind, Limits, Location, ParseError, Parsed, Role};

/// Dispatch to the parser for `kind`.
pub(crate) fn parse(kind: Kind, bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    match kind {
        Kind::Text => text::parse(bytes, limits),
        Kind::Markdown => markdown::parse(bytes, limits),
        Kind::Html => html::parse(bytes, limits),
        Kind::Pdf => pdf::parse(bytes, limits),
        Kind::Docx => docx::parse(bytes, limits),
        Kind::Pptx => pptx::parse(bytes, limits),
        Kind::Xlsx => xlsx::parse(bytes, limits),
        Kind::Odt => odt::parse(bytes, limits),
        Kind::Csv => csv::parse(bytes, limits),
        Kind::Json => json::parse(bytes, limits),
        Kind::Vtt => transcript::parse_vtt(bytes, limits),
        Kind::Srt => transcript::parse_srt(bytes, limits),
    }
}

/// Collects blocks in reading order: tracks the heading path, skips empty
/// text and enforces [`Limits::max_text_bytes`].
pub(crate) struct Builder {
    blocks: Vec<Block>,
    title: Option<String>,
    headings: Vec<(u8, String)>,
    text_bytes: usize,
    max_text_bytes: usize,
}

impl Builder {
    /// An empty document bounded by `limits`.
    pub(crate) fn new(limits: &Limits) -> Self {
        Builder {
            blocks: Vec::new(),
            title: None,
            headings: Vec::new(),
            text_bytes: 0,
            max_text_bytes: limits.max_text_bytes,
        }
    }

    /// Add a block under the current heading path. Blank text is dropped.
    pub(crate) fn push(
        &mut self,
        role: Role,
        text: &str,
        mut location: Location,
    ) -> Result<(), ParseError> {
        let text = match role {
            Role::Code => text.trim_matches(['\n', '\r']).trim_end(),
            _ => text.trim(),
        };
        if text.trim_start().is_empty() {
            return Ok(());
        }
        if let Role::Heading { level } = role {
            self.enter_heading(level, text);
        }
        self.text_bytes = self.text_bytes.saturating_add(text.len());
        if self.text_bytes > self.max_text_bytes {
            return Err(ParseError::TooMuchText {
                limit: self.max_text_bytes,
            });
        }
        location.heading_path = self.heading_path();
        self.blocks.push(Block {
            text: text.to_owned(),
            role,
            location,
        });
        Ok(())
    }

    /// Set the title unless one was already set. Blank titles are ignored.
    pub(crate) fn offer_title(&mut self, title: &str) {
        let title = collapse_whitespace(title);
        if self.title.is_none() && !title.is_empty() {
            self.title = Some(title);
        }
    }

    /// Forget the heading path (e.g. at a new slide or sheet).
    pub(crate) fn reset_headings(&mut self) {
        self.headings.clear();
    }

    /// The headings currently open, outermost first.
    fn heading_path(&self) -> Vec<String> {
        self.headings.iter().map(|(_, text)| text.clone()).collect()
    }

    /// Close headings at `level` or deeper, then open this one.
    fn enter_heading(&mut self, level: u8, text: &str) {
        while self.headings.last().is_some_and(|(open, _)| *open >= level) {
            self.headings.pop();
        }
        self.headings.push((level, collapse_whitespace(text)));
    }

    /// Whether nothing has been added yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The finished document.
    pub(crate) fn finish(self) -> Parsed {
        Parsed {
            title: self.title,
            blocks: self.blocks,
        }
    }
}

/// Collapse runs of whitespace to single spaces and trim the ends.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Render one table row with its headers: `"Name: Ada; Born: 1815"`.
///
/// Empty cells are left out; a cell without a header is shown as `"Column N"`.
pub(crate) fn render_row(headers: &[String], cells: &[String]) -> String {
    let mut out = String::new();
    for (index, cell) in cells.iter().enumerate() {
        let cell = cell.trim();
        if cell.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        match headers
            .get(index)
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
        {
            Some(header) => out.push_str(header),
            None => {
                out.push_str("Column ");
                out.push_str(&(index + 1).to_string());
            }
        }
        out.push_str(": ");
        out.push_str(cell);
    }
    out
}

/// Rows of a table whose first row holds the headers (DOCX, ODT, PPTX).
///
/// The header row is not emitted on its own unless the table has no other row.
#[derive(Debug, Default)]
pub(crate) struct HeaderedRows {
    headers: Option<Vec<String>>,
    data_rows: usize,
}

impl HeaderedRows {
    /// The text to emit for the next row, if any (the first row is kept as headers).
    pub(crate) fn row(&mut self, cells: Vec<String>) -> Option<String> {
        match &self.headers {
            None => {
                self.headers = Some(cells);
                None
            }
            Some(headers) => {
                self.data_rows += 1;
                Some(render_row(headers, &cells))
            }
        }
    }

    /// The header row alone, when the table had nothing else.
    pub(crate) fn finish(self) -> Option<String> {
        let headers = self.headers.filter(|_| self.data_rows == 0)?;
        Some(
            headers
                .iter()
                .map(|h| h.trim())
                .filter(|h| !h.is_empty())
                .collect::<Vec<_>>()
                .join(" | "),
        )
    }
}

/// Appends inline text to a buffer, collapsing whitespace across calls.
#[derive(Debug, Default)]
pub(crate) struct InlineText {
    text: String,
    pending_space: bool,
}

impl InlineText {
    /// Append text, collapsing whitespace runs into one space.
    pub(crate) fn push(&mut self, fragment: &str) {
        if fragment.is_empty() {
            return;
        }
        let mut space = self.pending_space || fragment.starts_with(char::is_whitespace);
        let mut any_word = false;
        let mut add = |word: &str| {
            if space && !self.text.is_empty() && !self.text.ends_with([' ', '\n', '\t']) {
                self.text.push(' ');
            }
            self.text.push_str(word);
            space = true;
            any_word = true;
        };
        // ASCII text (most of it) is split byte by byte; Unicode's whitespace (which also
        // counts the vertical tab) needs the char-by-char split.
        if fragment.is_ascii() && !fragment.contains('\x0b') {
            fragment.split_ascii_whitespace().for_each(&mut add);
        } else {
            fragment.split_whitespace().for_each(&mut add);
        }
        self.pending_space = !any_word || fragment.ends_with(char::is_whitespace);
    }

    /// Append text verbatim (preformatted content).
    pub(crate) fn push_raw(&mut self, fragment: &str) {
        self.text.push_str(fragment);
        self.pending_space = false;
    }

    /// Append a separator such as a line break or a cell divider, verbatim.
    pub(crate) fn push_separator(&mut self, separator: &str) {
        if !self.text.is_empty() {
            self.text.push_str(separator);
        }
        self.pending_space = false;
    }

    /// The text collected so far.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether nothing but whitespace has been collected.
    pub(crate) fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }

    /// Take the collected text, leaving the buffer empty.
    pub(crate) fn take(&mut self) -> String {
        self.pending_space = false;
        std::mem::take(&mut self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heading_path_is_a_stack_by_level() {
        let mut out = Builder::new(&Limits::default());
        out.push(Role::Heading { level: 1 }, "A", Location::default())
            .unwrap();
        out.push(Role::Heading { level: 2 }, "B", Location::default())
            .unwrap();
        out.push(Role::Paragraph, "in b", Location::default())
            .unwrap();
        out.push(Role::Heading { level: 2 }, "C", Location::default())
            .unwrap();
        out.push(Role::Paragraph, "in c", Location::default())
            .unwrap();
        out.push(Role::Heading { level: 1 }, "D", Location::default())
            .unwrap();
        out.push(Role::Paragraph, "  ", Location::default())
            .unwrap();
        let parsed = out.finish();
        let paths: Vec<_> = parsed
            .blocks
            .iter()
            .map(|b| b.location.heading_path.join("/"))
            .collect();
        assert_eq!(paths, ["A", "A/B", "A/B", "A/C", "A/C", "D"]);
    }

    #[test]
    fn text_cap_is_enforced() {
        let limits = Limits {
            max_text_bytes: 10,
            ..Limits::default()
        };
        let mut out = Builder::new(&limits);
        out.push(Role::Paragraph, "12345", Location::default())
            .unwrap();
        let err = out
            .push(Role::Paragraph, "678901", Location::default())
            .unwrap_err();
        assert_eq!(err, ParseError::TooMuchText { limit: 10 });
    }

    #[test]
    fn rows_render_with_headers() {
        let headers = vec!["Name".to_owned(), "".to_owned()];
        let cells = vec!["Ada".to_owned(), "1815".to_owned(), "".to_owned()];
        assert_eq!(render_row(&headers, &cells), "Name: Ada; Column 2: 1815");
    }

    #[test]
    fn inline_text_collapses_whitespace_across_fragments() {
        let mut text = InlineText::default();
        text.push("  Hello ");
        text.push("\n");
        text.push("big");
        text.push("world");
        text.push(" ");
        text.push_separator(" | ");
        text.push("x");
        assert_eq!(text.take(), "Hello bigworld | x");
    }
}
