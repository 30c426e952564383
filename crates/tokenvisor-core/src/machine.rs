//! The token state machine: a pure function `(state, input, now, rng) → (state, effects)`.
//!
//! ```text
//!            ┌──────────── success ─────────────┐
//!            ▼                                  │
//!        Healthy ──refresh due / force / creds──▶ Refreshing ──permanent──▶ Unauthenticated
//!            ▲                                  │   ▲                          │
//!            │                        transient │   │ backoff due / force      │ new credentials
//!            │                                  ▼   │                          ▼
//!            └──────── success ───────── TransientBackoff ──give-up ceiling──▶ (Unauthenticated)
//! ```
//! Every state goes to `Stopped` on `Stop`. Exactly one attempt is in flight at a time, in
//! `Refreshing` only; a result tagged with any other attempt id is ignored. The machine owns
//! one timer: [`Machine::wake_at`] is the earliest instant it wants a [`Input::TimerFired`].
//! Spurious timer firings are harmless.
//!
//! **Our own queue is not a failure.** An attempt the driver never put on the wire because
//! every request slot of its endpoint stayed busy for the attempt's whole wait comes back
//! as [`Input::NotSent`], not as a transient [`Verdict`]: the machine goes from
//! `Refreshing` to `Requeued`, which shows exactly the record `Refreshing` showed (no
//! attempt counted, no `last_error`, `since` kept: nothing to persist), and starts the next
//! attempt at `next_try_at` ([`Machine::requeue_at`]: a short floor, then jitter over a
//! spread that starts at the time the attempt already waited and grows with consecutive
//! not-sent attempts). An attempt the driver kept back because the provider asked for less
//! (its endpoint on hold or paced after a 429/503) is not this input: the driver reports it
//! as a transient `rate_limited` [`Verdict`]. The token served still expires: when a token
//! served outside a run of failures expires while its refresh is not sent, the not-sent
//! attempt becomes the first failure of a run (`auth_retrying` with its summary, the token
//! withdrawn), as a transient failure would; within a run the expiry only withdraws the
//! token, as in a backoff. A not-sent attempt never ends in `Unauthenticated`: it is never
//! counted on a run, and the give-up ceiling is checked at a failure that was sent (or timed
//! out) and at a backoff's timer, never while requeued.
//!
//! ```text
//!   Refreshing ──not sent (token valid, or none yet, or within a run)──▶ Requeued
//!       ▲                                                                  │
//!       └──────────── next_try_at (same record, nothing persisted) ────────┘
//! ```

use std::time::Duration;

use crate::classify::{Failure, FailureKind, TokenGrant, Verdict};
use crate::policy::{BackoffPolicy, MIN_BACKOFF, MIN_LEAD, RefreshSchedule, resumed_refresh_time};
use crate::time::Timestamp;

/// The machine's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineConfig {
    /// When to refresh a healthy token.
    pub schedule: RefreshSchedule,
    /// How long to wait after a transient failure.
    pub backoff: BackoffPolicy,
    /// Give up (→ Unauthenticated) this long after the first of a run of transient failures;
    /// zero means never.
    pub give_up_after: Duration,
    /// An attempt without a result after this long is abandoned as a timeout. The transport's
    /// own total timeout should be shorter; this is the backstop.
    pub attempt_timeout: Duration,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            schedule: RefreshSchedule::default(),
            backoff: BackoffPolicy::default(),
            give_up_after: Duration::from_secs(24 * 3600),
            attempt_timeout: Duration::from_secs(35),
        }
    }
}

/// Identifies one refresh attempt of one workload. Strictly increasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptId(pub u64);

/// A run of consecutive transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// How many attempts failed in a row.
    pub failures: u32,
    /// When the first of them failed.
    pub first_failure_at: Timestamp,
    /// The latest failure.
    pub last: Failure,
}

