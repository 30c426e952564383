//! `tokenvisor idp`: the local provider a new user runs the daemon against. It serves
//! tokenvisor-idp's token endpoint on 127.0.0.1 (port 8765 by default) with the client that
//! `config/local.toml` names already registered ([`LOCAL_CLIENT_ID`], with the demo-only
//! secret shipped in `config/local/demo-client.secret`), prints where it listens and how to
//! script faults, and serves until SIGINT or SIGTERM. Faults are the JSON of
//! `POST /admin/fault`, at start (`--fault`) or at any time with curl.

use std::net::SocketAddr;
use std::time::Duration;

use tokenvisor_idp::{ClientSpec, FaultCommand, FaultKind, IdpConfig, IdpServer};

use crate::Context as _;

/// The client id of the shipped local configuration (`config/local.toml`).
pub const LOCAL_CLIENT_ID: &str = "local-demo";
/// Its client secret: demo-only, also shipped in `config/local/demo-client.secret`.
pub const LOCAL_CLIENT_SECRET: &str = "local-demo-secret-not-for-production";
/// The address `config/local.toml` points at.
pub const LOCAL_LISTEN: &str = "127.0.0.1:8765";

/// Arguments of `tokenvisor idp`.
#[derive(Debug, clap::Args)]
#[command(after_help = fault_help())]
pub struct IdpArgs {
    /// Where to listen (loopback only; port 0 picks a free one). config/local.toml expects
    /// the default.
    #[arg(long, value_name = "ADDR", default_value = LOCAL_LISTEN)]
    listen: SocketAddr,
    /// How long the access tokens it issues live, e.g. 60s, 5m.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    lifetime: Duration,
    /// A fault to arm at start (the JSON described below); repeatable.
    #[arg(long = "fault", value_name = "JSON")]
    faults: Vec<String>,
}

/// The fault syntax, for `--help`.
fn fault_help() -> String {
    let kinds: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
    format!(
        "Faults: what the token endpoint answers instead of a token, as JSON, at start with \
         --fault or later with\n  curl -X POST http://127.0.0.1:8765/admin/fault -d 'JSON'\n\
         (clear them all: curl -X POST http://127.0.0.1:8765/admin/faults/clear)\n\n\
         JSON: {{\"client\": ID, \"times\": N, \"fault\": {{\"kind\": KIND, …parameters}}}}\n  \
         client absent: every client; times absent: until cleared.\n  \
         KIND: {}\n  \
         parameters: retry_after (seconds, or {{\"date_in_secs\": N}}), status, code, ms (delay),\n  \
         chunk_bytes and interval_ms (slow_body), bytes (huge_body), slow_down_body.\n\n\
         Examples:\n  \
         --fault '{{\"fault\": {{\"kind\": \"html_forbidden\"}}, \"times\": 3}}'   a WAF page, three times\n  \
         --fault '{{\"fault\": {{\"kind\": \"too_many_requests\", \"retry_after\": 30}}}}'\n  \
         --fault '{{\"fault\": {{\"kind\": \"oauth_error\", \"status\": 400, \"code\": \"invalid_grant\"}}}}'\n\n\
         Exit status: 0 after SIGINT/SIGTERM; 1 when it cannot listen; 2 on usage errors \
         (a fault that does not parse).",
        kinds.join(", ")
    )
}

/// Runs the provider until SIGINT/SIGTERM. Returns the exit code.
pub fn run(args: &IdpArgs) -> crate::Result<u8> {
    let faults = (args.faults.iter())
        .map(|json| FaultCommand::from_json(json))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crate::Error::usage(clap::error::ErrorKind::ValueValidation, e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(args, faults))
}

async fn serve(args: &IdpArgs, faults: Vec<FaultCommand>) -> crate::Result<u8> {
    let config = IdpConfig::default()
        .with_listen(args.listen)
        .with_access_token_lifetime(args.lifetime);
    let idp = IdpServer::start(config)
        .await
        .context("cannot start the local provider")?;
    idp.register_client(ClientSpec::new(LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET));
    let armed = faults.len();
    for f in faults {
        idp.apply(f);
    }
    println!("tokenvisor idp: a fault-injecting OAuth provider, for tests and demos only");
    println!("  token endpoint  {}", idp.token_url());
    println!(
        "  client          {LOCAL_CLIENT_ID} (client_credentials; secret in config/local/demo-client.secret)"
    );
    println!(
        "  faults          POST {}/fault  ({armed} armed; see --help)",
        idp.admin_url()
    );
    println!("  counters        GET  {}/counters", idp.admin_url());
    println!("Ctrl-C stops it.");
    wait_for_signal().await?;
    idp.shutdown().await;
    Ok(crate::EXIT_OK)
}

async fn wait_for_signal() -> crate::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
