//! Embedding tokenvisor in a host application's own ractor tree.
//!
//! ```text
//!   host (this example's root actor)
//!     └── tokenvisor supervisor   (Runtime::start_linked: a linked child of the host)
//!           ├── token actor "github-mcp"
//!           ├── token actor "jira"
//!           └── token actor "search-agent"
//! ```
//!
//! The host starts tokenvisor inside its own tree in `pre_start`, adds three workloads, and
//! hears of the supervisor's life (started, terminated, failed) in its own
//! `handle_supervisor_evt`. The application reads tokens through `TokenHandle::current()`: a
//! lock-free load, never a round trip through a mailbox. An in-process `tokenvisor-idp` on
//! 127.0.0.1 plays the identity provider, with two-second tokens so that refreshes happen
//! while the example runs. Tokens are never printed: only that one was obtained, and when
//! it expires.
//!
//! Run it with `cargo run -p tokenvisor --example embed`; it exits 0 within a few seconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokenvisor::TokenHandle;
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::{HttpConfig, HttpTransport};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::policy::BackoffPolicy;
use tokenvisor_core::{Secret, StatusRecord, WorkloadName};
use tokenvisor_idp::{ClientSpec, IdpConfig, IdpServer};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One workload the host wants tokens for (in a real host: from its own configuration).
struct Workload {
    name: String,
    client_id: String,
    client_secret: Secret,
    refresh_token: Secret,
}

/// The host application's root actor.
struct Host;

struct HostArgs {
    status_dir: PathBuf,
    token_url: String,
    workloads: Vec<Workload>,
}

struct HostState {
    runtime: Runtime,
    handles: Vec<TokenHandle>,
}

enum HostMsg {
    /// The token handles, for the application's request path.
    Handles(RpcReplyPort<Vec<TokenHandle>>),
    /// Shut tokenvisor down (status files flushed); answers how many files were written.
    Shutdown(RpcReplyPort<Result<u64, String>>),
}

impl Actor for Host {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        args: HostArgs,
    ) -> Result<HostState, ActorProcessingErr> {
        // The identity provider is on loopback: never go through an environment proxy.
        let transport = HttpTransport::new(HttpConfig {
            use_env_proxy: false,
            ..HttpConfig::default()
        })?;
        let config = RuntimeConfig::new(&args.status_dir, Arc::new(transport));
        // tokenvisor's supervisor becomes a linked child of this actor.
        let runtime = Runtime::start_linked(config, myself.get_cell()).await?;
        let mut handles = Vec::new();
        for w in args.workloads {
            let mut spec = WorkloadSpec::new(
                WorkloadName::new(&w.name)?,
                args.token_url.parse()?,
                &w.client_id,
                GrantSpec::RefreshToken {
                    token: w.refresh_token,
                    file: None,
                },
            );
            spec.client_secret = Some(w.client_secret);
            spec.policy.request_timeout = Duration::from_secs(5);
            spec.policy.backoff = BackoffPolicy {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(2),
                multiplier: 2.0,
            };
            handles.push(runtime.add(spec).await?);
        }
        println!("host: tokenvisor started with {} workloads", handles.len());
        Ok(HostState { runtime, handles })
    }

    async fn handle(
        &self,
        _myself: ActorRef<HostMsg>,
        msg: HostMsg,
        st: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HostMsg::Handles(reply) => {
                let _ = reply.send(st.handles.clone());
            }
            HostMsg::Shutdown(reply) => {
                let result = st
                    .runtime
                    .shutdown(Duration::from_secs(5))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|report| {
                        if report.failed.is_empty() {
                            Ok(report.written)
                        } else {
                            Err(format!("status not durable for {:?}", report.failed))
                        }
                    });
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<HostMsg>,
        evt: SupervisionEvent,
        st: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorStarted(cell) => {
                println!("host: supervision: {} started", who(&cell, st));
            }
            SupervisionEvent::ActorTerminated(cell, _state, reason) => {
                println!(
                    "host: supervision: {} terminated ({})",
                    who(&cell, st),
                    reason.as_deref().unwrap_or("no reason given")
                );
                // This host has nothing left to do once tokenvisor has stopped.
                if cell.get_id() == st.runtime.supervisor().get_id() {
                    myself.stop(Some("tokenvisor stopped".into()));
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                // tokenvisor restarts its own token actors; its supervisor failing is the
                // host's business. This host logs it and stops (a real one might restart it).
                eprintln!("host: supervision: {} failed: {err}", who(&cell, st));
                myself.stop(Some("tokenvisor failed".into()));
            }
            SupervisionEvent::ProcessGroupChanged(_) => {}
        }
        Ok(())
    }
}

fn who(cell: &ActorCell, st: &HostState) -> String {
    if cell.get_id() == st.runtime.supervisor().get_id() {
        "the tokenvisor supervisor".to_owned()
    } else {
        format!("child {}", cell.get_id())
    }
}

/// What the application does on its request path: a lock-free read of the current token.
fn report(round: u32, handles: &[TokenHandle]) {
    for h in handles {
        match h.current() {
            // `token.expose()` would go into an Authorization header; never print it.
            Ok(token) => println!(
                "round {round}: {}: token obtained, expires at {}",
                h.name(),
                token.token().expires_at
            ),
            Err(why) => println!("round {round}: {}: no token: {why}", h.name()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // The identity provider: three clients whose access tokens live two seconds.
    let idp = IdpServer::start(IdpConfig::default()).await?;
    let mut workloads = Vec::new();
    for (name, client_id) in [
        ("github-mcp", "github"),
        ("jira", "jira"),
        ("search-agent", "search"),
    ] {
        let secret = format!("{client_id}-client-secret");
        idp.register_client(
            ClientSpec::new(client_id, secret.as_str()).with_lifetime(Duration::from_secs(2)),
        );
        workloads.push(Workload {
            name: name.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: Secret::from(secret),
            refresh_token: Secret::from(idp.issue_refresh_token(client_id)?),
        });
    }
    println!("idp: listening on {}", idp.url());

    let status_dir = tempfile::tempdir()?;
    let (host, host_done) = Actor::spawn(
        Some("host".into()),
        Host,
        HostArgs {
            status_dir: status_dir.path().to_owned(),
            token_url: idp.token_url(),
            workloads,
        },
    )
    .await?;
    let handles = ractor::call!(host, HostMsg::Handles)?;

    // Wait (bounded) for the first tokens, then read them a few times while they refresh.
    let started = tokio::time::Instant::now();
    while !handles.iter().all(|h| h.current().is_ok()) {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("no token within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for round in 1..=4 {
        report(round, &handles);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    let written = ractor::call!(host, HostMsg::Shutdown)??;
    println!("host: tokenvisor shut down; status files flushed ({written} writes)");
    for h in &handles {
        let path = status_dir.path().join(format!("{}.json", h.name()));
        let record = StatusRecord::from_json(&std::fs::read(&path)?)?;
        println!(
            "status file {}: {}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            record.status.as_str()
        );
    }
    // The host stops on its own once it hears that the supervisor terminated.
    tokio::time::timeout(Duration::from_secs(5), host_done).await??;
    idp.shutdown().await;
    println!("clean shutdown");
    Ok(())
}
