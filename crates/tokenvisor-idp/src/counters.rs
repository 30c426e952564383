//! What the server saw: request counters and the last request per client.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::fault::FaultKind;

/// How a request authenticated its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `Authorization: Basic ...` (`client_secret_basic`).
    Basic,
    /// `client_id`/`client_secret` form fields (`client_secret_post`).
    Post,
    /// No client credentials at all (a `client_id` field alone counts as this).
    None,
}

/// One request to `/token` or `/revoke`, as received (test server: secrets included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// The request path (`/token` or `/revoke`).
    pub path: String,
    /// The client id the request claimed (Basic credentials or `client_id` field), if any.
    pub client_id: Option<String>,
    /// How the client authenticated.
    pub auth: AuthMethod,
    /// The `grant_type` field, if any.
    pub grant_type: Option<String>,
    /// Every form field in order, repeated fields included.
    pub params: Vec<(String, String)>,
    /// When it arrived, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl RequestInfo {
    /// The first value of a form field.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a (possibly repeated) form field, in order.
    pub fn params_named(&self, name: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `scope` field.
    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }

    /// Every `resource` field (RFC 8707 allows several).
    pub fn resources(&self) -> Vec<&str> {
        self.params_named("resource")
    }

    /// Every `audience` field.
    pub fn audiences(&self) -> Vec<&str> {
        self.params_named("audience")
    }
}

/// A snapshot of the request counters (also the JSON of `GET /admin/counters`).
///
/// `total` counts requests to `/token` and `/revoke` (admin and health requests are not
/// counted). Outcomes are counted once per request; a fault that still answers normally
/// (`delay`, `slow_body`) counts both as its fault kind and as its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests to `/token` and `/revoke`.
    pub total: u64,
    /// Requests to `/token`.
    pub token_requests: u64,
    /// Requests to `/revoke`.
    pub revoke_requests: u64,
    /// Tokens issued (200 with an access token).
    pub success: u64,
    /// `invalid_grant` answers (includes `reuse_detected` and `revoked`).
    pub invalid_grant: u64,
    /// `invalid_client` answers.
    pub invalid_client: u64,
    /// `invalid_request` answers.
    pub invalid_request: u64,
    /// `unsupported_grant_type` answers.
    pub unsupported_grant_type: u64,
    /// Refresh tokens presented again after rotation (each revoked its family).
    pub reuse_detected: u64,
    /// Refresh requests that presented a revoked refresh token.
    pub revoked: u64,
    /// Grants (token families) revoked, by `/revoke`, the library, or reuse detection.
    pub revocations: u64,
    /// Faults applied, by kind name ([`FaultKind::as_str`]); kinds never applied are absent.
    pub faults: BTreeMap<String, u64>,
    /// `/token` and `/revoke` requests per registered client id.
    pub per_client: BTreeMap<String, u64>,
}

impl Counters {
    /// How many times a fault kind was applied.
    pub fn fault(&self, kind: FaultKind) -> u64 {
        self.faults.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// How many `/token` and `/revoke` requests claimed this client.
    pub fn client(&self, client_id: &str) -> u64 {
        self.per_client.get(client_id).copied().unwrap_or(0)
    }

    /// Faults applied, all kinds together.
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// The live counters (lock-free).
#[derive(Debug, Default)]
pub(crate) struct CounterSet {
    pub(crate) total: AtomicU64,
    pub(crate) token_requests: AtomicU64,
    pub(crate) revoke_requests: AtomicU64,
    pub(crate) success: AtomicU64,
    pub(crate) invalid_grant: AtomicU64,
    pub(crate) invalid_client: AtomicU64,
    pub(crate) invalid_request: AtomicU64,
    pub(crate) unsupported_grant_type: AtomicU64,
    pub(crate) reuse_detected: AtomicU64,
    pub(crate) revoked: AtomicU64,
    pub(crate) revocations: AtomicU64,
    pub(crate) faults: [AtomicU64; FaultKind::ALL.len()],
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl CounterSet {
    pub(crate) fn fault(&self, kind: FaultKind) {
        bump(&self.faults[kind.index()]);
    }

    pub(crate) fn snapshot(&self, per_client: BTreeMap<String, u64>) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let faults = FaultKind::ALL
            .iter()
            .filter_map(|kind| {
                let n = get(&self.faults[kind.index()]);
                (n > 0).then(|| (kind.as_str().to_owned(), n))
            })
            .collect();
        Counters {
            total: get(&self.total),
            token_requests: get(&self.token_requests),
            revoke_requests: get(&self.revoke_requests),
            success: get(&self.success),
            invalid_grant: get(&self.invalid_grant),
            invalid_client: get(&self.invalid_client),
            invalid_request: get(&self.invalid_request),
            unsupported_grant_type: get(&self.unsupported_grant_type),
            reuse_detected: get(&self.reuse_detected),
            revoked: get(&self.revoked),
            revocations: get(&self.revocations),
            faults,
            per_client,
        }
    }

    pub(crate) fn reset(&self) {
        let all = [
            &self.total,
            &self.token_requests,
            &self.revoke_requests,
            &self.success,
            &self.invalid_grant,
            &self.invalid_client,
            &self.invalid_request,
            &self.unsupported_grant_type,
            &self.reuse_detected,
            &self.revoked,
            &self.revocations,
        ];
        for c in all.into_iter().chain(self.faults.iter()) {
            c.store(0, Ordering::Relaxed);
        }
    }
}
