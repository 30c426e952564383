//! The server handle: start, control, stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::IdpError;
use crate::chaos::Chaos;
use crate::config::{ClientSpec, IdpConfig};
use crate::counters::{Counters, RequestInfo};
use crate::fault::{Fault, FaultCommand, FaultScope, Times};
use crate::http::{ConnState, router};
use crate::state::Shared;

/// A running token server, and the handle to script it.
///
/// It runs on the tokio runtime that called [`IdpServer::start`], serving HTTP/1.1 (and h2c)
/// on a loopback address. It stops, closing every connection at once, on
/// [`IdpServer::shutdown`] or when the handle is dropped. All methods take `&self`: share the
/// handle with an `Arc` to script it from several tasks.
///
/// Admin endpoints (JSON, no authentication: loopback test server):
///
/// | request | effect |
/// | --- | --- |
/// | `GET /healthz` | `ok` |
/// | `GET /admin/counters`, `POST /admin/counters/reset` | [`Counters`] as JSON; reset them |
/// | `POST /admin/fault` | arm a fault: the JSON of [`FaultCommand`] |
/// | `GET /admin/faults`, `DELETE /admin/faults`, `POST /admin/faults/clear` | list, clear all |
/// | `GET /admin/clients`, `POST /admin/clients` | list ids; register a [`ClientSpec`] (JSON) |
/// | `POST /admin/refresh-token` `{"client_id"}` | `{"refresh_token"}`: a new grant |
/// | `POST /admin/revoke` `{"refresh_token"}` or `{"client_id"}` | `{"revoked": n}` |
/// | `GET /admin/last-request[?client_id=ID]` | [`RequestInfo`] as JSON, 404 if none |
#[derive(Debug)]
pub struct IdpServer {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl IdpServer {
    /// Binds `config.listen` (a loopback address, else [`IdpError::NotLoopback`]) and starts
    /// serving on the current tokio runtime.
    pub async fn start(config: IdpConfig) -> Result<Self, IdpError> {
        if !config.listen.ip().is_loopback() {
            return Err(IdpError::NotLoopback(config.listen));
        }
        let bind_err = |source| IdpError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let shared = Arc::new(Shared::new(addr, &config));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        tracing::debug!(%addr, "tokenvisor-idp listening");
        Ok(Self {
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops accepting, closes every connection, and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The token endpoint, `http://127.0.0.1:PORT/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.shared.addr)
    }

    /// The revocation endpoint, `http://127.0.0.1:PORT/revoke`.
    pub fn revoke_url(&self) -> String {
        format!("http://{}/revoke", self.shared.addr)
    }

    /// The admin API's base, `http://127.0.0.1:PORT/admin`.
    pub fn admin_url(&self) -> String {
        format!("http://{}/admin", self.shared.addr)
    }

    /// Registers a client, replacing one with the same id (its grants, request count and
    /// last request are kept).
    pub fn register_client(&self, spec: ClientSpec) {
        self.shared.register_client(spec);
    }

    /// The registered client ids, sorted.
    pub fn clients(&self) -> Vec<String> {
        self.shared.client_ids()
    }

    /// Starts a new grant for a client (as if it had just completed an authorization-code
    /// flow) and returns its refresh token. The grant's scope is the client's default scope.
    pub fn issue_refresh_token(&self, client_id: &str) -> Result<String, IdpError> {
        let entry = self
            .shared
            .client(client_id)
            .ok_or_else(|| IdpError::UnknownClient(client_id.to_owned()))?;
        Ok(self
            .shared
            .new_family(&entry.spec.id, entry.spec.scope.clone()))
    }

    /// Revokes the grant a refresh token belongs to (that token and every other token of its
    /// family then answer `invalid_grant`). False if the token is unknown or already revoked.
    pub fn revoke_refresh_token(&self, refresh_token: &str) -> bool {
        self.shared.revoke_token(refresh_token, None)
    }

    /// Revokes every grant of a client; returns how many were live.
    pub fn revoke_client_grants(&self, client_id: &str) -> usize {
        self.shared.revoke_client(client_id)
    }

    /// The current refresh token of each live grant of a client (what a well-behaved client
    /// should now hold).
    pub fn live_refresh_tokens(&self, client_id: &str) -> Vec<String> {
        self.shared.live_refresh_tokens(client_id)
    }

    /// Arms a fault for a scope, replacing the one armed there. `Times::Next(0)` clears it.
    pub fn set_fault(&self, scope: FaultScope, fault: Fault, times: Times) {
        self.shared.faults.set(scope, fault, times);
    }

    /// Arms a fault given as a [`FaultCommand`].
    pub fn apply(&self, command: FaultCommand) {
        self.set_fault(command.scope, command.fault, command.times);
    }

    /// Clears the fault armed for one scope.
    pub fn clear_fault(&self, scope: &FaultScope) {
        self.shared.faults.clear(scope);
    }

    /// Clears every armed fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear_all();
    }

    /// The armed faults (global first, then clients by id), with their remaining uses.
    pub fn faults(&self) -> Vec<FaultCommand> {
        self.shared.faults.snapshot()
    }

    /// Switches seeded probabilistic faults on (`Some`) or off (`None`): with chaos on,
    /// every `/token` request that no scripted fault applies to draws one
    /// [`ChaosOutcome`](crate::ChaosOutcome) (see [`Chaos`]). Switching on numbers the draws
    /// from 0 again. Refused when the rates are not probabilities or sum to more than 1.
    pub fn set_chaos(&self, chaos: Option<Chaos>) -> Result<(), IdpError> {
        if let Some(c) = &chaos {
            c.validate().map_err(IdpError::InvalidChaos)?;
        }
        self.shared.chaos.set(chaos);
        Ok(())
    }

    /// The chaos setting in force, if any.
    pub fn chaos(&self) -> Option<Chaos> {
        self.shared.chaos.get()
    }

    /// The clients whose grants a chaos draw revoked (sorted; kept after chaos is switched
    /// off). A soak run allows exactly these to end `unauthenticated`.
    pub fn chaos_revoked_clients(&self) -> Vec<String> {
        self.shared.chaos.revoked()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters_snapshot()
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        self.shared.reset_counters();
    }

    /// The last `/token` or `/revoke` request that claimed a registered client.
    pub fn last_request(&self, client_id: &str) -> Option<RequestInfo> {
        self.shared.last_request(Some(client_id))
    }

    /// The last `/token` or `/revoke` request of any client (or none).
    pub fn last_request_any(&self) -> Option<RequestInfo> {
        self.shared.last_request(None)
    }
}

impl Drop for IdpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Accepts until told to stop (or the handle is gone), then aborts every connection.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    conns.spawn(serve_connection(builder.clone(), stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
    tracing::debug!(addr = %shared.addr, "tokenvisor-idp stopped");
}

async fn serve_connection(builder: Builder<TokioExecutor>, stream: TcpStream, shared: Arc<Shared>) {
    // Small request/response pairs on keep-alive connections: never wait for Nagle.
    let _ = stream.set_nodelay(true);
    let kill = Arc::new(Notify::new());
    /// Built once; each connection gets a cheap clone with its own state.
    static ROUTER: std::sync::LazyLock<axum::Router<ConnState>> = std::sync::LazyLock::new(router);
    let service = TowerToHyperService::new(ROUTER.clone().with_state(ConnState {
        shared,
        kill: Arc::clone(&kill),
    }));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = kill.notified() => {
            tracing::debug!("dropping a connection (fault)");
        }
    }
}
