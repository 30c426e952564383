//! Machine tests.
//!
//! - `transition_table`: every (state, input) pair, one row each, asserting the resulting
//!   state, the effects and the status mapping.
//! - `Machine::start` for each `Resume`, and `StatusRecord::resume` round trips.
//! - Focused tests for the rules the table cannot show (give-up boundary, Retry-After floor,
//!   stale results after an abandoned attempt, …).
//! - Property tests over random input sequences (proptest).

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::classify::{Failure, FailureKind, TokenGrant, Verdict};
use crate::secret::Secret;
use crate::status::{ErrorOutcome, StatusRecord, TokenState, WorkloadStatus};

const T0: Timestamp = Timestamp::from_millis(1_790_000_000_000);
const LIFETIME: u64 = 3600;
const TIMEOUT: Duration = Duration::from_secs(35);
const GIVE_UP: Duration = Duration::from_secs(24 * 3600);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn config() -> MachineConfig {
    MachineConfig {
        schedule: RefreshSchedule::default(),
        backoff: BackoffPolicy::default(),
        give_up_after: GIVE_UP,
        attempt_timeout: TIMEOUT,
    }
}

fn grant(lifetime: Duration) -> TokenGrant {
    TokenGrant {
        access_token: Secret::from("at-test"),
        refresh_token: None,
        lifetime,
        lifetime_from_provider: true,
        token_type: "Bearer".into(),
        scope: None,
    }
}

fn transient_failure(retry_after: Option<Duration>) -> Failure {
    Failure {
        kind: FailureKind::Server5xx,
        http_status: Some(503),
        error_code: None,
        retry_after,
        summary: "HTTP 503 (no content type), empty body".into(),
    }
}

fn permanent_failure() -> Failure {
    Failure {
        kind: FailureKind::OauthRejected,
        http_status: Some(400),
        error_code: Some("invalid_grant".into()),
        retry_after: None,
        summary: "HTTP 400 invalid_grant: revoked".into(),
    }
}

fn ok(lifetime: Duration) -> Verdict {
    Verdict::Success(grant(lifetime))
}

fn transient(retry_after: Option<Duration>) -> Verdict {
    Verdict::Transient(transient_failure(retry_after))
}

fn permanent() -> Verdict {
    Verdict::Permanent(permanent_failure())
}

fn result(attempt: AttemptId, verdict: Verdict) -> Input {
    Input::RefreshResult { attempt, verdict }
}

/// An attempt the driver's gate kept back: every slot busy for a 4 s wait.
fn busy() -> NotSent {
    NotSent {
        waited: secs(4),
        summary: "not sent: the endpoint's 64 request slots stayed busy".into(),
    }
}

fn not_sent(attempt: AttemptId, not_sent: NotSent) -> Input {
    Input::NotSent { attempt, not_sent }
}

/// A machine plus what a driver would know: the time, the last attempt started, and the
/// expiry of the token it serves (tracked from `publish` / `withdraw` effects only).
struct Fx {
    m: Machine,
    rng: fastrand::Rng,
    now: Timestamp,
    last: AttemptId,
    served: Option<Timestamp>,
}

impl Fx {
    fn start(
        config: MachineConfig,
        resume: Resume,
        served_until: Option<Timestamp>,
        now: Timestamp,
    ) -> (Fx, Effects) {
        let (m, fx) = Machine::start(config, resume, served_until, now);
        let mut f = Fx {
            m,
            rng: fastrand::Rng::with_seed(42),
            now,
            last: AttemptId(0),
            served: served_until,
        };
        f.absorb(&fx);
        (f, fx)
    }

    fn fresh() -> Fx {
        Fx::start(config(), Resume::Fresh, None, T0).0
    }

    fn absorb(&mut self, fx: &Effects) {
        if let Some(a) = fx.start_attempt {
            self.last = a;
        }
        if fx.withdraw.is_some() {
            self.served = None;
        }
        if let Some(g) = &fx.publish {
            self.served = Some(self.now.plus(g.lifetime));
        }
    }

    fn step(&mut self, input: Input, at: Timestamp) -> Effects {
        assert!(at >= self.now, "time runs forward");
        self.now = at;
        let fx = self.m.handle(input, at, &mut self.rng);
        self.absorb(&fx);
        fx
    }

    fn after(&mut self, d: Duration, input: Input) -> Effects {
        let at = self.now.plus(d);
        self.step(input, at)
    }

    fn succeed(&mut self, d: Duration) -> Effects {
        let a = self.last;
        self.after(d, result(a, ok(secs(LIFETIME))))
    }

    fn fail(&mut self, d: Duration, verdict: Verdict) -> Effects {
        let a = self.last;
        self.after(d, result(a, verdict))
    }

    /// The last attempt started comes back not sent, `d` later.
    fn unsent(&mut self, d: Duration, ns: NotSent) -> Effects {
        let a = self.last;
        self.after(d, not_sent(a, ns))
    }
}

// ── The states of the table, each reached through the public API.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Healthy,
    /// The first attempt: no retry, no token.
    RefreshingFirst,
    /// A scheduled refresh: no retry, a token served.
    RefreshingServed,
    RefreshingRetryServed,
    RefreshingRetryNoToken,
    BackoffServed,
    BackoffNoToken,
    UnauthRejected,
    UnauthGaveUp,
    Stopped,
    /// A scheduled refresh not sent: requeued, a token served.
    RequeuedServed,
    /// The first attempt not sent: requeued, no token.
    RequeuedFirst,
    /// An attempt within a run of failures not sent, a token served.
    RequeuedRetry,
}

const SETUPS: [Setup; 13] = [
    Setup::Healthy,
    Setup::RefreshingFirst,
    Setup::RefreshingServed,
    Setup::RefreshingRetryServed,
    Setup::RefreshingRetryNoToken,
    Setup::BackoffServed,
    Setup::BackoffNoToken,
    Setup::UnauthRejected,
    Setup::UnauthGaveUp,
    Setup::Stopped,
    Setup::RequeuedServed,
    Setup::RequeuedFirst,
    Setup::RequeuedRetry,
];

fn setup(s: Setup) -> Fx {
    let mut f = Fx::fresh();
    match s {
        Setup::RefreshingFirst => {}
        Setup::Healthy => {
            f.succeed(secs(1));
        }
        Setup::RefreshingServed => {
            f.succeed(secs(1));
            f.after(secs(59), Input::ForceRefresh);
        }
        Setup::RefreshingRetryServed => {
            f.succeed(secs(1));
            f.after(secs(59), Input::ForceRefresh);
            f.fail(secs(1), transient(None));
            f.after(secs(1), Input::ForceRefresh);
        }
        Setup::RefreshingRetryNoToken => {
            f.fail(secs(1), transient(None));
            f.after(secs(1), Input::ForceRefresh);
        }
        Setup::BackoffServed => {
            f.succeed(secs(1));
            f.after(secs(59), Input::ForceRefresh);
            f.fail(secs(1), transient(None));
        }
        Setup::BackoffNoToken => {
            f.fail(secs(1), transient(None));
        }
        Setup::UnauthRejected => {
            f.fail(secs(1), permanent());
        }
        Setup::UnauthGaveUp => {
            f.fail(secs(1), transient(None));
            f.after(GIVE_UP, Input::TimerFired);
        }
        Setup::Stopped => {
            f.succeed(secs(1));
            f.after(secs(1), Input::Stop);
        }
        Setup::RequeuedServed => {
            f.succeed(secs(1));
            f.after(secs(59), Input::ForceRefresh);
            f.unsent(secs(4), busy());
        }
        Setup::RequeuedFirst => {
            f.unsent(secs(4), busy());
        }
        Setup::RequeuedRetry => {
            f.succeed(secs(1));
            f.after(secs(59), Input::ForceRefresh);
            f.fail(secs(1), transient(None));
            f.after(secs(1), Input::ForceRefresh);
            f.unsent(secs(4), busy());
        }
    }
    assert_eq!(tag(f.m.state()), expected_setup_tag(s), "{s:?}");
    f
}

fn expected_setup_tag(s: Setup) -> Tag {
    match s {
        Setup::Healthy => Tag::H,
        Setup::RefreshingFirst | Setup::RefreshingServed => Tag::R,
        Setup::RefreshingRetryServed | Setup::RefreshingRetryNoToken => Tag::RR,
        Setup::BackoffServed | Setup::BackoffNoToken => Tag::B,
        Setup::UnauthRejected => Tag::U,
        Setup::UnauthGaveUp => Tag::UG,
        Setup::Stopped => Tag::St,
        Setup::RequeuedServed | Setup::RequeuedFirst => Tag::Q,
        Setup::RequeuedRetry => Tag::QR,
    }
}

/// The state variant, with the distinctions the table cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    H,
    /// Refreshing, no run of failures.
    R,
    /// Refreshing, continuing a run of failures.
    RR,
    B,
    /// Unauthenticated, rejected.
    U,
    /// Unauthenticated, gave up.
    UG,
    St,
    /// Requeued (not sent), no run of failures.
    Q,
    /// Requeued within a run of failures.
    QR,
}

fn tag(s: &State) -> Tag {
    match s {
        State::Healthy { .. } => Tag::H,
        State::Refreshing { retry: None, .. } => Tag::R,
        State::Refreshing { retry: Some(_), .. } => Tag::RR,
        State::Requeued { retry: None, .. } => Tag::Q,
        State::Requeued { retry: Some(_), .. } => Tag::QR,
        State::TransientBackoff { .. } => Tag::B,
        State::Unauthenticated {
            reason: UnauthReason::Rejected,
            ..
        } => Tag::U,
        State::Unauthenticated {
            reason: UnauthReason::GaveUp,
            ..
        } => Tag::UG,
        State::Stopped => Tag::St,
    }
}

fn token_state(t: Tag) -> TokenState {
    match t {
        Tag::H => TokenState::Healthy,
        Tag::R | Tag::RR | Tag::Q | Tag::QR => TokenState::Refreshing,
        Tag::B => TokenState::TransientBackoff,
        Tag::U | Tag::UG => TokenState::Unauthenticated,
        Tag::St => TokenState::Stopped,
    }
}

// ── The inputs of the table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    /// 1 ms before the machine's wake-up.
    TimerEarly,
    /// Exactly at the wake-up (refresh due, attempt deadline, next attempt).
    TimerDue,
    /// A second past the attempt deadline measured from now.
    TimerDeadline,
    /// At the served token's expiry (two hours on when none is served): a late timer.
    TimerExpired,
    /// Past the give-up ceiling.
    TimerGiveUp,
    /// Results for the last attempt started (current while refreshing, finished otherwise).
    ResultOk,
    ResultTransient,
    ResultPermanent,
    /// The last attempt started was not sent (the driver's gate).
    ResultNotSent,
    /// A success for an earlier attempt.
    ResultStale,
    Creds,
    Force,
    Stop,
}

