//! The crash loop (issue 11, target 4): `tokenvisor run` killed with SIGKILL at random
//! moments, start-up included, over and over, while every workload rotates its refresh
//! token against oidc-provider (rotation on every use, reuse detection on: a consumed
//! refresh token presented again revokes the whole grant) behind nginx.
//!
//! One run: the provider with short access tokens, nginx in `pass` mode, N workloads each
//! with a grant of its own (the scripted authorization_code + PKCE login, one provider
//! account per workload, named like it, so that the provider's log says whose grant every
//! request used); then K times: start the daemon over the same status and state
//! directories, wait a random moment (seeded; a share of the kills falls in the first
//! hundreds of milliseconds, during start-up), `kill -9`, let the provider answer what it
//! had received, and ask the provider (RFC 7662 introspection, which consumes nothing)
//! whether each workload's refresh-token file still holds its live token. Finally one more
//! start, until every workload has refreshed under it (or is `unauthenticated`).
//!
//! What is counted:
//! - **in flight at a kill**: workloads whose file token the provider no longer accepts
//!   right after the kill, and did at the kill before (or the file changed since): a
//!   refresh was sent and the daemon died before it was done with the answer (committed to
//!   the journal and written back to the file). These are the only refreshes a kill can
//!   lose; most are not lost (the journal had committed the rotated token, only the file
//!   lagged).
//! - **grants lost**: workloads whose grant the provider revoked because a rotated-away
//!   refresh token was presented (its `grant.revoked` event, with the account), ending
//!   `unauthenticated`. Each is attributed from the provider's log: its last successful
//!   refresh before the reuse arrived between the start of a daemon that was then killed
//!   (kill K) and the next start (a request written before the SIGKILL may reach the
//!   provider after it: nginx passes it on), the reuse arrived after that next start, and
//!   the workload was in flight at kill K. A loss that does not fit is **unexplained**: the
//!   bound is broken. (A restarted daemon that presented the file's token where the journal
//!   had a newer one would lose a grant counted as in flight: the file lags the journal. The
//!   journal tests cover that rule; this loop does not read the journal.)
//! - **early**: kills less than 10 s after their daemon restarted (target: 0 grants lost).
//!
//! The waits for a random moment are deliberate real-time waits (the moment is the point);
//! everything else waits by bounded polling for an event. The benchmark is
//! `examples/crash_loop.rs` (50 kills, 200 workloads); the suite's `crash_loop` test is the small version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde::Deserialize;
use tokenvisor_core::WorkloadStatus;
use tokenvisor_test_support::config::ConfigFile;
use tokenvisor_test_support::daemon::command;
use tokenvisor_test_support::status::read_status;
use tokenvisor_test_support::wait::poll_until;

use crate::components::{INSTALL, node_bin, now_ms, oidc_dir};
use crate::nginx::{Access, Nginx};
use crate::oidc::{Oidc, login_tokens, secret_of, uses_basic};

/// Clients of the provider (`tv-01` … `tv-24`, real/oidc/config.mjs).
const CLIENTS: usize = 24;
/// A kill this soon after its daemon's restart is "early" (target: no grant lost).
pub const EARLY_MS: u64 = 10_000;
/// Bound of the wait for the provider to answer what it received before a kill.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(15);

/// Which refresh a lost grant lost: what the restarted daemon knew of the workload's token
/// when it started (from the provider's log: the rotation before the lost one issued the
/// access token the journal held). Tells a start-up schedule's lever from the unavoidable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LossKind {
    /// The daemon's first refresh of the workload, whose access token had expired before
    /// the daemon started: it had to go at once (nothing to serve meanwhile).
    ExpiredAtStart,
    /// The daemon's first refresh of the workload, whose access token was still valid when
    /// the daemon started: a start-up schedule could have moved it (by at most the
    /// token's remaining life).
    ValidAtStart,
    /// A later refresh: the daemon had already refreshed the workload once (its routine
    /// schedule: a token refreshed under this daemon came due again).
    Later,
    /// No rotation before the lost one in the provider's log (the minted grant's first).
    Unknown,
}

