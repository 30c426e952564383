//! `tokenvisor`: the command-line front end of tokenvisor.
//!
//! Subcommands (one module each):
//! - `run` ([`run`]): the daemon, with the admin API (`tokenvisor-admin`) and Prometheus
//!   metrics.
//! - `idp` (feature `soak`): the local fault-injecting provider `config/local.toml` runs
//!   against (from `tokenvisor-soak`).
//! - `demo` and `soak` (feature `soak`, on by default): the embedded default (a
//!   fault-injecting provider and N workloads through a scripted storyline) and the load,
//!   soak and benchmark scenarios, both from the `tokenvisor-soak` crate; main only
//!   dispatches to them. Without the feature the binary links no fault injection.
//! - `status` ([`status`]): reads the per-workload status files and prints a table or JSON;
//!   no daemon needed.
//! - `probe` ([`probe`]): one refresh attempt against a token endpoint, classified exactly as
//!   the daemon would classify it, for diagnosis.
//! - `check-config` ([`check_config`]): loads and validates a configuration file and prints
//!   the effective settings with secrets masked.
//! - `login` ([`login`]): obtains a workload's refresh token (authorization code with PKCE
//!   and a loopback redirect, or `--device`) and hands it to the running daemon or writes
//!   its `refresh_token_file`.
//!
//! Exit codes are part of the interface and one table for every command ([`exit`], shown by
//! `--help` and in the README): 0 success; 1 a problem was found (a workload that needs
//! attention, an invalid configuration, a failed check, an internal failure); 2 usage errors
//! (bad flags, unknown workload, a missing configuration file or directory, for every
//! command); `probe` adds 10 (transient failure) and 11 (permanent failure). Logs go to
//! stderr (`RUST_LOG`, default `warn`); results to stdout.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

mod check_config;
mod exit;
mod login;
mod output;
mod probe;
mod run;
mod status;

/// Exit code: usage error (clap's own code for usage errors).
pub(crate) const EXIT_USAGE: u8 = exit::Exit::Usage.code();
/// Exit code: something needs attention, or an internal failure.
pub(crate) const EXIT_PROBLEM: u8 = exit::Exit::Problem.code();

/// Keeps OAuth2 access tokens fresh for many workloads, and tells the truth about each one's
/// health on disk.
#[derive(Debug, Parser)]
#[command(name = "tokenvisor", version, propagate_version = true, after_help = exit::help())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: keep every configured workload's token fresh, write status files,
    /// serve the admin API. SIGHUP reloads the configuration; SIGINT/SIGTERM shut down
    /// gracefully with every status flushed.
    ///
    /// Exit status: 0 after a clean shutdown; 1 for an invalid configuration, a lock held by
    /// another daemon or a status that could not be flushed; 2 on usage errors (no such
    /// configuration file).
    Run(run::RunArgs),
    /// The embedded demo: a fault-injecting provider on 127.0.0.1 and N workloads going
    /// through a WAF window, a 429 with Retry-After, a 503 burst and a revoked grant, shown
    /// live.
    ///
    /// Exit status: 0 when only the revoked workload was ever unauthenticated and every
    /// workload ends running; 1 otherwise.
    #[cfg(feature = "soak")]
    Demo(tokenvisor_soak::demo::DemoArgs),
    /// Show the workloads' status, read from their status files (no daemon needed).
    ///
    /// Exit status: 0 when every listed workload is fine (running, auth_retrying, starting,
    /// stopped); 1 when any is unauthenticated, error, or has a corrupt or unreadable status
    /// file; 2 on usage errors (unknown NAME, missing directory).
    Status(status::StatusArgs),
    /// Send one refresh request to a token endpoint and show how tokenvisor classifies the
    /// answer.
    ///
    /// Exit status: 0 a token was received; 10 transient failure (tokenvisor would retry);
    /// 11 permanent failure (the credentials were rejected); 2 usage errors; 1 internal error.
    ///
    /// WARNING: with the refresh_token grant, a provider that rotates refresh tokens answers
    /// a successful probe with a NEW refresh token and may revoke the one you sent: probing
    /// spends a refresh token. Never probe with a token a running workload still uses, or pass
    /// --refresh-token-file with --write-back so that the rotated token is saved. Tokens are
    /// never printed.
    Probe(Box<probe::ProbeArgs>),
    /// Validate a configuration file and print the effective settings, secrets masked.
    ///
    /// Exit status: 0 valid; 1 invalid (every problem is listed on stderr as
    /// FILE:LINE: KEY: reason); 2 usage errors (no such file).
    CheckConfig(check_config::CheckConfigArgs),
    /// Log a workload in: get its refresh token from the provider (authorization code with
    /// PKCE through a browser and a redirect to 127.0.0.1, or --device for the device flow),
    /// then hand it to the running daemon (admin API) or write it to its refresh_token_file
    /// (0600). The token is never printed.
    ///
    /// Exit status: 0 logged in; 1 the login failed (denied, expired, state mismatch, the
    /// provider refused, no refresh token issued) or the configuration is invalid; 2 usage
    /// errors (unknown workload, a grant other than refresh_token, no authorization_url /
    /// device_authorization_url).
    Login(Box<login::LoginArgs>),
    /// Load and soak runs against an embedded fault-injecting provider on 127.0.0.1:
    /// `--scenario soak` (the default: seeded chaos for --duration, then invariants), storm
    /// (refreshes/s, with --baseline a bare reqwest loop), scale (spawn time, RSS per
    /// workload), burst (durable status burst vs bare atomic writes), timers (timer
    /// lateness), recovery (restart over N status files). With --json the last line of
    /// stdout is one JSON object.
    ///
    /// Exit status: 0 when every check of the scenario held; 1 when one failed; 2 on usage
    /// errors. Timings are reported, never judged.
    #[cfg(feature = "soak")]
    Soak(Box<tokenvisor_soak::soak::SoakArgs>),
    /// A local fault-injecting OAuth provider on 127.0.0.1:8765, with the client
    /// config/local.toml uses: run the daemon, the admin API and `probe` against it. For tests
    /// and demos only. `--help` explains the fault syntax.
    #[cfg(feature = "soak")]
    Idp(tokenvisor_soak::idp::IdpArgs),
}

