//! The persistence logic, sans I/O: what to write to the state journal next, and who is
//! satisfied when a write commits.
//!
//! The runtime's persistence actor only drives a [`WriteQueue`]: it [`submit`]s each change
//! of a workload (a *patch*, coalesced with the workload's pending one), asks for a batch
//! with [`take_batch`] whenever no batch is in flight, commits that batch in one transaction
//! (one fsync: group commit) off the async threads, and reports the outcome with
//! [`committed`] or [`failed`]. Time is an argument everywhere; the queue never reads a clock.
//!
//! ## Rules
//! - **One slot per workload.** A patch replaces (coalesces into) the workload's pending
//!   patch ([`Coalesce`]); memory is bounded by the number of workloads, however fast
//!   updates arrive or however long commits fail.
//! - **Take everything ready.** A batch holds every workload whose patch is ready (up to
//!   [`QueueConfig::max_batch`]), so one commit covers all the updates that arrived while the
//!   previous one ran. At most one batch is in flight at a time (the journal has one writer),
//!   so two writes of one workload are never in flight together and commits apply in order.
//! - **A waited-for patch goes first.** A patch someone waits for ([`add_key_waiter`]: a
//!   rotated refresh token whose attempt holds its workload's owner until it is durable) jumps
//!   the queue: the next batch takes it ahead of every other ready workload, and a batch that
//!   holds such patches takes at most [`QueueConfig::urgent_fill`] others, so its commit is
//!   quick. Without it, a backlog of status changes (100,000 workloads added at once) made
//!   every commit wait behind the whole backlog: longer than an attempt's deadline, so no
//!   refresh ever completed and the timed-out attempts refilled the backlog (a stalled ramp).
//! - **Retry with backoff.** A failed commit hands its patches back ([`failed`]): each is
//!   merged under whatever newer patch arrived meanwhile and nothing is lost; the next batch
//!   waits `retry_initial · 2ⁿ` (capped at `retry_max`) unless a flush asks for it at once.
//! - **Waiters.** A flush waiter ([`add_flush`]) is satisfied when every update submitted
//!   before it is durable, or times out at its deadline with the workloads still pending. A
//!   key waiter ([`add_key_waiter`]) waits for one update of one workload (a rotated refresh
//!   token must be durable before it is used): it hears of the first commit that covers its
//!   update, or of the first failed commit that held it.
//! - **Status files are views, coalesced.** Each submission says whether it changes the
//!   workload's status file and how urgently ([`FileWrite`]). A status or token *state* change
//!   ([`FileWrite::Now`]) is written with the commit that makes it durable; a routine refresh
//!   that changes only timestamps ([`FileWrite::Routine`]) is written at most once per
//!   [`QueueConfig::status_refresh_interval`] per workload: a routine change within the
//!   interval is deferred ([`BatchItem::write_file`] false) and [`due_files`] names the
//!   workload when the interval has passed, so its file then shows the latest committed record.
//! - **Status patches coalesce before the mailbox.** The status record and the served access
//!   token reach the driver through a [`Lane`] (one slot per workload, one wake-up per fill),
//!   not one mailbox message per change; credentials keep the mailbox's order ([`lane`]).
//!
//! [`submit`]: WriteQueue::submit
//! [`take_batch`]: WriteQueue::take_batch
//! [`committed`]: WriteQueue::committed
//! [`failed`]: WriteQueue::failed
//! [`add_flush`]: WriteQueue::add_flush
//! [`add_key_waiter`]: WriteQueue::add_key_waiter
//! [`due_files`]: WriteQueue::due_files

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use crate::time::Timestamp;

pub mod lane;

pub use lane::{Lane, LaneCounts};

/// A pending change that absorbs a newer one of the same workload.
pub trait Coalesce {
    /// Merges `newer` into `self`: afterwards `self` writes what writing the two in order
    /// would have written.
    fn coalesce(&mut self, newer: Self);
}

/// Whether and how urgently a submission changes the workload's status file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileWrite {
    /// Not at all (a credential-only change).
    None,
    /// Only timestamps changed (a routine refresh): at most one file write per
    /// [`QueueConfig::status_refresh_interval`].
    Routine,
    /// A status or token state change: written with the commit that makes it durable.
    Now,
}

/// Settings of a [`WriteQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Workloads per batch (at least 1).
    pub max_batch: usize,
    /// Delay before the first retry of a failed commit.
    pub retry_initial: Duration,
    /// Retry delay cap.
    pub retry_max: Duration,
    /// At most one status-file write per workload per this interval for routine refreshes.
    pub status_refresh_interval: Duration,
    /// A batch holding waited-for patches takes at most this many other workloads (module
    /// docs: its commit, which someone waits for, stays quick).
    pub urgent_fill: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_batch: 4096,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            status_refresh_interval: Duration::from_secs(30),
            urgent_fill: 256,
        }
    }
}

