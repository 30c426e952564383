//! `tokenvisor login WORKLOAD`: obtains a workload's first (or a new) refresh token, and
//! hands it to a running daemon or writes it to the workload's `refresh_token_file`.
//!
//! - **Code flow** (default): authorization code with PKCE (S256) and a loopback redirect
//!   (RFC 8252 §7.3): a listener on `127.0.0.1:redirect_port` (0: any free port), the
//!   authorization URL printed (with `state` and the S256 challenge; nothing secret), then
//!   exactly one redirect awaited within `--timeout`. The listener serves one connection at
//!   a time; a request head must arrive within [`HEAD_TIMEOUT`] and fit in [`HEAD_LIMIT`]
//!   bytes (else 408/431 and the connection is closed); a request for another path is
//!   answered 404 and the wait goes on. The redirect's `state` must match (a mismatch ends
//!   the login: nothing is exchanged); an `error=` redirect (`access_denied`) is reported
//!   plainly. The code is exchanged at the token endpoint with the workload's client
//!   authentication (`HttpTransport::post_form`: secret, assertion or TLS certificate).
//! - **Device flow** (`--device`, RFC 8628): a device authorization request; the
//!   `verification_uri_complete` (or `verification_uri` and the user code) printed; the token
//!   endpoint polled as the core's [`DevicePoll`] decides (`interval`, +5 s on `slow_down`,
//!   on through `authorization_pending`, a stop at `expires_in`, `access_denied`,
//!   `expired_token` or another final answer).
//! - **Endpoints**: [`Endpoints::of`] takes them from the configuration
//!   (`authorization_url`, `device_authorization_url`, `token_url`),
//!   [`Endpoints::discovered`] from the provider's metadata when the workload has an
//!   `issuer` (the keys set still win); a missing one names the key to set.
//! - **Delivery**: the refresh token goes to a running daemon through its admin API (`PUT
//!   /v1/workloads/{name}/credentials`: the daemon journals it, writes the file and a
//!   workload that was `unauthenticated` recovers at once); when no daemon answers (admin
//!   API off or not listening) or it refuses, it is written atomically (0600) to the
//!   workload's `refresh_token_file`. What was done is printed; the token never is.
//! - Only a `grant = "refresh_token"` workload logs in; any other is refused with the reason.
//!
//! The configuration is read with `load_for_login`, which does not read refresh-token
//! files (before the first login there is none).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use clap::error::ErrorKind;
use oauth2::basic::BasicClient;
use oauth2::{AuthUrl, ClientId, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope};
use tokenvisor::config::{self, Config, ServiceConfig};
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::{ExchangeRequest, FormField, Grant, HttpConfig, HttpTransport, ProviderMetadata};
use tokenvisor_core::device_poll::{DevicePoll, PollAnswer, Step, Stop};
use tokenvisor_core::{ClassifyPolicy, RawOutcome, Secret, TokenUrl, Verdict, classify};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::output::{now, safe_text, truncate_chars};
use crate::usage_error;

/// The longest request head the redirect listener reads, in bytes.
pub(crate) const HEAD_LIMIT: usize = 8 * 1024;
/// How long the redirect listener waits for one connection's request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the admin API may take to answer the hand-over.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The device flow's grant type (RFC 8628 §3.4).
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The page shown after the redirect.
const DONE_PAGE: &str = "<!doctype html><meta charset=utf-8><title>tokenvisor login</title>\
    <p>tokenvisor received the authorization. You may close this tab.</p>";

/// The page shown after a redirect that ends the login without a code.
const FAILED_PAGE: &str = "<!doctype html><meta charset=utf-8><title>tokenvisor login</title>\
    <p>The login did not complete: see the terminal where tokenvisor login runs. You may close \
    this tab.</p>";

/// Arguments of `tokenvisor login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The workload to log in (its `name` in the configuration).
    #[arg(value_name = "WORKLOAD")]
    workload: String,
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Use the device authorization grant (RFC 8628) instead of a browser redirect: for a
    /// machine without a browser; the code is entered on another device.
    #[arg(long)]
    device: bool,
    /// How long to wait for the login to complete (the redirect, or the device approval; the
    /// device code's own lifetime also ends it).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    timeout: Duration,
    /// The running daemon's admin API [default: the configuration's service.admin_listen].
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// The admin API's token file [default: service.admin_token_file, else the generated
    /// <state_dir>/admin.token].
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Write the refresh token to refresh_token_file even if a daemon is running (do not
    /// try the admin API).
    #[arg(long)]
    file_only: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("not a duration ({e}); e.g. 5m"))?;
    if d.is_zero() {
        return Err("must be more than 0s".to_owned());
    }
    Ok(d)
}

