//! Adaptive pacing of one token endpoint: a concurrency limit and a request rate, both
//! learned from the endpoint's answers (AIMD, as TCP and Netflix's concurrency-limits do).
//!
//! A driver keeps one [`EndpointLimiter`] per endpoint, feeds it the [`Feedback`] of every
//! answer and asks it two things: how many requests may be in flight ([`EndpointLimiter::limit`])
//! and when the next request may start ([`EndpointLimiter::next_start`]). Time (`now`) and
//! the jitter draw are arguments; nothing here reads a clock.
//!
//! - **Concurrency** starts at the ceiling (`endpoint_concurrency`) and stays there while
//!   answers come back fine. A 429/503 ([`Feedback::Throttled`]) halves it (at most once per
//!   [`LimiterConfig::cooldown`], so the answers of one burst count once); each good answer
//!   adds `1/limit` (one more slot per window of good answers). Never above the ceiling,
//!   never below 1.
//! - **Rate.** An endpoint that never pushed back is not paced at all. The first throttle
//!   paces it at the rate of good answers measured over the last second (a sliding count),
//!   at least [`LimiterConfig::min_rate`]. Later throttles cut the rate: when good answers
//!   came back since the last cut, this is a rate limit: the rate is multiplied by
//!   [`LimiterConfig::rate_cut`] (but kept at [`LimiterConfig::delivered_floor`] of the rate
//!   answered well over the last second, if that is more) and growth turns additive above
//!   it — by [`LimiterConfig::stall_cut`] only (0.92) when the throttles are a stall's: the
//!   pace had grown past the last cut's (the limit was found and the pace delivered), the
//!   throttles are at most [`LimiterConfig::stall_share`] of the recent answers and not
//!   beyond a cut's burst (below). Behind a burst-0 limiter a client or nginx descheduled
//!   for a few milliseconds brings two arrivals closer than the limit allows: two or three
//!   refusals, then none; a cut to 0.85 stayed for the rest of a recovery (0.5 r/s per
//!   second does not climb back 5 r/s in 8 s). When none did, this is
//!   an outage, not a limit: the rate drops to `min_rate`, and slow start goes back up to
//!   the pace of the last rate-limit cut (the limit found before the outage still stands;
//!   additive above it), or discovers the limit again if none was found.
//!   Each good answer grows the rate: by [`LimiterConfig::slow_start_step`] requests/s below
//!   the threshold of the last rate-limit cut (exponential growth: a doubling every
//!   fraction of a second), by [`LimiterConfig::additive_step`]`/rate` above it (that many
//!   requests/s more per second).
//!   After [`LimiterConfig::calm`] without a throttle the endpoint is unpaced again.
//! - **Sporadic throttles are not the endpoint's.** A throttle counts for the whole endpoint
//!   ([`HoldScope::Endpoint`]: it cuts the limits above and its `Retry-After` holds every
//!   workload) only when throttles are a real share of the endpoint's recent answers (the
//!   current one-second window and the one before): at least
//!   [`LimiterConfig::wide_min_throttles`] of them and at least
//!   [`LimiterConfig::wide_min_share`] of the answers, or more than
//!   [`LimiterConfig::wide_majority`] of the answers; or when there were fewer than
//!   [`LimiterConfig::wide_min_answers`] answers (too few to call a throttle sporadic: a
//!   quiet endpoint's 429 holds it, as before); or always when the answer's vendor headers
//!   say the quota is spent ([`Feedback::QuotaSpent`]), or for a 503, which is about the
//!   server, not one client ([`Feedback::Unavailable`]). Otherwise it is sporadic ([`HoldScope::Workload`]):
//!   counted, but it changes neither limit, and only the workload that got it waits its
//!   `Retry-After`. A provider (or a chaos proxy) refusing 0.2 % of thousands of answers a
//!   second with `Retry-After: 1` no longer holds and slows every workload of the endpoint.
//! - **A limit found again is answered by the pace.** A 429 that is the endpoint's, on an
//!   endpoint already paced that had good answers since its last cut (its pace overshot a
//!   rate limit: slow start after an outage, a refusal while the pace was delivered), cuts
//!   the limits as above but holds only its own workload ([`HoldScope::Pace`]); so do the
//!   other 429s of the same burst (within [`LimiterConfig::cooldown`] of that cut). The cut
//!   pace already spaces every other request; holding them all for the `Retry-After` (a
//!   whole second behind nginx's `limit_req`) stopped an endpoint that was 10 % too fast
//!   for a second, each time. The first push-back of an unpaced endpoint, a 503, a vendor
//!   quota header and a 429 after nothing answered well since the last cut (an outage)
//!   still hold the endpoint. An outage's cut is followed by no other within the cooldown
//!   while nothing answers well; once good answers come, a 429 is the provider back behind
//!   its limit, not one more answer of the outage: it is a limit found ([`HoldScope::Pace`])
//!   even within the cooldown (an endpoint paced at 2 r/s during an outage meets its first
//!   429 well within a second of its last 503 when the provider returns; counted as the
//!   outage's, it held every workload for the `Retry-After`). Nor does the cooldown of a
//!   rate-limit cut cover more throttles than requests were in flight at the cut (its
//!   concurrency limit): those were sent at the cut pace, which is still too fast (slow start
//!   overshoots a limit by up to half again; one cut a second took 2 s at half the requests
//!   refused to come down).
//! - **Starts** are spaced by `1/rate`, each stretched by up to
//!   [`LimiterConfig::jitter`] of itself (the draw is an argument), never shortened: a
//!   limiter with no burst allowance refuses a request that comes early, not one that comes
//!   late. The stretch is small (2 %): the starts of one endpoint are already serialised
//!   (FIFO) by the driver, and every percent of stretch is a percent of the pace lost. The
//!   next turn is the last start's plus the spacing at the pace *of the moment it is asked
//!   for*: good answers that raise the pace bring a turn already waited for closer (after an
//!   outage the pace is 2 r/s, 500 ms apart: the first answers would otherwise leave the
//!   next start half a second out), and a cut pushes it back at once. The turn is kept in
//!   fractional milliseconds, so a pace above 1,000 requests/s is kept on average (several
//!   starts in one millisecond) rather than capped at one per millisecond.
//!
//! The constants were chosen on a model of the rate-limited recovery benchmark in the tests
//! (`recovery`: 300 workloads out of an outage into a 40 r/s burst-0 limit, in explicit
//! milliseconds): a cut to 0.75 of the pace left it crawling back at `additive_step` from
//! well below the limit for the rest of the recovery; 0.85 keeps it near the limit with
//! refusals still a few percent.

