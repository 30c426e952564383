//! Per-token-endpoint gate: an adaptive concurrency limit, a request pacer, and a shared hold
//! when the endpoint answers 429/503 with `Retry-After` (or a vendor reset header), so that
//! every workload of that endpoint waits it out instead of piling on — when the throttle is
//! the endpoint's: a vendor quota header, or throttles a real share of its recent answers
//! (`tokenvisor_core::limiter`, "Sporadic throttles"). A sporadic 429 (0.2 % of thousands of
//! answers a second) holds only the workload that got it, and so does a 429 the pace answers
//! (`HoldScope::Pace`: an endpoint already paced, answering well, overshot its rate limit;
//! its pace is cut and the other workloads go on at it).
//!
//! ## Adaptive limits
//!
//! `endpoint_concurrency` is a ceiling. The gate's [`EndpointLimiter`] (pure, in
//! `tokenvisor_core::limiter`) learns from every answer ([`EndpointGate::feedback`]): the
//! concurrency limit stays at the ceiling while answers are good, is halved by a 429/503 and
//! grows back by one slot per window of good answers; an endpoint that pushed back is also
//! paced ([`EndpointGate::pace`]): request starts are spaced by the learned rate, with
//! jitter drawn by the attempt, so the attempts queued during a hold leave it one by one at
//! the rate that last succeeded instead of all at once. Waiting for a paced start is FIFO
//! (one waiter sleeps for the next slot, the others queue behind it) and bounded by the
//! attempt's budget. The sleeper is woken when an answer changes the pace: its turn moves
//! with it (after an outage the pace is 2 r/s, and the first good answers bring a start
//! that was 500 ms out to tens of milliseconds). An endpoint that never pushed back is not paced and costs one
//! uncontended lock per request.
//!
//! ## Resizing
//!
//! The concurrency limit changes while requests are in flight (the limiter moved it, or a
//! reload changed the ceiling: [`EndpointGate::set_limit`]). Growing adds permits at once, so
//! queued requests start. Shrinking removes free permits at once; when fewer are free than
//! the shrink needs, the rest are retired as the requests in flight release them (each one
//! released goes back to no one), so the requests already sent finish undisturbed and no new
//! request starts until fewer than the new limit are in flight.
//!
//! Each gate also counts what went through it (requests sent, failed, holds begun, a
//! latency histogram of the exchanges), read by [`Gates::stats`] for the admin API's
//! `/v1/endpoints`: atomics only, never a workload name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokenvisor_core::limiter::{EndpointLimiter, Feedback, HoldScope, LimiterConfig};
use tokenvisor_core::{Timestamp, TokenUrl};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::clock::Clock;

/// The gate of one token endpoint.
#[derive(Debug)]
pub(crate) struct EndpointGate {
    permits: Semaphore,
    limit: AtomicUsize,
    /// Permits still to be retired after a shrink below the requests in flight.
    retire: AtomicUsize,
    /// Serialises [`EndpointGate::set_limit`].
    resize: Mutex<()>,
    hold_until_ms: AtomicU64,
    /// The adaptive limits (a std mutex: held for a few arithmetic operations, never across
    /// an await).
    limiter: Mutex<EndpointLimiter>,
    /// Queue of the attempts waiting for a paced start (FIFO).
    turnstile: tokio::sync::Mutex<()>,
    /// Wakes the attempt sleeping for the next paced start when the pace changed: its turn
    /// moves with the pace (`EndpointLimiter::next_start`), sooner after good answers.
    pace_moved: tokio::sync::Notify,
    /// What went through the gate.
    counts: Counts,
}

/// A paced start did not come within the attempt's budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NoSlot {
    /// The endpoint's pace then, requests per second.
    pub rate: f64,
}

/// Upper bounds (milliseconds) of the latency histogram's buckets; a last bucket counts
/// the rest.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
];

/// Counters of one gate.
#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    failures: AtomicU64,
    holds: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_ms: AtomicU64,
    latency_max_ms: AtomicU64,
}

