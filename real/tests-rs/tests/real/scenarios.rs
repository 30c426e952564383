//! Faults at the proxy and at the provider, with the tokenvisor runtime in process. Each test
//! asserts the status files on disk, the state changes, and what reached the provider (its
//! request log) and nginx (its access log).

use tokenvisor_core::WorkloadStatus;
use tokenvisor_core::status::ErrorOutcome;

use crate::components::{now_ms, wait_until};
use crate::harness::{Stack, Workload, last_error};
use crate::nginx::Mode;

/// Asserts that no token request reached the provider between `from` and `to` (ms). A switch
/// returns only once nginx's old worker has exited, so nothing proxied before it arrives later.
fn assert_provider_untouched(s: &Stack, from: u64, to: u64, why: &str) {
    let reached = s.oidc.refreshes_between(from, to);
    assert!(
        reached.is_empty(),
        "{why}: {} token request(s) reached the provider between {from} and {to}: {reached:?}",
        reached.len()
    );
}

/// A WAF answers 403 with an HTML page for longer than the tokens live: every workload is
/// `auth_retrying` (never `unauthenticated`), nothing reaches the provider, and all recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waf_403_window_is_retried_and_recovers_never_unauthenticated() {
    let mut s = Stack::start(5, false).await;
    let a = s.add_refresh("waf-basic", "tv-01").await;
    let b = s.add_refresh("waf-post", "tv-02").await;
    let c = s.add_client_credentials("waf-cc", "tv-03", None).await;
    let all = [&a, &b, &c];
    s.wait_all(&all, WorkloadStatus::Running).await;

    let blocked_at = s.nginx.switch(Mode::Waf403).await;
    s.force(&all).await;
    for w in all {
        let r = s
            .wait_file(&w.name, "auth_retrying with the WAF's 403", |r| {
                r.status == WorkloadStatus::AuthRetrying
                    && last_error(r).is_some_and(|e| e.http_status == Some(403))
            })
            .await;
        let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
        assert_eq!(e.outcome, ErrorOutcome::Transient, "{e:?}");
        assert_eq!(e.kind, "infrastructure_4xx", "{e:?}");
        assert_eq!(e.error_code, None, "{e:?}");
        assert!(e.summary.contains("403"), "{e:?}");
    }
    // The window outlasts the tokens: still auth_retrying after expiry.
    s.wait_expired_while_failing(&all).await;

    let unblocked_at = now_ms();
    s.nginx.switch(Mode::Pass).await;
    s.wait_all(&all, WorkloadStatus::Running).await;

    s.events.assert_never_unauthenticated();
    for w in all {
        assert!(
            s.events.ever(&w.name, WorkloadStatus::AuthRetrying),
            "{}",
            w.name
        );
        let r = s.flushed_file(&w.name).await;
        assert_eq!(r.status, WorkloadStatus::Running);
        let t = r.token.unwrap_or_else(|| panic!("no token section"));
        assert_eq!(
            (t.attempt, t.last_error),
            (0, None),
            "{}: cleared after success",
            w.name
        );
    }
    // nginx answered every request of the window by itself; none reached the provider.
    let waf: Vec<_> = s
        .nginx
        .token_requests()
        .into_iter()
        .filter(|a| a.mode == "waf403")
        .collect();
    assert!(waf.len() >= 3, "the WAF saw {} token requests", waf.len());
    assert!(
        waf.iter()
            .all(|a| a.status == 403 && a.upstream_status.is_empty()),
        "{waf:?}"
    );
    assert!(
        waf.iter().any(|a| a.user == "tv-01"),
        "the Basic client is not in nginx's log"
    );
    assert_provider_untouched(&s, blocked_at, unblocked_at, "WAF window");
    s.assert_tokens_active(&all).await;
    println!(
        "observed: WAF window of {} ms; nginx answered {} token requests 403 by itself, 0 reached \
         the provider; every workload auth_retrying (infrastructure_4xx, 403) past expiry, then \
         running; unauthenticated never written",
        unblocked_at - blocked_at,
        waf.len()
    );
}

