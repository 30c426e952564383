//! `--scenario soak` (the default): N workloads with short token lifetimes under seeded
//! chaos for `--duration`, then the invariants.
//!
//! 1. Start the provider (tokens living `provider.lifetime`), register N clients, sample RSS
//!    (the empty process), add N workloads, wait until every one is `running` (chaos off):
//!    `spawn_secs`, `all_healthy_secs`, `rss_bytes_per_workload`.
//! 2. Chaos on for `--duration`; RSS and pending status records sampled every second (the
//!    largest pending count every 5 ms); timer lateness counted over this window only.
//! 3. Chaos off, then the invariants:
//!    (a) status files: flush, then every file must equal its workload's latest record
//!    (`TokenHandle::status`, every field). Workloads keep refreshing meanwhile, so a
//!    workload whose record changed while it was being checked is checked again (up to
//!    [`ROUNDS`] rounds, each after a flush); a file that differs from a record that did
//!    not change across a flush, twice, is a failure. After the runtime's shutdown (every
//!    workload persists `stopped`), every file must equal the final record exactly, and
//!    the directory must hold nothing else (no temp file, no `.corrupted`).
//!    (b) no workload is `unauthenticated` unless chaos revoked its client's grant, and none
//!    is `error`; no provider-side refresh-token reuse was detected.
//!    (d) the fleet is back to `running`: within `checks.recover_timeout` of the chaos'
//!    end, every workload is `running`, except those whose grant chaos revoked (which are
//!    `unauthenticated`). Without it, a run whose fleet ended the window mostly
//!    `auth_retrying` (every sporadic 429 held the whole endpoint) passed.
//!    (c) RSS: the average of the last third of the samples against the first third's,
//!    skipping the window's first token lifetime (no refresh is due in it yet); growth above
//!    `checks.rss_growth_max` fails runs of at least `checks.rss_judge_after`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::Context as _;
use tokenvisor::TokenHandle;
use tokenvisor_core::{StatusRecord, WorkloadName, WorkloadStatus};
use tokio::time::Instant;

use super::harness::{self, Harness, Sampler};
use super::recorder::{self, Installed};
use super::{Options, Report, ratio, round3, secs};

/// Rounds of the live status-file check.
const ROUNDS: usize = 8;

