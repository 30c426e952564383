//! A workload's login (`tokenvisor login`): obtains its first (or a new) refresh token from
//! the provider. The caller prints what the user must do and delivers the token.
//!
//! - **Code flow** ([`Login::start_code`], then [`CodeLogin::finish`]): authorization code
//!   with PKCE (S256) and a loopback redirect (RFC 8252 §7.3): a listener on
//!   `127.0.0.1:redirect_port` (0: any free port) and the authorization URL (with `state`
//!   and the S256 challenge; nothing secret) for the caller to show, then exactly one
//!   redirect awaited within a timeout. The listener (`login/listener.rs`) serves one
//!   connection at a time; a request head must arrive within 10 s and fit in 8 KiB (else
//!   408/431 and the connection is closed); a request for another path is answered 404, another
//!   method 405, and the wait goes on. The redirect's `state` must match (a mismatch ends
//!   the login: nothing is exchanged); an `error=` redirect (`access_denied`) is reported
//!   plainly. The code is exchanged at the token endpoint with the workload's client
//!   authentication ([`HttpTransport::post_form`]: secret, assertion or TLS certificate).
//! - **Device flow** ([`Login::start_device`], then [`DeviceLogin::finish`]; RFC 8628): a
//!   device authorization request, whose answer ([`DeviceAuthorization`]) the caller shows;
//!   the token endpoint polled as the core's [`DevicePoll`] decides (`interval`, +5 s on
//!   `slow_down`, on through `authorization_pending`, a stop at `expires_in`,
//!   `access_denied`, `expired_token` or another final answer).
//! - **Endpoints** ([`endpoints`]): from the configuration (`authorization_url`,
//!   `device_authorization_url`, `token_url`), or from the provider's metadata when the
//!   workload has an `issuer` (the keys set still win).
//!
//! Every failure is a [`LoginError`] whose text is sanitised and short; no token, code or
//! verifier is ever in one.

mod listener;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, ClientId, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
};
use tokenvisor_core::device_poll::{DevicePoll, PollAnswer, Step, Stop};
use tokenvisor_core::scrub::{clean as safe_text, truncate_chars};
use tokenvisor_core::{ClassifyPolicy, RawOutcome, Secret, Timestamp, TokenUrl, Verdict, classify};
use tokio::net::TcpListener;

use crate::config::login::REDIRECT_PATH;
use crate::spec::WorkloadSpec;
use crate::{
    DiscoveryError, ExchangeRequest, FormField, Grant, HttpConfig, HttpError, HttpTransport,
    ProviderMetadata,
};

/// The device flow's grant type (RFC 8628 §3.4).
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The wall clock now.
fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// Why a login did not give a refresh token (every text sanitised, never a secret).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The redirect listener could not be bound.
    #[error("cannot listen on 127.0.0.1:{port} for the redirect: {source}")]
    Listen {
        /// The configured `redirect_port`.
        port: u16,
        /// The failure.
        source: std::io::Error,
    },
    /// The listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The authorization URL or the redirect URI is not a URL.
    #[error("{0}")]
    Url(String),
    /// No redirect arrived in time.
    #[error("no redirect within {} (--timeout)", humantime::format_duration(*.0))]
    NoRedirect(Duration),
    /// The redirect carried no usable code: a foreign `state`, an `error=`, nothing.
    #[error("{0}")]
    Redirect(String),
    /// The token request failed (a short sanitised summary).
    #[error("the token request failed: {0}")]
    TokenRequest(String),
    /// Tokens came back, but no refresh token.
    #[error(
        "the provider issued tokens but no refresh token: ask for the scope it needs (often \
         offline_access: login_scopes) or allow the refresh_token grant for this client"
    )]
    NoRefreshToken,
    /// The device authorization request failed.
    #[error("the device authorization request failed: {0}")]
    DeviceAuthorization(String),
    /// The user denied the device request.
    #[error("the user denied the request (access_denied)")]
    Denied,
    /// The device code expired.
    #[error("the device code expired before the login was approved")]
    Expired,
    /// The provider ended the device flow with another final answer.
    #[error("the provider refused: {0}")]
    Rejected(String),
    /// The device flow was not approved in time.
    #[error("not approved within {} (--timeout)", humantime::format_duration(*.0))]
    NotApproved(Duration),
    /// The poll decision ended without a token (a bug).
    #[error("internal error: the device flow ended without a token")]
    Internal,
    /// The issuer's metadata could not be discovered.
    #[error("{0}")]
    Discovery(#[from] DiscoveryError),
    /// No HTTP client could be built.
    #[error("{0}")]
    Http(#[from] HttpError),
}

/// The provider's endpoints a login uses.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The authorization endpoint (code flow).
    pub authorization: Option<TokenUrl>,
    /// The device authorization endpoint (device flow).
    pub device_authorization: Option<TokenUrl>,
    /// The token endpoint.
    pub token: TokenUrl,
}

