//! Cluster mode of the admin routes with a fake [`ClusterView`] (no etcd): owners in the
//! listing, the token route's redirect and 503s, `/healthz` and `/metrics`; and that
//! nothing changes without a view.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use serde_json::Value;
use tokenvisor::testing::FakeReply;
use tokenvisor::{
    ClusterCounters, ClusterHealth, ClusterMember, ClusterSnapshot, ClusterView, ClusterViewError,
    ClusterWorkload, LeaseHealth, Owner, ViewFuture,
};
use tokenvisor_core::cluster::shard_of;
use tokenvisor_core::{StatusRecord, Timestamp, WorkloadName, WorkloadStatus};

use super::{ADMIN, fixture, fixture_with, rt_spec, wn};

const SHARDS: NonZeroU32 = NonZeroU32::new(256).unwrap();
const ME: &str = "member-a";
const OTHER: &str = "member-b";
const OTHER_ADMIN: &str = "http://127.0.0.1:7979";

/// A cluster of fixed data: who owns which workload, the records in "etcd", members.
struct FakeView {
    owners: BTreeMap<String, Option<&'static str>>,
    records: BTreeMap<String, StatusRecord>,
    members: Vec<ClusterMember>,
    broken: bool,
    truncated: bool,
}

fn record(status: &str, context: &str) -> StatusRecord {
    serde_json::from_value(serde_json::json!({
        "status": status,
        "status_context": context,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "process_id": 0,
    }))
    .unwrap()
}

impl FakeView {
    fn new() -> Self {
        FakeView {
            owners: BTreeMap::new(),
            records: BTreeMap::new(),
            members: vec![
                ClusterMember {
                    id: ME.to_owned(),
                    admin: Some("http://127.0.0.1:7878".to_owned()),
                },
                ClusterMember {
                    id: OTHER.to_owned(),
                    admin: Some(OTHER_ADMIN.to_owned()),
                },
            ],
            broken: false,
            truncated: false,
        }
    }

    fn owned(mut self, name: &str, owner: Option<&'static str>) -> Self {
        self.owners.insert(name.to_owned(), owner);
        self
    }

    fn with_record(mut self, name: &str, r: StatusRecord) -> Self {
        self.records.insert(name.to_owned(), r);
        self
    }

    fn error() -> ClusterViewError {
        ClusterViewError::Unavailable("etcd get failed: connection refused".to_owned())
    }
}

impl ClusterView for FakeView {
    fn snapshot<'a>(
        &'a self,
        names: &'a [WorkloadName],
    ) -> ViewFuture<'a, Result<ClusterSnapshot, ClusterViewError>> {
        Box::pin(async move {
            if self.broken {
                return Err(Self::error());
            }
            let mut all: Vec<WorkloadName> = names.to_vec();
            all.extend(self.records.keys().map(|n| wn(n)));
            all.sort();
            all.dedup();
            let workloads = all
                .into_iter()
                .map(|name| ClusterWorkload {
                    shard: shard_of(name.as_str(), SHARDS),
                    owner: self
                        .owners
                        .get(name.as_str())
                        .copied()
                        .flatten()
                        .map(str::to_owned),
                    record: self.records.get(name.as_str()).cloned(),
                    name,
                })
                .collect();
            Ok(ClusterSnapshot {
                member: ME.to_owned(),
                members: self.members.clone(),
                workloads,
                truncated: self.truncated,
            })
        })
    }

    fn owner_of<'a>(
        &'a self,
        name: &'a WorkloadName,
    ) -> ViewFuture<'a, Result<Owner, ClusterViewError>> {
        Box::pin(async move {
            if self.broken {
                return Err(Self::error());
            }
            Ok(match self.owners.get(name.as_str()).copied().flatten() {
                Some(ME) => Owner::Me,
                Some(id) => {
                    Owner::Other(self.members.iter().find(|m| m.id == id).cloned().unwrap_or(
                        ClusterMember {
                            id: id.to_owned(),
                            admin: None,
                        },
                    ))
                }
                None => Owner::Nobody {
                    shard: shard_of(name.as_str(), SHARDS),
                },
            })
        })
    }

    fn health(&self) -> ClusterHealth {
        ClusterHealth {
            member: ME.to_owned(),
            lease: LeaseHealth::Confirmed {
                until: Timestamp::parse_rfc3339("2026-01-01T00:00:15Z").unwrap(),
            },
            lease_ttl: Duration::from_secs(15),
            etcd_connected: true,
            shards_owned: 3,
        }
    }

    fn counters(&self) -> ClusterCounters {
        ClusterCounters {
            shards_owned: 3,
            acquired: 5,
            released: 2,
            fence_rejections: 7,
            writes: 11,
            conflicts: 1,
        }
    }
}

