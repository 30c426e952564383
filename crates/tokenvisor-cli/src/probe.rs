//! `tokenvisor probe`: one refresh attempt, classified as the daemon would classify it.
//!
//! The request is built into an [`ExchangeRequest`] and sent by the daemon's own
//! [`HttpTransport`] (no redirects, bounded body, total deadline); the answer is judged by
//! [`tokenvisor_core::classify()`] with the default classification policy. Nothing printed
//! ever contains a token or a secret: summaries are scrubbed of the request's secrets by the
//! classifier, and a success is described by its token type and lifetime only.
//!
//! Every provider key of the configuration is a flag (`--client-key-file`, `--ca-file`,
//! `--proxy`, `--extra-param NAME=VALUE`, …), checked by the configuration's own rules
//! (a mistake is a usage error naming the flag). `--issuer` replaces `--token-url`: the
//! metadata is discovered first (`HttpTransport::discover`, the daemon's cache), printed,
//! with a warning when `--auth-method` is not advertised; the request then goes to the
//! discovered endpoint (a failed discovery is the attempt's transient failure).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokenvisor::spec::{AssertionAlg, AuthMethod, ProviderSpec};
use tokenvisor::{ExchangeRequest, Grant, Transport as _};
use tokenvisor::{HttpConfig, HttpTransport};
use tokenvisor::{Issuer, ProviderMetadata};
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
#[value(rename_all = "snake_case")]
enum AuthArg {
    /// HTTP Basic (`client_secret_basic`).
    Basic,
    /// Form fields (`client_secret_post`).
    Post,
    /// A client assertion signed with --client-key-file (RFC 7523).
    PrivateKeyJwt,
    /// A client assertion signed with the client secret (HS256).
    ClientSecretJwt,
    /// A CA-issued TLS client certificate (--client-cert-file, --client-key-file).
    TlsClientAuth,
    /// A self-signed TLS client certificate registered at the provider.
    SelfSignedTlsClientAuth,
}

impl AuthArg {
    fn method(self) -> AuthMethod {
        match self {
            AuthArg::Basic => AuthMethod::Basic,
            AuthArg::Post => AuthMethod::Post,
            AuthArg::PrivateKeyJwt => AuthMethod::PrivateKeyJwt,
            AuthArg::ClientSecretJwt => AuthMethod::ClientSecretJwt,
            AuthArg::TlsClientAuth => AuthMethod::TlsClientAuth,
            AuthArg::SelfSignedTlsClientAuth => AuthMethod::SelfSignedTlsClientAuth,
        }
    }
}

/// A client assertion's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AlgArg {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "PS256")]
    Ps256,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "ES384")]
    Es384,
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "HS256")]
    Hs256,
}

impl AlgArg {
    fn alg(self) -> AssertionAlg {
        match self {
            AlgArg::Rs256 => AssertionAlg::RS256,
            AlgArg::Ps256 => AssertionAlg::PS256,
            AlgArg::Es256 => AssertionAlg::ES256,
            AlgArg::Es384 => AssertionAlg::ES384,
            AlgArg::EdDsa => AssertionAlg::EdDSA,
            AlgArg::Hs256 => AssertionAlg::HS256,
        }
    }
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
    #[arg(long, value_name = "URL", value_parser = parse_token_url, required_unless_present = "issuer", conflicts_with = "issuer")]
    token_url: Option<TokenUrl>,
    /// Discover the token endpoint from this issuer (RFC 8414, then OpenID Connect
    /// Discovery) instead of --token-url; prints what was discovered and warns when
    /// --auth-method is not advertised.
    #[arg(long, value_name = "URL", value_parser = parse_issuer)]
    issuer: Option<Issuer>,
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
    /// PEM private key: signs assertions (private_key_jwt) or is the TLS client key.
    #[arg(long, value_name = "F")]
    client_key_file: Option<PathBuf>,
    /// The assertion header's `kid`.
    #[arg(long, value_name = "KID")]
    client_key_id: Option<String>,
    /// The assertion's algorithm (default: the key's).
    #[arg(long, value_enum, value_name = "ALG")]
    client_assertion_alg: Option<AlgArg>,
    /// The assertion's `aud` (default: the token endpoint).
    #[arg(long, value_name = "AUD")]
    client_assertion_audience: Option<String>,
    /// PEM client certificate (tls_client_auth, self_signed_tls_client_auth).
    #[arg(long, value_name = "F")]
    client_cert_file: Option<PathBuf>,
    /// PEM certificates added to the system's roots.
    #[arg(long, value_name = "F")]
    ca_file: Option<PathBuf>,
    /// Trust only --ca-file.
    #[arg(long, requires = "ca_file")]
    ca_only: bool,
    /// An http:// or https:// proxy (replaces the environment's).
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// A file holding `user:password` for --proxy.
    #[arg(long, value_name = "F", requires = "proxy")]
    proxy_credentials_file: Option<PathBuf>,
    /// Hosts that bypass --proxy, comma-separated.
    #[arg(long, value_name = "HOSTS", requires = "proxy")]
    no_proxy: Option<String>,
    /// An extra token-request parameter NAME=VALUE; repeat for several.
    #[arg(long = "extra-param", value_name = "NAME=VALUE", value_parser = parse_extra_param)]
    extra_params: Vec<(String, String)>,
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
    /// With --issuer, what discovery found (absent without --issuer or when it failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    discovered: Option<Discovered>,
}

