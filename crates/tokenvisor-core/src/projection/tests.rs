//! Projection tests: one row per machine state (record fields, resume, the round trip
//! record → resume → record), the driver's records (shutdown, down), and a property test over
//! random input sequences.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::classify::{TokenGrant, Verdict};
use crate::machine::{AttemptId, Effects, Input, MachineConfig};
use crate::secret::Secret;

const T0: Timestamp = Timestamp::from_millis(1_790_000_000_000);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn stamp(now: Timestamp) -> Stamp {
    Stamp {
        created_at: T0,
        updated_at: now,
        process_id: 7,
    }
}

fn ok() -> Verdict {
    Verdict::Success(TokenGrant {
        access_token: Secret::from("at-test"),
        refresh_token: None,
        lifetime: secs(3600),
        lifetime_from_provider: true,
        token_type: "Bearer".into(),
        scope: None,
    })
}

fn transient() -> Verdict {
    Verdict::Transient(Failure {
        kind: FailureKind::Server5xx,
        http_status: Some(503),
        error_code: None,
        retry_after: Some(secs(7)),
        summary: "HTTP 503 (no content type), empty body".into(),
    })
}

fn permanent() -> Verdict {
    Verdict::Permanent(Failure {
        kind: FailureKind::OauthRejected,
        http_status: Some(400),
        error_code: Some("invalid_grant".into()),
        retry_after: None,
        summary: "HTTP 400 invalid_grant: revoked".into(),
    })
}

/// A machine driven with explicit time, remembering its attempt in flight.
struct Drive {
    m: Machine,
    rng: fastrand::Rng,
    now: Timestamp,
    attempt: Option<AttemptId>,
}

impl Drive {
    fn new() -> Drive {
        let (m, fx) = Machine::start(MachineConfig::default(), Resume::Fresh, None, T0);
        let mut d = Drive {
            m,
            rng: fastrand::Rng::with_seed(1),
            now: T0,
            attempt: None,
        };
        d.absorb(&fx);
        d
    }

    fn absorb(&mut self, fx: &Effects) {
        if fx.start_attempt.is_some() {
            self.attempt = fx.start_attempt;
        }
    }

    fn step(&mut self, after: Duration, input: Input) -> &mut Drive {
        self.now = self.now.plus(after);
        let fx = self.m.handle(input, self.now, &mut self.rng);
        self.absorb(&fx);
        self
    }

    fn result(&mut self, verdict: Verdict) -> &mut Drive {
        let attempt = self.attempt.unwrap_or(AttemptId(0));
        self.step(secs(1), Input::RefreshResult { attempt, verdict })
    }

    /// Fires the timer at the machine's own wake-up time.
    fn wake(&mut self) -> &mut Drive {
        let at = self.m.wake_at().unwrap_or(self.now);
        self.step(at.since(self.now), Input::TimerFired)
    }
}

#[derive(Debug, Clone, Copy)]
enum Setup {
    Starting,
    Healthy,
    Backoff,
    RetryingAttempt,
    Rejected,
    GaveUp,
    Stopped,
}

const SETUPS: [Setup; 7] = [
    Setup::Starting,
    Setup::Healthy,
    Setup::Backoff,
    Setup::RetryingAttempt,
    Setup::Rejected,
    Setup::GaveUp,
    Setup::Stopped,
];

fn setup(s: Setup) -> Drive {
    let mut d = Drive::new();
    match s {
        Setup::Starting => {}
        Setup::Healthy => {
            d.result(ok());
        }
        Setup::Backoff => {
            d.result(transient());
        }
        Setup::RetryingAttempt => {
            d.result(transient()).wake();
        }
        Setup::Rejected => {
            d.result(permanent());
        }
        Setup::GaveUp => {
            d.result(transient())
                .step(secs(25 * 3600), Input::TimerFired);
        }
        Setup::Stopped => {
            d.step(secs(1), Input::Stop);
        }
    }
    d
}

/// Through the disk: JSON out and back in.
fn via_disk(r: &StatusRecord) -> StatusRecord {
    let back = StatusRecord::from_json(&r.to_json()).unwrap();
    assert_eq!(&back, r);
    back
}