/// Runs the scenario.
pub(crate) async fn run(opts: &Options, metrics: Option<&Installed>) -> crate::Result<Report> {
    let mut report = Report::default();
    let n = opts.n;
    let profile = &opts.profile;
    let lifetime = opts.short_lifetime();
    let h = Harness::start(profile, opts.status_dir.as_deref(), lifetime).await?;
    opts.progress(&format!(
        "tokenvisor soak: {n} workloads, tokens living {}, chaos {} for {}; provider {}",
        humantime::format_duration(lifetime),
        profile.chaos.describe(),
        humantime::format_duration(opts.duration),
        h.idp.token_url()
    ));
    let clients = h.register(n, "soak", profile.provider.rotation)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_empty = harness::rss_bytes().unwrap_or(0);

    // 1. Spawn and reach all-healthy, without chaos.
    let started = Instant::now();
    let handles = h.add_all(&clients).await?;
    let spawn = started.elapsed();
    let healthy = harness::wait_all(&handles, h.settle_timeout(), |_, h| {
        harness::status_of(h) == Some(WorkloadStatus::Running)
    })
    .await;
    let rss_healthy = harness::rss_bytes().unwrap_or(0);
    let all_healthy = match healthy {
        Ok(_) => started.elapsed(),
        Err(left) => {
            report.fail(format!(
                "{left} of {n} workloads were not running {} after the start",
                humantime::format_duration(h.settle_timeout())
            ));
            started.elapsed()
        }
    };
    let per_workload = rss_healthy.saturating_sub(rss_empty) as f64 / f64::from(n);
    opts.progress(&format!(
        "{:>7.1}s  {n} workloads added in {:.2}s, all running after {:.2}s; RSS {} → {} ({:.0} B/workload)",
        started.elapsed().as_secs_f64(),
        spawn.as_secs_f64(),
        all_healthy.as_secs_f64(),
        harness::mib(rss_empty as f64),
        harness::mib(rss_healthy as f64),
        per_workload
    ));

    // 2. The soak window, with chaos.
    let before = h.idp.counters();
    let stats = h.runtime.persist_stats();
    let writes_before = stats.writes_ok.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(m) = metrics {
        m.lateness.reset();
    }
    let sampler = Sampler::start(&h.runtime);
    h.idp
        .set_chaos(Some(profile.chaos.chaos(profile.seed)))
        .context("chaos settings")?;
    let window = Instant::now();
    let end = window + opts.duration;
    let mut next_report = window + Duration::from_secs(10);
    let mut files_seen = writes_before;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        tokio::time::sleep_until(next_report.min(end)).await;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            let c = h.idp.counters();
            let files = stats.writes_ok.load(std::sync::atomic::Ordering::Relaxed);
            opts.progress(&format!(
                "{:>7.1}s  refreshes {} · faults {} · revoked {} · RSS {} · pending {} · \
                 status files {}/s · {}",
                started.elapsed().as_secs_f64(),
                c.success - before.success,
                c.faults_total() - before.faults_total(),
                h.idp.chaos_revoked_clients().len(),
                harness::mib(harness::rss_bytes().unwrap_or(0) as f64),
                stats.pending.load(std::sync::atomic::Ordering::Relaxed),
                files.saturating_sub(files_seen) / 10,
                harness::fmt_counts(&harness::status_counts(&handles))
            ));
            files_seen = files;
        }
    }
    h.idp.set_chaos(None).context("chaos off")?;
    let window_secs = window.elapsed();
    let (samples, max_pending) = sampler.stop();
    let lateness = metrics.map(|m| m.lateness.summary());
    let after = h.idp.counters();
    let rendered = metrics.map(|m| m.prometheus.render()).unwrap_or_default();
    let at_window_end = harness::status_counts(&handles);

    // 3d. The fleet is back to running (revoked grants excepted) within the grace.
    let grace = profile.checks.recover_timeout;
    let revoked_at_end: HashSet<String> = h.idp.chaos_revoked_clients().into_iter().collect();
    let recovered = harness::wait_all(&handles, grace, |_, handle| {
        match harness::status_of(handle) {
            Some(WorkloadStatus::Running) => true,
            Some(WorkloadStatus::Unauthenticated) => {
                revoked_at_end.contains(handle.name().as_str())
            }
            Some(
                WorkloadStatus::AuthRetrying
                | WorkloadStatus::Starting
                | WorkloadStatus::Stopped
                | WorkloadStatus::Error,
            )
            | None => false,
        }
    })
    .await;
    let recovered_secs = match recovered {
        Ok(took) => Some(took),
        Err(left) => {
            report.fail(format!(
                "{left} of {n} workloads not back to running {} after the chaos ended \
                 (at the window's end: {}; now: {})",
                humantime::format_duration(grace),
                harness::fmt_counts(&at_window_end),
                harness::fmt_counts(&harness::status_counts(&handles))
            ));
            None
        }
    };
    opts.progress(&format!(
        "{:>7.1}s  chaos off; at the window's end {}; back to running: {}",
        started.elapsed().as_secs_f64(),
        harness::fmt_counts(&at_window_end),
        recovered_secs.map_or_else(
            || format!("no, not within {}", humantime::format_duration(grace)),
            |d| format!("after {:.1}s", d.as_secs_f64())
        )
    ));

    // 3b. Unauthenticated only when revoked; no error; no reuse.
    let revoked: BTreeSet<String> = h.idp.chaos_revoked_clients().into_iter().collect();
    let finals = harness::status_counts(&handles);
    let mut unauth_revoked = 0u64;
    let mut unexpected = Vec::new();
    let mut errored = Vec::new();
    for handle in &handles {
        match harness::status_of(handle) {
            Some(WorkloadStatus::Unauthenticated) => {
                if revoked.contains(handle.name().as_str()) {
                    unauth_revoked += 1;
                } else {
                    unexpected.push(handle.name().to_string());
                }
            }
            Some(WorkloadStatus::Error) => errored.push(handle.name().to_string()),
            Some(
                WorkloadStatus::Running
                | WorkloadStatus::AuthRetrying
                | WorkloadStatus::Starting
                | WorkloadStatus::Stopped,
            )
            | None => {}
        }
    }
    if !unexpected.is_empty() {
        report.fail(format!(
            "{} workloads unauthenticated without a revoked grant: {}",
            unexpected.len(),
            preview(&unexpected)
        ));
    }
    if !errored.is_empty() {
        report.fail(format!(
            "{} workloads in status error: {}",
            errored.len(),
            preview(&errored)
        ));
    }
    if after.reuse_detected > 0 {
        report.fail(format!(
            "the provider detected {} refresh-token reuses (a rotated token was lost)",
            after.reuse_detected
        ));
    }

    // 3a. Status files, live.
    opts.progress(&format!(
        "{:>7.1}s  chaos off; checking every status file against its workload's record",
        started.elapsed().as_secs_f64()
    ));
    let check_started = Instant::now();
    let live = check_files_live(&h, &handles).await?;
    let live_check = check_started.elapsed();
    if !live.mismatched.is_empty() {
        report.fail(format!(
            "{} status files differ from their workload's record after a flush: {}; the first: {}",
            live.mismatched.len(),
            preview(&live.mismatched),
            live.first_difference.as_deref().unwrap_or("?")
        ));
    }
    if let Some((workloads, credentials)) = live.not_flushed {
        report.fail(format!(
            "a flush of the live check did not complete within 30s: {workloads} workloads' \
             records or status files not written ({credentials} rotated refresh tokens not \
             committed)"
        ));
    }
    if !live.unreadable.is_empty() {
        report.fail(format!(
            "{} status files missing or unreadable: {}",
            live.unreadable.len(),
            preview(&live.unreadable)
        ));
    }

    // 3a. Status files after shutdown: exactly the final records, nothing else.
    opts.progress(&format!(
        "{:>7.1}s  live check done in {:.1}s ({} rounds); shutting down",
        started.elapsed().as_secs_f64(),
        live_check.as_secs_f64(),
        live.rounds
    ));
    let shutdown_started = Instant::now();
    let flushed = h
        .runtime
        .shutdown(Duration::from_secs(60))
        .await
        .context("shutdown")?;
    if !flushed.failed.is_empty() {
        report.fail(format!(
            "{} status records not durable at shutdown",
            flushed.failed.len()
        ));
    }
    let shutdown = shutdown_started.elapsed();
    opts.progress(&format!(
        "{:>7.1}s  shut down in {:.1}s; checking the final records",
        started.elapsed().as_secs_f64(),
        shutdown.as_secs_f64()
    ));
    let (final_check, first) = check_files_exact(&h, &handles).await?;
    if !final_check.is_empty() {
        report.fail(format!(
            "{} status files differ from the final record after shutdown: {}; the first: {}",
            final_check.len(),
            preview(&final_check),
            first.as_deref().unwrap_or("?")
        ));
    }
    let names: HashSet<String> = handles.iter().map(|h| h.name().to_string()).collect();
    let stray = harness::stray_entries(&h.dir, &names)?;
    if !stray.is_empty() {
        report.fail(format!(
            "unexpected entries in the status directory: {}",
            preview(&stray)
        ));
    }

    // 3c. RSS growth.
    // The first token lifetime of the window is skipped: no refresh is due in it yet, so it
    // would show the process before its steady state.
    let steady: Vec<harness::Sample> = samples
        .iter()
        .filter(|s| s.at_secs >= lifetime.as_secs_f64())
        .copied()
        .collect();
    let growth = harness::rss_growth(&steady);
    let judged = opts.duration >= profile.checks.rss_judge_after;
    if let Some((_, _, g)) = growth
        && judged
        && g > profile.checks.rss_growth_max
    {
        report.fail(format!(
            "RSS grew by {:.1}% over the run (first third vs last third; limit {:.1}%)",
            g * 100.0,
            profile.checks.rss_growth_max * 100.0
        ));
    }
    h.idp.shutdown().await;

    let refreshes = after.success;
    let stats = &h.runtime.persist_stats();
    let status_writes = stats.writes_ok.load(std::sync::atomic::Ordering::Relaxed);
    let write_failures = stats
        .write_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    let coalesced = stats.coalesced.load(std::sync::atomic::Ordering::Relaxed);
    let updates = stats.updates.load(std::sync::atomic::Ordering::Relaxed);

    report.line(format!(
        "workloads {n}, soak window {:.1}s, tokens living {}, chaos: {}",
        window_secs.as_secs_f64(),
        humantime::format_duration(lifetime),
        profile.chaos.describe()
    ));
    report.line(format!(
        "spawn {:.2}s, all running after {:.2}s; RSS empty {} → healthy {} = {:.0} B per workload",
        spawn.as_secs_f64(),
        all_healthy.as_secs_f64(),
        harness::mib(rss_empty as f64),
        harness::mib(rss_healthy as f64),
        per_workload
    ));
    report.line(format!(
        "provider: {} token requests, {} refreshes ok ({} during the window), faults {:?}, \
         revocations {}, reuse detected {}",
        after.token_requests,
        refreshes,
        after.success - before.success,
        after.faults,
        after.revocations,
        after.reuse_detected
    ));
    let attempts = recorder::refresh_attempts(&rendered);
    if !attempts.is_empty() {
        report.line(format!(
            "tokenvisor attempts: {}",
            attempts
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(" · ")
        ));
    }
    report.line(format!(
        "at the window's end: {}; back to running {} after the chaos ended (grace {})",
        harness::fmt_counts(&at_window_end),
        recovered_secs.map_or_else(
            || "never".to_owned(),
            |d| format!("{:.1}s", d.as_secs_f64())
        ),
        humantime::format_duration(grace)
    ));
    report.line(format!("final statuses: {}", harness::fmt_counts(&finals)));
    report.line(format!(
        "unauthenticated: {} (all with a grant revoked by chaos: {}); chaos revoked {} grants",
        unauth_revoked + unexpected.len() as u64,
        unexpected.is_empty(),
        revoked.len()
    ));
    report.line(format!(
        "status files: {updates} updates, {status_writes} writes ({} during the window), \
         {coalesced} coalesced, {write_failures} failed writes, max pending {max_pending}; \
         live check: {} rounds, {} rechecked, {:.1}s; shutdown {:.1}s",
        status_writes.saturating_sub(writes_before),
        live.rounds,
        live.rechecked,
        live_check.as_secs_f64(),
        shutdown.as_secs_f64()
    ));
    if let Some(l) = lateness {
        report.line(format!(
            "timer lateness over the window: {} timers, p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
            l.count, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        ));
    }
    match growth {
        Some((first, last, g)) => report.line(format!(
            "RSS (after the first lifetime) first third {} → last third {}: {:+.1}%{}",
            harness::mib(first),
            harness::mib(last),
            g * 100.0,
            if judged {
                String::new()
            } else {
                format!(
                    " (not judged: runs shorter than {})",
                    humantime::format_duration(profile.checks.rss_judge_after)
                )
            }
        )),
        None => report.line("RSS growth: too few samples"),
    }

    report.set("workloads", n);
    report.set("duration_secs", secs(window_secs));
    report.set("lifetime_secs", secs(lifetime));
    report.set("refreshes", refreshes);
    report.set("refreshes_during_window", after.success - before.success);
    report.set("token_requests", after.token_requests);
    report.set("faults", after.faults_total());
    report.set("spawn_secs", secs(spawn));
    report.set("all_healthy_secs", secs(all_healthy));
    report.set("rss_empty_bytes", rss_empty);
    report.set("rss_healthy_bytes", rss_healthy);
    report.set("rss_bytes_per_workload", round3(per_workload));
    report.set("rss_target_bytes_per_workload", 12_288);
    report.set("rss_ratio_to_target", ratio(per_workload, 12_288.0));
    report.set(
        "rss_growth",
        growth.map_or(serde_json::Value::Null, |(_, _, g)| round3(g).into()),
    );
    report.set("rss_growth_judged", judged);
    report.set("status_updates", updates);
    report.set("status_writes", status_writes);
    report.set(
        "status_writes_during_window",
        status_writes.saturating_sub(writes_before),
    );
    report.set(
        "live_check_not_flushed",
        live.not_flushed
            .map_or(serde_json::Value::Null, |(w, _)| w.into()),
    );
    report.set("status_coalesced", coalesced);
    report.set("status_write_failures", write_failures);
    report.set("max_pending", max_pending);
    report.set("live_check_secs", secs(live_check));
    report.set("shutdown_secs", secs(shutdown));
    report.set("samples", harness::timeline(&samples, 60));
    report.set(
        "timer_lateness_p99_ms",
        lateness.map_or(serde_json::Value::Null, |l| l.p99_ms.into()),
    );
    report.set(
        "timer_lateness_max_ms",
        lateness.map_or(serde_json::Value::Null, |l| l.max_ms.into()),
    );
    report.set(
        "at_window_end",
        at_window_end
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>(),
    );
    report.set(
        "recovered_secs",
        recovered_secs.map_or(serde_json::Value::Null, |d| secs(d).into()),
    );
    report.set("chaos_revoked", revoked.len());
    report.set("unauthenticated_revoked", unauth_revoked);
    report.set("unauthenticated_unexpected", unexpected.len());
    report.set("reuse_detected", after.reuse_detected);
    report.set("invariants_ok", report.ok());
    Ok(report)
}

