//! The admin API in cluster mode: any instance shows and serves the whole cluster, through
//! the runtime's [`ClusterView`] (set with [`crate::AdminState::set_cluster_view`]; this crate
//! links no etcd client). Without a view every route answers exactly as in the
//! single-process mode.
//!
//! - `GET /v1/workloads`: every workload of the cluster (this instance's list and every
//!   record in etcd), each summary with two more fields, `owner` (the member id holding its
//!   shard, `null` while none does) and `shard`. The record shown is the owner's: this
//!   instance's own for the workloads it owns (the freshest), the one in etcd for the
//!   others. A listing cut at the view's bound carries `X-Tokenvisor-Truncated: true`.
//!   etcd unreadable: 503 with the reason.
//! - `GET /v1/workloads/{name}/token`: a token this instance holds and that is valid is
//!   served here (an owner keeps serving while etcd is away; an access token is safe to
//!   hand out until it expires, whoever fetched it). Otherwise the owner decides:
//!   this instance → the usual 503 with its reason; another member → **307 Temporary
//!   Redirect** to the same path on its admin URL (the URL it published); no owner (a
//!   handover under way, every member gone) → 503 `reason: "no_owner"` with `Retry-After`;
//!   etcd unreadable → 503 `reason: "cluster_unavailable"`. A redirect, not a proxy: no
//!   second hop holds the token, and the client sees which instance answered. Every
//!   instance must use the same admin token (one `admin_token_file` shared by the
//!   instances): a client following the redirect presents it again (HTTP clients drop
//!   `Authorization` on a redirect to another port: `curl --location-trusted`, or follow
//!   `Location` yourself).
//! - `/healthz` gains `cluster`: the member id, the lease (`confirmed` with its end,
//!   `unconfirmed`, `lost`), whether etcd renews it (`etcd: connected|disconnected`) and the
//!   shards held. It does not change `ok`.
//! - `/metrics` gains the cluster series (shards owned, handovers, fence rejections, fenced
//!   writes, conflicts, etcd connected; the etcd latency histogram is recorded by the
//!   store), only when a view is set.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokenvisor::{
    ClusterCounters, ClusterHealth, ClusterView, LeaseHealth, Owner, TokenHandle, WorkloadView,
};
use tokenvisor_core::cluster::ShardId;
use tokenvisor_core::{WorkloadName, WorkloadStatus};

use crate::views::Summary;

/// `Retry-After` (seconds) when no member holds a workload's shard: a handover ends within
/// a coordinator step or a lease TTL.
pub(crate) const NO_OWNER_RETRY_AFTER_SECS: u64 = 2;

/// Header set on a listing cut at the view's bound.
pub(crate) const TRUNCATED_HEADER: &str = "x-tokenvisor-truncated";

/// One workload of the cluster in `GET /v1/workloads`: the summary, its owner and shard.
#[derive(Debug, Serialize)]
struct Owned<'a> {
    #[serde(flatten)]
    summary: Summary<'a>,
    /// The member holding its shard; `null` while none does.
    owner: Option<&'a str>,
    /// Its shard.
    shard: ShardId,
}

/// `GET /v1/workloads` in cluster mode (`local`: this instance's list; `status`: the
/// filter).
pub(crate) async fn list(
    view: &Arc<dyn ClusterView>,
    local: &[WorkloadView],
    status: Option<WorkloadStatus>,
) -> Response {
    let names: Vec<WorkloadName> = local.iter().map(|v| v.spec.name.clone()).collect();
    let snapshot = match view.snapshot(&names).await {
        Ok(s) => s,
        Err(e) => return unavailable("cluster_unavailable", &e.to_string(), None),
    };
    let by_name: HashMap<&WorkloadName, &WorkloadView> =
        local.iter().map(|v| (&v.spec.name, v)).collect();
    let items: Vec<Owned<'_>> = snapshot
        .workloads
        .iter()
        .map(|w| {
            let here = by_name.get(&w.name);
            let mine = w.owner.as_deref() == Some(snapshot.member.as_str());
            let record = match here.and_then(|v| v.record.as_deref()) {
                Some(ours) if mine => Some(ours),
                Some(_) | None => w.record.as_ref(),
            };
            Owned {
                summary: Summary::from_parts(&w.name, record, here.map(|v| &*v.spec)),
                owner: w.owner.as_deref(),
                shard: w.shard,
            }
        })
        .filter(|o| status.is_none_or(|want| o.summary.status == want))
        .collect();
    let mut resp = axum::Json(items).into_response();
    if snapshot.truncated {
        resp.headers_mut()
            .insert(TRUNCATED_HEADER, HeaderValue::from_static("true"));
    }
    resp
}

