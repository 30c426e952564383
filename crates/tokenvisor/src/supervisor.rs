//! The supervisor actor: one linked token actor per workload.
//!
//! It owns, per workload, what must outlive a token actor: the spec, the handle cell, the
//! credential store, the endpoint gate and the crash history. A token actor that panics is
//! restarted from its last known state (the record it last persisted) while its restart
//! budget lasts (`tokenvisor_core::policy::RestartIntensity`, OTP style); past the budget the
//! workload gets status `error` and stays down while every other workload runs on.
//! ractor's default `handle_supervisor_evt` would stop the supervisor on any child exit:
//! it is overridden here.
//!
//! Cluster mode (feature `cluster`, a runtime with a cluster link): every instance knows
//! every workload, but runs the token actor of a workload only while its shard is active
//! here ([`SupervisorMsg::Shards`], from the coordinator). The others are *parked*: an
//! entry without an actor, no status file written, no token served (but a record left
//! by a previous run that does not say `stopped`, a `kill -9`'s `running`, is overwritten
//! with `stopped` at start: a restarted instance's files never claim what another member
//! runs). A shard that leaves
//! stops its actors the way a removal does (each waits for its attempt in flight; the
//! coordinator releases the shard only when none is in flight); a shard that arrives starts
//! them, and each reads its credential from etcd before its first attempt.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tokenvisor_core::cluster::ShardId;
use tokenvisor_core::machine::Resume;
use tokenvisor_core::policy::{RestartDecision, RestartHistory, RestartIntensity};
use tokenvisor_core::projection::{self, Down, Stamp, Start};
use tokenvisor_core::write_queue::FileWrite;
use tokenvisor_core::{StatusRecord, Timestamp, TokenUrl, WorkloadName, WorkloadStatus};

use crate::credentials::{CredentialStore, NewCredentials};
use crate::gate::{EndpointGate, Gates};
use crate::handle::{Slot, TokenHandle, Unavailable, WorkloadShared};
use crate::metrics as m;
use crate::msg::TokenMsg;
use crate::spec::WorkloadSpec;
use crate::token::{Deps, StateChange, TokenActor, TokenArgs};

/// Errors the supervisor answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// A workload of that name exists already.
    #[error("workload {0} exists already")]
    AlreadyExists(WorkloadName),
    /// No workload of that name.
    #[error("no workload named {0}")]
    NotFound(WorkloadName),
    /// The token actor could not be spawned.
    #[error("cannot start workload {name}: {reason}")]
    Spawn {
        /// The workload that did not start.
        name: WorkloadName,
        /// The spawn error, as text.
        reason: String,
    },
    /// New credentials were refused.
    #[error("credentials for {name} not accepted: {reason}")]
    Credentials {
        /// The workload the credentials were for.
        name: WorkloadName,
        /// Why (never the secret).
        reason: String,
    },
    /// Cluster mode: the workload's shard is owned by another instance, whose copy of the
    /// credential is the one used (etcd's): new credentials given here would be lost.
    #[error(
        "workload {0} runs on another instance (cluster mode): give its credentials to its \
         owner (GET /v1/workloads names it)"
    )]
    NotOwnedHere(WorkloadName),
    /// The runtime is shutting down.
    #[error("tokenvisor is shutting down")]
    ShuttingDown,
}

/// A workload as the supervisor sees it.
#[derive(Debug, Clone)]
pub struct WorkloadView {
    /// The workload's settings, as added.
    pub spec: Arc<WorkloadSpec>,
    /// Its token handle (lock-free reads).
    pub handle: TokenHandle,
    /// Its latest status record.
    pub record: Option<Arc<StatusRecord>>,
}

