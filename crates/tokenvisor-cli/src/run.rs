//! `tokenvisor run --config FILE`: the daemon.
//!
//! Loads the configuration, takes every lock (the status directory's marker and each
//! refresh-token file's, see [`tokenvisor::locks`]: a second daemon on the same directory or
//! credential file exits 1 here, naming the first one's PID), binds the admin listener,
//! and only then recovers the status directory, starts the runtime and one workload per
//! `[[workload]]` (the first token request), serves the admin API, then waits for signals:
//! SIGHUP reloads the file and reconciles (added workloads start, removed ones stop and are
//! marked `stopped`, changed ones restart; a bad file is reported and changes nothing);
//! SIGINT/SIGTERM shut down gracefully, every status flushed, exit 0.
//!
//! When ready it prints one JSON line to stdout, for scripts and tests:
//! `{"event":"ready","admin":"127.0.0.1:7878"|null,"workloads":N,"status_dir":"…","pid":P}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokenvisor::config::{self, AdminListen, Config, LogFormat};
use tokenvisor::oauth::{HttpConfig, HttpTransport};
use tokenvisor::runtime::{Runtime, RuntimeConfig};
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor_core::{Secret, WorkloadName};
use tokio::signal::unix::{SignalKind, signal};

use crate::admin;

/// How long shutdown keeps retrying failed status writes before reporting them.
const FLUSH_DEADLINE: Duration = Duration::from_secs(30);

/// Arguments of `tokenvisor run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The configuration file (TOML; see config/tokenvisor.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
}

/// Runs the daemon until SIGINT/SIGTERM. Returns the exit code.
pub(crate) fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let cfg = match config::load(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return Ok(crate::EXIT_PROBLEM);
        }
    };
    init_logging(&cfg);
    if let Err(code) = take_locks(&cfg) {
        return Ok(code);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tokenvisor")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(daemon(args.config.clone(), cfg))
}

/// Start-up, before any request can be sent: logs the configuration's warnings, then takes
/// the status directory and every refresh-token file for this process (held until exit).
/// When another daemon holds one, or the directory holds foreign files, says why (naming
/// the holder's PID) and returns the exit code.
fn take_locks(cfg: &Config) -> Result<(), u8> {
    for line in cfg.warning_lines() {
        tracing::warn!("{line}");
    }
    match tokenvisor::locks::acquire_for(&cfg.service.status_dir, &cfg.workloads) {
        Ok(claim) => {
            if let Some(mode) = claim.loose_mode {
                tracing::warn!(
                    status_dir = %cfg.service.status_dir.display(),
                    "status directory is open to group or others (mode {mode:04o}); left as it \
                     is (status files are 0600)"
                );
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("{e}");
            Err(crate::EXIT_PROBLEM)
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.service.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.service.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn daemon(path: PathBuf, cfg: Config) -> anyhow::Result<u8> {
    let admin_token = match &cfg.service.admin_token_file {
        Some(f) => Some(
            tokenvisor::credentials::read_secret_file(f)
                .with_context(|| format!("admin_token_file {}", f.display()))?,
        ),
        None => None,
    };
    let metrics = admin::install_metrics_recorder().context("cannot install metrics")?;
    let upkeep = admin::spawn_metrics_upkeep(metrics.clone());
    let transport = HttpTransport::new(HttpConfig {
        connect_timeout: cfg.defaults.connect_timeout,
        ..HttpConfig::default()
    })
    .context("cannot build the HTTP client")?;
    // Bound before the runtime starts: a daemon that cannot serve exits before any request.
    let admin_listener = match cfg.service.admin_listen.addr() {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (service.admin_listen)"))?,
        ),
        None => None,
    };
    let runtime = Runtime::start(RuntimeConfig::new(
        cfg.service.status_dir.clone(),
        Arc::new(transport),
    ))
    .await
    .context("cannot start tokenvisor")?;
    let recovery = runtime.recovery();
    tracing::info!(
        status_dir = %cfg.service.status_dir.display(),
        recovered = recovery.recovered,
        corrupted = recovery.corrupted.len(),
        "status directory recovered"
    );

    let mut current: BTreeMap<WorkloadName, WorkloadSpec> = BTreeMap::new();
    for spec in cfg.workloads {
        start_workload(&runtime, &mut current, spec).await;
    }

    let admin_addr = match admin_listener {
        Some(listener) => {
            let local = listener.local_addr()?;
            let state = admin::AdminState::new(runtime.clone(), admin_token, Some(metrics));
            let app = admin::router(state);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("admin API stopped: {e}");
                }
            });
            tracing::info!(%local, "admin API listening");
            Some(local)
        }
        None => None,
    };
    println!(
        "{}",
        serde_json::json!({
            "event": "ready",
            "admin": admin_addr.map(|a| a.to_string()),
            "workloads": current.len(),
            "status_dir": cfg.service.status_dir,
            "pid": std::process::id(),
        })
    );

    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&path, &cfg.service.admin_listen, &runtime, &mut current).await,
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
        }
    }
    let report = runtime.shutdown(FLUSH_DEADLINE).await.context("shutdown")?;
    upkeep.abort();
    if report.failed.is_empty() {
        tracing::info!(written = report.written, "every status flushed; bye");
        Ok(0)
    } else {
        tracing::error!(
            failed = report.failed.len(),
            "status files could not be written before the deadline"
        );
        Ok(crate::EXIT_PROBLEM)
    }
}

