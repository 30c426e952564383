//! What a workload is, resolved: the plain data the runtime consumes ([`WorkloadSpec`], its
//! [`WorkloadPolicy`], [`GrantSpec`], [`ProviderSpec`], [`LoginSpec`]) and cluster mode's
//! settings ([`ClusterConfig`]). An embedder builds these in code; `tokenvisor-config`
//! produces them from the TOML file. The value rules shared with the command line, such as
//! [`extra_param`] and [`proxy_url`], are here, next to the types they guard, as
//! [`crate::TokenUrl`] and [`crate::Issuer`] are.
//!
//! The rules these values keep, whoever builds them (each key's limits, the rules tying two
//! keys, RFC 6749's grammars), are in [`rules`]: the configuration applies them as it reads
//! a file, [`WorkloadPolicy::check`] gives an embedder the same verdicts as data.
//!
//! Secrets are resolved (read from their file or environment variable) before a spec
//! exists, so that a missing secret is a configuration error, not a runtime surprise.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strum::IntoStaticStr;

use crate::machine::MachineConfig;
use crate::policy::{BackoffPolicy, RefreshSchedule};
use crate::{ClassifyPolicy, Secret, TokenUrl, WorkloadName};

mod cluster;
mod provider;
pub mod rules;

pub use cluster::{
    ClusterBackend, ClusterConfig, ETCD_ENDPOINT, ETCD_REQUEST_TIMEOUT, check_endpoints,
    check_lease_ttl, etcd_endpoint,
};
pub use provider::{AssertionAlg, ProviderSpec, RESERVED_PARAMS, extra_param, proxy_url};

/// How the client authenticates to the token endpoint (`"basic"`, `"post"`: serde and
/// strum derive the names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic (`client_secret_basic`).
    #[default]
    Basic,
    /// In the form body (`client_secret_post`).
    Post,
    /// A client assertion signed with `client_key_file` (RFC 7523 §2.2).
    PrivateKeyJwt,
    /// A client assertion signed with the client secret (HS256).
    ClientSecretJwt,
    /// A CA-issued TLS client certificate (RFC 8705 §2.1).
    TlsClientAuth,
    /// A self-signed TLS client certificate registered with the provider (RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
}

/// The grant used to get tokens.
#[derive(Debug, Clone, PartialEq, Eq, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum GrantSpec {
    /// `refresh_token`: the current refresh token, and the file it came from (rotated tokens
    /// are written back to it atomically).
    RefreshToken {
        /// The refresh token at start.
        token: Secret,
        /// Where it is kept, when it is kept in a file.
        file: Option<PathBuf>,
    },
    /// `client_credentials`.
    ClientCredentials,
    /// `jwt_bearer` (RFC 7523 §2.1): the assertion in `assertion_file`, read at every attempt.
    JwtBearer {
        /// The file the platform writes the assertion to.
        assertion_file: PathBuf,
    },
    /// `token_exchange` (RFC 8693): the subject (and actor) token files, read at every attempt.
    TokenExchange(Arc<TokenExchangeSpec>),
}

impl AuthMethod {
    /// The name the configuration uses (`"basic"`, `"private_key_jwt"`, …).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The registered name (RFC 8414 `token_endpoint_auth_methods_supported`):
    /// `client_secret_basic`, `client_secret_post`, or the same as [`AuthMethod::as_str`].
    pub fn registered_name(self) -> &'static str {
        match self {
            AuthMethod::Basic => "client_secret_basic",
            AuthMethod::Post => "client_secret_post",
            AuthMethod::PrivateKeyJwt
            | AuthMethod::ClientSecretJwt
            | AuthMethod::TlsClientAuth
            | AuthMethod::SelfSignedTlsClientAuth => self.as_str(),
        }
    }

    /// True when the client secret authenticates the client (basic, post, client_secret_jwt).
    pub fn uses_secret(self) -> bool {
        match self {
            AuthMethod::Basic | AuthMethod::Post | AuthMethod::ClientSecretJwt => true,
            AuthMethod::PrivateKeyJwt
            | AuthMethod::TlsClientAuth
            | AuthMethod::SelfSignedTlsClientAuth => false,
        }
    }
}

