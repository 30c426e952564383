//! Classification: the raw outcome of one refresh attempt → a [`Verdict`].
//!
//! This is the rule that tokenvisor exists for (DESIGN.md §2): only a structured RFC 6749
//! error code from the identity provider, on a 4xx (or a 2xx that carries one), is final.
//! Every other failure — an HTML page from a WAF, a 429, a 5xx, a redirect, a broken
//! connection — is transient. Content type alone decides nothing: bodies are parsed, then
//! judged.

use std::fmt;
use std::time::Duration;

use crate::secret::Secret;
use crate::time::Timestamp;

/// The largest body prefix the classifier looks at (and the runtime reads).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The longest body excerpt a summary may carry, in bytes.
pub const EXCERPT_LIMIT: usize = 200;

/// The longest summary, in bytes (a longer one is cut at a character boundary, marked `…`).
pub const SUMMARY_LIMIT: usize = 300;

/// The longest token lifetime believed; larger `expires_in` values are clamped to this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// RFC 6749 / RFC 9449 codes that mean "try again later", whatever the status.
pub const RETRYABLE_CODES: &[&str] = &[
    "temporarily_unavailable",
    "server_error",
    "slow_down",
    "use_dpop_nonce",
];

/// What went wrong below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// The connection could not be made (refused, unreachable).
    Connect,
    /// The connection was reset.
    Reset,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// The request or a part of it took too long.
    Timeout,
    /// The connection closed before a full response arrived.
    Eof,
    /// Any other I/O failure.
    Io,
}

/// An HTTP answer as the transport saw it, before judgement.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The raw `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// At most [`BODY_LIMIT`] bytes of the body.
    pub body: Vec<u8>,
    /// True when the body was longer than what `body` holds.
    pub truncated: bool,
}

impl fmt::Debug for HttpAnswer {
    // The body of a 2xx may hold tokens: show its size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAnswer")
            .field("status", &self.status)
            .field("retry_after", &self.retry_after)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .field("truncated", &self.truncated)
            .finish()
    }
}

/// The raw outcome of one refresh attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawOutcome {
    /// An HTTP response arrived.
    Response(HttpAnswer),
    /// No (complete) response arrived.
    Transport {
        /// What kind of failure.
        kind: TransportKind,
        /// A short description from the transport; sanitised again before use.
        detail: String,
    },
}

/// Per-workload classification settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyPolicy {
    /// The lifetime assumed when the provider omits `expires_in` (or sends 0 or nonsense).
    pub default_lifetime: Duration,
    /// `Retry-After` values above this are clamped to it.
    pub max_retry_after: Duration,
    /// Extra codes to treat as transient (these win over every other rule).
    pub transient_codes: Vec<String>,
    /// Extra codes to treat as permanent, even if RFC 6749 calls them retryable.
    pub permanent_codes: Vec<String>,
}

impl Default for ClassifyPolicy {
    fn default() -> Self {
        ClassifyPolicy {
            default_lifetime: Duration::from_secs(3600),
            max_retry_after: Duration::from_secs(3600),
            transient_codes: Vec::new(),
            permanent_codes: Vec::new(),
        }
    }
}

/// The tokens of a successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The access token.
    pub access_token: Secret,
    /// A rotated refresh token, when the provider sent one.
    pub refresh_token: Option<Secret>,
    /// How long the access token lives (from `expires_in`, or the default).
    pub lifetime: Duration,
    /// False when `expires_in` was missing or unusable and the default was assumed.
    pub lifetime_from_provider: bool,
    /// `token_type` as sent (any case), `Bearer` when missing.
    pub token_type: String,
    /// The granted scope, when sent.
    pub scope: Option<String>,
}

