//! The runtime on tokio's paused clock with the in-memory transport: every scenario of a
//! workload's life, minutes or hours of virtual time in milliseconds of real time.
//! Status files are real files in a temporary directory (writes run on the blocking pool,
//! which holds the paused clock while they run).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenvisor::StateChange;
use tokenvisor::credentials::NewCredentials;
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor::{TokenHandle, Unavailable};
use tokenvisor_core::policy::{BackoffPolicy, RestartIntensity};
use tokenvisor_core::status::TokenState;
use tokenvisor_core::{Secret, StatusRecord, Timestamp, WorkloadName, WorkloadStatus};
use tokenvisor_test_support::wait::wait_until_within;
use tokio::time::Instant;

const S: fn(u64) -> Duration = Duration::from_secs;

fn name(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap()
}

/// A refresh-token workload whose client id is its name.
fn spec(n: &str) -> WorkloadSpec {
    let mut s = WorkloadSpec::new(
        name(n),
        "http://127.0.0.1:9/token",
        n,
        GrantSpec::RefreshToken {
            token: Secret::from(format!("rt-initial-{n}")),
            file: None,
        },
    )
    .with_client_secret("client-secret-value");
    s.policy.backoff = BackoffPolicy {
        initial: S(5),
        max: S(60),
        multiplier: 2.0,
    };
    s.policy.give_up_after = S(6 * 3600);
    s.policy.request_timeout = S(10);
    s.policy.connect_timeout = S(2);
    s
}

struct Harness {
    rt: Runtime,
    fake: FakeTransport,
    events: Arc<Mutex<Vec<StateChange>>>,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), RestartIntensity::default()).await
    }

    async fn start_in(dir: tempfile::TempDir, restart: RestartIntensity) -> Self {
        let fake = FakeTransport::new();
        let mut cfg = RuntimeConfig::new(dir.path(), Arc::new(fake.clone()));
        cfg.seed = Some(7);
        cfg.restart = restart;
        cfg.clock = Some(tokenvisor::Clock::anchored(Timestamp::from_millis(
            1_800_000_000_000,
        )));
        let rt = Runtime::start(cfg).await.unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut rx = rt.subscribe();
        let sink = events.clone();
        tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                sink.lock().unwrap().push(e);
            }
        });
        Harness {
            rt,
            fake,
            events,
            dir,
        }
    }

    fn statuses_of(&self, n: &str) -> Vec<WorkloadStatus> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.name.as_str() == n)
            .map(|e| e.status)
            .collect()
    }

    async fn file(&self, n: &str) -> StatusRecord {
        let report = self.rt.flush(S(5)).await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        read_file(self.dir.path(), n)
    }
}

fn read_file(dir: &Path, n: &str) -> StatusRecord {
    let bytes = std::fs::read(dir.join(format!("{n}.json"))).unwrap();
    StatusRecord::from_json(&bytes).unwrap()
}

fn status(h: &TokenHandle) -> Option<WorkloadStatus> {
    h.status().map(|r| r.status)
}

