//! The real transport: oauth2 5 request building over one shared reqwest 0.13 client.
//!
//! [`HttpTransport`] implements [`crate::transport::Transport`]. The `oauth2` crate builds
//! each token request (grant, client authentication, scopes, extra parameters), and our own
//! [`oauth2::AsyncHttpClient`] sends it. That client never hands a response back to oauth2:
//! oauth2 5 throws away the status code and every header of an error answer (its
//! `RequestTokenError::ServerResponse` keeps only the parsed body), so the client captures
//! the answer — status, `Retry-After`, `Content-Type`, the rate-limit headers
//! (`X-RateLimit-*` / `X-Rate-Limit-*`, IETF `RateLimit*`) and at most [`BODY_LIMIT`] bytes
//! of the body — and returns it to us *as its error*. The lenient classifier in
//! `tokenvisor-core` judges it afterwards.
//!
//! Guarantees:
//! - redirects are never followed (a 3xx is an answer like any other);
//! - a body is read as a stream and reading stops at [`BODY_LIMIT`]: a huge page costs
//!   neither memory nor time, the rest is never read and the connection is dropped;
//! - every request has a total deadline ([`ExchangeRequest::timeout`]), covering connect,
//!   headers and body; the connect deadline ([`ExchangeRequest::connect_timeout`]) is a
//!   client setting in reqwest, and so are a workload's TLS identity, extra roots and proxy:
//!   one client (one connection pool) is kept per distinct profile of these
//!   (`oauth_auth::Profile`), rebuilt when one of its files changes;
//! - client authentication: `basic` and `post` through oauth2; `private_key_jwt` and
//!   `client_secret_jwt` send `client_id` and a fresh signed assertion in the form (made by
//!   `oauth_auth`), the `tls_client_auth` methods `client_id` and the client certificate; none
//!   of these sends the secret;
//! - a TLS failure's detail names the server (`HOST:PORT`), the usual cause, rustls' reason and
//!   (on a certificate failure, through the workload's `proxy` as the request went) the
//!   presented certificate's subject and issuer;
//! - transport failures become [`RawOutcome::Transport`] with a [`TransportKind`] and a short
//!   detail that contains no secret (scrubbed by [`tokenvisor_core::scrub`], in any encoding),
//!   no body and no URL (reqwest's errors lose theirs: the workload's URL is known anyway);
//! - a workload with an `issuer` sends to the discovered token endpoint (`crate::discovery`:
//!   cached per issuer, fetched inside the attempt; a failure is a transport outcome, so
//!   transient), and `extra_params` are added to every form;
//! - logging (debug level) carries the status, the URL as [`tokenvisor_core::TokenUrl`]
//!   shows it (no userinfo, no query value) and the elapsed time, never a body or a secret.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, RefreshToken, RequestTokenError, Scope, TokenUrl};
use tokenvisor_core::classify::BODY_LIMIT;
use tokenvisor_core::classify::RateLimitHeaders;
use tokenvisor_core::{HttpAnswer, RawOutcome, Secret, TransportKind};

use crate::discovery::{Discovery, DiscoveryError};
use crate::oauth_auth::{ASSERTION_TYPE, Keys, Profile, Stamp, stamps};

pub(crate) mod form;
use crate::spec::AuthMethod;
use crate::spec::ProviderSpec;
use crate::transport::{ExchangeRequest, Grant, OutcomeFuture, Transport};
use tokenvisor_core::{Issuer, ProviderMetadata};

/// The longest transport detail kept, in bytes.
const DETAIL_LIMIT: usize = 240;

/// The longest header value kept (`Retry-After`, `Content-Type`), in bytes.
const HEADER_LIMIT: usize = 256;

/// Settings of the shared HTTP client.
#[derive(Clone, PartialEq)]
pub struct HttpConfig {
    /// The `User-Agent` header.
    pub user_agent: String,
    /// How long an idle pooled connection is kept; `None` keeps it until the server closes.
    pub pool_idle_timeout: Option<Duration>,
    /// At most this many idle connections per host are kept.
    pub pool_max_idle_per_host: usize,
    /// TCP keepalive on pooled connections; `None` disables it.
    pub tcp_keepalive: Option<Duration>,
    /// The connect timeout of the client built by [`HttpTransport::new`]; requests asking for
    /// another connect timeout get (lazily) a client of their own.
    pub connect_timeout: Duration,
    /// Honour `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` from the environment.
    pub use_env_proxy: bool,
    /// Extra trusted root certificates (PEM), added to the platform's trust store.
    pub extra_root_certs_pem: Vec<Vec<u8>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            user_agent: concat!("tokenvisor/", env!("CARGO_PKG_VERSION")).to_owned(),
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: 128,
            tcp_keepalive: Some(Duration::from_secs(60)),
            connect_timeout: Duration::from_secs(5),
            use_env_proxy: true,
            extra_root_certs_pem: Vec::new(),
        }
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("user_agent", &self.user_agent)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("connect_timeout", &self.connect_timeout)
            .field("use_env_proxy", &self.use_env_proxy)
            .field("extra_root_certs", &self.extra_root_certs_pem.len())
            .finish()
    }
}

