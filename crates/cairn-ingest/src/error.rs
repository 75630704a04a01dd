//! Why a file could not be turned into text.

/// A parse failure, with a message fit to show the person who uploaded the file.
///
/// [`ParseError::code`] gives a stable machine-readable name for the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The file is truncated or damaged beyond reading.
    #[error("the file is damaged: {0}")]
    Corrupt(String),
    /// The PDF needs a password to be read.
    #[error("the PDF is password-protected")]
    Encrypted,
    /// The PDF has pages but no extractable text.
    #[error("the PDF has no text layer (is it a scanned image?)")]
    NoText,
    /// An archive expands beyond the configured limits.
    #[error("the archive expands beyond safe limits ({what} exceeds {limit})")]
    ZipBomb {
        /// Which limit was crossed, e.g. "total uncompressed size".
        what: String,
        /// The limit that was crossed.
        limit: u64,
    },
    /// The extracted text is larger than [`crate::Limits::max_text_bytes`].
    #[error("the document holds more than {limit} bytes of text")]
    TooMuchText {
        /// The limit in bytes.
        limit: usize,
    },
    /// The structure is nested deeper than the parser accepts.
    #[error("the document is nested more than {limit} levels deep")]
    TooDeep {
        /// The deepest nesting accepted.
        limit: usize,
    },
    /// Text-like content that is not valid UTF-8 (or UTF-16 with a BOM).
    #[error("the text is not valid UTF-8")]
    InvalidUtf8,
    /// The content does not follow its format.
    #[error("the file is malformed: {0}")]
    Malformed(String),
}

impl ParseError {
    /// A stable snake_case name for the error, for API responses.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::Corrupt(_) => "corrupt",
            ParseError::Encrypted => "pdf_encrypted",
            ParseError::NoText => "no_text",
            ParseError::ZipBomb { .. } => "zip_bomb",
            ParseError::TooMuchText { .. } => "too_much_text",
            ParseError::TooDeep { .. } => "too_deep",
            ParseError::InvalidUtf8 => "invalid_utf8",
            ParseError::Malformed(_) => "malformed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_and_messages_readable() {
        let errors = [
            ParseError::Corrupt("x".into()),
            ParseError::Encrypted,
            ParseError::NoText,
            ParseError::ZipBomb {
                what: "entries".into(),
                limit: 3,
            },
            ParseError::TooMuchText { limit: 1 },
            ParseError::TooDeep { limit: 1 },
            ParseError::InvalidUtf8,
            ParseError::Malformed("x".into()),
        ];
        for error in errors {
            let code = error.code();
            assert!(
                code.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{code}"
            );
            assert!(error.to_string().starts_with("the "), "{error}");
        }
    }
}
