//! `--scenario storm`: N healthy workloads all due at once.
//!
//! "All due at once" is made with one force-refresh burst: once every workload is healthy
//! (tokens living `provider.quiet_lifetime`, so nothing falls due by itself), every workload
//! is asked to refresh with one `Runtime::force_refresh_all` (one supervisor message, one
//! cast per token actor), as if every refresh timer fired in the same instant. This isolates
//! the refresh path (gate, transport, classification, the actor's result handling, the
//! status write) from actor spawning, which `--scenario scale` measures. The clock starts before the first request and
//! stops when every workload serves a token newer than the one it had: `tokenvisor_per_sec`
//! = N / that time. The provider's success counter must have grown by N. The report also
//! counts the state journal's transactions and the updates it received during the storm
//! (`storm_journal_commits`, `storm_journal_updates`: credential commits, status records and
//! served tokens), and a progress line marks the storm's end (a profiler attached for the
//! storm phase stops there).
//!
//! With `--baseline`, in the same run and against the same server: N more clients with their
//! own grants (registered up front, so the server's state is the same size for both), and a
//! bare reqwest loop over them with tokenvisor's client settings and its endpoint concurrency
//! (`policy.endpoint_concurrency`): `baseline_per_sec`, and `ratio` = tokenvisor / baseline.
//! Then a second baseline over N more clients: the same loop, each rotated refresh token
//! committed durably through the state journal's database (one writer, group commit) before
//! the request counts: `durable_baseline_per_sec` and `durable_ratio`, the ceiling of a
//! durable refresh. tokenvisor runs first, then the baselines.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokenvisor_core::{Timestamp, WorkloadStatus};
use tokio::time::Instant;

use super::bare;
use super::harness::{self, Harness};
use super::{Options, Report, ratio, round3, secs};
use crate::Context as _;

