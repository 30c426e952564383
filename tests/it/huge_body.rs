//! An 8 MiB HTML 403 (a WAF or gateway error page) is read only up to the body limit,
//! classified as a transient `infrastructure_4xx`, and summarised in a few hundred bytes.

use tokenvisor_core::WorkloadStatus;
use tokenvisor_core::status::ErrorOutcome;
use tokenvisor_idp::{Fault, FaultKind, FaultScope, Times};

use crate::common::{Harness, name, secs, status, wait_until};

/// The body size of the fault page.
const EIGHT_MIB: usize = 8 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_html_403_is_a_short_transient_infrastructure_4xx() {
    let h = Harness::start().await;
    let handle = h.add_refresh("huge", secs(60)).await;
    h.wait_status(&handle, WorkloadStatus::Running).await;
    let served = handle.current().unwrap().expose().to_owned();

    let scope = FaultScope::Client("huge".to_owned());
    h.idp.set_fault(
        scope.clone(),
        Fault::HugeBody {
            status: 403,
            bytes: EIGHT_MIB,
        },
        Times::Always,
    );
    assert!(h.rt.force_refresh(&name("huge")).await.unwrap());
    wait_until("the huge page served and judged", || {
        h.idp.counters().fault(FaultKind::HugeBody) >= 1
            && status(&handle) == Some(WorkloadStatus::AuthRetrying)
    })
    .await;
    let rec = h.file("huge").await;
    assert_eq!(rec.status, WorkloadStatus::AuthRetrying, "{rec:?}");
    let last = rec.token.unwrap().last_error.unwrap();
    assert_eq!(last.outcome, ErrorOutcome::Transient);
    assert_eq!(last.kind, "infrastructure_4xx");
    assert_eq!(last.http_status, Some(403));
    assert_eq!(last.error_code, None);
    assert!(
        last.summary.len() <= 300,
        "summary of {} bytes: {:?}",
        last.summary.len(),
        last.summary
    );
    assert!(
        rec.status_context.len() <= 600,
        "status_context of {} bytes",
        rec.status_context.len()
    );
    // The whole file stays small: nothing of the page beyond the excerpt is kept.
    assert!(h.raw_file("huge").len() < 4096);
    // Still serving the old token while it lives.
    assert_eq!(handle.current().unwrap().expose(), served);

    h.idp.clear_fault(&scope);
    wait_until("running with a new token", || {
        status(&handle) == Some(WorkloadStatus::Running)
            && handle.current().is_ok_and(|t| t.expose() != served)
    })
    .await;
    assert!(!h.events.ever("huge", WorkloadStatus::Unauthenticated));
}
