//! The cluster view's seam: what an instance in cluster mode can tell about the whole
//! cluster (every workload with its owner, the members and where their admin APIs are, this
//! instance's lease and counters), as plain data behind the [`ClusterView`] trait.
//!
//! The trait is always compiled and names no etcd type, so the admin API
//! (`tokenvisor-admin`), which must not link an etcd client, serves the cluster through it;
//! the runtime's etcd implementation (`EtcdView`, feature `cluster`) reads the key space
//! under the cluster's prefix. Tests of the admin routes implement it with fixed data.
//!
//! Every answer is data; the one error, [`ClusterViewError`], says that etcd could not be
//! read (its message never holds a value read).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokenvisor_core::cluster::ShardId;
use tokenvisor_core::{StatusRecord, Timestamp, WorkloadName};

/// A boxed, sendable future: the trait's methods return one (it stays object-safe).
pub type ViewFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A member of the cluster, as it published itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    /// Its member id.
    pub id: String,
    /// The base URL of its admin API (`http://127.0.0.1:PORT`), if it published one.
    pub admin: Option<String>,
}

/// One workload as the cluster knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterWorkload {
    /// Its name.
    pub name: WorkloadName,
    /// Its shard.
    pub shard: ShardId,
    /// The member id holding its shard (`None`: no live member holds it now, a handover
    /// is under way or every member is gone).
    pub owner: Option<String>,
    /// The status record its owner last wrote to etcd (`None`: none yet).
    pub record: Option<StatusRecord>,
}

/// Every workload of the cluster with its owner, read at one etcd revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterSnapshot {
    /// This instance's member id.
    pub member: String,
    /// The live members (sorted by id).
    pub members: Vec<ClusterMember>,
    /// Every workload: the names asked for and every one with a record in etcd (sorted).
    pub workloads: Vec<ClusterWorkload>,
    /// Whether the listing stopped at its bound (more status records exist than were read).
    pub truncated: bool,
}

/// Who owns a workload, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This instance holds its shard.
    Me,
    /// Another live member holds it.
    Other(ClusterMember),
    /// No live member holds its shard (a handover is under way, or no member is live).
    Nobody {
        /// The shard.
        shard: ShardId,
    },
}

/// This instance's member lease, as last confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseHealth {
    /// Confirmed by a keepalive answer; `until` is the confirmed end.
    Confirmed {
        /// The lease's end as last confirmed (`tokenvisor_core::cluster::lease_confirmed_until`).
        until: Timestamp,
    },
    /// Granted, not confirmed by a keepalive answer yet.
    Unconfirmed,
    /// etcd said it is gone (expired or revoked): this instance owns nothing.
    Lost,
}

/// The cluster side of `/healthz`: read without awaiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    /// This instance's member id.
    pub member: String,
    /// The lease.
    pub lease: LeaseHealth,
    /// The lease's TTL.
    pub lease_ttl: Duration,
    /// Whether etcd answers: the lease was renewed within the last half TTL (keepalives go
    /// every third of it), so a missed renewal or two show here before the lease is in
    /// danger.
    pub etcd_connected: bool,
    /// Shards this instance holds.
    pub shards_owned: usize,
}

/// The cluster's counters for `/metrics` (no workload label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterCounters {
    /// Shards held now.
    pub shards_owned: u64,
    /// Shards acquired (claimed) since start.
    pub acquired: u64,
    /// Shards released since start.
    pub released: u64,
    /// Writes refused by the fence.
    pub fence_rejections: u64,
    /// Fenced writes done.
    pub writes: u64,
    /// Credential writes refused by the revision check.
    pub conflicts: u64,
}

/// etcd could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterViewError {
    /// etcd did not answer or refused (the detail never holds a value read).
    #[error("the cluster cannot be read from etcd: {0}")]
    Unavailable(String),
}

/// What an instance in cluster mode tells about the cluster. Implemented by the runtime's
/// etcd view (feature `cluster`); the admin API serves `GET /v1/workloads` (owners), the
/// token route on any instance, `/healthz` and `/metrics` through it.
pub trait ClusterView: Send + Sync + 'static {
    /// Every workload with its owner: the `names` this instance knows (its configuration:
    /// every instance reads the same list) and every workload with a record in etcd.
    fn snapshot<'a>(
        &'a self,
        names: &'a [WorkloadName],
    ) -> ViewFuture<'a, Result<ClusterSnapshot, ClusterViewError>>;

    /// Who owns `name` now.
    fn owner_of<'a>(
        &'a self,
        name: &'a WorkloadName,
    ) -> ViewFuture<'a, Result<Owner, ClusterViewError>>;

    /// This instance's lease and connection (without awaiting).
    fn health(&self) -> ClusterHealth;

    /// The counters (without awaiting).
    fn counters(&self) -> ClusterCounters;
}