impl GrantSpec {
    /// `"refresh_token"`, `"client_credentials"`, `"jwt_bearer"` or `"token_exchange"`.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// True for the grants that present a token the platform rotates, read from its file at
    /// every attempt (`jwt_bearer`, `token_exchange`); they keep no refresh token.
    pub fn presents_platform_token(&self) -> bool {
        match self {
            GrantSpec::RefreshToken { .. } | GrantSpec::ClientCredentials => false,
            GrantSpec::JwtBearer { .. } | GrantSpec::TokenExchange(_) => true,
        }
    }
}

/// Short names for the token types registered by RFC 8693 §3, and their URNs.
pub const TOKEN_TYPE_ALIASES: [(&str, &str); 6] = [
    ("jwt", "urn:ietf:params:oauth:token-type:jwt"),
    ("id_token", "urn:ietf:params:oauth:token-type:id_token"),
    (
        "access_token",
        "urn:ietf:params:oauth:token-type:access_token",
    ),
    (
        "refresh_token",
        "urn:ietf:params:oauth:token-type:refresh_token",
    ),
    ("saml1", "urn:ietf:params:oauth:token-type:saml1"),
    ("saml2", "urn:ietf:params:oauth:token-type:saml2"),
];

/// A token the grant presents, read from its file at every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresentedToken {
    /// The file the platform writes the token to.
    pub file: PathBuf,
    /// Its RFC 8693 token type (a URI; aliases resolved).
    pub token_type: Arc<str>,
}

/// `grant = "token_exchange"`, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenExchangeSpec {
    /// `subject_token_file` and `subject_token_type`.
    pub subject: PresentedToken,
    /// `actor_token_file` and `actor_token_type`, when set.
    pub actor: Option<PresentedToken>,
    /// `requested_token_type`, when set.
    pub requested_token_type: Option<Arc<str>>,
}

/// Where a secret came from (for display; never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// Inline in the configuration.
    Inline,
    /// Read from this file.
    File(PathBuf),
    /// Read from this environment variable.
    Env(String),
}

/// Timing and classification settings of one workload (the `[defaults]` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadPolicy {
    /// The total deadline of one token request.
    pub request_timeout: Duration,
    /// The TCP/TLS connect deadline.
    pub connect_timeout: Duration,
    /// The refresh schedule.
    pub schedule: RefreshSchedule,
    /// The lifetime assumed when the provider omits `expires_in`.
    pub default_lifetime: Duration,
    /// Backoff after transient failures.
    pub backoff: BackoffPolicy,
    /// Give up this long after the first transient failure; zero = never.
    pub give_up_after: Duration,
    /// `Retry-After` values are clamped to this.
    pub max_retry_after: Duration,
    /// The most requests in flight per token endpoint: a ceiling, under which the runtime
    /// adapts the live limit to the endpoint's answers (429/503 cut it).
    pub endpoint_concurrency: usize,
    /// Extra RFC 6749 codes treated as transient.
    pub transient_codes: Vec<String>,
    /// Extra RFC 6749 codes treated as permanent.
    pub permanent_codes: Vec<String>,
    /// Client keys, TLS and proxy ([`ProviderSpec`]).
    pub provider: Arc<ProviderSpec>,
}

impl Default for WorkloadPolicy {
    fn default() -> Self {
        WorkloadPolicy {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            schedule: RefreshSchedule::default(),
            default_lifetime: Duration::from_secs(3600),
            backoff: BackoffPolicy::default(),
            give_up_after: Duration::from_secs(24 * 3600),
            max_retry_after: Duration::from_secs(3600),
            endpoint_concurrency: 64,
            transient_codes: Vec::new(),
            permanent_codes: Vec::new(),
            provider: Arc::default(),
        }
    }
}

impl WorkloadPolicy {
    /// The state machine's settings. The attempt backstop is the request timeout plus the
    /// connect timeout plus five seconds, so the transport always answers first.
    pub fn machine_config(&self) -> MachineConfig {
        MachineConfig {
            schedule: self.schedule,
            backoff: self.backoff,
            give_up_after: self.give_up_after,
            attempt_timeout: self.request_timeout + self.connect_timeout + Duration::from_secs(5),
        }
    }