/// What one endpoint's gate counted since the runtime started ([`Gates::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStats {
    /// The token URL (its display never shows userinfo or query values).
    pub token_url: TokenUrl,
    /// The concurrency limit.
    pub limit: usize,
    /// Token requests sent (an attempt held back by a hold is not a request).
    pub requests: u64,
    /// Requests whose classified outcome was not a success.
    pub failures: u64,
    /// Holds begun or extended by a `Retry-After` on 429/503.
    pub holds: u64,
    /// When the hold in force ends, if one is.
    pub held_until: Option<Timestamp>,
    /// Requests per latency bucket: `latency[i]` counts exchanges of at most
    /// `LATENCY_BUCKETS_MS[i]` ms (and above the previous bound); the last one the rest.
    pub latency: Vec<u64>,
    /// Sum of the exchanges' latencies, in milliseconds.
    pub latency_sum_ms: u64,
    /// The longest exchange, in milliseconds.
    pub latency_max_ms: u64,
}

impl EndpointGate {
    /// A gate allowing up to `concurrency` requests in flight (the ceiling), unpaced.
    pub(crate) fn new(concurrency: usize) -> Self {
        let limit = concurrency.clamp(1, Semaphore::MAX_PERMITS);
        EndpointGate {
            permits: Semaphore::new(limit),
            limit: AtomicUsize::new(limit),
            retire: AtomicUsize::new(0),
            resize: Mutex::new(()),
            hold_until_ms: AtomicU64::new(0),
            limiter: Mutex::new(EndpointLimiter::new(limit, LimiterConfig::default())),
            turnstile: tokio::sync::Mutex::new(()),
            pace_moved: tokio::sync::Notify::new(),
            counts: Counts::default(),
        }
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, EndpointLimiter> {
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Learns from one answer: the concurrency limit and the pace follow (module docs). For a
    /// throttle, says whether it is the endpoint's (its `Retry-After` holds every workload),
    /// answered by the cut pace, or sporadic (in both, only its workload waits).
    pub(crate) fn feedback(&self, feedback: Feedback, now: Timestamp) -> HoldScope {
        let mut limiter = self.limiter();
        let rate = limiter.rate();
        let scope = limiter.on_feedback(feedback, now);
        let limit = limiter.limit();
        // Resized under the limiter's lock, so two answers never apply their limits out of
        // order.
        if limit != self.limit.load(Ordering::Acquire) {
            self.resize(limit);
        }
        if limiter.rate() != rate {
            self.pace_moved.notify_waiters();
        }
        scope
    }

    /// The current concurrency limit and pace (requests/s; `None`: not paced).
    pub(crate) fn adaptive(&self) -> (usize, usize, Option<f64>) {
        let limiter = self.limiter();
        (limiter.limit(), limiter.ceiling(), limiter.rate())
    }

    /// Waits for this request's paced start: at once when the endpoint is not paced, else
    /// in FIFO order behind the other waiters, each start spaced from the previous one by
    /// the pace stretched by `jitter` (in `[0, 1)`, of [`LimiterConfig::jitter`]). Gives up
    /// when the start would come after `deadline`.
    pub(crate) async fn pace(
        &self,
        clock: Clock,
        deadline: tokio::time::Instant,
        jitter: f64,
    ) -> Result<(), NoSlot> {
        let no_slot = |gate: &Self| NoSlot {
            rate: gate.limiter().rate().unwrap_or(0.0),
        };
        {
            let mut limiter = self.limiter();
            if limiter.rate().is_none() {
                limiter.started(clock.now(), jitter);
                return Ok(());
            }
        }
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.turnstile.lock()).await else {
            return Err(no_slot(self));
        };
        loop {
            // Registered before the turn is read, so a pace changed in between still wakes
            // this sleeper.
            let moved = self.pace_moved.notified();
            let mut moved = std::pin::pin!(moved);
            moved.as_mut().enable();
            let now = clock.now();
            let at = {
                let mut limiter = self.limiter();
                let at = limiter.next_start(now);
                if at <= now {
                    limiter.started(now, jitter);
                    return Ok(());
                }
                at
            };
            let wake = tokio::time::Instant::now() + clock.until(at);
            if wake > deadline {
                return Err(no_slot(self));
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = moved => {}
            }
        }
    }

    /// Counts one request sent through the gate: whether it succeeded, and how long the
    /// exchange took.
    pub(crate) fn record(&self, success: bool, took: std::time::Duration) {
        let c = &self.counts;
        c.requests.fetch_add(1, Ordering::Relaxed);
        if !success {
            c.failures.fetch_add(1, Ordering::Relaxed);
        }
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        if let Some(b) = c.latency.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        c.latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
        c.latency_max_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn stats(&self, token_url: &TokenUrl, now: Timestamp) -> EndpointStats {
        let c = &self.counts;
        EndpointStats {
            token_url: token_url.clone(),
            limit: self.limit.load(Ordering::Acquire),
            requests: c.requests.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            holds: c.holds.load(Ordering::Relaxed),
            held_until: self.held_until(now),
            latency: c
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            latency_sum_ms: c.latency_sum_ms.load(Ordering::Relaxed),
            latency_max_ms: c.latency_max_ms.load(Ordering::Relaxed),
        }
    }

    /// Waits for a slot (FIFO). Unbounded here: the caller bounds it by its attempt's budget
    /// (an attempt dropped from the queue leaves it), because under overload a queue longer
    /// than that budget would serve only attempts their machine had already abandoned.
    pub(crate) async fn acquire(&self) -> SemaphorePermit<'_> {
        loop {
            let permit = match self.permits.acquire().await {
                Ok(p) => p,
                // The semaphore is never closed.
                Err(_closed) => unreachable_closed(),
            };
            // A permit owed to a shrink is retired instead of used.
            let owed = self
                .retire
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            match owed {
                Ok(_) => permit.forget(),
                Err(_) => return permit,
            }
        }
    }

    /// The concurrency limit (read by the tests).
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Changes the ceiling (`endpoint_concurrency` changed at a reload); the limit follows
    /// (see the module documentation for what a shrink below the requests in flight does).
    pub(crate) fn set_limit(&self, concurrency: usize) {
        let mut limiter = self.limiter();
        limiter.set_ceiling(concurrency.clamp(1, Semaphore::MAX_PERMITS));
        let limit = limiter.limit();
        self.resize(limit);
    }

    /// Sets the number of permits (module documentation, "Resizing").
    fn resize(&self, concurrency: usize) {
        let new = concurrency.clamp(1, Semaphore::MAX_PERMITS);
        let _one_at_a_time = self.resize.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.limit.swap(new, Ordering::AcqRel);
        if new > old {
            // First cancel retirements still owed, then add what is left.
            let mut grow = new - old;
            let owed = self
                .retire
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n - n.min(grow))
                })
                .unwrap_or(0);
            grow -= owed.min(grow);
            self.permits.add_permits(grow);
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.permits.forget_permits(shrink);
            self.retire.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
    }

    /// Requests in flight now (read by the tests).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        (self.limit() + self.retire.load(Ordering::Acquire))
            .saturating_sub(self.permits.available_permits())
    }

    /// Holds every request to this endpoint until `until` (a later hold wins). Returns true
    /// when this call extended the hold.
    pub(crate) fn hold(&self, until: Timestamp) -> bool {
        let prev = self
            .hold_until_ms
            .fetch_max(until.as_millis(), Ordering::AcqRel);
        let extended = prev < until.as_millis();
        if extended {
            self.counts.holds.fetch_add(1, Ordering::Relaxed);
        }
        extended
    }

    /// When the hold ends, if one is in force at `now`.
    pub(crate) fn held_until(&self, now: Timestamp) -> Option<Timestamp> {
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
    map: Mutex<HashMap<TokenUrl, Arc<EndpointGate>>>,
}

