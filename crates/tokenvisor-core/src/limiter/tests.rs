//! Table and property tests of the endpoint limiter, with explicit time.

use proptest::prelude::*;

use super::*;

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn limiter(ceiling: usize) -> EndpointLimiter {
    EndpointLimiter::new(ceiling, LimiterConfig::default())
}

#[test]
fn an_endpoint_that_never_pushed_back_is_not_paced_and_keeps_its_ceiling() {
    let mut l = limiter(64);
    for i in 0..1_000 {
        l.on_feedback(Feedback::Good, t(i));
        l.on_feedback(Feedback::Neutral, t(i));
    }
    assert_eq!(l.limit(), 64);
    assert_eq!(l.rate(), None);
    assert_eq!(l.next_start(t(5_000)), t(5_000));
}

/// (feedback sequence at 1 ms apart, expected limit afterwards) from a ceiling of 64.
#[test]
fn concurrency_table() {
    use Feedback::{Good, Throttled};
    let rows: &[(&[Feedback], usize)] = &[
        (&[Throttled], 32),
        // A burst's throttles within the cooldown count once.
        (&[Throttled, Throttled, Throttled], 32),
        // Too few answers to call a throttle sporadic: the endpoint's.
        (&[Good, Good, Throttled], 32),
    ];
    for (inputs, want) in rows {
        let mut l = limiter(64);
        for (i, f) in inputs.iter().enumerate() {
            l.on_feedback(*f, t(10_000 + i as u64));
        }
        assert_eq!(l.limit(), *want, "{inputs:?}");
    }
    let mut l = limiter(64);
    l.on_feedback(Throttled, t(10_000));
    for i in 0..33 {
        l.on_feedback(Good, t(10_001 + i));
    }
    assert_eq!(l.limit(), 33, "one slot per window of good answers");
    // Cuts a cooldown apart compound, down to 1 and no lower.
    for k in 1..=10 {
        l.on_feedback(Throttled, t(10_000 + k * 1_000));
    }
    assert_eq!(l.limit(), 1);
}

#[test]
fn the_first_throttle_paces_at_the_rate_answered_well() {
    let mut l = limiter(64);
    // 50 good answers within the last second; the quota header makes the throttle the
    // endpoint's (a lone 429 among them would be sporadic).
    for i in 0..50 {
        l.on_feedback(Feedback::Good, t(100_000 + i * 20));
    }
    assert_eq!(
        l.on_feedback(Feedback::QuotaSpent, t(101_000)),
        HoldScope::Endpoint
    );
    let rate = l.rate().expect("paced after a throttle");
    assert!((40.0..=50.0).contains(&rate), "{rate}");
}

#[test]
fn a_throttle_with_nothing_answered_well_paces_at_the_minimum() {
    let mut l = limiter(64);
    l.on_feedback(Feedback::Throttled, t(50_000));
    let min = LimiterConfig::default().min_rate;
    assert_eq!(l.rate(), Some(min));
    // Outage: throttles only; the pace stays at the minimum, the concurrency at 1.
    for k in 1..20 {
        l.on_feedback(Feedback::Throttled, t(50_000 + k * 1_500));
    }
    assert_eq!(l.rate(), Some(min));
    assert_eq!(l.limit(), 1);
}

#[test]
fn after_an_outage_the_rate_grows_fast_then_a_limit_cut_makes_growth_additive() {
    let c = LimiterConfig::default();
    let mut l = limiter(64);
    l.on_feedback(Feedback::Throttled, t(0));
    // Slow start: each good answer adds `slow_start_step`.
    for i in 0..10 {
        l.on_feedback(Feedback::Good, t(2_000 + i * 25));
    }
    let before_cut = l.rate().expect("paced");
    assert_eq!(before_cut, c.min_rate + 10.0 * c.slow_start_step);
    l.on_feedback(Feedback::QuotaSpent, t(3_000));
    let cut = l.rate().expect("paced");
    assert!((cut - before_cut * c.rate_cut).abs() < 1e-9, "{cut}");
    // Above the cut: about `additive_step` requests/s more per `rate` good answers.
    let n = cut.ceil() as u64;
    for i in 0..n {
        l.on_feedback(Feedback::Good, t(4_000 + i * 30));
    }
    let grown = l.rate().expect("paced");
    assert!(
        grown > cut && grown < cut + c.additive_step * 1.1,
        "{cut} → {grown}"
    );
}

