//! One refresh attempt, classified as the daemon would classify it (`tokenvisor probe`).
//!
//! [`probe`] sends an [`ExchangeRequest`] with the daemon's own [`HttpTransport`] (no
//! redirects, bounded body, total deadline; its client authentication, TLS and proxy
//! settings) and judges the answer with [`tokenvisor_core::classify()`] under the default
//! policy. With an issuer the metadata is discovered first (the transport's cache: the
//! exchange then goes to the discovered endpoint; a failed discovery is the attempt's
//! transient failure) and described ([`Discovered`], with a warning when the request's
//! authentication method is not advertised). The result is data ([`Probe`]): the verdict,
//! its [`Report`] (the `--json` object and its text form) and a rotated refresh token, which
//! the caller saves or drops.
//!
//! Nothing in a report ever contains a token or a secret: summaries are scrubbed of the
//! request's secrets by the classifier, and a success is described by its token type
//! (scrubbed of every token) and lifetime only.

use serde::Serialize;
use tokenvisor_core::diagnosis::{explain, hint};
use tokenvisor_core::scrub::scrub;
use tokenvisor_core::text::{compact_duration, safe_text, truncate_chars};
use tokenvisor_core::{ClassifyPolicy, RawOutcome, Secret, Verdict, classify};

use crate::Clock;
use crate::spec::AuthMethod;
use crate::{
    ExchangeRequest, Grant, HttpConfig, HttpError, HttpTransport, ProviderMetadata, Transport as _,
};

/// What one probe found.
#[derive(Debug)]
pub struct Probe {
    /// The classifier's verdict.
    pub verdict: Verdict,
    /// The report of it (printed as JSON or text).
    pub report: Report,
    /// A refresh token the provider returned in place of the one sent (the sent one may be
    /// spent: the caller saves this one or warns that it is lost).
    pub rotated: Option<Secret>,
}

/// A probe's result, as `tokenvisor probe --json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `ok`, `transient` or `permanent`.
    pub outcome: &'static str,
    /// `ok`, or the failure kind.
    pub kind: &'static str,
    /// The answer's HTTP status, if one came.
    pub http_status: Option<u16>,
    /// The OAuth error code, if any.
    pub error_code: Option<String>,
    /// The Retry-After, in whole seconds (rounded up).
    pub retry_after_secs: Option<u64>,
    /// The token's lifetime as the provider stated it.
    pub expires_in_secs: Option<u64>,
    /// A short sanitised summary.
    pub summary: String,
    /// With an issuer, what discovery found (absent without one or when it failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovered: Option<Discovered>,
}

/// What discovery found of an issuer.
#[derive(Debug, Serialize)]
pub struct Discovered {
    /// The issuer.
    pub issuer: String,
    /// The token endpoint (redacted).
    pub token_endpoint: String,
    /// The advertised client authentication methods.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// The advertised grants.
    pub grant_types_supported: Vec<String>,
    /// Set when the request's authentication method is not advertised.
    pub warning: Option<String>,
}

impl Discovered {
    fn of(doc: &ProviderMetadata, method: AuthMethod) -> Self {
        Discovered {
            issuer: doc.issuer.to_string(),
            token_endpoint: doc.token_endpoint.redacted(),
            token_endpoint_auth_methods_supported: doc
                .token_endpoint_auth_methods_supported
                .clone(),
            grant_types_supported: doc.grant_types_supported.clone(),
            warning: doc.method_warning(method.registered_name()),
        }
    }

    /// The text form: issuer, token URL, auth methods, grant types (sanitised).
    #[must_use]
    pub fn human(&self) -> String {
        let list = |v: &[String]| match v.is_empty() {
            true => "(not stated)".to_owned(),
            false => safe_text(&v.join(", ")),
        };
        format!(
            "{:<13}{}\n{:<13}{}\n{:<13}{}\n{:<13}{}\n",
            "issuer:",
            safe_text(&self.issuer),
            "token url:",
            safe_text(&self.token_endpoint),
            "auth methods:",
            list(&self.token_endpoint_auth_methods_supported),
            "grant types:",
            list(&self.grant_types_supported),
        )
    }
}

