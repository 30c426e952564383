//! `tokenvisor soak`: load and soak runs against an embedded provider (tokenvisor-idp on
//! 127.0.0.1), in one process, stopping by themselves.
//!
//! Scenarios (`--scenario`, one submodule each; each prints a human summary and, with
//! `--json`, one JSON object as the last line of stdout):
//! - `soak` (the default, `endurance.rs`): N workloads with short token lifetimes under seeded
//!   chaos (WAF 403s, 429s, 500s, delays, dropped connections, rare revoked grants) for
//!   `--duration`, then invariants: every status file equals its workload's final record, no
//!   workload is unauthenticated unless chaos revoked its grant, RSS does not keep growing.
//! - `storm` (`storm.rs`): N healthy workloads all made due at once (one force-refresh burst);
//!   refreshes/s, and with `--baseline` a bare reqwest loop against the same server.
//! - `scale` (`scale.rs`): time to spawn N workloads and reach all-healthy; RSS per workload.
//! - `burst` (`burst.rs`): every workload enters `auth_retrying` together (a global 503); time
//!   until every status file says so durably, writes vs status changes, and bare
//!   atomic-write loops (sequential, best parallel) on the same disk.
//! - `timers` (`timers.rs`): refreshes firing continuously for `--duration`; timer lateness.
//! - `recovery` (`recovery.rs`): restart a runtime over N status files; time back to steady
//!   state, each workload's state checked.
//!
//! Exit status: 0 when every check of the scenario held; 1 when one failed (or on an internal
//! error); 2 on usage errors. No timing is ever a check: numbers are reported, not judged.
//! Secrets (client secrets, refresh and access tokens) are never printed.

use std::path::PathBuf;
use std::time::Duration;

use crate::Context as _;
use serde_json::{Map, Value};

mod bare;
mod burst;
mod endurance;
mod harness;
mod profile;
mod recorder;
mod recovery;
mod scale;
mod storm;
mod timers;

use profile::Profile;

/// Arguments of `tokenvisor soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// What to run: soak (chaos + invariants), storm, scale, burst, timers, recovery.
    #[arg(long, value_enum, default_value_t = Scenario::Soak)]
    scenario: Scenario,
    /// How many workloads.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    workloads: u32,
    /// How long the soak window (soak) or the measurement (timers) lasts, once every
    /// workload is healthy. Other scenarios ignore it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// A profile (TOML; see config/soak-default.toml, embedded as the default, and
    /// config/soak-calm.toml and config/soak-rotation-off.toml).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Where status files go (must be empty or absent; default: a temporary directory,
    /// removed at the end).
    #[arg(long, value_name = "DIR")]
    status_dir: Option<PathBuf>,
    /// storm only: also run a bare reqwest loop (same client settings, concurrency and
    /// server) in the same run, and report the ratio.
    #[arg(long)]
    baseline: bool,
    /// Overrides the profile's token lifetime (provider.lifetime for soak and timers,
    /// provider.quiet_lifetime for the others).
    #[arg(long, value_parser = parse_duration)]
    lifetime: Option<Duration>,
    /// burst only: how many files the bare atomic-write loops write (default: as many as
    /// there are workloads).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    bare_files: Option<u32>,
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Chaos for `--duration`, then invariants.
    Soak,
    /// All workloads due at once: refreshes/s (and the bare baseline).
    Storm,
    /// Spawn N, time to all-healthy, RSS per workload.
    Scale,
    /// Every workload enters auth_retrying together: durable status burst.
    Burst,
    /// Timer lateness with refreshes firing continuously.
    Timers,
    /// Runtime restart over N status files.
    Recovery,
}

impl Scenario {
    fn as_str(self) -> &'static str {
        match self {
            Scenario::Soak => "soak",
            Scenario::Storm => "storm",
            Scenario::Scale => "scale",
            Scenario::Burst => "burst",
            Scenario::Timers => "timers",
            Scenario::Recovery => "recovery",
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be above 0s".into());
    }
    Ok(d)
}

/// The resolved options of one run.
#[derive(Debug)]
pub(crate) struct Options {
    /// Workloads.
    pub(crate) n: u32,
    /// `--duration`.
    pub(crate) duration: Duration,
    /// The profile.
    pub(crate) profile: Profile,
    /// `--status-dir`.
    pub(crate) status_dir: Option<PathBuf>,
    /// `--baseline`.
    pub(crate) baseline: bool,
    /// `--lifetime`.
    pub(crate) lifetime: Option<Duration>,
    /// `--bare-files`.
    pub(crate) bare_files: Option<u32>,
    /// `--json`: progress lines are not printed.
    pub(crate) json: bool,
}

impl Options {
    /// The token lifetime of the soak and timers scenarios.
    pub(crate) fn short_lifetime(&self) -> Duration {
        self.lifetime.unwrap_or(self.profile.provider.lifetime)
    }