/// Building the HTTP client failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A configured root certificate is not valid PEM.
    #[error("extra root certificate #{index} is not a valid PEM certificate: {reason}")]
    Certificate {
        /// Its position in [`HttpConfig::extra_root_certs_pem`].
        index: usize,
        /// Why it was rejected.
        reason: String,
    },
    /// reqwest refused the configuration.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The real token-endpoint transport: oauth2 over one shared reqwest client.
///
/// Cloning is cheap (an `Arc`); every clone shares the connection pools.
#[derive(Clone)]
pub struct HttpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: HttpConfig,
    /// One client per distinct [`Profile`] (connect timeout, TLS identity, roots, proxy),
    /// with the stamps of the files it was built from; usually one.
    clients: Mutex<HashMap<Profile, (Vec<Stamp>, reqwest::Client)>>,
    /// Signing keys of `private_key_jwt`, re-read when their file changes.
    keys: Keys,
    /// Discovered provider metadata, per issuer.
    discovery: Discovery,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clients = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("HttpTransport")
            .field("user_agent", &self.inner.config.user_agent)
            .field("connect_timeout", &self.inner.config.connect_timeout)
            .field("clients", &clients)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// Builds the transport and its first client (with [`HttpConfig::connect_timeout`]).
    ///
    /// Installs rustls' `ring` crypto provider as the process default if none is installed.
    ///
    /// # Errors
    /// [`HttpError`] when the HTTP client cannot be built (its TLS configuration).
    pub fn new(config: HttpConfig) -> Result<Self, HttpError> {
        // Ignore the error: it only means a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let first = build_client(&config, config.connect_timeout)?;
        let mut clients = HashMap::new();
        clients.insert(Profile::plain(config.connect_timeout), (Vec::new(), first));
        Ok(HttpTransport {
            inner: Arc::new(Inner {
                config,
                clients: Mutex::new(clients),
                keys: Keys::default(),
                discovery: Discovery::default(),
            }),
        })
    }

    /// The configuration this transport was built with.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    /// The client for `profile`, built on first use and again when one of its files
    /// changed (stats and reads files: on the blocking pool when it has any).
    fn client(&self, profile: &Profile) -> Result<reqwest::Client, String> {
        let stamps = stamps(&profile.files());
        let clients = || {
            self.inner
                .clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some((s, client)) = clients().get(profile)
            && *s == stamps
        {
            return Ok(client.clone());
        }
        let builder = client_builder(&self.inner.config, profile.connect_timeout)
            .map_err(|e| e.to_string())?;
        let client = (profile.apply(builder)?.build()).map_err(|e| error_chain(&e))?;
        clients().insert(profile.clone(), (stamps, client.clone()));
        Ok(client)
    }

    /// The provider metadata of `issuer` (RFC 8414 / OpenID Connect Discovery): cached per
    /// issuer and shared with the workloads of this transport, fetched (through the client
    /// of `provider`'s roots and proxy, within `timeout`) when not cached. For `probe`,
    /// `check-config --online` and `login`; a workload's requests discover by themselves.
    ///
    /// # Errors
    /// [`DiscoveryError`]: no usable document (a transient failure).
    pub async fn discover(
        &self,
        issuer: &Issuer,
        provider: &ProviderSpec,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Arc<ProviderMetadata>, DiscoveryError> {
        let profile = Profile::of_spec(connect_timeout, provider);
        let this = self.clone();
        let client = tokio::task::spawn_blocking(move || this.client(&profile))
            .await
            .unwrap_or_else(|e| Err(format!("preparing the request failed: {e}")))
            .map_err(|detail| DiscoveryError {
                kind: TransportKind::Io,
                detail,
            })?;
        self.inner
            .discovery
            .resolve(&getter(client), issuer, timeout)
            .await
    }

    /// The client and the client assertion of `req`.
    /// [`Self::prepare`], on the blocking pool when the request reads files (keys,
    /// certificates, CAs).
    async fn prepare_off_actor(
        &self,
        req: &ExchangeRequest,
    ) -> Result<(reqwest::Client, Option<Secret>), String> {
        if !reads_files(req) {
            return self.prepare(req);
        }
        let (this, r) = (self.clone(), req.clone());
        tokio::task::spawn_blocking(move || this.prepare(&r))
            .await
            .unwrap_or_else(|e| Err(format!("preparing the request failed: {e}")))
    }

    fn prepare(&self, req: &ExchangeRequest) -> Result<(reqwest::Client, Option<Secret>), String> {
        Ok((
            self.client(&Profile::of(req))?,
            self.inner.keys.assertion(req)?,
        ))
    }
}

/// One GET through `client` for discovery, captured as a token request's answer.
fn getter(client: reqwest::Client) -> impl Fn(String) -> OutcomeFuture + Send + Sync {
    move |url: String| {
        let client = client.clone();
        Box::pin(async move {
            let request = oauth2::http::Request::get(url.as_str())
                .header(oauth2::http::header::ACCEPT, "application/json")
                .body(Vec::new());
            match request {
                Ok(request) => send(&client, &url, request).await,
                Err(e) => RawOutcome::Transport {
                    kind: TransportKind::Io,
                    detail: format!("cannot build the discovery request: {e}"),
                },
            }
        })
    }
}

fn build_client(
    config: &HttpConfig,
    connect_timeout: Duration,
) -> Result<reqwest::Client, HttpError> {
    client_builder(config, connect_timeout)?
        .build()
        .map_err(|e| HttpError::Client(error_chain(&e)))
}

/// The builder of every client: the shared settings and the transport's extra roots.
fn client_builder(
    config: &HttpConfig,
    connect_timeout: Duration,
) -> Result<reqwest::ClientBuilder, HttpError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .tcp_keepalive(config.tcp_keepalive)
        .referer(false);
    if !config.use_env_proxy {
        builder = builder.no_proxy();
    }
    if !config.extra_root_certs_pem.is_empty() {
        let mut certs = Vec::with_capacity(config.extra_root_certs_pem.len());
        for (index, pem) in config.extra_root_certs_pem.iter().enumerate() {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| HttpError::Certificate {
                index,
                reason: e.to_string(),
            })?;
            certs.push(cert);
        }
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
}

