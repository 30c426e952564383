//! oidc-provider (real/oidc/provider.mjs) on 127.0.0.1, and what reached it.
//!
//! The provider appends one JSON line per HTTP request to its log (arrival time, path,
//! client, grant type, status, error) and one per event that matters here (`grant.revoked`:
//! a revocation, or reuse detection firing; `grant.error`: a refused grant).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;

use crate::components::{INSTALL, Proc, complete_lines, node_bin, oidc_dir};

/// One line of the provider's log.
#[derive(Debug, Clone, Deserialize)]
pub struct LogLine {
    /// `request` or `event`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Milliseconds since the epoch (arrival, for requests).
    pub t: u64,
    /// The event name, for events.
    #[serde(default)]
    pub event: Option<String>,
    /// The request path, for requests.
    #[serde(default)]
    pub path: Option<String>,
    /// The authenticated client, if any.
    #[serde(default)]
    pub client: Option<String>,
    /// The grant type of a token request.
    #[serde(default)]
    pub grant_type: Option<String>,
    /// The answer's status, for requests.
    #[serde(default)]
    pub status: Option<u16>,
    /// The RFC 6749 error code of the answer or event.
    #[serde(default)]
    pub error: Option<String>,
    /// A token request's form parameter names (never their values).
    #[serde(default)]
    pub params: Vec<String>,
}

impl LogLine {
    /// A request to the token endpoint with a refresh_token or client_credentials grant (what
    /// tokenvisor sends).
    pub fn is_refresh_request(&self) -> bool {
        self.kind == "request"
            && self.path.as_deref() == Some("/token")
            && matches!(
                self.grant_type.as_deref(),
                Some("refresh_token" | "client_credentials")
            )
    }
}

/// The suite's client secret of `client` (real/oidc/config.mjs).
pub fn secret_of(client: &str) -> String {
    format!("secret-of-{client}")
}

/// Whether `client` authenticates with HTTP Basic (odd numbers) or in the body (even).
pub fn uses_basic(client: &str) -> bool {
    client
        .rsplit('-')
        .next()
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n % 2 == 1)
}

/// A running oidc-provider.
pub struct Oidc {
    proc: Proc,
    port: u16,
    log: PathBuf,
    http: reqwest::Client,
}

