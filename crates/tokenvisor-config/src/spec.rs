//! What the configuration resolves to: the `[service]` settings ([`ServiceConfig`]) and
//! each `[[workload]]` ([`WorkloadSpec`], its [`WorkloadPolicy`]).
//!
//! Secrets are resolved (read from their file or environment variable) before a spec reaches
//! the runtime, so that a missing secret is a configuration error, not a runtime surprise.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strum::{Display, IntoStaticStr};
use tokenvisor_core::machine::MachineConfig;
use tokenvisor_core::policy::{BackoffPolicy, RefreshSchedule};
use tokenvisor_core::{ClassifyPolicy, Secret, TokenUrl, WorkloadName};

pub use crate::grants::{PresentedToken, TOKEN_TYPE_ALIASES, TokenExchangeSpec};
pub use crate::provider::{
    AssertionAlg, ClientKey, Issuer, ProviderSpec, RESERVED_PARAMS, certificates, client_key,
    extra_param, proxy_url,
};

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
    pub login: crate::login::LoginSpec,
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
            login: crate::login::LoginSpec::default(),
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

/// The admin API's address when `service.admin_listen` is not set.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7878));

/// `service.admin_header_timeout` when not set.
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `service.admin_idle_timeout` when not set.
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `service.status_refresh_interval` when not set.
pub const DEFAULT_STATUS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// `service.admin_max_connections` when not set.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 256;

/// The `[service]` section, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Where status files are written.
    pub status_dir: PathBuf,
    /// Where the admin API listens.
    pub admin_listen: AdminListen,
    /// The file holding the admin API's bearer token (checked readable and at least
    /// [`crate::MIN_ADMIN_TOKEN_BYTES`] long when the admin API is on). `None`: the daemon generates
    /// one in `<state_dir>/admin.token`.
    pub admin_token_file: Option<PathBuf>,
    /// tokenvisor's own state (the generated admin token), kept apart from the status
    /// directory, which ToolHive shares. `None` only when it is not set, cannot be derived
    /// (no `XDG_STATE_HOME`, no `HOME`) and nothing needs it.
    pub state_dir: Option<PathBuf>,
    /// Limits of the admin API's listener.
    pub admin_limits: AdminLimits,
    /// A routine refresh that changes only timestamps rewrites a workload's status file at
    /// most once per this interval (a status or token state change is written at once).
    pub status_refresh_interval: Duration,
    /// Log output format.
    pub log_format: LogFormat,
    /// Log filter: a level or a tracing filter directive such as `info,tokenvisor=debug`.
    pub log_level: String,
}

/// Limits of the admin API's listener (`[service]` keys `admin_header_timeout`,
/// `admin_idle_timeout`, `admin_max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// A request head must arrive within this, counted from when the connection starts
    /// waiting for it (so an idle keep-alive connection is closed after it too).
    pub header_timeout: Duration,
    /// A connection on which no byte moved either way for this long is closed (a stalled
    /// body, a client that stops reading).
    pub idle_timeout: Duration,
    /// Connections served at once; the daemon lowers it further to a quarter of its file
    /// descriptor limit. Excess connections are closed at once.
    pub max_connections: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            header_timeout: DEFAULT_ADMIN_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_ADMIN_IDLE_TIMEOUT,
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
        }
    }
}

/// Where the admin API listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// `"off"`: no admin API.
    Off,
    /// This socket address.
    Addr(SocketAddr),
}

impl AdminListen {
    /// The address, when the admin API is on.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            AdminListen::Off => None,
            AdminListen::Addr(a) => Some(*a),
        }
    }

    /// True when the admin API is on and reachable only from this host.
    pub fn is_loopback(&self) -> bool {
        match self {
            AdminListen::Off => false,
            AdminListen::Addr(a) => a.ip().is_loopback(),
        }
    }
}

impl Default for AdminListen {
    fn default() -> Self {
        AdminListen::Addr(DEFAULT_ADMIN_LISTEN)
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminListen::Off => f.write_str("off"),
            AdminListen::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// Log output format (`"text"`, `"json"`: serde and strum derive the names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, IntoStaticStr, Display)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `"text"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The default `service.state_dir`: `$XDG_STATE_HOME/tokenvisor`, else
/// `$HOME/.local/state/tokenvisor`; `None` when neither variable is usable.
pub fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    xdg_dir(env, "XDG_STATE_HOME", "state")
}

/// The default `service.status_dir`: `$XDG_DATA_HOME/tokenvisor/statuses`, else
/// `$HOME/.local/share/tokenvisor/statuses`; `None` when neither variable is usable.
pub fn default_status_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    Some(xdg_dir(env, "XDG_DATA_HOME", "share")?.join("statuses"))
}

/// `$<var>/tokenvisor`, else `$HOME/.local/<home_dir>/tokenvisor`; `None` when neither
/// variable is usable. A relative or empty `$<var>` is ignored, as the XDG base directory
/// spec says.
fn xdg_dir(env: &dyn Fn(&str) -> Option<String>, var: &str, home_dir: &str) -> Option<PathBuf> {
    let dir = env(var)
        .filter(|d| !d.is_empty() && Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".local").join(home_dir))
        })?;
    Some(dir.join("tokenvisor"))
}