/// Why the machine is unauthenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnauthReason {
    /// The provider rejected the credentials with a structured code.
    Rejected,
    /// Transient failures lasted past the give-up ceiling.
    GaveUp,
}

/// An attempt the driver did not send ([`Input::NotSent`]): every request slot of its
/// endpoint stayed busy for the attempt's whole wait (the driver's own queue). Nothing
/// reached the wire, so it says nothing about the workload, its grant or the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSent {
    /// How long the attempt waited at the gate before it gave up: the floor of the next
    /// try (the queue it met was at least that long).
    pub waited: Duration,
    /// A short, secret-free summary ("not sent: …"), shown only if the token expires
    /// meanwhile.
    pub summary: String,
}

impl NotSent {
    /// The transient failure this attempt is counted as once the token it would have
    /// refreshed has expired (`rate_limited`, no HTTP status, no `Retry-After`).
    pub fn failure(&self) -> Failure {
        Failure {
            kind: FailureKind::RateLimited,
            http_status: None,
            error_code: None,
            retry_after: None,
            summary: self.summary.clone(),
        }
    }
}

/// The most the jitter of a requeued attempt spreads it over (it doubles with each
/// consecutive not-sent attempt of the workload, from the floor up to this).
pub const REQUEUE_SPREAD_MAX: Duration = Duration::from_secs(60);

/// The machine's states. Each variant carries only what is valid in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// A token is served; a refresh is scheduled.
    Healthy {
        /// When the served token expires.
        expires_at: Timestamp,
        /// When the next refresh starts.
        refresh_at: Timestamp,
    },
    /// One attempt is in flight.
    Refreshing {
        /// The attempt in flight.
        attempt: AttemptId,
        /// When it is abandoned.
        deadline: Timestamp,
        /// The expiry of the token still served, if any.
        expires_at: Option<Timestamp>,
        /// The run of failures this attempt continues, if any.
        retry: Option<Retry>,
    },
    /// The last attempt was not sent (its endpoint's request slots stayed busy): no
    /// failure. Shows the record of the `Refreshing` it came from; the next attempt starts
    /// at `next_try_at`. None is in flight.
    Requeued {
        /// When the next attempt starts.
        next_try_at: Timestamp,
        /// The expiry of the token still served, if any.
        expires_at: Option<Timestamp>,
        /// The run of failures the attempts continue, if any (unchanged by not-sent ones).
        retry: Option<Retry>,
        /// The last attempt not sent (its summary becomes the failure if the token expires
        /// before an attempt is sent).
        not_sent: NotSent,
    },
    /// Waiting after a transient failure. Survives token expiry.
    TransientBackoff {
        /// The run of failures.
        retry: Retry,
        /// When the next attempt starts.
        next_attempt_at: Timestamp,
        /// The expiry of the token still served, if any.
        expires_at: Option<Timestamp>,
    },
    /// No more requests until new credentials arrive.
    Unauthenticated {
        /// Since when.
        since: Timestamp,
        /// Rejected or gave up.
        reason: UnauthReason,
        /// The failure that led here.
        last: Failure,
        /// Failed attempts in the run that led here.
        failures: u32,
        /// When that run began.
        first_failure_at: Timestamp,
    },
    /// The workload was stopped; terminal.
    Stopped,
}

/// What the machine is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The timer armed at [`Machine::wake_at`] fired (or some timer did).
    TimerFired,
    /// The result of an attempt.
    RefreshResult {
        /// Which attempt.
        attempt: AttemptId,
        /// Its classified outcome.
        verdict: Verdict,
    },
    /// An attempt was not sent: every request slot of its endpoint stayed busy for its
    /// whole wait (see [`NotSent`]). Not a result of the provider.
    NotSent {
        /// Which attempt.
        attempt: AttemptId,
        /// How long it waited, and the summary.
        not_sent: NotSent,
    },
    /// New credentials were supplied (API, CLI, credential file changed).
    CredentialsReplaced,
    /// An operator asked for a refresh now.
    ForceRefresh,
    /// The workload is being removed or the daemon is stopping.
    Stop,
}

