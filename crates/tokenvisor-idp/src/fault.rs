//! Scriptable faults: what `/token` answers instead of, or on top of, a normal answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::IdpError;

/// A `Retry-After` value sent with a 429 or 503 fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Delta-seconds: `Retry-After: 120`.
    Seconds(u64),
    /// An HTTP-date: `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT` (whole seconds).
    Date(SystemTime),
}

impl RetryAfter {
    /// The header value as sent on the wire.
    pub fn header_value(&self) -> String {
        match self {
            Self::Seconds(secs) => secs.to_string(),
            Self::Date(at) => httpdate::fmt_http_date(*at),
        }
    }
}

/// What the token endpoint does instead of (or on top of) answering normally.
///
/// Faults are checked before client authentication (like a WAF or a gateway in front of the
/// IdP would act), using the client id the request claims. Only `/token` is affected.
/// Faults that answer abnormally never touch grant state: a refresh token presented to a
/// faulted request stays valid. `Delay` and `SlowBody` answer normally, so they do process
/// the grant (see each variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 403 with a `text/html` WAF-like page.
    HtmlForbidden,
    /// 403 with `{"message":"blocked"}` (JSON without an `error` member).
    JsonForbiddenNoError,
    /// 429, with an optional `Retry-After`.
    TooManyRequests {
        /// The `Retry-After` header, if any.
        retry_after: Option<RetryAfter>,
        /// Answer `{"error":"slow_down"}` (JSON) instead of a plain-text body.
        slow_down_body: bool,
    },
    /// 503 with an HTML body, with an optional `Retry-After`.
    ServiceUnavailable {
        /// The `Retry-After` header, if any.
        retry_after: Option<RetryAfter>,
    },
    /// The given status (meant for 5xx) with an HTML body.
    ServerError(u16),
    /// The given status (meant for 5xx) with an empty body.
    ServerErrorEmpty(u16),
    /// A structured RFC 6749 error: JSON `{"error":code,"error_description":...}`.
    OAuthError {
        /// The HTTP status (400 or 401 for real errors; anything can be sent).
        status: u16,
        /// The `error` code, e.g. `invalid_grant` or `temporarily_unavailable`.
        code: String,
    },
    /// The same as [`Fault::OAuthError`] with a form-encoded body
    /// (`application/x-www-form-urlencoded`, `error=...&error_description=...`).
    OAuthErrorForm {
        /// The HTTP status.
        status: u16,
        /// The `error` code.
        code: String,
    },
    /// 200 with a `text/html` login page.
    OkHtml,
    /// 200 with `{"foo":1}` (JSON without `access_token`).
    OkJsonWithoutToken,
    /// 200 with an RFC 6749 error body `{"error":code,...}` (some providers do this).
    OkError {
        /// The `error` code.
        code: String,
    },
    /// 302 to `/login` on the same server (which answers 200 HTML).
    Redirect,
    /// Wait, then answer normally. If the client goes away during the wait, the request is
    /// abandoned before the grant is processed (no rotation happens).
    Delay(Duration),
    /// Process the request normally, send the headers at once, then trickle the body
    /// `chunk_bytes` at a time every `interval`. The grant *is* processed: with rotation on,
    /// a client that gives up mid-body has lost the rotated refresh token.
    SlowBody {
        /// Bytes per chunk (at least 1).
        chunk_bytes: usize,
        /// Pause before each chunk.
        interval: Duration,
    },
    /// Close the connection without sending any response (with HTTP/2, the whole connection
    /// and every stream on it).
    Drop,
    /// An HTML error page of `bytes` bytes with the given status.
    HugeBody {
        /// The HTTP status.
        status: u16,
        /// The body size in bytes.
        bytes: usize,
    },
    /// Any answer, as given: what a framework, a gateway or a vendor sends in its own shape
    /// (Spring Boot's JSON 403, Slack's 200 `"ok":false`, GitHub's rate-limit headers).
    Raw {
        /// The HTTP status.
        status: u16,
        /// The `Content-Type` header, if any.
        content_type: Option<String>,
        /// Extra headers (name, value); invalid ones are skipped.
        headers: Vec<(String, String)>,
        /// The body.
        body: String,
    },
}

