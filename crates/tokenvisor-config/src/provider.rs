//! How a workload reaches its provider beyond the token URL: client keys and certificates,
//! extra roots, a proxy ([`ProviderSpec`], keys of `[defaults]` and of a `[[workload]]`).
//! Files are checked here (they exist, parse, the algorithm fits the key) and named by
//! path in the spec: the runtime reads them again when they change (rotation).
//!
//! Also here: `issuer` (the token endpoint found by discovery instead of a `token_url`;
//! validated by [`Issuer::parse`], fetched by the runtime) and `extra_params` (provider-specific
//! token-request parameters; a name tokenvisor sets itself is refused, see
//! [`RESERVED_PARAMS`]). A workload's `extra_params` table is merged over `[defaults]`'s, name
//! by name.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokenvisor_core::discovery::Issuer;
use tokenvisor_core::spec::{AssertionAlg, ProviderSpec, extra_param, proxy_url};

use crate::problems::{Cx, value};
use crate::schema::RawPolicy;
use tokenvisor_core::spec::AuthMethod;

/// The JOSE algorithm of an [`AssertionAlg`] (jsonwebtoken's type, which the core does
/// not depend on).
pub trait Jose {
    /// The JOSE algorithm.
    fn jose(self) -> Algorithm;
}

impl Jose for AssertionAlg {
    fn jose(self) -> Algorithm {
        match self {
            AssertionAlg::RS256 => Algorithm::RS256,
            AssertionAlg::PS256 => Algorithm::PS256,
            AssertionAlg::ES256 => Algorithm::ES256,
            AssertionAlg::ES384 => Algorithm::ES384,
            AssertionAlg::EdDSA => Algorithm::EdDSA,
            AssertionAlg::HS256 => Algorithm::HS256,
        }
    }
}

/// A parsed PEM private key: its signing key and the algorithms it can sign with (the
/// first is the default). Debug prints `…`.
#[derive(Clone)]
pub struct ClientKey {
    /// The signing key.
    pub key: EncodingKey,
    /// What it signs with, default first.
    pub algs: &'static [AssertionAlg],
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("…")
    }
}

/// Parses a PEM private key (RSA PKCS#1/PKCS#8, EC P-256/P-384 PKCS#8, Ed25519 PKCS#8) and
/// proves it by signing.
pub fn client_key(pem: &[u8]) -> Result<ClientKey, String> {
    use AssertionAlg::*;
    type Parse = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;
    let tries: [(Parse, &[AssertionAlg]); 4] = [
        (EncodingKey::from_rsa_pem, &[RS256, PS256]),
        (EncodingKey::from_ed_pem, &[EdDSA]),
        (EncodingKey::from_ec_pem, &[ES256]),
        (EncodingKey::from_ec_pem, &[ES384]),
    ];
    let signs = |k: &EncodingKey, a: AssertionAlg| {
        jsonwebtoken::encode(&Header::new(a.jose()), &(), k).is_ok()
    };
    (tries.iter())
        .find_map(|(parse, algs)| {
            parse(pem)
                .ok()
                .filter(|k| signs(k, algs[0]))
                .map(|key| (key, *algs))
        })
        .map(|(key, algs)| ClientKey { key, algs })
        .ok_or_else(|| {
            "is not a supported PEM private key (RSA, EC P-256 or P-384, Ed25519; EC and \
            Ed25519 as PKCS#8 \"PRIVATE KEY\": convert with `openssl pkcs8 -topk8 -nocrypt`)"
                .to_owned()
        })
}

/// The certificates of a PEM file (at least one).
pub fn certificates(pem_text: &[u8]) -> Result<usize, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("is not PEM: {e}"))?;
    match blocks.iter().filter(|b| b.tag() == "CERTIFICATE").count() {
        0 => Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned()),
        n => Ok(n),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The provider keys set at one level (`[defaults]`, a workload) over `out`.
