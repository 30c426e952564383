//! The admin HTTP API's routes and handlers: list and inspect workloads, force a refresh,
//! supply credentials, deliver the current access token to processes outside the daemon,
//! `/metrics` in Prometheus text format and `/healthz`.
//!
//! | method, path                          | answers                                                   |
//! | ------------------------------------- | --------------------------------------------------------- |
//! | `GET /healthz`                        | 200 `{"ok":true,"workloads":N,…}` (also endpoints paced and below their concurrency ceiling, counts only); 503 if the supervisor does not answer or no timer can fire (the timer service is restarting); never needs auth |
//! | `GET /metrics`                        | 200 Prometheus text; 404 when no recorder was installed   |
//! | `GET /v1/workloads[?status=S]`        | 200 array of summaries (sorted by name); 400 bad query    |
//! | `GET /v1/workloads/{name}`            | 200 summary plus resolved settings; 404                   |
//! | `POST /v1/workloads/{name}/refresh`   | 202 `{"accepted":true}`; 404; 409 down, stopped or unauthenticated |
//! | `PUT /v1/workloads/{name}/credentials`| 204; 400 bad body or wrong grant; 404; 413 over 16 KiB    |
//! | `GET /v1/workloads/{name}/token`      | 200 token; 503 + `Retry-After` when none is valid; 404   |
//! | `GET /v1/summary[?attention=N]`       | 200 counts per status and per endpoint, the N (50, at most 1,000) workloads needing attention first, with reasons |
//! | `GET /v1/endpoints`                   | 200 per token endpoint: requests, failures, holds, latency histogram |
//! | `GET /v1/events`                      | 200 `text/event-stream` of state changes, `Last-Event-ID` resume; 503 over the client cap ([`crate::events`]) |
//! | `GET /`                               | the dashboard: one static page, no data in it; it calls the routes above with the bearer token ([`crate::dashboard`]) |
//!
//! Every route except `/healthz` and the static dashboard page requires `Authorization: Bearer <admin token>` (401 with
//! `WWW-Authenticate: Bearer` otherwise). There always is an admin token: the configured
//! `admin_token_file`, or one the daemon generates in `<state_dir>/admin.token`
//! ([`crate::token`]). Before that, every request (`/healthz` included) must name this
//! listener in `Host` and carry no foreign `Origin` ([`crate::guard`]: 400 / 403), which stops DNS-rebinding pages and
//! cross-origin browser requests. A `Content-Length` above the body limit is refused (413)
//! before the body is read, so no `100 Continue` is sent for a body that would be refused.
//! Every error is JSON `{"error": "…"}`; unknown paths are 404, wrong methods 405; every
//! response carries `Cache-Control: no-store`. No response contains a secret, except the
//! token endpoint's `access_token`.
//!
//! The JSON shapes are in [`crate::views`], the scrape-time metrics in [`crate::prometheus`].
//! Tests: `src/api/tests.rs`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tokenvisor::NewCredentials;
use tokenvisor::spec::GrantSpec;
use tokenvisor::{ClusterView, TokenHandle, Unavailable};
use tokenvisor::{Runtime, RuntimeError};
use tokenvisor::{SupervisorError, WorkloadView};
use tokenvisor_core::{Secret, Timestamp, WorkloadName, WorkloadStatus};

use crate::cluster::Elsewhere;
use crate::events::{EventLimits, Hub};
use crate::{cluster, dashboard, fleet, guard, prometheus, views};

#[cfg(test)]
mod tests;

/// The largest request body accepted, in bytes (larger → 413).
pub const BODY_LIMIT: usize = 16 * 1024;

/// `Retry-After` (seconds) when no valid token exists and the next attempt time is unknown.
const DEFAULT_RETRY_AFTER_SECS: u64 = 10;

/// `Retry-After` (seconds) while a workload is starting: its first answer is usually a
/// moment away.
const STARTING_RETRY_AFTER_SECS: u64 = 1;

