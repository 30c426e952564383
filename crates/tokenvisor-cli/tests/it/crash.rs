//! Crash safety (issue 6 §2): `kill -9` the daemon at random moments during a storm of
//! refreshes and status changes, then check what it left on disk.
//!
//! The identity provider runs in this test process (an in-process `IdpServer` on its own
//! tokio runtime), so it survives every death of the daemon and keeps the truth about which
//! refresh tokens are live. Every client rotates its refresh token on each use, with reuse
//! detection; access tokens live 1–2 s, so each of the 30 workloads refreshes about once a
//! second; a background task keeps toggling faults (HTML 403 bursts, 503 with
//! `Retry-After`, 502s, a workload-specific WAF block, all clear) so statuses keep changing.
//!
//! Each iteration starts `tokenvisor run`, waits for its ready line and for a random number
//! of token requests, then for a random delay (0 or 50–800 ms, from the seeded generator: waiting
//! for a *random moment* is the point of this test, so this bounded real-time wait is
//! deliberate), and kills it with SIGKILL. Then, with the provider settled (every request it
//! received answered):
//!
//! 1. every `<status_dir>/*.json` parses; the only other entries allowed are temp files of
//!    interrupted writes, which the next start must remove (checked at the next kill);
//!    temp files of interrupted credential writes must be gone once the workload has
//!    written its credential file again (checked at the end);
//! 2. every status describes a state that really happened: a status this run can produce,
//!    the token state it maps to, timestamps ordered and not in the future, `updated_at`
//!    never going back and `created_at` never changing across restarts, a process id of a
//!    daemon this test started, HTTP statuses the provider was made to send;
//! 3. every credential file holds a whole refresh token that the provider accepts (its live
//!    token, read without consuming it), except where a refresh was in flight at the kill:
//!    the provider's last request for that client presented the file's token, came from the
//!    daemon just killed, and rotated it; those are counted as in-flight losses, must not
//!    exceed the endpoint's concurrency limit, and must not have been reported healthy
//!    (a rotated token is durable before the workload reports healthy). Such a workload
//!    gets a fresh grant from the provider (the operator's remedy) before the next start,
//!    so the fleet stays whole and the provider never sees a rotated-away token during the
//!    storm (its reuse and `invalid_grant` counters must stay 0);
//! 4. at the end the daemon is started once more without faults: every workload whose
//!    credential file is valid must reach `running` under the new process, and those lost
//!    at the last kill must end `unauthenticated` with `invalid_grant` (not stuck retrying);
//!    so that this path runs every time, one more workload's token is used behind the
//!    daemon's back before that start (what a refresh in flight at a kill amounts to).
//!
//! `TOKENVISOR_CRASH_ITERATIONS` (default 10) sets the number of kills;
//! `TOKENVISOR_CRASH_SEED` the seed. Run with `--no-capture` to see the per-kill lines and
//! the final report; docs/RELIABILITY.md records a 50-iteration run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::TOKENVISOR;
use crate::crash_support::{Rng, check_record, list, now_ms, replace_file, whole_refresh_token};
use tokenvisor_core::status::{ErrorOutcome, TokenState};
use tokenvisor_core::{StatusRecord, Timestamp, WorkloadStatus};
use tokenvisor_idp::{
    ClientSpec, Counters, Fault, FaultScope, IdpConfig, IdpServer, RetryAfter, Times,
};
use tokenvisor_test_support::daemon::{Daemon, Launch};
use tokenvisor_test_support::wait::poll_until;

/// Workloads in the fleet.
const WORKLOADS: usize = 30;
/// `endpoint_concurrency`: at most this many refreshes can be in flight at a kill.
const CONCURRENCY: usize = 4;
/// HTTP statuses the fault thread makes the provider send.
const INJECTED: [u16; 3] = [403, 502, 503];
/// The longest access-token lifetime the provider announces.
const MAX_LIFETIME_MS: u64 = 2000;
/// Tolerance for "not in the future": the daemon's clock is the wall clock read at its start
/// advanced by the monotonic clock.
const SLACK_MS: u64 = 1000;
/// Bounds of every wait.
const READY_LIMIT: Duration = Duration::from_secs(30);
const REQUESTS_LIMIT: Duration = Duration::from_secs(30);
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
const RESUME_LIMIT: Duration = Duration::from_secs(90);
const DEFAULT_SEED: u64 = 0x7EC0_C7A5_0000_0006;