/// The kind of a [`Fault`], without its parameters (for counters).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum FaultKind {
    /// [`Fault::HtmlForbidden`].
    HtmlForbidden,
    /// [`Fault::JsonForbiddenNoError`].
    JsonForbiddenNoError,
    /// [`Fault::TooManyRequests`].
    TooManyRequests,
    /// [`Fault::ServiceUnavailable`].
    ServiceUnavailable,
    /// [`Fault::ServerError`].
    ServerError,
    /// [`Fault::ServerErrorEmpty`].
    ServerErrorEmpty,
    /// [`Fault::OAuthError`].
    #[strum(serialize = "oauth_error")]
    OAuthError,
    /// [`Fault::OAuthErrorForm`].
    #[strum(serialize = "oauth_error_form")]
    OAuthErrorForm,
    /// [`Fault::OkHtml`].
    OkHtml,
    /// [`Fault::OkJsonWithoutToken`].
    OkJsonWithoutToken,
    /// [`Fault::OkError`].
    OkError,
    /// [`Fault::Redirect`].
    Redirect,
    /// [`Fault::Delay`].
    Delay,
    /// [`Fault::SlowBody`].
    SlowBody,
    /// [`Fault::Drop`].
    Drop,
    /// [`Fault::HugeBody`].
    HugeBody,
    /// [`Fault::Raw`].
    Raw,
}

impl FaultKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [FaultKind] = <FaultKind as strum::VariantArray>::VARIANTS;

    /// The snake_case name used in counters and in the admin JSON (`"kind"`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl Fault {
    /// This fault's kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Self::HtmlForbidden => FaultKind::HtmlForbidden,
            Self::JsonForbiddenNoError => FaultKind::JsonForbiddenNoError,
            Self::TooManyRequests { .. } => FaultKind::TooManyRequests,
            Self::ServiceUnavailable { .. } => FaultKind::ServiceUnavailable,
            Self::ServerError(_) => FaultKind::ServerError,
            Self::ServerErrorEmpty(_) => FaultKind::ServerErrorEmpty,
            Self::OAuthError { .. } => FaultKind::OAuthError,
            Self::OAuthErrorForm { .. } => FaultKind::OAuthErrorForm,
            Self::OkHtml => FaultKind::OkHtml,
            Self::OkJsonWithoutToken => FaultKind::OkJsonWithoutToken,
            Self::OkError { .. } => FaultKind::OkError,
            Self::Redirect => FaultKind::Redirect,
            Self::Delay(_) => FaultKind::Delay,
            Self::SlowBody { .. } => FaultKind::SlowBody,
            Self::Drop => FaultKind::Drop,
            Self::HugeBody { .. } => FaultKind::HugeBody,
            Self::Raw { .. } => FaultKind::Raw,
        }
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FaultScope {
    /// Every request (unless a client-scoped fault applies first).
    Global,
    /// Requests claiming this client id. A client-scoped fault takes precedence over a global
    /// one; only the fault that was applied is consumed.
    Client(String),
}

/// How long a fault stays armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// Until cleared.
    Always,
    /// For the next N requests it applies to, then it clears itself. `Next(0)` clears the scope.
    Next(u32),
}

/// A fault to arm: the library's `set_fault` arguments as one value, with a JSON form used by
/// `POST /admin/fault` and the binary's `--fault` flag:
///
/// ```json
/// {"client": "client-0", "times": 2,
///  "fault": {"kind": "too_many_requests", "retry_after": 30, "slow_down_body": true}}
/// ```
///
/// `client` absent means global; `times` absent means always. `fault.kind` is a
/// [`FaultKind::as_str`] name; parameters: `retry_after` (seconds, `{"date": "<HTTP-date>"}` or
/// `{"date_in_secs": N}`), `status`, `code`, `ms` (delay), `chunk_bytes` and `interval_ms`
/// (slow body), `bytes` (huge body), `slow_down_body`, and for `raw`: `content_type`,
/// `headers` (`[["name", "value"], …]`) and `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultCommand {
    /// Where it applies.
    pub scope: FaultScope,
    /// What happens.
    pub fault: Fault,
    /// For how long.
    pub times: Times,
}

impl FaultCommand {
    /// Parses the JSON form.
    pub fn from_json(json: &str) -> Result<Self, IdpError> {
        let dto: CommandDto =
            serde_json::from_str(json).map_err(|e| IdpError::InvalidFault(e.to_string()))?;
        let fault = dto.fault.into_fault().map_err(IdpError::InvalidFault)?;
        Ok(Self {
            scope: dto.client.map_or(FaultScope::Global, FaultScope::Client),
            fault,
            times: dto.times.map_or(Times::Always, Times::Next),
        })
    }

