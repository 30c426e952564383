//! What every scenario shares: the embedded provider, the runtime, N workloads, waiting for
//! states, RSS and persistence sampling, reading status files back.

use crate::progress::Progress;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::Context as _;
use tokenvisor::StoreError;
use tokenvisor::TokenHandle;
use tokenvisor::spec::{GrantSpec, WorkloadPolicy, WorkloadSpec};
use tokenvisor::{HttpConfig, HttpTransport};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::{Secret, StatusRecord, WorkloadName, WorkloadStatus};
use tokenvisor_idp::{ClientSpec, IdpConfig, IdpServer};
use tokio::time::Instant;

use super::profile::Profile;

/// How many tasks add (or force-refresh) workloads at once. The supervisor handles them one
/// by one anyway; a few callers keep its mailbox from running dry between round trips.
const CALLERS: usize = 32;

/// One workload's credentials at the provider (never printed).
#[derive(Clone)]
pub(crate) struct Client {
    /// Client id, also the workload's name.
    pub(crate) id: String,
    secret: String,
    refresh_token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The client secret (for the bare baseline loop; never printed).
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// The refresh token (for the bare baseline loop; never printed).
    pub(crate) fn refresh_token(&self) -> &str {
        &self.refresh_token
    }
}

/// The provider, the status directory and the runtime of one scenario.
pub(crate) struct Harness {
    /// The embedded provider on 127.0.0.1.
    pub(crate) idp: IdpServer,
    /// The runtime (replaced by [`Harness::start_again`]).
    pub(crate) runtime: Runtime,
    /// The status directory.
    pub(crate) dir: PathBuf,
    /// Removes a temporary status directory at the end.
    _tmp: Option<tempfile::TempDir>,
    transport: HttpTransport,
    profile: Profile,
    /// The profile's policy, built once: every workload's spec shares its `Arc`s (as the
    /// configuration's workloads share their `[defaults]`'), instead of a provider section
    /// allocated per workload.
    policy: WorkloadPolicy,
    /// The HTTP client settings tokenvisor uses (the baseline loop copies them).
    pub(crate) http: HttpConfig,
}

/// Where the status directory comes from.
pub(crate) fn status_dir(
    given: Option<&Path>,
) -> crate::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match given {
        Some(dir) => {
            if let Ok(mut entries) = std::fs::read_dir(dir)
                && entries.next().is_some()
            {
                return Err(crate::Error::failed(format!(
                    "--status-dir {} is not empty: a soak run needs a directory of its own \
                     (its checks compare every file with a workload of this run)",
                    dir.display()
                )));
            }
            Ok((dir.to_owned(), None))
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("tokenvisor-soak-")
                .tempdir()
                .context("cannot create a temporary status directory")?;
            Ok((t.path().to_owned(), Some(t)))
        }
    }
}

impl Harness {
    /// Starts the provider (tokens living `lifetime`) and a runtime over the status directory.
    pub(crate) async fn start(
        profile: &Profile,
        status_dir: Option<&Path>,
        lifetime: Duration,
    ) -> crate::Result<Harness> {
        let (dir, tmp) = self::status_dir(status_dir)?;
        let idp = IdpServer::start(IdpConfig::default().with_access_token_lifetime(lifetime))
            .await
            .context("cannot start the embedded provider")?;
        let http = HttpConfig {
            connect_timeout: profile.policy.connect_timeout(),
            use_env_proxy: false,
            ..HttpConfig::default()
        };
        let transport = HttpTransport::new(http.clone())?;
        let runtime = start_runtime(&dir, &transport, profile.seed).await?;
        Ok(Harness {
            idp,
            runtime,
            dir,
            _tmp: tmp,
            transport,
            profile: profile.clone(),
            policy: profile.policy.workload_policy(),
            http,
        })
    }

    /// Starts a new runtime over the same directory (shut the old one down first); it reads
    /// every status file.
    pub(crate) async fn start_again(&mut self) -> crate::Result<()> {
        self.runtime = start_runtime(&self.dir, &self.transport, self.profile.seed ^ 1).await?;
        Ok(())
    }