/// nginx answers 429 with `Retry-After: 10`: the one workload that met it waits 10 s, and so
/// does every other workload of the same token endpoint — their forced refreshes during the
/// hold are not sent (more than the 4 s an attempt may wait remain of it) — and nothing reaches
/// nginx or the provider until the hold ends. (A short hold an attempt waits out is covered
/// over loopback HTTP in `tests/it/scenarios.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_holds_every_workload_of_the_endpoint() {
    const RETRY_AFTER: u64 = 10;
    // Tokens live a minute: no scheduled refresh during the test, only forced ones.
    let mut s = Stack::start(60, false).await;
    let first = s.add_refresh("ra-first", "tv-01").await;
    let mut others = Vec::new();
    for (n, client) in ["tv-02", "tv-03", "tv-04"].iter().enumerate() {
        others.push(s.add_refresh(&format!("ra-other-{n}"), client).await);
    }
    others.push(s.add_client_credentials("ra-cc", "tv-05", None).await);
    let mut all: Vec<&Workload> = vec![&first];
    all.extend(others.iter());
    s.wait_all(&all, WorkloadStatus::Running).await;

    s.nginx
        .switch(Mode::RetryAfter429 {
            secs: RETRY_AFTER as u32,
        })
        .await;
    s.force(&[&first]).await;
    let limited = s
        .nginx
        .wait_token_request("ra-first's request answered 429 at nginx", |a| {
            a.status == 429 && a.user == "tv-01"
        })
        .await;
    let t0 = limited.t_ms();
    let hold_end = t0 + RETRY_AFTER * 1000;
    let r = s
        .wait_file(&first.name, "auth_retrying with the 429", |r| {
            r.status == WorkloadStatus::AuthRetrying
                && last_error(r).is_some_and(|e| e.http_status == Some(429))
        })
        .await;
    let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
    assert_eq!(
        (e.kind.as_str(), e.retry_after_secs),
        ("rate_limited", Some(RETRY_AFTER)),
        "{e:?}"
    );
    // Its next attempt is not before the end of the hold (nginx logs no later than the
    // client's receipt, from which the hold counts).
    let next = r
        .token
        .as_ref()
        .and_then(|t| t.next_attempt_at)
        .map_or(0, tokenvisor_core::Timestamp::as_millis);
    assert!(
        next >= hold_end,
        "next attempt at {next}, before the hold's end {hold_end}"
    );

    // The provider answers again, but the hold is in force for every workload.
    let passing_at = s.nginx.switch(Mode::Pass).await;
    // The others are forced at once: more of the hold must remain than an attempt may wait
    // (4 s with these timeouts), so that they fail "not sent" rather than wait.
    assert!(
        passing_at + 5000 < hold_end,
        "the reload took too long for this test to mean anything (429 at {t0}, pass at {passing_at})"
    );
    let other_refs: Vec<&Workload> = others.iter().collect();
    s.force(&other_refs).await;
    for w in &others {
        let r = s
            .wait_file(
                &w.name,
                "auth_retrying, not sent because of the hold",
                |r| {
                    r.status == WorkloadStatus::AuthRetrying
                        && last_error(r).is_some_and(|e| e.kind == "rate_limited")
                },
            )
            .await;
        let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
        assert_eq!(
            e.http_status, None,
            "{}: sent a request during the hold: {e:?}",
            w.name
        );
        assert!(e.summary.starts_with("not sent"), "{}: {e:?}", w.name);
        assert!(
            e.retry_after_secs.is_some_and(|s| s >= 1),
            "{}: {e:?}",
            w.name
        );
    }
    s.wait_all(&all, WorkloadStatus::Running).await;

    // Nothing reached nginx during the hold (after the 429 itself) nor the provider.
    let during: Vec<_> = s
        .nginx
        .token_requests()
        .into_iter()
        .filter(|a| a.t_ms() > t0 && a.t_ms() < hold_end - 50)
        .collect();
    assert!(
        during.is_empty(),
        "token requests reached nginx during the hold: {during:?}"
    );
    let reached = s.oidc.refreshes_between(t0, hold_end - 50);
    assert!(
        reached.is_empty(),
        "token requests reached the provider during the hold: {reached:?}"
    );
    // And afterwards every workload refreshed through to the provider.
    for w in &all {
        assert!(
            s.oidc
                .refreshes(&w.client)
                .iter()
                .any(|l| l.t >= hold_end - 50 && l.status == Some(200)),
            "{}: no successful refresh after the hold",
            w.name
        );
    }
    s.events.assert_never_unauthenticated();
    s.assert_tokens_active(&all).await;
    println!(
        "observed: 429 + Retry-After {RETRY_AFTER} at {t0}; ra-first next attempt {} ms after it; \
         {} other workloads forced during the hold recorded \"not sent\" (rate_limited, no \
         HTTP status); 0 token requests at nginx or the provider until the hold's end; all running",
        next - t0,
        others.len()
    );
}