    /// Renders the JSON form.
    pub fn to_json(&self) -> String {
        let dto = CommandDto {
            client: match &self.scope {
                FaultScope::Global => None,
                FaultScope::Client(id) => Some(id.clone()),
            },
            times: match self.times {
                Times::Always => None,
                Times::Next(n) => Some(n),
            },
            fault: FaultDto::from_fault(&self.fault),
        };
        serde_json::to_string(&dto).unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandDto {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    times: Option<u32>,
    fault: FaultDto,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RetryAfterDto {
    Seconds(u64),
    Date { date: String },
    DateIn { date_in_secs: u64 },
}

impl RetryAfterDto {
    fn into_retry_after(self) -> Result<RetryAfter, String> {
        match self {
            Self::Seconds(secs) => Ok(RetryAfter::Seconds(secs)),
            Self::Date { date } => httpdate::parse_http_date(&date)
                .map(RetryAfter::Date)
                .map_err(|e| format!("bad HTTP-date {date:?}: {e}")),
            Self::DateIn { date_in_secs } => Ok(RetryAfter::Date(
                SystemTime::now() + Duration::from_secs(date_in_secs),
            )),
        }
    }

    fn from_retry_after(ra: RetryAfter) -> Self {
        match ra {
            RetryAfter::Seconds(secs) => Self::Seconds(secs),
            RetryAfter::Date(at) => Self::Date {
                date: httpdate::fmt_http_date(at),
            },
        }
    }
}

fn default_500() -> u16 {
    500
}
fn default_400() -> u16 {
    400
}
fn default_403() -> u16 {
    403
}
fn default_chunk() -> usize {
    4
}
fn default_interval_ms() -> u64 {
    100
}
fn default_huge() -> usize {
    8 << 20
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum FaultDto {
    HtmlForbidden,
    JsonForbiddenNoError,
    TooManyRequests {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<RetryAfterDto>,
        #[serde(default)]
        slow_down_body: bool,
    },
    ServiceUnavailable {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<RetryAfterDto>,
    },
    ServerError {
        #[serde(default = "default_500")]
        status: u16,
    },
    ServerErrorEmpty {
        #[serde(default = "default_500")]
        status: u16,
    },
    #[serde(rename = "oauth_error")]
    OAuthError {
        #[serde(default = "default_400")]
        status: u16,
        code: String,
    },
    #[serde(rename = "oauth_error_form")]
    OAuthErrorForm {
        #[serde(default = "default_400")]
        status: u16,
        code: String,
    },
    OkHtml,
    OkJsonWithoutToken,
    OkError {
        code: String,
    },
    Redirect,
    Delay {
        ms: u64,
    },
    SlowBody {
        #[serde(default = "default_chunk")]
        chunk_bytes: usize,
        #[serde(default = "default_interval_ms")]
        interval_ms: u64,
    },
    Drop,
    HugeBody {
        #[serde(default = "default_403")]
        status: u16,
        #[serde(default = "default_huge")]
        bytes: usize,
    },
    Raw {
        #[serde(default = "default_400")]
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<(String, String)>,
        #[serde(default)]
        body: String,
    },
}

impl FaultDto {
    fn into_fault(self) -> Result<Fault, String> {
        let ra = |r: Option<RetryAfterDto>| r.map(RetryAfterDto::into_retry_after).transpose();
        Ok(match self {
            Self::HtmlForbidden => Fault::HtmlForbidden,
            Self::JsonForbiddenNoError => Fault::JsonForbiddenNoError,
            Self::TooManyRequests {
                retry_after,
                slow_down_body,
            } => Fault::TooManyRequests {
                retry_after: ra(retry_after)?,
                slow_down_body,
            },
            Self::ServiceUnavailable { retry_after } => Fault::ServiceUnavailable {
                retry_after: ra(retry_after)?,
            },
            Self::ServerError { status } => Fault::ServerError(status),
            Self::ServerErrorEmpty { status } => Fault::ServerErrorEmpty(status),
            Self::OAuthError { status, code } => Fault::OAuthError { status, code },
            Self::OAuthErrorForm { status, code } => Fault::OAuthErrorForm { status, code },
            Self::OkHtml => Fault::OkHtml,
            Self::OkJsonWithoutToken => Fault::OkJsonWithoutToken,
            Self::OkError { code } => Fault::OkError { code },
            Self::Redirect => Fault::Redirect,
            Self::Delay { ms } => Fault::Delay(Duration::from_millis(ms)),
            Self::SlowBody {
                chunk_bytes,
                interval_ms,
            } => Fault::SlowBody {
                chunk_bytes,
                interval: Duration::from_millis(interval_ms),
            },
            Self::Drop => Fault::Drop,
            Self::HugeBody { status, bytes } => Fault::HugeBody { status, bytes },
            Self::Raw {
                status,
                content_type,
                headers,
                body,
            } => Fault::Raw {
                status,
                content_type,
                headers,
                body,
            },
        })
    }

    fn from_fault(fault: &Fault) -> Self {
        let ra = |r: &Option<RetryAfter>| r.map(RetryAfterDto::from_retry_after);
        let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match fault {
            Fault::HtmlForbidden => Self::HtmlForbidden,
            Fault::JsonForbiddenNoError => Self::JsonForbiddenNoError,
            Fault::TooManyRequests {
                retry_after,
                slow_down_body,
            } => Self::TooManyRequests {
                retry_after: ra(retry_after),
                slow_down_body: *slow_down_body,
            },
            Fault::ServiceUnavailable { retry_after } => Self::ServiceUnavailable {
                retry_after: ra(retry_after),
            },
            Fault::ServerError(status) => Self::ServerError { status: *status },
            Fault::ServerErrorEmpty(status) => Self::ServerErrorEmpty { status: *status },
            Fault::OAuthError { status, code } => Self::OAuthError {
                status: *status,
                code: code.clone(),
            },
            Fault::OAuthErrorForm { status, code } => Self::OAuthErrorForm {
                status: *status,
                code: code.clone(),
            },
            Fault::OkHtml => Self::OkHtml,
            Fault::OkJsonWithoutToken => Self::OkJsonWithoutToken,
            Fault::OkError { code } => Self::OkError { code: code.clone() },
            Fault::Redirect => Self::Redirect,
            Fault::Delay(d) => Self::Delay { ms: ms(d) },
            Fault::SlowBody {
                chunk_bytes,
                interval,
            } => Self::SlowBody {
                chunk_bytes: *chunk_bytes,
                interval_ms: ms(interval),
            },
            Fault::Drop => Self::Drop,
            Fault::HugeBody { status, bytes } => Self::HugeBody {
                status: *status,
                bytes: *bytes,
            },
            Fault::Raw {
                status,
                content_type,
                headers,
                body,
            } => Self::Raw {
                status: *status,
                content_type: content_type.clone(),
                headers: headers.clone(),
                body: body.clone(),
            },
        }
    }
}

/// One armed fault.
#[derive(Debug, Clone)]
struct Armed {
    fault: Fault,
    /// `None` = always.
    remaining: Option<u32>,
}

impl Armed {
    fn times(&self) -> Times {
        self.remaining.map_or(Times::Always, Times::Next)
    }
}

#[derive(Debug, Default)]
struct Slots {
    global: Option<Armed>,
    clients: HashMap<String, Armed>,
}

impl Slots {
    fn is_empty(&self) -> bool {
        self.global.is_none() && self.clients.is_empty()
    }
}

/// The armed faults. The hot path reads one atomic flag when nothing is armed.
#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    armed: AtomicBool,
    slots: Mutex<Slots>,
}

impl FaultTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set(&self, scope: FaultScope, fault: Fault, times: Times) {
        let mut slots = self.lock();
        let armed = match times {
            Times::Next(0) => None,
            Times::Next(n) => Some(Armed {
                fault,
                remaining: Some(n),
            }),
            Times::Always => Some(Armed {
                fault,
                remaining: None,
            }),
        };
        match scope {
            FaultScope::Global => slots.global = armed,
            FaultScope::Client(id) => match armed {
                Some(armed) => {
                    slots.clients.insert(id, armed);
                }
                None => {
                    slots.clients.remove(&id);
                }
            },
        }
        self.armed.store(!slots.is_empty(), Ordering::Release);
    }

    pub(crate) fn clear(&self, scope: &FaultScope) {
        let mut slots = self.lock();
        match scope {
            FaultScope::Global => slots.global = None,
            FaultScope::Client(id) => {
                slots.clients.remove(id);
            }
        }
        self.armed.store(!slots.is_empty(), Ordering::Release);
    }

    pub(crate) fn clear_all(&self) {
        let mut slots = self.lock();
        *slots = Slots::default();
        self.armed.store(false, Ordering::Release);
    }

    /// The fault that applies to a request claiming `client`, consuming one use of it.
    pub(crate) fn take(&self, client: Option<&str>) -> Option<Fault> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let mut slots = self.lock();
        let fault = match client.and_then(|id| slots.clients.get_mut(id).map(|a| (id, a))) {
            Some((id, armed)) => {
                let fault = armed.fault.clone();
                if consume(armed) {
                    slots.clients.remove(id);
                }
                Some(fault)
            }
            None => match slots.global.as_mut() {
                Some(armed) => {
                    let fault = armed.fault.clone();
                    if consume(armed) {
                        slots.global = None;
                    }
                    Some(fault)
                }
                None => None,
            },
        };
        self.armed.store(!slots.is_empty(), Ordering::Release);
        fault
    }

    pub(crate) fn snapshot(&self) -> Vec<FaultCommand> {
        let slots = self.lock();
        let mut out: Vec<FaultCommand> = slots
            .global
            .iter()
            .map(|a| FaultCommand {
                scope: FaultScope::Global,
                fault: a.fault.clone(),
                times: a.times(),
            })
            .collect();
        let mut clients: Vec<_> = slots.clients.iter().collect();
        clients.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(clients.into_iter().map(|(id, a)| FaultCommand {
            scope: FaultScope::Client(id.clone()),
            fault: a.fault.clone(),
            times: a.times(),
        }));
        out
    }
}

/// Uses one application of an armed fault; true when it is now exhausted.
fn consume(armed: &mut Armed) -> bool {
    match armed.remaining.as_mut() {
        None => false,
        Some(n) => {
            *n = n.saturating_sub(1);
            *n == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_json_round_trips() {
        let cmds = [
            FaultCommand {
                scope: FaultScope::Client("c".into()),
                fault: Fault::TooManyRequests {
                    retry_after: Some(RetryAfter::Seconds(7)),
                    slow_down_body: true,
                },
                times: Times::Next(2),
            },
            FaultCommand {
                scope: FaultScope::Global,
                fault: Fault::SlowBody {
                    chunk_bytes: 3,
                    interval: Duration::from_millis(250),
                },
                times: Times::Always,
            },
            FaultCommand {
                scope: FaultScope::Global,
                fault: Fault::OAuthErrorForm {
                    status: 401,
                    code: "invalid_client".into(),
                },
                times: Times::Always,
            },
        ];
        for cmd in cmds {
            let json = cmd.to_json();
            assert_eq!(FaultCommand::from_json(&json).unwrap(), cmd, "{json}");
        }
    }

    #[test]
    fn command_json_defaults_and_dates() {
        let cmd = FaultCommand::from_json(
            r#"{"fault":{"kind":"service_unavailable","retry_after":{"date":"Wed, 21 Oct 2015 07:28:00 GMT"}}}"#,
        )
        .unwrap();
        assert_eq!(cmd.scope, FaultScope::Global);
        assert_eq!(cmd.times, Times::Always);
        let Fault::ServiceUnavailable {
            retry_after: Some(ra),
        } = cmd.fault
        else {
            panic!("wrong fault {:?}", cmd.fault);
        };
        assert_eq!(ra.header_value(), "Wed, 21 Oct 2015 07:28:00 GMT");
        let huge = FaultCommand::from_json(r#"{"fault":{"kind":"huge_body"}}"#).unwrap();
        assert_eq!(
            huge.fault,
            Fault::HugeBody {
                status: 403,
                bytes: 8 << 20
            }
        );
        assert!(FaultCommand::from_json(r#"{"fault":{"kind":"nope"}}"#).is_err());
        // Typos in parameters are refused (unit variants cannot refuse extra fields: serde).
        assert!(
            FaultCommand::from_json(r#"{"fault":{"kind":"too_many_requests","retry_afer":1}}"#)
                .is_err()
        );
        assert!(FaultCommand::from_json(r#"{"fault":{"kind":"drop"},"time":1}"#).is_err());
    }

    /// Counter names are what tests and the admin JSON read: pinned.
    #[test]
    fn kind_names_are_pinned() {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "html_forbidden",
                "json_forbidden_no_error",
                "too_many_requests",
                "service_unavailable",
                "server_error",
                "server_error_empty",
                "oauth_error",
                "oauth_error_form",
                "ok_html",
                "ok_json_without_token",
                "ok_error",
                "redirect",
                "delay",
                "slow_body",
                "drop",
                "huge_body",
                "raw"
            ]
        );
    }

    #[test]
    fn kinds_are_indexed_in_order() {
        for (i, kind) in FaultKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[test]
    fn next_n_clears_and_client_beats_global() {
        let table = FaultTable::default();
        table.set(FaultScope::Global, Fault::HtmlForbidden, Times::Next(2));
        table.set(FaultScope::Client("a".into()), Fault::Drop, Times::Next(1));
        assert_eq!(table.take(Some("a")), Some(Fault::Drop));
        assert_eq!(table.take(Some("a")), Some(Fault::HtmlForbidden));
        assert_eq!(table.take(None), Some(Fault::HtmlForbidden));
        assert_eq!(table.take(None), None);
        assert!(!table.armed.load(Ordering::Acquire));
        table.set(FaultScope::Global, Fault::OkHtml, Times::Always);
        table.set(FaultScope::Global, Fault::OkHtml, Times::Next(0));
        assert_eq!(table.take(None), None);
    }
}