/// What the admin API serves: the runtime, the bearer token, the address the router is
/// reached at, the metrics handle. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Runtime,
    /// Every route but `/healthz` needs `Authorization: Bearer <token>`. An empty token
    /// matches nothing (every request is refused).
    admin_token: Secret,
    /// The listener's bound address (for the Host and Origin checks).
    listen: SocketAddr,
    /// The Prometheus recorder's handle; `None` → `/metrics` answers 404.
    metrics: Option<PrometheusHandle>,
    /// When the admin API was set up (for `uptime_secs` in `/healthz`).
    started_at: tokio::time::Instant,
    /// The state-change stream of `/v1/events`.
    events: Arc<Hub>,
    /// Cluster mode: the view of the whole cluster ([`crate::cluster`]); unset in the
    /// single-process mode.
    cluster: OnceLock<Arc<dyn ClusterView>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("listen", &self.inner.listen)
            .field("metrics", &self.inner.metrics.is_some())
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// The state of an admin API over `runtime`, listening on `listen` (the bound address).
    /// `admin_token` is the bearer token; `metrics` the handle returned by
    /// [`install_metrics_recorder`] (when metrics are enabled). Call inside a tokio runtime.
    ///
    /// `listen` decides which `Host` and `Origin` values are accepted: `localhost`,
    /// `127.0.0.1`, `[::1]` and `listen`'s own IP, with `listen`'s port. Pass the address
    /// your server is bound to. (On `0.0.0.0` this crate's listener also accepts the address
    /// a connection arrived on; a router served by another server accepts loopback names
    /// only there.)
    ///
    /// [`install_metrics_recorder`]: crate::install_metrics_recorder
    pub fn new(
        runtime: Runtime,
        admin_token: Secret,
        listen: SocketAddr,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        Self::with_event_limits(
            runtime,
            admin_token,
            listen,
            metrics,
            EventLimits::default(),
        )
    }

    /// [`AdminState::new`] with other bounds for `GET /v1/events` (the resume buffer, the
    /// number of streams open at once). From this call on, the runtime's state changes are
    /// numbered and buffered.
    pub fn with_event_limits(
        runtime: Runtime,
        admin_token: Secret,
        listen: SocketAddr,
        metrics: Option<PrometheusHandle>,
        limits: EventLimits,
    ) -> Self {
        let events = Hub::start(runtime.subscribe(), limits);
        AdminState {
            inner: Arc::new(Inner {
                runtime,
                admin_token,
                listen,
                metrics,
                started_at: tokio::time::Instant::now(),
                events,
                cluster: OnceLock::new(),
            }),
        }
    }

    /// The runtime served.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Cluster mode: serves the whole cluster through `view` (the runtime's etcd view,
    /// `tokenvisor::cluster_view`): owners in `GET /v1/workloads`, the token route on any
    /// instance (a redirect to the owner), the cluster in `/healthz` and `/metrics`; see
    /// the crate docs ("Cluster mode"). Set once (also after the router is built); `false` if a view was
    /// already set.
    pub fn set_cluster_view(&self, view: Arc<dyn ClusterView>) -> bool {
        self.inner.cluster.set(view).is_ok()
    }

    /// The cluster view, in cluster mode.
    pub fn cluster_view(&self) -> Option<&Arc<dyn ClusterView>> {
        self.inner.cluster.get()
    }
}