use std::time::Duration;

use crate::time::Timestamp;

/// What an answer says about the endpoint's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// A good answer (a token, or a final verdict: the endpoint had capacity for it).
    Good,
    /// 429 or 503: the endpoint (or a proxy in front of it) asks for less.
    Throttled,
    /// A 429 or 503 whose vendor rate-limit headers say the quota is spent (a remaining of
    /// 0 with a reset): always the whole endpoint's.
    QuotaSpent,
    /// A 503 (RFC 9110 §15.6.4: the *server* is overloaded or down for maintenance): always
    /// the whole endpoint's. Only a 429 (RFC 6585: *this client* sent too many) can be a
    /// sporadic throttle that holds only its workload.
    Unavailable,
    /// Says nothing about capacity (a timeout, a network error, a WAF page).
    Neutral,
}

/// How far a throttle reaches (module docs, "Sporadic throttles" and "A limit found
/// again").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldScope {
    /// The endpoint's: the limits are cut and a `Retry-After` holds every workload.
    Endpoint,
    /// The endpoint's, answered by its pace: a 429 on an endpoint already paced that was
    /// answering well (a rate limit found again, or a refusal while the pace was being
    /// delivered). The limits are cut (once per cooldown), and only the workload that got
    /// it waits its `Retry-After`: the others go on at the cut pace.
    Pace,
    /// The one workload's: only it waits its `Retry-After`; the limits are unchanged.
    Workload,
}