impl Endpoints {
    /// The endpoints the workload's configuration names.
    #[must_use]
    pub fn of(spec: &WorkloadSpec) -> Self {
        Endpoints {
            authorization: spec.login.authorization_url.clone(),
            device_authorization: spec.login.device_authorization_url.clone(),
            token: spec.token_url.clone(),
        }
    }

    /// The endpoints of a workload with an `issuer`: the provider's metadata, under what the
    /// configuration names itself (`authorization_url`, `device_authorization_url` win).
    #[must_use]
    pub fn discovered(spec: &WorkloadSpec, doc: &ProviderMetadata) -> Self {
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

/// The workload's endpoints: its configuration's, or its issuer's metadata (discovered once,
/// with its provider settings and timeouts) under the keys it sets.
///
/// # Errors
/// [`LoginError::Discovery`] when the metadata cannot be fetched or is not valid;
/// [`LoginError::Http`] when no HTTP client can be built.
pub async fn endpoints(spec: &WorkloadSpec) -> Result<Endpoints, LoginError> {
    let Some(issuer) = &spec.policy.provider.issuer else {
        return Ok(Endpoints::of(spec));
    };
    let (p, transport) = (&spec.policy, HttpTransport::new(HttpConfig::default())?);
    let doc =
        (transport.discover(issuer, &p.provider, p.connect_timeout, p.request_timeout)).await?;
    Ok(Endpoints::discovered(spec, &doc))
}

/// One workload's login: its client, its token endpoint, the scopes it asks for
/// (`login_scopes`, else `scopes`).
#[derive(Debug)]
pub struct Login {
    transport: HttpTransport,
    client: ExchangeRequest,
    token: TokenUrl,
    scopes: Arc<[String]>,
}

impl Login {
    /// The login of `spec` at `endpoints`.
    ///
    /// # Errors
    /// [`LoginError::Http`] when no HTTP client can be built.
    pub fn new(spec: &WorkloadSpec, endpoints: &Endpoints) -> Result<Self, LoginError> {
        let transport = HttpTransport::new(HttpConfig {
            connect_timeout: spec.policy.connect_timeout,
            ..HttpConfig::default()
        })?;
        Ok(Login {
            transport,
            client: ExchangeRequest::for_spec(spec, Grant::ClientCredentials),
            token: endpoints.token.clone(),
            scopes: (spec.login.login_scopes.clone()).unwrap_or_else(|| spec.scopes.clone()),
        })
    }

    /// Starts the code flow: binds the redirect listener on `127.0.0.1:port` (0: any free
    /// port) and builds the authorization URL the user opens.
    ///
    /// # Errors
    /// [`LoginError::Listen`] when the port cannot be bound; [`LoginError::Url`] when the
    /// authorization endpoint is not a URL the oauth2 crate takes.
    pub async fn start_code(
        &self,
        authorization: &TokenUrl,
        port: u16,
    ) -> Result<CodeLogin<'_>, LoginError> {
        let listener = (TcpListener::bind(("127.0.0.1", port)).await)
            .map_err(|source| LoginError::Listen { port, source })?;
        let port = listener.local_addr()?.port();
        let redirect_uri = format!("http://127.0.0.1:{port}{REDIRECT_PATH}");
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let url_error = |e: oauth2::url::ParseError| LoginError::Url(e.to_string());
        let oauth = BasicClient::new(ClientId::new(self.client.client_id.to_string()))
            .set_auth_uri(AuthUrl::new(authorization.expose().to_owned()).map_err(url_error)?)
            .set_redirect_uri(RedirectUrl::new(redirect_uri.clone()).map_err(url_error)?);
        let mut request = oauth
            .authorize_url(CsrfToken::new_random)
            .add_scopes(self.scopes.iter().map(|s| Scope::new(s.clone())))
            .set_pkce_challenge(challenge);
        // OpenID Connect Core §11: offline access is granted only with prompt=consent.
        if self.scopes.iter().any(|s| s == "offline_access") {
            request = request.add_extra_param("prompt", "consent");
        }
        let (url, state) = request.url();
        Ok(CodeLogin {
            login: self,
            listener,
            url: url.to_string(),
            redirect_uri,
            state,
            verifier,
        })
    }

    /// Starts the device flow: the device authorization request, whose answer the caller
    /// shows the user.
    ///
    /// # Errors
    /// [`LoginError::DeviceAuthorization`] when the provider refuses or answers something
    /// else than a device authorization.
    pub async fn start_device(
        &self,
        device_authorization: &TokenUrl,
    ) -> Result<DeviceLogin<'_>, LoginError> {
        let mut form = Vec::new();
        if !self.scopes.is_empty() {
            form.push(FormField::plain("scope", self.scopes.join(" ")));
        }
        let raw = (self.transport)
            .post_form(&self.client, device_authorization, form)
            .await;
        let authorization =
            DeviceAuthorization::parse(&raw).map_err(LoginError::DeviceAuthorization)?;
        Ok(DeviceLogin {
            login: self,
            started: now(),
            authorization,
        })
    }

