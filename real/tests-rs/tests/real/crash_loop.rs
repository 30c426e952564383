//! `kill -9` of `tokenvisor run` in a loop, start-up included: the small run of the crash
//! loop whose method is the library's [`tokenvisor_real::crash_loop`] (the benchmark,
//! `examples/crash_loop.rs`, is the large one).

use std::collections::BTreeSet;

use tokenvisor_real::crash_loop::{Options, run, schedule};

/// 5 kills (two in the first 400 ms), 20 rotating workloads: no grant lost but those with a
/// refresh in flight at a kill, no rotated-away token presented for any other, every kill
/// settled, and at the end every workload `running` or (lost) `unauthenticated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_loop_loses_no_grant_without_a_refresh_in_flight() {
    let opts = Options::small();
    let during_start = schedule(&opts)
        .iter()
        .filter(|d| **d <= opts.start_ms)
        .count();
    assert!(
        during_start >= 2,
        "the seed gives {during_start} kills during start-up"
    );
    let out = run(&opts).await;
    out.print();
    assert!(
        out.unexplained.is_empty(),
        "losses without a refresh in flight at a kill: {:?}",
        out.unexplained
    );
    assert!(
        out.over_bound().is_empty(),
        "kills that lost more than was in flight: {:?}",
        out.over_bound()
    );
    assert!(
        out.unsettled_at_end.is_empty(),
        "neither running nor unauthenticated after the final start: {:?}",
        out.unsettled_at_end
    );
    assert!(
        out.kills.iter().all(|k| k.settled),
        "the provider did not settle after a kill"
    );
    let lost = out.lost();
    let attributed: BTreeSet<String> = out.kills.iter().flat_map(|k| k.lost.clone()).collect();
    assert_eq!(lost, attributed, "every grant lost is attributed to a kill");
    let revoked: BTreeSet<String> = out.revoked.keys().cloned().collect();
    assert_eq!(
        revoked, lost,
        "reuse detection fired for exactly the grants lost"
    );
    assert!(
        out.revoked.values().all(|n| *n == 1),
        "a grant revoked twice: {:?}",
        out.revoked
    );
    assert_eq!(
        out.invalid_grant_not_lost, 0,
        "a rotated-away token presented for a grant that was not lost"
    );
    assert_eq!(out.running() + lost.len(), out.opts.workloads);
    assert!(out.refreshes_ok > out.opts.workloads, "the fleet rotated");
}