/// The admin API's routes, with the Host/Origin guard, auth, the body limit, JSON fallbacks
/// and `no-store`, ready to serve or to mount: `Router::nest("/admin", router(state))` in
/// your own app (the router has its own fallback, so nest it rather than merge it into a
/// router that has one too). See `examples/mount.rs`.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/v1/workloads", get(list_workloads))
        .route("/v1/workloads/{name}", get(get_workload))
        .route("/v1/workloads/{name}/refresh", post(force_refresh))
        .route("/v1/workloads/{name}/credentials", put(supply_credentials))
        .route("/v1/workloads/{name}/token", get(deliver_token))
        .route("/v1/summary", get(summary))
        .route("/v1/endpoints", get(endpoints))
        .route("/v1/events", get(events))
        // Runs after the bearer check (layers wrap what is above them).
        .route_layer(middleware::from_fn(refuse_oversized_body))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        // The page is static and data-free; everything it shows comes from the protected
        // routes, called with the bearer token (see `dashboard`).
        .route("/", get(dashboard::page))
        .merge(protected)
        .fallback(not_found)
        // After every route is added: it applies to the routes present.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard_host_and_origin,
        ))
        .layer(middleware::map_response(no_store))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// errors

/// An error answer: a status and a short message, rendered as `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn not_found(name: &WorkloadName) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, format!("no workload named {name}"))
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, &self.message)
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// A runtime failure as an answer: its message sanitised and shortened (runtime errors name
/// workloads, files and actors, never secrets; the excerpt is a second line of defence
/// against control characters and length).
fn runtime_error(e: &RuntimeError) -> ApiError {
    let message = tokenvisor_core::classify::excerpt(e.to_string().as_bytes());
    let status = match e {
        RuntimeError::Supervisor(SupervisorError::NotFound(_)) => StatusCode::NOT_FOUND,
        RuntimeError::Supervisor(SupervisorError::NotOwnedHere(_)) => StatusCode::CONFLICT,
        RuntimeError::InvalidSpec { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        RuntimeError::Supervisor(SupervisorError::ShuttingDown)
        | RuntimeError::Unresponsive { .. } => StatusCode::SERVICE_UNAVAILABLE,
        RuntimeError::Supervisor(
            SupervisorError::AlreadyExists(_)
            | SupervisorError::Spawn { .. }
            | SupervisorError::Credentials { .. },
        )
        | RuntimeError::StatusDir { .. }
        | RuntimeError::Journal { .. }
        | RuntimeError::Spawn { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::warn!("admin API: {message}");
    }
    ApiError::new(status, message)
}

/// The workload name of a path, or 404 (a name that is not valid cannot exist).
fn workload_name(path: Result<Path<String>, PathRejection>) -> Result<WorkloadName, ApiError> {
    let Ok(Path(raw)) = path else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such workload"));
    };
    WorkloadName::new(&raw).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such workload: invalid name ({e})"),
        )
    })
}

async fn handle_of(state: &AdminState, name: &WorkloadName) -> Result<TokenHandle, ApiError> {
    state
        .runtime()
        .handle(name)
        .await
        .map_err(|e| runtime_error(&e))?
        .ok_or_else(|| ApiError::not_found(name))
}

async fn view_of(state: &AdminState, name: &WorkloadName) -> Result<WorkloadView, ApiError> {
    state
        .runtime()
        .get(name)
        .await
        .map_err(|e| runtime_error(&e))?
        .ok_or_else(|| ApiError::not_found(name))
}

// ---------------------------------------------------------------------------------------
// middleware and fallbacks

/// Refuses a request whose `Host` does not name this listener, or whose `Origin` is foreign
/// (see [`guard`]).
async fn guard_host_and_origin(
    State(state): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    let conn = req.extensions().get::<guard::ConnLocal>().map(|c| c.0);
    match guard::check(
        req.version(),
        req.uri(),
        req.headers(),
        state.inner.listen,
        conn,
    ) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            let (status, message) = refusal.answer();
            let mut resp = error_response(status, message);
            // The body, if any, stays unread: do not offer the connection for another request.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

/// Refuses (413) a declared body larger than [`BODY_LIMIT`] before reading it, so that no
/// `100 Continue` invites it.
async fn refuse_oversized_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        let mut resp = error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {BODY_LIMIT} bytes"),
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    next.run(req).await
}

