//! The persistence actor: the one writer of status files.
//!
//! Token actors and the supervisor `cast` [`PersistenceMsg::Update`]; the actor keeps the
//! latest record per workload (coalescing), writes in batches off the async threads
//! (`spawn_blocking`, at most [`PersistenceConfig::max_parallel_batches`] at once; each file
//! is fsynced and renamed, then one directory fsync makes the whole batch durable), never
//! writes the same workload twice at once (per-workload order), retries failed writes with
//! exponential backoff, counts everything in [`PersistStats`] and through the `metrics`
//! facade (names in [`crate::metrics`], no per-workload labels), and answers
//! [`PersistenceMsg::Flush`] once every update received before the flush is durable.
//!
//! ## How it works
//! Every update gets a sequence number. Each workload has at most one *slot*: its latest
//! record, the oldest update not yet durable, and whether a write of it is in flight. An
//! update replaces the slot's record (a record replaced before it was handed to a write is
//! counted as `coalesced`); an update that arrives while the workload is being written stays
//! in the slot and is written after that write completes. A successful write removes the
//! slot unless a newer record arrived meanwhile; a failed write keeps it and schedules a
//! retry (`retry_initial`, doubling, capped at `retry_max`).
//!
//! A flush remembers the highest sequence number assigned so far and is answered when no slot
//! holds an undurable update with a sequence number at or below it, so a record that was
//! coalesced into a newer one is durable only once that newer one is. A flush also makes
//! failed writes retry at once instead of at their backoff time (shutdown should not wait for
//! a backoff). If writes keep failing, the flush is answered at its deadline with the
//! workloads that are still not durable; they stay pending and keep being retried.
//!
//! ## Files locked by ToolHive
//! Each file is written under ToolHive's lock on `<name>.lock`
//! ([`status_store::write_staged`]), taken without waiting. A workload whose lock is held is
//! *deferred*, not failed: the rest of its batch is written as usual, its record stays in its
//! slot (a newer one may replace it, as for any pending record), and it is tried again every
//! [`LOCK_POLL`] until the lock has been held for [`LOCK_PATIENCE`], then every
//! [`LOCK_RETRY`] for as long as it stays held (logged once per episode). Deferrals are
//! counted ([`PersistStats::deferred`], `tokenvisor_status_writes_deferred_total`), never
//! counted as failures and never dropped; a flush waits for them like for any other write.
//!
//! ## Bounded memory
//! The pending state is bounded by the number of workloads, whatever the update rate or
//! however long writes fail: one slot per workload (a map keyed by name), each workload at
//! most once in the ready queue, one entry per slot in the durability index. Only flush
//! waiters grow with callers, and each one is answered by its deadline at the latest.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use tokenvisor_core::{StatusRecord, WorkloadName};
use tokio::time::Instant;

use crate::metrics::{
    STATUS_PENDING, STATUS_WRITE_FAILURES, STATUS_WRITES, STATUS_WRITES_DEFERRED,
};
use crate::status_store::{self, StoreError};

/// How often a write deferred by another process's lock on the file is tried again, at first.
pub const LOCK_POLL: Duration = Duration::from_millis(100);
/// How long a deferred write is tried every [`LOCK_POLL`] (ToolHive's own lock timeout).
pub const LOCK_PATIENCE: Duration = Duration::from_secs(1);
/// How often a write whose file stays locked past [`LOCK_PATIENCE`] is tried again.
pub const LOCK_RETRY: Duration = Duration::from_secs(1);

/// Settings of the persistence actor.
#[derive(Debug, Clone)]
pub struct PersistenceConfig {
    /// The status directory (created 0700 if missing).
    pub dir: PathBuf,
    /// Blocking write batches in flight at once (at least 1). Default 4: on the 2-core
    /// benchmark machine, 4 wrote a 100,000-file burst as fast as 8 and left more CPU to a
    /// refresh storm running at the same time (docs/BENCHMARKS.md, targets 2 and 4).
    pub max_parallel_batches: usize,
    /// Files per batch (at least 1); each batch ends with one fsync of the directory.
    pub batch_size: usize,
    /// First retry delay after a failed write.
    pub retry_initial: Duration,
    /// Retry delay cap.
    pub retry_max: Duration,
}

