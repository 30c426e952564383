//! The persistence actor: the one writer of the state journal and of the status files.
//!
//! It drives `tokenvisor_core::write_queue::WriteQueue`, where the logic lives (coalescing
//! per workload, batches, order, retries with backoff, flush and key waiters, the coalescing
//! of routine status-file writes); this module only does what the queue cannot: it runs each
//! batch on the blocking pool and answers callers.
//!
//! - Token actors, the supervisor and credential stores send their changes through a
//!   [`PersistenceLink`] (status records and served tokens by the lane, credentials as
//!   [`PersistenceMsg::Update`], in the order sent per workload); attempt tasks `call`
//!   [`PersistenceMsg::Commit`] with a rotated refresh token and hear back once it is
//!   durable (or that the commit failed and is being retried), and
//!   [`PersistenceMsg::WaitDurable`] before they send a refresh token whose commit had
//!   failed.
//! - One journal job at a time: every ready patch is committed to the [`Journal`] in one
//!   transaction (one fsync: group commit), and the waiters it covers are answered. The
//!   status files of committed records are written by a file job of their own, one at a
//!   time, beside the journal's (in commit order: a file job takes every committed record
//!   not yet written, newest per workload), so a commit a refresh waits for never waits for
//!   status files: on a loaded disk thousands of files take seconds, and with 100,000
//!   workloads added at once every rotated token's commit waited behind them (a stalled
//!   ramp). A status file is a view of its journal record: it is
//!   replaced atomically (temp file, rename) under ToolHive's `<name>.lock`, without a fsync
//!   of its own (the journal is what is durable; start-up rewrites every file from it).
//! - A file job takes the files to retry, then the views of committed status changes (in
//!   ticket order), then at most [`PersistenceConfig::routine_files_per_job`] deferred
//!   routine files (a refresh that changed only timestamps, due once per
//!   `status_refresh_interval`), the longest due first; the rest wait for the next job, so
//!   a status change never waits behind a whole fleet's routine files.
//! - [`PersistenceMsg::Flush`] is answered once every update received before it is committed
//!   and every status file due is written, or at its deadline with the workloads still
//!   pending ([`FlushReport`]), including those whose rotated refresh token is not durable
//!   ([`FlushReport::credentials_not_saved`]: a shutdown exits non-zero naming them).
//!
//! ## Files locked by ToolHive
//! A status file whose `<name>.lock` is held is *deferred*, not failed: it is tried again
//! every [`LOCK_POLL`] until the lock has been held for [`LOCK_PATIENCE`], then every
//! [`LOCK_RETRY`]. Deferrals are counted ([`PersistStats::deferred`]), never dropped; a flush
//! waits for them like for any other file.
//!
//! ## Bounded memory
//! One queue slot per workload, at most one unwritten or deferred file per workload; only
//! waiters grow with callers, each answered by its deadline at the latest.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use tokenvisor_core::write_queue::{
    Answer, Batch, Coalesce, FileWrite, Lane, LaneCounts, QueueConfig, WriteQueue,
};
use tokenvisor_core::{StatusRecord, Timestamp, WorkloadName};

use crate::clock::Clock;
use crate::journal::{Journal, JournalError, Patch};
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

/// The journal's directory when none is configured: a hidden directory inside the status
/// directory (ToolHive reads only `*.json` there; `.tokenvisor` is the directory's marker).
pub const DEFAULT_JOURNAL_SUBDIR: &str = ".tokenvisor-state";

/// How long a stopping persistence actor waits for its write job in flight.
const JOB_STOP_WAIT: Duration = Duration::from_secs(30);

/// Settings of the persistence actor.
#[derive(Debug, Clone)]
pub struct PersistenceConfig {
    /// The status directory (created 0700 if missing).
    pub dir: PathBuf,
    /// The state journal's directory (created 0700 if missing); default
    /// `<dir>/.tokenvisor-state`.
    pub journal_dir: PathBuf,
    /// Workloads per journal transaction (at least 1).
    pub max_batch: usize,
    /// First retry delay after a failed commit or file write.
    pub retry_initial: Duration,
    /// Retry delay cap.
    pub retry_max: Duration,
    /// At most one status-file write per workload per this interval for a routine refresh
    /// that changes only timestamps (`service.status_refresh_interval`, default 30 s).
    pub status_refresh_interval: Duration,
    /// Deferred routine status files per file job at most (1,024 by default).
    pub routine_files_per_job: usize,
}

impl PersistenceConfig {
    /// Defaults for the status directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        PersistenceConfig {
            journal_dir: dir.join(DEFAULT_JOURNAL_SUBDIR),
            dir,
            max_batch: 4096,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            status_refresh_interval: Duration::from_secs(30),
            routine_files_per_job: ROUTINE_FILES_PER_JOB,
        }
    }

    /// The delay before retry number `failures` (1 = first failure).
    pub fn retry_delay(&self, failures: u32) -> Duration {
        self.queue_config().retry_delay(failures)
    }

    fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            max_batch: self.max_batch.max(1),
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            status_refresh_interval: self.status_refresh_interval,
            ..QueueConfig::default()
        }
    }
}

