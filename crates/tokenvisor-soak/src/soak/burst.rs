//! `--scenario burst`: every workload enters `auth_retrying` together.
//!
//! N workloads become healthy (tokens living `provider.quiet_lifetime`; backoff fixed at
//! about an hour, so a failed workload does not retry during the measurement), everything is
//! flushed, then the provider answers 503 (no `Retry-After`) to everything and every workload
//! is asked to refresh at once. Measured: the time from the fault until every workload's
//! status is `auth_retrying` in memory and then, after a flush, durably on disk
//! (`burst_secs`); the status updates the persistence actor received against the files it
//! wrote (coalescing); the largest number of records pending at once (`max_pending`, counted
//! once per place a record waits, which must stay ≤ 3N: `PENDING_PLACES` per workload). Checked afterwards: every file says `auth_retrying` and equals the record.
//!
//! Then, with the runtime shut down, the bare ceilings on the same disk (a sibling temporary
//! directory of the status directory): `status_store::write_atomic` over `--bare-files` files
//! (default N) of the same records, sequentially and with K ∈ {2, 4, 8, 16} threads, each
//! pass replacing existing files as tokenvisor's writes do. `ratio_to_sequential` and
//! `ratio_to_parallel` compare tokenvisor's files/s (N / `burst_secs`) with them.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::Context as _;
use tokenvisor::PENDING_PLACES;
use tokenvisor_core::{StatusRecord, WorkloadName, WorkloadStatus};
use tokenvisor_idp::{Fault, FaultScope, Times};
use tokio::time::Instant;

use super::bare;
use super::harness::{self, Harness, Sampler};
use super::{Options, Report, ratio, round3, secs};