impl Gates {
    /// The gate of `token_url`, created with `concurrency` on first use (later values of
    /// `concurrency` for the same URL are ignored: the first workload's setting wins; a
    /// reload changes it with [`EndpointGate::set_limit`]).
    pub(crate) fn get(&self, token_url: &TokenUrl, concurrency: usize) -> Arc<EndpointGate> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(token_url.clone())
            .or_insert_with(|| Arc::new(EndpointGate::new(concurrency)))
            .clone()
    }

    /// Endpoints currently on hold at `now`.
    pub fn held(&self, now: Timestamp) -> usize {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().filter(|g| g.held_until(now).is_some()).count()
    }

    /// What each endpoint's gate counted, sorted by token URL.
    pub fn stats(&self, now: Timestamp) -> Vec<EndpointStats> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<EndpointStats> = map.iter().map(|(url, g)| g.stats(url, now)).collect();
        drop(map);
        all.sort_by(|a, b| a.token_url.cmp(&b.token_url));
        all
    }
    /// The adaptive limits of every endpoint, summed up (no endpoint named: metrics carry no
    /// unbounded label).
    pub fn pacing(&self) -> Pacing {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let mut p = Pacing {
            endpoints: map.len(),
            ..Pacing::default()
        };
        for (limit, ceiling, rate) in map.values().map(|g| g.adaptive()) {
            p.limit_sum += limit;
            p.ceiling_sum += ceiling;
            if limit < ceiling {
                p.below_ceiling += 1;
            }
            if let Some(rate) = rate {
                p.paced += 1;
                p.min_rate = Some(p.min_rate.map_or(rate, |m: f64| m.min(rate)));
            }
        }
        p
    }
}