const INPUTS: [In; 13] = [
    In::TimerEarly,
    In::TimerDue,
    In::TimerDeadline,
    In::TimerExpired,
    In::TimerGiveUp,
    In::ResultOk,
    In::ResultTransient,
    In::ResultPermanent,
    In::ResultNotSent,
    In::ResultStale,
    In::Creds,
    In::Force,
    In::Stop,
];

fn input(f: &Fx, i: In) -> (Input, Timestamp) {
    let wake = f.m.wake_at();
    let later = f.now.plus(secs(1));
    match i {
        In::TimerEarly => (
            Input::TimerFired,
            wake.map_or(later, |w| {
                Timestamp::from_millis(w.as_millis() - 1).max(f.now)
            }),
        ),
        In::TimerDue => (Input::TimerFired, wake.unwrap_or(later)),
        In::TimerDeadline => (Input::TimerFired, f.now.plus(TIMEOUT + secs(1))),
        In::TimerExpired => (
            Input::TimerFired,
            f.served.unwrap_or_else(|| f.now.plus(secs(7200))),
        ),
        In::TimerGiveUp => (Input::TimerFired, f.now.plus(GIVE_UP + secs(3600))),
        In::ResultOk => (result(f.last, ok(secs(LIFETIME))), later),
        In::ResultTransient => (result(f.last, transient(Some(secs(30)))), later),
        In::ResultPermanent => (result(f.last, permanent()), later),
        In::ResultNotSent => (not_sent(f.last, busy()), later),
        In::ResultStale => (result(AttemptId(f.last.0 - 1), ok(secs(LIFETIME))), later),
        In::Creds => (Input::CredentialsReplaced, later),
        In::Force => (Input::ForceRefresh, later),
        In::Stop => (Input::Stop, later),
    }
}

/// The expected outcome of one row.
struct Want {
    to: Tag,
    start: bool,
    publish: bool,
    withdraw: Option<Withdraw>,
    persist: bool,
    status: WorkloadStatus,
}

const NW: Option<Withdraw> = None;
const WE: Option<Withdraw> = Some(Withdraw::Expired);
const WU: Option<Withdraw> = Some(Withdraw::Unauthenticated);
const WS: Option<Withdraw> = Some(Withdraw::Stopped);

const RUN: WorkloadStatus = WorkloadStatus::Running;
const RETRY: WorkloadStatus = WorkloadStatus::AuthRetrying;
const UNAUTH: WorkloadStatus = WorkloadStatus::Unauthenticated;
const STARTING: WorkloadStatus = WorkloadStatus::Starting;
const STOPPED: WorkloadStatus = WorkloadStatus::Stopped;

const fn w(
    to: Tag,
    start: bool,
    publish: bool,
    withdraw: Option<Withdraw>,
    persist: bool,
    status: WorkloadStatus,
) -> Want {
    Want {
        to,
        start,
        publish,
        withdraw,
        persist,
        status,
    }
}

/// No change at all.
const fn same(to: Tag, status: WorkloadStatus) -> Want {
    w(to, false, false, NW, false, status)
}

