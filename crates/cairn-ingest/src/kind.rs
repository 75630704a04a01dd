//! The kinds of file Cairn can read.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a file is, decided from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Plain UTF-8 text.
    Text,
    /// CommonMark / GitHub-flavoured Markdown.
    Markdown,
    /// An HTML page.
    Html,
    /// A PDF with a text layer.
    Pdf,
    /// A Word (OOXML) document.
    Docx,
    /// A PowerPoint (OOXML) presentation.
    Pptx,
    /// An Excel (OOXML) workbook.
    Xlsx,
    /// An OpenDocument text document.
    Odt,
    /// Comma- (or semicolon-, tab-) separated values with a header row.
    Csv,
    /// A JSON document.
    Json,
    /// A WebVTT transcript or subtitle file.
    Vtt,
    /// A SubRip subtitle file.
    Srt,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 12] = [
        Kind::Text,
        Kind::Markdown,
        Kind::Html,
        Kind::Pdf,
        Kind::Docx,
        Kind::Pptx,
        Kind::Xlsx,
        Kind::Odt,
        Kind::Csv,
        Kind::Json,
        Kind::Vtt,
        Kind::Srt,
    ];

    /// The stable snake_case name, as used in the API and in serde.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Markdown => "markdown",
            Kind::Html => "html",
            Kind::Pdf => "pdf",
            Kind::Docx => "docx",
            Kind::Pptx => "pptx",
            Kind::Xlsx => "xlsx",
            Kind::Odt => "odt",
            Kind::Csv => "csv",
            Kind::Json => "json",
            Kind::Vtt => "vtt",
            Kind::Srt => "srt",
        }
    }

    /// The MIME type to serve the original file with.
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Text => "text/plain; charset=utf-8",
            Kind::Markdown => "text/markdown; charset=utf-8",
            Kind::Html => "text/html; charset=utf-8",
            Kind::Pdf => "application/pdf",
            Kind::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Kind::Pptx => {
                "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            }
            Kind::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Kind::Odt => "application/vnd.oasis.opendocument.text",
            Kind::Csv => "text/csv; charset=utf-8",
            Kind::Json => "application/json",
            Kind::Vtt => "text/vtt; charset=utf-8",
            Kind::Srt => "application/x-subrip",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a name that is not one of [`Kind::as_str`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown document kind {0:?}")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert!(!kind.mime().is_empty());
        }
        assert!("exe".parse::<Kind>().is_err());
    }
}
