//! Policy as pure functions: backoff, the refresh schedule (and where a resumed workload's
//! refresh goes: [`resumed_refresh_time`]), restart intensity.
//!
//! Randomness is an argument (`fastrand::Rng`, seedable), so every run can be replayed.
//!
//! Every delay computed here is at most [`MAX_TIMER_DELAY`], the longest the runtime's timer
//! service holds: a longer one (a huge `Retry-After` under a huge `max_retry_after`, an
//! embedder's backoff of years) is clamped to it, and the driver re-arms when it fires.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Timestamp;

/// The shortest backoff ever chosen (full jitter can otherwise draw ~0).
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest time between refreshes, however long a token lives: a revoked grant is
/// noticed within a day rather than months later.
pub const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The earliest a refresh is scheduled after a token is issued (unless the token lives
/// less than twice this).
pub const MIN_REFRESH_DELAY: Duration = Duration::from_secs(1);

/// The least time left before expiry when a refresh starts (capped at half the lifetime).
pub const MIN_LEAD: Duration = Duration::from_secs(5);

/// A start's quiet period: a workload resumed healthy (a daemon start over the journal, an
/// actor restart) whose served token can wait sends no refresh before this long after the
/// start ([`resumed_refresh_time`]).
pub const START_QUIET: Duration = Duration::from_secs(10);

/// The refreshes a start moved out of its quiet period are spread over at most this long
/// after it ([`resumed_refresh_time`]).
pub const START_SPREAD: Duration = Duration::from_secs(10);

/// When a workload resumed healthy at `now` refreshes: its scheduled `refresh_at`, or, when
/// that falls inside the start's quiet period ([`START_QUIET`]) and the token served
/// (`expires_at`) still lives [`MIN_LEAD`] past the period's end, a moment in the
/// [`START_SPREAD`] after that end (never closer than `MIN_LEAD` to the expiry). The moment
/// is drawn from `refresh_at` itself (a hash of its milliseconds; it carries the schedule's
/// own jitter), so the function stays pure and the refreshes of a fleet that came due
/// together leave the quiet period spread out, not all at its last instant.
///
/// Why: a refresh whose answer a crash loses loses a rotating grant, and a process that
/// just started is the likeliest to be killed again (a crash loop, a bad deploy rolled
/// back, an orchestrator's retries). A token that can still be served needs no refresh in
/// that window; one that expires before the end of it (or too close after) refreshes on
/// its schedule, as before (at once when it came due while the process was down).
pub fn resumed_refresh_time(
    refresh_at: Timestamp,
    expires_at: Timestamp,
    now: Timestamp,
) -> Timestamp {
    let quiet_end = now.plus(START_QUIET);
    let latest = quiet_end.plus(MIN_LEAD);
    if refresh_at >= quiet_end || expires_at < latest {
        return refresh_at.min(expires_at);
    }
    let room = expires_at.since(latest).min(START_SPREAD);
    quiet_end.plus(room.mul_f64(unit(refresh_at.as_millis())))
}

/// A number in `[0, 1)` drawn from `x` (SplitMix64's finaliser): a pure stand-in for a
/// random draw where none is at hand.
fn unit(x: u64) -> f64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // The top 53 bits: exact in an f64.
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The longest delay a timer is armed for: 30 days. The runtime's timer service (a
/// `tokio_util` `DelayQueue`) panics on a deadline beyond 2^36 ms (about 2.2 years), and a
/// panic there would stop every timer of the process; 30 days is far below that, far above
/// any sensible setting (configuration caps `give_up_after` at it), and a timer armed for a
/// later instant simply fires after 30 days and is armed again. The machine treats a timer
/// that fires before anything is due as spurious, so the clamp changes no decision.
pub const MAX_TIMER_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// Exponential backoff with full jitter and a cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The ceiling after the first failure.
    pub initial: Duration,
    /// The cap of the ceiling.
    pub max: Duration,
    /// The growth of the ceiling per failure (≥ 1).
    pub multiplier: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(600),
            multiplier: 2.0,
        }
    }
}

