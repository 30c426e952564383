//! `tokenvisor probe`: one refresh attempt, classified as the daemon would classify it.
//!
//! The request is built into an [`ExchangeRequest`] and sent by the daemon's own
//! [`HttpTransport`] (no redirects, bounded body, total deadline); the answer is judged by
//! [`tokenvisor_core::classify()`] with the default classification policy. Nothing printed
//! ever contains a token or a secret: summaries are scrubbed of the request's secrets by the
//! classifier, and a success is described by its token type and lifetime only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokenvisor::spec::AuthMethod;
use tokenvisor::{ExchangeRequest, Grant, Transport as _};
use tokenvisor::{HttpConfig, HttpTransport};
use tokenvisor_core::classify::not_final_note;
use tokenvisor_core::scrub::scrub;
use tokenvisor_core::{
    ClassifyPolicy, FailureKind, RawOutcome, Secret, TokenUrl, Verdict, classify,
};

use crate::output::{compact_duration, now, safe_text, truncate_chars};
use crate::usage_error;

/// Exit code: a transient failure (tokenvisor would retry).
const EXIT_TRANSIENT: u8 = crate::exit::Exit::ProbeTransient.code();
/// Exit code: a permanent failure (the credentials were rejected).
const EXIT_PERMANENT: u8 = crate::exit::Exit::ProbePermanent.code();

/// The warning printed when a refresh token came back different from the one sent.
const ROTATION_WARNING: &str = "warning: the provider rotated the refresh token: the old one \
     may no longer work — probe spends a refresh token!";

/// The grant to probe with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum GrantArg {
    /// `refresh_token`: needs --refresh-token or --refresh-token-file (and is implied by
    /// them).
    RefreshToken,
    /// `client_credentials`: the client's own credentials, no refresh token.
    ClientCredentials,
}

/// Client authentication at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthArg {
    /// HTTP Basic (`client_secret_basic`).
    Basic,
    /// Form fields (`client_secret_post`).
    Post,
}

/// Arguments of `tokenvisor probe`.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("grant_choice")
        .args(["refresh_token", "refresh_token_file", "grant"])
        .required(true)
        .multiple(true)
))]
pub(crate) struct ProbeArgs {
    /// The token endpoint (http or https).
    #[arg(long, value_name = "URL", value_parser = parse_token_url)]
    token_url: TokenUrl,
    /// The OAuth client id.
    #[arg(long, value_name = "ID")]
    client_id: String,
    /// The client secret (visible to other local users in the process list: prefer
    /// --client-secret-file).
    #[arg(long, value_name = "S", conflicts_with = "client_secret_file")]
    client_secret: Option<String>,
    /// A file holding the client secret (a trailing newline is ignored).
    #[arg(long, value_name = "F")]
    client_secret_file: Option<PathBuf>,
    /// The refresh token to use (visible in the process list: prefer --refresh-token-file).
    /// It may be spent: see the warning above.
    #[arg(long, value_name = "RT", conflicts_with = "refresh_token_file")]
    refresh_token: Option<String>,
    /// A file holding the refresh token (a trailing newline is ignored).
    #[arg(long, value_name = "F")]
    refresh_token_file: Option<PathBuf>,
    /// The grant; client_credentials needs no refresh token.
    #[arg(long, value_enum, value_name = "GRANT")]
    grant: Option<GrantArg>,
    /// A scope to request; repeat for several.
    #[arg(long = "scope", value_name = "S")]
    scopes: Vec<String>,
    /// How the client authenticates.
    #[arg(long, value_enum, value_name = "METHOD", default_value_t = AuthArg::Basic)]
    auth_method: AuthArg,
    /// The total deadline of the request (connect, headers and body), e.g. 10s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    timeout: Duration,
    /// RFC 8707 `resource` parameter.
    #[arg(long, value_name = "R")]
    resource: Option<String>,
    /// `audience` parameter (Auth0 and others).
    #[arg(long, value_name = "A")]
    audience: Option<String>,
    /// With --refresh-token-file: when the provider rotates the refresh token, write the new
    /// one back to that file atomically (mode 0600), as the daemon does, so it is not lost.
    #[arg(long)]
    write_back: bool,
    /// Print one JSON object: {"outcome", "kind", "http_status", "error_code",
    /// "retry_after_secs", "expires_in_secs", "summary"}.
    #[arg(long)]
    json: bool,
}

/// The probe's result, as printed with `--json`.
#[derive(Debug, Serialize)]
struct Report {
    /// `ok`, `transient` or `permanent`.
    outcome: &'static str,
    /// `ok`, or the failure kind.
    kind: &'static str,
    http_status: Option<u16>,
    error_code: Option<String>,
    retry_after_secs: Option<u64>,
    expires_in_secs: Option<u64>,
    summary: String,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("not a duration ({e}); e.g. 10s"))?;
    if d.is_zero() {
        return Err("must be more than 0s".to_owned());
    }
    Ok(d)
}