/// The first few names of a list, for a failure line.
fn preview(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s.push_str(&format!(", … ({} more)", names.len() - 5));
    }
    s
}

/// What the live file check found.
struct LiveCheck {
    rounds: usize,
    /// Workloads checked more than once (their record moved while being checked).
    rechecked: usize,
    /// Files that differ from a record that did not change across a flush, twice.
    mismatched: Vec<String>,
    /// The first of them: its name and how its file and record differ ([`differences`]).
    first_difference: Option<String>,
    /// Files missing, unreadable or corrupt.
    unreadable: Vec<String>,
    /// A flush that did not complete within its 30 s deadline: (workloads whose record or
    /// file was not written, of them rotated refresh tokens not committed). The check
    /// stopped there.
    not_flushed: Option<(usize, usize)>,
}

/// Invariant (a) while the workloads keep running (see the module docs).
/// Whether `file` differs from `rec` only as a coalesced routine refresh may leave it: the
/// same status, context and token state, attempt and last error, written at most
/// `interval` before the record's last change.
fn routine_lag_only(file: &StatusRecord, rec: &StatusRecord, interval: Duration) -> bool {
    let same_token = match (&file.token, &rec.token) {
        (Some(f), Some(r)) => {
            (f.state, f.attempt, &f.last_error) == (r.state, r.attempt, &r.last_error)
        }
        (None, None) => true,
        (Some(_), None) | (None, Some(_)) => false,
    };
    let lag = rec
        .updated_at
        .as_millis()
        .saturating_sub(file.updated_at.as_millis());
    same_token
        && (file.status, &file.status_context, file.created_at)
            == (rec.status, &rec.status_context, rec.created_at)
        && u128::from(lag) <= interval.as_millis()
}