#[test]
fn starts_are_spaced_by_the_rate_and_jitter_only_stretches_them() {
    let mut l = limiter(64);
    for i in 0..40 {
        l.on_feedback(Feedback::Good, t(10_000 + i * 25));
    }
    l.on_feedback(Feedback::QuotaSpent, t(11_000));
    let rate = l.rate().expect("paced");
    l.started(t(12_000), 0.0);
    let spacing = (1_000.0 / rate).ceil() as u64;
    assert_eq!(l.next_start(t(12_000)), t(12_000 + spacing));
    let mut stretched = l.clone();
    stretched.started(t(12_000), 0.999);
    let at = stretched.next_start(t(12_000));
    assert!(at >= t(12_000 + 2 * spacing - 1));
    assert!(at.as_millis() <= 12_000 + (1_000.0 / rate * 2.1).ceil() as u64);
    // A start long after the spacing waits for nothing.
    assert_eq!(l.next_start(t(20_000)), t(20_000));
}

#[test]
fn a_calm_endpoint_is_unpaced_again() {
    let mut l = limiter(8);
    l.on_feedback(Feedback::Throttled, t(0));
    assert!(l.rate().is_some());
    l.on_feedback(Feedback::Good, t(119_999));
    assert!(l.rate().is_some());
    l.on_feedback(Feedback::Good, t(120_000));
    assert_eq!(l.rate(), None);
}

#[test]
fn ceiling_changes_clamp_the_limit() {
    let mut l = limiter(64);
    l.set_ceiling(4);
    assert_eq!(l.limit(), 4);
    l.set_ceiling(16);
    assert_eq!(
        l.limit(),
        16,
        "an unpaced endpoint follows a higher ceiling"
    );
    l.on_feedback(Feedback::Throttled, t(0));
    assert_eq!(l.limit(), 8);
    l.set_ceiling(32);
    assert_eq!(l.limit(), 8, "a throttled endpoint grows back by itself");
    l.set_ceiling(0);
    assert_eq!(l.limit(), 1);
}

fn feedback() -> impl Strategy<Value = Feedback> {
    prop_oneof![
        Just(Feedback::Good),
        Just(Feedback::Throttled),
        Just(Feedback::QuotaSpent),
        Just(Feedback::Unavailable),
        Just(Feedback::Neutral)
    ]
}

proptest! {
    /// Whatever the answers: the limit stays in [1, ceiling], the rate at or above the
    /// minimum, and the next start never before `now`.
    #[test]
    fn limits_stay_in_bounds(
        ceiling in 0usize..200,
        steps in proptest::collection::vec((feedback(), 0u64..3_000, 0.0f64..1.0), 1..300),
    ) {
        let mut l = limiter(ceiling);
        let mut now = 1_000_000u64;
        for (f, dt, u) in steps {
            now += dt;
            l.on_feedback(f, t(now));
            prop_assert!(l.limit() >= 1);
            prop_assert!(l.limit() <= ceiling.max(1));
            if let Some(r) = l.rate() {
                prop_assert!(r >= LimiterConfig::default().min_rate && r.is_finite());
            }
            let next = l.next_start(t(now));
            prop_assert!(next >= t(now));
            l.started(next, u);
        }
    }

    /// Good answers never lower the limit or the rate; a throttle never raises them.
    #[test]
    fn good_grows_and_throttle_cuts(
        steps in proptest::collection::vec((feedback(), 0u64..3_000), 1..200),
    ) {
        let mut l = limiter(64);
        let mut now = 1_000_000u64;
        for (f, dt) in steps {
            now += dt;
            let (limit, rate) = (l.limit(), l.rate());
            let calm_reset = rate.is_some() && l.last_throttle.is_some_and(|th| t(now).since(th) >= l.config.calm);
            let scope = l.on_feedback(f, t(now));
            if calm_reset {
                continue;
            }
            match f {
                Feedback::Good => {
                    prop_assert!(l.limit() >= limit);
                    prop_assert!(l.rate().unwrap_or(f64::INFINITY) >= rate.unwrap_or(f64::INFINITY));
                    prop_assert_eq!(scope, HoldScope::Workload);
                }
                Feedback::Throttled | Feedback::QuotaSpent | Feedback::Unavailable => {
                    prop_assert!(l.limit() <= limit);
                    match scope {
                        HoldScope::Endpoint => prop_assert!(l.rate().is_some()),
                        // Only a 429 on an endpoint already paced is answered by the pace.
                        HoldScope::Pace => {
                            prop_assert_eq!(f, Feedback::Throttled);
                            prop_assert!(rate.is_some());
                            prop_assert!(l.rate().is_some());
                        }
                        // A sporadic throttle changes nothing.
                        HoldScope::Workload => {
                            prop_assert_eq!(l.limit(), limit);
                            prop_assert_eq!(l.rate(), rate);
                        }
                    }
                    if f == Feedback::QuotaSpent {
                        prop_assert_eq!(scope, HoldScope::Endpoint);
                    }
                }
                Feedback::Neutral => {
                    prop_assert_eq!(l.limit(), limit);
                    prop_assert_eq!(l.rate(), rate);
                }
            }
        }
    }

    /// Paced starts, each taken when allowed, are at least `1/rate` apart.
    #[test]
    fn paced_starts_respect_the_spacing(rate_goods in 0u32..80, u in proptest::collection::vec(0.0f64..1.0, 2..50)) {
        let mut l = limiter(64);
        for i in 0..rate_goods {
            l.on_feedback(Feedback::Good, t(10_000 + u64::from(i) * 10));
        }
        l.on_feedback(Feedback::QuotaSpent, t(11_000));
        let rate = l.rate().unwrap_or(1.0);
        let mut now = t(11_000);
        let mut last: Option<Timestamp> = None;
        for draw in u {
            let at = l.next_start(now);
            if let Some(prev) = last {
                prop_assert!(at.since(prev).as_secs_f64() * rate >= 0.999, "{:?} after {:?} at {rate}/s", at, prev);
            }
            l.started(at, draw);
            last = Some(at);
            now = at;
        }
    }
}