impl QueueConfig {
    /// The delay before retry number `failures` (1 = after the first failed commit).
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        self.retry_initial
            .saturating_mul(1u32 << exp)
            .min(self.retry_max)
    }
}

/// The caller's name for a waiter (a flush or a key waiter).
pub type WaiterId = u64;

/// One workload's patch in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem<K, V> {
    /// The workload.
    pub key: K,
    /// Its coalesced patch.
    pub value: V,
    /// Write the status file (from the committed record) once the commit succeeded.
    pub write_file: bool,
}

/// A batch to commit in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<K, V> {
    /// Its id (pass it back to [`WriteQueue::committed`] or [`WriteQueue::failed`]).
    pub id: u64,
    /// The patches, one per workload.
    pub items: Vec<BatchItem<K, V>>,
}

/// What became of a waiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<K> {
    /// Everything it waited for is durable.
    Durable,
    /// A flush's deadline passed: these workloads (sorted) still have an update from before
    /// the flush that is not durable. They stay pending and are retried.
    TimedOut(Vec<K>),
    /// The commit holding a key waiter's update failed; the update stays pending and is
    /// retried (wait again to hear of the retry).
    Failed,
}

/// Counters of a queue (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Submissions.
    pub submitted: u64,
    /// Submissions merged into a pending patch before it was taken.
    pub coalesced: u64,
    /// Patches committed.
    pub committed: u64,
    /// Failed commits.
    pub failed_commits: u64,
}

#[derive(Debug)]
struct Slot<V> {
    /// The patch not yet handed to a batch.
    pending: Option<V>,
    /// The oldest sequence number in `pending` (`Some` iff `pending` is).
    pending_since: Option<u64>,
    /// The newest sequence number submitted.
    latest: u64,
    /// The strongest file request of `pending`.
    file: FileWrite,
    /// The batch holding this workload: (newest seq in it, oldest seq in it, its file request).
    in_flight: Option<(u64, u64, FileWrite)>,
    /// In the ready queue.
    queued: bool,
    /// Also in the urgent queue (a key waiter waits for its pending patch).
    urgent: bool,
}

#[derive(Debug)]
struct Flush {
    id: WaiterId,
    upto: u64,
    deadline: Timestamp,
}

/// The sans-IO write queue; see the module docs.
#[derive(Debug)]
pub struct WriteQueue<K, V> {
    config: QueueConfig,
    last_seq: u64,
    next_batch: u64,
    slots: HashMap<K, Slot<V>>,
    ready: VecDeque<K>,
    /// Ready workloads whose pending patch someone waits for: taken first.
    urgent: VecDeque<K>,
    /// Each slot's oldest undurable sequence number → its workload. Its first key decides
    /// flushes.
    undurable: BTreeMap<u64, K>,
    /// The batch in flight: its id and its workloads.
    in_flight: Option<(u64, Vec<K>)>,
    /// Consecutive failed commits.
    failures: u32,
    /// No batch before this (after a failed commit).
    retry_at: Option<Timestamp>,
    flushes: Vec<Flush>,
    /// Key waiters: workload → (waiter, sequence number waited for).
    key_waiters: HashMap<K, Vec<(WaiterId, u64)>>,
    /// When each workload's status file was last written (or scheduled with a commit).
    file_written: HashMap<K, Timestamp>,
    /// Workloads whose committed record is not in their file yet, and when it is due.
    file_due: HashMap<K, Timestamp>,
    /// The same, ordered by due time (what [`WriteQueue::due_files`] and
    /// [`WriteQueue::next_wake`] read without a scan).
    file_due_order: BTreeSet<(Timestamp, K)>,
    counts: QueueCounts,
}

impl<K: Clone + Eq + Hash + Ord, V: Coalesce> WriteQueue<K, V> {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        WriteQueue {
            config,
            last_seq: 0,
            next_batch: 0,
            slots: HashMap::new(),
            ready: VecDeque::new(),
            urgent: VecDeque::new(),
            undurable: BTreeMap::new(),
            in_flight: None,
            failures: 0,
            retry_at: None,
            flushes: Vec::new(),
            key_waiters: HashMap::new(),
            file_written: HashMap::new(),
            file_due: HashMap::new(),
            file_due_order: BTreeSet::new(),
            counts: QueueCounts::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Counters so far.
    pub fn counts(&self) -> QueueCounts {
        self.counts
    }

