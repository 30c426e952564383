//! What `tokenvisor status` shows of the status files, as data and text: one entry per file
//! ([`StatusEntry`]: a record, or why it is corrupt or unreadable), whether it needs an
//! operator, its JSON form, the table, the "expiry / next attempt" cell and the reason
//! cell; [`summary`] is the fleet at a glance (`--summary`, `--watch`).
//!
//! Pure: the runtime's status store reads the files (`tokenvisor::status_view`), time is an
//! argument, and every cell is sanitised ([`crate::text`]).

pub mod summary;

use serde::Serialize;

use crate::status::{LastError, TokenState};
use crate::text::{Table, absolute, compact_duration, relative, safe_text, truncate_chars};
use crate::{StatusRecord, Timestamp, WorkloadName, WorkloadStatus};

/// The longest last-error cell in the table, in characters.
pub const ERROR_CELL_CHARS: usize = 72;

/// One listed workload's status file.
#[derive(Debug, Clone)]
pub enum StatusEntry {
    /// The file parsed.
    Ok(Box<StatusRecord>),
    /// The file exists but did not parse; why (never the file's bytes).
    Corrupt(String),
    /// The file exists but could not be read; why.
    Unreadable(String),
}

impl StatusEntry {
    /// True when this workload needs an operator (unauthenticated, error, or a file that
    /// does not read).
    #[must_use]
    pub fn needs_attention(&self) -> bool {
        match self {
            StatusEntry::Ok(r) => status_needs_attention(r.status),
            StatusEntry::Corrupt(_) | StatusEntry::Unreadable(_) => true,
        }
    }

    /// The JSON form: `{"name": …, …the record}`, or `{"name", "status": "corrupt" |
    /// "unreadable", "error"}`.
    #[must_use]
    pub fn json<'a>(&'a self, name: &'a str) -> impl Serialize + 'a {
        match self {
            StatusEntry::Ok(record) => JsonEntry::Ok { name, record },
            StatusEntry::Corrupt(error) => JsonEntry::Bad {
                name,
                status: "corrupt",
                error,
            },
            StatusEntry::Unreadable(error) => JsonEntry::Bad {
                name,
                status: "unreadable",
                error,
            },
        }
    }
}

/// True for the statuses that need an operator (unauthenticated, error).
#[must_use]
pub fn status_needs_attention(status: WorkloadStatus) -> bool {
    match status {
        WorkloadStatus::Unauthenticated | WorkloadStatus::Error => true,
        WorkloadStatus::Running
        | WorkloadStatus::AuthRetrying
        | WorkloadStatus::Starting
        | WorkloadStatus::Stopped => false,
    }
}

/// The JSON form of one entry.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonEntry<'a> {
    Ok {
        name: &'a str,
        #[serde(flatten)]
        record: &'a StatusRecord,
    },
    Bad {
        name: &'a str,
        status: &'static str,
        error: &'a str,
    },
}

/// The table of `entries` (NAME, STATUS, STATE, EXPIRY / NEXT ATTEMPT, LAST ERROR), with
/// times relative to `now`.
#[must_use]
pub fn table(entries: &[(WorkloadName, StatusEntry)], now: Timestamp) -> String {
    let mut t = Table::new(&[
        "NAME",
        "STATUS",
        "STATE",
        "EXPIRY / NEXT ATTEMPT",
        "LAST ERROR",
    ]);
    for (name, entry) in entries {
        let bad = |label: &str, reason: &str| {
            vec![
                name.as_str().to_owned(),
                label.to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                truncate_chars(reason, ERROR_CELL_CHARS),
            ]
        };
        let row = match entry {
            StatusEntry::Ok(record) => {
                let token = record.token.as_ref();
                vec![
                    name.as_str().to_owned(),
                    record.status.as_str().to_owned(),
                    token.map_or("-", |t| t.state.as_str()).to_owned(),
                    when(
                        token.map(|t| t.state),
                        token.and_then(|t| t.expires_at),
                        token.and_then(|t| t.next_attempt_at),
                        token.and_then(|t| t.since),
                        now,
                    ),
                    truncate_chars(&safe_text(&last_error(record)), ERROR_CELL_CHARS),
                ]
            }
            StatusEntry::Corrupt(reason) => bad("corrupt", reason),
            StatusEntry::Unreadable(reason) => bad("unreadable", reason),
        };
        t.row(&row);
    }
    t.render()
}

