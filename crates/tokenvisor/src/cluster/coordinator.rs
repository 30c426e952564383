//! Shard ownership, driven: one step ([`rebalance`]) reads who holds which shard, asks
//! `tokenvisor_core::cluster::plan_handover` what to do, and does it (releases idle shards
//! that are no longer ours, claims free shards that are; drains and waits are left as they
//! are); the coordinator task ([`spawn_coordinator`]) runs a step at every membership change
//! and every `lease_ttl / 3` (a lapsed owner's shard key disappears without a membership
//! event of ours to wake on) and publishes the shards owned.
//!
//! The runtime drives it through [`ShardHooks`] (`spawn_with_hooks`): before a step plans,
//! the shards leaving this instance are handed to [`ShardHooks::drain`], which stops new
//! attempts on them *and* counts the attempts still in flight under one lock, so no attempt
//! can start between the count and the release (a count taken first and a drain marked
//! later would let one slip through and send beside the new owner). After the step,
//! [`ShardHooks::owned`] hears the shards owned.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokenvisor_core::cluster::{Handover, ShardId, ShardView, desired_shards, plan_handover};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Claim, ClusterError, ClusterStore};

/// Attempts in flight per shard (absent: none), as the caller counts them.
pub type InFlight = Arc<dyn Fn() -> BTreeMap<ShardId, u32> + Send + Sync>;

/// What the coordinator tells the runtime, and asks it, at every step.
pub(crate) trait ShardHooks: Send + Sync {
    /// `leaving` (owned, no longer ours) take no new attempt from now on; returns the
    /// attempts still in flight per shard (absent: none). Called before every step's plan,
    /// with every shard leaving at that step (a shard no longer listed is ours again).
    fn drain(&self, leaving: &BTreeSet<ShardId>) -> BTreeMap<ShardId, u32>;
    /// The shards owned after a step (draining ones included); empty once the lease is lost.
    fn owned(&self, owned: &BTreeSet<ShardId>);
}

/// The hooks of [`spawn_coordinator`]: counts from a closure, nothing else.
struct Counting(InFlight);

impl ShardHooks for Counting {
    fn drain(&self, _leaving: &BTreeSet<ShardId>) -> BTreeMap<ShardId, u32> {
        (self.0)()
    }
    fn owned(&self, _owned: &BTreeSet<ShardId>) {}
}

/// One rebalancing step for the live `members` over `shards`: the shards owned afterwards
/// (draining ones included: they are released by a later step, once idle). Does nothing
/// while `members` does not list this instance (a view not yet loaded, or a lapsed
/// membership, whose keys etcd deletes anyway).
///
/// # Errors
/// [`ClusterError`] from etcd; the steps done before it stay done.
pub async fn rebalance(
    store: &ClusterStore,
    members: &[String],
    shards: NonZeroU32,
    in_flight: &BTreeMap<ShardId, u32>,
) -> Result<BTreeSet<ShardId>, ClusterError> {
    rebalance_with(store, members, shards, &|_: &BTreeSet<ShardId>| {
        in_flight.clone()
    })
    .await
}

/// [`rebalance`], the in-flight counts taken from `drain` with the shards leaving.
async fn rebalance_with(
    store: &ClusterStore,
    members: &[String],
    shards: NonZeroU32,
    drain: &(dyn Fn(&BTreeSet<ShardId>) -> BTreeMap<ShardId, u32> + Send + Sync),
) -> Result<BTreeSet<ShardId>, ClusterError> {
    let holders = store.shard_holders().await?;
    let (mine, others): (Vec<_>, Vec<_>) = holders.iter().partition(|(_, (_, ours))| *ours);
    let mut owned: BTreeSet<ShardId> = mine.into_iter().map(|(s, _)| *s).collect();
    if !members.iter().any(|m| m == store.member()) {
        drain(&BTreeSet::new());
        return Ok(owned);
    }
    let desired = desired_shards(store.member(), members, shards);
    let leaving: BTreeSet<ShardId> = owned.difference(&desired).copied().collect();
    let in_flight = drain(&leaving);
    let view = ShardView {
        owned: owned.clone(),
        desired,
        held_by_others: others.into_iter().map(|(s, _)| *s).collect(),
        in_flight,
    };
    for step in plan_handover(&view) {
        match step {
            Handover::Release(shard) => {
                store.release(shard).await?;
                owned.remove(&shard);
            }
            Handover::Acquire(shard) => {
                if store.claim(shard).await? == Claim::Claimed {
                    owned.insert(shard);
                }
            }
            Handover::Drain { .. } | Handover::AwaitRelease(_) => {}
        }
    }
    Ok(owned)
}

/// Runs [`rebalance`] at every membership change and every `interval`, publishing the shards
/// owned, until the lease is lost or every receiver is gone.
pub fn spawn_coordinator(
    store: Arc<ClusterStore>,
    shards: NonZeroU32,
    interval: Duration,
    in_flight: InFlight,
) -> (watch::Receiver<BTreeSet<ShardId>>, JoinHandle<()>) {
    spawn_with_hooks(store, shards, interval, Arc::new(Counting(in_flight)))
}

/// [`spawn_coordinator`] telling `hooks` of every drain and every step's result (the
/// runtime's wiring). The task also ends, publishing nothing owned, when the lease is lost.
pub(crate) fn spawn_with_hooks(
    store: Arc<ClusterStore>,
    shards: NonZeroU32,
    interval: Duration,
    hooks: Arc<dyn ShardHooks>,
) -> (watch::Receiver<BTreeSet<ShardId>>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(BTreeSet::new());
    let task = tokio::spawn(async move {
        let mut members = store.watch_members();
        let lost = |tx: &watch::Sender<BTreeSet<ShardId>>| {
            hooks.owned(&BTreeSet::new());
            tx.send_replace(BTreeSet::new());
        };
        loop {
            if store.lease().lost {
                lost(&tx);
                return;
            }
            let view = members.borrow_and_update().clone();
            match rebalance_with(&store, &view, shards, &|leaving| hooks.drain(leaving)).await {
                Ok(owned) => {
                    hooks.owned(&owned);
                    tx.send_if_modified(|o| std::mem::replace(o, owned.clone()) != owned);
                }
                Err(ClusterError::LeaseLost) => {
                    lost(&tx);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cluster rebalance failed; retrying"),
            }
            tokio::select! {
                changed = members.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(interval) => {}
                () = tx.closed() => return,
            }
        }
    });
    (rx, task)
}