    /// Workloads with a patch not yet durable (pending or in flight).
    pub fn pending(&self) -> usize {
        self.slots.len()
    }

    /// Consecutive failed commits (0 when the last commit succeeded).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether a batch is in flight.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Queues a change of `key`; returns its sequence number (for [`add_key_waiter`]).
    ///
    /// [`add_key_waiter`]: WriteQueue::add_key_waiter
    pub fn submit(&mut self, key: K, value: V, file: FileWrite) -> u64 {
        self.counts.submitted += 1;
        self.last_seq += 1;
        let seq = self.last_seq;
        match self.slots.get_mut(&key) {
            Some(slot) => {
                slot.latest = seq;
                slot.file = slot.file.max(file);
                match slot.pending.as_mut() {
                    Some(pending) => {
                        self.counts.coalesced += 1;
                        pending.coalesce(value);
                    }
                    None => {
                        // The slot's previous patch is in flight; this one follows it.
                        slot.pending = Some(value);
                        slot.pending_since = Some(seq);
                    }
                }
                if !slot.queued {
                    slot.queued = true;
                    self.ready.push_back(key);
                }
            }
            None => {
                self.undurable.insert(seq, key.clone());
                self.slots.insert(
                    key.clone(),
                    Slot {
                        pending: Some(value),
                        pending_since: Some(seq),
                        latest: seq,
                        file,
                        in_flight: None,
                        queued: true,
                        urgent: false,
                    },
                );
                self.ready.push_back(key);
            }
        }
        seq
    }

    /// The next batch to commit: every ready workload (up to `max_batch`), or `None` when a
    /// batch is in flight, nothing is ready, or a failed commit's backoff has not passed.
    pub fn take_batch(&mut self, now: Timestamp) -> Option<Batch<K, V>> {
        if self.in_flight.is_some() || self.retry_at.is_some_and(|at| at > now) {
            return None;
        }
        self.retry_at = None;
        let mut items = Vec::new();
        let mut keys = Vec::new();
        let max = self.config.max_batch.max(1);
        // Waited-for patches first; then the others, fewer of them when a waiter is in.
        let mut limit = max;
        let mut urgent_taken = 0;
        loop {
            if items.len() >= limit {
                break;
            }
            let key = match self.urgent.pop_front() {
                Some(key) => key,
                None => {
                    if urgent_taken > 0 {
                        limit = max.min(urgent_taken + self.config.urgent_fill);
                        urgent_taken = 0;
                        if items.len() >= limit {
                            break;
                        }
                    }
                    let Some(key) = self.ready.pop_front() else {
                        break;
                    };
                    key
                }
            };
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            if slot.urgent {
                urgent_taken += 1;
            } else if !slot.queued {
                // A stale entry: the workload was taken from the other queue.
                continue;
            }
            slot.queued = false;
            slot.urgent = false;
            if slot.in_flight.is_some() {
                // Goes in the batch after the one holding it (not possible with one batch in
                // flight, kept for safety): requeued when that batch ends.
                continue;
            }
            let (Some(value), Some(since)) = (slot.pending.take(), slot.pending_since.take())
            else {
                continue;
            };
            let file = std::mem::replace(&mut slot.file, FileWrite::None);
            slot.in_flight = Some((slot.latest, since, file));
            let write_file = match file {
                FileWrite::None => false,
                FileWrite::Now => true,
                FileWrite::Routine => match self.file_written.get(&key) {
                    Some(&at) if now < at.plus(self.config.status_refresh_interval) => {
                        let due = at.plus(self.config.status_refresh_interval);
                        if !self.file_due.contains_key(&key) {
                            self.file_due.insert(key.clone(), due);
                            self.file_due_order.insert((due, key.clone()));
                        }
                        false
                    }
                    Some(_) | None => true,
                },
            };
            if write_file {
                self.unschedule_file(&key);
                self.file_written.insert(key.clone(), now);
            }
            keys.push(key.clone());
            items.push(BatchItem {
                key,
                value,
                write_file,
            });
        }
        if items.is_empty() {
            return None;
        }
        let id = self.next_batch;
        self.next_batch += 1;
        self.in_flight = Some((id, keys));
        Some(Batch { id, items })
    }