impl LossKind {
    /// Its name in the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            LossKind::ExpiredAtStart => "expired_at_start",
            LossKind::ValidAtStart => "valid_at_start",
            LossKind::Later => "later",
            LossKind::Unknown => "unknown",
        }
    }
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kills (each followed by a restart; then one final start).
    pub kills: usize,
    /// Workloads, each with a grant of its own.
    pub workloads: usize,
    /// Seed of the kill moments.
    pub seed: u64,
    /// Access-token lifetime at the provider, in seconds.
    pub access_ttl: u32,
    /// Share of kills during start-up (percent), at `0..=start_ms` after the spawn.
    pub start_percent: u64,
    /// Upper bound of a start-up kill's moment, ms.
    pub start_ms: u64,
    /// The other kills: uniform in one of these ranges (ms after the spawn), picked evenly.
    pub ranges: Vec<(u64, u64)>,
    /// `endpoint_concurrency` of the daemon (its default, 64, when `None`).
    pub endpoint_concurrency: Option<u32>,
    /// The first daemon runs until every workload is `running` before its kill's moment
    /// starts counting (a first start with no journal refreshes every workload at once:
    /// a kill then loses every grant whose refresh is in flight, see docs/RELIABILITY.md).
    pub warm_up: bool,
    /// Print a line per kill.
    pub verbose: bool,
}

impl Options {
    /// The test: 5 kills (three in the first 400 ms), 20 workloads, 3 s access tokens, every
    /// kill within 3 s of its start.
    pub fn small() -> Options {
        Options {
            kills: 5,
            workloads: 20,
            seed: 0xC4A5_4100_0000_000C,
            access_ttl: 3,
            start_percent: 40,
            start_ms: 400,
            ranges: vec![(400, 3_000)],
            endpoint_concurrency: None,
            warm_up: true,
            verbose: true,
        }
    }
}

/// SplitMix64: the kill moments are a function of the seed (printed), so a run replays.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The moment of each kill, ms after its daemon's spawn: a function of the seed.
pub fn schedule(opts: &Options) -> Vec<u64> {
    let mut rng = Rng(opts.seed);
    (0..opts.kills)
        .map(|_| {
            if rng.between(0, 99) < opts.start_percent {
                rng.between(0, opts.start_ms)
            } else {
                let i = usize::try_from(rng.between(0, opts.ranges.len() as u64 - 1)).unwrap_or(0);
                let (lo, hi) = opts.ranges[i];
                rng.between(lo, hi)
            }
        })
        .collect()
}

/// One line of the provider's log (real/oidc/provider.mjs), the fields used here.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ProviderLine {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) t: u64,
    #[serde(default)]
    pub(crate) event: Option<String>,
    #[serde(default)]
    pub(crate) path: Option<String>,
    #[serde(default)]
    pub(crate) grant_type: Option<String>,
    #[serde(default)]
    pub(crate) account: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<u16>,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

impl ProviderLine {
    pub(crate) fn is_refresh(&self) -> bool {
        self.kind == "request"
            && self.path.as_deref() == Some("/token")
            && self.grant_type.as_deref() == Some("refresh_token")
    }
}

/// Reuse revocations (`grant.revoked` events) in the provider's `log`, by account.
pub(crate) fn revoked_by_account(log: &[ProviderLine]) -> BTreeMap<String, usize> {
    let mut revoked: BTreeMap<String, usize> = BTreeMap::new();
    for l in log {
        if l.kind == "event" && l.event.as_deref() == Some("grant.revoked") {
            *revoked
                .entry(l.account.clone().unwrap_or_else(|| "?".to_owned()))
                .or_default() += 1;
        }
    }
    revoked
}

/// A lost grant at the provider: its refreshes, the first answered `invalid_grant` (its
/// rotated-away token presented) and the last rotation before that one (whose result was
/// lost).
pub(crate) struct History<'a> {
    /// The refreshes of the grant's account.
    pub(crate) mine: Vec<&'a ProviderLine>,
    /// The first refresh answered `invalid_grant`.
    pub(crate) reuse: Option<&'a ProviderLine>,
    /// The last refresh answered 200 before `reuse`.
    pub(crate) prev: Option<&'a ProviderLine>,
}