/// The limiter's constants. [`LimiterConfig::default`] is what the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterConfig {
    /// The lowest pace, requests per second.
    pub min_rate: f64,
    /// A throttle after good answers multiplies the rate by this...
    pub rate_cut: f64,
    /// ...but keeps at least this share of the rate answered well over the last second (a
    /// refusal while that rate was being delivered is more likely a stall on the way than
    /// a lower limit).
    pub delivered_floor: f64,
    /// A limit cut while the pace was being delivered (a stall's refusals, module docs:
    /// the pace above the last cut's, refusals at most [`LimiterConfig::stall_share`] of
    /// the recent answers, not beyond a cut's burst) multiplies the rate by this instead of
    /// [`LimiterConfig::rate_cut`].
    pub stall_cut: f64,
    /// The largest share of throttles among the recent answers that is a stall's.
    pub stall_share: f64,
    /// A throttle multiplies the concurrency limit by this.
    pub concurrency_cut: f64,
    /// Requests/s added per good answer below the threshold of the last rate-limit cut.
    pub slow_start_step: f64,
    /// Above that threshold, requests/s added per `rate` good answers (about per second).
    pub additive_step: f64,
    /// Throttles within this time of a cut are the same event (one burst's answers).
    pub cooldown: Duration,
    /// After this long without a throttle the endpoint is not paced any more.
    pub calm: Duration,
    /// Each spacing between starts is stretched by up to this fraction of itself.
    pub jitter: f64,
    /// A throttle is the endpoint's when at least this many came in the recent answers...
    pub wide_min_throttles: u32,
    /// ...and they are at least this share of those answers...
    pub wide_min_share: f64,
    /// ...or when they are more than this share of them...
    pub wide_majority: f64,
    /// ...or when fewer answers than this came in (too few to judge).
    pub wide_min_answers: u32,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            min_rate: 2.0,
            rate_cut: 0.85,
            delivered_floor: 0.9,
            stall_cut: 0.92,
            stall_share: 0.1,
            concurrency_cut: 0.5,
            slow_start_step: 6.0,
            additive_step: 0.5,
            cooldown: Duration::from_secs(1),
            calm: Duration::from_secs(120),
            jitter: 0.02,
            wide_min_throttles: 3,
            wide_min_share: 0.05,
            wide_majority: 0.5,
            wide_min_answers: 20,
        }
    }
}

/// The adaptive limits of one endpoint (module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointLimiter {
    config: LimiterConfig,
    ceiling: usize,
    /// The concurrency limit, in `[1, ceiling]` (fractional: grows by `1/limit`).
    limit: f64,
    /// Requests per second; `None`: not paced.
    rate: Option<f64>,
    /// Below it the rate grows by `slow_start_step`, above it by `1/rate`.
    threshold: f64,
    /// The pace of the last rate-limit cut: below the limit the endpoint was found to
    /// have. An outage keeps it as the threshold of its slow start.
    learned: Option<f64>,
    last_cut: Option<Timestamp>,
    /// The last cut was a rate limit found again ([`HoldScope::Pace`]), not a first push-back
    /// or an outage: the 429s of its burst hold only their workloads too.
    last_cut_paced: bool,
    /// The last cut was an outage's (nothing answered well before it): good answers since
    /// then mean the provider is back, and its cooldown no longer covers a new throttle.
    last_cut_outage: bool,
    /// Requests that may have been in flight at the last cut (the concurrency limit then),
    /// and the throttles since it: more throttles than that within the cooldown were sent
    /// after the cut, at the cut pace, which is still too fast.
    in_flight_at_cut: u32,
    throttles_since_cut: u32,
    last_throttle: Option<Timestamp>,
    /// Good answers since the last cut.
    good_since_cut: u64,
    /// Sliding count of good answers: the current one-second window and the one before.
    window_start: Timestamp,
    window_good: u32,
    prev_window_good: u32,
    /// Every answer with a word on capacity (good or throttled) and the throttles among
    /// them, in the same two windows.
    window_answers: u32,
    prev_window_answers: u32,
    window_throttles: u32,
    prev_window_throttles: u32,
    /// The turn of the last start (ms since the epoch, fractional: a pace above 1,000
    /// requests/s starts several requests per millisecond) and the stretch its jitter drew
    /// for the spacing after it (`1 + jitter·u`). The next turn is `turn + stretch/rate`,
    /// at the pace of the moment it is asked for: a pace grown or cut since the last start
    /// moves the turn already waited for.
    turn: Option<(f64, f64)>,
}

