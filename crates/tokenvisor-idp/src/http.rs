//! The HTTP surface: `/token`, `/revoke`, `/healthz`, `/login` and `/admin/...`.
//!
//! Routing is axum's [`Router`] ([`router`]), built once; each connection gets its own state
//! (the switch that lets a `Drop` fault close that connection) through `with_state`. Forms
//! are decoded by `serde_urlencoded`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{self, MethodRouter, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{ClientSpec, ExpiresInShape};
use crate::counters::{AuthMethod, RequestInfo, bump};
use crate::fault::{Fault, FaultCommand, RetryAfter};
use crate::state::{ClientEntry, RefreshOutcome, Shared, random_token, unix_ms};

/// Largest `/token` or `/revoke` form body read.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Largest admin JSON body read.
const MAX_ADMIN_BYTES: usize = 1024 * 1024;

/// Per-connection handler state.
#[derive(Clone)]
pub(crate) struct ConnState {
    pub(crate) shared: Arc<Shared>,
    /// Notified by a `Drop` fault: the connection task then closes the connection.
    pub(crate) kill: Arc<Notify>,
}

/// The routes, without their per-connection state: built once, given each connection's
/// [`ConnState`] by `with_state`. A known path with another method answers 405 (`HEAD`
/// included: it is never served as a `GET`), any other path 404, both as plain text.
pub(crate) fn router() -> Router<ConnState> {
    Router::new()
        .route("/token", post(token_route))
        .route("/revoke", post(revoke_route))
        .route("/healthz", get(healthz))
        .route("/login", get(login))
        .route("/admin/counters", get(admin_counters))
        .route("/admin/counters/reset", post(admin_counters_reset))
        .route("/admin/fault", post(admin_fault_route))
        .route(
            "/admin/faults",
            get(admin_faults).delete(admin_faults_clear),
        )
        .route("/admin/faults/clear", post(admin_faults_clear))
        .route(
            "/admin/clients",
            get(admin_clients).post(admin_register_client),
        )
        .route("/admin/refresh-token", post(admin_issue_route))
        .route("/admin/revoke", post(admin_revoke_route))
        .route("/admin/last-request", get(admin_last_request))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
}

/// `GET` only: `HEAD` would otherwise be answered by the `GET` handler.
fn get<H, T>(handler: H) -> MethodRouter<ConnState>
where
    H: axum::handler::Handler<T, ConnState>,
    T: 'static,
{
    routing::get(handler).head(method_not_allowed)
}

async fn token_route(State(conn): State<ConnState>, headers: HeaderMap, body: Body) -> Response {
    token(&conn, &headers, body).await
}

async fn revoke_route(State(conn): State<ConnState>, headers: HeaderMap, body: Body) -> Response {
    revoke(&conn.shared, &headers, body).await
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

async fn login() -> Response {
    html(StatusCode::OK, LOGIN_PAGE)
}

async fn admin_counters(State(conn): State<ConnState>) -> Response {
    json(StatusCode::OK, &conn.shared.counters_snapshot())
}

async fn admin_counters_reset(State(conn): State<ConnState>) -> Response {
    conn.shared.reset_counters();
    json(StatusCode::OK, &Ack { ok: true })
}

async fn admin_fault_route(State(conn): State<ConnState>, body: Body) -> Response {
    admin_set_fault(&conn.shared, body).await
}

async fn admin_faults(State(conn): State<ConnState>) -> Response {
    let faults: Vec<serde_json::Value> = conn
        .shared
        .faults
        .snapshot()
        .iter()
        .filter_map(|c| serde_json::from_str(&c.to_json()).ok())
        .collect();
    json(StatusCode::OK, &faults)
}

async fn admin_faults_clear(State(conn): State<ConnState>) -> Response {
    conn.shared.faults.clear_all();
    json(StatusCode::OK, &Ack { ok: true })
}

async fn admin_clients(State(conn): State<ConnState>) -> Response {
    json(StatusCode::OK, &conn.shared.client_ids())
}

async fn admin_register_client(State(conn): State<ConnState>, body: Body) -> Response {
    match read_json::<ClientSpec>(body).await {
        Ok(spec) => {
            conn.shared.register_client(spec);
            json(StatusCode::CREATED, &Ack { ok: true })
        }
        Err(message) => admin_error(StatusCode::BAD_REQUEST, &message),
    }
}

async fn admin_issue_route(State(conn): State<ConnState>, body: Body) -> Response {
    admin_issue(&conn.shared, body).await
}

async fn admin_revoke_route(State(conn): State<ConnState>, body: Body) -> Response {
    admin_revoke(&conn.shared, body).await
}

async fn admin_last_request(State(conn): State<ConnState>, uri: Uri) -> Response {
    let client = uri.query().and_then(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find_map(|(k, v)| (k == "client_id").then_some(v))
    });
    match conn.shared.last_request(client.as_deref()) {
        Some(info) => json(StatusCode::OK, &info),
        None => admin_error(StatusCode::NOT_FOUND, "no request recorded"),
    }
}