async fn start_workload(
    runtime: &Runtime,
    current: &mut BTreeMap<WorkloadName, WorkloadSpec>,
    spec: WorkloadSpec,
) {
    let name = spec.name.clone();
    // A workload added by a reload takes its refresh-token file's lock first.
    if let Err(e) = tokenvisor::locks::hold_credentials(&spec) {
        tracing::error!(workload = %name, "cannot start: {e}");
        return;
    }
    match runtime.add(spec.clone()).await {
        Ok(_) => {
            current.insert(name, spec);
        }
        Err(e) => tracing::error!(workload = %name, "cannot start: {e}"),
    }
}

/// SIGHUP: reload the file and reconcile. A bad file changes nothing.
async fn reload(
    path: &Path,
    listen: &AdminListen,
    runtime: &Runtime,
    current: &mut BTreeMap<WorkloadName, WorkloadSpec>,
) {
    let cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("SIGHUP: configuration not reloaded, nothing changed:\n{e}");
            return;
        }
    };
    if &cfg.service.admin_listen != listen {
        tracing::warn!("SIGHUP: [service] changes take effect at the next start");
    }
    let mut wanted: BTreeMap<WorkloadName, WorkloadSpec> = cfg
        .workloads
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let (mut added, mut removed, mut changed) = (0, 0, 0);
    let names: Vec<WorkloadName> = current.keys().cloned().collect();
    for name in names {
        match wanted.remove(&name) {
            None => {
                if runtime.remove(&name).await.unwrap_or(false) {
                    removed += 1;
                }
                current.remove(&name);
            }
            Some(spec) => {
                let same = current
                    .get(&name)
                    .is_some_and(|old| same_workload(old, &spec));
                if !same {
                    let _ = runtime.remove(&name).await;
                    current.remove(&name);
                    start_workload(runtime, current, spec).await;
                    changed += 1;
                }
            }
        }
    }
    for (_, spec) in wanted {
        start_workload(runtime, current, spec).await;
        added += 1;
    }
    tracing::info!(
        added,
        removed,
        changed,
        total = current.len(),
        "SIGHUP: reloaded"
    );
}

/// Two specs describe the same workload, ignoring the refresh token's current value (the
/// file it is read from changes with every rotation).
fn same_workload(a: &WorkloadSpec, b: &WorkloadSpec) -> bool {
    fn normal(s: &WorkloadSpec) -> WorkloadSpec {
        let mut s = s.clone();
        if let GrantSpec::RefreshToken { token, .. } = &mut s.grant {
            *token = Secret::from("");
        }
        s
    }
    normal(a) == normal(b)
}
