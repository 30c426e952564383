//! Faults at the proxy and at the provider, with the tokenvisor runtime in process. Each test
//! asserts the status files on disk, the state changes, and what reached the provider (its
//! request log) and nginx (its access log).
//!
//! First the shared scenarios of tokenvisor-test-support (the same ones run on the paused
//! clock and against tokenvisor-idp), over [`RealEndpoint`]; then what only this suite can
//! do: a 502 from nginx with the upstream down, an upstream slower than the request timeout,
//! `limit_req`, client_credentials at a real provider.
//!
//! Not instantiated here, because nginx's modes apply to every client of the endpoint and
//! nginx cannot delay an answer: the give-up ceiling (it needs a healthy canary next to a
//! failing workload), the short hold waited out (it needs a 429 for one client while another
//! is served), and single flight (it needs an answer held in flight).

use tokenvisor_core::WorkloadStatus;
use tokenvisor_core::status::ErrorOutcome;

use tokenvisor_test_support::scenario::Driver;

use crate::components::{now_ms, wait_until};
use crate::endpoint::RealEndpoint;
use crate::harness::{Stack, Workload, last_error};
use crate::nginx::Mode;

// Tokens that outlive the faults: the old token is still served through a WAF window, and
// no scheduled refresh interferes with the holds.
tokenvisor_test_support::scenario_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    Driver::start(RealEndpoint::start(60).await).await;
    waf_blip_recovers_without_unauthenticated,
    retry_after_is_a_floor_for_the_next_attempt,
    a_long_hold_holds_every_workload_of_the_endpoint,
    new_credentials_recover_an_unauthenticated_workload,
    force_refresh_all_refreshes_every_workload_once,
}

// Tokens that expire during the outage, and a canary that refreshes often.
tokenvisor_test_support::scenario_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    Driver::start(RealEndpoint::start(5).await).await;
    outage_across_expiry_degrades_then_recovers,
    invalid_grant_is_final_and_silent,
}

/// Asserts that no token request reached the provider between `from` and `to` (ms). A switch
/// returns only once nginx's old worker has exited, so nothing proxied before it arrives later.
fn assert_provider_untouched(s: &Stack, from: u64, to: u64, why: &str) {
    let reached = s.ep.oidc.refreshes_between(from, to);
    assert!(
        reached.is_empty(),
        "{why}: {} token request(s) reached the provider between {from} and {to}: {reached:?}",
        reached.len()
    );
}

/// A WAF answers 403 with an HTML page for longer than the tokens live: every workload is
/// `auth_retrying` (never `unauthenticated`), nothing reaches the provider, and all recover.
/// nginx answers 429 with `Retry-After: 10`: the one workload that met it waits 10 s, and so
/// does every other workload of the same token endpoint — their forced refreshes during the
/// hold are not sent (more than the 4 s an attempt may wait remain of it) — and nothing reaches
/// nginx or the provider until the hold ends. (A short hold an attempt waits out is covered
/// over loopback HTTP in `tests/it/scenarios.rs`.)
/// 503 with an HTML page across token expiry.
/// An outage of the token endpoint (`mode`) that lasts past the tokens' expiry: the workloads
/// stay `auth_retrying` (the served token is withdrawn at expiry) and recover when it ends.
async fn outage_spanning_expiry(mode: Mode, status: u16) {
    let mut s = Stack::start(4, false).await;
    let a = s.add_refresh("out-basic", "tv-01").await;
    let b = s.add_refresh("out-post", "tv-02").await;
    let c = s.add_client_credentials("out-cc", "tv-03", None).await;
    let all = [&a, &b, &c];
    s.wait_all(&all, WorkloadStatus::Running).await;

    let down_at = s.ep.nginx.switch(mode).await;
    for w in all {
        let r = s
            .wait_file(&w.name, &format!("auth_retrying with {status}"), |r| {
                r.status == WorkloadStatus::AuthRetrying
                    && last_error(r).is_some_and(|e| e.http_status == Some(status))
            })
            .await;
        let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
        assert_eq!(
            (e.outcome, e.kind.as_str()),
            (ErrorOutcome::Transient, "server_5xx"),
            "{e:?}"
        );
    }
    s.wait_expired_while_failing(&all).await;

    let up_at = now_ms();
    s.ep.nginx.switch(Mode::Pass).await;
    s.wait_all(&all, WorkloadStatus::Running).await;
    s.events.assert_never(WorkloadStatus::Unauthenticated);
    assert_provider_untouched(&s, down_at, up_at, mode.name());
    let seen: Vec<_> =
        s.ep.nginx
            .token_requests()
            .into_iter()
            .filter(|a| a.mode == mode.name())
            .collect();
    assert!(
        seen.len() >= 3,
        "nginx saw {} requests in {}",
        seen.len(),
        mode.name()
    );
    assert!(seen.iter().all(|a| a.status == status), "{seen:?}");
    s.assert_tokens_active(&all).await;
    println!(
        "observed: {} outage of {} ms spanning token expiry; {} token requests answered {status} \
         (upstream {:?}); 0 reached the provider; auth_retrying (server_5xx) past expiry, then \
         running; never unauthenticated",
        mode.name(),
        up_at - down_at,
        seen.len(),
        seen.first()
            .map(|a| a.upstream_status.clone())
            .unwrap_or_default()
    );
}