/// An outage of the token endpoint (`mode`) that lasts past the tokens' expiry: the workloads
/// stay `auth_retrying` (the served token is withdrawn at expiry) and recover when it ends.
async fn outage_spanning_expiry(mode: Mode, status: u16) {
    let mut s = Stack::start(4, false).await;
    let a = s.add_refresh("out-basic", "tv-01").await;
    let b = s.add_refresh("out-post", "tv-02").await;
    let c = s.add_client_credentials("out-cc", "tv-03", None).await;
    let all = [&a, &b, &c];
    s.wait_all(&all, WorkloadStatus::Running).await;

    let down_at = s.nginx.switch(mode).await;
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
    s.nginx.switch(Mode::Pass).await;
    s.wait_all(&all, WorkloadStatus::Running).await;
    s.events.assert_never_unauthenticated();
    assert_provider_untouched(&s, down_at, up_at, mode.name());
    let seen: Vec<_> = s
        .nginx
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

/// 503 with an HTML page across token expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_503_spanning_expiry_recovers() {
    outage_spanning_expiry(Mode::Unavailable503, 503).await;
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

    let slow_at = s.nginx.switch(Mode::Slow).await;
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
    let slow = s
        .slow
        .as_ref()
        .unwrap_or_else(|| panic!("no slow upstream"));
    assert!(
        slow.accepted() >= 2,
        "the slow upstream got {} connections",
        slow.accepted()
    );

    let fast_at = now_ms();
    s.nginx.switch(Mode::Pass).await;
    s.wait_all(&all, WorkloadStatus::Running).await;
    s.events.assert_never_unauthenticated();
    assert_provider_untouched(&s, slow_at, fast_at, "slow upstream");
    // nginx logs 499 for each request tokenvisor gave up on.
    s.nginx
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

    s.nginx.switch(Mode::LimitReq { burst: 1 }).await;
    for round in 0..2 {
        let before: Vec<usize> = all
            .iter()
            .map(|w| s.oidc.refreshes(&w.client).len())
            .collect();
        s.force(&all).await;
        for (w, n) in all.iter().zip(&before) {
            let what = format!("{}: a successful refresh in round {round}", w.name);
            wait_until(&what, || {
                s.oidc.refreshes(&w.client)[*n..]
                    .iter()
                    .any(|l| l.status == Some(200))
            })
            .await;
        }
        s.wait_all(&all, WorkloadStatus::Running).await;
    }
    let limited: Vec<_> = s
        .nginx
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
    s.events.assert_never_unauthenticated();
    // Every refresh that reached the provider succeeded: no reuse, no refused grant.
    for w in &all {
        let bad: Vec<_> = s
            .oidc
            .refreshes(&w.client)
            .into_iter()
            .filter(|l| l.status != Some(200))
            .collect();
        assert!(bad.is_empty(), "{}: {bad:?}", w.name);
    }
    assert!(s.oidc.events("grant.revoked").is_empty());
    s.assert_tokens_active(&all).await;
    let passed = s
        .nginx
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
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_grant_is_unauthenticated_after_one_attempt_then_silence() {
    let s = Stack::start(4, false).await;
    let victim = s.add_refresh("revoked", "tv-05").await;
    let witness = s.add_refresh("witness", "tv-06").await;
    s.wait_all(&[&victim, &witness], WorkloadStatus::Running)
        .await;

    let rt = s.refresh_token(&victim);
    s.oidc.revoke(&victim.client, &rt).await;
    wait_until("the provider to revoke the grant", || {
        s.oidc
            .events("grant.revoked")
            .iter()
            .any(|e| e.client.as_deref() == Some("tv-05"))
    })
    .await;
    // The next refresh is forced (it would come by itself within seconds).
    let _ =
        s.rt.force_refresh(&crate::harness::name(&victim.name))
            .await;
    let r = s
        .wait_file(&victim.name, "unauthenticated", |r| {
            r.status == WorkloadStatus::Unauthenticated
        })
        .await;
    let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
    assert_eq!(
        (e.outcome, e.error_code.as_deref(), e.http_status),
        (ErrorOutcome::Permanent, Some("invalid_grant"), Some(400)),
        "{e:?}"
    );
    assert!(
        victim.handle.current().is_err(),
        "an unauthenticated workload serves a token"
    );

    // Silence: the witness rotates three more times (several backoff ceilings of the victim),
    // and a forced refresh of the victim is ignored.
    let _ =
        s.rt.force_refresh(&crate::harness::name(&victim.name))
            .await;
    let rejected_at = s
        .oidc
        .refreshes("tv-05")
        .iter()
        .find(|l| l.error.as_deref() == Some("invalid_grant"))
        .map(|l| l.t)
        .unwrap_or_else(|| panic!("the provider logged no invalid_grant for tv-05"));
    wait_until("three rotations of the witness after the rejection", || {
        s.oidc
            .refreshes("tv-06")
            .iter()
            .filter(|l| l.t > rejected_at && l.status == Some(200))
            .count()
            >= 3
    })
    .await;
    let after: Vec<_> = s
        .oidc
        .refreshes("tv-05")
        .into_iter()
        .filter(|l| l.t >= rejected_at)
        .collect();
    assert_eq!(
        after.len(),
        1,
        "the victim kept asking after invalid_grant: {after:?}"
    );
    let failed: Vec<_> = s
        .oidc
        .refreshes("tv-05")
        .into_iter()
        .filter(|l| l.status != Some(200))
        .collect();
    assert_eq!(failed.len(), 1, "exactly one refused attempt: {failed:?}");
    let r = s.flushed_file(&victim.name).await;
    assert_eq!(r.status, WorkloadStatus::Unauthenticated);
    assert!(
        !s.events
            .ever(&witness.name, WorkloadStatus::Unauthenticated)
    );
    assert!(
        !s.events.ever(&victim.name, WorkloadStatus::AuthRetrying),
        "invalid_grant was retried"
    );
    s.assert_tokens_active(&[&witness]).await;
    println!(
        "observed: after the RFC 7009 revocation, 1 token request from the victim (400 \
         invalid_grant), status unauthenticated (permanent); then 0 requests while the witness \
         rotated 3 times and a forced refresh was asked"
    );
}

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
    let r = s
        .wait_file(&wrong.name, "unauthenticated", |r| {
            r.status == WorkloadStatus::Unauthenticated
        })
        .await;
    let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
    assert_eq!(
        (e.outcome, e.error_code.as_deref()),
        (ErrorOutcome::Permanent, Some("invalid_client")),
        "{e:?}"
    );

    // Three renewals each, on their own schedule, every token a new one that is active.
    let mut tokens = std::collections::HashSet::new();
    for w in [&basic, &post] {
        let what = format!("{}: three renewals", w.name);
        wait_until(&what, || {
            if let Ok(t) = w.handle.current() {
                tokens.insert((w.name.clone(), t.expose().to_owned()));
            }
            s.oidc
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
    let refused: Vec<_> = s
        .oidc
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