/// A refusal while the pace was being delivered (good answers all through the last second)
/// keeps most of the delivered rate: it is more likely a stall on the way than a lower limit.
#[test]
fn a_throttle_keeps_most_of_the_rate_delivered() {
    let c = LimiterConfig::default();
    let mut l = limiter(64);
    // Paced, then the limit found and cut: growth is additive from here.
    for i in 0..30 {
        l.on_feedback(Feedback::Good, t(10_000 + i * 30));
    }
    l.on_feedback(Feedback::QuotaSpent, t(11_000));
    l.on_feedback(Feedback::Good, t(12_000));
    l.on_feedback(Feedback::QuotaSpent, t(12_001));
    let rate = l.rate().expect("paced");
    // 30 good answers a second for two seconds.
    for i in 0..60 {
        l.on_feedback(Feedback::Good, t(13_000 + i * 33));
    }
    let before = l.rate().expect("paced");
    let delivered = l.good_rate(t(15_000));
    assert!(delivered > 25.0, "{delivered}");
    l.on_feedback(Feedback::QuotaSpent, t(15_000));
    let after = l.rate().expect("paced");
    assert!(after <= before);
    assert!(
        after >= (delivered * c.delivered_floor).min(before) - 1e-9,
        "{rate} → {before} → {after} (delivered {delivered})"
    );
    assert!(after >= before * c.rate_cut - 1e-9);
}

/// Above 1,000 requests/s (under a millisecond apart) the pace is kept on average: several
/// starts share a millisecond instead of one per millisecond.
#[test]
fn a_pace_above_a_thousand_per_second_is_not_capped_by_the_millisecond() {
    let mut l = limiter(64);
    for i in 0..5_000 {
        l.on_feedback(Feedback::Good, t(100_000 + i / 5));
    }
    l.on_feedback(Feedback::QuotaSpent, t(101_000));
    let rate = l.rate().expect("paced");
    assert!(rate > 4_000.0, "{rate}");
    let mut now = t(102_000);
    let mut starts = 0u32;
    while now < t(103_000) {
        let at = l.next_start(now);
        if at > now {
            now = at;
            continue;
        }
        l.started(now, 0.0);
        starts += 1;
    }
    let measured = f64::from(starts);
    assert!(
        measured > rate * 0.9 && measured < rate * 1.1,
        "{measured} in a second at {rate}/s"
    );
}