    /// A token request with `form`; the refresh token it returns.
    async fn token_request(&self, form: Vec<FormField>) -> Result<Secret, TokenError> {
        let secrets: Vec<Secret> = (form.iter().filter(|f| f.secret).map(|f| f.value.clone()))
            .chain(self.client.secrets())
            .collect();
        let raw = (self.transport)
            .post_form(&self.client, &self.token, form)
            .await;
        let refs: Vec<&Secret> = secrets.iter().collect();
        match classify(&raw, now(), &ClassifyPolicy::default(), &refs) {
            Verdict::Success(grant) => grant.refresh_token.ok_or(TokenError::NoRefreshToken),
            Verdict::Transient(f) => Err(TokenError::failed(&f, true)),
            Verdict::Permanent(f) => Err(TokenError::failed(&f, false)),
        }
    }
}

/// A code flow waiting for its redirect.
#[derive(Debug)]
pub struct CodeLogin<'a> {
    login: &'a Login,
    listener: TcpListener,
    /// The authorization URL the user opens (nothing secret in it).
    pub url: String,
    /// Where the provider redirects to (`http://127.0.0.1:PORT/callback`).
    pub redirect_uri: String,
    state: CsrfToken,
    verifier: PkceCodeVerifier,
}

impl CodeLogin<'_> {
    /// Waits up to `timeout` for the redirect, answers the browser, checks it and exchanges
    /// the code; returns the refresh token.
    ///
    /// # Errors
    /// [`LoginError::NoRedirect`] after `timeout`; [`LoginError::Redirect`] for a redirect
    /// that is not this login's or carries an error; the token request's failures.
    pub async fn finish(self, timeout: Duration) -> Result<Secret, LoginError> {
        let wait = listener::wait_for_redirect(&self.listener);
        let (redirect, mut stream) = (tokio::time::timeout(timeout, wait).await)
            .map_err(|_| LoginError::NoRedirect(timeout))??;
        drop(self.listener);
        let checked = redirect.check(self.state.secret());
        let page = match &checked {
            Ok(_) => listener::DONE_PAGE,
            Err(_) => listener::FAILED_PAGE,
        };
        listener::respond(&mut stream, "200 OK", "text/html; charset=utf-8", page).await;
        drop(stream);
        let code = checked.map_err(LoginError::Redirect)?;
        let form = vec![
            FormField::plain("grant_type", "authorization_code"),
            FormField::secret("code", code),
            FormField::plain("redirect_uri", self.redirect_uri),
            FormField::secret(
                "code_verifier",
                Secret::from(self.verifier.secret().as_str()),
            ),
        ];
        self.login
            .token_request(form)
            .await
            .map_err(LoginError::from)
    }
}

