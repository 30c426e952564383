//! Seeded probabilistic faults ("chaos") for soak runs.
//!
//! With chaos on, every `/token` request that no scripted fault applies to draws once: the
//! n-th request (n counted from when chaos was switched on) gets outcome
//! [`Chaos::draw`]`(n)`, a pure function of the seed and n. The outcomes are exclusive:
//! the rates are the probabilities of each, and the rest answers normally. Which request gets
//! which n depends on arrival order, so a concurrent run is not replayable request by request,
//! but the sequence of outcomes (and so their counts) is fixed by the seed.
//!
//! Outcomes are counted with the existing counters: the fault kinds
//! (`html_forbidden`, `too_many_requests`, `server_error`, `delay`, `drop`) and, for a
//! revocation, `revocations` (then `invalid_grant` and `revoked` for the request itself). The
//! clients whose grants chaos revoked are listed by
//! [`IdpServer::chaos_revoked_clients`](crate::IdpServer::chaos_revoked_clients), so a soak
//! run can tell a legitimate `unauthenticated` from a bug.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crate::fault::{Fault, RetryAfter};

/// The chaos settings: a seed and per-request probabilities.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chaos {
    /// Seeds the draws.
    pub seed: u64,
    /// 403 with an HTML WAF page ([`Fault::HtmlForbidden`]).
    pub html_403: f64,
    /// 429 ([`Fault::TooManyRequests`]), with [`Chaos::retry_after_secs`].
    pub too_many_requests: f64,
    /// The `Retry-After` of chaos 429s, in seconds; `None` sends no header.
    pub retry_after_secs: Option<u64>,
    /// 500 with an HTML page ([`Fault::ServerError`]).
    pub server_error: f64,
    /// Wait [`Chaos::delay_for`], then answer normally ([`Fault::Delay`]).
    pub delay: f64,
    /// How long a chaos delay lasts.
    pub delay_for: Duration,
    /// Close the connection without an answer ([`Fault::Drop`]).
    pub drop: f64,
    /// Revoke every grant of the requesting client, then answer normally (which, for a
    /// refresh grant, is `invalid_grant`: the client is legitimately unauthenticated).
    pub revoke: f64,
}

/// What one draw decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChaosOutcome {
    /// Answer normally.
    Normal,
    /// [`Chaos::html_403`].
    Html403,
    /// [`Chaos::too_many_requests`].
    TooManyRequests,
    /// [`Chaos::server_error`].
    ServerError,
    /// [`Chaos::delay`].
    Delay,
    /// [`Chaos::drop`].
    Drop,
    /// [`Chaos::revoke`].
    Revoke,
}

impl Chaos {
    /// The outcome of draw number `n` (pure: the same seed and `n` give the same outcome).
    pub fn draw(&self, n: u64) -> ChaosOutcome {
        let u = unit(self.seed, n);
        let table = [
            (self.html_403, ChaosOutcome::Html403),
            (self.too_many_requests, ChaosOutcome::TooManyRequests),
            (self.server_error, ChaosOutcome::ServerError),
            (self.delay, ChaosOutcome::Delay),
            (self.drop, ChaosOutcome::Drop),
            (self.revoke, ChaosOutcome::Revoke),
        ];
        let mut edge = 0.0;
        for (rate, outcome) in table {
            edge += rate;
            if u < edge {
                return outcome;
            }
        }
        ChaosOutcome::Normal
    }

    /// Checks that every rate is in `[0, 1]` and that they sum to at most 1.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("html_403", self.html_403),
            ("too_many_requests", self.too_many_requests),
            ("server_error", self.server_error),
            ("delay", self.delay),
            ("drop", self.drop),
            ("revoke", self.revoke),
        ];
        let mut sum = 0.0;
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} = {rate}: a probability is between 0 and 1"));
            }
            sum += rate;
        }
        if sum > 1.0 + 1e-9 {
            return Err(format!(
                "the rates sum to {sum}: the outcomes are exclusive, so at most 1"
            ));
        }
        Ok(())
    }

    /// The fault an outcome stands for (`None` for [`ChaosOutcome::Normal`] and
    /// [`ChaosOutcome::Revoke`], which answer normally).
    pub fn fault(&self, outcome: ChaosOutcome) -> Option<Fault> {
        match outcome {
            ChaosOutcome::Normal | ChaosOutcome::Revoke => None,
            ChaosOutcome::Html403 => Some(Fault::HtmlForbidden),
            ChaosOutcome::TooManyRequests => Some(Fault::TooManyRequests {
                retry_after: self.retry_after_secs.map(RetryAfter::Seconds),
                slow_down_body: false,
            }),
            ChaosOutcome::ServerError => Some(Fault::ServerError(500)),
            ChaosOutcome::Delay => Some(Fault::Delay(self.delay_for)),
            ChaosOutcome::Drop => Some(Fault::Drop),
        }
    }
}

/// The server's chaos setting, its draw counter and the clients it revoked.
#[derive(Debug, Default)]
pub(crate) struct ChaosSlot {
    /// Whether chaos is on (the hot path reads only this when it is off).
    on: AtomicBool,
    current: RwLock<Option<Arc<Chaos>>>,
    /// The number of the next draw.
    draws: AtomicU64,
    /// Clients whose grants chaos revoked (kept when chaos is switched off).
    revoked: Mutex<BTreeSet<String>>,
}