fn by_name(v: &Value) -> BTreeMap<String, Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_owned(), w.clone()))
        .collect()
}

#[tokio::test]
async fn the_listing_shows_every_workload_of_the_cluster_with_its_owner() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    f.add(rt_spec("beta")).await;
    f.wait_status("alpha", WorkloadStatus::Running).await;

    // Single-process: the output has no owner field (unchanged).
    let single = f.call(Method::GET, "/v1/workloads", None).await;
    assert_eq!(single.status, StatusCode::OK);
    for w in single.json().as_array().unwrap() {
        assert!(
            w.get("owner").is_none(),
            "owner in single-process mode: {w}"
        );
        assert!(
            w.get("shard").is_none(),
            "shard in single-process mode: {w}"
        );
    }

    let view = FakeView::new()
        .owned("alpha", Some(ME))
        .owned("beta", Some(OTHER))
        .with_record("beta", record("auth_retrying", "the owner's record"))
        .with_record("gamma", record("unauthenticated", "only in etcd"));
    assert!(f.state.set_cluster_view(Arc::new(view)));
    assert!(
        !f.state.set_cluster_view(Arc::new(FakeView::new())),
        "a view is set once"
    );

    let a = f.call(Method::GET, "/v1/workloads", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    a.assert_no_secret("cluster list");
    let all = by_name(&a.json());
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        ["alpha", "beta", "gamma"],
        "this instance's workloads and every one in etcd, sorted"
    );
    let alpha = &all["alpha"];
    assert_eq!(alpha["owner"], ME);
    assert_eq!(alpha["status"], "running", "ours: our own record");
    assert_eq!(alpha["grant"], "refresh_token");
    assert_eq!(alpha["shard"], shard_of("alpha", SHARDS));
    let beta = &all["beta"];
    assert_eq!(beta["owner"], OTHER);
    assert_eq!(
        beta["status"], "auth_retrying",
        "another's: the record in etcd"
    );
    assert_eq!(beta["status_context"], "the owner's record");
    assert_eq!(beta["token_url"], "https://idp.example.test/oauth/token");
    let gamma = &all["gamma"];
    assert_eq!(gamma["owner"], Value::Null, "no member holds its shard");
    assert_eq!(gamma["status"], "unauthenticated");
    assert_eq!(
        gamma["token_url"], "",
        "not in this instance's configuration"
    );

    let a = f
        .call(Method::GET, "/v1/workloads?status=auth_retrying", None)
        .await;
    assert_eq!(by_name(&a.json()).keys().collect::<Vec<_>>(), ["beta"]);
    f.shutdown().await;
}

#[tokio::test]
async fn the_token_route_serves_here_redirects_to_the_owner_or_says_why_not() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    f.fake
        .push("revoked", [FakeReply::oauth_error(400, "invalid_grant")]);
    f.add(rt_spec("revoked")).await;
    f.wait_status("alpha", WorkloadStatus::Running).await;
    f.wait_status("revoked", WorkloadStatus::Unauthenticated)
        .await;
    let view = FakeView::new()
        // A valid token held here is served whoever owns the shard now.
        .owned("alpha", Some(OTHER))
        .owned("revoked", Some(ME))
        .owned("remote", Some(OTHER))
        .owned("silent", Some("member-c"))
        .owned("orphan", None)
        .owned("unknown", Some(ME));
    assert!(f.state.set_cluster_view(Arc::new(view)));

    let a = f.call(Method::GET, "/v1/workloads/alpha/token", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.json()["access_token"].is_string());

    let a = f
        .call(Method::GET, "/v1/workloads/remote/token", None)
        .await;
    assert_eq!(a.status, StatusCode::TEMPORARY_REDIRECT, "{}", a.text());
    assert_eq!(
        a.header(header::LOCATION),
        Some("http://127.0.0.1:7979/v1/workloads/remote/token")
    );
    a.assert_no_secret("redirect");

    let a = f
        .call_as(None, Method::GET, "/v1/workloads/remote/token", None)
        .await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "auth before any redirect"
    );

    let a = f
        .call(Method::GET, "/v1/workloads/orphan/token", None)
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.json()["reason"], "no_owner");
    assert!(a.json()["error"].as_str().unwrap().contains("shard"));
    assert_eq!(a.header(header::RETRY_AFTER), Some("2"));

    let a = f
        .call(Method::GET, "/v1/workloads/silent/token", None)
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.json()["reason"], "owner_unreachable");

    // Ours and not serving: our own reason, no redirect to ourselves.
    let a = f
        .call(Method::GET, "/v1/workloads/revoked/token", None)
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.json()["reason"], "unauthenticated");

    let a = f
        .call(Method::GET, "/v1/workloads/unknown/token", None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    f.shutdown().await;
}

