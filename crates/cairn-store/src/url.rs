//! Database and Redis URLs as operators write them, and as Cairn prints them: with any password
//! replaced by `***`, so a URL can appear in logs and error messages.

/// `url` with its password (if any) replaced by `***`. Input that is not a URL comes back
/// unchanged only when it has no `@` (and so no credentials to leak); otherwise it is hidden.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Setting a password fails only for URLs that cannot have one.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) if !url.contains('@') => url.to_owned(),
        Err(_) => "<unparseable URL hidden>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgres://cairn:s3cret@db:5432/cairn"),
            "postgres://cairn:***@db:5432/cairn"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("sqlite:///data/cairn.db"),
            "sqlite:///data/cairn.db"
        );
        assert_eq!(
            redact_url("not a url @ with:secret"),
            "<unparseable URL hidden>"
        );
    }
}
