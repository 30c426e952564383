//! Shard ownership, driven: one step ([`rebalance`]) reads who holds which shard, asks
//! `tokenvisor_core::cluster::plan_handover` what to do, and does it (releases idle shards
//! that are no longer ours, claims free shards that are; drains and waits are left as they
//! are); the coordinator task ([`spawn_coordinator`]) runs a step at every membership change
//! and every `lease_ttl / 3` (a lapsed owner's shard key disappears without a membership
//! event of ours to wake on) and publishes the shards owned.
//!
//! Not yet used by the supervisor: the wiring that starts and stops token actors by shard
//! is a later part of issue 12.

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
    let holders = store.shard_holders().await?;
    let (mine, others): (Vec<_>, Vec<_>) = holders.iter().partition(|(_, (_, ours))| *ours);
    let mut owned: BTreeSet<ShardId> = mine.into_iter().map(|(s, _)| *s).collect();
    if !members.iter().any(|m| m == store.member()) {
        return Ok(owned);
    }
    let view = ShardView {
        owned: owned.clone(),
        desired: desired_shards(store.member(), members, shards),
        held_by_others: others.into_iter().map(|(s, _)| *s).collect(),
        in_flight: in_flight.clone(),
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
    let (tx, rx) = watch::channel(BTreeSet::new());
    let task = tokio::spawn(async move {
        let mut members = store.watch_members();
        loop {
            if store.lease().lost {
                tx.send_replace(BTreeSet::new());
                return;
            }
            let view = members.borrow_and_update().clone();
            match rebalance(&store, &view, shards, &in_flight()).await {
                Ok(owned) => {
                    tx.send_if_modified(|o| std::mem::replace(o, owned.clone()) != owned);
                }
                Err(ClusterError::LeaseLost) => {
                    tx.send_replace(BTreeSet::new());
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