    /// Registers `n` clients named `<prefix>-NNNNNN` at the provider, each with one grant.
    pub(crate) fn register(
        &self,
        n: u32,
        prefix: &str,
        rotation: bool,
    ) -> crate::Result<Vec<Client>> {
        let mut out = Vec::with_capacity(n as usize);
        let progress = Progress::new("registering clients", u64::from(n));
        for i in 0..n {
            let id = format!("{prefix}-{i:06}");
            let secret = format!("{prefix}-secret-{i}-{:016x}", fastrand_u64(i));
            self.idp
                .register_client(ClientSpec::new(&id, &secret).with_rotation(rotation));
            let refresh_token = self.idp.issue_refresh_token(&id)?;
            out.push(Client {
                id,
                secret,
                refresh_token,
            });
            progress.inc();
        }
        progress.finish();
        Ok(out)
    }

    /// The workload spec of a client, with `policy`.
    fn spec(&self, client: &Client, policy: &WorkloadPolicy) -> crate::Result<WorkloadSpec> {
        let mut spec = WorkloadSpec::new(
            WorkloadName::new(&client.id)?,
            self.idp.token_url().parse()?,
            &client.id,
            GrantSpec::RefreshToken {
                token: Secret::from(client.refresh_token.as_str()),
                file: None,
            },
        )
        .with_client_secret(&client.secret);
        spec.policy = policy.clone();
        Ok(spec)
    }

    /// Adds a workload per client (a few callers at once); handles in client order.
    pub(crate) async fn add_all(&self, clients: &[Client]) -> crate::Result<Vec<TokenHandle>> {
        self.add_all_with(clients, |_| &self.policy).await
    }

