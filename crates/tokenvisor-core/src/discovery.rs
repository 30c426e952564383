//! Authorization-server discovery, sans I/O: the configured [`Issuer`], the locations of its
//! metadata document ([`Issuer::metadata_urls`]: RFC 8414 §3 first, then OpenID Connect
//! Discovery §4), the document parsed and checked ([`ProviderMetadata::parse`]: its
//! `issuer` must be identical to the configured one, RFC 8414 §3.3), and whether it
//! advertises a client-authentication method ([`ProviderMetadata::advertises`]).
//!
//! The runtime fetches (bounded in time and size) and caches; nothing here reads a socket.

use std::fmt;
use std::sync::Arc;

use crate::TokenUrl;

/// The RFC 8414 well-known suffix.
pub const OAUTH_WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";

/// The OpenID Connect Discovery well-known suffix.
pub const OIDC_WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// A validated issuer identifier: `https` (or `http` to a loopback host: a local test
/// provider), a host, no userinfo, no query, no fragment. Kept as written: the document's
/// `issuer` must be identical to it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Issuer {
    text: Arc<str>,
}

/// Why a string is not an issuer (the configuration's reason: `issuer: reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    /// Not a URL with a host (the token-URL rule).
    #[error("{0}")]
    Url(crate::TokenUrlError),
    /// `http://` to a host that is not loopback.
    #[error(
        "must be an https URL (http only to 127.0.0.1, ::1 or localhost): discovery over plain \
         http would let the network choose where tokens go"
    )]
    Insecure,
    /// Userinfo, a query or a fragment (RFC 8414 §2: none of them).
    #[error("must have no user:password, query (?…) or fragment (#…) (RFC 8414 §2)")]
    Parts,
}

impl Issuer {
    /// Parses and validates `s`.
    ///
    /// # Errors
    /// [`IssuerError`] for anything but an https (or loopback http) URL with a host and
    /// without userinfo, query or fragment.
    pub fn parse(s: &str) -> Result<Self, IssuerError> {
        let url = TokenUrl::parse(s).map_err(IssuerError::Url)?;
        if url.insecure_remote_host().is_some() {
            return Err(IssuerError::Insecure);
        }
        let u = url.as_url();
        if !u.username().is_empty()
            || u.password().is_some()
            || u.query().is_some()
            || u.fragment().is_some()
            || s.contains(['?', '#'])
        {
            return Err(IssuerError::Parts);
        }
        Ok(Issuer { text: s.into() })
    }

    /// The issuer as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The issuer as a [`TokenUrl`]: the endpoint identity of its workloads before (and
    /// without) discovery (one gate per issuer).
    pub fn as_token_url(&self) -> TokenUrl {
        TokenUrl::parse(&self.text).expect("an issuer is a token URL")
    }

    /// Where its metadata may be, in the order to try: RFC 8414 §3 (the well-known suffix
    /// inserted between the host and the issuer's path), then OpenID Connect Discovery §4
    /// (the suffix appended to the issuer).
    pub fn metadata_urls(&self) -> [String; 2] {
        let text = self.text.trim_end_matches('/');
        let (origin, path) = match text.split_once("://") {
            Some((scheme, rest)) => match rest.find('/') {
                Some(i) => (format!("{scheme}://{}", &rest[..i]), &rest[i..]),
                None => (text.to_owned(), ""),
            },
            None => (text.to_owned(), ""),
        };
        [
            format!("{origin}{OAUTH_WELL_KNOWN}{path}"),
            format!("{text}{OIDC_WELL_KNOWN}"),
        ]
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Issuer({})", self.text)
    }
}

/// What a provider's metadata document says, as far as tokenvisor (and `tokenvisor
/// login`) needs it. Absent lists are empty; `None`/empty means "not stated".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMetadata {
    /// The document's `issuer` (identical to the configured one).
    pub issuer: Issuer,
    /// `token_endpoint`.
    pub token_endpoint: TokenUrl,
    /// `authorization_endpoint`.
    pub authorization_endpoint: Option<TokenUrl>,
    /// `device_authorization_endpoint` (RFC 8628).
    pub device_authorization_endpoint: Option<TokenUrl>,
    /// `token_endpoint_auth_methods_supported`; empty: not stated.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// `grant_types_supported`; empty: not stated.
    pub grant_types_supported: Vec<String>,
}

/// Whether a document advertises a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advertised {
    /// It is in the list.
    Yes,
    /// The list is there and the method is not in it.
    No,
    /// The document has no list (RFC 8414 §2: then only `client_secret_basic` is implied).
    Unstated,
}