async fn method_not_allowed() -> Response {
    text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

// ---------------------------------------------------------------------------------------------
// /token

async fn token(conn: &ConnState, headers: &HeaderMap, body: Body) -> Response {
    let shared = &*conn.shared;
    bump(&shared.counters.total);
    bump(&shared.counters.token_requests);
    let Some(params) = read_form(body).await else {
        bump(&shared.counters.invalid_request);
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body is not a valid application/x-www-form-urlencoded form",
        );
    };
    let auth = resolve_client(shared, headers, &params);
    let info = Arc::new(RequestInfo {
        path: "/token".to_owned(),
        client_id: auth.claimed.clone(),
        auth: auth.method,
        grant_type: first(&params, "grant_type").map(str::to_owned),
        params,
        at_unix_ms: unix_ms(SystemTime::now()),
    });
    if let Some(entry) = &auth.entry {
        bump(&entry.requests);
    }
    shared.record(auth.entry.as_deref(), Arc::clone(&info));

    let mut trickle_with = None;
    // A scripted fault first; otherwise, with chaos on, one chaos draw.
    let fault = shared
        .faults
        .take(auth.claimed.as_deref())
        .or_else(|| shared.chaos_take(auth.entry.as_deref()));
    if let Some(fault) = fault {
        shared.counters.fault(fault.kind());
        match fault_action(shared, fault) {
            FaultAction::Respond(resp) => return resp,
            FaultAction::Delay(pause) => tokio::time::sleep(pause).await,
            FaultAction::Trickle {
                chunk_bytes,
                interval,
            } => trickle_with = Some((chunk_bytes, interval)),
            FaultAction::Drop => {
                conn.kill.notify_one();
                // The connection task drops this connection (and this future with it).
                return std::future::pending().await;
            }
        }
    }
    let resp = grant(shared, &auth, &info);
    match trickle_with {
        Some((chunk_bytes, interval)) => trickle(resp, chunk_bytes, interval).await,
        None => resp,
    }
}

/// Answers a grant request whose client claims were resolved.
fn grant(shared: &Shared, auth: &ClientAuth, info: &RequestInfo) -> Response {
    let counters = &shared.counters;
    let entry = match authenticated(auth) {
        Ok(entry) => entry,
        Err(rejection) => return rejection.into_response(shared),
    };
    let spec = &entry.spec;
    let Some(grant_type) = info.grant_type.as_deref() else {
        bump(&counters.invalid_request);
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing grant_type",
        );
    };
    let requested_scope = info.scope();
    match grant_type {
        "refresh_token" => {
            let Some(presented) = info.param("refresh_token").filter(|t| !t.is_empty()) else {
                bump(&counters.invalid_request);
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "missing refresh_token",
                );
            };
            match shared.refresh(&spec.id, presented, spec.rotation) {
                RefreshOutcome::Issued {
                    refresh_token,
                    scope,
                } => {
                    bump(&counters.success);
                    let scope = requested_scope
                        .or(scope.as_deref())
                        .or(spec.scope.as_deref());
                    token_response(shared, spec, refresh_token, scope)
                }
                RefreshOutcome::Unknown => invalid_grant(shared, "unknown refresh token"),
                RefreshOutcome::WrongClient => {
                    invalid_grant(shared, "refresh token was issued to another client")
                }
                RefreshOutcome::Revoked => {
                    bump(&counters.revoked);
                    invalid_grant(shared, "refresh token has been revoked")
                }
                RefreshOutcome::Reused => {
                    bump(&counters.reuse_detected);
                    tracing::debug!(client = %spec.id, "refresh token reuse detected; grant revoked");
                    invalid_grant(
                        shared,
                        "refresh token reuse detected; the grant has been revoked",
                    )
                }
            }
        }
        "client_credentials" => {
            bump(&counters.success);
            let scope = requested_scope.or(spec.scope.as_deref());
            token_response(shared, spec, None, scope)
        }
        _ => {
            bump(&counters.unsupported_grant_type);
            oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "supported: refresh_token, client_credentials",
            )
        }
    }
}