#[rustfmt::skip]
fn table() -> Vec<(Setup, In, Want)> {
    use In as I;
    use Setup as S;
    use Tag as T;
    vec![
        // ── Healthy: a refresh at refresh_at; results are all stale (nothing in flight).
        (S::Healthy, I::TimerEarly,      same(T::H, RUN)),
        (S::Healthy, I::TimerDue,        w(T::R, true, false, NW, true, RUN)),
        (S::Healthy, I::TimerDeadline,   same(T::H, RUN)),
        // A late timer (sleep/wake) past expiry: withdraw at once, then refresh.
        (S::Healthy, I::TimerExpired,    w(T::R, true, false, WE, true, STARTING)),
        (S::Healthy, I::TimerGiveUp,     w(T::R, true, false, WE, true, STARTING)),
        (S::Healthy, I::ResultOk,        same(T::H, RUN)),
        (S::Healthy, I::ResultTransient, same(T::H, RUN)),
        (S::Healthy, I::ResultPermanent, same(T::H, RUN)),
        (S::Healthy, I::ResultNotSent,   same(T::H, RUN)),
        (S::Healthy, I::ResultStale,     same(T::H, RUN)),
        (S::Healthy, I::Creds,           w(T::R, true, false, NW, true, RUN)),
        (S::Healthy, I::Force,           w(T::R, true, false, NW, true, RUN)),
        (S::Healthy, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Refreshing, first attempt, nothing served.
        (S::RefreshingFirst, I::TimerEarly,      same(T::R, STARTING)),
        (S::RefreshingFirst, I::TimerDue,        w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingFirst, I::TimerDeadline,   w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingFirst, I::TimerExpired,    w(T::B, false, false, NW, true, RETRY)),
        // The first failure starts the give-up clock: no giving up on it.
        (S::RefreshingFirst, I::TimerGiveUp,     w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingFirst, I::ResultOk,        w(T::H, false, true, NW, true, RUN)),
        (S::RefreshingFirst, I::ResultTransient, w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingFirst, I::ResultPermanent, w(T::U, false, false, WU, true, UNAUTH)),
        // Not sent at start-up: requeued, still starting, nothing persisted.
        (S::RefreshingFirst, I::ResultNotSent,   same(T::Q, STARTING)),
        (S::RefreshingFirst, I::ResultStale,     same(T::R, STARTING)),
        (S::RefreshingFirst, I::Creds,           w(T::R, true, false, NW, true, STARTING)),
        (S::RefreshingFirst, I::Force,           same(T::R, STARTING)),
        (S::RefreshingFirst, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Refreshing a served token (scheduled or forced refresh).
        (S::RefreshingServed, I::TimerEarly,      same(T::R, RUN)),
        (S::RefreshingServed, I::TimerDue,        w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingServed, I::TimerDeadline,   w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingServed, I::TimerExpired,    w(T::B, false, false, WE, true, RETRY)),
        (S::RefreshingServed, I::TimerGiveUp,     w(T::B, false, false, WE, true, RETRY)),
        (S::RefreshingServed, I::ResultOk,        w(T::H, false, true, NW, true, RUN)),
        (S::RefreshingServed, I::ResultTransient, w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingServed, I::ResultPermanent, w(T::U, false, false, WU, true, UNAUTH)),
        // Not sent with a valid token: requeued, still running, nothing persisted.
        (S::RefreshingServed, I::ResultNotSent,   same(T::Q, RUN)),
        (S::RefreshingServed, I::ResultStale,     same(T::R, RUN)),
        (S::RefreshingServed, I::Creds,           w(T::R, true, false, NW, true, RUN)),
        (S::RefreshingServed, I::Force,           same(T::R, RUN)),
        (S::RefreshingServed, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Refreshing within a run of failures, a token still served.
        (S::RefreshingRetryServed, I::TimerEarly,      same(T::RR, RETRY)),
        (S::RefreshingRetryServed, I::TimerDue,        w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingRetryServed, I::TimerDeadline,   w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingRetryServed, I::TimerExpired,    w(T::B, false, false, WE, true, RETRY)),
        (S::RefreshingRetryServed, I::TimerGiveUp,     w(T::UG, false, false, WU, true, UNAUTH)),
        (S::RefreshingRetryServed, I::ResultOk,        w(T::H, false, true, NW, true, RUN)),
        (S::RefreshingRetryServed, I::ResultTransient, w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingRetryServed, I::ResultPermanent, w(T::U, false, false, WU, true, UNAUTH)),
        // Not sent within a run: the run is not counted on.
        (S::RefreshingRetryServed, I::ResultNotSent,   same(T::QR, RETRY)),
        (S::RefreshingRetryServed, I::ResultStale,     same(T::RR, RETRY)),
        // New credentials end the run of failures.
        (S::RefreshingRetryServed, I::Creds,           w(T::R, true, false, NW, true, RUN)),
        (S::RefreshingRetryServed, I::Force,           same(T::RR, RETRY)),
        (S::RefreshingRetryServed, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Refreshing within a run of failures, nothing served.
        (S::RefreshingRetryNoToken, I::TimerEarly,      same(T::RR, RETRY)),
        (S::RefreshingRetryNoToken, I::TimerDue,        w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingRetryNoToken, I::TimerDeadline,   w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingRetryNoToken, I::TimerExpired,    w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingRetryNoToken, I::TimerGiveUp,     w(T::UG, false, false, WU, true, UNAUTH)),
        (S::RefreshingRetryNoToken, I::ResultOk,        w(T::H, false, true, NW, true, RUN)),
        (S::RefreshingRetryNoToken, I::ResultTransient, w(T::B, false, false, NW, true, RETRY)),
        (S::RefreshingRetryNoToken, I::ResultPermanent, w(T::U, false, false, WU, true, UNAUTH)),
        (S::RefreshingRetryNoToken, I::ResultNotSent,   same(T::QR, RETRY)),
        (S::RefreshingRetryNoToken, I::ResultStale,     same(T::RR, RETRY)),
        (S::RefreshingRetryNoToken, I::Creds,           w(T::R, true, false, NW, true, STARTING)),
        (S::RefreshingRetryNoToken, I::Force,           same(T::RR, RETRY)),
        (S::RefreshingRetryNoToken, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Backing off, a token still served.
        (S::BackoffServed, I::TimerEarly,      same(T::B, RETRY)),
        (S::BackoffServed, I::TimerDue,        w(T::RR, true, false, NW, true, RETRY)),
        (S::BackoffServed, I::TimerDeadline,   w(T::RR, true, false, NW, true, RETRY)),
        (S::BackoffServed, I::TimerExpired,    w(T::RR, true, false, WE, true, RETRY)),
        (S::BackoffServed, I::TimerGiveUp,     w(T::UG, false, false, WU, true, UNAUTH)),
        (S::BackoffServed, I::ResultOk,        same(T::B, RETRY)),
        (S::BackoffServed, I::ResultTransient, same(T::B, RETRY)),
        (S::BackoffServed, I::ResultPermanent, same(T::B, RETRY)),
        (S::BackoffServed, I::ResultNotSent,   same(T::B, RETRY)),
        (S::BackoffServed, I::ResultStale,     same(T::B, RETRY)),
        (S::BackoffServed, I::Creds,           w(T::R, true, false, NW, true, RUN)),
        // Pinned: an operator's force starts at once, even before a Retry-After.
        (S::BackoffServed, I::Force,           w(T::RR, true, false, NW, true, RETRY)),
        (S::BackoffServed, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Backing off, nothing served.
        (S::BackoffNoToken, I::TimerEarly,      same(T::B, RETRY)),
        (S::BackoffNoToken, I::TimerDue,        w(T::RR, true, false, NW, true, RETRY)),
        (S::BackoffNoToken, I::TimerDeadline,   w(T::RR, true, false, NW, true, RETRY)),
        (S::BackoffNoToken, I::TimerExpired,    w(T::RR, true, false, NW, true, RETRY)),
        (S::BackoffNoToken, I::TimerGiveUp,     w(T::UG, false, false, WU, true, UNAUTH)),
        (S::BackoffNoToken, I::ResultOk,        same(T::B, RETRY)),
        (S::BackoffNoToken, I::ResultTransient, same(T::B, RETRY)),
        (S::BackoffNoToken, I::ResultPermanent, same(T::B, RETRY)),
        (S::BackoffNoToken, I::ResultNotSent,   same(T::B, RETRY)),
        (S::BackoffNoToken, I::ResultStale,     same(T::B, RETRY)),
        (S::BackoffNoToken, I::Creds,           w(T::R, true, false, NW, true, STARTING)),
        (S::BackoffNoToken, I::Force,           w(T::RR, true, false, NW, true, RETRY)),
        (S::BackoffNoToken, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Unauthenticated (rejected): only new credentials (or Stop) leave it.
        (S::UnauthRejected, I::TimerEarly,      same(T::U, UNAUTH)),
        (S::UnauthRejected, I::TimerDue,        same(T::U, UNAUTH)),
        (S::UnauthRejected, I::TimerDeadline,   same(T::U, UNAUTH)),
        (S::UnauthRejected, I::TimerExpired,    same(T::U, UNAUTH)),
        (S::UnauthRejected, I::TimerGiveUp,     same(T::U, UNAUTH)),
        (S::UnauthRejected, I::ResultOk,        same(T::U, UNAUTH)),
        (S::UnauthRejected, I::ResultTransient, same(T::U, UNAUTH)),
        (S::UnauthRejected, I::ResultPermanent, same(T::U, UNAUTH)),
        (S::UnauthRejected, I::ResultNotSent,   same(T::U, UNAUTH)),
        (S::UnauthRejected, I::ResultStale,     same(T::U, UNAUTH)),
        (S::UnauthRejected, I::Creds,           w(T::R, true, false, NW, true, STARTING)),
        (S::UnauthRejected, I::Force,           same(T::U, UNAUTH)),
        (S::UnauthRejected, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Unauthenticated (gave up): the same rules.
        (S::UnauthGaveUp, I::TimerEarly,      same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::TimerDue,        same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::TimerDeadline,   same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::TimerExpired,    same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::TimerGiveUp,     same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::ResultOk,        same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::ResultTransient, same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::ResultPermanent, same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::ResultNotSent,   same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::ResultStale,     same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::Creds,           w(T::R, true, false, NW, true, STARTING)),
        (S::UnauthGaveUp, I::Force,           same(T::UG, UNAUTH)),
        (S::UnauthGaveUp, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Stopped: terminal, silent.
        (S::Stopped, I::TimerEarly,      same(T::St, STOPPED)),
        (S::Stopped, I::TimerDue,        same(T::St, STOPPED)),
        (S::Stopped, I::TimerDeadline,   same(T::St, STOPPED)),
        (S::Stopped, I::TimerExpired,    same(T::St, STOPPED)),
        (S::Stopped, I::TimerGiveUp,     same(T::St, STOPPED)),
        (S::Stopped, I::ResultOk,        same(T::St, STOPPED)),
        (S::Stopped, I::ResultTransient, same(T::St, STOPPED)),
        (S::Stopped, I::ResultPermanent, same(T::St, STOPPED)),
        (S::Stopped, I::ResultNotSent,   same(T::St, STOPPED)),
        (S::Stopped, I::ResultStale,     same(T::St, STOPPED)),
        (S::Stopped, I::Creds,           same(T::St, STOPPED)),
        (S::Stopped, I::Force,           same(T::St, STOPPED)),
        (S::Stopped, I::Stop,            same(T::St, STOPPED)),
        // ── Requeued, a token served (a scheduled refresh not sent): the record of the
        //    refresh; none in flight. Its next try starts the next attempt silently.
        (S::RequeuedServed, I::TimerEarly,      same(T::Q, RUN)),
        (S::RequeuedServed, I::TimerDue,        w(T::R, true, false, NW, false, RUN)),
        (S::RequeuedServed, I::TimerDeadline,   w(T::R, true, false, NW, false, RUN)),
        // The token expired while not sent: the first failure of a run (withdrawn,
        // retrying), and the next try.
        (S::RequeuedServed, I::TimerExpired,    w(T::RR, true, false, WE, true, RETRY)),
        (S::RequeuedServed, I::TimerGiveUp,     w(T::RR, true, false, WE, true, RETRY)),
        (S::RequeuedServed, I::ResultOk,        same(T::Q, RUN)),
        (S::RequeuedServed, I::ResultTransient, same(T::Q, RUN)),
        (S::RequeuedServed, I::ResultPermanent, same(T::Q, RUN)),
        (S::RequeuedServed, I::ResultNotSent,   same(T::Q, RUN)),
        (S::RequeuedServed, I::ResultStale,     same(T::Q, RUN)),
        (S::RequeuedServed, I::Creds,           w(T::R, true, false, NW, true, RUN)),
        (S::RequeuedServed, I::Force,           w(T::R, true, false, NW, true, RUN)),
        (S::RequeuedServed, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Requeued at start-up, nothing served: stays starting.
        (S::RequeuedFirst, I::TimerEarly,      same(T::Q, STARTING)),
        (S::RequeuedFirst, I::TimerDue,        w(T::R, true, false, NW, false, STARTING)),
        (S::RequeuedFirst, I::TimerDeadline,   w(T::R, true, false, NW, false, STARTING)),
        (S::RequeuedFirst, I::TimerExpired,    w(T::R, true, false, NW, false, STARTING)),
        // No give-up clock runs: nothing failed.
        (S::RequeuedFirst, I::TimerGiveUp,     w(T::R, true, false, NW, false, STARTING)),
        (S::RequeuedFirst, I::ResultOk,        same(T::Q, STARTING)),
        (S::RequeuedFirst, I::ResultTransient, same(T::Q, STARTING)),
        (S::RequeuedFirst, I::ResultPermanent, same(T::Q, STARTING)),
        (S::RequeuedFirst, I::ResultNotSent,   same(T::Q, STARTING)),
        (S::RequeuedFirst, I::ResultStale,     same(T::Q, STARTING)),
        (S::RequeuedFirst, I::Creds,           w(T::R, true, false, NW, true, STARTING)),
        (S::RequeuedFirst, I::Force,           w(T::R, true, false, NW, true, STARTING)),
        (S::RequeuedFirst, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
        // ── Requeued within a run of failures, a token served.
        (S::RequeuedRetry, I::TimerEarly,      same(T::QR, RETRY)),
        (S::RequeuedRetry, I::TimerDue,        w(T::RR, true, false, NW, false, RETRY)),
        (S::RequeuedRetry, I::TimerDeadline,   w(T::RR, true, false, NW, false, RETRY)),
        // Within a run, the expiry only withdraws (as in a backoff), then the next try.
        (S::RequeuedRetry, I::TimerExpired,    w(T::RR, true, false, WE, true, RETRY)),
        // Not sent never gives up: the ceiling is not checked while requeued.
        (S::RequeuedRetry, I::TimerGiveUp,     w(T::RR, true, false, WE, true, RETRY)),
        (S::RequeuedRetry, I::ResultOk,        same(T::QR, RETRY)),
        (S::RequeuedRetry, I::ResultTransient, same(T::QR, RETRY)),
        (S::RequeuedRetry, I::ResultPermanent, same(T::QR, RETRY)),
        (S::RequeuedRetry, I::ResultNotSent,   same(T::QR, RETRY)),
        (S::RequeuedRetry, I::ResultStale,     same(T::QR, RETRY)),
        (S::RequeuedRetry, I::Creds,           w(T::R, true, false, NW, true, RUN)),
        (S::RequeuedRetry, I::Force,           w(T::RR, true, false, NW, true, RETRY)),
        (S::RequeuedRetry, I::Stop,            w(T::St, false, false, WS, true, STOPPED)),
    ]
}

/// What `wake_at` must be, read off the state's own fields.
fn expected_wake(m: &Machine) -> Option<Timestamp> {
    let min = |a: Timestamp, b: Option<Timestamp>| b.map_or(a, |b| a.min(b));
    match m.state() {
        State::Healthy { refresh_at, .. } => Some(*refresh_at),
        State::Refreshing {
            deadline,
            expires_at,
            ..
        } => Some(min(*deadline, *expires_at)),
        State::Requeued {
            next_try_at,
            expires_at,
            ..
        } => Some(min(*next_try_at, *expires_at)),
        State::TransientBackoff {
            retry,
            next_attempt_at,
            expires_at,
        } => Some(min(
            min(*next_attempt_at, *expires_at),
            Some(retry.first_failure_at.plus(GIVE_UP)),
        )),
        State::Unauthenticated { .. } | State::Stopped => None,
    }
}

#[test]
fn transition_table() {
    let table = table();
    // Every (state, input) pair exactly once.
    for s in SETUPS {
        for i in INPUTS {
            let n = table
                .iter()
                .filter(|(ts, ti, _)| *ts == s && *ti == i)
                .count();
            assert_eq!(n, 1, "{s:?} × {i:?} appears {n} times");
        }
    }
    assert_eq!(table.len(), SETUPS.len() * INPUTS.len());

    for (s, i, want) in &table {
        let ctx = format!("{s:?} × {i:?}");
        let mut f = setup(*s);
        let before = f.m.state().clone();
        let before_wake = f.m.wake_at();
        let before_since = f.m.since();
        let before_record = (f.m.token_section(), f.m.workload_status());
        let before_next = f.last;
        let (inp, at) = input(&f, *i);
        let fx = f.step(inp, at);
        let after = f.m.state();

        assert_eq!(tag(after), want.to, "{ctx}: {after:?}");
        assert_eq!(fx.start_attempt.is_some(), want.start, "{ctx}: {fx:?}");
        assert_eq!(fx.publish.is_some(), want.publish, "{ctx}: {fx:?}");
        assert_eq!(fx.withdraw, want.withdraw, "{ctx}: {fx:?}");
        assert_eq!(fx.persist, want.persist, "{ctx}: {fx:?}");

        // Effects agree with the state.
        if let Some(a) = fx.start_attempt {
            assert!(a > before_next, "{ctx}: attempt ids increase");
            assert_eq!(f.m.in_flight(), Some(a), "{ctx}");
        }
        assert_eq!(fx.wake_at, f.m.wake_at(), "{ctx}");
        assert_eq!(f.m.wake_at(), expected_wake(&f.m), "{ctx}");
        // Nothing persisted: the record is the one already shown (a requeue and its next
        // try change the state, never the record).
        let same_refresh = matches!(
            (&before, after),
            (
                State::Refreshing { .. } | State::Requeued { .. },
                State::Refreshing { .. } | State::Requeued { .. }
            )
        ) && (matches!(before, State::Requeued { .. })
            || matches!(after, State::Requeued { .. }))
            && !matches!(i, In::Creds | In::Force);
        if !fx.persist {
            assert_eq!(
                (f.m.token_section(), f.m.workload_status()),
                before_record,
                "{ctx}: the record changed without persisting"
            );
            assert_eq!(f.m.since(), before_since, "{ctx}");
            if !same_refresh {
                assert_eq!(*after, before, "{ctx}: changed without persisting");
                assert_eq!(fx.wake_at, before_wake, "{ctx}");
            }
        }
        if !same_refresh
            && (std::mem::discriminant(after) != std::mem::discriminant(&before)
                || fx.start_attempt.is_some())
        {
            assert_eq!(f.m.since(), at, "{ctx}: since");
        }
        if let State::Healthy {
            expires_at,
            refresh_at,
        } = after
        {
            assert!(refresh_at < expires_at, "{ctx}");
            if fx.publish.is_some() {
                assert_eq!(*expires_at, at.plus(secs(LIFETIME)), "{ctx}");
                let off = refresh_at.since(at);
                assert!(off >= secs(2520) && off <= secs(2880), "{ctx}: {off:?}");
            }
        }
        if let State::TransientBackoff {
            next_attempt_at, ..
        } = after
        {
            assert!(*next_attempt_at > at, "{ctx}");
        }

        // Status mapping.
        let (status, context) = f.m.workload_status();
        assert_eq!(status, want.status, "{ctx}: {context}");
        assert!(!context.contains('\n'), "{ctx}: {context}");
        let t = f.m.token_section();
        assert_eq!(t.state, token_state(want.to), "{ctx}");
        // The status file's expiry is the expiry of the token the driver serves.
        match after {
            State::Stopped => assert_eq!(t.expires_at, None, "{ctx}"),
            State::Healthy { .. }
            | State::Refreshing { .. }
            | State::Requeued { .. }
            | State::TransientBackoff { .. }
            | State::Unauthenticated { .. } => {
                assert_eq!(t.expires_at, f.served, "{ctx}: status vs served token");
            }
        }
        // A timer never leaves an expired token served.
        if matches!(inp_kind(*i), InKind::Timer) {
            assert!(
                t.expires_at.is_none_or(|e| e > at),
                "{ctx}: expired token served"
            );
        }
        check_section_consistency(&f.m, &ctx);
    }
}

enum InKind {
    Timer,
    Other,
}

fn inp_kind(i: In) -> InKind {
    match i {
        In::TimerEarly | In::TimerDue | In::TimerDeadline | In::TimerExpired | In::TimerGiveUp => {
            InKind::Timer
        }
        In::ResultOk
        | In::ResultTransient
        | In::ResultPermanent
        | In::ResultNotSent
        | In::ResultStale
        | In::Creds
        | In::Force
        | In::Stop => InKind::Other,
    }
}

/// The token section says what the state says.
fn check_section_consistency(m: &Machine, ctx: &str) {
    let t = m.token_section();
    assert_eq!(t.schema, crate::status::SCHEMA);
    match m.state() {
        State::Healthy { expires_at, .. } => {
            assert_eq!(t.expires_at, Some(*expires_at), "{ctx}");
            assert_eq!(t.attempt, 0, "{ctx}");
            assert!(
                t.last_error.is_none() && t.first_failure_at.is_none(),
                "{ctx}"
            );
            assert_eq!(
                t.next_attempt_at,
                m.wake_at(),
                "{ctx}: the scheduled refresh"
            );
        }
        State::Refreshing { retry, .. } | State::Requeued { retry, .. } => {
            assert!(t.next_attempt_at.is_none(), "{ctx}");
            match retry {
                Some(r) => {
                    assert_eq!(t.attempt, r.failures, "{ctx}");
                    assert_eq!(t.first_failure_at, Some(r.first_failure_at), "{ctx}");
                    let e = t.last_error.as_ref().unwrap();
                    assert_eq!(e.outcome, ErrorOutcome::Transient, "{ctx}");
                    assert_eq!(e.summary, r.last.summary, "{ctx}");
                }
                None => {
                    assert_eq!(t.attempt, 0, "{ctx}");
                    assert!(t.last_error.is_none(), "{ctx}");
                }
            }
        }
        State::TransientBackoff {
            retry,
            next_attempt_at,
            ..
        } => {
            assert_eq!(t.attempt, retry.failures, "{ctx}");
            assert!(retry.failures >= 1, "{ctx}");
            assert_eq!(t.next_attempt_at, Some(*next_attempt_at), "{ctx}");
            assert_eq!(t.first_failure_at, Some(retry.first_failure_at), "{ctx}");
            let e = t.last_error.as_ref().unwrap();
            assert_eq!(e.outcome, ErrorOutcome::Transient, "{ctx}");
            assert_eq!(e.kind, retry.last.kind.as_str(), "{ctx}");
        }
        State::Unauthenticated { reason, last, .. } => {
            assert_eq!(t.expires_at, None, "{ctx}");
            let e = t.last_error.as_ref().unwrap();
            let outcome = match reason {
                UnauthReason::Rejected => ErrorOutcome::Permanent,
                UnauthReason::GaveUp => ErrorOutcome::Transient,
            };
            assert_eq!(e.outcome, outcome, "{ctx}");
            assert_eq!(e.kind, last.kind.as_str(), "{ctx}");
            assert_eq!(e.error_code, last.error_code, "{ctx}");
        }
        State::Stopped => {
            assert_eq!(t.expires_at, None, "{ctx}");
            assert!(t.last_error.is_none(), "{ctx}");
        }
    }
}

// ── Status contexts say why.

#[test]
fn status_contexts_explain_the_state() {
    let mut f = setup(Setup::UnauthRejected);
    let (_, c) = f.m.workload_status();
    assert!(c.contains("rejected") && c.contains("invalid_grant"), "{c}");

    f = setup(Setup::UnauthGaveUp);
    let (_, c) = f.m.workload_status();
    assert!(
        c.contains("gave up after 1day") && c.contains("HTTP 503"),
        "{c}"
    );

    f = setup(Setup::BackoffNoToken);
    let (_, c) = f.m.workload_status();
    assert!(
        c.contains("1 attempt(s)") && c.contains("next attempt at"),
        "{c}"
    );

    f = setup(Setup::RefreshingRetryServed);
    let (_, c) = f.m.workload_status();
    assert!(c.contains("retrying after 1 transient failure(s)"), "{c}");

    f = setup(Setup::RefreshingFirst);
    assert_eq!(f.m.workload_status(), (STARTING, "fetching a token".into()));
    f = setup(Setup::Healthy);
    assert_eq!(f.m.workload_status(), (RUN, String::new()));
    f = setup(Setup::Stopped);
    assert_eq!(f.m.workload_status(), (STOPPED, "stopped".into()));
}

// ── Focused behaviours.

#[test]
fn a_deadline_abandons_the_attempt_as_a_timeout_and_its_late_result_is_ignored() {
    let mut f = setup(Setup::RefreshingServed);
    let abandoned = f.last;
    let deadline = f.m.wake_at().unwrap();
    f.step(Input::TimerFired, deadline);
    let State::TransientBackoff { retry, .. } = f.m.state() else {
        panic!("{:?}", f.m.state());
    };
    assert_eq!(retry.last.kind, FailureKind::Timeout);
    assert_eq!(retry.last.http_status, None);
    assert!(retry.last.summary.contains("35s"), "{}", retry.last.summary);
    // The abandoned attempt answers late, with a success: ignored.
    let before = f.m.state().clone();
    let fx = f.after(secs(1), result(abandoned, ok(secs(LIFETIME))));
    assert_eq!(*f.m.state(), before);
    assert!(fx.publish.is_none() && !fx.persist);
}

#[test]
fn new_credentials_abandon_the_attempt_in_flight() {
    let mut f = setup(Setup::RefreshingServed);
    let old = f.last;
    let fx = f.after(secs(1), Input::CredentialsReplaced);
    let new = fx.start_attempt.unwrap();
    assert!(new > old);
    // The old attempt's verdict (made with the old credentials) is stale now.
    let fx = f.after(secs(1), result(old, permanent()));
    assert!(!fx.persist && matches!(f.m.state(), State::Refreshing { .. }));
    let fx = f.after(secs(1), result(new, ok(secs(60))));
    assert!(fx.publish.is_some());
}

#[test]
fn results_for_future_attempts_are_ignored_too() {
    let mut f = setup(Setup::RefreshingFirst);
    let fx = f.after(secs(1), result(AttemptId(f.last.0 + 1), ok(secs(60))));
    assert!(!fx.persist && fx.publish.is_none());
}

#[test]
fn give_up_happens_exactly_at_the_ceiling() {
    let mut f = Fx::fresh();
    f.fail(secs(1), transient(None));
    let first = f.now;
    // Keep failing right up to the ceiling.
    loop {
        let next = f.m.wake_at().unwrap();
        if next >= first.plus(GIVE_UP) {
            break;
        }
        f.step(Input::TimerFired, next);
        assert!(matches!(f.m.state(), State::Refreshing { .. }));
        f.fail(ms(10), transient(None));
        assert!(
            matches!(f.m.state(), State::TransientBackoff { .. }),
            "gave up early at {:?}",
            f.now.since(first)
        );
    }
    // The wake-up is capped at the ceiling.
    assert_eq!(f.m.wake_at(), Some(first.plus(GIVE_UP)));
    // A failure 1 ms before the ceiling still backs off…
    let ceiling = first.plus(GIVE_UP);
    f.step(
        Input::ForceRefresh,
        Timestamp::from_millis(ceiling.as_millis() - 2),
    );
    let a = f.last;
    f.step(
        result(a, transient(None)),
        Timestamp::from_millis(ceiling.as_millis() - 1),
    );
    assert_eq!(tag(f.m.state()), Tag::B);
    assert_eq!(f.m.wake_at(), Some(ceiling));
    // …and it gives up at the ceiling exactly.
    let fx = f.step(Input::TimerFired, first.plus(GIVE_UP));
    assert_eq!(fx.withdraw, Some(Withdraw::Unauthenticated));
    let State::Unauthenticated {
        reason,
        failures,
        first_failure_at,
        since,
        ..
    } = f.m.state()
    else {
        panic!("{:?}", f.m.state());
    };
    assert_eq!(*reason, UnauthReason::GaveUp);
    assert_eq!(*first_failure_at, first);
    assert_eq!(*since, first.plus(GIVE_UP));
    assert!(*failures > 10);
}

#[test]
fn a_transient_result_past_the_ceiling_gives_up_at_once() {
    let mut f = Fx::fresh();
    f.fail(secs(1), transient(None));
    f.after(secs(10), Input::ForceRefresh);
    let fx = f.fail(GIVE_UP, transient(None));
    assert_eq!(tag(f.m.state()), Tag::UG);
    assert_eq!(fx.withdraw, Some(Withdraw::Unauthenticated));
}

#[test]
fn give_up_after_zero_never_gives_up() {
    let cfg = MachineConfig {
        give_up_after: Duration::ZERO,
        ..config()
    };
    let mut f = Fx::start(cfg, Resume::Fresh, None, T0).0;
    for _ in 0..200 {
        f.fail(ms(10), transient(None));
        assert!(matches!(f.m.state(), State::TransientBackoff { .. }));
        let next = f.m.wake_at().unwrap();
        // No give-up instant caps the wake-up: it is the next attempt.
        let State::TransientBackoff {
            next_attempt_at, ..
        } = f.m.state()
        else {
            unreachable!()
        };
        assert_eq!(next, *next_attempt_at);
        f.step(Input::TimerFired, next.plus(secs(400 * 86_400)));
        assert!(matches!(f.m.state(), State::Refreshing { .. }));
    }
}

#[test]
fn retry_after_is_a_floor_and_the_cap_bounds_the_rest() {
    let mut f = Fx::fresh();
    f.fail(secs(1), transient(Some(secs(900))));
    let failed_at = f.now;
    let State::TransientBackoff {
        next_attempt_at, ..
    } = f.m.state()
    else {
        panic!()
    };
    let next = *next_attempt_at;
    assert!(next >= failed_at.plus(secs(900)));
    // The jittered draw (≤ 5 s for the first failure) comes on top of the floor.
    assert!(next <= failed_at.plus(secs(905)), "{next:?}");
    // Early timers do not start an attempt.
    let fx = f.step(
        Input::TimerFired,
        Timestamp::from_millis(next.as_millis() - 1),
    );
    assert!(fx.start_attempt.is_none());
    let fx = f.step(Input::TimerFired, next);
    assert!(fx.start_attempt.is_some());
}

#[test]
fn backoff_grows_and_is_capped() {
    let mut f = Fx::fresh();
    let cap = BackoffPolicy::default().max;
    let mut delays = Vec::new();
    for n in 1..=20u32 {
        f.fail(ms(1), transient(None));
        let State::TransientBackoff {
            next_attempt_at, ..
        } = f.m.state()
        else {
            panic!()
        };
        let d = next_attempt_at.since(f.now);
        assert!(
            d <= BackoffPolicy::default().ceiling(n) && d <= cap,
            "{n}: {d:?}"
        );
        delays.push(d);
        let at = *next_attempt_at;
        f.step(Input::TimerFired, at);
    }
    // Full jitter: late delays are spread, not all equal to the cap.
    delays.sort_unstable();
    delays.dedup();
    assert!(delays.len() > 10, "{delays:?}");
}

#[test]
fn a_success_ends_the_run_and_clears_the_last_error() {
    let mut f = setup(Setup::BackoffServed);
    let at = f.m.wake_at().unwrap();
    f.step(Input::TimerFired, at);
    let fx = f.succeed(secs(1));
    assert!(fx.publish.is_some() && fx.withdraw.is_none());
    let t = f.m.token_section();
    assert_eq!(
        (t.attempt, t.last_error, t.first_failure_at),
        (0, None, None)
    );
    // A later failure starts a new run from its own time.
    f.after(secs(1), Input::ForceRefresh);
    f.fail(secs(1), transient(None));
    let State::TransientBackoff { retry, .. } = f.m.state() else {
        panic!()
    };
    assert_eq!((retry.failures, retry.first_failure_at), (1, f.now));
}

#[test]
fn force_during_backoff_keeps_the_run_and_credentials_reset_it() {
    let mut f = setup(Setup::BackoffNoToken);
    f.after(ms(1), Input::ForceRefresh);
    f.fail(ms(1), transient(None));
    let State::TransientBackoff { retry, .. } = f.m.state() else {
        panic!()
    };
    assert_eq!(retry.failures, 2);
    f.after(ms(1), Input::CredentialsReplaced);
    f.fail(ms(1), transient(None));
    let State::TransientBackoff { retry, .. } = f.m.state() else {
        panic!()
    };
    assert_eq!((retry.failures, retry.first_failure_at), (1, f.now));
}

#[test]
fn permanent_after_a_run_counts_the_run() {
    let mut f = setup(Setup::RefreshingRetryNoToken);
    f.fail(secs(1), permanent());
    let State::Unauthenticated {
        failures,
        first_failure_at,
        reason,
        ..
    } = f.m.state()
    else {
        panic!()
    };
    assert_eq!(
        (*failures, *first_failure_at, *reason),
        (2, T0.plus(secs(1)), UnauthReason::Rejected)
    );
}

/// Pinned: a zero-lifetime token (only a zero `default_lifetime` can produce one) is
/// refreshed at once.
#[test]
fn a_zero_lifetime_token_is_refreshed_at_once() {
    let mut f = Fx::fresh();
    let a = f.last;
    let fx = f.after(secs(1), result(a, ok(Duration::ZERO)));
    let State::Healthy {
        expires_at,
        refresh_at,
    } = f.m.state()
    else {
        panic!()
    };
    assert_eq!((*expires_at, *refresh_at), (f.now, f.now));
    assert_eq!(fx.wake_at, Some(f.now));
}

/// The driver's clock is monotonic, but a `now` that goes backwards (a wall-clock step)
/// must neither panic nor start anything early.
#[test]
fn a_clock_stepping_backwards_is_harmless() {
    let back = Timestamp::from_millis(T0.as_millis() - 3_600_000);
    for s in SETUPS {
        let mut f = setup(s);
        let before = f.m.state().clone();
        let fx = f.m.handle(Input::TimerFired, back, &mut f.rng);
        assert_eq!(fx.start_attempt, None, "{s:?}");
        assert_eq!(*f.m.state(), before, "{s:?}");
        let _ = f.m.token_section();
        let _ = f.m.workload_status();
    }
}

// ── Machine::start.

fn retry_record() -> Retry {
    Retry {
        failures: 3,
        first_failure_at: T0,
        last: transient_failure(Some(secs(20))),
    }
}

#[test]
fn start_fresh_fetches_at_once() {
    let now = T0.plus(secs(100));
    for (served, want_exp, want_withdraw) in [
        (None, None, None),
        (Some(now.plus(secs(600))), Some(now.plus(secs(600))), None),
        (Some(now), None, Some(Withdraw::Expired)),
        (Some(T0), None, Some(Withdraw::Expired)),
    ] {
        let (f, fx) = Fx::start(config(), Resume::Fresh, served, now);
        assert_eq!(fx.start_attempt, Some(AttemptId(1)), "{served:?}");
        assert!(fx.persist && fx.publish.is_none());
        assert_eq!(fx.withdraw, want_withdraw, "{served:?}");
        let State::Refreshing {
            expires_at,
            retry,
            deadline,
            ..
        } = f.m.state()
        else {
            panic!()
        };
        assert_eq!(
            (*expires_at, retry.is_none(), *deadline),
            (want_exp, true, now.plus(TIMEOUT))
        );
        assert_eq!(
            fx.wake_at,
            Some(want_exp.map_or(now.plus(TIMEOUT), |e| e.min(now.plus(TIMEOUT))))
        );
        assert_eq!(f.m.since(), now);
        let status = f.m.workload_status().0;
        assert_eq!(
            status,
            if want_exp.is_some() { RUN } else { STARTING },
            "{served:?}"
        );
    }
}

#[test]
fn start_retrying_keeps_the_run() {
    let now = T0.plus(secs(100));
    let (mut f, fx) = Fx::start(
        config(),
        Resume::Retrying(retry_record()),
        Some(now.plus(secs(30))),
        now,
    );
    assert_eq!(fx.start_attempt, Some(AttemptId(1)));
    assert_eq!(fx.wake_at, Some(now.plus(secs(30))));
    let State::Refreshing {
        retry, expires_at, ..
    } = f.m.state()
    else {
        panic!()
    };
    assert_eq!(retry.as_ref(), Some(&retry_record()));
    assert_eq!(*expires_at, Some(now.plus(secs(30))));
    assert_eq!(f.m.workload_status().0, RETRY);
    // The run continues: the next failure is number 4, counted from the recorded start.
    f.fail(secs(1), transient(None));
    let State::TransientBackoff { retry, .. } = f.m.state() else {
        panic!()
    };
    assert_eq!((retry.failures, retry.first_failure_at), (4, T0));
}

/// Pinned: a machine resumed after the ceiling has passed tries once more, and gives up
/// on that attempt's first transient failure.
#[test]
fn start_retrying_past_the_ceiling_tries_once_then_gives_up() {
    let now = T0.plus(GIVE_UP).plus(secs(1));
    let (mut f, fx) = Fx::start(config(), Resume::Retrying(retry_record()), None, now);
    assert!(fx.start_attempt.is_some());
    f.fail(secs(1), transient(None));
    assert_eq!(tag(f.m.state()), Tag::UG);
}

#[test]
fn start_unauthenticated_sends_nothing() {
    for reason in [UnauthReason::Rejected, UnauthReason::GaveUp] {
        for (served, want_withdraw) in [
            (None, None),
            (Some(T0.plus(secs(600))), Some(Withdraw::Unauthenticated)),
            (Some(T0), Some(Withdraw::Unauthenticated)),
        ] {
            let resume = Resume::Unauthenticated {
                since: T0,
                last: permanent_failure(),
                reason,
            };
            let now = T0.plus(secs(100));
            let (mut f, fx) = Fx::start(config(), resume, served, now);
            assert_eq!(fx.start_attempt, None);
            assert_eq!(fx.withdraw, want_withdraw);
            assert_eq!(fx.wake_at, None);
            assert!(fx.persist);
            let State::Unauthenticated {
                since, reason: r, ..
            } = f.m.state()
            else {
                panic!()
            };
            assert_eq!((*since, *r), (T0, reason));
            assert_eq!(f.m.workload_status().0, UNAUTH);
            // Nothing but credentials moves it.
            for i in [
                Input::TimerFired,
                Input::ForceRefresh,
                result(AttemptId(1), ok(secs(60))),
            ] {
                let fx = f.after(secs(3600), i);
                assert_eq!(fx, Effects::default());
            }
            let fx = f.after(secs(1), Input::CredentialsReplaced);
            assert_eq!(fx.start_attempt, Some(AttemptId(1)));
        }
    }
}

// ── StatusRecord::resume round trips.

fn record_of(m: &Machine, now: Timestamp) -> StatusRecord {
    let (status, status_context) = m.workload_status();
    StatusRecord {
        status,
        status_context,
        created_at: T0,
        updated_at: now,
        process_id: 7,
        token: Some(m.token_section()),
    }
}

/// Writes, reads back from JSON, and resumes.
fn resume_via_disk(m: &Machine, now: Timestamp) -> Resume {
    let bytes = record_of(m, now).to_json();
    let back = StatusRecord::from_json(&bytes).unwrap();
    assert_eq!(back, record_of(m, now));
    back.resume()
}

#[test]
fn a_record_written_in_each_state_resumes_right() {
    for s in SETUPS {
        let f = setup(s);
        let got = resume_via_disk(&f.m, f.now);
        match f.m.state() {
            State::Healthy { refresh_at, .. } => assert_eq!(
                got,
                Resume::Healthy {
                    refresh_at: *refresh_at
                },
                "{s:?}"
            ),
            State::Stopped => assert_eq!(got, Resume::Fresh, "{s:?}"),
            State::Refreshing { retry: None, .. } | State::Requeued { retry: None, .. } => {
                assert_eq!(got, Resume::Fresh, "{s:?}");
            }
            State::Refreshing { retry: Some(r), .. }
            | State::Requeued { retry: Some(r), .. }
            | State::TransientBackoff { retry: r, .. } => {
                // Retry-After is stored in whole seconds (rounded up); none here.
                assert_eq!(got, Resume::Retrying(r.clone()), "{s:?}");
            }
            State::Unauthenticated {
                since,
                reason,
                last,
                ..
            } => assert_eq!(
                got,
                Resume::Unauthenticated {
                    since: *since,
                    last: last.clone(),
                    reason: *reason,
                },
                "{s:?}"
            ),
        }
    }
}

#[test]
fn a_resumed_machine_writes_the_same_state_back() {
    // Unauthenticated and retrying survive a restart; the restarted machine's own record
    // resumes to the same thing again (no drift across repeated restarts).
    for s in [
        Setup::UnauthRejected,
        Setup::UnauthGaveUp,
        Setup::BackoffNoToken,
    ] {
        let f = setup(s);
        let r1 = resume_via_disk(&f.m, f.now);
        let later = f.now.plus(secs(60));
        let (m2, _) = Machine::start(config(), r1.clone(), None, later);
        let r2 = resume_via_disk(&m2, later);
        match (&r1, &r2) {
            (Resume::Unauthenticated { .. }, Resume::Unauthenticated { .. }) => {
                assert_eq!(r1, r2, "{s:?}");
            }
            (Resume::Retrying(a), Resume::Retrying(b)) => assert_eq!(a, b, "{s:?}"),
            (
                Resume::Fresh
                | Resume::Healthy { .. }
                | Resume::Retrying(_)
                | Resume::Unauthenticated { .. },
                _,
            ) => {
                panic!("{s:?}: {r1:?} → {r2:?}");
            }
        }
    }
}

#[test]
fn retry_after_survives_a_round_trip_in_whole_seconds() {
    let mut f = Fx::fresh();
    f.fail(secs(1), transient(Some(ms(1500))));
    let Resume::Retrying(r) = resume_via_disk(&f.m, f.now) else {
        panic!()
    };
    assert_eq!(r.last.retry_after, Some(secs(2)));
}

// ── Property tests.

#[derive(Debug, Clone)]
enum V {
    Ok(u64),
    Transient(Option<u64>),
    Permanent,
}

#[derive(Debug, Clone)]
enum Op {
    Timer,
    /// Jump to the machine's own wake-up.
    TimerAtWake,
    Current(V),
    Stale(V),
    /// The attempt in flight (or the last one) was not sent: the driver's gate.
    NotSent,
    Creds,
    Force,
    Stop,
}

fn verdict_strategy() -> impl Strategy<Value = V> {
    prop_oneof![
        3 => prop_oneof![Just(0u64), 1u64..10, 10u64..100_000].prop_map(V::Ok),
        4 => proptest::option::of(0u64..4000).prop_map(V::Transient),
        1 => Just(V::Permanent),
    ]
}

fn op_strategy(stop_weight: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Timer),
        6 => Just(Op::TimerAtWake),
        6 => verdict_strategy().prop_map(Op::Current),
        2 => verdict_strategy().prop_map(Op::Stale),
        3 => Just(Op::NotSent),
        1 => Just(Op::Creds),
        1 => Just(Op::Force),
        stop_weight => Just(Op::Stop),
    ]
}

fn dt_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..2_000,
        3 => 0u64..120_000,
        2 => 0u64..7_200_000,
        1 => 0u64..200_000_000,
    ]
}

fn config_strategy() -> impl Strategy<Value = MachineConfig> {
    (
        1u64..20_000,
        1u64..1_000_000,
        1.0f64..4.0,
        prop_oneof![Just(0u64), 1u64..100_000_000],
        1u64..120_000,
    )
        .prop_map(
            |(initial, max, multiplier, give_up, timeout)| MachineConfig {
                schedule: RefreshSchedule::default(),
                backoff: BackoffPolicy {
                    initial: ms(initial),
                    max: ms(max),
                    multiplier,
                },
                give_up_after: ms(give_up),
                attempt_timeout: ms(timeout),
            },
        )
}

fn to_verdict(v: &V) -> Verdict {
    match v {
        V::Ok(l) => ok(secs(*l)),
        V::Transient(ra) => transient(ra.map(secs)),
        V::Permanent => permanent(),
    }
}

/// What one step looked like, for the invariant checks.
struct Step<'a> {
    op: &'a Op,
    now: Timestamp,
    before: State,
    in_flight_before: Option<AttemptId>,
    record_before: (crate::status::TokenSection, (WorkloadStatus, String)),
    fx: Effects,
}

/// Runs a sequence, calling `check` after every step; returns nothing, panics on a breach.
fn drive(
    cfg: MachineConfig,
    seed: u64,
    ops: &[(u64, Op)],
    mut check: impl FnMut(&Machine, &Step<'_>),
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut m, fx) = Machine::start(cfg, Resume::Fresh, None, T0);
    let mut now = T0;
    let mut last_issued = fx.start_attempt.unwrap();
    for (dt, op) in ops {
        now = now.plus(ms(*dt));
        let input = match op {
            Op::Timer => Input::TimerFired,
            Op::TimerAtWake => {
                if let Some(w) = m.wake_at() {
                    now = now.max(w);
                }
                Input::TimerFired
            }
            Op::Current(v) => result(m.in_flight().unwrap_or(last_issued), to_verdict(v)),
            Op::Stale(v) => result(AttemptId(last_issued.0.saturating_sub(1)), to_verdict(v)),
            Op::NotSent => not_sent(m.in_flight().unwrap_or(last_issued), busy()),
            Op::Creds => Input::CredentialsReplaced,
            Op::Force => Input::ForceRefresh,
            Op::Stop => Input::Stop,
        };
        let before = m.state().clone();
        let in_flight_before = m.in_flight();
        let record_before = (m.token_section(), m.workload_status());
        let fx = m.handle(input, now, &mut rng);
        if let Some(a) = fx.start_attempt {
            last_issued = a;
        }
        check(
            &m,
            &Step {
                op,
                now,
                before,
                in_flight_before,
                record_before,
                fx,
            },
        );
    }
}

fn is_unauth(s: &State) -> bool {
    matches!(s, State::Unauthenticated { .. })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Invariants (a), (b), (c), (e), (f), (g) over arbitrary sequences.
    #[test]
    fn machine_invariants(
        cfg in config_strategy(),
        seed in any::<u64>(),
        ops in proptest::collection::vec((dt_strategy(), op_strategy(1)), 1..120),
    ) {
        let cap = cfg.backoff.max;
        let mut last_start: Option<AttemptId> = Some(AttemptId(1));
        let mut last_lifetime: Option<Duration> = None;
        // The earliest instant a timer-driven attempt may start (a Retry-After floor).
        let mut not_before: Option<Timestamp> = None;
        drive(cfg, seed, &ops, |m, s| {
            let after = m.state();
            // (a) Backoff delay: ≥ Retry-After, and at most the cap beyond it.
            if let State::TransientBackoff { next_attempt_at, retry, .. } = after
                && !matches!(s.before, State::TransientBackoff { .. })
            {
                let delay = next_attempt_at.since(s.now);
                let ra = retry.last.retry_after.unwrap_or_default();
                assert!(delay <= ra + cap, "delay {delay:?} > {ra:?} + {cap:?}");
                assert!(delay >= ra, "delay {delay:?} < Retry-After {ra:?}");
                not_before = Some(s.now.plus(ra));
            }
            if let Some(a) = s.fx.start_attempt {
                if matches!(s.op, Op::Timer | Op::TimerAtWake)
                    && let Some(nb) = not_before
                {
                    assert!(s.now >= nb, "attempt at {} before Retry-After {}", s.now, nb);
                }
                not_before = None;
                // (b) Single flight, strictly increasing ids.
                assert!(
                    s.in_flight_before.is_none() || matches!(s.op, Op::Creds),
                    "attempt {a:?} started while {:?} was in flight ({:?})",
                    s.in_flight_before,
                    s.op
                );
                assert!(last_start.is_none_or(|l| a > l), "ids must increase");
                last_start = Some(a);
                assert_eq!(m.in_flight(), Some(a));
            }
            if matches!(s.op, Op::Force) && s.in_flight_before.is_some() {
                assert_eq!(s.fx.start_attempt, None, "force while in flight");
            }
            // Results for other attempts change nothing.
            if let Op::Stale(_) = s.op {
                assert_eq!(*after, s.before);
                assert!(!s.fx.persist && s.fx.publish.is_none() && s.fx.withdraw.is_none());
            }
            // (c) A permanent verdict for the current attempt ends in Unauthenticated…
            if matches!(s.op, Op::Current(V::Permanent)) && s.in_flight_before.is_some() {
                assert!(is_unauth(after), "{after:?}");
                assert_eq!(s.fx.withdraw, Some(Withdraw::Unauthenticated));
            }
            // …and only credentials or Stop leave Unauthenticated.
            if is_unauth(&s.before) {
                match s.op {
                    Op::Creds => assert!(matches!(after, State::Refreshing { retry: None, expires_at: None, .. })),
                    Op::Stop => assert!(matches!(after, State::Stopped)),
                    Op::Timer | Op::TimerAtWake | Op::Current(_) | Op::Stale(_) | Op::NotSent | Op::Force => {
                        assert_eq!(*after, s.before);
                        assert_eq!(s.fx.clone(), Effects::default());
                    }
                }
            }
            // Stopped is terminal.
            if matches!(s.before, State::Stopped) {
                assert!(matches!(after, State::Stopped));
                assert_eq!(s.fx.clone(), Effects::default());
            }
            // (e) Healthy: the refresh comes before expiry (equal only for a zero lifetime).
            if let Some(g) = &s.fx.publish {
                last_lifetime = Some(g.lifetime);
            }
            if let State::Healthy { expires_at, refresh_at } = after {
                if last_lifetime == Some(Duration::ZERO) {
                    assert!(refresh_at <= expires_at);
                } else {
                    assert!(refresh_at < expires_at, "refresh {refresh_at} !< expiry {expires_at}");
                }
            }
            // (f) Every state change persists, except a requeue and its next try, which
            // change no record.
            if !s.fx.persist {
                assert_eq!((m.token_section(), m.workload_status()), s.record_before, "{:?} → {after:?}", s.before);
            }
            if *after != s.before && !s.fx.persist {
                assert!(
                    matches!(
                        (&s.before, after),
                        (State::Refreshing { .. }, State::Requeued { .. })
                            | (State::Requeued { .. }, State::Refreshing { .. } | State::Requeued { .. })
                    ),
                    "{:?} → {after:?} without persist", s.before
                );
            }
            // A not-sent attempt never gives up and never counts a failure within a run.
            if matches!(s.op, Op::NotSent) {
                assert!(!is_unauth(after) || is_unauth(&s.before), "{:?} → {after:?}", s.before);
                if let (State::Refreshing { retry: Some(r0), .. }, State::Requeued { retry: Some(r1), .. }) = (&s.before, after) {
                    assert_eq!(r0, r1);
                }
            }
            // (g) A wake-up is wanted in every live state.
            assert_eq!(m.wake_at().is_none(), matches!(after, State::Unauthenticated { .. } | State::Stopped));
            assert_eq!(s.fx.wake_at, m.wake_at());
            // A timer never leaves an expired token served.
            if matches!(s.op, Op::Timer | Op::TimerAtWake) {
                let t = m.token_section();
                assert!(t.expires_at.is_none_or(|e| e > s.now), "expired token still served");
            }
            // A publish never comes with a withdraw.
            assert!(!(s.fx.publish.is_some() && s.fx.withdraw.is_some()));
        });
    }

    /// (d) Transient failures alone never reach Unauthenticated before `give_up_after` has
    /// elapsed since the first failure, and never with `give_up_after = 0`.
    #[test]
    fn transient_failures_give_up_only_after_the_ceiling(
        cfg in config_strategy(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(
            (
                dt_strategy(),
                prop_oneof![
                    3 => Just(Op::Timer),
                    6 => Just(Op::TimerAtWake),
                    6 => proptest::option::of(0u64..4000).prop_map(|ra| Op::Current(V::Transient(ra))),
                    1 => proptest::option::of(0u64..4000).prop_map(|ra| Op::Stale(V::Transient(ra))),
                    1 => Just(Op::Force),
                ],
            ),
            1..150,
        ),
    ) {
        let give_up = cfg.give_up_after;
        let mut first_failure: Option<Timestamp> = None;
        drive(cfg, seed, &ops, |m, s| {
            let after = m.state();
            if first_failure.is_none() && matches!(s.before, State::Refreshing { .. })
                && !matches!(after, State::Refreshing { .. })
            {
                first_failure = Some(s.now);
            }
            if is_unauth(after) {
                assert!(!give_up.is_zero(), "gave up with give_up_after = 0");
                let first = first_failure.unwrap();
                assert!(
                    s.now.since(first) >= give_up,
                    "gave up {:?} after the first failure; ceiling {give_up:?}",
                    s.now.since(first)
                );
                assert!(matches!(after, State::Unauthenticated { reason: UnauthReason::GaveUp, .. }));
            }
            assert!(!matches!(after, State::Healthy { .. }));
        });
    }

    /// Our own gate is not a failure: a workload whose attempts are only ever not sent (any
    /// timers, forced refreshes) never becomes unauthenticated, whatever the ceiling, and
    /// never counts a failure while it has a live token.
    #[test]
    fn not_sent_attempts_never_lead_to_unauthenticated(
        cfg in config_strategy(),
        seed in any::<u64>(),
        lifetime in 1u64..100_000,
        ops in proptest::collection::vec(
            (
                dt_strategy(),
                prop_oneof![
                    3 => Just(Op::Timer),
                    6 => Just(Op::TimerAtWake),
                    6 => Just(Op::NotSent),
                    1 => Just(Op::Force),
                ],
            ),
            1..150,
        ),
    ) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (mut m, fx) = Machine::start(cfg, Resume::Fresh, None, T0);
        let mut now = T0.plus(secs(1));
        let a = fx.start_attempt.unwrap();
        m.handle(result(a, ok(secs(lifetime))), now, &mut rng);
        let mut last = a;
        for (dt, op) in &ops {
            // Every attempt comes back not sent within its budget (before its deadline), as
            // the driver guarantees: none times out.
            if let Some(a) = m.in_flight() {
                m.handle(not_sent(a, busy()), now, &mut rng);
                prop_assert!(!is_unauth(m.state()), "{:?}", m.state());
            }
            now = now.plus(ms(*dt));
            let input = match op {
                Op::TimerAtWake => {
                    now = now.max(m.wake_at().unwrap_or(now));
                    Input::TimerFired
                }
                Op::NotSent => not_sent(m.in_flight().unwrap_or(last), busy()),
                Op::Force => Input::ForceRefresh,
                Op::Timer | Op::Current(_) | Op::Stale(_) | Op::Creds | Op::Stop => Input::TimerFired,
            };
            let fx = m.handle(input, now, &mut rng);
            if let Some(a) = fx.start_attempt {
                last = a;
            }
            prop_assert!(!is_unauth(m.state()), "{:?}", m.state());
            let t = m.token_section();
            if t.expires_at.is_some_and(|e| e > now) {
                prop_assert!(t.last_error.is_none() && t.attempt == 0, "{t:?}");
            }
        }
    }

    /// The schedule: a success at `now` with lifetime L refreshes within [0.7 L, 0.8 L] for
    /// ordinary lifetimes.
    #[test]
    fn refresh_lands_in_the_jitter_window(seed in any::<u64>(), lifetime in 60u64..86_400) {
        let mut f = Fx::fresh();
        f.rng = fastrand::Rng::with_seed(seed);
        let a = f.last;
        f.after(secs(1), result(a, ok(secs(lifetime))));
        let State::Healthy { refresh_at, .. } = f.m.state() else { panic!() };
        let off = refresh_at.since(f.now).as_secs_f64();
        let l = lifetime as f64;
        prop_assert!(off >= 0.7 * l - 0.001 && off <= 0.8 * l + 0.001, "{off} of {l}");
    }
}

#[test]
fn a_restarted_actor_serving_a_live_token_keeps_its_schedule() {
    let now = T0.plus(secs(100));
    let refresh_at = T0.plus(secs(2800));
    let (m, fx) = Machine::start(
        config(),
        Resume::Healthy { refresh_at },
        Some(T0.plus(secs(3600))),
        now,
    );
    assert_eq!(
        m.state(),
        &State::Healthy {
            expires_at: T0.plus(secs(3600)),
            refresh_at
        }
    );
    assert_eq!(fx.start_attempt, None, "no request for a live token");
    assert_eq!(fx.wake_at, Some(refresh_at));
    // Without a served token (a restarted daemon), it fetches one at once.
    let (m, fx) = Machine::start(config(), Resume::Healthy { refresh_at }, None, now);
    assert!(matches!(m.state(), State::Refreshing { .. }));
    assert!(fx.start_attempt.is_some());
}

/// A start with a live token (a daemon over its journal, an actor restart) sends no refresh
/// in its quiet period when the token can wait: a refresh that came due while the process
/// was down, or falls due in the period, goes into the spread after its end (never within
/// `MIN_LEAD` of the expiry); a token expiring within `MIN_LEAD` of that end keeps its
/// schedule (at once when due). Rows: (refresh_at, expires_at, the earliest and latest
/// refresh time after the start), seconds after T0, the start at 1,000 s.
#[test]
fn a_start_sends_no_refresh_in_its_quiet_period_for_a_token_that_can_wait() {
    use crate::policy::{MIN_LEAD, START_QUIET, START_SPREAD};
    let at = |s: u64| T0.plus(secs(s));
    let now = at(1_000);
    let end = now.plus(START_QUIET).since(T0).as_secs();
    let lead = MIN_LEAD.as_secs();
    let spread = START_SPREAD.as_secs();
    let rows: [(u64, u64, u64, u64); 8] = [
        // Came due while down, the token lives ten minutes more: in the spread after the
        // quiet period.
        (970, 1_600, end, end + spread),
        (999, 1_600, end, end + spread),
        // Due inside the quiet period: the same.
        (1_003, 1_600, end, end + spread),
        // Due after it: unchanged.
        (1_020, 1_600, 1_020, 1_020),
        // Lives exactly MIN_LEAD past the end: still waits, at the end.
        (970, end + lead, end, end),
        // Little room: never within MIN_LEAD of the expiry.
        (970, end + lead + 2, end, end + 2),
        // Expires sooner: its schedule, at once when due.
        (970, end + lead - 1, 970, 970),
        (1_003, 1_008, 1_003, 1_003),
    ];
    for (refresh_at, expires_at, earliest, latest) in rows {
        let (m, fx) = Machine::start(
            config(),
            Resume::Healthy {
                refresh_at: at(refresh_at),
            },
            Some(at(expires_at)),
            now,
        );
        let State::Healthy {
            expires_at: e,
            refresh_at: r,
        } = m.state()
        else {
            panic!("{refresh_at} {expires_at}: {:?}", m.state());
        };
        assert_eq!(*e, at(expires_at));
        assert!(
            *r >= at(earliest) && *r <= at(latest),
            "{refresh_at} {expires_at}: {r:?}"
        );
        assert_eq!(fx.start_attempt, None, "{refresh_at} {expires_at}");
        assert_eq!(fx.wake_at, Some(*r), "{refresh_at} {expires_at}");
    }
}

/// The refreshes a start moves out of its quiet period leave it spread over
/// `START_SPREAD`, not all at its last instant: 200 tokens due at different milliseconds.
#[test]
fn refreshes_moved_out_of_the_quiet_period_are_spread() {
    use crate::policy::{START_QUIET, START_SPREAD};
    let now = T0.plus(secs(1_000));
    let end = now.plus(START_QUIET);
    let times: Vec<Timestamp> = (0..200u64)
        .map(|i| {
            let (m, _) = Machine::start(
                config(),
                Resume::Healthy {
                    refresh_at: T0.plus(ms(990_000 + i * 37)),
                },
                Some(T0.plus(secs(1_600))),
                now,
            );
            let State::Healthy { refresh_at, .. } = m.state() else {
                panic!("{:?}", m.state());
            };
            *refresh_at
        })
        .collect();
    let in_each_second = |k: u64| {
        times
            .iter()
            .filter(|t| t.since(end) >= secs(k) && t.since(end) < secs(k + 1))
            .count()
    };
    for k in 0..START_SPREAD.as_secs() {
        let n = in_each_second(k);
        assert!(
            (5..=40).contains(&n),
            "{n} of 200 in second {k} of the spread"
        );
    }
    assert!(
        times
            .iter()
            .all(|t| *t >= end && *t < end.plus(START_SPREAD))
    );
}

/// An unknown code keeps the workload retrying, and the status context says how to make the
/// code final (in backoff, while retrying, and once the give-up ceiling is passed).
#[test]
fn an_unknown_code_says_how_to_make_it_final() {
    let unknown = Verdict::Transient(Failure {
        kind: FailureKind::OauthUnknownCode,
        http_status: Some(400),
        error_code: Some("account_locked".into()),
        retry_after: None,
        summary: "HTTP 400 account_locked".into(),
    });
    let note = "unknown error code \"account_locked\" treated as transient; add it to \
                permanent_codes if it is final";
    let mut f = Fx::fresh();
    f.fail(secs(1), unknown.clone());
    let (status, c) = f.m.workload_status();
    assert_eq!(status, WorkloadStatus::AuthRetrying);
    assert!(
        c.starts_with(&format!("HTTP 400 account_locked; {note}; ")),
        "{c}"
    );

    // Retrying: the next attempt is in flight.
    let at = match &f.m.state {
        State::TransientBackoff {
            next_attempt_at, ..
        } => *next_attempt_at,
        other @ (State::Healthy { .. }
        | State::Refreshing { .. }
        | State::Requeued { .. }
        | State::Unauthenticated { .. }
        | State::Stopped) => panic!("expected backoff, got {other:?}"),
    };
    f.step(Input::TimerFired, at);
    let (status, c) = f.m.workload_status();
    assert_eq!(status, WorkloadStatus::AuthRetrying);
    assert!(c.contains(note), "{c}");

    // A transient failure of another kind carries no note.
    f.fail(secs(1), transient(None));
    assert!(!f.m.workload_status().1.contains("permanent_codes"));
}

// ── Our own gate is not a failure (an attempt not sent).

/// A healthy workload whose scheduled refresh is not sent, again and again while its token
/// is valid: the same state family, the same record, nothing persisted or withdrawn, the
/// next try no sooner than the time the attempt waited, and never later than `MIN_LEAD`
/// before the expiry unless the floor says so.
#[test]
fn a_healthy_workload_not_sent_n_times_keeps_its_state_and_record() {
    let mut f = Fx::fresh();
    f.succeed(secs(1));
    let State::Healthy {
        refresh_at,
        expires_at,
    } = *f.m.state()
    else {
        panic!("{:?}", f.m.state())
    };
    f.step(Input::TimerFired, refresh_at);
    let record = (f.m.token_section(), f.m.workload_status());
    assert_eq!(record.1.0, WorkloadStatus::Running);
    let since = f.m.since();
    for n in 1..=20 {
        let fx = f.unsent(secs(4), busy());
        let ctx = format!("not sent #{n}");
        assert!(!fx.persist, "{ctx}");
        assert_eq!(
            (fx.withdraw, fx.publish.is_some(), fx.start_attempt),
            (None, false, None),
            "{ctx}"
        );
        let State::Requeued {
            next_try_at,
            expires_at: e,
            retry: None,
            ..
        } = *f.m.state()
        else {
            panic!("{ctx}: {:?}", f.m.state())
        };
        assert_eq!(e, Some(expires_at), "{ctx}");
        assert!(next_try_at >= f.now.plus(MIN_BACKOFF), "{ctx}: floor");
        let latest = Timestamp::from_millis(expires_at.as_millis() - 5_000);
        assert!(
            next_try_at <= latest.max(f.now.plus(MIN_BACKOFF)),
            "{ctx}: past the lead"
        );
        assert_eq!(fx.wake_at, Some(next_try_at), "{ctx}");
        assert_eq!(
            (f.m.token_section(), f.m.workload_status()),
            record,
            "{ctx}"
        );
        assert_eq!(f.m.since(), since, "{ctx}");
        // The next try: a new attempt, silently.
        let fx = f.step(Input::TimerFired, next_try_at);
        assert!(fx.start_attempt.is_some() && !fx.persist, "{ctx}: {fx:?}");
        assert_eq!(
            (f.m.token_section(), f.m.workload_status()),
            record,
            "{ctx}"
        );
        if f.now >= Timestamp::from_millis(expires_at.as_millis() - 60_000) {
            break;
        }
    }
    // Then it is sent and succeeds: healthy, as ever.
    let fx = f.succeed(ms(200));
    assert!(fx.publish.is_some() && fx.persist);
    assert!(matches!(f.m.state(), State::Healthy { .. }));
}

/// The token expires while its refreshes keep being not sent: withdrawn and
/// `auth_retrying` with the not-sent reason as a run's first failure, as a run of transient
/// failures would show it (never `running` with an expired token), whether the expiry comes
/// with a not-sent result or while requeued.
#[test]
fn a_token_expiring_while_not_sent_is_withdrawn_as_in_a_run_of_failures() {
    // The token expires while the attempt waits at the gate (`starting` for the moment: the
    // attempt may still succeed), and then it is not sent: a run, `auth_retrying`.
    let mut f = Fx::fresh();
    f.after(secs(1), result(f.last, ok(secs(60))));
    let State::Healthy {
        refresh_at,
        expires_at,
    } = *f.m.state()
    else {
        panic!()
    };
    f.step(Input::TimerFired, refresh_at);
    let fx = f.step(Input::TimerFired, expires_at);
    assert_eq!(fx.withdraw, Some(Withdraw::Expired));
    let fx = f.unsent(ms(10), busy());
    assert!(fx.persist);
    let (status, context) = f.m.workload_status();
    assert_eq!(status, WorkloadStatus::AuthRetrying, "{context}");
    assert!(matches!(f.m.state(), State::Requeued { retry: Some(r), .. } if r.failures == 1));
    for at_result in [false, true] {
        let mut f = Fx::fresh();
        f.after(secs(1), result(f.last, ok(secs(60))));
        let State::Healthy {
            refresh_at,
            expires_at,
        } = *f.m.state()
        else {
            panic!()
        };
        f.step(Input::TimerFired, refresh_at);
        let fx = if at_result {
            let a = f.last;
            f.step(not_sent(a, busy()), expires_at.plus(ms(1)))
        } else {
            f.unsent(secs(1), busy());
            f.step(Input::TimerFired, expires_at)
        };
        assert_eq!(fx.withdraw, Some(Withdraw::Expired), "{at_result}");
        assert!(fx.persist, "{at_result}");
        let (State::Requeued {
            retry: Some(retry),
            expires_at: None,
            ..
        }
        | State::Refreshing {
            retry: Some(retry),
            expires_at: None,
            ..
        }) = f.m.state()
        else {
            panic!("{at_result}: {:?}", f.m.state())
        };
        assert_eq!(
            (retry.failures, retry.last.kind),
            (1, FailureKind::RateLimited)
        );
        let (status, context) = f.m.workload_status();
        assert_eq!(status, WorkloadStatus::AuthRetrying, "{at_result}");
        assert!(
            context.starts_with("not sent: the endpoint's 64 request slots"),
            "{context}"
        );
        assert_eq!(f.m.token_section().expires_at, None);
    }
}

/// A workload with no token yet (start-up) whose attempts are not sent stays `starting`,
/// with nothing persisted, until one is sent.
#[test]
fn a_start_up_workload_not_sent_stays_starting() {
    let mut f = Fx::fresh();
    let record = (f.m.token_section(), f.m.workload_status());
    assert_eq!(record.1.0, WorkloadStatus::Starting);
    for _ in 0..50 {
        let fx = f.unsent(secs(4), busy());
        assert!(!fx.persist && fx.withdraw.is_none());
        let wake = f.m.wake_at().unwrap();
        let fx = f.step(Input::TimerFired, wake);
        assert!(fx.start_attempt.is_some() && !fx.persist);
        assert_eq!((f.m.token_section(), f.m.workload_status()), record);
    }
    // Hours of not-sent attempts: still starting, never given up.
    assert!(f.now.since(T0) > secs(200));
    let fx = f.succeed(ms(100));
    assert!(fx.publish.is_some());
}

/// A real (sent) transient failure after not-sent attempts is the run's first failure, as
/// it would be without them: one failure, counted from its own time, its own backoff.
#[test]
fn a_sent_failure_after_not_sent_attempts_behaves_as_before() {
    let fail_after = |unsent: usize| {
        let mut f = Fx::fresh();
        f.succeed(secs(1));
        let State::Healthy { refresh_at, .. } = *f.m.state() else {
            panic!()
        };
        f.step(Input::TimerFired, refresh_at);
        for _ in 0..unsent {
            f.unsent(secs(4), busy());
            let wake = f.m.wake_at().unwrap();
            f.step(Input::TimerFired, wake);
        }
        f.rng = fastrand::Rng::with_seed(9);
        let fx = f.fail(secs(1), transient(None));
        (f.m.state().clone(), fx, f.now)
    };
    let (plain, plain_fx, t0) = fail_after(0);
    for n in [1, 3, 10] {
        let (state, fx, t) = fail_after(n);
        let (
            State::TransientBackoff {
                retry: r0,
                next_attempt_at: n0,
                ..
            },
            State::TransientBackoff {
                retry: r1,
                next_attempt_at: n1,
                ..
            },
        ) = (&plain, &state)
        else {
            panic!("{n}: {plain:?} / {state:?}")
        };
        assert_eq!((r1.failures, r1.first_failure_at), (1, t), "{n}");
        assert_eq!(r1.last, r0.last, "{n}");
        assert_eq!(n1.since(t), n0.since(t0), "{n}: the same backoff");
        assert_eq!(
            (fx.persist, fx.withdraw),
            (plain_fx.persist, plain_fx.withdraw),
            "{n}"
        );
    }
}

/// Why the not-sent attempts ran at ≈ 13,000 a second: they came back after a failure's
/// backoff (the soak's: 0.1–2 s) to the end of a queue at least as long as the budget they
/// had just waited. A requeue is spread over a window that starts at that wait and
/// doubles with each consecutive not-sent attempt, up to a minute.
#[test]
fn requeues_are_floored_by_the_wait_and_spread_more_each_time() {
    let mut f = Fx::fresh();
    let mut spreads = Vec::new();
    for _ in 0..10 {
        let now = f.now.plus(secs(4));
        f.unsent(secs(4), busy());
        let State::Requeued { next_try_at, .. } = *f.m.state() else {
            panic!()
        };
        assert!(next_try_at >= now.plus(MIN_BACKOFF), "floor");
        spreads.push(next_try_at.since(now.plus(MIN_BACKOFF)));
        assert!(spreads.last().unwrap() <= &REQUEUE_SPREAD_MAX);
        f.step(Input::TimerFired, next_try_at);
    }
    // The drawn spread of n-th consecutive not-sent is below 4 s · 2^(n-1): the late ones
    // reach past the first window.
    assert!(spreads[0] <= secs(4));
    assert!(spreads.iter().skip(4).any(|s| *s > secs(8)), "{spreads:?}");
    // Over many workloads, the first requeue spreads across one more wait, from the floor.
    let mut rng = fastrand::Rng::with_seed(3);
    let m = Fx::fresh().m;
    let mut m = m;
    m.not_sent_run = 1;
    let now = T0;
    let times: Vec<u64> = (0..1000)
        .map(|_| {
            m.requeue_at(&busy(), None, now, &mut rng)
                .since(now)
                .as_millis() as u64
        })
        .collect();
    assert!(times.iter().all(|t| (100..=4_100).contains(t)));
    assert!(
        times.iter().filter(|t| **t < 2_100).count() > 400
            && times.iter().filter(|t| **t >= 2_100).count() > 400
    );
    // A reset: a sent attempt ends the not-sent run.
    let mut f = Fx::fresh();
    for _ in 0..5 {
        f.unsent(secs(4), busy());
        let wake = f.m.wake_at().unwrap();
        f.step(Input::TimerFired, wake);
    }
    assert_eq!(f.m.not_sent_run, 5);
    f.succeed(ms(10));
    assert_eq!(f.m.not_sent_run, 0);
}