/// Runs the scenario.
pub(crate) async fn run(opts: &Options) -> crate::Result<Report> {
    let mut report = Report::default();
    let n = opts.n;
    let mut profile = opts.profile.clone();
    profile.policy = profile.policy.with_backoff(Duration::from_secs(3600));
    let h = Harness::start(&profile, opts.status_dir.as_deref(), opts.quiet_lifetime()).await?;
    opts.progress(&format!(
        "tokenvisor soak --scenario burst: {n} workloads; status files in {}",
        h.dir.display()
    ));
    let clients = h.register(n, "burst", profile.provider.rotation)?;
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
    h.runtime.flush(Duration::from_secs(120)).await?;
    let stats = h.runtime.persist_stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (updates0, writes0, coalesced0, failures0) = (
        load(&stats.updates),
        load(&stats.writes_ok),
        load(&stats.coalesced),
        load(&stats.write_failures),
    );
    opts.progress("all running and durable; the provider now answers 503 to everything");

    let sampler = Sampler::start(&h.runtime);
    let started = Instant::now();
    h.idp.set_fault(
        FaultScope::Global,
        Fault::ServiceUnavailable { retry_after: None },
        Times::Always,
    );
    h.force_refresh_every(handles.len(), &mut report).await?;
    let fanout = started.elapsed();
    let retrying = harness::wait_all(&handles, h.settle_timeout(), |_, h| {
        harness::status_of(h) == Some(WorkloadStatus::AuthRetrying)
    })
    .await;
    let in_memory = started.elapsed();
    if let Err(left) = retrying {
        report.fail(format!(
            "{left} of {n} workloads never reached auth_retrying"
        ));
    }
    let flushed = h.runtime.flush(Duration::from_secs(120)).await?;
    let durable = started.elapsed();
    if !flushed.failed.is_empty() {
        report.fail(format!(
            "{} status records not durable after the burst",
            flushed.failed.len()
        ));
    }
    let (_, max_pending) = sampler.stop();
    let updates = load(&stats.updates) - updates0;
    let writes = load(&stats.writes_ok) - writes0;
    let coalesced = load(&stats.coalesced) - coalesced0;
    let failures = load(&stats.write_failures) - failures0;

    // Every file says auth_retrying and equals the workload's record. Workloads keep
    // retrying while the files are read, so a record that moved on after the flush is
    // flushed and read again (a few rounds) before it counts as a mismatch.
    let mut pending: Vec<usize> = (0..handles.len()).collect();
    for _round in 0..8 {
        let names: Vec<WorkloadName> = pending.iter().map(|&i| handles[i].name().clone()).collect();
        let files = harness::read_files(&h.dir, names).await?;
        pending = pending
            .into_iter()
            .zip(&files)
            .filter(|&(i, file)| match (file, handles[i].status()) {
                (Ok(Some(f)), Some(r)) => !(*f == *r && f.status == WorkloadStatus::AuthRetrying),
                (Ok(Some(_) | None) | Err(_), _) => true,
            })
            .map(|(i, _)| i)
            .collect();
        if pending.is_empty() {
            break;
        }
        h.runtime.flush(Duration::from_secs(30)).await?;
    }
    let bad = pending.len();
    if bad > 0 {
        report.fail(format!(
            "{bad} of {n} status files do not show the workload's auth_retrying record"
        ));
    }
    if max_pending > PENDING_PLACES * u64::from(n) {
        report.fail(format!(
            "{max_pending} records pending at once for {n} workloads (at most \
             {PENDING_PLACES} per workload)"
        ));
    }
    let records: Vec<StatusRecord> = handles
        .iter()
        .filter_map(|h| h.status().map(|r| (*r).clone()))
        .collect();
    h.idp.clear_faults();
    h.runtime.shutdown(Duration::from_secs(120)).await?;
    h.idp.shutdown().await;

    // The bare loops, on the same disk.
    let files_n = opts.bare_files.unwrap_or(n) as usize;
    opts.progress(&format!(
        "bare atomic-write loops over {files_n} files: sequential, then {:?} threads",
        bare::THREADS
    ));
    let loops = bare_loops(&h.dir, &records, files_n).await?;
    if loops.errors > 0 {
        report.fail(format!("the bare loops failed {} writes", loops.errors));
    }

    let tv_per_sec = f64::from(n) / durable.as_secs_f64();
    let (best_k, best) = loops.best_parallel();
    report.line(format!(
        "workloads {n}: all auth_retrying in memory after {:.3}s, durable after {:.3}s \
         (force-refresh fan-out {:.3}s) = {tv_per_sec:.0} files/s",
        in_memory.as_secs_f64(),
        durable.as_secs_f64(),
        fanout.as_secs_f64()
    ));
    report.line(format!(
        "persistence: {updates} status updates → {writes} files written ({coalesced} coalesced, \
         {failures} failed writes); max pending {max_pending} (≤ {PENDING_PLACES} × {n})"
    ));
    report.line(format!(
        "bare write_atomic over {} files: sequential {:.0}/s; parallel {}; best {best_k} threads \
         {best:.0}/s",
        loops.files,
        loops.sequential_per_sec,
        loops
            .parallel
            .iter()
            .map(|(k, r)| format!("{k}: {r:.0}/s"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report.line(format!(
        "ratio tokenvisor / bare sequential {:.3}, / best parallel {:.3}",
        tv_per_sec / loops.sequential_per_sec,
        tv_per_sec / best
    ));
    report.set("workloads", n);
    report.set("burst_secs", secs(durable));
    report.set("in_memory_secs", secs(in_memory));
    report.set("fanout_secs", secs(fanout));
    report.set("tokenvisor_files_per_sec", round3(tv_per_sec));
    report.set("status_changes", updates);
    report.set("writes_issued", writes);
    report.set("coalesced", coalesced);
    report.set("status_write_failures", failures);
    report.set("max_pending", max_pending);
    report.set("files_verified_ok", n as usize - bad);
    report.set("bare_files", loops.files);
    report.set("bare_sequential_per_sec", round3(loops.sequential_per_sec));
    report.set(
        "bare_parallel_per_sec",
        serde_json::Value::Object(
            loops
                .parallel
                .iter()
                .map(|(k, r)| (k.to_string(), round3(*r).into()))
                .collect(),
        ),
    );
    report.set("bare_parallel_best_threads", best_k);
    report.set("bare_parallel_best_per_sec", round3(best));
    report.set(
        "ratio_to_sequential",
        ratio(tv_per_sec, loops.sequential_per_sec),
    );
    report.set("ratio_to_parallel", ratio(tv_per_sec, best));
    Ok(report)
}

/// Runs the bare loops in a sibling temporary directory of `status_dir` (same filesystem),
/// over `files` records (the workloads' records, repeated if there are fewer).
async fn bare_loops(
    status_dir: &Path,
    records: &[StatusRecord],
    files: usize,
) -> crate::Result<bare::WriteLoops> {
    if records.is_empty() {
        return Err(crate::Error::failed("no records to write"));
    }
    let parent = status_dir.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".tokenvisor-soak-bare-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let work: Vec<(WorkloadName, StatusRecord)> = (0..files)
        .map(|i| {
            Ok((
                WorkloadName::new(&format!("bare-{i:07}"))?,
                records[i % records.len()].clone(),
            ))
        })
        .collect::<crate::Result<_>>()?;
    let dir = tmp.path().to_owned();
    let loops = tokio::task::spawn_blocking(move || bare::write_loops(&dir, &work))
        .await
        .context("the bare write loops")??;
    drop(tmp);
    Ok(loops)
}
