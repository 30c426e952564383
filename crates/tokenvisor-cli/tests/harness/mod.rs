//! The daemon harness of the hostile-input and secrets suites (`hostile.rs`, `secrets.rs`):
//! start the built `tokenvisor run` with its stderr captured, talk to its admin API while
//! recording every answer, read status files and metrics, and a scriptable token endpoint
//! ([`ScriptServer`]) for what `tokenvisor-idp` does not do on purpose (invalid UTF-8,
//! absurd `Retry-After` and `expires_in` values, echoing the request's secrets back).
//!
//! Every server binds 127.0.0.1; every wait is a bounded poll; a daemon is killed by its PID
//! when its [`Daemon`] is dropped.

// Each suite uses a different subset.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use tokenvisor_core::StatusRecord;

use crate::common::tokenvisor;

/// The longest any wait of these suites may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `cond` every 20 ms until it holds; fails the test after `patience`.
pub(crate) async fn wait_until(what: &str, patience: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if cond() {
            return;
        }
        assert!(start.elapsed() < patience, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `cond` every 20 ms until it holds (true) or `patience` passes (false).
pub(crate) async fn poll(patience: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= patience {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a file, creating nothing else.
pub(crate) fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The status record of `name` in `status_dir`, if its file exists and parses.
pub(crate) fn status_of(status_dir: &Path, name: &str) -> Option<StatusRecord> {
    let bytes = std::fs::read(status_dir.join(format!("{name}.json"))).ok()?;
    StatusRecord::from_json(&bytes).ok()
}

/// The sum of every series of metric `name` in a Prometheus text rendering.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// the daemon

/// How to launch a daemon.
#[derive(Debug, Default)]
pub(crate) struct Launch {
    /// Extra environment variables (`RUST_LOG`, …).
    pub(crate) env: Vec<(String, String)>,
    /// Run it through `sh` with SIGXFSZ ignored, so that a lowered file-size limit makes
    /// writes fail (`EFBIG`) instead of killing the process.
    pub(crate) ignore_sigxfsz: bool,
    /// Run it through `sh` after `ulimit <this>` (e.g. `-n 64`: soft and hard descriptor
    /// limit; `-S -n 256`: the soft one only).
    pub(crate) ulimit: Option<String>,
}

/// A running `tokenvisor run`; killed (by PID) and reaped on drop.
pub(crate) struct Daemon {
    child: Child,
    /// Kept open so that the daemon never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    /// Everything the daemon wrote to stderr so far.
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The admin API's address, when it listens.
    pub(crate) admin: Option<String>,
    /// The file holding the admin API's bearer token (from the ready line).
    pub(crate) admin_token_file: Option<PathBuf>,
    /// The ready line, parsed.
    pub(crate) ready: serde_json::Value,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts `tokenvisor run --config <config>` and waits for its ready line.
    pub(crate) async fn start(config: &Path, launch: Launch) -> Daemon {
        let exe = tokenvisor().get_program().to_owned();
        let mut cmd = if launch.ignore_sigxfsz || launch.ulimit.is_some() {
            let mut script = String::new();
            if launch.ignore_sigxfsz {
                script.push_str("trap '' XFSZ; ");
            }
            if let Some(args) = &launch.ulimit {
                script.push_str(&format!("ulimit {args}; "));
            }
            script.push_str(r#"exec "$0" "$@""#);
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(script).arg(&exe);
            for var in [
                "RUST_LOG",
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "http_proxy",
                "https_proxy",
            ] {
                cmd.env_remove(var);
            }
            cmd
        } else {
            tokenvisor()
        };
        cmd.args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the tokenvisor binary starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(&buf[..n]),
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let (stdout, line) = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            (reader, line)
        })
        .await
        .unwrap();
        let mut daemon = Daemon {
            child,
            _stdout: stdout,
            stderr,
            admin: None,
            admin_token_file: None,
            ready: serde_json::Value::Null,
        };
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "no ready line ({e}): {line:?}\nstderr:\n{}",
                daemon.log_now()
            )
        });
        assert_eq!(ready["event"], "ready", "{line}");
        daemon.admin = ready["admin"].as_str().map(str::to_owned);
        daemon.admin_token_file = ready["admin_token_file"].as_str().map(PathBuf::from);
        daemon.ready = ready;
        daemon
    }

    /// The admin API's bearer token, read from the file the ready line names.
    pub(crate) fn admin_token(&self) -> String {
        let path = self
            .admin_token_file
            .as_ref()
            .expect("the ready line names the admin token file");
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim_end()
            .to_owned()
    }

    /// The daemon's resident set now (`VmRSS`), in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// How many file descriptors the daemon has open.
    pub(crate) fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(Iterator::count)
            .unwrap_or(usize::MAX)
    }

    /// The daemon's PID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon logged so far (lossy UTF-8).
    pub(crate) fn log_now(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }

    /// Sends a signal (`-HUP`, `-TERM`) with `kill(1)`.
    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill(1) runs")
            .success();
        assert!(ok, "kill {sig} {}", self.pid());
    }

    /// Waits (bounded) for the daemon to exit; its exit code (`None`: killed by a signal).
    pub(crate) async fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(start.elapsed() < PATIENCE, "the daemon did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the captured stderr contains `needle`.
    pub(crate) async fn wait_log(&self, needle: &str) {
        wait_until(&format!("{needle:?} in the log"), PATIENCE, || {
            self.log_now().contains(needle)
        })
        .await;
    }

    /// The daemon's peak resident set (`VmHWM`), in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

// ---------------------------------------------------------------------------------------
// the admin API

/// One admin API answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// `METHOD path`, for messages.
    pub(crate) what: String,
    /// The status code.
    pub(crate) status: u16,
    /// Every header, `name: value` (lossy).
    pub(crate) headers: Vec<String>,
    /// The body (lossy).
    pub(crate) body: String,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.what, self.body))
    }
}