#[tokio::test(start_paused = true)]
async fn a_waf_blip_recovers_without_ever_writing_unauthenticated() {
    let h = Harness::start().await;
    h.fake.set_client("wl", FakeReply::token(600));
    let handle = h.rt.add(spec("wl")).await.unwrap();
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    assert_eq!(handle.current().unwrap().expose(), "at-1");

    // The WAF blocks the next three refreshes.
    h.fake.push(
        "wl",
        [
            FakeReply::waf_403(),
            FakeReply::waf_403(),
            FakeReply::waf_403(),
        ],
    );
    wait_until_within("auth_retrying", S(3600), || {
        status(&handle) == Some(WorkloadStatus::AuthRetrying)
    })
    .await;
    let rec = h.file("wl").await;
    let token = rec.token.as_ref().unwrap();
    let last = token.last_error.as_ref().unwrap();
    assert_eq!(last.kind, "infrastructure_4xx");
    assert_eq!(last.http_status, Some(403));
    assert!(
        last.summary.contains("Attention Required"),
        "{}",
        last.summary
    );
    // The old token is still served while it lives.
    assert!(handle.current().is_ok());

    wait_until_within("running again", S(3600), || {
        status(&handle) == Some(WorkloadStatus::Running) && h.fake.count("wl") >= 5
    })
    .await;
    let rec = h.file("wl").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    assert_eq!(rec.token.as_ref().unwrap().attempt, 0);
    let seen = h.statuses_of("wl");
    assert!(seen.contains(&WorkloadStatus::AuthRetrying), "{seen:?}");
    assert!(!seen.contains(&WorkloadStatus::Unauthenticated), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn an_outage_across_token_expiry_degrades_then_recovers() {
    let h = Harness::start().await;
    h.fake.set_client("wl", FakeReply::token(120));
    let handle = h.rt.add(spec("wl")).await.unwrap();
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;

    // 503 for a long time: the token expires while backing off.
    h.fake.set_client("wl", FakeReply::unavailable(None));
    wait_until_within("token withdrawn", S(3600), || {
        handle.current().is_err()
            && handle
                .status()
                .is_some_and(|r| r.token.as_ref().is_some_and(|t| t.expires_at.is_none()))
    })
    .await;
    assert!(
        matches!(handle.current(), Err(Unavailable::BackingOff { .. })),
        "{:?}",
        handle.current()
    );
    let rec = h.file("wl").await;
    assert_eq!(rec.status, WorkloadStatus::AuthRetrying);
    let token = rec.token.unwrap();
    assert_eq!(token.expires_at, None);
    assert!(token.attempt >= 2);
    assert!(token.next_attempt_at.is_some());

    // Still retrying an hour later (never unauthenticated below the 6 h ceiling).
    tokio::time::sleep(S(3600)).await;
    assert_eq!(status(&handle), Some(WorkloadStatus::AuthRetrying));

    h.fake.set_client("wl", FakeReply::token(120));
    wait_until_within("recovered", S(600), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    assert!(handle.current().is_ok());
    assert!(
        !h.statuses_of("wl")
            .contains(&WorkloadStatus::Unauthenticated)
    );
}

#[tokio::test(start_paused = true)]
async fn the_give_up_ceiling_ends_in_unauthenticated_and_silence() {
    let h = Harness::start().await;
    let mut s = spec("wl");
    s.policy.give_up_after = S(600);
    h.fake.set_client("wl", FakeReply::unavailable(None));
    let started = Instant::now();
    let handle = h.rt.add(s).await.unwrap();
    wait_until_within("unauthenticated", S(3600), || {
        status(&handle) == Some(WorkloadStatus::Unauthenticated)
    })
    .await;
    assert!(
        started.elapsed() >= S(600),
        "gave up early: {:?}",
        started.elapsed()
    );
    let rec = h.file("wl").await;
    assert!(
        rec.status_context.contains("gave up"),
        "{}",
        rec.status_context
    );
    let last = rec.token.unwrap().last_error.unwrap();
    assert_eq!(last.kind, "server_5xx");
    let calls = h.fake.count("wl");
    tokio::time::sleep(S(6 * 3600)).await;
    assert_eq!(h.fake.count("wl"), calls, "requests after giving up");
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_is_final_and_stops_all_requests() {
    let h = Harness::start().await;
    h.fake
        .set_client("wl", FakeReply::oauth_error(400, "invalid_grant"));
    let handle = h.rt.add(spec("wl")).await.unwrap();
    wait_until_within("unauthenticated", S(60), || {
        status(&handle) == Some(WorkloadStatus::Unauthenticated)
    })
    .await;
    assert_eq!(h.fake.count("wl"), 1);
    assert!(matches!(
        handle.current(),
        Err(Unavailable::Unauthenticated { .. })
    ));
    // A forced refresh does not leave unauthenticated either.
    assert!(h.rt.force_refresh(&name("wl")).await.unwrap());
    tokio::time::sleep(S(24 * 3600)).await;
    assert_eq!(h.fake.count("wl"), 1, "requests after invalid_grant");
    let rec = h.file("wl").await;
    assert_eq!(rec.status, WorkloadStatus::Unauthenticated);
    let last = rec.token.unwrap().last_error.unwrap();
    assert_eq!(last.error_code.as_deref(), Some("invalid_grant"));
    assert_eq!(
        last.outcome,
        tokenvisor_core::status::ErrorOutcome::Permanent
    );
    // The secrets never reach the file.
    let raw = std::fs::read_to_string(h.dir.path().join("wl.json")).unwrap();
    assert!(!raw.contains("rt-initial") && !raw.contains("client-secret-value"));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_floor_for_the_next_attempt() {
    let h = Harness::start().await;
    h.fake.push("wl", [FakeReply::too_many(120)]);
    h.fake.set_client("wl", FakeReply::token(3600));
    let handle = h.rt.add(spec("wl")).await.unwrap();
    wait_until_within("running", S(600), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    let seen = h.fake.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= S(120),
        "retried after {gap:?}, before Retry-After: 120"
    );
}

/// Workloads "a" and "b" (same token URL, 300 s tokens), both running.
async fn two_running_on_one_endpoint(h: &Harness) -> (TokenHandle, TokenHandle) {
    h.fake.set_default(FakeReply::token(300));
    let a = h.rt.add(spec("a")).await.unwrap();
    let b = h.rt.add(spec("b")).await.unwrap();
    wait_until_within("both running", S(60), || {
        status(&a) == Some(WorkloadStatus::Running) && status(&b) == Some(WorkloadStatus::Running)
    })
    .await;
    (a, b)
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_holds_every_workload_of_the_endpoint() {
    let h = Harness::start().await;
    let (a, b) = two_running_on_one_endpoint(&h).await;
    // The endpoint starts answering 429 with Retry-After: 900 for everyone.
    let before = h.fake.total();
    h.fake.set_default(FakeReply::too_many(900));
    let t0 = Instant::now();
    wait_until_within("both retrying", S(3600), || {
        status(&a) == Some(WorkloadStatus::AuthRetrying)
            && status(&b) == Some(WorkloadStatus::AuthRetrying)
    })
    .await;
    h.fake.set_default(FakeReply::token(300));
    wait_until_within("both running again", S(3600), || {
        status(&a) == Some(WorkloadStatus::Running) && status(&b) == Some(WorkloadStatus::Running)
    })
    .await;
    let during: Vec<_> = h.fake.seen()[before as usize..].to_vec();
    // Exactly one request hit the 429; every later one waited out the hold.
    let first = during[0].at;
    assert!(first >= t0);
    for r in &during[1..] {
        assert!(
            r.at - first >= S(900),
            "{} sent {:?} into the hold",
            r.client_id,
            r.at - first
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_attempt_waits_out_a_short_hold_instead_of_failing() {
    let h = Harness::start().await;
    let (a, b) = two_running_on_one_endpoint(&h).await;
    let before = h.fake.total() as usize;
    // a meets a 429 with Retry-After: 3, which holds the endpoint for 3 s: less than the 4 s
    // an attempt may wait.
    h.fake.push("a", [FakeReply::too_many(3)]);
    assert!(h.rt.force_refresh(&name("a")).await.unwrap());
    wait_until_within("a retrying", S(60), || {
        status(&a) == Some(WorkloadStatus::AuthRetrying)
    })
    .await;
    // b is forced during the hold: its attempt waits the hold out, then is sent.
    assert!(h.rt.force_refresh(&name("b")).await.unwrap());
    wait_until_within("b refreshed, a running again", S(60), || {
        h.fake.seen()[before..].iter().any(|r| r.client_id == "b")
            && status(&a) == Some(WorkloadStatus::Running)
    })
    .await;
    let during = h.fake.seen()[before..].to_vec();
    let limited = during[0].at;
    assert_eq!(during[0].client_id, "a");
    let sent = during
        .iter()
        .find(|r| r.client_id == "b")
        .map(|r| r.at - limited)
        .unwrap();
    // Not before the hold's end; within its jitter (a quarter of the hold) after it.
    assert!(sent >= S(3), "b sent {sent:?} after the 429, into the hold");
    assert!(
        sent <= S(3) + Duration::from_millis(750),
        "b waited {sent:?}"
    );
    assert!(
        !h.statuses_of("b").contains(&WorkloadStatus::AuthRetrying),
        "b counted the hold it waited out as a failure: {:?}",
        h.statuses_of("b")
    );
    assert_eq!(status(&b), Some(WorkloadStatus::Running));
}

#[tokio::test(start_paused = true)]
async fn force_refresh_all_refreshes_every_workload_once() {
    let h = Harness::start().await;
    h.fake.set_default(FakeReply::token(3600));
    let names = ["f1", "f2", "f3"];
    let mut handles = Vec::new();
    for n in names {
        handles.push(h.rt.add(spec(n)).await.unwrap());
    }
    wait_until_within("all running", S(60), || {
        handles
            .iter()
            .all(|h| status(h) == Some(WorkloadStatus::Running))
    })
    .await;
    assert_eq!(h.rt.force_refresh_all().await.unwrap(), 3);
    wait_until_within("every workload refreshed", S(60), || {
        names.iter().all(|n| h.fake.count(n) == 2)
    })
    .await;
    tokio::time::sleep(S(30)).await;
    for n in names {
        assert_eq!(h.fake.count(n), 2, "{n}: one request per force");
    }
    assert!(
        handles
            .iter()
            .all(|h| status(h) == Some(WorkloadStatus::Running))
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_force_refreshes_make_one_request() {
    let h = Harness::start().await;
    h.fake.set_client("wl", FakeReply::token(3600));
    let handle = h.rt.add(spec("wl")).await.unwrap();
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    assert_eq!(h.fake.count("wl"), 1);
    h.fake.set_client(
        "wl",
        FakeReply::Delayed(S(5), Box::new(FakeReply::token(3600))),
    );
    let forces = (0..50).map(|_| {
        let rt = h.rt.clone();
        tokio::spawn(async move { rt.force_refresh(&name("wl")).await.unwrap() })
    });
    for f in forces {
        assert!(f.await.unwrap());
    }
    tokio::time::sleep(S(30)).await;
    assert_eq!(
        h.fake.count("wl"),
        2,
        "single flight: one request for 50 forces"
    );
    assert_eq!(handle.current().unwrap().expose(), "at-2");
}

#[tokio::test(start_paused = true)]
async fn a_crashed_actor_restarts_and_a_spent_budget_means_error_for_that_one_only() {
    let h = Harness::start_in(
        tempfile::tempdir().unwrap(),
        RestartIntensity {
            max_restarts: 2,
            window: S(60),
        },
    )
    .await;
    h.fake.set_default(FakeReply::token(3600));
    let crashy = h.rt.add(spec("crashy")).await.unwrap();
    let steady = h.rt.add(spec("steady")).await.unwrap();
    wait_until_within("running", S(60), || {
        status(&crashy) == Some(WorkloadStatus::Running)
            && status(&steady) == Some(WorkloadStatus::Running)
    })
    .await;
    let token_before = crashy.current().unwrap().expose().to_owned();

    // One crash: restarted from its last state, still serving.
    h.rt.inject_crash(&name("crashy"));
    tokio::time::sleep(S(1)).await;
    assert_eq!(crashy.current().unwrap().expose(), token_before);
    wait_until_within("running after restart", S(60), || {
        status(&crashy) == Some(WorkloadStatus::Running)
    })
    .await;

    // Two more within the window: over budget.
    h.rt.inject_crash(&name("crashy"));
    tokio::time::sleep(S(1)).await;
    h.rt.inject_crash(&name("crashy"));
    wait_until_within("error", S(60), || {
        status(&crashy) == Some(WorkloadStatus::Error)
    })
    .await;
    assert_eq!(crashy.current().unwrap_err(), Unavailable::Error);
    let rec = h.file("crashy").await;
    assert_eq!(rec.status, WorkloadStatus::Error);
    assert!(
        rec.status_context.contains("crashed"),
        "{}",
        rec.status_context
    );

    // The other workload runs on, refreshing for hours.
    let calls = h.fake.count("steady");
    tokio::time::sleep(S(3 * 3600)).await;
    assert!(h.fake.count("steady") > calls);
    assert!(steady.current().is_ok());
    assert_eq!(status(&steady), Some(WorkloadStatus::Running));
}

#[tokio::test(start_paused = true)]
async fn new_credentials_recover_an_unauthenticated_workload() {
    let h = Harness::start().await;
    h.fake
        .set_client("wl", FakeReply::oauth_error(400, "invalid_grant"));
    let handle = h.rt.add(spec("wl")).await.unwrap();
    wait_until_within("unauthenticated", S(60), || {
        status(&handle) == Some(WorkloadStatus::Unauthenticated)
    })
    .await;
    h.fake.set_client("wl", FakeReply::rotating(3600));
    h.rt.supply_credentials(
        &name("wl"),
        NewCredentials {
            refresh_token: Some(Secret::from("rt-from-operator")),
            client_secret: None,
        },
    )
    .await
    .unwrap();
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    let seen = h.fake.seen();
    assert_eq!(
        seen.last().unwrap().refresh_token.as_deref(),
        Some("rt-from-operator")
    );
    // The rotated token is used next time.
    assert!(h.rt.force_refresh(&name("wl")).await.unwrap());
    wait_until_within("second refresh", S(60), || h.fake.count("wl") == 3).await;
    let seen = h.fake.seen();
    assert_eq!(seen[2].refresh_token.as_deref(), Some("rt-2"));
}

#[tokio::test(start_paused = true)]
async fn shutdown_keeps_unauthenticated_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let h = Harness::start_in(dir, RestartIntensity::default()).await;
    h.fake
        .set_client("bad", FakeReply::oauth_error(401, "invalid_client"));
    h.fake.set_client("good", FakeReply::token(3600));
    let bad = h.rt.add(spec("bad")).await.unwrap();
    let good = h.rt.add(spec("good")).await.unwrap();
    wait_until_within("settled", S(60), || {
        status(&bad) == Some(WorkloadStatus::Unauthenticated)
            && status(&good) == Some(WorkloadStatus::Running)
    })
    .await;
    let report = h.rt.shutdown(S(5)).await.unwrap();
    assert!(report.failed.is_empty());
    for n in ["bad", "good"] {
        let rec = read_file(&path, n);
        assert_eq!(rec.status, WorkloadStatus::Stopped, "{n}");
    }
    assert_eq!(
        read_file(&path, "bad").token.unwrap().state,
        TokenState::Unauthenticated
    );
    let Harness { dir, .. } = h;

    // A new runtime over the same directory: `bad` stays unauthenticated without a request.
    let h2 = Harness::start_in(dir, RestartIntensity::default()).await;
    h2.fake.set_default(FakeReply::token(3600));
    let bad = h2.rt.add(spec("bad")).await.unwrap();
    let good = h2.rt.add(spec("good")).await.unwrap();
    wait_until_within("good running", S(60), || {
        status(&good) == Some(WorkloadStatus::Running)
    })
    .await;
    tokio::time::sleep(S(3600)).await;
    assert_eq!(status(&bad), Some(WorkloadStatus::Unauthenticated));
    assert_eq!(h2.fake.count("bad"), 0);
    assert_eq!(h2.rt.recovery().recovered, 2);
}

#[tokio::test(start_paused = true)]
async fn removing_a_workload_marks_it_stopped_and_it_can_come_back() {
    let h = Harness::start().await;
    let handle = h.rt.add(spec("wl")).await.unwrap();
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    assert!(h.rt.remove(&name("wl")).await.unwrap());
    assert_eq!(handle.current().unwrap_err(), Unavailable::Stopped);
    let rec = h.file("wl").await;
    assert_eq!(rec.status, WorkloadStatus::Stopped);
    assert_eq!(rec.token.unwrap().state, TokenState::Stopped);
    assert!(!h.rt.remove(&name("wl")).await.unwrap());
    let again = h.rt.add(spec("wl")).await.unwrap();
    wait_until_within("running again", S(60), || {
        status(&again) == Some(WorkloadStatus::Running)
    })
    .await;
    assert_eq!(h.file("wl").await.status, WorkloadStatus::Running);
}

// ---------------------------------------------------------------------------------------
// Timers, reloads and signals

/// A `Retry-After` of 99,999,999 s (3.2 years) under `max_retry_after = 3 years` must not stop
/// the timers of every other workload (it used to panic the timer service's `DelayQueue`,
/// whose longest delay is about 2.2 years, and then no timer of the process ever fired).
#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_does_not_stop_the_timers_of_other_workloads() {
    let h = Harness::start().await;
    h.fake.set_client("steady", FakeReply::token(300));
    let steady = h.rt.add(spec("steady")).await.unwrap();
    wait_until_within("steady running", S(60), || {
        status(&steady) == Some(WorkloadStatus::Running)
    })
    .await;

    let mut held = spec("held");
    held.token_url = "http://127.0.0.1:10/token".into(); // its own endpoint
    held.policy.max_retry_after = S(3 * 365 * 86_400);
    held.policy.give_up_after = Duration::ZERO; // never: the backoff is its only timer
    h.fake.set_client("held", FakeReply::too_many(99_999_999));
    let held = h.rt.add(held).await.unwrap();
    wait_until_within("held retrying", S(60), || {
        status(&held) == Some(WorkloadStatus::AuthRetrying)
    })
    .await;

    // Hours later the steady workload has kept refreshing its 300 s tokens.
    let calls = h.fake.count("steady");
    tokio::time::sleep(S(3600)).await;
    assert!(
        h.fake.count("steady") >= calls + 10,
        "steady refreshed {} times in an hour",
        h.fake.count("steady") - calls
    );
    assert!(steady.current().is_ok(), "steady serves no token");
    assert!(h.rt.health().timer_service_up);
    // The held workload waits at most the timer service's longest delay, then re-arms: its
    // next attempt is still after the Retry-After it was given.
    assert_eq!(h.fake.count("held"), 1);
}

/// The timer service's task dies: health says so at once, the service is restarted, and every
/// workload's timer is armed again (refreshes go on).
#[tokio::test(start_paused = true)]
async fn a_dead_timer_service_is_reported_restarted_and_every_timer_armed_again() {
    let h = Harness::start().await;
    h.fake.set_default(FakeReply::token(300));
    let a = h.rt.add(spec("a")).await.unwrap();
    let b = h.rt.add(spec("b")).await.unwrap();
    wait_until_within("both running", S(60), || {
        status(&a) == Some(WorkloadStatus::Running) && status(&b) == Some(WorkloadStatus::Running)
    })
    .await;
    assert!(h.rt.health().ok());

    h.rt.inject_timer_service_crash();
    // No time passes while this yields: the report is immediate.
    let mut down = false;
    for _ in 0..1000 {
        if !h.rt.health().ok() {
            down = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(down, "health never reported the dead timer service");
    assert!(h.rt.health().problem().unwrap().contains("timer"));

    wait_until_within("timer service back", S(60), || h.rt.health().ok()).await;
    assert_eq!(h.rt.health().timer_service_restarts, 1);
    // Each workload refreshes its 300 s token again, for hours.
    let (ca, cb) = (h.fake.count("a"), h.fake.count("b"));
    tokio::time::sleep(S(3600)).await;
    assert!(
        h.fake.count("a") >= ca + 10,
        "a: {}",
        h.fake.count("a") - ca
    );
    assert!(
        h.fake.count("b") >= cb + 10,
        "b: {}",
        h.fake.count("b") - cb
    );
    assert!(a.current().is_ok() && b.current().is_ok());
}

/// One owner per grant: a removal (a reload restarting a changed workload is a removal, then
/// an add) answers only once the refresh in flight is done and its rotated refresh token is
/// on disk, so the workload added next reads the live token and never races the old attempt.
#[tokio::test(start_paused = true)]
async fn removal_waits_for_the_refresh_in_flight_and_its_rotated_token() {
    let h = Harness::start().await;
    let rt_file = h.dir.path().join("wl.rt");
    std::fs::write(&rt_file, "rt-initial-wl\n").unwrap();
    let mut s = spec("wl");
    s.grant = GrantSpec::RefreshToken {
        token: Secret::from("rt-initial-wl"),
        file: Some(rt_file.clone()),
    };
    h.fake.set_client("wl", FakeReply::rotating(3600));
    let handle = h.rt.add(s).await.unwrap();
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    assert_eq!(std::fs::read_to_string(&rt_file).unwrap().trim(), "rt-1");

    // A slow refresh is in flight when the workload is removed.
    h.fake.push(
        "wl",
        [FakeReply::Delayed(
            S(5),
            Box::new(FakeReply::rotating(3600)),
        )],
    );
    assert!(h.rt.force_refresh(&name("wl")).await.unwrap());
    wait_until_within("the slow request sent", S(60), || h.fake.count("wl") == 2).await;
    assert!(h.rt.remove(&name("wl")).await.unwrap());
    assert_eq!(
        std::fs::read_to_string(&rt_file).unwrap().trim(),
        "rt-2",
        "removal answered before the rotated refresh token was stored"
    );
}