/// Messages of the supervisor.
#[derive(Debug)]
pub(crate) enum SupervisorMsg {
    /// Start a workload.
    Add(
        Box<WorkloadSpec>,
        RpcReplyPort<Result<TokenHandle, SupervisorError>>,
    ),
    /// Stop and forget a workload (its status file says `stopped`); answers once its actor
    /// has stopped, so a workload of the same name can be added right after.
    Remove(WorkloadName, RpcReplyPort<bool>),
    /// A workload's handle.
    Handle(WorkloadName, RpcReplyPort<Option<TokenHandle>>),
    List(RpcReplyPort<Vec<WorkloadView>>),
    Get(WorkloadName, RpcReplyPort<Option<WorkloadView>>),
    /// How many workloads there are.
    Count(RpcReplyPort<usize>),
    /// Refresh now.
    ForceRefresh(WorkloadName, RpcReplyPort<bool>),
    /// Refresh every workload now; answers how many were told.
    ForceRefreshAll(RpcReplyPort<usize>),
    /// A workload's credential store (a reload restarting the workload carries its current
    /// refresh token over).
    Credentials(WorkloadName, RpcReplyPort<Option<Arc<CredentialStore>>>),
    /// New credentials (recovers an unauthenticated workload).
    SupplyCredentials(
        WorkloadName,
        NewCredentials,
        RpcReplyPort<Result<(), SupervisorError>>,
    ),
    /// Internal: credentials stored; tell the workload's current actor.
    #[doc(hidden)]
    CredentialsStored(WorkloadName),
    /// Stop every token actor, each persisting status `stopped` with its token state kept.
    /// Answers when all have stopped.
    Shutdown(RpcReplyPort<()>),
    /// Fault injection for supervision tests: make a workload's actor panic.
    #[cfg(any(test, feature = "test-util"))]
    Crash(WorkloadName),
    /// The timer service restarted: every token actor arms its timer again.
    RearmTimers,
    /// Resize the gate of a token endpoint (`endpoint_concurrency` changed at a reload) and
    /// record the new value in the specs of that endpoint's workloads, without restarting
    /// them. Answers false when no workload uses that endpoint.
    SetEndpointConcurrency(TokenUrl, usize, RpcReplyPort<bool>),
    /// Cluster mode: the shards active here now (their workloads run here, the others are
    /// parked).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Shards(BTreeSet<ShardId>),
}

/// The supervisor actor.
#[derive(Debug, Default)]
pub(crate) struct Supervisor;

/// Arguments of [`Supervisor`].
#[derive(Debug)]
pub(crate) struct SupervisorArgs {
    /// Shared dependencies of every token actor.
    pub deps: Arc<Deps>,
    pub gates: Arc<Gates>,
    /// Restart budget per workload.
    pub intensity: RestartIntensity,
    /// Status records found on disk at start, by workload.
    pub recovered: HashMap<WorkloadName, StatusRecord>,
    /// The state journal's rows read at start, by workload (taken by the first `Add`).
    pub journal: HashMap<WorkloadName, crate::journal::Entry>,
    /// Jitter seed (each workload derives its own).
    pub seed: u64,
}

struct Entry {
    /// The workload's settings, as added.
    spec: Arc<WorkloadSpec>,
    shared: Arc<WorkloadShared>,
    credentials: Arc<CredentialStore>,
    gate: Arc<EndpointGate>,
    history: RestartHistory,
    actor: Option<ActorRef<TokenMsg>>,
    created_at: Timestamp,
    seed: u64,
    /// Cluster mode: its shard is not active here (no actor, no status file of ours).
    parked: bool,
}

impl Entry {
    fn view(&self) -> WorkloadView {
        WorkloadView {
            spec: self.spec.clone(),
            handle: TokenHandle::new(self.shared.clone()),
            record: self.shared.record(),
        }
    }
}

/// The supervisor's state.
pub(crate) struct SupervisorState {
    args: SupervisorArgs,
    entries: HashMap<WorkloadName, Entry>,
    by_actor: HashMap<ActorId, WorkloadName>,
    removing: HashMap<ActorId, RpcReplyPort<bool>>,
    /// The credential stores of removed workloads: a workload added again (a reload that
    /// changed it) resumes from the credential its old actor last held.
    removed: HashMap<WorkloadName, Arc<CredentialStore>>,
    shutdown: Option<(RpcReplyPort<()>, usize)>,
    stopping: bool,
    spawned: u64,
    /// Cluster mode: the shards active here.
    active: BTreeSet<ShardId>,
}

