//! The persistence actor against real files, on real time (the status lane's tests on
//! tokio's paused clock). Nothing sleeps to let time pass: tests wait for events with
//! `Flush` or with a bounded polling helper.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tempfile::TempDir;
use tokenvisor::journal::Patch;
use tokenvisor::persistence::{
    FlushReport, PersistStats, PersistenceActor, PersistenceArgs, PersistenceConfig,
    PersistenceLink, PersistenceMsg, StatusLane,
};
use tokenvisor::status_store;
use tokenvisor_core::status::SCHEMA;
use tokenvisor_core::write_queue::FileWrite;
use tokenvisor_core::{StatusRecord, WorkloadName};
use tokenvisor_test_support::wait::wait_until_within;

/// Long enough never to be reached by a healthy test; short enough to fail a hung one.
const PATIENCE: Duration = Duration::from_secs(60);

fn name(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap()
}

/// A record whose `process_id` carries `i` (built from JSON so that fields added to the
/// record later keep their defaults here).
fn record(i: u32) -> StatusRecord {
    let json = format!(
        r#"{{
            "status": "auth_retrying",
            "status_context": "update #{i}",
            "created_at": "2026-09-21T10:00:00Z",
            "updated_at": "2026-09-21T10:00:00Z",
            "process_id": {i},
            "token": {{
                "schema": {SCHEMA}, "state": "transient_backoff", "expires_at": null,
                "attempt": 1, "first_failure_at": null, "next_attempt_at": null,
                "last_error": null
            }}
        }}"#
    );
    StatusRecord::from_json(json.as_bytes()).unwrap()
}

struct Harness {
    actor: ActorRef<PersistenceMsg>,
    lane: StatusLane,
    handle: tokio::task::JoinHandle<()>,
    stats: Arc<PersistStats>,
    dir: PathBuf,
    _tmp: TempDir,
}

impl Harness {
    async fn start(tweak: impl FnOnce(&mut PersistenceConfig)) -> Self {
        Self::start_with(|_| {}, tweak).await
    }

    /// `prepare` may break the status directory before the actor starts.
    async fn start_with(
        prepare: impl FnOnce(&Path),
        tweak: impl FnOnce(&mut PersistenceConfig),
    ) -> Self {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("statuses");
        prepare(&dir);
        let mut config = PersistenceConfig::new(&dir);
        // The journal apart from the status directory, which some tests break.
        config.journal_dir = tmp.path().join("state");
        config.retry_initial = Duration::from_millis(10);
        config.retry_max = Duration::from_millis(100);
        tweak(&mut config);
        let stats = Arc::new(PersistStats::default());
        let lane = StatusLane::default();
        let (actor, handle) = Actor::spawn(
            None,
            PersistenceActor,
            PersistenceArgs {
                config,
                stats: Arc::clone(&stats),
                journal: None,
                clock: tokenvisor::Clock::default(),
                lane: lane.clone(),
            },
        )
        .await
        .unwrap();
        Harness {
            actor,
            lane,
            handle,
            stats,
            dir,
            _tmp: tmp,
        }
    }

    fn update(&self, n: &WorkloadName, i: u32) {
        update(&self.actor, n, i);
    }

    /// What token actors and the supervisor send through.
    fn link(&self) -> PersistenceLink {
        PersistenceLink::new(self.actor.clone(), self.lane.clone())
    }

    async fn flush(&self, deadline: Duration) -> FlushReport {
        flush(&self.actor, deadline).await
    }

    fn on_disk(&self, n: &WorkloadName) -> Option<StatusRecord> {
        status_store::read(&self.dir, n).unwrap()
    }

