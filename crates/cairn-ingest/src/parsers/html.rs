//! HTML via `scraper` (html5ever into an ego-tree arena).
//!
//! Only the main content is read: `<main>` if present, else `<article>`, else
//! `<body>`. Navigation, scripts, forms and similar chrome are dropped. The
//! tree is walked with ego-tree's iterative `traverse`, so depth costs no stack.
//!
//! html5ever's scope checks walk the stack of open elements, which makes very
//! deep nesting quadratic (100k nested `<div>`s take minutes). Like Blink,
//! which caps its parser's tree depth at 512, tags nested deeper than
//! [`MAX_DEPTH`] are dropped before parsing (their text is kept).

use ego_tree::iter::Edge;
use ego_tree::{NodeId, NodeRef};
use scraper::{Html, Node};

use std::borrow::Cow;

use super::text::decode_text;
use super::{render_row, Builder, InlineText};
use crate::{Limits, Location, ParseError, Parsed, Role};

/// Deepest element nesting handed to html5ever.
const MAX_DEPTH: usize = 512;

/// Void elements and elements whose end tag is usually implied: they do not
/// add to the nesting depth estimate.
const NON_NESTING: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "p", "li", "dt", "dd", "td", "th", "tr", "option", "optgroup", "rb", "rt",
    "rp", "tbody", "thead", "tfoot", "colgroup", "caption", "html", "head", "body",
];

/// Elements whose content is raw text, not markup.
const RAW_TEXT: &[&str] = &[
    "script", "style", "textarea", "title", "xmp", "noscript", "iframe", "noembed", "noframes",
];

/// Elements whose whole subtree is left out.
const DROPPED: &[&str] = &[
    "script", "style", "noscript", "template", "nav", "header", "footer", "aside", "svg", "iframe",
    "form", "head", "button", "select", "canvas", "object",
];

/// Elements that end the running paragraph where they start and end.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "body",
    "blockquote",
    "dd",
    "dt",
    "dl",
    "ul",
    "ol",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "table",
    "caption",
    "hr",
    "center",
    "fieldset",
    "legend",
];

/// Extract the main content of a page.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let text = decode_text(bytes)?;
    let document = Html::parse_document(&flatten_deep_nesting(&text, MAX_DEPTH));
    let mut walker = Walker::new(limits);
    if let Some(title) = first_element(document.tree.root(), &["title"]) {
        walker.out.offer_title(&text_of(title));
    }
    walker.walk(content_root(&document))?;
    Ok(walker.out.finish())
}

/// Remove the tags of elements nested deeper than `limit`, keeping their text.
///
/// A linear scan that estimates nesting from start and end tags (skipping
/// comments, raw-text elements, void elements and those with implied ends).
fn flatten_deep_nesting(html: &str, limit: usize) -> Cow<'_, str> {
    let bytes = html.as_bytes();
    let mut dropped: Vec<(usize, usize)> = Vec::new();
    let (mut depth, mut excess) = (0usize, 0usize);
    let mut at = 0;
    while let Some(tag) = next_tag(bytes, at) {
        at = tag.end;
        if tag.comment || NON_NESTING.iter().any(|n| tag.is(bytes, n)) {
            continue;
        }
        if tag.closing {
            if excess > 0 {
                excess -= 1;
                dropped.push((tag.start, tag.end));
            } else {
                depth = depth.saturating_sub(1);
            }
        } else if let Some(raw) = RAW_TEXT.iter().find(|n| tag.is(bytes, n)) {
            at = find_ignore_case(bytes, at, &format!("</{raw}")).unwrap_or(bytes.len());
        } else if !tag.self_closing {
            if depth >= limit {
                excess += 1;
                dropped.push((tag.start, tag.end));
            } else {
                depth += 1;
            }
        }
    }
    if dropped.is_empty() {
        return Cow::Borrowed(html);
    }
    let mut kept = String::with_capacity(html.len());
    let mut from = 0;
    for (start, end) in dropped {
        kept.push_str(&html[from..start]);
        from = end;
    }
    kept.push_str(&html[from..]);
    Cow::Owned(kept)
}