impl Transport for HttpTransport {
    fn exchange(&self, req: ExchangeRequest) -> OutcomeFuture {
        let this = self.clone();
        Box::pin(async move {
            let mut req = req;
            let mut secrets = req.secrets();
            let started = tokio::time::Instant::now();
            // Files to stat or read: on the blocking pool.
            let files = reads_files(&req);
            // `issuer`: the token endpoint is the discovered one (cached per issuer).
            if let Some(issuer) = req.provider.issuer.clone() {
                let profile = Profile::of(&req);
                let client = match files {
                    false => this.client(&profile),
                    true => {
                        let t = this.clone();
                        tokio::task::spawn_blocking(move || t.client(&profile))
                            .await
                            .unwrap_or_else(|e| Err(format!("preparing the request failed: {e}")))
                    }
                };
                let found = match client {
                    Ok(client) => {
                        this.inner
                            .discovery
                            .resolve(&getter(client), &issuer, req.timeout)
                            .await
                    }
                    Err(detail) => Err(DiscoveryError {
                        kind: TransportKind::Io,
                        detail,
                    }),
                };
                match found {
                    Ok(doc) => req.token_url = doc.token_endpoint.clone(),
                    Err(e) => return scrub_outcome(e.outcome(), &secrets),
                }
            }
            let (client, assertion) = match this.prepare_off_actor(&req).await {
                Ok(prepared) => prepared,
                Err(detail) => {
                    let detail = truncate(detail, DETAIL_LIMIT);
                    let outcome = RawOutcome::Transport {
                        kind: TransportKind::Io,
                        detail,
                    };
                    return scrub_outcome(outcome, &secrets);
                }
            };
            secrets.extend(assertion.clone());
            // one deadline for discovery and the request together
            let deadline = req.timeout.saturating_sub(started.elapsed());
            let exchange = exchange(client, &req, assertion);
            let outcome = match tokio::time::timeout(deadline, exchange).await {
                Ok(outcome) => outcome,
                Err(_elapsed) => RawOutcome::Transport {
                    kind: TransportKind::Timeout,
                    detail: format!("no complete answer within {}", fmt_duration(deadline)),
                },
            };
            let outcome = diagnose_tls(outcome, &req).await;
            scrub_outcome(outcome, &secrets)
        })
    }
}

