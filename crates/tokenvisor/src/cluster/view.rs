//! The cluster view on etcd ([`EtcdView`]): every workload's status record and owner, the
//! members and their admin URLs, read from the key space under the prefix, for the admin
//! API (`GET /v1/workloads` with owners, the token route on any instance, `/healthz`,
//! `/metrics`) through the etcd-free [`ClusterView`] trait.
//!
//! - **Reads** are range reads, paged ([`PAGE`] keys a request) and bounded
//!   ([`MAX_RECORDS`] status records, then the snapshot says `truncated`). Every page of one
//!   snapshot is read at the revision of the first, so members, shard holders and records
//!   are one consistent picture of the cluster.
//! - **Owners** are the shard keys' holders (`shards/<n>` holds the owner's member id, bound
//!   to its lease: a key exists only while its holder's lease lives). A workload's shard is
//!   `tokenvisor_core::cluster::shard_of(name, shards)`, the rule the coordinator uses.
//!   [`Owner::Me`] is decided by the key's lease, not its value: a key naming our member
//!   id under another lease is our previous run's.
//! - **Members** publish where their admin API is: the member key's value is
//!   `{"id", "admin"}` (JSON) once [`ClusterStore::publish_admin`] ran; a bare id (a
//!   member that did not publish) reads as a member without an admin URL.
//! - **Health and counters** are read without awaiting: the lease from the keepalive's
//!   channel, the shards owned from the coordinator's, the counters from the store (the
//!   runtime link's: summed over every store it used, so a lost lease resets nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokenvisor_core::cluster::{ShardId, shard_of};
use tokenvisor_core::{StatusRecord, WorkloadName};
use tokio::sync::watch;

use super::store::Page;
use super::{ClusterError, ClusterStore};
use crate::cluster_view::{
    ClusterCounters, ClusterHealth, ClusterMember, ClusterSnapshot, ClusterView, ClusterViewError,
    ClusterWorkload, LeaseHealth, Owner, ViewFuture,
};

/// Keys read per range request.
pub const PAGE: i64 = 500;

/// The most status records one snapshot reads (then it is `truncated`).
pub const MAX_RECORDS: usize = 250_000;

/// The most members or shard keys one snapshot reads (far above any real cluster: a shard
/// count is at most 65,536).
const MAX_KEYS: usize = 100_000;

/// Where a view finds its store: one store (tests, an embedder's own), or the runtime's
/// link, whose store is replaced when it connects again with a new lease.
enum Source {
    Fixed(Arc<ClusterStore>),
    Link(Arc<super::ClusterLink>),
}

/// The cluster view of one instance, on its store.
pub struct EtcdView {
    source: Source,
    member: String,
    shards: NonZeroU32,
    lease_ttl: Duration,
    owned: watch::Receiver<BTreeSet<ShardId>>,
    /// Status records per snapshot (a test lowers it to see the bound).
    max_records: usize,
}

impl std::fmt::Debug for EtcdView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdView")
            .field("member", &self.member)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

/// A member key's value: `{"id", "admin"}`, or the bare id of a member that published no
/// admin URL (the key names the member either way).
fn member_of(key: &str, value: &[u8]) -> ClusterMember {
    let admin = serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| v.get("admin")?.as_str().map(str::to_owned));
    ClusterMember {
        id: key.to_owned(),
        admin,
    }
}

fn unavailable(e: &ClusterError) -> ClusterViewError {
    ClusterViewError::Unavailable(e.to_string())
}

impl EtcdView {
    /// The view of `store`'s cluster of `shards` shards, its lease of `lease_ttl`; `owned`
    /// is the coordinator's published set of shards held (`spawn_coordinator`).
    pub fn new(
        store: Arc<ClusterStore>,
        shards: NonZeroU32,
        lease_ttl: Duration,
        owned: watch::Receiver<BTreeSet<ShardId>>,
    ) -> Self {
        EtcdView {
            member: store.member().to_owned(),
            source: Source::Fixed(store),
            shards,
            lease_ttl,
            owned,
            max_records: MAX_RECORDS,
        }
    }

    /// The view of the runtime's `link` (its store as it is now, its active shards).
    pub(crate) fn of_link(link: &Arc<super::ClusterLink>) -> Self {
        EtcdView {
            member: link.member().to_owned(),
            shards: link.settings().shards,
            lease_ttl: link.settings().options.lease_ttl,
            owned: link.active(),
            source: Source::Link(link.clone()),
            max_records: MAX_RECORDS,
        }
    }

    /// The store in use; an error while the link is (re)connecting.
    fn store(&self) -> Result<Arc<ClusterStore>, ClusterError> {
        match &self.source {
            Source::Fixed(store) => Ok(store.clone()),
            Source::Link(link) => link.store().ok_or_else(|| ClusterError::Etcd {
                op: "connect",
                detail: "connecting to etcd (no lease yet)".to_owned(),
            }),
        }
    }

    /// The same view, reading at most `max` status records a snapshot (tests of the bound).
    #[must_use]
    pub fn with_max_records(mut self, max: usize) -> Self {
        self.max_records = max.max(1);
        self
    }

    /// Every key under `dir` at `revision` (0: the newest), paged; at most `max`, and
    /// whether more were left. Returns the revision read at.
    async fn read_dir(
        &self,
        store: &ClusterStore,
        dir: &str,
        revision: i64,
        max: usize,
    ) -> Result<(Vec<(String, Vec<u8>, i64)>, bool, i64), ClusterError> {
        let mut all = Vec::new();
        let mut revision = revision;
        let mut after: Option<String> = None;
        loop {
            let room = i64::try_from(max - all.len()).unwrap_or(i64::MAX).min(PAGE);
            let Page {
                entries,
                more,
                revision: read_at,
            } = store
                .range_page(dir, after.as_deref(), revision, room)
                .await?;
            revision = read_at;
            after = entries.last().map(|(k, _, _)| k.clone());
            all.extend(entries);
            if !more || after.is_none() {
                return Ok((all, false, revision));
            }
            if all.len() >= max {
                return Ok((all, true, revision));
            }
        }
    }