/// The one token-URL rule, [`TokenUrl::parse`] (an http(s) URL with a host).
fn parse_token_url(s: &str) -> Result<TokenUrl, String> {
    TokenUrl::parse(s).map_err(|e| e.to_string())
}

/// A secret given inline or in a file; `None` when neither was given.
fn secret(
    what: &str,
    inline: Option<&str>,
    file: Option<&PathBuf>,
) -> anyhow::Result<Option<Secret>> {
    match (inline, file) {
        (Some(value), _) => {
            if value.trim().is_empty() {
                return Err(usage_error(
                    "probe",
                    ErrorKind::ValueValidation,
                    format!("the {what} is empty"),
                ));
            }
            Ok(Some(Secret::from(value)))
        }
        (None, Some(path)) => tokenvisor::read_secret_file(path)
            .map(Some)
            .map_err(|e| usage_error("probe", ErrorKind::ValueValidation, e.to_string())),
        (None, None) => Ok(None),
    }
}

/// The request the arguments describe (usage errors for impossible combinations).
fn request(args: &ProbeArgs) -> anyhow::Result<ExchangeRequest> {
    if args.write_back && args.refresh_token_file.is_none() {
        return Err(usage_error(
            "probe",
            ErrorKind::MissingRequiredArgument,
            "--write-back needs --refresh-token-file F (the file to write the rotated token to)"
                .to_owned(),
        ));
    }
    let has_refresh_token = args.refresh_token.is_some() || args.refresh_token_file.is_some();
    let grant = match (args.grant, has_refresh_token) {
        (Some(GrantArg::ClientCredentials), true) => {
            return Err(usage_error(
                "probe",
                ErrorKind::ArgumentConflict,
                "--grant client_credentials takes no refresh token: drop --refresh-token / \
                 --refresh-token-file, or the --grant flag"
                    .to_owned(),
            ));
        }
        (Some(GrantArg::ClientCredentials), false) => Grant::ClientCredentials,
        (Some(GrantArg::RefreshToken), false) => {
            return Err(usage_error(
                "probe",
                ErrorKind::MissingRequiredArgument,
                "--grant refresh_token needs --refresh-token RT or --refresh-token-file F"
                    .to_owned(),
            ));
        }
        (Some(GrantArg::RefreshToken) | None, true) => {
            let token = secret(
                "refresh token",
                args.refresh_token.as_deref(),
                args.refresh_token_file.as_ref(),
            )?;
            match token {
                Some(token) => Grant::RefreshToken(token),
                None => {
                    return Err(usage_error(
                        "probe",
                        ErrorKind::MissingRequiredArgument,
                        "no refresh token given".to_owned(),
                    ));
                }
            }
        }
        (None, false) => {
            // Unreachable through clap (the group is required); kept total.
            return Err(usage_error(
                "probe",
                ErrorKind::MissingRequiredArgument,
                "choose a grant: --refresh-token RT, --refresh-token-file F or --grant \
                 client_credentials"
                    .to_owned(),
            ));
        }
    };
    let client_secret = secret(
        "client secret",
        args.client_secret.as_deref(),
        args.client_secret_file.as_ref(),
    )?;
    Ok(ExchangeRequest {
        token_url: args.token_url.clone(),
        client_id: Arc::from(args.client_id.as_str()),
        client_secret,
        auth_method: match args.auth_method {
            AuthArg::Basic => AuthMethod::Basic,
            AuthArg::Post => AuthMethod::Post,
        },
        provider: Arc::default(),
        grant,
        scopes: Arc::from(args.scopes.clone()),
        resource: args.resource.as_deref().map(Arc::from),
        audience: args.audience.as_deref().map(Arc::from),
        timeout: args.timeout,
        connect_timeout: args.timeout,
    })
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: &ProbeArgs) -> anyhow::Result<u8> {
    let req = request(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let transport = HttpTransport::new(HttpConfig {
        connect_timeout: req.connect_timeout,
        ..HttpConfig::default()
    })?;
    let raw = runtime.block_on(transport.exchange(req.clone()));
    let policy = ClassifyPolicy::default();
    let secrets = req.secrets();
    let verdict = classify(&raw, now(), &policy, &secrets.iter().collect::<Vec<_>>());
    let http_status = match &raw {
        RawOutcome::Response(answer) => Some(answer.status),
        RawOutcome::Transport { .. } => None,
    };
    let report = report(&verdict, http_status, &req, &policy);

    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", human(&report, &verdict));
    }

    if let (Verdict::Success(grant), Grant::RefreshToken(sent)) = (&verdict, &req.grant)
        && let Some(new) = &grant.refresh_token
        && new != sent
    {
        eprintln!("{ROTATION_WARNING}");
        match (&args.refresh_token_file, args.write_back) {
            (Some(path), true) => match tokenvisor::write_secret_file(path, new) {
                Ok(()) => eprintln!(
                    "the new refresh token was written to {} (--write-back)",
                    path.display()
                ),
                Err(e) => eprintln!("error: the new refresh token is lost: {e}"),
            },
            (Some(_) | None, false) | (None, true) => eprintln!(
                "the new refresh token is not shown and not saved (use --refresh-token-file F \
                 --write-back to keep it)"
            ),
        }
    }

    Ok(match verdict {
        Verdict::Success(_) => crate::exit::Exit::Ok.code(),
        Verdict::Transient(_) => EXIT_TRANSIENT,
        Verdict::Permanent(_) => EXIT_PERMANENT,
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
        },
    }
}