/// Requires `Authorization: Bearer <admin token>`.
async fn require_bearer(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let expected = &state.inner.admin_token;
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let ok = presented.is_some_and(|t| {
        !expected.is_empty() && constant_time_eq(t.as_bytes(), expected.expose().as_bytes())
    });
    if ok {
        next.run(req).await
    } else {
        let mut resp = error_response(
            StatusCode::UNAUTHORIZED,
            "missing or invalid bearer token (Authorization: Bearer <admin token>)",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    }
}

/// The credentials of an `Authorization: Bearer <token>` header value (scheme in any case).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares `presented` with `expected` in time that depends only on `expected`'s length.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= presented.get(i).copied().unwrap_or(0) ^ e;
    }
    std::hint::black_box(diff) == 0
}

async fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> Response {
    error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

// ---------------------------------------------------------------------------------------
// handlers

async fn healthz(State(state): State<AdminState>) -> Response {
    let uptime = state.inner.started_at.elapsed().as_secs();
    // No timer can fire while the timer service restarts: nothing refreshes, retries or
    // expires. That is not healthy, however well every workload looks.
    let health = state.runtime().health();
    if let Some(problem) = health.problem() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "ok": false,
                "error": problem,
                "timer_service_restarts": health.timer_service_restarts,
            })),
        )
            .into_response();
    }
    match state.runtime().workload_count().await {
        Ok(n) => {
            let pacing = state.runtime().gates().pacing();
            let mut body = json!({
                "ok": true,
                "workloads": n,
                "uptime_secs": uptime,
                "endpoints_paced": pacing.paced,
                "endpoints_below_ceiling": pacing.below_ceiling,
            });
            if let Some(view) = state.cluster_view() {
                body["cluster"] = cluster::health_json(&view.health());
            }
            axum::Json(body)
        }
        .into_response(),
        Err(e) => {
            let message = tokenvisor_core::classify::excerpt(e.to_string().as_bytes());
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "ok": false, "error": message })),
            )
                .into_response()
        }
    }
}

async fn metrics_text(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let Some(handle) = &state.inner.metrics else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics are not enabled",
        ));
    };
    // The live list, so `tokenvisor_workloads{status}` is the live count. A supervisor that
    // does not answer must not take the other metrics with it: they are rendered anyway
    // (the workload gauges keep their last values; `/healthz` says what is wrong).
    let counts = match state.runtime().list().await {
        Ok(list) => Some(fleet::status_counts(&list)),
        Err(e) => {
            tracing::warn!("metrics: workload counts not updated: {e}");
            None
        }
    };
    prometheus::update_scrape_time_metrics(state.runtime(), counts.as_ref());
    if let Some(view) = state.cluster_view() {
        cluster::update_metrics(&view.counters(), &view.health());
    }
    let body = handle.render();
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response())
}

/// Query of `GET /v1/summary`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryQuery {
    /// How many workloads needing attention to list.
    attention: Option<usize>,
}

async fn summary(
    State(state): State<AdminState>,
    query: Result<Query<SummaryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request(format!(
            "bad query: the only parameter is attention=N (0 to {})",
            fleet::MAX_ATTENTION
        ))
    })?;
    let limit = query
        .attention
        .unwrap_or(fleet::DEFAULT_ATTENTION)
        .min(fleet::MAX_ATTENTION);
    let list = state
        .runtime()
        .list()
        .await
        .map_err(|e| runtime_error(&e))?;
    Ok(axum::Json(fleet::summarize(&list, limit)).into_response())
}

async fn endpoints(State(state): State<AdminState>) -> Response {
    let now = state.runtime().clock().now();
    let all: Vec<fleet::EndpointHealth> = state
        .runtime()
        .gates()
        .stats(now)
        .iter()
        .map(fleet::EndpointHealth::of)
        .collect();
    axum::Json(json!({ "now": now, "endpoints": all })).into_response()
}

