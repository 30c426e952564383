//! Per-token-endpoint gate: a concurrency limit, and a shared hold when the endpoint answers
//! 429/503 with `Retry-After`, so that every workload of that endpoint waits it out instead
//! of piling on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokenvisor_core::Timestamp;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The gate of one token endpoint.
#[derive(Debug)]
pub struct EndpointGate {
    permits: Semaphore,
    limit: usize,
    hold_until_ms: AtomicU64,
}

impl EndpointGate {
    /// A gate allowing `concurrency` requests in flight.
    pub fn new(concurrency: usize) -> Self {
        let limit = concurrency.max(1);
        EndpointGate {
            permits: Semaphore::new(limit),
            limit,
            hold_until_ms: AtomicU64::new(0),
        }
    }

    /// Waits for a slot. Queueing is not failure: the machine's attempt backstop is long
    /// enough for a full queue to drain.
    pub async fn acquire(&self) -> SemaphorePermit<'_> {
        match self.permits.acquire().await {
            Ok(p) => p,
            // The semaphore is never closed; if it were, run unlimited rather than stall.
            Err(_closed) => unreachable_closed(),
        }
    }

    /// The concurrency limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Holds every request to this endpoint until `until` (a later hold wins). Returns true
    /// when this call extended the hold.
    pub fn hold(&self, until: Timestamp) -> bool {
        let prev = self
            .hold_until_ms
            .fetch_max(until.as_millis(), Ordering::AcqRel);
        prev < until.as_millis()
    }

    /// When the hold ends, if one is in force at `now`.
    pub fn held_until(&self, now: Timestamp) -> Option<Timestamp> {
        let t = Timestamp::from_millis(self.hold_until_ms.load(Ordering::Acquire));
        (t > now).then_some(t)
    }
}

#[cold]
fn unreachable_closed() -> ! {
    panic!("endpoint gate semaphore closed")
}

/// The gates of all endpoints, keyed by token URL.
#[derive(Debug, Default)]
pub struct Gates {
    map: Mutex<HashMap<Arc<str>, Arc<EndpointGate>>>,
}

impl Gates {
    /// The gate of `token_url`, created with `concurrency` on first use (later values of
    /// `concurrency` for the same URL are ignored: the first workload's setting wins).
    pub fn get(&self, token_url: &Arc<str>, concurrency: usize) -> Arc<EndpointGate> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(token_url.clone())
            .or_insert_with(|| Arc::new(EndpointGate::new(concurrency)))
            .clone()
    }

    /// Endpoints currently on hold at `now`.
    pub fn held(&self, now: Timestamp) -> usize {
        let map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.values().filter(|g| g.held_until(now).is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_keeps_the_latest_deadline() {
        let g = EndpointGate::new(2);
        let t = |ms| Timestamp::from_millis(ms);
        assert!(g.held_until(t(0)).is_none());
        assert!(g.hold(t(5_000)));
        assert!(!g.hold(t(3_000)));
        assert_eq!(g.held_until(t(1_000)), Some(t(5_000)));
        assert!(g.held_until(t(5_000)).is_none());
    }

    #[tokio::test]
    async fn limits_concurrency() {
        let g = EndpointGate::new(2);
        let a = g.acquire().await;
        let _b = g.acquire().await;
        assert_eq!(g.in_flight(), 2);
        assert!(g.permits.try_acquire().is_err());
        drop(a);
        assert_eq!(g.in_flight(), 1);
    }

    #[test]
    fn gates_are_shared_per_url() {
        let gates = Gates::default();
        let url: Arc<str> = "http://127.0.0.1:1/token".into();
        let a = gates.get(&url, 4);
        let b = gates.get(&url, 9);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.limit(), 4);
    }
}
