//! `[cluster]`: cluster mode on etcd (absent: the single-process mode, exactly as before).
//! The raw schema, the resolved [`ClusterConfig`] and its checks, each `FILE:LINE: KEY: reason`.
use std::{num::NonZeroU32, path::Path, time::Duration};

pub use crate::masked::cluster_section;
use serde::Deserialize;
pub use tokenvisor_core::spec::{ClusterBackend, ClusterConfig, ETCD_REQUEST_TIMEOUT};
use tokenvisor_core::spec::{
    ETCD_ENDPOINT, check_endpoints, check_lease_ttl, etcd_endpoint, rules,
};
use tokenvisor_core::{WorkloadName, cluster::DEFAULT_SHARDS};

use crate::problems::{Cx, Span, span};
use crate::schema::{Count, HumanDuration, List, Opt};
use crate::spec::WorkloadSpec;

/// `[cluster]`, raw.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    backend: Opt<ClusterBackend>,
    endpoints: Option<List>,
    prefix: Opt<String>,
    member: Opt<String>,
    lease_ttl: Opt<HumanDuration>,
    shards: Opt<Count>,
    ca_file: Opt<String>,
    cert_file: Opt<String>,
    key_file: Opt<String>,
    user: Opt<String>,
    password_file: Opt<String>,
}

/// Resolves `[cluster]` (its header at `header`); `lease_ttl` must hold every workload's
/// attempt. The rules of the values are core's (`tokenvisor_core::spec::ClusterConfig`).
pub(crate) fn resolve(
    cx: &mut Cx,
    raw: &RawCluster,
    header: Span,
    base: &Path,
    workloads: &[WorkloadSpec],
) -> Option<ClusterConfig> {
    (cx.path, cx.header) = ("cluster".to_owned(), header);
    // A key's value through `f` (reported at the key), or `default` when it is not set.
    macro_rules! or {
        ($name:ident, $default:expr, $f:expr) => {
            (raw.$name.as_ref()).map_or(Some($default), |r| cx.check(stringify!($name), r, $f))
        };
    }
    let example = "is required (backend = \"etcd\")";
    let backend = cx.required("backend", raw.backend.as_ref(), example, |b| Ok(*b));
    let example = "is required (e.g. [\"http://127.0.0.1:2379\"])";
    let endpoints = cx.required("endpoints", raw.endpoints.as_ref(), example, |_| Ok(()));
    let endpoints = endpoints.and(raw.endpoints.as_ref()).and_then(|l| {
        let list = cx.each_valid("endpoints", l, etcd_endpoint, ETCD_ENDPOINT)?;
        let ok = check_endpoints(&list, raw.ca_file.is_some());
        ok.map_err(|why| cx.report("endpoints", Some(l.span()), why))
            .ok()
            .map(|()| list)
    });
    let prefix = or!(prefix, "tokenvisor/".to_owned(), |s| {
        let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic());
        ok.then(|| format!("{}/", s.trim_end_matches('/')))
            .ok_or_else(|| "must be non-empty printable ASCII without spaces".to_owned())
    });
    let name = |s: &String| WorkloadName::new(s).map(|_| Some(s.clone()));
    let member = or!(member, None, |s| name(s).map_err(|e| e.to_string()));
    let at = span(&raw.lease_ttl).or(cx.header.clone());
    let ttl = (raw.lease_ttl.as_ref()).map_or(Duration::from_secs(15), |d| d.get_ref().0);
    let lease_ttl = (check_lease_ttl(ttl, workloads))
        .map_err(|why| cx.report("lease_ttl", at, why))
        .ok();
    let count = |n: &Count| rules::count("shards", *n);
    let shards = or!(shards, DEFAULT_SHARDS as usize, count);
    let file = |cx: &mut Cx, name: &str, raw: &Opt<String>| {
        let readable = |s: &String| {
            Some(base.join(s))
                .filter(|p| p.is_file())
                .ok_or_else(|| format!("{s:?} is not a readable file"))
        };
        cx.check(name, raw.as_ref(), readable)
    };
    let ca_file = file(cx, "ca_file", &raw.ca_file);
    let client_cert = match (
        file(cx, "cert_file", &raw.cert_file),
        file(cx, "key_file", &raw.key_file),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ if cx.broken_here(&["cert_file", "key_file"]) => None,
        _ => both(cx, "cert_file", "cert_file and key_file go together"),
    };
    let auth = match (&raw.user, &raw.password_file) {
        (Some(u), Some(p)) => cx
            .secret_file("password_file", p.span(), &base.join(p.get_ref()))
            .map_err(|e| cx.report("password_file", Some(p.span()), e))
            .ok()
            .map(|pw| (u.get_ref().clone(), pw)),
        (None, None) => None,
        _ => both(cx, "user", "user and password_file go together"),
    };
    let shards = NonZeroU32::new(u32::try_from(shards?).ok()?)?;
    Some(ClusterConfig {
        backend: backend?,
        endpoints: endpoints?,
        prefix: prefix?,
        member: member.flatten(),
        lease_ttl: lease_ttl?,
        shards,
        ca_file,
        client_cert,
        auth,
    })
}

/// Reports a pair of keys of which only one is set (on the section's header).
fn both<T>(cx: &mut Cx, name: &str, why: &str) -> Option<T> {
    cx.report(name, cx.header.clone(), why);
    None
}