    /// The token lifetime of the other scenarios.
    pub(crate) fn quiet_lifetime(&self) -> Duration {
        self.lifetime
            .unwrap_or(self.profile.provider.quiet_lifetime)
    }

    /// Prints a progress line (on stderr with `--json`).
    pub(crate) fn progress(&self, line: &str) {
        // With `--json`, stdout is the report alone: progress goes to stderr, beside the
        // waits' progress bars.
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// What a scenario found: summary lines, the JSON object, and whether its checks held.
#[derive(Debug, Default)]
pub(crate) struct Report {
    lines: Vec<String>,
    json: Map<String, Value>,
    failures: Vec<String>,
}

impl Report {
    /// A summary line.
    pub(crate) fn line(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// A JSON field.
    pub(crate) fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.to_owned(), value.into());
    }

    /// A failed check (the run exits 1).
    pub(crate) fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    /// Whether every check held so far.
    pub(crate) fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Seconds with millisecond precision, for JSON.
pub(crate) fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

/// Rounds to three decimals (JSON stays readable).
pub(crate) fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// `a / b`, or 0 when `b` is 0.
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { round3(a / b) } else { 0.0 }
}

/// Runs `tokenvisor soak`. Returns the exit code.
pub fn run(args: &SoakArgs) -> crate::Result<u8> {
    if args.baseline && args.scenario != Scenario::Storm {
        return Err(crate::Error::usage(
            clap::error::ErrorKind::ArgumentConflict,
            "--baseline applies to --scenario storm only".into(),
        ));
    }
    if args.bare_files.is_some() && args.scenario != Scenario::Burst {
        return Err(crate::Error::usage(
            clap::error::ErrorKind::ArgumentConflict,
            "--bare-files applies to --scenario burst only".into(),
        ));
    }
    if args.lifetime.is_some_and(|l| l < Duration::from_secs(2)) {
        return Err(crate::Error::usage(
            clap::error::ErrorKind::InvalidValue,
            "--lifetime must be at least 2s".into(),
        ));
    }
    if let Some(dir) = &args.status_dir
        && let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(crate::Error::usage(
            clap::error::ErrorKind::InvalidValue,
            format!(
                "--status-dir {} is not empty: a soak run needs a directory of its own (its \
                 checks compare every file with a workload of this run)",
                dir.display()
            ),
        ));
    }
    let profile = match &args.profile {
        Some(path) => {
            if !path.is_file() {
                return Err(crate::Error::usage(
                    clap::error::ErrorKind::InvalidValue,
                    format!("no such profile file: {}", path.display()),
                ));
            }
            Profile::load(path)?
        }
        None => Profile::embedded()?,
    };
    let opts = Options {
        n: args.workloads,
        duration: args.duration,
        profile,
        status_dir: args.status_dir.clone(),
        baseline: args.baseline,
        lifetime: args.lifetime,
        bare_files: args.bare_files,
        json: args.json,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tokenvisor-soak")
        .build()
        .context("cannot start the async runtime")?;
    let scenario = args.scenario;
    let report = rt.block_on(async {
        let metrics = recorder::install();
        let upkeep = metrics
            .as_ref()
            .map(|m| recorder::spawn_upkeep(m.prometheus.clone()));
        let report = match scenario {
            Scenario::Soak => endurance::run(&opts, metrics.as_ref()).await,
            Scenario::Storm => storm::run(&opts).await,
            Scenario::Scale => scale::run(&opts).await,
            Scenario::Burst => burst::run(&opts).await,
            Scenario::Timers => timers::run(&opts, metrics.as_ref()).await,
            Scenario::Recovery => recovery::run(&opts).await,
        };
        if let Some(u) = upkeep {
            u.abort();
        }
        report
    })?;
    // Stop the runtime's leftover tasks (connection pools, timers) without waiting on them.
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(finish(scenario, report, args.json))
}

fn finish(scenario: Scenario, mut report: Report, json: bool) -> u8 {
    println!();
    println!("{} summary", scenario.as_str());
    for line in &report.lines {
        println!("  {line}");
    }
    let ok = report.ok();
    if ok {
        println!("  ok: every check held");
    } else {
        for f in &report.failures {
            println!("  FAIL: {f}");
        }
    }
    report
        .json
        .insert("scenario".into(), scenario.as_str().into());
    report.json.insert("checks_ok".into(), Value::Bool(ok));
    report.json.insert(
        "failures".into(),
        Value::Array(
            report
                .failures
                .iter()
                .map(|f| Value::from(f.as_str()))
                .collect(),
        ),
    );
    if json {
        println!("{}", Value::Object(report.json));
    }
    if ok {
        crate::EXIT_OK
    } else {
        crate::EXIT_PROBLEM
    }
}