pub(crate) fn level(cx: &mut Cx, base: &Path, raw: &RawPolicy, out: &mut ProviderSpec) {
    type Check = fn(&[u8]) -> Result<(), String>;
    let (key, certs): (Check, Check) = (|b| client_key(b).map(drop), |b| certificates(b).map(drop));
    let creds: Check = |b| match std::str::from_utf8(b).map(|s| s.trim().split_once(':')) {
        Ok(Some((user, _))) if !user.is_empty() => Ok(()),
        Ok(_) | Err(_) => Err("must hold `user:password` (UTF-8, one line)".to_owned()),
    };
    let file = |ok: Check| {
        move |p: &String| {
            let path = crate::under(base, p);
            ok(&read(&path)?).map_err(|why| format!("{}: {why}", path.display()))?;
            Ok(path)
        }
    };
    let text = |s: &String| match s.trim().is_empty() || s.chars().any(char::is_control) {
        true => Err("must be a non-empty string without control characters".to_owned()),
        false => Ok(Arc::from(s.as_str())),
    };
    // Each key set here replaces the inherited value (with nothing when it is wrong).
    macro_rules! set {
        ($($name:ident: $check:expr;)*) => {$(
            if let Some(raw) = &raw.$name {
                out.$name = cx.check(stringify!($name), raw, $check);
            }
        )*};
    }
    set! {
        client_key_file: file(key);
        client_cert_file: file(certs);
        ca_file: file(certs);
        proxy_credentials_file: file(creds);
        client_key_id: text;
        client_assertion_audience: text;
        no_proxy: text;
        proxy: |s: &String| proxy_url(s);
        issuer: |s: &String| Issuer::parse(s).map_err(|e| e.to_string());
    }
    if let Some(table) = &raw.extra_params {
        for (name, value) in table.get_ref() {
            let key = format!("extra_params.{name}");
            if let Some(()) = cx.check(&key, value, |v| extra_param(name, v)) {
                out.extra_params
                    .insert(name.clone(), value.get_ref().clone());
            }
        }
    }
    out.client_assertion_alg = value(&raw.client_assertion_alg).or(out.client_assertion_alg);
    out.ca_only = value(&raw.ca_only).unwrap_or(out.ca_only);
}

/// The rules across keys, once a workload's method is known ([`ProviderSpec::check`]);
/// reported at `auth_method` (`span`: where it is set, or the workload's header), `ca_only`
/// and `proxy`, unless a file they need was reported already.
pub(crate) fn check(
    cx: &mut Cx,
    (method, has_secret, p): (AuthMethod, bool, &ProviderSpec),
    span: Option<&std::ops::Range<usize>>,
) {
    let key = (p.client_key_file.as_deref()).and_then(|f| client_key(&read(f).ok()?).ok());
    let files = "client_key_file client_cert_file ca_file proxy proxy_credentials_file";
    if !cx.broken_here(&files.split(' ').collect::<Vec<_>>()) {
        for bad in p.check(method, has_secret, key.map(|k| k.algs)) {
            cx.report(bad.key, span.cloned(), bad.reason);
        }
    }
}

/// `issuer` or `token_url`, exactly one per workload: the issuer's [`TokenUrl`] when the
/// workload uses discovery (`None`: it uses its `token_url`). Both set in the workload is a
/// problem (at `token_url`); a workload's `token_url` wins over an `issuer` of `[defaults]`
/// (which is then dropped from its spec). `here`: the workload sets `issuer` itself.
pub(crate) fn token_url_or_issuer(
    cx: &mut Cx,
    raw: &crate::schema::RawWorkload,
    policy: &mut tokenvisor_core::spec::WorkloadPolicy,
    here: bool,
) -> Option<tokenvisor_core::TokenUrl> {
    let issuer = policy.provider.issuer.clone();
    match (&raw.token_url, issuer) {
        (Some(t), Some(_)) if here => {
            let why = "and issuer are both set: set one (issuer discovers the token endpoint)";
            cx.report("token_url", Some(t.span()), why);
            None
        }
        (Some(_), Some(_)) => {
            Arc::make_mut(&mut policy.provider).issuer = None;
            None
        }
        (None, Some(issuer)) => Some(issuer.as_token_url()),
        (_, None) => None,
    }
}