impl BackoffPolicy {
    /// The ceiling after `failures` consecutive failures (1 = the first):
    /// `min(max, initial · multiplier^(failures−1))`, and never above [`MAX_TIMER_DELAY`].
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.max(1.0).powi(exp);
        let secs = self.initial.as_secs_f64() * factor;
        let max = self.max.min(MAX_TIMER_DELAY);
        if !secs.is_finite() || secs >= max.as_secs_f64() {
            max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The wait before the next attempt: uniform in `[0, ceiling]` (full jitter), at least
    /// [`MIN_BACKOFF`] (or the ceiling, if smaller). A `Retry-After` is a floor, and the
    /// jittered draw is added on top of it: every workload of an endpoint that was told to
    /// wait the same time must not come back at the same instant (a thundering herd that
    /// the next 429 would hold again). The result is at most [`MAX_TIMER_DELAY`].
    pub fn delay(
        &self,
        failures: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let ceiling = self.ceiling(failures);
        let drawn = ceiling.mul_f64(rng.f64()).max(MIN_BACKOFF.min(ceiling));
        let delay = match retry_after {
            Some(floor) => floor.saturating_add(drawn),
            None => drawn,
        };
        delay.min(MAX_TIMER_DELAY)
    }
}

/// When to refresh a token: at `refresh_at` of its lifetime, minus up to `refresh_jitter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshSchedule {
    /// The fraction of the lifetime after which to refresh (0 < x ≤ 1).
    pub refresh_at: f64,
    /// The largest random fraction subtracted from `refresh_at` (0 ≤ x < refresh_at).
    pub refresh_jitter: f64,
}

impl Default for RefreshSchedule {
    fn default() -> Self {
        RefreshSchedule {
            refresh_at: 0.8,
            refresh_jitter: 0.1,
        }
    }
}

impl RefreshSchedule {
    /// When a token issued at `issued` that lives `lifetime` should be refreshed.
    ///
    /// Clamps: never later than `MIN_LEAD` (at most half the lifetime) before expiry (the
    /// jitter then spreads over the shortened window), never
    /// sooner than [`MIN_REFRESH_DELAY`] after issue (unless the lifetime is shorter than
    /// twice that), and never more than [`MAX_REFRESH_INTERVAL`] (jittered) after issue.
    pub fn refresh_time(
        &self,
        issued: Timestamp,
        lifetime: Duration,
        rng: &mut fastrand::Rng,
    ) -> Timestamp {
        let r = rng.f64();
        let fraction = (self.refresh_at - r * self.refresh_jitter).clamp(0.0, 1.0);
        let mut offset = lifetime.mul_f64(fraction);
        if offset > MAX_REFRESH_INTERVAL {
            let spread = (1.0 - r * self.refresh_jitter).clamp(0.0, 1.0);
            offset = MAX_REFRESH_INTERVAL.mul_f64(spread);
        }
        let lead = MIN_LEAD.min(lifetime / 2);
        let latest = lifetime.saturating_sub(lead);
        if offset > latest {
            // Keep the jitter inside the shortened window, so short-lived tokens issued
            // together still refresh apart.
            let scale = if self.refresh_at > 0.0 {
                (fraction / self.refresh_at).clamp(0.0, 1.0)
            } else {
                1.0
            };
            offset = latest.mul_f64(scale);
        }
        let earliest = MIN_REFRESH_DELAY.min(lifetime / 2);
        offset = offset.max(earliest);
        issued.plus(offset)
    }
}

/// OTP-style restart intensity: at most `max_restarts` restarts within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartIntensity {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for RestartIntensity {
    fn default() -> Self {
        RestartIntensity {
            max_restarts: 3,
            window: Duration::from_secs(60),
        }
    }
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart; this is restart number `n` within the window.
    Restart {
        /// Restarts within the window, this one included.
        n: u32,
    },
    /// The budget is spent: leave it down.
    GiveUp,
}

/// The crash history of one child.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartHistory {
    recent: VecDeque<Timestamp>,
}

impl RestartHistory {
    /// Records a crash at `now` and decides.
    pub fn record_crash(&mut self, now: Timestamp, intensity: RestartIntensity) -> RestartDecision {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.since(t) >= intensity.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= intensity.max_restarts as usize {
            return RestartDecision::GiveUp;
        }
        self.recent.push_back(now);
        RestartDecision::Restart {
            n: u32::try_from(self.recent.len()).unwrap_or(u32::MAX),
        }
    }

    /// Restarts still remembered (within the last window seen).
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// True when no restart is remembered.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn ceiling_grows_then_caps() {
        let p = BackoffPolicy {
            initial: S(5),
            max: S(600),
            multiplier: 2.0,
        };
        let got: Vec<u64> = (1..=10).map(|n| p.ceiling(n).as_secs()).collect();
        assert_eq!(got, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(p.ceiling(u32::MAX), S(600));
        assert_eq!(p.ceiling(0), S(5));
    }

