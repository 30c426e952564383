//! The embedding API.
//!
//! ```text
//!   host's actor (optional parent)
//!        └── tokenvisor supervisor ──┬── token actor "github-mcp"   (one per workload)
//!                                    ├── token actor "jira"
//!                                    └── …
//!   persistence actor (linked to the supervisor) ── status files
//! ```
//! [`Runtime::start`] recovers the status directory, spawns the persistence actor and the
//! supervisor (under a host's own actor with [`Runtime::start_linked`]), and returns a
//! cloneable front door. Token reads go through [`TokenHandle`]s, never through a mailbox.
//!
//! The timer service (`crate::timers`) is supervised: when it restarts, the runtime asks the
//! supervisor to have every token actor arm its timer again. [`Runtime::health`] says whether
//! timers can fire at all (the daemon's `/healthz` answers 503 while they cannot).
//! [`Runtime::set_endpoint_concurrency`] applies a changed `endpoint_concurrency` to a live
//! endpoint gate without restarting any workload.
//!
//! ## One reconcile path
//! [`Runtime::reconcile`] brings the running workloads to a wanted set: the diff is the pure
//! [`reconcile::plan`] (running specs from the supervisor), and applying it keeps the
//! one-owner rule: a stopped or restarted workload's removal answers only after its actor
//! stopped, which waits for its refresh in flight; a restarted workload presents the refresh
//! token its old actor last stored (taken from its credential store after the removal, and
//! its refresh-token file read again just before it starts), unless the operator configured
//! a new inline token.
//! A daemon calls it at start (from nothing: every workload starts) and at every reload. A
//! caller's `admit` hook runs before each start (the daemon takes the workload's
//! refresh-token file lock there, `crate::locks::hold_credentials`); a refusal is logged and
//! that workload is not started.
//!
//! ## Cluster mode (feature `cluster`)
//! With [`RuntimeConfig`]'s `cluster` set, the runtime joins the cluster on etcd (a
//! `ClusterLink`: connection, coordinator, reconnection after a lost lease, status mirror)
//! and forwards the shards active here to the supervisor, which runs only their workloads.
//! Every instance is given (and reconciles) the same whole workload list. Start-up does not
//! wait for etcd: workloads stay parked until their shard is claimed. [`Runtime::shutdown`]
//! stops the actors (each waits for its attempt in flight), then revokes the lease, so the
//! other instances take the shards over at once instead of after the TTL.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorRef};
use tokenvisor_core::policy::RestartIntensity;
use tokenvisor_core::{TokenUrl, WorkloadName};
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::credentials::NewCredentials;
use crate::gate::Gates;
use crate::handle::TokenHandle;
use crate::journal::Journal;
use crate::persistence::{
    FlushReport, PersistStats, PersistenceActor, PersistenceArgs, PersistenceConfig,
    PersistenceLink, PersistenceMsg, StatusLane,
};
use crate::spec::{AssertionAlg, GrantSpec, WorkloadSpec};
use crate::status_store::{self, CorruptFile};
use crate::supervisor::{Supervisor, SupervisorArgs, SupervisorError, SupervisorMsg, WorkloadView};
use crate::timers::Timers;
use crate::token::{Deps, StateChange};
use crate::transport::Transport;

pub(crate) mod reconcile;

/// Start-up's blocking part: the status directory recovered, the state journal opened and
/// read, and every status file that differs from its journal record rewritten from it (the
/// files are views; the journal is what was durable). Returns the recovered files (journal
/// records replacing them), the journal, its rows and how many files were rewritten.
fn recover_all(
    dir: &std::path::Path,
    journal_dir: &std::path::Path,
) -> Result<
    (
        status_store::Recovered,
        Journal,
        std::collections::HashMap<WorkloadName, crate::journal::Entry>,
        usize,
    ),
    RuntimeError,