impl PersistenceConfig {
    /// Defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PersistenceConfig {
            dir: dir.into(),
            max_parallel_batches: 4,
            batch_size: 64,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        }
    }

    /// The delay before retry number `failures` (1 = first failure) of one workload.
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        self.retry_initial
            .saturating_mul(1u32 << exp)
            .min(self.retry_max)
    }
}

/// Counters, shared with whoever reads metrics.
#[derive(Debug, Default)]
pub struct PersistStats {
    /// Updates received.
    pub updates: AtomicU64,
    /// Updates replaced by a newer one before being written.
    pub coalesced: AtomicU64,
    /// Files written durably.
    pub writes_ok: AtomicU64,
    /// Failed write attempts (each is retried).
    pub write_failures: AtomicU64,
    /// Workloads whose latest record is not yet durable (waiting or being written), a gauge.
    pub pending: AtomicU64,
    /// Writes deferred because another process (ToolHive) held the file's lock (each is
    /// tried again; none is dropped).
    pub deferred: AtomicU64,
}

/// What a flush achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Files written since the previous flush report (of any flush).
    pub written: u64,
    /// Workloads with an update from before the flush that was not yet durable at the
    /// deadline, sorted by name (they stay pending and are still retried). Empty when the
    /// flush completed.
    pub failed: Vec<WorkloadName>,
}

/// Messages of the persistence actor.
#[derive(Debug)]
pub enum PersistenceMsg {
    /// The latest record of a workload.
    Update {
        /// The workload whose record this is.
        name: WorkloadName,
        /// Its full record.
        record: Box<StatusRecord>,
    },
    /// Reply once every update received before this one is durable (or failed after the
    /// write was retried within `deadline`).
    Flush {
        /// How long to keep retrying failures before answering with them.
        deadline: Duration,
        /// Where to answer.
        reply: RpcReplyPort<FlushReport>,
    },
    /// Internal: a batch finished.
    BatchDone(BatchResult),
    /// Internal: time to retry failed writes.
    RetryTick,
    /// Internal: the deadline of the flush with this id passed.
    FlushDeadline(u64),
}

/// Internal: the outcome of one blocking batch.
#[derive(Debug)]
pub struct BatchResult {
    /// Per record: its name, the sequence number written, and the outcome.
    pub results: Vec<(WorkloadName, u64, Result<(), StoreError>)>,
}

/// The persistence actor. Arguments: [`PersistenceArgs`]; state: [`PersistState`].
#[derive(Debug, Default)]
pub struct PersistenceActor;

/// Arguments of [`PersistenceActor`].
#[derive(Debug, Clone)]
pub struct PersistenceArgs {
    /// Where and how to write.
    pub config: PersistenceConfig,
    /// Counters shared with the runtime (`Runtime::persist_stats`).
    pub stats: Arc<PersistStats>,
}

/// The state of [`PersistenceActor`] (opaque).
#[derive(Debug)]
pub struct PersistState {
    config: PersistenceConfig,
    dir: Arc<Path>,
    stats: Arc<PersistStats>,
    /// Whether the directory is known to exist with the right mode; cleared by a batch that
    /// finds it missing, so the next batch recreates it.
    dir_ready: Arc<AtomicBool>,
    /// The last sequence number assigned to an update.
    last_seq: u64,
    /// One slot per workload with an undurable update (the bound on memory).
    slots: HashMap<WorkloadName, Slot>,
    /// Each slot's oldest undurable sequence number → its workload (sequence numbers are
    /// unique, so this is one entry per slot). Its first key decides flushes.
    undurable: BTreeMap<u64, WorkloadName>,
    /// Slots to write next, each at most once (see [`Slot::queued`]).
    ready: VecDeque<WorkloadName>,
    batches_in_flight: usize,
    /// Slots with a `retry_at`.
    waiting_retry: usize,
    /// The pending `RetryTick` timer and when it fires.
    retry_timer: Option<(Instant, Timer)>,
    /// Waiting flushes, by ascending `upto`.
    flushes: VecDeque<FlushWaiter>,
    next_flush_id: u64,
    written_since_report: u64,
}

/// A `send_after` timer task (dropping it does not cancel it; `abort` does).
type Timer = JoinHandle<Result<(), MessagingErr<PersistenceMsg>>>;