/// A usage error for subcommand `sub`, formatted like clap's own (exit code 2).
pub(crate) fn usage_error(
    sub: &str,
    kind: clap::error::ErrorKind,
    message: String,
) -> anyhow::Error {
    let mut cmd = Cli::command();
    cmd.build();
    let err = match cmd.find_subcommand_mut(sub) {
        Some(sub) => sub.error(kind, message),
        None => cmd.error(kind, message),
    };
    anyhow::Error::new(err)
}

/// A demo or soak error as the binary reports it: a usage error like clap's (exit code 2),
/// anything else with its chain of causes (exit code 1).
#[cfg(feature = "soak")]
fn soak_error(sub: &str, e: tokenvisor_soak::Error) -> anyhow::Error {
    match e {
        tokenvisor_soak::Error::Usage { kind, message } => usage_error(sub, kind, message),
        other @ (tokenvisor_soak::Error::Step { .. }
        | tokenvisor_soak::Error::Failed(_)
        | tokenvisor_soak::Error::Runtime(_)
        | tokenvisor_soak::Error::Http(_)
        | tokenvisor_soak::Error::Store(_)
        | tokenvisor_soak::Error::Idp(_)
        | tokenvisor_soak::Error::Name(_)
        | tokenvisor_soak::Error::TokenUrl(_)
        | tokenvisor_soak::Error::Io(_)
        | tokenvisor_soak::Error::Profile(_)) => anyhow::Error::new(other),
    }
}

/// Logs to stderr: `RUST_LOG` when set, else `default`.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    // Ignore the error: it only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    // The daemon sets up logging from its configuration; the demo prints its own story.
    // The demo's story is its output: the runtime's warnings (the faults it injects) would
    // interleave with it, so it logs errors only unless RUST_LOG says otherwise.
    match &cli.command {
        Command::Run(_) => {}
        #[cfg(feature = "soak")]
        Command::Demo(_) => init_logging("error"),
        Command::Status(_) | Command::Probe(_) | Command::CheckConfig(_) | Command::Login(_) => {
            init_logging("warn");
        }
        #[cfg(feature = "soak")]
        Command::Soak(_) | Command::Idp(_) => init_logging("warn"),
    }
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        #[cfg(feature = "soak")]
        Command::Demo(args) => tokenvisor_soak::demo::run(&args).map_err(|e| soak_error("demo", e)),
        Command::Status(args) => status::run(&args),
        Command::Probe(args) => probe::run(&args),
        Command::CheckConfig(args) => check_config::run(&args),
        Command::Login(args) => login::run(&args),
        #[cfg(feature = "soak")]
        Command::Soak(args) => tokenvisor_soak::soak::run(&args).map_err(|e| soak_error("soak", e)),
        #[cfg(feature = "soak")]
        Command::Idp(args) => tokenvisor_soak::idp::run(&args).map_err(|e| soak_error("idp", e)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => match e.downcast_ref::<clap::Error>() {
            Some(usage) => {
                let _ = usage.print();
                ExitCode::from(EXIT_USAGE)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_PROBLEM)
            }
        },
    }
}
