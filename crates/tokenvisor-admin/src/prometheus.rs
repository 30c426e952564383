//! The Prometheus recorder and the metrics computed at scrape time.
//!
//! The runtime records through the `metrics` facade (names in `tokenvisor::METRIC_*`, `tokenvisor::describe_metrics`); the
//! daemon installs one global Prometheus recorder and serves its rendering at `/metrics`.
//! A few values are not events but state the runtime already keeps; they are copied into
//! gauges (and monotonic counters) just before each rendering. No metric has a per-workload
//! label.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokenvisor::Runtime;

use crate::error::MetricsError;
use crate::fleet::Counts;

/// Gauge: token endpoints currently on hold after a `Retry-After` on 429/503.
pub(crate) const ENDPOINTS_ON_HOLD: &str = "tokenvisor_endpoints_on_hold";
/// Gauge: token endpoints paced by rate after a 429/503.
pub(crate) const ENDPOINTS_PACED: &str = "tokenvisor_endpoints_paced";
/// Gauge: token endpoints whose adaptive concurrency limit is below `endpoint_concurrency`.
pub(crate) const ENDPOINTS_BELOW_CEILING: &str = "tokenvisor_endpoints_below_ceiling";
/// Gauge: the adaptive concurrency limits of all endpoints, summed.
pub(crate) const ENDPOINT_LIMIT_SUM: &str = "tokenvisor_endpoint_concurrency_limit_sum";
/// Gauge: the slowest pace of any paced endpoint, requests/s (0 when none is paced).
pub(crate) const ENDPOINT_MIN_RATE: &str = "tokenvisor_endpoint_min_rate";
/// Counter: status updates received by the persistence actor.
pub(crate) const STATUS_UPDATES: &str = "tokenvisor_status_updates_total";
/// Counter: status updates replaced by a newer one before being written.
pub(crate) const STATUS_COALESCED: &str = "tokenvisor_status_coalesced_total";

/// Buckets of `tokenvisor_refresh_duration_seconds` (token requests: milliseconds on a good
/// day, up to the request timeout on a bad one).
const REFRESH_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often [`spawn_metrics_upkeep`] drains histogram samples.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The handle of the recorder this process installed, if it did.
static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder as the process's global `metrics` recorder and registers
/// every metric's description; returns the handle `/metrics` renders from.
///
/// A second call returns the handle of the first. It fails when some other recorder was
/// installed in this process first.
pub fn install_metrics_recorder() -> Result<PrometheusHandle, MetricsError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(tokenvisor::METRIC_REFRESH_DURATION.to_owned()),
            REFRESH_DURATION_BUCKETS,
        )
        .map_err(MetricsError::Buckets)?
        .set_buckets_for_metric(
            Matcher::Full(tokenvisor::METRIC_ETCD_REQUEST_DURATION.to_owned()),
            tokenvisor::ETCD_REQUEST_BUCKETS,
        )
        .map_err(MetricsError::Buckets)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AnotherRecorder)?;
    tokenvisor::describe_metrics();
    describe();
    *installed = Some(handle.clone());
    Ok(handle)
}

/// Drains histogram samples into their buckets every few seconds, so memory stays bounded
/// between scrapes (or when nobody scrapes). The exporter's own upkeep task comes with its
/// HTTP listener, which the daemon does not use. Abort the task at shutdown.
pub fn spawn_metrics_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

fn describe() {
    metrics::describe_gauge!(
        ENDPOINTS_ON_HOLD,
        "Token endpoints on hold after Retry-After on 429/503."
    );
    metrics::describe_gauge!(
        ENDPOINTS_PACED,
        "Token endpoints paced by rate after they answered 429/503."
    );
    metrics::describe_gauge!(
        ENDPOINTS_BELOW_CEILING,
        "Token endpoints whose adaptive concurrency limit is below endpoint_concurrency."
    );
    metrics::describe_gauge!(
        ENDPOINT_LIMIT_SUM,
        "Adaptive concurrency limits of all token endpoints, summed."
    );
    metrics::describe_gauge!(
        ENDPOINT_MIN_RATE,
        "The slowest pace of a paced token endpoint, requests/s (0: none paced)."
    );
    metrics::describe_counter!(
        STATUS_UPDATES,
        "Status updates received by the persistence actor."
    );
    metrics::describe_counter!(
        STATUS_COALESCED,
        "Status updates replaced by a newer one before being written."
    );
    metrics::describe_counter!(
        super::listener::REFUSED_METRIC,
        "Admin API connections closed at once because the connection cap was reached."
    );
}

/// Copies the runtime's state into gauges and counters, just before a rendering.
///
/// Counters use `absolute`, which never lowers a counter: the values the persistence actor
/// counted before the recorder was installed are included, nothing is counted twice.
///
/// `tokenvisor_workloads{status}` is set from `counts`, the live list's count per status
/// (every status, 0 included), so it never drifts from the workloads that exist; `None`
/// (the list was not available) leaves it as it was.
pub(super) fn update_scrape_time_metrics(runtime: &Runtime, counts: Option<&Counts>) {
    use std::sync::atomic::Ordering::Relaxed;
    for (status, n) in counts.into_iter().flat_map(Counts::iter) {
        metrics::gauge!(tokenvisor::METRIC_WORKLOADS, "status" => status).set(n as f64);
    }
    let now = runtime.clock().now();
    metrics::gauge!(ENDPOINTS_ON_HOLD).set(runtime.gates().held(now) as f64);
    let pacing = runtime.gates().pacing();
    metrics::gauge!(ENDPOINTS_PACED).set(pacing.paced as f64);
    metrics::gauge!(ENDPOINTS_BELOW_CEILING).set(pacing.below_ceiling as f64);
    metrics::gauge!(ENDPOINT_LIMIT_SUM).set(pacing.limit_sum as f64);
    metrics::gauge!(ENDPOINT_MIN_RATE).set(pacing.min_rate.unwrap_or(0.0));
    let stats = runtime.persist_stats();
    metrics::gauge!(tokenvisor::METRIC_STATUS_PENDING).set(stats.pending.load(Relaxed) as f64);
    metrics::counter!(tokenvisor::METRIC_STATUS_WRITES).absolute(stats.writes_ok.load(Relaxed));
    metrics::counter!(tokenvisor::METRIC_STATUS_WRITE_FAILURES)
        .absolute(stats.write_failures.load(Relaxed));
    metrics::counter!(STATUS_UPDATES).absolute(stats.updates.load(Relaxed));
    metrics::counter!(STATUS_COALESCED).absolute(stats.coalesced.load(Relaxed));
}