/// The [`History`] of account `name` among `refreshes`.
pub(crate) fn history<'a>(refreshes: &[&'a ProviderLine], name: &str) -> History<'a> {
    let mine: Vec<&ProviderLine> = (refreshes.iter().copied())
        .filter(|l| l.account.as_deref() == Some(name))
        .collect();
    let reuse = (mine.iter().copied())
        .filter(|l| l.error.as_deref() == Some("invalid_grant"))
        .min_by_key(|l| l.t);
    let prev = reuse.and_then(|reuse| {
        (mine.iter().copied())
            .filter(|l| l.status == Some(200) && l.t < reuse.t)
            .max_by_key(|l| l.t)
    });
    History { mine, reuse, prev }
}

/// `n` workloads `w000`, `w001`, … spread over the provider's clients.
pub(crate) fn workloads(n: usize) -> Vec<Workload> {
    (0..n)
        .map(|i| Workload {
            name: format!("w{i:03}"),
            client: format!("tv-{:02}", i % CLIENTS + 1),
        })
        .collect()
}

/// A JSON-lines log read incrementally: each call parses only the lines appended since
/// (the run re-reads its logs often; they grow to tens of thousands of lines).
pub(crate) struct Tail<T> {
    path: PathBuf,
    offset: usize,
    lines: Vec<T>,
}

impl<T: serde::de::DeserializeOwned> Tail<T> {
    pub(crate) fn new(path: PathBuf) -> Tail<T> {
        Tail {
            path,
            offset: 0,
            lines: Vec::new(),
        }
    }

    /// Reads what was appended (whole lines only); returns every line so far.
    pub(crate) fn read(&mut self) -> &[T] {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        if let Some(new) = bytes.get(self.offset..)
            && let Some(end) = new.iter().rposition(|b| *b == b'\n')
        {
            let text = String::from_utf8_lossy(&new[..=end]);
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                self.lines.push(
                    serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("{} line {l:?}: {e}", self.path.display())),
                );
            }
            self.offset += end + 1;
        }
        &self.lines
    }
}

/// What one kill did.
#[derive(Debug, Clone)]
pub struct Kill {
    /// 1-based.
    pub n: usize,
    /// The daemon's pid.
    pub pid: u32,
    /// Spawned at (ms since the epoch).
    pub started_ms: u64,
    /// SIGKILL sent at.
    pub killed_ms: u64,
    /// When the checks after the kill were done and the next daemon was about to start:
    /// a request that reached the provider before this was sent by the killed daemon.
    pub next_start_ms: u64,
    /// Successful refreshes the provider answered while this daemon lived.
    pub rotations: usize,
    /// Refresh requests the provider received within [`EARLY_MS`] of this daemon's start
    /// (and before the next start): a restart's exposure to a kill.
    pub early_refreshes: usize,
    /// Workloads with a refresh in flight at this kill (see the module docs).
    pub in_flight: BTreeSet<String>,
    /// Token requests nginx logged as 499 (the client went away before the answer) after
    /// this kill, before the next start.
    pub nginx_499: usize,
    /// The provider had answered everything it received within [`SETTLE_LIMIT`].
    pub settled: bool,
    /// Grants lost here (filled by the analysis).
    pub lost: BTreeSet<String>,
}

impl Kill {
    /// Milliseconds from the spawn to the kill.
    pub fn after_ms(&self) -> u64 {
        self.killed_ms.saturating_sub(self.started_ms)
    }