fn invalid_grant(shared: &Shared, description: &str) -> Response {
    bump(&shared.counters.invalid_grant);
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

#[derive(Serialize)]
#[serde(untagged)]
enum ExpiresIn {
    Number(u64),
    String(String),
}

#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: String,
    token_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<ExpiresIn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

fn token_response(
    shared: &Shared,
    spec: &ClientSpec,
    refresh_token: Option<String>,
    scope: Option<&str>,
) -> Response {
    let lifetime = spec.lifetime.unwrap_or(shared.default_lifetime);
    let shape = spec.token_shape.as_ref().unwrap_or(&shared.default_shape);
    // Rounded up, so a sub-second lifetime is not announced as 0.
    let secs = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
    let expires_in = match shape.expires_in {
        ExpiresInShape::Number => Some(ExpiresIn::Number(secs)),
        ExpiresInShape::String => Some(ExpiresIn::String(secs.to_string())),
        ExpiresInShape::Omit => None,
    };
    let body = TokenBody {
        access_token: random_token("at_"),
        token_type: &shape.token_type,
        expires_in,
        refresh_token,
        scope,
    };
    let mut resp = json(StatusCode::OK, &body);
    no_store(&mut resp);
    resp
}

// ---------------------------------------------------------------------------------------------
// /revoke (RFC 7009)

async fn revoke(shared: &Shared, headers: &HeaderMap, body: Body) -> Response {
    bump(&shared.counters.total);
    bump(&shared.counters.revoke_requests);
    let Some(params) = read_form(body).await else {
        bump(&shared.counters.invalid_request);
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body is not a valid application/x-www-form-urlencoded form",
        );
    };
    let auth = resolve_client(shared, headers, &params);
    let info = Arc::new(RequestInfo {
        path: "/revoke".to_owned(),
        client_id: auth.claimed.clone(),
        auth: auth.method,
        grant_type: None,
        params,
        at_unix_ms: unix_ms(SystemTime::now()),
    });
    if let Some(entry) = &auth.entry {
        bump(&entry.requests);
    }
    shared.record(auth.entry.as_deref(), Arc::clone(&info));
    let entry = match authenticated(&auth) {
        Ok(entry) => entry,
        Err(rejection) => return rejection.into_response(shared),
    };
    let Some(token) = info.param("token").filter(|t| !t.is_empty()) else {
        bump(&shared.counters.invalid_request);
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "missing token");
    };
    // RFC 7009 §2.2: unknown or foreign tokens are answered 200 as well.
    shared.revoke_token(token, Some(&entry.spec.id));
    let mut resp = Response::new(Body::empty());
    no_store(&mut resp);
    resp
}

// ---------------------------------------------------------------------------------------------
// Client authentication

/// The client a request claims, and whether it proved it.
struct ClientAuth {
    method: AuthMethod,
    /// The claimed client id (for faults, counters and the last-request record).
    claimed: Option<String>,
    /// The registered client with that id.
    entry: Option<Arc<ClientEntry>>,
    /// The secret matched.
    secret_ok: bool,
    /// More than one authentication method was used (RFC 6749 §2.3: MUST NOT).
    conflict: bool,
}