/// Which throttles are the endpoint's (cut the limits, hold every workload) and which are
/// sporadic (only their workload waits): (answers before it in the last second, as good
/// `G` / throttled `T` / neutral `N`, 1 ms apart; the throttle's kind; expected scope).
#[test]
fn throttle_scope_table() {
    use Feedback::{Good, Neutral, QuotaSpent, Throttled, Unavailable};
    let many = |n: usize, f: Feedback| vec![f; n];
    let mix = |good: usize, throttled: usize| {
        // The throttles spread evenly among the good answers, none first.
        let mut v = vec![Good; good];
        for i in 0..throttled {
            v.insert((i + 1) * good / (throttled + 1) + i, Throttled);
        }
        v
    };
    let rows: Vec<(&str, Vec<Feedback>, Feedback, HoldScope)> = vec![
        // A quiet endpoint: too few answers to call a 429 sporadic.
        ("first answer", vec![], Throttled, HoldScope::Endpoint),
        (
            "two in three",
            vec![Throttled, Good],
            Throttled,
            HoldScope::Endpoint,
        ),
        ("one in two", vec![Good], Throttled, HoldScope::Endpoint),
        ("2 in 10", mix(8, 1), Throttled, HoldScope::Endpoint),
        // Enough answers to judge: one in twenty is sporadic.
        ("1 in 20", many(19, Good), Throttled, HoldScope::Workload),
        // Chaos: 0.2 % of thousands of answers a second.
        (
            "1 in 1,000",
            many(999, Good),
            Throttled,
            HoldScope::Workload,
        ),
        ("3 in 1,000", mix(997, 2), Throttled, HoldScope::Workload),
        // A real limit: a real share, enough of them.
        ("3 in 40", mix(37, 2), Throttled, HoldScope::Endpoint),
        ("10 in 100", mix(90, 9), Throttled, HoldScope::Endpoint),
        ("4 in 100", mix(96, 3), Throttled, HoldScope::Workload),
        // Most of 40 answers throttled.
        ("21 in 40", mix(19, 20), Throttled, HoldScope::Endpoint),
        // An outage answered 429/503 throughout.
        (
            "all throttled",
            many(50, Throttled),
            Throttled,
            HoldScope::Endpoint,
        ),
        // Neutral answers (timeouts, WAF pages) are not counted as answers.
        (
            "after timeouts",
            many(20, Neutral),
            Throttled,
            HoldScope::Endpoint,
        ),
        // A vendor quota header always holds the endpoint.
        (
            "quota, 1 in 1,000",
            many(999, Good),
            QuotaSpent,
            HoldScope::Endpoint,
        ),
        // A 503 is the server's, never one client's: the endpoint, however rare.
        (
            "503, 1 in 1,000",
            many(999, Good),
            Unavailable,
            HoldScope::Endpoint,
        ),
    ];
    for (what, before, last, want) in rows {
        let mut l = limiter(64);
        let mut now = 100_000;
        for f in before {
            l.on_feedback(f, t(now));
            now += 1;
        }
        now = now.max(100_999);
        assert_eq!(l.on_feedback(last, t(now)), want, "{what}");
        let changed = l.limit() < 64 || l.rate().is_some();
        assert_eq!(
            changed,
            want == HoldScope::Endpoint,
            "{what}: limits changed"
        );
    }
}

/// Answers older than the two windows are forgotten: a burst of 429s an hour ago does not
/// make today's lone 429 the endpoint's.
#[test]
fn old_throttles_do_not_count() {
    let mut l = limiter(64);
    for i in 0..10 {
        l.on_feedback(Feedback::Throttled, t(10_000 + i));
    }
    for i in 0..2_000 {
        l.on_feedback(Feedback::Good, t(3_600_000 + i));
    }
    let (limit, rate) = (l.limit(), l.rate());
    assert_eq!(
        l.on_feedback(Feedback::Throttled, t(3_602_000)),
        HoldScope::Workload
    );
    assert_eq!(
        (l.limit(), l.rate()),
        (limit, rate),
        "a sporadic throttle changes nothing"
    );
}

/// A 429 on an endpoint already paced that was answering well (the pace overshot a rate
/// limit: slow start after an outage) cuts the pace and holds only its workload, and so do
/// the other 429s of its burst; an outage's throttles, a 503 and a quota header still hold
/// the endpoint. (Behind nginx `limit_req` 40 r/s with `Retry-After: 1`, the endpoint-wide
/// hold stopped every workload for a second at each overshoot.)
#[test]
fn a_limit_found_again_is_answered_by_the_pace() {
    use Feedback::{Good, QuotaSpent, Throttled, Unavailable};
    let c = LimiterConfig::default();
    let mut l = limiter(64);
    // The outage: 503s only, the endpoint paced at the minimum, held every time.
    for k in 0..4 {
        assert_eq!(
            l.on_feedback(Unavailable, t(10_000 + k * 1_500)),
            HoldScope::Endpoint
        );
    }
    assert_eq!(l.rate(), Some(c.min_rate));
    // The provider is back behind a rate limit: slow start, then the overshoot.
    for i in 0..7 {
        l.on_feedback(Good, t(20_000 + i * 40));
    }
    let before = l.rate().expect("paced");
    let limit_before = l.limit();
    assert_eq!(l.on_feedback(Throttled, t(20_300)), HoldScope::Pace);
    let cut = l.rate().expect("paced");
    assert!(cut < before, "{before} → {cut}");
    assert!(l.limit() < limit_before || limit_before == 1);
    // The same burst's other 429s: the pace answers them too, nothing more is cut.
    assert_eq!(l.on_feedback(Throttled, t(20_310)), HoldScope::Pace);
    assert_eq!(l.rate(), Some(cut));
    // A 503 or a quota header is always the endpoint's.
    assert_eq!(l.on_feedback(Unavailable, t(20_320)), HoldScope::Endpoint);
    assert_eq!(l.on_feedback(QuotaSpent, t(20_330)), HoldScope::Endpoint);
    // Good answers, then a 429: a limit found again, the pace's.
    for i in 0..10 {
        l.on_feedback(Good, t(21_500 + i * 40));
    }
    assert_eq!(l.on_feedback(Throttled, t(22_000)), HoldScope::Pace);
    // Nothing answered well since that cut: an outage, the endpoint's hold again.
    assert_eq!(l.on_feedback(Throttled, t(23_100)), HoldScope::Endpoint);
    assert_eq!(l.rate(), Some(c.min_rate));
    // Its burst's 429s within the cooldown are the endpoint's too.
    assert_eq!(l.on_feedback(Throttled, t(23_200)), HoldScope::Endpoint);
    // An endpoint never paced: its first push-back holds it, as before.
    let mut fresh = limiter(64);
    for i in 0..5 {
        fresh.on_feedback(Good, t(30_000 + i));
    }
    assert_eq!(fresh.on_feedback(Throttled, t(30_010)), HoldScope::Endpoint);
}