impl ChaosSlot {
    /// Switches chaos on (numbering draws from 0 again) or off.
    pub(crate) fn set(&self, chaos: Option<Chaos>) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        self.draws.store(0, Ordering::Relaxed);
        self.on.store(chaos.is_some(), Ordering::Release);
        *current = chaos.map(Arc::new);
    }

    /// The current setting.
    pub(crate) fn get(&self) -> Option<Chaos> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_deref()
            .cloned()
    }

    /// One draw, when chaos is on.
    pub(crate) fn draw(&self) -> Option<(ChaosOutcome, Arc<Chaos>)> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let chaos = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        Some((chaos.draw(n), chaos))
    }

    /// Remembers a client whose grants chaos revoked.
    pub(crate) fn note_revoked(&self, client_id: &str) {
        let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        if !revoked.contains(client_id) {
            revoked.insert(client_id.to_owned());
        }
    }

    /// Clients whose grants chaos revoked, sorted.
    pub(crate) fn revoked(&self) -> Vec<String> {
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// A uniform number in `[0, 1)` from `(seed, n)`: SplitMix64 of their mix, 53 bits.
fn unit(seed: u64, n: u64) -> f64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn moderate(seed: u64) -> Chaos {
        Chaos {
            seed,
            html_403: 0.05,
            too_many_requests: 0.02,
            retry_after_secs: Some(1),
            server_error: 0.05,
            delay: 0.03,
            delay_for: Duration::from_millis(10),
            drop: 0.01,
            revoke: 0.004,
        }
    }

    fn tally(chaos: &Chaos, draws: u64) -> BTreeMap<ChaosOutcome, u64> {
        let mut out = BTreeMap::new();
        for n in 0..draws {
            *out.entry(chaos.draw(n)).or_default() += 1;
        }
        out
    }

    #[test]
    fn draws_are_deterministic_by_seed() {
        let a = moderate(7);
        let seq = |c: &Chaos| (0..5_000).map(|n| c.draw(n)).collect::<Vec<_>>();
        assert_eq!(seq(&a), seq(&a.clone()));
        assert_ne!(seq(&a), seq(&moderate(8)));
        assert!((0.0..1.0).contains(&unit(u64::MAX, u64::MAX)));
    }

    #[test]
    fn frequencies_follow_the_rates() {
        let chaos = moderate(42);
        let n = 200_000;
        let t = tally(&chaos, n);
        let share = |o: ChaosOutcome| t.get(&o).copied().unwrap_or(0) as f64 / n as f64;
        let close = |o: ChaosOutcome, rate: f64| {
            let got = share(o);
            // Binomial standard deviation at n = 200k is below 0.0005 for these rates.
            assert!((got - rate).abs() < 0.003, "{o:?}: {got} vs {rate}");
        };
        close(ChaosOutcome::Html403, 0.05);
        close(ChaosOutcome::TooManyRequests, 0.02);
        close(ChaosOutcome::ServerError, 0.05);
        close(ChaosOutcome::Delay, 0.03);
        close(ChaosOutcome::Drop, 0.01);
        close(ChaosOutcome::Revoke, 0.004);
        close(ChaosOutcome::Normal, 1.0 - 0.164);
    }

    #[test]
    fn calm_and_certain_extremes() {
        let calm = Chaos::default();
        assert!(
            tally(&calm, 10_000)
                .keys()
                .all(|o| *o == ChaosOutcome::Normal)
        );
        let always_revoke = Chaos {
            revoke: 1.0,
            ..Chaos::default()
        };
        assert!(
            tally(&always_revoke, 10_000)
                .keys()
                .all(|o| *o == ChaosOutcome::Revoke)
        );
    }

    #[test]
    fn validation_refuses_impossible_rates() {
        assert!(moderate(1).validate().is_ok());
        assert!(Chaos::default().validate().is_ok());
        let negative = Chaos {
            drop: -0.1,
            ..Chaos::default()
        };
        assert!(negative.validate().is_err());
        let nan = Chaos {
            delay: f64::NAN,
            ..Chaos::default()
        };
        assert!(nan.validate().is_err());
        let too_much = Chaos {
            html_403: 0.6,
            server_error: 0.6,
            ..Chaos::default()
        };
        assert!(too_much.validate().unwrap_err().contains("sum"));
    }

    #[test]
    fn outcomes_map_to_faults() {
        let chaos = moderate(1);
        assert_eq!(chaos.fault(ChaosOutcome::Normal), None);
        assert_eq!(chaos.fault(ChaosOutcome::Revoke), None);
        assert_eq!(
            chaos.fault(ChaosOutcome::TooManyRequests),
            Some(Fault::TooManyRequests {
                retry_after: Some(RetryAfter::Seconds(1)),
                slow_down_body: false
            })
        );
        assert_eq!(
            chaos.fault(ChaosOutcome::Delay),
            Some(Fault::Delay(Duration::from_millis(10)))
        );
    }
}
