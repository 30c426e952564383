//! An in-memory, scriptable token endpoint for tests on tokio's paused clock (where real
//! sockets break) and for embedders' own tests.
//!
//! Replies are chosen per client id: first from that client's queue, then that client's
//! default, then the global default (a fresh token living one hour).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokenvisor_core::{HttpAnswer, RawOutcome, TransportKind};

use crate::transport::{ExchangeRequest, Grant, OutcomeFuture, Transport};

/// One scripted reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeReply {
    /// 200 with a fresh access token (`at-N`) living `expires_in`; with `rotate`, also a
    /// fresh refresh token (`rt-N`).
    Token {
        /// Lifetime sent as `expires_in`.
        expires_in: Duration,
        /// Send a rotated refresh token.
        rotate: bool,
    },
    /// Any HTTP answer.
    Http {
        /// The HTTP status code.
        status: u16,
        /// The `Content-Type` header, if any.
        content_type: Option<String>,
        /// `Retry-After` header.
        retry_after: Option<String>,
        /// The response body.
        body: String,
    },
    /// A transport failure.
    Transport(TransportKind),
    /// Wait this long (tokio time), then answer with the inner reply.
    Delayed(Duration, Box<FakeReply>),
    /// Never answer (until the request's own timeout, which the fake enforces as a
    /// `Timeout` outcome).
    Hang,
    /// Answer with the inner reply once the test calls [`Release::release`] (or time out
    /// like any request): a refresh kept in flight for exactly as long as a test needs.
    Held(Release, Box<FakeReply>),
}

/// Lets one [`FakeReply::Held`] reply go per [`Release::release`]. Clones share it.
#[derive(Clone)]
pub struct Release {
    gate: Arc<tokio::sync::Semaphore>,
}

impl Default for Release {
    fn default() -> Self {
        Release::new()
    }
}

impl Release {
    /// A release nothing has passed yet.
    pub fn new() -> Self {
        Release {
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }

    /// Lets one held reply go (now, or the next one held).
    pub fn release(&self) {
        self.gate.add_permits(1);
    }
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release")
            .field("released", &self.gate.available_permits())
            .finish()
    }
}

impl PartialEq for Release {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.gate, &other.gate)
    }
}

impl Eq for Release {}

impl FakeReply {
    /// A token living `secs` seconds, no rotation.
    pub fn token(secs: u64) -> Self {
        FakeReply::Token {
            expires_in: Duration::from_secs(secs),
            rotate: false,
        }
    }

    /// A token living `secs` seconds with a rotated refresh token.
    pub fn rotating(secs: u64) -> Self {
        FakeReply::Token {
            expires_in: Duration::from_secs(secs),
            rotate: true,
        }
    }

    /// A WAF-style 403 HTML page.
    pub fn waf_403() -> Self {
        FakeReply::Http {
            status: 403,
            content_type: Some("text/html".into()),
            retry_after: None,
            body: "<html><head><title>Attention Required! | Cloudflare</title></head><body>blocked</body></html>".into(),
        }
    }

    /// A structured RFC 6749 error.
    pub fn oauth_error(status: u16, code: &str) -> Self {
        FakeReply::Http {
            status,
            content_type: Some("application/json".into()),
            retry_after: None,
            body: format!(r#"{{"error":"{code}","error_description":"scripted"}}"#),
        }
    }

    /// A 429 with `Retry-After: secs`.
    pub fn too_many(secs: u64) -> Self {
        FakeReply::Http {
            status: 429,
            content_type: Some("text/plain".into()),
            retry_after: Some(secs.to_string()),
            body: "slow down".into(),
        }
    }

    /// A 503 with an optional `Retry-After`.
    pub fn unavailable(retry_after: Option<u64>) -> Self {
        FakeReply::Http {
            status: 503,
            content_type: Some("text/html".into()),
            retry_after: retry_after.map(|s| s.to_string()),
            body: "<html><title>503 Service Unavailable</title></html>".into(),
        }
    }
}

/// A request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The client id.
    pub client_id: String,
    /// The refresh token presented (exposed: this is a test double), or `None` for
    /// client credentials.
    pub refresh_token: Option<String>,
    /// The client secret presented (exposed: test double).
    pub client_secret: Option<String>,
    /// The grant's own token (exposed: test double): the refresh token, the `jwt_bearer`
    /// assertion or the `token_exchange` subject token; `None` for client credentials.
    pub presented: Option<String>,
    /// When it arrived (tokio time, so paused-clock tests can measure gaps).
    pub at: tokio::time::Instant,
}

#[derive(Debug, Default)]
struct State {
    default: Option<FakeReply>,
    per_client_default: HashMap<String, FakeReply>,
    queues: HashMap<String, VecDeque<FakeReply>>,
    seen: Vec<SeenRequest>,
    counts: HashMap<String, u64>,
    serial: u64,
}

