//! Plain text: decoding (UTF-8, UTF-8 with BOM, UTF-16 with BOM) and
//! paragraphs split on blank lines.

use std::borrow::Cow;

use super::Builder;
use crate::{Limits, Location, ParseError, Parsed, Role};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const UTF16LE_BOM: &[u8] = b"\xFF\xFE";
const UTF16BE_BOM: &[u8] = b"\xFE\xFF";

/// Split plain text into paragraphs at blank lines.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let text = decode_text(bytes)?;
    let mut out = Builder::new(limits);
    let mut paragraph = String::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            out.push(Role::Paragraph, &paragraph, Location::default())?;
            paragraph.clear();
            continue;
        }
        if !paragraph.is_empty() {
            paragraph.push('\n');
        }
        paragraph.push_str(line.trim_end());
    }
    out.push(Role::Paragraph, &paragraph, Location::default())?;
    Ok(out.finish())
}

/// Decode a whole text file: UTF-8 (a BOM is stripped) or UTF-16 with a BOM.
pub(crate) fn decode_text(bytes: &[u8]) -> Result<Cow<'_, str>, ParseError> {
    if let Some(units) = bytes.strip_prefix(UTF16LE_BOM) {
        return decode_utf16(units, u16::from_le_bytes).ok_or(ParseError::InvalidUtf8);
    }
    if let Some(units) = bytes.strip_prefix(UTF16BE_BOM) {
        return decode_utf16(units, u16::from_be_bytes).ok_or(ParseError::InvalidUtf8);
    }
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    std::str::from_utf8(bytes)
        .map(Cow::Borrowed)
        .map_err(|_| ParseError::InvalidUtf8)
}

/// Decode the first bytes of a file, tolerating a character (or UTF-16 unit)
/// cut at the end. `None` when the bytes are not text in a supported encoding.
pub(crate) fn decode_head(head: &[u8]) -> Option<Cow<'_, str>> {
    if let Some(units) = head.strip_prefix(UTF16LE_BOM) {
        return decode_utf16(even_prefix(units), u16::from_le_bytes);
    }
    if let Some(units) = head.strip_prefix(UTF16BE_BOM) {
        return decode_utf16(even_prefix(units), u16::from_be_bytes);
    }
    let head = head.strip_prefix(UTF8_BOM).unwrap_or(head);
    match std::str::from_utf8(head) {
        Ok(text) => Some(Cow::Borrowed(text)),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()])
            .ok()
            .map(Cow::Borrowed),
        Err(_) => None,
    }
}

/// The bytes up to an even length.
fn even_prefix(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len() & !1]
}

/// Decode UTF-16 code units; `None` on an odd length or unpaired surrogate.
fn decode_utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Option<Cow<'static, str>> {
    let pairs = bytes.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let units = pairs.map(|pair| unit([pair[0], pair[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .ok()
        .map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(parsed: &Parsed) -> Vec<&str> {
        parsed.blocks.iter().map(|b| b.text.as_str()).collect()
    }

    #[test]
    fn paragraphs_split_on_blank_lines_with_crlf_and_bom() {
        let input = b"\xEF\xBB\xBFFirst line\r\nsecond line\r\n\r\n  \r\nNext para.\r\n";
        let parsed = parse(input, &Limits::default()).unwrap();
        assert_eq!(texts(&parsed), ["First line\nsecond line", "Next para."]);
        assert!(parsed.blocks.iter().all(|b| b.role == Role::Paragraph));
    }

    #[test]
    fn utf16_is_decoded_and_bad_utf8_refused() {
        let mut be = vec![0xFE, 0xFF];
        for unit in "héllo\n\nwörld".encode_utf16() {
            be.extend_from_slice(&unit.to_be_bytes());
        }
        assert_eq!(
            texts(&parse(&be, &Limits::default()).unwrap()),
            ["héllo", "wörld"]
        );
        assert_eq!(
            parse(b"caf\xe9", &Limits::default()),
            Err(ParseError::InvalidUtf8)
        );
        assert_eq!(
            parse(b"\xFF\xFE\x00", &Limits::default()),
            Err(ParseError::InvalidUtf8)
        );
    }

    #[test]
    fn head_decoding_tolerates_a_cut_character() {
        assert_eq!(decode_head(b"ab\xC3").as_deref(), Some("ab"));
        assert_eq!(decode_head(b"ab\xC3x"), None);
        assert_eq!(decode_head(b"\xFF\xFEa\x00b").as_deref(), Some("a"));
    }
}
