//! 1,000 refresh-token workloads on one token endpoint ride out a fault window: a WAF that
//! answers HTML 403s, then a 503 with `Retry-After`, then recovery. None is ever
//! `unauthenticated`, no rotated refresh token is ever presented twice, and after a flush
//! every status file on disk parses and equals its workload's last state.

use std::time::Duration;

use tokenvisor::TokenHandle;
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::status::TokenState;
use tokenvisor_core::{StatusRecord, WorkloadStatus};
use tokenvisor_idp::{
    ClientSpec, Fault, FaultKind, FaultScope, IdpConfig, IdpServer, RetryAfter, Times,
};

use crate::common::{
    Events, Harness, fast_policy, refresh_spec, secret_of, secs, status, transport, wait_until,
};

/// Workloads in the fleet.
const N: usize = 1000;

/// The one client all workloads share (each with a grant of its own).
const CLIENT: &str = "fleet";

fn workload(i: usize) -> String {
    format!("fleet-{i:04}")
}

fn running_with_token(h: &TokenHandle) -> bool {
    h.status().is_some_and(|r| {
        r.status == WorkloadStatus::Running
            && r.token
                .as_ref()
                .is_some_and(|t| t.state == TokenState::Healthy)
    }) && h.current().is_ok()
}

fn count_running(handles: &[TokenHandle]) -> usize {
    handles.iter().filter(|h| running_with_token(h)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_workloads_ride_out_a_fault_window() {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    // Tokens live 4 s: refreshes come every 2 s, and the window outlasts some tokens.
    idp.register_client(ClientSpec::new(CLIENT, secret_of(CLIENT)).with_lifetime(secs(4)));
    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::new(dir.path(), transport());
    // Room for every state change of the run: the collector must not lag.
    config.event_capacity = 1 << 16;
    let rt = Runtime::start(config).await.unwrap();
    let events = Events::collect(&rt);

    let mut handles = Vec::with_capacity(N);
    for i in 0..N {
        let refresh_token = idp.issue_refresh_token(CLIENT).unwrap();
        let spec = refresh_spec(&idp, &workload(i), CLIENT, &refresh_token);
        assert_eq!(spec.policy.endpoint_concurrency, 64);
        handles.push(rt.add(spec).await.unwrap());
    }
    wait_until("all 1,000 running", || count_running(&handles) == N).await;

    // The window, part 1: a WAF answers every request with an HTML 403. Every workload is
    // asked to refresh now, so every one of them meets it.
    idp.set_fault(FaultScope::Global, Fault::HtmlForbidden, Times::Always);
    for h in &handles {
        assert!(rt.force_refresh(h.name()).await.unwrap());
    }
    wait_until("all 1,000 auth_retrying at least once", || {
        events.count_ever(WorkloadStatus::AuthRetrying) == N
    })
    .await;

    // Part 2: the endpoint is overloaded and says so, with Retry-After.
    let unavailable = idp.counters().fault(FaultKind::ServiceUnavailable);
    idp.set_fault(
        FaultScope::Global,
        Fault::ServiceUnavailable {
            retry_after: Some(RetryAfter::Seconds(1)),
        },
        Times::Always,
    );
    wait_until("two 503s with Retry-After", || {
        idp.counters().fault(FaultKind::ServiceUnavailable) >= unavailable + 2
    })
    .await;
    // It lasts until tokens expire under it: a tenth of the fleet has no token to serve.
    wait_until("100 workloads degraded to no token", || {
        handles.iter().filter(|h| h.current().is_err()).count() >= N / 10
    })
    .await;
    let degraded = handles
        .iter()
        .filter(|h| {
            h.status()
                .is_some_and(|r| r.token.as_ref().is_some_and(|t| t.expires_at.is_none()))
        })
        .count();

    // The window closes. From now on tokens live a minute, so that nothing refreshes while
    // the files are compared with the workloads' states.
    idp.register_client(ClientSpec::new(CLIENT, secret_of(CLIENT)).with_lifetime(secs(60)));
    idp.clear_faults();
    wait_until("all 1,000 running again", || count_running(&handles) == N).await;

    // Every status file parses and equals its workload's last state. A workload may still
    // be between a state change and its write: compare again after another flush.
    let mut pending: Vec<&TokenHandle> = handles.iter().collect();
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(
            rounds <= 20,
            "{} status files never matched their workload, e.g. {}",
            pending.len(),
            pending[0].name()
        );
        let report = rt.flush(secs(10)).await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        pending.retain(|h| {
            let path = dir.path().join(format!("{}.json", h.name()));
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let on_disk = StatusRecord::from_json(&bytes)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            h.status().as_deref() != Some(&on_disk)
        });
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Nothing but the status files is left in the directory (no temporary files), besides
    // the state journal's directory (the embedder's default place for it), the lock files
    // (kept between writes) and the spares (`.<name>.json.spare`).
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| {
            f != ".tokenvisor-state" && !f.ends_with(".lock") && !f.ends_with(".json.spare")
        })
        .collect();
    assert_eq!(
        files.len(),
        N,
        "unexpected files: {:?}",
        files
            .iter()
            .filter(|f| !f.starts_with("fleet-"))
            .collect::<Vec<_>>()
    );
    assert!(files.iter().all(|f| f.ends_with(".json")));

    assert_eq!(events.lagged(), 0, "the event collector lagged");
    assert_eq!(
        events.count_ever(WorkloadStatus::Unauthenticated),
        0,
        "workloads went unauthenticated"
    );
    assert_eq!(events.count_ever(WorkloadStatus::Error), 0);
    assert!(
        handles
            .iter()
            .all(|h| status(h) == Some(WorkloadStatus::Running))
    );
    let c = idp.counters();
    eprintln!(
        "fleet: {} token requests, {} issued, faults {:?}, {} state changes, {degraded} \
         token(s) withdrawn in the window, {} compare round(s)",
        c.token_requests,
        c.success,
        c.faults,
        events.len(),
        rounds
    );
    assert_eq!(
        c.reuse_detected, 0,
        "a rotated-away refresh token was presented"
    );
    assert_eq!(c.invalid_grant, 0);
    assert!(c.fault(FaultKind::HtmlForbidden) >= N as u64);
    assert_eq!(idp.live_refresh_tokens(CLIENT).len(), N);
    assert_eq!(
        rt.persist_stats()
            .write_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let report = rt.shutdown(secs(30)).await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_queued_for_the_endpoint_are_not_sent_into_a_hold() {
    const M: usize = 20;
    const CONCURRENCY: usize = 2;
    let h = Harness::start().await;
    h.idp
        .register_client(ClientSpec::new("queue", secret_of("queue")).with_lifetime(secs(60)));
    let mut handles = Vec::new();
    for i in 0..M {
        let refresh_token = h.idp.issue_refresh_token("queue").unwrap();
        let mut spec = refresh_spec(&h.idp, &format!("queue-{i:02}"), "queue", &refresh_token);
        spec.policy.endpoint_concurrency = CONCURRENCY;
        handles.push(h.add(spec).await);
    }
    wait_until("all running", || count_running(&handles) == M).await;

    // The endpoint starts answering 503 with Retry-After: 5. Every workload refreshes at
    // once: two requests go out, the rest queue for the endpoint's two permits. The first
    // 503 holds the endpoint: the queued attempts must not be sent into the hold. The hold
    // is longer than an attempt may wait for one (`hold_wait_budget`, 4 s), so they fail as
    // "not sent" instead of waiting and sending once it ends (a shorter hold is waited out:
    // tests/it/scenarios.rs and the paused-clock tests cover that).
    const HOLD: u64 = 5;
    assert!(secs(HOLD) > fast_policy().hold_wait_budget());
    h.idp.set_fault(
        FaultScope::Global,
        Fault::ServiceUnavailable {
            retry_after: Some(RetryAfter::Seconds(HOLD)),
        },
        Times::Always,
    );
    for handle in &handles {
        assert!(h.rt.force_refresh(handle.name()).await.unwrap());
    }
    wait_until("every workload retrying", || {
        handles.iter().all(|w| {
            h.events
                .ever(w.name().as_str(), WorkloadStatus::AuthRetrying)
        })
    })
    .await;
    let sent = h.idp.counters().fault(FaultKind::ServiceUnavailable);
    assert!(
        (1..=CONCURRENCY as u64).contains(&sent),
        "{sent} requests reached the endpoint; at most {CONCURRENCY} (those already in \
         flight) may meet the 503, the others must wait out its Retry-After"
    );

    h.idp.clear_faults();
    wait_until("all running again", || count_running(&handles) == M).await;
    assert_eq!(h.idp.counters().reuse_detected, 0);
    assert_eq!(h.events.count_ever(WorkloadStatus::Unauthenticated), 0);
}
