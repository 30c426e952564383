//! The token actor: one per workload, a thin driver around `tokenvisor_core::machine`.
//!
//! Every handler reads `now` from the [`Clock`], feeds one input to the machine and carries
//! out the effects in order: publish or withdraw the token, persist the status, start the
//! attempt, re-arm the timer. Nothing slow runs in a handler: the HTTP exchange, the
//! classification and the rotated-refresh-token write-back run in a spawned task, whose
//! result comes back as [`TokenMsg::AttemptDone`] tagged with its attempt; the machine drops
//! results of attempts that are no longer current.
//!
//! One owner per credential: an attempt task waits for its endpoint (hold, adaptive permit,
//! paced start: `crate::gate`; the three within one budget, `hold_wait_budget`, past which
//! it is "not sent" rather than outlive its machine's deadline in a queue; a sporadic
//! 429 holds only its own workload), then for its workload's owner lock
//! ([`CredentialStore::owner`]), and sends only if the machine still wants it; it keeps the
//! lock until a rotated refresh token is stored, and so does its endpoint permit (a rotation
//! not yet saved is in flight: a kill -9 loses at most `endpoint_concurrency` of them; an
//! answer with nothing to save frees the permit at once). A final answer for a refresh token that is
//! no longer the durable one is retried once with the durable one
//! ([`CredentialStore::current_durable_refresh_token`]).
//!
//! **Our own queue is not a failure.** An attempt that waited its whole budget for one of
//! the endpoint's busy request slots comes back as [`TokenMsg::AttemptNotSent`] and enters the
//! machine as `Input::NotSent`, not as a transient verdict: the machine requeues it with
//! the record unchanged, so nothing goes to the status lane or the journal (`apply`
//! persists only when the machine says the record changed), and retries it after a floor
//! (`Machine::requeue_at`). It took neither the owner lock nor a credential snapshot, so
//! the refresh token it would have presented is unchanged and is presented next time. An
//! attempt kept back by a hold or a pace (both set by the provider's 429/503: its overload,
//! not our queue) is a transient `rate_limited` failure, as it was before, built here
//! (`held_failure`, with the hold's remainder as its `Retry-After`; `paced_failure`) and
//! sent as an `AttemptDone`: the machine's `Input::NotSent` means busy slots only.
//! Measured, a requeue there slowed the rate-limited recovery from 9.16 s to 15.6 s (the
//! run's backoff keeps the paced queue fed, a requeue's spread left starts unused). The
//! counters `ENDPOINT_BUSY_ATTEMPTS`, `ENDPOINT_HELD_ATTEMPTS`, `ENDPOINT_PACED_ATTEMPTS`
//! and `REFRESH_ATTEMPTS{outcome="not_sent", kind="rate_limited"}` count each (nothing was
//! sent, so a hold's or a pace's failure is counted `not_sent` too, not `transient`).
//!
//! `jwt_bearer` / `token_exchange`: the attempt reads the platform's token when it sends
//! (`crate::workload_identity::present`; an unusable one is not sent), `invalid_grant` is
//! transient for them, and an unauthenticated workload of them polls its token file as a
//! refresh-token workload polls its file.
//!
//! Logs name their workload: every handler runs in a span `workload{name=…}`, made per
//! handled message from the name the actor holds (never stored: a span kept by each of
//! 100,000 idle actors would cost memory), and so do the tasks a handler spawns and an
//! attempt's request phase (`send`). An attempt still queued for its endpoint's permit holds
//! no span and logs nothing, so a storm of queued attempts keeps no spans alive. The span is
//! at `ERROR` level so that it is enabled under any filter that lets a line through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokenvisor_core::classify::RawOutcome;
use tokenvisor_core::limiter::{Feedback, HoldScope};
use tokenvisor_core::machine::{Effects, Input, NotSent, Resume, State, Withdraw};
use tokenvisor_core::policy::MAX_TIMER_DELAY;
use tokenvisor_core::projection::{self, Occasion, Stamp};
use tokenvisor_core::status::TokenState as DiskTokenState;
use tokenvisor_core::write_queue::FileWrite;
use tokenvisor_core::{
    AttemptId, ClassifyPolicy, Failure, FailureKind, Machine, Timestamp, Verdict, WorkloadName,
    WorkloadStatus, classify,
};
use tokio::sync::{SemaphorePermit, broadcast};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::clock::Clock;
use crate::credentials::{CredentialStore, RotateOutcome, WriteBack};
use crate::gate::{EndpointGate, NoSlot};
use crate::handle::{AccessToken, Slot, Unavailable, WorkloadShared};
use crate::journal::{Patch, StoredAccess};
use crate::metrics as m;
use crate::msg::TokenMsg;
use crate::persistence::PersistenceLink;
use crate::spec::WorkloadSpec;
use crate::timers::Timers;
use crate::transport::{ExchangeRequest, Transport};

/// How often an unauthenticated workload looks at its refresh-token file for new credentials.
pub(crate) const CREDENTIAL_POLL: Duration = Duration::from_secs(10);

/// At shutdown, how long a token actor waits at most for its refreshes in flight (each is
/// bounded by its own request timeout; this keeps shutdown under the runtime's call timeout).
pub(crate) const SHUTDOWN_ATTEMPT_WAIT: Duration = Duration::from_secs(30);

/// A change of a workload's status or token state, for subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The workload that changed.
    pub name: WorkloadName,
    /// Its new status.
    pub status: WorkloadStatus,
    /// Its new token state.
    pub state: DiskTokenState,
    /// A short sanitised reason.
    pub context: Arc<str>,
    /// When it changed, by the runtime's clock.
    pub at: Timestamp,
}

/// What every token actor shares (one allocation for all of them).
pub(crate) struct Deps {
    /// The token endpoint transport.
    pub transport: Arc<dyn Transport>,
    /// The persistence actor (status records through its lane).
    pub persistence: PersistenceLink,
    /// State changes, for subscribers (lossy for receivers that lag).
    pub events: broadcast::Sender<StateChange>,
    pub clock: Clock,
    /// Written into every status file.
    pub process_id: u32,
    /// The timer service.
    pub timers: Timers,
    /// Cluster mode's wiring (`None`: one process, as always).
    #[cfg(feature = "cluster")]
    pub cluster: Option<Arc<crate::cluster::ClusterLink>>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("process_id", &self.process_id)
            .finish_non_exhaustive()
    }
}

/// The token actor.
#[derive(Debug, Default)]
pub(crate) struct TokenActor;

