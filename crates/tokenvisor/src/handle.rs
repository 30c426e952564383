//! Token handles: lock-free reads of a workload's current access token.
//!
//! A read is one `arc-swap` load and an `Arc` clone (an atomic increment): no lock, no
//! allocation, no mailbox. Only the token actor writes the slot.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokenvisor_core::{Secret, StatusRecord, Timestamp, WorkloadName};

use crate::clock::Clock;

/// A served access token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The token; `Debug` prints `"…"`.
    pub secret: Secret,
    /// `token_type` as the provider sent it.
    pub token_type: Arc<str>,
    /// When it expires.
    pub expires_at: Timestamp,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &self.secret)
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why no token can be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// No token yet; the first attempt is under way.
    Starting,
    /// Refreshes fail transiently; the next attempt is due at `next_attempt_at` (if known).
    BackingOff {
        /// When the next attempt is due.
        next_attempt_at: Option<Timestamp>,
        /// A short sanitised reason.
        reason: Arc<str>,
    },
    /// The credentials were rejected (or retries gave up): new credentials are needed.
    Unauthenticated {
        /// A short sanitised reason.
        reason: Arc<str>,
    },
    /// The workload stopped.
    Stopped,
    /// Its actor crashed past its restart budget.
    Error,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Starting => f.write_str("starting: no token yet"),
            Unavailable::BackingOff {
                next_attempt_at: Some(t),
                reason,
            } => write!(f, "backing off until {t}: {reason}"),
            Unavailable::BackingOff {
                next_attempt_at: None,
                reason,
            } => write!(f, "retrying: {reason}"),
            Unavailable::Unauthenticated { reason } => write!(f, "unauthenticated: {reason}"),
            Unavailable::Stopped => f.write_str("stopped"),
            Unavailable::Error => f.write_str("error: the workload crashed too often"),
        }
    }
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// A token is served.
    Token(AccessToken),
    /// None is, and why.
    Unavailable(Unavailable),
}

/// State shared between a workload's token actor (writer), its handles (readers) and the
/// supervisor (which keeps it across actor restarts).
#[derive(Debug)]
pub struct WorkloadShared {
    name: WorkloadName,
    slot: ArcSwap<Slot>,
    record: ArcSwapOption<StatusRecord>,
    clock: Clock,
}

impl WorkloadShared {
    /// A new shared cell, `Starting`.
    pub fn new(name: WorkloadName, clock: Clock) -> Arc<Self> {
        Arc::new(WorkloadShared {
            name,
            slot: ArcSwap::from_pointee(Slot::Unavailable(Unavailable::Starting)),
            record: ArcSwapOption::empty(),
            clock,
        })
    }

    /// Replaces the slot.
    pub fn set_slot(&self, slot: Slot) {
        self.slot.store(Arc::new(slot));
    }

    /// The slot now.
    pub fn slot(&self) -> Arc<Slot> {
        self.slot.load_full()
    }

    /// Records the latest status record (what was last sent to persistence).
    pub fn set_record(&self, record: StatusRecord) {
        self.record.store(Some(Arc::new(record)));
    }

    /// Replaces the latest status record with one shared with its journal write (one
    /// allocation per record, however many hold it).
    pub fn set_shared_record(&self, record: Arc<StatusRecord>) {
        self.record.store(Some(record));
    }

    /// The latest status record.
    pub fn record(&self) -> Option<Arc<StatusRecord>> {
        self.record.load_full()
    }

    /// The workload's name.
    pub fn name(&self) -> &WorkloadName {
        &self.name
    }
}

/// A cheap, cloneable reader of one workload's token.
#[derive(Clone)]
pub struct TokenHandle {
    shared: Arc<WorkloadShared>,
}

impl fmt::Debug for TokenHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// A borrowed view of the current token (keeps it alive while held).
#[derive(Debug, Clone)]
pub struct TokenRef(Arc<Slot>);

impl TokenRef {
    /// The access token with its expiry.
    pub fn token(&self) -> &AccessToken {
        match &*self.0 {
            Slot::Token(t) => t,
            // Constructed only from `Slot::Token`.
            Slot::Unavailable(_) => unreachable_token_ref(),
        }
    }

    /// The secret value, for an `Authorization` header. Never log it.
    pub fn expose(&self) -> &str {
        self.token().secret.expose()
    }
}

#[cold]
fn unreachable_token_ref() -> ! {
    panic!("TokenRef built from an unavailable slot")
}

impl TokenHandle {
    /// A handle over a shared cell.
    pub fn new(shared: Arc<WorkloadShared>) -> Self {
        TokenHandle { shared }
    }

    /// The workload's name.
    pub fn name(&self) -> &WorkloadName {
        &self.shared.name
    }

    /// The current token, or why there is none. A token past its expiry is not served.
    /// Lock-free and allocation-free.
    ///
    /// # Errors
    /// [`Unavailable`] says why there is no token to serve: starting, backing off until a
    /// time, unauthenticated, stopped, or failed.
    pub fn current(&self) -> Result<TokenRef, Unavailable> {
        let slot = self.shared.slot.load_full();
        match &*slot {
            Slot::Token(t) if t.expires_at > self.shared.clock.now() => Ok(TokenRef(slot)),
            Slot::Token(_) => Err(self.expired_reason()),
            Slot::Unavailable(u) => Err(u.clone()),
        }
    }

    /// Like [`TokenHandle::current`] without the expiry check: the cheapest read.
    ///
    /// # Errors
    /// As [`TokenHandle::current`], except that an expired token is still served.
    pub fn current_unchecked(&self) -> Result<TokenRef, Unavailable> {
        let slot = self.shared.slot.load_full();
        match &*slot {
            Slot::Token(_) => Ok(TokenRef(slot)),
            Slot::Unavailable(u) => Err(u.clone()),
        }
    }

    #[cold]
    fn expired_reason(&self) -> Unavailable {
        let next = self
            .shared
            .record()
            .and_then(|r| r.token.as_ref().and_then(|t| t.next_attempt_at));
        Unavailable::BackingOff {
            next_attempt_at: next,
            reason: Arc::from("the token expired and no refresh has succeeded yet"),
        }
    }

    /// The latest status record of the workload (as last sent to persistence).
    pub fn status(&self) -> Option<Arc<StatusRecord>> {
        self.shared.record()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn serves_until_expiry_then_explains() {
        let clock = Clock::anchored(Timestamp::from_millis(1_000_000));
        let shared = WorkloadShared::new(WorkloadName::new("w").unwrap(), clock);
        let h = TokenHandle::new(shared.clone());
        assert_eq!(h.current().unwrap_err(), Unavailable::Starting);
        shared.set_slot(Slot::Token(AccessToken {
            secret: Secret::from("at-1"),
            token_type: "Bearer".into(),
            expires_at: Timestamp::from_millis(1_060_000),
        }));
        assert_eq!(h.current().unwrap().expose(), "at-1");
        tokio::time::advance(std::time::Duration::from_secs(61)).await;
        assert!(matches!(
            h.current().unwrap_err(),
            Unavailable::BackingOff { .. }
        ));
        assert_eq!(h.current_unchecked().unwrap().expose(), "at-1");
        assert!(!format!("{:?}", h.current_unchecked().unwrap()).contains("at-1"));
    }
}