/// One exchange, without the outer deadline.
async fn exchange(
    client: reqwest::Client,
    req: &ExchangeRequest,
    assertion: Option<Secret>,
) -> RawOutcome {
    let token_url = match TokenUrl::new(req.token_url.expose().to_owned()) {
        Ok(url) => url,
        Err(e) => {
            return RawOutcome::Transport {
                kind: TransportKind::Io,
                detail: format!("invalid token URL: {e}"),
            };
        }
    };
    // The other methods send `client_id` in the body and no secret: an assertion
    // (`private_key_jwt`, `client_secret_jwt`) or the TLS client certificate authenticates.
    let auth = match req.auth_method {
        AuthMethod::Basic => Some(AuthType::BasicAuth),
        AuthMethod::Post => Some(AuthType::RequestBody),
        AuthMethod::PrivateKeyJwt
        | AuthMethod::ClientSecretJwt
        | AuthMethod::TlsClientAuth
        | AuthMethod::SelfSignedTlsClientAuth => None,
    };
    let mut oauth = BasicClient::new(ClientId::new(req.client_id.to_string()))
        .set_token_uri(token_url)
        .set_auth_type(auth.clone().unwrap_or(AuthType::RequestBody));
    if let (Some(_), Some(secret)) = (auth, &req.client_secret) {
        oauth = oauth.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
    }
    let mut extra: Vec<(&str, String)> = Vec::new();
    extra.extend(req.resource.as_ref().map(|r| ("resource", r.to_string())));
    extra.extend(req.audience.as_ref().map(|a| ("audience", a.to_string())));
    // provider-specific parameters (configuration refuses the names set here)
    extra.extend((req.provider.extra_params.iter()).map(|(k, v)| (k.as_str(), v.clone())));
    if let Some(assertion) = &assertion {
        extra.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
        extra.push(("client_assertion", assertion.expose().to_owned()));
    }
    let http = Capture {
        client,
        url: req.token_url.redacted(),
    };
    let scopes = req.scopes.iter().map(|s| Scope::new(s.clone()));
    let result = match &req.grant {
        Grant::RefreshToken(token) => {
            let token = RefreshToken::new(token.expose().to_owned());
            let mut request = oauth.exchange_refresh_token(&token).add_scopes(scopes);
            for (name, value) in extra {
                request = request.add_extra_param(name, value);
            }
            request.request_async(&http).await.map(drop)
        }
        Grant::ClientCredentials => {
            let mut request = oauth.exchange_client_credentials().add_scopes(scopes);
            for (name, value) in extra {
                request = request.add_extra_param(name, value);
            }
            request.request_async(&http).await.map(drop)
        }
        // Grants the oauth2 crate does not build: the form by hand (`workload_identity`).
        Grant::JwtBearer(_) | Grant::TokenExchange(_) => {
            return match form_request(req, extra) {
                Ok(request) => send(&http.client, &http.url, request).await,
                Err(detail) => RawOutcome::Transport {
                    kind: TransportKind::Io,
                    detail: format!("cannot build the token request: {detail}"),
                },
            };
        }
    };
    match result {
        Err(RequestTokenError::Request(Captured(outcome))) => outcome,
        // oauth2 could not build the request; it never saw an answer.
        Err(RequestTokenError::Other(message)) => RawOutcome::Transport {
            kind: TransportKind::Io,
            detail: format!("cannot build the token request: {message}"),
        },
        // Unreachable: our client always returns the answer as its error, so oauth2 never
        // parses a body. Kept total (and body-free) rather than panicking.
        Ok(()) | Err(RequestTokenError::ServerResponse(_) | RequestTokenError::Parse(..)) => {
            RawOutcome::Transport {
                kind: TransportKind::Io,
                detail: "internal error: the oauth2 crate parsed an answer itself".to_owned(),
            }
        }
    }
}