> {
    let status_err = |reason: String| RuntimeError::StatusDir {
        dir: dir.to_path_buf(),
        reason,
    };
    status_store::ensure_dir(dir).map_err(|e| status_err(e.to_string()))?;
    let mut recovered = status_store::recover(dir).map_err(|e| status_err(e.to_string()))?;
    let journal_err = |e: crate::journal::JournalError| RuntimeError::Journal {
        path: e.path.clone(),
        reason: e.to_string(),
    };
    let journal = Journal::open(journal_dir).map_err(journal_err)?;
    let entries = journal.load().map_err(journal_err)?;
    let mut rewritten = 0;
    for (name, entry) in &entries {
        let Some(record) = &entry.status else {
            continue;
        };
        // Only files that exist and lag their record: a workload's own start writes its
        // file, and a missing file of a workload no longer configured stays missing.
        if recovered
            .records
            .get(name)
            .is_some_and(|file| file != record)
        {
            match status_store::write_view(dir, name, record) {
                Ok(()) => rewritten += 1,
                Err(e) => {
                    tracing::warn!(workload = %name, "status file not rewritten from the journal: {e}");
                }
            }
            recovered.records.insert(name.clone(), record.clone());
        }
    }
    Ok((recovered, journal, entries, rewritten))
}

/// How long RPCs into the supervisor may take before the runtime reports it unresponsive.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a restarted workload's refresh-token file may take to read again.
const REREAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`Runtime::reconcile`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Workloads wanted and not running (counted whether or not they started).
    pub added: usize,
    /// Workloads no longer wanted and removed.
    pub removed: usize,
    /// Workloads restarted because their settings changed.
    pub changed: usize,
    /// Endpoints whose gate was resized.
    pub endpoints_resized: usize,
    /// Workloads running afterwards.
    pub total: usize,
}

/// Errors of the embedding API.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The status directory could not be prepared or read.
    #[error("status directory {dir}: {reason}")]
    StatusDir {
        /// The configured status directory.
        dir: PathBuf,
        /// What failed, as text (no secret).
        reason: String,
    },
    /// The state journal could not be opened or read.
    #[error("state journal {}: {reason}", path.display())]
    Journal {
        /// The journal's database file.
        path: PathBuf,
        /// What failed, as text (no secret).
        reason: String,
    },
    /// An actor could not be spawned.
    #[error("cannot spawn the {what} actor: {reason}")]
    Spawn {
        /// Which actor (`persistence`, `supervisor`, …).
        what: &'static str,
        /// What failed, as text (no secret).
        reason: String,
    },
    /// The supervisor refused.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// An actor did not answer.
    #[error("the {what} actor did not answer: {reason}")]
    Unresponsive {
        /// Which actor (`persistence`, `supervisor`, …).
        what: &'static str,
        /// What failed, as text (no secret).
        reason: String,
    },
    /// A workload spec breaks the rules a configuration file's workload is held to
    /// ([`WorkloadSpec::check`]): nothing was started.
    #[error("workload {name}: {}", problems.iter().map(|p| format!("{}: {}", p.key, p.reason)).collect::<Vec<_>>().join("; "))]
    InvalidSpec {
        /// The workload.
        name: WorkloadName,
        /// Each broken rule: the key as the configuration names it, and why (no secret:
        /// the checks read no secret value).
        problems: Vec<tokenvisor_core::spec::rules::Invalid>,
    },
}

/// What `client_key_file`'s key may sign with, for [`WorkloadSpec::check`] at
/// [`Runtime::add`]: the key file is read at each attempt (it may be rotated), not here, so
/// any asymmetric algorithm is taken to fit; a missing key file is still refused.
const ANY_KEY_ALG: &[AssertionAlg] = &[
    AssertionAlg::RS256,
    AssertionAlg::PS256,
    AssertionAlg::ES256,
    AssertionAlg::ES384,
    AssertionAlg::EdDSA,
];

