//! `--scenario timers`: with N workloads whose tokens live `provider.lifetime` (short), every
//! workload refreshes every ~70–80 % of a lifetime, so refresh timers fire continuously.
//! Once every workload is healthy, the lateness histogram is reset and the run lasts
//! `--duration`: lateness = the time between the instant a token actor's timer was armed for
//! and the instant the actor handled it (`tokenvisor_timer_lateness_seconds`, counted exactly
//! to the millisecond). Target: p99 < 50 ms (`ratio_to_target` = p99 / 50 ms).

use std::time::Duration;

use tokenvisor_core::WorkloadStatus;
use tokio::time::Instant;

use super::harness::{self, Harness, Sampler};
use super::recorder::Installed;
use super::{Options, Report, ratio, round3, secs};

/// The target p99 lateness, in milliseconds.
const TARGET_P99_MS: f64 = 50.0;

/// Runs the scenario.
pub(crate) async fn run(opts: &Options, metrics: Option<&Installed>) -> crate::Result<Report> {
    let mut report = Report::default();
    let Some(metrics) = metrics else {
        return Err(crate::Error::failed(
            "the metrics recorder could not be installed: no lateness to measure",
        ));
    };
    let n = opts.n;
    let lifetime = opts.short_lifetime();
    let h = Harness::start(&opts.profile, opts.status_dir.as_deref(), lifetime).await?;
    opts.progress(&format!(
        "tokenvisor soak --scenario timers: {n} workloads, tokens living {}, for {}",
        humantime::format_duration(lifetime),
        humantime::format_duration(opts.duration)
    ));
    let clients = h.register(n, "timers", opts.profile.provider.rotation)?;
    let started = Instant::now();
    let handles = h.add_all(&clients).await?;
    if let Err(left) = harness::wait_all(&handles, h.settle_timeout(), |_, h| {
        harness::status_of(h) == Some(WorkloadStatus::Running)
    })
    .await
    {
        return Err(crate::Error::failed(format!(
            "{left} of {n} workloads never became healthy"
        )));
    }
    let all_healthy = started.elapsed();
    opts.progress(&format!(
        "{:>7.1}s  all running; measuring",
        started.elapsed().as_secs_f64()
    ));
    metrics.lateness.reset();
    let before = h.idp.counters();
    let sampler = Sampler::start(&h.runtime);
    let window = Instant::now();
    tokio::time::sleep(opts.duration).await;
    let window_secs = window.elapsed();
    let lateness = metrics.lateness.summary();
    let after = h.idp.counters();
    let (_, max_pending) = sampler.stop();
    let counts = harness::status_counts(&handles);
    let not_running = handles
        .iter()
        .filter(|h| !matches!(harness::status_of(h), Some(WorkloadStatus::Running)))
        .count();
    if not_running > 0 {
        report.fail(format!(
            "{not_running} workloads not running at the end (no faults were injected): {}",
            harness::fmt_counts(&counts)
        ));
    }
    h.runtime.shutdown(Duration::from_secs(60)).await?;
    h.idp.shutdown().await;

    let refreshes = after.success - before.success;
    if lateness.count == 0 {
        report.fail("no timer fired during the window (is --duration shorter than a refresh?)");
    }
    report.line(format!(
        "workloads {n}, tokens living {}, all running after {:.2}s, window {:.1}s",
        humantime::format_duration(lifetime),
        all_healthy.as_secs_f64(),
        window_secs.as_secs_f64()
    ));
    report.line(format!(
        "timers fired {}, refreshes {refreshes} ({:.0}/s), max pending status records {max_pending}",
        lateness.count,
        refreshes as f64 / window_secs.as_secs_f64()
    ));
    report.line(format!(
        "lateness: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms (target p99 < {TARGET_P99_MS} ms, \
         ratio {:.3})",
        lateness.p50_ms,
        lateness.p99_ms,
        lateness.p999_ms,
        lateness.max_ms,
        lateness.p99_ms / TARGET_P99_MS
    ));
    report.set("workloads", n);
    report.set("duration_secs", secs(window_secs));
    report.set("lifetime_secs", secs(lifetime));
    report.set("all_healthy_secs", secs(all_healthy));
    report.set("timer_fires", lateness.count);
    report.set("refreshes", refreshes);
    report.set(
        "refreshes_per_sec",
        round3(refreshes as f64 / window_secs.as_secs_f64()),
    );
    report.set("timer_lateness_p50_ms", lateness.p50_ms);
    report.set("timer_lateness_p99_ms", lateness.p99_ms);
    report.set("timer_lateness_p999_ms", lateness.p999_ms);
    report.set("timer_lateness_max_ms", lateness.max_ms);
    report.set("target_p99_ms", TARGET_P99_MS);
    report.set("ratio_to_target", ratio(lateness.p99_ms, TARGET_P99_MS));
    report.set("max_pending", max_pending);
    Ok(report)
}