    /// Adds a workload per client as [`Harness::add_all`] does, the `i`th with the policy
    /// `policy(i)` (a scenario whose workloads need different policies).
    pub(crate) async fn add_all_with<'p>(
        &'p self,
        clients: &[Client],
        policy: impl Fn(usize) -> &'p WorkloadPolicy,
    ) -> crate::Result<Vec<TokenHandle>> {
        let specs = clients
            .iter()
            .enumerate()
            .map(|(i, c)| self.spec(c, policy(i)))
            .collect::<crate::Result<Vec<_>>>()?;
        let specs = Arc::new(Mutex::new(
            specs.into_iter().enumerate().collect::<Vec<_>>(),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        let progress = Arc::new(Progress::new("adding workloads", clients.len() as u64));
        for _ in 0..CALLERS {
            let specs = Arc::clone(&specs);
            let runtime = self.runtime.clone();
            let progress = Arc::clone(&progress);
            tasks.spawn(async move {
                let mut added = Vec::new();
                loop {
                    let next = specs.lock().unwrap_or_else(PoisonError::into_inner).pop();
                    let Some((i, spec)) = next else {
                        break;
                    };
                    added.push((i, runtime.add(spec).await?));
                    progress.inc();
                }
                Ok::<_, tokenvisor::RuntimeError>(added)
            });
        }
        let mut handles: Vec<Option<TokenHandle>> = vec![None; clients.len()];
        while let Some(done) = tasks.join_next().await {
            for (i, h) in done.context("an adding task failed")?? {
                handles[i] = Some(h);
            }
        }
        progress.finish();
        Ok(handles.into_iter().flatten().collect())
    }

    /// Asks every workload to refresh now, in one supervisor message
    /// (`Runtime::force_refresh_all`), as if every refresh timer fired in the same instant. A
    /// count other than `expected` workloads told fails the run.
    pub(crate) async fn force_refresh_every(
        &self,
        expected: usize,
        report: &mut super::Report,
    ) -> crate::Result<()> {
        let told = self.runtime.force_refresh_all().await?;
        if told != expected {
            report.fail(format!(
                "force_refresh_all told {told} of {expected} workloads"
            ));
        }
        Ok(())
    }

    /// Asks each of `handles` to refresh now (a few callers at once); returns when every
    /// request was handed to the supervisor.
    pub(crate) async fn force_refresh_each(&self, handles: &[TokenHandle]) -> crate::Result<()> {
        let names: Vec<WorkloadName> = handles.iter().map(|h| h.name().clone()).collect();
        let names = Arc::new(Mutex::new(names));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CALLERS {
            let names = Arc::clone(&names);
            let runtime = self.runtime.clone();
            tasks.spawn(async move {
                loop {
                    let next = names.lock().unwrap_or_else(PoisonError::into_inner).pop();
                    let Some(name) = next else {
                        break;
                    };
                    runtime.force_refresh(&name).await?;
                }
                Ok::<_, tokenvisor::RuntimeError>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.context("a refreshing task failed")??;
        }
        Ok(())
    }

    /// The settle timeout of the profile.
    pub(crate) fn settle_timeout(&self) -> Duration {
        self.profile.checks.settle_timeout
    }
}

/// A tiny deterministic mix (for secrets that differ per client; not security).
fn fastrand_u64(i: u32) -> u64 {
    let mut z = u64::from(i).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^ (z >> 27)
}

async fn start_runtime(dir: &Path, transport: &HttpTransport, seed: u64) -> crate::Result<Runtime> {
    let mut config = RuntimeConfig::new(dir, Arc::new(transport.clone()));
    config.seed = Some(seed);
    Runtime::start(config)
        .await
        .context("cannot start the runtime")
}

/// Waits until `done` holds for every handle (each handle until it first holds). `Err(remaining)`
/// at the timeout. Checked every [`poll_interval`] of the last scan: the harness shares the
/// cores with what it measures, and a scan of 20,000 handles every 5 ms took 12 % of the
/// samples of a storm's profile (docs/BENCHMARKS.md, the storm's round 5).
pub(crate) async fn wait_all(
    handles: &[TokenHandle],
    timeout: Duration,
    done: impl Fn(usize, &TokenHandle) -> bool,
) -> Result<Duration, usize> {
    let started = Instant::now();
    let mut remaining: Vec<usize> = (0..handles.len()).collect();
    let progress = Progress::new("waiting for workloads", handles.len() as u64);
    loop {
        let scan = Instant::now();
        remaining.retain(|&i| !done(i, &handles[i]));
        let scan = scan.elapsed();
        progress.set((handles.len() - remaining.len()) as u64);
        if remaining.is_empty() {
            progress.finish();
            return Ok(started.elapsed());
        }
        if started.elapsed() >= timeout {
            progress.finish();
            return Err(remaining.len());
        }
        tokio::time::sleep(poll_interval(scan)).await;
    }
}

/// The pause between two scans of [`wait_all`]: 5 ms, or ten times the last scan when that
/// is longer, so the polling takes at most about a tenth of one core whatever the number of
/// handles (the scan shrinks as handles are done, so the end of a wait is still seen within
/// a few milliseconds).
pub(crate) fn poll_interval(scan: Duration) -> Duration {
    (scan * 10).max(Duration::from_millis(5))
}

/// The workload's status, from its latest record.
pub(crate) fn status_of(h: &TokenHandle) -> Option<WorkloadStatus> {
    h.status().map(|r| r.status)
}

/// Resident set size of this process (VmRSS), in bytes.
pub(crate) fn rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One sample of the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Seconds since sampling started.
    pub(crate) at_secs: f64,
    /// RSS in bytes (0 when unknown).
    pub(crate) rss: u64,
    /// Status records not yet durable.
    pub(crate) pending: u64,
}

/// Samples RSS and pending status records every second, and the largest pending count every
/// 5 ms.
pub(crate) struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    max_pending: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `runtime`.
    pub(crate) fn start(runtime: &Runtime) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let max_pending = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let slow = {
            let runtime = runtime.clone();
            let samples = Arc::clone(&samples);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let sample = Sample {
                        at_secs: started.elapsed().as_secs_f64(),
                        rss: rss_bytes().unwrap_or(0),
                        pending: runtime.persist_stats().pending.load(Ordering::Relaxed),
                    };
                    samples
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(sample);
                }
            })
        };
        let fast = {
            let runtime = runtime.clone();
            let max_pending = Arc::clone(&max_pending);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let p = runtime.persist_stats().pending.load(Ordering::Relaxed);
                    max_pending.fetch_max(p, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        Sampler {
            samples,
            max_pending,
            stop,
            tasks: vec![slow, fast],
        }
    }

    /// The samples so far.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The largest pending count seen so far.
    pub(crate) fn max_pending(&self) -> u64 {
        self.max_pending.load(Ordering::Relaxed)
    }

    /// Stops sampling; returns the samples and the largest pending count.
    pub(crate) fn stop(self) -> (Vec<Sample>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
        (self.samples(), self.max_pending())
    }
}