/// The provider's endpoints a login uses. The configuration gives them ([`Endpoints::of`]);
/// discovery (`issuer`) gives the same three.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    /// The authorization endpoint (code flow).
    pub(crate) authorization: Option<TokenUrl>,
    /// The device authorization endpoint (device flow).
    pub(crate) device_authorization: Option<TokenUrl>,
    /// The token endpoint.
    pub(crate) token: TokenUrl,
}

impl Endpoints {
    /// The endpoints the workload's configuration names.
    pub(crate) fn of(spec: &WorkloadSpec) -> Self {
        Endpoints {
            authorization: spec.login.authorization_url.clone(),
            device_authorization: spec.login.device_authorization_url.clone(),
            token: spec.token_url.clone(),
        }
    }

    /// The endpoints of a workload with an `issuer`: the provider's metadata, under what the
    /// configuration names itself (`authorization_url`, `device_authorization_url` win).
    pub(crate) fn discovered(spec: &WorkloadSpec, doc: &ProviderMetadata) -> Self {
        let login = &spec.login;
        Endpoints {
            authorization: (login.authorization_url.clone())
                .or_else(|| doc.authorization_endpoint.clone()),
            device_authorization: (login.device_authorization_url.clone())
                .or_else(|| doc.device_authorization_endpoint.clone()),
            token: doc.token_endpoint.clone(),
        }
    }
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: &LoginArgs) -> anyhow::Result<u8> {
    crate::check_config::must_exist("login", &args.config)?;
    let cfg = match config::load_for_login(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprint!("{e}");
            return Ok(crate::EXIT_PROBLEM);
        }
    };
    let spec = target(&cfg, &args.workload)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let endpoints = match &spec.policy.provider.issuer {
        None => Endpoints::of(spec),
        Some(issuer) => {
            let (p, transport) = (&spec.policy, HttpTransport::new(HttpConfig::default())?);
            let found =
                transport.discover(issuer, &p.provider, p.connect_timeout, p.request_timeout);
            match runtime.block_on(found) {
                Ok(doc) => Endpoints::discovered(spec, &doc),
                Err(e) => {
                    eprintln!("login failed: {e}");
                    return Ok(crate::EXIT_PROBLEM);
                }
            }
        }
    };
    let needed = needed_endpoint(&endpoints, args.device, spec)?;
    runtime.block_on(login(args, &cfg.service, spec, &endpoints, needed))
}

