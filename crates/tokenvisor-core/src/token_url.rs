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

/// Why a string is not a token URL (never quotes the string: it may hold credentials). The
/// messages are the configuration's reasons (`KEY: reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenUrlError {
    /// Empty, or only whitespace.
    #[error("must not be empty")]
    Empty,
    /// Whitespace or a control character inside.
    #[error("must not contain whitespace or control characters")]
    Whitespace,
    /// Not a URL at all.
    #[error("is not a valid URL: {0}")]
    Invalid(url::ParseError),
    /// A scheme other than `http` or `https` (a scheme holds no secret).
    #[error(
        "must be an http or https URL, not {0:?} (use https; http only for a local test provider)"
    )]
    Scheme(String),
    /// No host, or an authority the URL standard forgives ("https:/host", "https:///host").
    #[error("has no host (write e.g. \"https://idp.example.com/oauth/token\")")]
    NoHost,
}

impl TokenUrl {
    /// Parses and validates `s`: the one token-URL rule (the configuration adds only that
    /// it carries no credentials and no fragment).
    ///
    /// # Errors
    /// [`TokenUrlError`] when `s` is empty, holds whitespace or control characters, is not a
    /// URL, its scheme is not `http` or `https`, or it has no host.
    pub fn parse(s: &str) -> Result<Self, TokenUrlError> {
        if s.trim().is_empty() {
            return Err(TokenUrlError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenUrlError::Whitespace);
        }
        let url = url::Url::parse(s).map_err(TokenUrlError::Invalid)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TokenUrlError::Scheme(url.scheme().to_owned()));
        }
        let authority = s.split_once("://").map_or("/", |(_, rest)| rest);
        if url.host_str().is_none_or(str::is_empty) || authority.starts_with(['/', '\\']) {
            return Err(TokenUrlError::NoHost);
        }
        Ok(TokenUrl(url))
    }

    /// The parsed URL, credentials included: for checks and the request, never for display.
    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    /// The host of an `http://` URL whose host is not loopback (`localhost`, 127.0.0.0/8,
    /// `::1`): tokens and secrets would cross the network unencrypted. `None` for https or
    /// loopback.
    pub fn insecure_remote_host(&self) -> Option<&str> {
        let host = self.0.host_str().filter(|_| self.0.scheme() == "http")?;
        let loopback = match self.0.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => true,
        };
        (!loopback).then_some(host)
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
            TokenUrlError::Scheme("ftp".to_owned())
        );
        for no_host in ["https:/idp/t", "https:///idp/t", "http:\\\\idp/t"] {
            assert_eq!(
                TokenUrl::parse(no_host),
                Err(TokenUrlError::NoHost),
                "{no_host}"
            );
        }
        assert_eq!(TokenUrl::parse(" "), Err(TokenUrlError::Empty));
        assert_eq!(
            TokenUrl::parse("https://idp/ t"),
            Err(TokenUrlError::Whitespace)
        );
        assert!(matches!(
            TokenUrl::parse("idp/token"),
            Err(TokenUrlError::Invalid(_))
        ));
        assert!(TokenUrl::parse("https://idp.example/token").is_ok());
        let e = TokenUrl::parse("https://u:s3cret@/t").map(|u| u.redacted());
        assert!(!format!("{e:?}").contains("s3cret"));
    }

    #[test]
    fn plain_http_is_insecure_unless_to_loopback() {
        let cases = [
            ("http://idp.example/t", Some("idp.example")),
            ("http://10.0.0.1:80/t", Some("10.0.0.1")),
            ("http://[2001:db8::1]/t", Some("[2001:db8::1]")),
            ("https://idp.example/t", None),
            ("http://127.0.0.5/t", None),
            ("http://[::1]:9/t", None),
            ("http://LocalHost/t", None),
        ];
        for (url, host) in cases {
            let url = TokenUrl::parse(url).unwrap();
            assert_eq!(url.insecure_remote_host(), host, "{url}");
        }
    }
}
