//! [`TokenUrl`]: a validated token-endpoint URL that can be shown without leaking.
//!
//! A token URL may carry credentials (`https://user:pass@idp/token`) or secrets in its query
//! (`?api_key=…`). [`TokenUrl::redacted`] (and `Display`, `Debug`) never shows the userinfo
//! (replaced by `…@`) nor a query value (each replaced by `…`, names kept); the fragment is
//! dropped. Parsing is the `url` crate's (pure), not string slicing.

use std::fmt;

/// An absolute `http` or `https` URL with a host.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenUrl(url::Url);

/// Why a string is not a token URL (never quotes the string: it may hold credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenUrlError {
    /// Not a URL at all.
    #[error("not a URL: {0}")]
    Invalid(url::ParseError),
    /// A scheme other than `http` or `https`.
    #[error("the scheme must be http or https")]
    Scheme,
    /// No host.
    #[error("the URL has no host")]
    NoHost,
}

impl TokenUrl {
    /// Parses and validates `s`.
    ///
    /// # Errors
    /// [`TokenUrlError`] when `s` is not a URL, its scheme is not `http` or `https`, or it
    /// has no host.
    pub fn parse(s: &str) -> Result<Self, TokenUrlError> {
        let url = url::Url::parse(s).map_err(TokenUrlError::Invalid)?;
        match url.scheme() {
            "http" | "https" => {}
            _ => return Err(TokenUrlError::Scheme),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(TokenUrlError::NoHost);
        }
        Ok(TokenUrl(url))
    }

    /// The full URL, credentials included: for the request only, never for display.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The URL for people: no userinfo (`…@` instead), no query value (`name=…`), no
    /// fragment.
    pub fn redacted(&self) -> String {
        let u = &self.0;
        let mut out = String::with_capacity(u.as_str().len());
        out.push_str(u.scheme());
        out.push_str("://");
        if !u.username().is_empty() || u.password().is_some() {
            out.push_str("…@");
        }
        out.push_str(&u[url::Position::BeforeHost..url::Position::AfterPath]);
        if let Some(query) = u.query() {
            out.push('?');
            let names: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) => format!("{name}=…"),
                    None if pair.is_empty() => String::new(),
                    None => pair.to_owned(),
                })
                .collect();
            out.push_str(&names.join("&"));
        }
        out
    }
}

impl std::str::FromStr for TokenUrl {
    type Err = TokenUrlError;

    fn from_str(s: &str) -> Result<Self, TokenUrlError> {
        TokenUrl::parse(s)
    }
}

impl fmt::Display for TokenUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for TokenUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenUrl({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_userinfo_and_query_values() {
        let cases = [
            (
                "https://idp.example.com/oauth/token",
                "https://idp.example.com/oauth/token",
            ),
            (
                "https://user:pa55@idp.example.com/token?x=a@b",
                "https://…@idp.example.com/token?x=…",
            ),
            ("http://u@127.0.0.1:9/t", "http://…@127.0.0.1:9/t"),
            (
                "https://idp/t?api_key=s3cret&flag#frag",
                "https://idp/t?api_key=…&flag",
            ),
            ("http://[::1]:8080/token", "http://[::1]:8080/token"),
        ];
        for (input, shown) in cases {
            let url = TokenUrl::parse(input).unwrap();
            assert_eq!(url.redacted(), shown, "{input}");
            assert_eq!(url.to_string(), shown);
            assert!(!format!("{url:?}").contains("pa55"));
            assert!(!format!("{url:?}").contains("s3cret"));
        }
    }

    #[test]
    fn only_http_urls_with_a_host_are_token_urls() {
        assert_eq!(
            TokenUrl::parse("ftp://idp/t").unwrap_err(),
            TokenUrlError::Scheme
        );
        assert!(matches!(
            TokenUrl::parse("idp/token"),
            Err(TokenUrlError::Invalid(_))
        ));
        assert!(TokenUrl::parse("https://idp.example/token").is_ok());
        let e = TokenUrl::parse("https://u:s3cret@/t").map(|u| u.redacted());
        assert!(!format!("{e:?}").contains("s3cret"));
    }
}