/// The workload, when it exists and may log in.
fn target<'c>(cfg: &'c Config, name: &str) -> anyhow::Result<&'c WorkloadSpec> {
    let Some(spec) = cfg.workload(name) else {
        let names: Vec<&str> = cfg.workloads.iter().map(|w| w.name.as_str()).collect();
        return Err(usage_error(
            "login",
            ErrorKind::InvalidValue,
            format!(
                "no workload {name:?} in {} (it has: {})",
                cfg.source.display(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    match &spec.grant {
        GrantSpec::RefreshToken { .. } => Ok(spec),
        GrantSpec::ClientCredentials
        | GrantSpec::JwtBearer { .. }
        | GrantSpec::TokenExchange(_) => Err(usage_error(
            "login",
            ErrorKind::InvalidValue,
            format!(
                "workload {name} uses grant = \"{}\": it has no refresh token, so there is \
                     nothing to log in for (login is for grant = \"refresh_token\")",
                spec.grant.as_str()
            ),
        )),
    }
}

/// The endpoint the chosen flow starts at, or a usage error naming the key to set.
fn needed_endpoint(
    endpoints: &Endpoints,
    device: bool,
    spec: &WorkloadSpec,
) -> anyhow::Result<TokenUrl> {
    let (url, key) = match device {
        false => (&endpoints.authorization, "authorization_url"),
        true => (&endpoints.device_authorization, "device_authorization_url"),
    };
    url.clone().ok_or_else(|| {
        usage_error(
            "login",
            ErrorKind::MissingRequiredArgument,
            format!(
                "workload {} has no {key}: set {key} in its [[workload]] section (the provider's \
                 {} endpoint){}",
                spec.name,
                match device {
                    false => "authorization",
                    true => "device authorization",
                },
                match spec.policy.provider.issuer {
                    Some(_) => "; its issuer's metadata names none",
                    None => ", or an issuer whose metadata names it",
                }
            ),
        )
    })
}

/// The flow, then the delivery.
async fn login(
    args: &LoginArgs,
    service: &ServiceConfig,
    spec: &WorkloadSpec,
    endpoints: &Endpoints,
    start: TokenUrl,
) -> anyhow::Result<u8> {
    let transport = HttpTransport::new(HttpConfig {
        connect_timeout: spec.policy.connect_timeout,
        ..HttpConfig::default()
    })?;
    let client = ExchangeRequest::for_spec(spec, Grant::ClientCredentials);
    let scopes: Arc<[String]> = spec
        .login
        .login_scopes
        .clone()
        .unwrap_or_else(|| spec.scopes.clone());
    let flow = Flow {
        workload: spec.name.as_str(),
        transport: &transport,
        client: &client,
        token: &endpoints.token,
        scopes: &scopes,
        timeout: args.timeout,
    };
    let outcome = match args.device {
        false => flow.code(&start, spec.login.redirect_port).await,
        true => flow.device(&start).await,
    };
    let refresh_token = match outcome {
        Ok(token) => token,
        Err(e) => {
            eprintln!("login failed: {e:#}");
            return Ok(crate::EXIT_PROBLEM);
        }
    };
    deliver(args, service, spec, &refresh_token).await
}

/// One login's settings.
struct Flow<'a> {
    workload: &'a str,
    transport: &'a HttpTransport,
    client: &'a ExchangeRequest,
    token: &'a TokenUrl,
    scopes: &'a [String],
    timeout: Duration,
}

impl Flow<'_> {
    /// The authorization code flow; returns the refresh token.
    async fn code(&self, authorization: &TokenUrl, port: u16) -> anyhow::Result<Secret> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{port} for the redirect"))?;
        let port = listener.local_addr()?.port();
        let redirect_uri = format!("http://127.0.0.1:{port}{}", config::login::REDIRECT_PATH);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let oauth = BasicClient::new(ClientId::new(self.client.client_id.to_string()))
            .set_auth_uri(AuthUrl::new(authorization.expose().to_owned())?)
            .set_redirect_uri(RedirectUrl::new(redirect_uri.clone())?);
        let mut request = oauth
            .authorize_url(CsrfToken::new_random)
            .add_scopes(self.scopes.iter().map(|s| Scope::new(s.clone())))
            .set_pkce_challenge(challenge);
        // OpenID Connect Core §11: offline access is granted only with prompt=consent.
        if self.scopes.iter().any(|s| s == "offline_access") {
            request = request.add_extra_param("prompt", "consent");
        }
        let (url, state) = request.url();
        println!(
            "Open this URL in a browser to log in workload {} (waiting up to {} for the \
             redirect to {redirect_uri}):",
            self.workload,
            humantime::format_duration(self.timeout)
        );
        println!("{url}");
        let _ = std::io::stdout().flush();
        let (redirect, mut stream) =
            tokio::time::timeout(self.timeout, wait_for_redirect(&listener))
                .await
                .map_err(|_| {
                    anyhow!(
                        "no redirect within {} (--timeout)",
                        humantime::format_duration(self.timeout)
                    )
                })??;
        drop(listener);
        let checked = redirect.check(state.secret());
        let page = match &checked {
            Ok(_) => DONE_PAGE,
            Err(_) => FAILED_PAGE,
        };
        respond(&mut stream, "200 OK", "text/html; charset=utf-8", page).await;
        drop(stream);
        let code = match checked {
            Ok(code) => code,
            Err(why) => bail!("{why}"),
        };
        let form = vec![
            FormField::plain("grant_type", "authorization_code"),
            FormField::secret("code", code),
            FormField::plain("redirect_uri", redirect_uri),
            FormField::secret("code_verifier", Secret::from(verifier.secret().as_str())),
        ];
        self.token_request(form).await.map_err(|e| anyhow!("{e}"))
    }

    /// The device flow; returns the refresh token.
    async fn device(&self, device_authorization: &TokenUrl) -> anyhow::Result<Secret> {
        let mut form = Vec::new();
        if !self.scopes.is_empty() {
            form.push(FormField::plain("scope", self.scopes.join(" ")));
        }
        let raw = (self.transport)
            .post_form(self.client, device_authorization, form)
            .await;
        let authorization = match DeviceAuthorization::parse(&raw) {
            Ok(a) => a,
            Err(why) => bail!("the device authorization request failed: {why}"),
        };
        let started = now();
        let mut poll = DevicePoll::new(started, authorization.interval, authorization.expires_in);
        match &authorization.verification_uri_complete {
            Some(complete) => println!(
                "To log in workload {}, open {} and confirm the code {}",
                self.workload,
                safe_text(complete),
                safe_text(&authorization.user_code)
            ),
            None => println!(
                "To log in workload {}, open {} and enter the code {}",
                self.workload,
                safe_text(&authorization.verification_uri),
                safe_text(&authorization.user_code)
            ),
        }
        println!(
            "(waiting for the approval: the code expires in {}s)",
            authorization.expires_in
        );
        let _ = std::io::stdout().flush();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut step = poll.first(started);
        loop {
            let wait = match step {
                Step::Wait(wait) => wait,
                Step::Done => bail!("internal error: the device flow ended without a token"),
                Step::Stop(Stop::Denied) => bail!("the user denied the request (access_denied)"),
                Step::Stop(Stop::Expired) => {
                    bail!("the device code expired before the login was approved")
                }
                Step::Stop(Stop::Rejected(why)) => {
                    bail!("the provider refused: {}", safe_text(&why))
                }
            };
            if tokio::time::Instant::now() + wait > deadline {
                bail!(
                    "not approved within {} (--timeout)",
                    humantime::format_duration(self.timeout)
                );
            }
            tokio::time::sleep(wait).await;
            let form = vec![
                FormField::plain("grant_type", DEVICE_GRANT),
                FormField::secret("device_code", authorization.device_code.clone()),
            ];
            let answer = match self.token_request(form).await {
                Ok(token) => return Ok(token),
                Err(TokenError::Failed { answer, .. }) => answer,
                Err(e @ TokenError::NoRefreshToken) => bail!("{e}"),
            };
            tracing::debug!(?answer, interval = ?poll.interval(), "device flow: not yet");
            step = poll.next(&answer, now());
        }
    }

    /// A token request with `form`; the refresh token it returns.
    async fn token_request(&self, form: Vec<FormField>) -> Result<Secret, TokenError> {
        let secrets: Vec<Secret> = (form.iter().filter(|f| f.secret).map(|f| f.value.clone()))
            .chain(self.client.secrets())
            .collect();
        let raw = self
            .transport
            .post_form(self.client, self.token, form)
            .await;
        let refs: Vec<&Secret> = secrets.iter().collect();
        match classify(&raw, now(), &ClassifyPolicy::default(), &refs) {
            Verdict::Success(grant) => grant.refresh_token.ok_or(TokenError::NoRefreshToken),
            Verdict::Transient(f) => Err(TokenError::failed(&f, true)),
            Verdict::Permanent(f) => Err(TokenError::failed(&f, false)),
        }
    }
}

/// A token request that gave no refresh token.
#[derive(Debug)]
enum TokenError {
    /// The provider refused or failed.
    Failed {
        /// The answer as the device flow's decision reads it.
        answer: PollAnswer,
        /// A short sanitised description.
        summary: String,
    },
    /// Tokens came back, but no refresh token.
    NoRefreshToken,
}

impl TokenError {
    fn failed(f: &tokenvisor_core::classify::Failure, transient: bool) -> Self {
        let summary = truncate_chars(&safe_text(&f.summary), 300);
        TokenError::Failed {
            answer: PollAnswer::from_error(f.error_code.as_deref(), transient, &summary),
            summary,
        }
    }
}

impl std::error::Error for TokenError {}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Failed { summary, .. } => {
                write!(f, "the token request failed: {summary}")
            }
            TokenError::NoRefreshToken => f.write_str(
                "the provider issued tokens but no refresh token: ask for the scope it needs \
                 (often offline_access: login_scopes) or allow the refresh_token grant for this \
                 client",
            ),
        }
    }
}