/// The files of the run.
struct Fleet {
    status_dir: PathBuf,
    /// The daemon's state directory (its journal is under it).
    state_dir: PathBuf,
    cred_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    names: Vec<String>,
}

impl Fleet {
    fn rt_file(&self, name: &str) -> PathBuf {
        self.cred_dir.join(format!("{name}.rt"))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

/// What the checks remember of a workload across kills.
#[derive(Default)]
struct History {
    /// The last `updated_at` seen (a status file, once written, never disappears).
    updated_at: Option<Timestamp>,
    /// The `created_at` first seen.
    created_at: Option<Timestamp>,
}

/// Everything the checks carry from one kill to the next.
struct Checker {
    history: BTreeMap<String, History>,
    /// Process ids of every daemon started.
    pids: BTreeSet<u32>,
    /// Status temp files seen at the previous kill (the next start must remove them).
    status_temps: BTreeSet<String>,
    /// Credential temp files seen so far.
    cred_temps: BTreeSet<String>,
}

/// What one kill left behind.
#[derive(Default)]
struct KillReport {
    statuses: BTreeMap<&'static str, usize>,
    files: usize,
    by_this_pid: usize,
    creds_valid: usize,
    lost: Vec<String>,
    status_temps: usize,
    cred_temps: usize,
    cred_temps_left_over: usize,
}

/// Run totals.
#[derive(Default)]
struct Totals {
    kills: usize,
    status_files: usize,
    cred_files: usize,
    in_flight: usize,
    kills_with_loss: usize,
    max_lost: usize,
    reseeded: usize,
    status_temps: usize,
    cred_temps: usize,
    cred_temps_left_over: usize,
}

fn env_u64(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{var}={v:?}: {e}"))
        }
        Err(_) => default,
    }
}

/// Every `/token` request the provider received has been answered (the daemon is dead, so
/// nothing new arrives): counters of outcomes add up to the requests.
fn settled(c: &Counters) -> bool {
    c.token_requests
        == c.success
            + c.invalid_grant
            + c.invalid_client
            + c.invalid_request
            + c.unsupported_grant_type
            + c.faults_total()
}

fn write_fleet(dir: &Path, idp: &IdpServer) -> Fleet {
    let status_dir = dir.join("statuses");
    let state_dir = dir.join("state");
    let cred_dir = dir.join("credentials");
    std::fs::create_dir_all(&cred_dir).unwrap();
    let mut config = format!(
        r#"[service]
status_dir = "{status}"
state_dir = "{state}"
admin_listen = "off"
log_level = "info"

[defaults]
request_timeout = "2s"
connect_timeout = "1s"
default_lifetime = "2s"
backoff_initial = "100ms"
backoff_max = "1s"
give_up_after = "0s"
max_retry_after = "2s"
endpoint_concurrency = {CONCURRENCY}
"#,
        status = status_dir.display(),
        state = state_dir.display()
    );
    let mut names = Vec::new();
    for i in 0..WORKLOADS {
        let name = format!("w{i:02}");
        let lifetime = Duration::from_millis(if i % 2 == 0 { 1000 } else { MAX_LIFETIME_MS });
        idp.register_client(
            ClientSpec::new(&name, format!("secret-{name}"))
                .with_rotation(true)
                .with_lifetime(lifetime),
        );
        let rt = cred_dir.join(format!("{name}.rt"));
        std::fs::write(&rt, idp.issue_refresh_token(&name).unwrap()).unwrap();
        let secret = cred_dir.join(format!("{name}.secret"));
        std::fs::write(&secret, format!("secret-{name}\n")).unwrap();
        config.push_str(&format!(
            r#"
[[workload]]
name = "{name}"
token_url = "{url}"
client_id = "{name}"
client_secret_file = "{secret}"
grant = "refresh_token"
refresh_token_file = "{rt}"
"#,
            url = idp.token_url(),
            secret = secret.display(),
            rt = rt.display(),
        ));
        names.push(name);
    }
    let config_path = dir.join("tokenvisor.toml");
    std::fs::write(&config_path, config).unwrap();
    Fleet {
        status_dir,
        state_dir,
        cred_dir,
        config: config_path,
        log: dir.join("daemon.log"),
        names,
    }
}