/// The token request of a grant the oauth2 crate does not know (`jwt_bearer`,
/// `token_exchange`), as oauth2 would build it: a form POST asking for JSON, the grant's
/// parameters, `scope` (space-separated, when any), `extra` (`resource`, `audience`, a
/// client assertion) and the client's authentication: HTTP Basic with a secret (`basic`),
/// `client_id` and `client_secret` in the form (`post`), else `client_id` alone (a public
/// client, or a method whose assertion or certificate authenticates).
fn form_request(
    req: &ExchangeRequest,
    extra: Vec<(&str, String)>,
) -> Result<oauth2::HttpRequest, String> {
    use oauth2::http::header;
    let mut form = crate::workload_identity::grant_params(&req.grant).unwrap_or_default();
    if !req.scopes.is_empty() {
        form.push(("scope", req.scopes.join(" ")));
    }
    form.extend(extra);
    let mut builder = oauth2::http::Request::builder()
        .method(oauth2::http::Method::POST)
        .uri(req.token_url.expose())
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    match (req.auth_method, &req.client_secret) {
        (AuthMethod::Basic, Some(secret)) => {
            let credential = crate::transport::basic_credential(&req.client_id, secret);
            builder = builder.header(
                header::AUTHORIZATION,
                format!("Basic {}", credential.expose()),
            );
        }
        (AuthMethod::Post, Some(secret)) => {
            form.push(("client_id", req.client_id.to_string()));
            form.push(("client_secret", secret.expose().to_owned()));
        }
        (
            AuthMethod::Basic
            | AuthMethod::Post
            | AuthMethod::PrivateKeyJwt
            | AuthMethod::ClientSecretJwt
            | AuthMethod::TlsClientAuth
            | AuthMethod::SelfSignedTlsClientAuth,
            _,
        ) => form.push(("client_id", req.client_id.to_string())),
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    builder.body(body.into_bytes()).map_err(|e| e.to_string())
}

/// Our `AsyncHttpClient`: sends the request and hands the captured answer back as its error.
struct Capture {
    client: reqwest::Client,
    /// The token URL for logs, redacted by [`tokenvisor_core::TokenUrl`].
    url: String,
}

/// The captured answer (or transport failure) travelling through oauth2 as an "error".
#[derive(Debug)]
struct Captured(RawOutcome);

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("token endpoint answer captured")
    }
}

impl StdError for Captured {}

type CaptureFuture<'c> =
    Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, Captured>> + Send + 'c>>;

impl<'c> oauth2::AsyncHttpClient<'c> for Capture {
    type Error = Captured;
    type Future = CaptureFuture<'c>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move { Err(Captured(send(&self.client, &self.url, request).await)) })
    }
}

/// Sends one request and captures its answer (`url`: the token URL for logs, redacted).
async fn send(client: &reqwest::Client, url: &str, request: oauth2::HttpRequest) -> RawOutcome {
    let request = match reqwest::Request::try_from(request) {
        Ok(request) => request,
        Err(e) => {
            return transport_outcome(e);
        }
    };
    let started = tokio::time::Instant::now();
    // The server's name for a TLS failure's detail (a host and port say nothing secret).
    let server = request.url().host_str().map(|host| {
        let port = request.url().port_or_known_default().unwrap_or(443);
        format!("{host}:{port}")
    });
    let mut response = match client.execute(request).await {
        Ok(response) => response,
        Err(e) => {
            let outcome = match transport_outcome(e) {
                RawOutcome::Transport {
                    kind: TransportKind::Tls,
                    detail,
                } => RawOutcome::Transport {
                    kind: TransportKind::Tls,
                    detail: tls_detail(server.as_deref(), &detail),
                },
                other @ (RawOutcome::Transport { .. } | RawOutcome::Response(_)) => other,
            };
            tracing::debug!(
                url = %url,
                elapsed_ms = started.elapsed().as_millis(),
                outcome = ?outcome,
                "token request failed"
            );
            return outcome;
        }
    };
    let status = response.status().as_u16();
    let header = |name: reqwest::header::HeaderName| {
        response.headers().get(name).map(|v| {
            truncate(
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                HEADER_LIMIT,
            )
        })
    };
    let retry_after = header(reqwest::header::RETRY_AFTER);
    let content_type = header(reqwest::header::CONTENT_TYPE);
    let either = |a: &'static str, b: &'static str| {
        header(reqwest::header::HeaderName::from_static(a))
            .or_else(|| header(reqwest::header::HeaderName::from_static(b)))
    };
    let rate_limit = RateLimitHeaders {
        reset: either("x-ratelimit-reset", "x-rate-limit-reset"),
        remaining: either("x-ratelimit-remaining", "x-rate-limit-remaining"),
        ietf: header(reqwest::header::HeaderName::from_static("ratelimit")),
        ietf_reset: header(reqwest::header::HeaderName::from_static("ratelimit-reset")),
        ietf_remaining: header(reqwest::header::HeaderName::from_static(
            "ratelimit-remaining",
        )),
    };
    let expected = response
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(BODY_LIMIT);
    let mut body = Vec::with_capacity(expected);
    let mut truncated = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = BODY_LIMIT - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                let outcome = transport_outcome(e);
                tracing::debug!(
                    status,
                    url = %url,
                    elapsed_ms = started.elapsed().as_millis(),
                    outcome = ?outcome,
                    "token response body failed"
                );
                return outcome;
            }
        }
    }
    // Dropping an unfinished response closes its connection: the rest is never read.
    drop(response);
    tracing::debug!(
        status,
        url = %url,
        elapsed_ms = started.elapsed().as_millis(),
        body_len = body.len(),
        truncated,
        "token response"
    );
    RawOutcome::Response(HttpAnswer {
        status,
        retry_after,
        content_type,
        rate_limit,
        body,
        truncated,
    })
}