/// A device authorization answer (RFC 8628 §3.2).
#[derive(Debug)]
struct DeviceAuthorization {
    device_code: Secret,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: Option<u64>,
}

impl DeviceAuthorization {
    /// The answer, or why it is not one (sanitised).
    fn parse(raw: &RawOutcome) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Body {
            device_code: String,
            user_code: String,
            verification_uri: String,
            verification_uri_complete: Option<String>,
            expires_in: u64,
            interval: Option<u64>,
        }
        let answer = match raw {
            RawOutcome::Response(answer) => answer,
            RawOutcome::Transport { kind, detail } => {
                return Err(format!("{kind:?}: {}", safe_text(detail)));
            }
        };
        if answer.status != 200 {
            let verdict = classify(raw, now(), &ClassifyPolicy::default(), &[]);
            let summary = match verdict {
                Verdict::Transient(f) | Verdict::Permanent(f) => f.summary,
                Verdict::Success(_) => format!("HTTP {}", answer.status),
            };
            return Err(truncate_chars(&safe_text(&summary), 300));
        }
        let body: Body = serde_json::from_slice(&answer.body).map_err(|e| {
            format!(
                "HTTP 200 but not a device authorization answer ({})",
                truncate_chars(&safe_text(&e.to_string()), 120)
            )
        })?;
        Ok(DeviceAuthorization {
            device_code: Secret::from(body.device_code),
            user_code: body.user_code,
            verification_uri: body.verification_uri,
            verification_uri_complete: body.verification_uri_complete,
            expires_in: body.expires_in,
            interval: body.interval,
        })
    }
}

