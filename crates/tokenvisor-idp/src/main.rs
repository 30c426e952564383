//! `tokenvisor-idp`: run the fault-injecting OAuth2 token server as a process.
//!
//! ```text
//! tokenvisor-idp [--listen 127.0.0.1:0] [--clients N] [--lifetime 60s] [--rotation on|off]
//!                [--print-tokens-to FILE] [--fault JSON]... [--expires-in number|string|omit]
//!                [--token-type Bearer]
//! ```
//!
//! Registers clients `client-0`.. with secrets `secret-0`.., issues one refresh token each,
//! writes them to `--print-tokens-to` (one JSON object per line) if asked, then prints one
//! JSON line to stdout (`url`, `token_url`, `revoke_url`, `admin_url`, `healthz_url`,
//! `clients`, `client_id_prefix`, `client_secret_prefix`, `tokens_file`, `pid`) and serves
//! until SIGINT or SIGTERM. Faults are scripted through `POST /admin/fault` or `--fault`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;
use tokenvisor_idp::{ClientSpec, ExpiresInShape, FaultCommand, IdpConfig, IdpServer, TokenShape};

/// An OAuth2 token server with scriptable faults, for tokenvisor's tests, demo and soak runs.
#[derive(Debug, Parser)]
#[command(name = "tokenvisor-idp", version)]
struct Args {
    /// Address to listen on (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// How many clients to register (`client-0`.. with secrets `secret-0`..).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Access-token lifetime, e.g. `60s`, `2s`, `1h`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    lifetime: Duration,
    /// Refresh-token rotation for the registered clients.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    rotation: OnOff,
    /// Write each client's id, secret and initial refresh token to FILE (JSON lines).
    #[arg(long, value_name = "FILE")]
    print_tokens_to: Option<PathBuf>,
    /// Arm a fault at start (the JSON of `POST /admin/fault`); repeatable.
    #[arg(long = "fault", value_name = "JSON")]
    faults: Vec<String>,
    /// How `expires_in` is sent.
    #[arg(long, value_enum, default_value_t = ExpiresIn::Number)]
    expires_in: ExpiresIn,
    /// The `token_type` value sent.
    #[arg(long, default_value = "Bearer")]
    token_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExpiresIn {
    Number,
    String,
    Omit,
}

#[derive(Serialize)]
struct Ready<'a> {
    url: String,
    token_url: String,
    revoke_url: String,
    admin_url: String,
    healthz_url: String,
    clients: usize,
    client_id_prefix: &'a str,
    client_secret_prefix: &'a str,
    tokens_file: Option<&'a Path>,
    pid: u32,
}

#[derive(Serialize)]
struct TokenLine<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    refresh_token: &'a str,
}

const CLIENT_ID_PREFIX: &str = "client-";
const CLIENT_SECRET_PREFIX: &str = "secret-";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tokenvisor-idp: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let faults = args
        .faults
        .iter()
        .map(|json| FaultCommand::from_json(json))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let shape = TokenShape {
        expires_in: match args.expires_in {
            ExpiresIn::Number => ExpiresInShape::Number,
            ExpiresIn::String => ExpiresInShape::String,
            ExpiresIn::Omit => ExpiresInShape::Omit,
        },
        token_type: args.token_type.clone(),
    };
    let config = IdpConfig::default()
        .with_listen(args.listen)
        .with_access_token_lifetime(args.lifetime)
        .with_token_shape(shape);
    let idp = IdpServer::start(config).await.map_err(|e| e.to_string())?;

    let mut lines = String::new();
    for i in 0..args.clients {
        let id = format!("{CLIENT_ID_PREFIX}{i}");
        let secret = format!("{CLIENT_SECRET_PREFIX}{i}");
        idp.register_client(
            ClientSpec::new(&id, &secret).with_rotation(args.rotation == OnOff::On),
        );
        if args.print_tokens_to.is_some() {
            let refresh_token = idp.issue_refresh_token(&id).map_err(|e| e.to_string())?;
            let line = TokenLine {
                client_id: &id,
                client_secret: &secret,
                refresh_token: &refresh_token,
            };
            lines.push_str(&serde_json::to_string(&line).map_err(|e| e.to_string())?);
            lines.push('\n');
        }
    }
    if let Some(path) = &args.print_tokens_to {
        std::fs::write(path, lines).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    for command in faults {
        idp.apply(command);
    }

    let ready = Ready {
        url: idp.url(),
        token_url: idp.token_url(),
        revoke_url: idp.revoke_url(),
        admin_url: idp.admin_url(),
        healthz_url: format!("{}/healthz", idp.url()),
        clients: args.clients,
        client_id_prefix: CLIENT_ID_PREFIX,
        client_secret_prefix: CLIENT_SECRET_PREFIX,
        tokens_file: args.print_tokens_to.as_deref(),
        pid: std::process::id(),
    };
    let line = serde_json::to_string(&ready).map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(stdout);

    wait_for_signal().await?;
    idp.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<(), String> {
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())
}