/// Why an attempt failed, as a closed set (the `kind` of the status file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// A 2xx without a usable token (HTML login page, JSON without `access_token`).
    MalformedSuccess,
    /// A 3xx (redirects are never followed).
    Redirect,
    /// 429.
    RateLimited,
    /// 408.
    RequestTimeout,
    /// Any 5xx.
    Server5xx,
    /// A structured RFC 6749 code from the retryable set (or configured transient).
    OauthRetryable,
    /// A 4xx without a structured RFC 6749 code (WAF, CDN, proxy, empty body).
    Infrastructure4xx,
    /// Any other status outside 2xx–5xx (1xx, 6xx+).
    UnexpectedStatus,
    /// Transport: connect failed.
    Connect,
    /// Transport: connection reset.
    Reset,
    /// Transport: DNS failed.
    Dns,
    /// Transport: TLS failed.
    Tls,
    /// Transport: timeout.
    Timeout,
    /// Transport: connection closed mid-response.
    Eof,
    /// Transport: other I/O failure.
    Io,
    /// The provider rejected the credentials with a structured code: permanent.
    OauthRejected,
}

impl FailureKind {
    /// The stable snake_case name used in status files, logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::MalformedSuccess => "malformed_success",
            FailureKind::Redirect => "redirect",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::RequestTimeout => "request_timeout",
            FailureKind::Server5xx => "server_5xx",
            FailureKind::OauthRetryable => "oauth_retryable",
            FailureKind::Infrastructure4xx => "infrastructure_4xx",
            FailureKind::UnexpectedStatus => "unexpected_status",
            FailureKind::Connect => "connect",
            FailureKind::Reset => "reset",
            FailureKind::Dns => "dns",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Eof => "eof",
            FailureKind::Io => "io",
            FailureKind::OauthRejected => "oauth_rejected",
        }
    }

    /// Every kind, for metric pre-registration and exhaustive tests.
    pub const ALL: [FailureKind; 16] = [
        FailureKind::MalformedSuccess,
        FailureKind::Redirect,
        FailureKind::RateLimited,
        FailureKind::RequestTimeout,
        FailureKind::Server5xx,
        FailureKind::OauthRetryable,
        FailureKind::Infrastructure4xx,
        FailureKind::UnexpectedStatus,
        FailureKind::Connect,
        FailureKind::Reset,
        FailureKind::Dns,
        FailureKind::Tls,
        FailureKind::Timeout,
        FailureKind::Eof,
        FailureKind::Io,
        FailureKind::OauthRejected,
    ];

    /// Parses [`FailureKind::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed attempt, judged. Carries what the server said, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why it failed.
    pub kind: FailureKind,
    /// The HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// The RFC 6749 `error` code the server sent, if any (even on a transient verdict).
    pub error_code: Option<String>,
    /// The server's `Retry-After`, parsed and clamped.
    pub retry_after: Option<Duration>,
    /// A short sanitised description: no secrets, at most a few hundred bytes.
    pub summary: String,
}

/// The judgement of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A usable token arrived.
    Success(TokenGrant),
    /// Try again later.
    Transient(Failure),
    /// The provider said the credentials are bad: stop until new ones arrive.
    Permanent(Failure),
}

impl Verdict {
    /// `"ok"`, `"transient"` or `"permanent"`.
    pub const fn outcome(&self) -> &'static str {
        match self {
            Verdict::Success(_) => "ok",
            Verdict::Transient(_) => "transient",
            Verdict::Permanent(_) => "permanent",
        }
    }

    /// The failure, when there is one.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Verdict::Success(_) => None,
            Verdict::Transient(f) | Verdict::Permanent(f) => Some(f),
        }
    }
}

/// Judges one attempt.
///
/// `now` resolves an HTTP-date `Retry-After`; `request_secrets` are the secrets the request
/// carried (refresh token, client secret), scrubbed from every summary in case a server
/// echoes them.
pub fn classify(
    outcome: &RawOutcome,
    now: Timestamp,
    policy: &ClassifyPolicy,
    request_secrets: &[&Secret],
) -> Verdict {
    match outcome {
        RawOutcome::Transport { kind, detail } => {
            let kind = match kind {
                TransportKind::Connect => FailureKind::Connect,
                TransportKind::Reset => FailureKind::Reset,
                TransportKind::Dns => FailureKind::Dns,
                TransportKind::Tls => FailureKind::Tls,
                TransportKind::Timeout => FailureKind::Timeout,
                TransportKind::Eof => FailureKind::Eof,
                TransportKind::Io => FailureKind::Io,
            };
            let summary = cap(format!(
                "{kind}: {}",
                excerpt(scrub(detail, request_secrets).as_bytes())
            ));
            Verdict::Transient(Failure {
                kind,
                http_status: None,
                error_code: None,
                retry_after: None,
                summary,
            })
        }
        RawOutcome::Response(answer) => classify_answer(answer, now, policy, request_secrets),
    }
}