/// A deterministic model of the rate-limited recovery benchmark (issue 11, target 5), in
/// whole milliseconds of explicit time: `workloads` attempts wait for the endpoint, which
/// answered 503 for `outage_ms` (no `Retry-After`); then it answers again behind nginx's
/// `limit_req` at `limit` requests/s with burst 0 (a request that arrives less than
/// `1/limit` after the last one let through is refused: 429 + `Retry-After: 1`). Each
/// request reaches the limiter 1 + `path_jitter`·U[0, 1) ms after its start (the loaded
/// machine's scheduling), `stall_share` of them up to `stall_ms` later still (a stall: the
/// client or nginx descheduled for a moment), and is answered `service_ms` later. The driver is the gate's: a
/// start needs a free slot (`limit()`), no endpoint hold and its paced turn; a refused
/// workload waits its `Retry-After` (alone, or with every other one for an endpoint hold).
mod recovery {
    use super::*;

    /// A small deterministic generator (splitmix64) for the draws.
    pub(super) struct Draws(u64);

    impl Draws {
        pub(super) fn new(seed: u64) -> Self {
            Draws(seed)
        }
        pub(super) fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// The scenario.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Scenario {
        pub workloads: usize,
        pub ceiling: usize,
        pub outage_ms: u64,
        pub limit: u64,
        pub path_jitter: f64,
        pub stall_share: f64,
        pub stall_ms: f64,
        pub service_ms: u64,
        pub seed: u64,
    }

    /// What a run measured from the provider's return.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Measured {
        /// Until the last workload got its token, ms.
        pub recover_ms: u64,
        /// Requests that reached the rate limiter, and those it refused.
        pub requests: u64,
        pub refused: u64,
    }

    #[derive(Debug, Clone, Copy)]
    struct InFlight {
        workload: usize,
        arrives: u64,
        answered: u64,
        accepted: Option<bool>,
    }

    pub(super) fn run(s: Scenario, config: LimiterConfig) -> Measured {
        let base = 1_000_000u64;
        let back = base + s.outage_ms;
        let mut draws = Draws::new(s.seed);
        let mut l = EndpointLimiter::new(s.ceiling, config);
        // Each workload's next try (its backoff after the outage's answers), or done.
        let mut ready: Vec<Option<u64>> = (0..s.workloads)
            .map(|_| Some(base + (draws.next() * 1_000.0) as u64))
            .collect();
        let mut flying: Vec<InFlight> = Vec::new();
        let mut hold_until = 0u64;
        // nginx's leaky bucket: the last request let through and its excess (milli-requests).
        let (mut last_ok, mut excess) = (None::<u64>, 0i64);
        let (mut requests, mut refused, mut done) = (0u64, 0u64, 0usize);
        let mut now = base;
        while done < s.workloads {
            assert!(now < back + 300_000, "no recovery in 300 s: {s:?}");
            // Arrivals at the rate limiter, in order of arrival.
            flying.sort_by_key(|f| f.arrives);
            for f in flying.iter_mut().filter(|f| f.arrives == now) {
                if now < back {
                    f.accepted = Some(false);
                    continue;
                }
                requests += 1;
                // nginx: excess = excess - rate·ms + 1000 (milli-requests), at least 0;
                // refused above the burst (0).
                let e = last_ok.map_or(0, |last| {
                    (excess - (s.limit * (now - last)) as i64 + 1_000).max(0)
                });
                if e > 0 {
                    refused += 1;
                    f.accepted = Some(false);
                } else {
                    excess = e;
                    last_ok = Some(now);
                    f.accepted = Some(true);
                }
            }
            // Answers.
            let mut i = 0;
            while i < flying.len() {
                if flying[i].answered != now {
                    i += 1;
                    continue;
                }
                let f = flying.swap_remove(i);
                let outage = f.arrives < back;
                match f.accepted {
                    Some(true) => {
                        l.on_feedback(Feedback::Good, t(now));
                        done += 1;
                    }
                    Some(false) if outage => {
                        l.on_feedback(Feedback::Unavailable, t(now));
                        // Backoff 200 ms .. 1 s.
                        ready[f.workload] = Some(now + 200 + (draws.next() * 800.0) as u64);
                    }
                    Some(false) | None => {
                        let scope = l.on_feedback(Feedback::Throttled, t(now));
                        ready[f.workload] = Some(now + 1_000);
                        match scope {
                            HoldScope::Endpoint => hold_until = hold_until.max(now + 1_000),
                            HoldScope::Pace | HoldScope::Workload => {}
                        }
                    }
                }
            }
            // Starts: FIFO by readiness, while a slot, no hold and the turn allow.
            if now >= hold_until {
                loop {
                    if flying.len() >= l.limit() || l.next_start(t(now)) > t(now) {
                        break;
                    }
                    let next = ready
                        .iter()
                        .enumerate()
                        .filter_map(|(w, r)| r.filter(|&at| at <= now).map(|at| (at, w)))
                        .min();
                    let Some((_, w)) = next else { break };
                    ready[w] = None;
                    l.started(t(now), draws.next());
                    let mut arrives = now + 1 + (draws.next() * s.path_jitter) as u64;
                    // Drawn only in a scenario with stalls (the others keep their draws).
                    if s.stall_share > 0.0 && draws.next() < s.stall_share {
                        arrives += (draws.next() * s.stall_ms) as u64;
                    }
                    flying.push(InFlight {
                        workload: w,
                        arrives,
                        answered: arrives + s.service_ms,
                        accepted: None,
                    });
                }
            }
            now += 1;
        }
        Measured {
            recover_ms: now - 1 - back,
            requests,
            refused,
        }
    }
}

