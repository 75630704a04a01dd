//! JSON flattened to `path.to.key: value` lines, one block per top-level
//! member (object key or array item), keys kept in document order.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::text::decode_text;
use super::Builder;
use crate::{Limits, Location, ParseError, Parsed, Role};

/// serde_json's fixed nesting limit, reported when input goes deeper.
const MAX_DEPTH: usize = 128;

/// Flatten a JSON document into blocks of `path: value` lines.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let text = decode_text(bytes)?;
    let value: Node = serde_json::from_str(&text).map_err(json_error)?;
    let mut out = Builder::new(limits);
    match &value {
        Node::Object(members) => {
            for (key, member) in members {
                out.push(Role::Paragraph, &flatten(key, member), Location::default())?;
            }
        }
        Node::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let path = format!("[{index}]");
                out.push(Role::Paragraph, &flatten(&path, item), Location::default())?;
            }
        }
        scalar => out.push(Role::Paragraph, &flatten("", scalar), Location::default())?,
    }
    Ok(out.finish())
}

/// Map serde_json's error, telling too-deep input apart from bad syntax.
fn json_error(error: serde_json::Error) -> ParseError {
    if error.to_string().starts_with("recursion limit exceeded") {
        ParseError::TooDeep { limit: MAX_DEPTH }
    } else {
        ParseError::Malformed(format!("invalid JSON: {error}"))
    }
}

/// A JSON value that keeps object members in document order.
#[derive(Debug)]
enum Node {
    /// `null`, `true`, `false` or a number, as written by serde_json.
    Literal(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Builds [`Node`]s; serde_json enforces its nesting limit around it.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Literal("null".into()))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Node, E> {
        Ok(Node::Literal(value.to_string()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Node, E> {
        Ok(Node::Literal(value.to_string()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Node, E> {
        Ok(Node::Literal(value.to_string()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Node, E> {
        Ok(Node::Literal(value.to_string()))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Node, E> {
        Ok(Node::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Node, E> {
        Ok(Node::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Node>()? {
            members.push(member);
        }
        Ok(Node::Object(members))
    }
}

/// One `path: value` line per scalar below `value`, in document order.
/// Iterative, so depth costs no stack.
fn flatten(root_path: &str, value: &Node) -> String {
    let mut lines = String::new();
    let mut stack = vec![(root_path.to_owned(), value)];
    while let Some((path, value)) = stack.pop() {
        match value {
            Node::Object(members) if !members.is_empty() => {
                for (key, member) in members.iter().rev() {
                    stack.push((join_key(&path, key), member));
                }
            }
            Node::Array(items) if !items.is_empty() => {
                for (index, item) in items.iter().enumerate().rev() {
                    stack.push((format!("{path}[{index}]"), item));
                }
            }
            scalar => push_line(&mut lines, &path, scalar),
        }
    }
    lines
}

/// `parent.key`, or `key` at the top.
fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Append `path: value` (strings unquoted, empty containers as `{}` / `[]`).
fn push_line(lines: &mut String, path: &str, value: &Node) {
    if !lines.is_empty() {
        lines.push('\n');
    }
    if !path.is_empty() {
        lines.push_str(path);
        lines.push_str(": ");
    }
    match value {
        Node::String(text) | Node::Literal(text) => lines.push_str(text),
        Node::Object(_) => lines.push_str("{}"),
        Node::Array(_) => lines.push_str("[]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(input: &str) -> Vec<String> {
        let parsed = parse(input.as_bytes(), &Limits::default()).unwrap();
        parsed.blocks.into_iter().map(|b| b.text).collect()
    }

    #[test]
    fn objects_become_one_block_per_key_in_document_order() {
        let got = texts(
            r#"{"name": "Cairn", "meta": {"tags": ["a", "b"], "n": 2.5, "x": null, "e": {}, "ok": true}}"#,
        );
        assert_eq!(
            got,
            ["name: Cairn", "meta.tags[0]: a\nmeta.tags[1]: b\nmeta.n: 2.5\nmeta.x: null\nmeta.e: {}\nmeta.ok: true"]
        );
    }

    #[test]
    fn arrays_become_one_block_per_item() {
        assert_eq!(
            texts(r#"[{"id": 1}, "two", [], -3]"#),
            ["[0].id: 1", "[1]: two", "[2]: []", "[3]: -3"]
        );
        assert_eq!(texts("42"), ["42"]);
    }

    #[test]
    fn bad_and_deep_json_error_cleanly() {
        let err = parse(b"{\"a\": ", &Limits::default()).unwrap_err();
        assert_eq!(err.code(), "malformed");
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(
            parse(deep.as_bytes(), &Limits::default()),
            Err(ParseError::TooDeep { limit: 128 })
        );
        let deep_objects = "{\"a\":".repeat(50_000) + "1" + &"}".repeat(50_000);
        assert_eq!(
            parse(deep_objects.as_bytes(), &Limits::default()),
            Err(ParseError::TooDeep { limit: 128 })
        );
    }
}
