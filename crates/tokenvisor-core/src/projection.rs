//! The one status projection: machine state → status record, and record → where a machine
//! resumes.
//!
//! [`crate::machine`] knows nothing of status files and [`crate::status`] nothing of the
//! machine; this module depends on both, so neither imports the other. Drivers call it and
//! decide nothing themselves:
//!
//! - [`record`]: the record a token actor persists after a step ([`Occasion::Changed`]) or
//!   at shutdown ([`Occasion::Shutdown`]: status `stopped`, the token state kept so the next
//!   start resumes it).
//! - [`down_record`]: the record a supervisor persists for a workload whose actor is not
//!   running (restart budget spent → `error`; removed while down → `stopped`), keeping the
//!   token section of the last record.
//! - [`start`] and [`StatusRecord::resume`]: where a machine starts from a record found on
//!   disk or last persisted (the same rule at daemon start and after an actor restart).
//! - [`routine_refresh`]: whether a step's record may be skipped (a scheduled refresh of a
//!   healthy workload changes nothing an operator sees).
//! - [`Machine::token_section`] and [`Machine::workload_status`]: the two halves of a record.
//!   A `Requeued` machine (an attempt not sent: its endpoint's request slots busy) projects to
//!   exactly the record of the `Refreshing` it came from, so a not-sent attempt changes no
//!   record and the driver persists nothing for it.

use std::time::Duration;

use crate::classify::{Failure, FailureKind, excerpt};
use crate::machine::{Machine, Resume, Retry, State, UnauthReason};
use crate::status::{
    ErrorOutcome, LastError, SCHEMA, StatusRecord, TokenSection, TokenState, WorkloadStatus,
};
use crate::time::Timestamp;

/// The context of a record written at shutdown.
pub const SHUTDOWN_CONTEXT: &str =
    "tokenvisor stopped; the token state below is resumed on restart";

/// What the driver knows about a record that the machine does not: the file's creation
/// time, the time of this write, the writing process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// `created_at` of the status file (kept from the first record).
    pub created_at: Timestamp,
    /// When this record is written.
    pub updated_at: Timestamp,
    /// The daemon's process id.
    pub process_id: u32,
}

/// Why a token actor writes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    /// The machine stepped: its status and token state as they are.
    Changed,
    /// The daemon is stopping: status `stopped`, the token state kept for the next start.
    Shutdown,
}

/// The record of a machine.
pub fn record(machine: &Machine, occasion: Occasion, stamp: Stamp) -> StatusRecord {
    let (status, status_context) = match occasion {
        Occasion::Changed => machine.workload_status(),
        Occasion::Shutdown => (WorkloadStatus::Stopped, SHUTDOWN_CONTEXT.to_owned()),
    };
    StatusRecord {
        status,
        status_context,
        created_at: stamp.created_at,
        updated_at: stamp.updated_at,
        process_id: stamp.process_id,
        token: Some(machine.token_section()),
    }
}

/// Why a workload has no running actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// Its actor crashed past its restart budget: status `error`, left down.
    GaveUp {
        /// Restarts allowed within `window`.
        max_restarts: u32,
        /// The budget's window.
        window: Duration,
        /// The last panic, already sanitised (an excerpt).
        panic: String,
    },
    /// It was removed while down: status `stopped`.
    Removed,
    /// Cluster mode: another member runs it and this instance parks it, over a record of
    /// its own that said otherwise (a previous run's, ended by `kill -9`): status `stopped`.
    Parked,
}

/// The record of a workload whose actor is not running, keeping the token section of its
/// last record (`last`), so that a later start resumes from the machine's own account.
pub fn down_record(last: Option<&StatusRecord>, down: &Down, stamp: Stamp) -> StatusRecord {
    let (status, status_context) = match down {
        Down::GaveUp {
            max_restarts,
            window,
            panic,
        } => (
            WorkloadStatus::Error,
            format!(
                "the token actor crashed more than {max_restarts} times within {}; left down: {panic}",
                humantime::format_duration(*window)
            ),
        ),
        Down::Removed => (WorkloadStatus::Stopped, "removed".to_owned()),
        Down::Parked => (
            WorkloadStatus::Stopped,
            "run by another cluster member".to_owned(),
        ),
    };
    StatusRecord {
        status,
        status_context,
        created_at: stamp.created_at,
        updated_at: stamp.updated_at,
        process_id: stamp.process_id,
        token: last.and_then(|r| r.token.clone()),
    }
}

/// The token state a record shows (`stopped` when it has no token section).
pub fn token_state(record: &StatusRecord) -> TokenState {
    record
        .token
        .as_ref()
        .map_or(TokenState::Stopped, |t| t.state)
}