/// How to start a runtime.
pub struct RuntimeConfig {
    /// Where status files live.
    pub status_dir: PathBuf,
    /// The token endpoint transport ([`HttpTransport`](crate::HttpTransport) in production).
    pub transport: Arc<dyn Transport>,
    /// The clock (default: anchored at the current wall time).
    pub clock: Option<Clock>,
    /// Restart budget per workload.
    pub restart: RestartIntensity,
    /// Jitter seed (default: random).
    pub seed: Option<u64>,
    /// Capacity of the state-change broadcast (subscribers lagging further lose events).
    pub event_capacity: usize,
    /// Persistence tuning (its `dir` is overwritten with `status_dir`).
    pub persistence: Option<PersistenceConfig>,
    /// The state journal's directory (the daemon: `journal::dir_for(service.state_dir,
    /// status_dir)`); `None`: the persistence settings' `journal_dir` (by default a hidden
    /// `.tokenvisor-state` directory inside the status directory).
    pub state_dir: Option<PathBuf>,
    /// Cluster mode on etcd (`None`: one process, as always).
    #[cfg(feature = "cluster")]
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

impl RuntimeConfig {
    /// Defaults for a status directory and a transport.
    pub fn new(status_dir: impl Into<PathBuf>, transport: Arc<dyn Transport>) -> Self {
        RuntimeConfig {
            status_dir: status_dir.into(),
            transport,
            clock: None,
            restart: RestartIntensity::default(),
            seed: None,
            event_capacity: 4096,
            persistence: None,
            state_dir: None,
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("status_dir", &self.status_dir)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

/// What start-up found in the status directory.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Records read (each resumes its workload when it is added).
    pub recovered: usize,
    /// Files that did not parse, set aside as `<name>.json.corrupted`.
    pub corrupted: Vec<CorruptFile>,
}

/// Whether the runtime can do its work, as `/healthz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// False while the timer service is down: no refresh, retry, deadline or expiry fires.
    pub timer_service_up: bool,
    /// How many times the timer service was restarted.
    pub timer_service_restarts: u64,
}

impl Health {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.timer_service_up
    }

    /// Why the runtime is unhealthy, if it is.
    pub fn problem(&self) -> Option<&'static str> {
        (!self.timer_service_up)
            .then_some("the timer service is down and restarting: no timer can fire")
    }
}

/// A running tokenvisor. Cheap to clone: every clone talks to the same actors.
///
/// Start one with [`Runtime::start`] (or [`Runtime::start_linked`] under a host's own actor),
/// [`add`](Runtime::add) workloads and read their tokens through the returned
/// [`TokenHandle`]s; [`shutdown`](Runtime::shutdown) persists every status as `stopped`.
///
/// # Examples
///
/// A runtime on a temporary status directory. The transport here is the in-memory
/// `FakeTransport` of the `test-util` feature, on tokio's paused clock, so the example needs
/// no identity provider; production code passes
/// `Arc::new(HttpTransport::new(HttpConfig::default())?)` instead.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use tokenvisor::spec::{GrantSpec, WorkloadSpec};
/// use tokenvisor::testing::{FakeReply, FakeTransport};
/// use tokenvisor::{Runtime, RuntimeConfig};
/// use tokenvisor_core::{Secret, WorkloadName, WorkloadStatus};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let fake = FakeTransport::new();
/// fake.set_default(FakeReply::token(3600)); // every exchange: a token for an hour
/// let rt = Runtime::start(RuntimeConfig::new(dir.path(), Arc::new(fake.clone()))).await?;
///
/// let spec = WorkloadSpec::new(
///     WorkloadName::new("github-mcp")?,
///     "https://idp.example/token".parse()?,
///     "client-id",
///     GrantSpec::RefreshToken { token: Secret::from("rt-0".to_owned()), file: None },
/// );
/// let handle = rt.add(spec).await?;
/// let mut changes = rt.subscribe();
/// while handle.current().is_err() {
///     // the first exchange runs in a task; its result arrives as a state change
///     let change = changes.recv().await?;
///     assert_ne!(change.status, WorkloadStatus::Unauthenticated);
/// }
/// let token = handle.current().expect("a fresh token");
/// assert!(!token.expose().is_empty()); // `Authorization: Bearer {token.expose()}`
///
/// rt.shutdown(Duration::from_secs(5)).await?; // status files now say `stopped`
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Runtime {
    supervisor: ActorRef<SupervisorMsg>,
    persistence: ActorRef<PersistenceMsg>,
    events: broadcast::Sender<StateChange>,
    stats: Arc<PersistStats>,
    gates: Arc<Gates>,
    clock: Clock,
    recovery: Arc<RecoveryReport>,
    timers: Timers,
    /// Cluster mode: the link and the switch that stops its tasks.
    #[cfg(feature = "cluster")]
    cluster: Option<(
        Arc<crate::cluster::ClusterLink>,
        Arc<tokio::sync::watch::Sender<bool>>,
    )>,
}