fn classify_answer(
    a: &HttpAnswer,
    now: Timestamp,
    policy: &ClassifyPolicy,
    secrets: &[&Secret],
) -> Verdict {
    let retry_after = a
        .retry_after
        .as_deref()
        .and_then(|v| parse_retry_after(v, now, policy.max_retry_after));
    let body = parse_body(&a.body, a.truncated);
    let code = body.error_code();
    let failure = |kind: FailureKind, summary: String| Failure {
        kind,
        http_status: Some(a.status),
        // A server may echo a secret as its `error` code: it is kept scrubbed, like the summary.
        error_code: code.map(|c| scrub(c, secrets)),
        retry_after,
        summary: cap(scrub(&summary, secrets)),
    };
    let status = a.status;
    match status {
        200..=299 => {
            if let Some(code) = code {
                // Some providers answer errors with 200: judge as a 4xx with that code.
                return judge_code(code, policy, |kind| {
                    failure(kind, describe_error(status, code, &body, secrets))
                });
            }
            match body.token(policy) {
                Some(grant) => Verdict::Success(grant),
                None => Verdict::Transient(failure(
                    FailureKind::MalformedSuccess,
                    // Never quote a 2xx body: it may hold tokens.
                    format!(
                        "HTTP {status} {} without an access_token",
                        content_type_label(a.content_type.as_deref())
                    ),
                )),
            }
        }
        300..=399 => Verdict::Transient(failure(
            FailureKind::Redirect,
            format!("HTTP {status} redirect (not followed)"),
        )),
        408 | 429 | 500..=599 => {
            let kind = match status {
                408 => FailureKind::RequestTimeout,
                429 => FailureKind::RateLimited,
                _ => FailureKind::Server5xx,
            };
            Verdict::Transient(failure(kind, describe(status, a, code, &body, secrets)))
        }
        400..=499 => match code {
            Some(code) => judge_code(code, policy, |kind| {
                failure(kind, describe_error(status, code, &body, secrets))
            }),
            None => Verdict::Transient(failure(
                FailureKind::Infrastructure4xx,
                describe(status, a, None, &body, secrets),
            )),
        },
        _ => Verdict::Transient(failure(
            FailureKind::UnexpectedStatus,
            format!("unexpected HTTP status {status}"),
        )),
    }
}

/// Decides a structured code seen on a 4xx (or a 2xx).
fn judge_code(
    code: &str,
    policy: &ClassifyPolicy,
    failure: impl Fn(FailureKind) -> Failure,
) -> Verdict {
    let listed = |list: &[String]| list.iter().any(|c| c == code);
    if listed(&policy.transient_codes) {
        Verdict::Transient(failure(FailureKind::OauthRetryable))
    } else if listed(&policy.permanent_codes) {
        Verdict::Permanent(failure(FailureKind::OauthRejected))
    } else if RETRYABLE_CODES.contains(&code) {
        Verdict::Transient(failure(FailureKind::OauthRetryable))
    } else {
        Verdict::Permanent(failure(FailureKind::OauthRejected))
    }
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delta-seconds or an HTTP-date relative to
/// `now`, clamped to `max`. Malformed values (negative, fractional, garbage) give `None`.
pub fn parse_retry_after(value: &str, now: Timestamp, max: Duration) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let d = if v.bytes().all(|b| b.is_ascii_digit()) {
        // Overflowing digit strings are absurdly large: clamp them like any large value.
        Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let date = httpdate::parse_http_date(v).ok()?;
        Timestamp::from_system_time(date).since(now)
    };
    Some(d.min(max))
}