/// Why a published token was withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdraw {
    /// It expired while refreshes kept failing.
    Expired,
    /// The credentials were rejected or the give-up ceiling passed.
    Unauthenticated,
    /// The workload stopped.
    Stopped,
}

/// What the driver must do after a step, in this order: withdraw or publish the token,
/// persist the status, start the attempt, (re)arm the timer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effects {
    /// Withdraw the served token.
    pub withdraw: Option<Withdraw>,
    /// Serve this token from now on.
    pub publish: Option<TokenGrant>,
    /// The state changed: persist the status.
    pub persist: bool,
    /// Start this attempt (exactly one is in flight afterwards).
    pub start_attempt: Option<AttemptId>,
    /// The one timer: fire [`Input::TimerFired`] at this instant (`None` = no timer).
    pub wake_at: Option<Timestamp>,
}

/// Where a machine starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No history: fetch a token at once.
    Fresh,
    /// It was healthy with a refresh due at `refresh_at`: when the driver still serves a
    /// live token (a restarted actor, a daemon restarted over its journal), keep serving it
    /// and keep the schedule, out of the start's quiet period when the token can wait
    /// ([`crate::policy::resumed_refresh_time`]); otherwise fetch one at once.
    Healthy {
        /// The scheduled refresh.
        refresh_at: Timestamp,
    },
    /// A run of transient failures was going on (the give-up ceiling keeps counting from
    /// its first failure): try at once.
    Retrying(Retry),
    /// It was unauthenticated: stay so, send nothing, until new credentials arrive.
    Unauthenticated {
        /// Since when.
        since: Timestamp,
        /// The recorded failure.
        last: Failure,
        /// Rejected or gave up.
        reason: UnauthReason,
    },
}

/// One workload's refresh state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    config: MachineConfig,
    state: State,
    next_attempt: u64,
    since: Timestamp,
    /// Consecutive not-sent attempts since the last attempt that was sent (or timed out):
    /// the requeue's spread doubles with each. Not part of any record.
    not_sent_run: u32,
    /// Set by a step that continues the same refresh (requeued, or its next try): `since`
    /// is kept.
    same_refresh: bool,
    /// A token served before has expired and none has been published since: a workload
    /// not sent then is not starting up, it lost its token (a not-sent attempt starts a
    /// run of failures, `auth_retrying`, as it would for a token expiring while requeued).
    token_lost: bool,
}