async fn check_files_live(h: &Harness, handles: &[TokenHandle]) -> crate::Result<LiveCheck> {
    let refresh_interval = tokenvisor::PersistenceConfig::new(&h.dir).status_refresh_interval;
    let mut candidates: Vec<usize> = (0..handles.len()).collect();
    let mut suspect: Vec<Option<Arc<StatusRecord>>> = vec![None; handles.len()];
    let mut rechecked = HashSet::new();
    let mut mismatched = Vec::new();
    let mut first_difference = None;
    let mut unreadable = Vec::new();
    let mut not_flushed = None;
    let mut rounds = 0;
    while !candidates.is_empty() && rounds < ROUNDS {
        rounds += 1;
        if rounds > 1 {
            rechecked.extend(candidates.iter().copied());
        }
        let before: Vec<Option<Arc<StatusRecord>>> =
            candidates.iter().map(|&i| handles[i].status()).collect();
        let report = h.runtime.flush(Duration::from_secs(30)).await?;
        if !report.failed.is_empty() {
            // Judged by the caller; the run goes on to its shutdown and its report (an
            // early return left the runtime writing while the directory was removed).
            not_flushed = Some((report.failed.len(), report.credentials_not_saved.len()));
            break;
        }
        let names: Vec<WorkloadName> = candidates
            .iter()
            .map(|&i| handles[i].name().clone())
            .collect();
        let files = harness::read_files(&h.dir, names).await?;
        let mut next = Vec::new();
        for ((&i, before), file) in candidates.iter().zip(before).zip(files) {
            let after = handles[i].status();
            let name = handles[i].name().to_string();
            let file = match file {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) if before != after => {
                    next.push(i);
                    continue;
                }
                Ok(None) | Err(_) => {
                    unreadable.push(name);
                    continue;
                }
            };
            if after.as_deref() == Some(&file) {
                continue;
            }
            // A routine refresh (only timestamps changed) reaches the file at most once per
            // `status_refresh_interval`: a file that far behind is current enough.
            if after
                .as_deref()
                .is_some_and(|rec| routine_lag_only(&file, rec, refresh_interval))
            {
                continue;
            }
            if before != after {
                next.push(i);
                continue;
            }
            // The record did not move across the flush, yet the file differs.
            if suspect[i].is_some() && suspect[i] == after {
                if let Some(rec) = after.as_deref()
                    && first_difference.is_none()
                {
                    first_difference = Some(format!("{name} ({})", differences(&file, rec)));
                }
                mismatched.push(name);
            } else {
                suspect[i] = after;
                next.push(i);
            }
        }
        candidates = next;
    }
    // Still moving after every round: not judged here (the exact check after shutdown is).
    Ok(LiveCheck {
        rounds,
        rechecked: rechecked.len(),
        mismatched,
        first_difference,
        unreadable,
        not_flushed,
    })
}