    /// Less than [`EARLY_MS`] after its daemon started, and that start was a restart (over
    /// the journal of a daemon killed before it).
    pub fn early(&self) -> bool {
        self.n > 1 && self.after_ms() < EARLY_MS
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// The options it ran with.
    pub opts: Options,
    /// Every kill.
    pub kills: Vec<Kill>,
    /// Each workload's status at the end: the one reading that ended the wait for the final
    /// daemon (every workload running and refreshed under it, or unauthenticated).
    pub statuses: BTreeMap<String, Option<WorkloadStatus>>,
    /// Workloads that ended neither running nor unauthenticated within the bound.
    pub unsettled_at_end: Vec<String>,
    /// Grants the provider revoked for reuse (`grant.revoked` events), by workload.
    pub revoked: BTreeMap<String, usize>,
    /// Refresh requests answered `invalid_grant` (a rotated-away or revoked token presented).
    pub invalid_grant: usize,
    /// Of which for a grant that was not lost (a rotated-away token presented for it).
    pub invalid_grant_not_lost: usize,
    /// Refresh requests answered 200.
    pub refreshes_ok: usize,
    /// All refresh requests the provider received.
    pub refreshes: usize,
    /// Losses that do not fit "a refresh in flight at a kill", with why.
    pub unexplained: Vec<String>,
    /// For each grant lost at a kill: ms from the provider receiving the refresh whose
    /// answer was lost to the kill (the window a kill must hit).
    /// (Negative: the request reached the provider after the kill; nginx passed on what
    /// the daemon had sent.)
    pub windows: BTreeMap<String, i64>,
    /// For each grant lost at a kill: which refresh it lost ([`LossKind`]), and for
    /// [`LossKind::ValidAtStart`] how long its access token still had to live at the start
    /// (ms; 0 for the other kinds).
    pub kinds: BTreeMap<String, (LossKind, u64)>,
    /// Seconds the whole run took (minting included).
    pub secs: f64,
}

impl Outcome {
    /// Workloads `unauthenticated` at the end (grants lost).
    pub fn lost(&self) -> BTreeSet<String> {
        self.statuses
            .iter()
            .filter(|(_, s)| **s == Some(WorkloadStatus::Unauthenticated))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Workloads `running` at the end.
    pub fn running(&self) -> usize {
        self.statuses
            .values()
            .filter(|s| **s == Some(WorkloadStatus::Running))
            .count()
    }

    /// Refreshes in flight summed over the kills.
    pub fn in_flight(&self) -> usize {
        self.kills.iter().map(|k| k.in_flight.len()).sum()
    }

    /// Grants lost at kills less than 10 s after their daemon's start.
    pub fn early_losses(&self) -> usize {
        self.kills
            .iter()
            .filter(|k| k.early())
            .map(|k| k.lost.len())
            .sum()
    }

    /// Grants lost at early kills, counted by [`LossKind`].
    pub fn early_kinds(&self) -> BTreeMap<&'static str, usize> {
        let mut by_kind = BTreeMap::new();
        for k in self.kills.iter().filter(|k| k.early()) {
            for name in &k.lost {
                let kind = self.kinds.get(name).map_or(LossKind::Unknown, |(k, _)| *k);
                *by_kind.entry(kind.name()).or_default() += 1;
            }
        }
        by_kind
    }

    /// Every grant lost at a kill, counted by [`LossKind`].
    pub fn kinds_count(&self) -> BTreeMap<&'static str, usize> {
        let mut all = BTreeMap::new();
        for (kind, _) in self.kinds.values() {
            *all.entry(kind.name()).or_default() += 1;
        }
        all
    }

    /// Kills at which more grants were lost than refreshes were in flight.
    pub fn over_bound(&self) -> Vec<usize> {
        self.kills
            .iter()
            .filter(|k| !k.lost.is_subset(&k.in_flight))
            .map(|k| k.n)
            .collect()
    }

    /// The one-line JSON summary.
    pub fn json(&self) -> String {
        let early = self.kills.iter().filter(|k| k.early()).count();
        let start = self
            .kills
            .iter()
            .filter(|k| k.after_ms() <= self.opts.start_ms)
            .count();
        serde_json::json!({
            "kills": self.kills.len(),
            "kills_during_start": start,
            "kills_early": early,
            "workloads": self.opts.workloads,
            "seed": format!("{:#x}", self.opts.seed),
            "access_ttl_s": self.opts.access_ttl,
            "endpoint_concurrency": self.opts.endpoint_concurrency.unwrap_or(64),
            "refreshes": self.refreshes,
            "refreshes_ok": self.refreshes_ok,
            "running": self.running(),
            "unauthenticated": self.lost().len(),
            "in_flight_at_kills": self.in_flight(),
            "max_in_flight_at_a_kill": self.kills.iter().map(|k| k.in_flight.len()).max().unwrap_or(0),
            "nginx_499_after_kills": self.kills.iter().map(|k| k.nginx_499).sum::<usize>(),
            "grants_lost": self.kills.iter().map(|k| k.lost.len()).sum::<usize>(),
            "grants_lost_early": self.early_losses(),
            "refreshes_in_first_10s_after_restarts": self
                .kills
                .iter()
                .filter(|k| k.n > 1)
                .map(|k| k.early_refreshes)
                .sum::<usize>(),
            "grants_lost_early_by_kind": self.early_kinds(),
            "grants_lost_by_kind": self.kinds_count(),
            "valid_at_start_life_ms": self
                .kinds
                .values()
                .filter(|(k, _)| *k == LossKind::ValidAtStart)
                .map(|(_, ms)| *ms)
                .collect::<Vec<_>>(),
            "reuse_revocations": self.revoked.values().sum::<usize>(),
            "invalid_grant_answers": self.invalid_grant,
            "invalid_grant_for_grants_not_lost": self.invalid_grant_not_lost,
            "unexplained": self.unexplained.len(),
            "loss_windows_ms": self.windows.values().collect::<Vec<_>>(),
            "kills_over_bound": self.over_bound(),
            "unsettled_kills": self.kills.iter().filter(|k| !k.settled).count(),
            "unsettled_at_end": self.unsettled_at_end.len(),
            "secs": (self.secs * 10.0).round() / 10.0,
        })
        .to_string()
    }

