//! The token endpoint as the token actor sees it: one request in, one [`RawOutcome`] out.
//!
//! [`crate::oauth::HttpTransport`] is the real one (oauth2 over reqwest). Tests on tokio's
//! paused clock use [`crate::testing::FakeTransport`], because a paused clock breaks real
//! sockets.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokenvisor_core::{RawOutcome, Secret, TokenUrl};

use crate::spec::{AuthMethod, ProviderSpec, WorkloadSpec};

/// The grant of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `grant_type=refresh_token` with this token.
    RefreshToken(Secret),
    /// `grant_type=client_credentials`.
    ClientCredentials,
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1) with this
    /// assertion, read from `assertion_file` for this attempt.
    JwtBearer(Secret),
    /// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693) with these
    /// tokens, read from their files for this attempt.
    TokenExchange(Box<ExchangeTokens>),
}

/// The tokens and types of one token-exchange request (RFC 8693 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeTokens {
    /// `subject_token`.
    pub subject: Secret,
    /// `subject_token_type` (a URI).
    pub subject_type: Arc<str>,
    /// `actor_token` and `actor_token_type`, when the workload has one.
    pub actor: Option<(Secret, Arc<str>)>,
    /// `requested_token_type`, when set.
    pub requested_type: Option<Arc<str>>,
}

impl Grant {
    /// The token this grant presents besides the client's credentials (refresh token,
    /// assertion, subject token), for tests and records; `None` for `client_credentials`.
    pub fn presented(&self) -> Option<&Secret> {
        match self {
            Grant::RefreshToken(t) | Grant::JwtBearer(t) => Some(t),
            Grant::TokenExchange(x) => Some(&x.subject),
            Grant::ClientCredentials => None,
        }
    }
}

/// One token request.
#[derive(Debug, Clone)]
pub struct ExchangeRequest {
    /// The token endpoint.
    pub token_url: TokenUrl,
    /// The client id.
    pub client_id: Arc<str>,
    /// The client secret, if any.
    pub client_secret: Option<Secret>,
    /// How the client authenticates.
    pub auth_method: AuthMethod,
    /// Client keys, TLS and proxy settings (defaults: none).
    pub provider: Arc<ProviderSpec>,
    /// What is presented: a refresh token or the client's own credentials.
    pub grant: Grant,
    /// The `scope` parameter's values (none: no `scope` parameter).
    pub scopes: Arc<[String]>,
    /// RFC 8707 `resource`.
    pub resource: Option<Arc<str>>,
    /// `audience`.
    pub audience: Option<Arc<str>>,
    /// Total deadline.
    pub timeout: Duration,
    /// Connect deadline.
    pub connect_timeout: Duration,
}

impl ExchangeRequest {
    /// The request for `spec` with the given grant.
    pub fn for_spec(spec: &WorkloadSpec, grant: Grant) -> Self {
        ExchangeRequest {
            token_url: spec.token_url.clone(),
            client_id: spec.client_id.clone(),
            client_secret: spec.client_secret.clone(),
            auth_method: spec.auth_method,
            provider: spec.policy.provider.clone(),
            grant,
            scopes: spec.scopes.clone(),
            resource: spec.resource.clone(),
            audience: spec.audience.clone(),
            timeout: spec.policy.request_timeout,
            connect_timeout: spec.policy.connect_timeout,
        }
    }

    /// The secrets this request carries, to scrub from summaries and details: the client
    /// secret, the refresh token, and with Basic authentication the `Authorization` credential
    /// itself (base64 of the form-encoded `id:secret`, as the oauth2 crate builds it), which a
    /// server may echo back in an error page.
    pub fn secrets(&self) -> Vec<Secret> {
        let mut v: Vec<Secret> = self.client_secret.iter().cloned().collect();
        if let (AuthMethod::Basic, Some(secret)) = (self.auth_method, &self.client_secret) {
            v.push(basic_credential(&self.client_id, secret));
        }
        match &self.grant {
            Grant::RefreshToken(t) | Grant::JwtBearer(t) => v.push(t.clone()),
            Grant::TokenExchange(x) => {
                v.push(x.subject.clone());
                v.extend(x.actor.as_ref().map(|(t, _)| t.clone()));
            }
            Grant::ClientCredentials => {}
        }
        v
    }
}

/// What follows `Basic ` in the `Authorization` header (RFC 6749 §2.3.1).
pub(crate) fn basic_credential(client_id: &str, secret: &Secret) -> Secret {
    use base64::Engine as _;
    let id: String = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    let secret: String = form_urlencoded::byte_serialize(secret.expose().as_bytes()).collect();
    Secret::from(base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

/// A boxed future of a raw outcome.
pub type OutcomeFuture = Pin<Box<dyn Future<Output = RawOutcome> + Send + 'static>>;

/// Sends token requests. Never fails: transport errors are outcomes too.
pub trait Transport: Send + Sync + 'static {
    /// Performs one exchange. The future must finish within `req.timeout` (plus connect).
    fn exchange(&self, req: ExchangeRequest) -> OutcomeFuture;
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn exchange(&self, req: ExchangeRequest) -> OutcomeFuture {
        (**self).exchange(req)
    }
}
