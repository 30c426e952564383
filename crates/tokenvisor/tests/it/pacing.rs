//! Rate pacing per endpoint, on tokio's paused clock with the in-memory transport: the
//! attempts that waited out a 429's hold leave it one by one at the endpoint's learned pace,
//! not all at once.

use std::sync::Arc;
use std::time::Duration;

use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport};
use tokenvisor::{Runtime, RuntimeConfig, TokenHandle};
use tokenvisor_core::limiter::LimiterConfig;
use tokenvisor_core::{Timestamp, WorkloadName, WorkloadStatus};
use tokenvisor_test_support::wait::wait_until_within;
use tokio::time::Instant;

const S: fn(u64) -> Duration = Duration::from_secs;

/// A runtime on the in-memory transport, its clock anchored, seeded with `seed`; the temp
/// dir lives as long as the caller keeps it.
async fn start(seed: u64) -> (tempfile::TempDir, FakeTransport, Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    let mut cfg = RuntimeConfig::new(dir.path(), Arc::new(fake.clone()));
    cfg.seed = Some(seed);
    cfg.clock = Some(tokenvisor::Clock::anchored(Timestamp::from_millis(
        1_800_000_000_000,
    )));
    let rt = Runtime::start(cfg).await.unwrap();
    (dir, fake, rt)
}

fn spec(n: &str) -> WorkloadSpec {
    let mut s = WorkloadSpec::new(
        WorkloadName::new(n).unwrap(),
        "http://127.0.0.1:9/token".parse().unwrap(),
        n,
        GrantSpec::ClientCredentials,
    )
    .with_client_secret("client-secret-value");
    s.policy.request_timeout = S(10);
    s.policy.connect_timeout = S(2);
    s
}

/// Twenty workloads wait out one 429's hold (`Retry-After: 2`); when it ends they leave it
/// paced: the endpoint, which just pushed back, gets its requests spaced out (and grows its
/// pace as they succeed), instead of twenty at the same instant.
#[tokio::test(start_paused = true)]
async fn attempts_queued_during_a_hold_leave_it_paced() {
    let (_dir, fake, rt) = start(3).await;
    let mut handles: Vec<TokenHandle> = Vec::new();
    for i in 0..20 {
        handles.push(rt.add(spec(&format!("w{i}"))).await.unwrap());
    }
    wait_until_within("all running", S(120), || {
        handles.iter().all(|h| {
            h.status()
                .is_some_and(|r| r.status == WorkloadStatus::Running)
        })
    })
    .await;
    // Later, one 429 puts the endpoint on hold for 2 s; the others are asked to refresh
    // during it.
    tokio::time::sleep(S(30)).await;
    fake.push("w0", [FakeReply::too_many(2)]);
    let held_at = Instant::now();
    assert!(
        rt.force_refresh(&WorkloadName::new("w0").unwrap())
            .await
            .unwrap()
    );
    wait_until_within("the 429", S(120), || fake.count("w0") == 2).await;
    assert_eq!(rt.gates().held(rt.clock().now()), 1);
    for i in 1..20 {
        assert!(
            rt.force_refresh(&WorkloadName::new(&format!("w{i}")).unwrap())
                .await
                .unwrap()
        );
    }
    wait_until_within("every queued attempt sent", S(120), || {
        fake.total() >= 20 + 20
    })
    .await;
    let after: Vec<Instant> = fake
        .seen()
        .into_iter()
        .map(|r| r.at)
        .filter(|at| *at >= held_at + S(2))
        .collect();
    assert!(after.len() >= 19, "{} requests after the hold", after.len());
    let first = after[0];
    // The endpoint pushed back with nothing answered well in the last second: paced at the
    // minimum, growing by the slow-start step per good answer. The second request waits
    // a full spacing after the first.
    let c = LimiterConfig::default();
    let second_gap = Duration::from_secs_f64(1.0 / (c.min_rate + c.slow_start_step));
    assert!(
        after[1] - first >= second_gap - Duration::from_millis(1),
        "the second request {:?} after the first: not paced",
        after[1] - first
    );
    let burst = after
        .iter()
        .filter(|at| at.duration_since(first) < Duration::from_millis(250))
        .count();
    assert!(
        burst <= 4,
        "{burst} requests within 250 ms of the hold's end: not paced"
    );
    let mut gaps: Vec<Duration> = after.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    assert!(gaps[0] > Duration::ZERO, "two requests at the same instant");
}

