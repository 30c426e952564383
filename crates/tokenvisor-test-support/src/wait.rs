//! The one bounded wait: poll a condition until it holds, failing the test (or returning
//! `false`) after a limit. It reads tokio's clock, so the same code waits in real time
//! (integration tests over HTTP, daemons) and in virtual time (tests on the paused clock,
//! where each poll's sleep lets the clock jump to the next timer).

use std::time::Duration;

use tokio::time::Instant;

/// How often [`wait_until`] and [`wait_until_within`] look.
pub const POLL: Duration = Duration::from_millis(20);

/// The default limit of a wait in real time: generous, so that only a real hang fails.
pub const LIMIT: Duration = Duration::from_secs(45);

/// Waits until `cond` holds, polling every [`POLL`]; fails the test naming `what` after
/// [`LIMIT`].
pub async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_within(what, LIMIT, cond).await;
}

/// Waits until `cond` holds, polling every [`POLL`]; fails the test naming `what` after
/// `limit` (of tokio's clock: real or paused).
pub async fn wait_until_within(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    assert!(
        poll_until(limit, POLL, cond).await,
        "timed out after {limit:?} waiting for: {what}"
    );
}

/// Polls `cond` every `step` until it holds (`true`) or `limit` has passed (`false`).
pub async fn poll_until(limit: Duration, step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(step).await;
    }
}

/// [`wait_until_within`] for a condition that must await (a request to a real server):
/// `cond` is polled every [`POLL`] until it yields `true`; fails the test naming `what`
/// after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