fn first<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn resolve_client(shared: &Shared, headers: &HeaderMap, params: &[(String, String)]) -> ClientAuth {
    let form_id = first(params, "client_id");
    let form_secret = first(params, "client_secret");
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let Some((raw_id, raw_secret)) = parse_basic(value) else {
            return ClientAuth {
                method: AuthMethod::Basic,
                claimed: None,
                entry: None,
                secret_ok: false,
                conflict: false,
            };
        };
        // RFC 6749 §2.3.1 says form-urlencode id and secret first; many clients don't.
        // Try the decoded form, then the raw one.
        let id = form_urldecode(&raw_id);
        let secret = form_urldecode(&raw_secret);
        let (claimed, entry) = match shared.client(&id) {
            Some(entry) => (id, Some(entry)),
            None => match shared.client(&raw_id) {
                Some(entry) => (raw_id, Some(entry)),
                None => (id, None),
            },
        };
        let secret_ok = entry
            .as_ref()
            .is_some_and(|e| e.spec.secret == secret || e.spec.secret == raw_secret);
        let conflict = form_secret.is_some() || form_id.is_some_and(|f| f != claimed);
        return ClientAuth {
            method: AuthMethod::Basic,
            claimed: Some(claimed),
            entry,
            secret_ok,
            conflict,
        };
    }
    let entry = form_id.and_then(|id| shared.client(id));
    let (method, secret_ok) = match form_secret {
        Some(secret) => (
            AuthMethod::Post,
            entry.as_ref().is_some_and(|e| e.spec.secret == secret),
        ),
        None => (AuthMethod::None, false),
    };
    ClientAuth {
        method,
        claimed: form_id.map(str::to_owned),
        entry,
        secret_ok,
        conflict: false,
    }
}

/// Why a request's client is not authenticated.
enum AuthRejection {
    /// More than one authentication method (`invalid_request`).
    Conflict,
    /// Unknown client, wrong or missing secret (`invalid_client`).
    InvalidClient,
}

impl AuthRejection {
    fn into_response(self, shared: &Shared) -> Response {
        match self {
            Self::Conflict => {
                bump(&shared.counters.invalid_request);
                oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "more than one client authentication method",
                )
            }
            Self::InvalidClient => {
                bump(&shared.counters.invalid_client);
                let mut resp = oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication failed",
                );
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tokenvisor-idp\""),
                );
                resp
            }
        }
    }
}

/// The authenticated client, or why not.
fn authenticated(auth: &ClientAuth) -> Result<&ClientEntry, AuthRejection> {
    if auth.conflict {
        return Err(AuthRejection::Conflict);
    }
    match auth.entry.as_deref() {
        Some(entry) if auth.secret_ok => Ok(entry),
        Some(_) | None => Err(AuthRejection::InvalidClient),
    }
}

