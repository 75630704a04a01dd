//! Deciding what a file is from its content.
//!
//! The filename is untrusted: content decides, and the extension only chooses
//! among text-like kinds whose bytes are ambiguous (a UTF-8 file is Markdown if
//! it is named `.md`, CSV if named `.csv`, and so on). Binary content is never
//! accepted on the strength of its name.

use std::collections::HashSet;
use std::io::{Cursor, Read};

use crate::parsers::{text::decode_head, transcript};
use crate::Kind;

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// The kind is certain from the head alone.
    Known(Kind),
    /// An OOXML/ODF container: the exact kind needs the whole file ([`zip_kind`]).
    Zip,
}

/// Why a file was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// No bytes at all.
    #[error("the file is empty")]
    Empty,
    /// A binary format Cairn does not read; the text says what it looks like.
    #[error("unsupported binary file: this looks like {0}")]
    Binary(String),
    /// Looks like text, but is neither UTF-8 nor UTF-16 with a byte-order mark.
    #[error("the text is not UTF-8; save it as UTF-8 and upload it again")]
    InvalidUtf8,
    /// A recognised format that Cairn does not read.
    #[error("unsupported file type: {0}")]
    Unsupported(String),
    /// A container too damaged to look inside.
    #[error("the archive is damaged: {0}")]
    Corrupt(String),
}

impl DetectError {
    /// A stable snake_case name for the error, for API responses.
    pub fn code(&self) -> &'static str {
        match self {
            DetectError::Empty => "empty",
            DetectError::Binary(_) => "binary",
            DetectError::InvalidUtf8 => "invalid_utf8",
            DetectError::Unsupported(_) => "unsupported",
            DetectError::Corrupt(_) => "corrupt",
        }
    }
}

/// Decide the kind from the first bytes of the file (callers pass up to 8 KiB)
/// and its untrusted `filename`.
pub fn sniff(head: &[u8], filename: &str) -> Result<Sniffed, DetectError> {
    if head.is_empty() {
        return Err(DetectError::Empty);
    }
    if head.starts_with(b"%PDF-") {
        return Ok(Sniffed::Known(Kind::Pdf));
    }
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Sniffed::Zip);
    }
    match decode_head(head) {
        Some(text) if is_textual(&text) => Ok(Sniffed::Known(text_kind(&text, filename))),
        Some(_) => Err(DetectError::Binary(describe_binary(head))),
        None if head.contains(&0) || infer::get(head).is_some() => {
            Err(DetectError::Binary(describe_binary(head)))
        }
        None => Err(DetectError::InvalidUtf8),
    }
}

/// Tell the OOXML/ODF containers apart by their entry names (and the small
/// `mimetype` entry of OpenDocument files), without expanding anything else.
pub fn zip_kind(bytes: &[u8]) -> Result<Kind, DetectError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| DetectError::Corrupt(e.to_string()))?;
    let names: HashSet<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .map(|name| name.into_owned())
        .collect();
    let office = [
        ("word/document.xml", Kind::Docx),
        ("ppt/presentation.xml", Kind::Pptx),
        ("xl/workbook.xml", Kind::Xlsx),
    ];
    if let Some((_, kind)) = office.iter().find(|(name, _)| names.contains(*name)) {
        return Ok(*kind);
    }
    let has_mimetype = names.contains("mimetype");
    if !has_mimetype {
        return Err(unsupported_zip(""));
    }
    let mimetype = read_small_entry(&mut archive, "mimetype")?;
    match mimetype.trim() {
        "application/vnd.oasis.opendocument.text" => Ok(Kind::Odt),
        other => Err(unsupported_zip(other)),
    }
}