/// Issue 11, target 5, in the model: 300 workloads out of a 3 s outage into a 40 r/s
/// burst-0 limit, request arrivals jittered by 0 and by up to 3 ms (seeds 1–6 each). The
/// physical limit is 7.5 s. Before the turn followed the pace of the moment, a cut kept
/// 0.85 of the pace and the spacing's jitter was 2 %, the model took 9.43 s and 10.13 s on
/// average (worst 10.3 s and 10.5 s): the pace was cut to 0.75 of the overshoot, crawled
/// back at 0.5 r/s per second, and each spacing was stretched by 5 % on average. Then
/// 8.11 s and 8.85 s; with a stall's gentle cut (round 5) 8.11 s and 8.52 s.
#[test]
fn recovering_into_a_rate_limit_in_the_model() {
    for path_jitter in [0.0, 3.0] {
        let runs: Vec<recovery::Measured> = (1..=6)
            .map(|seed| {
                recovery::run(
                    recovery::Scenario {
                        workloads: 300,
                        ceiling: 64,
                        outage_ms: 3_000,
                        limit: 40,
                        path_jitter,
                        stall_share: 0.0,
                        stall_ms: 0.0,
                        service_ms: 15,
                        seed,
                    },
                    LimiterConfig::default(),
                )
            })
            .collect();
        let mean_s = runs.iter().map(|m| m.recover_ms).sum::<u64>() as f64 / 6_000.0;
        let requests: u64 = runs.iter().map(|m| m.requests).sum();
        let refused: u64 = runs.iter().map(|m| m.refused).sum();
        let worst = runs.iter().map(|m| m.recover_ms).max().unwrap_or(0);
        assert!(
            mean_s <= 9.0 && worst <= 9_750,
            "jitter {path_jitter} ms: mean {mean_s:.2} s, worst {worst} ms: {runs:?}"
        );
        assert!(
            refused * 20 <= requests,
            "jitter {path_jitter} ms: {refused} of {requests} refused"
        );
    }
}