/// `Basic base64(id:secret)` → (id, secret), not yet urldecoded.
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let rest = rest.trim();
    let engine = base64::engine::general_purpose::STANDARD;
    let decoded = engine
        .decode(rest)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(rest))
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a space, `%XX` a byte.
/// Malformed escapes are kept as they are.
fn form_urldecode(s: &str) -> String {
    if !s.contains(['%', '+']) {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_form(body: Body) -> Option<Vec<(String, String)>> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.ok()?;
    serde_urlencoded::from_bytes(&bytes).ok()
}

// ---------------------------------------------------------------------------------------------
// Faults

enum FaultAction {
    Respond(Response),
    Delay(Duration),
    Trickle {
        chunk_bytes: usize,
        interval: Duration,
    },
    Drop,
}

const FAULT_DESCRIPTION: &str = "injected by tokenvisor-idp";

fn fault_action(shared: &Shared, fault: Fault) -> FaultAction {
    let respond = FaultAction::Respond;
    match fault {
        Fault::HtmlForbidden => respond(html(StatusCode::FORBIDDEN, WAF_PAGE)),
        Fault::JsonForbiddenNoError => {
            respond(raw_json(StatusCode::FORBIDDEN, r#"{"message":"blocked"}"#))
        }
        Fault::TooManyRequests {
            retry_after,
            slow_down_body,
        } => {
            let mut resp = if slow_down_body {
                raw_json(
                    StatusCode::TOO_MANY_REQUESTS,
                    r#"{"error":"slow_down","error_description":"too many requests"}"#,
                )
            } else {
                text(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n")
            };
            set_retry_after(&mut resp, retry_after);
            respond(resp)
        }
        Fault::ServiceUnavailable { retry_after } => {
            let mut resp = html(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_PAGE);
            set_retry_after(&mut resp, retry_after);
            respond(resp)
        }
        Fault::ServerError(status) => {
            let status = status_code(status);
            let page = format!(
                "<!DOCTYPE html><html><head><title>{status}</title></head>\
                 <body><h1>{status}</h1><p>The server encountered an error.</p></body></html>"
            );
            respond(html(status, page))
        }
        Fault::ServerErrorEmpty(status) => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = status_code(status);
            respond(resp)
        }
        Fault::OAuthError { status, code } => respond(json(
            status_code(status),
            &ErrorBody {
                error: &code,
                error_description: FAULT_DESCRIPTION,
            },
        )),
        Fault::OAuthErrorForm { status, code } => {
            let body = serde_urlencoded::to_string([
                ("error", code.as_str()),
                ("error_description", FAULT_DESCRIPTION),
            ])
            .unwrap_or_default();
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status_code(status);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            respond(resp)
        }
        Fault::OkHtml => respond(html(StatusCode::OK, LOGIN_PAGE)),
        Fault::OkJsonWithoutToken => respond(raw_json(StatusCode::OK, r#"{"foo":1}"#)),
        Fault::OkError { code } => respond(json(
            StatusCode::OK,
            &ErrorBody {
                error: &code,
                error_description: FAULT_DESCRIPTION,
            },
        )),
        Fault::Redirect => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::FOUND;
            if let Ok(location) = HeaderValue::try_from(format!("http://{}/login", shared.addr)) {
                resp.headers_mut().insert(header::LOCATION, location);
            }
            respond(resp)
        }
        Fault::Delay(pause) => FaultAction::Delay(pause),
        Fault::SlowBody {
            chunk_bytes,
            interval,
        } => FaultAction::Trickle {
            chunk_bytes: chunk_bytes.max(1),
            interval,
        },
        Fault::Drop => FaultAction::Drop,
        Fault::HugeBody { status, bytes } => respond(html(status_code(status), huge_page(bytes))),
        Fault::Raw {
            status,
            content_type,
            headers,
            body,
        } => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status_code(status);
            let extra = content_type
                .map(|ct| ("content-type".to_owned(), ct))
                .into_iter()
                .chain(headers);
            for (name, value) in extra {
                if let (Ok(name), Ok(value)) = (
                    header::HeaderName::try_from(name),
                    HeaderValue::try_from(value),
                ) {
                    resp.headers_mut().append(name, value);
                }
            }
            respond(resp)
        }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn set_retry_after(resp: &mut Response, retry_after: Option<RetryAfter>) {
    if let Some(value) = retry_after.and_then(|ra| HeaderValue::try_from(ra.header_value()).ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, value);
    }
}

/// An HTML page of exactly `bytes` bytes.
fn huge_page(bytes: usize) -> Vec<u8> {
    const HEAD: &[u8] =
        b"<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Error</h1><!-- ";
    const TAIL: &[u8] = b" --></body></html>";
    let mut page = Vec::with_capacity(bytes.max(HEAD.len() + TAIL.len()));
    page.extend_from_slice(HEAD);
    page.resize(bytes.saturating_sub(TAIL.len()).max(HEAD.len()), b'x');
    page.extend_from_slice(TAIL);
    page.truncate(bytes);
    page
}

/// Re-sends a response's body `chunk_bytes` at a time, pausing `interval` before each chunk.
async fn trickle(resp: Response, chunk_bytes: usize, interval: Duration) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    let stream = futures_util::stream::unfold(bytes, move |mut rest: Bytes| async move {
        if rest.is_empty() {
            return None;
        }
        tokio::time::sleep(interval).await;
        let chunk = rest.split_to(chunk_bytes.min(rest.len()));
        Some((Ok::<_, Infallible>(chunk), rest))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

// ---------------------------------------------------------------------------------------------
// Admin

#[derive(Serialize)]
struct Ack {
    ok: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    client_id: String,
}

#[derive(Serialize)]
struct IssueResponse {
    refresh_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Serialize)]
struct RevokeResponse {
    revoked: usize,
}

async fn admin_set_fault(shared: &Shared, body: Body) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ADMIN_BYTES).await else {
        return admin_error(StatusCode::BAD_REQUEST, "cannot read body");
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return admin_error(StatusCode::BAD_REQUEST, "body is not UTF-8");
    };
    match FaultCommand::from_json(text) {
        Ok(cmd) => {
            shared.faults.set(cmd.scope, cmd.fault, cmd.times);
            json(StatusCode::OK, &Ack { ok: true })
        }
        Err(e) => admin_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn admin_issue(shared: &Shared, body: Body) -> Response {
    let req: IssueRequest = match read_json(body).await {
        Ok(req) => req,
        Err(message) => return admin_error(StatusCode::BAD_REQUEST, &message),
    };
    match shared.client(&req.client_id) {
        Some(entry) => json(
            StatusCode::OK,
            &IssueResponse {
                refresh_token: shared.new_family(&entry.spec.id, entry.spec.scope.clone()),
            },
        ),
        None => admin_error(StatusCode::NOT_FOUND, "unknown client"),
    }
}

async fn admin_revoke(shared: &Shared, body: Body) -> Response {
    let req: RevokeRequest = match read_json(body).await {
        Ok(req) => req,
        Err(message) => return admin_error(StatusCode::BAD_REQUEST, &message),
    };
    let revoked = match (req.refresh_token, req.client_id) {
        (Some(token), None) => usize::from(shared.revoke_token(&token, None)),
        (None, Some(client)) => shared.revoke_client(&client),
        (Some(_), Some(_)) | (None, None) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                "give exactly one of refresh_token, client_id",
            );
        }
    };
    json(StatusCode::OK, &RevokeResponse { revoked })
}

/// Reads an admin JSON body; the error is the message for a 400.
async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, String> {
    let bytes = axum::body::to_bytes(body, MAX_ADMIN_BYTES)
        .await
        .map_err(|_| "cannot read body".to_owned())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

fn admin_error(status: StatusCode, message: &str) -> Response {
    #[derive(Serialize)]
    struct AdminError<'a> {
        error: &'a str,
    }
    json(status, &AdminError { error: message })
}

// ---------------------------------------------------------------------------------------------
// Response helpers

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut resp = json(
        status,
        &ErrorBody {
            error: code,
            error_description: description,
        },
    );
    no_store(&mut resp);
    resp
}

fn no_store(resp: &mut Response) {
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, "application/json", Body::from(body)),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed\n"),
    }
}

