//! The daemon harness of the hostile-input and secrets suites (`hostile.rs`, `secrets.rs`):
//! start the built `tokenvisor run` with its stderr captured, talk to its admin API while
//! recording every answer, read status files and metrics, and a scriptable token endpoint
//! ([`ScriptServer`]) for what `tokenvisor-idp` does not do on purpose (invalid UTF-8,
//! absurd `Retry-After` and `expires_in` values, echoing the request's secrets back).
//!
//! The daemon, the admin client, the status readers and the bounded wait are
//! tokenvisor-test-support's, re-exported here; what is the CLI suites' own is the script
//! server. Every server binds 127.0.0.1; every wait is a bounded poll; a daemon is killed by
//! its PID when its [`Daemon`] is dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
pub(crate) use tokenvisor_test_support::admin::{Admin, Answer, metric};
pub(crate) use tokenvisor_test_support::daemon::{Daemon, Launch};
pub(crate) use tokenvisor_test_support::fs::{files_under, write};
pub(crate) use tokenvisor_test_support::status::status_of;
pub(crate) use tokenvisor_test_support::wait::{POLL, poll_until, wait_until, wait_until_within};

use crate::common::TOKENVISOR;

/// The longest any wait of these suites may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// Starts `tokenvisor run --config <config>` (the binary of this crate) and waits for its
/// ready line.
pub(crate) async fn start_daemon(config: &Path, launch: Launch) -> Daemon {
    Daemon::start(TOKENVISOR, config, launch).await
}

// ---------------------------------------------------------------------------------------
// a scriptable token endpoint

/// A token request as the script server saw it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    /// The form fields, percent-decoded.
    pub(crate) form: Vec<(String, String)>,
    /// The raw body.
    pub(crate) raw: Vec<u8>,
    /// How many requests came before this one.
    pub(crate) n: u64,
}

impl Seen {
    /// The first form field called `name`.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A canned answer.
#[derive(Debug, Clone)]
pub(crate) struct Canned {
    /// Status code.
    pub(crate) status: u16,
    /// Headers (values as raw bytes, which may be anything a header may hold).
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// Body bytes.
    pub(crate) body: Vec<u8>,
}

impl Canned {
    /// `status` with a content type and a body.
    pub(crate) fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Canned {
        Canned {
            status,
            headers: vec![("content-type".to_owned(), content_type.as_bytes().to_vec())],
            body: body.into(),
        }
    }

    /// Adds a header.
    #[must_use]
    pub(crate) fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Canned {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// A token answer: `access_token` `at_script…` (looks like a real token), `expires_in`
    /// as the given JSON text, and a rotated refresh token when given.
    pub(crate) fn token(n: u64, expires_in_json: &str, refresh_token: Option<&str>) -> Canned {
        let mut body = format!(
            r#"{{"access_token":"at_script{n:016}","token_type":"Bearer","expires_in":{expires_in_json}"#
        );
        if let Some(rt) = refresh_token {
            body.push_str(&format!(
                r#","refresh_token":{}"#,
                serde_json::to_string(rt).unwrap()
            ));
        }
        body.push('}');
        Canned::new(200, "application/json", body)
    }
}

/// What the script server answers, computed from each request.
pub(crate) type Responder = Arc<dyn Fn(&Seen) -> Canned + Send + Sync>;

#[derive(Clone)]
struct ScriptState {
    responder: Arc<Mutex<Responder>>,
    requests: Arc<AtomicU64>,
}

/// A token endpoint on 127.0.0.1 answering whatever its current [`Responder`] says; by
/// default a fresh token living an hour. Stops on drop.
pub(crate) struct ScriptServer {
    addr: SocketAddr,
    state: ScriptState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptServer {
    /// Starts the server on the current tokio runtime.
    pub(crate) async fn start() -> ScriptServer {
        let default: Responder = Arc::new(|s: &Seen| Canned::token(s.n, "3600", None));
        let state = ScriptState {
            responder: Arc::new(Mutex::new(default)),
            requests: Arc::new(AtomicU64::new(0)),
        };
        let app = axum::Router::new()
            .route("/token", axum::routing::post(answer))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ScriptServer { addr, state, task }
    }

    /// The token endpoint's URL.
    pub(crate) fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// From now on, answer with `f`.
    pub(crate) fn set(&self, f: impl Fn(&Seen) -> Canned + Send + Sync + 'static) {
        *self
            .state
            .responder
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(f);
    }

    /// How many token requests arrived.
    pub(crate) fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

async fn answer(State(state): State<ScriptState>, body: Bytes) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    let seen = Seen {
        form: parse_form(&body),
        raw: body.to_vec(),
        n,
    };
    let responder = state
        .responder
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let canned = responder(&seen);
    let mut resp = Response::new(Body::from(canned.body));
    *resp.status_mut() = StatusCode::from_u16(canned.status).unwrap();
    for (k, v) in canned.headers {
        resp.headers_mut().append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_bytes(&v).unwrap(),
        );
    }
    resp
}

/// `application/x-www-form-urlencoded`, decoded.
pub(crate) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |&b| b == b'=');
            let k = percent_decode(it.next().unwrap_or_default());
            let v = percent_decode(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                let hex = std::str::from_utf8(&s[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` percent-encoded as a form value (every byte but `A-Za-z0-9*-._` encoded, space as
/// `+`): how a refresh token or a client secret travels in a token request.
pub(crate) fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
