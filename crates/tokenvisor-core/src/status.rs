//! The on-disk status record, compatible with ToolHive's workload status file and extended
//! with a versioned `token` section.
//!
//! This module knows nothing of the state machine: how a machine becomes a record and how a
//! record resumes a machine is [`crate::projection`]'s.

use serde::{Deserialize, Serialize};

use crate::classify::{Failure, FailureKind};
use crate::time::Timestamp;

/// The version of the `token` section written by this build.
pub const SCHEMA: u32 = 1;

/// The workload status, as ToolHive names it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum WorkloadStatus {
    /// A valid token is being served.
    Running,
    /// Refreshes fail transiently; tokenvisor keeps retrying on its own.
    AuthRetrying,
    /// The provider rejected the credentials (or the give-up ceiling passed): new ones needed.
    Unauthenticated,
    /// No token yet.
    Starting,
    /// The workload was removed or the daemon stopped it.
    Stopped,
    /// Its actor crashed more often than its restart budget allows.
    Error,
}

impl WorkloadStatus {
    /// The snake_case name (the on-disk string, as serde writes it).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The token state machine's state, as written to disk.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum TokenState {
    /// A token is served; a refresh is scheduled.
    Healthy,
    /// One attempt is in flight.
    Refreshing,
    /// Waiting after a transient failure.
    TransientBackoff,
    /// No more requests until new credentials arrive.
    Unauthenticated,
    /// The workload was stopped.
    Stopped,
}

impl TokenState {
    /// The snake_case name (the on-disk string, as serde writes it).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Whether the last error was transient or permanent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorOutcome {
    /// Retried automatically.
    Transient,
    /// Final until new credentials arrive.
    Permanent,
}

/// The last failed attempt, as written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// Transient or permanent.
    pub outcome: ErrorOutcome,
    /// The [`FailureKind`] name (kept as a string on disk so newer kinds still parse).
    pub kind: String,
    /// The HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// The RFC 6749 code the server sent, if any.
    pub error_code: Option<String>,
    /// The server's `Retry-After`, in whole seconds (rounded up).
    pub retry_after_secs: Option<u64>,
    /// Sanitised, short.
    pub summary: String,
}

impl LastError {
    /// The disk form of a failure.
    pub fn from_failure(f: &Failure, outcome: ErrorOutcome) -> Self {
        LastError {
            outcome,
            kind: f.kind.as_str().to_owned(),
            http_status: f.http_status,
            error_code: f.error_code.clone(),
            retry_after_secs: f.retry_after.map(|d| d.as_millis().div_ceil(1000) as u64),
            summary: f.summary.clone(),
        }
    }

    /// Back to a failure (unknown kinds read as `io`).
    pub fn to_failure(&self) -> Failure {
        Failure {
            kind: FailureKind::parse(&self.kind).unwrap_or(FailureKind::Io),
            http_status: self.http_status,
            error_code: self.error_code.clone(),
            retry_after: self.retry_after_secs.map(std::time::Duration::from_secs),
            summary: self.summary.clone(),
        }
    }
}

/// The `token` section of a status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSection {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The machine's state.
    pub state: TokenState,
    /// When the machine entered this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// When the served access token expires; `null` when none is served.
    pub expires_at: Option<Timestamp>,
    /// Consecutive failed attempts (0 when healthy).
    pub attempt: u32,
    /// When the current run of failures began.
    pub first_failure_at: Option<Timestamp>,
    /// When the next attempt is due: the scheduled refresh while healthy, the end of the
    /// backoff while backing off.
    pub next_attempt_at: Option<Timestamp>,
    /// The last failure, kept until a success clears it.
    pub last_error: Option<LastError>,
}

/// One status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The ToolHive-compatible status.
    pub status: WorkloadStatus,
    /// A short human reason; sanitised; omitted when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_context: String,
    /// When the file was first written.
    pub created_at: Timestamp,
    /// When the file was last written.
    pub updated_at: Timestamp,
    /// The daemon's process id.
    #[serde(default)]
    pub process_id: u32,
    /// The token state; absent in files written by ToolHive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenSection>,
}

/// Why a status file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not JSON of the expected shape.
    #[error("not a status record: {0}")]
    Parse(#[from] serde_json::Error),
    /// The `token` section has a newer schema than this build reads.
    #[error("token schema {found} is newer than the supported {SCHEMA}")]
    Schema {
        /// The schema found.
        found: u32,
    },
}