/// How a workload starts, given the record found on disk at start-up or last persisted
/// before its actor crashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Where its machine resumes.
    pub resume: Resume,
    /// `created_at` of its status file: the old file's, or `now` for a new one.
    pub created_at: Timestamp,
}

/// Where a workload starts from `record` (none: fresh, the file created `now`).
pub fn start(record: Option<&StatusRecord>, now: Timestamp) -> Start {
    Start {
        resume: record.map_or(Resume::Fresh, StatusRecord::resume),
        created_at: record.map_or(now, |r| r.created_at),
    }
}

/// A scheduled refresh of a healthy workload that still serves its token, whose last
/// record (`shown`: status and token state) says `running`/`healthy`: nothing an operator can
/// see changes, and it usually ends in milliseconds with a new record, so its start need
/// not be persisted (this halves the status writes of a fleet in steady state; a failure or
/// a new token is persisted as usual).
pub fn routine_refresh(machine: &Machine, shown: Option<(WorkloadStatus, TokenState)>) -> bool {
    matches!(
        machine.state(),
        State::Refreshing {
            retry: None,
            expires_at: Some(_),
            ..
        }
    ) && shown == Some((WorkloadStatus::Running, TokenState::Healthy))
}

impl StatusRecord {
    /// Where a machine should resume after a restart, given this record:
    /// `unauthenticated` stays so (no requests until credentials change); a run of transient
    /// failures keeps its first-failure time (the give-up ceiling keeps counting); anything
    /// else starts fresh.
    pub fn resume(&self) -> Resume {
        // The token section is the machine's own account; `status` may say `stopped` because
        // the daemon stopped, while the token state underneath is what must carry over.
        let Some(token) = self.token.as_ref() else {
            return match self.status {
                WorkloadStatus::Unauthenticated => Resume::Unauthenticated {
                    since: self.updated_at,
                    last: Failure {
                        kind: FailureKind::OauthRejected,
                        http_status: None,
                        error_code: None,
                        retry_after: None,
                        summary: excerpt(self.status_context.as_bytes()),
                    },
                    reason: UnauthReason::Rejected,
                },
                WorkloadStatus::Running
                | WorkloadStatus::AuthRetrying
                | WorkloadStatus::Starting
                | WorkloadStatus::Stopped
                | WorkloadStatus::Error => Resume::Fresh,
            };
        };
        let last = token.last_error.as_ref();
        match (token.state, last) {
            (TokenState::Unauthenticated, _) => {
                let (last, reason) = match last {
                    Some(e) => (
                        e.to_failure(),
                        match e.outcome {
                            ErrorOutcome::Permanent => UnauthReason::Rejected,
                            ErrorOutcome::Transient => UnauthReason::GaveUp,
                        },
                    ),
                    None => (
                        Failure {
                            kind: FailureKind::OauthRejected,
                            http_status: None,
                            error_code: None,
                            retry_after: None,
                            summary: excerpt(self.status_context.as_bytes()),
                        },
                        UnauthReason::Rejected,
                    ),
                };
                Resume::Unauthenticated {
                    since: token.since.unwrap_or(self.updated_at),
                    last,
                    reason,
                }
            }
            (TokenState::TransientBackoff | TokenState::Refreshing, Some(e))
                if token.attempt > 0 =>
            {
                Resume::Retrying(Retry {
                    failures: token.attempt,
                    first_failure_at: token.first_failure_at.unwrap_or(self.updated_at),
                    last: e.to_failure(),
                })
            }
            (TokenState::Healthy, _) => match token.next_attempt_at {
                Some(refresh_at) => Resume::Healthy { refresh_at },
                None => Resume::Fresh,
            },
            (TokenState::Refreshing | TokenState::TransientBackoff | TokenState::Stopped, _) => {
                Resume::Fresh
            }
        }
    }
}

