//! `tokenvisor probe`: one refresh attempt, classified as the daemon would classify it.
//!
//! The flags are built into an [`ExchangeRequest`]; [`tokenvisor::probe`] sends it with the
//! daemon's own transport and classifies the answer with the default policy; this module
//! parses, prints the report (text or `--json`) and, with `--write-back`, saves a rotated
//! refresh token. Nothing printed ever contains a token or a secret.
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
use tokenvisor::Issuer;
use tokenvisor::spec::{AssertionAlg, AuthMethod, ProviderSpec};
use tokenvisor::{ExchangeRequest, Grant};
use tokenvisor_core::{Secret, TokenUrl, Verdict};

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
    let found = runtime.block_on(tokenvisor::probe::probe(&req))?;
    let discovered = found.report.discovered.as_ref();
    if let (Some(d), false) = (discovered, args.json) {
        print!("{}", d.human());
    }
    if let Some(w) = discovered.and_then(|d| d.warning.as_deref()) {
        eprintln!("warning: {w}");
    }
    if args.json {
        println!("{}", serde_json::to_string(&found.report)?);
    } else {
        print!("{}", found.report.human(&found.verdict));
    }
    if let Some(new) = &found.rotated {
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
    Ok(match found.verdict {
        Verdict::Success(_) => crate::exit::Exit::Ok.code(),
        Verdict::Transient(_) => EXIT_TRANSIENT,
        Verdict::Permanent(_) => EXIT_PERMANENT,
    })
}