/// 502 from nginx (the upstream is a closed port) across token expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_502_upstream_down_spanning_expiry_recovers() {
    outage_spanning_expiry(Mode::BadGateway502, 502).await;
}

/// An upstream slower than the request timeout: transient `timeout`, then recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_slower_than_the_client_timeout_recovers() {
    let mut s = Stack::start(30, true).await;
    let a = s.add_refresh("slow-rt", "tv-01").await;
    let c = s.add_client_credentials("slow-cc", "tv-02", None).await;
    let all = [&a, &c];
    s.wait_all(&all, WorkloadStatus::Running).await;

    let slow_at = s.ep.nginx.switch(Mode::Slow).await;
    s.force(&all).await;
    for w in all {
        let r = s
            .wait_file(&w.name, "auth_retrying after a timeout", |r| {
                r.status == WorkloadStatus::AuthRetrying
                    && last_error(r).is_some_and(|e| e.kind == "timeout")
            })
            .await;
        let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
        assert_eq!(
            (e.outcome, e.http_status),
            (ErrorOutcome::Transient, None),
            "{e:?}"
        );
    }
    let slow =
        s.ep.slow
            .as_ref()
            .unwrap_or_else(|| panic!("no slow upstream"));
    // Its accept loop counts a connection when it gets round to it, in a task of its own:
    // wait for the count rather than read it once.
    wait_until("the slow upstream to accept both requests", || {
        slow.accepted() >= 2
    })
    .await;

    let fast_at = now_ms();
    s.ep.nginx.switch(Mode::Pass).await;
    s.wait_all(&all, WorkloadStatus::Running).await;
    s.events.assert_never(WorkloadStatus::Unauthenticated);
    assert_provider_untouched(&s, slow_at, fast_at, "slow upstream");
    // nginx logs 499 for each request tokenvisor gave up on.
    s.ep.nginx
        .wait_token_request("a 499 (client gave up) in slow mode", |a| {
            a.mode == "slow" && a.status == 499
        })
        .await;
    s.assert_tokens_active(&all).await;
    println!(
        "observed: slow upstream for {} ms; it accepted {} connections; tokenvisor gave up each \
         after its 2 s request timeout (transient timeout; nginx logged 499); 0 reached the \
         provider; then running",
        fast_at - slow_at,
        slow.accepted()
    );
}

