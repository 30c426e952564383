//! One owner per credential over real HTTP: `tokenvisor-idp` rotates refresh tokens and, like
//! real providers, revokes the whole grant when a consumed refresh token comes back (reuse
//! detection).

use std::time::Duration;

use tokenvisor::credentials::NewCredentials;
use tokenvisor_core::{Secret, WorkloadStatus};
use tokenvisor_idp::{Fault, FaultScope, Times};

use crate::common::{Harness, name, secret_of, secs, wait_until};

/// `PUT …/credentials` with only a client secret while a refresh is in flight (the provider
/// takes a second to answer): the refresh that follows waits for it and presents the token it
/// rotated to. Before, it went out at once with the old refresh token: the provider saw it
/// twice and revoked the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_secret_during_a_refresh_never_reuses_the_refresh_token() {
    let h = Harness::start().await;
    let handle = h.add_refresh("swap", secs(60)).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;
    let first = handle.current().unwrap().expose().to_owned();
    h.idp.set_fault(
        FaultScope::Client("swap".to_owned()),
        Fault::Delay(Duration::from_secs(1)),
        Times::Next(1),
    );
    let before = h.count("swap");
    assert!(h.rt.force_refresh(&name("swap")).await.unwrap());
    h.wait_requests("swap", before, 1).await;
    h.rt.supply_credentials(
        &name("swap"),
        NewCredentials {
            refresh_token: None,
            client_secret: Some(Secret::from(secret_of("swap").as_str())),
        },
    )
    .await
    .unwrap();
    h.wait_requests("swap", before, 2).await;
    wait_until("a new token", || {
        handle.current().is_ok_and(|t| t.expose() != first)
    })
    .await;
    // Every token request answered (the delayed one too: the idp processes it after its
    // delay, so a reuse shows only then).
    wait_until("every token request answered", || {
        let c = h.idp.counters();
        c.success + c.invalid_grant >= c.token_requests
    })
    .await;
    h.flush().await;
    assert_eq!(h.idp.counters().reuse_detected, 0, "the grant was revoked");
    assert_eq!(h.file("swap").await.status, WorkloadStatus::Running);
    // The grant is alive: one more refresh works.
    let served = handle.current().unwrap().expose().to_owned();
    assert!(h.rt.force_refresh(&name("swap")).await.unwrap());
    wait_until("the next token", || {
        handle.current().is_ok_and(|t| t.expose() != served)
    })
    .await;
    assert_eq!(h.idp.counters().reuse_detected, 0);
}
