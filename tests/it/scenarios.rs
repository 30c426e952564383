//! The shared scenarios (tokenvisor-test-support's `scenario`) end to end: real HTTP to
//! `tokenvisor-idp` on 127.0.0.1, real (short) time, status files read back from disk. The
//! same scenarios run on the paused clock (`crates/tokenvisor/tests/it/scenarios.rs`) and
//! against oidc-provider behind nginx (the real suite). Below them, what only this suite
//! covers: client_credentials requests and client authentication as the idp sees them.

use tokenvisor::spec::AuthMethod;
use tokenvisor_core::status::ErrorOutcome;
use tokenvisor_core::{Secret, WorkloadStatus};
use tokenvisor_idp::ClientSpec;
use tokenvisor_test_support::scenario::{Driver, IdpEndpoint};

use crate::common::{Harness, client_credentials_spec, refresh_spec, secret_of, secs, wait_until};

tokenvisor_test_support::scenario_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    Driver::start(IdpEndpoint::start().await).await;
    waf_blip_recovers_without_unauthenticated,
    outage_across_expiry_degrades_then_recovers,
    give_up_ceiling_ends_in_unauthenticated_and_silence,
    invalid_grant_is_final_and_silent,
    a_short_hold_is_waited_out,
    retry_after_is_a_floor_for_the_next_attempt,
    a_long_hold_holds_every_workload_of_the_endpoint,
    concurrent_force_refreshes_make_one_request,
    new_credentials_recover_an_unauthenticated_workload,
    force_refresh_all_refreshes_every_workload_once,
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
            // an assertion or a TLS certificate: no secret at all (not among the cases here)
            AuthMethod::PrivateKeyJwt
            | AuthMethod::ClientSecretJwt
            | AuthMethod::TlsClientAuth
            | AuthMethod::SelfSignedTlsClientAuth => (tokenvisor_idp::AuthMethod::None, false),
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
    // Permanent: no second attempt (counted once a retry would have shown).
    h.wait_retry_window().await;
    assert_eq!(h.idp.counters().invalid_client, 1);
    let raw = h.raw_file("wrong");
    assert!(!raw.contains("not-the-secret"));
}
