//! The device authorization grant's polling decision (RFC 8628 §3.4–3.5), pure: what
//! `tokenvisor login --device` does after each answer of the token endpoint, with the time
//! as an argument.
//!
//! - The first poll waits one `interval` (the device authorization answer's, else
//!   [`DEFAULT_INTERVAL`]; never less than [`MIN_INTERVAL`], so a provider's `interval: 0`
//!   cannot turn the loop hot).
//! - `authorization_pending`: poll again after `interval`.
//! - `slow_down`: `interval` grows by [`SLOW_DOWN_STEP`] (5 s, §3.5) for this and every later
//!   poll.
//! - a transient failure (a timeout, a 5xx, a 429): poll again after `interval`; the user may
//!   still be approving, and the device code stays valid until it expires.
//! - `access_denied`, `expired_token`, any other final answer: stop, with the reason.
//! - the device code's lifetime (`expires_in`) is a hard end: a poll that would start at or
//!   after it is not made ([`Stop::Expired`]).

use std::time::Duration;

use crate::time::Timestamp;

/// The interval when the provider gives none (RFC 8628 §3.2).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest interval honoured, whatever the provider says.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How much `slow_down` adds to the interval (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// The longest interval (a provider asking for more is capped: the code would expire first
/// anyway).
pub const MAX_INTERVAL: Duration = Duration::from_secs(300);

/// What one poll of the token endpoint answered, as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollAnswer {
    /// Tokens were issued.
    Token,
    /// `authorization_pending`: the user has not finished yet.
    Pending,
    /// `slow_down`: poll less often.
    SlowDown,
    /// `access_denied`: the user refused.
    Denied,
    /// `expired_token`: the device code expired.
    Expired,
    /// A failure worth another poll (timeout, 5xx, 429): the code may still be approved.
    Transient,
    /// Any other final answer (`invalid_client`, `invalid_grant`, …), with its error code or
    /// a short summary.
    Rejected(String),
}

impl PollAnswer {
    /// The answer for an error code of a token-endpoint answer that was not a success.
    /// `transient`: the classifier judged the failure transient (a transport failure, a
    /// 5xx, a 429); the RFC 8628 codes win over that judgement.
    pub fn from_error(code: Option<&str>, transient: bool, summary: &str) -> Self {
        match code {
            Some("authorization_pending") => PollAnswer::Pending,
            Some("slow_down") => PollAnswer::SlowDown,
            Some("access_denied") => PollAnswer::Denied,
            Some("expired_token") => PollAnswer::Expired,
            Some(_) | None if transient => PollAnswer::Transient,
            Some(code) => PollAnswer::Rejected(code.to_owned()),
            None => PollAnswer::Rejected(summary.to_owned()),
        }
    }
}

/// Why polling stopped without a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The user denied the request (`access_denied`).
    Denied,
    /// The device code expired (`expired_token`, or its `expires_in` passed).
    Expired,
    /// The provider refused the request for another reason.
    Rejected(String),
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Poll again after this long.
    Wait(Duration),
    /// Tokens were issued: done.
    Done,
    /// Stop polling.
    Stop(Stop),
}

/// The polling state of one device code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePoll {
    interval: Duration,
    expires_at: Timestamp,
}

impl DevicePoll {
    /// Polling for a device code issued at `now`, with the answer's `interval` (seconds, if
    /// any) and `expires_in` (seconds).
    pub fn new(now: Timestamp, interval: Option<u64>, expires_in: u64) -> Self {
        let interval = interval.map_or(DEFAULT_INTERVAL, Duration::from_secs);
        DevicePoll {
            interval: interval.clamp(MIN_INTERVAL, MAX_INTERVAL),
            expires_at: now.plus(Duration::from_secs(expires_in)),
        }
    }

    /// The current interval between two polls.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the device code expires.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// The first step, at `now` (right after the device authorization answer).
    pub fn first(&self, now: Timestamp) -> Step {
        self.wait(now)
    }

    /// The step after a poll answered `answer` at `now`.
    pub fn next(&mut self, answer: &PollAnswer, now: Timestamp) -> Step {
        match answer {
            PollAnswer::Token => Step::Done,
            PollAnswer::Pending | PollAnswer::Transient => self.wait(now),
            PollAnswer::SlowDown => {
                self.interval = (self.interval + SLOW_DOWN_STEP).min(MAX_INTERVAL);
                self.wait(now)
            }
            PollAnswer::Denied => Step::Stop(Stop::Denied),
            PollAnswer::Expired => Step::Stop(Stop::Expired),
            PollAnswer::Rejected(why) => Step::Stop(Stop::Rejected(why.clone())),
        }
    }