/// nginx's `limit_req` (2 r/s, burst 1) in front of the provider while eight workloads
/// refresh at once, twice: the refused ones back off (429 + `Retry-After: 1` holds the
/// endpoint) and every workload ends up running with a token the provider issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_req_rate_limiting_spreads_refreshes_and_all_recover() {
    let mut s = Stack::start(60, false).await;
    let mut ws = Vec::new();
    for n in 1..=8 {
        let client = format!("tv-{n:02}");
        ws.push(s.add_refresh(&format!("lr-{n}"), &client).await);
    }
    let all: Vec<&Workload> = ws.iter().collect();
    s.wait_all(&all, WorkloadStatus::Running).await;

    s.ep.nginx.switch(Mode::LimitReq { burst: 1 }).await;
    for round in 0..2 {
        let before: Vec<usize> = all
            .iter()
            .map(|w| s.ep.oidc.refreshes(&w.client).len())
            .collect();
        s.force(&all).await;
        for (w, n) in all.iter().zip(&before) {
            let what = format!("{}: a successful refresh in round {round}", w.name);
            wait_until(&what, || {
                s.ep.oidc.refreshes(&w.client)[*n..]
                    .iter()
                    .any(|l| l.status == Some(200))
            })
            .await;
        }
        s.wait_all(&all, WorkloadStatus::Running).await;
    }
    let limited: Vec<_> =
        s.ep.nginx
            .token_requests()
            .into_iter()
            .filter(|a| a.mode == "limit_req" && a.status == 429)
            .collect();
    assert!(!limited.is_empty(), "limit_req refused nothing");
    assert!(
        limited.iter().all(|a| a.upstream_status.is_empty()),
        "a refused request reached the provider: {limited:?}"
    );
    assert!(
        all.iter()
            .any(|w| s.events.ever(&w.name, WorkloadStatus::AuthRetrying)),
        "no workload was ever held back"
    );
    s.events.assert_never(WorkloadStatus::Unauthenticated);
    // Every refresh that reached the provider succeeded: no reuse, no refused grant.
    for w in &all {
        let bad: Vec<_> =
            s.ep.oidc
                .refreshes(&w.client)
                .into_iter()
                .filter(|l| l.status != Some(200))
                .collect();
        assert!(bad.is_empty(), "{}: {bad:?}", w.name);
    }
    assert!(s.ep.oidc.events("grant.revoked").is_empty());
    s.assert_tokens_active(&all).await;
    let passed =
        s.ep.nginx
            .token_requests()
            .into_iter()
            .filter(|a| a.mode == "limit_req" && a.status == 200)
            .count();
    println!(
        "observed: limit_req refused {} token requests (429 + Retry-After 1) and passed {passed}; \
         {} of 8 workloads were auth_retrying for a while; all running; every refresh that \
         reached the provider succeeded",
        limited.len(),
        all.iter()
            .filter(|w| s.events.ever(&w.name, WorkloadStatus::AuthRetrying))
            .count()
    );
}

/// A grant revoked at the provider (RFC 7009): the next refresh gets `invalid_grant`, the
/// workload is `unauthenticated` after that one attempt, and then silent — no request while
/// another workload of the same provider keeps rotating, forced refreshes ignored.
/// client_credentials workloads (Basic and post) through nginx renew their short-lived tokens
/// by themselves; a wrong client secret is `invalid_client` from the provider: permanent after
/// one attempt, and silent afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_credentials_workloads_renew_and_a_wrong_secret_is_final() {
    let s = Stack::start(3, false).await;
    let basic = s.add_client_credentials("cc-basic", "tv-07", None).await;
    let post = s.add_client_credentials("cc-post", "tv-08", None).await;
    let wrong = s
        .add_client_credentials("cc-wrong", "tv-09", Some("not-the-secret"))
        .await;
    s.wait_all(&[&basic, &post], WorkloadStatus::Running).await;
    s.wait_invalid_client(&wrong.name).await;

    // Three renewals each, on their own schedule, every token a new one that is active.
    let mut tokens = std::collections::HashSet::new();
    for w in [&basic, &post] {
        let what = format!("{}: three renewals", w.name);
        wait_until(&what, || {
            if let Ok(t) = w.handle.current() {
                tokens.insert((w.name.clone(), t.expose().to_owned()));
            }
            s.ep.oidc
                .refreshes(&w.client)
                .iter()
                .filter(|l| {
                    l.status == Some(200) && l.grant_type.as_deref() == Some("client_credentials")
                })
                .count()
                >= 4
        })
        .await;
    }
    assert!(tokens.len() >= 4, "served tokens: {}", tokens.len());
    s.assert_tokens_active(&[&basic, &post]).await;
    // The wrong secret reached the provider once (401 invalid_client), then never again. The
    // provider logs no client for a failed client authentication: count by status.
    let refused: Vec<_> =
        s.ep.oidc
            .log()
            .into_iter()
            .filter(|l| {
                l.path.as_deref() == Some("/token") && l.error.as_deref() == Some("invalid_client")
            })
            .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(!s.events.ever(&wrong.name, WorkloadStatus::AuthRetrying));
    assert!(!s.events.ever(&basic.name, WorkloadStatus::Unauthenticated));
    assert!(!s.events.ever(&post.name, WorkloadStatus::Unauthenticated));
    assert_eq!(
        s.status_file(&wrong.name).map(|r| r.status),
        Some(WorkloadStatus::Unauthenticated)
    );
    println!(
        "observed: client_credentials (basic and post) renewed {} distinct tokens, all active at \
         the provider; a wrong secret got 401 invalid_client once, unauthenticated, then silence",
        tokens.len()
    );
}