/// The adaptive limits of all endpoints together ([`Gates::pacing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pacing {
    /// Endpoints known.
    pub endpoints: usize,
    /// Their current concurrency limits, summed.
    pub limit_sum: usize,
    /// Their ceilings (`endpoint_concurrency`), summed.
    pub ceiling_sum: usize,
    /// Endpoints whose limit is below their ceiling now.
    pub below_ceiling: usize,
    /// Endpoints paced by rate now.
    pub paced: usize,
    /// The slowest pace, requests per second, if any endpoint is paced.
    pub min_rate: Option<f64>,
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;

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

    #[test]
    fn counts_requests_failures_holds_and_latency() {
        let gates = Gates::default();
        let url: TokenUrl = "https://idp.test/token".parse().unwrap();
        let g = gates.get(&url, 4);
        g.record(true, std::time::Duration::from_millis(3));
        g.record(false, std::time::Duration::from_millis(70));
        g.record(true, std::time::Duration::from_secs(60));
        assert!(g.hold(Timestamp::from_millis(9_000)));
        assert!(!g.hold(Timestamp::from_millis(8_000)));
        let stats = gates.stats(Timestamp::from_millis(1_000));
        assert_eq!(stats.len(), 1);
        let s = &stats[0];
        assert_eq!((s.requests, s.failures, s.holds, s.limit), (3, 1, 1, 4));
        assert_eq!(s.held_until, Some(Timestamp::from_millis(9_000)));
        assert_eq!(s.latency.len(), LATENCY_BUCKETS_MS.len() + 1);
        assert_eq!((s.latency[0], s.latency[4], s.latency[12]), (1, 1, 1));
        assert_eq!(s.latency.iter().sum::<u64>(), 3);
        assert_eq!((s.latency_sum_ms, s.latency_max_ms), (60_073, 60_000));
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

    /// `g.acquire()` polled once: a permit if one is free (after retirements owed).
    fn try_take(g: &EndpointGate) -> Option<SemaphorePermit<'_>> {
        let mut fut = std::pin::pin!(g.acquire());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(p) => Some(p),
            std::task::Poll::Pending => None,
        }
    }

    /// Takes every free permit it can without waiting.
    fn take_all(g: &EndpointGate) -> Vec<SemaphorePermit<'_>> {
        std::iter::from_fn(|| try_take(g)).collect()
    }

    #[tokio::test]
    async fn growing_the_limit_lets_queued_requests_start() {
        let g = EndpointGate::new(1);
        let _a = g.acquire().await;
        assert!(take_all(&g).is_empty());
        g.set_limit(3);
        assert_eq!(g.limit(), 3);
        assert_eq!(take_all(&g).len(), 2);
    }

    #[tokio::test]
    async fn shrinking_below_in_flight_retires_permits_as_they_come_back() {
        let g = EndpointGate::new(4);
        let held: Vec<_> = futures_take(&g, 3).await;
        assert_eq!(g.in_flight(), 3);
        // Limit 1 with 3 in flight: the free permit goes now, two more as requests finish.
        g.set_limit(1);
        assert_eq!(g.limit(), 1);
        assert_eq!(g.in_flight(), 3);
        let mut held = held.into_iter();
        drop(held.next());
        drop(held.next());
        // Two requests finished; their permits were retired: one still in flight, none free.
        assert_eq!(g.in_flight(), 1);
        assert!(
            try_take(&g).is_none(),
            "a request started above the new limit"
        );
        drop(held.next());
        assert_eq!(g.in_flight(), 0);
        let one = g.acquire().await;
        assert!(take_all(&g).is_empty(), "more than the new limit");
        drop(one);
        // Growing again cancels nothing owed any more and adds permits.
        g.set_limit(2);
        assert_eq!(take_all(&g).len(), 2);
    }

    #[tokio::test]
    async fn growing_while_a_shrink_is_owed_cancels_it_first() {
        let g = EndpointGate::new(3);
        let held = futures_take(&g, 3).await;
        g.set_limit(1); // two owed
        g.set_limit(2); // one owed
        drop(held);
        assert_eq!(g.in_flight(), 0);
        assert_eq!(take_all(&g).len(), 2);
    }

    async fn futures_take(g: &EndpointGate, n: usize) -> Vec<SemaphorePermit<'_>> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(g.acquire().await);
        }
        v
    }

    #[tokio::test]
    async fn a_throttle_cuts_the_limit_and_good_answers_grow_it_back_to_the_ceiling() {
        let g = EndpointGate::new(8);
        let t = |ms| Timestamp::from_millis(ms);
        g.feedback(Feedback::Throttled, t(1_000));
        assert_eq!(g.limit(), 4);
        let held = futures_take(&g, 4).await;
        assert!(try_take(&g).is_none(), "more than the cut limit in flight");
        drop(held);
        for i in 0..100 {
            g.feedback(Feedback::Good, t(2_000 + i));
        }
        assert_eq!(g.limit(), 8, "never above the ceiling");
        assert_eq!(take_all(&g).len(), 8);
    }

    /// Paced starts leave one by one, in order, spaced by the pace; an unpaced gate waits
    /// for nothing.
    #[tokio::test(start_paused = true)]
    async fn paced_starts_are_spaced() {
        let clock = Clock::anchored(Timestamp::from_millis(1_000_000));
        let g = Arc::new(EndpointGate::new(8));
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        g.pace(clock, far, 0.5).await.unwrap();
        g.pace(clock, far, 0.5).await.unwrap();
        assert_eq!(
            clock.now(),
            Timestamp::from_millis(1_000_000),
            "unpaced: no wait"
        );
        // A throttle with nothing answered well: paced at the minimum rate.
        g.feedback(Feedback::Throttled, clock.now());
        let rate = g.adaptive().2.unwrap();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let (g, starts) = (g.clone(), starts.clone());
                tokio::spawn(async move {
                    g.pace(clock, far, 0.0).await.unwrap();
                    starts.lock().unwrap().push(clock.now().as_millis());
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let starts = starts.lock().unwrap().clone();
        let spacing = (1_000.0 / rate).ceil() as u64;
        for pair in starts.windows(2) {
            assert!(pair[1] - pair[0] >= spacing, "{starts:?} at {rate}/s");
        }
        // A start beyond the deadline is refused at once.
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(1);
        assert!(g.pace(clock, soon, 0.0).await.is_err());
    }

    /// The attempt sleeping for its paced start is woken when good answers raise the pace:
    /// its turn comes at the new spacing, not the one of the old pace.
    #[tokio::test(start_paused = true)]
    async fn a_raised_pace_brings_the_sleeping_start_closer() {
        let clock = Clock::anchored(Timestamp::from_millis(1_000_000));
        let g = Arc::new(EndpointGate::new(8));
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        // An outage: paced at the minimum (2 r/s), one start taken.
        g.feedback(Feedback::Unavailable, clock.now());
        g.pace(clock, far, 0.0).await.unwrap();
        let first = clock.now();
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move {
                g.pace(clock, far, 0.0).await.unwrap();
                clock.now()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // The provider is back: two good answers, 2 + 2·6 = 14 r/s.
        g.feedback(Feedback::Good, clock.now());
        g.feedback(Feedback::Good, clock.now());
        let rate = g.adaptive().2.unwrap();
        let started = waiter.await.unwrap();
        let spacing = (1_000.0 / rate).ceil() as u64;
        assert_eq!(
            started.as_millis() - first.as_millis(),
            spacing,
            "at {rate} r/s (the old pace's turn was 500 ms out)"
        );
    }

    #[test]
    fn gates_are_shared_per_url() {
        let gates = Gates::default();
        let url: TokenUrl = "http://127.0.0.1:1/token".parse().unwrap();
        let a = gates.get(&url, 4);
        let b = gates.get(&url, 9);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.limit(), 4);
    }
}