/// An attempt queued for a request slot waits no longer than its budget (the one it has for
/// a hold or a paced start): with the endpoint's only slot busy, it fails "not sent" well
/// before its machine's deadline (requeued: still `starting`), and succeeds once a slot is
/// free. Before, the wait was
/// unbounded: 100,000 workloads starting together queued longer than the deadline, and the
/// FIFO served only attempts their machine had already abandoned (the ramp stalled).
#[tokio::test(start_paused = true)]
async fn an_attempt_queued_behind_busy_slots_gives_up_within_its_budget() {
    let (_dir, fake, rt) = start(5).await;
    let one_slot = |n: &str| {
        let mut s = spec(n);
        s.policy.endpoint_concurrency = 1;
        s
    };
    let release = tokenvisor::testing::Release::new();
    fake.push(
        "busy",
        [FakeReply::Held(
            release.clone(),
            Box::new(FakeReply::token(3600)),
        )],
    );
    let busy = rt.add(one_slot("busy")).await.unwrap();
    wait_until_within("the busy request sent", S(5), || fake.count("busy") == 1).await;
    let queued = rt.add(one_slot("queued")).await.unwrap();
    // Its budget is 4 s; the busy request holds the slot until released (or its 10 s
    // timeout), and the queued attempt's machine deadline is 17 s. Not sent within its
    // budget, it is requeued (our own gate is not a failure): still `starting`, where an
    // attempt queued past its deadline would have failed as a timeout (`auth_retrying`).
    tokio::time::sleep(S(9)).await;
    let r = queued.status().unwrap();
    assert_eq!(r.status, WorkloadStatus::Starting, "{r:?}");
    assert_eq!(
        fake.count("queued"),
        0,
        "nothing sent while the slot was busy"
    );
    release.release();
    wait_until_within("both running", S(60), || {
        [&busy, &queued].iter().all(|h| {
            h.status()
                .is_some_and(|r| r.status == WorkloadStatus::Running)
        })
    })
    .await;
}

/// A 429 that is a small share of the endpoint's recent answers is sporadic: only its
/// workload waits its `Retry-After`; the endpoint is neither held nor paced, so the other
/// workloads keep refreshing. (Before, each one held the whole endpoint: 0.2 % of thousands
/// of answers a second kept a soak's fleet mostly `auth_retrying`.)
#[tokio::test(start_paused = true)]
async fn a_sporadic_429_holds_only_its_workload() {
    let (_dir, fake, rt) = start(9).await;
    let names: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    let mut handles: Vec<TokenHandle> = Vec::new();
    for n in &names {
        handles.push(rt.add(spec(n)).await.unwrap());
    }
    wait_until_within("all running", S(120), || {
        handles.iter().all(|h| {
            h.status()
                .is_some_and(|r| r.status == WorkloadStatus::Running)
        })
    })
    .await;
    tokio::time::sleep(S(30)).await;
    // 39 good answers within the last second, then one 429 with `Retry-After: 5`.
    for n in &names[1..] {
        assert!(
            rt.force_refresh(&WorkloadName::new(n).unwrap())
                .await
                .unwrap()
        );
    }
    wait_until_within("39 refreshes", S(1), || fake.total() >= 40 + 39).await;
    fake.push("w0", [FakeReply::too_many(5)]);
    assert!(
        rt.force_refresh(&WorkloadName::new("w0").unwrap())
            .await
            .unwrap()
    );
    wait_until_within("the 429", S(1), || fake.count("w0") == 2).await;
    let refused_at = Instant::now();
    assert_eq!(
        rt.gates().held(rt.clock().now()),
        0,
        "the endpoint was held"
    );
    assert_eq!(rt.gates().pacing().paced, 0, "the endpoint was paced");
    // The others refresh at once, during what would have been the hold.
    for n in &names[1..] {
        assert!(
            rt.force_refresh(&WorkloadName::new(n).unwrap())
                .await
                .unwrap()
        );
    }
    wait_until_within("the others sent during the 429's wait", S(2), || {
        fake.total() >= 40 + 39 + 1 + 39
    })
    .await;
    assert_eq!(fake.count("w0"), 2, "w0 waits its Retry-After");
    // w0 itself still honours its Retry-After.
    wait_until_within("w0 retried", S(30), || fake.count("w0") == 3).await;
    let retried = fake
        .seen()
        .into_iter()
        .filter(|r| r.client_id == "w0")
        .map(|r| r.at)
        .max()
        .unwrap();
    assert!(
        retried >= refused_at + S(5) - Duration::from_millis(1),
        "w0 retried {:?} after its 429 (Retry-After: 5)",
        retried - refused_at
    );
}