impl Runtime {
    /// Starts a runtime with no parent actor.
    ///
    /// # Errors
    /// [`RuntimeError::StatusDir`] when the status directory cannot be created or read;
    /// [`RuntimeError::Spawn`] when the persistence actor, the supervisor or the timer
    /// service cannot be spawned.
    pub async fn start(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        Self::start_inner(config, None).await
    }

    /// Starts a runtime whose supervisor is a linked child of `parent` (a host application's
    /// own actor): the host sees the supervisor's failure or exit as a supervision event.
    ///
    /// # Errors
    /// As [`Runtime::start`].
    pub async fn start_linked(
        config: RuntimeConfig,
        parent: ActorCell,
    ) -> Result<Runtime, RuntimeError> {
        Self::start_inner(config, Some(parent)).await
    }

    async fn start_inner(
        config: RuntimeConfig,
        parent: Option<ActorCell>,
    ) -> Result<Runtime, RuntimeError> {
        let clock = config.clock.unwrap_or_default();
        let dir = config.status_dir.clone();
        let status_err = |reason: String| RuntimeError::StatusDir {
            dir: dir.clone(),
            reason,
        };
        let mut pconfig = config
            .persistence
            .unwrap_or_else(|| PersistenceConfig::new(dir.clone()));
        if pconfig.dir != dir {
            pconfig.dir = dir.clone();
        }
        if let Some(state_dir) = &config.state_dir {
            pconfig.journal_dir = state_dir.clone();
        }
        let (recovered, journal, entries, rewritten) = {
            let dir = dir.clone();
            let journal_dir = pconfig.journal_dir.clone();
            tokio::task::spawn_blocking(move || recover_all(&dir, &journal_dir))
                .await
                .map_err(|e| status_err(e.to_string()))??
        };
        for c in &recovered.corrupted {
            tracing::warn!(workload = %c.name, "corrupt status file set aside as .corrupted: {}", c.reason);
        }
        if rewritten > 0 {
            tracing::info!(
                files = rewritten,
                "status files rewritten from the state journal"
            );
        }
        let recovery = Arc::new(RecoveryReport {
            recovered: recovered.records.len().max(entries.len()),
            corrupted: recovered.corrupted.clone(),
        });

        let stats = Arc::new(PersistStats::default());
        let lane = StatusLane::default();
        let (persistence, _) = Actor::spawn(
            None,
            PersistenceActor,
            PersistenceArgs {
                config: pconfig,
                stats: stats.clone(),
                journal: Some(journal),
                clock,
                lane: lane.clone(),
            },
        )
        .await
        .map_err(|e| RuntimeError::Spawn {
            what: "persistence",
            reason: e.to_string(),
        })?;

        let (events, _) = broadcast::channel(config.event_capacity.max(16));
        let gates = Arc::new(Gates::default());
        let timers = Timers::start();
        #[cfg(feature = "cluster")]
        let link = config.cluster.map(crate::cluster::ClusterLink::new);
        let deps = Arc::new(Deps {
            transport: config.transport,
            persistence: PersistenceLink::new(persistence.clone(), lane),
            events: events.clone(),
            clock,
            process_id: std::process::id(),
            timers: timers.clone(),
            #[cfg(feature = "cluster")]
            cluster: link.clone(),
        });
        let args = SupervisorArgs {
            deps,
            gates: gates.clone(),
            intensity: config.restart,
            recovered: recovered.records,
            journal: entries,
            seed: config.seed.unwrap_or_else(|| fastrand::u64(..)),
        };
        let spawned = match parent {
            Some(parent) => Actor::spawn_linked(None, Supervisor, args, parent).await,
            None => Actor::spawn(None, Supervisor, args).await,
        };
        let (supervisor, _) = spawned.map_err(|e| RuntimeError::Spawn {
            what: "supervisor",
            reason: e.to_string(),
        })?;
        // The persistence actor lives and dies with the supervisor.
        persistence.get_cell().link(supervisor.get_cell());
        // A restarted timer service holds no timer: every token actor arms its own again.
        let mut restarts = timers.restarts();
        let sup = supervisor.clone();
        tokio::spawn(async move {
            while restarts.changed().await.is_ok() {
                if sup.cast(SupervisorMsg::RearmTimers).is_err() {
                    return; // the supervisor is gone: nothing to re-arm
                }
            }
        });
        #[cfg(feature = "cluster")]
        let cluster = link.map(|link| {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            link.spawn_driver(clock, stopped);
            // The shards active here, to the supervisor (it parks and starts workloads).
            let mut active = link.active();
            let sup = supervisor.clone();
            tokio::spawn(async move {
                loop {
                    let shards = active.borrow_and_update().clone();
                    if sup.cast(SupervisorMsg::Shards(shards)).is_err() {
                        return;
                    }
                    if active.changed().await.is_err() {
                        return;
                    }
                }
            });
            (link, Arc::new(stop))
        });
        Ok(Runtime {
            supervisor,
            persistence,
            events,
            stats,
            gates,
            clock,
            recovery,
            timers,
            #[cfg(feature = "cluster")]
            cluster,
        })
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(ractor::RpcReplyPort<T>) -> SupervisorMsg,
    ) -> Result<T, RuntimeError> {
        match self.supervisor.call(f, Some(CALL_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
            Ok(ractor::rpc::CallResult::Timeout) => Err(RuntimeError::Unresponsive {
                what: "supervisor",
                reason: "timed out".into(),
            }),
            Ok(ractor::rpc::CallResult::SenderError) => Err(RuntimeError::Unresponsive {
                what: "supervisor",
                reason: "dropped the request".into(),
            }),
            Err(e) => Err(RuntimeError::Unresponsive {
                what: "supervisor",
                reason: e.to_string(),
            }),
        }
    }

    /// Starts a workload and returns its handle. A status file left by an earlier run
    /// resumes it (an `unauthenticated` workload stays so until its credentials change).
    ///
    /// # Errors
    /// [`RuntimeError::Supervisor`] with [`SupervisorError::AlreadyExists`] when a workload of
    /// that name runs, [`SupervisorError::Spawn`] when its actor cannot start,
    /// [`SupervisorError::ShuttingDown`] during shutdown; [`RuntimeError::InvalidSpec`] when
    /// the spec breaks a rule a configuration file's workload is held to (a zero timeout, an
    /// error code outside RFC 6749's grammar, `private_key_jwt` without a key file, …: the
    /// same checks, from [`WorkloadSpec::check`]); [`RuntimeError::Unresponsive`] when the
    /// supervisor does not answer within a minute (it is stopped or stuck).
    pub async fn add(&self, spec: WorkloadSpec) -> Result<TokenHandle, RuntimeError> {
        let key_algs = spec
            .policy
            .provider
            .client_key_file
            .as_ref()
            .map(|_| ANY_KEY_ALG);
        let problems = spec.check(key_algs);
        if !problems.is_empty() {
            return Err(RuntimeError::InvalidSpec {
                name: spec.name,
                problems,
            });
        }
        Ok(self
            .call(|r| SupervisorMsg::Add(Box::new(spec), r))
            .await??)
    }

    /// Stops and forgets a workload; its status file says `stopped`. False if unknown.
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the supervisor does not answer within a minute (it is
    /// stopped or stuck).
    pub async fn remove(&self, name: &WorkloadName) -> Result<bool, RuntimeError> {
        self.call(|r| SupervisorMsg::Remove(name.clone(), r)).await
    }

    /// A workload's handle.
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the supervisor does not answer within a minute (it is
    /// stopped or stuck).
    pub async fn handle(&self, name: &WorkloadName) -> Result<Option<TokenHandle>, RuntimeError> {
        self.call(|r| SupervisorMsg::Handle(name.clone(), r)).await
    }

    /// Every workload, sorted by name.
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the supervisor does not answer within a minute (it is
    /// stopped or stuck).
    pub async fn list(&self) -> Result<Vec<WorkloadView>, RuntimeError> {
        self.call(SupervisorMsg::List).await
    }

    /// One workload, if it exists.
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the supervisor does not answer within a minute (it is
    /// stopped or stuck).
    pub async fn get(&self, name: &WorkloadName) -> Result<Option<WorkloadView>, RuntimeError> {
        self.call(|r| SupervisorMsg::Get(name.clone(), r)).await
    }

    /// How many workloads there are.
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the supervisor does not answer within a minute (it is
    /// stopped or stuck).
    pub async fn workload_count(&self) -> Result<usize, RuntimeError> {
        self.call(SupervisorMsg::Count).await
    }

    /// Asks for a refresh now (single flight: joins one in flight; ignored while
    /// unauthenticated). False if unknown or down.
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the supervisor does not answer within a minute (it is
    /// stopped or stuck).
    pub async fn force_refresh(&self, name: &WorkloadName) -> Result<bool, RuntimeError> {
        self.call(|r| SupervisorMsg::ForceRefresh(name.clone(), r))
            .await
    }

    /// Asks every workload to refresh now (each ignores it as [`Runtime::force_refresh`]
    /// describes), in one message to the supervisor. Returns how many workloads were asked.
    /// Their requests queue at each endpoint's concurrency limit, as in any refresh storm.
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the supervisor does not answer within a minute (it is
    /// stopped or stuck).
    pub async fn force_refresh_all(&self) -> Result<usize, RuntimeError> {
        self.call(SupervisorMsg::ForceRefreshAll).await
    }

    /// Supplies new credentials: stored (a refresh token written to its file) before the
    /// workload is told, which then tries them at once.
    ///
    /// # Errors
    /// [`RuntimeError::Supervisor`] with [`SupervisorError::NotFound`] for an unknown workload
    /// or [`SupervisorError::Credentials`] when they cannot be stored (the refresh-token file
    /// cannot be written); [`RuntimeError::Unresponsive`] when the supervisor does not answer within a minute (it is
    /// stopped or stuck).
    pub async fn supply_credentials(
        &self,
        name: &WorkloadName,
        creds: NewCredentials,
    ) -> Result<(), RuntimeError> {
        Ok(self
            .call(|r| SupervisorMsg::SupplyCredentials(name.clone(), creds, r))
            .await??)
    }

    /// State changes of every workload. Lossy for a receiver that lags by more than the
    /// configured capacity (it gets `RecvError::Lagged`); status files are the durable record.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.events.subscribe()
    }

    /// Waits until every status change so far is durable on disk (failed writes keep being
    /// retried until `deadline`, then are reported).
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the persistence actor does not answer. Writes that
    /// still fail at `deadline` are not an error: the [`FlushReport`] counts them.
    pub async fn flush(&self, deadline: Duration) -> Result<FlushReport, RuntimeError> {
        let res = self
            .persistence
            .call(
                |reply| PersistenceMsg::Flush { deadline, reply },
                Some(deadline + CALL_TIMEOUT),
            )
            .await;
        match res {
            Ok(ractor::rpc::CallResult::Success(r)) => Ok(r),
            Ok(ractor::rpc::CallResult::Timeout | ractor::rpc::CallResult::SenderError) => {
                Err(RuntimeError::Unresponsive {
                    what: "persistence",
                    reason: "no answer to flush".into(),
                })
            }
            Err(e) => Err(RuntimeError::Unresponsive {
                what: "persistence",
                reason: e.to_string(),
            }),
        }
    }

    /// Graceful shutdown: every token actor persists status `stopped` (keeping its token
    /// state for the next start), every pending status is flushed, then the actors stop.
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the supervisor or the persistence actor does not
    /// answer.
    pub async fn shutdown(&self, flush_deadline: Duration) -> Result<FlushReport, RuntimeError> {
        self.call(SupervisorMsg::Shutdown).await?;
        let report = self.flush(flush_deadline).await?;
        #[cfg(feature = "cluster")]
        if let Some((link, stop)) = &self.cluster {
            // Every actor has stopped (nothing in flight): hand every shard over now.
            let _ = stop.send(true);
            link.leave().await;
        }
        self.supervisor
            .stop_and_wait(Some("shutdown".into()), Some(CALL_TIMEOUT))
            .await
            .map_err(|e| RuntimeError::Unresponsive {
                what: "supervisor",
                reason: e.to_string(),
            })?;
        self.persistence.stop(Some("shutdown".into()));
        Ok(report)
    }

    /// Sets the concurrency limit of the token endpoint `token_url` for the workloads running
    /// now and later, without restarting any of them (a reload changed `endpoint_concurrency`).
    /// Requests in flight above a smaller limit finish; no new one starts until fewer than
    /// the new limit are in flight. False when no workload uses that endpoint.
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the supervisor does not answer within a minute (it is
    /// stopped or stuck).
    pub async fn set_endpoint_concurrency(
        &self,
        token_url: &TokenUrl,
        concurrency: usize,
    ) -> Result<bool, RuntimeError> {
        let url = token_url.clone();
        self.call(|r| SupervisorMsg::SetEndpointConcurrency(url, concurrency, r))
            .await
    }

    /// Brings the running workloads to `desired` (one path for a daemon's start and reload):
    /// endpoint limits first (no restart), then removed workloads stop, changed ones restart
    /// (removal first, which waits for the refresh in flight, then their refresh-token file
    /// is read again), new ones start. `admit` runs before each start; an `Err` (logged,
    /// "cannot start") skips that workload. Failures of single workloads are logged, not
    /// returned; only a supervisor that does not answer the list of running workloads is.
    ///
    /// # Errors
    /// [`RuntimeError::Unresponsive`] when the supervisor does not answer within a minute (it is
    /// stopped or stuck).
    pub async fn reconcile<F, E>(
        &self,
        desired: Vec<WorkloadSpec>,
        admit: F,
    ) -> Result<ReconcileReport, RuntimeError>
    where
        F: Fn(&WorkloadSpec) -> Result<(), E> + Send + Sync,
        E: Display,
    {
        let running = self.list().await?;
        let plan = reconcile::plan(desired, running.iter().map(|v| &*v.spec));
        let restarting: std::collections::HashSet<&WorkloadName> =
            plan.restart.iter().map(|s| &s.name).collect();
        let configured: std::collections::HashMap<WorkloadName, GrantSpec> = running
            .iter()
            .filter(|v| restarting.contains(&v.spec.name))
            .map(|v| (v.spec.name.clone(), v.spec.grant.clone()))
            .collect();
        drop(restarting);
        drop(running);
        let mut report = ReconcileReport::default();
        for r in plan.resize_endpoints {
            match self.set_endpoint_concurrency(&r.token_url, r.to).await {
                Ok(_) => {
                    report.endpoints_resized += 1;
                    tracing::info!(endpoint = %r.token_url, from = r.from, to = r.to, "endpoint_concurrency changed");
                }
                Err(e) => {
                    tracing::error!(endpoint = %r.token_url, "endpoint_concurrency not changed: {e}");
                }
            }
        }
        for name in plan.stop {
            if self.remove(&name).await.unwrap_or(false) {
                report.removed += 1;
            }
        }
        for spec in plan.restart {
            // The removal waits for a refresh in flight; the refresh token it left is the
            // one to present next (from the old credential store, or the file, which may
            // hold a newer refresh token than the one read a moment ago).
            let store = self
                .call(|r| SupervisorMsg::Credentials(spec.name.clone(), r))
                .await
                .ok()
                .flatten();
            let _ = self.remove(&spec.name).await;
            let before = configured.get(&spec.name);
            let spec = carry_refresh_token(spec, before, store.as_deref());
            self.start_admitted(reread_refresh_token(spec).await, &admit)
                .await;
            report.changed += 1;
        }
        for spec in plan.start {
            self.start_admitted(spec, &admit).await;
            report.added += 1;
        }
        report.total = self.workload_count().await?;
        Ok(report)
    }

    /// Starts one workload of a reconcile, after `admit`; failures are logged.
    async fn start_admitted<E: Display>(
        &self,
        spec: WorkloadSpec,
        admit: &(impl Fn(&WorkloadSpec) -> Result<(), E> + Send + Sync),
    ) {
        let name = spec.name.clone();
        if let Err(e) = admit(&spec) {
            tracing::error!(workload = %name, "cannot start: {e}");
            return;
        }
        if let Err(e) = self.add(spec).await {
            tracing::error!(workload = %name, "cannot start: {e}");
        }
    }

    /// Whether timers can fire (no mailbox round trip: safe to call from a health probe).
    pub fn health(&self) -> Health {
        Health {
            timer_service_up: self.timers.is_up(),
            timer_service_restarts: self.timers.restart_count(),
        }
    }

    /// Fault injection for supervision tests: makes the timer service's task panic.
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_timer_service_crash(&self) {
        self.timers.inject_crash();
    }

    /// Persistence counters.
    pub fn persist_stats(&self) -> &PersistStats {
        &self.stats
    }

    /// Endpoint gates (for metrics: holds in force).
    pub fn gates(&self) -> &Gates {
        &self.gates
    }

    /// Cluster mode's link (`None` in one-process mode): the member id, the store in use
    /// (its counters and reads), the wiring's counters.
    #[cfg(feature = "cluster")]
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterLink>> {
        self.cluster.as_ref().map(|(link, _)| link)
    }

    /// The cluster as the admin API serves it (`None` in one-process mode, and always in a
    /// build without the `cluster` feature): the admin listener picks it up by itself.
    pub fn cluster_view(&self) -> Option<Arc<dyn crate::ClusterView>> {
        #[cfg(feature = "cluster")]
        return self.cluster().map(crate::cluster::ClusterLink::view);
        #[cfg(not(feature = "cluster"))]
        None
    }

    /// The runtime's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// What start-up found in the status directory.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The supervisor actor's cell, to link or monitor from a host tree (its messages are
    /// private: talk to it through the `Runtime`).
    pub fn supervisor(&self) -> ActorCell {
        self.supervisor.get_cell()
    }

    /// Fault injection for supervision tests: makes a workload's token actor panic.
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_crash(&self, name: &WorkloadName) {
        let _ = self.supervisor.cast(SupervisorMsg::Crash(name.clone()));
    }

    /// Fault injection for durability tests: while `on`, every state-journal commit fails
    /// as a full disk would ("database or disk is full"); nothing is written.
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_journal_failures(&self, on: bool) {
        let _ = self.persistence.cast(PersistenceMsg::InjectFailures(on));
    }

    /// Fault injection for durability tests: while `on`, no state-journal commit starts (a
    /// hung disk); pending commits go through once it is off again.
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_journal_stall(&self, on: bool) {
        let _ = self.persistence.cast(PersistenceMsg::InjectStall(on));
    }
}

/// A workload restarted by a reload presents the refresh token its old actor left (a
/// rotation in memory, for a token inline in the configuration), unless the operator
/// configured a new one: then that one. `before` is the grant the workload ran with, `store`
/// its credential store, read after its removal (its refresh in flight is done). A token in
/// a file is read again after this ([`reread_refresh_token`]).
fn carry_refresh_token(
    mut spec: WorkloadSpec,
    before: Option<&GrantSpec>,
    store: Option<&crate::credentials::CredentialStore>,
) -> WorkloadSpec {
    let (Some(before), Some(store)) = (before, store) else {
        return spec;
    };
    let crate::transport::Grant::RefreshToken(current) = store.snapshot().grant else {
        return spec;
    };
    match (&mut spec.grant, before) {
        (
            GrantSpec::RefreshToken { token, file },
            GrantSpec::RefreshToken {
                token: configured, ..
            },
        ) => {
            // In a file the configured token changes with every rotation: the file decides.
            if file.is_some() || token == configured {
                *token = current;
            }
        }
        (
            GrantSpec::RefreshToken { .. }
            | GrantSpec::ClientCredentials
            | GrantSpec::JwtBearer { .. }
            | GrantSpec::TokenExchange(_),
            _,
        ) => {}
    }
    spec
}

/// Reads the refresh-token file of `spec` again (bounded, on the blocking pool): a restarted
/// workload must present the token its old actor last stored, not the one read when the
/// configuration was loaded. Keeps the loaded token when the file cannot be read.
async fn reread_refresh_token(mut spec: WorkloadSpec) -> WorkloadSpec {
    let GrantSpec::RefreshToken {
        file: Some(file), ..
    } = &spec.grant
    else {
        return spec;
    };
    let path = file.clone();
    let read = tokio::task::spawn_blocking(move || crate::credentials::read_secret_file(&path));
    match tokio::time::timeout(REREAD_TIMEOUT, read).await {
        Ok(Ok(Ok(fresh))) => {
            if let GrantSpec::RefreshToken { token, .. } = &mut spec.grant {
                *token = fresh;
            }
        }
        Ok(Ok(Err(e))) => {
            tracing::warn!(workload = %spec.name, "refresh-token file not read again ({e}); using the one just loaded");
        }
        Ok(Err(e)) => {
            tracing::warn!(workload = %spec.name, "refresh-token file not read again ({e}); using the one just loaded");
        }
        Err(_elapsed) => {
            tracing::warn!(workload = %spec.name, "refresh-token file not read again (timed out); using the one just loaded");
        }
    }
    spec
}
