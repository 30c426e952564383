//! The admin API's listener: our own accept loop over hyper's HTTP/1 connection builder,
//! because `axum::serve` can set none of the limits a socket open to local users needs.
//!
//! | limit | value | on excess |
//! | --- | --- | --- |
//! | request head time | `service.admin_header_timeout` (10 s), counted from when the connection starts waiting for a request, so an idle keep-alive connection is closed after it too | connection closed (hyper answers 408 when it can) |
//! | inactivity | `service.admin_idle_timeout` (30 s): no byte in either direction (a stalled body, a client that stops reading) | connection closed |
//! | request head bytes | [`MAX_HEADER_BYTES`] (16 KiB, start line included) | 431, connection closed |
//! | concurrent connections | min(`service.admin_max_connections` (256), soft `RLIMIT_NOFILE` / 4), at least 1 | accepted and closed at once with a canned 503: never queued |
//! | request body | 16 KiB (`BODY_LIMIT`); a larger `Content-Length` is refused before the body is read | 413 |
//!
//! `100 Continue` is sent by hyper only when a handler first reads the body, so a request
//! refused by the Host/Origin guard, the bearer check or the `Content-Length` check is
//! answered without one, and its body is never read.
//!
//! File descriptors: at start the soft `RLIMIT_NOFILE` is raised to the hard limit (both
//! logged). The admin connection cap is at most a quarter of the soft limit, so three
//! quarters of the descriptors stay for what matters (token requests, status and credential
//! writes) however many admin connections are open. When `accept` itself fails (`EMFILE`),
//! the loop waits [`ACCEPT_BACKOFF`] instead of spinning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokenvisor::Runtime;
use tokenvisor::config::{AdminLimits, ServiceConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::api::{AdminState, router};
use crate::error::ListenError;
use crate::guard::ConnLocal;
use crate::token::{self, AdminToken, Origin};

/// The largest request head accepted (start line and headers), in bytes.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long the accept loop waits after `accept` failed (out of descriptors, usually).
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Counter: admin connections closed at once because the cap was reached.
pub(crate) const REFUSED_METRIC: &str = "tokenvisor_admin_connections_refused_total";

/// What an excess connection reads before it is closed.
const REFUSED_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\ncache-control: no-store\r\nconnection: close\r\n\
content-length: 39\r\n\r\n{\"error\":\"too many admin connections\"}\n";

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; logs both. Returns the soft limit in
/// force. On failure the limit in force is kept (and logged).
pub(crate) fn raise_fd_limit() -> u64 {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE);
    let raised = before
        .as_ref()
        .map_err(ToString::to_string)
        .and_then(|&(_, hard)| {
            rlimit::increase_nofile_limit(hard).map_err(|e| e.to_string())?;
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_err(|e| e.to_string())
        });
    match (before, raised) {
        (Ok((was, _)), Ok((soft, hard))) => {
            tracing::info!(was, soft, hard, "file descriptor limit (RLIMIT_NOFILE)");
            soft
        }
        (before, Err(e)) => {
            let (soft, hard) = before.unwrap_or((1024, 1024));
            tracing::warn!(soft, hard, "cannot raise RLIMIT_NOFILE: {e}");
            soft
        }
        (Err(e), Ok((soft, hard))) => {
            tracing::info!(
                soft,
                hard,
                "file descriptor limit (RLIMIT_NOFILE); before: {e}"
            );
            soft
        }
    }
}

/// The admin connection cap: the configured one, at most a quarter of the soft descriptor
/// limit, at least 1.
pub(crate) fn connection_cap(configured: usize, soft_fd_limit: u64) -> usize {
    let quarter = usize::try_from(soft_fd_limit / 4).unwrap_or(usize::MAX);
    configured.min(quarter).max(1)
}

/// A bound admin listener with its token, not yet serving: what [`prepare`] returns, so
/// that a daemon can refuse to start (before its first token request) when it could not
/// serve.
#[derive(Debug)]
pub struct Prepared {
    listener: TcpListener,
    local: SocketAddr,
    token: AdminToken,
    limits: AdminLimits,
    cap: usize,
}

/// Where a serving admin API is: what the daemon's ready line reports.
#[derive(Debug, Clone)]
pub struct Serving {
    /// The bound address.
    pub addr: SocketAddr,
    /// The file holding the bearer token.
    pub token_file: PathBuf,
}

/// Raises the descriptor limit, then (when the admin API is on) loads or generates the
/// admin token and binds the listener. `None`: `admin_listen = "off"`.
///
/// # Errors
/// The admin token cannot be read or generated ([`ListenError::Token`]), or the address
/// cannot be bound ([`ListenError::Bind`]).
pub async fn prepare(service: &ServiceConfig) -> Result<Option<Prepared>, ListenError> {
    let soft_fd_limit = raise_fd_limit();
    let Some(addr) = service.admin_listen.addr() else {
        return Ok(None);
    };
    let token = token::load_or_create(service)?;
    match token.origin {
        Origin::Generated => tracing::info!(file = %token.path.display(), "admin token generated"),
        Origin::Kept | Origin::Configured => {
            tracing::info!(file = %token.path.display(), "admin token read");
        }
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(ListenError::LocalAddr)?;
    let limits = service.admin_limits;
    let cap = connection_cap(limits.max_connections, soft_fd_limit);
    tracing::info!(
        %local,
        max_connections = cap,
        configured = limits.max_connections,
        soft_fd_limit,
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        "admin API listening"
    );
    Ok(Some(Prepared {
        listener,
        local,
        token,
        limits,
        cap,
    }))
}

impl Prepared {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves the admin API over `runtime` in a task of its own, with the connection
    /// limits above; `metrics` is the handle of [`install_metrics_recorder`] (`None`:
    /// `/metrics` answers 404). In cluster mode the runtime's cluster view
    /// (`Runtime::cluster_view`) is served too. Call inside a tokio runtime.
    ///
    /// [`install_metrics_recorder`]: crate::install_metrics_recorder
    pub fn serve(self, runtime: Runtime, metrics: Option<PrometheusHandle>) -> Serving {
        let serving = Serving {
            addr: self.local,
            token_file: self.token.path.clone(),
        };
        let view = runtime.cluster_view();
        let state = AdminState::new(runtime, self.token.secret, self.local, metrics);
        if let Some(view) = view {
            state.set_cluster_view(view);
        }
        tokio::spawn(accept_loop(
            self.listener,
            router(state),
            self.limits,
            self.cap,
        ));
        serving
    }
}

async fn accept_loop(listener: TcpListener, app: Router, limits: AdminLimits, cap: usize) {
    let permits = Arc::new(Semaphore::new(cap));
    // Present (at 0) from the start, not from the first refusal.
    metrics::counter!(REFUSED_METRIC).increment(0);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                if last_accept_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!("admin API: cannot accept a connection: {e}");
                    last_accept_warning = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(stream);
            continue;
        };
        let conn_local = stream.local_addr().ok();
        let app = app.clone();
        let http = http.clone();
        tokio::spawn(async move {
            serve_connection(&http, stream, conn_local, app, limits.idle_timeout).await;
            drop(permit);
        });
    }
}