const WINDOW_MS: u64 = 1_000;

/// What a throttle did to the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The first push-back of an unpaced endpoint: paced at the rate answered well.
    First,
    /// A paced endpoint answering well: a rate limit found again, the pace cut.
    Limit,
    /// Nothing answered well since the last cut: back to the minimum pace.
    Outage,
    /// Within the cooldown of a first or outage cut: the same event, nothing more cut.
    Cooling,
    /// Within the cooldown of a [`Cut::Limit`]: the same burst, nothing more cut.
    CoolingAfterLimit,
}

impl EndpointLimiter {
    /// A limiter allowing `ceiling` requests in flight (at least 1), unpaced.
    pub fn new(ceiling: usize, config: LimiterConfig) -> Self {
        let ceiling = ceiling.max(1);
        EndpointLimiter {
            config,
            ceiling,
            limit: ceiling as f64,
            rate: None,
            threshold: f64::INFINITY,
            learned: None,
            last_cut: None,
            last_cut_paced: false,
            last_cut_outage: false,
            in_flight_at_cut: 0,
            throttles_since_cut: 0,
            last_throttle: None,
            good_since_cut: 0,
            window_start: Timestamp::EPOCH,
            window_good: 0,
            prev_window_good: 0,
            window_answers: 0,
            prev_window_answers: 0,
            window_throttles: 0,
            prev_window_throttles: 0,
            turn: None,
        }
    }

    /// The ceiling (`endpoint_concurrency`).
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// A new ceiling (a reload changed `endpoint_concurrency`); the limit is clamped to it.
    pub fn set_ceiling(&mut self, ceiling: usize) {
        let grew = ceiling > self.ceiling;
        self.ceiling = ceiling.max(1);
        // An endpoint at its old ceiling follows a higher one at once.
        if grew && self.rate.is_none() {
            self.limit = self.ceiling as f64;
        }
        self.limit = self.limit.clamp(1.0, self.ceiling as f64);
    }

    /// How many requests may be in flight now: in `[1, ceiling]`.
    pub fn limit(&self) -> usize {
        // Truncation of a value in [1, ceiling] is the intent.
        (self.limit.floor() as usize).clamp(1, self.ceiling)
    }

    /// The pace, requests per second, or `None` when the endpoint is not paced.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Good answers per second over about the last second, at `now`.
    pub fn good_rate(&self, now: Timestamp) -> f64 {
        let elapsed = now
            .as_millis()
            .saturating_sub(self.window_start.as_millis());
        if elapsed >= 2 * WINDOW_MS {
            return 0.0;
        }
        if elapsed >= WINDOW_MS {
            // The current window is over: it is the previous one now.
            let into = (elapsed - WINDOW_MS) as f64 / WINDOW_MS as f64;
            return f64::from(self.window_good) * (1.0 - into);
        }
        let into = elapsed as f64 / WINDOW_MS as f64;
        f64::from(self.prev_window_good) * (1.0 - into) + f64::from(self.window_good)
    }

    fn roll_window(&mut self, now: Timestamp) {
        let elapsed = now
            .as_millis()
            .saturating_sub(self.window_start.as_millis());
        if elapsed >= 2 * WINDOW_MS {
            self.prev_window_good = 0;
            self.window_good = 0;
            self.prev_window_answers = 0;
            self.window_answers = 0;
            self.prev_window_throttles = 0;
            self.window_throttles = 0;
            self.window_start = now;
        } else if elapsed >= WINDOW_MS {
            self.prev_window_good = self.window_good;
            self.window_good = 0;
            self.prev_window_answers = self.window_answers;
            self.window_answers = 0;
            self.prev_window_throttles = self.window_throttles;
            self.window_throttles = 0;
            self.window_start = self.window_start.plus(Duration::from_millis(WINDOW_MS));
        }
    }

