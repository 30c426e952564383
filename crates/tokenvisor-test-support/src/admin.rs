//! An admin-API client for tests: every request goes to 127.0.0.1 without a proxy or a
//! pooled connection, with a bearer token or an `Authorization` header of the test's
//! choosing, and every answer (status, headers, body) is recorded for later assertions
//! (no answer may carry a secret, for example).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use reqwest::header;

use crate::daemon::Daemon;

/// One admin API answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `METHOD path`, for messages.
    pub what: String,
    /// The status code.
    pub status: u16,
    /// Every header, `name: value` (lossy).
    pub headers: Vec<String>,
    /// The body (lossy).
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.what, self.body))
    }
}

/// An admin API client that records every answer.
pub struct Admin {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    answers: Mutex<Vec<Answer>>,
}

impl Admin {
    /// A client for the daemon's admin API, authenticating with `token`.
    pub fn new(daemon: &Daemon, token: Option<&str>) -> Admin {
        Admin::at(&daemon.admin_url(), token)
    }

    /// A client for the admin API at `base` (`http://host:port`), authenticating with
    /// `token`.
    pub fn at(base: &str, token: Option<&str>) -> Admin {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Admin {
            base: base.to_owned(),
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
    pub async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
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
    pub async fn call_as(
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
    pub async fn try_call_as(
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

    /// The answer to a request whose body the server refuses unread: it answers, then
    /// closes the connection with the body's rest unread, and the kernel resets such a
    /// connection, which can discard the answer before the client reads it. Sends the
    /// request `make` builds until an answer arrives (at most ten times; a failure to send
    /// is then a failure of the test).
    pub async fn answer_to_refused_body(
        &self,
        what: &str,
        mut make: impl AsyncFnMut() -> reqwest::RequestBuilder,
    ) -> Answer {
        let mut last = None;
        for _ in 0..10 {
            match make().await.send().await {
                Ok(resp) => return self.record(what.to_owned(), resp).await,
                Err(e) if e.is_request() || e.is_body() => last = Some(e),
                Err(e) => panic!("{what}: {e}"),
            }
        }
        panic!("{what}: no answer in ten tries: {last:?}")
    }

    /// A request builder for `path` (no authorization set).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
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
    pub fn answers(&self) -> Vec<Answer> {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        let a = self.call("GET", "/metrics", None).await;
        assert_eq!(a.status, 200, "{a:?}");
        a.body
    }
}

/// The sum of every series of metric `name` in a Prometheus text rendering.
pub fn metric(text: &str, name: &str) -> Option<f64> {
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
