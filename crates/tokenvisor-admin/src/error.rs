//! The errors of setting the admin API up: the admin token ([`TokenError`], through
//! [`ListenError::Token`]), the listener ([`ListenError`]) and the metrics recorder
//! ([`MetricsError`]). Serving never fails with an error: every refusal is an HTTP answer.
//!
//! Each message names the file or the configuration key to fix, never a token. The cause of
//! an I/O failure is the error's `source` (print the chain, e.g. with `{:#}` through
//! `anyhow`, to see it).

use std::net::SocketAddr;
use std::path::PathBuf;

use tokenvisor::config::MIN_ADMIN_TOKEN_BYTES;

/// The admin token could not be read or generated.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `service.admin_token_file` cannot be used (`reason` says why; never the token).
    #[error("service.admin_token_file {}: {reason}", path.display())]
    Configured {
        /// The configured file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// Neither a state directory nor an admin token file is known.
    #[error(
        "service.state_dir is not set and cannot be derived (no XDG_STATE_HOME, no HOME): \
         set it, or set service.admin_token_file"
    )]
    NoStateDir,
    /// The generated token's file cannot be inspected.
    #[error("cannot inspect the admin token file {}: {error}", path.display())]
    Inspect {
        /// `<state_dir>/admin.token`.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The state directory cannot be created.
    #[error("cannot create service.state_dir {}", dir.display())]
    CreateStateDir {
        /// The state directory.
        dir: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The operating system gave no random bytes.
    #[error("no randomness for the admin token: {0}")]
    Randomness(String),
    /// A temporary file in the state directory cannot be created.
    #[error("cannot create a file in {}", dir.display())]
    CreateTemp {
        /// The state directory.
        dir: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The temporary file cannot be written or synced.
    #[error("cannot write a file in {}", dir.display())]
    WriteTemp {
        /// The state directory.
        dir: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The temporary file cannot be linked into place.
    #[error("cannot create {}: {error}", path.display())]
    Persist {
        /// `<state_dir>/admin.token`.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The state directory cannot be synced after the token was linked into it.
    #[error("cannot sync {}", dir.display())]
    SyncDir {
        /// The state directory.
        dir: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// An existing generated token's file cannot be read.
    #[error("cannot read the admin token file {}", path.display())]
    Read {
        /// `<state_dir>/admin.token`.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// An existing generated token's file may be read by group or others.
    #[error(
        "the admin token file {} is readable by other users (mode {mode:o}); `chmod 600` it, \
         or delete it to have a new one generated",
        path.display()
    )]
    Readable {
        /// `<state_dir>/admin.token`.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An existing generated token is unusable (too short, empty, a control character).
    #[error(
        "{reason}; delete {} to have a new one generated (at least {MIN_ADMIN_TOKEN_BYTES} bytes)",
        path.display()
    )]
    Unusable {
        /// `<state_dir>/admin.token`.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
}

/// The admin listener could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The admin token could not be read or generated.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// `service.admin_listen` cannot be bound.
    #[error("cannot listen on {addr} (service.admin_listen)")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// The bound socket's address cannot be read.
    #[error(transparent)]
    LocalAddr(std::io::Error),
}

/// The Prometheus recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The histogram buckets were refused.
    #[error("Prometheus histogram buckets")]
    Buckets(#[source] metrics_exporter_prometheus::BuildError),
    /// Another `metrics` recorder was installed in this process first.
    #[error("another metrics recorder is installed already")]
    AnotherRecorder,
}