/// Read an entry of at most 256 bytes (more is ignored).
fn read_small_entry<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
) -> Result<String, DetectError> {
    let entry = archive
        .by_name(name)
        .map_err(|e| DetectError::Corrupt(e.to_string()))?;
    let mut bytes = Vec::new();
    entry
        .take(256)
        .read_to_end(&mut bytes)
        .map_err(|e| DetectError::Corrupt(e.to_string()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The error for a zip that is not a supported office document.
fn unsupported_zip(mimetype: &str) -> DetectError {
    let what = match mimetype {
        "application/vnd.oasis.opendocument.spreadsheet" => "an OpenDocument spreadsheet (.ods)",
        "application/vnd.oasis.opendocument.presentation" => "an OpenDocument presentation (.odp)",
        "application/epub+zip" => "an EPUB e-book",
        _ => "a zip archive that is not a Word, PowerPoint, Excel or OpenDocument text file",
    };
    DetectError::Unsupported(what.to_owned())
}

/// Whether decoded text looks like a human-readable file: no NUL and almost
/// no other control characters.
fn is_textual(text: &str) -> bool {
    let mut controls = 0usize;
    for c in text.chars() {
        if c == '\0' {
            return false;
        }
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c' | '\x1b') {
            controls += 1;
        }
    }
    controls * 100 <= text.len()
}

/// The text kind, from the content first and the extension second.
fn text_kind(text: &str, filename: &str) -> Kind {
    let trimmed = text.trim_start();
    if trimmed.starts_with("WEBVTT") {
        return Kind::Vtt;
    }
    if starts_with_ignore_case(trimmed, "<!doctype html")
        || starts_with_ignore_case(trimmed, "<html")
    {
        return Kind::Html;
    }
    match extension(filename).as_deref() {
        Some("md" | "markdown" | "mdown" | "mkd" | "mdx") => Kind::Markdown,
        Some("html" | "htm" | "xhtml") => Kind::Html,
        Some("csv" | "tsv") => Kind::Csv,
        Some("json") if trimmed.starts_with(['{', '[']) => Kind::Json,
        Some("srt") if transcript::looks_like_srt(trimmed) => Kind::Srt,
        _ => Kind::Text,
    }
}

/// ASCII case-insensitive prefix test.
fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The lower-cased extension of the last path component, if any.
fn extension(filename: &str) -> Option<String> {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    let (stem, ext) = base.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// A short description of a binary head, for the refusal message.
fn describe_binary(head: &[u8]) -> String {
    let Some(found) = infer::get(head) else {
        return "binary data of an unknown format".to_owned();
    };
    let known = match found.mime_type() {
        "application/x-executable" => "an ELF executable",
        "application/vnd.microsoft.portable-executable" => "a Windows executable",
        "application/x-mach-binary" => "a macOS executable",
        "image/png" => "a PNG image",
        "image/jpeg" => "a JPEG image",
        "image/gif" => "a GIF image",
        "image/webp" => "a WebP image",
        "image/tiff" => "a TIFF image",
        "audio/mpeg" => "an MP3 audio file",
        "video/mp4" => "an MP4 video",
        "application/gzip" => "a gzip archive",
        "application/x-7z-compressed" => "a 7-Zip archive",
        "application/vnd.rar" => "a RAR archive",
        "application/vnd.sqlite3" => "an SQLite database",
        "application/msword" | "application/vnd.ms-excel" | "application/vnd.ms-powerpoint"
        | "application/x-ole-storage" => {
            "a legacy or password-protected Microsoft Office file (save it as .docx, .xlsx or .pptx)"
        }
        mime => return format!("a .{} file ({mime})", found.extension()),
    };
    known.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(head: &[u8], name: &str) -> Kind {
        match sniff(head, name).unwrap() {
            Sniffed::Known(kind) => kind,
            Sniffed::Zip => panic!("unexpected zip"),
        }
    }

    #[test]
    fn text_kinds_follow_content_then_extension() {
        assert_eq!(kind(b"hello world\n", "notes.txt"), Kind::Text);
        assert_eq!(kind(b"# Title\n\ntext", "README.md"), Kind::Markdown);
        assert_eq!(kind(b"# Title\n\ntext", "README"), Kind::Text);
        assert_eq!(kind(b"a,b\n1,2\n", "data.CSV"), Kind::Csv);
        assert_eq!(kind(b" {\"a\": 1}", "x.json"), Kind::Json);
        assert_eq!(kind(b"not json", "x.json"), Kind::Text);
        assert_eq!(
            kind(b"WEBVTT\n\n00:01.000 --> 00:02.000\nhi", "a.txt"),
            Kind::Vtt
        );
        assert_eq!(
            kind(b"1\n00:00:01,000 --> 00:00:02,000\nhi\n", "a.srt"),
            Kind::Srt
        );
        assert_eq!(kind(b"plain words", "a.srt"), Kind::Text);
        assert_eq!(kind(b"<!DOCTYPE html><p>x", "page"), Kind::Html);
        assert_eq!(kind(b"\n<html><body>x", "x.txt"), Kind::Html);
        assert_eq!(kind(b"<p>fragment</p>", "x.htm"), Kind::Html);
        assert_eq!(kind(b"\xEF\xBB\xBFhello", "bom.txt"), Kind::Text);
        assert_eq!(kind(b"BMW makes cars", "cars.txt"), Kind::Text);
    }

    #[test]
    fn utf16_with_bom_is_text() {
        let mut bytes = vec![0xFF, 0xFE];
        for unit in "# hé\n".encode_utf16() {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(kind(&bytes, "a.md"), Kind::Markdown);
    }

    #[test]
    fn pdf_and_zip_are_recognised_whatever_the_name() {
        assert_eq!(kind(b"%PDF-1.7\n%\xE2\xE3", "a.txt"), Kind::Pdf);
        assert_eq!(sniff(b"PK\x03\x04rest", "a.txt"), Ok(Sniffed::Zip));
    }

    #[test]
    fn binaries_are_refused_with_a_description() {
        let mut elf =
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00".to_vec();
        elf.resize(64, 0);
        let err = sniff(&elf, "notes.txt").unwrap_err();
        assert_eq!(err, DetectError::Binary("an ELF executable".into()));
        assert_eq!(err.code(), "binary");
        let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01";
        assert_eq!(
            sniff(png, "a.md"),
            Err(DetectError::Binary("a PNG image".into()))
        );
        let unknown = b"\x00\x01\x02\x03\xff\xfe\x00";
        assert!(matches!(
            sniff(unknown, "a.txt"),
            Err(DetectError::Binary(_))
        ));
    }

    #[test]
    fn empty_and_non_utf8_are_refused() {
        assert_eq!(sniff(b"", "a.txt"), Err(DetectError::Empty));
        assert_eq!(
            sniff(b"caf\xe9 au lait", "a.txt"),
            Err(DetectError::InvalidUtf8)
        );
        assert_eq!(DetectError::InvalidUtf8.code(), "invalid_utf8");
    }

    #[test]
    fn a_multibyte_character_cut_by_the_head_is_fine() {
        let text = "é".repeat(10);
        let head = &text.as_bytes()[..7];
        assert_eq!(kind(head, "a.txt"), Kind::Text);
    }

    #[test]
    fn extensions_are_taken_from_the_last_component() {
        assert_eq!(extension("dir.md/file"), None);
        assert_eq!(extension("a/b/C.Md"), Some("md".into()));
        assert_eq!(extension(".md"), None);
        assert_eq!(extension("c:\\x\\y.json"), Some("json".into()));
    }
}