/// `GET /v1/events`: see [`crate::events`].
async fn events(State(state): State<AdminState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let last_seen = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID is not an event id"))?,
        ),
    };
    match state.inner.events.open(last_seen) {
        Some(sse) => Ok(sse.into_response()),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams open; try again later",
        )),
    }
}

/// Query of `GET /v1/workloads`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only workloads with this status.
    status: Option<WorkloadStatus>,
}

async fn list_workloads(
    State(state): State<AdminState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request(
            "bad query: the only parameter is status=running|auth_retrying|unauthenticated|starting|stopped|error",
        )
    })?;
    let list = state
        .runtime()
        .list()
        .await
        .map_err(|e| runtime_error(&e))?;
    if let Some(view) = state.cluster_view() {
        return Ok(cluster::list(view, &list, query.status).await);
    }
    let summaries: Vec<views::Summary<'_>> = list
        .iter()
        .map(views::Summary::of)
        .filter(|s| query.status.is_none_or(|want| s.status == want))
        .collect();
    Ok(axum::Json(summaries).into_response())
}

async fn get_workload(
    State(state): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = workload_name(path)?;
    let view = view_of(&state, &name).await?;
    Ok(axum::Json(views::Detail::of(&view)).into_response())
}

async fn force_refresh(
    State(state): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = workload_name(path)?;
    let handle = handle_of(&state, &name).await?;
    if let Some(record) = handle.status() {
        let refused = match record.status {
            WorkloadStatus::Error => Some("is down (its actor crashed past its restart budget)"),
            WorkloadStatus::Stopped => Some("is stopped"),
            WorkloadStatus::Unauthenticated => Some(
                "is unauthenticated: a refresh would be refused; supply new credentials \
                 (PUT /v1/workloads/{name}/credentials)",
            ),
            WorkloadStatus::Running | WorkloadStatus::AuthRetrying | WorkloadStatus::Starting => {
                None
            }
        };
        if let Some(why) = refused {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("workload {name} {why}"),
            ));
        }
    }
    if state
        .runtime()
        .force_refresh(&name)
        .await
        .map_err(|e| runtime_error(&e))?
    {
        Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({ "accepted": true })),
        )
            .into_response())
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("workload {name} is down"),
        ))
    }
}

/// Body of `PUT /v1/workloads/{name}/credentials`. No `Debug`: it holds secrets.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

async fn supply_credentials(
    State(state): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = workload_name(path)?;
    let body = body.map_err(|rejection| body_error(&rejection))?;
    let view = view_of(&state, &name).await?;
    let creds = parse_credentials(&body)?;
    if creds.refresh_token.is_some() && !matches!(view.spec.grant, GrantSpec::RefreshToken { .. }) {
        return Err(ApiError::bad_request(format!(
            "workload {name} uses the {} grant and has no refresh token; \
             supply only client_secret",
            view.spec.grant.as_str()
        )));
    }
    state
        .runtime()
        .supply_credentials(&name, creds)
        .await
        .map_err(|e| runtime_error(&e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn body_error(rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {BODY_LIMIT} bytes"),
        )
    } else {
        ApiError::bad_request("cannot read the request body")
    }
}

/// Parses and validates a credentials body. Error messages never quote a value.
fn parse_credentials(body: &[u8]) -> Result<NewCredentials, ApiError> {
    const SHAPE: &str = r#"expected {"refresh_token": "…", "client_secret": "…"} (either or both)"#;
    let parsed: CredentialsBody = serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Syntax | Category::Io => {
                format!("malformed JSON at line {} column {}", e.line(), e.column())
            }
            Category::Eof => "truncated or empty JSON".to_owned(),
            Category::Data => {
                // serde's own message names an unknown field (a key, never a value);
                // type errors could quote a value, so they get a fixed text.
                let msg = e.to_string();
                if msg.starts_with("unknown field") || msg.starts_with("duplicate field") {
                    tokenvisor_core::classify::excerpt(msg.as_bytes())
                } else {
                    "invalid field value: both fields are strings".to_owned()
                }
            }
        };
        ApiError::bad_request(format!("{what}; {SHAPE}"))
    })?;
    let refresh_token = parsed.refresh_token.map(Secret::from);
    let client_secret = parsed.client_secret.map(Secret::from);
    if refresh_token.is_none() && client_secret.is_none() {
        return Err(ApiError::bad_request(format!(
            "no credentials supplied; {SHAPE}"
        )));
    }
    for (what, s) in [
        ("refresh_token", &refresh_token),
        ("client_secret", &client_secret),
    ] {
        if s.as_ref().is_some_and(|s| s.expose().trim().is_empty()) {
            return Err(ApiError::bad_request(format!("{what} is empty")));
        }
    }
    Ok(NewCredentials {
        refresh_token,
        client_secret,
    })
}