/// The scriptable in-memory transport. Clones share one script.
#[derive(Debug, Clone, Default)]
pub struct FakeTransport {
    state: Arc<Mutex<State>>,
}

impl FakeTransport {
    /// A fake answering every request with a one-hour token.
    pub fn new() -> Self {
        FakeTransport::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the reply for every client without a script of its own.
    pub fn set_default(&self, reply: FakeReply) {
        self.lock().default = Some(reply);
    }

    /// Sets the standing reply of one client.
    pub fn set_client(&self, client_id: &str, reply: FakeReply) {
        self.lock()
            .per_client_default
            .insert(client_id.to_owned(), reply);
    }

    /// Queues one-shot replies for one client (used before its standing reply).
    pub fn push(&self, client_id: &str, replies: impl IntoIterator<Item = FakeReply>) {
        self.lock()
            .queues
            .entry(client_id.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Requests received from one client.
    pub fn count(&self, client_id: &str) -> u64 {
        self.lock().counts.get(client_id).copied().unwrap_or(0)
    }

    /// Requests received in all.
    pub fn total(&self) -> u64 {
        self.lock().counts.values().sum()
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.lock().seen.clone()
    }

    fn next_reply(&self, req: &ExchangeRequest) -> (FakeReply, u64) {
        let mut s = self.lock();
        let client = req.client_id.to_string();
        s.serial += 1;
        let serial = s.serial;
        *s.counts.entry(client.clone()).or_default() += 1;
        s.seen.push(SeenRequest {
            client_id: client.clone(),
            refresh_token: match &req.grant {
                Grant::RefreshToken(rt) => Some(rt.expose().to_owned()),
                Grant::ClientCredentials | Grant::JwtBearer(_) | Grant::TokenExchange(_) => None,
            },
            client_secret: req.client_secret.as_ref().map(|s| s.expose().to_owned()),
            presented: req.grant.presented().map(|t| t.expose().to_owned()),
            at: tokio::time::Instant::now(),
        });
        let reply = s
            .queues
            .get_mut(&client)
            .and_then(VecDeque::pop_front)
            .or_else(|| s.per_client_default.get(&client).cloned())
            .or_else(|| s.default.clone())
            .unwrap_or_else(|| FakeReply::token(3600));
        (reply, serial)
    }
}

fn render(reply: FakeReply, serial: u64) -> ReplyStep {
    match reply {
        FakeReply::Token { expires_in, rotate } => {
            let rt = if rotate {
                format!(r#","refresh_token":"rt-{serial}""#)
            } else {
                String::new()
            };
            let body = format!(
                r#"{{"access_token":"at-{serial}","token_type":"Bearer","expires_in":{}{rt}}}"#,
                expires_in.as_secs()
            );
            ReplyStep::Done(RawOutcome::Response(HttpAnswer {
                status: 200,
                retry_after: None,
                content_type: Some("application/json".into()),
                rate_limit: Default::default(),
                body: body.into_bytes(),
                truncated: false,
            }))
        }
        FakeReply::Http {
            status,
            content_type,
            retry_after,
            body,
        } => ReplyStep::Done(RawOutcome::Response(HttpAnswer {
            status,
            retry_after,
            content_type,
            rate_limit: Default::default(),
            body: body.into_bytes(),
            truncated: false,
        })),
        FakeReply::Transport(kind) => ReplyStep::Done(RawOutcome::Transport {
            kind,
            detail: "scripted transport failure".into(),
        }),
        FakeReply::Delayed(d, inner) => ReplyStep::Wait(d, *inner),
        FakeReply::Hang => ReplyStep::Hang,
        FakeReply::Held(release, inner) => ReplyStep::Held(release, *inner),
    }
}

enum ReplyStep {
    Done(RawOutcome),
    Wait(Duration, FakeReply),
    Held(Release, FakeReply),
    Hang,
}

impl Transport for FakeTransport {
    fn exchange(&self, req: ExchangeRequest) -> OutcomeFuture {
        let (reply, serial) = self.next_reply(&req);
        let limit = req.timeout + req.connect_timeout;
        Box::pin(async move {
            let work = async move {
                let mut step = render(reply, serial);
                loop {
                    match step {
                        ReplyStep::Done(o) => return o,
                        ReplyStep::Wait(d, next) => {
                            tokio::time::sleep(d).await;
                            step = render(next, serial);
                        }
                        ReplyStep::Held(release, next) => {
                            if let Ok(permit) = release.gate.acquire().await {
                                permit.forget();
                            }
                            step = render(next, serial);
                        }
                        ReplyStep::Hang => std::future::pending::<()>().await,
                    }
                }
            };
            match tokio::time::timeout(limit, work).await {
                Ok(o) => o,
                Err(_elapsed) => RawOutcome::Transport {
                    kind: TransportKind::Timeout,
                    detail: "request timed out".into(),
                },
            }
        })
    }
}