/// An excess connection: a canned 503 if the socket takes it without waiting, then closed.
fn refuse(stream: TcpStream) {
    metrics::counter!(REFUSED_METRIC).increment(1);
    tracing::debug!("admin API: connection cap reached; connection refused");
    let _ = stream.try_write(REFUSED_ANSWER);
    drop(stream);
}

async fn serve_connection(
    http: &hyper::server::conn::http1::Builder,
    stream: TcpStream,
    conn_local: Option<SocketAddr>,
    app: Router,
    idle_timeout: Duration,
) {
    let _ = stream.set_nodelay(true);
    let epoch = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = ActivityIo {
        inner: stream,
        epoch,
        activity: activity.clone(),
    };
    let service = hyper::service::service_fn(move |mut req: axum::http::Request<Incoming>| {
        if let Some(local) = conn_local {
            req.extensions_mut().insert(ConnLocal(local));
        }
        app.clone().oneshot(req)
    });
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("admin API connection: {e}");
                }
                return;
            }
            () = tokio::time::sleep_until(epoch + last + idle_timeout) => {
                let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                if epoch.elapsed() >= last + idle_timeout {
                    tracing::debug!("admin API connection idle for {idle_timeout:?}; closed");
                    return;
                }
            }
        }
    }
}

/// A stream that records when a byte last moved, in milliseconds since `epoch`.
struct ActivityIo {
    inner: TcpStream,
    epoch: Instant,
    activity: Arc<AtomicU64>,
}

impl ActivityIo {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for ActivityIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        poll
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_three_quarters_of_the_descriptors() {
        assert_eq!(connection_cap(256, 1024), 256);
        assert_eq!(connection_cap(256, 1_048_576), 256);
        assert_eq!(connection_cap(256, 256), 64);
        assert_eq!(connection_cap(256, 64), 16);
        assert_eq!(connection_cap(256, 3), 1);
        assert_eq!(connection_cap(10, u64::MAX), 10);
    }

    #[test]
    fn the_refusal_is_a_complete_answer() {
        let text = std::str::from_utf8(REFUSED_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
