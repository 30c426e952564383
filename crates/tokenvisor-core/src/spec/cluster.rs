//! Cluster mode's settings (`[cluster]`, on etcd), resolved: the runtime's input, whatever
//! built it.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::Secret;

/// The bound of one etcd request (a fenced write of an attempt's result included).
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The coordination engine (only etcd v3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterBackend {
    /// etcd v3 (gRPC).
    Etcd,
}

/// `[cluster]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The engine.
    pub backend: ClusterBackend,
    /// etcd endpoints (`http://` or `https://` `host:port`).
    pub endpoints: Vec<String>,
    /// The cluster's key space, ending in `/` (default `tokenvisor/`).
    pub prefix: String,
    /// This instance's id; `None`: the runtime's default (hostname and a hash of the state directory).
    pub member: Option<String>,
    /// The membership and shard lease's TTL (whole seconds, default 15 s).
    pub lease_ttl: Duration,
    /// Shards (default 256).
    pub shards: NonZeroU32,
    /// TLS: the CA, and a client certificate and key when both are set.
    pub ca_file: Option<PathBuf>,
    /// TLS client certificate and key (both or neither).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// etcd authentication: user and password (read from `password_file`).
    pub auth: Option<(String, Secret)>,
}
