//! A client of the admin API, for the `tokenvisor` command: `status --cluster` lists a
//! running instance's workloads ([`AdminClient::workloads`]: `GET /v1/workloads`, in
//! cluster mode the whole cluster with each workload's owner) and `login` hands a new
//! refresh token to a running daemon ([`AdminClient::supply_refresh_token`]: `PUT
//! /v1/workloads/{name}/credentials`). The shapes are this crate's own (the server's
//! `views`), so a change to the API and its client is one change.
//!
//! Plain HTTP on the instance's configured address, no redirects followed, bounded by a
//! timeout; errors are sanitised and never carry a token. Where the admin token is by
//! default: [`default_token_file`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokenvisor::config::ServiceConfig;
use tokenvisor_core::scrub::{clean, truncate_chars};
use tokenvisor_core::status::{LastError, TokenState};
use tokenvisor_core::{Secret, Timestamp, WorkloadStatus};

use crate::cluster::TRUNCATED_HEADER;

/// How long an instance may take to answer a listing.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a daemon may take to answer the hand-over of a refresh token.
pub const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest listing read (a 250,000-workload listing is well under it).
pub const MAX_LISTING_BYTES: usize = 256 * 1024 * 1024;

/// A running instance's admin API: its base URL and the admin token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Secret,
}

/// One workload as `GET /v1/workloads` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkloadRow {
    /// The workload's name.
    pub name: String,
    /// Its status (`starting` until its first record).
    pub status: WorkloadStatus,
    /// The record's status context.
    #[serde(default)]
    pub status_context: String,
    /// The token's state, when there is a token section.
    pub token_state: Option<TokenState>,
    /// When the served token expires.
    pub expires_at: Option<Timestamp>,
    /// When the next attempt is due (backing off).
    pub next_attempt_at: Option<Timestamp>,
    /// The last failure.
    pub last_error: Option<LastError>,
    /// Absent: the instance is not in cluster mode; `null`: no member owns the workload.
    #[serde(default, deserialize_with = "present")]
    pub owner: Option<Option<String>>,
}

/// A field that is present (`null` included): `Some(value)`; absent: `None` (the default).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl WorkloadRow {
    /// The member that owns the workload, if any.
    #[must_use]
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_ref().and_then(|o| o.as_deref())
    }

    /// True when the workload needs an operator: unauthenticated, error, or no owner.
    #[must_use]
    pub fn needs_attention(&self) -> bool {
        tokenvisor_core::status_view::status_needs_attention(self.status) || self.owner().is_none()
    }
}

/// What `GET /v1/workloads` answered.
#[derive(Debug)]
pub struct Listing {
    /// Each workload, parsed and as received (for `--json`).
    pub rows: Vec<(WorkloadRow, serde_json::Value)>,
    /// The instance stopped at its bound (`x-tokenvisor-truncated: true`).
    pub truncated: bool,
}

/// Why a listing could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No HTTP client.
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
    /// The instance did not answer.
    #[error("cannot reach the instance at {url}: {why}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why (no URL, sanitised by the caller's printing).
        why: String,
    },
    /// The answer is over [`MAX_LISTING_BYTES`].
    #[error("the answer of {url} is larger than {MAX_LISTING_BYTES} bytes")]
    TooLarge {
        /// The base URL.
        url: String,
    },
    /// The answer broke off.
    #[error("reading the answer of {url}: {why}")]
    Read {
        /// The base URL.
        url: String,
        /// Why.
        why: String,
    },
    /// An answer other than 2xx; the API's `error` field.
    #[error("{url}/v1/workloads answered {status}: {why}")]
    Status {
        /// The base URL.
        url: String,
        /// The HTTP status.
        status: String,
        /// The answer's `error`, or empty.
        why: String,
    },
    /// A 2xx that is not a listing.
    #[error("{url}/v1/workloads answered something that is not a listing: {why}")]
    NotAListing {
        /// The base URL.
        url: String,
        /// The parse error.
        why: String,
    },
    /// A row that does not parse.
    #[error("{url}/v1/workloads: a workload that does not parse: {why}")]
    BadRow {
        /// The base URL.
        url: String,
        /// The parse error.
        why: String,
    },
}

/// Why a daemon did not take a refresh token.
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    /// Nothing listens there: no daemon.
    #[error("no daemon answered")]
    NotRunning,
    /// A daemon answered, but not 204; why (sanitised, short).
    #[error("{0}")]
    Refused(String),
}