/// Sends `req` once (after discovery when its provider names an issuer) and classifies the
/// answer.
///
/// # Errors
/// [`HttpError`] when no HTTP client can be built (every answer, and every failure to get
/// one, is the verdict instead).
pub async fn probe(req: &ExchangeRequest) -> Result<Probe, HttpError> {
    let transport = HttpTransport::new(HttpConfig {
        connect_timeout: req.connect_timeout,
        ..HttpConfig::default()
    })?;
    let discovered = match &req.provider.issuer {
        Some(issuer) => {
            (transport.discover(issuer, &req.provider, req.connect_timeout, req.timeout))
                .await
                .ok()
                .map(|doc| Discovered::of(&doc, req.auth_method))
        }
        None => None,
    };
    let raw = transport.exchange(req.clone()).await;
    let policy = ClassifyPolicy::default();
    let secrets = req.secrets();
    let verdict = classify(
        &raw,
        Clock::new().now(),
        &policy,
        &secrets.iter().collect::<Vec<_>>(),
    );
    let http_status = match &raw {
        RawOutcome::Response(answer) => Some(answer.status),
        RawOutcome::Transport { .. } => None,
    };
    let mut report = report(&verdict, http_status, req, &policy);
    report.discovered = discovered;
    let rotated = match (&verdict, &req.grant) {
        (Verdict::Success(grant), Grant::RefreshToken(sent)) => {
            grant.refresh_token.clone().filter(|new| new != sent)
        }
        (
            Verdict::Success(_),
            Grant::ClientCredentials | Grant::JwtBearer(_) | Grant::TokenExchange(_),
        )
        | (Verdict::Transient(_) | Verdict::Permanent(_), _) => None,
    };
    Ok(Probe {
        verdict,
        report,
        rotated,
    })
}

fn report(
    verdict: &Verdict,
    http_status: Option<u16>,
    req: &ExchangeRequest,
    policy: &ClassifyPolicy,
) -> Report {
    match verdict {
        Verdict::Success(grant) => {
            // token_type comes from the provider: sanitise it, and never let it carry a token
            // (in any encoding or case: the core's scrubber).
            let mut secrets: Vec<Secret> = req.secrets();
            secrets.push(grant.access_token.clone());
            secrets.extend(grant.refresh_token.iter().cloned());
            let secrets: Vec<&Secret> = secrets.iter().collect();
            let token_type = truncate_chars(&scrub(&grant.token_type, &secrets), 32);
            let lifetime = if grant.lifetime_from_provider {
                format!("expires in {}s", grant.lifetime.as_secs())
            } else {
                format!(
                    "no usable expires_in: tokenvisor would assume the default lifetime of {}",
                    compact_duration(policy.default_lifetime)
                )
            };
            let rotated = match (&grant.refresh_token, &req.grant) {
                (Some(new), Grant::RefreshToken(sent)) if new != sent => {
                    ", new refresh token issued"
                }
                (Some(_), Grant::RefreshToken(_)) => ", same refresh token returned",
                (
                    Some(_),
                    Grant::ClientCredentials | Grant::JwtBearer(_) | Grant::TokenExchange(_),
                ) => ", a refresh token was returned",
                (
                    None,
                    Grant::RefreshToken(_)
                    | Grant::ClientCredentials
                    | Grant::JwtBearer(_)
                    | Grant::TokenExchange(_),
                ) => "",
            };
            Report {
                outcome: verdict.outcome(),
                kind: "ok",
                http_status,
                error_code: None,
                retry_after_secs: None,
                expires_in_secs: grant
                    .lifetime_from_provider
                    .then_some(grant.lifetime.as_secs()),
                summary: format!("token received ({token_type}, {lifetime}{rotated})"),
                discovered: None,
            }
        }
        Verdict::Transient(f) | Verdict::Permanent(f) => Report {
            outcome: verdict.outcome(),
            kind: f.kind.as_str(),
            http_status: f.http_status.or(http_status),
            error_code: f.error_code.clone(),
            retry_after_secs: f
                .retry_after
                .map(|d| u64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)),
            expires_in_secs: None,
            summary: f.summary.clone(),
            discovered: None,
        },
    }
}

impl Report {
    /// The text form: one `label: value` line per field, what tokenvisor would do with the
    /// verdict, and a likely cause of a failure ([`tokenvisor_core::diagnosis`]).
    #[must_use]
    pub fn human(&self, verdict: &Verdict) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        let mut lines = vec![
            ("outcome", self.outcome.to_owned()),
            ("kind", self.kind.to_owned()),
            ("http status", opt(self.http_status.map(|s| s.to_string()))),
            ("error code", opt(self.error_code.as_deref().map(safe_text))),
            (
                "retry-after",
                opt(self.retry_after_secs.map(|s| format!("{s}s"))),
            ),
            (
                "expires in",
                opt(self.expires_in_secs.map(|s| format!("{s}s"))),
            ),
            ("summary", safe_text(&self.summary)),
            ("verdict", explain(verdict)),
        ];
        if let Some(hint) = hint(verdict) {
            lines.push(("hint", hint));
        }
        let mut out = String::new();
        for (label, value) in lines {
            out.push_str(&format!("{:<13}{value}\n", format!("{label}:")));
        }
        out
    }
}