/// The human-readable form.
fn human(r: &Report, verdict: &Verdict) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let mut lines = vec![
        ("outcome", r.outcome.to_owned()),
        ("kind", r.kind.to_owned()),
        ("http status", opt(r.http_status.map(|s| s.to_string()))),
        ("error code", opt(r.error_code.as_deref().map(safe_text))),
        (
            "retry-after",
            opt(r.retry_after_secs.map(|s| format!("{s}s"))),
        ),
        (
            "expires in",
            opt(r.expires_in_secs.map(|s| format!("{s}s"))),
        ),
        ("summary", safe_text(&r.summary)),
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

/// What tokenvisor would do with this verdict.
fn explain(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Success(_) => "ok: tokenvisor would serve this token and refresh it before it \
                                expires; the workload would show running"
            .to_owned(),
        Verdict::Transient(f) => match f.retry_after {
            Some(d) => format!(
                "transient: tokenvisor would back off and retry, not before the Retry-After of \
                 {}; the workload would show auth_retrying",
                compact_duration(d)
            ),
            None => "transient: tokenvisor would back off and retry; the workload would show \
                     auth_retrying"
                .to_owned(),
        },
        Verdict::Permanent(_) => "permanent: the workload would become unauthenticated until new \
                                  credentials are supplied"
            .to_owned(),
    }
}

/// A likely cause, for diagnosis.
fn hint(verdict: &Verdict) -> Option<String> {
    let f = verdict.failure()?;
    if let (FailureKind::OauthUnknownCode, Some(code)) = (f.kind, f.error_code.as_deref()) {
        return Some(format!(
            "{}; tokenvisor would retry until give_up_after",
            not_final_note(code)
        ));
    }
    Some(static_hint(f).to_owned())
}

/// The fixed hint of a failure's kind (and code).
fn static_hint(f: &tokenvisor_core::Failure) -> &'static str {
    match f.kind {
        FailureKind::MalformedSuccess => {
            "a 2xx without an access_token: often a login page or a proxy; check --token-url"
        }
        FailureKind::Redirect => {
            "the endpoint redirects (often to a login page); redirects are never followed: \
             check --token-url"
        }
        FailureKind::RateLimited => "the provider (or a gateway) is rate limiting",
        FailureKind::RequestTimeout | FailureKind::Server5xx => {
            "the provider, or a gateway in front of it, is failing or overloaded"
        }
        FailureKind::OauthRetryable => "the provider asked to try again later",
        FailureKind::OauthUnknownCode => {
            "an OAuth error code that is not known to be final: tokenvisor would retry until \
             give_up_after; add it to permanent_codes if it is final"
        }
        FailureKind::Infrastructure4xx => {
            "a 4xx that is not an OAuth error response (no RFC 6749 error code, or a framework's \
             or gateway's error page): usually a WAF, proxy or CDN in front of the provider, not \
             the provider judging the credentials"
        }
        FailureKind::UnexpectedStatus => "an HTTP status outside 2xx-5xx",
        FailureKind::Connect => "nothing accepted the connection: check the host and port",
        FailureKind::Reset | FailureKind::Eof => {
            "the connection was closed before a full answer arrived (a proxy, a load balancer, \
             a crash)"
        }
        FailureKind::Dns => "the host name did not resolve",
        FailureKind::Tls => "the TLS handshake or the certificate check failed",
        FailureKind::Timeout => "no complete answer within --timeout",
        FailureKind::Io => "a network or request error; see the summary",
        FailureKind::OauthRejected => match f.error_code.as_deref() {
            Some("invalid_grant") => {
                "the refresh token is invalid, expired or revoked (a rotating provider revokes \
                 a token once it has been used)"
            }
            Some("invalid_client") => {
                "client authentication failed: check --client-id, the client secret and \
                 --auth-method"
            }
            Some("unauthorized_client") => "this client may not use this grant",
            Some("unsupported_grant_type") => "the provider does not support this grant",
            Some("invalid_scope") => "a requested --scope is invalid or not granted",
            Some("invalid_request") => {
                "the provider found the request malformed (parameters, --resource, --audience?); \
                 final only because it is listed in permanent_codes"
            }
            Some(_) | None => "the provider rejected the request with a structured error code",
        },
        FailureKind::CredentialFile => {
            "not sent: the grant's token file (assertion, subject or actor token) is unreadable, \
             empty or expired"
        }
    }
}
