//! `tokenvisor run --config FILE`: the daemon.
//!
//! Loads the configuration, takes every lock (the status directory's marker and each
//! refresh-token file's, see [`tokenvisor::hold_credentials`]: a second daemon on the same directory or
//! credential file exits 1 here, naming the first one's PID), binds the admin listener,
//! and only then recovers the status directory, starts the runtime and one workload per
//! `[[workload]]` (the first token request), serves the admin API, then waits for signals:
//! SIGHUP reloads the file and reconciles (added workloads start, removed ones stop and are
//! marked `stopped`, changed ones restart; a bad file is reported and changes nothing);
//! SIGINT/SIGTERM shut down gracefully, every status flushed, exit 0.
//!
//! ## Reloads never block the signal loop
//! A SIGHUP only wakes the reloader task ([`Reloader`]); the loop goes straight back to
//! waiting, so SIGTERM is handled at once even while a reload is stuck. The reloader reads
//! the configuration and the secret files it names on the blocking pool, bounded by
//! [`RELOAD_READ_TIMEOUT`]: a FIFO or a hung mount makes the reload fail ("timed out",
//! nothing changed), not hang. While a read is still stuck no second one starts (each would
//! pin another thread). SIGHUPs that arrive while a reload runs coalesce into one more
//! reload after it. At exit the process does not wait for a stuck read.
//!
//! ## One reconcile path
//! Start-up and every reload call [`Runtime::reconcile`] (start-up reconciles from nothing),
//! with [`tokenvisor::hold_credentials`] as the hook run before each workload starts:
//! a workload added by a reload takes its refresh-token file's lock then (at start-up every
//! lock is already held). The daemon keeps no list of its own: the runtime's supervisor is
//! the one account of what runs.
//!
//! ## What a reload restarts
//! Only workloads whose own resolved settings changed (a `[defaults]` change restarts the
//! workloads that inherit the changed key, not those that override it). The refresh token's
//! current value is not a setting (the file changes with every rotation). Endpoint settings
//! (`endpoint_concurrency`) belong to the endpoint, not to a workload: a change resizes the
//! endpoint's live gate ([`Runtime::set_endpoint_concurrency`]) and restarts nothing. A
//! restarted workload is removed first (which waits for its refresh in flight), and its
//! refresh-token file is read again before it starts, so it presents the live token.
//!
//! ## `[service]` on reload
//! `log_level` is applied at once: the logger's filter is reloadable
//! (`tracing_subscriber::reload`), unless `RUST_LOG` chose it (it wins, at start and on
//! reload). Every other `[service]` key (directories, the admin listener and its limits and
//! token, the log format) is set up once: a change is named in a warning ("takes effect at
//! the next start") and not applied.
//!
//! When ready it prints one JSON line to stdout, for scripts and tests:
//! `{"event":"ready","admin":"127.0.0.1:7878"|null,"admin_token_file":"…"|null,"workloads":N,
//! "status_dir":"…","pid":P}` (`admin_token_file`: where the admin API's bearer token is,
//! generated in the state directory when not configured).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokenvisor::config::{self, Config, LogFormat, ServiceConfig};
use tokenvisor::{HttpConfig, HttpTransport};
use tokenvisor::{Runtime, RuntimeConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use tokenvisor_admin as admin;

/// How long shutdown keeps retrying failed status writes before reporting them.
const FLUSH_DEADLINE: Duration = Duration::from_secs(30);

/// Arguments of `tokenvisor run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The configuration file (TOML; see config/tokenvisor.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
}

/// Why a configuration with `[cluster]` cannot run in this build: cluster mode is the
/// cargo feature `cluster` (off by default: the etcd client's build needs `protoc`). Running
/// the section as one process anyway would let several instances refresh the same grants,
/// the very thing cluster mode exists to prevent, so a build without it refuses instead of
/// ignoring it.
#[cfg(not(feature = "cluster"))]
fn cluster_refused(cfg: &config::Config) -> Option<&'static str> {
    cfg.cluster.as_ref().map(|_| {
        "[cluster]: cluster mode is not available in this build (it is the cargo feature \
         `cluster`: cargo build -p tokenvisor-cli --features cluster); remove [cluster] to run \
         one instance"
    })
}

