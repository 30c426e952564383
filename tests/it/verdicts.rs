//! Which answers are verdicts, over real HTTP: a framework's JSON 403 and an unknown code keep
//! a workload retrying (`auth_retrying`), never `unauthenticated`; a vendor's dead-grant code
//! in its own shape (Slack's 200 `"ok":false`) is final.

use tokenvisor_core::WorkloadStatus;
use tokenvisor_core::status::ErrorOutcome;
use tokenvisor_idp::{Fault, FaultKind, FaultScope, Times};

use crate::common::{Harness, name, secs, status, wait_until};

fn client(id: &str) -> FaultScope {
    FaultScope::Client(id.to_owned())
}

fn raw(status: u16, body: &str) -> Fault {
    Fault::Raw {
        status,
        content_type: Some("application/json".into()),
        headers: Vec::new(),
        body: body.into(),
    }
}

/// Spring Boot's default error body: `{"status":403,"error":"Forbidden","path":…}`.
const SPRING_403: &str = r#"{"timestamp":"2026-09-21T14:13:20.000+00:00","status":403,"error":"Forbidden","path":"/oauth2/token"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spring_boot_403_leaves_the_workload_retrying_not_unauthenticated() {
    let h = Harness::start().await;
    let handle = h.add_refresh("spring", secs(60)).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;

    h.idp
        .set_fault(client("spring"), raw(403, SPRING_403), Times::Always);
    assert!(h.rt.force_refresh(&name("spring")).await.unwrap());
    wait_until("three Spring 403s served", || {
        h.idp.counters().fault(FaultKind::Raw) >= 3
    })
    .await;
    let rec = h.file("spring").await;
    assert_eq!(rec.status, WorkloadStatus::AuthRetrying, "{rec:?}");
    let last = rec.token.as_ref().unwrap().last_error.as_ref().unwrap();
    assert_eq!(last.outcome, ErrorOutcome::Transient);
    assert_eq!(last.kind, "infrastructure_4xx");
    assert_eq!(last.http_status, Some(403));
    assert_eq!(last.error_code, None);

    h.idp.clear_fault(&client("spring"));
    wait_until("running again", || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    let seen = h.events.statuses_of("spring");
    assert!(seen.contains(&WorkloadStatus::AuthRetrying), "{seen:?}");
    assert!(!seen.contains(&WorkloadStatus::Unauthenticated), "{seen:?}");
    assert_eq!(h.idp.counters().reuse_detected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_code_retries_and_the_status_says_how_to_make_it_final() {
    let h = Harness::start().await;
    let handle = h.add_refresh("unknown", secs(60)).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;

    h.idp.set_fault(
        client("unknown"),
        raw(
            400,
            r#"{"error":"account_locked","error_description":"try later"}"#,
        ),
        Times::Always,
    );
    assert!(h.rt.force_refresh(&name("unknown")).await.unwrap());
    wait_until("two unknown-code answers", || {
        h.idp.counters().fault(FaultKind::Raw) >= 2
    })
    .await;
    let rec = h.file("unknown").await;
    assert_eq!(rec.status, WorkloadStatus::AuthRetrying, "{rec:?}");
    assert!(
        rec.status_context.contains(
            "unknown error code \"account_locked\" treated as transient; add it to \
             permanent_codes if it is final"
        ),
        "{}",
        rec.status_context
    );
    let last = rec.token.as_ref().unwrap().last_error.as_ref().unwrap();
    assert_eq!(last.kind, "oauth_unknown_code");
    assert_eq!(last.error_code.as_deref(), Some("account_locked"));
    h.idp.clear_fault(&client("unknown"));
    wait_until("running again", || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    assert!(
        !h.events
            .statuses_of("unknown")
            .contains(&WorkloadStatus::Unauthenticated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_style_200_ok_false_invalid_refresh_token_is_final() {
    let h = Harness::start().await;
    let handle = h.add_refresh("slack", secs(60)).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;

    h.idp.set_fault(
        client("slack"),
        raw(200, r#"{"ok":false,"error":"invalid_refresh_token"}"#),
        Times::Always,
    );
    assert!(h.rt.force_refresh(&name("slack")).await.unwrap());
    h.wait_status(&handle, WorkloadStatus::Unauthenticated)
        .await;
    let rec = h.file("slack").await;
    assert_eq!(rec.status, WorkloadStatus::Unauthenticated, "{rec:?}");
    let last = rec.token.as_ref().unwrap().last_error.as_ref().unwrap();
    assert_eq!(last.outcome, ErrorOutcome::Permanent);
    assert_eq!(last.error_code.as_deref(), Some("invalid_refresh_token"));
    // Final: one request (counted once a retry would have shown, not at the verdict).
    h.wait_retry_window().await;
    assert_eq!(h.idp.counters().fault(FaultKind::Raw), 1);
}