/// One workload's undurable state.
#[derive(Debug)]
struct Slot {
    /// Sequence number of `record`.
    seq: u64,
    /// The latest record (shared with an in-flight write).
    record: Arc<StatusRecord>,
    /// The oldest update not yet handed to a write; `None` when `record` is being written.
    dirty_since: Option<u64>,
    /// The write in flight, if any.
    writing: Option<Writing>,
    /// Consecutive failed writes.
    failures: u32,
    /// Not to be written before this (after a failure or a deferral).
    retry_at: Option<Instant>,
    /// Since when the file has been found locked by another process (consecutive deferrals).
    locked_since: Option<Instant>,
    /// In `ready`.
    queued: bool,
}

/// A write in flight: record `seq`, which makes updates `covers_from..=seq` durable.
#[derive(Debug, Clone, Copy)]
struct Writing {
    seq: u64,
    covers_from: u64,
}

impl Slot {
    /// Whether it should go to the ready queue.
    fn eligible(&self) -> bool {
        self.dirty_since.is_some()
            && self.writing.is_none()
            && self.retry_at.is_none()
            && !self.queued
    }
}

#[derive(Debug)]
struct FlushWaiter {
    id: u64,
    upto: u64,
    reply: RpcReplyPort<FlushReport>,
    timer: Timer,
}

/// One record handed to a blocking batch.
struct Item {
    /// The workload whose record this is.
    name: WorkloadName,
    seq: u64,
    record: Arc<StatusRecord>,
}

impl Actor for PersistenceActor {
    type Msg = PersistenceMsg;
    type State = PersistState;
    type Arguments = PersistenceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: PersistenceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(PersistState::new(args))
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let dir = Arc::clone(&state.dir);
        match tokio::task::spawn_blocking(move || status_store::ensure_dir(&dir)).await {
            Ok(Ok(_created)) => state.dir_ready.store(true, Ordering::Release),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "status directory not usable; writes will retry");
            }
            Err(e) => {
                tracing::warn!(error = %e, "status directory check did not finish; writes will retry");
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PersistenceMsg::Update { name, record } => state.on_update(&myself, name, record),
            PersistenceMsg::Flush { deadline, reply } => state.on_flush(&myself, deadline, reply),
            PersistenceMsg::BatchDone(batch) => state.on_batch_done(&myself, batch),
            PersistenceMsg::RetryTick => state.on_retry_tick(&myself),
            PersistenceMsg::FlushDeadline(id) => state.on_flush_deadline(id),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, timer)) = state.retry_timer.take() {
            timer.abort();
        }
        while let Some(w) = state.flushes.pop_front() {
            let failed = state.undurable_upto(w.upto);
            state.answer(w, failed);
        }
        if !state.slots.is_empty() {
            tracing::warn!(
                workloads = state.slots.len(),
                "persistence actor stopped with status records not written"
            );
        }
        Ok(())
    }
}

impl PersistState {
    fn new(args: PersistenceArgs) -> Self {
        let PersistenceArgs { config, stats } = args;
        PersistState {
            dir: Arc::from(config.dir.as_path()),
            config,
            stats,
            dir_ready: Arc::new(AtomicBool::new(false)),
            last_seq: 0,
            slots: HashMap::new(),
            undurable: BTreeMap::new(),
            ready: VecDeque::new(),
            batches_in_flight: 0,
            waiting_retry: 0,
            retry_timer: None,
            flushes: VecDeque::new(),
            next_flush_id: 0,
            written_since_report: 0,
        }
    }

    fn on_update(
        &mut self,
        myself: &ActorRef<PersistenceMsg>,
        name: WorkloadName,
        record: Box<StatusRecord>,
    ) {
        self.stats.updates.fetch_add(1, Ordering::Relaxed);
        self.last_seq += 1;
        let seq = self.last_seq;
        let record = Arc::from(record);
        match self.slots.get_mut(&name) {
            Some(slot) => {
                match slot.dirty_since {
                    // Replaces a record nobody has started writing.
                    Some(_) => {
                        self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                    }
                    // The previous record is being written; this one follows it.
                    None => slot.dirty_since = Some(seq),
                }
                slot.seq = seq;
                slot.record = record;
                if slot.eligible() {
                    slot.queued = true;
                    self.ready.push_back(name);
                }
            }
            None => {
                self.undurable.insert(seq, name.clone());
                self.slots.insert(
                    name.clone(),
                    Slot {
                        seq,
                        record,
                        dirty_since: Some(seq),
                        writing: None,
                        failures: 0,
                        retry_at: None,
                        locked_since: None,
                        queued: true,
                    },
                );
                self.ready.push_back(name);
                self.publish_pending();
            }
        }
        self.pump(myself);
    }