    /// Learns from one answer received at `now`. For a throttle, says whether it is the
    /// endpoint's or only its workload's (module docs, "Sporadic throttles"); for any other
    /// answer, [`HoldScope::Workload`] (it holds nothing).
    pub fn on_feedback(&mut self, feedback: Feedback, now: Timestamp) -> HoldScope {
        self.forget_if_calm(now);
        self.roll_window(now);
        match feedback {
            Feedback::Good => {
                self.window_answers = self.window_answers.saturating_add(1);
                self.on_good();
                HoldScope::Workload
            }
            Feedback::Throttled => {
                self.count_throttle();
                match self.throttle_scope() {
                    HoldScope::Endpoint | HoldScope::Pace => match self.on_throttled(now) {
                        Cut::Limit | Cut::CoolingAfterLimit => HoldScope::Pace,
                        Cut::First | Cut::Outage | Cut::Cooling => HoldScope::Endpoint,
                    },
                    HoldScope::Workload => HoldScope::Workload,
                }
            }
            Feedback::QuotaSpent | Feedback::Unavailable => {
                self.count_throttle();
                // Always the endpoint's hold, whatever the cut.
                match self.on_throttled(now) {
                    Cut::First
                    | Cut::Limit
                    | Cut::Outage
                    | Cut::Cooling
                    | Cut::CoolingAfterLimit => HoldScope::Endpoint,
                }
            }
            Feedback::Neutral => HoldScope::Workload,
        }
    }

    fn count_throttle(&mut self) {
        self.window_answers = self.window_answers.saturating_add(1);
        self.window_throttles = self.window_throttles.saturating_add(1);
    }

    /// The throttles and the answers (at least 1) of the recent answers: the current
    /// one-second window and the one before.
    fn recent(&self) -> (u32, u32) {
        let throttles = self
            .window_throttles
            .saturating_add(self.prev_window_throttles);
        let answers = self
            .window_answers
            .saturating_add(self.prev_window_answers)
            .max(1);
        (throttles, answers)
    }

    /// The share of throttles among the recent answers ([`Self::recent`]).
    fn throttle_share(&self) -> f64 {
        let (throttles, answers) = self.recent();
        f64::from(throttles) / f64::from(answers)
    }

    /// Whether the throttles among the recent answers (this one counted) are the endpoint's.
    fn throttle_scope(&self) -> HoldScope {
        let (throttles, answers) = self.recent();
        let share = self.throttle_share();
        let c = &self.config;
        let wide = answers < c.wide_min_answers
            || share > c.wide_majority
            || (throttles >= c.wide_min_throttles && share >= c.wide_min_share);
        if wide {
            HoldScope::Endpoint
        } else {
            HoldScope::Workload
        }
    }

    fn on_good(&mut self) {
        self.window_good = self.window_good.saturating_add(1);
        self.good_since_cut = self.good_since_cut.saturating_add(1);
        let ceiling = self.ceiling as f64;
        self.limit = (self.limit + 1.0 / self.limit).min(ceiling);
        if let Some(rate) = self.rate {
            let step = if rate < self.threshold {
                self.config.slow_start_step
            } else {
                self.config.additive_step / rate
            };
            self.rate = Some(rate + step);
        }
    }