/// A body, parsed as far as it goes.
enum Body {
    Json(serde_json::Map<String, serde_json::Value>),
    Form(Vec<(String, String)>),
    Other,
}

/// `truncated`: the body was cut at [`BODY_LIMIT`]. JSON cannot be cut and still parse, but
/// a form can, into a cut-off token or code: a truncated body is never read as a form.
fn parse_body(raw: &[u8], truncated: bool) -> Body {
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty() {
        return Body::Other;
    }
    if trimmed.starts_with(b"{") {
        return match serde_json::from_slice::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Object(map)) => Body::Json(map),
            // JSON of another shape, or not JSON after all.
            Ok(_) | Err(_) => Body::Other,
        };
    }
    // Form-encoded: only when every pair is `key=value` with a plausible key, so that HTML
    // or prose is never mistaken for a form.
    if truncated {
        return Body::Other;
    }
    let Ok(text) = std::str::from_utf8(trimmed) else {
        return Body::Other;
    };
    if text.contains(['<', '\n', ' ']) || !text.contains('=') {
        return Body::Other;
    }
    match serde_urlencoded::from_str::<Vec<(String, String)>>(text) {
        Ok(pairs)
            if !pairs.is_empty()
                && pairs.iter().all(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                }) =>
        {
            Body::Form(pairs)
        }
        Ok(_) | Err(_) => Body::Other,
    }
}

/// RFC 6749 §5.2: `error` is 1*( %x20-21 / %x23-5B / %x5D-7E ). We also bound its length.
fn is_error_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        && !s.trim().is_empty()
}

impl Body {
    fn get(&self, key: &str) -> Option<&str> {
        match self {
            Body::Json(map) => map.get(key).and_then(serde_json::Value::as_str),
            Body::Form(pairs) => pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str()),
            Body::Other => None,
        }
    }

    /// The structured RFC 6749 `error` code, if the body has one.
    fn error_code(&self) -> Option<&str> {
        self.get("error").filter(|c| is_error_code(c))
    }

    fn token(&self, policy: &ClassifyPolicy) -> Option<TokenGrant> {
        let access_token = self.get("access_token").filter(|t| !t.is_empty())?;
        let expires_in = match self {
            Body::Json(map) => map.get("expires_in").and_then(json_seconds),
            Body::Form(_) => self.get("expires_in").and_then(str_seconds),
            Body::Other => None,
        };
        let (lifetime, from_provider) = match expires_in {
            Some(secs) if secs > 0 => (Duration::from_secs(secs).min(MAX_LIFETIME), true),
            Some(_) | None => (policy.default_lifetime, false),
        };
        Some(TokenGrant {
            access_token: Secret::from(access_token),
            refresh_token: self
                .get("refresh_token")
                .filter(|t| !t.is_empty())
                .map(Secret::from),
            lifetime,
            lifetime_from_provider: from_provider,
            token_type: self
                .get("token_type")
                .filter(|t| !t.is_empty())
                .unwrap_or("Bearer")
                .to_owned(),
            scope: self.get("scope").map(str::to_owned),
        })
    }
}

/// `expires_in` as a JSON number or numeric string; negative values give `Some(0)`.
fn json_seconds(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|_| 0))
            .or_else(|| n.as_f64().map(f64_seconds)),
        serde_json::Value::String(s) => str_seconds(s),
        serde_json::Value::Null
        | serde_json::Value::Bool(_)
        | serde_json::Value::Array(_)
        | serde_json::Value::Object(_) => None,
    }
}

fn str_seconds(s: &str) -> Option<u64> {
    let s = s.trim();
    s.parse::<u64>()
        .ok()
        .or_else(|| s.parse::<i64>().ok().map(|_| 0))
        .or_else(|| {
            s.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(f64_seconds)
        })
}

