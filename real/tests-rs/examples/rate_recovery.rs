//! Benchmark (not a test): 300 workloads recovering from an outage into a rate limit.
//!
//! The real provider (oidc-provider) behind nginx on 127.0.0.1: 300 client_credentials
//! workloads (over the provider's 24 clients) start while nginx answers 503 (an outage), so
//! every one is `auth_retrying`; then nginx switches to `limit_req40` (40 requests/s for all
//! clients together, burst 0, 429 + `Retry-After: 1` beyond it). Measured from the switch:
//! the time until every workload is `running` (the physical limit is 300/40 = 7.5 s) and the
//! share of token requests nginx refused. Every process is started here and stopped by PID.
//!
//! Then, in the same run and through the same nginx, two baselines with the runtime stopped:
//! - **physical**: a bare client loop that knows the limit: one `client_credentials` request
//!   started every 25 ms exactly (40 r/s, a tokio interval; each request its own task, so a
//!   slow answer delays no start), until 300 are answered 200: what this machine delivers
//!   through `limit_req40` to a perfect pacer (its refusals are arrivals the machine's
//!   scheduling brought closer than 25 ms); and the same at 36 r/s (10 % under the limit);
//! - **capacity**: nginx in `pass` mode (no limit), 8 requests in flight, 300 requests: how
//!   many token requests per second the provider behind nginx answers on this machine now.
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
use tokenvisor_real::oidc::{secret_of, uses_basic};

/// The 1-minute load average now (`/proc/loadavg`), as printed.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

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
    /// The physical baseline: seconds until 300 answered 200, requests, refused.
    bare: (f64, usize, usize),
    /// The same at 36 r/s.
    bare36: (f64, usize, usize),
    /// The provider's capacity without the limit: requests answered per second.
    capacity: f64,
    /// The 1-minute load average when nginx switched to the limit.
    load: String,
}

/// One `client_credentials` request as `client` through nginx; its HTTP status (0: none).
async fn token_request(http: &reqwest::Client, url: &str, client: &str) -> u16 {
    let mut form = vec![("grant_type", "client_credentials".to_owned())];
    let mut req = http.post(url);
    if uses_basic(client) {
        req = req.basic_auth(client, Some(secret_of(client)));
    } else {
        form.push(("client_id", client.to_owned()));
        form.push(("client_secret", secret_of(client)));
    }
    let sent = req
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(&form).unwrap_or_default())
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

fn bare_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_else(|e| panic!("reqwest: {e}"))
}

/// The physical baseline (module docs): a start every 25 ms until `n` answered 200.
async fn bare_paced(url: &str, n: usize, rate: f64) -> (f64, usize, usize) {
    let http = bare_client();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u16>();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = tokio::time::Instant::now();
    let (mut sent, mut ok, mut refused) = (0usize, 0usize, 0usize);
    while ok < n {
        tokio::select! {
            _ = tick.tick(), if sent < n + refused + 50 => {
                let (http, url, tx) = (http.clone(), url.to_owned(), tx.clone());
                let client = format!("tv-{:02}", sent % CLIENTS + 1);
                sent += 1;
                tokio::spawn(async move {
                    let _ = tx.send(token_request(&http, &url, &client).await);
                });
            }
            Some(status) = rx.recv() => match status {
                200 => ok += 1,
                429 => refused += 1,
                other => panic!("bare loop: HTTP {other}"),
            },
        }
        assert!(started.elapsed() < RUN_LIMIT, "bare loop: {ok} of {n}");
    }
    (started.elapsed().as_secs_f64(), ok + refused, refused)
}

/// The capacity baseline (module docs): `n` requests, 8 in flight; answered per second.
async fn bare_capacity(url: &str, n: usize) -> f64 {
    let http = bare_client();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, next) = (http.clone(), url.to_owned(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let client = format!("tv-{:02}", i % CLIENTS + 1);
                    let status = token_request(&http, &url, &client).await;
                    assert_eq!(status, 200, "capacity loop");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("capacity loop: {e}"));
    }
    n as f64 / started.elapsed().as_secs_f64()
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
    // `RATE_RECOVERY_OUTAGE_SECS=N`: switch after N seconds of outage instead (a runtime
    // whose attempts not sent by its own paced gate keep a new workload `starting` leaves
    // some workloads `starting` through the whole outage: none has a token either way).
    if let Some(secs) = std::env::var("RATE_RECOVERY_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        assert_eq!(
            count(&s, WorkloadStatus::Running).await,
            0,
            "running in an outage"
        );
    }
    let mut retrying = if std::env::var_os("RATE_RECOVERY_OUTAGE_SECS").is_some() {
        workloads
    } else {
        0
    };
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
    let load_at_switch = load();
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
    let _ = s.rt.shutdown(Duration::from_secs(10)).await;
    // The baselines, through the same nginx (still in `limit_req40`), the runtime stopped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = s.ep.nginx.token_url();
    let bare = bare_paced(&url, workloads, 40.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bare36 = bare_paced(&url, workloads, 36.0).await;
    s.ep.nginx.switch(Mode::Pass).await;
    let capacity = bare_capacity(&url, workloads).await;
    Run {
        recover_s: done_at.saturating_sub(switched) as f64 / 1000.0,
        requests: reqs.len(),
        refused,
        bare,
        bare36,
        capacity,
        load: load_at_switch,
    }
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
             ({:.2}× the physical limit {physical:.2} s); {} token requests, {} refused ({:.1} %); \
             bare loop at 40 r/s: {:.2} s ({:.2}×), {} requests, {} refused; \
             at 36 r/s: {:.2} s, {} refused; \
             provider unlimited: {:.1} requests/s; load {}",
            r.recover_s,
            r.recover_s / physical,
            r.requests,
            r.refused,
            share * 100.0,
            r.bare.0,
            r.bare.0 / physical,
            r.bare.1,
            r.bare.2,
            r.bare36.0,
            r.bare36.2,
            r.capacity,
            r.load
        );
        results.push(r);
    }
    let mut times: Vec<f64> = results.iter().map(|r| r.recover_s).collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mut bare: Vec<f64> = results.iter().map(|r| r.bare.0).collect();
    bare.sort_by(f64::total_cmp);
    let bare_median = bare[bare.len() / 2];
    let bare_refused: usize = results.iter().map(|r| r.bare.2).sum();
    let bare_requests: usize = results.iter().map(|r| r.bare.1).sum();
    let mut bare36: Vec<f64> = results.iter().map(|r| r.bare36.0).collect();
    bare36.sort_by(f64::total_cmp);
    let requests: usize = results.iter().map(|r| r.requests).sum();
    let refused: usize = results.iter().map(|r| r.refused).sum();
    println!(
        "{{\"workloads\":{workloads},\"runs\":{runs},\"recover_s\":{times:?},\"median_s\":{median:.2},\
         \"physical_s\":{physical:.2},\"requests\":{requests},\"refused\":{refused},\
         \"refused_share\":{:.3},\"bare_s\":{bare:?},\"bare_median_s\":{bare_median:.2},\
         \"bare_requests\":{bare_requests},\"bare_refused\":{bare_refused},\"bare36_s\":{bare36:?},\"capacity_rps\":{:?}}}",
        refused as f64 / requests.max(1) as f64,
        results
            .iter()
            .map(|r| (r.capacity * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
}