#[test]
fn each_state_projects_to_its_documented_record() {
    use crate::status::{TokenState as T, WorkloadStatus as W};
    // (setup, status, token state, attempt count, served expiry, last error outcome)
    let table: [(Setup, W, T, u32, bool, Option<ErrorOutcome>); 7] = [
        (Setup::Starting, W::Starting, T::Refreshing, 0, false, None),
        (Setup::Healthy, W::Running, T::Healthy, 0, true, None),
        (
            Setup::Backoff,
            W::AuthRetrying,
            T::TransientBackoff,
            1,
            false,
            Some(ErrorOutcome::Transient),
        ),
        (
            Setup::RetryingAttempt,
            W::AuthRetrying,
            T::Refreshing,
            1,
            false,
            Some(ErrorOutcome::Transient),
        ),
        (
            Setup::Rejected,
            W::Unauthenticated,
            T::Unauthenticated,
            1,
            false,
            Some(ErrorOutcome::Permanent),
        ),
        (
            Setup::GaveUp,
            W::Unauthenticated,
            T::Unauthenticated,
            1,
            false,
            Some(ErrorOutcome::Transient),
        ),
        (Setup::Stopped, W::Stopped, T::Stopped, 0, false, None),
    ];
    for (s, status, state, attempt, served, outcome) in table {
        let d = setup(s);
        let r = record(&d.m, Occasion::Changed, stamp(d.now));
        assert_eq!(r.status, status, "{s:?}");
        assert_eq!(token_state(&r), state, "{s:?}");
        let t = r.token.as_ref().unwrap();
        assert_eq!(t.schema, SCHEMA, "{s:?}");
        assert_eq!(t.attempt, attempt, "{s:?}");
        assert_eq!(t.expires_at.is_some(), served, "{s:?}");
        assert_eq!(t.since, Some(d.m.since()), "{s:?}");
        assert_eq!(t.last_error.as_ref().map(|e| e.outcome), outcome, "{s:?}");
        assert_eq!(
            (r.created_at, r.updated_at, r.process_id),
            (T0, d.now, 7),
            "{s:?}"
        );
        assert_eq!(r.status_context, d.m.workload_status().1, "{s:?}");
    }
}

#[test]
fn a_shutdown_record_says_stopped_and_keeps_the_token_state() {
    for s in SETUPS {
        let d = setup(s);
        let changed = record(&d.m, Occasion::Changed, stamp(d.now));
        let shut = record(&d.m, Occasion::Shutdown, stamp(d.now));
        assert_eq!(shut.status, WorkloadStatus::Stopped, "{s:?}");
        assert_eq!(shut.status_context, SHUTDOWN_CONTEXT, "{s:?}");
        assert_eq!(shut.token, changed.token, "{s:?}");
        // The next start resumes the machine's state, not `stopped`.
        assert_eq!(via_disk(&shut).resume(), changed.resume(), "{s:?}");
    }
}

#[test]
fn a_record_resumes_and_resumes_back_to_the_same_record() {
    for s in SETUPS {
        let d = setup(s);
        let r = via_disk(&record(&d.m, Occasion::Changed, stamp(d.now)));
        let later = d.now.plus(secs(5));
        // A restarted actor serves the token it served; a restarted daemon serves none.
        let served = r.token.as_ref().and_then(|t| t.expires_at);
        let (m2, _fx) = Machine::start(MachineConfig::default(), r.resume(), served, later);
        let r2 = record(&m2, Occasion::Changed, stamp(later));
        let (t, t2) = (r.token.as_ref().unwrap(), r2.token.as_ref().unwrap());
        match s {
            // Healthy with its token still served: the same schedule and expiry.
            Setup::Healthy => {
                assert_eq!(r2.status, r.status);
                assert_eq!((t2.state, t2.expires_at), (t.state, t.expires_at));
                assert_eq!(t2.next_attempt_at, t.next_attempt_at);
            }
            // Nothing to carry over: a fresh start.
            Setup::Starting | Setup::Stopped => {
                assert_eq!(r.resume(), Resume::Fresh, "{s:?}");
                assert_eq!(r2.status, WorkloadStatus::Starting, "{s:?}");
            }
            // A run of failures goes on: same count, same first failure, same last error.
            Setup::Backoff | Setup::RetryingAttempt => {
                assert_eq!(r2.status, WorkloadStatus::AuthRetrying, "{s:?}");
                assert_eq!(t2.state, TokenState::Refreshing, "{s:?}");
                assert_eq!(
                    (t2.attempt, t2.first_failure_at, &t2.last_error),
                    (t.attempt, t.first_failure_at, &t.last_error),
                    "{s:?}"
                );
                // And that record resumes the same run again.
                assert_eq!(r2.resume(), r.resume(), "{s:?}");
            }
            // Unauthenticated stays so, since the same time, with the same error.
            Setup::Rejected | Setup::GaveUp => {
                assert_eq!((r2.status, t2.state), (r.status, t.state), "{s:?}");
                assert_eq!(
                    (t2.since, &t2.last_error),
                    (t.since, &t.last_error),
                    "{s:?}"
                );
                // A resumed give-up does not know its run's length any more (the resume
                // carries no failure count): only a rejection's context is the same.
                if matches!(s, Setup::Rejected) {
                    assert_eq!(r2.status_context, r.status_context, "{s:?}");
                }
                assert_eq!(r2.resume(), r.resume(), "{s:?}");
            }
        }
    }
}