/// The time that matters in a token's state, relative to `now` and absolute: the next
/// attempt while backing off, the expiry while healthy or refreshing, since when while
/// unauthenticated or stopped; `-` when there is none.
#[must_use]
pub fn when(
    state: Option<TokenState>,
    expires_at: Option<Timestamp>,
    next_attempt_at: Option<Timestamp>,
    since: Option<Timestamp>,
    now: Timestamp,
) -> String {
    let at = |label: &str, t: Timestamp| format!("{label} {} ({})", relative(t, now), absolute(t));
    let shown = match state {
        Some(TokenState::TransientBackoff) => next_attempt_at.map(|t| match t >= now {
            true => at("next attempt", t),
            false => format!(
                "next attempt overdue by {} ({})",
                compact_duration(now.since(t)),
                absolute(t)
            ),
        }),
        Some(TokenState::Healthy | TokenState::Refreshing) => expires_at.map(|t| match t > now {
            true => at("expires", t),
            false => at("expired", t),
        }),
        Some(TokenState::Unauthenticated | TokenState::Stopped) => since.map(|t| at("since", t)),
        None => None,
    };
    shown.unwrap_or_else(|| "-".to_owned())
}

/// A record's last error, or its status context when there is none.
#[must_use]
pub fn last_error(record: &StatusRecord) -> String {
    reason(
        record.token.as_ref().and_then(|t| t.last_error.as_ref()),
        &record.status_context,
    )
}

/// The last error described, else `context`.
#[must_use]
pub fn reason(last: Option<&LastError>, context: &str) -> String {
    match last {
        Some(e) => describe_last_error(e),
        None => context.to_owned(),
    }
}

/// A last error in one line. Summaries already name the status and code (`HTTP 400
/// invalid_grant: …`) or the transport kind (`connect: …`): say only what they do not.
#[must_use]
pub fn describe_last_error(e: &LastError) -> String {
    if e.summary.is_empty() {
        let mut head = e.kind.clone();
        match (e.http_status, &e.error_code) {
            (Some(status), Some(code)) => head.push_str(&format!(" (HTTP {status} {code})")),
            (Some(status), None) => head.push_str(&format!(" (HTTP {status})")),
            (None, Some(code)) => head.push_str(&format!(" ({code})")),
            (None, None) => {}
        }
        head
    } else if e.summary.starts_with(e.kind.as_str()) {
        e.summary.clone()
    } else {
        format!("{}: {}", e.kind, e.summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ErrorOutcome;

    fn last(kind: &str, status: Option<u16>, code: Option<&str>, summary: &str) -> LastError {
        LastError {
            outcome: ErrorOutcome::Transient,
            kind: kind.into(),
            http_status: status,
            error_code: code.map(Into::into),
            retry_after_secs: None,
            summary: summary.into(),
        }
    }

    #[test]
    fn last_errors_say_only_what_the_summary_does_not() {
        let table = [
            (
                last("server_5xx", Some(503), None, ""),
                "server_5xx (HTTP 503)",
            ),
            (
                last("oauth_rejected", Some(400), Some("invalid_grant"), ""),
                "oauth_rejected (HTTP 400 invalid_grant)",
            ),
            (
                last("connect", None, None, "connect: refused"),
                "connect: refused",
            ),
            (
                last(
                    "oauth_rejected",
                    Some(400),
                    None,
                    "HTTP 400 invalid_grant: x",
                ),
                "oauth_rejected: HTTP 400 invalid_grant: x",
            ),
            (last("tls", None, Some("x"), ""), "tls (x)"),
        ];
        for (e, want) in table {
            assert_eq!(describe_last_error(&e), want);
        }
        assert_eq!(reason(None, "context"), "context");
    }

    #[test]
    fn when_names_the_time_that_matters() {
        let now = Timestamp::from_millis(1_000_000);
        let (before, after) = (
            Some(Timestamp::from_millis(940_000)),
            Some(Timestamp::from_millis(1_060_000)),
        );
        let table = [
            (Some(TokenState::TransientBackoff), "next attempt in 1m ("),
            (Some(TokenState::Healthy), "expires in 1m ("),
            (Some(TokenState::Unauthenticated), "since 1m ago ("),
            (Some(TokenState::Stopped), "since 1m ago ("),
            (None, "-"),
        ];
        for (state, want) in table {
            let got = when(state, after, after, before, now);
            assert!(got.starts_with(want), "{state:?}: {got}");
        }
        let overdue = when(Some(TokenState::TransientBackoff), None, before, None, now);
        assert!(
            overdue.starts_with("next attempt overdue by 1m ("),
            "{overdue}"
        );
        let expired = when(Some(TokenState::Refreshing), before, None, None, now);
        assert!(expired.starts_with("expired 1m ago ("), "{expired}");
        assert_eq!(when(Some(TokenState::Healthy), None, None, None, now), "-");
    }

    #[test]
    fn attention_and_json_of_files_that_do_not_read() {
        let corrupt = StatusEntry::Corrupt("line 1 column 2".into());
        assert!(corrupt.needs_attention());
        let json = serde_json::to_string(&corrupt.json("w")).unwrap();
        assert_eq!(
            json,
            r#"{"name":"w","status":"corrupt","error":"line 1 column 2"}"#
        );
        let name = WorkloadName::new("w").unwrap();
        let text = table(
            &[(name, StatusEntry::Unreadable("cannot read: x".into()))],
            Timestamp::from_millis(0),
        );
        assert!(text.contains("w     unreadable  -      -"), "{text}");
    }
}