async fn deliver_token(
    State(state): State<AdminState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = workload_name(path)?;
    let now = state.runtime().clock().now();
    let handle = match state.cluster_view() {
        None => handle_of(&state, &name).await?,
        Some(view) => {
            let local = state
                .runtime()
                .handle(&name)
                .await
                .map_err(|e| runtime_error(&e))?;
            if local.as_ref().is_some_and(|h| h.current().is_ok()) {
                local.ok_or_else(|| ApiError::not_found(&name))?
            } else {
                match cluster::token_elsewhere(view, &name, local.as_ref()).await {
                    Elsewhere::Answer(resp) => return Ok(resp),
                    Elsewhere::Local => local.ok_or_else(|| ApiError::not_found(&name))?,
                    Elsewhere::Unknown => return Err(ApiError::not_found(&name)),
                }
            }
        }
    };
    match handle.current() {
        Ok(token) => {
            let t = token.token();
            let body = json!({
                "access_token": token.expose(),
                "token_type": &*t.token_type,
                "expires_at": t.expires_at,
                "expires_in": t.expires_at.since(now).as_secs(),
            });
            Ok(axum::Json(body).into_response())
        }
        Err(why) => Ok(unavailable_response(&handle, &why, now)),
    }
}

/// 503 with `Retry-After` and the reason no token is served.
fn unavailable_response(handle: &TokenHandle, why: &Unavailable, now: Timestamp) -> Response {
    let record_next = || {
        handle
            .status()
            .and_then(|r| r.token.as_ref().and_then(|t| t.next_attempt_at))
    };
    let (reason, detail, next_attempt_at): (&str, Option<&str>, Option<Timestamp>) = match why {
        Unavailable::Starting => ("starting", None, None),
        Unavailable::BackingOff {
            next_attempt_at,
            reason,
        } => (
            "auth_retrying",
            Some(reason),
            next_attempt_at.or_else(record_next),
        ),
        Unavailable::Unauthenticated { reason } => ("unauthenticated", Some(reason), None),
        Unavailable::Stopped => ("stopped", None, None),
        Unavailable::Error => ("error", None, None),
    };
    let retry_after = match (why, next_attempt_at.filter(|t| *t > now)) {
        (_, Some(t)) => now.secs_until_ceil(t).max(1),
        (Unavailable::Starting, None) => STARTING_RETRY_AFTER_SECS,
        (
            Unavailable::BackingOff { .. }
            | Unavailable::Unauthenticated { .. }
            | Unavailable::Stopped
            | Unavailable::Error,
            None,
        ) => DEFAULT_RETRY_AFTER_SECS,
    };
    let body = json!({
        "error": format!("no valid token for workload {}: {why}", handle.name()),
        "reason": reason,
        "detail": detail,
        "next_attempt_at": next_attempt_at,
        "retry_after_secs": retry_after,
    });
    let mut headers = HeaderMap::new();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    (StatusCode::SERVICE_UNAVAILABLE, headers, axum::Json(body)).into_response()
}