/// An admin API client that records every answer.
pub(crate) struct Admin {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    answers: Mutex<Vec<Answer>>,
}

impl Admin {
    /// A client for the daemon's admin API, authenticating with `token`.
    pub(crate) fn new(daemon: &Daemon, token: Option<&str>) -> Admin {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Admin {
            base: format!(
                "http://{}",
                daemon.admin.as_deref().expect("the admin API listens")
            ),
            token: token.map(str::to_owned),
            // No pooled connections: a connection the server closes after refusing a body
            // unread must not be reused by the next request.
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            answers: Mutex::new(Vec::new()),
        }
    }

    /// A request with the configured token.
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
        let token = self.token.clone();
        self.call_as(
            token.as_deref().map(|t| format!("Bearer {t}")),
            method,
            path,
            body,
        )
        .await
    }

    /// A request with `authorization` as the `Authorization` header (none when `None`).
    pub(crate) async fn call_as(
        &self,
        authorization: Option<String>,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        if let Some(b) = body {
            req = req.header(header::CONTENT_TYPE, "application/json").body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        self.record(format!("{method} {path}"), resp).await
    }

    /// Like [`Admin::call_as`], but a failure to send (the server answered early and closed
    /// the connection while the body was still going out) is returned, not a panic.
    pub(crate) async fn try_call_as(
        &self,
        authorization: Option<String>,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = req.send().await?;
        Ok(self.record(format!("{method} {path}"), resp).await)
    }

    /// Sends a prepared request (for streamed bodies) and records the answer.
    pub(crate) async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        self.record(what.to_owned(), resp).await
    }

    /// A request builder for `path` (no authorization set).
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    async fn record(&self, what: String, resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let body = resp.text().await.unwrap_or_default();
        let answer = Answer {
            what,
            status,
            headers,
            body,
        };
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(answer.clone());
        answer
    }

    /// Every answer so far.
    pub(crate) fn answers(&self) -> Vec<Answer> {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `GET /metrics` as text.
    pub(crate) async fn metrics(&self) -> String {
        let a = self.call("GET", "/metrics", None).await;
        assert_eq!(a.status, 200, "{a:?}");
        a.body
    }
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
    /// The `Authorization` header, if any.
    pub(crate) authorization: Option<String>,
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

async fn answer(State(state): State<ScriptState>, headers: HeaderMap, body: Bytes) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    let seen = Seen {
        form: parse_form(&body),
        raw: body.to_vec(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
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

/// Paths under `dir`, recursively (files only).
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