/// Why a fetched document is not usable (no document text in it beyond the `issuer` value,
/// which is public).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Not a JSON object of the metadata's shape.
    #[error("is not a metadata document (JSON object): {0}")]
    Shape(String),
    /// RFC 8414 §3.3: the document's `issuer` differs from the configured one.
    #[error(
        "issuer mismatch (RFC 8414 §3.3, refused: set issuer to exactly the provider's): the \
         document names {found:?}, not {expected:?}"
    )]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The document's (control characters dropped, cut to 200 characters).
        found: String,
    },
    /// No `token_endpoint`, or not an http(s) URL.
    #[error("has no usable token_endpoint: {0}")]
    TokenEndpoint(String),
}

#[derive(serde::Deserialize)]
struct Raw {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    authorization_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    grant_types_supported: Vec<String>,
}

impl ProviderMetadata {
    /// Parses a metadata document fetched for `expected` and checks it.
    ///
    /// # Errors
    /// [`MetadataError`]: not the shape, another issuer, no usable token endpoint.
    pub fn parse(body: &[u8], expected: &Issuer) -> Result<Self, MetadataError> {
        let raw: Raw = serde_json::from_slice(body).map_err(|e| {
            // serde_json's message names a position and a type, never the input.
            MetadataError::Shape(e.to_string())
        })?;
        let found = raw.issuer.unwrap_or_default();
        if found != expected.as_str() {
            return Err(MetadataError::IssuerMismatch {
                expected: expected.as_str().to_owned(),
                found: found
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect(),
            });
        }
        let endpoint = |s: Option<String>| s.and_then(|s| TokenUrl::parse(&s).ok());
        let token_endpoint = match raw.token_endpoint {
            None => return Err(MetadataError::TokenEndpoint("missing".to_owned())),
            Some(s) => {
                TokenUrl::parse(&s).map_err(|e| MetadataError::TokenEndpoint(e.to_string()))?
            }
        };
        Ok(ProviderMetadata {
            issuer: expected.clone(),
            token_endpoint,
            authorization_endpoint: endpoint(raw.authorization_endpoint),
            device_authorization_endpoint: endpoint(raw.device_authorization_endpoint),
            token_endpoint_auth_methods_supported: raw.token_endpoint_auth_methods_supported,
            grant_types_supported: raw.grant_types_supported,
        })
    }

    /// Whether `method` (its registered name, e.g. `client_secret_basic`) is advertised.
    pub fn advertises(&self, method: &str) -> Advertised {
        let list = &self.token_endpoint_auth_methods_supported;
        match (list.is_empty(), list.iter().any(|m| m == method)) {
            (true, _) if method == "client_secret_basic" => Advertised::Yes,
            (true, _) => Advertised::Unstated,
            (false, true) => Advertised::Yes,
            (false, false) => Advertised::No,
        }
    }