/// A reqwest error as a transport outcome, with its kind and a short, sanitised detail
/// without the URL (which may carry credentials or a secret query value).
fn transport_outcome(error: reqwest::Error) -> RawOutcome {
    let error = error.without_url();
    RawOutcome::Transport {
        kind: transport_kind(&error),
        detail: truncate(error_chain(&error), DETAIL_LIMIT),
    }
}

/// A TLS failure's detail: the server it was with, the reason, and what usually fixes it.
fn tls_detail(server: Option<&str>, detail: &str) -> String {
    let hint = if detail.contains("UnknownIssuer") {
        "not issued by a trusted CA (ca_file adds one)"
    } else if detail.contains("NotValidForName") {
        "the certificate does not name this host"
    } else if detail.contains("Expired") || detail.contains("NotValidYet") {
        "the certificate is outside its validity period"
    } else if detail.contains("certificate required") || detail.contains("CertificateRequired") {
        "the server wants a client certificate (client_cert_file)"
    } else {
        "TLS failed"
    };
    let server = server.unwrap_or("the server");
    // rustls' reason, without reqwest's and hyper's wrappers around it
    let reason = detail
        .find("invalid peer certificate")
        .map_or(detail, |at| &detail[at..]);
    truncate(format!("TLS with {server}: {hint}: {reason}"), DETAIL_LIMIT)
}

/// A TLS failure over the server's certificate: the detail gains the certificate's subject
/// and issuer, from a second, diagnostic handshake on the blocking pool, direct or through
/// the workload's proxy as the request went ([`crate::oauth_auth::presented_certificate`]).
async fn diagnose_tls(outcome: RawOutcome, req: &ExchangeRequest) -> RawOutcome {
    let RawOutcome::Transport {
        kind: TransportKind::Tls,
        detail,
    } = outcome
    else {
        return outcome;
    };
    let url = req.token_url.as_url();
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return RawOutcome::Transport {
            kind: TransportKind::Tls,
            detail,
        };
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let timeout = req.connect_timeout;
    // as the request went: through the workload's proxy unless no_proxy exempts the host
    let p = req.provider.clone();
    let proxied = (p.proxy.as_ref())
        .filter(|_| !crate::oauth_auth::bypasses_proxy(p.no_proxy.as_deref(), &host))
        .is_some();
    let cert = match detail.contains("invalid peer certificate") {
        true => tokio::task::spawn_blocking(move || {
            let proxy = (p.proxy.as_deref())
                .filter(|_| proxied)
                .map(|u| (u, p.proxy_credentials_file.as_deref()));
            crate::oauth_auth::presented_certificate(&host, port, timeout, proxy)
        })
        .await
        .ok()
        .flatten(),
        false => None,
    };
    let detail = match cert {
        Some(cert) => truncate(format!("{detail}; {cert}"), DETAIL_LIMIT),
        None => detail,
    };
    RawOutcome::Transport {
        kind: TransportKind::Tls,
        detail,
    }
}

/// Classifies a transport error.
///
/// Order matters: a connect timeout is a timeout, a TLS failure during connect is TLS, a
/// DNS failure during connect is DNS; only then is a connect failure a connect failure.
fn transport_kind(error: &reqwest::Error) -> TransportKind {
    if error.is_timeout() {
        return TransportKind::Timeout;
    }
    let mut found: Option<TransportKind> = None;
    let mut visit = |e: &(dyn StdError + 'static)| {
        if let Some(kind) = kind_of(e) {
            // The first specific finding wins, except that TLS and DNS beat everything.
            found = match (found, kind) {
                (None, k) | (Some(_), k @ (TransportKind::Tls | TransportKind::Dns)) => Some(k),
                (Some(prev), _) => Some(prev),
            };
        }
    };
    walk(error, &mut visit);
    if error.is_dns() {
        return TransportKind::Dns;
    }
    match found {
        Some(kind) => kind,
        None if error.is_connect() => TransportKind::Connect,
        None => TransportKind::Io,
    }
}