    /// Wait one interval, unless the code expires before the poll would start.
    fn wait(&self, now: Timestamp) -> Step {
        match now.plus(self.interval) < self.expires_at {
            true => Step::Wait(self.interval),
            false => Step::Stop(Stop::Expired),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(T0 + secs * 1000)
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// One device code (interval 5 s, expires in 60 s) through a sequence of answers: each
    /// row is (answer, time of the answer in seconds, the expected step).
    #[test]
    fn polling_table() {
        use PollAnswer as A;
        type Row = (&'static str, Option<u64>, u64, Vec<(PollAnswer, u64, Step)>);
        let table: Vec<Row> = vec![
            (
                "pending then a token",
                Some(5),
                60,
                vec![
                    (A::Pending, 5, Step::Wait(s(5))),
                    (A::Pending, 10, Step::Wait(s(5))),
                    (A::Token, 15, Step::Done),
                ],
            ),
            (
                "slow_down adds 5 s, for good",
                Some(5),
                60,
                vec![
                    (A::SlowDown, 5, Step::Wait(s(10))),
                    (A::Pending, 15, Step::Wait(s(10))),
                    (A::SlowDown, 25, Step::Wait(s(15))),
                    (A::Pending, 40, Step::Wait(s(15))),
                ],
            ),
            (
                "the code expires before the next poll",
                Some(5),
                20,
                vec![
                    (A::Pending, 5, Step::Wait(s(5))),
                    (A::Pending, 10, Step::Wait(s(5))),
                    (A::Pending, 15, Step::Stop(Stop::Expired)),
                ],
            ),
            (
                "slow_down pushes the next poll past expiry",
                Some(5),
                14,
                vec![(A::SlowDown, 5, Step::Stop(Stop::Expired))],
            ),
            (
                "access_denied stops",
                Some(5),
                60,
                vec![(A::Denied, 5, Step::Stop(Stop::Denied))],
            ),
            (
                "expired_token stops",
                Some(5),
                600,
                vec![(A::Expired, 5, Step::Stop(Stop::Expired))],
            ),
            (
                "a transient failure polls again",
                Some(5),
                60,
                vec![
                    (A::Transient, 5, Step::Wait(s(5))),
                    (A::Token, 10, Step::Done),
                ],
            ),
            (
                "another final answer stops with it",
                Some(5),
                60,
                vec![(
                    A::Rejected("invalid_client".into()),
                    5,
                    Step::Stop(Stop::Rejected("invalid_client".into())),
                )],
            ),
            (
                "no interval: the default 5 s",
                None,
                60,
                vec![(A::Pending, 0, Step::Wait(s(5)))],
            ),
            (
                "interval 0 is raised to 1 s",
                Some(0),
                60,
                vec![(A::Pending, 0, Step::Wait(s(1)))],
            ),
            (
                "a huge interval is capped, and then outlives the code",
                Some(100_000),
                60,
                vec![(A::Pending, 0, Step::Stop(Stop::Expired))],
            ),
        ];
        for (what, interval, expires_in, rows) in table {
            let mut poll = DevicePoll::new(at(0), interval, expires_in);
            for (i, (answer, t, expected)) in rows.into_iter().enumerate() {
                assert_eq!(poll.next(&answer, at(t)), expected, "{what}: row {i}");
            }
        }
    }

    /// The first poll waits one interval; a code that expires sooner is never polled.
    #[test]
    fn first_poll() {
        assert_eq!(
            DevicePoll::new(at(0), Some(5), 60).first(at(0)),
            Step::Wait(s(5))
        );
        assert_eq!(
            DevicePoll::new(at(0), Some(5), 5).first(at(0)),
            Step::Stop(Stop::Expired)
        );
        let poll = DevicePoll::new(at(0), Some(7), 60);
        assert_eq!((poll.interval(), poll.expires_at()), (s(7), at(60)));
    }

    /// Error codes → answers: the RFC 8628 codes whatever the classifier said, then
    /// transient failures, then the rest as final.
    #[test]
    fn answers_from_error_codes() {
        use PollAnswer as A;
        let table = [
            (Some("authorization_pending"), false, A::Pending),
            (Some("authorization_pending"), true, A::Pending),
            (Some("slow_down"), false, A::SlowDown),
            (Some("access_denied"), false, A::Denied),
            (Some("expired_token"), false, A::Expired),
            (Some("temporarily_unavailable"), true, A::Transient),
            (None, true, A::Transient),
            (
                Some("invalid_grant"),
                false,
                A::Rejected("invalid_grant".into()),
            ),
            (None, false, A::Rejected("HTTP 400".into())),
        ];
        for (code, transient, expected) in table {
            assert_eq!(
                PollAnswer::from_error(code, transient, "HTTP 400"),
                expected,
                "{code:?} {transient}"
            );
        }
    }
}