/// The status lane shared by the senders and the persistence actor: each workload's newest
/// status record and served token, coalesced before the mailbox
/// (`tokenvisor_core::write_queue::lane`); the mailbox carries one [`PersistenceMsg::Drain`]
/// per fill.
#[derive(Debug, Clone, Default)]
pub struct StatusLane(Arc<Mutex<Lane<WorkloadName, Patch>>>);

impl StatusLane {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lane<WorkloadName, Patch>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Workloads with a status patch not yet taken by the persistence actor.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no status patch waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// How the rest of the runtime sends changes to the persistence actor: status records and
/// the served token through the [`StatusLane`] (coalesced per workload before the mailbox),
/// anything with a credential or a source hash through the mailbox, in order with `Commit`.
#[derive(Debug, Clone)]
pub struct PersistenceLink {
    actor: ActorRef<PersistenceMsg>,
    lane: StatusLane,
}

impl PersistenceLink {
    /// A link to `actor`, which was started with `lane` ([`PersistenceArgs::lane`]).
    pub fn new(actor: ActorRef<PersistenceMsg>, lane: StatusLane) -> Self {
        PersistenceLink { actor, lane }
    }

    /// The actor (for `Commit`, `WaitDurable`, `Flush`).
    pub fn actor(&self) -> &ActorRef<PersistenceMsg> {
        &self.actor
    }

    /// Sends a change of `name`'s row. A patch without a credential or source hash (a
    /// status record, the served token) goes through the lane; one with either goes whole
    /// through the mailbox, in order with `Commit`, and is committed in one transaction (an
    /// adoption's new credential and its cleared served token stay together across a
    /// crash). Per workload, patches are applied in the order sent, whichever way they go:
    /// the lane's earlier patch travels in the message, in front, and its later ones wait
    /// for the message (`Lane::hold`).
    ///
    /// # Errors
    /// When the actor is gone.
    pub fn update(
        &self,
        name: WorkloadName,
        patch: Patch,
        file: FileWrite,
    ) -> Result<(), MessagingErr<PersistenceMsg>> {
        if patch.credential.is_some() || patch.source_hash.is_some() {
            let mut lane = self.lane.lock();
            let (patch, file) = match lane.hold(name.clone()) {
                Some((mut earlier, earlier_file)) => {
                    earlier.coalesce(patch);
                    (earlier, earlier_file.max(file))
                }
                None => (patch, file),
            };
            let sent = self.actor.cast(PersistenceMsg::Update {
                name: name.clone(),
                patch: Box::new(patch),
                file,
            });
            if sent.is_err() {
                let _ = lane.release(&name);
            }
            return sent;
        }
        if patch.access.is_none() && patch.status.is_none() {
            return Ok(());
        }
        let wake = self.lane.lock().put(name, patch, file);
        if wake {
            self.actor.cast(PersistenceMsg::Drain)?;
        }
        Ok(())
    }
}

/// The places a status record waits in, each at most once per workload
/// ([`PersistStats::pending`]).
pub const PENDING_PLACES: u64 = 3;

/// Counters, shared with whoever reads metrics.
#[derive(Debug, Default)]
pub struct PersistStats {
    /// Updates received.
    pub updates: AtomicU64,
    /// Updates merged into a pending one before being committed, or whose status file was
    /// replaced by a newer committed record before it was written.
    pub coalesced: AtomicU64,
    /// Status files written.
    pub writes_ok: AtomicU64,
    /// Failed commits and failed status-file writes (each is retried).
    pub write_failures: AtomicU64,
    /// Status records waiting, a gauge, counted once per place they wait: a patch not yet
    /// committed, a committed record whose file is queued, a file write to retry. One
    /// workload can wait in all three at once (a newer record uncommitted while its file's
    /// write is queued and an older one's is retried), so the gauge stays at most
    /// [`PENDING_PLACES`] × the workloads: coalescing bounds it per workload.
    pub pending: AtomicU64,
    /// Status-file writes deferred because another process (ToolHive) held the file's lock.
    pub deferred: AtomicU64,
    /// Journal transactions committed.
    pub commits: AtomicU64,
}

/// What a flush achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Status files written since the previous flush report (of any flush).
    pub written: u64,
    /// Workloads with an update from before the flush that was not committed, or whose
    /// status file was not written, at the deadline, sorted (they stay pending and are still
    /// retried). Empty when the flush completed.
    pub failed: Vec<WorkloadName>,
    /// Of those, the workloads whose rotated refresh token is not durable: a restart would
    /// present a token the provider may have revoked. Sorted.
    pub credentials_not_saved: Vec<WorkloadName>,
}