    fn on_throttled(&mut self, now: Timestamp) -> Cut {
        self.last_throttle = Some(now);
        // An outage's cooldown ends with the first good answer: a throttle after it is the
        // provider back and its limit overshot, not one more answer of the outage.
        let back = self.last_cut_outage && self.good_since_cut > 0;
        // More throttles since the cut than requests were in flight at it: some were sent
        // at the cut pace, still above the limit (an overshoot of slow start several times
        // the cut): not the same burst.
        self.throttles_since_cut = self.throttles_since_cut.saturating_add(1);
        let beyond_burst = self.last_cut_paced && self.throttles_since_cut > self.in_flight_at_cut;
        let cooling = !back
            && !beyond_burst
            && self
                .last_cut
                .is_some_and(|cut| now.since(cut) < self.config.cooldown);
        if cooling {
            return if self.last_cut_paced {
                Cut::CoolingAfterLimit
            } else {
                Cut::Cooling
            };
        }
        // Truncation of a limit in [1, ceiling] is the intent.
        self.in_flight_at_cut = self.limit.floor() as u32;
        self.throttles_since_cut = 0;
        self.limit = (self.limit * self.config.concurrency_cut).max(1.0);
        let min = self.config.min_rate;
        let (rate, cut) = match self.rate {
            // First push-back: pace at the rate that was answered well.
            None => {
                self.threshold = f64::INFINITY;
                (self.good_rate(now).max(min), Cut::First)
            }
            // Good answers since the last cut: a rate limit. Cut, then grow carefully.
            Some(rate) if self.good_since_cut > 0 => {
                let delivered = self.good_rate(now) * self.config.delivered_floor;
                // Above the pace of the last cut (the limit was found, the pace was being
                // delivered and grew past it), a few refusals among many answers are a
                // stall on the way, not a lower limit: a gentle cut.
                let stall = rate >= self.threshold
                    && !beyond_burst
                    && self.throttle_share() <= self.config.stall_share;
                let factor = if stall {
                    self.config.stall_cut
                } else {
                    self.config.rate_cut
                };
                let cut = (rate * factor).max(delivered).min(rate).max(min);
                self.threshold = cut;
                self.learned = Some(cut);
                (cut, Cut::Limit)
            }
            // Nothing got through since the last cut: an outage, not a limit. The limit
            // found before it still stands: slow start goes back to it, no further.
            Some(_) => {
                self.threshold = self.learned.unwrap_or(f64::INFINITY);
                (min, Cut::Outage)
            }
        };
        self.rate = Some(rate);
        self.last_cut = Some(now);
        self.last_cut_paced = cut == Cut::Limit;
        self.last_cut_outage = cut == Cut::Outage;
        self.good_since_cut = 0;
        cut
    }

    fn forget_if_calm(&mut self, now: Timestamp) {
        let calm = self
            .last_throttle
            .is_some_and(|t| now.since(t) >= self.config.calm);
        if self.rate.is_some() && calm {
            self.rate = None;
            self.threshold = f64::INFINITY;
            self.learned = None;
            self.turn = None;
        }
    }

    /// When the next request may start, asked at `now`: `now` when not paced or when its
    /// turn has come, else the start of its turn. A pace of more than 1,000 requests/s (a
    /// spacing under the millisecond resolution of time here) lets the starts of one
    /// millisecond through together, as many as the pace allows on average.
    pub fn next_start(&self, now: Timestamp) -> Timestamp {
        let Some(next) = self.next_turn() else {
            return now;
        };
        let tolerance = if self.rate.is_some_and(|r| r > 1_000.0) {
            1.0
        } else {
            0.0
        };
        let due = next - tolerance;
        if due <= now.as_millis() as f64 {
            now
        } else {
            // `due` is a finite positive number of ms below u64::MAX here.
            Timestamp::from_millis(due.ceil() as u64)
        }
    }

    /// The next turn (ms, fractional) at the current pace, if paced and started before.
    fn next_turn(&self) -> Option<f64> {
        let (rate, (turn, stretch)) = (self.rate?, self.turn?);
        Some(turn + 1_000.0 / rate * stretch)
    }

    /// A request starts at `at` (the driver calls it when it sends, after waiting for
    /// [`EndpointLimiter::next_start`]), with a jitter draw `u` in `[0, 1)`: while paced,
    /// the next turn comes `1/rate` later, stretched by up to [`LimiterConfig::jitter`] of
    /// itself (never shortened: a limiter with no burst allowance refuses a request that
    /// comes early, not one that comes late). `rate` is the pace when the next turn is
    /// asked for, not when this one started.
    pub fn started(&mut self, at: Timestamp, u: f64) {
        let at_ms = at.as_millis() as f64;
        let from = self.next_turn().map_or(at_ms, |next| next.max(at_ms));
        let stretch = 1.0 + self.config.jitter * u.clamp(0.0, 1.0);
        self.turn = Some((from, stretch));
    }
}

#[cfg(test)]
mod tests;