impl std::fmt::Debug for SupervisorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorState")
            .field("workloads", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            args,
            entries: HashMap::new(),
            by_actor: HashMap::new(),
            removing: HashMap::new(),
            removed: HashMap::new(),
            shutdown: None,
            stopping: false,
            spawned: 0,
            active: BTreeSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Add(spec, reply) => {
                let result = if st.stopping {
                    Err(SupervisorError::ShuttingDown)
                } else {
                    add(&myself, st, *spec).await
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Remove(name, reply) => {
                let Some(entry) = st.entries.remove(&name) else {
                    let _ = reply.send(false);
                    return Ok(());
                };
                st.removed.insert(name, entry.credentials.clone());
                match &entry.actor {
                    Some(actor) => {
                        st.removing.insert(actor.get_id(), reply);
                        let _ = actor.cast(TokenMsg::Remove);
                    }
                    // Parked (cluster mode): this instance never wrote its status.
                    None if entry.parked => {
                        let _ = reply.send(true);
                    }
                    None => {
                        // Down (restart budget spent): mark it stopped ourselves.
                        let now = st.args.deps.clock.now();
                        write_status(st, &entry, &Down::Removed, now);
                        entry
                            .shared
                            .set_slot(Slot::Unavailable(Unavailable::Stopped));
                        let _ = reply.send(true);
                    }
                }
            }
            SupervisorMsg::Handle(name, reply) => {
                let h = st
                    .entries
                    .get(&name)
                    .map(|e| TokenHandle::new(e.shared.clone()));
                let _ = reply.send(h);
            }
            SupervisorMsg::List(reply) => {
                let mut v: Vec<WorkloadView> = st.entries.values().map(Entry::view).collect();
                v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
                let _ = reply.send(v);
            }
            SupervisorMsg::Get(name, reply) => {
                let _ = reply.send(st.entries.get(&name).map(Entry::view));
            }
            SupervisorMsg::Count(reply) => {
                let _ = reply.send(st.entries.len());
            }
            SupervisorMsg::ForceRefresh(name, reply) => {
                let sent = st
                    .entries
                    .get(&name)
                    .and_then(|e| e.actor.as_ref())
                    .is_some_and(|a| a.cast(TokenMsg::ForceRefresh).is_ok());
                let _ = reply.send(sent);
            }
            SupervisorMsg::ForceRefreshAll(reply) => {
                // One cast per actor (no reply awaited): tens of thousands take milliseconds.
                let sent = st
                    .entries
                    .values()
                    .filter_map(|e| e.actor.as_ref())
                    .filter(|a| a.cast(TokenMsg::ForceRefresh).is_ok())
                    .count();
                let _ = reply.send(sent);
            }
            SupervisorMsg::Credentials(name, reply) => {
                let _ = reply.send(st.entries.get(&name).map(|e| e.credentials.clone()));
            }
            SupervisorMsg::SupplyCredentials(name, creds, reply) => {
                let Some(entry) = st.entries.get(&name) else {
                    let _ = reply.send(Err(SupervisorError::NotFound(name)));
                    return Ok(());
                };
                // Parked: its owner elsewhere reads the credential from etcd, so a token kept
                // here would never be presented (and the caller would believe it delivered).
                if entry.parked {
                    let _ = reply.send(Err(SupervisorError::NotOwnedHere(name)));
                    return Ok(());
                }
                // The file write runs outside the handler; the actor hears of it after.
                let store = entry.credentials.clone();
                let me = myself.clone();
                tokio::spawn(async move {
                    match store.replace(creds).await {
                        Ok(_generation) => {
                            let _ = me.cast(SupervisorMsg::CredentialsStored(name));
                            let _ = reply.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(SupervisorError::Credentials {
                                name,
                                reason: e.to_string(),
                            }));
                        }
                    }
                });
            }
            SupervisorMsg::CredentialsStored(name) => {
                if let Some(actor) = st.entries.get(&name).and_then(|e| e.actor.as_ref()) {
                    let _ = actor.cast(TokenMsg::CredentialsReplaced);
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                st.stopping = true;
                let mut waiting = 0;
                for entry in st.entries.values() {
                    if let Some(actor) = &entry.actor
                        && actor.cast(TokenMsg::Shutdown).is_ok()
                    {
                        waiting += 1;
                    }
                }
                if waiting == 0 {
                    let _ = reply.send(());
                } else {
                    st.shutdown = Some((reply, waiting));
                }
            }
            #[cfg(any(test, feature = "test-util"))]
            SupervisorMsg::Crash(name) => {
                if let Some(actor) = st.entries.get(&name).and_then(|e| e.actor.as_ref()) {
                    let _ = actor.cast(TokenMsg::Crash);
                }
            }
            SupervisorMsg::RearmTimers => {
                // One cast per actor, as for `ForceRefreshAll`.
                for actor in st.entries.values().filter_map(|e| e.actor.as_ref()) {
                    let _ = actor.cast(TokenMsg::RearmTimer);
                }
            }
            SupervisorMsg::SetEndpointConcurrency(url, n, reply) => {
                let mut found = false;
                for entry in st.entries.values_mut() {
                    if entry.spec.token_url == url {
                        found = true;
                        entry.gate.set_limit(n);
                        if entry.spec.policy.endpoint_concurrency != n {
                            Arc::make_mut(&mut entry.spec).policy.endpoint_concurrency = n;
                        }
                    }
                }
                let _ = reply.send(found);
            }
            SupervisorMsg::Shards(active) => {
                st.active = active;
                let names: Vec<WorkloadName> = st.entries.keys().cloned().collect();
                for name in names {
                    follow_shards(&myself, st, &name).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let id = cell.get_id();
                let Some(name) = st.by_actor.remove(&id) else {
                    tracing::error!("an unknown child of the supervisor failed: {err}");
                    return Ok(());
                };
                if child_ended(st, id) {
                    return Ok(());
                }
                if st.entries.get(&name).is_some_and(|e| e.parked) {
                    // Handed over while it failed: the new owner runs it.
                    if let Some(entry) = st.entries.get_mut(&name) {
                        entry.actor = None;
                    }
                    follow_shards(&myself, st, &name).await;
                    return Ok(());
                }
                restart_or_give_up(&myself, st, &name, &err.to_string()).await;
            }
            SupervisionEvent::ActorTerminated(cell, _state, _reason) => {
                let id = cell.get_id();
                let name = st.by_actor.remove(&id);
                if child_ended(st, id) {
                    return Ok(());
                }
                if let Some(name) = name
                    && let Some(entry) = st.entries.get_mut(&name)
                    && entry.actor.as_ref().is_some_and(|a| a.get_id() == id)
                {
                    entry.actor = None;
                    // A shard that came back while its actor was stopping.
                    follow_shards(&myself, st, &name).await;
                }
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
        }
        Ok(())
    }
}

/// Bookkeeping when a child ends; true when the end was expected (removal or shutdown).
fn child_ended(st: &mut SupervisorState, id: ActorId) -> bool {
    if let Some(reply) = st.removing.remove(&id) {
        let _ = reply.send(true);
        return true;
    }
    if let Some((_, waiting)) = st.shutdown.as_mut() {
        *waiting = waiting.saturating_sub(1);
        if *waiting == 0
            && let Some((reply, _)) = st.shutdown.take()
        {
            let _ = reply.send(());
        }
        return true;
    }
    st.stopping
}

async fn add(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    spec: WorkloadSpec,
) -> Result<TokenHandle, SupervisorError> {
    let name = spec.name.clone();
    if st.entries.contains_key(&name) {
        return Err(SupervisorError::AlreadyExists(name));
    }
    let now = st.args.deps.clock.now();
    let file_record = st.args.recovered.remove(&name);
    // The removal answered only once the old actor stopped, so a removed store is final.
    let journaled = st
        .args
        .journal
        .remove(&name)
        .or_else(|| st.removed.remove(&name).map(|c| c.journal_entry()));
    // The journal's record is the durable one; the file is a view of it.
    let recovered = journaled
        .as_ref()
        .and_then(|j| j.status.clone())
        .or(file_record);
    let Start { resume, created_at } = projection::start(recovered.as_ref(), now);
    let parked = !runs_here(st, &name);
    let said = recovered.as_ref().map(|r| r.status);
    let spec = Arc::new(spec);
    st.spawned += 1;
    let resumed = CredentialStore::resume(&spec, journaled.as_ref());
    let credentials = resumed.store;
    credentials.attach_journal(st.args.deps.persistence.clone());
    let shared = WorkloadShared::new(name.clone(), st.args.deps.clock);
    if resumed.adopted {
        // New credentials (or the first start): the journal records them, and a stored
        // access token belongs to the old ones.
        let patch = crate::journal::Patch {
            access: Some(None),
            ..credentials.journal_patch(configured_token(&spec))
        };
        if let Err(e) = st
            .args
            .deps
            .persistence
            .update(name.clone(), patch, FileWrite::None)
        {
            tracing::error!(workload = %name, "persistence actor unreachable: {e}");
        }
    } else if let Some(access) = journaled.and_then(|j| j.access)
        && access.expires_at > now
        && !parked
    {
        // A restart serves the token it held at once; the machine keeps its schedule.
        shared.set_slot(Slot::Token(crate::handle::AccessToken {
            secret: access.token,
            token_type: access.token_type,
            expires_at: access.expires_at,
        }));
    }
    let entry = Entry {
        shared,
        credentials,
        gate: st
            .args
            .gates
            .get(&spec.token_url, spec.policy.endpoint_concurrency),
        history: RestartHistory::default(),
        actor: None,
        created_at,
        seed: st.args.seed ^ st.spawned.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        spec,
        parked,
    };
    let handle = TokenHandle::new(entry.shared.clone());
    st.entries.insert(name.clone(), entry);
    if parked
        && said.is_some_and(|s| s != WorkloadStatus::Stopped)
        && let Some(entry) = st.entries.get(&name)
    {
        // Cluster mode: a previous run's record (a `kill -9` left it `running`) for a
        // workload another member may run now: the file must not say this instance runs it.
        write_status(st, entry, &Down::Parked, now);
    }
    if !parked {
        spawn_token_actor(myself.get_cell(), st, &name, resume).await?;
    }
    Ok(handle)
}

async fn spawn_token_actor(
    supervisor: ActorCell,
    st: &mut SupervisorState,
    name: &WorkloadName,
    resume: Resume,
) -> Result<(), SupervisorError> {
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &st.args.deps.cluster {
        // A new ownership (or a restart) reads the credential from etcd first.
        cluster.forget(name);
    }
    let Some(entry) = st.entries.get_mut(name) else {
        return Err(SupervisorError::NotFound(name.clone()));
    };
    let args = TokenArgs {
        spec: entry.spec.clone(),
        shared: entry.shared.clone(),
        credentials: entry.credentials.clone(),
        gate: entry.gate.clone(),
        deps: st.args.deps.clone(),
        resume,
        created_at: entry.created_at,
        seed: entry.seed ^ entry.history.len() as u64,
    };
    match Actor::spawn_linked(None, TokenActor, args, supervisor).await {
        Ok((actor, _join)) => {
            st.by_actor.insert(actor.get_id(), name.clone());
            entry.actor = Some(actor);
            Ok(())
        }
        Err(e) => {
            let reason = e.to_string();
            st.entries.remove(name);
            Err(SupervisorError::Spawn {
                name: name.clone(),
                reason,
            })
        }
    }
}

async fn restart_or_give_up(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    name: &WorkloadName,
    panic: &str,
) {
    let now = st.args.deps.clock.now();
    let intensity = st.args.intensity;
    let Some(entry) = st.entries.get_mut(name) else {
        return;
    };
    entry.actor = None;
    let panic = tokenvisor_core::classify::excerpt(panic.as_bytes());
    match entry.history.record_crash(now, intensity) {
        RestartDecision::Restart { n } => {
            metrics::counter!(m::ACTOR_RESTARTS).increment(1);
            tracing::warn!(workload = %name, restart = n, "token actor crashed ({panic}); restarting from its last state");
            let resume = projection::start(entry.shared.record().as_deref(), now).resume;
            if let Err(e) = spawn_token_actor(myself.get_cell(), st, name, resume).await {
                tracing::error!(workload = %name, "restart failed: {e}");
            }
        }
        RestartDecision::GiveUp => {
            metrics::counter!(m::ACTOR_GAVE_UP).increment(1);
            tracing::error!(workload = %name, "token actor crashed {} times within {}; leaving it down ({panic})",
                intensity.max_restarts + 1, humantime::format_duration(intensity.window));
            entry.shared.set_slot(Slot::Unavailable(Unavailable::Error));
            let down = Down::GaveUp {
                max_restarts: intensity.max_restarts,
                window: intensity.window,
                panic,
            };
            let Some(entry) = st.entries.get(name) else {
                return;
            };
            write_status(st, entry, &down, now);
        }
    }
}

/// Whether the workload `name` runs here: always in one-process mode; in cluster mode while
/// its shard is active here.
fn runs_here(st: &SupervisorState, name: &WorkloadName) -> bool {
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &st.args.deps.cluster {
        return st.active.contains(&cluster.shard_of(name));
    }
    let _ = (&st.active, name);
    true
}

/// Cluster mode: brings one workload in line with the active shards: parks it (its actor
/// stops as a removal does, after its attempt in flight) when its shard left, starts it
/// when its shard arrived and its old actor is gone.
async fn follow_shards(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    name: &WorkloadName,
) {
    if st.stopping {
        return;
    }
    let here = runs_here(st, name);
    let now = st.args.deps.clock.now();
    let Some(entry) = st.entries.get_mut(name) else {
        return;
    };
    match (here, entry.parked, &entry.actor) {
        (false, false, Some(actor)) => {
            entry.parked = true;
            let _ = actor.cast(TokenMsg::Remove);
        }
        (false, false, None) => entry.parked = true,
        (true, true, None) => {
            entry.parked = false;
            entry.history = RestartHistory::default();
            let resume = projection::start(entry.shared.record().as_deref(), now).resume;
            if let Err(e) = spawn_token_actor(myself.get_cell(), st, name, resume).await {
                tracing::error!(workload = %name, "cannot start after its shard arrived: {e}");
            }
        }
        // Parked and still stopping (started again once it has stopped), or as wanted.
        (true, true, Some(_)) | (false, true, _) | (true, false, _) => {}
    }
}

/// The refresh token the configuration gives (inline or the file's content when read).
fn configured_token(spec: &WorkloadSpec) -> Option<&tokenvisor_core::Secret> {
    match &spec.grant {
        crate::spec::GrantSpec::RefreshToken { token, .. } => Some(token),
        crate::spec::GrantSpec::ClientCredentials
        | crate::spec::GrantSpec::JwtBearer { .. }
        | crate::spec::GrantSpec::TokenExchange(_) => None,
    }
}

/// Persists the record of a workload whose actor is down (error, removed), keeping the
/// token section.
fn write_status(st: &SupervisorState, entry: &Entry, down: &Down, now: Timestamp) {
    let stamp = Stamp {
        created_at: entry.created_at,
        updated_at: now,
        process_id: st.args.deps.process_id,
    };
    let record = projection::down_record(entry.shared.record().as_deref(), down, stamp);
    let (status, state) = (record.status, projection::token_state(&record));
    entry.shared.set_record(record.clone());
    let context: Arc<str> = record.status_context.as_str().into();
    if let Err(e) = st.args.deps.persistence.update(
        entry.spec.name.clone(),
        crate::journal::Patch {
            status: Some(Arc::new(record)),
            access: Some(None),
            ..crate::journal::Patch::default()
        },
        FileWrite::Now,
    ) {
        tracing::error!(workload = %entry.spec.name, "persistence actor unreachable: {e}");
    }
    let _ = st.args.deps.events.send(StateChange {
        name: entry.spec.name.clone(),
        status,
        state,
        context,
        at: now,
    });
}
