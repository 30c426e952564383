//! The one clock of the runtime.
//!
//! Wall-clock time anchored once at start, advanced by tokio's monotonic clock. Under
//! `tokio::time::pause()` (paused-clock tests) it advances only when tokio's clock does, so
//! the core's `now`, the actors' timers and the status files all agree.

use std::time::{Duration, SystemTime};

use tokenvisor_core::Timestamp;
use tokio::time::Instant;

/// Wall-clock [`Timestamp`]s that follow tokio's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: Timestamp,
    mono: Instant,
}

impl Clock {
    /// Anchors the clock at the current wall time. Call inside a tokio runtime.
    pub fn new() -> Self {
        Clock::anchored(Timestamp::from_system_time(SystemTime::now()))
    }

    /// A clock that reads `wall` now (tests use fixed anchors for reproducible files).
    pub fn anchored(wall: Timestamp) -> Self {
        Clock {
            wall,
            mono: Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.wall.plus(self.mono.elapsed())
    }

    /// How long from now until `t` (zero when `t` has passed).
    pub fn until(&self, t: Timestamp) -> Duration {
        t.since(self.now())
    }

    /// The tokio instant corresponding to `t`.
    pub fn instant_at(&self, t: Timestamp) -> Instant {
        Instant::now() + self.until(t)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
