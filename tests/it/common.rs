//! The shared harness: an in-process `tokenvisor-idp` on 127.0.0.1, a runtime over a
//! temporary status directory with the real HTTP transport, a collector of every state
//! change, bounded polling, and readers of the status files on disk.
//!
//! Time is real but short: tokens live a few seconds, backoff starts at 100 ms and is capped
//! at 1 s, requests time out after 2 s. Nothing sleeps to let time pass: tests wait for an
//! event (a state change, an idp counter) with [`wait_until`], which polls every 20 ms and
//! fails with a clear message after a generous limit.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokenvisor::StateChange;
use tokenvisor::TokenHandle;
use tokenvisor::Transport;
use tokenvisor::spec::{GrantSpec, WorkloadPolicy, WorkloadSpec};
use tokenvisor::{HttpConfig, HttpTransport};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::policy::BackoffPolicy;
use tokenvisor_core::{Secret, StatusRecord, WorkloadName, WorkloadStatus};
use tokenvisor_idp::{ClientSpec, IdpConfig, IdpServer};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// How often [`wait_until`] looks.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// How long [`wait_until`] waits before failing.
pub(crate) const LIMIT: Duration = Duration::from_secs(30);

/// Shorthand for whole seconds.
pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A workload name (panics on an invalid one: test input).
pub(crate) fn name(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap_or_else(|e| panic!("bad workload name {s:?}: {e}"))
}

/// The client secret the idp knows each test client by.
pub(crate) fn secret_of(client_id: &str) -> String {
    format!("secret-of-{client_id}")
}

/// Waits until `cond` holds, polling every [`POLL`], for at most [`LIMIT`].
pub(crate) async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_within(what, LIMIT, cond).await;
}

/// Waits until `cond` holds, polling every [`POLL`], for at most `limit`.
pub(crate) async fn wait_until_within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The real transport, never through an environment proxy (the idp is on loopback).
pub(crate) fn transport() -> Arc<dyn Transport> {
    let http = HttpTransport::new(HttpConfig {
        use_env_proxy: false,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("cannot build the HTTP transport: {e}"));
    Arc::new(http)
}

/// Short timeouts and backoff: every scenario runs in a few seconds of real time.
pub(crate) fn fast_policy() -> WorkloadPolicy {
    WorkloadPolicy {
        request_timeout: secs(2),
        connect_timeout: secs(1),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(100),
            max: secs(1),
            multiplier: 2.0,
        },
        max_retry_after: secs(10),
        ..WorkloadPolicy::default()
    }
}

/// A refresh-token workload named `workload` for idp client `client_id`.
pub(crate) fn refresh_spec(
    idp: &IdpServer,
    workload: &str,
    client_id: &str,
    refresh_token: &str,
) -> WorkloadSpec {
    let mut spec = WorkloadSpec::new(
        name(workload),
        idp.token_url().parse().unwrap(),
        client_id,
        GrantSpec::RefreshToken {
            token: Secret::from(refresh_token),
            file: None,
        },
    )
    .with_client_secret(&secret_of(client_id));
    spec.policy = fast_policy();
    spec
}

/// A client_credentials workload named `workload` for idp client `client_id`.
pub(crate) fn client_credentials_spec(
    idp: &IdpServer,
    workload: &str,
    client_id: &str,
) -> WorkloadSpec {
    let mut spec = WorkloadSpec::new(
        name(workload),
        idp.token_url().parse().unwrap(),
        client_id,
        GrantSpec::ClientCredentials,
    )
    .with_client_secret(&secret_of(client_id));
    spec.policy = fast_policy();
    spec
}

/// The runtime's status, as last sent to persistence.
pub(crate) fn status(h: &TokenHandle) -> Option<WorkloadStatus> {
    h.status().map(|r| r.status)
}