    #[test]
    fn delay_is_jittered_within_ceiling_and_respects_retry_after() {
        let p = BackoffPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for n in 1..50 {
            let d = p.delay(n, None, &mut rng);
            assert!(d <= p.ceiling(n) && d >= MIN_BACKOFF, "{n}: {d:?}");
            let d = p.delay(n, Some(S(900)), &mut rng);
            assert!(d >= S(900) && d <= S(900) + p.ceiling(n), "{d:?}");
        }
    }

    #[test]
    fn delay_never_exceeds_what_the_timer_service_holds() {
        let mut rng = fastrand::Rng::with_seed(11);
        let huge = BackoffPolicy {
            initial: S(86_400),
            max: Duration::MAX,
            multiplier: 1e9,
        };
        for n in [1, 2, 5, 40, u32::MAX] {
            assert!(huge.delay(n, None, &mut rng) <= MAX_TIMER_DELAY, "{n}");
        }
        let p = BackoffPolicy::default();
        // A Retry-After of 99,999,999 s (about 3.2 years) and one of u64::MAX seconds.
        for ra in [S(99_999_999), Duration::MAX] {
            assert_eq!(p.delay(1, Some(ra), &mut rng), MAX_TIMER_DELAY);
        }
        // Below the limit nothing changes.
        let d = p.delay(1, Some(S(3600)), &mut rng);
        assert!(d >= S(3600) && d <= S(3605), "{d:?}");
    }

    #[test]
    fn schedule_spreads_inside_the_window() {
        let s = RefreshSchedule::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let t0 = Timestamp::from_millis(1_000_000);
        for _ in 0..1000 {
            let t = s.refresh_time(t0, S(3600), &mut rng);
            let off = t.since(t0).as_secs_f64();
            assert!((0.7 * 3600.0..=0.8 * 3600.0).contains(&off), "{off}");
        }
    }

    #[test]
    fn schedule_clamps_short_and_long_lifetimes() {
        let s = RefreshSchedule::default();
        let mut rng = fastrand::Rng::with_seed(3);
        let t0 = Timestamp::from_millis(0);
        // 2 s: refresh at 1 s (half-life lead), never at issue.
        let t = s.refresh_time(t0, S(2), &mut rng);
        assert_eq!(t.since(t0), S(1));
        // 0 s: refresh at once rather than never.
        assert_eq!(s.refresh_time(t0, S(0), &mut rng), t0);
        // 10 s: 0.7–0.8 would leave 2–3 s; the lead is kept at 5 s (half the lifetime).
        let t = s.refresh_time(t0, S(10), &mut rng);
        assert!(t.since(t0) <= S(5), "{t:?}");
        // 30 days: at most a day.
        let t = s.refresh_time(t0, S(30 * 86_400), &mut rng);
        assert!(
            t.since(t0) <= MAX_REFRESH_INTERVAL && t.since(t0) >= MAX_REFRESH_INTERVAL.mul_f64(0.9)
        );
    }

    #[test]
    fn short_lifetimes_keep_their_jitter() {
        let s = RefreshSchedule::default();
        let mut rng = fastrand::Rng::with_seed(9);
        let t0 = Timestamp::from_millis(0);
        let offsets: Vec<u64> = (0..200)
            .map(|_| s.refresh_time(t0, S(4), &mut rng).since(t0).as_millis() as u64)
            .collect();
        let (min, max) = (offsets.iter().min().unwrap(), offsets.iter().max().unwrap());
        // 4 s tokens: the 2 s lead leaves a 2 s window; the 0.1 jitter spreads 12.5% of it.
        assert!(*max <= 2000 && *min >= 1700, "{min}..{max}");
        assert!(max - min >= 150, "no spread: {min}..{max}");
    }

    #[test]
    fn restart_intensity_is_a_sliding_window() {
        let i = RestartIntensity {
            max_restarts: 2,
            window: S(10),
        };
        let mut h = RestartHistory::default();
        let at = |s: u64| Timestamp::from_millis(s * 1000);
        assert_eq!(h.record_crash(at(0), i), RestartDecision::Restart { n: 1 });
        assert_eq!(h.record_crash(at(1), i), RestartDecision::Restart { n: 2 });
        assert_eq!(h.record_crash(at(2), i), RestartDecision::GiveUp);
        // After the window slides past the first two, restarts are allowed again.
        assert_eq!(h.record_crash(at(12), i), RestartDecision::Restart { n: 1 });
    }
}
