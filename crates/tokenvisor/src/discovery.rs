//! Discovery of a workload's token endpoint from its `issuer` (RFC 8414, OpenID Connect
//! Discovery), cached per issuer and shared by every workload of it.
//!
//! The fetch runs inside an attempt's task (the transport), never in an actor handler: the
//! first attempt of a workload with an `issuer` fetches the document, and every later one
//! (of any workload of that issuer) uses the cached document. Per issuer, one fetch at a
//! time (a tokio mutex: a hundred workloads starting together make one request). A
//! document is fetched again after [`REFETCH_AFTER`]; when that fails, the old document is
//! kept. A failure with no document yet is a transient transport failure of the attempt
//! (never a verdict: the machine backs off and retries), and for [`DISCOVERY_BACKOFF`]'s
//! delay after it (the core's backoff, full jitter) attempts fail at once with the same
//! reason instead of fetching again, so an issuer that is down gets one request per
//! delay, not one per workload.
//!
//! The pure parts (the issuer rule, the locations, the document's checks) are
//! `tokenvisor_core::discovery`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokenvisor_core::discovery::{Issuer, MetadataError, ProviderMetadata};
use tokenvisor_core::policy::BackoffPolicy;
use tokenvisor_core::{RawOutcome, TransportKind};
use tokio::time::Instant;

use crate::transport::OutcomeFuture;

/// One GET of a URL (`Accept: application/json`), answered as a token request is (bounded
/// body, no redirects, TLS details): the transport's.
pub(crate) type Get = dyn Fn(String) -> OutcomeFuture + Send + Sync;

/// A cached document is fetched again after this long (a failure keeps it).
pub const REFETCH_AFTER: Duration = Duration::from_secs(3600);

/// The wait after a failed fetch before the next one (the core's full-jitter backoff over
/// consecutive failures of the issuer).
pub const DISCOVERY_BACKOFF: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_secs(2),
    max: Duration::from_secs(300),
    multiplier: 2.0,
};

/// Discovery failed: no usable metadata document (a transient failure: retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct DiscoveryError {
    /// What kind of failure, as a token request's would be.
    pub kind: TransportKind,
    /// Which issuer, which location, why (no secret, no document body).
    pub detail: String,
}

impl DiscoveryError {
    /// The failure as an attempt's outcome (always transient).
    pub(crate) fn outcome(&self) -> RawOutcome {
        RawOutcome::Transport {
            kind: self.kind,
            detail: self.detail.clone(),
        }
    }
}

#[derive(Default)]
struct Slot {
    /// The document and when it was fetched.
    doc: Option<(Arc<ProviderMetadata>, Instant)>,
    /// Consecutive failed fetches.
    failures: u32,
    /// No fetch before this (after a failure), and the failure.
    hold: Option<(Instant, DiscoveryError)>,
}

/// The per-issuer cache.
#[derive(Default)]
pub(crate) struct Discovery {
    slots: Mutex<HashMap<Issuer, Arc<tokio::sync::Mutex<Slot>>>>,
    rng: Mutex<Option<fastrand::Rng>>,
}

impl Discovery {
    fn slot(&self, issuer: &Issuer) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(issuer.clone()).or_default().clone()
    }

    fn jitter(&self, failures: u32) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        DISCOVERY_BACKOFF.delay(failures, None, rng.get_or_insert_with(fastrand::Rng::new))
    }

    /// The issuer's metadata: cached, or fetched with `get` (one GET of a URL, its answer
    /// captured as a token request's) within `timeout`.
    pub(crate) async fn resolve(
        &self,
        get: &Get,
        issuer: &Issuer,
        timeout: Duration,
    ) -> Result<Arc<ProviderMetadata>, DiscoveryError> {
        let slot = self.slot(issuer);
        let mut s = slot.lock().await;
        let now = Instant::now();
        let cached = s.doc.as_ref().map(|(doc, _)| doc.clone());
        match (&s.doc, &s.hold) {
            (Some((doc, at)), _) if now < *at + REFETCH_AFTER => return Ok(doc.clone()),
            (_, Some((until, e))) if now < *until => {
                return cached.ok_or_else(|| e.clone());
            }
            (Some(_) | None, Some(_) | None) => {}
        }
        let fetched = tokio::time::timeout(timeout, fetch(get, issuer))
            .await
            .unwrap_or_else(|_| {
                Err(DiscoveryError {
                    kind: TransportKind::Timeout,
                    detail: format!(
                        "discovery of {issuer}: no metadata within {}s",
                        timeout.as_secs_f64()
                    ),
                })
            });
        match fetched {
            Ok(doc) => {
                tracing::info!(
                    %issuer,
                    token_endpoint = %doc.token_endpoint,
                    "discovered the provider's metadata"
                );
                let doc = Arc::new(doc);
                *s = Slot {
                    doc: Some((doc.clone(), now)),
                    failures: 0,
                    hold: None,
                };
                Ok(doc)
            }
            Err(e) => {
                s.failures = s.failures.saturating_add(1);
                let delay = self.jitter(s.failures);
                tracing::warn!(%issuer, failures = s.failures, retry_in_ms = delay.as_millis(), "discovery failed: {}", e.detail);
                let e = DiscoveryError {
                    kind: e.kind,
                    detail: format!(
                        "{} (next discovery within {}s)",
                        e.detail,
                        delay.as_secs() + 1
                    ),
                };
                s.hold = Some((now + delay, e.clone()));
                cached.ok_or(e)
            }
        }
    }
}

/// One fetch: each location in turn, the first usable document wins; otherwise every
/// location's failure, the most telling kind kept.
async fn fetch(get: &Get, issuer: &Issuer) -> Result<ProviderMetadata, DiscoveryError> {
    let mut why = Vec::new();
    let mut kind = TransportKind::Io;
    for url in issuer.metadata_urls() {
        let path = url
            .find("/.well-known/")
            .map_or(url.as_str(), |i| &url[i..]);
        match get(url.clone()).await {
            RawOutcome::Response(a) if a.status == 200 && !a.truncated => {
                match ProviderMetadata::parse(&a.body, issuer) {
                    Ok(doc) => return Ok(doc),
                    Err(e @ MetadataError::IssuerMismatch { .. }) => {
                        why.push(format!("{path}: {e}"));
                    }
                    Err(e @ (MetadataError::Shape(_) | MetadataError::TokenEndpoint(_))) => {
                        why.push(format!("{path}: the document {e}"));
                    }
                }
            }
            RawOutcome::Response(a) if a.status == 200 => why.push(format!(
                "{path}: the document is larger than {} KiB",
                tokenvisor_core::classify::BODY_LIMIT / 1024
            )),
            RawOutcome::Response(a) => why.push(format!("{path}: HTTP {}", a.status)),
            RawOutcome::Transport { kind: k, detail } => {
                kind = k;
                why.push(format!("{path}: {detail}"));
            }
        }
    }
    let mut detail = format!("discovery of {issuer}: {}", why.join("; "));
    if detail.len() > 400 {
        let mut cut = 400;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
        detail.push('…');
    }
    Err(DiscoveryError { kind, detail })
}