/// RSS growth over samples: (first-third average, last-third average, growth fraction).
pub(crate) fn rss_growth(samples: &[Sample]) -> Option<(f64, f64, f64)> {
    let rss: Vec<f64> = samples
        .iter()
        .filter(|s| s.rss > 0)
        .map(|s| s.rss as f64)
        .collect();
    if rss.len() < 3 {
        return None;
    }
    let third = rss.len() / 3;
    let avg = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let first = avg(&rss[..third]);
    let last = avg(&rss[rss.len() - third..]);
    Some((first, last, (last - first) / first))
}

/// At most `points` samples, evenly spaced, as `[secs, rss_bytes, pending]` (for the JSON).
pub(crate) fn timeline(samples: &[Sample], points: usize) -> serde_json::Value {
    let step = samples.len().div_ceil(points.max(1)).max(1);
    serde_json::Value::Array(
        samples
            .iter()
            .step_by(step)
            .map(|s| serde_json::json!([super::round3(s.at_secs), s.rss, s.pending]))
            .collect(),
    )
}

/// Reads the status files of `names` (a few threads for many files), in order.
pub(crate) async fn read_files(
    dir: &Path,
    names: Vec<WorkloadName>,
) -> crate::Result<Vec<Result<Option<StatusRecord>, StoreError>>> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let threads = if names.len() < 1024 { 1 } else { 8 };
        let chunk = names.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let parts: Vec<_> = names
                .chunks(chunk)
                .map(|part| {
                    let dir = &dir;
                    s.spawn(move || {
                        part.iter()
                            .map(|n| tokenvisor::read_status(dir, n))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().unwrap_or_default())
                .collect()
        })
    })
    .await
    .context("reading status files")
}

/// Entries of the status directory that are not `<name>.json` of a known workload, its lock
/// file `<name>.lock` (kept between writes) or its spare `.<name>.json.spare`.
pub(crate) fn stray_entries(dir: &Path, names: &HashSet<String>) -> crate::Result<Vec<String>> {
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let file = entry?.file_name().to_string_lossy().into_owned();
        // The embedded runtime's state journal lives beside the status files.
        let known = file == tokenvisor::DEFAULT_JOURNAL_SUBDIR
            || file
                .strip_suffix(".json")
                .or_else(|| file.strip_suffix(".lock"))
                .or_else(|| {
                    file.strip_prefix('.')
                        .and_then(|f| f.strip_suffix(".json.spare"))
                })
                .is_some_and(|stem| names.contains(stem));
        if !known {
            stray.push(file);
        }
    }
    stray.sort();
    Ok(stray)
}

/// Counts of each status over the handles, in a fixed order.
pub(crate) fn status_counts(handles: &[TokenHandle]) -> Vec<(&'static str, usize)> {
    let order = [
        WorkloadStatus::Running,
        WorkloadStatus::AuthRetrying,
        WorkloadStatus::Starting,
        WorkloadStatus::Unauthenticated,
        WorkloadStatus::Error,
        WorkloadStatus::Stopped,
    ];
    let mut counts = [0usize; 6];
    let mut none = 0;
    for h in handles {
        match status_of(h).and_then(|s| order.iter().position(|o| *o == s)) {
            Some(i) => counts[i] += 1,
            None => none += 1,
        }
    }
    let mut out: Vec<(&'static str, usize)> = order
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    if none > 0 {
        out.push(("no_record", none));
    }
    out
}

/// `running 480, auth_retrying 20`.
pub(crate) fn fmt_counts(counts: &[(&'static str, usize)]) -> String {
    counts
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes as MiB with one decimal.
pub(crate) fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The polling of a large wait takes about a tenth of a core (a scan of 20,000 handles
    /// took ≈ 2 ms: every 20 ms, not every 5 ms); a small one is still checked every 5 ms.
    #[test]
    fn a_long_scan_is_followed_by_a_longer_pause() {
        let ms = Duration::from_millis;
        assert_eq!(poll_interval(Duration::from_micros(50)), ms(5));
        assert_eq!(poll_interval(ms(2)), ms(20));
        assert_eq!(poll_interval(ms(30)), ms(300));
    }
}