#[test]
fn a_down_record_keeps_the_last_token_section() {
    let d = setup(Setup::Backoff);
    let last = record(&d.m, Occasion::Changed, stamp(d.now));
    let down = Down::GaveUp {
        max_restarts: 3,
        window: secs(60),
        panic: "boom".into(),
    };
    let now = d.now.plus(secs(2));
    let r = down_record(Some(&last), &down, stamp(now));
    assert_eq!(r.status, WorkloadStatus::Error);
    assert_eq!(
        r.status_context,
        "the token actor crashed more than 3 times within 1m; left down: boom"
    );
    assert_eq!((r.token.as_ref(), r.updated_at), (last.token.as_ref(), now));
    assert_eq!(token_state(&r), TokenState::TransientBackoff);
    // An `error` record still resumes the machine underneath.
    assert_eq!(r.resume(), last.resume());

    let removed = down_record(Some(&last), &Down::Removed, stamp(now));
    assert_eq!(
        (removed.status, removed.status_context.as_str()),
        (WorkloadStatus::Stopped, "removed")
    );
    let parked = down_record(Some(&last), &Down::Parked, stamp(now));
    assert_eq!(
        (parked.status, parked.status_context.as_str()),
        (WorkloadStatus::Stopped, "run by another cluster member")
    );
    let none = down_record(None, &Down::Removed, stamp(now));
    assert_eq!(token_state(&none), TokenState::Stopped);
    assert!(none.token.is_none());
}

fn none_record() -> StatusRecord {
    down_record(None, &Down::Removed, stamp(T0))
}

#[test]
fn start_takes_resume_and_created_at_from_the_record() {
    let later = T0.plus(secs(3600));
    assert_eq!(
        start(None, later),
        Start {
            resume: Resume::Fresh,
            created_at: later
        }
    );
    let d = setup(Setup::Rejected);
    let r = record(&d.m, Occasion::Changed, stamp(d.now));
    let got = start(Some(&r), later);
    assert_eq!(got.created_at, T0);
    assert_eq!(got.resume, r.resume());
    assert!(matches!(got.resume, Resume::Unauthenticated { .. }));
}

#[test]
fn a_toolhive_record_without_token_section_resumes_by_its_status() {
    let mut r = none_record();
    r.token = None;
    for (status, unauth) in [
        (WorkloadStatus::Unauthenticated, true),
        (WorkloadStatus::Running, false),
        (WorkloadStatus::AuthRetrying, false),
        (WorkloadStatus::Starting, false),
        (WorkloadStatus::Stopped, false),
        (WorkloadStatus::Error, false),
    ] {
        r.status = status;
        r.status_context = "Token retrieval failed".into();
        match r.resume() {
            Resume::Unauthenticated { since, last, .. } => {
                assert!(unauth, "{status:?}");
                assert_eq!(since, r.updated_at);
                assert_eq!(last.summary, "Token retrieval failed");
            }
            Resume::Fresh => assert!(!unauth, "{status:?}"),
            other @ (Resume::Healthy { .. } | Resume::Retrying(_)) => {
                panic!("{status:?} resumed {other:?}")
            }
        }
    }
}

#[test]
fn only_a_routine_refresh_of_a_shown_healthy_workload_skips_its_record() {
    let shown_healthy = Some((WorkloadStatus::Running, TokenState::Healthy));
    let mut d = setup(Setup::Healthy);
    d.wake(); // the scheduled refresh starts, the token still served
    assert!(routine_refresh(&d.m, shown_healthy));
    // Not when the last record shown says something else (or nothing was shown).
    assert!(!routine_refresh(
        &d.m,
        Some((WorkloadStatus::AuthRetrying, TokenState::TransientBackoff))
    ));
    assert!(!routine_refresh(&d.m, None));
    // Not for any other state.
    for s in SETUPS {
        assert!(!routine_refresh(&setup(s).m, shown_healthy), "{s:?}");
    }
}

fn input() -> impl Strategy<Value = u8> {
    0u8..6
}

proptest! {
    /// Whatever the machine went through, its record survives the disk, and resuming from it
    /// never loses an unauthenticated state or a run of failures.
    #[test]
    fn every_reachable_record_round_trips(steps in proptest::collection::vec((input(), 0u64..7200), 0..40)) {
        let mut d = Drive::new();
        for (i, dt) in steps {
            match i {
                0 => { d.step(secs(dt), Input::TimerFired); }
                1 => { d.now = d.now.plus(secs(dt)); d.result(ok()); }
                2 => { d.now = d.now.plus(secs(dt)); d.result(transient()); }
                3 => { d.now = d.now.plus(secs(dt)); d.result(permanent()); }
                4 => { d.step(secs(dt), Input::ForceRefresh); }
                _ => { d.step(secs(dt), Input::CredentialsReplaced); }
            }
        }
        let r = via_disk(&record(&d.m, Occasion::Changed, stamp(d.now)));
        let t = r.token.clone().unwrap();
        match (t.state, r.resume()) {
            (TokenState::Unauthenticated, Resume::Unauthenticated { since, .. }) => {
                prop_assert_eq!(Some(since), t.since);
            }
            (TokenState::TransientBackoff | TokenState::Refreshing, Resume::Retrying(retry)) => {
                prop_assert_eq!(retry.failures, t.attempt);
                prop_assert_eq!(Some(retry.first_failure_at), t.first_failure_at);
            }
            (TokenState::Refreshing, Resume::Fresh) => prop_assert_eq!(t.attempt, 0),
            (TokenState::Healthy, Resume::Healthy { refresh_at }) => {
                prop_assert_eq!(Some(refresh_at), t.next_attempt_at);
            }
            (state, resume) => prop_assert!(false, "{state:?} resumed {resume:?}"),
        }
    }
}