#[tokio::test]
async fn etcd_unreadable_is_a_503_with_the_reason_and_local_tokens_still_serve() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    f.wait_status("alpha", WorkloadStatus::Running).await;
    let mut view = FakeView::new();
    view.broken = true;
    assert!(f.state.set_cluster_view(Arc::new(view)));

    let a = f.call(Method::GET, "/v1/workloads", None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.json()["reason"], "cluster_unavailable");
    assert!(a.json()["error"].as_str().unwrap().contains("etcd"));

    let a = f.call(Method::GET, "/v1/workloads/alpha/token", None).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "an owner keeps serving while etcd is away"
    );
    let a = f
        .call(Method::GET, "/v1/workloads/remote/token", None)
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.json()["reason"], "cluster_unavailable");
    f.shutdown().await;
}

#[tokio::test]
async fn healthz_and_metrics_show_the_cluster_only_in_cluster_mode() {
    let handle = crate::install_metrics_recorder().unwrap();
    let f = fixture_with(Some(ADMIN), Some(handle)).await;
    f.add(rt_spec("alpha")).await;

    let h = f.call_as(None, Method::GET, "/healthz", None).await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(h.json().get("cluster").is_none(), "{}", h.text());
    let m = f.call(Method::GET, "/metrics", None).await;
    assert!(
        !m.text().contains("tokenvisor_cluster_"),
        "cluster series without cluster mode:\n{}",
        m.text()
    );

    assert!(f.state.set_cluster_view(Arc::new(FakeView::new())));
    let h = f.call_as(None, Method::GET, "/healthz", None).await;
    assert_eq!(h.status, StatusCode::OK);
    let c = &h.json()["cluster"];
    assert_eq!(c["member"], ME);
    assert_eq!(c["lease"], "confirmed");
    assert_eq!(c["lease_confirmed_until"], "2026-01-01T00:00:15.000Z");
    assert_eq!(c["lease_ttl_secs"], 15);
    assert_eq!(c["etcd"], "connected");
    assert_eq!(c["shards_owned"], 3);

    let m = f.call(Method::GET, "/metrics", None).await;
    let text = m.text();
    for line in [
        "tokenvisor_cluster_shards_owned 3",
        "tokenvisor_cluster_handovers_total{direction=\"acquired\"} 5",
        "tokenvisor_cluster_handovers_total{direction=\"released\"} 2",
        "tokenvisor_cluster_fence_rejections_total 7",
        "tokenvisor_cluster_writes_total 11",
        "tokenvisor_cluster_conflicts_total 1",
        "tokenvisor_cluster_etcd_connected 1",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(!text.contains("alpha"), "a workload name in /metrics");
    f.shutdown().await;
}

#[tokio::test]
async fn a_listing_cut_at_the_views_bound_says_so() {
    let f = fixture(Some(ADMIN)).await;
    let mut view = FakeView::new().with_record("gamma", record("running", ""));
    view.truncated = true;
    assert!(f.state.set_cluster_view(Arc::new(view)));
    let a = f.call(Method::GET, "/v1/workloads", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.headers.get("x-tokenvisor-truncated").unwrap(), "true");
    f.shutdown().await;
}
