//! Chaos: seeded probabilistic faults over real HTTP.

use std::time::Duration;

use tokenvisor_idp::{Chaos, FaultKind, IdpError};

use crate::common::{APP, assert_oauth_error, content_type, json, refresh, start};

#[tokio::test]
async fn revocation_revokes_the_clients_grant_and_is_listed() {
    let idp = start().await;
    let rt = idp.issue_refresh_token(APP).unwrap();
    idp.set_chaos(Some(Chaos {
        seed: 1,
        revoke: 1.0,
        ..Chaos::default()
    }))
    .unwrap();
    assert_oauth_error(refresh(&idp, &rt).await, 400, "invalid_grant").await;
    assert_eq!(idp.chaos_revoked_clients(), vec![APP.to_owned()]);
    let c = idp.counters();
    assert_eq!(c.revocations, 1);
    assert_eq!(c.revoked, 1);
    assert_eq!(c.success, 0);
    // Switched off: a new grant works again, and the revoked list is kept.
    idp.set_chaos(None).unwrap();
    assert!(idp.chaos().is_none());
    let fresh = idp.issue_refresh_token(APP).unwrap();
    assert_eq!(refresh(&idp, &fresh).await.status(), 200);
    assert_eq!(idp.chaos_revoked_clients(), vec![APP.to_owned()]);
}

#[tokio::test]
async fn outcomes_are_counted_as_their_fault_kinds() {
    let idp = start().await;
    let rt = idp.issue_refresh_token(APP).unwrap();
    idp.set_chaos(Some(Chaos {
        seed: 1,
        html_403: 1.0,
        ..Chaos::default()
    }))
    .unwrap();
    let resp = refresh(&idp, &rt).await;
    assert_eq!(resp.status(), 403);
    assert!(content_type(&resp).starts_with("text/html"));
    idp.set_chaos(Some(Chaos {
        seed: 1,
        too_many_requests: 1.0,
        retry_after_secs: Some(3),
        ..Chaos::default()
    }))
    .unwrap();
    let resp = refresh(&idp, &rt).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()[reqwest::header::RETRY_AFTER], "3");
    idp.set_chaos(Some(Chaos {
        seed: 1,
        delay: 1.0,
        delay_for: Duration::from_millis(20),
        ..Chaos::default()
    }))
    .unwrap();
    // A delay answers normally: the (unrotated) token is still valid after the faults above.
    assert_eq!(refresh(&idp, &rt).await.status(), 200);
    let c = idp.counters();
    assert_eq!(c.fault(FaultKind::HtmlForbidden), 1);
    assert_eq!(c.fault(FaultKind::TooManyRequests), 1);
    assert_eq!(c.fault(FaultKind::Delay), 1);
    assert_eq!(c.success, 1);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_sequence() {
    let chaos = Chaos {
        seed: 99,
        html_403: 0.3,
        server_error: 0.3,
        ..Chaos::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let idp = start().await;
        idp.set_chaos(Some(chaos.clone())).unwrap();
        let mut rt = idp.issue_refresh_token(APP).unwrap();
        let mut statuses = Vec::new();
        for _ in 0..40 {
            let resp = refresh(&idp, &rt).await;
            statuses.push(resp.status().as_u16());
            if resp.status() == 200 {
                let body = json(resp).await;
                rt = body["refresh_token"].as_str().unwrap().to_owned();
            }
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&200) && runs[0].contains(&403) && runs[0].contains(&500));
    let expected: Vec<u16> = (0..40)
        .map(|n| match chaos.draw(n) {
            tokenvisor_idp::ChaosOutcome::Html403 => 403,
            tokenvisor_idp::ChaosOutcome::ServerError => 500,
            tokenvisor_idp::ChaosOutcome::Normal
            | tokenvisor_idp::ChaosOutcome::TooManyRequests
            | tokenvisor_idp::ChaosOutcome::Delay
            | tokenvisor_idp::ChaosOutcome::Drop
            | tokenvisor_idp::ChaosOutcome::Revoke => 200,
        })
        .collect();
    assert_eq!(runs[0], expected);
}

#[tokio::test]
async fn impossible_rates_are_refused() {
    let idp = start().await;
    let err = idp
        .set_chaos(Some(Chaos {
            html_403: 0.7,
            drop: 0.7,
            ..Chaos::default()
        }))
        .unwrap_err();
    assert!(matches!(err, IdpError::InvalidChaos(_)), "{err}");
    assert!(idp.chaos().is_none());
}
