//! An upstream slower than any client timeout: it accepts connections, reads what arrives
//! and never answers, until the peer closes or the server is dropped. nginx proxies to it in
//! [`crate::nginx::Mode::Slow`] with a read timeout far above tokenvisor's request timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncReadExt as _;
use tokio::task::{JoinHandle, JoinSet};

/// The running slow upstream; dropping it closes every connection.
pub struct SlowUpstream {
    addr: String,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl SlowUpstream {
    /// Listens on 127.0.0.1 (any free port).
    pub async fn start() -> SlowUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("slow upstream: cannot listen: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("slow upstream: {e}"))
            .to_string();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            // Owned here: aborting this task drops the set, which aborts every connection.
            let mut conns = JoinSet::new();
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                conns.spawn(async move {
                    let mut buf = [0u8; 4096];
                    while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        SlowUpstream {
            addr,
            accepted,
            task,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Connections accepted so far (each a request nginx passed on).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
