//! What parsing produces: blocks of text with their location, and the limits
//! parsers work within.

use serde::{Deserialize, Serialize};

/// The text of a document, in reading order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parsed {
    /// The document's own title, when it declares one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The text, block by block.
    pub blocks: Vec<Block>,
}

/// One structural unit of text: a heading, paragraph, list item, table row...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// The text, with whitespace normalised (except in code).
    pub text: String,
    /// What the text is.
    pub role: Role,
    /// Where the text came from.
    pub location: Location,
}

/// The structural role of a [`Block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Role {
    /// A heading; level 1 is the outermost.
    Heading {
        /// 1 to 6.
        level: u8,
    },
    /// Running text.
    Paragraph,
    /// One item of a list.
    ListItem,
    /// Preformatted text or code, whitespace preserved.
    Code,
    /// One table or spreadsheet row, rendered as text.
    TableRow,
    /// One transcript turn (one or more consecutive cues of a speaker).
    Cue,
}

/// Where a block is in its document. Fields that do not apply are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// 1-based page number (PDF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The headings above the block, outermost first (a heading block ends with itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heading_path: Vec<String>,
    /// Start time in milliseconds (transcripts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// End time in milliseconds (transcripts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// Who speaks (transcripts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    /// Sheet name (spreadsheets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// 1-based row number as a spreadsheet shows it (spreadsheets and CSV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// 1-based slide number (presentations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<u32>,
}

/// Bounds that keep hostile files from exhausting memory or time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most entries an archive (DOCX, PPTX, XLSX, ODT) may hold.
    pub max_zip_entries: usize,
    /// Most bytes an archive may expand to, all entries together.
    pub max_uncompressed_bytes: u64,
    /// Highest expansion ratio allowed for an entry larger than 1 MiB.
    pub max_compression_ratio: u64,
    /// Most bytes of text a document may yield.
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_zip_entries: 10_000,
            max_uncompressed_bytes: 256 * 1024 * 1024,
            max_compression_ratio: 100,
            max_text_bytes: 64 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_location_fields_are_not_serialised() {
        let location = Location {
            page: Some(3),
            ..Location::default()
        };
        assert_eq!(serde_json::to_string(&location).unwrap(), r#"{"page":3}"#);
        let back: Location = serde_json::from_str(r#"{"page":3}"#).unwrap();
        assert_eq!(back, location);
    }

    #[test]
    fn roles_serialise_with_a_type_tag() {
        let json = serde_json::to_string(&Role::Heading { level: 2 }).unwrap();
        assert_eq!(json, r#"{"type":"heading","level":2}"#);
    }
}