/// Issue 11, target 5, round 5: the same recovery through stalls, as the real benchmark
/// meets them on a quiet machine (refusals in clusters of two or three, 17–24 ms after the
/// request before, at a pace of 36 r/s): arrivals jittered by up to 2 ms, and one request
/// in ten by up to 15 ms more (seeds 1–8). Each stall's cluster used to cut the pace to
/// 0.85 of itself, where it stayed, growing 0.5 r/s per second, for the rest of the
/// recovery: 10.74 s on average (worst 11.70 s). A stall's cut is gentle now (× 0.92):
/// 10.26 s (worst 11.39 s).
#[test]
fn recovering_through_stalls_in_the_model() {
    let runs: Vec<recovery::Measured> = (1..=8)
        .map(|seed| {
            recovery::run(
                recovery::Scenario {
                    workloads: 300,
                    ceiling: 64,
                    outage_ms: 3_000,
                    limit: 40,
                    path_jitter: 2.0,
                    stall_share: 0.1,
                    stall_ms: 15.0,
                    service_ms: 15,
                    seed,
                },
                LimiterConfig::default(),
            )
        })
        .collect();
    let mean_s = runs.iter().map(|m| m.recover_ms).sum::<u64>() as f64 / 8_000.0;
    let requests: u64 = runs.iter().map(|m| m.requests).sum();
    let refused: u64 = runs.iter().map(|m| m.refused).sum();
    assert!(mean_s <= 10.4, "mean {mean_s:.2} s: {runs:?}");
    assert!(refused * 10 <= requests, "{refused} of {requests} refused");
}

/// A few refusals among many good answers, at a pace above the last cut's (the limit was
/// found and the pace was being delivered): a stall on the way (the client or nginx
/// descheduled for a moment brings two arrivals closer than a burst-0 limiter allows), not
/// a lower limit. The cut is gentle (`stall_cut`, × 0.92); it was × 0.85 (or 0.9 of the
/// rate delivered), and at 0.5 r/s per second the pace never came back within the
/// recovery (measured: 36 → 31 r/s for the last 3–8 s of it). Slow start's overshoot and
/// refusals that are a real share of the answers are still cut by `rate_cut`.
#[test]
fn a_stalls_refusals_cut_the_pace_gently() {
    use Feedback::{Good, Throttled, Unavailable};
    let c = LimiterConfig::default();
    let mut l = limiter(64);
    l.on_feedback(Unavailable, t(10_000));
    // Slow start overshoots: a full cut.
    for i in 0..7 {
        l.on_feedback(Good, t(11_000 + i * 25));
    }
    let before = l.rate().expect("paced");
    assert_eq!(l.on_feedback(Throttled, t(11_200)), HoldScope::Pace);
    let first = l.rate().expect("paced");
    assert!(first <= before * c.rate_cut + 1e-9, "{before} → {first}");
    // Two seconds of good answers at 36 r/s: the pace grows past the cut.
    let mut now = 11_300;
    for _ in 0..72 {
        l.on_feedback(Good, t(now));
        now += 28;
    }
    let delivered = l.rate().expect("paced");
    assert!(delivered > first);
    // A stall: refusals a few ms apart, among the good answers, until one is the
    // endpoint's and cuts.
    let mut refusals = 0;
    while l.rate() == Some(delivered) {
        assert!(refusals < 10, "a stall's refusals never cut");
        let scope = l.on_feedback(Throttled, t(now));
        assert_ne!(scope, HoldScope::Endpoint);
        refusals += 1;
        now += 20;
    }
    let gentle = l.rate().expect("paced");
    assert!(
        gentle >= delivered * c.stall_cut - 1e-9 && gentle > delivered * 0.9 && gentle < delivered,
        "{delivered} → {gentle} after {refusals} refusals"
    );
    // Later, refusals a third of the answers: the limit is lower, a full cut.
    now += 3_000;
    for _ in 0..20 {
        l.on_feedback(Good, t(now));
        now += 28;
    }
    let paced = l.rate().expect("paced");
    for _ in 0..10 {
        l.on_feedback(Throttled, t(now));
        now += 5;
    }
    let full = l.rate().expect("paced");
    assert!(full <= paced * c.rate_cut + 1e-9, "{paced} → {full}");
}

/// A turn already waited for moves with the pace: the first good answers after an outage
/// (paced at the minimum, 500 ms apart) bring the next start closer at once, and a cut
/// pushes it back, instead of the spacing drawn at the last start applying.
#[test]
fn the_next_turn_follows_the_pace_of_the_moment() {
    let c = LimiterConfig::default();
    let mut l = limiter(64);
    l.on_feedback(Feedback::Unavailable, t(10_000));
    assert_eq!(l.rate(), Some(c.min_rate));
    l.started(t(11_000), 0.0);
    assert_eq!(l.next_start(t(11_000)), t(11_500));
    // Two good answers: 2 + 2·6 = 14 r/s, the turn ≈ 71 ms after the last start.
    l.on_feedback(Feedback::Good, t(11_020));
    l.on_feedback(Feedback::Good, t(11_030));
    let rate = l.rate().expect("paced");
    let want = 11_000 + (1_000.0 / rate).ceil() as u64;
    assert_eq!(l.next_start(t(11_035)), t(want), "at {rate} r/s");
    // A 503 after those good answers (past the cooldown of the first cut): the pace is
    // cut, and the turn goes back out with it.
    l.on_feedback(Feedback::Unavailable, t(11_040));
    let cut = l.rate().expect("paced");
    assert!(cut < rate, "{rate} → {cut}");
    let want_cut = 11_000 + (1_000.0 / cut).ceil() as u64;
    assert!(want_cut > want);
    assert_eq!(l.next_start(t(11_045)), t(want_cut), "at {cut} r/s");
}

