//! The fleet at a glance, computed from the runtime's live list: counts per status, per
//! token endpoint, and the workloads needing attention first with their reasons
//! (`GET /v1/summary`), the per-endpoint health the gates counted (`GET /v1/endpoints`),
//! and the live counts behind `tokenvisor_workloads{status}`.
//!
//! Everything here is derived from [`WorkloadView`]s and [`EndpointStats`] at the moment of
//! the request, so a count is always the live count: nothing is incremented by events (an
//! event-counted gauge drifts when actors stop, restart or are removed). Token URLs are
//! shown redacted; reasons are the records' sanitised `status_context`.

use std::collections::BTreeMap;

use serde::Serialize;
use strum::VariantArray as _;
use tokenvisor::{EndpointStats, LATENCY_BUCKETS_MS, WorkloadView};
use tokenvisor_core::{Timestamp, TokenUrl, WorkloadStatus};

/// How many workloads needing attention `GET /v1/summary` lists by default.
pub(crate) const DEFAULT_ATTENTION: usize = 50;
/// The most it lists on request (`?attention=N`).
pub(crate) const MAX_ATTENTION: usize = 1_000;

/// Workloads per status, every status present (0 when none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct Counts(BTreeMap<&'static str, usize>);

impl Default for Counts {
    fn default() -> Self {
        Counts(
            WorkloadStatus::VARIANTS
                .iter()
                .map(|s| (s.as_str(), 0))
                .collect(),
        )
    }
}

impl Counts {
    fn add(&mut self, status: WorkloadStatus) {
        *self.0.entry(status.as_str()).or_insert(0) += 1;
    }

    /// `(status, count)` for every status.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        self.0.iter().map(|(k, v)| (*k, *v))
    }
}

/// The status a view shows (`starting` until its first record).
fn status_of(view: &WorkloadView) -> WorkloadStatus {
    view.record
        .as_deref()
        .map_or(WorkloadStatus::Starting, |r| r.status)
}

/// Live workloads per status.
pub(crate) fn status_counts(views: &[WorkloadView]) -> Counts {
    let mut counts = Counts::default();
    for v in views {
        counts.add(status_of(v));
    }
    counts
}

/// How urgently a status needs an operator: lower first; `None` needs nobody.
pub(crate) fn attention_rank(status: WorkloadStatus) -> Option<u8> {
    match status {
        WorkloadStatus::Error => Some(0),
        WorkloadStatus::Unauthenticated => Some(1),
        WorkloadStatus::AuthRetrying => Some(2),
        WorkloadStatus::Starting => Some(3),
        WorkloadStatus::Running | WorkloadStatus::Stopped => None,
    }
}

/// `GET /v1/summary`.
#[derive(Debug, Serialize)]
pub(crate) struct Summary<'a> {
    pub(crate) total: usize,
    pub(crate) counts: Counts,
    /// Per token endpoint (redacted URL), sorted by URL.
    pub(crate) endpoints: Vec<EndpointCounts>,
    /// How many workloads need attention in all.
    pub(crate) attention_total: usize,
    /// The first of them: error, then unauthenticated, then auth_retrying, then starting;
    /// within one status the longest-standing first (oldest `updated_at`), then by name.
    pub(crate) attention: Vec<Attention<'a>>,
}

/// Workloads of one endpoint, per status.
#[derive(Debug, Serialize)]
pub(crate) struct EndpointCounts {
    pub(crate) endpoint: String,
    pub(crate) workloads: usize,
    pub(crate) counts: Counts,
}

/// One workload needing attention.
#[derive(Debug, Serialize)]
pub(crate) struct Attention<'a> {
    pub(crate) name: &'a str,
    pub(crate) status: WorkloadStatus,
    pub(crate) reason: &'a str,
    pub(crate) since: Option<Timestamp>,
    pub(crate) endpoint: String,
}