/// A build with cluster mode runs every configuration.
#[cfg(feature = "cluster")]
fn cluster_refused(_cfg: &config::Config) -> Option<&'static str> {
    None
}

/// Runs the daemon until SIGINT/SIGTERM. Returns the exit code.
pub(crate) fn run(args: &RunArgs) -> anyhow::Result<u8> {
    crate::check_config::must_exist("run", &args.config)?;
    let cfg = match config::load(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return Ok(crate::EXIT_PROBLEM);
        }
    };
    if let Some(why) = cluster_refused(&cfg) {
        eprintln!("{}: {why}", args.config.display());
        return Ok(crate::EXIT_PROBLEM);
    }
    let set_log_level = init_logging(&cfg);
    if let Err(code) = take_locks(&cfg) {
        return Ok(code);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tokenvisor")
        .build()
        .context("cannot start the async runtime")?;
    let code = rt.block_on(daemon(args.config.clone(), cfg, set_log_level));
    // A reload may have left a blocking thread stuck reading a FIFO or a hung mount: exit
    // without waiting for it.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Start-up, before any request can be sent: logs the configuration's warnings, then takes
/// the status directory and every refresh-token file for this process (held until exit).
/// When another daemon holds one, or the directory holds foreign files, says why (naming
/// the holder's PID) and returns the exit code.
fn take_locks(cfg: &Config) -> Result<(), u8> {
    for line in cfg.warning_lines() {
        tracing::warn!("{line}");
    }
    match tokenvisor::acquire_for(&cfg.service.status_dir, &cfg.workloads) {
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

/// Changes the daemon's log filter while it runs (`[service] log_level` on SIGHUP). `None`
/// when `RUST_LOG` chose the filter (it wins over the file, at start and on reload) or the
/// logger could not be installed.
type SetLogLevel = Option<Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>>;

/// The daemon's logger: to stderr, as text or JSON, filtered by `RUST_LOG` when set, else by
/// `[service] log_level` (validated by the configuration, so never silently replaced). The
/// filter is reloadable ([`SetLogLevel`]).
fn init_logging(cfg: &Config) -> SetLogLevel {
    use tracing_subscriber::EnvFilter;
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_wins = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(&cfg.service.log_level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // The handle's type depends on the format: each arm boxes its own.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let setter: Box<dyn Fn(&str) -> Result<(), String> + Send + Sync> =
                Box::new(move |level: &str| {
                    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                    handle.reload(filter).map_err(|e| e.to_string())
                });
            builder.try_init().ok().map(|()| setter)
        }};
    }
    let setter = match cfg.service.log_format {
        LogFormat::Json => install!(builder.json()),
        LogFormat::Text => install!(builder),
    };
    setter.filter(|_| !env_wins)
}

async fn daemon(path: PathBuf, cfg: Config, set_log_level: SetLogLevel) -> anyhow::Result<u8> {
    // The descriptor limit, the admin token and the bound listener (tokenvisor-admin),
    // before the runtime starts: a daemon that cannot serve exits before any request.
    let admin_listener = admin::prepare(&cfg.service).await?;
    let metrics = admin::install_metrics_recorder().context("cannot install metrics")?;
    let upkeep = admin::spawn_metrics_upkeep(metrics.clone());
    let transport = HttpTransport::new(HttpConfig {
        connect_timeout: cfg.defaults.connect_timeout,
        ..HttpConfig::default()
    })
    .context("cannot build the HTTP client")?;
    let mut runtime_config =
        RuntimeConfig::new(cfg.service.status_dir.clone(), Arc::new(transport));
    runtime_config.state_dir = cfg
        .service
        .state_dir
        .as_deref()
        .map(|state| tokenvisor::journal::dir_for(state, &cfg.service.status_dir));
    let mut persistence = tokenvisor::PersistenceConfig::new(cfg.service.status_dir.clone());
    persistence.status_refresh_interval = cfg.service.status_refresh_interval;
    runtime_config.persistence = Some(persistence);
    // Cluster mode: every instance runs the same workload list; each runs those of the
    // shards it owns. The default member id hashes the journal's directory (one per status
    // directory), so two instances on one host differ.
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &cfg.cluster {
        let identity = runtime_config
            .state_dir
            .clone()
            .unwrap_or_else(|| cfg.service.status_dir.clone());
        let mut settings = tokenvisor::ClusterSettings::from_config(cluster, &identity);
        // Published in the member key, where the other instances' token route redirects.
        settings.options.admin =
            (admin_listener.as_ref()).map(|l| format!("http://{}", l.local_addr()));
        tracing::info!(member = %settings.options.member, shards = settings.shards.get(), "cluster mode: joining");
        runtime_config.cluster = Some(settings);
    }
    let runtime = Runtime::start(runtime_config)
        .await
        .context("cannot start tokenvisor")?;
    let recovery = runtime.recovery();
    tracing::info!(
        status_dir = %cfg.service.status_dir.display(),
        recovered = recovery.recovered,
        corrupted = recovery.corrupted.len(),
        "status directory recovered"
    );

    // Served before the workloads start, so `/v1/events` numbers start-up's changes too.
    let admin = admin_listener.map(|l| l.serve(runtime.clone(), Some(metrics)));
    // Start-up is a reconcile from nothing (the same path as a reload).
    let started = runtime
        .reconcile(cfg.workloads, tokenvisor::hold_credentials)
        .await
        .context("cannot start the workloads")?;

    // The handlers exist before the ready line: a script that sends SIGHUP as soon as it reads
    // the line must not meet the default action (SIGHUP and SIGTERM would kill the daemon).
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    println!(
        "{}",
        serde_json::json!({
            "event": "ready",
            "admin": admin.as_ref().map(|a| a.addr.to_string()),
            "admin_token_file": admin.as_ref().map(|a| &a.token_file),
            "workloads": started.total,
            "status_dir": cfg.service.status_dir,
            "pid": std::process::id(),
        })
    );

    let service = Service {
        running: cfg.service,
        set_log_level,
    };
    let reloader = Reloader::spawn(path, service, runtime.clone());
    loop {
        tokio::select! {
            _ = hup.recv() => reloader.request(),
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
        }
    }
    reloader.stop();
    let report = runtime.shutdown(FLUSH_DEADLINE).await.context("shutdown")?;
    upkeep.abort();
    if !report.credentials_not_saved.is_empty() {
        let names: Vec<&str> = report
            .credentials_not_saved
            .iter()
            .map(tokenvisor_core::WorkloadName::as_str)
            .collect();
        tracing::error!(
            workloads = %names.join(","),
            "rotated refresh tokens could not be saved: these workloads may need new credentials after a restart"
        );
        eprintln!(
            "error: rotated refresh tokens not saved for: {}",
            names.join(", ")
        );
        Ok(crate::EXIT_PROBLEM)
    } else if report.failed.is_empty() {
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

/// How long a reload may spend reading the configuration and the secret files it names.
const RELOAD_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The reloader task: reloads on request.
struct Reloader {
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Reloader {
    fn spawn(path: PathBuf, service: Service, runtime: Runtime) -> Self {
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(reload_loop(wake.clone(), path, service, runtime));
        Reloader { wake, task }
    }

    /// Asks for a reload; requests made while one runs coalesce into one more (a `Notify`
    /// keeps at most one permit).
    fn request(&self) {
        tracing::info!("SIGHUP: reload requested");
        self.wake.notify_one();
    }

    /// Stops reloading (at shutdown: no workload may start while the runtime stops).
    fn stop(self) {
        self.task.abort();
    }
}

async fn reload_loop(wake: Arc<Notify>, path: PathBuf, mut service: Service, runtime: Runtime) {
    // True while a blocking read runs (or is stuck).
    let reading = Arc::new(AtomicBool::new(false));
    loop {
        wake.notified().await;
        if let Some(cfg) = read_config(&path, &reading).await {
            service.apply(&cfg.service);
            reconcile(cfg, &runtime).await;
        }
    }
}

/// Loads the configuration on the blocking pool, bounded by [`RELOAD_READ_TIMEOUT`]. `None`
/// (logged) when it cannot be read, is invalid, or does not answer in time.
async fn read_config(path: &Path, reading: &Arc<AtomicBool>) -> Option<Config> {
    if reading.swap(true, Ordering::AcqRel) {
        tracing::error!(
            "SIGHUP: configuration not reloaded, nothing changed: an earlier reload is still \
             stuck reading {} or a secret file it names",
            path.display()
        );
        return None;
    }
    tracing::info!("SIGHUP: reloading {}", path.display());
    let (task_path, done) = (path.to_owned(), reading.clone());
    let job = tokio::task::spawn_blocking(move || {
        let loaded = config::load(&task_path);
        done.store(false, Ordering::Release);
        loaded
    });
    match tokio::time::timeout(RELOAD_READ_TIMEOUT, job).await {
        Ok(Ok(Ok(cfg))) => match cluster_refused(&cfg) {
            Some(why) => {
                tracing::error!("SIGHUP: configuration not reloaded, nothing changed: {why}");
                None
            }
            None => Some(cfg),
        },
        Ok(Ok(Err(e))) => {
            tracing::error!("SIGHUP: configuration not reloaded, nothing changed:\n{e}");
            None
        }
        Ok(Err(e)) => {
            reading.store(false, Ordering::Release);
            tracing::error!("SIGHUP: configuration not reloaded, nothing changed: {e}");
            None
        }
        Err(_elapsed) => {
            tracing::error!(
                "SIGHUP: reload timed out after {}s reading {} and the secret files it names \
                 (a FIFO or a hung mount?); configuration not reloaded, nothing changed",
                RELOAD_READ_TIMEOUT.as_secs(),
                path.display()
            );
            None
        }
    }
}

/// Applies a loaded configuration through [`Runtime::reconcile`]: endpoint settings first
/// (no restart), then removed workloads stop, changed ones restart, new ones start (each
/// taking its refresh-token file's lock first).
async fn reconcile(cfg: Config, runtime: &Runtime) {
    match runtime
        .reconcile(cfg.workloads, tokenvisor::hold_credentials)
        .await
    {
        Ok(r) => tracing::info!(
            added = r.added,
            removed = r.removed,
            changed = r.changed,
            endpoints_resized = r.endpoints_resized,
            total = r.total,
            "SIGHUP: reloaded"
        ),
        Err(e) => tracing::error!("SIGHUP: configuration not applied: {e}"),
    }
}

/// The `[service]` settings the daemon runs with, and how to change the one that can change
/// while it runs.
struct Service {
    running: ServiceConfig,
    set_log_level: SetLogLevel,
}

impl Service {
    /// A reload's `[service]`: `log_level` is applied at once (unless `RUST_LOG` chose the
    /// filter); every other changed key is named and logged as taking effect at the next
    /// start (the listener, the directories and the log format are set up once).
    fn apply(&mut self, wanted: &ServiceConfig) {
        let ServiceConfig {
            status_dir,
            admin_listen,
            admin_token_file,
            state_dir,
            admin_limits,
            status_refresh_interval,
            log_format,
            log_level,
        } = wanted;
        let running = &self.running;
        let needs_restart: Vec<&str> = [
            ("status_dir", *status_dir != running.status_dir),
            ("admin_listen", *admin_listen != running.admin_listen),
            (
                "admin_token_file",
                *admin_token_file != running.admin_token_file,
            ),
            ("state_dir", *state_dir != running.state_dir),
            (
                "status_refresh_interval",
                *status_refresh_interval != running.status_refresh_interval,
            ),
            (
                "admin_header_timeout",
                admin_limits.header_timeout != running.admin_limits.header_timeout,
            ),
            (
                "admin_idle_timeout",
                admin_limits.idle_timeout != running.admin_limits.idle_timeout,
            ),
            (
                "admin_max_connections",
                admin_limits.max_connections != running.admin_limits.max_connections,
            ),
            ("log_format", *log_format != running.log_format),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        if !needs_restart.is_empty() {
            tracing::warn!(
                "SIGHUP: [service] {} changed: takes effect at the next start (restart the daemon)",
                needs_restart.join(", ")
            );
        }
        if *log_level == running.log_level {
            return;
        }
        match &self.set_log_level {
            None => {
                tracing::warn!(
                    "SIGHUP: [service] log_level changed to {log_level:?}, not applied: \
                     RUST_LOG sets the filter"
                );
            }
            Some(set) => match set(log_level) {
                Ok(()) => {
                    self.running.log_level.clone_from(log_level);
                    tracing::info!("SIGHUP: [service] log_level is now {log_level:?}");
                }
                Err(e) => {
                    tracing::error!("SIGHUP: [service] log_level {log_level:?} not applied: {e}");
                }
            },
        }
    }
}
