//! Cluster mode on etcd, the runtime side: the fenced store (`store`), the member lease and
//! its keepalive (`lease`), the membership watch (`members`), shard ownership driven by
//! the handover plan (`coordinator`), and the cluster view for the admin API and
//! `tokenvisor status --cluster` (`view`: every workload with its owner, members' admin
//! URLs). The rules (a name's
//! shard, a shard's owner, the handover plan, the send rule) are pure and live in
//! `tokenvisor_core::cluster`; this module does the I/O and nothing else decides.
//!
//! ## Key space (under `[cluster] prefix`, default `tokenvisor/`)
//! | key | value | bound to a lease |
//! | --- | --- | --- |
//! | `members/<member>` | the member id; `{"id", "admin"}` (JSON) once it published its admin URL (`view`) | yes: the member's lease |
//! | `shards/<shard, 5 digits>` | the owner's member id | yes: the owner's (member) lease |
//! | `credentials/<workload>` | `{"refresh_token", "generation"}` (JSON) | no |
//! | `status/<workload>` | the status record (JSON, the status file's format) | no |
//!
//! One lease per instance holds its membership and every shard it owns, so a paused or
//! dead instance loses all of them at once, at one expiry.
//!
//! ## The fence
//! Every write of a workload's credential or status is one etcd transaction whose guard
//! compares the shard key's lease with ours (`Compare::lease(shard key) == my lease`; a
//! missing key compares as lease 0 and fails). An instance that lost its shard, because
//! its lease expired while it was paused, partitioned or slow, or because it released it,
//! can write nothing: the transaction is refused and the answer is data,
//! [`WriteOutcome::FenceRejected`] (counted in [`ClusterStats::fence_rejections`]), never an
//! error string. A credential write also compares the credential key's `mod_revision` with
//! the revision the writer read (optimistic concurrency: 0 for "absent"), so a writer that
//! missed someone else's rotation gets [`WriteOutcome::Conflict`] with the current revision
//! and must read again.
//!
//! ## Never block an actor
//! Everything here is `async` and talks to etcd; a caller inside an actor handler spawns
//! the call and sends the result back as a message. The keepalive and the membership watch
//! are tasks of their own, published through `tokio::sync::watch` (read without awaiting).
//!
//! The seam (`seam`): [`Coordination`], the calls the wiring makes on the store around an
//! attempt and for the status mirror; [`ClusterStore`] implements it, a test may substitute
//! its own (feature `test-util`) to run the supervisor's shard handling without etcd.
//!
//! The runtime's wiring (`link`): which workloads run here (the active shards), the send
//! rule and the credential kept in step with etcd around every attempt, status records
//! mirrored, reconnection after a lost lease (see `docs/ARCHITECTURE.md`, "Cluster mode").

mod coordinator;
mod lease;
mod link;
mod members;
mod seam;
mod store;
mod view;

pub use coordinator::{InFlight, rebalance, spawn_coordinator};
pub use lease::LeaseState;
pub(crate) use link::SendGuard;
pub use link::{ClusterLink, ClusterSettings, LinkStats};
pub use seam::{Coordination, CoordinationFuture};
pub use store::{
    Claim, ClusterOptions, ClusterStats, ClusterStore, Release, StoredCredential, Versioned,
    WriteOutcome, default_member,
};
pub use view::{EtcdView, MAX_RECORDS as VIEW_MAX_RECORDS, PAGE as VIEW_PAGE, cluster_view};

/// What can go wrong talking to etcd. Expected outcomes (a shard held by another member, a
/// fence rejection, a revision conflict) are not errors: they are [`Claim`], [`Release`]
/// and [`WriteOutcome`] values. No variant carries a value read or written.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A TLS or password file could not be read.
    #[error("cannot read {what} {path}: {kind}")]
    File {
        /// Which file (`ca_file`, `cert_file`, `key_file`).
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        kind: std::io::ErrorKind,
    },
    /// etcd did not answer, or refused the operation (unavailable, timeout, auth).
    #[error("etcd {op} failed: {detail}")]
    Etcd {
        /// The operation (`connect`, `grant`, `txn`, `get`, …).
        op: &'static str,
        /// etcd's or the transport's message (it never contains a key's value).
        detail: String,
    },
    /// Another live instance registered the same member id.
    #[error(
        "member id {0:?} is already registered by a live instance; give each instance its own [cluster] member"
    )]
    DuplicateMember(String),
    /// A stored value is not what this version writes.
    #[error("etcd key {key} holds a value this version cannot read ({why})")]
    Decode {
        /// The key (under the prefix).
        key: String,
        /// What was wrong (never the value).
        why: &'static str,
    },
    /// The lease expired or was revoked: this store owns nothing and writes nothing; a new
    /// one must be connected.
    #[error("the member lease was lost (expired or revoked); reconnect to rejoin")]
    LeaseLost,
}

impl ClusterError {
    pub(crate) fn etcd(op: &'static str, e: &etcd_client::Error) -> Self {
        ClusterError::Etcd {
            op,
            detail: e.to_string(),
        }
    }
}