/// The summary of `views`, listing at most `limit` workloads needing attention.
pub(crate) fn summarize(views: &[WorkloadView], limit: usize) -> Summary<'_> {
    let mut counts = Counts::default();
    let mut per_url: BTreeMap<&TokenUrl, (usize, Counts)> = BTreeMap::new();
    let mut needing: Vec<(u8, Option<Timestamp>, &WorkloadView)> = Vec::new();
    for v in views {
        let status = status_of(v);
        counts.add(status);
        let e = per_url.entry(&v.spec.token_url).or_default();
        e.0 += 1;
        e.1.add(status);
        if let Some(rank) = attention_rank(status) {
            needing.push((rank, v.record.as_deref().map(|r| r.updated_at), v));
        }
    }
    let attention_total = needing.len();
    let by_urgency = |a: &(u8, Option<Timestamp>, &WorkloadView),
                      b: &(u8, Option<Timestamp>, &WorkloadView)| {
        (a.0, a.1, &a.2.spec.name).cmp(&(b.0, b.1, &b.2.spec.name))
    };
    if needing.len() > limit {
        // Only the first `limit` are shown: select them, then sort those.
        if limit > 0 {
            needing.select_nth_unstable_by(limit - 1, by_urgency);
        }
        needing.truncate(limit);
    }
    needing.sort_unstable_by(by_urgency);
    let attention = needing
        .into_iter()
        .map(|(_, since, v)| Attention {
            name: v.spec.name.as_str(),
            status: status_of(v),
            reason: v
                .record
                .as_deref()
                .map_or("", |r| r.status_context.as_str()),
            since,
            endpoint: v.spec.token_url.redacted(),
        })
        .collect();
    // Two configured URLs may differ only in what redaction hides: merge them.
    let mut endpoints: BTreeMap<String, EndpointCounts> = BTreeMap::new();
    for (url, (n, c)) in per_url {
        let endpoint = url.redacted();
        let row = endpoints
            .entry(endpoint.clone())
            .or_insert_with(|| EndpointCounts {
                endpoint,
                workloads: 0,
                counts: Counts::default(),
            });
        row.workloads += n;
        for (k, v) in c.0 {
            *row.counts.0.entry(k).or_insert(0) += v;
        }
    }
    Summary {
        total: views.len(),
        counts,
        endpoints: endpoints.into_values().collect(),
        attention_total,
        attention,
    }
}

/// One endpoint in `GET /v1/endpoints`.
#[derive(Debug, Serialize)]
pub(crate) struct EndpointHealth {
    /// The token URL, redacted.
    pub(crate) endpoint: String,
    pub(crate) limit: usize,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) holds: u64,
    pub(crate) held_until: Option<Timestamp>,
    pub(crate) latency: Latency,
}

/// An endpoint's exchange latency, from its histogram.
#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    /// Upper bounds of the buckets in ms (`null` for the last, unbounded one).
    pub(crate) bounds_ms: Vec<Option<u64>>,
    pub(crate) buckets: Vec<u64>,
    pub(crate) mean_ms: Option<u64>,
    /// The bucket bounds at or below which half, and 95 %, of the exchanges finished.
    pub(crate) p50_ms: Option<u64>,
    pub(crate) p95_ms: Option<u64>,
    pub(crate) max_ms: u64,
}

impl EndpointHealth {
    pub(crate) fn of(s: &EndpointStats) -> Self {
        let total: u64 = s.latency.iter().sum();
        // The bound of the bucket holding the q-th exchange (the maximum for the last).
        let quantile = |q: f64| -> Option<u64> {
            if total == 0 {
                return None;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in s.latency.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Some(
                        LATENCY_BUCKETS_MS
                            .get(i)
                            .copied()
                            .map_or(s.latency_max_ms, |b| b.min(s.latency_max_ms)),
                    );
                }
            }
            Some(s.latency_max_ms)
        };
        EndpointHealth {
            endpoint: s.token_url.redacted(),
            limit: s.limit,
            requests: s.requests,
            failures: s.failures,
            holds: s.holds,
            held_until: s.held_until,
            latency: Latency {
                bounds_ms: LATENCY_BUCKETS_MS
                    .iter()
                    .map(|b| Some(*b))
                    .chain([None])
                    .collect(),
                buckets: s.latency.clone(),
                mean_ms: s.latency_sum_ms.checked_div(total),
                p50_ms: quantile(0.5),
                p95_ms: quantile(0.95),
                max_ms: s.latency_max_ms,
            },
        }
    }
}