/// Visits every error of the chain, looking inside `io::Error`s (whose `source()` skips the
/// error they wrap).
fn walk<'a>(
    error: &'a (dyn StdError + 'static),
    visit: &mut dyn FnMut(&'a (dyn StdError + 'static)),
) {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(error);
    let mut depth = 0;
    while let Some(e) = current {
        visit(e);
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            walk(inner, visit);
        }
        depth += 1;
        if depth > 32 {
            break;
        }
        current = e.source();
    }
}

/// What one error of the chain says about the kind, if anything.
fn kind_of(e: &(dyn StdError + 'static)) -> Option<TransportKind> {
    if e.is::<rustls::Error>() {
        return Some(TransportKind::Tls);
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        let kind = io.kind();
        let by_kind = if kind == io::ErrorKind::TimedOut {
            Some(TransportKind::Timeout)
        } else if matches!(
            kind,
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::NetworkDown
                | io::ErrorKind::AddrNotAvailable
        ) {
            Some(TransportKind::Connect)
        } else if matches!(
            kind,
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        ) {
            Some(TransportKind::Reset)
        } else if kind == io::ErrorKind::UnexpectedEof {
            Some(TransportKind::Eof)
        } else {
            // Other kinds say nothing specific; the messages below may.
            None
        };
        if by_kind.is_some() {
            return by_kind;
        }
    }
    let message = e.to_string().to_ascii_lowercase();
    if message.contains("dns error") || message.contains("failed to lookup address") {
        Some(TransportKind::Dns)
    } else if message.contains("certificate")
        || message.contains("tls handshake")
        || message.contains("invalid peer certificate")
    {
        Some(TransportKind::Tls)
    } else if message.contains("connection closed before message completed")
        || message.contains("end of file before message length reached")
        || message.contains("unexpected eof")
    {
        Some(TransportKind::Eof)
    } else if message.contains("connection reset") {
        Some(TransportKind::Reset)
    } else if message.contains("connection refused") || message.contains("tcp connect error") {
        Some(TransportKind::Connect)
    } else {
        None
    }
}

/// The error's messages, outermost first, joined with `": "`, repeats removed.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    walk(error, &mut |e| {
        let message = e.to_string();
        if message.is_empty() || parts.iter().any(|p| p.contains(message.as_str())) {
            return;
        }
        parts.push(message);
    });
    parts.join(": ")
}

/// Removes any secret of the request from a transport detail, in any encoding or case
/// (the core's one sanitiser, [`tokenvisor_core::scrub`]). A response is left for the
/// classifier, which scrubs what it quotes.
fn scrub_outcome(outcome: RawOutcome, secrets: &[Secret]) -> RawOutcome {
    match outcome {
        RawOutcome::Transport { kind, detail } => {
            let secrets: Vec<&Secret> = secrets.iter().collect();
            RawOutcome::Transport {
                kind,
                detail: tokenvisor_core::scrub::scrub(&detail, &secrets),
            }
        }
        response @ RawOutcome::Response(_) => response,
    }
}