    /// A human summary, then the JSON line.
    pub fn print(&self) {
        for k in &self.kills {
            if !k.lost.is_empty() {
                println!(
                    "kill {:>2} (pid {}): {} ms after the start: lost {:?} (in flight {:?}); \
                     the refresh reached the provider {:?} ms before the kill; kinds {:?}",
                    k.n,
                    k.pid,
                    k.after_ms(),
                    k.lost,
                    k.in_flight,
                    k.lost
                        .iter()
                        .filter_map(|n| self.windows.get(n))
                        .collect::<Vec<_>>(),
                    k.lost
                        .iter()
                        .filter_map(|n| self.kinds.get(n))
                        .collect::<Vec<_>>()
                );
            }
        }
        for u in &self.unexplained {
            println!("unexplained: {u}");
        }
        println!(
            "crash loop: {} kills ({} within {} ms of the start, {} within 10 s), {} workloads: \
             {} running, {} unauthenticated (grants lost), other {:?}; refreshes in flight at \
             the kills {} (at most {} at one); grants lost {} ({} at early kills); reuse \
             revocations {}, invalid_grant answers {}; unexplained losses {}; {:.0} s",
            self.kills.len(),
            self.kills
                .iter()
                .filter(|k| k.after_ms() <= self.opts.start_ms)
                .count(),
            self.opts.start_ms,
            self.kills.iter().filter(|k| k.early()).count(),
            self.opts.workloads,
            self.running(),
            self.lost().len(),
            self.unsettled_at_end,
            self.in_flight(),
            self.kills
                .iter()
                .map(|k| k.in_flight.len())
                .max()
                .unwrap_or(0),
            self.kills.iter().map(|k| k.lost.len()).sum::<usize>(),
            self.early_losses(),
            self.revoked.values().sum::<usize>(),
            self.invalid_grant,
            self.unexplained.len(),
            self.secs,
        );
        println!("{}", self.json());
    }
}

/// A daemon process, killed (SIGKILL) and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A workload of the run.
pub(crate) struct Workload {
    pub(crate) name: String,
    pub(crate) client: String,
}

/// Mints one grant per workload: the scripted login (real/oidc/login.mjs), one provider
/// account per workload named like it, run per client, a few clients at a time.
pub(crate) fn mint(oidc: &Oidc, workloads: &[Workload], work: &Path) {
    let mut by_client: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for w in workloads {
        by_client.entry(&w.client).or_default().push(&w.name);
    }
    let dir = oidc_dir();
    let jobs: Vec<(&str, Vec<&str>)> = by_client.into_iter().collect();
    for chunk in jobs.chunks(6) {
        let children: Vec<_> = chunk
            .iter()
            .map(|(client, names)| {
                let child = command(node_bin())
                    .current_dir(&dir)
                    .arg(dir.join("login.mjs"))
                    .args(["--issuer", &oidc.issuer(), "--client", client, "--accounts"])
                    .arg(names.join(","))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("node real/oidc/login.mjs: {e}: {INSTALL}"));
                (names, child)
            })
            .collect();
        for (names, child) in children {
            let out = child
                .wait_with_output()
                .unwrap_or_else(|e| panic!("login.mjs: {e}"));
            assert!(
                out.status.success(),
                "login.mjs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let tokens = login_tokens(&out.stdout);
            assert_eq!(tokens.len(), names.len(), "login.mjs grants");
            for (name, token) in names.iter().zip(tokens) {
                let file = work.join(format!("{name}.rt"));
                std::fs::write(&file, token).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            }
        }
    }
}

