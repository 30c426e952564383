//! `tokenvisor login WORKLOAD`: obtains a workload's first (or a new) refresh token, and
//! hands it to a running daemon or writes it to the workload's `refresh_token_file`.
//!
//! The flows are the runtime's [`tokenvisor::login`] (the authorization code flow with PKCE
//! and a loopback redirect listener, or `--device`, RFC 8628; the endpoints from the
//! configuration or the issuer's metadata); this module checks the arguments, prints what
//! the user must do, and delivers the token:
//!
//! - **Delivery**: the refresh token goes to a running daemon through its admin API
//!   ([`tokenvisor_admin::client::AdminClient::supply_refresh_token`]: the daemon journals
//!   it, writes the file and a workload that was `unauthenticated` recovers at once); when no
//!   daemon answers (admin API off or not listening) or it refuses, it is written atomically
//!   (0600) to the workload's `refresh_token_file`. What was done is printed; the token never
//!   is.
//! - Only a `grant = "refresh_token"` workload logs in; any other is refused with the reason.
//!   A missing endpoint is a usage error naming the key to set.
//!
//! The configuration is read with `load_for_login`, which does not read refresh-token
//! files (before the first login there is none).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::error::ErrorKind;
use tokenvisor::config::{self, Config, ServiceConfig};
use tokenvisor::login::{Endpoints, Login, LoginError};
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor_admin::client::{AdminClient, HandOverError, default_token_file};
use tokenvisor_core::text::safe_text;
use tokenvisor_core::{Secret, TokenUrl};

use crate::usage_error;

/// Arguments of `tokenvisor login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The workload to log in (its `name` in the configuration).
    #[arg(value_name = "WORKLOAD")]
    workload: String,
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Use the device authorization grant (RFC 8628) instead of a browser redirect: for a
    /// machine without a browser; the code is entered on another device.
    #[arg(long)]
    device: bool,
    /// How long to wait for the login to complete (the redirect, or the device approval; the
    /// device code's own lifetime also ends it).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    timeout: Duration,
    /// The running daemon's admin API [default: the configuration's service.admin_listen].
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// The admin API's token file [default: service.admin_token_file, else the generated
    /// <state_dir>/admin.token].
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Write the refresh token to refresh_token_file even if a daemon is running (do not
    /// try the admin API).
    #[arg(long)]
    file_only: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("not a duration ({e}); e.g. 5m"))?;
    if d.is_zero() {
        return Err("must be more than 0s".to_owned());
    }
    Ok(d)
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: &LoginArgs) -> anyhow::Result<u8> {
    crate::check_config::must_exist("login", &args.config)?;
    let cfg = match config::load_for_login(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprint!("{e}");
            return Ok(crate::EXIT_PROBLEM);
        }
    };
    let spec = target(&cfg, &args.workload)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let endpoints = match runtime.block_on(tokenvisor::login::endpoints(spec)) {
        Ok(endpoints) => endpoints,
        Err(LoginError::Http(e)) => return Err(e.into()),
        Err(e) => {
            eprintln!("login failed: {e}");
            return Ok(crate::EXIT_PROBLEM);
        }
    };
    let needed = needed_endpoint(&endpoints, args.device, spec)?;
    let login = Login::new(spec, &endpoints)?;
    let token = match runtime.block_on(flow(args, spec, &login, &needed)) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("login failed: {e}");
            return Ok(crate::EXIT_PROBLEM);
        }
    };
    runtime.block_on(deliver(args, &cfg.service, spec, &token))
}

