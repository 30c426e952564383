//! Cluster mode, the pure rules: which shard a workload is in, which live member owns a
//! shard, how shards change hands, and when an owner may still send a refresh.
//!
//! Several tokenvisor instances share one workload list through etcd. Every rule that
//! decides *who* may act is here, as plain functions of their inputs (members, shards, the
//! time as an argument), so every instance computes the same answer from the same view and
//! the tests drive it without etcd. The runtime's `cluster` module does the I/O (leases,
//! the fenced transactions) and calls these.
//!
//! - [`shard_of`]: a workload name's shard, `XXH3-64(name) mod shards`. XXH3-64 (seed 0)
//!   is a specified hash with fixed output (the `xxhash-rust` crate implements the
//!   reference; known-answer tests pin it), unlike std's `DefaultHasher`, which may change
//!   with any Rust release: two instances built by different compilers agree.
//! - [`owner`]: rendezvous (highest-random-weight) hashing. A shard's weight for a member
//!   is `XXH3-64(shard as 4 big-endian bytes ‖ member)`; the member of highest weight owns
//!   it (ties, which
//!   need a 64-bit collision, go to the greater member id). When a member joins, only the
//!   shards it now wins move (≈ 1/n of them), each to it; when one leaves, only its own
//!   shards move. No shard moves between members that stayed.
//! - [`plan_handover`]: owned, desired and others' shards plus the attempts in flight →
//!   [`Handover`] actions. A shard is acquired only when nobody holds it (its old owner
//!   released it, or its lease expired and etcd deleted the key); an owner that must give
//!   a shard up first drains it (starts nothing new, waits for its attempts in flight) and
//!   only then releases it.
//! - [`may_send`]: the send rule. An owner sends a refresh only while
//!   `now + attempt backstop` is strictly before the end of its lease as last confirmed,
//!   and that end is counted from the moment the keepalive *request* was sent
//!   ([`lease_confirmed_until`]), never from when its answer arrived: the server started
//!   the renewed TTL at or after that moment, so its expiry is never earlier than ours. A
//!   paused or partitioned instance therefore stops sending before the server can expire
//!   its lease and let a new owner start.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::Duration;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::time::Timestamp;

/// A shard number, in `0..shards`.
pub type ShardId = u32;

/// The default number of shards (`[cluster] shards`).
pub const DEFAULT_SHARDS: u32 = 256;

/// The shard of the workload called `name`: `XXH3-64(name) mod shards`.
pub fn shard_of(name: &str, shards: NonZeroU32) -> ShardId {
    let shard = xxh3_64(name.as_bytes()) % u64::from(shards.get());
    // The remainder is below `shards`, a u32.
    ShardId::try_from(shard).unwrap_or(0)
}

/// The rendezvous weight of `member` for `shard`: `XXH3-64(shard as 4 big-endian bytes ‖
/// member)` (seed 0). (Not the shard as XXH3's seed: over 300 random member sets that had
/// heavier tails of imbalance, 11 % against 6.5 % at 4,096 shards.)
pub fn weight(shard: ShardId, member: &str) -> u64 {
    let mut h = Xxh3::new();
    h.update(&shard.to_be_bytes());
    h.update(member.as_bytes());
    h.digest()
}

/// The member that owns `shard` among `members` (highest weight; a tie goes to the greater
/// id), or `None` when there are none. The order of `members` does not matter.
pub fn owner<S: AsRef<str>>(shard: ShardId, members: &[S]) -> Option<&S> {
    members.iter().max_by(|a, b| {
        let (a, b) = (a.as_ref(), b.as_ref());
        (weight(shard, a), a).cmp(&(weight(shard, b), b))
    })
}

/// The shards of `0..shards` that `me` owns among `members` (empty when `me` is not one of
/// them: an instance whose membership lapsed owns nothing).
pub fn desired_shards<S: AsRef<str>>(
    me: &str,
    members: &[S],
    shards: NonZeroU32,
) -> BTreeSet<ShardId> {
    (0..shards.get())
        .filter(|&s| owner(s, members).is_some_and(|m| m.as_ref() == me))
        .collect()
}

/// What an instance sees of the shards, to plan its handover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardView {
    /// Shards whose key this instance holds (bound to its lease).
    pub owned: BTreeSet<ShardId>,
    /// Shards rendezvous hashing gives this instance ([`desired_shards`]).
    pub desired: BTreeSet<ShardId>,
    /// Shards whose key another member holds (its lease still alive).
    pub held_by_others: BTreeSet<ShardId>,
    /// Refresh attempts in flight per owned shard (absent: none).
    pub in_flight: BTreeMap<ShardId, u32>,
}

/// One step of a handover, as [`plan_handover`] decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Handover {
    /// Owned but no longer ours, nothing in flight: delete the shard key now.
    Release(ShardId),
    /// Owned but no longer ours, attempts in flight: start no new attempt of the shard;
    /// release it once they are done.
    Drain {
        /// The shard.
        shard: ShardId,
        /// Its attempts still in flight.
        in_flight: u32,
    },
    /// Ours and free (released, or its old owner's lease expired): claim it, then load its
    /// credentials from etcd before the first attempt.
    Acquire(ShardId),
    /// Ours but still held by its old owner: wait for its release or its lease's expiry.
    AwaitRelease(ShardId),
}

/// The handover actions for `view`, releases and drains first, then acquisitions and
/// waits, each in shard order. A shard both owned and seen held by another (a stale view)
/// is treated as owned: the fence decides, not the view. Shards owned and desired need
/// nothing.
pub fn plan_handover(view: &ShardView) -> Vec<Handover> {
    let mut plan = Vec::new();
    for &shard in view.owned.difference(&view.desired) {
        match view.in_flight.get(&shard).copied().unwrap_or(0) {
            0 => plan.push(Handover::Release(shard)),
            in_flight => plan.push(Handover::Drain { shard, in_flight }),
        }
    }
    for &shard in view.desired.difference(&view.owned) {
        if view.held_by_others.contains(&shard) {
            plan.push(Handover::AwaitRelease(shard));
        } else {
            plan.push(Handover::Acquire(shard));
        }
    }
    plan
}

/// The end of a lease as confirmed by a keepalive whose request was sent at `request_sent`
/// and whose answer granted `ttl`: `request_sent + ttl`. The answer's arrival time is
/// deliberately not an argument: the server renewed the lease when the request reached it,
/// at or after `request_sent`.
pub fn lease_confirmed_until(request_sent: Timestamp, ttl: Duration) -> Timestamp {
    request_sent.plus(ttl)
}

/// Whether an owner may send a refresh at `now`: only when an attempt started now ends,
/// at its `backstop` at the latest, strictly before `lease_confirmed_until` (the lease's
/// end as last confirmed; [`lease_confirmed_until`]). `None` (no lease confirmed yet) never
/// sends.
pub fn may_send(
    now: Timestamp,
    backstop: Duration,
    lease_confirmed_until: Option<Timestamp>,
) -> bool {
    lease_confirmed_until.is_some_and(|until| now.plus(backstop) < until)
}

#[cfg(test)]
mod tests;