/// What the redirect carried.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Redirect {
    params: Vec<(String, String)>,
}

impl Redirect {
    fn get(&self, name: &str) -> Option<&str> {
        (self.params.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The code, if `state` matches and the provider sent no error.
    pub(crate) fn check(&self, state: &str) -> Result<Secret, String> {
        if self.get("state") != Some(state) {
            return Err(
                "the redirect's state does not match this login's (a redirect not \
                        started here, or a forged one): nothing was exchanged"
                    .to_owned(),
            );
        }
        if let Some(error) = self.get("error") {
            let description = self
                .get("error_description")
                .map(|d| format!(": {}", truncate_chars(&safe_text(d), 200)))
                .unwrap_or_default();
            return Err(format!(
                "the provider refused the authorization: {}{description}",
                truncate_chars(&safe_text(error), 64)
            ));
        }
        match self.get("code") {
            Some(code) if !code.is_empty() => Ok(Secret::from(code)),
            Some(_) | None => Err("the redirect carries neither a code nor an error".to_owned()),
        }
    }
}

/// Serves the loopback listener until a request for the redirect path arrives, one
/// connection at a time; anything else is answered and the wait goes on. Returns the
/// redirect and its connection, not yet answered.
pub(crate) async fn wait_for_redirect(
    listener: &TcpListener,
) -> anyhow::Result<(Redirect, TcpStream)> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        match serve_one(&mut stream).await {
            Some(redirect) => return Ok((redirect, stream)),
            None => continue,
        }
    }
}

/// One connection: the redirect (unanswered), or `None` after answering anything else.
async fn serve_one(stream: &mut TcpStream) -> Option<Redirect> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(Head::TooLarge)) => {
            respond(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
            return None;
        }
        Ok(Err(Head::Closed)) => return None,
        Err(_elapsed) => {
            respond(stream, "408 Request Timeout", "text/plain", "").await;
            return None;
        }
    };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != config::login::REDIRECT_PATH {
        respond(stream, "404 Not Found", "text/plain", "not found\n").await;
        return None;
    }
    if method != "GET" {
        respond(stream, "405 Method Not Allowed", "text/plain", "").await;
        return None;
    }
    let params = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Some(Redirect { params })
}

/// Why no request head was read.
enum Head {
    TooLarge,
    Closed,
}