/// What the token route does for a workload this instance has no valid token of.
pub(crate) enum Elsewhere {
    /// This instance owns it (or etcd cannot tell and the workload runs here): answer from
    /// the local handle as in the single-process mode.
    Local,
    /// Answered: a redirect or a 503.
    Answer(Response),
    /// This instance owns its shard and does not run it: no such workload (404).
    Unknown,
}

/// Asks the view who owns `name`; `local` is this instance's handle of it, if any.
pub(crate) async fn token_elsewhere(
    view: &Arc<dyn ClusterView>,
    name: &WorkloadName,
    local: Option<&TokenHandle>,
) -> Elsewhere {
    match view.owner_of(name).await {
        Ok(Owner::Me) => match local {
            Some(_) => Elsewhere::Local,
            None => Elsewhere::Unknown,
        },
        Ok(Owner::Other(member)) => Elsewhere::Answer(match member.admin {
            Some(base) => redirect(&base, name),
            None => unavailable(
                "owner_unreachable",
                &format!(
                    "workload {name} is owned by member {} which published no admin URL",
                    member.id
                ),
                Some(NO_OWNER_RETRY_AFTER_SECS),
            ),
        }),
        Ok(Owner::Nobody { shard }) => Elsewhere::Answer(unavailable(
            "no_owner",
            &format!(
                "no member holds shard {shard} of workload {name} (a handover is under way, or no member is live)"
            ),
            Some(NO_OWNER_RETRY_AFTER_SECS),
        )),
        Err(e) => match local {
            Some(_) => Elsewhere::Local,
            None => Elsewhere::Answer(unavailable(
                "cluster_unavailable",
                &e.to_string(),
                Some(NO_OWNER_RETRY_AFTER_SECS),
            )),
        },
    }
}

/// 307 to `<base>/v1/workloads/<name>/token` (a workload name needs no escaping:
/// `[A-Za-z0-9._-]`).
fn redirect(base: &str, name: &WorkloadName) -> Response {
    let location = format!("{}/v1/workloads/{name}/token", base.trim_end_matches('/'));
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, value);
            (
                StatusCode::TEMPORARY_REDIRECT,
                headers,
                axum::Json(json!({ "owner_url": location })),
            )
                .into_response()
        }
        Err(_) => unavailable(
            "owner_unreachable",
            &format!("the owner of workload {name} published an admin URL that is not a URL"),
            Some(NO_OWNER_RETRY_AFTER_SECS),
        ),
    }
}

/// 503 `{"error", "reason"}` (and `Retry-After` when given).
fn unavailable(reason: &str, message: &str, retry_after: Option<u64>) -> Response {
    let message = tokenvisor_core::classify::excerpt(message.as_bytes());
    let mut headers = HeaderMap::new();
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        headers,
        axum::Json(json!({ "error": message, "reason": reason, "retry_after_secs": retry_after })),
    )
        .into_response()
}

/// The `cluster` object of `/healthz`.
pub(crate) fn health_json(h: &ClusterHealth) -> Value {
    let (lease, until) = match h.lease {
        LeaseHealth::Confirmed { until } => ("confirmed", Some(until)),
        LeaseHealth::Unconfirmed => ("unconfirmed", None),
        LeaseHealth::Lost => ("lost", None),
    };
    json!({
        "member": h.member,
        "lease": lease,
        "lease_confirmed_until": until,
        "lease_ttl_secs": h.lease_ttl.as_secs(),
        "etcd": if h.etcd_connected { "connected" } else { "disconnected" },
        "shards_owned": h.shards_owned,
    })
}

/// Copies the view's counters into the cluster series, just before a rendering.
pub(crate) fn update_metrics(c: &ClusterCounters, h: &ClusterHealth) {
    use tokenvisor::{
        METRIC_CLUSTER_CONFLICTS, METRIC_CLUSTER_ETCD_CONNECTED, METRIC_CLUSTER_FENCE_REJECTIONS,
        METRIC_CLUSTER_HANDOVERS, METRIC_CLUSTER_SHARDS_OWNED, METRIC_CLUSTER_WRITES,
    };
    metrics::gauge!(METRIC_CLUSTER_SHARDS_OWNED).set(c.shards_owned as f64);
    metrics::counter!(METRIC_CLUSTER_HANDOVERS, "direction" => "acquired").absolute(c.acquired);
    metrics::counter!(METRIC_CLUSTER_HANDOVERS, "direction" => "released").absolute(c.released);
    metrics::counter!(METRIC_CLUSTER_FENCE_REJECTIONS).absolute(c.fence_rejections);
    metrics::counter!(METRIC_CLUSTER_WRITES).absolute(c.writes);
    metrics::counter!(METRIC_CLUSTER_CONFLICTS).absolute(c.conflicts);
    metrics::gauge!(METRIC_CLUSTER_ETCD_CONNECTED).set(if h.etcd_connected { 1.0 } else { 0.0 });
}