/// A tag found by [`next_tag`]: its byte range and name range.
struct Tag {
    start: usize,
    end: usize,
    name: (usize, usize),
    closing: bool,
    self_closing: bool,
    comment: bool,
}

impl Tag {
    /// Whether the tag's name is `name` (ASCII case-insensitive).
    fn is(&self, bytes: &[u8], name: &str) -> bool {
        bytes[self.name.0..self.name.1].eq_ignore_ascii_case(name.as_bytes())
    }
}

/// The next start tag, end tag or comment at or after `from`.
fn next_tag(bytes: &[u8], from: usize) -> Option<Tag> {
    let mut start = from + bytes.get(from..)?.iter().position(|&b| b == b'<')?;
    loop {
        if bytes[start + 1..].starts_with(b"!--") {
            let end = find_ignore_case(bytes, start + 4, "-->").map_or(bytes.len(), |e| e + 3);
            return Some(Tag {
                start,
                end,
                name: (start, start),
                closing: false,
                self_closing: false,
                comment: true,
            });
        }
        let closing = bytes.get(start + 1) == Some(&b'/');
        let name_start = start + 1 + usize::from(closing);
        if bytes.get(name_start).is_some_and(u8::is_ascii_alphabetic) {
            let name_len = bytes[name_start..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            let end = bytes[name_start..]
                .iter()
                .position(|&b| b == b'>')
                .map_or(bytes.len(), |e| name_start + e + 1);
            let self_closing = end >= 2 && bytes[end - 2] == b'/';
            let name = (name_start, name_start + name_len);
            return Some(Tag {
                start,
                end,
                name,
                closing,
                self_closing,
                comment: false,
            });
        }
        start += 1 + bytes.get(start + 1..)?.iter().position(|&b| b == b'<')?;
    }
}

/// Position of `needle` (ASCII case-insensitive) in `bytes` at or after `from`.
fn find_ignore_case(bytes: &[u8], from: usize, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| from + p)
}

/// `<main>`, else `<article>`, else `<body>`, else the document.
fn content_root(document: &Html) -> NodeRef<'_, Node> {
    let root = document.tree.root();
    ["main", "article", "body"]
        .iter()
        .find_map(|name| first_element(root, &[name]))
        .unwrap_or(root)
}

/// The first element (document order) named one of `names`.
fn first_element<'a>(root: NodeRef<'a, Node>, names: &[&str]) -> Option<NodeRef<'a, Node>> {
    root.descendants()
        .find(|node| element_name(node).is_some_and(|name| names.contains(&name)))
}

/// The concatenated text below `node`.
fn text_of(node: NodeRef<'_, Node>) -> String {
    let mut text = InlineText::default();
    for descendant in node.descendants() {
        if let Node::Text(fragment) = descendant.value() {
            text.push(fragment);
        }
    }
    text.take()
}

/// The local name of an element node.
fn element_name<'a>(node: &NodeRef<'a, Node>) -> Option<&'a str> {
    match node.value() {
        Node::Element(element) => Some(element.name()),
        _ => None,
    }
}

/// The heading level of `h1`..`h6`.
fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// A table being read: its header cells and the row in progress.
#[derive(Default)]
struct Table {
    headers: Vec<String>,
    cells: Vec<String>,
    header_cells: usize,
}

/// The state of the walk.
struct Walker {
    out: Builder,
    buf: InlineText,
    skipping: Option<NodeId>,
    heading: Option<u8>,
    list_items: usize,
    preformatted: usize,
    tables: Vec<Table>,
    in_row: bool,
}

impl Walker {
    fn new(limits: &Limits) -> Self {
        Walker {
            out: Builder::new(limits),
            buf: InlineText::default(),
            skipping: None,
            heading: None,
            list_items: 0,
            preformatted: 0,
            tables: Vec::new(),
            in_row: false,
        }
    }