    /// The batch `id` committed: its updates are durable. Returns the waiters now satisfied.
    pub fn committed(&mut self, id: u64) -> Vec<(WaiterId, Answer<K>)> {
        let Some(keys) = self.end_batch(id) else {
            return Vec::new();
        };
        self.failures = 0;
        let mut answers = Vec::new();
        for key in keys {
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            let Some((upto, covers_from, _)) = slot.in_flight.take() else {
                continue;
            };
            self.counts.committed += 1;
            self.undurable.remove(&covers_from);
            if let Some(waiters) = self.key_waiters.get_mut(&key) {
                waiters.retain(|&(w, seq)| {
                    let done = seq <= upto;
                    if done {
                        answers.push((w, Answer::Durable));
                    }
                    !done
                });
                if waiters.is_empty() {
                    self.key_waiters.remove(&key);
                }
            }
            match slot.pending_since {
                Some(since) => {
                    self.undurable.insert(since, key.clone());
                    if !slot.queued {
                        slot.queued = true;
                        self.ready.push_back(key.clone());
                    }
                    // Someone still waits, for the patch that followed: it goes first.
                    if self.key_waiters.contains_key(&key) {
                        self.promote(&key);
                    }
                }
                None => {
                    self.slots.remove(&key);
                }
            }
        }
        answers.extend(self.answer_flushes());
        answers
    }

    /// The batch `id` failed; `items` are its patches, handed back. Each goes back under the
    /// newer patch that arrived meanwhile (nothing is lost); the next batch waits for the
    /// backoff. Returns the key waiters that hear of the failure.
    pub fn failed(
        &mut self,
        id: u64,
        items: Vec<BatchItem<K, V>>,
        now: Timestamp,
    ) -> Vec<(WaiterId, Answer<K>)> {
        if self.end_batch(id).is_none() {
            return Vec::new();
        }
        self.counts.failed_commits += 1;
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now.plus(self.config.retry_delay(self.failures)));
        let mut answers = Vec::new();
        for item in items {
            let BatchItem {
                key,
                mut value,
                write_file,
            } = item;
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            let Some((_, covers_from, file)) = slot.in_flight.take() else {
                continue;
            };
            if write_file {
                // Not written after all: the next commit writes it.
                self.file_written.remove(&key);
            }
            if let Some(newer) = slot.pending.take() {
                value.coalesce(newer);
            }
            slot.pending = Some(value);
            slot.pending_since = Some(covers_from);
            slot.file = slot.file.max(file);
            if !slot.queued {
                slot.queued = true;
                self.ready.push_back(key.clone());
            }
            if let Some(waiters) = self.key_waiters.remove(&key) {
                answers.extend(waiters.into_iter().map(|(w, _)| (w, Answer::Failed)));
            }
        }
        answers
    }

    fn end_batch(&mut self, id: u64) -> Option<Vec<K>> {
        match self.in_flight.take() {
            Some((current, keys)) if current == id => Some(keys),
            other => {
                self.in_flight = other;
                None
            }
        }
    }

    /// Waits for every update submitted so far; answered by [`committed`] (or at once when
    /// nothing is pending) or by [`poll`] at `deadline`. Makes a failed commit retry at once
    /// (a shutdown does not wait out a backoff).
    ///
    /// [`committed`]: WriteQueue::committed
    /// [`poll`]: WriteQueue::poll
    pub fn add_flush(&mut self, id: WaiterId, deadline: Timestamp) -> Option<Answer<K>> {
        self.retry_now();
        let upto = self.last_seq;
        if self.durable_upto(upto) {
            return Some(Answer::Durable);
        }
        self.flushes.push(Flush { id, upto, deadline });
        None
    }

    /// Ends a failed commit's backoff: the next [`take_batch`] may run at once (someone is
    /// waiting for the commit).
    ///
    /// [`take_batch`]: WriteQueue::take_batch
    pub fn retry_now(&mut self) {
        self.retry_at = None;
    }

    /// Waits for update `seq` of `key` to be durable: `Some` answer at once when it is.
    pub fn add_key_waiter(&mut self, id: WaiterId, key: K, seq: u64) -> Option<Answer<K>> {
        let undurable = self.slots.get(&key).is_some_and(|slot| {
            slot.pending_since.is_some_and(|s| s <= seq)
                || slot.in_flight.is_some_and(|(_, from, _)| from <= seq)
        });
        if !undurable {
            return Some(Answer::Durable);
        }
        let pending = self
            .slots
            .get(&key)
            .is_some_and(|slot| slot.pending_since.is_some_and(|s| s <= seq));
        if pending {
            self.promote(&key);
        }
        self.key_waiters.entry(key).or_default().push((id, seq));
        None
    }

    /// Puts a ready workload's pending patch in the urgent queue (someone waits for it).
    fn promote(&mut self, key: &K) {
        if let Some(slot) = self.slots.get_mut(key)
            && slot.queued
            && !slot.urgent
            && slot.pending.is_some()
        {
            slot.urgent = true;
            self.urgent.push_back(key.clone());
        }
    }

