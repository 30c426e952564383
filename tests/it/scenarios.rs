//! The scenarios of `crates/tokenvisor/tests/runtime_paused.rs`, end to end: real HTTP to
//! `tokenvisor-idp` on 127.0.0.1, real (short) time, status files read back from disk.

use std::time::Duration;

use tokenvisor::NewCredentials;
use tokenvisor::Unavailable;
use tokenvisor::spec::AuthMethod;
use tokenvisor_core::status::{ErrorOutcome, TokenState};
use tokenvisor_core::{Secret, WorkloadStatus};
use tokenvisor_idp::{ClientSpec, Fault, FaultKind, FaultScope, RetryAfter, Times};

use crate::common::{
    DiskWatch, Harness, client_credentials_spec, name, refresh_spec, secret_of, secs, status,
    wait_until,
};

fn client(id: &str) -> FaultScope {
    FaultScope::Client(id.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waf_blip_recovers_without_ever_writing_unauthenticated() {
    let h = Harness::start().await;
    let watch = DiskWatch::start(h.dir.path(), "waf");
    // A long-lived token: the old one is still served while the WAF blocks refreshes.
    let handle = h.add_refresh("waf", secs(60)).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;
    let first = handle.current().unwrap().expose().to_owned();

    // The WAF answers every refresh with an HTML 403 until it is cleared.
    h.idp
        .set_fault(client("waf"), Fault::HtmlForbidden, Times::Always);
    assert!(h.rt.force_refresh(&name("waf")).await.unwrap());
    wait_until("three WAF pages served", || {
        h.idp.counters().fault(FaultKind::HtmlForbidden) >= 3
    })
    .await;
    let rec = h.file("waf").await;
    assert_eq!(rec.status, WorkloadStatus::AuthRetrying, "{rec:?}");
    let token = rec.token.as_ref().unwrap();
    assert!(token.attempt >= 2, "{token:?}");
    let last = token.last_error.as_ref().unwrap();
    assert_eq!(last.outcome, ErrorOutcome::Transient);
    assert_eq!(last.kind, "infrastructure_4xx");
    assert_eq!(last.http_status, Some(403));
    assert_eq!(last.error_code, None);
    // The old token is still served while it lives.
    assert_eq!(handle.current().unwrap().expose(), first);

    h.idp.clear_fault(&client("waf"));
    wait_until("running with a new token", || {
        status(&handle) == Some(WorkloadStatus::Running)
            && handle.current().is_ok_and(|t| t.expose() != first)
    })
    .await;
    let rec = h.file("waf").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    let token = rec.token.unwrap();
    assert_eq!(token.attempt, 0);
    assert_eq!(token.last_error, None);

    // A blip of exactly the next two requests: retrying, then running, with three requests.
    let before = h.count("waf");
    h.idp
        .set_fault(client("waf"), Fault::HtmlForbidden, Times::Next(2));
    assert!(h.rt.force_refresh(&name("waf")).await.unwrap());
    h.wait_requests("waf", before, 3).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;
    assert_eq!(h.file("waf").await.status, WorkloadStatus::Running);
    assert_eq!(h.count("waf"), before + 3);

    let seen = h.events.statuses_of("waf");
    assert!(seen.contains(&WorkloadStatus::AuthRetrying), "{seen:?}");
    assert!(!seen.contains(&WorkloadStatus::Unauthenticated), "{seen:?}");
    assert_eq!(h.events.lagged(), 0);
    let disk = watch.finish().await;
    assert!(disk.reads > 0, "the watcher never read the file");
    assert!(
        disk.unparsable.is_empty(),
        "partial status files seen: {:?}",
        disk.unparsable
    );
    assert!(
        !disk.statuses.contains(&WorkloadStatus::Unauthenticated),
        "{:?}",
        disk.statuses
    );
    assert_eq!(h.idp.counters().reuse_detected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_across_token_expiry_degrades_then_recovers() {
    let h = Harness::start().await;
    let handle = h.add_refresh("outage", secs(2)).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;

    // 503 (no Retry-After) for longer than the token lives.
    h.idp.set_fault(
        client("outage"),
        Fault::ServiceUnavailable { retry_after: None },
        Times::Always,
    );
    wait_until("the token to be withdrawn", || {
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
    let rec = h.file("outage").await;
    assert_eq!(rec.status, WorkloadStatus::AuthRetrying, "{rec:?}");
    let token = rec.token.unwrap();
    assert_eq!(token.expires_at, None);
    assert!(token.attempt >= 2, "{token:?}");
    assert!(token.first_failure_at.is_some());
    let last = token.last_error.unwrap();
    assert_eq!(last.kind, "server_5xx");
    assert_eq!(last.http_status, Some(503));

    h.idp.clear_fault(&client("outage"));
    wait_until("recovered", || {
        status(&handle) == Some(WorkloadStatus::Running) && handle.current().is_ok()
    })
    .await;
    let rec = h.file("outage").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    assert!(rec.token.unwrap().expires_at.is_some());
    let seen = h.events.statuses_of("outage");
    assert!(seen.contains(&WorkloadStatus::AuthRetrying), "{seen:?}");
    assert!(!seen.contains(&WorkloadStatus::Unauthenticated), "{seen:?}");
    assert_eq!(h.events.lagged(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_give_up_ceiling_ends_in_unauthenticated_and_silence() {
    let h = Harness::start().await;
    // A healthy workload next to it: its refreshes measure the silence in events.
    let canary = h.add_refresh("canary", secs(2)).await;
    h.wait_status(&canary, WorkloadStatus::Running).await;

    let rt = h.client("doomed", secs(2));
    h.idp.set_fault(
        client("doomed"),
        Fault::ServiceUnavailable { retry_after: None },
        Times::Always,
    );
    let mut spec = refresh_spec(&h.idp, "doomed", "doomed", &rt);
    spec.policy.give_up_after = secs(2);
    let handle = h.add(spec).await;
    h.wait_status(&handle, WorkloadStatus::Unauthenticated)
        .await;
    let rec = h.file("doomed").await;
    assert!(
        rec.status_context.contains("gave up"),
        "{}",
        rec.status_context
    );
    let token = rec.token.unwrap();
    assert_eq!(token.state, TokenState::Unauthenticated);
    assert_eq!(token.next_attempt_at, None);
    assert_eq!(token.last_error.unwrap().kind, "server_5xx");
    assert!(matches!(
        handle.current(),
        Err(Unavailable::Unauthenticated { .. })
    ));
    let seen = h.events.statuses_of("doomed");
    assert!(seen.contains(&WorkloadStatus::AuthRetrying), "{seen:?}");
    let calls = h.count("doomed");
    assert!(calls >= 2, "gave up after {calls} request(s)");

    // Silence: a forced refresh is ignored, and while the canary refreshes four more times
    // the doomed workload sends nothing.
    assert!(h.rt.force_refresh(&name("doomed")).await.unwrap());
    h.wait_requests("canary", h.count("canary"), 4).await;
    assert_eq!(h.count("doomed"), calls, "requests after giving up");
    assert_eq!(status(&handle), Some(WorkloadStatus::Unauthenticated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_is_final_and_stops_all_requests() {
    let h = Harness::start().await;
    let canary = h.add_refresh("canary", secs(2)).await;
    let rt = h.client("revoked", secs(60));
    let handle = h.add(refresh_spec(&h.idp, "revoked", "revoked", &rt)).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;
    h.wait_status(&canary, WorkloadStatus::Running).await;

    // The user revokes the grant at the provider; the next refresh hears invalid_grant.
    assert_eq!(h.idp.revoke_client_grants("revoked"), 1);
    let before = h.count("revoked");
    assert!(h.rt.force_refresh(&name("revoked")).await.unwrap());
    h.wait_status(&handle, WorkloadStatus::Unauthenticated)
        .await;
    assert_eq!(h.count("revoked"), before + 1, "one attempt, no retries");
    assert_eq!(h.idp.counters().invalid_grant, 1);
    assert!(matches!(
        handle.current(),
        Err(Unavailable::Unauthenticated { .. })
    ));

    // No timer is left, a forced refresh is ignored, and nothing is sent while the canary
    // refreshes four more times (two of its token lifetimes).
    assert!(h.rt.force_refresh(&name("revoked")).await.unwrap());
    h.wait_requests("canary", h.count("canary"), 4).await;
    assert_eq!(
        h.count("revoked"),
        before + 1,
        "requests after invalid_grant"
    );
    let rec = h.file("revoked").await;
    assert_eq!(rec.status, WorkloadStatus::Unauthenticated);
    let token = rec.token.unwrap();
    assert_eq!(token.next_attempt_at, None);
    assert_eq!(token.expires_at, None);
    let last = token.last_error.unwrap();
    assert_eq!(last.outcome, ErrorOutcome::Permanent);
    assert_eq!(last.error_code.as_deref(), Some("invalid_grant"));
    assert_eq!(last.http_status, Some(400));
    // The secrets never reach the file.
    let raw = h.raw_file("revoked");
    assert!(
        !raw.contains(&rt),
        "the refresh token is in the status file"
    );
    assert!(!raw.contains(&secret_of("revoked")), "the secret is in it");
    assert_eq!(status(&canary), Some(WorkloadStatus::Running));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_holds_the_workload_and_its_endpoint() {
    let h = Harness::start().await;
    let a = h.add_refresh("ra-a", secs(60)).await;
    let b = h.add_refresh("ra-b", secs(60)).await;
    h.wait_status(&a, WorkloadStatus::Running).await;
    h.wait_status(&b, WorkloadStatus::Running).await;
    let (a0, b0) = (h.count("ra-a"), h.count("ra-b"));

    h.idp.set_fault(
        client("ra-a"),
        Fault::TooManyRequests {
            retry_after: Some(RetryAfter::Seconds(2)),
            slow_down_body: false,
        },
        Times::Next(1),
    );
    assert!(h.rt.force_refresh(&name("ra-a")).await.unwrap());
    wait_until("ra-a retrying after its 429", || {
        h.events.ever("ra-a", WorkloadStatus::AuthRetrying)
    })
    .await;
    assert_eq!(h.count("ra-a"), a0 + 1, "retried inside Retry-After");
    let limited = h.idp.last_request("ra-a").unwrap().at_unix_ms;

    // The whole endpoint is held for 2 s, less than an attempt may wait (4 s with these
    // timeouts): ra-b's forced refresh waits the hold out, then is sent. It is not a failure,
    // so ra-b never leaves `running`.
    assert!(h.rt.force_refresh(&name("ra-b")).await.unwrap());
    wait_until("both running again, ra-b refreshed", || {
        status(&a) == Some(WorkloadStatus::Running)
            && status(&b) == Some(WorkloadStatus::Running)
            && h.count("ra-b") > b0
    })
    .await;
    assert_eq!(h.count("ra-a"), a0 + 2);
    assert_eq!(h.count("ra-b"), b0 + 1);
    for who in ["ra-a", "ra-b"] {
        let next = h.idp.last_request(who).unwrap().at_unix_ms;
        assert!(
            next >= limited + 2000,
            "{who} sent {} ms after the 429 asked for 2 s",
            next.saturating_sub(limited)
        );
    }
    let rec = h.file("ra-a").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    assert!(!h.events.ever("ra-a", WorkloadStatus::Unauthenticated));
    assert!(
        !h.events.ever("ra-b", WorkloadStatus::AuthRetrying),
        "ra-b counted the hold it waited out as a failure"
    );
    let rec = h.file("ra-b").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    assert!(rec.token.unwrap().last_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_force_refreshes_make_one_request() {
    let h = Harness::start().await;
    let handle = h.add_refresh("single", secs(60)).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;
    let first = handle.current().unwrap().expose().to_owned();
    let before = h.count("single");

    // The provider takes a second to answer: every force arrives while one is in flight.
    h.idp.set_fault(
        client("single"),
        Fault::Delay(Duration::from_secs(1)),
        Times::Next(1),
    );
    let forces: Vec<_> = (0..50)
        .map(|_| {
            let rt = h.rt.clone();
            tokio::spawn(async move { rt.force_refresh(&name("single")).await.unwrap() })
        })
        .collect();
    for f in forces {
        assert!(f.await.unwrap());
    }
    wait_until("a new token", || {
        handle.current().is_ok_and(|t| t.expose() != first)
    })
    .await;
    h.flush().await;
    assert_eq!(h.count("single"), before + 1, "single flight: one request");
    assert_eq!(h.idp.counters().fault(FaultKind::Delay), 1);
    assert_eq!(h.idp.counters().reuse_detected, 0);
    assert_eq!(h.file("single").await.status, WorkloadStatus::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_credentials_recover_an_unauthenticated_workload() {
    let h = Harness::start().await;
    let handle = h.add_refresh("creds", secs(60)).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;
    h.idp.revoke_client_grants("creds");
    assert!(h.rt.force_refresh(&name("creds")).await.unwrap());
    h.wait_status(&handle, WorkloadStatus::Unauthenticated)
        .await;

    // The user authorises again; the operator hands tokenvisor the new refresh token.
    let fresh = h.idp.issue_refresh_token("creds").unwrap();
    let before = h.count("creds");
    h.rt.supply_credentials(
        &name("creds"),
        NewCredentials {
            refresh_token: Some(Secret::from(fresh.as_str())),
            client_secret: None,
        },
    )
    .await
    .unwrap();
    h.wait_status(&handle, WorkloadStatus::Running).await;
    assert!(handle.current().is_ok());
    assert_eq!(h.count("creds"), before + 1);
    let used = h.idp.last_request("creds").unwrap();
    assert_eq!(used.param("refresh_token"), Some(fresh.as_str()));
    let rec = h.file("creds").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    assert_eq!(rec.token.unwrap().last_error, None);

    // The token rotated by that exchange is the one used next.
    let rotated = h.idp.live_refresh_tokens("creds");
    assert_eq!(rotated.len(), 1);
    assert_ne!(rotated[0], fresh);
    let served = handle.current().unwrap().expose().to_owned();
    assert!(h.rt.force_refresh(&name("creds")).await.unwrap());
    wait_until("the next token", || {
        handle.current().is_ok_and(|t| t.expose() != served)
    })
    .await;
    assert_eq!(h.count("creds"), before + 2);
    let used = h.idp.last_request("creds").unwrap();
    assert_eq!(used.param("refresh_token"), Some(rotated[0].as_str()));
    assert_eq!(h.idp.counters().reuse_detected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_workloads_keep_refreshing() {
    let h = Harness::start().await;
    h.idp
        .register_client(ClientSpec::new("machine", secret_of("machine")).with_lifetime(secs(2)));
    let mut spec = client_credentials_spec(&h.idp, "machine", "machine");
    spec.scopes = vec!["read".to_owned(), "write".to_owned()].into();
    spec.resource = Some("https://mcp.example.test".into());
    spec.audience = Some("mcp".into());
    let handle = h.add(spec).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;
    let first = handle.current().unwrap().expose().to_owned();
    // Tokens live 2 s: three more requests are three scheduled refreshes.
    h.wait_requests("machine", 0, 4).await;
    wait_until("a refreshed token", || {
        handle.current().is_ok_and(|t| t.expose() != first)
    })
    .await;
    let req = h.idp.last_request("machine").unwrap();
    assert_eq!(req.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(req.param("refresh_token"), None);
    assert_eq!(req.scope(), Some("read write"));
    assert_eq!(req.resources(), vec!["https://mcp.example.test"]);
    assert_eq!(req.audiences(), vec!["mcp"]);
    let rec = h.file("machine").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    assert!(!h.events.ever("machine", WorkloadStatus::AuthRetrying));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_post_client_authentication() {
    let h = Harness::start().await;
    // Characters that RFC 6749 §2.3.1 form-encodes inside Basic credentials.
    let odd_id = "odd:id+&";
    let odd_secret = "p@ss:w/rd+%&é";
    h.idp
        .register_client(ClientSpec::new(odd_id, odd_secret).with_lifetime(secs(60)));
    let odd_rt = h.idp.issue_refresh_token(odd_id).unwrap();
    let mut cases = Vec::new();
    for (workload, method) in [
        ("basic", AuthMethod::Basic),
        ("post", AuthMethod::Post),
        ("odd-basic", AuthMethod::Basic),
    ] {
        let mut spec = if workload == "odd-basic" {
            let mut s = refresh_spec(&h.idp, workload, odd_id, &odd_rt);
            s.client_secret = Some(Secret::from(odd_secret));
            s
        } else {
            let rt = h.client(workload, secs(60));
            refresh_spec(&h.idp, workload, workload, &rt)
        };
        spec.auth_method = method;
        cases.push((workload, method, h.add(spec).await));
    }
    // A wrong secret is invalid_client: permanent.
    let wrong_rt = h.client("wrong", secs(60));
    let mut wrong = refresh_spec(&h.idp, "wrong", "wrong", &wrong_rt);
    wrong.client_secret = Some(Secret::from("not-the-secret"));
    let wrong = h.add(wrong).await;

    for (workload, method, handle) in &cases {
        h.wait_status(handle, WorkloadStatus::Running).await;
        let client_id = if *workload == "odd-basic" {
            odd_id
        } else {
            workload
        };
        let req = h.idp.last_request(client_id).unwrap();
        let (want, secret_in_form) = match method {
            AuthMethod::Basic => (tokenvisor_idp::AuthMethod::Basic, false),
            AuthMethod::Post => (tokenvisor_idp::AuthMethod::Post, true),
        };
        assert_eq!(req.auth, want, "{workload}");
        assert_eq!(
            req.param("client_secret").is_some(),
            secret_in_form,
            "{workload}"
        );
        assert_eq!(req.client_id.as_deref(), Some(client_id));
    }
    h.wait_status(&wrong, WorkloadStatus::Unauthenticated).await;
    let last = h.file("wrong").await.token.unwrap().last_error.unwrap();
    assert_eq!(last.error_code.as_deref(), Some("invalid_client"));
    assert_eq!(last.outcome, ErrorOutcome::Permanent);
    assert_eq!(h.idp.counters().invalid_client, 1);
    let raw = h.raw_file("wrong");
    assert!(!raw.contains("not-the-secret"));
}
