//! A simulated-time run of 10,000 workloads issued at the same instant: the refresh
//! schedule's jitter must spread their first refreshes over the window, so that a fleet
//! does not hit its identity provider in one burst.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokenvisor_core::classify::TokenGrant;
use tokenvisor_core::machine::State;
use tokenvisor_core::{Input, Machine, MachineConfig, Resume, Secret, Timestamp, Verdict};

const WORKLOADS: usize = 10_000;
const LIFETIME: u64 = 3600;

fn grant() -> TokenGrant {
    TokenGrant {
        access_token: Secret::from("at"),
        refresh_token: None,
        lifetime: Duration::from_secs(LIFETIME),
        lifetime_from_provider: true,
        token_type: "Bearer".into(),
        scope: None,
    }
}

#[test]
fn ten_thousand_workloads_issued_together_refresh_spread_over_the_jitter_window() {
    let t0 = Timestamp::from_millis(1_790_000_000_000);
    let config = MachineConfig::default();
    assert_eq!(config.schedule.refresh_at, 0.8);
    assert_eq!(config.schedule.refresh_jitter, 0.1);
    let mut rng = fastrand::Rng::with_seed(0x70c3_5eed);

    // Every workload starts at t0 and gets its token at t0.
    let mut machines = Vec::with_capacity(WORKLOADS);
    let mut timers = BinaryHeap::new();
    for i in 0..WORKLOADS {
        let (mut m, fx) = Machine::start(config.clone(), Resume::Fresh, None, t0);
        let attempt = fx.start_attempt.expect("a fresh machine fetches at once");
        let fx = m.handle(
            Input::RefreshResult {
                attempt,
                verdict: Verdict::Success(grant()),
            },
            t0,
            &mut rng,
        );
        assert!(fx.publish.is_some());
        timers.push(Reverse((fx.wake_at.expect("healthy wants a timer"), i)));
        machines.push(m);
    }

    // Drive simulated time forward, timer by timer, to each workload's first refresh.
    let mut first_refresh = vec![None; WORKLOADS];
    while let Some(Reverse((at, i))) = timers.pop() {
        let m = &mut machines[i];
        // A millisecond early, nothing happens.
        let early = Timestamp::from_millis(at.as_millis() - 1);
        let fx = m.handle(Input::TimerFired, early, &mut rng);
        assert_eq!(fx.start_attempt, None, "workload {i} refreshed early");
        let fx = m.handle(Input::TimerFired, at, &mut rng);
        assert!(
            fx.start_attempt.is_some(),
            "workload {i} did not refresh at {at}"
        );
        assert!(matches!(
            m.state(),
            State::Refreshing {
                expires_at: Some(_),
                ..
            }
        ));
        first_refresh[i] = Some(at);
    }

    // All inside [0.7, 0.8] of the lifetime.
    let lo = Duration::from_secs_f64(0.7 * LIFETIME as f64);
    let hi = Duration::from_secs_f64(0.8 * LIFETIME as f64);
    let mut buckets = vec![0usize; (hi - lo).as_secs() as usize + 1];
    for (i, at) in first_refresh.iter().enumerate() {
        let off = at.expect("every workload refreshed").since(t0);
        assert!(off >= lo && off <= hi, "workload {i} refreshed at {off:?}");
        buckets[(off - lo).as_secs() as usize] += 1;
    }

    // The window is 360 s: a uniform spread puts 10,000 / 360 ≈ 28 refreshes in each second.
    // No one-second bucket may hold more than 1% of the fleet (100), and the spread must
    // actually use the window (no large empty stretches).
    let expected = WORKLOADS as f64 / 360.0;
    assert!((27.0..29.0).contains(&expected));
    let max = *buckets.iter().max().unwrap();
    assert!(
        max <= WORKLOADS / 100,
        "a one-second bucket holds {max} refreshes"
    );
    let empty = buckets.iter().filter(|&&n| n == 0).count();
    assert!(empty <= 2, "{empty} empty seconds in the window");
    // Both halves of the window are used about equally.
    let first_half: usize = buckets[..180].iter().sum();
    assert!(
        (4_500..=5_500).contains(&first_half),
        "{first_half} of {WORKLOADS} in the first half"
    );
}