/// Arguments of [`TokenActor`].
#[derive(Debug)]
pub(crate) struct TokenArgs {
    pub spec: Arc<WorkloadSpec>,
    /// Its handle cell (kept by the supervisor across restarts).
    pub shared: Arc<WorkloadShared>,
    pub credentials: Arc<CredentialStore>,
    /// Its endpoint's gate.
    pub gate: Arc<EndpointGate>,
    pub deps: Arc<Deps>,
    /// Where the machine starts.
    pub resume: Resume,
    /// `created_at` of its status file.
    pub created_at: Timestamp,
    pub seed: u64,
}

/// The token actor's state.
#[derive(Debug)]
pub(crate) struct TokenActorState {
    args: TokenArgs,
    machine: Machine,
    startup: Option<(Effects, Timestamp)>,
    rng: fastrand::Rng,
    /// When the armed timer is due (the timer service holds it).
    timer: Option<Timestamp>,
    timer_generation: u64,
    last_view: Option<(WorkloadStatus, DiskTokenState)>,
    credential_poll: Option<JoinHandle<()>>,
    /// Attempt tasks not known to have finished (shutdown waits for them).
    attempts: Attempts,
    /// The attempt the machine wants now ([`NO_ATTEMPT`] once stopping): an attempt task
    /// that is no longer it (new credentials started another, the actor is stopping) does
    /// not send its request.
    wanted: Arc<AtomicU64>,
    /// The served token changed since the last persisted record (journaled with the next).
    access_change: Option<Option<StoredAccess>>,
}