/// A device flow waiting for the user's approval.
#[derive(Debug)]
pub struct DeviceLogin<'a> {
    login: &'a Login,
    started: Timestamp,
    /// The provider's answer: what the user opens and enters.
    pub authorization: DeviceAuthorization,
}

impl DeviceLogin<'_> {
    /// Polls the token endpoint as the core's [`DevicePoll`] decides, for at most `timeout`;
    /// returns the refresh token.
    ///
    /// # Errors
    /// [`LoginError::Denied`], [`LoginError::Expired`], [`LoginError::Rejected`] as the
    /// provider ends the flow; [`LoginError::NotApproved`] when the next poll would pass
    /// `timeout`; [`LoginError::NoRefreshToken`].
    pub async fn finish(self, timeout: Duration) -> Result<Secret, LoginError> {
        let a = &self.authorization;
        let mut poll = DevicePoll::new(self.started, a.interval, a.expires_in);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut step = poll.first(self.started);
        loop {
            let wait = match step {
                Step::Wait(wait) => wait,
                Step::Done => return Err(LoginError::Internal),
                Step::Stop(Stop::Denied) => return Err(LoginError::Denied),
                Step::Stop(Stop::Expired) => return Err(LoginError::Expired),
                Step::Stop(Stop::Rejected(why)) => {
                    return Err(LoginError::Rejected(safe_text(&why)));
                }
            };
            if tokio::time::Instant::now() + wait > deadline {
                return Err(LoginError::NotApproved(timeout));
            }
            tokio::time::sleep(wait).await;
            let form = vec![
                FormField::plain("grant_type", DEVICE_GRANT),
                FormField::secret("device_code", a.device_code.clone()),
            ];
            let answer = match self.login.token_request(form).await {
                Ok(token) => return Ok(token),
                Err(TokenError::Failed { answer, .. }) => answer,
                Err(TokenError::NoRefreshToken) => return Err(LoginError::NoRefreshToken),
            };
            tracing::debug!(?answer, interval = ?poll.interval(), "device flow: not yet");
            step = poll.next(&answer, now());
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

impl From<TokenError> for LoginError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Failed { summary, .. } => LoginError::TokenRequest(summary),
            TokenError::NoRefreshToken => LoginError::NoRefreshToken,
        }
    }
}

/// A device authorization answer (RFC 8628 §3.2).
#[derive(Debug)]
pub struct DeviceAuthorization {
    device_code: Secret,
    /// The code the user enters.
    pub user_code: String,
    /// Where the user enters it.
    pub verification_uri: String,
    /// The same with the code in it, when the provider gives one.
    pub verification_uri_complete: Option<String>,
    /// How long the device code lives, in seconds.
    pub expires_in: u64,
    /// The poll interval the provider asks for, in seconds.
    pub interval: Option<u64>,
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

#[cfg(test)]
mod flow_tests;

#[cfg(test)]
mod tests {
    use super::*;

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