impl AdminClient {
    /// The admin API at `base` (e.g. `http://127.0.0.1:7878`; a trailing `/` is dropped).
    #[must_use]
    pub fn new(base: &str, token: Secret) -> Self {
        AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// The admin API listening on `addr` (a wildcard address is asked on loopback).
    #[must_use]
    pub fn at(addr: SocketAddr, token: Secret) -> Self {
        Self::new(&format!("http://{}", reachable(addr)), token)
    }

    /// The base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /v1/workloads`: every row parsed and as received, and whether it was truncated.
    ///
    /// # Errors
    /// [`ClientError`] when the instance cannot be reached, answers other than 2xx, or
    /// answers something that is not a listing.
    pub async fn workloads(&self) -> Result<Listing, ClientError> {
        let url = &self.base;
        install_crypto();
        let client = reqwest::Client::builder()
            .timeout(LIST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Client(e.to_string()))?;
        let resp = client
            .get(format!("{url}/v1/workloads"))
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                why: without_url(&e),
            })?;
        let status = resp.status();
        let truncated = (resp.headers())
            .get(TRUNCATED_HEADER)
            .is_some_and(|v| v == "true");
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_LISTING_BYTES as u64)
        {
            return Err(ClientError::TooLarge { url: url.clone() });
        }
        let body = resp.bytes().await.map_err(|e| ClientError::Read {
            url: url.clone(),
            why: without_url(&e),
        })?;
        if !status.is_success() {
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(ClientError::Status {
                url: url.clone(),
                status: status.to_string(),
                why,
            });
        }
        let values: Vec<serde_json::Value> =
            serde_json::from_slice(&body).map_err(|e| ClientError::NotAListing {
                url: url.clone(),
                why: e.to_string(),
            })?;
        let rows = values
            .into_iter()
            .map(|v| {
                serde_json::from_value::<WorkloadRow>(v.clone())
                    .map(|r| (r, v))
                    .map_err(|e| ClientError::BadRow {
                        url: url.clone(),
                        why: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Listing { rows, truncated })
    }

    /// `PUT /v1/workloads/{name}/credentials` with a new refresh token: the daemon journals
    /// it, writes its file, and a workload that was unauthenticated recovers at once.
    ///
    /// # Errors
    /// [`HandOverError::NotRunning`] when nothing accepts the connection;
    /// [`HandOverError::Refused`] for any other answer than 204 or a failure after connecting.
    pub async fn supply_refresh_token(
        &self,
        name: &str,
        refresh_token: &Secret,
    ) -> Result<(), HandOverError> {
        install_crypto();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HAND_OVER_TIMEOUT)
            .build()
            .map_err(|e| HandOverError::Refused(format!("no HTTP client: {e}")))?;
        let url = format!("{}/v1/workloads/{name}/credentials", self.base);
        let body = serde_json::json!({ "refresh_token": refresh_token.expose() }).to_string();
        let answer = client
            .put(url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match answer {
            Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => Ok(()),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let text = truncate_chars(&clean(&text), 200);
                Err(HandOverError::Refused(format!("HTTP {status}: {text}")))
            }
            Err(e) if e.is_connect() => Err(HandOverError::NotRunning),
            Err(e) => Err(HandOverError::Refused(format!(
                "the admin API at {} did not answer: {}",
                self.base.trim_start_matches("http://"),
                truncate_chars(&clean(&e.to_string()), 200)
            ))),
        }
    }
}

/// Installs rustls' ring provider for the process unless one is installed: reqwest is built
/// without a provider of its own, and a library must not rely on its binary's `main` (as
/// `HttpTransport::new` does not).
fn install_crypto() {
    // Ignore the error: it only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where the admin token is: `explicit` (a flag), else `service.admin_token_file`, else the
/// generated `<state_dir>/admin.token`; `None` when none is known.
#[must_use]
pub fn default_token_file(explicit: Option<PathBuf>, service: &ServiceConfig) -> Option<PathBuf> {
    explicit
        .or_else(|| service.admin_token_file.clone())
        .or_else(|| (service.state_dir.as_ref()).map(|d| d.join("admin.token")))
}

/// An address a client can connect to: a wildcard listener is asked on loopback.
#[must_use]
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// A reqwest error without its URL (ours; said once by the caller), with its causes.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests;
