//! `--scenario scale`: spawn N workloads, time to all-healthy, RSS per workload.
//!
//! The provider's clients are registered and their grants issued before the empty-process
//! RSS is sampled, and the provider runs without refresh-token rotation here, so that its
//! own memory does not grow with the workloads' refreshes: the RSS delta is tokenvisor's
//! (runtime, actors, specs, handles, status records, connection pool) plus the provider's
//! per-request buffers. Tokens live `provider.quiet_lifetime`.
//! `rss_bytes_per_workload` = (RSS once every workload is running − RSS before adding any)
//! / N; the target is 12 KiB (`rss_ratio_to_target` = measured / 12288).

use std::time::Duration;

use tokenvisor_core::WorkloadStatus;
use tokio::time::Instant;

use super::harness::{self, Harness};
use super::{Options, Report, ratio, round3, secs};

/// The target of RSS per workload, in bytes.
const TARGET_BYTES: f64 = 12_288.0;

/// Runs the scenario.
pub(crate) async fn run(opts: &Options) -> crate::Result<Report> {
    let mut report = Report::default();
    let n = opts.n;
    let h = Harness::start(
        &opts.profile,
        opts.status_dir.as_deref(),
        opts.quiet_lifetime(),
    )
    .await?;
    opts.progress(&format!(
        "tokenvisor soak --scenario scale: {n} workloads; provider {}",
        h.idp.token_url()
    ));
    let clients = h.register(n, "scale", false)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_empty = harness::rss_bytes().unwrap_or(0);

    let started = Instant::now();
    let handles = h.add_all(&clients).await?;
    let spawn = started.elapsed();
    let rss_spawned = harness::rss_bytes().unwrap_or(0);
    opts.progress(&format!(
        "{:>7.1}s  {n} workloads added; RSS {}",
        started.elapsed().as_secs_f64(),
        harness::mib(rss_spawned as f64)
    ));
    let healthy = harness::wait_all(&handles, h.settle_timeout(), |_, h| {
        harness::status_of(h) == Some(WorkloadStatus::Running)
    })
    .await;
    let all_healthy = started.elapsed();
    let rss_healthy = harness::rss_bytes().unwrap_or(0);
    if let Err(left) = healthy {
        report.fail(format!(
            "{left} of {n} workloads were not running {} after the start",
            humantime::format_duration(h.settle_timeout())
        ));
    }
    let flush_started = Instant::now();
    let flushed = h.runtime.flush(Duration::from_secs(120)).await?;
    let flush = flush_started.elapsed();
    if !flushed.failed.is_empty() {
        report.fail(format!(
            "{} status records not durable",
            flushed.failed.len()
        ));
    }
    let rss_flushed = harness::rss_bytes().unwrap_or(0);
    let per_workload = rss_healthy.saturating_sub(rss_empty) as f64 / f64::from(n);
    let per_workload_spawned = rss_spawned.saturating_sub(rss_empty) as f64 / f64::from(n);
    let refreshes = h.idp.counters().success;
    h.runtime.shutdown(Duration::from_secs(120)).await?;
    h.idp.shutdown().await;

    report.line(format!(
        "workloads {n}: added in {:.2}s, all running after {:.2}s, then durable after {:.2}s more",
        spawn.as_secs_f64(),
        all_healthy.as_secs_f64(),
        flush.as_secs_f64()
    ));
    report.line(format!(
        "RSS empty {} → spawned {} → all running {} → flushed {}",
        harness::mib(rss_empty as f64),
        harness::mib(rss_spawned as f64),
        harness::mib(rss_healthy as f64),
        harness::mib(rss_flushed as f64)
    ));
    report.line(format!(
        "RSS per workload: {per_workload:.0} B once running ({per_workload_spawned:.0} B just \
         spawned); target ≤ {TARGET_BYTES} B, ratio {:.3}",
        per_workload / TARGET_BYTES
    ));
    report.set("workloads", n);
    report.set("spawn_secs", secs(spawn));
    report.set("all_healthy_secs", secs(all_healthy));
    report.set("flush_secs", secs(flush));
    report.set("refreshes", refreshes);
    report.set("rss_empty_bytes", rss_empty);
    report.set("rss_spawned_bytes", rss_spawned);
    report.set("rss_healthy_bytes", rss_healthy);
    report.set("rss_flushed_bytes", rss_flushed);
    report.set("rss_bytes_per_workload", round3(per_workload));
    report.set(
        "rss_bytes_per_workload_spawned",
        round3(per_workload_spawned),
    );
    report.set("rss_target_bytes_per_workload", TARGET_BYTES);
    report.set("rss_ratio_to_target", ratio(per_workload, TARGET_BYTES));
    Ok(report)
}
