//! Email addresses as identities: normalised (Unicode NFKC, trimmed, lower-cased) so that
//! `Ann@Example.com` and `ann@example.com` — or a full-width look-alike — are one account, and
//! refused when they carry characters that make two addresses look alike (controls, zero-width
//! and bidirectional marks).

use unicode_normalization::UnicodeNormalization;

pub const MAX_EMAIL_LEN: usize = 254;

/// Why an email address is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailError {
    Empty,
    TooLong,
    Malformed,
    InvisibleCharacters,
}

impl EmailError {
    pub fn message(&self) -> &'static str {
        match self {
            EmailError::Empty => "The email address is empty.",
            EmailError::TooLong => "The email address is longer than 254 characters.",
            EmailError::Malformed => "That is not an email address like name@example.com.",
            EmailError::InvisibleCharacters => {
                "The email address contains invisible or direction-changing characters."
            }
        }
    }
}

fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}' | '\u{034F}' | '\u{180E}')
}

/// The canonical form of an email address, or why it is refused.
pub fn normalize(raw: &str) -> Result<String, EmailError> {
    let s: String = raw.trim().nfkc().collect::<String>().to_lowercase();
    if s.is_empty() {
        return Err(EmailError::Empty);
    }
    if s.chars().count() > MAX_EMAIL_LEN {
        return Err(EmailError::TooLong);
    }
    if s.chars().any(invisible) {
        return Err(EmailError::InvisibleCharacters);
    }
    let (local, domain) = s.rsplit_once('@').ok_or(EmailError::Malformed)?;
    let domain_ok = !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    if local.is_empty()
        || local.len() > 64
        || local.contains('@')
        || s.contains(char::is_whitespace)
        || !domain_ok
    {
        return Err(EmailError::Malformed);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_unicode_forms_collapse_to_one_address() {
        assert_eq!(normalize("  Ann@Example.COM ").unwrap(), "ann@example.com");
        // Full-width letters normalise (NFKC) to ASCII.
        assert_eq!(normalize("ａｎｎ@example.com").unwrap(), "ann@example.com");
    }

    #[test]
    fn tricks_and_malformed_addresses_are_refused() {
        assert_eq!(
            normalize("ann\u{200B}@example.com"),
            Err(EmailError::InvisibleCharacters)
        );
        assert_eq!(
            normalize("ann@exa\u{202E}mple.com"),
            Err(EmailError::InvisibleCharacters)
        );
        assert_eq!(normalize("ann"), Err(EmailError::Malformed));
        assert_eq!(normalize("ann@"), Err(EmailError::Malformed));
        assert_eq!(normalize("a b@example.com"), Err(EmailError::Malformed));
        assert_eq!(normalize("ann@example..com"), Err(EmailError::Malformed));
        assert_eq!(normalize(""), Err(EmailError::Empty));
        assert_eq!(
            normalize(&format!("{}@example.com", "a".repeat(300))),
            Err(EmailError::TooLong)
        );
    }
}