/// The workload, when it exists and may log in.
fn target<'c>(cfg: &'c Config, name: &str) -> anyhow::Result<&'c WorkloadSpec> {
    let Some(spec) = cfg.workload(name) else {
        let names: Vec<&str> = cfg.workloads.iter().map(|w| w.name.as_str()).collect();
        return Err(usage_error(
            "login",
            ErrorKind::InvalidValue,
            format!(
                "no workload {name:?} in {} (it has: {})",
                cfg.source.display(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    match &spec.grant {
        GrantSpec::RefreshToken { .. } => Ok(spec),
        GrantSpec::ClientCredentials
        | GrantSpec::JwtBearer { .. }
        | GrantSpec::TokenExchange(_) => Err(usage_error(
            "login",
            ErrorKind::InvalidValue,
            format!(
                "workload {name} uses grant = \"{}\": it has no refresh token, so there is \
                     nothing to log in for (login is for grant = \"refresh_token\")",
                spec.grant.as_str()
            ),
        )),
    }
}

/// The endpoint the chosen flow starts at, or a usage error naming the key to set.
fn needed_endpoint(
    endpoints: &Endpoints,
    device: bool,
    spec: &WorkloadSpec,
) -> anyhow::Result<TokenUrl> {
    let (url, key) = match device {
        false => (&endpoints.authorization, "authorization_url"),
        true => (&endpoints.device_authorization, "device_authorization_url"),
    };
    url.clone().ok_or_else(|| {
        usage_error(
            "login",
            ErrorKind::MissingRequiredArgument,
            format!(
                "workload {} has no {key}: set {key} in its [[workload]] section (the provider's \
                 {} endpoint){}",
                spec.name,
                match device {
                    false => "authorization",
                    true => "device authorization",
                },
                match spec.policy.provider.issuer {
                    Some(_) => "; its issuer's metadata names none",
                    None => ", or an issuer whose metadata names it",
                }
            ),
        )
    })
}

/// The flow: what the user must do printed, then the refresh token.
async fn flow(
    args: &LoginArgs,
    spec: &WorkloadSpec,
    login: &Login,
    start: &TokenUrl,
) -> Result<Secret, LoginError> {
    let workload = spec.name.as_str();
    if !args.device {
        let code = login.start_code(start, spec.login.redirect_port).await?;
        println!(
            "Open this URL in a browser to log in workload {workload} (waiting up to {} for the \
             redirect to {}):",
            humantime::format_duration(args.timeout),
            code.redirect_uri
        );
        println!("{}", code.url);
        let _ = std::io::stdout().flush();
        return code.finish(args.timeout).await;
    }
    let device = login.start_device(start).await?;
    let a = &device.authorization;
    match &a.verification_uri_complete {
        Some(complete) => println!(
            "To log in workload {workload}, open {} and confirm the code {}",
            safe_text(complete),
            safe_text(&a.user_code)
        ),
        None => println!(
            "To log in workload {workload}, open {} and enter the code {}",
            safe_text(&a.verification_uri),
            safe_text(&a.user_code)
        ),
    }
    println!(
        "(waiting for the approval: the code expires in {}s)",
        a.expires_in
    );
    let _ = std::io::stdout().flush();
    device.finish(args.timeout).await
}

/// How the token was delivered.
#[derive(Debug)]
enum Delivered {
    Daemon(SocketAddr),
    File(PathBuf),
}

/// Hands the refresh token to the running daemon, else writes it to the file.
async fn deliver(
    args: &LoginArgs,
    service: &ServiceConfig,
    spec: &WorkloadSpec,
    token: &Secret,
) -> anyhow::Result<u8> {
    let file = match &spec.grant {
        GrantSpec::RefreshToken { file, .. } => file.clone(),
        GrantSpec::ClientCredentials
        | GrantSpec::JwtBearer { .. }
        | GrantSpec::TokenExchange(_) => None,
    };
    let mut note = None;
    // A configured port 0 is any port: where that daemon listens is in its ready line only.
    let admin = match args.file_only {
        true => None,
        false => (args.admin)
            .or_else(|| service.admin_listen.addr())
            .filter(|a| a.port() != 0),
    };
    if let Some(addr) = admin {
        // No readable admin token: no daemon to hand over to.
        let admin_token = default_token_file(args.admin_token_file.clone(), service)
            .and_then(|f| config::read_admin_token(&f).ok());
        let handed = match admin_token {
            Some(admin_token) => {
                let client = AdminClient::new(&format!("http://{addr}"), admin_token);
                client.supply_refresh_token(spec.name.as_str(), token).await
            }
            None => Err(HandOverError::NotRunning),
        };
        match handed {
            Ok(()) => return Ok(report(&Delivered::Daemon(addr), spec)),
            Err(HandOverError::NotRunning) => {}
            Err(HandOverError::Refused(why)) => note = Some(why),
        }
    }
    let Some(path) = file else {
        let why = note.unwrap_or_else(|| "no daemon answered".to_owned());
        eprintln!(
            "error: the new refresh token could not be delivered ({why}) and workload {} has \
             no refresh_token_file to write it to; it is lost: set refresh_token_file and log in \
             again",
            spec.name
        );
        return Ok(crate::EXIT_PROBLEM);
    };
    if let Some(why) = &note {
        eprintln!("warning: the running daemon did not take the refresh token ({why})");
    }
    let (p, t) = (path.clone(), token.clone());
    tokio::task::spawn_blocking(move || tokenvisor::write_secret_file(&p, &t))
        .await?
        .map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot write the refresh token to {}",
                path.display()
            ))
        })?;
    Ok(report(&Delivered::File(path), spec))
}

/// Prints what was done; exit 0.
fn report(delivered: &Delivered, spec: &WorkloadSpec) -> u8 {
    match delivered {
        Delivered::Daemon(addr) => println!(
            "logged in: workload {}'s new refresh token was handed to the running daemon at \
             {addr} (it keeps it in its journal and its refresh_token_file)",
            spec.name
        ),
        Delivered::File(path) => println!(
            "logged in: workload {}'s new refresh token was written to {} (mode 0600)",
            spec.name,
            path.display()
        ),
    }
    crate::exit::Exit::Ok.code()
}