impl Machine {
    /// The token state as the status file shows it.
    pub fn token_section(&self) -> TokenSection {
        let (state, expires_at, attempt, first, next, last) = match self.state() {
            State::Healthy {
                expires_at,
                refresh_at,
            } => (
                TokenState::Healthy,
                Some(*expires_at),
                0,
                None,
                Some(*refresh_at),
                None,
            ),
            // A requeued attempt (not sent: its endpoint's slots busy) shows exactly what its
            // `Refreshing` showed, so requeuing it changes no record.
            State::Refreshing {
                expires_at, retry, ..
            }
            | State::Requeued {
                expires_at, retry, ..
            } => match retry {
                Some(r) => (
                    TokenState::Refreshing,
                    *expires_at,
                    r.failures,
                    Some(r.first_failure_at),
                    None,
                    Some(LastError::from_failure(&r.last, ErrorOutcome::Transient)),
                ),
                None => (TokenState::Refreshing, *expires_at, 0, None, None, None),
            },
            State::TransientBackoff {
                retry,
                next_attempt_at,
                expires_at,
            } => (
                TokenState::TransientBackoff,
                *expires_at,
                retry.failures,
                Some(retry.first_failure_at),
                Some(*next_attempt_at),
                Some(LastError::from_failure(
                    &retry.last,
                    ErrorOutcome::Transient,
                )),
            ),
            State::Unauthenticated {
                reason,
                last,
                failures,
                first_failure_at,
                ..
            } => {
                let outcome = match reason {
                    UnauthReason::Rejected => ErrorOutcome::Permanent,
                    UnauthReason::GaveUp => ErrorOutcome::Transient,
                };
                (
                    TokenState::Unauthenticated,
                    None,
                    *failures,
                    Some(*first_failure_at),
                    None,
                    Some(LastError::from_failure(last, outcome)),
                )
            }
            State::Stopped => (TokenState::Stopped, None, 0, None, None, None),
        };
        TokenSection {
            schema: SCHEMA,
            state,
            since: Some(self.since()),
            expires_at,
            attempt,
            first_failure_at: first,
            next_attempt_at: next,
            last_error: last,
        }
    }

    /// The ToolHive status and a short, sanitised human reason.
    pub fn workload_status(&self) -> (WorkloadStatus, String) {
        match self.state() {
            State::Healthy { .. } => (WorkloadStatus::Running, String::new()),
            State::Refreshing { retry: Some(r), .. } | State::Requeued { retry: Some(r), .. } => (
                WorkloadStatus::AuthRetrying,
                format!(
                    "{}; retrying after {} transient failure(s) since {}",
                    reason(&r.last),
                    r.failures,
                    r.first_failure_at
                ),
            ),
            State::Refreshing {
                retry: None,
                expires_at: Some(_),
                ..
            }
            | State::Requeued {
                retry: None,
                expires_at: Some(_),
                ..
            } => (WorkloadStatus::Running, String::new()),
            State::Refreshing {
                retry: None,
                expires_at: None,
                ..
            }
            | State::Requeued {
                retry: None,
                expires_at: None,
                ..
            } => (WorkloadStatus::Starting, "fetching a token".to_owned()),
            State::TransientBackoff {
                retry,
                next_attempt_at,
                ..
            } => (
                WorkloadStatus::AuthRetrying,
                format!(
                    "{}; refresh failing transiently since {} ({} attempt(s)), next attempt at {}",
                    reason(&retry.last),
                    retry.first_failure_at,
                    retry.failures,
                    next_attempt_at
                ),
            ),
            State::Unauthenticated {
                reason: UnauthReason::Rejected,
                last,
                ..
            } => (
                WorkloadStatus::Unauthenticated,
                format!(
                    "the identity provider rejected the credentials ({}); supply new credentials",
                    last.summary
                ),
            ),
            State::Unauthenticated {
                reason: UnauthReason::GaveUp,
                last,
                since,
                first_failure_at,
                ..
            } => (
                WorkloadStatus::Unauthenticated,
                format!(
                    "gave up after {} of transient failures ({}); supply new credentials or force a retry with new credentials",
                    humantime::format_duration(Duration::from_secs(
                        since.since(*first_failure_at).as_secs()
                    )),
                    reason(last)
                ),
            ),
            State::Stopped => (WorkloadStatus::Stopped, "stopped".to_owned()),
        }
    }
}

/// A transient failure's summary for the status context; for a code that was not a verdict
/// (`oauth_unknown_code`), followed by how to make it final.
fn reason(f: &Failure) -> String {
    match (f.kind, f.error_code.as_deref()) {
        (FailureKind::OauthUnknownCode, Some(code)) => {
            format!("{}; {}", f.summary, crate::classify::not_final_note(code))
        }
        (FailureKind::OauthUnknownCode, None)
        | (
            FailureKind::MalformedSuccess
            | FailureKind::Redirect
            | FailureKind::RateLimited
            | FailureKind::RequestTimeout
            | FailureKind::Server5xx
            | FailureKind::OauthRetryable
            | FailureKind::Infrastructure4xx
            | FailureKind::UnexpectedStatus
            | FailureKind::Connect
            | FailureKind::Reset
            | FailureKind::Dns
            | FailureKind::Tls
            | FailureKind::Timeout
            | FailureKind::Eof
            | FailureKind::Io
            | FailureKind::OauthRejected
            | FailureKind::CredentialFile,
            _,
        ) => f.summary.clone(),
    }
}

#[cfg(test)]
mod tests;