/// The daemon's configuration: the status and state directories under `work`, no admin
/// listener, warnings only in the log, the suite's short timeouts and backoff.
fn write_config(
    work: &Path,
    token_url: &str,
    workloads: &[Workload],
    endpoint_concurrency: Option<u32>,
) -> PathBuf {
    let mut c = ConfigFile::new(&work.join("statuses"));
    if let Some(n) = endpoint_concurrency {
        c.defaults.set("endpoint_concurrency", n.to_string());
    }
    c.service
        .str("state_dir", work.join("state").to_string_lossy())
        .str("admin_listen", "off")
        .str("log_level", "warn");
    for w in workloads {
        let secret = work.join(format!("{}.secret", w.name));
        std::fs::write(&secret, format!("{}\n", secret_of(&w.client)))
            .unwrap_or_else(|e| panic!("{}: {e}", secret.display()));
        c.refresh_workload(
            &w.name,
            token_url,
            &w.client,
            &secret.to_string_lossy(),
            &work.join(format!("{}.rt", w.name)).to_string_lossy(),
        )
        .str(
            "auth_method",
            if uses_basic(&w.client) {
                "basic"
            } else {
                "post"
            },
        );
    }
    c.write(&work.join("tokenvisor.toml"))
}

/// Starts `tokenvisor run` (stdout discarded, stderr appended to `work/daemon.log`).
fn spawn(bin: &Path, config: &Path, work: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work.join("daemon.log"))
        .unwrap_or_else(|e| panic!("daemon.log: {e}"));
    let child = command(bin)
        .args(["run", "--config"])
        .arg(config)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    Proc(child)
}

/// Waits until the provider has answered every token request nginx passed on (both logs
/// count the same and stop changing): nothing received before the kill is still to rotate.
async fn settle(provider: &mut Tail<ProviderLine>, nginx: &mut Tail<Access>) -> bool {
    let mut last = (usize::MAX, usize::MAX);
    let mut stable = 0;
    poll_until(SETTLE_LIMIT, Duration::from_millis(100), || {
        let at_nginx = nginx.read().iter().filter(|a| a.uri == "/token").count();
        let at_provider = provider.read().iter().filter(|l| l.is_refresh()).count();
        let now = (at_nginx, at_provider);
        stable = if now == last && at_nginx == at_provider {
            stable + 1
        } else {
            0
        };
        last = now;
        stable >= 3
    })
    .await
}

/// The workloads whose refresh-token file holds a token the provider no longer accepts,
/// with that token.
async fn consumed_files(
    oidc: &Oidc,
    workloads: &[Workload],
    work: &Path,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for w in workloads {
        let file = work.join(format!("{}.rt", w.name));
        let token = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_owned();
        if !oidc.is_active(&w.client, &token).await {
            out.insert(w.name.clone(), token);
        }
    }
    out
}