fn f64_seconds(f: f64) -> u64 {
    if f.is_nan() || f <= 0.0 {
        0
    } else if f >= u64::MAX as f64 {
        u64::MAX
    } else {
        f as u64
    }
}

fn content_type_label(ct: Option<&str>) -> String {
    match ct {
        Some(ct) => excerpt(ct.split(';').next().unwrap_or(ct).as_bytes()),
        None => "(no content type)".to_owned(),
    }
}

fn describe_error(status: u16, code: &str, body: &Body, secrets: &[&Secret]) -> String {
    match body.get("error_description").filter(|d| !d.is_empty()) {
        Some(desc) => format!(
            "HTTP {status} {code}: {}",
            excerpt(scrub(desc, secrets).as_bytes())
        ),
        None => format!("HTTP {status} {code}"),
    }
}

fn describe(
    status: u16,
    a: &HttpAnswer,
    code: Option<&str>,
    body: &Body,
    secrets: &[&Secret],
) -> String {
    if let Some(code) = code {
        return describe_error(status, code, body, secrets);
    }
    let ct = content_type_label(a.content_type.as_deref());
    // Scrub before cutting, so that no secret is left half-visible at the cut.
    let head = &a.body[..a.body.len().min(8 * 1024)];
    let safe = scrub(&String::from_utf8_lossy(head), secrets);
    let text = html_title(safe.as_bytes()).unwrap_or_else(|| excerpt(safe.as_bytes()));
    if text.is_empty() {
        format!("HTTP {status} {ct}, empty body")
    } else {
        format!("HTTP {status} {ct}: {text}")
    }
}

/// The `<title>` of an HTML page, sanitised, when there is one.
fn html_title(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(8 * 1024)]);
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = start + lower[start..].find('>')? + 1;
    let close = open_end + lower[open_end..].find("</title")?;
    let t = excerpt(text[open_end..close].as_bytes());
    (!t.is_empty()).then_some(t)
}

/// Invisible formatting characters that can disguise text in a terminal or a log viewer:
/// bidi embeddings, overrides and isolates, zero-width characters, the BOM.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Cuts a summary to [`SUMMARY_LIMIT`] bytes at a character boundary, marked with `…`.
fn cap(mut s: String) -> String {
    const MARK: char = '…';
    if s.len() > SUMMARY_LIMIT {
        let mut end = SUMMARY_LIMIT - MARK.len_utf8();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.truncate(s.trim_end().len());
        s.push(MARK);
    }
    s
}

/// A sanitised excerpt: lossy UTF-8, control and invisible formatting characters dropped,
/// whitespace folded, at most [`EXCERPT_LIMIT`] bytes (cut at a character boundary, marked
/// with `…`).
pub fn excerpt(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(EXCERPT_LIMIT * 8)]);
    let mut out = String::with_capacity(EXCERPT_LIMIT + 4);
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_whitespace() { ' ' } else { c };
        if c.is_control() || is_invisible(c) || c == '\u{FFFD}' {
            continue;
        }
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        if out.len() + c.len_utf8() > EXCERPT_LIMIT {
            out.truncate(out.trim_end().len());
            out.push('…');
            return out;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out
}

/// `%2F` → `%2f`: the same percent-encoding with lower-case hex digits.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            if c == '%' {
                hex_left = 2;
            }
            out.push(c);
        }
    }
    out
}

/// Replaces every occurrence of a secret with `…`: raw, percent-encoded (either hex case)
/// and JSON-escaped (with and without `\/`), the forms a server echoes it in.
fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        let raw = s.expose();
        if raw.len() < 4 {
            continue;
        }
        let encoded: String = serde_urlencoded::to_string([("", raw)])
            .unwrap_or_default()
            .trim_start_matches('=')
            .to_owned();
        let json = serde_json::to_string(raw).unwrap_or_default();
        let json = json
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or(raw)
            .to_owned();
        let variants = [
            raw.to_owned(),
            lower_hex(&encoded),
            encoded,
            json.replace('/', "\\/"),
            json,
        ];
        for v in &variants {
            if v.len() >= 4 && out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "…");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
