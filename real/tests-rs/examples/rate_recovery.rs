//! Benchmark (not a test): 300 workloads recovering from an outage into a rate limit.
//!
//! The real provider (oidc-provider) behind nginx on 127.0.0.1: 300 client_credentials
//! workloads (over the provider's 24 clients) start while nginx answers 503 (an outage), so
//! every one is `auth_retrying`; then nginx switches to `limit_req40` (40 requests/s for all
//! clients together, burst 0, 429 + `Retry-After: 1` beyond it). Measured from the switch:
//! the time until every workload is `running` (the physical limit is 300/40 = 7.5 s) and the
//! share of token requests nginx refused. Every process is started here and stopped by PID.
//!
//! ```sh
//! bash real/install.sh
//! cargo run -p tokenvisor-real --features real --example rate_recovery -- [RUNS] [WORKLOADS]
//! ```
//!
//! Prints one line per run and a JSON summary line. Uses the suite's library (`tokenvisor_real`:
//! provider, nginx, harness), the same modules the tests use.

use std::time::Duration;

use tokenvisor_core::WorkloadStatus;

use tokenvisor_real::components::now_ms;
use tokenvisor_real::harness::Stack;
use tokenvisor_real::nginx::Mode;

/// Clients of the provider (`tv-01` … `tv-24`).
const CLIENTS: usize = 24;

/// How long one run may take before it is reported as not recovered.
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// What one run measured.
struct Run {
    /// From the switch to the last workload `running`, in seconds.
    recover_s: f64,
    /// Token requests nginx saw in `limit_req40` mode until then.
    requests: usize,
    /// Of which it refused (429).
    refused: usize,
}

/// How many workloads of `s` have `status` now.
async fn count(s: &Stack, status: WorkloadStatus) -> usize {
    s.rt.list()
        .await
        .unwrap_or_else(|e| panic!("list: {e}"))
        .iter()
        .filter(|v| v.record.as_ref().is_some_and(|r| r.status == status))
        .count()
}

async fn one_run(workloads: usize) -> Run {
    // Access tokens outlive the run: every refresh measured is a recovery.
    let mut s = Stack::start(3600, false).await;
    s.ep.nginx.switch(Mode::Unavailable503).await;
    for i in 0..workloads {
        let client = format!("tv-{:02}", i % CLIENTS + 1);
        s.add_client_credentials(&format!("w{i:03}"), &client, None)
            .await;
    }
    let mut retrying = 0;
    let mut seen = Vec::new();
    while retrying < workloads {
        retrying = count(&s, WorkloadStatus::AuthRetrying).await;
        seen.push(retrying);
        assert!(
            seen.len() < 3000,
            "the outage never made every workload auth_retrying"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let switched = s.ep.nginx.switch(Mode::LimitReq40).await;
    let mut running = 0;
    let mut done_at = 0;
    let started = tokio::time::Instant::now();
    while running < workloads {
        running = count(&s, WorkloadStatus::Running).await;
        done_at = now_ms();
        assert!(
            started.elapsed() < RUN_LIMIT,
            "only {running} of {workloads} running after {RUN_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reqs: Vec<_> =
        s.ep.nginx
            .token_requests()
            .into_iter()
            .filter(|a| a.mode == "limit_req40" && a.t_ms() <= done_at)
            .collect();
    let refused = reqs.iter().filter(|a| a.status == 429).count();
    if std::env::var_os("RATE_RECOVERY_TIMELINE").is_some() {
        // Token requests per half second since the switch: passed/refused.
        let mut buckets = std::collections::BTreeMap::<u64, (u32, u32)>::new();
        for a in &reqs {
            let b = buckets
                .entry(a.t_ms().saturating_sub(switched) / 500)
                .or_default();
            if a.status == 429 {
                b.1 += 1;
            } else {
                b.0 += 1;
            }
        }
        let line: Vec<String> = buckets
            .iter()
            .map(|(k, (ok, no))| format!("{:.1}s:{ok}/{no}", *k as f64 / 2.0))
            .collect();
        println!("timeline (passed/refused per 0.5 s): {}", line.join(" "));
        // Each refusal: ms since the previous request, and since the last one let through.
        let (mut prev, mut last_ok) = (None::<u64>, None::<u64>);
        let mut gaps = Vec::new();
        for a in &reqs {
            let t = a.t_ms();
            if a.status == 429 {
                gaps.push(format!(
                    "{:.2}s:+{}ms/+{}ms",
                    t.saturating_sub(switched) as f64 / 1000.0,
                    prev.map_or(0, |p| t - p),
                    last_ok.map_or(0, |p| t - p)
                ));
            } else {
                last_ok = Some(t);
            }
            prev = Some(t);
        }
        println!(
            "refusals (after previous / after last passed): {}",
            gaps.join(" ")
        );
    }
    let run = Run {
        recover_s: done_at.saturating_sub(switched) as f64 / 1000.0,
        requests: reqs.len(),
        refused,
    };
    let _ = s.rt.shutdown(Duration::from_secs(10)).await;
    run
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(3, |a| a.parse().unwrap_or(3));
    let workloads: usize = args.next().map_or(300, |a| a.parse().unwrap_or(300));
    let physical = workloads as f64 / 40.0;
    let mut results = Vec::new();
    for n in 1..=runs {
        let r = one_run(workloads).await;
        let share = r.refused as f64 / r.requests.max(1) as f64;
        println!(
            "run {n}: {workloads} workloads all running {:.2} s after the provider returned \
             ({:.2}× the physical limit {physical:.2} s); {} token requests, {} refused ({:.1} %)",
            r.recover_s,
            r.recover_s / physical,
            r.requests,
            r.refused,
            share * 100.0
        );
        results.push(r);
    }
    let mut times: Vec<f64> = results.iter().map(|r| r.recover_s).collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let requests: usize = results.iter().map(|r| r.requests).sum();
    let refused: usize = results.iter().map(|r| r.refused).sum();
    println!(
        "{{\"workloads\":{workloads},\"runs\":{runs},\"recover_s\":{times:?},\"median_s\":{median:.2},\
         \"physical_s\":{physical:.2},\"requests\":{requests},\"refused\":{refused},\
         \"refused_share\":{:.3}}}",
        refused as f64 / requests.max(1) as f64
    );
}