/// Reads up to the end of the request head (`\r\n\r\n`), at most [`HEAD_LIMIT`] bytes.
async fn read_head(stream: &mut TcpStream) -> Result<String, Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| Head::Closed)?;
        if n == 0 {
            return Err(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end > HEAD_LIMIT {
                return Err(Head::TooLarge);
            }
            buf.truncate(end);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > HEAD_LIMIT {
            return Err(Head::TooLarge);
        }
    }
}

/// Answers and closes (bounded: a peer that does not read is dropped).
async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(HEAD_TIMEOUT, write).await;
}

/// How the token was delivered.
#[derive(Debug)]
enum Delivered {
    Daemon(SocketAddr),
    File(PathBuf),
}

/// Hands the refresh token to the running daemon, else writes it to the file.
async fn deliver(
    args: &LoginArgs,
    service: &ServiceConfig,
    spec: &WorkloadSpec,
    token: &Secret,
) -> anyhow::Result<u8> {
    let file = match &spec.grant {
        GrantSpec::RefreshToken { file, .. } => file.clone(),
        GrantSpec::ClientCredentials
        | GrantSpec::JwtBearer { .. }
        | GrantSpec::TokenExchange(_) => None,
    };
    let mut note = None;
    // A configured port 0 is any port: where that daemon listens is in its ready line only.
    let admin = match args.file_only {
        true => None,
        false => (args.admin)
            .or_else(|| service.admin_listen.addr())
            .filter(|a| a.port() != 0),
    };
    if let Some(addr) = admin {
        match hand_over(args, service, addr, spec, token).await {
            Ok(()) => return Ok(report(&Delivered::Daemon(addr), spec)),
            Err(HandOver::NotRunning) => {}
            Err(HandOver::Refused(why)) => note = Some(why),
        }
    }
    let Some(path) = file else {
        let why = note.unwrap_or_else(|| "no daemon answered".to_owned());
        eprintln!(
            "error: the new refresh token could not be delivered ({why}) and workload {} has \
             no refresh_token_file to write it to; it is lost: set refresh_token_file and log in \
             again",
            spec.name
        );
        return Ok(crate::EXIT_PROBLEM);
    };
    if let Some(why) = &note {
        eprintln!("warning: the running daemon did not take the refresh token ({why})");
    }
    let p = path.clone();
    let t = token.clone();
    tokio::task::spawn_blocking(move || tokenvisor::write_secret_file(&p, &t))
        .await?
        .with_context(|| format!("cannot write the refresh token to {}", path.display()))?;
    Ok(report(&Delivered::File(path), spec))
}

/// Prints what was done; exit 0.
fn report(delivered: &Delivered, spec: &WorkloadSpec) -> u8 {
    match delivered {
        Delivered::Daemon(addr) => println!(
            "logged in: workload {}'s new refresh token was handed to the running daemon at \
             {addr} (it keeps it in its journal and its refresh_token_file)",
            spec.name
        ),
        Delivered::File(path) => println!(
            "logged in: workload {}'s new refresh token was written to {} (mode 0600)",
            spec.name,
            path.display()
        ),
    }
    crate::exit::Exit::Ok.code()
}

/// Why the daemon did not take the token.
enum HandOver {
    /// Nothing listens there (or the admin token cannot be read): no daemon.
    NotRunning,
    /// A daemon answered, but not 204; why.
    Refused(String),
}