    /// Visit every node below `root` in document order.
    fn walk(&mut self, root: NodeRef<'_, Node>) -> Result<(), ParseError> {
        for edge in root.traverse() {
            match edge {
                Edge::Open(node) => self.open(node)?,
                Edge::Close(node) => self.close(node)?,
            }
        }
        self.flush(self.default_role())
    }

    fn open(&mut self, node: NodeRef<'_, Node>) -> Result<(), ParseError> {
        if self.skipping.is_some() {
            return Ok(());
        }
        match node.value() {
            Node::Text(text) if self.preformatted > 0 => self.buf.push_raw(text),
            Node::Text(text) => self.buf.push(text),
            Node::Element(element) => return self.open_element(node.id(), element.name()),
            _ => {}
        }
        Ok(())
    }

    fn open_element(&mut self, id: NodeId, name: &str) -> Result<(), ParseError> {
        if DROPPED.contains(&name) {
            self.skipping = Some(id);
            return Ok(());
        }
        if let Some(level) = heading_level(name) {
            self.flush(self.default_role())?;
            self.heading = Some(level);
            return Ok(());
        }
        match name {
            "li" => {
                self.flush(self.default_role())?;
                self.list_items += 1;
            }
            "pre" => {
                self.flush(self.default_role())?;
                self.preformatted += 1;
            }
            "table" => {
                self.flush(self.default_role())?;
                self.tables.push(Table::default());
            }
            "tr" => {
                self.flush(self.default_role())?;
                self.in_row = true;
            }
            "td" | "th" => {
                self.buf.take();
            }
            "br" => self.buf.push_separator("\n"),
            _ if BLOCKS.contains(&name) => self.flush(self.default_role())?,
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, node: NodeRef<'_, Node>) -> Result<(), ParseError> {
        if let Some(skipped) = self.skipping {
            if skipped == node.id() {
                self.skipping = None;
            }
            return Ok(());
        }
        let Some(name) = element_name(&node) else {
            return Ok(());
        };
        if let Some(level) = heading_level(name) {
            if level == 1 {
                self.out.offer_title(self.buf.as_str());
            }
            self.heading = None;
            return self.flush(Role::Heading { level });
        }
        match name {
            "li" => {
                self.flush(Role::ListItem)?;
                self.list_items = self.list_items.saturating_sub(1);
                Ok(())
            }
            "pre" => {
                self.preformatted = self.preformatted.saturating_sub(1);
                self.flush(Role::Code)
            }
            "td" | "th" => {
                self.close_cell(name == "th");
                Ok(())
            }
            "tr" => self.close_row(),
            "table" => {
                self.tables.pop();
                self.flush(self.default_role())
            }
            _ if BLOCKS.contains(&name) => self.flush(self.default_role()),
            _ => Ok(()),
        }
    }

    /// Store the cell just read in the current table.
    fn close_cell(&mut self, is_header: bool) {
        let cell = self.buf.take();
        if let Some(table) = self.tables.last_mut() {
            table.cells.push(cell);
            table.header_cells += usize::from(is_header);
        }
    }

    /// Emit a row; a row of only `<th>` cells becomes the table's headers.
    fn close_row(&mut self) -> Result<(), ParseError> {
        self.in_row = false;
        let Some(table) = self.tables.last_mut() else {
            return self.flush(Role::TableRow);
        };
        let cells = std::mem::take(&mut table.cells);
        let all_headers = table.header_cells == cells.len();
        table.header_cells = 0;
        if all_headers && table.headers.is_empty() {
            table.headers = cells;
            return Ok(());
        }
        let row = render_row(&table.headers, &cells);
        self.out.push(Role::TableRow, &row, Location::default())
    }

    /// The role of loose text here.
    fn default_role(&self) -> Role {
        if self.list_items > 0 {
            Role::ListItem
        } else {
            Role::Paragraph
        }
    }

    /// Emit the collected text, unless a heading, preformatted block or table
    /// row is still being read (their inner block elements do not split them).
    fn flush(&mut self, role: Role) -> Result<(), ParseError> {
        let inside_unit = self.in_row
            || (self.heading.is_some() && !matches!(role, Role::Heading { .. }))
            || (self.preformatted > 0 && role != Role::Code);
        if inside_unit {
            self.buf.push(" ");
            return Ok(());
        }
        let text = self.buf.take();
        self.out.push(role, &text, Location::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<!doctype html>
<html><head><title> The  Page </title><style>p{}</style></head>
<body>
<nav><a href="/">Home</a></nav>
<header>Site header</header>
<main>
  <h1>Main <em>title</em></h1>
  <p>First paragraph<br>second line.</p>
  <script>var x = 1;</script>
  <h2>Section</h2>
  <div>Loose <b>text</b> in a div</div>
  <ul><li>one</li><li>two <p>para in li</p></li></ul>
  <pre>  code
    block</pre>
  <table>
    <tr><th>Name</th><th>Age</th></tr>
    <tr><td>Ada</td><td><p>36</p></td></tr>
  </table>
  <h3>Deeper</h3><p>deep text</p>
</main>
<footer>Footer</footer>
</body></html>"#;

    #[test]
    fn main_content_blocks_and_heading_paths() {
        let parsed = parse(PAGE.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(parsed.title.as_deref(), Some("The Page"));
        let got: Vec<(Role, &str, String)> = parsed
            .blocks
            .iter()
            .map(|b| (b.role, b.text.as_str(), b.location.heading_path.join(" > ")))
            .collect();
        let path = |p: &str| p.to_owned();
        assert_eq!(
            got,
            vec![
                (Role::Heading { level: 1 }, "Main title", path("Main title")),
                (
                    Role::Paragraph,
                    "First paragraph\nsecond line.",
                    path("Main title")
                ),
                (
                    Role::Heading { level: 2 },
                    "Section",
                    path("Main title > Section")
                ),
                (
                    Role::Paragraph,
                    "Loose text in a div",
                    path("Main title > Section")
                ),
                (Role::ListItem, "one", path("Main title > Section")),
                (Role::ListItem, "two", path("Main title > Section")),
                (Role::ListItem, "para in li", path("Main title > Section")),
                (
                    Role::Code,
                    "  code\n    block",
                    path("Main title > Section")
                ),
                (
                    Role::TableRow,
                    "Name: Ada; Age: 36",
                    path("Main title > Section")
                ),
                (
                    Role::Heading { level: 3 },
                    "Deeper",
                    path("Main title > Section > Deeper")
                ),
                (
                    Role::Paragraph,
                    "deep text",
                    path("Main title > Section > Deeper")
                ),
            ]
        );
    }

    #[test]
    fn deep_nesting_is_flattened_but_text_kept() {
        let html = format!(
            "{}<p>deep</p>{}<p>after</p>",
            "<div>".repeat(10),
            "</div>".repeat(10)
        );
        let flat = flatten_deep_nesting(&html, 4);
        assert_eq!(
            flat,
            format!(
                "{}<p>deep</p>{}<p>after</p>",
                "<div>".repeat(4),
                "</div>".repeat(4)
            )
        );
        let shallow = "<div><br/><p>a<p>b<!-- <div><div> --><script>'<div><div>'</script></div>";
        assert!(matches!(flatten_deep_nesting(shallow, 1), Cow::Borrowed(_)));
    }

    #[test]
    fn without_main_the_body_is_read_and_h1_is_the_title() {
        let parsed = parse(b"<h1>Hello</h1><p>world</p>", &Limits::default()).unwrap();
        assert_eq!(parsed.title.as_deref(), Some("Hello"));
        assert_eq!(parsed.blocks.len(), 2);
    }
}
