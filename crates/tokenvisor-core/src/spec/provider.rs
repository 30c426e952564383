//! How a workload reaches its provider beyond the token URL: client keys and certificates,
//! extra roots, a proxy, discovery and extra token-request parameters ([`ProviderSpec`]).
//! Files are named by path: the runtime reads them again when they change (rotation).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::AuthMethod;
use super::rules::Invalid;
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

impl ProviderSpec {
    /// The rules tying these keys to the client's authentication, as data: `auth_method`
    /// needs its key, certificate or secret (`key_algs`: what `client_key_file`'s key signs
    /// with, when it is a usable key; `has_secret`: the client has a secret), `ca_only` needs
    /// `ca_file`, `proxy_credentials_file` and `no_proxy` apply to `proxy`.
    pub fn check(
        &self,
        method: AuthMethod,
        has_secret: bool,
        key_algs: Option<&[AssertionAlg]>,
    ) -> Vec<Invalid> {
        let alg = self.client_assertion_alg;
        let why = match method {
            AuthMethod::Basic | AuthMethod::Post => None,
            AuthMethod::PrivateKeyJwt => match (key_algs, alg) {
                (None, _) => Some(
                    "needs client_key_file (a PEM private key: RSA, EC P-256/P-384 or Ed25519)"
                        .to_owned(),
                ),
                (Some(k), Some(a)) if !k.contains(&a) => Some(format!(
                    "client_assertion_alg {a:?} does not fit client_key_file's key (it signs \
                     with {k:?})"
                )),
                (Some(_), _) => None,
            },
            AuthMethod::ClientSecretJwt => match (has_secret, alg) {
                (false, _) => Some(
                    "needs a client secret (client_secret, client_secret_file or \
                     client_secret_env)"
                        .to_owned(),
                ),
                (true, Some(a)) if a != AssertionAlg::HS256 => {
                    Some(format!("signs with HS256, not client_assertion_alg {a:?}"))
                }
                (true, _) => None,
            },
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth => {
                (self.client_cert_file.is_none() || self.client_key_file.is_none())
                    .then(|| "needs client_cert_file and client_key_file (PEM)".to_owned())
            }
        };
        let m = method.as_str();
        let proxied = self.proxy_credentials_file.is_some() || self.no_proxy.is_some();
        let lone = [
            (
                "auth_method",
                why.map(|w| format!("auth_method = {m:?} {w}")),
            ),
            (
                "ca_only",
                (self.ca_only && self.ca_file.is_none()).then(|| CA_ONLY.to_owned()),
            ),
            (
                "proxy",
                (self.proxy.is_none() && proxied).then(|| PROXIED.to_owned()),
            ),
        ];
        let lone = lone.map(|(key, why)| why.map(|reason| Invalid { key, reason }));
        lone.into_iter().flatten().collect()
    }
}

const CA_ONLY: &str = "ca_only = true needs ca_file";
const PROXIED: &str = "missing: proxy_credentials_file and no_proxy apply to proxy (the \
                       environment's NO_PROXY governs the environment's proxy)";