    /// Starts batches while there is room and work.
    fn pump(&mut self, myself: &ActorRef<PersistenceMsg>) {
        let max = self.config.max_parallel_batches.max(1);
        let batch_size = self.config.batch_size.max(1);
        while self.batches_in_flight < max && !self.ready.is_empty() {
            // Spread the queue over the free batch slots: parallel fsyncs are faster.
            let free = max - self.batches_in_flight;
            let take = self.ready.len().div_ceil(free).min(batch_size);
            let mut items = Vec::with_capacity(take);
            while items.len() < take {
                let Some(name) = self.ready.pop_front() else {
                    break;
                };
                let Some(slot) = self.slots.get_mut(&name) else {
                    continue;
                };
                slot.queued = false;
                let Some(covers_from) = slot.dirty_since else {
                    continue;
                };
                if slot.writing.is_some() || slot.retry_at.is_some() {
                    continue;
                }
                slot.dirty_since = None;
                slot.writing = Some(Writing {
                    seq: slot.seq,
                    covers_from,
                });
                items.push(Item {
                    name,
                    seq: slot.seq,
                    record: Arc::clone(&slot.record),
                });
            }
            if items.is_empty() {
                continue;
            }
            self.batches_in_flight += 1;
            let me = myself.clone();
            let dir = Arc::clone(&self.dir);
            let dir_ready = Arc::clone(&self.dir_ready);
            // Detached: the result comes back as a message.
            drop(tokio::task::spawn_blocking(move || {
                let results = write_batch(&dir, &dir_ready, items);
                // Fails only if the actor is gone; shutdown flushes before stopping it.
                if me
                    .cast(PersistenceMsg::BatchDone(BatchResult { results }))
                    .is_err()
                {
                    tracing::debug!("persistence actor gone before a write batch finished");
                }
            }));
        }
    }