impl StatusRecord {
    /// Pretty JSON with a trailing newline, as written to disk.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a file's bytes, checking the schema.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecordError> {
        let r: StatusRecord = serde_json::from_slice(bytes)?;
        if let Some(t) = &r.token
            && t.schema > SCHEMA
        {
            return Err(RecordError::Schema { found: t.schema });
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant of `T`, in order, has the pinned name, parses back from it, and serde
    /// writes the same string.
    fn pinned<T>(names: &[&str])
    where
        T: strum::VariantArray
            + Copy
            + std::fmt::Debug
            + PartialEq
            + Into<&'static str>
            + std::str::FromStr
            + Serialize,
        <T as std::str::FromStr>::Err: std::fmt::Debug + PartialEq,
    {
        let found: Vec<&str> = T::VARIANTS.iter().map(|&v| v.into()).collect();
        assert_eq!(found, names);
        for &v in T::VARIANTS {
            let name: &str = v.into();
            assert_eq!(name.parse::<T>(), Ok(v));
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{name}\""));
        }
    }

    /// The on-disk strings, pinned: status files are a format other programs read.
    #[test]
    fn on_disk_names_are_pinned_and_round_trip() {
        pinned::<WorkloadStatus>(&[
            "running",
            "auth_retrying",
            "unauthenticated",
            "starting",
            "stopped",
            "error",
        ]);
        pinned::<TokenState>(&[
            "healthy",
            "refreshing",
            "transient_backoff",
            "unauthenticated",
            "stopped",
        ]);
        let kinds: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "malformed_success",
                "redirect",
                "rate_limited",
                "request_timeout",
                "server_5xx",
                "oauth_retryable",
                "oauth_unknown_code",
                "infrastructure_4xx",
                "unexpected_status",
                "connect",
                "reset",
                "dns",
                "tls",
                "timeout",
                "eof",
                "io",
                "oauth_rejected",
                "credential_file"
            ]
        );
        for &k in FailureKind::ALL {
            assert_eq!(FailureKind::parse(k.as_str()), Some(k));
        }
    }

    fn sample() -> StatusRecord {
        StatusRecord {
            status: WorkloadStatus::AuthRetrying,
            status_context: "refresh failing".into(),
            created_at: Timestamp::from_millis(1_790_000_000_000),
            updated_at: Timestamp::from_millis(1_790_000_060_000),
            process_id: 42,
            token: Some(TokenSection {
                schema: SCHEMA,
                state: TokenState::TransientBackoff,
                since: Some(Timestamp::from_millis(1_790_000_060_000)),
                expires_at: None,
                attempt: 2,
                first_failure_at: Some(Timestamp::from_millis(1_790_000_000_000)),
                next_attempt_at: Some(Timestamp::from_millis(1_790_000_070_000)),
                last_error: Some(LastError {
                    outcome: ErrorOutcome::Transient,
                    kind: "infrastructure_4xx".into(),
                    http_status: Some(403),
                    error_code: None,
                    retry_after_secs: None,
                    summary: "HTTP 403 text/html: Attention Required".into(),
                }),
            }),
        }
    }

    #[test]
    fn round_trips_and_uses_the_documented_field_names() {
        let r = sample();
        let json = r.to_json();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["status"], "auth_retrying");
        assert_eq!(v["token"]["state"], "transient_backoff");
        assert_eq!(v["token"]["schema"], 1);
        assert_eq!(v["token"]["last_error"]["kind"], "infrastructure_4xx");
        assert_eq!(v["token"]["expires_at"], serde_json::Value::Null);
        assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(StatusRecord::from_json(&json).unwrap(), r);
    }

    #[test]
    fn reads_a_toolhive_file_without_token_section() {
        let json = br#"{"status":"unauthenticated","status_context":"Token retrieval failed","created_at":"2026-05-01T10:00:00.123456789Z","updated_at":"2026-05-01T10:00:00Z","process_id":0}"#;
        let r = StatusRecord::from_json(json).unwrap();
        assert_eq!(r.status, WorkloadStatus::Unauthenticated);
        assert!(r.token.is_none());
    }

    #[test]
    fn rejects_a_newer_schema() {
        let mut r = sample();
        r.token.as_mut().unwrap().schema = 2;
        assert!(matches!(
            StatusRecord::from_json(&r.to_json()),
            Err(RecordError::Schema { found: 2 })
        ));
    }
}