/// After shutdown: every file equals its workload's final record exactly.
/// The workloads whose file is not exactly their final (`stopped`) record, and how the first
/// one differs.
async fn check_files_exact(
    h: &Harness,
    handles: &[TokenHandle],
) -> crate::Result<(Vec<String>, Option<String>)> {
    let names: Vec<WorkloadName> = handles.iter().map(|h| h.name().clone()).collect();
    let files = harness::read_files(&h.dir, names).await?;
    let (mut bad, mut first) = (Vec::new(), None);
    for (handle, file) in handles.iter().zip(files) {
        let why = match (file, handle.status()) {
            (Ok(Some(f)), Some(r)) if f == *r && r.status == WorkloadStatus::Stopped => continue,
            (Ok(Some(f)), Some(r)) if f == *r => {
                format!("the record is `{}`, not `stopped`", r.status.as_str())
            }
            (Ok(Some(f)), Some(r)) => differences(&f, &r),
            (Ok(Some(_)), None) => "a file, and no record".to_owned(),
            (Ok(None), _) => "no file".to_owned(),
            (Err(e), _) => format!("unreadable: {e}"),
        };
        let name = handle.name().to_string();
        first.get_or_insert_with(|| format!("{name} ({why})"));
        bad.push(name);
    }
    Ok((bad, first))
}

