//! How a workload reaches its provider beyond the token URL: client keys and certificates,
//! extra roots, a proxy, discovery and extra token-request parameters ([`ProviderSpec`]).
//! Files are named by path: the runtime reads them again when they change (rotation).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::discovery::Issuer;

/// A client assertion's signature algorithm (`client_assertion_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, strum::IntoStaticStr)]
pub enum AssertionAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
    /// HMAC SHA-256 over the client secret (`client_secret_jwt`).
    HS256,
}

impl AssertionAlg {
    /// The JOSE name (`"RS256"`, `"EdDSA"`, …).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The provider settings of one workload; every field unset by default.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ProviderSpec {
    /// PEM private key: signs client assertions, or the TLS client key.
    pub client_key_file: Option<PathBuf>,
    /// The assertion header's `kid`.
    pub client_key_id: Option<Arc<str>>,
    /// The assertion's algorithm; `None`: the key's default.
    pub client_assertion_alg: Option<AssertionAlg>,
    /// The assertion's `aud`; `None`: the token URL.
    pub client_assertion_audience: Option<Arc<str>>,
    /// PEM client certificate (chain) for `tls_client_auth` methods.
    pub client_cert_file: Option<PathBuf>,
    /// PEM roots added to the system's (`ca_only`: instead of them).
    pub ca_file: Option<PathBuf>,
    /// Trust only `ca_file`.
    pub ca_only: bool,
    /// An http(s) proxy URL (no credentials in it).
    pub proxy: Option<Arc<str>>,
    /// `user:password` for the proxy.
    pub proxy_credentials_file: Option<PathBuf>,
    /// Hosts not proxied (comma-separated, as `NO_PROXY`).
    pub no_proxy: Option<Arc<str>>,
    /// The authorization server whose metadata names the token endpoint (instead of a
    /// `token_url`; the workload's `token_url` is then the issuer, its endpoint identity).
    pub issuer: Option<Issuer>,
    /// Extra token-request parameters (name → value), sent with every request.
    pub extra_params: BTreeMap<String, String>,
}

/// Token-request parameters tokenvisor sets itself (or another key sets): refused in
/// `extra_params`, with the key to use instead where there is one.
pub const RESERVED_PARAMS: &[(&str, &str)] = &[
    ("grant_type", "set by grant"),
    ("refresh_token", "set by the refresh_token grant"),
    ("client_id", "set by client_id"),
    ("client_secret", "set by auth_method and the client secret"),
    ("client_assertion", "set by auth_method"),
    ("client_assertion_type", "set by auth_method"),
    ("scope", "use scopes"),
    ("resource", "use resource"),
    ("audience", "use audience"),
    ("code", "an authorization-code parameter"),
    ("code_verifier", "an authorization-code parameter"),
    ("redirect_uri", "an authorization-code parameter"),
    ("device_code", "a device-flow parameter"),
    ("assertion", "set by the jwt_bearer grant"),
    ("subject_token", "set by the token_exchange grant"),
    ("subject_token_type", "set by the token_exchange grant"),
    ("actor_token", "set by the token_exchange grant"),
    ("actor_token_type", "set by the token_exchange grant"),
    ("requested_token_type", "set by the token_exchange grant"),
    ("username", "a password-grant parameter"),
    ("password", "a password-grant parameter"),
];

/// The `proxy` rule: an http(s) URL with a host and no credentials in it.
///
/// # Errors
/// Why it is not one (the value is not echoed).
pub fn proxy_url(s: &str) -> Result<Arc<str>, String> {
    match url::Url::parse(s) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.has_host()
                && u.username().is_empty()
                && u.password().is_none() =>
        {
            Ok(Arc::from(s))
        }
        Ok(_) | Err(_) => Err(
            "must be an http:// or https:// proxy URL with a host and no \
            credentials (put `user:password` in proxy_credentials_file)"
                .to_owned(),
        ),
    }
}

/// Checks one `extra_params` entry: a name not reserved (RFC 6749 names: printable ASCII
/// without spaces) and a value without control characters.
///
/// # Errors
/// Why the entry is refused.
pub fn extra_param(name: &str, value: &str) -> Result<(), String> {
    if let Some((_, why)) = RESERVED_PARAMS.iter().find(|(n, _)| *n == name) {
        return Err(format!(
            "{name:?} is set by tokenvisor and cannot be overridden ({why})"
        ));
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'=' && b != b'&')
    {
        return Err(
            "a parameter name must be printable ASCII without spaces, '=' or '&'".to_owned(),
        );
    }
    if value.chars().any(char::is_control) || value.len() > 4096 {
        return Err(
            "a value must be a string without control characters, at most 4096 bytes".to_owned(),
        );
    }
    Ok(())
}
