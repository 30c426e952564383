//! The runtime on tokio's paused clock with the in-memory transport: the parts of a
//! workload's life that only the paused clock can reach (crashes and restart budgets, the
//! timer service, removal during a refresh, shutdown and resume), minutes or hours of
//! virtual time in milliseconds of real time. The scenarios shared with the HTTP suites
//! (faults, holds, give-up, invalid_grant, single flight, new credentials) are in
//! [`crate::scenarios`].
//! Status files are real files in a temporary directory (writes run on the blocking pool,
//! which holds the paused clock while they run).

use std::sync::Arc;
use std::time::Duration;

use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport};
use tokenvisor::{Runtime, RuntimeConfig, Unavailable};
use tokenvisor_core::policy::RestartIntensity;
use tokenvisor_core::status::TokenState;
use tokenvisor_core::{Secret, StatusRecord, Timestamp, WorkloadStatus};
use tokenvisor_test_support::scenario::{Endpoint as _, FakeEndpoint, name, refresh_spec, status};
use tokenvisor_test_support::status::read_status_file;
use tokenvisor_test_support::wait::wait_until_within;

const S: fn(u64) -> Duration = Duration::from_secs;

/// A refresh-token workload whose client id is its name, with the shared scenarios' paused
/// policy (backoff 5 s to 60 s, give up after 6 h).
fn spec(n: &str) -> WorkloadSpec {
    refresh_spec(
        n,
        "http://127.0.0.1:9/token",
        n,
        "client-secret-value",
        &format!("rt-initial-{n}"),
        None,
        &FakeEndpoint::new().pace().policy,
    )
}

struct Harness {
    rt: Runtime,
    fake: FakeTransport,
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
        Harness { rt, fake, dir }
    }

    async fn file(&self, n: &str) -> StatusRecord {
        let report = self.rt.flush(S(5)).await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        read_status_file(self.dir.path(), n)
    }
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
        let rec = read_status_file(&path, n);
        assert_eq!(rec.status, WorkloadStatus::Stopped, "{n}");
    }
    assert_eq!(
        read_status_file(&path, "bad").token.unwrap().state,
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

/// A `Retry-After` of 99,999,999 s (3.2 years) must not stop the timers of every other
/// workload (under `max_retry_after = 3 years` it used to panic the timer service's
/// `DelayQueue`, whose longest delay is about 2.2 years, and then no timer of the process
/// ever fired). `Runtime::add` now refuses a `max_retry_after` above its one-day ceiling, as
/// the configuration does, so the hold here is the longest a spec may ask for; the clamp of a
/// delay beyond what the queue holds is tested on the timer service itself (`timers.rs`).
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
    held.token_url = "http://127.0.0.1:10/token".parse().unwrap(); // its own endpoint
    held.policy.max_retry_after = S(86_400); // the ceiling
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