/// `PUT /v1/workloads/{name}/credentials` with the refresh token.
async fn hand_over(
    args: &LoginArgs,
    service: &ServiceConfig,
    addr: SocketAddr,
    spec: &WorkloadSpec,
    token: &Secret,
) -> Result<(), HandOver> {
    let token_file = (args.admin_token_file.clone())
        .or_else(|| service.admin_token_file.clone())
        .or_else(|| (service.state_dir.as_ref()).map(|d| d.join("admin.token")));
    let Some(admin_token) = token_file.and_then(|f| config::read_admin_token(&f).ok()) else {
        return Err(HandOver::NotRunning);
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ADMIN_TIMEOUT)
        .build()
        .map_err(|e| HandOver::Refused(format!("no HTTP client: {e}")))?;
    let url = format!("http://{addr}/v1/workloads/{}/credentials", spec.name);
    let body = serde_json::json!({ "refresh_token": token.expose() }).to_string();
    let answer = client
        .put(url)
        .bearer_auth(admin_token.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match answer {
        Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => Ok(()),
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            let text = truncate_chars(&safe_text(&text), 200);
            Err(HandOver::Refused(format!("HTTP {status}: {text}")))
        }
        Err(e) if e.is_connect() => Err(HandOver::NotRunning),
        Err(e) => Err(HandOver::Refused(format!(
            "the admin API at {addr} did not answer: {}",
            truncate_chars(&safe_text(&e.to_string()), 200)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(query: &str) -> Redirect {
        Redirect {
            params: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The redirect's checks: the state first (a forged redirect is refused whatever it
    /// carries), then an error, then the code.
    #[test]
    fn redirect_checks() {
        let table = [
            ("state=s1&code=c1", Ok("c1")),
            ("state=other&code=c1", Err("state does not match")),
            ("code=c1", Err("state does not match")),
            (
                "state=other&error=access_denied",
                Err("state does not match"),
            ),
            (
                "state=s1&error=access_denied&error_description=End-User+aborted",
                Err("refused the authorization: access_denied: End-User aborted"),
            ),
            (
                "state=s1&error=bad%1B%5B31mred",
                Err("refused the authorization: bad"),
            ),
            ("state=s1", Err("neither a code nor an error")),
            ("state=s1&code=", Err("neither a code nor an error")),
        ];
        for (query, expected) in table {
            let got = redirect(query).check("s1");
            match (got, expected) {
                (Ok(code), Ok(want)) => assert_eq!(code.expose(), want, "{query}"),
                (Err(why), Err(want)) => {
                    assert!(why.contains(want), "{query}: {why}");
                    assert!(
                        !why.contains('\u{1b}'),
                        "{query}: control characters: {why:?}"
                    );
                }
                (got, want) => panic!("{query}: {got:?} vs {want:?}"),
            }
        }
    }

    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(request).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// The loopback listener's limits: a head over HEAD_LIMIT is answered 431, another path
    /// 404, another method 405, a client that closes early nothing; the wait goes on, and the
    /// redirect that follows is the one returned.
    #[tokio::test]
    async fn the_listener_survives_hostile_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let waiting = tokio::spawn(async move {
            let (redirect, mut stream) = wait_for_redirect(&listener).await.unwrap();
            respond(&mut stream, "200 OK", "text/html", DONE_PAGE).await;
            redirect
        });
        let huge = format!(
            "GET /callback?state=s1&code=evil HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(HEAD_LIMIT + 10)
        );
        let answer = exchange(addr, huge.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        let answer = exchange(addr, b"GET /favicon.ico HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = exchange(addr, b"POST /callback?state=s1&code=c HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        drop(TcpStream::connect(addr).await.unwrap());
        let answer = exchange(
            addr,
            b"GET /callback?state=s1&code=good HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        assert!(answer.contains("You may close this tab"), "{answer}");
        let redirect = waiting.await.unwrap();
        assert_eq!(redirect.check("s1").unwrap().expose(), "good");
    }

    /// A device authorization answer: parsed, or refused with a short reason.
    #[test]
    fn device_authorization_answers() {
        let answer = |status: u16, body: &str| {
            RawOutcome::Response(tokenvisor_core::HttpAnswer {
                status,
                retry_after: None,
                content_type: Some("application/json".into()),
                rate_limit: Default::default(),
                body: body.as_bytes().to_vec(),
                truncated: false,
            })
        };
        let ok = answer(
            200,
            r#"{"device_code":"dc","user_code":"ABCD-EFGH","verification_uri":"https://idp/device","expires_in":600}"#,
        );
        let a = DeviceAuthorization::parse(&ok).unwrap();
        assert_eq!(
            (
                a.user_code.as_str(),
                a.expires_in,
                a.interval,
                a.device_code.expose()
            ),
            ("ABCD-EFGH", 600, None, "dc")
        );
        assert!(format!("{a:?}").contains("device_code: \"…\""), "{a:?}");
        let err = DeviceAuthorization::parse(&answer(200, "{}")).unwrap_err();
        assert!(err.contains("not a device authorization answer"), "{err}");
        let err = DeviceAuthorization::parse(&answer(
            400,
            r#"{"error":"unauthorized_client","error_description":"device flow not allowed"}"#,
        ))
        .unwrap_err();
        assert!(err.contains("unauthorized_client"), "{err}");
    }
}