/// Reads and parses `<dir>/<workload>.json` (panics if it is missing or does not parse).
pub(crate) fn read_status_file(dir: &Path, workload: &str) -> StatusRecord {
    let path = dir.join(format!("{workload}.json"));
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    StatusRecord::from_json(&bytes)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// Every state change of a runtime, collected by a task (and whether the collector lagged,
/// which would make "never X" assertions unsound: tests assert it did not).
#[derive(Clone, Default)]
pub(crate) struct Events {
    log: Arc<Mutex<Vec<StateChange>>>,
    seen: Arc<Mutex<HashMap<WorkloadName, HashSet<WorkloadStatus>>>>,
    lagged: Arc<AtomicU64>,
}

impl Events {
    /// Subscribes to `rt` and collects from now on.
    pub(crate) fn collect(rt: &Runtime) -> Events {
        let events = Events::default();
        let mut rx = rt.subscribe();
        let sink = events.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(change) => sink.push(change),
                    Err(RecvError::Lagged(n)) => {
                        sink.lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        events
    }

    fn push(&self, change: StateChange) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(change.name.clone())
            .or_default()
            .insert(change.status);
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(change);
    }

    /// The statuses one workload went through, in order.
    pub(crate) fn statuses_of(&self, workload: &str) -> Vec<WorkloadStatus> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| e.name.as_str() == workload)
            .map(|e| e.status)
            .collect()
    }

    /// Whether a workload was ever in `status`.
    pub(crate) fn ever(&self, workload: &str, status: WorkloadStatus) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name(workload))
            .is_some_and(|s| s.contains(&status))
    }

    /// How many workloads were ever in `status`.
    pub(crate) fn count_ever(&self, status: WorkloadStatus) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|s| s.contains(&status))
            .count()
    }

    /// Events the collector missed because it lagged (must be zero for "never" assertions).
    pub(crate) fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// How many events were collected.
    pub(crate) fn len(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One idp, one runtime, one status directory, every state change.
pub(crate) struct Harness {
    pub(crate) idp: IdpServer,
    pub(crate) rt: Runtime,
    pub(crate) events: Events,
    pub(crate) dir: tempfile::TempDir,
}

impl Harness {
    /// A fresh idp and a runtime over a fresh temporary status directory.
    pub(crate) async fn start() -> Harness {
        let idp = IdpServer::start(IdpConfig::default())
            .await
            .unwrap_or_else(|e| panic!("cannot start the idp: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let rt = Runtime::start(RuntimeConfig::new(dir.path(), transport()))
            .await
            .unwrap_or_else(|e| panic!("cannot start the runtime: {e}"));
        let events = Events::collect(&rt);
        Harness {
            idp,
            rt,
            events,
            dir,
        }
    }

    /// Registers idp client `client_id` (rotation on) whose tokens live `lifetime`, and
    /// starts a grant for it: returns the refresh token.
    pub(crate) fn client(&self, client_id: &str, lifetime: Duration) -> String {
        self.idp.register_client(
            ClientSpec::new(client_id, secret_of(client_id)).with_lifetime(lifetime),
        );
        self.idp
            .issue_refresh_token(client_id)
            .unwrap_or_else(|e| panic!("cannot issue a refresh token: {e}"))
    }

    /// Registers `client_id` with `lifetime` and adds a refresh-token workload of the same
    /// name for it.
    pub(crate) async fn add_refresh(&self, client_id: &str, lifetime: Duration) -> TokenHandle {
        let rt = self.client(client_id, lifetime);
        self.add(refresh_spec(&self.idp, client_id, client_id, &rt))
            .await
    }

    /// Adds a workload.
    pub(crate) async fn add(&self, spec: WorkloadSpec) -> TokenHandle {
        let n = spec.name.clone();
        self.rt
            .add(spec)
            .await
            .unwrap_or_else(|e| panic!("cannot add {n}: {e}"))
    }

    /// Waits until the workload's status is `want`.
    pub(crate) async fn wait_status(&self, h: &TokenHandle, want: WorkloadStatus) {
        let what = format!("{} to be {}", h.name(), want.as_str());
        wait_until(&what, || status(h) == Some(want)).await;
    }

    /// Requests the idp saw from a client.
    pub(crate) fn count(&self, client_id: &str) -> u64 {
        self.idp.counters().client(client_id)
    }

    /// Flushes the runtime, then reads the workload's status file from disk.
    pub(crate) async fn file(&self, workload: &str) -> StatusRecord {
        self.flush().await;
        read_status_file(self.dir.path(), workload)
    }

    /// Flushes the runtime and asserts every status is durable.
    pub(crate) async fn flush(&self) {
        let report = self
            .rt
            .flush(secs(10))
            .await
            .unwrap_or_else(|e| panic!("flush: {e}"));
        assert!(report.failed.is_empty(), "status writes failed: {report:?}");
    }

    /// The raw text of a workload's status file.
    pub(crate) fn raw_file(&self, workload: &str) -> String {
        let path = self.dir.path().join(format!("{workload}.json"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// Waits until the idp has seen `n` more requests from `client_id` than `since`: a window
    /// of real activity measured in events rather than in time.
    pub(crate) async fn wait_requests(&self, client_id: &str, since: u64, n: u64) {
        let what = format!("{n} more requests from {client_id}");
        wait_until(&what, || self.count(client_id) >= since + n).await;
    }
}

/// Reads one status file over and over while a scenario runs, parsing every version it
/// sees: atomic writes mean a reader never sees a partial file.
pub(crate) struct DiskWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<WatchReport>,
}

/// What a [`DiskWatch`] saw.
#[derive(Debug, Default)]
pub(crate) struct WatchReport {
    /// Successful reads (the file existed).
    pub(crate) reads: u64,
    /// Reads that did not parse, with the reason.
    pub(crate) unparsable: Vec<String>,
    /// Every distinct status seen on disk.
    pub(crate) statuses: HashSet<WorkloadStatus>,
}

impl DiskWatch {
    /// Starts watching `<dir>/<workload>.json`.
    pub(crate) fn start(dir: &Path, workload: &str) -> DiskWatch {
        let path: PathBuf = dir.join(format!("{workload}.json"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut report = WatchReport::default();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(bytes) = tokio::fs::read(&path).await {
                    report.reads += 1;
                    match StatusRecord::from_json(&bytes) {
                        Ok(r) => {
                            report.statuses.insert(r.status);
                        }
                        Err(e) => report.unparsable.push(e.to_string()),
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            report
        });
        DiskWatch { stop, task }
    }

    /// Stops and reports.
    pub(crate) async fn finish(self) -> WatchReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .unwrap_or_else(|e| panic!("the disk watcher failed: {e}"))
    }
}