/// Cuts `s` to at most `limit` bytes at a character boundary, marking the cut with `…`.
fn truncate(mut s: String, limit: usize) -> String {
    if s.len() <= limit {
        return s;
    }
    let mut end = limit.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Whether preparing `req` stats or reads files (client keys, certificates, CAs).
fn reads_files(req: &ExchangeRequest) -> bool {
    !Profile::of(req).files().is_empty() || matches!(req.auth_method, AuthMethod::PrivateKeyJwt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(
        &'static str,
        Option<Box<dyn StdError + Send + Sync + 'static>>,
    );

    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn StdError + 'static))
        }
    }

    fn first_kind(e: &(dyn StdError + 'static)) -> Option<TransportKind> {
        let mut found = None;
        walk(e, &mut |e| {
            if found.is_none() {
                found = kind_of(e);
            }
        });
        found
    }

    #[test]
    fn kinds_from_chains() {
        let dns = Wrap(
            "client error (Connect)",
            Some(Box::new(Wrap(
                "dns error",
                Some(Box::new(io::Error::other(
                    "failed to lookup address information",
                ))),
            ))),
        );
        assert_eq!(first_kind(&dns), Some(TransportKind::Dns));

        let refused = Wrap(
            "tcp connect error",
            Some(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
        );
        assert_eq!(first_kind(&refused), Some(TransportKind::Connect));

        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(first_kind(&tls), Some(TransportKind::Tls));

        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(first_kind(&reset), Some(TransportKind::Reset));

        let eof = Wrap("connection closed before message completed", None);
        assert_eq!(first_kind(&eof), Some(TransportKind::Eof));

        let other = Wrap("something odd", None);
        assert_eq!(first_kind(&other), None);
    }

    /// A transport failure's detail names no URL: neither the userinfo nor a query value
    /// of the token URL reaches a status file through it.
    #[tokio::test]
    async fn transport_details_carry_no_url() {
        // A port nothing listens on (bound, then closed): the connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = format!("http://user:pw@127.0.0.1:{port}/token?code=abc");
        let transport = HttpTransport::new(HttpConfig {
            use_env_proxy: false,
            ..HttpConfig::default()
        })
        .unwrap();
        let error = (transport
            .client(&Profile::plain(Duration::from_secs(5)))
            .unwrap())
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_err();
        let RawOutcome::Transport { kind, detail } = transport_outcome(error) else {
            panic!("a refused connection is a transport outcome");
        };
        assert_eq!(kind, TransportKind::Connect, "{detail}");
        for part in ["user", "pw", "code", "/token", &port.to_string()] {
            assert!(!detail.contains(part), "{part:?} in {detail:?}");
        }
    }

    /// The hand-built form of the workload-identity grants: the grant's parameters, scope,
    /// resource and audience, and each client authentication (Basic, post, or `client_id`
    /// alone for a public client).
    #[test]
    fn workload_identity_forms_carry_the_grant_and_the_client_authentication() {
        use crate::spec::{GrantSpec, WorkloadSpec};
        use crate::transport::ExchangeTokens;
        let mut spec = WorkloadSpec::new(
            tokenvisor_core::WorkloadName::new("w").unwrap(),
            "https://idp.example.com/token".parse().unwrap(),
            "client 1",
            GrantSpec::ClientCredentials,
        );
        spec.scopes = Arc::from(vec!["a".to_owned(), "b".to_owned()]);
        spec.resource = Some("https://api.test".into());
        let form = |req: &ExchangeRequest| {
            let extra = vec![("resource", "https://api.test".to_owned())];
            let r = form_request(req, extra).unwrap();
            let body: Vec<(String, String)> = form_urlencoded::parse(r.body())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let auth = r
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                r.headers()["content-type"],
                "application/x-www-form-urlencoded"
            );
            assert_eq!(r.uri(), "https://idp.example.com/token");
            (body, auth)
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let public = ExchangeRequest::for_spec(&spec, Grant::JwtBearer(Secret::from("the.jwt.x")));
        let (body, auth) = form(&public);
        assert_eq!(auth, None);
        assert_eq!(
            body,
            [
                pair("grant_type", crate::workload_identity::JWT_BEARER),
                pair("assertion", "the.jwt.x"),
                pair("scope", "a b"),
                pair("resource", "https://api.test"),
                pair("client_id", "client 1"),
            ]
        );
        let tokens = ExchangeTokens {
            subject: Secret::from("subject"),
            subject_type: "urn:ietf:params:oauth:token-type:jwt".into(),
            actor: None,
            requested_type: None,
        };
        let spec = spec.with_client_secret("s3cret");
        let basic = ExchangeRequest::for_spec(&spec, Grant::TokenExchange(Box::new(tokens)));
        let (body, auth) = form(&basic);
        // oauth2's Basic credential: form-encoded id and secret, base64 (RFC 6749 §2.3.1).
        assert_eq!(auth.as_deref(), Some("Basic Y2xpZW50KzE6czNjcmV0"));
        assert!(
            !body
                .iter()
                .any(|(k, _)| k == "client_id" || k == "client_secret")
        );
        assert_eq!(
            body[0],
            pair("grant_type", crate::workload_identity::TOKEN_EXCHANGE)
        );
        let mut post = basic.clone();
        post.auth_method = AuthMethod::Post;
        let (body, auth) = form(&post);
        assert_eq!(auth, None);
        assert!(body.ends_with(&[
            pair("client_id", "client 1"),
            pair("client_secret", "s3cret")
        ]));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "é".repeat(200);
        let t = truncate(s, 11);
        assert!(t.len() <= 11);
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short".to_owned(), 10), "short");
    }

    #[test]
    fn secrets_are_scrubbed_from_details() {
        for echo in [
            "hunter2-secret",
            "HUNTER2-SECRET",
            "hunter2%2Dsecret",
            "hunter2&#45;secret",
            "hunter2\\u002dsecret",
            "hunter2-se",
        ] {
            let outcome = RawOutcome::Transport {
                kind: TransportKind::Io,
                detail: format!("oops {echo} here"),
            };
            let RawOutcome::Transport { detail, .. } =
                scrub_outcome(outcome, &[Secret::from("hunter2-secret")])
            else {
                panic!("changed variant");
            };
            assert_eq!(detail, "oops … here", "{echo}");
        }
    }
}