    /// The warning for `method` when it is not advertised (`None`: advertised or unstated).
    pub fn method_warning(&self, method: &str) -> Option<String> {
        match self.advertises(method) {
            Advertised::Yes | Advertised::Unstated => None,
            Advertised::No => Some(format!(
                "the provider does not advertise {method} (token_endpoint_auth_methods_supported: \
                 {}): it will probably refuse the client",
                self.token_endpoint_auth_methods_supported.join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(s: &str) -> Issuer {
        Issuer::parse(s).unwrap()
    }

    #[test]
    fn issuers_are_https_or_loopback_without_query_or_fragment() {
        for ok in [
            "https://idp.example",
            "https://idp.example/tenant/v2",
            "http://127.0.0.1:8080",
            "http://localhost/x",
            "http://[::1]:9",
        ] {
            assert!(Issuer::parse(ok).is_ok(), "{ok}");
        }
        let cases = [
            ("http://idp.example", IssuerError::Insecure),
            ("https://idp.example/?a=b", IssuerError::Parts),
            ("https://idp.example/#f", IssuerError::Parts),
            ("https://idp.example?", IssuerError::Parts),
            ("https://u:p@idp.example", IssuerError::Parts),
        ];
        for (bad, why) in cases {
            assert_eq!(Issuer::parse(bad), Err(why), "{bad}");
        }
        assert!(matches!(Issuer::parse("ftp://x"), Err(IssuerError::Url(_))));
    }

    #[test]
    fn metadata_locations_insert_the_suffix_then_append_it() {
        let cases = [
            (
                "https://idp.example",
                [
                    "https://idp.example/.well-known/oauth-authorization-server",
                    "https://idp.example/.well-known/openid-configuration",
                ],
            ),
            (
                "https://idp.example/",
                [
                    "https://idp.example/.well-known/oauth-authorization-server",
                    "https://idp.example/.well-known/openid-configuration",
                ],
            ),
            (
                "https://idp.example:8443/tenant/v2",
                [
                    "https://idp.example:8443/.well-known/oauth-authorization-server/tenant/v2",
                    "https://idp.example:8443/tenant/v2/.well-known/openid-configuration",
                ],
            ),
        ];
        for (iss, want) in cases {
            assert_eq!(
                issuer(iss).metadata_urls(),
                want.map(str::to_owned),
                "{iss}"
            );
        }
    }

    #[test]
    fn a_document_is_checked_against_the_configured_issuer() {
        let iss = issuer("https://idp.example/t");
        let doc = |issuer: &str, token: &str| {
            format!(
                r#"{{"issuer":"{issuer}","token_endpoint":"{token}",
                "authorization_endpoint":"https://idp.example/t/auth",
                "token_endpoint_auth_methods_supported":["private_key_jwt","client_secret_basic"],
                "grant_types_supported":["refresh_token"],"other":{{"x":1}}}}"#
            )
        };
        let m = ProviderMetadata::parse(
            doc("https://idp.example/t", "https://idp.example/t/token").as_bytes(),
            &iss,
        )
        .unwrap();
        assert_eq!(m.token_endpoint.expose(), "https://idp.example/t/token");
        assert_eq!(
            m.authorization_endpoint.as_ref().map(TokenUrl::expose),
            Some("https://idp.example/t/auth")
        );
        assert_eq!(m.device_authorization_endpoint, None);
        assert_eq!(m.grant_types_supported, ["refresh_token"]);
        assert_eq!(m.advertises("private_key_jwt"), Advertised::Yes);
        assert_eq!(m.advertises("tls_client_auth"), Advertised::No);
        assert!(m.method_warning("client_secret_post").unwrap().contains(
            "does not advertise client_secret_post (token_endpoint_auth_methods_supported: \
             private_key_jwt, client_secret_basic)"
        ));
        assert_eq!(m.method_warning("client_secret_basic"), None);

        let e = ProviderMetadata::parse(
            doc("https://idp.example/t/", "https://idp.example/t/token").as_bytes(),
            &iss,
        );
        assert!(
            matches!(e, Err(MetadataError::IssuerMismatch { .. })),
            "{e:?}"
        );
        let e = ProviderMetadata::parse(doc("https://idp.example/t", "ftp://x").as_bytes(), &iss);
        assert!(matches!(e, Err(MetadataError::TokenEndpoint(_))), "{e:?}");
        let e = ProviderMetadata::parse(br#"{"issuer":"https://idp.example/t"}"#, &iss);
        assert!(matches!(e, Err(MetadataError::TokenEndpoint(_))), "{e:?}");
        let e = ProviderMetadata::parse(b"<html>secret-ish</html>", &iss).unwrap_err();
        assert!(matches!(e, MetadataError::Shape(_)));
        assert!(!e.to_string().contains("secret-ish"));
    }

    #[test]
    fn a_mismatched_issuer_is_quoted_without_control_characters() {
        let iss = issuer("https://idp.example");
        let body = format!(
            r#"{{"issuer":"https://evil\u001b[2J{}","token_endpoint":"https://idp.example/t"}}"#,
            "x".repeat(500)
        );
        let e = ProviderMetadata::parse(body.as_bytes(), &iss).unwrap_err();
        let MetadataError::IssuerMismatch { found, .. } = &e else {
            panic!("{e:?}");
        };
        assert!(!found.contains('\u{1b}'), "{found:?}");
        assert_eq!(found.chars().count(), 200);
    }

    #[test]
    fn no_list_implies_only_client_secret_basic() {
        let iss = issuer("https://idp.example");
        let m = ProviderMetadata::parse(
            br#"{"issuer":"https://idp.example","token_endpoint":"https://idp.example/token"}"#,
            &iss,
        )
        .unwrap();
        assert_eq!(m.advertises("client_secret_basic"), Advertised::Yes);
        assert_eq!(m.advertises("private_key_jwt"), Advertised::Unstated);
        assert_eq!(m.method_warning("private_key_jwt"), None);
    }
}
