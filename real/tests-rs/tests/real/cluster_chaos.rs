//! The cluster chaos acceptance of issue 12, small: three instances on a real 3-member etcd,
//! 60 rotating workloads, every step once (`kill -9`, a zombie, a restart, a fourth joining
//! and leaving, an etcd member killed and back). The method is the library's
//! [`tokenvisor_real::cluster_chaos`]; the benchmark (`examples/cluster_chaos.rs`, 300
//! workloads) is the large one.

use tokenvisor_real::cluster_chaos::{Options, run};

/// Every step once: at the end every workload not lost runs on exactly one instance (a
/// restarted instance's files do not claim what another member runs), no rotated-away
/// token was presented but for a refresh in flight at a kill or pause (each grant lost is
/// attributed to one, none beyond what was in flight; none to a request timeout), the
/// zombie lost its
/// lease and its fence rejections are counted from its `/metrics` (at least what it
/// logged). The failover times are printed, not asserted (timing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_survive_kill_zombie_join_leave_and_an_etcd_member_loss() {
    let opts = Options::small();
    let out = run(&opts).await;
    out.print();
    assert!(
        out.unexplained.is_empty(),
        "grants lost without a refresh in flight at a kill or pause: {:?}",
        out.unexplained
    );
    assert!(
        out.timeouts().is_empty(),
        "grants lost to a request timeout (the provider rotated, the retry presented the \
         rotated-away token; not a loss the issue accepts): {:?}",
        out.timeouts()
    );
    assert!(
        out.over_bound().is_empty(),
        "steps that lost more than was in flight: {:?}",
        out.over_bound()
    );
    assert!(
        out.not_running_once().is_empty(),
        "not running on exactly one instance at the end: {:?}",
        out.not_running_once()
    );
    let lost = out.lost();
    let at_steps: usize = out.steps.iter().map(|s| s.lost.len()).sum();
    assert!(
        at_steps <= out.in_flight(),
        "{at_steps} grants lost at kills and pauses, {} refreshes in flight there",
        out.in_flight()
    );
    assert_eq!(
        out.unauthenticated, lost,
        "unauthenticated at the end: exactly the grants lost"
    );
    assert!(
        out.zombie_leases_lost >= 1,
        "the zombie did not notice its lease was lost"
    );
    assert!(
        out.zombie_fence_metric >= out.zombie_fence_logged as u64,
        "the zombie's /metrics counts {} fence rejections, its log {}: a lost lease reset them",
        out.zombie_fence_metric,
        out.zombie_fence_logged
    );
    assert!(
        out.refreshes_ok >= opts.workloads * opts.rounds * 7,
        "the fleet rotated"
    );
    for s in &out.steps {
        if let Some(x) = s.failover_s {
            println!(
                "cluster chaos: {}: {} workloads running elsewhere {x:.1} s after it (lease_ttl {} s; target {} s)",
                s.name,
                s.moved,
                opts.lease_ttl,
                opts.lease_ttl + 5
            );
        }
    }
}
