//! The token actor's messages, in a module of their own so that the timer service (which
//! casts [`TokenMsg::Timer`]) and the supervisor can send them without importing the actor,
//! which itself uses the timer service.

use tokenvisor_core::machine::NotSent;
use tokenvisor_core::{AttemptId, Verdict};

/// Messages of the token actor.
#[derive(Debug)]
pub(crate) enum TokenMsg {
    /// The machine's timer (stale generations are ignored).
    Timer { generation: u64 },
    /// An attempt finished (classified; a rotated refresh token is already stored).
    AttemptDone {
        attempt: AttemptId,
        verdict: Verdict,
    },
    /// An attempt was not sent: every request slot of its endpoint stayed busy for its
    /// whole budget (a hold or a pace is an `AttemptDone` with a transient verdict). Not a
    /// failure: the machine requeues it.
    AttemptNotSent {
        attempt: AttemptId,
        not_sent: NotSent,
    },
    /// New credentials are in the credential store: try them at once.
    CredentialsReplaced,
    /// Refresh now (ignored while an attempt is in flight or unauthenticated).
    ForceRefresh,
    /// The workload is removed: persist `stopped` and stop.
    Remove,
    /// The runtime is shutting down: persist status `stopped` keeping the token state (so a
    /// restart resumes it), then stop.
    Shutdown,
    /// Internal: look at the refresh-token file for new credentials.
    #[doc(hidden)]
    PollCredentials,
    /// The timer service restarted and lost every armed timer: arm this actor's again.
    RearmTimer,
    /// Fault injection for supervision tests: panic in the handler.
    #[cfg(any(test, feature = "test-util"))]
    Crash,
}