impl Actor for TokenActor {
    type Msg = TokenMsg;
    type State = TokenActorState;
    type Arguments = TokenArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<TokenMsg>,
        args: TokenArgs,
    ) -> Result<TokenActorState, ActorProcessingErr> {
        // No I/O here: the supervisor awaits this for every child it spawns.
        let now = args.deps.clock.now();
        let served_until = match &*args.shared.slot() {
            Slot::Token(t) => Some(t.expires_at),
            Slot::Unavailable(_) => None,
        };
        let (machine, fx) = Machine::start(
            args.spec.policy.machine_config(),
            args.resume.clone(),
            served_until,
            now,
        );
        Ok(TokenActorState {
            startup: Some((fx, now)),
            rng: fastrand::Rng::with_seed(args.seed),
            args,
            machine,
            timer: None,
            timer_generation: 0,
            last_view: None,
            credential_poll: None,
            attempts: Attempts::default(),
            wanted: Arc::new(AtomicU64::new(NO_ATTEMPT)),
            access_change: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<TokenMsg>,
        st: &mut TokenActorState,
    ) -> Result<(), ActorProcessingErr> {
        // Carry out the start effects now that the actor can receive its own messages.
        if let Some((fx, now)) = st.startup.take() {
            workload_span(&st.args.spec.name).in_scope(|| {
                if let Resume::Unauthenticated { since, .. } = &st.args.resume {
                    check_credentials_changed_since(&myself, st, *since);
                }
                apply(&myself, st, fx, now);
            });
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TokenMsg>,
        msg: TokenMsg,
        st: &mut TokenActorState,
    ) -> Result<(), ActorProcessingErr> {
        let span = workload_span(&st.args.spec.name);
        match span.in_scope(|| on_message(&myself, msg, st)) {
            Next::Done => {}
            // Boxed: the rare shutdown path would otherwise size every actor's handler future
            // (kept in its task for the actor's whole life).
            Next::Shutdown => Box::pin(shutdown(myself, st).instrument(span)).await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<TokenMsg>,
        st: &mut TokenActorState,
    ) -> Result<(), ActorProcessingErr> {
        cancel_timers(&myself, st);
        Ok(())
    }
}

/// The span of a workload's log lines: `workload{name=…}` (in a handler, inside ractor's
/// `Actor{id=…}`), at `ERROR` level so that any filter letting a line through enables it.
fn workload_span(name: &WorkloadName) -> tracing::Span {
    tracing::error_span!("workload", name = %name)
}

/// The runtime is shutting down: wait (bounded) for the refreshes in flight, persist
/// `stopped` keeping the token state, stop.
async fn shutdown(myself: ActorRef<TokenMsg>, st: &mut TokenActorState) {
    cancel_timers(&myself, st);
    finish_attempts(st).await;
    persist(st, st.args.deps.clock.now(), true);
    myself.stop(Some("shutdown".into()));
}

/// What a handler does after [`on_message`].
enum Next {
    /// Nothing: the message is handled.
    Done,
    /// Run [`shutdown`], which awaits the refreshes in flight.
    Shutdown,
}

/// The synchronous part of every message, in the workload's span: feed the machine, apply
/// the effects.
fn on_message(myself: &ActorRef<TokenMsg>, msg: TokenMsg, st: &mut TokenActorState) -> Next {
    let now = st.args.deps.clock.now();
    let input = match msg {
        TokenMsg::Timer { generation } => {
            if generation != st.timer_generation {
                return Next::Done;
            }
            if let Some(armed_for) = st.timer.take() {
                // How late the timer fired (ms resolution; zero when early).
                metrics::histogram!(m::TIMER_LATENESS).record(now.since(armed_for).as_secs_f64());
            }
            Input::TimerFired
        }
        TokenMsg::AttemptDone { attempt, verdict } => {
            st.attempts.done(attempt);
            Input::RefreshResult { attempt, verdict }
        }
        TokenMsg::AttemptNotSent { attempt, not_sent } => {
            st.attempts.done(attempt);
            Input::NotSent { attempt, not_sent }
        }
        TokenMsg::CredentialsReplaced => Input::CredentialsReplaced,
        TokenMsg::ForceRefresh => Input::ForceRefresh,
        TokenMsg::Remove => Input::Stop,
        TokenMsg::Shutdown => return Next::Shutdown,
        TokenMsg::PollCredentials => {
            poll_credentials(myself, st);
            return Next::Done;
        }
        TokenMsg::RearmTimer => {
            if let Some(at) = st.timer {
                let delay = st.args.deps.clock.until(at);
                st.args.deps.timers.arm(myself, st.timer_generation, delay);
            }
            return Next::Done;
        }
        #[cfg(any(test, feature = "test-util"))]
        TokenMsg::Crash => panic!("injected crash in token actor {}", st.args.spec.name),
    };
    let stopping = matches!(input, Input::Stop);
    let fx = st.machine.handle(input, now, &mut st.rng);
    apply(myself, st, fx, now);
    if stopping {
        cancel_timers(myself, st);
        stop_after_attempts(myself, st);
    }
    Next::Done
}

/// Drops the armed machine timer, if any.
fn disarm(myself: &ActorRef<TokenMsg>, st: &mut TokenActorState) {
    if st.timer.take().is_some() {
        st.args.deps.timers.disarm(myself);
    }
}

fn cancel_timers(myself: &ActorRef<TokenMsg>, st: &mut TokenActorState) {
    disarm(myself, st);
    if let Some(h) = st.credential_poll.take() {
        h.abort();
    }
}

/// Carries out effects in order: token slot, status, attempt, timer.
fn apply(myself: &ActorRef<TokenMsg>, st: &mut TokenActorState, fx: Effects, now: Timestamp) {
    let Effects {
        withdraw,
        publish,
        persist: changed,
        start_attempt,
        wake_at,
    } = fx;
    if let Some(grant) = publish {
        let token = AccessToken {
            secret: grant.access_token,
            token_type: grant.token_type.into(),
            expires_at: now.plus(grant.lifetime),
        };
        st.args.credentials.write_token_sink(&token.secret);
        st.access_change = Some(Some(StoredAccess {
            token: token.secret.clone(),
            token_type: token.token_type.clone(),
            expires_at: token.expires_at,
        }));
        st.args.shared.set_slot(Slot::Token(token));
    } else if withdraw.is_some() || matches!(&*st.args.shared.slot(), Slot::Unavailable(_)) {
        let reason = withdraw_reason(&st.machine, withdraw);
        if withdraw.is_some() {
            st.access_change = Some(None);
        }
        st.args.shared.set_slot(Slot::Unavailable(reason));
    }
    if changed && !projection::routine_refresh(&st.machine, st.last_view) {
        persist(st, now, false);
        watch_credentials(myself, st);
    }
    if let Some(attempt) = start_attempt {
        spawn_attempt(myself, st, attempt);
    }
    arm_timer(myself, st, wake_at);
}

fn withdraw_reason(machine: &Machine, withdraw: Option<Withdraw>) -> Unavailable {
    match machine.state() {
        State::Stopped => Unavailable::Stopped,
        State::Unauthenticated { .. } => Unavailable::Unauthenticated {
            reason: machine.workload_status().1.into(),
        },
        State::TransientBackoff {
            retry,
            next_attempt_at,
            ..
        } => Unavailable::BackingOff {
            next_attempt_at: Some(*next_attempt_at),
            reason: retry.last.summary.as_str().into(),
        },
        State::Refreshing { retry: Some(r), .. } => Unavailable::BackingOff {
            next_attempt_at: None,
            reason: r.last.summary.as_str().into(),
        },
        State::Requeued {
            retry: Some(r),
            next_try_at,
            ..
        } => Unavailable::BackingOff {
            next_attempt_at: Some(*next_try_at),
            reason: r.last.summary.as_str().into(),
        },
        State::Refreshing { retry: None, .. }
        | State::Requeued { retry: None, .. }
        | State::Healthy { .. } => match withdraw {
            Some(Withdraw::Expired) => Unavailable::BackingOff {
                next_attempt_at: None,
                reason: "the token expired; a refresh is under way".into(),
            },
            Some(Withdraw::Stopped) => Unavailable::Stopped,
            Some(Withdraw::Unauthenticated) | None => Unavailable::Starting,
        },
    }
}

/// Sends the current record (the core's projection of the machine) to persistence, notifies
/// subscribers.
fn persist(st: &mut TokenActorState, now: Timestamp, shutting_down: bool) {
    let occasion = if shutting_down {
        Occasion::Shutdown
    } else {
        Occasion::Changed
    };
    let stamp = Stamp {
        created_at: st.args.created_at,
        updated_at: now,
        process_id: st.args.deps.process_id,
    };
    let record = projection::record(&st.machine, occasion, stamp);
    let (status, state) = (record.status, projection::token_state(&record));
    let view = (status, state);
    let changed_view = st.last_view != Some(view);
    let context: Option<Arc<str>> = changed_view.then(|| Arc::from(record.status_context.as_str()));
    let routine = !changed_view
        && status == WorkloadStatus::Running
        && st
            .args
            .shared
            .record()
            .is_some_and(|old| old.status_context == record.status_context);
    let record = Arc::new(record);
    st.args.shared.set_shared_record(Arc::clone(&record));
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &st.args.deps.cluster
        && !routine
    {
        cluster.status_changed(&st.args.spec.name, Arc::clone(&record));
    }
    let access = std::mem::take(&mut st.access_change);
    st.args.deps.persistence.update(
        st.args.spec.name.clone(),
        Patch {
            status: Some(record),
            access,
            ..Patch::default()
        },
        if routine { FileWrite::Routine } else { FileWrite::Now },
    )
    .unwrap_or_else(|e| tracing::error!(workload = %st.args.spec.name, "persistence actor unreachable: {e}"));
    if let Some(context) = context {
        // `tokenvisor_workloads{status}` is not counted here: increments from actors that
        // stop, restart or are removed drift; it is computed from the live list at scrape
        // time (tokenvisor-admin).
        st.last_view = Some(view);
        tracing::info!(workload = %st.args.spec.name, status = status.as_str(), state = state.as_str(), reason = %context, "state change");
        // No receivers is fine.
        let _ = st.args.deps.events.send(StateChange {
            name: st.args.spec.name.clone(),
            status,
            state,
            context,
            at: now,
        });
    }
}

fn arm_timer(myself: &ActorRef<TokenMsg>, st: &mut TokenActorState, wake_at: Option<Timestamp>) {
    if st.timer == wake_at {
        return;
    }
    st.timer_generation += 1;
    match wake_at {
        Some(at) => {
            let delay = st.args.deps.clock.until(at);
            st.args.deps.timers.arm(myself, st.timer_generation, delay);
            st.timer = Some(at);
        }
        None => disarm(myself, st),
    }
}

/// Starts or stops polling the refresh-token file, depending on the state.
fn watch_credentials(myself: &ActorRef<TokenMsg>, st: &mut TokenActorState) {
    let unauthenticated = matches!(st.machine.state(), State::Unauthenticated { .. });
    // A refresh-token file, or the token file of a workload-identity grant.
    let has_file =
        st.args.credentials.watches_file() || st.args.spec.grant.presents_platform_token();
    match (unauthenticated && has_file, st.credential_poll.is_some()) {
        (true, false) => {
            st.credential_poll =
                Some(myself.send_interval(CREDENTIAL_POLL, || TokenMsg::PollCredentials));
        }
        (false, true) => {
            if let Some(h) = st.credential_poll.take() {
                h.abort();
            }
        }
        (true, true) | (false, false) => {}
    }
}

fn poll_credentials(myself: &ActorRef<TokenMsg>, st: &TokenActorState) {
    let creds = st.args.credentials.clone();
    let me = myself.clone();
    let name = st.args.spec.name.clone();
    if st.args.spec.grant.presents_platform_token() {
        // The platform wrote a token other than the one last presented: try it.
        let spec = st.args.spec.clone();
        tokio::spawn(async move {
            if let Some(stamp) = crate::workload_identity::current_stamp(&spec.grant).await
                && stamp != creds.presented()
            {
                tracing::info!(workload = %name, "the grant's token file changed: trying the new token");
                let _ = me.cast(TokenMsg::CredentialsReplaced);
            }
        }.in_current_span());
        return;
    }
    tokio::spawn(async move {
        match creds.reload_from_file().await {
            Ok(Some(_generation)) => {
                tracing::info!(workload = %name, "refresh-token file changed: trying the new credentials");
                let _ = me.cast(TokenMsg::CredentialsReplaced);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(workload = %name, "cannot read the refresh-token file: {e}"),
        }
    }.in_current_span());
}

/// After a restart into `Unauthenticated`: if the credential file changed since, use it.
fn check_credentials_changed_since(
    myself: &ActorRef<TokenMsg>,
    st: &TokenActorState,
    since: Timestamp,
) {
    let Some(path) = st.args.credentials.file_path() else {
        return;
    };
    let me = myself.clone();
    let name = st.args.spec.name.clone();
    tokio::spawn(async move {
        let modified = tokio::task::spawn_blocking(move || {
            std::fs::metadata(&path).and_then(|md| md.modified())
        })
        .await;
        if let Ok(Ok(mtime)) = modified
            && Timestamp::from_system_time(mtime) > since
        {
            tracing::info!(workload = %name, "refresh-token file changed while unauthenticated: trying it");
            let _ = me.cast(TokenMsg::CredentialsReplaced);
        }
    }.in_current_span());
}

/// At shutdown: a refresh in flight may rotate the refresh token at the provider. Wait for it
/// (and its write-back) so that the next start does not present a rotated-away token, which
/// a provider with reuse detection answers by revoking the whole grant. Attempts still
/// queued for a permit do not send their request.
async fn finish_attempts(st: &mut TokenActorState) {
    st.wanted.store(NO_ATTEMPT, Ordering::Release);
    let attempts = st.attempts.take();
    let limit = st
        .args
        .spec
        .policy
        .machine_config()
        .attempt_timeout
        .min(SHUTDOWN_ATTEMPT_WAIT);
    let all = async {
        for attempt in attempts {
            let _ = attempt.await;
        }
    };
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::warn!(workload = %st.args.spec.name, "a refresh was still in flight at shutdown after {}", humantime::format_duration(limit));
    }
}

/// Removal: the actor stops once its refreshes in flight are done (bounded as at shutdown),
/// waited for in a task so the handler returns. The supervisor answers the removal only when
/// the actor has stopped, so a workload removed and added again (a reload that changed it)
/// never has two attempts in flight, and its new actor starts after a rotated refresh token
/// of the old one is on disk. Attempts still queued for a permit do not send their request.
fn stop_after_attempts(myself: &ActorRef<TokenMsg>, st: &mut TokenActorState) {
    st.wanted.store(NO_ATTEMPT, Ordering::Release);
    let attempts = st.attempts.take();
    let limit = st
        .args
        .spec
        .policy
        .machine_config()
        .attempt_timeout
        .min(SHUTDOWN_ATTEMPT_WAIT);
    let me = myself.clone();
    let name = st.args.spec.name.clone();
    tokio::spawn(async move {
        let all = async {
            for attempt in attempts {
                let _ = attempt.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(workload = %name, "a refresh was still in flight at removal after {}", humantime::format_duration(limit));
        }
        me.stop(Some("removed".into()));
    }.in_current_span());
}

/// An attempt not sent because its endpoint is on hold until `until` (the provider's
/// `Retry-After`), as of `now`: a transient `rate_limited` failure whose `Retry-After` is
/// the hold's remainder (not `Input::NotSent`: module docs).
fn held_failure(until: Timestamp, now: Timestamp) -> Failure {
    count_not_sent(m::ENDPOINT_HELD_ATTEMPTS);
    gate_failure(
        Some(until.since(now)),
        format!("not sent: the endpoint asked all clients to wait until {until}"),
    )
}

/// Waits until the endpoint is not on hold, if the hold (plus this attempt's share of jitter)
/// ends before `deadline`; otherwise returns the hold's end. `jitter` in [0, 1) spreads
/// the workloads that waited for the same hold over up to a quarter of it (at most a second,
/// within the budget), so they do not all queue at the endpoint's gate in the same instant.
async fn wait_out_hold(
    gate: &EndpointGate,
    clock: Clock,
    deadline: tokio::time::Instant,
    jitter: f64,
) -> Result<(), Timestamp> {
    let mut waited = false;
    while let Some(until) = gate.held_until(clock.now()) {
        let remaining = clock.until(until);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining > left {
            return Err(until);
        }
        let spread = (remaining / 4)
            .min(Duration::from_secs(1))
            .min(left - remaining);
        if !waited {
            metrics::counter!(m::ENDPOINT_HOLD_WAITS).increment(1);
            waited = true;
        }
        tokio::time::sleep(remaining + spread.mul_f64(jitter)).await;
    }
    Ok(())
}

/// An attempt not sent because its paced endpoint (its pace cut by the provider's 429/503)
/// had no start for it within its budget: a transient `rate_limited` failure (not
/// `Input::NotSent`: module docs).
fn paced_failure(no_slot: NoSlot) -> Failure {
    count_not_sent(m::ENDPOINT_PACED_ATTEMPTS);
    gate_failure(
        None,
        format!(
            "not sent: the endpoint is paced at {:.1} requests/s after it asked for less, and had no free start within this attempt's budget",
            no_slot.rate
        ),
    )
}

/// The transient failure of an attempt a hold or a pace kept back: `rate_limited`, no HTTP
/// status, no error code.
fn gate_failure(retry_after: Option<Duration>, summary: String) -> Failure {
    Failure {
        kind: FailureKind::RateLimited,
        http_status: None,
        error_code: None,
        retry_after,
        summary,
    }
}

/// An attempt not sent because every request slot of its endpoint (`limit` of them)
/// stayed busy for its whole budget: our own queue, no failure of the workload (the
/// machine requeues it).
fn busy_not_sent(limit: usize, waited: Duration) -> NotSent {
    count_not_sent(m::ENDPOINT_BUSY_ATTEMPTS);
    NotSent {
        waited,
        summary: format!(
            "not sent: the endpoint's {limit} request slots stayed busy for this attempt's whole budget"
        ),
    }
}

/// Counts an attempt the endpoint's gate kept back (busy slots, a hold, a pace) in
/// `counter` and in `REFRESH_ATTEMPTS` as `outcome="not_sent"`, `kind="rate_limited"`:
/// nothing was sent, even when the machine takes it as a transient failure (a hold, a pace).
fn count_not_sent(counter: &'static str) {
    metrics::counter!(counter).increment(1);
    metrics::counter!(m::REFRESH_ATTEMPTS, "outcome" => "not_sent", "kind" => FailureKind::RateLimited.as_str())
        .increment(1);
}

/// How an attempt task ends: a verdict (sent, or failed on its own side), or not sent
/// because of the endpoint's gate.
enum Ended {
    Verdict(Verdict),
    NotSent(NotSent),
}

/// The value of `wanted` when no attempt may send (the actor is stopping).
const NO_ATTEMPT: u64 = u64::MAX;

/// Whether an attempt task may still send: the machine still wants this attempt and the
/// actor is not stopping.
fn still_wanted(wanted: &AtomicU64, attempt: AttemptId) -> bool {
    wanted.load(Ordering::Acquire) == attempt.0
}

/// Runs one attempt outside the handler and casts its classified result back.
///
/// In a storm thousands of attempt tasks wait for their endpoint's permit at once, so the
/// task itself stays small while it waits (a few `Arc`s, the hold sleep, the permit request);
/// the exchange, its classification and the write-back of a rotated token run in [`send`],
/// allocated only once the permit is held, in the workload's span made then.
///
/// One owner per credential: before its request the task takes the workload's
/// [`CredentialStore::owner`] (waiting for an attempt of the same workload still in flight,
/// one that new credentials superseded) and checks that the machine still wants it; it holds
/// the owner until its rotated refresh token is stored. So a forced refresh, new credentials
/// or a restarted actor never send a second request beside one in flight, and the attempt
/// that follows presents the token the one before it left.
fn spawn_attempt(myself: &ActorRef<TokenMsg>, st: &mut TokenActorState, attempt: AttemptId) {
    st.wanted.store(attempt.0, Ordering::Release);
    let wanted = st.wanted.clone();
    let me = myself.clone();
    let deps = st.args.deps.clone();
    let gate = st.args.gate.clone();
    let creds = st.args.credentials.clone();
    let spec = st.args.spec.clone();
    let jitter = st.rng.f64();
    let pace_jitter = st.rng.f64();
    let task = tokio::spawn(async move {
        let clock = deps.clock;
        let began = tokio::time::Instant::now();
        let deadline = began + spec.policy.hold_wait_budget();
        let ended = loop {
            if let Err(until) = wait_out_hold(&gate, clock, deadline, jitter).await {
                // The provider's hold (its `Retry-After`): a transient failure, as before.
                break Ended::Verdict(Verdict::Transient(held_failure(until, clock.now())));
            }
            if !still_wanted(&wanted, attempt) {
                return;
            }
            let started = tokio::time::Instant::now();
            // Cluster mode: the credential in step with etcd before the permit, under the
            // owner lock, released again (the order permit → owner stays): etcd round trips
            // hold no request slot (`cluster::link`).
            if let Err(reason) = cluster_sync_ahead(&deps, &creds, &spec).await {
                let verdict = cluster_verdict(&reason);
                count_attempt(&verdict);
                break Ended::Verdict(verdict);
            }
            // The wait for a slot is bounded by the same budget as the hold and the pace: an
            // attempt queued past it would be abandoned by the machine anyway, and under
            // overload (100,000 workloads starting together) an unbounded FIFO served only
            // attempts already past their deadline, so no refresh ever completed.
            let Ok(permit) = tokio::time::timeout_at(deadline, gate.acquire()).await else {
                break Ended::NotSent(busy_not_sent(gate.adaptive().0, began.elapsed()));
            };
            if !still_wanted(&wanted, attempt) {
                return;
            }
            // A paced endpoint spaces the starts (the permit is held while waiting for one:
            // at most `limit` attempts queue there, in order).
            if let Err(no_slot) = gate.pace(clock, deadline, pace_jitter).await {
                // The pace the provider's 429/503 set: a transient failure, as before.
                break Ended::Verdict(Verdict::Transient(paced_failure(no_slot)));
            }
            // A hold may have begun while this attempt queued for its permit.
            if gate.held_until(clock.now()).is_some() {
                drop(permit);
                continue;
            }
            // The one request of this workload in flight (module docs of `credentials`).
            let owner = creds.owner().await;
            if !still_wanted(&wanted, attempt) {
                return;
            }
            // Cluster mode: the shard is active here, the credential is the cluster's, and
            // the whole attempt fits in the lease (`cluster::link`); held until its result
            // is written.
            let _in_flight = match cluster_prepare(&deps, &creds, &spec).await {
                Ok(guard) => guard,
                Err(reason) => {
                    drop(owner);
                    drop(permit);
                    let verdict = cluster_verdict(&reason);
                    count_attempt(&verdict);
                    break Ended::Verdict(verdict);
                }
            };
            // The permit bounds the rotations not yet durable: `send` releases it once a
            // successful answer's rotated refresh token is committed (at once when there is
            // nothing to save); the owner stays held until the token is durable too, so the
            // workload sends nothing more meanwhile. Any other answer keeps
            // it until its 429/503 hold is recorded (the attempt queued next sees it) and
            // through the retry of a final answer with the durable token.
            // The request phase runs in the workload's span (made here, not held while queued).
            let span = workload_span(&spec.name);
            let mut permit = Some(permit);
            let (verdict, write_back) = Box::pin(
                send(&deps, &gate, &mut permit, &creds, &spec, started).instrument(span.clone()),
            )
            .await;
            drop(permit);
            // The journal holds the rotated token: the operator's file is written after the
            // permit is released, and before the result is sent.
            if let Some(w) = write_back {
                write_back_rotated(&creds, &spec, w).instrument(span).await;
            }
            drop(owner);
            break Ended::Verdict(verdict);
        };
        // The actor may be gone (removed, restarted): then the result is moot.
        let _ = me.cast(match ended {
            Ended::Verdict(verdict) => TokenMsg::AttemptDone { attempt, verdict },
            Ended::NotSent(not_sent) => TokenMsg::AttemptNotSent { attempt, not_sent },
        });
    });
    st.attempts.push(attempt, task);
}

/// A workload's attempt tasks not known to have finished, which shutdown and removal wait
/// for. A tokio task's allocation (its whole future, ≈ 1 KB for an attempt) lives as long
/// as its `JoinHandle`, even once the task has finished: a handle is dropped when its
/// attempt's result arrives (the task casts it last, after its write-back), and finished
/// ones whenever another attempt starts or ends, so an idle workload keeps no task and no
/// vector.
#[derive(Debug, Default)]
struct Attempts(Vec<(AttemptId, JoinHandle<()>)>);

impl Attempts {
    /// Tracks a new attempt's task.
    fn push(&mut self, attempt: AttemptId, task: JoinHandle<()>) {
        self.forget(|_| false);
        self.0.push((attempt, task));
    }

    /// `attempt`'s result arrived: its task has nothing left to do.
    fn done(&mut self, attempt: AttemptId) {
        self.forget(|a| a == attempt);
    }

    /// Every task still tracked (shutdown, removal).
    fn take(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|(_, task)| task)
            .collect()
    }

    /// Drops the handles of finished tasks and of the attempts `also` names; frees the
    /// vector once it is empty.
    fn forget(&mut self, also: impl Fn(AttemptId) -> bool) {
        self.0.retain(|(a, task)| !also(*a) && !task.is_finished());
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// One token request, with its endpoint permit and its workload's owner held: exchange,
/// classify, record a `Retry-After` hold, store a rotated refresh token (the permit and the
/// owner kept until the token is stored). A final answer to
/// a refresh token that is no longer the durable one (rotated or replaced by someone else
/// since the snapshot) is not believed: the request is made once more with the durable one.
async fn send<'g>(
    deps: &Deps,
    gate: &'g EndpointGate,
    permit: &mut Option<SemaphorePermit<'g>>,
    creds: &CredentialStore,
    spec: &WorkloadSpec,
    started: tokio::time::Instant,
) -> (Verdict, Option<WriteBack>) {
    // Never present a refresh token whose journal commit failed: a crash after the provider
    // rotated it again would lose the grant.
    if let Err(reason) = creds.ensure_durable().await {
        return (not_durable_verdict(&reason), None);
    }
    let (verdict, presented, write_back) =
        exchange_once(deps, gate, permit, creds, spec, started).await;
    let (Verdict::Permanent(_), crate::transport::Grant::RefreshToken(presented)) =
        (&verdict, presented)
    else {
        return (verdict, write_back);
    };
    // Cluster mode: a newer refresh token in etcd (another owner rotated it) is adopted,
    // and a second request is sent only under the send rule.
    cluster_reread(deps, spec, creds, &presented).await;
    match creds.current_durable_refresh_token().await {
        Some(durable) if durable != presented && cluster_may_send(deps, spec) => {
            tracing::warn!(workload = %spec.name, "final answer to a refresh token that is no longer the current one; trying the current one");
            metrics::counter!(m::REFRESH_TOKEN_ADOPTED).increment(1);
            if let Some(w) = write_back {
                write_back_rotated(creds, spec, w).await;
            }
            let (verdict, _, write_back) =
                exchange_once(deps, gate, permit, creds, spec, tokio::time::Instant::now()).await;
            (verdict, write_back)
        }
        Some(_) | None => (verdict, write_back),
    }
}

/// One exchange with the credentials of the moment (see [`send`]); returns its verdict, the
/// grant it presented, and the write-back of a rotated refresh token still to do. A success
/// releases the endpoint `permit` once its rotated token is committed (at once when there is
/// none to save).
async fn exchange_once<'g>(
    deps: &Deps,
    gate: &'g EndpointGate,
    permit: &mut Option<SemaphorePermit<'g>>,
    creds: &CredentialStore,
    spec: &WorkloadSpec,
    started: tokio::time::Instant,
) -> (Verdict, crate::transport::Grant, Option<WriteBack>) {
    let snapshot = creds.snapshot();
    // `jwt_bearer` / `token_exchange`: the platform's token, read now; unusable, not sent.
    let grant = match crate::workload_identity::present(
        &spec.grant,
        snapshot.grant.clone(),
        deps.clock.now(),
    )
    .await
    {
        Ok(grant) => {
            creds.set_presented(crate::workload_identity::stamp(&grant));
            grant
        }
        Err(not_sent) => {
            count_attempt(&not_sent);
            return (not_sent, snapshot.grant, None);
        }
    };
    let mut req = ExchangeRequest::for_spec(spec, grant);
    req.client_secret = snapshot.client_secret.clone();
    let sent = tokio::time::Instant::now();
    let outcome = deps.transport.exchange(req.clone()).await;
    let took = sent.elapsed();
    let now = deps.clock.now();
    // Built per attempt rather than kept per workload: without extra error codes (the usual
    // case) it allocates nothing, and 100,000 idle workloads do not each hold a copy.
    let policy: ClassifyPolicy = spec.policy.classify_policy();
    let secrets = req.secrets();
    let verdict = classify(&outcome, now, &policy, &secrets.iter().collect::<Vec<_>>());
    // A rejection of one platform-rotated token is not the end of the grant.
    let verdict = match spec.grant.presents_platform_token() {
        true => tokenvisor_core::classify::for_presented_credential(verdict, &policy),
        false => verdict,
    };
    metrics::histogram!(m::REFRESH_DURATION).record(started.elapsed().as_secs_f64());
    let scope = gate.feedback(feedback_of(&verdict, &outcome, now), now);
    // The hold is clamped like every delay: no server makes the endpoint wait longer than a
    // timer can be armed for. A sporadic throttle holds only this workload (the machine
    // waits its `Retry-After`); the endpoint's holds every workload of it.
    if let Verdict::Transient(f) = &verdict
        && matches!(f.http_status, Some(429 | 503))
        && let Some(ra) = f.retry_after.map(|ra| ra.min(MAX_TIMER_DELAY))
    {
        match scope {
            HoldScope::Endpoint => {
                if gate.hold(now.plus(ra)) {
                    metrics::counter!(m::ENDPOINT_HOLDS).increment(1);
                    tracing::warn!(endpoint = %spec.token_url, "endpoint asked to wait {}s: holding every workload of it", ra.as_secs());
                }
            }
            // The endpoint's pace was cut instead: the others go on at the cut pace.
            HoldScope::Pace => {
                tracing::debug!(workload = %spec.name, "a 429 above the endpoint's pace asked to wait {}s: the pace is cut, only this workload waits", ra.as_secs());
            }
            HoldScope::Workload => {
                metrics::counter!(m::ENDPOINT_SPORADIC_THROTTLES).increment(1);
                tracing::debug!(workload = %spec.name, "a sporadic 429 asked to wait {}s: only this workload waits", ra.as_secs());
            }
        }
    }
    count_attempt(&verdict);
    gate.record(matches!(verdict, Verdict::Success(_)), took);
    let is_refresh = matches!(&snapshot.grant, crate::transport::Grant::RefreshToken(_));
    let (verdict, write_back) = match verdict {
        Verdict::Success(mut grant) => {
            let (durable, write_back) = match (grant.refresh_token.take(), is_refresh) {
                (Some(rt), true) => {
                    // The slot stays held until the rotated token is durable: a rotation the
                    // provider made and we have not saved is still in flight, and a kill -9
                    // must never lose more of them than `endpoint_concurrency`.
                    // Cluster mode: etcd first (fenced); the local journal keeps it either way.
                    let cluster = cluster_commit(deps, spec, &rt).await;
                    let (durable, write_back) =
                        store_rotated(creds, spec, snapshot.generation, rt).await;
                    drop(permit.take());
                    (durable.and(cluster), write_back)
                }
                (Some(_) | None, true | false) => {
                    // Nothing to save: the slot is free for the next request at once.
                    drop(permit.take());
                    (Ok(()), None)
                }
            };
            match durable {
                Ok(()) => (Verdict::Success(grant), write_back),
                // Not `running` on a token that is not durable: the token served so far
                // stays served until it expires, and the refresh is retried with backoff.
                Err(reason) => (not_durable_verdict(&reason), write_back),
            }
        }
        other @ (Verdict::Transient(_) | Verdict::Permanent(_)) => {
            // A 2xx the classifier rejects may still carry a rotated refresh token, maybe
            // the only valid one now: keep it.
            let mut write_back = None;
            if is_refresh
                && let Some(rt) = tokenvisor_core::classify::refresh_token_in_2xx(&outcome)
            {
                tracing::warn!(workload = %spec.name, "a rejected 2xx answer carried a rotated refresh token: kept");
                // Cluster mode: etcd first, as for a success (its failure is the next
                // attempt's to repair: that one writes the local token first).
                let _ = cluster_commit(deps, spec, &rt).await;
                write_back = store_rotated(creds, spec, snapshot.generation, rt).await.1;
            }
            (other, write_back)
        }
    };
    (verdict, snapshot.grant, write_back)
}

/// What an answer says about the endpoint's capacity: 429/503 ask for less (with a vendor
/// rate-limit reset header: the quota is spent, the endpoint's); any other answer the
/// endpoint gave (a token, a final verdict) shows it had room; a failure without an answer
/// (a timeout, a network error) or another transient status says nothing.
fn feedback_of(verdict: &Verdict, outcome: &RawOutcome, now: Timestamp) -> Feedback {
    match verdict {
        Verdict::Success(_) | Verdict::Permanent(_) => Feedback::Good,
        Verdict::Transient(f) => match f.http_status {
            Some(429 | 503) => match outcome {
                RawOutcome::Response(a)
                    if tokenvisor_core::classify::rate_limit_hold(
                        a.status,
                        &a.rate_limit,
                        now,
                        MAX_TIMER_DELAY,
                    )
                    .is_some() =>
                {
                    Feedback::QuotaSpent
                }
                // The server is unavailable (not this client's pace): the endpoint's.
                RawOutcome::Response(a) if a.status == 503 => Feedback::Unavailable,
                RawOutcome::Response(_) | RawOutcome::Transport { .. } => Feedback::Throttled,
            },
            Some(_) | None => Feedback::Neutral,
        },
    }
}

/// Stores a rotated refresh token in memory and the journal: `Err(reason)` when it is not
/// durable; the file write-back still to do.
async fn store_rotated(
    creds: &CredentialStore,
    spec: &WorkloadSpec,
    generation: u64,
    rt: tokenvisor_core::Secret,
) -> (Result<(), String>, Option<WriteBack>) {
    match creds.rotate(generation, rt).await {
        (RotateOutcome::Stored | RotateOutcome::Stale | RotateOutcome::MemoryOnly { .. }, w) => {
            (Ok(()), w)
        }
        (RotateOutcome::NotDurable { reason }, w) => {
            metrics::counter!(m::CREDENTIAL_WRITE_FAILURES).increment(1);
            tracing::error!(workload = %spec.name, "rotated refresh token not durable: {reason}");
            (Err(reason), w)
        }
    }
}

/// Writes a rotated refresh token back to the operator's file (the journal holds it).
async fn write_back_rotated(creds: &CredentialStore, spec: &WorkloadSpec, w: WriteBack) {
    if let Err(error) = creds.write_back(w).await {
        metrics::counter!(m::CREDENTIAL_WRITE_FAILURES).increment(1);
        tracing::error!(workload = %spec.name, "rotated refresh token not written to its file (the journal holds it): {error}");
    }
}

/// The verdict of an attempt whose rotated refresh token is not durable (journal commit
/// failed): transient, with the reason in the status context.
fn not_durable_verdict(reason: &str) -> Verdict {
    Verdict::Transient(Failure {
        kind: FailureKind::Io,
        http_status: None,
        error_code: None,
        retry_after: None,
        summary: tokenvisor_core::classify::excerpt(
            format!("the rotated refresh token is not saved yet ({reason}); retrying").as_bytes(),
        ),
    })
}

/// Counts an attempt's outcome (closed label sets: outcome and failure kind).
fn count_attempt(verdict: &Verdict) {
    let kind = verdict.failure().map_or("ok", |f| f.kind.as_str());
    metrics::counter!(m::REFRESH_ATTEMPTS, "outcome" => verdict.outcome(), "kind" => kind)
        .increment(1);
}

/// Cluster mode, before the endpoint's permit: a rotating grant's credential brought in
/// step with etcd under the workload's owner lock (`ClusterLink::sync_ahead`); `Err` with
/// the reason it may not be sent. Nothing in one-process mode or for other grants.
#[cfg(feature = "cluster")]
async fn cluster_sync_ahead(
    deps: &Deps,
    creds: &CredentialStore,
    spec: &WorkloadSpec,
) -> Result<(), String> {
    match &deps.cluster {
        Some(c) if matches!(spec.grant, crate::spec::GrantSpec::RefreshToken { .. }) => {
            let _owner = creds.owner().await;
            c.sync_ahead(spec, creds).await
        }
        Some(_) | None => Ok(()),
    }
}

#[cfg(not(feature = "cluster"))]
#[allow(clippy::unused_async)]
async fn cluster_sync_ahead(
    _deps: &Deps,
    _creds: &CredentialStore,
    _spec: &WorkloadSpec,
) -> Result<(), String> {
    Ok(())
}

/// The guard of an attempt in cluster mode (`cluster::link`), `Err` with the reason it may
/// not be sent; always `Ok` in one-process mode. The send rule counts what is left of the
/// attempt once it sends (`WorkloadPolicy::send_bound`), not its waits.
#[cfg(feature = "cluster")]
async fn cluster_prepare(
    deps: &Deps,
    creds: &CredentialStore,
    spec: &WorkloadSpec,
) -> Result<Option<crate::cluster::SendGuard>, String> {
    match &deps.cluster {
        Some(c) => c
            .prepare(spec, creds, spec.policy.send_bound())
            .await
            .map(Some),
        None => Ok(None),
    }
}

#[cfg(not(feature = "cluster"))]
#[allow(clippy::unused_async)]
async fn cluster_prepare(
    _deps: &Deps,
    _creds: &CredentialStore,
    _spec: &WorkloadSpec,
) -> Result<Option<()>, String> {
    Ok(None)
}

/// Cluster mode: a rotated refresh token written to etcd (fenced) first; `Err` with why not.
#[cfg(feature = "cluster")]
async fn cluster_commit(
    deps: &Deps,
    spec: &WorkloadSpec,
    rt: &tokenvisor_core::Secret,
) -> Result<(), String> {
    match &deps.cluster {
        Some(c) => c
            .commit_rotation(spec, rt)
            .await
            .map_err(|why| format!("not written to etcd: {why}")),
        None => Ok(()),
    }
}

#[cfg(not(feature = "cluster"))]
#[allow(clippy::unused_async)]
async fn cluster_commit(
    _deps: &Deps,
    _spec: &WorkloadSpec,
    _rt: &tokenvisor_core::Secret,
) -> Result<(), String> {
    Ok(())
}

/// Cluster mode: after a final answer, a newer refresh token in etcd is adopted (true).
#[cfg(feature = "cluster")]
async fn cluster_reread(
    deps: &Deps,
    spec: &WorkloadSpec,
    creds: &CredentialStore,
    presented: &tokenvisor_core::Secret,
) -> bool {
    match &deps.cluster {
        Some(c) => c.reread(spec, creds, presented).await,
        None => false,
    }
}

#[cfg(not(feature = "cluster"))]
#[allow(clippy::unused_async)]
async fn cluster_reread(
    _deps: &Deps,
    _spec: &WorkloadSpec,
    _creds: &CredentialStore,
    _presented: &tokenvisor_core::Secret,
) -> bool {
    false
}

/// Cluster mode: whether a second request of this attempt may still be sent (send rule).
#[cfg(feature = "cluster")]
fn cluster_may_send(deps: &Deps, spec: &WorkloadSpec) -> bool {
    deps.cluster
        .as_ref()
        .is_none_or(|c| c.may_send(spec, spec.policy.send_bound()))
}

#[cfg(not(feature = "cluster"))]
fn cluster_may_send(_deps: &Deps, _spec: &WorkloadSpec) -> bool {
    true
}

/// The verdict of an attempt cluster mode did not send: transient, the reason in the
/// status context (`auth_retrying` once the token it served runs out).
fn cluster_verdict(reason: &str) -> Verdict {
    Verdict::Transient(Failure {
        kind: FailureKind::Io,
        http_status: None,
        error_code: None,
        retry_after: None,
        summary: tokenvisor_core::classify::excerpt(reason.as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, SharedString};
    use metrics::{Recorder, Unit};
    use tokenvisor_core::{Failure, FailureKind, Timestamp};

    use super::{AttemptId, Attempts, NoSlot, busy_not_sent, held_failure, paced_failure};
    use crate::metrics as m;

    /// Every counter increment, as `name{label=value,…} +n`.
    #[derive(Default)]
    struct Increments(Arc<Mutex<Vec<String>>>);

    struct Increment(Arc<Mutex<Vec<String>>>, String);

    impl CounterFn for Increment {
        fn increment(&self, value: u64) {
            self.0.lock().unwrap().push(format!("{} +{value}", self.1));
        }
        fn absolute(&self, value: u64) {
            self.0.lock().unwrap().push(format!("{} ={value}", self.1));
        }
    }

    impl Recorder for Increments {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Counter::from_arc(Arc::new(Increment(self.0.clone(), name)))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// An attempt kept back by a hold or a pace (the provider's 429/503) is a transient
    /// `rate_limited` failure the driver builds itself (a hold's remainder as its
    /// `Retry-After`), counted in its own counter and as `outcome="not_sent"`, like one kept
    /// back by busy slots (which is `Input::NotSent` instead).
    #[test]
    fn a_held_or_paced_attempt_is_a_rate_limited_failure_counted_as_not_sent() {
        let now = Timestamp::from_millis(1_790_000_000_000);
        let until = now.plus(Duration::from_secs(30));
        let rec = Increments::default();
        let (held, paced, busy) = metrics::with_local_recorder(&rec, || {
            (
                held_failure(until, now),
                paced_failure(NoSlot { rate: 2.5 }),
                busy_not_sent(64, Duration::from_secs(4)),
            )
        });
        let failure = |retry_after, summary: String| Failure {
            kind: FailureKind::RateLimited,
            http_status: None,
            error_code: None,
            retry_after,
            summary,
        };
        assert_eq!(
            held,
            failure(
                Some(Duration::from_secs(30)),
                format!("not sent: the endpoint asked all clients to wait until {until}")
            )
        );
        assert_eq!(
            paced,
            failure(
                None,
                "not sent: the endpoint is paced at 2.5 requests/s after it asked for less, \
                 and had no free start within this attempt's budget"
                    .into()
            )
        );
        assert_eq!(busy.waited, Duration::from_secs(4));
        assert_eq!(busy.failure(), failure(None, busy.summary.clone()));
        let not_sent = format!(
            "{}{{outcome=not_sent,kind=rate_limited}} +1",
            m::REFRESH_ATTEMPTS
        );
        assert_eq!(
            *rec.0.lock().unwrap(),
            [
                format!("{}{{}} +1", m::ENDPOINT_HELD_ATTEMPTS),
                not_sent.clone(),
                format!("{}{{}} +1", m::ENDPOINT_PACED_ATTEMPTS),
                not_sent.clone(),
                format!("{}{{}} +1", m::ENDPOINT_BUSY_ATTEMPTS),
                not_sent,
            ]
        );
    }

    /// A handle is dropped when its attempt's result arrives, even if the task has not quite
    /// ended (it casts its result last): an idle workload keeps no task allocation.
    #[tokio::test(start_paused = true)]
    async fn an_attempt_task_is_let_go_when_its_result_arrives() {
        let mut attempts = Attempts::default();
        let (_release, wait) = tokio::sync::oneshot::channel::<()>();
        attempts.push(
            AttemptId(1),
            tokio::spawn(async move {
                let _ = wait.await;
            }),
        );
        attempts.push(AttemptId(2), tokio::spawn(std::future::pending::<()>()));
        attempts.done(AttemptId(1));
        assert_eq!(attempts.len(), 1, "attempt 2 is still in flight");
        attempts.done(AttemptId(2));
        assert_eq!(attempts.len(), 0);
        assert_eq!(attempts.capacity(), 0, "an idle workload keeps no vector");
    }

    /// A superseded attempt ends without a result: its finished task is let go when the next
    /// attempt starts; shutdown still gets every task not known to have finished.
    #[tokio::test(start_paused = true)]
    async fn a_finished_attempt_without_a_result_is_let_go_when_the_next_starts() {
        let mut attempts = Attempts::default();
        let stale = tokio::spawn(async {});
        for _ in 0..100 {
            if stale.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(stale.is_finished());
        attempts.push(AttemptId(1), stale);
        attempts.push(AttemptId(2), tokio::spawn(std::future::pending::<()>()));
        assert_eq!(attempts.len(), 1);
        let left = attempts.take();
        assert_eq!(left.len(), 1, "shutdown waits for attempt 2");
        assert_eq!(attempts.len(), 0);
        for task in left {
            task.abort();
        }
    }
}
