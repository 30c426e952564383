//! The keys `tokenvisor login` needs to obtain a workload's first refresh token
//! ([`LoginSpec`], keys of a `[[workload]]`): where the provider's authorization endpoint
//! (code flow) and device authorization endpoint (device flow) are, the loopback port of
//! the redirect, and the scopes to ask for. The daemon never uses them.
//!
//! - `authorization_url`, `device_authorization_url`: validated by the token URL's rule
//!   (http(s), a host, no credentials, no fragment; plain http only to a loopback address
//!   without a warning). A query is kept (some providers put a tenant or policy there).
//! - `redirect_port`: the port of `http://127.0.0.1:PORT/callback` (RFC 8252 §7.3); 0, the
//!   default, takes any free port (for providers that, as RFC 8252 §7.3 asks, accept any
//!   port of a loopback redirect URI); set it for one that registered a fixed one.
//! - `login_scopes`: the `scope` of the authorization request; unset, the workload's
//!   `scopes`. `offline_access` is never added silently: list it when the provider needs it
//!   to issue a refresh token (OpenID Connect providers do).
//!
//! The keys are accepted on any workload; on one whose grant is not `refresh_token` they
//! are a warning (login refuses such a workload anyway). [`load_for_login`] reads a
//! configuration without reading the refresh-token files, which do not exist before the
//! first login.

use std::path::Path;
use std::sync::Arc;

use tokenvisor_core::spec::rules;

use crate::problems::{Cx, span, value};
use crate::schema::{RawGrant, RawWorkload};
use crate::{Config, ConfigError};

pub use tokenvisor_core::spec::{LoginSpec, REDIRECT_PATH};

/// The login keys of one workload: the endpoints by the token URL's rule, the scopes by
/// `scopes`' rule.
pub(crate) fn resolve(cx: &mut Cx, raw: &RawWorkload) -> LoginSpec {
    let endpoint = |cx: &mut Cx, name: &str, raw: Option<&toml::Spanned<String>>| {
        let (u, raw) = (cx.check(name, raw, |s| rules::token_url(s))?, raw?);
        if let Some(host) = u.insecure_remote_host() {
            let why = format!(
                "http:// to {host}, which is not a loopback address: the authorization code or \
                 device code crosses the network unencrypted (use https)"
            );
            cx.warn(name, Some(raw.span()), why);
        }
        Some(u)
    };
    let authorization_url = endpoint(cx, "authorization_url", raw.authorization_url.as_ref());
    let device = raw.device_authorization_url.as_ref();
    let device_authorization_url = endpoint(cx, "device_authorization_url", device);
    let port = "must be a port number, 0 to 65535 (0: any free port, the default)";
    let redirect_port = cx.check("redirect_port", raw.redirect_port.as_ref(), |n| {
        u16::try_from(*n).map_err(|_| port.to_owned())
    });
    let (scope, what) = (rules::scope_token, rules::SCOPE_TOKEN);
    let login_scopes = (raw.login_scopes.as_ref())
        .and_then(|l| cx.each_valid("login_scopes", l, scope, what))
        .map(Arc::from);
    let device = span(&raw.device_authorization_url);
    let given = [
        ("authorization_url", span(&raw.authorization_url)),
        ("device_authorization_url", device),
        ("redirect_port", span(&raw.redirect_port)),
        ("login_scopes", span(&raw.login_scopes)),
    ];
    match value(&raw.grant) {
        Some(RawGrant::RefreshToken) | None => {}
        Some(RawGrant::ClientCredentials | RawGrant::JwtBearer | RawGrant::TokenExchange) => {
            for (key, at) in given.into_iter().filter(|(_, at)| at.is_some()) {
                let why = "only a grant = \"refresh_token\" workload logs in (tokenvisor login); \
                           this workload's grant needs no login, so the key is unused";
                cx.warn(key, at, why);
            }
        }
    }
    LoginSpec {
        authorization_url,
        device_authorization_url,
        redirect_port: redirect_port.unwrap_or(0),
        login_scopes,
    }
}

/// Reads and validates the configuration at `path` as [`crate::load`] does, except that
/// refresh-token files are not read (they need not exist yet: `tokenvisor login` is what
/// creates them). In the result, a `refresh_token` workload's [`crate::spec::GrantSpec`]
/// carries an empty token when it names a file: the configuration is for logging in, never
/// for running a workload.
///
/// # Errors
/// [`ConfigError`], as [`crate::load`].
pub fn load_for_login(path: &Path) -> Result<Config, ConfigError> {
    crate::load_mode(path, true)
}