/// The answer to a [`PersistenceMsg::Commit`] or [`PersistenceMsg::WaitDurable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// Committed to the journal.
    Durable,
    /// The commit failed (it is retried with backoff): why, naming the file, never a value.
    NotYet {
        /// The commit's error.
        reason: String,
        /// The update's sequence number (wait for it with [`PersistenceMsg::WaitDurable`]).
        seq: u64,
    },
}

/// Messages of the persistence actor.
#[derive(Debug)]
pub enum PersistenceMsg {
    /// A change of a workload's row (status record, served token, source hash). Sent by
    /// [`PersistenceLink::update`] only: it holds the workload's later lane patches until
    /// this message is handled.
    Update {
        /// The workload.
        name: WorkloadName,
        /// The change.
        patch: Box<Patch>,
        /// Whether and how urgently its status file changes.
        file: FileWrite,
    },
    /// A change that must be durable before it is used (a rotated refresh token): answered
    /// once committed, or with the first failed commit that held it.
    Commit {
        /// The workload.
        name: WorkloadName,
        /// The change.
        patch: Box<Patch>,
        /// Where to answer.
        reply: RpcReplyPort<Durability>,
    },
    /// Answer once update `seq` of `name` is durable, or when the next commit holding it fails.
    WaitDurable {
        /// The workload.
        name: WorkloadName,
        /// The update ([`Durability::NotYet::seq`]).
        seq: u64,
        /// Where to answer.
        reply: RpcReplyPort<Durability>,
    },
    /// Reply once every update received before this one is committed and its file written
    /// (or at `deadline` with what is not).
    Flush {
        /// How long to keep retrying failures before answering with them.
        deadline: Duration,
        /// Where to answer.
        reply: RpcReplyPort<FlushReport>,
    },
    /// The [`StatusLane`] has patches (sent by [`PersistenceLink::update`] once per fill;
    /// the lane is taken before every message anyway).
    Drain,
    /// Internal: a job (journal or files) finished.
    JobDone(Box<JobResult>),
    /// Internal: time to retry, to write deferred files, or to time out flushes.
    Wake,
    /// Internal: the deadline of the flush with this id passed.
    FlushDeadline(u64),
    /// Fault injection: while true, every commit fails as on a full disk.
    #[cfg(any(test, feature = "test-util"))]
    InjectFailures(bool),
    /// Fault injection: while true, no journal transaction starts (a disk that hangs):
    /// commits stay pending until it is false again.
    #[cfg(any(test, feature = "test-util"))]
    InjectStall(bool),
}

/// Internal: what a blocking job did.
#[derive(Debug)]
pub enum JobResult {
    /// A journal job: the journal back, the batch and its outcome.
    Journal {
        /// The journal (`None` when it could not be opened).
        journal: Option<Journal>,
        /// The batch and its commit's outcome.
        batch: (Batch<WorkloadName, Patch>, Result<(), JournalError>),
    },
    /// A file job: each file's outcome; every committed record up to ticket `upto` was in
    /// it or in an earlier one.
    Files {
        /// The highest view ticket handed to this job.
        upto: u64,
        /// The files written (or not).
        files: Vec<(WorkloadName, Arc<StatusRecord>, Result<(), StoreError>)>,
    },
}

/// The persistence actor. Arguments: [`PersistenceArgs`]; state: [`PersistState`].
#[derive(Debug, Default)]
pub struct PersistenceActor;

/// Arguments of [`PersistenceActor`].
#[derive(Debug)]
pub struct PersistenceArgs {
    /// Where and how to write.
    pub config: PersistenceConfig,
    /// Counters shared with the runtime (`Runtime::persist_stats`).
    pub stats: Arc<PersistStats>,
    /// The journal, opened at start-up (opened by the first job when `None`).
    pub journal: Option<Journal>,
    /// The clock (the queue's `now`).
    pub clock: Clock,
    /// The status lane its senders share ([`PersistenceLink`]).
    pub lane: StatusLane,
}

/// The state of [`PersistenceActor`] (opaque).
#[derive(Debug)]
pub struct PersistState {
    config: PersistenceConfig,
    dir: Arc<Path>,
    stats: Arc<PersistStats>,
    clock: Clock,
    lane: StatusLane,
    /// The lane's counters at the last take.
    lane_seen: LaneCounts,
    queue: WriteQueue<WorkloadName, Patch>,
    /// The journal while no job holds it.
    journal: Option<Journal>,
    /// The blocking task of the journal job in flight (at most one; `None` when idle): the
    /// actor waits for it when it stops, so that nothing is written after it stopped.
    job: Option<tokio::task::JoinHandle<()>>,
    /// The blocking task of the file job in flight (at most one), likewise.
    file_job: Option<tokio::task::JoinHandle<()>>,
    /// Committed records whose status file is still to write, with their ticket (the
    /// newest per workload).
    views: HashMap<WorkloadName, (Arc<StatusRecord>, u64)>,
    /// The last ticket given to a view.
    view_ticket: u64,
    /// Every view up to this ticket went through a finished file job.
    files_done: u64,
    /// Committed records whose file write was deferred (routine refreshes).
    deferred_views: HashMap<WorkloadName, Arc<StatusRecord>>,
    /// Status files that failed or were found locked, to write again.
    unwritten: HashMap<WorkloadName, Unwritten>,
    /// The newest credential update per workload (pruned once durable).
    credentials: HashMap<WorkloadName, u64>,
    flushes: HashMap<u64, FlushWaiter>,
    /// Key waiters: id → (reply, the update's sequence number).
    key_waiters: HashMap<u64, (RpcReplyPort<Durability>, u64)>,
    next_waiter: u64,
    wake: Option<(Timestamp, Timer)>,
    written_since_report: u64,
    /// The last commit error (for `Durability::NotYet`).
    last_error: Option<String>,
    file_failures: u32,
    /// Fault injection: fail every commit.
    inject_failures: bool,
    /// Fault injection: start no journal job.
    inject_stall: bool,
}