    async fn read_snapshot(&self, names: &[WorkloadName]) -> Result<ClusterSnapshot, ClusterError> {
        let store = self.store()?;
        let (records, truncated, revision) =
            (self.read_dir(&store, "status/", 0, self.max_records)).await?;
        let (members, _, _) = self
            .read_dir(&store, "members/", revision, MAX_KEYS)
            .await?;
        let (holders, _, _) = self.read_dir(&store, "shards/", revision, MAX_KEYS).await?;
        let holders: BTreeMap<ShardId, String> = holders
            .into_iter()
            .filter_map(|(key, value, _)| Some((key.parse().ok()?, String::from_utf8(value).ok()?)))
            .collect();
        let mut all: BTreeMap<WorkloadName, Option<StatusRecord>> =
            names.iter().map(|n| (n.clone(), None)).collect();
        for (key, value, _) in records {
            let Ok(name) = WorkloadName::new(&key) else {
                continue;
            };
            let record = serde_json::from_slice::<StatusRecord>(&value).ok();
            if record.is_none() {
                tracing::warn!(workload = %name, "cluster view: a status record in etcd does not parse; shown without it");
            }
            all.insert(name, record);
        }
        let workloads = all
            .into_iter()
            .map(|(name, record)| {
                let shard = shard_of(name.as_str(), self.shards);
                ClusterWorkload {
                    owner: holders.get(&shard).cloned(),
                    shard,
                    name,
                    record,
                }
            })
            .collect();
        Ok(ClusterSnapshot {
            member: self.member.clone(),
            members: members
                .iter()
                .map(|(key, value, _)| member_of(key, value))
                .collect(),
            workloads,
            truncated,
        })
    }

    async fn read_owner(&self, name: &WorkloadName) -> Result<Owner, ClusterError> {
        let shard = shard_of(name.as_str(), self.shards);
        let store = self.store()?;
        let Some((holder, lease)) = store.get_value("shards/", &format!("{shard:05}")).await?
        else {
            return Ok(Owner::Nobody { shard });
        };
        if lease == store.lease_id() {
            return Ok(Owner::Me);
        }
        let id = String::from_utf8_lossy(&holder).into_owned();
        let member = match store.get_value("members/", &id).await? {
            Some((value, _)) => member_of(&id, &value),
            None => ClusterMember { id, admin: None },
        };
        Ok(Owner::Other(member))
    }
}

impl ClusterView for EtcdView {
    fn snapshot<'a>(
        &'a self,
        names: &'a [WorkloadName],
    ) -> ViewFuture<'a, Result<ClusterSnapshot, ClusterViewError>> {
        Box::pin(async move { self.read_snapshot(names).await.map_err(|e| unavailable(&e)) })
    }

    fn owner_of<'a>(
        &'a self,
        name: &'a WorkloadName,
    ) -> ViewFuture<'a, Result<Owner, ClusterViewError>> {
        Box::pin(async move { self.read_owner(name).await.map_err(|e| unavailable(&e)) })
    }

    fn health(&self) -> ClusterHealth {
        let (lease, etcd_connected) = match self.store() {
            Ok(store) => {
                let (state, now) = (store.lease(), store.clock().now());
                let lease = match (state.lost, state.confirmed_until) {
                    (true, _) => LeaseHealth::Lost,
                    (false, None) => LeaseHealth::Unconfirmed,
                    (false, Some(until)) => LeaseHealth::Confirmed { until },
                };
                let connected = match lease {
                    LeaseHealth::Confirmed { until } => until > now.plus(self.lease_ttl / 2),
                    LeaseHealth::Unconfirmed | LeaseHealth::Lost => false,
                };
                (lease, connected)
            }
            Err(_) => (LeaseHealth::Unconfirmed, false),
        };
        ClusterHealth {
            member: self.member.clone(),
            lease,
            lease_ttl: self.lease_ttl,
            etcd_connected,
            shards_owned: self.owned.borrow().len(),
        }
    }

    fn counters(&self) -> ClusterCounters {
        // The link's counters are cumulative over its stores (a lease lost replaces it).
        let stats = match &self.source {
            Source::Fixed(store) => store.stats(),
            Source::Link(link) => link.store_stats(),
        };
        ClusterCounters {
            shards_owned: self.owned.borrow().len() as u64,
            acquired: stats.claims,
            released: stats.releases,
            fence_rejections: stats.fence_rejections,
            writes: stats.writes,
            conflicts: stats.conflicts,
        }
    }
}

/// Connects the view of a running instance: publishes `admin_url` (the admin router's base,
/// `http://127.0.0.1:PORT`) in the member key, then returns the view to hand to the admin
/// API (`tokenvisor_admin::AdminState::set_cluster_view`).
///
/// # Errors
/// [`ClusterError`] from the publication (the lease lost, etcd unavailable).
pub async fn cluster_view(
    store: Arc<ClusterStore>,
    shards: NonZeroU32,
    lease_ttl: Duration,
    owned: watch::Receiver<BTreeSet<ShardId>>,
    admin_url: Option<&str>,
) -> Result<Arc<dyn ClusterView>, ClusterError> {
    if let Some(url) = admin_url {
        store.publish_admin(url).await?;
    }
    Ok(Arc::new(EtcdView::new(store, shards, lease_ttl, owned)))
}
