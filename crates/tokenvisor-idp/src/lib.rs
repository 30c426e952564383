//! `tokenvisor-idp`: an OAuth2 token server with scriptable faults.
//!
//! It exists to be the identity provider that tokenvisor's tests, demo, soak runs and
//! benchmarks talk to. It depends on nothing else of tokenvisor and speaks HTTP only, so it
//! cannot share a bug with the client it exercises. It binds loopback addresses only.
//!
//! # Map
//!
//! - [`IdpServer`] (`server`): start a server on the caller's tokio runtime, register clients,
//!   issue and revoke refresh tokens, script faults, read counters and the last request;
//!   stops on [`IdpServer::shutdown`] or drop.
//! - [`IdpConfig`], [`ClientSpec`], [`TokenShape`] (`config`): listen address, access-token
//!   lifetime (global and per client), refresh-token rotation per client, and the shape of the
//!   token response (`expires_in` as number, string or absent; `token_type` spelling) so a
//!   client's lenient parsing can be tested.
//! - [`Fault`], [`FaultScope`], [`Times`], [`RetryAfter`], [`FaultCommand`] (`fault`): what the
//!   token endpoint answers instead of a normal answer (WAF pages, 429/503 with `Retry-After`,
//!   RFC 6749 errors, malformed successes, redirects, delays, trickled bodies, dropped
//!   connections, huge bodies), globally or per client, always or for the next N requests.
//! - [`Chaos`], [`ChaosOutcome`] (`chaos`): seeded probabilistic faults for soak runs — each
//!   `/token` request draws once (WAF 403, 429, 500, delay, dropped connection, revoked
//!   grant); see [`IdpServer::set_chaos`].
//! - [`Counters`], [`RequestInfo`] (`counters`): what the server saw, for assertions.
//! - HTTP surface (`http`):
//!   - `POST /token`: grants `refresh_token` (with rotation and reuse detection that revokes
//!     the whole token family) and `client_credentials`; client authentication by HTTP Basic
//!     (RFC 6749 §2.3.1 form-urlencoded credentials, plain accepted too) or by
//!     `client_id`/`client_secret` form fields.
//!   - `POST /revoke`: RFC 7009 revocation.
//!   - `GET /healthz`, `GET /login` (the target of the redirect fault).
//!   - `/admin/...`: a small JSON API so another process can script faults and read counters
//!     (see [`IdpServer`] for the list).
//! - The `tokenvisor-idp` binary (`src/main.rs`) starts one server, registers N clients and
//!   prints one JSON line describing where it listens.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), tokenvisor_idp::IdpError> {
//! use std::time::Duration;
//! use tokenvisor_idp::{ClientSpec, Fault, FaultScope, IdpConfig, IdpServer, Times};
//!
//! let idp = IdpServer::start(IdpConfig::default()).await?;
//! idp.register_client(ClientSpec::new("app", "s3cret").with_lifetime(Duration::from_secs(2)));
//! let refresh_token = idp.issue_refresh_token("app")?;
//! idp.set_fault(FaultScope::Global, Fault::HtmlForbidden, Times::Next(2));
//! // ... point a client at idp.token_url() with `refresh_token` ...
//! # let _ = refresh_token;
//! idp.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod chaos;
mod config;
mod counters;
mod fault;
mod http;
mod server;
mod state;

pub use chaos::{Chaos, ChaosOutcome};
pub use config::{ClientSpec, ExpiresInShape, IdpConfig, TokenShape};
pub use counters::{AuthMethod, Counters, RequestInfo};
pub use fault::{Fault, FaultCommand, FaultKind, FaultScope, RetryAfter, Times};
pub use server::IdpServer;

/// Errors of the library surface.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// The listen address is not a loopback address; this server never binds anything else.
    #[error("refusing to listen on {0}: only loopback addresses are allowed")]
    NotLoopback(std::net::SocketAddr),
    /// Binding or querying the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: std::net::SocketAddr,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The client id is not registered.
    #[error("unknown client {0:?}")]
    UnknownClient(String),
    /// A fault command (admin endpoint or `--fault` flag) could not be parsed.
    #[error("invalid fault command: {0}")]
    InvalidFault(String),
    /// Chaos rates that are not probabilities, or that sum to more than 1.
    #[error("invalid chaos settings: {0}")]
    InvalidChaos(String),
}