/// What `--issuer` discovered.
#[derive(Debug, Serialize)]
struct Discovered {
    issuer: String,
    token_endpoint: String,
    token_endpoint_auth_methods_supported: Vec<String>,
    grant_types_supported: Vec<String>,
    /// Set when --auth-method is not advertised.
    warning: Option<String>,
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

    fn human(&self) -> String {
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

/// The one issuer rule, [`Issuer::parse`].
fn parse_issuer(s: &str) -> Result<Issuer, String> {
    Issuer::parse(s).map_err(|e| e.to_string())
}

/// `NAME=VALUE`, checked by the configuration's `extra_params` rule.
fn parse_extra_param(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| "must be NAME=VALUE".to_owned())?;
    tokenvisor::spec::extra_param(name, value)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// The provider settings of the flags, each file checked as `check-config` checks it.
fn provider(args: &ProbeArgs) -> anyhow::Result<ProviderSpec> {
    let bad = |flag: &str, why: String| {
        usage_error(
            "probe",
            ErrorKind::ValueValidation,
            format!("{flag}: {why}"),
        )
    };
    let read = |flag: &str, f: &PathBuf| {
        std::fs::read(f).map_err(|e| bad(flag, format!("cannot read {}: {e}", f.display())))
    };
    if let Some(f) = &args.client_key_file {
        let key = tokenvisor::spec::client_key(&read("--client-key-file", f)?)
            .map_err(|why| bad("--client-key-file", format!("{}: {why}", f.display())))?;
        if let Some(a) = args.client_assertion_alg.map(AlgArg::alg)
            && !key.algs.contains(&a)
        {
            return Err(bad(
                "--client-assertion-alg",
                format!("{a:?} does not fit the key (it signs with {:?})", key.algs),
            ));
        }
    }
    for (flag, f) in [
        ("--client-cert-file", &args.client_cert_file),
        ("--ca-file", &args.ca_file),
    ] {
        if let Some(f) = f {
            tokenvisor::spec::certificates(&read(flag, f)?)
                .map_err(|why| bad(flag, format!("{}: {why}", f.display())))?;
        }
    }
    if let Some(p) = &args.proxy {
        tokenvisor::spec::proxy_url(p).map_err(|why| bad("--proxy", why))?;
    }
    let needs = match args.auth_method {
        AuthArg::PrivateKeyJwt => (args.client_key_file.is_none())
            .then_some("--auth-method private_key_jwt needs --client-key-file"),
        AuthArg::TlsClientAuth | AuthArg::SelfSignedTlsClientAuth => {
            (args.client_key_file.is_none() || args.client_cert_file.is_none()).then_some(
                "--auth-method tls_client_auth needs --client-cert-file and --client-key-file",
            )
        }
        AuthArg::Basic | AuthArg::Post | AuthArg::ClientSecretJwt => None,
    };
    if let Some(why) = needs {
        return Err(usage_error(
            "probe",
            ErrorKind::MissingRequiredArgument,
            why.to_owned(),
        ));
    }
    let text = |s: &Option<String>| s.as_deref().map(Arc::from);
    Ok(ProviderSpec {
        client_key_file: args.client_key_file.clone(),
        client_key_id: text(&args.client_key_id),
        client_assertion_alg: args.client_assertion_alg.map(AlgArg::alg),
        client_assertion_audience: text(&args.client_assertion_audience),
        client_cert_file: args.client_cert_file.clone(),
        ca_file: args.ca_file.clone(),
        ca_only: args.ca_only,
        proxy: text(&args.proxy),
        proxy_credentials_file: args.proxy_credentials_file.clone(),
        no_proxy: text(&args.no_proxy),
        issuer: args.issuer.clone(),
        extra_params: args.extra_params.iter().cloned().collect(),
    })
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
    let provider = provider(args)?;
    let token_url = match (&args.token_url, &args.issuer) {
        (Some(url), _) => url.clone(),
        (None, Some(issuer)) => issuer.as_token_url(),
        (None, None) => {
            // Unreachable through clap (one of them is required); kept total.
            return Err(usage_error(
                "probe",
                ErrorKind::MissingRequiredArgument,
                "give --token-url URL or --issuer URL".to_owned(),
            ));
        }
    };
    Ok(ExchangeRequest {
        token_url,
        client_id: Arc::from(args.client_id.as_str()),
        client_secret,
        auth_method: args.auth_method.method(),
        provider: Arc::new(provider),
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
    // --issuer: what was discovered first (the exchange then uses the cached document)
    let discovered = match &req.provider.issuer {
        Some(issuer) => {
            let found = runtime.block_on(transport.discover(
                issuer,
                &req.provider,
                req.connect_timeout,
                req.timeout,
            ));
            found.ok().map(|doc| Discovered::of(&doc, req.auth_method))
        }
        None => None,
    };
    if let (Some(d), false) = (&discovered, args.json) {
        print!("{}", d.human());
    }
    if let Some(w) = discovered.as_ref().and_then(|d| d.warning.as_deref()) {
        eprintln!("warning: {w}");
    }
    let raw = runtime.block_on(transport.exchange(req.clone()));
    let policy = ClassifyPolicy::default();
    let secrets = req.secrets();
    let verdict = classify(&raw, now(), &policy, &secrets.iter().collect::<Vec<_>>());
    let http_status = match &raw {
        RawOutcome::Response(answer) => Some(answer.status),
        RawOutcome::Transport { .. } => None,
    };
    let mut report = report(&verdict, http_status, &req, &policy);
    report.discovered = discovered;

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
