//! Cluster mode's settings (`[cluster]`, on etcd), resolved: the runtime's input, whatever
//! built it, and the rules they keep ([`ClusterConfig::check`]; `tokenvisor-config` applies
//! each at its key: [`etcd_endpoint`], [`check_endpoints`], [`check_lease_ttl`]).

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use humantime::format_duration as human;
use serde::Deserialize;

use super::WorkloadSpec;
use super::rules::{Invalid, duration};
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

/// An etcd endpoint as `endpoints` lists it: an `http://` or `https://` URL with a host, no
/// user and no path.
pub fn etcd_endpoint(e: &str) -> bool {
    url::Url::parse(e).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.has_host()
            && u.username().is_empty()
            && matches!(u.path(), "" | "/")
    })
}

/// What [`etcd_endpoint`] accepts, in words.
pub const ETCD_ENDPOINT: &str = "an http:// or https:// host:port URL";

/// The rules of the endpoint list: at least one, all `http://` or all `https://`, and
/// `https://` exactly when there is a `ca_file`.
///
/// # Errors
/// Which rule is broken.
pub fn check_endpoints(list: &[String], ca_file: bool) -> Result<(), &'static str> {
    let tls = list.iter().filter(|e| e.starts_with("https:")).count();
    match (list.len(), tls) {
        (0, _) => Err("must list at least one endpoint"),
        (n, t) if t != 0 && t != n => Err("must be all http:// or all https://"),
        (_, t) if (t > 0) != ca_file => Err("https:// endpoints and ca_file go together"),
        _ => Ok(()),
    }
}

/// The rules of `lease_ttl`: its ceiling, whole seconds, at least 2 s (etcd leases count in
/// seconds), and room for the slowest of `workloads`' requests: an owner sends only while
/// its request ([`WorkloadPolicy::send_bound`](super::WorkloadPolicy::send_bound)) and the
/// write of the result to etcd fit in 2/3 of the lease.
///
/// # Errors
/// Why, naming the slowest workload and the shortest lease that fits it.
pub fn check_lease_ttl(ttl: Duration, workloads: &[WorkloadSpec]) -> Result<Duration, String> {
    let ttl = duration("lease_ttl", ttl)?;
    if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(2) {
        return Err("must be whole seconds, at least 2s (etcd leases count in seconds)".into());
    }
    let slowest = (workloads.iter())
        .map(|w| (w.policy.send_bound(), w))
        .max_by_key(|(b, _)| *b);
    match slowest.map(|(attempt, w)| (attempt + ETCD_REQUEST_TIMEOUT, w)) {
        Some((backstop, w)) if backstop * 3 >= ttl * 2 => {
            let [ttl, backstop, min] = [ttl, backstop, backstop * 3 / 2].map(human);
            let w = w.name.as_str();
            Err(format!(
                "is {ttl}; an owner sends only while its request and the write of its result \
                 fit in the lease as last confirmed (2/3 of it between keepalives), and workload \
                 {w:?}'s take {backstop} (request_timeout + connect_timeout + 1s, + 2s to write \
                 the result to etcd): raise lease_ttl above {min} or shorten the timeouts"
            ))
        }
        Some(_) | None => Ok(ttl),
    }
}

impl ClusterConfig {
    /// Every rule these settings break, as data ([`etcd_endpoint`], [`check_endpoints`],
    /// [`check_lease_ttl`] against `workloads`): what the configuration file's validation checks,
    /// for settings built in code.
    pub fn check(&self, workloads: &[WorkloadSpec]) -> Vec<Invalid> {
        let bad = self.endpoints.iter().find(|e| !etcd_endpoint(e));
        let bad = bad.map(|e| format!("{e:?} is not {ETCD_ENDPOINT}"));
        let list = check_endpoints(&self.endpoints, self.ca_file.is_some()).err();
        let endpoints = bad.or(list.map(str::to_owned));
        let lease = check_lease_ttl(self.lease_ttl, workloads).err();
        let all = [("endpoints", endpoints), ("lease_ttl", lease)];
        let all = all.map(|(key, why)| why.map(|reason| Invalid { key, reason }));
        all.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::GrantSpec;
    use crate::{TokenUrl, WorkloadName};

    #[test]
    fn settings_built_in_code_are_checked_as_the_file_is() {
        let mut c = ClusterConfig {
            backend: ClusterBackend::Etcd,
            endpoints: vec!["https://a:1".into(), "http://b:2/x".into()],
            prefix: "tokenvisor/".into(),
            member: None,
            lease_ttl: Duration::from_millis(2500),
            shards: NonZeroU32::MIN,
            ca_file: None,
            client_cert: None,
            auth: None,
        };
        let keys: Vec<_> = c.check(&[]).into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["endpoints", "lease_ttl"]);
        (c.endpoints, c.lease_ttl) = (vec!["http://a:1".into()], Duration::from_secs(15));
        assert_eq!(c.check(&[]), []);
        let (name, url) = (
            WorkloadName::new("slow"),
            TokenUrl::parse("https://idp/token"),
        );
        let mut w = WorkloadSpec::new(
            name.unwrap(),
            url.unwrap(),
            "c",
            GrantSpec::ClientCredentials,
        );
        w.policy.request_timeout = Duration::from_secs(600);
        let why = c.check(&[w]).pop().map(|i| i.reason).unwrap_or_default();
        assert!(why.contains("workload \"slow\"'s take 10m 8s"), "{why}");
    }
}
