//! The seam between the runtime's cluster wiring ([`super::ClusterLink`]) and the store it
//! coordinates through: [`Coordination`], the four calls an attempt and the status mirror
//! make (read a credential, write it fenced, write a status record fenced, the send rule).
//! [`super::ClusterStore`] implements it on etcd, and it is the only implementation a
//! production build uses: the link calls the store through the trait, nothing else
//! changes.
//!
//! With the `test-util` feature a test can hand the link another implementation
//! (`ClusterSettings::with_coordination`): the link then connects to no etcd, and
//! the test plays the coordinator itself (`ClusterLink::coordinator_owned` and
//! `ClusterLink::coordinator_drain`, what a coordinator step calls), so the
//! supervisor's parking, starting and draining of shards run on tokio's paused clock with
//! the in-memory transport (the runtime's `cluster_parking` tests).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokenvisor_core::StatusRecord;
use tokenvisor_core::cluster::ShardId;

use super::{ClusterError, ClusterStore, StoredCredential, Versioned, WriteOutcome};

/// The future of a [`Coordination`] call.
pub type CoordinationFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, ClusterError>> + Send + 'a>>;

/// What the link asks of the store around an attempt and for the status mirror (module
/// docs). The answers mean what [`ClusterStore`]'s do: a refusal is a [`WriteOutcome`],
/// never an error.
pub trait Coordination: Send + Sync {
    /// The credential of `name` with its revision ([`ClusterStore::read_credential`]).
    fn read_credential<'a>(
        &'a self,
        name: &'a str,
    ) -> CoordinationFuture<'a, Versioned<StoredCredential>>;

    /// The fenced, revision-checked write of a credential
    /// ([`ClusterStore::write_credential`], without a status record).
    fn write_credential<'a>(
        &'a self,
        shard: ShardId,
        name: &'a str,
        credential: &'a StoredCredential,
        expected: i64,
    ) -> CoordinationFuture<'a, WriteOutcome>;

    /// The fenced write of a status record ([`ClusterStore::write_status`]).
    fn write_status<'a>(
        &'a self,
        shard: ShardId,
        name: &'a str,
        record: &'a StatusRecord,
    ) -> CoordinationFuture<'a, WriteOutcome>;

    /// The send rule: the lease is confirmed for `backstop` from now
    /// ([`ClusterStore::may_send`]).
    fn may_send(&self, backstop: Duration) -> bool;
}

impl Coordination for ClusterStore {
    fn read_credential<'a>(
        &'a self,
        name: &'a str,
    ) -> CoordinationFuture<'a, Versioned<StoredCredential>> {
        Box::pin(ClusterStore::read_credential(self, name))
    }

    fn write_credential<'a>(
        &'a self,
        shard: ShardId,
        name: &'a str,
        credential: &'a StoredCredential,
        expected: i64,
    ) -> CoordinationFuture<'a, WriteOutcome> {
        Box::pin(ClusterStore::write_credential(
            self, shard, name, credential, expected, None,
        ))
    }

    fn write_status<'a>(
        &'a self,
        shard: ShardId,
        name: &'a str,
        record: &'a StatusRecord,
    ) -> CoordinationFuture<'a, WriteOutcome> {
        Box::pin(ClusterStore::write_status(self, shard, name, record))
    }

    fn may_send(&self, backstop: Duration) -> bool {
        ClusterStore::may_send(self, backstop)
    }
}