/// A `send_after` timer task (dropping it does not cancel it; `abort` does).
type Timer = JoinHandle<Result<(), MessagingErr<PersistenceMsg>>>;

#[derive(Debug)]
struct Unwritten {
    record: Arc<StatusRecord>,
    retry_at: Timestamp,
    locked_since: Option<Timestamp>,
}

#[derive(Debug)]
struct FlushWaiter {
    reply: RpcReplyPort<FlushReport>,
    timer: Timer,
    /// The journal part is durable; what remains is files.
    committed: bool,
    /// Once committed: the views its files wait for (tickets up to this).
    files_upto: u64,
    /// Its key waiter ids in the queue are its own id.
    _id: u64,
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

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Status patches put before this message was sent are submitted before it.
        state.take_lane();
        match msg {
            PersistenceMsg::Drain => {}
            PersistenceMsg::Update { name, patch, file } => {
                state.submit(name.clone(), *patch, file);
                // The workload's status patches put after it was sent.
                let later = state.lane.lock().release(&name);
                if let Some((patch, file)) = later {
                    state.submit_counted(name, patch, file);
                }
            }
            PersistenceMsg::Commit { name, patch, reply } => {
                let seq = state.submit(name.clone(), *patch, FileWrite::None);
                state.credentials.insert(name.clone(), seq);
                state.wait_durable(name, seq, reply);
            }
            PersistenceMsg::WaitDurable { name, seq, reply } => {
                // Retry now rather than at the backoff: a refresh is waiting.
                state.wait_durable(name, seq, reply);
            }
            PersistenceMsg::Flush { deadline, reply } => state.on_flush(&myself, deadline, reply),
            PersistenceMsg::JobDone(result) => state.on_job_done(*result),
            PersistenceMsg::Wake => {
                state.wake = None;
            }
            PersistenceMsg::FlushDeadline(id) => state.on_flush_deadline(id),
            #[cfg(any(test, feature = "test-util"))]
            PersistenceMsg::InjectFailures(on) => state.inject_failures = on,
            #[cfg(any(test, feature = "test-util"))]
            PersistenceMsg::InjectStall(on) => state.inject_stall = on,
        }
        state.pump(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, timer)) = state.wake.take() {
            timer.abort();
        }
        // Jobs in flight finish first (bounded): no file or commit after the actor stopped.
        for job in [state.job.take(), state.file_job.take()]
            .into_iter()
            .flatten()
        {
            if tokio::time::timeout(JOB_STOP_WAIT, job).await.is_err() {
                tracing::warn!(
                    "persistence actor stopped while a write job still ran after {JOB_STOP_WAIT:?}"
                );
            }
        }
        let ids: Vec<u64> = state.flushes.keys().copied().collect();
        for id in ids {
            state.answer_flush(id, true);
        }
        if state.queue.pending() > 0 || !state.unwritten.is_empty() || !state.views.is_empty() {
            tracing::warn!(
                workloads = state.queue.pending() + state.unwritten.len() + state.views.len(),
                "persistence actor stopped with records not written"
            );
        }
        if let Some(journal) = state.journal.take() {
            let checkpoint = tokio::task::spawn_blocking(move || journal.checkpoint());
            let _ = tokio::time::timeout(JOB_STOP_WAIT, checkpoint).await;
        }
        Ok(())
    }
}

impl PersistState {
    fn new(args: PersistenceArgs) -> Self {
        let PersistenceArgs {
            config,
            stats,
            journal,
            clock,
            lane,
        } = args;
        PersistState {
            dir: Arc::from(config.dir.as_path()),
            queue: WriteQueue::new(config.queue_config()),
            config,
            stats,
            clock,
            lane,
            lane_seen: LaneCounts::default(),
            journal,
            job: None,
            file_job: None,
            views: HashMap::new(),
            view_ticket: 0,
            files_done: 0,
            deferred_views: HashMap::new(),
            unwritten: HashMap::new(),
            credentials: HashMap::new(),
            flushes: HashMap::new(),
            key_waiters: HashMap::new(),
            next_waiter: 0,
            wake: None,
            written_since_report: 0,
            last_error: None,
            file_failures: 0,
            inject_failures: false,
            inject_stall: false,
        }
    }