impl Oidc {
    /// Starts the provider with access tokens (and client_credentials tokens) living
    /// `access_ttl` seconds; its files go to `work`.
    pub fn start(work: &Path, access_ttl: u32) -> Oidc {
        let dir = oidc_dir();
        let log = work.join("oidc.log");
        let stderr_path = work.join("oidc.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .unwrap_or_else(|e| panic!("{}: {e}", stderr_path.display()));
        let mut cmd = Command::new(node_bin());
        cmd.current_dir(&dir)
            .arg(dir.join("provider.mjs"))
            .args([
                "--port",
                "0",
                "--access-ttl",
                &access_ttl.to_string(),
                "--log",
            ])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut proc = Proc::spawn(
            "oidc-provider (node real/oidc/provider.mjs)",
            &mut cmd,
            Some(stderr_path),
        );
        let stdout = proc
            .child_mut()
            .stdout
            .take()
            .unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "oidc-provider did not start (no ready line; stdout {line:?}); stderr:\n{}\n{INSTALL}",
                proc.stderr()
            )
        });
        let port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("oidc-provider ready line without a port: {line}"));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|e| panic!("reqwest: {e}"));
        Oidc {
            proc,
            port,
            log,
            http,
        }
    }

    /// `127.0.0.1:PORT`, for nginx's `proxy_pass`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The issuer, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Obtains `count` refresh tokens for `client`, each from a grant of its own, by the
    /// scripted authorization_code + PKCE flow (real/oidc/login.mjs), straight at the
    /// provider (not through nginx, whatever mode it is in).
    pub fn login(&self, client: &str, count: usize) -> Vec<String> {
        let dir = oidc_dir();
        let out = Command::new(node_bin())
            .current_dir(&dir)
            .arg(dir.join("login.mjs"))
            .args([
                "--issuer",
                &self.issuer(),
                "--client",
                client,
                "--count",
                &count.to_string(),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run node real/oidc/login.mjs: {e}: {INSTALL}"));
        assert!(
            out.status.success(),
            "login.mjs for {client} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.proc.stderr()
        );
        let tokens = login_tokens(&out.stdout);
        assert_eq!(
            tokens.len(),
            count,
            "login.mjs gave {} grants",
            tokens.len()
        );
        tokens
    }

    /// Everything the provider logged so far (complete lines; it logs a request before it
    /// answers it).
    pub fn log(&self) -> Vec<LogLine> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        complete_lines(&text)
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("provider log line {l:?}: {e}"))
            })
            .collect()
    }

    /// The token requests (refresh_token or client_credentials) of `client`, in order of
    /// arrival.
    pub fn refreshes(&self, client: &str) -> Vec<LogLine> {
        let mut v: Vec<LogLine> = self
            .log()
            .into_iter()
            .filter(|l| l.is_refresh_request() && l.client.as_deref() == Some(client))
            .collect();
        v.sort_by_key(|l| l.t);
        v
    }

    /// Token requests (refresh_token or client_credentials) that arrived in `[from, to]`.
    pub fn refreshes_between(&self, from: u64, to: u64) -> Vec<LogLine> {
        self.log()
            .into_iter()
            .filter(|l| l.is_refresh_request() && l.t >= from && l.t <= to)
            .collect()
    }

    /// Events named `event` (of any client).
    pub fn events(&self, event: &str) -> Vec<LogLine> {
        self.log()
            .into_iter()
            .filter(|l| l.kind == "event" && l.event.as_deref() == Some(event))
            .collect()
    }

    /// POSTs `form` to the provider's `/token/{endpoint}` as `client` (basic or post, as the
    /// client is registered); a 200 answer is asserted.
    async fn post_form(
        &self,
        client: &str,
        endpoint: &str,
        mut form: Vec<(String, String)>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/token/{endpoint}", self.issuer()));
        if uses_basic(client) {
            req = req.basic_auth(client, Some(secret_of(client)));
        } else {
            form.push(("client_id".into(), client.into()));
            form.push(("client_secret".into(), secret_of(client)));
        }
        let resp = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(&form).unwrap_or_default())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{endpoint} request: {e}"));
        let status = resp.status();
        assert_eq!(status.as_u16(), 200, "{endpoint} answered {status}");
        resp
    }

    /// RFC 7009: revokes `refresh_token` of `client` (oidc-provider revokes its whole grant).
    pub async fn revoke(&self, client: &str, refresh_token: &str) {
        let form = vec![
            ("token".to_owned(), refresh_token.to_owned()),
            ("token_type_hint".to_owned(), "refresh_token".to_owned()),
        ];
        self.post_form(client, "revocation", form).await;
    }

    /// RFC 7662 introspection of `token` by `client`: whether the provider says it is active.
    pub async fn is_active(&self, client: &str, token: &str) -> bool {
        let form = vec![("token".to_owned(), token.to_owned())];
        let resp = self.post_form(client, "introspection", form).await;
        let body: serde_json::Value = serde_json::from_str(
            &resp
                .text()
                .await
                .unwrap_or_else(|e| panic!("introspection body: {e}")),
        )
        .unwrap_or_else(|e| panic!("introspection answer is not JSON: {e}"));
        body["active"].as_bool() == Some(true)
    }
}

/// The refresh tokens login.mjs printed (one JSON line per grant) on `stdout`.
pub fn login_tokens(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("login.mjs printed {l:?}: {e}"));
            v["refresh_token"]
                .as_str()
                .unwrap_or_else(|| panic!("login.mjs answer without a refresh token"))
                .to_owned()
        })
        .collect()
}