/// After an outage (a 503: the endpoint paced at its minimum) the provider answers well
/// again, then refuses one request with 429 + `Retry-After: 5`: the endpoint was paced and
/// answering well, so the 429 is a rate limit found again. The pace is cut and only that
/// workload waits its `Retry-After`; the others keep refreshing at the cut pace. (Before,
/// the 429 held every workload of the endpoint: behind nginx `limit_req` with
/// `Retry-After: 1` that stopped the whole recovery for a second at each overshoot.)
#[tokio::test(start_paused = true)]
async fn a_429_above_a_learned_pace_cuts_it_and_holds_only_its_workload() {
    let (_dir, fake, rt) = start(11).await;
    let names: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let mut handles: Vec<TokenHandle> = Vec::new();
    for n in &names {
        handles.push(rt.add(spec(n)).await.unwrap());
    }
    wait_until_within("all running", S(120), || {
        handles.iter().all(|h| {
            h.status()
                .is_some_and(|r| r.status == WorkloadStatus::Running)
        })
    })
    .await;
    tokio::time::sleep(S(30)).await;
    let force = |n: &str| {
        let rt = &rt;
        let n = WorkloadName::new(n).unwrap();
        async move { assert!(rt.force_refresh(&n).await.unwrap()) }
    };
    // The outage: a 503 paces the endpoint.
    fake.push("w0", [FakeReply::unavailable(None)]);
    force("w0").await;
    wait_until_within("the 503", S(5), || fake.count("w0") == 2).await;
    wait_until_within("paced", S(5), || rt.gates().pacing().paced == 1).await;
    // Back: good answers, paced.
    let before = fake.total();
    for n in &names[1..11] {
        force(n).await;
    }
    wait_until_within("ten good answers", S(30), || fake.total() >= before + 10).await;
    tokio::time::sleep(S(2)).await;
    // The overshoot: one 429.
    fake.push("w11", [FakeReply::too_many(5)]);
    force("w11").await;
    wait_until_within("the 429", S(5), || fake.count("w11") == 2).await;
    let refused_at = Instant::now();
    // The others refresh now, during what would have been the endpoint's hold.
    let before = fake.total();
    for n in &names[12..] {
        force(n).await;
    }
    wait_until_within("the others sent during the 429's wait", S(3), || {
        fake.total() >= before + 8
    })
    .await;
    assert!(
        Instant::now() < refused_at + S(5),
        "the others waited out the 429's Retry-After"
    );
    assert_eq!(
        rt.gates().held(rt.clock().now()),
        0,
        "the endpoint was held"
    );
    assert_eq!(rt.gates().pacing().paced, 1, "the pace was dropped");
    assert_eq!(fake.count("w11"), 2, "w11 waits its Retry-After");
}

/// Our own gate is not a failure: twenty healthy workloads fall due while the endpoint's
/// one slot is held busy. Their attempts are not sent, again and again, and not one status
/// record or served token reaches the persistence actor (no journal update, no status file)
/// while their tokens are valid: they stay `running`, serving their tokens, and nothing is
/// sent. Once the slot frees, every one refreshes. Before, each not-sent attempt was a
/// transient failure: `auth_retrying`, a record and a file, and back on the next success.
#[tokio::test(start_paused = true)]
async fn attempts_not_sent_behind_a_busy_slot_write_nothing_and_keep_workloads_running() {
    use std::sync::atomic::Ordering::Relaxed;
    let (_dir, fake, rt) = start(11).await;
    let one_slot = |n: &str, timeout: u64| {
        let mut s = spec(n);
        s.policy.endpoint_concurrency = 1;
        s.policy.request_timeout = S(timeout);
        s
    };
    fake.set_default(FakeReply::token(600));
    let mut due = Vec::new();
    for i in 0..20 {
        due.push(rt.add(one_slot(&format!("due-{i}"), 10)).await.unwrap());
    }
    let all_running = |hs: &[TokenHandle]| {
        hs.iter().all(|h| {
            h.status()
                .is_some_and(|r| r.status == WorkloadStatus::Running)
                && h.current().is_ok()
        })
    };
    wait_until_within("all running", S(60), || all_running(&due)).await;
    // One request holds the endpoint's one slot until released.
    let release = tokenvisor::testing::Release::new();
    fake.push(
        "busy",
        [FakeReply::Held(
            release.clone(),
            Box::new(FakeReply::token(600)),
        )],
    );
    let busy = rt.add(one_slot("busy", 600)).await.unwrap();
    wait_until_within("the busy request sent", S(5), || fake.count("busy") == 1).await;
    rt.flush(S(30)).await.unwrap();
    let stats = rt.persist_stats();
    let before = (
        stats.updates.load(Relaxed),
        stats.commits.load(Relaxed),
        stats.writes_ok.load(Relaxed),
    );
    // Every token refreshes at 70–80 % of its 600 s: all are due by 480 s and have been
    // not sent for a while by 530 s; none has expired (the busy request's 600 s timeout
    // has not passed either).
    tokio::time::sleep(S(530)).await;
    rt.flush(S(30)).await.unwrap();
    for (i, h) in due.iter().enumerate() {
        let name = format!("due-{i}");
        assert_eq!(
            fake.count(&name),
            1,
            "{name}: nothing sent while the slot was busy"
        );
        let r = h.status().unwrap();
        assert_eq!(r.status, WorkloadStatus::Running, "{name}: {r:?}");
        assert!(h.current().is_ok(), "{name} still serves its token");
    }
    assert_eq!(
        (
            stats.updates.load(Relaxed),
            stats.commits.load(Relaxed),
            stats.writes_ok.load(Relaxed),
        ),
        before,
        "not-sent attempts wrote nothing (updates, journal commits, status files)"
    );
    // The slot frees: every workload refreshes (before its token expires at 600 s).
    release.release();
    wait_until_within("all refreshed", S(65), || {
        (0..20).all(|i| fake.count(&format!("due-{i}")) == 2)
    })
    .await;
    wait_until_within("all running", S(10), || all_running(&due)).await;
    assert!(
        busy.status()
            .is_some_and(|r| r.status == WorkloadStatus::Running)
    );
}