    /// Whether update `seq` of `key` is durable.
    pub fn is_durable(&self, key: &K, seq: u64) -> bool {
        self.slots.get(key).is_none_or(|slot| {
            !(slot.pending_since.is_some_and(|s| s <= seq)
                || slot.in_flight.is_some_and(|(_, from, _)| from <= seq))
        })
    }

    /// Flush waiters whose deadline passed at `now`, with the workloads they still wait for.
    pub fn poll(&mut self, now: Timestamp) -> Vec<(WaiterId, Answer<K>)> {
        let mut answers = Vec::new();
        let mut i = 0;
        while i < self.flushes.len() {
            if self.flushes[i].deadline <= now {
                let f = self.flushes.swap_remove(i);
                answers.push((f.id, Answer::TimedOut(self.undurable_upto(f.upto))));
            } else {
                i += 1;
            }
        }
        answers
    }

    /// Workloads whose deferred status file is due at `now`, the longest due first, at most
    /// `limit` of them (each then counts as written now): write their latest committed
    /// record. A workload with a patch pending or in flight is left for that commit. The
    /// rest stay due ([`next_file_due`] says so): a driver that writes at most `limit`
    /// routine files per job keeps every status change's file (written with its commit)
    /// from waiting behind thousands of routine ones.
    ///
    /// [`next_file_due`]: WriteQueue::next_file_due
    pub fn due_files(&mut self, now: Timestamp, limit: usize) -> Vec<K> {
        let mut out = Vec::new();
        let mut busy = Vec::new();
        while out.len() < limit
            && let Some((at, key)) = self.file_due_order.first().cloned()
            && at <= now
        {
            self.file_due_order.pop_first();
            if self.slots.get(&key).is_some_and(|s| s.in_flight.is_some()) {
                busy.push((at, key));
                continue;
            }
            self.file_due.remove(&key);
            self.file_written.insert(key.clone(), now);
            out.push(key);
        }
        // Left for the commit in flight (it settles the file, or the next call does).
        self.file_due_order.extend(busy);
        out
    }

    /// Drops a workload's deferred file write (its file is written with a commit).
    fn unschedule_file(&mut self, key: &K) {
        if let Some(at) = self.file_due.remove(key) {
            self.file_due_order.remove(&(at, key.clone()));
        }
    }

    /// Forgets a workload's file bookkeeping (it was removed).
    pub fn forget(&mut self, key: &K) {
        self.file_written.remove(key);
        self.unschedule_file(key);
    }

    /// When the driver should call [`take_batch`] and [`poll`] next, if nothing else
    /// happens: the end of a backoff, a flush deadline.
    ///
    /// [`take_batch`]: WriteQueue::take_batch
    /// [`poll`]: WriteQueue::poll
    pub fn next_wake(&self) -> Option<Timestamp> {
        let retry = self.retry_at.filter(|_| !self.ready.is_empty());
        let flush = self.flushes.iter().map(|f| f.deadline).min();
        [retry, flush].into_iter().flatten().min()
    }

    /// When the earliest deferred status file is due ([`due_files`]); a time already
    /// passed when some are due and not yet taken. A driver that is still writing files
    /// asks again when it is done, not by a timer.
    ///
    /// [`due_files`]: WriteQueue::due_files
    pub fn next_file_due(&self) -> Option<Timestamp> {
        self.file_due_order.first().map(|(at, _)| *at)
    }

    /// Workloads with an update not yet durable whose sequence number is at most `upto`,
    /// sorted.
    fn undurable_upto(&self, upto: u64) -> Vec<K> {
        let mut keys: Vec<K> = self
            .undurable
            .range(..=upto)
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Workloads with an undurable update, sorted (what a shutdown would lose).
    pub fn undurable(&self) -> Vec<K> {
        self.undurable_upto(u64::MAX)
    }

    fn durable_upto(&self, upto: u64) -> bool {
        self.undurable
            .first_key_value()
            .is_none_or(|(&oldest, _)| oldest > upto)
    }

    fn answer_flushes(&mut self) -> Vec<(WaiterId, Answer<K>)> {
        let mut answers = Vec::new();
        let mut i = 0;
        while i < self.flushes.len() {
            if self.durable_upto(self.flushes[i].upto) {
                let f = self.flushes.swap_remove(i);
                answers.push((f.id, Answer::Durable));
            } else {
                i += 1;
            }
        }
        answers
    }
}

#[cfg(test)]
mod tests;