/// Runs the crash loop; every process started here is stopped by its PID, also on a panic.
pub async fn run(opts: &Options) -> Outcome {
    crate::components::require_all();
    let began = tokio::time::Instant::now();
    let bin = crate::binary::tokenvisor_bin();
    let work_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let work = work_dir.path();
    let oidc = Oidc::start(work, opts.access_ttl);
    let mut provider = Tail::<ProviderLine>::new(work.join("oidc.log"));
    let nginx = Nginx::pass_to(work, oidc.addr()).await;
    let workloads = workloads(opts.workloads);
    mint(&oidc, &workloads, work);
    let config = write_config(
        work,
        &nginx.token_url(),
        &workloads,
        opts.endpoint_concurrency,
    );
    let mut access = Tail::<Access>::new(work.join("nginx/logs/access.log"));
    if opts.verbose {
        println!(
            "crash loop: {} workloads minted in {:.1} s; {} kills, seed {:#x}, access tokens \
             {} s, daemon {}",
            workloads.len(),
            began.elapsed().as_secs_f64(),
            opts.kills,
            opts.seed,
            opts.access_ttl,
            bin.display()
        );
    }

    let delays = schedule(opts);
    let mut kills: Vec<Kill> = Vec::new();
    // The consumed file tokens seen at the previous kill (none at first: fresh grants).
    let mut consumed_before: BTreeMap<String, String> = BTreeMap::new();
    for (n, delay) in (1..).zip(delays) {
        let started_ms = now_ms();
        let proc = spawn(&bin, &config, work);
        let pid = proc.0.id();
        if n == 1 && opts.warm_up {
            // Every workload `running` once (not all at once: with short tokens on a loaded
            // machine some are always between a timeout and its retry).
            let status_dir = work.join("statuses");
            let mut seen = BTreeSet::new();
            let all_running =
                poll_until(Duration::from_secs(120), Duration::from_millis(100), || {
                    for w in &workloads {
                        if read_status(&status_dir, &w.name)
                            .is_some_and(|r| r.status == WorkloadStatus::Running)
                        {
                            seen.insert(w.name.clone());
                        }
                    }
                    seen.len() == workloads.len()
                })
                .await;
            assert!(
                all_running,
                "the first daemon got {} of {} workloads running",
                seen.len(),
                workloads.len()
            );
        }
        // The random moment: a deliberate real-time wait.
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let killed_ms = now_ms();
        drop(proc);
        let settled = settle(&mut provider, &mut access).await;
        let consumed = consumed_files(&oidc, &workloads, work).await;
        let in_flight: BTreeSet<String> = consumed
            .iter()
            .filter(|(name, token)| consumed_before.get(*name) != Some(*token))
            .map(|(name, _)| name.clone())
            .collect();
        consumed_before = consumed;
        let next_start = now_ms();
        let nginx_499 = access
            .read()
            .iter()
            .filter(|a| a.uri == "/token" && a.status == 499)
            .filter(|a| a.t_ms() >= killed_ms && a.t_ms() <= next_start)
            .count();
        let rotations = provider
            .read()
            .iter()
            .filter(|l| l.is_refresh() && l.status == Some(200))
            .filter(|l| l.t >= started_ms && l.t <= killed_ms)
            .count();
        let early_refreshes = provider
            .read()
            .iter()
            .filter(|l| l.is_refresh())
            .filter(|l| l.t >= started_ms && l.t < (started_ms + EARLY_MS).min(next_start))
            .count();
        let kill = Kill {
            early_refreshes,
            n,
            pid,
            started_ms,
            killed_ms,
            next_start_ms: next_start,
            rotations,
            in_flight,
            nginx_499,
            settled,
            lost: BTreeSet::new(),
        };
        if opts.verbose {
            println!(
                "kill {n:>2}/{}: pid {pid} {delay:>5} ms after its start | {} rotations in its \
                 life | in flight at the kill {}{} | nginx 499 {} | still consumed from before {}{}",
                opts.kills,
                kill.rotations,
                kill.in_flight.len(),
                if kill.in_flight.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", kill.in_flight)
                },
                kill.nginx_499,
                consumed_before.len() - kill.in_flight.len(),
                if settled { "" } else { " | NOT SETTLED" },
            );
        }
        kills.push(kill);
    }

    // The final start: until every workload has refreshed under it (its grant is whole) or
    // is unauthenticated (its grant was lost).
    let final_start = now_ms();
    let last = spawn(&bin, &config, work);
    let status_dir = work.join("statuses");
    // Accounts refreshed under the final daemon.
    let refreshed = |log: &[ProviderLine]| -> BTreeSet<String> {
        log.iter()
            .filter(|l| l.is_refresh() && l.status == Some(200) && l.t >= final_start)
            .filter_map(|l| l.account.clone())
            .collect()
    };
    let done =
        |status: Option<WorkloadStatus>, refreshed: &BTreeSet<String>, name: &str| match status {
            Some(WorkloadStatus::Unauthenticated) => true,
            Some(WorkloadStatus::Running) => refreshed.contains(name),
            Some(
                WorkloadStatus::Starting
                | WorkloadStatus::AuthRetrying
                | WorkloadStatus::Stopped
                | WorkloadStatus::Error,
            )
            | None => false,
        };
    let limit = Duration::from_secs(u64::from(opts.access_ttl) * 3 + 60);
    // One reading of the statuses serves both the wait and the outcome: read again later, a
    // workload between a failed attempt and its retry (`auth_retrying`) would count as
    // neither running nor lost.
    let snapshot = || -> BTreeMap<String, Option<WorkloadStatus>> {
        (workloads.iter())
            .map(|w| {
                let status = read_status(&status_dir, &w.name).map(|r| r.status);
                (w.name.clone(), status)
            })
            .collect()
    };
    let mut statuses = BTreeMap::new();
    let mut unsettled_at_end = Vec::new();
    poll_until(limit, Duration::from_millis(200), || {
        let r = refreshed(provider.read());
        statuses = snapshot();
        unsettled_at_end = (statuses.iter())
            .filter(|(name, status)| !done(**status, &r, name))
            .map(|(name, _)| name.clone())
            .collect();
        unsettled_at_end.is_empty()
    })
    .await;
    let log = provider.read().to_vec();
    drop(last);

    // The provider's side.
    let revoked = revoked_by_account(&log);
    let refreshes: Vec<&ProviderLine> = log.iter().filter(|l| l.is_refresh()).collect();
    let invalid_grant = refreshes
        .iter()
        .filter(|l| l.error.as_deref() == Some("invalid_grant"))
        .count();
    let refreshes_ok = refreshes.iter().filter(|l| l.status == Some(200)).count();

    // Attribution: every grant lost (revoked for reuse, or ending unauthenticated).
    let mut unexplained = Vec::new();
    let mut windows = BTreeMap::new();
    let mut kinds = BTreeMap::new();
    let lost_names: BTreeSet<String> = revoked
        .keys()
        .cloned()
        .chain(
            statuses
                .iter()
                .filter(|(_, s)| **s == Some(WorkloadStatus::Unauthenticated))
                .map(|(n, _)| n.clone()),
        )
        .collect();
    let invalid_grant_not_lost = refreshes
        .iter()
        .filter(|l| l.error.as_deref() == Some("invalid_grant"))
        .filter(|l| l.account.as_ref().is_some_and(|a| !lost_names.contains(a)))
        .count();
    for name in &lost_names {
        let History { mine, reuse, prev } = history(&refreshes, name);
        let Some(reuse) = reuse else {
            unexplained.push(format!(
                "{name}: lost (status {:?}) without an invalid_grant answer",
                statuses.get(name)
            ));
            continue;
        };
        let Some(prev) = prev else {
            unexplained.push(format!(
                "{name}: its first refresh token was presented after being rotated away ({} ms)",
                reuse.t
            ));
            continue;
        };
        let Some(kill) = kills
            .iter_mut()
            .find(|k| k.started_ms <= prev.t && prev.t < k.next_start_ms)
        else {
            unexplained.push(format!(
                "{name}: its last rotation ({} ms) was not in the life of a killed daemon",
                prev.t
            ));
            continue;
        };
        if reuse.t < kill.next_start_ms {
            unexplained.push(format!(
                "{name}: the rotated-away token was presented ({} ms) before kill {} ({} ms)",
                reuse.t, kill.n, kill.killed_ms
            ));
            continue;
        }
        if !kill.in_flight.contains(name) {
            unexplained.push(format!(
                "{name}: lost at kill {} without a refresh in flight there (its file still held \
                 the live token)",
                kill.n
            ));
            continue;
        }
        // The rotation before the lost one issued the access token the daemon held at its start.
        let before = mine
            .iter()
            .filter(|l| l.status == Some(200) && l.t < prev.t)
            .max_by_key(|l| l.t);
        let ttl_ms = u64::from(opts.access_ttl) * 1_000;
        let kind = match before {
            None => (LossKind::Unknown, 0),
            Some(b) if b.t >= kill.started_ms => (LossKind::Later, 0),
            Some(b) if b.t + ttl_ms <= kill.started_ms => (LossKind::ExpiredAtStart, 0),
            Some(b) => (LossKind::ValidAtStart, b.t + ttl_ms - kill.started_ms),
        };
        kinds.insert(name.clone(), kind);
        kill.lost.insert(name.clone());
        windows.insert(
            name.clone(),
            i64::try_from(kill.killed_ms).unwrap_or(0) - i64::try_from(prev.t).unwrap_or(0),
        );
    }
    Outcome {
        opts: opts.clone(),
        kills,
        statuses,
        unsettled_at_end,
        revoked,
        invalid_grant,
        invalid_grant_not_lost,
        refreshes_ok,
        refreshes: refreshes.len(),
        unexplained,
        windows,
        kinds,
        secs: began.elapsed().as_secs_f64(),
    }
}
