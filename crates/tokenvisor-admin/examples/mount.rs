//! Mounting the tokenvisor admin API in a host application's own axum app.
//!
//! ```text
//!   the host's axum app (axum::serve on 127.0.0.1)
//!     ├── GET /                   the host's own route
//!     └── /tokenvisor/…           tokenvisor_admin::router(state), nested
//!           ├── GET /tokenvisor/healthz
//!           └── GET /tokenvisor/v1/workloads   (bearer token required)
//! ```
//!
//! The runtime refreshes one workload against tokenvisor's in-memory fake token endpoint
//! (`tokenvisor::testing::FakeTransport`), so the example needs no identity provider. It
//! serves the app on an ephemeral port, asks it three questions over real HTTP and prints
//! the answers (never a token), then shuts down.
//!
//! Run it with `cargo run -p tokenvisor-admin --example mount`; it exits 0 within a second.

use std::sync::Arc;
use std::time::Duration;

use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::testing::FakeTransport;
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_admin::{AdminState, router};
use tokenvisor_core::{Secret, WorkloadName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::start(RuntimeConfig::new(
        dir.path().join("statuses"),
        Arc::new(FakeTransport::new()),
    ))
    .await?;
    runtime
        .add(
            WorkloadSpec::new(
                WorkloadName::new("github-mcp")?,
                "https://idp.example.test/oauth/token".parse()?,
                "github-mcp",
                GrantSpec::ClientCredentials,
            )
            .with_client_secret("example-client-secret"),
        )
        .await?;

    // The host's app, with the admin API nested under /tokenvisor.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let admin_token = "example-admin-token-0123456789";
    let state = AdminState::new(runtime.clone(), Secret::from(admin_token), addr, None);
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { "the host's own page\n" }),
        )
        .nest("/tokenvisor", router(state));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    println!("GET / → {}", get(addr, "/", None).await?);
    println!(
        "GET /tokenvisor/healthz → {}",
        get(addr, "/tokenvisor/healthz", None).await?
    );
    println!(
        "GET /tokenvisor/v1/workloads without a token → {}",
        get(addr, "/tokenvisor/v1/workloads", None).await?
    );
    let list = get(addr, "/tokenvisor/v1/workloads", Some(admin_token)).await?;
    println!("GET /tokenvisor/v1/workloads → {list}");

    server.abort();
    runtime.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

/// One HTTP/1.1 GET (`Connection: close`); returns the status line and the body.
async fn get(
    addr: std::net::SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> Result<String, Error> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = bearer.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await??;
    let status = answer.lines().next().unwrap_or("").to_owned();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    Ok(format!("{status}: {body}"))
}
