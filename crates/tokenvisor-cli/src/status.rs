//! `tokenvisor status`: reads the status files, prints a table or JSON, or a summary of the
//! fleet (`--summary`), redrawn every `--interval` with `--watch` (module [`summary`]).
//!
//! The status directory is `--dir`, else the configuration's `service.status_dir`
//! (`--config FILE`, which also tells each workload's token endpoint for the summary's
//! per-endpoint counts), else the default directory.
//!
//! `--cluster` (module [`cluster`]) shows every workload of a cluster with its owner, read
//! through a running instance's admin API instead of the status directory.
//!
//! Read-only: files are read only through the status store
//! ([`tokenvisor::read_status_entries`], [`tokenvisor::inspect_status_entry`]), which never
//! renames, removes or rewrites anything (a corrupt file is reported, not set aside); the
//! table and the summary are the core's pure views ([`tokenvisor_core::status_view`]). This
//! module parses the arguments, reads and prints.

mod cluster;

use std::collections::HashMap;
use std::io::{self, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use clap::error::ErrorKind;
use tokenvisor::{inspect_status_entry, read_status_entries};
use tokenvisor_core::WorkloadName;
use tokenvisor_core::status_view::{self, StatusEntry as Entry, summary};
use tokenvisor_core::text::safe_text;

use crate::output::now;
use crate::{EXIT_PROBLEM, usage_error};

/// Arguments of `tokenvisor status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The status directory [default: $XDG_DATA_HOME/tokenvisor/statuses, else
    /// $HOME/.local/share/tokenvisor/statuses, as for the configuration's
    /// service.status_dir].
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    dir: Option<PathBuf>,
    /// Read the status directory (service.status_dir) from this configuration file, and, for
    /// the summary, each workload's token endpoint. The file is loaded and validated as
    /// `run` does (its secret files must be readable).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Show only this workload.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Print JSON: an array of {"name": …, …the status record} (one object with NAME).
    /// Corrupt files appear as {"name": …, "status": "corrupt", "error": …}.
    #[arg(long)]
    json: bool,
    /// Print a summary instead of one line per workload: counts per status, per token
    /// endpoint (with --config), and the workloads needing attention first, with reasons.
    #[arg(long, conflicts_with_all = ["json", "name"])]
    summary: bool,
    /// Redraw the summary every --interval until interrupted: in place on a terminal, as a
    /// new block of plain lines otherwise.
    #[arg(long, conflicts_with_all = ["json", "name"])]
    watch: bool,
    /// Time between two refreshes of --watch (e.g. 2s, 500ms, 1m).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop --watch after N refreshes (the exit status is the last refresh's).
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
    /// How many workloads needing attention the summary lists.
    #[arg(long, value_name = "N", default_value_t = 20)]
    top: usize,
    /// Cluster mode: every workload of the cluster with its owner, read through a running
    /// instance's admin API (GET /v1/workloads) rather than the status directory: the
    /// instance at --admin, else --config's service.admin_listen. Any instance shows the
    /// whole cluster. Exit status 1 also when no member holds a workload's shard.
    #[arg(long, conflicts_with_all = ["dir", "summary", "watch"])]
    cluster: bool,
    /// With --cluster: the instance's admin API base URL (e.g. http://127.0.0.1:7878).
    #[arg(long, value_name = "URL", requires = "cluster")]
    admin: Option<String>,
    /// With --cluster: the admin token file (the instances share one) [default: --config's
    /// service.admin_token_file, else <state_dir>/admin.token].
    #[arg(long, value_name = "FILE", requires = "cluster")]
    admin_token_file: Option<PathBuf>,
}

/// Where to read, and what the configuration says of each workload's endpoint.
struct Source {
    dir: PathBuf,
    /// Workload → its token URL, redacted (with `--config`).
    endpoints: Option<HashMap<WorkloadName, String>>,
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: &StatusArgs) -> anyhow::Result<u8> {
    if args.cluster {
        return cluster::run(args);
    }
    let source = match source(args)? {
        Ok(source) => source,
        Err(code) => return Ok(code),
    };
    let dir = &source.dir;
    check_dir(dir)?;
    if args.summary || args.watch {
        return watch(args, &source);
    }
    run_table(args, dir)
}

/// The status directory and endpoints from the arguments; `Err(code)` when the
/// configuration is invalid (its problems were printed, `FILE:LINE: KEY: reason`).
fn source(args: &StatusArgs) -> anyhow::Result<Result<Source, u8>> {
    if let Some(path) = &args.config {
        let cfg = match tokenvisor::config::load(path) {
            Ok(cfg) => cfg,
            Err(e) => {
                eprintln!("{e}");
                return Ok(Err(EXIT_PROBLEM));
            }
        };
        let endpoints = cfg
            .workloads
            .iter()
            .map(|w| (w.name.clone(), w.token_url.redacted()))
            .collect();
        return Ok(Ok(Source {
            dir: cfg.service.status_dir,
            endpoints: Some(endpoints),
        }));
    }
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => tokenvisor::config::default_status_dir(&|var| std::env::var(var).ok()).ok_or_else(
            || {
                usage_error(
                    "status",
                    ErrorKind::MissingRequiredArgument,
                    "cannot tell the default status directory: neither XDG_DATA_HOME nor HOME is \
                 set; pass --dir DIR or --config FILE"
                        .to_owned(),
                )
            },
        )?,
    };
    Ok(Ok(Source {
        dir,
        endpoints: None,
    }))
}