/// How a status file differs from its record, field by field: `field: file X, record Y`
/// (records hold no secret: a token's state and times, and a sanitised last error).
fn differences(file: &StatusRecord, rec: &StatusRecord) -> String {
    type Show = fn(&StatusRecord) -> String;
    let fields: [(&str, Show); 6] = [
        ("status", |r| r.status.as_str().to_owned()),
        ("status_context", |r| format!("{:?}", r.status_context)),
        ("created_at", |r| r.created_at.to_string()),
        ("updated_at", |r| r.updated_at.to_string()),
        ("process_id", |r| r.process_id.to_string()),
        ("token", |r| format!("{:?}", r.token)),
    ];
    let out: Vec<String> = fields
        .iter()
        .filter_map(|(name, show)| {
            let (f, r) = (show(file), show(rec));
            (f != r).then(|| format!("{name}: file {f}, record {r}"))
        })
        .collect();
    if out.is_empty() {
        return "no field differs".to_owned();
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use tokenvisor_core::{StatusRecord, Timestamp, WorkloadStatus};

    use super::differences;

    fn record(status: WorkloadStatus, updated: u64) -> StatusRecord {
        StatusRecord {
            status,
            status_context: String::new(),
            created_at: Timestamp::from_millis(1_000),
            updated_at: Timestamp::from_millis(updated),
            process_id: 7,
            token: None,
        }
    }

    #[test]
    fn a_difference_names_each_field_that_differs_with_both_values() {
        let file = record(WorkloadStatus::Running, 2_000);
        let rec = record(WorkloadStatus::Stopped, 3_000);
        let why = differences(&file, &rec);
        assert!(
            why.starts_with("status: file running, record stopped; updated_at: file "),
            "{why}"
        );
        assert!(
            !why.contains("created_at") && !why.contains("process_id"),
            "{why}"
        );
        assert_eq!(differences(&rec, &rec), "no field differs");
    }
}
