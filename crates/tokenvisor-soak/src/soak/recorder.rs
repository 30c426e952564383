//! The soak's metrics recorder: the daemon's kind (Prometheus), with the timer-lateness
//! histogram also counted into an exact, resettable histogram of our own.
//!
//! The Prometheus summary of an unbucketed histogram covers a rolling window and cannot be
//! reset, and a soak needs the lateness over exactly its measurement window: so every sample
//! of [`tokenvisor::METRIC_TIMER_LATENESS`] goes to both (a tee), and [`Lateness`] answers
//! the quantiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Millisecond buckets kept exactly; later samples land in the last one (and in `max`).
const LATENESS_BUCKETS_MS: usize = 10_000;

/// An exact millisecond histogram of timer lateness, up to 10 s.
#[derive(Debug)]
pub(crate) struct Lateness {
    buckets: Box<[AtomicU64]>,
    max_ms: AtomicU64,
}

/// Quantiles of [`Lateness`], in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LatenessSummary {
    /// Samples.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
    /// 99.9th percentile.
    pub(crate) p999_ms: f64,
    /// The largest sample.
    pub(crate) max_ms: f64,
}

impl Lateness {
    fn new() -> Self {
        Lateness {
            buckets: (0..=LATENESS_BUCKETS_MS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            max_ms: AtomicU64::new(0),
        }
    }

    fn record(&self, secs: f64) {
        let ms = if secs.is_finite() && secs > 0.0 {
            (secs * 1000.0).round() as u64
        } else {
            0
        };
        let i = usize::try_from(ms).map_or(LATENESS_BUCKETS_MS, |i| i.min(LATENESS_BUCKETS_MS));
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.max_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Forgets every sample (call at the start of a measurement window).
    pub(crate) fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.max_ms.store(0, Ordering::Relaxed);
    }

    /// The quantiles of the samples since the last reset.
    pub(crate) fn summary(&self) -> LatenessSummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        let max_ms = self.max_ms.load(Ordering::Relaxed) as f64;
        let quantile = |q: f64| -> f64 {
            if count == 0 {
                return 0.0;
            }
            // The smallest value with at least ceil(q·count) samples at or below it.
            let rank = ((q * count as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (ms, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return if ms == LATENESS_BUCKETS_MS {
                        max_ms
                    } else {
                        ms as f64
                    };
                }
            }
            max_ms
        };
        LatenessSummary {
            count,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            p999_ms: quantile(0.999),
            max_ms,
        }
    }
}

/// The Prometheus recorder with the lateness tee.
struct TeeRecorder {
    inner: PrometheusRecorder,
    lateness: Arc<Lateness>,
}

struct TeeHistogram {
    inner: Histogram,
    lateness: Arc<Lateness>,
}

impl HistogramFn for TeeHistogram {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.lateness.record(value);
    }
}

impl Recorder for TeeRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let inner = self.inner.register_histogram(key, metadata);
        if key.name() == tokenvisor::METRIC_TIMER_LATENESS {
            Histogram::from_arc(Arc::new(TeeHistogram {
                inner,
                lateness: Arc::clone(&self.lateness),
            }))
        } else {
            inner
        }
    }
}

/// What [`install`] set up.
#[derive(Clone)]
pub(crate) struct Installed {
    /// Renders the Prometheus text.
    pub(crate) prometheus: PrometheusHandle,
    /// The exact lateness histogram.
    pub(crate) lateness: Arc<Lateness>,
}

/// Installs the soak's recorder as the process's global one (once; `None` when another
/// recorder was installed first).
pub(crate) fn install() -> Option<Installed> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let lateness = Arc::new(Lateness::new());
    let tee = TeeRecorder {
        inner: recorder,
        lateness: Arc::clone(&lateness),
    };
    metrics::set_global_recorder(tee).ok()?;
    tokenvisor::describe_metrics();
    Some(Installed {
        prometheus,
        lateness,
    })
}

/// Drains histogram samples into the Prometheus summaries now and then (bounded memory).
pub(crate) fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

/// `tokenvisor_refresh_attempts_total` by `outcome`/`kind`, from a rendering, sorted by
/// count (largest first).
pub(crate) fn refresh_attempts(rendered: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = rendered
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(tokenvisor::METRIC_REFRESH_ATTEMPTS)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            let value: f64 = value.trim().parse().ok()?;
            let labels = labels
                .trim_start_matches('{')
                .trim_end_matches('}')
                .replace('"', "");
            Some((labels, value as u64))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_exact_to_the_millisecond() {
        let l = Lateness::new();
        for ms in 1..=1000 {
            l.record(f64::from(ms) / 1000.0);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_ms, 500.0);
        assert_eq!(s.p99_ms, 990.0);
        assert_eq!(s.p999_ms, 999.0);
        assert_eq!(s.max_ms, 1000.0);
        l.record(60.0);
        assert_eq!(l.summary().max_ms, 60_000.0);
        l.reset();
        assert_eq!(l.summary(), LatenessSummary::default());
    }

    #[test]
    fn refresh_attempts_are_read_from_a_rendering() {
        let text = "# TYPE tokenvisor_refresh_attempts_total counter\n\
                    tokenvisor_refresh_attempts_total{outcome=\"ok\",kind=\"ok\"} 12\n\
                    tokenvisor_refresh_attempts_total{outcome=\"transient\",kind=\"server_5xx\"} 3\n";
        assert_eq!(
            refresh_attempts(text),
            vec![
                ("outcome=ok,kind=ok".to_owned(), 12),
                ("outcome=transient,kind=server_5xx".to_owned(), 3)
            ]
        );
    }
}