/// Runs the scenario.
pub(crate) async fn run(opts: &Options) -> crate::Result<Report> {
    let mut report = Report::default();
    let n = opts.n;
    let profile = &opts.profile;
    let concurrency = profile.policy.endpoint_concurrency;
    let h = Harness::start(profile, opts.status_dir.as_deref(), opts.quiet_lifetime()).await?;
    opts.progress(&format!(
        "tokenvisor soak --scenario storm: {n} workloads, concurrency {concurrency}{}; provider {}",
        if opts.baseline {
            ", with the bare baseline"
        } else {
            ""
        },
        h.idp.token_url()
    ));
    let clients = h.register(n, "storm", profile.provider.rotation)?;
    let baseline_clients = if opts.baseline {
        Some((
            h.register(n, "base", profile.provider.rotation)?,
            h.register(n, "dura", profile.provider.rotation)?,
        ))
    } else {
        None
    };
    let started = Instant::now();
    let handles = h.add_all(&clients).await?;
    let healthy = harness::wait_all(&handles, h.settle_timeout(), |_, h| {
        harness::status_of(h) == Some(WorkloadStatus::Running)
    })
    .await;
    let all_healthy = started.elapsed();
    if let Err(left) = healthy {
        report.fail(format!("{left} of {n} workloads never became healthy"));
    }
    opts.progress(&format!(
        "{:>7.1}s  all running; storm",
        started.elapsed().as_secs_f64()
    ));
    // Every first token is at least a few milliseconds old before the storm starts.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let old: Vec<Timestamp> = handles
        .iter()
        .map(|h| {
            h.current_unchecked()
                .map_or(Timestamp::EPOCH, |t| t.token().expires_at)
        })
        .collect();
    let before = h.idp.counters();
    let stats = h.runtime.persist_stats();
    let (commits_before, updates_before) = (
        stats.commits.load(Ordering::Relaxed),
        stats.updates.load(Ordering::Relaxed),
    );

    let storm_started = Instant::now();
    h.force_refresh_every(handles.len(), &mut report).await?;
    let fanout = storm_started.elapsed();
    let refreshed = harness::wait_all(&handles, h.settle_timeout(), |i, h| {
        h.current_unchecked()
            .is_ok_and(|t| t.token().expires_at > old[i])
    })
    .await;
    let storm = storm_started.elapsed();
    // Journal transactions and updates (credential commits, status patches) in the storm.
    let storm_commits = stats.commits.load(Ordering::Relaxed) - commits_before;
    let storm_updates = stats.updates.load(Ordering::Relaxed) - updates_before;
    // Marks the storm's end (a profiler attached for the storm phase stops here).
    opts.progress(&format!(
        "{:>7.1}s  storm over; flushing",
        started.elapsed().as_secs_f64()
    ));
    if let Err(left) = refreshed {
        report.fail(format!(
            "{left} of {n} workloads did not refresh in the storm"
        ));
    }
    let after = h.idp.counters();
    let refreshes = after.success - before.success;
    if refreshes < u64::from(n) {
        report.fail(format!(
            "the provider counted {refreshes} refreshes for {n} workloads"
        ));
    }
    let failed_requests = (after.token_requests - before.token_requests).saturating_sub(refreshes);
    let tv_per_sec = f64::from(n) / storm.as_secs_f64();
    let flushed = h.runtime.flush(Duration::from_secs(60)).await?;
    if !flushed.failed.is_empty() {
        report.fail(format!(
            "{} status records not durable after the storm",
            flushed.failed.len()
        ));
    }
    opts.progress(&format!(
        "{:>7.1}s  tokenvisor: {n} refreshes in {:.3}s ({tv_per_sec:.0}/s)",
        started.elapsed().as_secs_f64(),
        storm.as_secs_f64()
    ));

    let baseline = match baseline_clients {
        Some((clients, durable_clients)) => {
            let result = bare::refresh_loop(
                &h.http,
                &h.idp.token_url(),
                clients,
                concurrency,
                profile.policy.request_timeout(),
                None,
            )
            .await?;
            if result.failed > 0 {
                report.fail(format!(
                    "the bare loop got {} failed requests of {n}",
                    result.failed
                ));
            }
            // The second baseline: the same loop, each rotated token committed durably
            // through the state journal's database before it counts.
            let journal_dir = tempfile::tempdir().context("cannot create the baseline journal")?;
            let sink = bare::DurableSink::open(journal_dir.path())?;
            let durable = bare::refresh_loop(
                &h.http,
                &h.idp.token_url(),
                durable_clients,
                concurrency,
                profile.policy.request_timeout(),
                profile.provider.rotation.then_some(sink),
            )
            .await?;
            if durable.failed > 0 {
                report.fail(format!(
                    "the durable bare loop got {} failed requests of {n}",
                    durable.failed
                ));
            }
            Some((result, durable))
        }
        None => None,
    };
    h.runtime.shutdown(Duration::from_secs(60)).await?;
    h.idp.shutdown().await;

    report.line(format!(
        "workloads {n}, endpoint concurrency {concurrency}, all healthy after {:.2}s",
        all_healthy.as_secs_f64()
    ));
    report.line(format!(
        "tokenvisor: {n} refreshes in {:.3}s = {tv_per_sec:.0}/s (force-refresh fan-out took \
         {:.3}s; {failed_requests} failed requests; {storm_commits} journal transactions for \
         {storm_updates} updates)",
        storm.as_secs_f64(),
        fanout.as_secs_f64()
    ));
    report.set("workloads", n);
    report.set("concurrency", concurrency);
    report.set("all_healthy_secs", secs(all_healthy));
    report.set("storm_secs", secs(storm));
    report.set("fanout_secs", secs(fanout));
    report.set("tokenvisor_per_sec", round3(tv_per_sec));
    report.set("refreshes", refreshes);
    report.set("storm_journal_commits", storm_commits);
    report.set("storm_journal_updates", storm_updates);
    match baseline {
        Some((b, d)) => {
            let per_sec = b.ok as f64 / b.elapsed.as_secs_f64();
            let durable_per_sec = d.ok as f64 / d.elapsed.as_secs_f64();
            report.line(format!(
                "bare reqwest loop: {} requests in {:.3}s = {per_sec:.0}/s ({} failed)",
                b.ok + b.failed,
                b.elapsed.as_secs_f64(),
                b.failed
            ));
            report.line(format!(
                "bare loop + durable journal write of each rotated token: {} requests in \
                 {:.3}s = {durable_per_sec:.0}/s ({} failed)",
                d.ok + d.failed,
                d.elapsed.as_secs_f64(),
                d.failed
            ));
            report.line(format!(
                "ratio tokenvisor / bare: {:.3} (target ≥ 0.8); tokenvisor / durable bare: {:.3}",
                tv_per_sec / per_sec,
                tv_per_sec / durable_per_sec
            ));
            report.set("baseline_per_sec", round3(per_sec));
            report.set("baseline_secs", secs(b.elapsed));
            report.set("baseline_failed", b.failed);
            report.set("ratio", ratio(tv_per_sec, per_sec));
            report.set("durable_baseline_per_sec", round3(durable_per_sec));
            report.set("durable_ratio", ratio(tv_per_sec, durable_per_sec));
        }
        None => {
            report.set("baseline_per_sec", serde_json::Value::Null);
            report.set("ratio", serde_json::Value::Null);
        }
    }
    Ok(report)
}