fn raw_json(status: StatusCode, body: &'static str) -> Response {
    with_type(status, "application/json", Body::from(body))
}

fn text(status: StatusCode, body: &'static str) -> Response {
    with_type(status, "text/plain; charset=utf-8", Body::from(body))
}

fn html(status: StatusCode, body: impl Into<Body>) -> Response {
    with_type(status, "text/html; charset=utf-8", body.into())
}

const WAF_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n\
<body><h1>Access Denied</h1>\n<p>Your request was blocked by the web application firewall.</p>\n\
<p>Reference: tokenvisor-idp-waf</p></body></html>\n";

const UNAVAILABLE_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n\
<body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your request.</p></body></html>\n";

const LOGIN_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n\
<body><h1>Sign in</h1><form method=\"post\" action=\"/login\">\
<input name=\"username\"><input name=\"password\" type=\"password\">\
<button type=\"submit\">Sign in</button></form></body></html>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urldecode_forms() {
        assert_eq!(form_urldecode("a+b%3Ac%25"), "a b:c%");
        assert_eq!(form_urldecode("plain"), "plain");
        assert_eq!(form_urldecode("bad%zz%4"), "bad%zz%4");
    }

    #[test]
    fn basic_header_parsing() {
        let v = HeaderValue::from_static("basic dXNlcjpwYTpzcw==");
        assert_eq!(parse_basic(&v), Some(("user".into(), "pa:ss".into())));
        assert_eq!(parse_basic(&HeaderValue::from_static("Bearer x")), None);
        assert_eq!(parse_basic(&HeaderValue::from_static("Basic !!!")), None);
    }

    #[test]
    fn huge_page_has_exact_size() {
        for n in [0, 5, 100, 8 << 20] {
            assert_eq!(huge_page(n).len(), n);
        }
        assert!(huge_page(1000).ends_with(b"</html>"));
    }
}
