//! What the configuration resolves to: the daemon's `[service]` settings ([`ServiceConfig`],
//! defined here) and each `[[workload]]` ([`WorkloadSpec`], its [`WorkloadPolicy`], …: the
//! runtime's input, defined in `tokenvisor_core::spec` and re-exported here, so that
//! `tokenvisor::spec` keeps every name). Also the PEM readers shared with the runtime
//! ([`client_key`], [`certificates`]) and the XDG default directories.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::provider::{ClientKey, Jose, certificates, client_key};
pub use crate::schema::LogFormat;
pub use tokenvisor_core::discovery::Issuer;
pub use tokenvisor_core::spec::*;

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
        self.addr().is_some_and(|a| a.ip().is_loopback())
    }
}

impl Default for AdminListen {
    fn default() -> Self {
        AdminListen::Addr(DEFAULT_ADMIN_LISTEN)
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr() {
            None => f.write_str("off"),
            Some(a) => write!(f, "{a}"),
        }
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
    let home = env("HOME").filter(|h| !h.is_empty());
    let home = || Some(Path::new(&home?).join(".local").join(home_dir));
    let dir = env(var).map(PathBuf::from).filter(|d| d.is_absolute());
    Some(dir.or_else(home)?.join("tokenvisor"))
}