/// Keeps toggling faults until `stop`; returns how many times it changed them.
async fn fault_storm(idp: &IdpServer, names: &[String], seed: u64, stop: &AtomicBool) -> u64 {
    let mut rng = Rng::new(seed);
    let mut toggles = 0;
    let mut blocked: Vec<String> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(rng.between(100, 500))).await;
        toggles += 1;
        let times = |rng: &mut Rng, lo: u64, hi: u64| {
            Times::Next(u32::try_from(rng.between(lo, hi)).unwrap_or(1))
        };
        match rng.between(0, 99) {
            0..=34 => {
                let t = times(&mut rng, 5, 40);
                idp.set_fault(FaultScope::Global, Fault::HtmlForbidden, t);
            }
            35..=49 => {
                let t = times(&mut rng, 1, 3);
                idp.set_fault(
                    FaultScope::Global,
                    Fault::ServiceUnavailable {
                        retry_after: Some(RetryAfter::Seconds(1)),
                    },
                    t,
                );
            }
            50..=64 => {
                let t = times(&mut rng, 3, 15);
                idp.set_fault(FaultScope::Global, Fault::ServerError(502), t);
            }
            65..=79 => {
                // One workload behind a WAF block until the next "all clear".
                let i = usize::try_from(rng.between(0, names.len() as u64 - 1)).unwrap_or(0);
                let name = names[i].clone();
                idp.set_fault(
                    FaultScope::Client(name.clone()),
                    Fault::HtmlForbidden,
                    Times::Always,
                );
                blocked.push(name);
            }
            _ => {
                idp.clear_faults();
                blocked.clear();
            }
        }
    }
    toggles
}