    /// What is left of an attempt once it is about to send its request (its hold, pace and
    /// slot waits behind it): the request's deadline, the connect timeout (the deadline
    /// covers the connection already: counted again, as margin) and one second for the
    /// local work around the request (building it, classifying the answer). Cluster mode's
    /// send rule asks the lease to be confirmed for this plus the etcd write of the result;
    /// the five seconds of [`Self::machine_config`]'s backstop beyond the timeouts are the
    /// waits, which are over by then.
    pub fn send_bound(&self) -> Duration {
        self.request_timeout + self.connect_timeout + Duration::from_secs(1)
    }

    /// How long an attempt may wait for its endpoint's `Retry-After` hold to end before it is
    /// sent: what the attempt backstop leaves once the request and the connection have had
    /// their full timeouts, less a second of margin (4 s). A longer hold fails the attempt as
    /// "not sent" and the machine schedules the retry after the hold.
    pub fn hold_wait_budget(&self) -> Duration {
        self.machine_config()
            .attempt_timeout
            .saturating_sub(self.request_timeout + self.connect_timeout)
            .saturating_sub(Duration::from_secs(1))
    }

    /// The classifier's settings.
    pub fn classify_policy(&self) -> ClassifyPolicy {
        ClassifyPolicy {
            default_lifetime: self.default_lifetime,
            max_retry_after: self.max_retry_after,
            transient_codes: self.transient_codes.clone(),
            permanent_codes: self.permanent_codes.clone(),
        }
    }
}

/// The path of `tokenvisor login`'s loopback redirect URI.
pub const REDIRECT_PATH: &str = "/callback";

/// What `tokenvisor login` knows of a workload's provider beyond its token endpoint (the
/// daemon does not use it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginSpec {
    /// The authorization endpoint (code flow), when configured.
    pub authorization_url: Option<TokenUrl>,
    /// The device authorization endpoint (device flow), when configured.
    pub device_authorization_url: Option<TokenUrl>,
    /// The loopback redirect's port; 0: any free port.
    pub redirect_port: u16,
    /// The scopes of the authorization request; `None`: the workload's `scopes`.
    pub login_scopes: Option<Arc<[String]>>,
}

/// One workload, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    /// Its name (also its status file's name).
    pub name: WorkloadName,
    /// The token endpoint URL (validated; shown only redacted).
    pub token_url: TokenUrl,
    /// The OAuth client id.
    pub client_id: Arc<str>,
    /// The client secret, when the client has one.
    pub client_secret: Option<Secret>,
    /// Where the client secret came from.
    pub client_secret_origin: Option<SecretOrigin>,
    /// Basic or post.
    pub auth_method: AuthMethod,
    /// The grant.
    pub grant: GrantSpec,
    /// Scopes to request.
    pub scopes: Arc<[String]>,
    /// RFC 8707 `resource`.
    pub resource: Option<Arc<str>>,
    /// `audience` (Auth0 and others).
    pub audience: Option<Arc<str>>,
    /// Where to write the current access token (0600), if anywhere.
    pub token_sink_file: Option<PathBuf>,
    /// Timing and classification.
    pub policy: WorkloadPolicy,
    /// What `tokenvisor login` needs (the daemon does not use it).
    pub login: LoginSpec,
}

impl WorkloadSpec {
    /// A spec with default policy, for tests and embedders that build specs in code.
    pub fn new(name: WorkloadName, token_url: TokenUrl, client_id: &str, grant: GrantSpec) -> Self {
        WorkloadSpec {
            name,
            token_url,
            client_id: client_id.into(),
            client_secret: None,
            client_secret_origin: None,
            auth_method: AuthMethod::Basic,
            grant,
            scopes: Arc::from(Vec::new()),
            resource: None,
            audience: None,
            token_sink_file: None,
            policy: WorkloadPolicy::default(),
            login: LoginSpec::default(),
        }
    }

    /// Sets the client secret (inline origin).
    #[must_use]
    pub fn with_client_secret(mut self, secret: &str) -> Self {
        self.client_secret = Some(Secret::from(secret));
        self.client_secret_origin = Some(SecretOrigin::Inline);
        self
    }
}