/// A usage error unless `dir` is a readable directory.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(usage_error(
                "status",
                ErrorKind::ValueValidation,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(usage_error(
                "status",
                ErrorKind::ValueValidation,
                format!(
                    "status directory {} does not exist (no workload has run with it yet, or \
                     the daemon uses another service.status_dir: pass --dir DIR or --config FILE)",
                    dir.display()
                ),
            ));
        }
        Err(e) => {
            return Err(usage_error(
                "status",
                ErrorKind::Io,
                format!("cannot read status directory {}: {e}", dir.display()),
            ));
        }
    }
    Ok(())
}

/// Every status file of `dir`, read through the status store.
fn read_entries(dir: &Path) -> anyhow::Result<Vec<(WorkloadName, Entry)>> {
    read_status_entries(dir).map_err(|e| {
        let kind = e.kind().unwrap_or(io::ErrorKind::Other);
        usage_error(
            "status",
            ErrorKind::Io,
            format!("cannot list status directory {}: {kind}", dir.display()),
        )
    })
}

/// `--summary` (once) and `--watch` (every `--interval`), on a small tokio runtime: the
/// directory is read on its blocking pool, the interval is tokio's sleep.
fn watch(args: &StatusArgs, source: &Source) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(watch_loop(args, source))
}

async fn watch_loop(args: &StatusArgs, source: &Source) -> anyhow::Result<u8> {
    let tty = args.watch && io::stdout().is_terminal();
    let mut refreshes = 0u64;
    loop {
        let started = tokio::time::Instant::now();
        let dir = source.dir.clone();
        let entries = tokio::task::spawn_blocking(move || read_entries(&dir)).await??;
        let took = started.elapsed();
        let summary = summary::summarize(&entries, source.endpoints.as_ref(), args.top);
        let text = summary::render(
            &summary,
            &summary::Heading {
                dir: &source.dir,
                at: now(),
                took,
            },
        );
        let code = if entries.iter().any(|(_, e)| e.needs_attention()) {
            EXIT_PROBLEM
        } else {
            0
        };
        drop(summary);
        drop(entries);
        let mut out = io::stdout().lock();
        // On a terminal: cursor home, the summary, clear the rest of the screen.
        let written = if tty {
            write!(out, "\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n"))
        } else if args.watch {
            writeln!(out, "{text}")
        } else {
            write!(out, "{text}")
        };
        // A closed pipe (`| head`) ends the watch.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(code);
        }
        drop(out);
        refreshes += 1;
        if !args.watch || args.count.is_some_and(|n| refreshes >= n) {
            return Ok(code);
        }
        tokio::time::sleep(args.interval).await;
    }
}

/// The table or JSON of every workload (or of NAME).
fn run_table(args: &StatusArgs, dir: &Path) -> anyhow::Result<u8> {
    let entries: Vec<(WorkloadName, Entry)> = match &args.name {
        Some(name) => {
            let name = WorkloadName::new(name).map_err(|e| {
                usage_error(
                    "status",
                    ErrorKind::ValueValidation,
                    format!("invalid workload name {:?}: {e}", safe_text(name)),
                )
            })?;
            match inspect_status_entry(dir, &name) {
                Some(found) => vec![(name, found)],
                None => {
                    return Err(usage_error(
                        "status",
                        ErrorKind::ValueValidation,
                        format!(
                            "unknown workload {}: there is no {} in {}",
                            name.as_str(),
                            file_name(&name),
                            dir.display()
                        ),
                    ));
                }
            }
        }
        None => read_entries(dir)?,
    };

    if args.json {
        let json = match (&args.name, entries.first()) {
            (Some(_), Some((name, entry))) => {
                serde_json::to_string_pretty(&entry.json(name.as_str()))?
            }
            (Some(_) | None, _) => {
                let all: Vec<_> = entries
                    .iter()
                    .map(|(name, entry)| entry.json(name.as_str()))
                    .collect();
                serde_json::to_string_pretty(&all)?
            }
        };
        println!("{json}");
    } else if entries.is_empty() {
        eprintln!("no status files in {}", dir.display());
    } else {
        print!("{}", status_view::table(&entries, now()));
    }

    Ok(if entries.iter().any(|(_, e)| e.needs_attention()) {
        EXIT_PROBLEM
    } else {
        0
    })
}

fn file_name(name: &WorkloadName) -> String {
    format!("{}.json", name.as_str())
}