/// The checks of one kill. `revoked`: workloads whose grant the provider revoked on purpose
/// (their lost token was presented at the final start); they must be `unauthenticated`.
async fn check_after_kill(
    fleet: &Fleet,
    idp: &IdpServer,
    checker: &mut Checker,
    pid: u32,
    started_ms: u64,
    revoked: &BTreeSet<String>,
) -> Result<KillReport, Vec<String>> {
    let mut fail: Vec<String> = Vec::new();
    let mut report = KillReport::default();

    if !poll_until(SETTLE_LIMIT, Duration::from_millis(5), || {
        settled(&idp.counters())
    })
    .await
    {
        fail.push(format!(
            "the provider did not settle within {SETTLE_LIMIT:?}: {:?}",
            idp.counters()
        ));
    }
    let counters = idp.counters();
    let expected_rejections = revoked.len() as u64;
    if counters.reuse_detected != expected_rejections
        || counters.invalid_grant != expected_rejections
    {
        fail.push(format!(
            "the provider saw {} reused refresh token(s) and answered invalid_grant {} time(s); \
             expected {expected_rejections}",
            counters.reuse_detected, counters.invalid_grant
        ));
    }
    let now = now_ms();

    // (1) the status directory: status files and temp files of interrupted writes only
    // (plus the directory's marker, the lock files, kept between writes, and the spares).
    let names: BTreeSet<String> = fleet
        .names
        .iter()
        .flat_map(|n| {
            [
                format!("{n}.json"),
                format!("{n}.lock"),
                format!(".{n}.json.spare"),
            ]
        })
        .chain([".tokenvisor".to_owned()])
        .collect();
    let listing = list(&fleet.status_dir, |f| names.contains(f));
    if !listing.other.is_empty() {
        fail.push(format!(
            "unexpected entries in the status directory: {:?}",
            listing.other
        ));
    }
    let not_cleaned: Vec<&String> = checker.status_temps.intersection(&listing.temps).collect();
    if !not_cleaned.is_empty() {
        fail.push(format!(
            "status temp files survived a restart (recovery must remove them): {not_cleaned:?}"
        ));
    }
    report.status_temps = listing.temps.len();
    checker.status_temps.clone_from(&listing.temps);

    // (2) every status: parses, and describes a state that really happened.
    let mut records: BTreeMap<&str, StatusRecord> = BTreeMap::new();
    for name in &fleet.names {
        let hist = checker.history.entry(name.clone()).or_default();
        let path = fleet.status_dir.join(format!("{name}.json"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                if hist.updated_at.is_some() {
                    fail.push(format!("{name}.json disappeared: {e}"));
                }
                continue;
            }
        };
        let rec = match StatusRecord::from_json(&bytes) {
            Ok(r) => r,
            Err(e) => {
                fail.push(format!(
                    "{name}.json does not parse ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                ));
                continue;
            }
        };
        report.files += 1;
        let allow_unauth = revoked.contains(name);
        match rec.status {
            WorkloadStatus::Unauthenticated if allow_unauth => {
                let token = rec.token.as_ref();
                let rejected = token.is_some_and(|t| {
                    t.state == TokenState::Unauthenticated
                        && t.last_error.as_ref().is_some_and(|e| {
                            e.outcome == ErrorOutcome::Permanent
                                && e.error_code.as_deref() == Some("invalid_grant")
                        })
                });
                if !rejected {
                    fail.push(format!(
                        "{name}: unauthenticated without an invalid_grant: {rec:?}"
                    ));
                }
            }
            WorkloadStatus::Running
            | WorkloadStatus::AuthRetrying
            | WorkloadStatus::Unauthenticated
            | WorkloadStatus::Starting
            | WorkloadStatus::Stopped
            | WorkloadStatus::Error => {
                if let Err(e) = check_record(&rec, now, SLACK_MS, MAX_LIFETIME_MS, &INJECTED) {
                    fail.push(format!("{name}: {e}: {rec:?}"));
                }
            }
        }
        if !checker.pids.contains(&rec.process_id) {
            fail.push(format!(
                "{name}: process_id {} is no daemon of this test",
                rec.process_id
            ));
        }
        if rec.process_id == pid {
            report.by_this_pid += 1;
        }
        if let Some(prev) = hist.updated_at
            && rec.updated_at < prev
        {
            fail.push(format!(
                "{name}: updated_at went back from {prev} to {}",
                rec.updated_at
            ));
        }
        if let Some(created) = hist.created_at
            && rec.created_at != created
        {
            fail.push(format!(
                "{name}: created_at changed from {created} to {}",
                rec.created_at
            ));
        }
        hist.updated_at = Some(rec.updated_at);
        hist.created_at.get_or_insert(rec.created_at);
        *report.statuses.entry(rec.status.as_str()).or_default() += 1;
        records.insert(name.as_str(), rec);
    }

    // (3) every credential file: a refresh token the provider accepts, or a refresh that was
    // in flight at the kill.
    let cred_names: BTreeSet<String> = fleet
        .names
        .iter()
        .flat_map(|n| {
            [
                format!("{n}.rt"),
                format!("{n}.rt.lock"),
                format!("{n}.secret"),
            ]
        })
        .collect();
    let listing = list(&fleet.cred_dir, |f| cred_names.contains(f));
    if !listing.other.is_empty() {
        fail.push(format!(
            "unexpected entries in the credential directory: {:?}",
            listing.other
        ));
    }
    report.cred_temps = listing.temps.difference(&checker.cred_temps).count();
    report.cred_temps_left_over = listing.temps.intersection(&checker.cred_temps).count();
    checker.cred_temps.extend(listing.temps);

    // The journal is the credential's record (a rotated token is committed there first and
    // written back to its file after): read once the daemon is dead.
    let journal = tokenvisor::journal::Journal::open(&tokenvisor::journal::dir_for(
        &fleet.state_dir,
        &fleet.status_dir,
    ))
    .ok();
    let journal_token = |name: &str| -> Option<String> {
        let name = tokenvisor_core::WorkloadName::new(name).ok()?;
        let entry = journal.as_ref()?.get(&name).ok()??;
        Some(entry.credential?.refresh_token?.expose().to_owned())
    };
    for name in &fleet.names {
        let file = fleet.rt_file(name);
        let token = match std::fs::read_to_string(&file) {
            Ok(t) => t.trim_end().to_owned(),
            Err(e) => {
                fail.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        if !whole_refresh_token(&token) {
            fail.push(format!(
                "{name}.rt does not hold a whole refresh token ({} bytes)",
                token.len()
            ));
            continue;
        }
        let live = idp.live_refresh_tokens(name);
        if revoked.contains(name) {
            if !live.is_empty() {
                fail.push(format!("{name}: its grant should have been revoked"));
            }
            continue;
        }
        if live.len() != 1 {
            fail.push(format!(
                "{name}: the provider has {} live grant(s) instead of 1 (a rotated-away token \
                 was presented?)",
                live.len()
            ));
            continue;
        }
        if live[0] == token {
            report.creds_valid += 1;
            continue;
        }
        // The file lags a journal that holds the live token: nothing is lost (the restart
        // presents the journal's token, and writes it back to the file).
        let journal = journal_token(name);
        if journal.as_deref() == Some(live[0].as_str()) {
            report.creds_valid += 1;
            continue;
        }
        // The durable token is the journal's when it is newer than the file: a request
        // presenting either one was the daemon's last.
        let last = idp.last_request(name);
        let in_flight = last.as_ref().is_some_and(|r| {
            let presented = r.param("refresh_token");
            (presented == Some(token.as_str())
                || presented.is_some() && presented == journal.as_deref())
                && r.at_unix_ms >= started_ms
        });
        if !in_flight {
            fail.push(format!(
                "{name}.rt holds a refresh token the provider no longer accepts, and no refresh \
                 presenting it was in flight at the kill (last request: {:?})",
                last.map(|r| (
                    r.at_unix_ms,
                    r.param("refresh_token") == Some(token.as_str())
                ))
            ));
            continue;
        }
        // In flight: the provider rotated it, the daemon died before the new token was on
        // disk. It must not have reported that refresh as a success.
        let asked_at = last.map_or(0, |r| r.at_unix_ms);
        if let Some(rec) = records.get(name.as_str())
            && let Some(t) = rec.token.as_ref()
            && t.state == TokenState::Healthy
            && t.since.unwrap_or(rec.updated_at).as_millis() >= asked_at
        {
            fail.push(format!(
                "{name}: reported healthy after a refresh (asked at {asked_at} ms) whose \
                 rotated token never reached its file: {rec:?}"
            ));
        }
        report.lost.push(name.clone());
    }
    if report.lost.len() > CONCURRENCY {
        fail.push(format!(
            "{} refreshes lost at one kill ({:?}), more than could be in flight ({CONCURRENCY})",
            report.lost.len(),
            report.lost
        ));
    }
    if fail.is_empty() {
        Ok(report)
    } else {
        Err(fail)
    }
}

/// Refreshes `name`'s token at the provider as the daemon would, without writing the rotated
/// token back: the file now holds a rotated-away token.
async fn use_behind_the_back(fleet: &Fleet, idp: &IdpServer, name: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = std::fs::read_to_string(fleet.rt_file(name)).unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = http
        .post(idp.token_url())
        .basic_auth(name, Some(format!("secret-{name}")))
        // The token is `rt_` and alphanumerics: nothing to encode.
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={}",
            token.trim_end()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    assert!(!idp.live_refresh_tokens(name).contains(&token));
}

/// The operator's remedy for a lost refresh token: a new grant, written to the file.
fn reseed(fleet: &Fleet, idp: &IdpServer, name: &str) {
    idp.revoke_client_grants(name);
    let token = idp.issue_refresh_token(name).unwrap();
    replace_file(&fleet.rt_file(name), &token);
}

fn summary(statuses: &BTreeMap<&str, usize>) -> String {
    statuses
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until every workload is resumed by the daemon `pid`: `running` and healthy, or, for
/// those in `lost`, `unauthenticated` by `invalid_grant`. Returns the ones that are not.
async fn wait_resumed(fleet: &Fleet, pid: u32, lost: &BTreeSet<String>) -> Vec<String> {
    let resumed = |name: &String| -> bool {
        let path = fleet.status_dir.join(format!("{name}.json"));
        let Some(rec) = std::fs::read(&path)
            .ok()
            .and_then(|b| StatusRecord::from_json(&b).ok())
        else {
            return false;
        };
        let Some(token) = rec.token.as_ref() else {
            return false;
        };
        if rec.process_id != pid {
            return false;
        }
        if lost.contains(name) {
            rec.status == WorkloadStatus::Unauthenticated
                && token
                    .last_error
                    .as_ref()
                    .is_some_and(|e| e.error_code.as_deref() == Some("invalid_grant"))
        } else {
            rec.status == WorkloadStatus::Running && token.state == TokenState::Healthy
        }
    };
    poll_until(RESUME_LIMIT, Duration::from_millis(50), || {
        fleet.names.iter().all(resumed)
    })
    .await;
    fleet
        .names
        .iter()
        .filter(|n| !resumed(n))
        .cloned()
        .collect()
}

/// Starts the fleet's daemon with its stderr appended to the fleet's log; an error (the
/// daemon killed) if it is not ready within [`READY_LIMIT`].
async fn start(fleet: &Fleet) -> Result<Daemon, String> {
    let launch = Launch {
        stderr_file: Some(fleet.log.clone()),
        ready_within: READY_LIMIT,
        ..Launch::default()
    };
    Daemon::try_start(TOKENVISOR, &fleet.config, launch).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_refresh_storm_leaves_truthful_statuses_and_usable_credentials() {
    let iterations = env_u64("TOKENVISOR_CRASH_ITERATIONS", 10);
    let seed = env_u64("TOKENVISOR_CRASH_SEED", DEFAULT_SEED);
    assert!(iterations >= 1, "TOKENVISOR_CRASH_ITERATIONS must be >= 1");
    println!(
        "crash suite: {iterations} kill(s), {WORKLOADS} workloads, endpoint_concurrency \
         {CONCURRENCY}, seed {seed:#x}"
    );

    let idp = Arc::new(
        IdpServer::start(IdpConfig::default().with_access_token_lifetime(Duration::from_secs(2)))
            .await
            .unwrap(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let fleet = write_fleet(tmp.path(), &idp);

    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let (idp, stop, names) = (idp.clone(), stop.clone(), fleet.names.clone());
        tokio::spawn(async move { fault_storm(&idp, &names, seed ^ 0xFA17, &stop).await })
    };
    // Stops the fault task even when a check panics.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let stop_guard = StopOnDrop(stop);

    let mut rng = Rng::new(seed);
    let mut checker = Checker {
        history: BTreeMap::new(),
        pids: BTreeSet::new(),
        status_temps: BTreeSet::new(),
        cred_temps: BTreeSet::new(),
    };
    let mut totals = Totals::default();
    let none = BTreeSet::new();
    let mut last_lost: BTreeSet<String> = BTreeSet::new();
    let run_started = tokio::time::Instant::now();

    for i in 1..=iterations {
        let last = i == iterations;
        let want = rng.between(0, 3 * WORKLOADS as u64);
        let delay = if rng.chance(25) {
            0
        } else {
            rng.between(50, 800)
        };
        let base = idp.counters();
        let started_ms = now_ms();
        let daemon = start(&fleet)
            .await
            .unwrap_or_else(|e| panic!("kill {i}: {e}\n{}", fleet.log_tail()));
        let pid = daemon.pid();
        checker.pids.insert(pid);
        let enough = poll_until(REQUESTS_LIMIT, Duration::from_millis(2), || {
            idp.counters().token_requests >= base.token_requests + want
        })
        .await;
        assert!(
            enough,
            "kill {i}: the daemon sent fewer than {want} token requests in {REQUESTS_LIMIT:?}\n{}",
            fleet.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(delay)).await;
        daemon.kill9();
        totals.kills += 1;

        let report = check_after_kill(&fleet, &idp, &mut checker, pid, started_ms, &none)
            .await
            .unwrap_or_else(|fails| {
                panic!(
                    "kill {i} (pid {pid}, after {want} requests + {delay} ms):\n  {}\n--- daemon \
                     log (tail) ---\n{}",
                    fails.join("\n  "),
                    fleet.log_tail()
                )
            });
        let after = idp.counters();
        println!(
            "kill {i:>2}/{iterations}: pid {pid} after {want:>2} requests + {delay:>3} ms | \
             provider +{} requests (+{} rotations, +{} faults) | {} status files ({}; {} by \
             this pid) | credentials valid {}, in flight {}{} | temp files: status {}, \
             credentials {} new, {} older",
            after.token_requests - base.token_requests,
            after.success - base.success,
            after.faults_total() - base.faults_total(),
            report.files,
            summary(&report.statuses),
            report.by_this_pid,
            report.creds_valid,
            report.lost.len(),
            if report.lost.is_empty() {
                String::new()
            } else {
                format!(" {:?}", report.lost)
            },
            report.status_temps,
            report.cred_temps,
            report.cred_temps_left_over,
        );
        totals.status_files += report.files;
        totals.cred_files += fleet.names.len();
        totals.in_flight += report.lost.len();
        totals.kills_with_loss += usize::from(!report.lost.is_empty());
        totals.max_lost = totals.max_lost.max(report.lost.len());
        totals.status_temps += report.status_temps;
        totals.cred_temps += report.cred_temps;
        if last {
            last_lost = report.lost.into_iter().collect();
        } else {
            for name in &report.lost {
                reseed(&fleet, &idp, name);
                totals.reseeded += 1;
            }
        }
    }
    let storm_secs = run_started.elapsed().as_secs_f64();

    // (4) after a restart every workload resumes: faults off, one more start.
    drop(stop_guard);
    let toggles = storm.await.expect("the fault task");
    idp.clear_faults();
    // So that the "lost token → unauthenticated, not stuck" path is exercised in every run,
    // one more loss is made on purpose: the token of a workload is used behind the daemon's
    // back, exactly what a refresh in flight at a kill does.
    let simulated = fleet
        .names
        .iter()
        .find(|n| !last_lost.contains(*n))
        .cloned()
        .expect("a workload not lost");
    use_behind_the_back(&fleet, &idp, &simulated).await;
    last_lost.insert(simulated.clone());
    let before_final = idp.counters();
    let temps_before_final = checker.cred_temps.clone();
    let started_ms = now_ms();
    let daemon = start(&fleet)
        .await
        .unwrap_or_else(|e| panic!("final start: {e}\n{}", fleet.log_tail()));
    let pid = daemon.pid();
    checker.pids.insert(pid);
    let stuck = wait_resumed(&fleet, pid, &last_lost).await;
    assert!(
        stuck.is_empty(),
        "after the final restart these workloads did not resume (running, or unauthenticated \
         for the {} lost at the last kill {last_lost:?}) within {RESUME_LIMIT:?}: {stuck:?}\n{}",
        last_lost.len(),
        fleet.log_tail()
    );
    // The resumed fleet is killed once more and checked like every other kill.
    daemon.kill9();
    totals.kills += 1;
    let report = check_after_kill(&fleet, &idp, &mut checker, pid, started_ms, &last_lost)
        .await
        .unwrap_or_else(|fails| {
            panic!(
                "final kill (pid {pid}):\n  {}\n--- daemon log (tail) ---\n{}",
                fails.join("\n  "),
                fleet.log_tail()
            )
        });
    totals.status_files += report.files;
    totals.cred_files += fleet.names.len();
    totals.in_flight += report.lost.len();
    totals.kills_with_loss += usize::from(!report.lost.is_empty());
    totals.max_lost = totals.max_lost.max(report.lost.len());
    totals.status_temps += report.status_temps;
    totals.cred_temps += report.cred_temps;
    // Every workload but those lost at the last kill wrote its credential file under the
    // final daemon (each success rotates): the temp files of earlier kills must be gone.
    let cred_names: BTreeSet<String> = fleet.names.iter().map(|n| format!("{n}.rt")).collect();
    let now_present = list(&fleet.cred_dir, |f| cred_names.contains(f)).temps;
    let left_over: Vec<&String> = now_present
        .intersection(&temps_before_final)
        .filter(|t| {
            crate::crash_support::temp_target(t)
                .and_then(|f| f.strip_suffix(".rt"))
                .is_none_or(|n| !last_lost.contains(n))
        })
        .collect();
    assert!(
        left_over.is_empty(),
        "temp files of interrupted credential writes survived a later write of the same \
         file: {left_over:?}"
    );
    totals.cred_temps_left_over = left_over.len();
    let end = idp.counters();
    println!(
        "final start: pid {pid}: {} running, {} unauthenticated (invalid_grant: lost at the last \
         kill, and {simulated} on purpose: {last_lost:?}); killed again: in flight {}",
        WORKLOADS - last_lost.len(),
        last_lost.len(),
        report.lost.len()
    );
    println!(
        "crash report: seed {seed:#x}, iterations {iterations}, kills {} (incl. the final one), \
         status files checked {}, credential files checked {}, in-flight losses {} (at {} \
         kill(s), at most {} per kill; bound {CONCURRENCY}), reseeded {}, status temp files \
         seen {} (all removed by the next start), credential temp files seen {} (left over after \
         a later write: {}), provider: {} token requests, {} rotations, {} faults applied ({} \
         toggles), reuse detected {} / invalid_grant {} (before the final start: {} / {}), \
         storm {:.1} s",
        totals.kills,
        totals.status_files,
        totals.cred_files,
        totals.in_flight,
        totals.kills_with_loss,
        totals.max_lost,
        totals.reseeded,
        totals.status_temps,
        totals.cred_temps,
        totals.cred_temps_left_over,
        end.token_requests,
        end.success,
        end.faults_total(),
        toggles,
        end.reuse_detected,
        end.invalid_grant,
        before_final.reuse_detected,
        before_final.invalid_grant,
        storm_secs,
    );
}

/// A daemon killed while writing a rotated refresh token leaves the temp file of that write
/// (`.<file>.XXXXXX`, holding a refresh token) next to the credential file. Status temp files
/// are removed by the next start's recovery; credential temp files must not pile up either:
/// the next write of that credential file removes them.
#[tokio::test]
async fn a_credential_write_removes_temp_files_left_by_a_killed_daemon() {
    use tokenvisor::credentials::{CredentialStore, RotateOutcome};
    use tokenvisor::spec::{GrantSpec, WorkloadSpec};
    use tokenvisor_core::{Secret, WorkloadName};

    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("w.rt");
    std::fs::write(&rt, "rt_old").unwrap();
    // Left by a killed writer of w.rt; and files that are not w.rt's temp files.
    let stale = [".w.rt.AbC123", ".w.rt.x9Y8z7"];
    let kept = [".w.rt.keep", ".other.rt.AbC123", "w.rt.AbC123", "notes"];
    for f in stale.iter().chain(&kept) {
        std::fs::write(dir.path().join(f), "rt_leftover").unwrap();
    }
    let spec = WorkloadSpec::new(
        WorkloadName::new("w").unwrap(),
        "http://127.0.0.1:9/token".parse().unwrap(),
        "w",
        GrantSpec::RefreshToken {
            token: Secret::from("rt_old"),
            file: Some(rt.clone()),
        },
    );
    let store = CredentialStore::new(&spec);
    let outcome = store.store_rotated(0, Secret::from("rt_new")).await;
    assert_eq!(outcome, RotateOutcome::Stored);
    assert_eq!(std::fs::read_to_string(&rt).unwrap(), "rt_new");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want: Vec<String> = kept.iter().map(|s| (*s).to_owned()).collect();
    want.push("w.rt".to_owned());
    want.sort();
    assert_eq!(
        left, want,
        "stale temp files of w.rt are removed, nothing else"
    );
}