    fn on_batch_done(&mut self, myself: &ActorRef<PersistenceMsg>, batch: BatchResult) {
        self.batches_in_flight = self.batches_in_flight.saturating_sub(1);
        let now = Instant::now();
        let (mut ok, mut failed, mut recovered, mut deferred) = (0u64, 0u64, 0u64, 0u64);
        let mut first_error: Option<StoreError> = None;
        let mut next_retry: Option<Instant> = None;
        for (name, seq, result) in batch.results {
            let Some(slot) = self.slots.get_mut(&name) else {
                continue;
            };
            let Some(w) = slot.writing.filter(|w| w.seq == seq) else {
                continue;
            };
            slot.writing = None;
            match result {
                Ok(()) => {
                    ok += 1;
                    slot.locked_since = None;
                    if slot.failures > 0 {
                        recovered += 1;
                        slot.failures = 0;
                    }
                    self.undurable.remove(&w.covers_from);
                    match slot.dirty_since {
                        Some(since) => {
                            // A newer record arrived during the write: it goes next.
                            self.undurable.insert(since, name.clone());
                            if slot.eligible() {
                                slot.queued = true;
                                self.ready.push_back(name);
                            }
                        }
                        None => {
                            self.slots.remove(&name);
                        }
                    }
                }
                Err(StoreError::Busy { path }) => {
                    deferred += 1;
                    let since = *slot.locked_since.get_or_insert(now);
                    let held = now.saturating_duration_since(since);
                    let delay = if held < LOCK_PATIENCE {
                        LOCK_POLL
                    } else {
                        if held < LOCK_PATIENCE + LOCK_RETRY {
                            tracing::warn!(path = %path.display(), "status file locked by another process for over {LOCK_PATIENCE:?}; still pending, retrying every {LOCK_RETRY:?}");
                        }
                        LOCK_RETRY
                    };
                    slot.dirty_since = Some(w.covers_from);
                    let at = now + delay;
                    if slot.retry_at.replace(at).is_none() {
                        self.waiting_retry += 1;
                    }
                    next_retry = Some(next_retry.map_or(at, |t| t.min(at)));
                }
                Err(e) => {
                    failed += 1;
                    slot.locked_since = None;
                    slot.failures = slot.failures.saturating_add(1);
                    // The latest record (maybe newer than the failed one) now covers every
                    // update since the failed write's first; the index key stays the same.
                    slot.dirty_since = Some(w.covers_from);
                    let at = now + self.config.retry_delay(slot.failures);
                    if slot.retry_at.replace(at).is_none() {
                        self.waiting_retry += 1;
                    }
                    next_retry = Some(next_retry.map_or(at, |t| t.min(at)));
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }

        if ok > 0 {
            self.written_since_report += ok;
            self.stats.writes_ok.fetch_add(ok, Ordering::Relaxed);
            ::metrics::counter!(STATUS_WRITES).increment(ok);
        }
        if deferred > 0 {
            self.stats.deferred.fetch_add(deferred, Ordering::Relaxed);
            ::metrics::counter!(STATUS_WRITES_DEFERRED).increment(deferred);
        }
        if failed > 0 {
            self.stats
                .write_failures
                .fetch_add(failed, Ordering::Relaxed);
            ::metrics::counter!(STATUS_WRITE_FAILURES).increment(failed);
        }
        if let Some(e) = first_error {
            let delay = next_retry.map(|t| t.saturating_duration_since(now));
            tracing::warn!(
                error = %e,
                failed,
                retry_in = ?delay,
                "status file writes failed; retrying"
            );
        }
        if recovered > 0 {
            tracing::info!(recovered, "status file writes succeed again");
        }
        if let Some(at) = next_retry {
            self.schedule_retry(myself, at);
        }
        self.publish_pending();
        self.pump(myself);
        self.answer_ready_flushes();
    }

    fn schedule_retry(&mut self, myself: &ActorRef<PersistenceMsg>, at: Instant) {
        if let Some((t, _)) = &self.retry_timer
            && *t <= at
        {
            return;
        }
        if let Some((_, old)) = self.retry_timer.take() {
            old.abort();
        }
        let delay = at.saturating_duration_since(Instant::now());
        let timer = myself.send_after(delay, || PersistenceMsg::RetryTick);
        self.retry_timer = Some((at, timer));
    }

    fn on_retry_tick(&mut self, myself: &ActorRef<PersistenceMsg>) {
        self.retry_timer = None;
        if self.waiting_retry == 0 {
            return;
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for (name, slot) in &mut self.slots {
            let Some(at) = slot.retry_at else {
                continue;
            };
            if at <= now {
                slot.retry_at = None;
                self.waiting_retry -= 1;
                if slot.eligible() {
                    slot.queued = true;
                    self.ready.push_back(name.clone());
                }
            } else {
                next = Some(next.map_or(at, |t| t.min(at)));
            }
        }
        if let Some(at) = next {
            self.schedule_retry(myself, at);
        }
        self.pump(myself);
    }

    fn on_flush(
        &mut self,
        myself: &ActorRef<PersistenceMsg>,
        deadline: Duration,
        reply: RpcReplyPort<FlushReport>,
    ) {
        let upto = self.last_seq;
        self.retry_now();
        self.pump(myself);
        if self.durable_upto(upto) {
            let report = self.report(Vec::new());
            // The caller may have given up waiting; nothing to do then.
            drop(reply.send(report));
            return;
        }
        let id = self.next_flush_id;
        self.next_flush_id += 1;
        let timer = myself.send_after(deadline, move || PersistenceMsg::FlushDeadline(id));
        self.flushes.push_back(FlushWaiter {
            id,
            upto,
            reply,
            timer,
        });
    }

    /// Makes every failed write eligible now (a flush should not wait out a backoff).
    fn retry_now(&mut self) {
        if self.waiting_retry == 0 {
            return;
        }
        for (name, slot) in &mut self.slots {
            if slot.retry_at.take().is_some() && slot.eligible() {
                slot.queued = true;
                self.ready.push_back(name.clone());
            }
        }
        self.waiting_retry = 0;
        if let Some((_, timer)) = self.retry_timer.take() {
            timer.abort();
        }
    }

    fn on_flush_deadline(&mut self, id: u64) {
        let Some(pos) = self.flushes.iter().position(|w| w.id == id) else {
            return;
        };
        let Some(waiter) = self.flushes.remove(pos) else {
            return;
        };
        let failed = self.undurable_upto(waiter.upto);
        tracing::warn!(
            workloads = failed.len(),
            "flush deadline passed with status records not yet written"
        );
        self.answer(waiter, failed);
    }

    /// Answers, in order, every waiting flush whose updates are all durable.
    fn answer_ready_flushes(&mut self) {
        while let Some(front) = self.flushes.front()
            && self.durable_upto(front.upto)
        {
            if let Some(waiter) = self.flushes.pop_front() {
                self.answer(waiter, Vec::new());
            }
        }
    }

    fn answer(&mut self, waiter: FlushWaiter, failed: Vec<WorkloadName>) {
        waiter.timer.abort();
        let report = self.report(failed);
        // The caller may have given up waiting; nothing to do then.
        drop(waiter.reply.send(report));
    }

    fn report(&mut self, failed: Vec<WorkloadName>) -> FlushReport {
        FlushReport {
            written: std::mem::take(&mut self.written_since_report),
            failed,
        }
    }

    /// Whether every update with a sequence number ≤ `upto` is durable.
    fn durable_upto(&self, upto: u64) -> bool {
        self.undurable
            .first_key_value()
            .is_none_or(|(&oldest, _)| oldest > upto)
    }

    /// Workloads with an undurable update at or below `upto`, sorted by name.
    fn undurable_upto(&self, upto: u64) -> Vec<WorkloadName> {
        let mut names: Vec<WorkloadName> = self
            .undurable
            .range(..=upto)
            .map(|(_, name)| name.clone())
            .collect();
        names.sort_unstable();
        names
    }

    fn publish_pending(&self) {
        let n = self.slots.len() as u64;
        self.stats.pending.store(n, Ordering::Relaxed);
        ::metrics::gauge!(STATUS_PENDING).set(n as f64);
    }
}

/// Runs on the blocking pool: stages each record (temp file, fsync, rename), (re)creating the
/// directory when needed, then makes every staged record durable with one fsync of the
/// directory. A record is reported `Ok` only after that fsync; if it fails, every staged
/// record of the batch reports the failure and is written again.
fn write_batch(
    dir: &Path,
    dir_ready: &AtomicBool,
    items: Vec<Item>,
) -> Vec<(WorkloadName, u64, Result<(), StoreError>)> {
    let mut dir_error = None;
    if !dir_ready.load(Ordering::Acquire) {
        match status_store::ensure_dir(dir) {
            Ok(_created) => dir_ready.store(true, Ordering::Release),
            Err(e) => dir_error = Some(e),
        }
    }
    let mut results: Vec<Result<(), StoreError>> = items
        .iter()
        .map(|item| match &dir_error {
            // No point trying each file in a directory that cannot be made.
            Some(e) => Err(e.clone()),
            None => stage_one(dir, dir_ready, item),
        })
        .collect();
    if results.iter().any(Result::is_ok)
        && let Err(e) = status_store::sync_dir(dir)
    {
        for result in results.iter_mut().filter(|r| r.is_ok()) {
            *result = Err(e.clone());
        }
    }
    items
        .into_iter()
        .zip(results)
        .map(|(item, result)| (item.name, item.seq, result))
        .collect()
}

/// One staged write; if the directory vanished, recreate it and try once more.
fn stage_one(dir: &Path, dir_ready: &AtomicBool, item: &Item) -> Result<(), StoreError> {
    let result = guarded_stage(dir, item);
    if let Err(e) = &result
        && e.kind() == Some(io::ErrorKind::NotFound)
    {
        dir_ready.store(false, Ordering::Release);
        status_store::ensure_dir(dir)?;
        dir_ready.store(true, Ordering::Release);
        return guarded_stage(dir, item);
    }
    result
}

/// A staged write whose panic (a bug) becomes an error, so the record is retried, not lost.
fn guarded_stage(dir: &Path, item: &Item) -> Result<(), StoreError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        status_store::write_staged(dir, &item.name, &item.record)
    }))
    .unwrap_or_else(|_| {
        Err(StoreError::Panicked {
            path: status_store::path_for(dir, &item.name),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let mut c = PersistenceConfig::new("/x");
        c.retry_initial = Duration::from_millis(100);
        c.retry_max = Duration::from_secs(1);
        assert_eq!(c.retry_delay(1), Duration::from_millis(100));
        assert_eq!(c.retry_delay(2), Duration::from_millis(200));
        assert_eq!(c.retry_delay(4), Duration::from_millis(800));
        assert_eq!(c.retry_delay(5), Duration::from_secs(1));
        assert_eq!(c.retry_delay(u32::MAX), Duration::from_secs(1));
    }
}