    fn submit(&mut self, name: WorkloadName, patch: Patch, file: FileWrite) -> u64 {
        self.stats.updates.fetch_add(1, Ordering::Relaxed);
        self.submit_counted(name, patch, file)
    }

    /// [`PersistState::submit`] of an update already counted in [`PersistStats::updates`].
    fn submit_counted(&mut self, name: WorkloadName, patch: Patch, file: FileWrite) -> u64 {
        if patch.status.is_some() {
            // A newer record supersedes a deferred or failed file write.
            self.deferred_views.remove(&name);
        }
        let before = self.queue.counts().coalesced;
        let seq = self.queue.submit(name, patch, file);
        if self.queue.counts().coalesced > before {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        self.publish_pending();
        seq
    }

    /// Submits every patch of the status lane.
    fn take_lane(&mut self) {
        let (taken, counts) = {
            let mut lane = self.lane.lock();
            (lane.take(), lane.counts())
        };
        // Every put is an update; those merged in the lane are coalesced already.
        let put = counts.put.saturating_sub(self.lane_seen.put);
        let merged = counts.coalesced.saturating_sub(self.lane_seen.coalesced);
        self.lane_seen = counts;
        self.stats.updates.fetch_add(put, Ordering::Relaxed);
        self.stats.coalesced.fetch_add(merged, Ordering::Relaxed);
        for (name, patch, file) in taken {
            self.submit_counted(name, patch, file);
        }
    }

    fn wait_durable(&mut self, name: WorkloadName, seq: u64, reply: RpcReplyPort<Durability>) {
        let id = self.next_id();
        match self.queue.add_key_waiter(id, name, seq) {
            Some(_) => drop(reply.send(Durability::Durable)),
            None => {
                self.key_waiters.insert(id, (reply, seq));
                // A refresh is waiting on it: do not wait out a commit backoff.
                self.queue.retry_now();
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_waiter += 1;
        self.next_waiter
    }

    /// Starts a job when none runs and there is work; arms the wake-up timer.
    fn pump(&mut self, myself: &ActorRef<PersistenceMsg>) {
        let now = self.clock.now();
        // Flush waiters the queue timed out are answered by our own deadline timers.
        let _ = self.queue.poll(now);
        if self.job.is_none()
            && !self.inject_stall
            && let Some(batch) = self.queue.take_batch(now)
        {
            let journal = self.journal.take();
            let journal_dir = self.config.journal_dir.clone();
            let me = myself.clone();
            let fail = self.inject_failures;
            self.job = Some(tokio::task::spawn_blocking(move || {
                let result = run_journal_job(&journal_dir, journal, batch, fail);
                if me.cast(PersistenceMsg::JobDone(Box::new(result))).is_err() {
                    tracing::debug!("persistence actor gone before a job finished");
                }
            }));
        }
        if self.file_job.is_none() {
            // Oldest first, each workload once with its newest record: a file still to
            // retry, then the committed views in ticket order, then deferred routine views
            // (newer than any view: a newer status would have dropped them).
            let mut files: Vec<(WorkloadName, Arc<StatusRecord>)> = Vec::new();
            let due: Vec<WorkloadName> = self
                .unwritten
                .iter()
                .filter(|(_, u)| u.retry_at <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for name in due {
                if let Some(u) = self.unwritten.get(&name) {
                    files.push((name, Arc::clone(&u.record)));
                }
            }
            let mut views: Vec<(WorkloadName, (Arc<StatusRecord>, u64))> =
                self.views.drain().collect();
            views.sort_unstable_by_key(|(_, (_, ticket))| *ticket);
            files.extend(views.into_iter().map(|(name, (record, _))| (name, record)));
            for name in self.queue.due_files(now, self.config.routine_files_per_job) {
                if let Some(record) = self.deferred_views.remove(&name) {
                    files.push((name, record));
                }
            }
            let upto = self.view_ticket;
            if files.is_empty() {
                self.files_done = self.files_done.max(upto);
            } else {
                // The newest record of each workload wins (the last one pushed).
                let mut seen = std::collections::HashSet::new();
                files.reverse();
                files.retain(|(name, _)| seen.insert(name.clone()));
                files.reverse();
                let dir = Arc::clone(&self.dir);
                let me = myself.clone();
                self.file_job = Some(tokio::task::spawn_blocking(move || {
                    let files = write_views(&dir, files);
                    let result = JobResult::Files { upto, files };
                    if me.cast(PersistenceMsg::JobDone(Box::new(result))).is_err() {
                        tracing::debug!("persistence actor gone before a job finished");
                    }
                }));
            }
        }
        self.arm_wake(myself, now);
    }

    fn arm_wake(&mut self, myself: &ActorRef<PersistenceMsg>, now: Timestamp) {
        // Files to retry and deferred files due: only while no file job runs (its end pumps
        // again); a timer for a time already passed would fire every millisecond meanwhile.
        let files = if self.file_job.is_none() {
            let retry = self.unwritten.values().map(|u| u.retry_at).min();
            [retry, self.queue.next_file_due()]
                .into_iter()
                .flatten()
                .min()
        } else {
            None
        };
        let Some(at) = [self.queue.next_wake(), files].into_iter().flatten().min() else {
            return;
        };
        if let Some((t, _)) = &self.wake
            && *t <= at
        {
            return;
        }
        if let Some((_, old)) = self.wake.take() {
            old.abort();
        }
        let timer = myself.send_after(self.clock.until(at).max(Duration::from_millis(1)), || {
            PersistenceMsg::Wake
        });
        let _ = now;
        self.wake = Some((at, timer));
    }

    fn on_job_done(&mut self, result: JobResult) {
        match result {
            JobResult::Journal { journal, batch } => {
                self.job = None;
                self.journal = journal;
                self.on_journal_done(batch);
            }
            JobResult::Files { upto, files } => {
                self.file_job = None;
                self.files_done = self.files_done.max(upto);
                self.on_files_done(files);
            }
        }
        self.publish_pending();
        self.answer_ready_flushes();
    }

    fn on_journal_done(
        &mut self,
        (batch, outcome): (Batch<WorkloadName, Patch>, Result<(), JournalError>),
    ) {
        let now = self.clock.now();
        let answers;
        {
            match outcome {
                Ok(()) => {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    if self.last_error.take().is_some() {
                        tracing::info!("state journal commits succeed again");
                    }
                    for item in &batch.items {
                        let Some(status) = &item.value.status else {
                            continue;
                        };
                        if let Some(u) = self.unwritten.get_mut(&item.key) {
                            // A file still to write shows the newest committed record.
                            u.record = Arc::clone(status);
                        } else if !item.write_file {
                            self.deferred_views
                                .insert(item.key.clone(), Arc::clone(status));
                        }
                        if item.write_file {
                            // Written by the next file job (newest record per workload).
                            self.view_ticket += 1;
                            let older = self
                                .views
                                .insert(item.key.clone(), (Arc::clone(status), self.view_ticket));
                            if older.is_some() {
                                // Replaced before its file was written.
                                self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    answers = self.queue.committed(batch.id);
                    self.credentials
                        .retain(|name, seq| !self.queue.is_durable(name, *seq));
                }
                Err(e) => {
                    self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    ::metrics::counter!(STATUS_WRITE_FAILURES).increment(1);
                    let retry = self.config.retry_delay(self.queue.failures() + 1);
                    tracing::warn!(error = %e, workloads = batch.items.len(), retry_in = ?retry, "state journal commit failed; retrying");
                    self.last_error = Some(e.to_string());
                    answers = self.queue.failed(batch.id, batch.items, now);
                }
            }
        }
        for (id, answer) in answers {
            self.on_answer(id, &answer);
        }
    }

    fn on_files_done(
        &mut self,
        files: Vec<(WorkloadName, Arc<StatusRecord>, Result<(), StoreError>)>,
    ) {
        let now = self.clock.now();
        let (mut ok, mut failed, mut deferred) = (0u64, false, 0u64);
        for (name, record, outcome) in files {
            // A newer committed record waits for the next file job: it settles the file.
            let newer = self.views.contains_key(&name);
            match outcome {
                Err(_) if newer => {
                    self.unwritten.remove(&name);
                    continue;
                }
                Ok(()) | Err(_) => {}
            }
            match outcome {
                Ok(()) => {
                    ok += 1;
                    // Written unless a newer record failed since (then it is still due).
                    if self
                        .unwritten
                        .get(&name)
                        .is_some_and(|u| Arc::ptr_eq(&u.record, &record))
                    {
                        self.unwritten.remove(&name);
                    }
                }
                Err(StoreError::Busy { path }) => {
                    deferred += 1;
                    let entry = self.unwritten.entry(name).or_insert(Unwritten {
                        record: Arc::clone(&record),
                        retry_at: now,
                        locked_since: None,
                    });
                    entry.record = record;
                    let since = *entry.locked_since.get_or_insert(now);
                    let held = now.since(since);
                    let delay = if held < LOCK_PATIENCE {
                        LOCK_POLL
                    } else {
                        if held < LOCK_PATIENCE + LOCK_RETRY {
                            tracing::warn!(path = %path.display(), "status file locked by another process for over {LOCK_PATIENCE:?}; still pending, retrying every {LOCK_RETRY:?}");
                        }
                        LOCK_RETRY
                    };
                    entry.retry_at = now.plus(delay);
                }
                Err(e) => {
                    // Counted before it is logged: a reader who saw the line sees the count.
                    self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    ::metrics::counter!(STATUS_WRITE_FAILURES).increment(1);
                    failed = true;
                    self.file_failures = self.file_failures.saturating_add(1);
                    let delay = self.config.retry_delay(self.file_failures);
                    if self.file_failures == 1 || self.file_failures.is_power_of_two() {
                        tracing::warn!(error = %e, retry_in = ?delay, "status file writes failed; retrying");
                    }
                    let entry = self.unwritten.entry(name).or_insert(Unwritten {
                        record: Arc::clone(&record),
                        retry_at: now,
                        locked_since: None,
                    });
                    entry.record = record;
                    entry.locked_since = None;
                    entry.retry_at = now.plus(delay);
                }
            }
        }
        if ok > 0 {
            if !failed && self.file_failures > 0 {
                tracing::info!("status file writes succeed again");
                self.file_failures = 0;
            }
            self.written_since_report += ok;
            self.stats.writes_ok.fetch_add(ok, Ordering::Relaxed);
            ::metrics::counter!(STATUS_WRITES).increment(ok);
        }
        if deferred > 0 {
            self.stats.deferred.fetch_add(deferred, Ordering::Relaxed);
            ::metrics::counter!(STATUS_WRITES_DEFERRED).increment(deferred);
        }
    }

    fn on_answer(&mut self, id: u64, answer: &Answer<WorkloadName>) {
        if let Some((reply, seq)) = self.key_waiters.remove(&id) {
            let durability = match answer {
                Answer::Durable => Durability::Durable,
                Answer::Failed | Answer::TimedOut(_) => Durability::NotYet {
                    reason: self
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "the commit failed".into()),
                    seq,
                },
            };
            // The caller may have given up waiting.
            drop(reply.send(durability));
            return;
        }
        if let Some(f) = self.flushes.get_mut(&id) {
            match answer {
                Answer::Durable => {
                    f.committed = true;
                    f.files_upto = self.view_ticket;
                }
                Answer::Failed | Answer::TimedOut(_) => {}
            }
        }
    }

    fn on_flush(
        &mut self,
        myself: &ActorRef<PersistenceMsg>,
        deadline: Duration,
        reply: RpcReplyPort<FlushReport>,
    ) {
        let id = self.next_id();
        let now = self.clock.now();
        // A flush retries failed files at once too.
        for u in self.unwritten.values_mut() {
            if u.locked_since.is_none() {
                u.retry_at = now;
            }
        }
        let committed = self.queue.add_flush(id, now.plus(deadline)).is_some();
        let timer = myself.send_after(deadline, move || PersistenceMsg::FlushDeadline(id));
        self.flushes.insert(
            id,
            FlushWaiter {
                reply,
                timer,
                committed,
                files_upto: self.view_ticket,
                _id: id,
            },
        );
        self.answer_ready_flushes();
    }

    fn on_flush_deadline(&mut self, id: u64) {
        if self.flushes.contains_key(&id) {
            self.answer_flush(id, true);
        }
    }

    /// Answers every flush whose updates are committed and whose files are written, when no
    /// file is left to retry.
    fn answer_ready_flushes(&mut self) {
        if !self.unwritten.is_empty() {
            return;
        }
        let done = self.files_done;
        let ready: Vec<u64> = self
            .flushes
            .iter()
            .filter(|(_, f)| f.committed && f.files_upto <= done)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.answer_flush(id, false);
        }
    }

    fn answer_flush(&mut self, id: u64, timed_out: bool) {
        let Some(f) = self.flushes.remove(&id) else {
            return;
        };
        f.timer.abort();
        let (failed, credentials_not_saved) = if timed_out && !f.committed {
            let mut failed = self.queue.undurable();
            failed.extend(self.unwritten.keys().cloned());
            failed.extend(self.views.keys().cloned());
            failed.sort_unstable();
            failed.dedup();
            let mut lost: Vec<WorkloadName> = self
                .credentials
                .iter()
                .filter(|(name, seq)| !self.queue.is_durable(name, **seq))
                .map(|(name, _)| name.clone())
                .collect();
            lost.sort_unstable();
            (failed, lost)
        } else if timed_out {
            let mut failed: Vec<WorkloadName> = self
                .unwritten
                .keys()
                .chain(self.views.keys())
                .cloned()
                .collect();
            failed.sort_unstable();
            failed.dedup();
            failed.sort_unstable();
            (failed, Vec::new())
        } else {
            (Vec::new(), Vec::new())
        };
        if !failed.is_empty() {
            tracing::warn!(
                workloads = failed.len(),
                credentials = credentials_not_saved.len(),
                "flush deadline passed with records not written"
            );
        }
        let report = FlushReport {
            written: std::mem::take(&mut self.written_since_report),
            failed,
            credentials_not_saved,
        };
        // The caller may have given up waiting.
        drop(f.reply.send(report));
    }

    /// [`PersistStats::pending`]: a sum kept O(1) per update (a count of distinct workloads
    /// would cost a pass over the waiting files at every update).
    fn publish_pending(&self) {
        let n = (self.queue.pending() + self.unwritten.len() + self.views.len()) as u64;
        self.stats.pending.store(n, Ordering::Relaxed);
        ::metrics::gauge!(STATUS_PENDING).set(n as f64);
    }
}

/// Runs on the blocking pool: opens the journal if needed and commits the batch in one
/// transaction. Its status files are written by a file job once it committed.
fn run_journal_job(
    journal_dir: &Path,
    journal: Option<Journal>,
    batch: Batch<WorkloadName, Patch>,
    fail: bool,
) -> JobResult {
    let opened = match journal {
        Some(j) => Ok(j),
        None => Journal::open(journal_dir),
    };
    let (journal, outcome) = match opened {
        Ok(j) if fail => {
            let e = JournalError {
                path: j.path().to_path_buf(),
                op: "commit",
                reason: "database or disk is full (injected)".into(),
            };
            (Some(j), Err(e))
        }
        Ok(mut j) => {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                j.commit(batch.items.iter().map(|i| (&i.key, &i.value)))
            }))
            .unwrap_or_else(|_| {
                Err(JournalError {
                    path: j.path().to_path_buf(),
                    op: "commit",
                    reason: "panicked".into(),
                })
            });
            (Some(j), outcome)
        }
        Err(e) => (None, Err(e)),
    };
    JobResult::Journal {
        journal,
        batch: (batch, outcome),
    }
}

/// Deferred routine status files (a refresh that changed only timestamps) per file job at
/// most, taken after every status change's file: a job of 100,000 due routine files (a
/// fleet refreshing on a slow disk) would make every status change that follows wait for
/// all of them. The rest stay due and go into the next job, which starts when this one ends.
pub const ROUTINE_FILES_PER_JOB: usize = 1024;

/// Files per writer thread before a job's status files are written by several threads.
const FILES_PER_WRITER: usize = 256;

/// Writer threads of one job at most: file writes are syscall-bound (lock, spare written in
/// place, exchange: `status_store::write_view`) and share the directory's lock; a profile
/// with 4 (when each write also created and removed the lock file) showed the kernel
/// spinning on it (`rwsem_spin_on_owner` 10 % of a storm run), so 2.
const MAX_WRITERS: usize = 2;

/// Writes the status files of a job, on up to [`MAX_WRITERS`] threads when there are many
/// (each workload at most once, so threads never write the same file).
fn write_views(
    dir: &Path,
    files: Vec<(WorkloadName, Arc<StatusRecord>)>,
) -> Vec<(WorkloadName, Arc<StatusRecord>, Result<(), StoreError>)> {
    if files.is_empty() {
        return Vec::new();
    }
    let ready = status_store::ensure_dir(dir);
    let write = |part: Vec<(WorkloadName, Arc<StatusRecord>)>| {
        part.into_iter()
            .map(|(name, record)| {
                let outcome = match &ready {
                    Ok(_) => write_view(dir, &name, &record),
                    Err(e) => Err(e.clone()),
                };
                (name, record, outcome)
            })
            .collect::<Vec<_>>()
    };
    let writers = files.len().div_ceil(FILES_PER_WRITER).min(MAX_WRITERS);
    if writers <= 1 {
        return write(files);
    }
    let chunk = files.len().div_ceil(writers);
    let mut parts = Vec::with_capacity(writers);
    let mut files = files;
    while files.len() > chunk {
        let rest = files.split_off(chunk);
        parts.push(files);
        files = rest;
    }
    parts.push(files);
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                let keep: Vec<(WorkloadName, Arc<StatusRecord>)> = part.clone();
                (scope.spawn(|| write(part)), keep)
            })
            .collect();
        let mut all = Vec::new();
        for (handle, part) in handles {
            match handle.join() {
                Ok(done) => all.extend(done),
                // A panicking writer is a bug; its files are retried, not lost.
                Err(_) => all.extend(part.into_iter().map(|(name, record)| {
                    let path = status_store::path_for(dir, &name);
                    (name, record, Err(StoreError::Panicked { path }))
                })),
            }
        }
        all
    })
}

/// One status file; if the directory vanished, recreate it and try once more. A panic (a
/// bug) becomes an error, so the file is retried, not lost.
fn write_view(dir: &Path, name: &WorkloadName, record: &StatusRecord) -> Result<(), StoreError> {
    let attempt = || {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            status_store::write_view(dir, name, record)
        }))
        .unwrap_or_else(|_| {
            Err(StoreError::Panicked {
                path: status_store::path_for(dir, name),
            })
        })
    };
    let result = attempt();
    if let Err(e) = &result
        && e.kind() == Some(std::io::ErrorKind::NotFound)
    {
        status_store::ensure_dir(dir)?;
        return attempt();
    }
    result
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
        assert_eq!(c.journal_dir, Path::new("/x").join(DEFAULT_JOURNAL_SUBDIR));
    }
}