impl Machine {
    /// Starts a machine at `now`. For `Fresh` and `Retrying` the first attempt starts at once.
    ///
    /// `served_until` is the expiry of a token the driver still serves from before (a
    /// restarted actor); the machine withdraws it when it expires (at once if it already
    /// has). Resuming unauthenticated withdraws it at once (nothing is served then).
    pub fn start(
        config: MachineConfig,
        resume: Resume,
        served_until: Option<Timestamp>,
        now: Timestamp,
    ) -> (Self, Effects) {
        let mut m = Machine {
            config,
            state: State::Stopped,
            next_attempt: 1,
            since: now,
            not_sent_run: 0,
            same_refresh: false,
            token_lost: false,
        };
        let mut fx = Effects {
            persist: true,
            ..Effects::default()
        };
        match resume {
            // A restart still serving a live token keeps its refresh schedule, except that
            // a token that can wait is not refreshed in the start's quiet period.
            Resume::Healthy { refresh_at } if served_until.is_some_and(|t| t > now) => {
                let expires_at = served_until.unwrap_or(now);
                m.state = State::Healthy {
                    expires_at,
                    refresh_at: resumed_refresh_time(refresh_at, expires_at, now),
                };
            }
            // `begin_attempt` withdraws a served token that has already expired.
            Resume::Fresh | Resume::Healthy { .. } => {
                m.state = m.begin_attempt(now, served_until, None, &mut fx);
            }
            Resume::Retrying(retry) => {
                m.state = m.begin_attempt(now, served_until, Some(retry), &mut fx);
            }
            Resume::Unauthenticated {
                since,
                last,
                reason,
            } => {
                // Nothing is served while unauthenticated, expired or not.
                fx.withdraw = served_until.map(|_| Withdraw::Unauthenticated);
                // Still unauthenticated since then: a restart does not reset the clock.
                m.since = since;
                m.state = State::Unauthenticated {
                    since,
                    reason,
                    last,
                    failures: 0,
                    first_failure_at: since,
                };
            }
        }
        fx.wake_at = m.wake_at();
        (m, fx)
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The configuration.
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// The attempt in flight, if any.
    pub fn in_flight(&self) -> Option<AttemptId> {
        match &self.state {
            State::Refreshing { attempt, .. } => Some(*attempt),
            State::Healthy { .. }
            | State::Requeued { .. }
            | State::TransientBackoff { .. }
            | State::Unauthenticated { .. }
            | State::Stopped => None,
        }
    }

    /// The earliest instant the machine wants to be woken.
    pub fn wake_at(&self) -> Option<Timestamp> {
        match &self.state {
            State::Healthy { refresh_at, .. } => Some(*refresh_at),
            State::Refreshing {
                deadline,
                expires_at,
                ..
            } => Some(min_opt(*deadline, *expires_at)),
            // No give-up ceiling here: a not-sent attempt never gives up.
            State::Requeued {
                next_try_at,
                expires_at,
                ..
            } => Some(min_opt(*next_try_at, *expires_at)),
            State::TransientBackoff {
                retry,
                next_attempt_at,
                expires_at,
            } => {
                let t = min_opt(*next_attempt_at, *expires_at);
                Some(min_opt(t, self.give_up_at(retry)))
            }
            State::Unauthenticated { .. } | State::Stopped => None,
        }
    }

    fn give_up_at(&self, retry: &Retry) -> Option<Timestamp> {
        (!self.config.give_up_after.is_zero())
            .then(|| retry.first_failure_at.plus(self.config.give_up_after))
    }

    /// Feeds one input at `now`.
    ///
    /// The body is the transition table: one arm per (state, input) pair, each naming the
    /// transition that handles it (the small functions below). `s` stays in state `s`.
    pub fn handle(&mut self, input: Input, now: Timestamp, rng: &mut fastrand::Rng) -> Effects {
        use Input as I;
        use State as S;
        let mut out = Effects::default();
        let before = std::mem::discriminant(&self.state);
        self.same_refresh = false;
        let state = self.take_state();
        let fx = &mut out;
        self.state = match (state, input) {
            // ── Stopped is terminal.
            (
                S::Stopped,
                I::Stop
                | I::TimerFired
                | I::RefreshResult { .. }
                | I::NotSent { .. }
                | I::CredentialsReplaced
                | I::ForceRefresh,
            ) => S::Stopped,
            // ── Stop: from any other state, once.
            (
                S::Healthy { .. }
                | S::Refreshing { .. }
                | S::Requeued { .. }
                | S::TransientBackoff { .. }
                | S::Unauthenticated { .. },
                I::Stop,
            ) => self.stop(fx),

            // ── Healthy.
            (
                S::Healthy {
                    expires_at,
                    refresh_at,
                },
                I::TimerFired,
            ) => self.refresh_if_due(expires_at, refresh_at, now, fx),
            (s @ S::Healthy { .. }, I::RefreshResult { .. } | I::NotSent { .. }) => s, // none in flight
            (S::Healthy { expires_at, .. }, I::CredentialsReplaced | I::ForceRefresh) => {
                self.begin_attempt(now, Some(expires_at), None, fx)
            }

            // ── Refreshing.
            (
                S::Refreshing {
                    attempt,
                    deadline,
                    expires_at,
                    retry,
                },
                I::TimerFired,
            ) => self.attempt_overdue(attempt, deadline, expires_at, retry, now, rng, fx),
            (
                S::Refreshing {
                    attempt,
                    expires_at,
                    retry,
                    ..
                },
                I::RefreshResult {
                    attempt: got,
                    verdict,
                },
            ) if got == attempt => {
                self.attempt_done(verdict, expires_at, retry.as_ref(), now, rng, fx)
            }
            (
                S::Refreshing {
                    attempt,
                    expires_at,
                    retry,
                    ..
                },
                I::NotSent {
                    attempt: got,
                    not_sent,
                },
            ) if got == attempt => self.attempt_not_sent(not_sent, expires_at, retry, now, rng, fx),
            (s @ S::Refreshing { .. }, I::RefreshResult { .. } | I::NotSent { .. }) => s, // stale attempt
            (S::Refreshing { expires_at, .. }, I::CredentialsReplaced) => {
                // Abandon the attempt in flight: its result will be stale.
                self.begin_attempt(now, expires_at, None, fx)
            }
            (s @ S::Refreshing { .. }, I::ForceRefresh) => s, // single flight

            // ── Requeued: none in flight; the same refresh goes on at `next_try_at`.
            (
                S::Requeued {
                    next_try_at,
                    expires_at,
                    retry,
                    not_sent,
                },
                I::TimerFired,
            ) => self.requeue_due(next_try_at, expires_at, retry, not_sent, now, fx),
            (s @ S::Requeued { .. }, I::RefreshResult { .. } | I::NotSent { .. }) => s, // none in flight
            (S::Requeued { expires_at, .. }, I::CredentialsReplaced) => {
                self.begin_attempt(now, expires_at, None, fx) // a fresh run
            }
            (
                S::Requeued {
                    retry, expires_at, ..
                },
                I::ForceRefresh,
            ) => self.begin_attempt(now, expires_at, retry, fx), // an operator's: at once

            // ── TransientBackoff.
            (
                S::TransientBackoff {
                    retry,
                    next_attempt_at,
                    expires_at,
                },
                I::TimerFired,
            ) => self.backoff_due(retry, next_attempt_at, expires_at, now, fx),
            (s @ S::TransientBackoff { .. }, I::RefreshResult { .. } | I::NotSent { .. }) => s, // none in flight
            (S::TransientBackoff { expires_at, .. }, I::CredentialsReplaced) => {
                self.begin_attempt(now, expires_at, None, fx) // a fresh run
            }
            (
                S::TransientBackoff {
                    retry, expires_at, ..
                },
                I::ForceRefresh,
            ) => self.begin_attempt(now, expires_at, Some(retry), fx), // the same run

            // ── Unauthenticated: only new credentials leave it.
            (S::Unauthenticated { .. }, I::CredentialsReplaced) => {
                self.begin_attempt(now, None, None, fx)
            }
            (
                s @ S::Unauthenticated { .. },
                I::TimerFired | I::RefreshResult { .. } | I::NotSent { .. } | I::ForceRefresh,
            ) => s,
        };
        if !self.same_refresh
            && (std::mem::discriminant(&self.state) != before || out.start_attempt.is_some())
        {
            self.since = now;
        }
        out.wake_at = self.wake_at();
        out
    }

    /// Any state → Stopped: the served token is withdrawn.
    fn stop(&mut self, fx: &mut Effects) -> State {
        fx.withdraw = Some(Withdraw::Stopped);
        fx.persist = true;
        State::Stopped
    }

    /// Healthy, timer: the scheduled refresh starts when due (a spurious timer changes
    /// nothing).
    fn refresh_if_due(
        &mut self,
        expires_at: Timestamp,
        refresh_at: Timestamp,
        now: Timestamp,
        fx: &mut Effects,
    ) -> State {
        if now >= refresh_at {
            self.begin_attempt(now, Some(expires_at), None, fx)
        } else {
            State::Healthy {
                expires_at,
                refresh_at,
            }
        }
    }

    /// Refreshing, timer: a served token past its expiry is withdrawn; an attempt past its
    /// deadline is abandoned as a transient `timeout`.
    #[allow(clippy::too_many_arguments)]
    fn attempt_overdue(
        &mut self,
        attempt: AttemptId,
        deadline: Timestamp,
        expires_at: Option<Timestamp>,
        retry: Option<Retry>,
        now: Timestamp,
        rng: &mut fastrand::Rng,
        fx: &mut Effects,
    ) -> State {
        let expires_at = self.expire(expires_at, now, fx);
        if now >= deadline {
            self.not_sent_run = 0;
            let f = Failure {
                kind: FailureKind::Timeout,
                http_status: None,
                error_code: None,
                retry_after: None,
                summary: format!(
                    "no result within {}",
                    humantime::format_duration(self.config.attempt_timeout)
                ),
            };
            self.on_transient(f, retry.as_ref(), expires_at, now, rng, fx)
        } else {
            State::Refreshing {
                attempt,
                deadline,
                expires_at,
                retry,
            }
        }
    }

    /// Refreshing, the current attempt's result: success → Healthy (publish); transient →
    /// TransientBackoff (or Unauthenticated past the give-up ceiling); permanent →
    /// Unauthenticated.
    fn attempt_done(
        &mut self,
        verdict: Verdict,
        expires_at: Option<Timestamp>,
        retry: Option<&Retry>,
        now: Timestamp,
        rng: &mut fastrand::Rng,
        fx: &mut Effects,
    ) -> State {
        self.not_sent_run = 0;
        match verdict {
            Verdict::Success(grant) => self.on_success(grant, now, rng, fx),
            Verdict::Transient(f) => {
                let expires_at = self.expire(expires_at, now, fx);
                self.on_transient(f, retry, expires_at, now, rng, fx)
            }
            Verdict::Permanent(f) => {
                let (failures, first) = match retry {
                    Some(r) => (r.failures + 1, r.first_failure_at),
                    None => (1, now),
                };
                self.unauthenticated(UnauthReason::Rejected, f, failures, first, now, fx)
            }
        }
    }

    /// Refreshing, the current attempt was not sent (busy slots, our own queue): not a failure.
    /// Requeued with the same record and nothing to persist, unless the token served
    /// outside a run of failures has expired: then it is the transient failure it used to
    /// be (withdrawn, `auth_retrying`), without the give-up check. Within a run, or with no
    /// token (start-up), the state is kept; an expired token is withdrawn either way.
    fn attempt_not_sent(
        &mut self,
        not_sent: NotSent,
        expires_at: Option<Timestamp>,
        retry: Option<Retry>,
        now: Timestamp,
        rng: &mut fastrand::Rng,
        fx: &mut Effects,
    ) -> State {
        self.not_sent_run = self.not_sent_run.saturating_add(1);
        let expired = expires_at.is_some_and(|t| now >= t);
        let expires_at = self.expire(expires_at, now, fx);
        let retry = self.not_sent_expired(expired, retry, &not_sent, now, fx);
        let next_try_at = self.requeue_at(&not_sent, expires_at, now, rng);
        self.same_refresh = true;
        State::Requeued {
            next_try_at,
            expires_at,
            retry,
            not_sent,
        }
    }

    /// A token served outside a run of failures expired while its refresh was not sent (now,
    /// or earlier in this refresh: `token_lost`): the not-sent attempt starts a run, as a
    /// transient failure would (`auth_retrying`, its summary as the last error), so the
    /// workload never shows `running` (or `starting`) for a token it lost.
    /// The run stays requeued and never gives up on not-sent attempts: the ceiling is checked
    /// at a failure that was sent.
    fn not_sent_expired(
        &mut self,
        expired: bool,
        retry: Option<Retry>,
        not_sent: &NotSent,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Option<Retry> {
        match retry {
            None if expired || self.token_lost => {
                fx.persist = true;
                Some(Retry {
                    failures: 1,
                    first_failure_at: now,
                    last: not_sent.failure(),
                })
            }
            Some(_) | None => retry,
        }
    }

    /// Requeued, timer: a token served outside a run of failures that expired meanwhile
    /// makes the not-sent attempt the first failure of a run ([`Self::not_sent_expired`]);
    /// within a run it is only withdrawn. At `next_try_at` the next attempt of the same refresh
    /// starts, persisting nothing (the record is the one already shown).
    fn requeue_due(
        &mut self,
        next_try_at: Timestamp,
        expires_at: Option<Timestamp>,
        retry: Option<Retry>,
        not_sent: NotSent,
        now: Timestamp,
        fx: &mut Effects,
    ) -> State {
        let expired = expires_at.is_some_and(|t| now >= t);
        let expires_at = self.expire(expires_at, now, fx);
        let retry = self.not_sent_expired(expired, retry, &not_sent, now, fx);
        self.same_refresh = true;
        if now >= next_try_at {
            let attempt = AttemptId(self.next_attempt);
            self.next_attempt += 1;
            fx.start_attempt = Some(attempt);
            State::Refreshing {
                attempt,
                deadline: now.plus(self.config.attempt_timeout),
                expires_at,
                retry,
            }
        } else {
            State::Requeued {
                next_try_at,
                expires_at,
                retry,
                not_sent,
            }
        }
    }

    /// When a requeued attempt tries again: a floor of [`MIN_BACKOFF`] from `now`, plus
    /// jitter over a spread that starts at the time the attempt already waited at the gate
    /// (at least [`MIN_BACKOFF`]) and doubles with each consecutive not-sent attempt, up to
    /// [`REQUEUE_SPREAD_MAX`]. A served token's refresh
    /// is not pushed past [`MIN_LEAD`] before its expiry, but never before the floor.
    /// Why the spread: an attempt that waited its whole budget for a slot met a queue at
    /// least that long; re-trying after a failure's backoff (fractions of a second) only
    /// re-joined its end, and the not-sent attempts ran at tens of thousands a second. Why
    /// no floor of the whole wait: a storm's queue drains in seconds, and attempts held back
    /// a full budget more sat idle while slots were free (a 20,000-workload storm took 2.4×
    /// as long); spread over one budget, the first retries come back as the queue drains,
    /// and the doubling leaves a fleet larger than its endpoint a trickle of retries.
    pub fn requeue_at(
        &self,
        not_sent: &NotSent,
        expires_at: Option<Timestamp>,
        now: Timestamp,
        rng: &mut fastrand::Rng,
    ) -> Timestamp {
        let floor = now.plus(MIN_BACKOFF);
        let spread = not_sent.waited.max(MIN_BACKOFF);
        let doublings = self.not_sent_run.saturating_sub(1).min(16);
        let spread = spread
            .saturating_mul(1 << doublings)
            .min(REQUEUE_SPREAD_MAX);
        let drawn = floor.plus(spread.mul_f64(rng.f64()));
        let latest = expires_at.map(|t| {
            Timestamp::from_millis(
                t.as_millis()
                    .saturating_sub(u64::try_from(MIN_LEAD.as_millis()).unwrap_or(u64::MAX)),
            )
        });
        match latest {
            Some(latest) if drawn > latest => latest.max(floor),
            Some(_) | None => drawn,
        }
    }

    /// TransientBackoff, timer: past the give-up ceiling → Unauthenticated; at the next
    /// attempt's time → Refreshing (the same run); a served token past its expiry is
    /// withdrawn either way.
    fn backoff_due(
        &mut self,
        retry: Retry,
        next_attempt_at: Timestamp,
        expires_at: Option<Timestamp>,
        now: Timestamp,
        fx: &mut Effects,
    ) -> State {
        let expires_at = self.expire(expires_at, now, fx);
        if self.give_up_at(&retry).is_some_and(|t| now >= t) {
            let Retry {
                failures,
                first_failure_at,
                last,
            } = retry;
            self.unauthenticated(
                UnauthReason::GaveUp,
                last,
                failures,
                first_failure_at,
                now,
                fx,
            )
        } else if now >= next_attempt_at {
            self.begin_attempt(now, expires_at, Some(retry), fx)
        } else {
            State::TransientBackoff {
                retry,
                next_attempt_at,
                expires_at,
            }
        }
    }

    /// When the machine entered its current state (or started its current attempt).
    pub fn since(&self) -> Timestamp {
        self.since
    }

    fn take_state(&mut self) -> State {
        std::mem::replace(&mut self.state, State::Stopped)
    }

    /// Starts attempt n+1: the next state is `Refreshing`. A served token that has expired
    /// by `now` (a late timer, a sleep/wake) is withdrawn first.
    fn begin_attempt(
        &mut self,
        now: Timestamp,
        expires_at: Option<Timestamp>,
        retry: Option<Retry>,
        fx: &mut Effects,
    ) -> State {
        let expires_at = self.expire(expires_at, now, fx);
        self.not_sent_run = 0;
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        fx.start_attempt = Some(attempt);
        fx.persist = true;
        State::Refreshing {
            attempt,
            deadline: now.plus(self.config.attempt_timeout),
            expires_at,
            retry,
        }
    }

    /// Withdraws a served token that has expired.
    fn expire(
        &mut self,
        expires_at: Option<Timestamp>,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Option<Timestamp> {
        match expires_at {
            Some(t) if now >= t => {
                fx.withdraw = Some(Withdraw::Expired);
                fx.persist = true;
                self.token_lost = true;
                None
            }
            Some(_) | None => expires_at,
        }
    }

    fn on_success(
        &mut self,
        grant: TokenGrant,
        now: Timestamp,
        rng: &mut fastrand::Rng,
        fx: &mut Effects,
    ) -> State {
        let expires_at = now.plus(grant.lifetime);
        self.token_lost = false;
        let refresh_at = self.config.schedule.refresh_time(now, grant.lifetime, rng);
        fx.publish = Some(grant);
        fx.withdraw = None;
        fx.persist = true;
        State::Healthy {
            expires_at,
            refresh_at,
        }
    }

    fn on_transient(
        &mut self,
        f: Failure,
        retry: Option<&Retry>,
        expires_at: Option<Timestamp>,
        now: Timestamp,
        rng: &mut fastrand::Rng,
        fx: &mut Effects,
    ) -> State {
        let (failures, first_failure_at) = match retry {
            Some(r) => (r.failures.saturating_add(1), r.first_failure_at),
            None => (1, now),
        };
        let retry = Retry {
            failures,
            first_failure_at,
            last: f,
        };
        if self.give_up_at(&retry).is_some_and(|t| now >= t) {
            let Retry { last, .. } = retry;
            return self.unauthenticated(
                UnauthReason::GaveUp,
                last,
                failures,
                first_failure_at,
                now,
                fx,
            );
        }
        let delay = self
            .config
            .backoff
            .delay(failures, retry.last.retry_after, rng);
        fx.persist = true;
        State::TransientBackoff {
            retry,
            next_attempt_at: now.plus(delay),
            expires_at,
        }
    }

    fn unauthenticated(
        &mut self,
        reason: UnauthReason,
        last: Failure,
        failures: u32,
        first_failure_at: Timestamp,
        now: Timestamp,
        fx: &mut Effects,
    ) -> State {
        fx.withdraw = Some(Withdraw::Unauthenticated);
        fx.persist = true;
        State::Unauthenticated {
            since: now,
            reason,
            last,
            failures,
            first_failure_at,
        }
    }
}

fn min_opt(a: Timestamp, b: Option<Timestamp>) -> Timestamp {
    match b {
        Some(b) => a.min(b),
        None => a,
    }
}

#[cfg(test)]
mod tests;