/// An outage after a rate limit was found: slow start goes back to the pace learned (the
/// limit did not change with the outage) and grows additively above it, instead of
/// racing past it into a burst of refusals as an endpoint that never found its limit does.
#[test]
fn after_an_outage_slow_start_goes_back_to_the_learned_pace_no_further() {
    use Feedback::{Good, Throttled, Unavailable};
    let c = LimiterConfig::default();
    let mut l = limiter(64);
    l.on_feedback(Unavailable, t(10_000));
    for i in 0..7 {
        l.on_feedback(Good, t(11_000 + i * 25));
    }
    assert_eq!(l.on_feedback(Throttled, t(11_200)), HoldScope::Pace);
    let learned = l.rate().expect("paced");
    // The outage: nothing good since the cut.
    l.on_feedback(Unavailable, t(13_000));
    assert_eq!(l.rate(), Some(c.min_rate));
    // 40 good answers: fast back to the learned pace, then about `additive_step` per
    // second above it.
    for i in 0..40 {
        l.on_feedback(Good, t(20_000 + i * 25));
    }
    let rate = l.rate().expect("paced");
    assert!(
        rate >= learned && rate <= learned + c.slow_start_step + 2.0 * c.additive_step,
        "learned {learned}, now {rate}"
    );
}

/// The provider returns behind its limit less than a cooldown after the outage's last cut
/// (503s at 2 r/s, the last one just before): good answers, then the overshoot's 429. It
/// is a limit found (the pace's, only its workload waits), not one more answer of the
/// outage holding every workload for the `Retry-After` (measured: a 1 s gap at 0.8 s into
/// the rate-limited recovery).
#[test]
fn an_outages_cooldown_ends_with_its_first_good_answer() {
    use Feedback::{Good, Throttled, Unavailable};
    let mut l = limiter(64);
    for k in 0..4 {
        l.on_feedback(Unavailable, t(10_000 + k * 1_100));
    }
    let last_503 = 10_000 + 3 * 1_100;
    for i in 0..6 {
        l.on_feedback(Good, t(last_503 + 100 + i * 40));
    }
    let before = l.rate().expect("paced");
    assert_eq!(l.on_feedback(Throttled, t(last_503 + 400)), HoldScope::Pace);
    assert!(l.rate().expect("paced") < before);
    // While nothing answers well, the outage's cooldown still covers its own answers.
    let mut o = limiter(64);
    o.on_feedback(Unavailable, t(10_000));
    let rate = o.rate();
    assert_eq!(o.on_feedback(Throttled, t(10_300)), HoldScope::Endpoint);
    assert_eq!(o.rate(), rate);
}

/// Slow start after an outage overshoots a 40 r/s limit by half again; the cut (× 0.85)
/// is still above it, and the refusals go on. Those beyond what was in flight at the cut
/// were sent at the cut pace: the pace is cut again within the cooldown, instead of half
/// the requests being refused until the next second (measured: 2 s of the recovery).
#[test]
fn refusals_beyond_the_cuts_burst_cut_again_within_the_cooldown() {
    use Feedback::{Good, Throttled, Unavailable};
    let mut l = limiter(4);
    l.on_feedback(Unavailable, t(10_000));
    for i in 0..9 {
        l.on_feedback(Good, t(11_100 + i * 30));
    }
    let before = l.rate().expect("paced");
    let in_flight = l.limit();
    assert_eq!(l.on_feedback(Throttled, t(11_400)), HoldScope::Pace);
    let first = l.rate().expect("paced");
    assert!(first < before);
    // As many throttles as were in flight at the cut, good answers between them: the
    // same burst, nothing more is cut.
    let mut now = 11_410;
    for _ in 0..in_flight {
        l.on_feedback(Good, t(now));
        assert_eq!(l.on_feedback(Throttled, t(now + 5)), HoldScope::Pace);
        now += 20;
    }
    assert!(l.rate().expect("paced") >= first, "cut within the burst");
    // One more: sent after the cut, at the cut pace: cut again.
    assert_eq!(l.on_feedback(Throttled, t(now)), HoldScope::Pace);
    let second = l.rate().expect("paced");
    assert!(second < first, "{before} → {first} → {second}");
}