    fn stat(&self, f: impl Fn(&PersistStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }

    async fn stop(self) {
        self.actor.stop(None);
        self.handle.await.unwrap();
    }
}

fn update(actor: &ActorRef<PersistenceMsg>, n: &WorkloadName, i: u32) {
    actor
        .cast(PersistenceMsg::Update {
            name: n.clone(),
            patch: Box::new(Patch {
                status: Some(Arc::new(record(i))),
                ..Patch::default()
            }),
            file: FileWrite::Now,
        })
        .unwrap();
}

async fn flush(actor: &ActorRef<PersistenceMsg>, deadline: Duration) -> FlushReport {
    tokio::time::timeout(PATIENCE, async {
        ractor::call!(actor, |reply| PersistenceMsg::Flush { deadline, reply })
    })
    .await
    .expect("flush answered")
    .unwrap()
}

fn names(prefix: &str, n: usize) -> Vec<WorkloadName> {
    (0..n).map(|i| name(&format!("{prefix}{i:03}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_of_1000_updates_for_100_workloads_lands_and_updates_coalesce() {
    let h = Harness::start(|_| {}).await;
    let wl = names("wl-", 100);
    let mut last = HashMap::new();
    for round in 0..10u32 {
        for (i, n) in wl.iter().enumerate() {
            let v = round * 1000 + u32::try_from(i).unwrap();
            h.update(n, v);
            last.insert(n.clone(), v);
        }
    }
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");

    for n in &wl {
        assert_eq!(h.on_disk(n), Some(record(last[n])), "{n}");
        assert_eq!(
            fs::metadata(status_store::path_for(&h.dir, n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    assert_eq!(
        fs::metadata(&h.dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let updates = h.stat(|s| &s.updates);
    let ok = h.stat(|s| &s.writes_ok);
    let coalesced = h.stat(|s| &s.coalesced);
    assert_eq!(updates, 1000);
    assert!(ok >= 100, "every workload written: {ok}");
    assert!(
        ok < updates,
        "updates coalesced: {ok} writes for {updates} updates"
    );
    // Every update was either written or replaced before its write began.
    assert_eq!(ok + coalesced, updates);
    assert_eq!(report.written, ok);
    assert_eq!(h.stat(|s| &s.write_failures), 0);
    assert_eq!(h.stat(|s| &s.pending), 0);
    // No temp files left: each workload's file and its (kept) lock file, and the spare of
    // each workload written more than once.
    let mut kinds = HashMap::new();
    for e in fs::read_dir(&h.dir).unwrap() {
        let file = e.unwrap().file_name().into_string().unwrap();
        let kind = [".json.spare", ".json", ".lock"]
            .into_iter()
            .find(|ext| file.ends_with(ext))
            .unwrap_or_else(|| panic!("a stray file: {file}"));
        *kinds.entry(kind).or_insert(0) += 1;
    }
    assert_eq!((kinds[".json"], kinds[".lock"]), (100, 100), "{kinds:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_keep_per_workload_order_under_concurrency() {
    // Small batches and several in flight: many workloads are written concurrently while
    // their next updates arrive.
    let h = Harness::start(|c| {
        c.max_batch = 2;
    })
    .await;
    let wl = names("ord-", 20);
    const PER_WORKLOAD: u32 = 30;

    // A reader watches the files the whole time: a workload's value never goes back.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let dir = h.dir.clone();
        let wl = wl.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut seen: HashMap<WorkloadName, u32> = HashMap::new();
            let mut observations = 0u64;
            // At least one pass after the writes, however late this thread first runs.
            while !stop.load(Ordering::Relaxed) || observations == 0 {
                for n in &wl {
                    // Files are replaced atomically: a read is a whole record or nothing.
                    let Some(r) = status_store::read(&dir, n).unwrap() else {
                        continue;
                    };
                    let prev = seen.insert(n.clone(), r.process_id);
                    assert!(
                        prev.is_none_or(|p| p <= r.process_id),
                        "{n} went back from {prev:?} to {}",
                        r.process_id
                    );
                    observations += 1;
                }
                std::thread::yield_now();
            }
            observations
        })
    };

    // Each sender owns two workloads (one token actor per workload in real life).
    let mut senders = tokio::task::JoinSet::new();
    for pair in wl.chunks(2) {
        let actor = h.actor.clone();
        let pair = pair.to_vec();
        senders.spawn(async move {
            for k in 1..=PER_WORKLOAD {
                for n in &pair {
                    update(&actor, n, k);
                }
                tokio::task::yield_now().await;
            }
        });
    }
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }
    let report = h.flush(PATIENCE).await;
    stop.store(true, Ordering::Relaxed);
    let observations = reader.join().expect("no workload went back");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(observations > 0);
    for n in &wl {
        assert_eq!(h.on_disk(n), Some(record(PER_WORKLOAD)), "{n}");
    }
    assert_eq!(
        h.stat(|s| &s.writes_ok) + h.stat(|s| &s.coalesced),
        u64::from(PER_WORKLOAD) * 20
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_counted_retried_reported_and_land_once_the_dir_is_fixed() {
    // Tests run as root, which ignores permission bits: make the failure real by putting a
    // regular file where the status directory should be.
    let h = Harness::start_with(|dir| fs::write(dir, b"not a directory").unwrap(), |_| {}).await;
    let wl = names("f-", 5);
    for (i, n) in wl.iter().enumerate() {
        h.update(n, 1);
        h.update(n, 10 + u32::try_from(i).unwrap());
    }

    let report = h.flush(Duration::from_millis(200)).await;
    assert_eq!(report.failed, wl, "{report:?}");
    assert_eq!(report.written, 0);
    // The flush answers at its deadline; a commit or a file job still running then counts
    // its failures (and publishes what is pending) when it ends: wait for them, bounded.
    let mut failures = 0;
    wait_until_within(
        "each workload's write failed (5 write failures, 5 pending)",
        PATIENCE,
        || {
            failures = h.stat(|s| &s.write_failures);
            failures >= 5 && h.stat(|s| &s.pending) == 5
        },
    )
    .await;
    assert!(failures >= 5, "each workload's write failed: {failures}");
    assert_eq!(h.stat(|s| &s.writes_ok), 0);
    assert_eq!(h.stat(|s| &s.pending), 5);

    // They keep being retried on their own, with backoff.
    wait_until_within("more retries", PATIENCE, || {
        h.stat(|s| &s.write_failures) >= failures + 5
    })
    .await;

    // Fix it: the actor recreates the directory on its next attempt.
    fs::remove_file(&h.dir).unwrap();
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.written, 5);
    for (i, n) in wl.iter().enumerate() {
        assert_eq!(
            h.on_disk(n),
            Some(record(10 + u32::try_from(i).unwrap())),
            "{n}"
        );
    }
    assert_eq!(
        fs::metadata(&h.dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(h.stat(|s| &s.pending), 0);
    assert_eq!(h.stat(|s| &s.writes_ok), 5);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_dir_under_a_file_fails_until_the_file_goes() {
    let tmp = TempDir::new().unwrap();
    let blocker = tmp.path().join("blocker");
    fs::write(&blocker, b"x").unwrap();
    let h = Harness::start(|c| c.dir = blocker.join("statuses")).await;
    let n = name("under");
    h.update(&n, 7);
    let report = h.flush(Duration::from_millis(100)).await;
    assert_eq!(report.failed, std::slice::from_ref(&n));
    // Answered at its deadline: the failing write may be counted after (a slow commit).
    wait_until_within("a write failure counted", PATIENCE, || {
        h.stat(|s| &s.write_failures) >= 1
    })
    .await;

    fs::remove_file(&blocker).unwrap();
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        status_store::read(&blocker.join("statuses"), &n).unwrap(),
        Some(record(7))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_status_dir_is_recreated_without_a_failure() {
    let h = Harness::start(|_| {}).await;
    let n = name("again");
    h.update(&n, 1);
    assert!(h.flush(PATIENCE).await.failed.is_empty());
    fs::remove_dir_all(&h.dir).unwrap();
    h.update(&n, 2);
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(h.on_disk(&n), Some(record(2)));
    assert_eq!(h.stat(|s| &s.write_failures), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_on_an_idle_actor_answers_at_once() {
    let h = Harness::start(|_| {}).await;
    // A deadline far beyond the test's patience: only an immediate answer passes.
    let report = h.flush(Duration::from_secs(24 * 3600)).await;
    assert_eq!(report, FlushReport::default());

    // Also once everything is written.
    let n = name("idle");
    h.update(&n, 1);
    assert_eq!(h.flush(PATIENCE).await.written, 1);
    assert_eq!(
        h.flush(Duration::from_secs(24 * 3600)).await,
        FlushReport::default()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_flushes_each_see_their_own_updates() {
    let h = Harness::start(|c| {
        c.max_batch = 4;
    })
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..50u32 {
        let actor = h.actor.clone();
        let dir = h.dir.clone();
        tasks.spawn(async move {
            let n = name(&format!("cf-{t:02}"));
            let mut written = 0;
            for k in 0..4 {
                let v = t * 100 + k;
                update(&actor, &n, v);
                let report = flush(&actor, PATIENCE).await;
                assert!(report.failed.is_empty(), "{report:?}");
                written += report.written;
                // What this task sent before its flush is on disk.
                assert_eq!(status_store::read(&dir, &n).unwrap(), Some(record(v)));
            }
            written
        });
    }
    let mut written = 0;
    while let Some(r) = tasks.join_next().await {
        written += r.unwrap();
    }
    written += h.flush(PATIENCE).await.written;
    // Every write is reported by exactly one flush.
    assert_eq!(written, h.stat(|s| &s.writes_ok));
    assert_eq!(h.stat(|s| &s.writes_ok), 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_waiting_flushes_with_what_is_not_written() {
    let h = Harness::start_with(|dir| fs::write(dir, b"blocked").unwrap(), |_| {}).await;
    let n = name("stuck");
    h.update(&n, 1);

    // Cast two flushes in order; once the second (deadline 0) answers, the first is waiting.
    let (tx1, rx1) = tokio::sync::oneshot::channel();
    h.actor
        .cast(PersistenceMsg::Flush {
            deadline: Duration::from_secs(24 * 3600),
            reply: tx1.into(),
        })
        .unwrap();
    let (tx2, rx2) = tokio::sync::oneshot::channel();
    h.actor
        .cast(PersistenceMsg::Flush {
            deadline: Duration::ZERO,
            reply: tx2.into(),
        })
        .unwrap();
    let second = tokio::time::timeout(PATIENCE, rx2).await.unwrap().unwrap();
    assert_eq!(second.failed, std::slice::from_ref(&n));

    let Harness {
        actor,
        handle,
        _tmp: tmp,
        ..
    } = h;
    actor.stop(None);
    handle.await.unwrap();
    let first = tokio::time::timeout(PATIENCE, rx1).await.unwrap().unwrap();
    assert_eq!(first.failed, [n]);
    drop(tmp);
}

/// Trust §5: a workload whose status file ToolHive has locked (`<name>.lock`) is deferred,
/// never dropped and never counted as a failure, while the others of its batch are written;
/// its latest record lands once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_locked_by_toolhive_is_deferred_while_the_others_are_written() {
    use tokenvisor::locks::{FileLock, TryLock};
    let h = Harness::start_with(|d| fs::create_dir_all(d).unwrap(), |_| {}).await;
    let (locked, free) = (name("locked"), name("free"));
    let TryLock::Locked(lock) =
        FileLock::try_lock(&status_store::lock_path_for(&h.dir, &locked)).unwrap()
    else {
        panic!("free lock");
    };
    h.update(&locked, 1);
    h.update(&free, 1);
    wait_until_within(
        "the free one written and the locked one deferred twice",
        PATIENCE,
        || h.on_disk(&free).is_some() && h.stat(|s| &s.deferred) >= 2,
    )
    .await;
    assert_eq!(h.on_disk(&locked), None, "nothing written under the lock");
    assert_eq!(h.stat(|s| &s.write_failures), 0);
    // The free file is on disk (and the deferral counted) before the actor handles the
    // job's end and publishes what is pending: wait for the count, bounded.
    wait_until_within("pending 1 (the locked one)", PATIENCE, || {
        h.stat(|s| &s.pending) == 1
    })
    .await;
    // A newer record while deferred replaces the pending one.
    h.update(&locked, 2);

    drop(lock);
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(h.on_disk(&locked), Some(record(2)));
    // The lock file is kept between writes (status_store's module docs).
    assert!(status_store::lock_path_for(&h.dir, &locked).exists());
    h.stop().await;
}

fn status_patch(i: u32) -> Patch {
    Patch {
        status: Some(Arc::new(record(i))),
        ..Patch::default()
    }
}

/// The status lane: a burst of status changes of one workload is one slot, taken by one
/// wake-up, so it costs one journal commit and one file write. Through the mailbox (one
/// message per change, as before the lane) the first change started a commit of its own
/// and the other 999 followed in a second one: two commits, two file writes.
#[tokio::test(start_paused = true)]
async fn a_burst_of_status_changes_of_one_workload_is_one_commit_and_one_file_write() {
    let h = Harness::start(|_| {}).await;
    let link = h.link();
    let a = name("a");
    for i in 0..1000 {
        link.update(a.clone(), status_patch(i), FileWrite::Now)
            .unwrap();
    }
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(h.on_disk(&a), Some(record(999)));
    assert_eq!(h.stat(|s| &s.updates), 1000);
    assert_eq!(
        h.stat(|s| &s.commits),
        1,
        "one journal commit for the burst"
    );
    assert_eq!(h.stat(|s| &s.writes_ok), 1, "one file write for the burst");
    assert_eq!(h.stat(|s| &s.coalesced), 999);
    assert!(h.lane.is_empty());
    h.stop().await;
}

/// A flush sent after a burst of status changes of many workloads covers all of them and is
/// answered after one journal commit: the burst reached the actor as one wake-up, not as
/// 20,000 messages ahead of the flush (through the mailbox the first change's commit ran
/// alone, so the flush waited for a second one).
#[tokio::test(start_paused = true)]
async fn a_flush_after_a_burst_of_many_workloads_is_answered_after_one_commit() {
    let h = Harness::start(|_| {}).await;
    let link = h.link();
    let wl = names("burst-", 2000);
    for round in 0..10u32 {
        for (i, n) in wl.iter().enumerate() {
            let v = round * 10_000 + u32::try_from(i).unwrap();
            link.update(n.clone(), status_patch(v), FileWrite::Now)
                .unwrap();
        }
    }
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(h.stat(|s| &s.commits), 1);
    assert_eq!(h.stat(|s| &s.writes_ok), 2000);
    for (i, n) in wl.iter().enumerate() {
        let v = 9 * 10_000 + u32::try_from(i).unwrap();
        assert_eq!(h.on_disk(n), Some(record(v)), "{n}");
    }
    h.stop().await;
}

/// Each field travels one way: the status record through the lane, the credential through
/// the mailbox (in order with `Commit`). Interleaved, each ends as its last value, and a
/// credential is never overtaken by an older one (generations only rise in the journal).
#[tokio::test(start_paused = true)]
async fn status_through_the_lane_and_credentials_through_the_mailbox_each_keep_their_order() {
    use tokenvisor::journal::{Journal, StoredCredential};
    use tokenvisor_core::Secret;
    let h = Harness::start(|_| {}).await;
    let link = h.link();
    let wl = names("mixed-", 50);
    for g in 1..=20u64 {
        for n in &wl {
            let v = u32::try_from(g).unwrap();
            // A status through the lane, a credential through the mailbox.
            link.update(n.clone(), status_patch(v), FileWrite::Now)
                .unwrap();
            let credential = Patch {
                credential: Some(StoredCredential {
                    refresh_token: Some(Secret::from(format!("rt-{n}-{g}"))),
                    generation: g,
                }),
                ..Patch::default()
            };
            link.update(n.clone(), credential, FileWrite::None).unwrap();
            if g % 5 == 0 {
                // A commit in between, as a rotated token's.
                let commit = Patch {
                    credential: Some(StoredCredential {
                        refresh_token: Some(Secret::from(format!("rt-{n}-{g}-c"))),
                        generation: g,
                    }),
                    ..Patch::default()
                };
                let name = n.clone();
                let answer = ractor::call!(h.actor, |reply| PersistenceMsg::Commit {
                    name,
                    patch: Box::new(commit),
                    reply
                })
                .unwrap();
                assert_eq!(answer, tokenvisor::persistence::Durability::Durable);
            }
        }
    }
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");
    // A second connection reads what the actor committed (WAL), before the directory goes.
    let journal = Journal::open(&h.dir.parent().unwrap().join("state")).unwrap();
    let rows = journal.load().unwrap();
    drop(journal);
    for n in &wl {
        let row = &rows[n];
        let credential = row.credential.as_ref().unwrap();
        assert_eq!(credential.generation, 20, "{n}");
        assert_eq!(
            credential.refresh_token.as_ref().map(Secret::expose),
            Some(format!("rt-{n}-20-c").as_str()),
            "{n}: the last credential sent"
        );
        assert_eq!(row.status.as_ref(), Some(&record(20)), "{n}");
    }
    h.stop().await;
}

/// A mailbox patch that also carries a served token (an adoption clears the old one) and
/// the lane patches around it are applied in the order sent: the first token served after
/// an adoption is kept. Before, the lane was taken before the adoption's message was
/// handled, so the clear landed last and the journal lost the token (the next start
/// refreshed a workload whose token was still valid).
#[tokio::test(start_paused = true)]
async fn a_served_token_sent_after_an_adoption_is_not_cleared_by_it() {
    use tokenvisor::journal::{Journal, StoredAccess, StoredCredential};
    use tokenvisor_core::{Secret, Timestamp};
    let h = Harness::start(|_| {}).await;
    let link = h.link();
    let access = |t: &str| StoredAccess {
        token: Secret::from(t),
        token_type: "Bearer".into(),
        expires_at: Timestamp::from_millis(4_000_000_000_000),
    };
    let wl = names("adopted-", 20);
    for n in &wl {
        // A status before the adoption (it travels in the adoption's message, in front).
        link.update(n.clone(), status_patch(1), FileWrite::Now)
            .unwrap();
        let adoption = Patch {
            credential: Some(StoredCredential {
                refresh_token: Some(Secret::from(format!("rt-{n}"))),
                generation: 1,
            }),
            access: Some(None),
            ..Patch::default()
        };
        link.update(n.clone(), adoption, FileWrite::None).unwrap();
        // The first refresh's token and status, through the lane, before the actor ran.
        let served = Patch {
            access: Some(Some(access(&format!("at-{n}")))),
            ..status_patch(2)
        };
        link.update(n.clone(), served, FileWrite::Now).unwrap();
    }
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(h.lane.is_empty(), "nothing held back after the flush");
    let journal = Journal::open(&h.dir.parent().unwrap().join("state")).unwrap();
    let rows = journal.load().unwrap();
    drop(journal);
    for n in &wl {
        let row = &rows[n];
        assert_eq!(
            row.access.as_ref().map(|a| a.token.expose()),
            Some(format!("at-{n}").as_str()),
            "{n}: the token served after the adoption"
        );
        assert_eq!(row.status.as_ref(), Some(&record(2)), "{n}");
        assert_eq!(h.on_disk(n), Some(record(2)), "{n}");
    }
    h.stop().await;
}

/// Deferred routine files go into file jobs at most `routine_files_per_job` at a time: the
/// ones left over stay due and every one of them lands, in the jobs that follow (each job's
/// end starts the next; no timer is armed for them while a job runs), beside a status
/// change that arrives meanwhile.
#[tokio::test(start_paused = true)]
async fn due_routine_files_beyond_one_job_all_land_in_the_jobs_that_follow() {
    let h = Harness::start(|c| c.routine_files_per_job = 10).await;
    let link = h.link();
    let wl = names("routine-", 50);
    for (i, n) in wl.iter().enumerate() {
        link.update(
            n.clone(),
            status_patch(u32::try_from(i).unwrap()),
            FileWrite::Now,
        )
        .unwrap();
    }
    assert!(h.flush(PATIENCE).await.failed.is_empty());
    // A routine refresh of each, within the interval: committed, its file deferred.
    for (i, n) in wl.iter().enumerate() {
        let v = 1000 + u32::try_from(i).unwrap();
        link.update(n.clone(), status_patch(v), FileWrite::Routine)
            .unwrap();
    }
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(h.stat(|s| &s.writes_ok), 50, "routine files deferred");
    // The interval passes: all 50 are due (paused clock: no real wait).
    tokio::time::sleep(Duration::from_secs(31)).await;
    let x = name("x");
    link.update(x.clone(), status_patch(7), FileWrite::Now)
        .unwrap();
    let report = h.flush(PATIENCE).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(h.on_disk(&x), Some(record(7)));
    wait_until_within("every routine file written", PATIENCE, || {
        h.stat(|s| &s.writes_ok) == 101
    })
    .await;
    for (i, n) in wl.iter().enumerate() {
        let v = 1000 + u32::try_from(i).unwrap();
        assert_eq!(h.on_disk(n), Some(record(v)), "{n}");
    }
    h.stop().await;
}
