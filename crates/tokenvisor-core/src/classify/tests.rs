//! Classification tests.
//!
//! One data-driven table (`rows`) covers the classification rules group by group (rows `D1`–`D9`:
//! success, 2xx errors, 2xx pages, redirects, retryable statuses, retryable codes, final codes,
//! unstructured errors, network failures), ToolHive's own token-refresh tests (`TH10`: the 24
//! cases of its error-classification table, `TH11`, `TH12`, `TH5`) with its Go error shapes
//! mapped onto [`RawOutcome`], and the gaps ToolHive lists. Every row goes through one
//! [`check`], which also asserts the summary rules. Focused tests follow for token parsing,
//! `Retry-After`, per-policy codes and summary hygiene (secrets, length, control characters).

use std::time::Duration;

use super::*;

/// 2026-09-21T14:13:20Z, a whole second (HTTP-dates have second resolution).
const T0: Timestamp = Timestamp::from_millis(1_790_000_000_000);

/// The refresh token the request carried; rows never echo it, dedicated tests do.
const REQUEST_SECRET: &str = "rt-Q7xZ9/kP+wV3mN2bLs";

/// Put in every 2xx body: a 2xx body may hold tokens and must never be quoted.
const MARKER: &str = "MARKERtok";

/// The longest summary accepted (a few hundred bytes: a summary is a short excerpt).
const SUMMARY_MAX: usize = 300;

const OK: &str = "ok";
const TR: &str = "transient";
const PE: &str = "permanent";

const JSON: Option<&str> = Some("application/json");
const JSON_UTF8: Option<&str> = Some("application/json;charset=UTF-8");
const HTML: Option<&str> = Some("text/html; charset=utf-8");
const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
const TEXT: Option<&str> = Some("text/plain");
const NO_CT: Option<&str> = None;
const NO_RA: Option<&str> = None;

use FailureKind as K;

/// Where the outcome came from: an HTTP status, or a transport error.
#[derive(Debug, Clone, Copy)]
enum Src {
    Http(u16),
    Net(TransportKind, &'static str),
}

fn h(status: u16) -> Src {
    Src::Http(status)
}

fn net(kind: TransportKind, detail: &'static str) -> Src {
    Src::Net(kind, detail)
}

/// One row of the table.
struct Row {
    name: &'static str,
    src: Src,
    retry_after: Option<&'static str>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    outcome: &'static str,
    kind: Option<FailureKind>,
    code: Option<&'static str>,
    retry: Option<u64>,
}

#[allow(clippy::too_many_arguments)]
fn row(
    name: &'static str,
    src: Src,
    retry_after: Option<&'static str>,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    outcome: &'static str,
    kind: Option<FailureKind>,
    code: Option<&'static str>,
    retry: Option<u64>,
) -> Row {
    Row {
        name,
        src,
        retry_after,
        content_type,
        body: body.into(),
        outcome,
        kind,
        code,
        retry,
    }
}

fn raw(src: Src, retry_after: Option<&str>, content_type: Option<&str>, body: &[u8]) -> RawOutcome {
    match src {
        Src::Http(status) => RawOutcome::Response(HttpAnswer {
            status,
            retry_after: retry_after.map(str::to_owned),
            content_type: content_type.map(str::to_owned),
            rate_limit: Default::default(),
            body: body.to_vec(),
            truncated: false,
        }),
        Src::Net(kind, detail) => RawOutcome::Transport {
            kind,
            detail: detail.to_owned(),
        },
    }
}

fn answer(status: u16, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> RawOutcome {
    RawOutcome::Response(HttpAnswer {
        status,
        retry_after: None,
        content_type: content_type.map(str::to_owned),
        rate_limit: Default::default(),
        body: body.into(),
        truncated: false,
    })
}

fn run(outcome: &RawOutcome) -> Verdict {
    classify(
        outcome,
        T0,
        &ClassifyPolicy::default(),
        &[&Secret::from(REQUEST_SECRET)],
    )
}

fn failure_of(v: &Verdict) -> &Failure {
    v.failure()
        .unwrap_or_else(|| panic!("expected a failure, got {v:?}"))
}

fn grant_of(v: &Verdict) -> &TokenGrant {
    match v {
        Verdict::Success(g) => g,
        Verdict::Transient(_) | Verdict::Permanent(_) => panic!("expected success, got {v:?}"),
    }
}

/// A character that must never reach a summary: C0/C1 controls and the invisible
/// formatting characters (bidi overrides, zero-width) that can disguise text in a terminal.
fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// The summary rules that hold for every failure.
fn assert_sane_summary(summary: &str, ctx: &str) {
    assert!(!summary.is_empty(), "{ctx}: empty summary");
    assert!(
        summary.len() <= SUMMARY_MAX,
        "{ctx}: summary is {} bytes: {summary:?}",
        summary.len()
    );
    assert!(
        !summary.chars().any(is_forbidden_char),
        "{ctx}: control character in {summary:?}"
    );
    assert!(
        !summary.contains(REQUEST_SECRET),
        "{ctx}: secret in {summary:?}"
    );
}

fn check_with(r: &Row, policy: &ClassifyPolicy) {
    let outcome = raw(r.src, r.retry_after, r.content_type, &r.body);
    let v = classify(&outcome, T0, policy, &[&Secret::from(REQUEST_SECRET)]);
    let name = r.name;
    assert_eq!(v.outcome(), r.outcome, "{name}: {v:?}");
    match &v {
        Verdict::Success(g) => {
            assert!(
                r.kind.is_none() && r.code.is_none(),
                "{name}: table row is inconsistent"
            );
            assert!(!g.access_token.is_empty(), "{name}");
        }
        Verdict::Transient(f) | Verdict::Permanent(f) => {
            assert_eq!(Some(f.kind), r.kind, "{name}: {f:?}");
            assert_eq!(f.error_code.as_deref(), r.code, "{name}: {f:?}");
            assert_eq!(
                f.retry_after,
                r.retry.map(Duration::from_secs),
                "{name}: {f:?}"
            );
            let status = match r.src {
                Src::Http(s) => Some(s),
                Src::Net(..) => None,
            };
            assert_eq!(f.http_status, status, "{name}");
            assert_eq!(
                matches!(v, Verdict::Permanent(_)),
                f.kind == FailureKind::OauthRejected,
                "{name}: only a rejection is permanent"
            );
            assert_sane_summary(&f.summary, name);
            if let Src::Http(s) = r.src {
                assert!(
                    f.summary.contains(&s.to_string()),
                    "{name}: {:?}",
                    f.summary
                );
                if (200..300).contains(&s) && f.error_code.is_none() {
                    assert!(!f.summary.contains(MARKER), "{name}: quoted a 2xx body");
                }
            }
        }
    }
}

fn check(r: &Row) {
    check_with(r, &ClassifyPolicy::default());
}

/// Go's `*oauth2.RetrieveError` without a code: the body a WAF sends.
const WAF_HTML: &[u8] = b"<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body><h1>Sorry, you have been blocked</h1></body></html>";
const LOGIN_HTML: &[u8] =
    b"<html><head><title>Sign in MARKERtok</title></head><body><form>...</form></body></html>";

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use TransportKind as T;
    vec![
        // ── The classification rules, group by group (D1–D9).
        row("D1 2xx JSON token", h(200), NO_RA, JSON, r#"{"access_token":"MARKERtok","token_type":"Bearer","expires_in":3600}"#, OK, None, None, None),
        row("D1 expires_in as string", h(200), NO_RA, JSON, r#"{"access_token":"MARKERtok","token_type":"Bearer","expires_in":"3600"}"#, OK, None, None, None),
        row("D1 token_type lower case", h(200), NO_RA, JSON, r#"{"access_token":"MARKERtok","token_type":"bearer","expires_in":3600}"#, OK, None, None, None),
        row("D1 expires_in missing", h(200), NO_RA, JSON, r#"{"access_token":"MARKERtok"}"#, OK, None, None, None),
        // A 2xx with a code is not a verdict unless a vendor row says so (GitHub, Slack).
        row("D2 200 JSON invalid_grant", h(200), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"expired"}"#, TR, Some(K::OauthUnknownCode), Some("invalid_grant"), None),
        row("D2 200 form invalid_grant", h(200), NO_RA, FORM, "error=invalid_grant&error_description=expired", TR, Some(K::OauthUnknownCode), Some("invalid_grant"), None),
        row("D2 200 JSON temporarily_unavailable", h(200), NO_RA, JSON, r#"{"error":"temporarily_unavailable"}"#, TR, Some(K::OauthRetryable), Some("temporarily_unavailable"), None),
        row("D2 200 form server_error", h(200), NO_RA, TEXT, "error=server_error", TR, Some(K::OauthRetryable), Some("server_error"), None),
        row("D3 200 HTML login page", h(200), NO_RA, HTML, LOGIN_HTML, TR, Some(K::MalformedSuccess), None, None),
        row("D3 200 JSON without access_token", h(200), NO_RA, JSON, r#"{"token_type":"Bearer","note":"MARKERtok"}"#, TR, Some(K::MalformedSuccess), None, None),
        row("D4 301", h(301), NO_RA, HTML, "<a href=\"https://login\">Moved</a>", TR, Some(K::Redirect), None, None),
        row("D4 302", h(302), NO_RA, NO_CT, "", TR, Some(K::Redirect), None, None),
        row("D4 303", h(303), NO_RA, NO_CT, "", TR, Some(K::Redirect), None, None),
        row("D4 307", h(307), NO_RA, NO_CT, "", TR, Some(K::Redirect), None, None),
        row("D4 308", h(308), NO_RA, NO_CT, "", TR, Some(K::Redirect), None, None),
        row("D5 408", h(408), NO_RA, NO_CT, "", TR, Some(K::RequestTimeout), None, None),
        row("D5 429", h(429), NO_RA, NO_CT, "", TR, Some(K::RateLimited), None, None),
        row("D5 429 with invalid_grant stays transient", h(429), NO_RA, JSON, r#"{"error":"invalid_grant"}"#, TR, Some(K::RateLimited), Some("invalid_grant"), None),
        row("D5 503 Retry-After", h(503), Some("30"), NO_CT, "", TR, Some(K::Server5xx), None, Some(30)),
        row("D5 599", h(599), NO_RA, NO_CT, "", TR, Some(K::Server5xx), None, None),
        row("D6 400 temporarily_unavailable", h(400), NO_RA, JSON, r#"{"error":"temporarily_unavailable"}"#, TR, Some(K::OauthRetryable), Some("temporarily_unavailable"), None),
        row("D6 400 server_error", h(400), NO_RA, JSON, r#"{"error":"server_error"}"#, TR, Some(K::OauthRetryable), Some("server_error"), None),
        row("D6 400 slow_down", h(400), NO_RA, JSON, r#"{"error":"slow_down"}"#, TR, Some(K::OauthRetryable), Some("slow_down"), None),
        row("D6 400 use_dpop_nonce", h(400), NO_RA, JSON, r#"{"error":"use_dpop_nonce"}"#, TR, Some(K::OauthRetryable), Some("use_dpop_nonce"), None),
        row("D7 400 invalid_grant", h(400), NO_RA, JSON, r#"{"error":"invalid_grant"}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("D7 401 invalid_client", h(401), NO_RA, JSON, r#"{"error":"invalid_client"}"#, PE, Some(K::OauthRejected), Some("invalid_client"), None),
        row("D7 400 unauthorized_client", h(400), NO_RA, JSON, r#"{"error":"unauthorized_client"}"#, PE, Some(K::OauthRejected), Some("unauthorized_client"), None),
        row("D7 400 unsupported_grant_type", h(400), NO_RA, JSON, r#"{"error":"unsupported_grant_type"}"#, PE, Some(K::OauthRejected), Some("unsupported_grant_type"), None),
        row("D7 400 invalid_scope", h(400), NO_RA, JSON, r#"{"error":"invalid_scope"}"#, PE, Some(K::OauthRejected), Some("invalid_scope"), None),
        row("D7 400 invalid_target", h(400), NO_RA, JSON, r#"{"error":"invalid_target"}"#, PE, Some(K::OauthRejected), Some("invalid_target"), None),
        // Registered codes that do not judge the grant, and unknown codes: transient.
        row("D7 400 invalid_request", h(400), NO_RA, JSON, r#"{"error":"invalid_request"}"#, TR, Some(K::OauthUnknownCode), Some("invalid_request"), None),
        row("D7 400 vendor code", h(400), NO_RA, JSON, r#"{"error":"account_locked"}"#, TR, Some(K::OauthUnknownCode), Some("account_locked"), None),
        row("D8 403 HTML", h(403), NO_RA, HTML, WAF_HTML, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 401 empty", h(401), NO_RA, NO_CT, "", TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 JSON without error", h(400), NO_RA, JSON, r#"{"message":"Bad Request"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error is a number", h(400), NO_RA, JSON, r#"{"error":400}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error is an object", h(400), NO_RA, JSON, r#"{"error":{"code":"invalid_grant"}}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error is empty", h(400), NO_RA, JSON, r#"{"error":""}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error is blank", h(400), NO_RA, JSON, r#"{"error":"   "}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error is null", h(400), NO_RA, JSON, r#"{"error":null}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error is true", h(400), NO_RA, JSON, r#"{"error":true}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error is too long", h(400), NO_RA, JSON, format!(r#"{{"error":"{}"}}"#, "x".repeat(129)), TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error with a quote", h(400), NO_RA, JSON, r#"{"error":"invalid\"grant"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error with a backslash", h(400), NO_RA, JSON, r#"{"error":"invalid\\grant"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error with a newline", h(400), NO_RA, JSON, r#"{"error":"invalid\ngrant"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 error with non-ASCII", h(400), NO_RA, JSON, r#"{"error":"invalid_grant\u00e9"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("D8 400 form error empty", h(400), NO_RA, FORM, "error=&error_description=x", TR, Some(K::Infrastructure4xx), None, None),
        row("D9 connect", net(T::Connect, "connection refused"), NO_RA, NO_CT, "", TR, Some(K::Connect), None, None),
        row("D9 timeout", net(T::Timeout, "operation timed out"), NO_RA, NO_CT, "", TR, Some(K::Timeout), None, None),
        row("D9 tls", net(T::Tls, "invalid peer certificate: UnknownIssuer"), NO_RA, NO_CT, "", TR, Some(K::Tls), None, None),
        row("D9 io", net(T::Io, "broken pipe"), NO_RA, NO_CT, "", TR, Some(K::Io), None, None),
        // ── ToolHive #10: the 24 rows, Go error shapes mapped onto RawOutcome. ToolHive
        //    calls the first three and the nil-response row permanent; we do not.
        row("TH10 plain error", net(T::Io, "something went wrong"), NO_RA, NO_CT, "", TR, Some(K::Io), None, None),
        row("TH10 context.Canceled", net(T::Io, "context canceled"), NO_RA, NO_CT, "", TR, Some(K::Io), None, None),
        row("TH10 context.DeadlineExceeded", net(T::Timeout, "context deadline exceeded"), NO_RA, NO_CT, "", TR, Some(K::Timeout), None, None),
        row("TH10 400 invalid_grant", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("TH10 401 invalid_client", h(401), NO_RA, JSON, r#"{"error":"invalid_client"}"#, PE, Some(K::OauthRejected), Some("invalid_client"), None),
        row("TH10 403 unauthorized_client", h(403), NO_RA, JSON, r#"{"error":"unauthorized_client"}"#, PE, Some(K::OauthRejected), Some("unauthorized_client"), None),
        row("TH10 RetrieveError nil Response", net(T::Io, "oauth2: cannot fetch token"), NO_RA, NO_CT, "", TR, Some(K::Io), None, None),
        row("TH10 net.DNSError timeout", net(T::Dns, "lookup idp.example.com: i/o timeout"), NO_RA, NO_CT, "", TR, Some(K::Dns), None, None),
        row("TH10 net.OpError ECONNREFUSED", net(T::Connect, "dial tcp 127.0.0.1:443: connect: connection refused"), NO_RA, NO_CT, "", TR, Some(K::Connect), None, None),
        row("TH10 url.Error wrapping OpError", net(T::Connect, "Post \"https://idp.example.com/token\": dial tcp 127.0.0.1:443: connect: connection refused"), NO_RA, NO_CT, "", TR, Some(K::Connect), None, None),
        row("TH10 net.Error Timeout()", net(T::Timeout, "i/o timeout"), NO_RA, NO_CT, "", TR, Some(K::Timeout), None, None),
        row("TH10 500", h(500), NO_RA, NO_CT, "", TR, Some(K::Server5xx), None, None),
        row("TH10 502", h(502), NO_RA, HTML, "<html><title>502 Bad Gateway</title></html>", TR, Some(K::Server5xx), None, None),
        row("TH10 503", h(503), NO_RA, NO_CT, "", TR, Some(K::Server5xx), None, None),
        row("TH10 504", h(504), NO_RA, NO_CT, "", TR, Some(K::Server5xx), None, None),
        row("TH10 401 HTML", h(401), NO_RA, HTML, "<html><body>Unauthorized</body></html>", TR, Some(K::Infrastructure4xx), None, None),
        row("TH10 403 WAF HTML", h(403), NO_RA, HTML, WAF_HTML, TR, Some(K::Infrastructure4xx), None, None),
        row("TH10 400 empty body", h(400), NO_RA, NO_CT, "", TR, Some(K::Infrastructure4xx), None, None),
        row("TH10 408 empty", h(408), NO_RA, NO_CT, "", TR, Some(K::RequestTimeout), None, None),
        row("TH10 429 empty", h(429), NO_RA, NO_CT, "", TR, Some(K::RateLimited), None, None),
        row("TH10 429 rate_limit_exceeded", h(429), NO_RA, JSON, r#"{"error":"rate_limit_exceeded"}"#, TR, Some(K::RateLimited), Some("rate_limit_exceeded"), None),
        row("TH10 cannot parse json (2xx HTML)", h(200), NO_RA, HTML, LOGIN_HTML, TR, Some(K::MalformedSuccess), None, None),
        row("TH10 cannot parse json, wrapped (2xx HTML, no type)", h(200), NO_RA, NO_CT, "<html>MARKERtok</html>", TR, Some(K::MalformedSuccess), None, None),
        row("TH10 cannot parse response (2xx junk)", h(200), NO_RA, TEXT, "MARKERtok garbage", TR, Some(K::MalformedSuccess), None, None),
        // ── ToolHive #11 (isPermanentTokenEndpointError), rows not above.
        row("TH11 500 with code", h(500), NO_RA, JSON, r#"{"error":"server_error"}"#, TR, Some(K::Server5xx), Some("server_error"), None),
        row("TH11 403 HTML", h(403), NO_RA, HTML, "<html>Forbidden</html>", TR, Some(K::Infrastructure4xx), None, None),
        // ── ToolHive #12: the contract test against the real oauth2 library.
        row("TH12 403 text/html", h(403), NO_RA, Some("text/html"), "<html><body>blocked</body></html>", TR, Some(K::Infrastructure4xx), None, None),
        row("TH12 401 text/html", h(401), NO_RA, Some("text/html"), "<html><body>login</body></html>", TR, Some(K::Infrastructure4xx), None, None),
        row("TH12 400 form invalid_grant", h(400), NO_RA, FORM, "error=invalid_grant", PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        // ── ToolHive #5: a plain error whose text says "timeout" is still just an error.
        row("TH5 errors.New(\"network timeout\")", net(T::Io, "network timeout"), NO_RA, NO_CT, "", TR, Some(K::Io), None, None),
        // ── Gaps ToolHive lists.
        row("GAP 5xx with invalid_grant", h(500), NO_RA, JSON, r#"{"error":"invalid_grant"}"#, TR, Some(K::Server5xx), Some("invalid_grant"), None),
        row("GAP 502 with invalid_client", h(502), NO_RA, JSON, r#"{"error":"invalid_client"}"#, TR, Some(K::Server5xx), Some("invalid_client"), None),
        row("GAP 401 JSON without error", h(401), NO_RA, JSON, r#"{"message":"Unauthorized","status":401}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("GAP 2xx empty access_token", h(200), NO_RA, JSON, r#"{"access_token":"","expires_in":3600}"#, TR, Some(K::MalformedSuccess), None, None),
        row("GAP 2xx access_token is a number", h(200), NO_RA, JSON, r#"{"access_token":12345678,"expires_in":3600}"#, TR, Some(K::MalformedSuccess), None, None),
        row("GAP 2xx JSON array", h(200), NO_RA, JSON, r#"[{"access_token":"MARKERtok"}]"#, TR, Some(K::MalformedSuccess), None, None),
        row("GAP 204 empty", h(204), NO_RA, NO_CT, "", TR, Some(K::MalformedSuccess), None, None),
        row("GAP tls x509 expired", net(T::Tls, "x509: certificate has expired or is not yet valid"), NO_RA, NO_CT, "", TR, Some(K::Tls), None, None),
        row("GAP io.EOF", net(T::Eof, "EOF"), NO_RA, NO_CT, "", TR, Some(K::Eof), None, None),
        row("GAP unexpected EOF", net(T::Eof, "unexpected EOF"), NO_RA, NO_CT, "", TR, Some(K::Eof), None, None),
        row("GAP ECONNRESET", net(T::Reset, "read tcp: connection reset by peer"), NO_RA, NO_CT, "", TR, Some(K::Reset), None, None),
        row("GAP http2 stream reset", net(T::Reset, "stream error: stream ID 1; INTERNAL_ERROR"), NO_RA, NO_CT, "", TR, Some(K::Reset), None, None),
        row("GAP ENETUNREACH", net(T::Connect, "connect: network is unreachable"), NO_RA, NO_CT, "", TR, Some(K::Connect), None, None),
        row("GAP EHOSTUNREACH", net(T::Connect, "connect: no route to host"), NO_RA, NO_CT, "", TR, Some(K::Connect), None, None),
        row("GAP proxy CONNECT failure", net(T::Connect, "proxyconnect tcp: proxy answered 502 to CONNECT"), NO_RA, NO_CT, "", TR, Some(K::Connect), None, None),
        row("GAP 407 from a proxy", h(407), NO_RA, HTML, "<html><title>Proxy Authentication Required</title></html>", TR, Some(K::Infrastructure4xx), None, None),
        row("GAP 429 Retry-After seconds", h(429), Some("120"), NO_CT, "", TR, Some(K::RateLimited), None, Some(120)),
        row("GAP 503 Retry-After HTTP-date", h(503), Some("Mon, 21 Sep 2026 14:14:50 GMT"), NO_CT, "", TR, Some(K::Server5xx), None, Some(90)),
        row("GAP 429 Retry-After date in the past", h(429), Some("Sun, 06 Nov 1994 08:49:37 GMT"), NO_CT, "", TR, Some(K::RateLimited), None, Some(0)),
        row("GAP 429 Retry-After above the max", h(429), Some("86400"), NO_CT, "", TR, Some(K::RateLimited), None, Some(3600)),
        row("GAP 429 Retry-After garbage", h(429), Some("soon"), NO_CT, "", TR, Some(K::RateLimited), None, None),
        row("GAP 429 slow_down reports slow_down", h(429), Some("5"), JSON, r#"{"error":"slow_down"}"#, TR, Some(K::RateLimited), Some("slow_down"), Some(5)),
        row("GAP 201 with a token", h(201), NO_RA, JSON, r#"{"access_token":"MARKERtok","expires_in":60}"#, OK, None, None, None),
        row("GAP 2xx form-encoded token", h(200), NO_RA, FORM, "access_token=MARKERtok&token_type=bearer&scope=repo", OK, None, None, None),
        row("GAP 2xx form token as text/plain", h(200), NO_RA, TEXT, "access_token=MARKERtok&expires_in=3600", OK, None, None, None),
        row("GAP 400 form-encoded error", h(400), NO_RA, FORM, "error=invalid_grant&error_description=bad+token", PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("GAP 400 form error, text/plain", h(400), NO_RA, TEXT, "error=invalid_client", PE, Some(K::OauthRejected), Some("invalid_client"), None),
        row("GAP 200 JSON server_error", h(200), NO_RA, JSON, r#"{"error":"server_error"}"#, TR, Some(K::OauthRetryable), Some("server_error"), None),
        row("GAP 200 JSON invalid_client", h(200), NO_RA, JSON, r#"{"error":"invalid_client"}"#, TR, Some(K::OauthUnknownCode), Some("invalid_client"), None),
        row("GAP 100", h(100), NO_RA, NO_CT, "", TR, Some(K::UnexpectedStatus), None, None),
        row("GAP 101", h(101), NO_RA, NO_CT, "", TR, Some(K::UnexpectedStatus), None, None),
        row("GAP 600", h(600), NO_RA, NO_CT, "", TR, Some(K::UnexpectedStatus), None, None),
        row("GAP 999 with a code", h(999), NO_RA, JSON, r#"{"error":"invalid_grant"}"#, TR, Some(K::UnexpectedStatus), Some("invalid_grant"), None),
        row("GAP 0", h(0), NO_RA, NO_CT, "", TR, Some(K::UnexpectedStatus), None, None),
        row("GAP 400 invalid UTF-8", h(400), NO_RA, TEXT, b"\xff\xfe\xc3(bad \x80 bytes".as_slice(), TR, Some(K::Infrastructure4xx), None, None),
        row("GAP 200 invalid UTF-8", h(200), NO_RA, TEXT, b"\xffMARKERtok\xfe".as_slice(), TR, Some(K::MalformedSuccess), None, None),
        row("GAP 400 JSON with invalid UTF-8", h(400), NO_RA, JSON, b"{\"error\":\"invalid_grant\xff\"}".as_slice(), TR, Some(K::Infrastructure4xx), None, None),
        row("GAP 400 BOM + JSON", h(400), NO_RA, JSON, b"\xEF\xBB\xBF{\"error\":\"invalid_grant\"}".as_slice(), PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("GAP 200 BOM + JSON token", h(200), NO_RA, JSON, b"\xEF\xBB\xBF{\"access_token\":\"MARKERtok\"}".as_slice(), OK, None, None, None),
        // ── Content type: the body is parsed whatever the label, but a body labelled HTML or
        //    XML is a page for people, never a verdict.
        row("CT JSON labelled text/html", h(400), NO_RA, HTML, r#"{"error":"invalid_grant"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("CT JSON labelled XML", h(400), NO_RA, Some("application/xml"), r#"{"error":"invalid_grant"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("CT JSON labelled text/plain", h(400), NO_RA, TEXT, r#"{"error":"invalid_grant"}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("CT JSON without a content type", h(400), NO_RA, NO_CT, r#"{"error":"invalid_grant"}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("CT JSON with charset", h(400), NO_RA, JSON_UTF8, r#"  {"error":"invalid_grant"}  "#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("CT HTML labelled JSON", h(403), NO_RA, JSON, WAF_HTML, TR, Some(K::Infrastructure4xx), None, None),
        row("CT token labelled text/html", h(200), NO_RA, HTML, r#"{"access_token":"MARKERtok"}"#, OK, None, None, None),
        // ── Shapes that must not be mistaken for a structured code.
        row("SH 400 JSON array with error", h(400), NO_RA, JSON, r#"[{"error":"invalid_grant"}]"#, TR, Some(K::Infrastructure4xx), None, None),
        row("SH 400 JSON string", h(400), NO_RA, JSON, r#""invalid_grant""#, TR, Some(K::Infrastructure4xx), None, None),
        row("SH 400 bare word", h(400), NO_RA, TEXT, "invalid_grant", TR, Some(K::Infrastructure4xx), None, None),
        row("SH 400 prose with '='", h(400), NO_RA, TEXT, "Access denied: ip=10.0.0.1", TR, Some(K::Infrastructure4xx), None, None),
        row("SH 403 HTML with error=", h(403), NO_RA, HTML, "<a href=\"/?error=invalid_grant\">x</a>", TR, Some(K::Infrastructure4xx), None, None),
        row("SH 400 truncated JSON", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_descr"#, TR, Some(K::Infrastructure4xx), None, None),
        row("SH 400 JSON nested error only", h(400), NO_RA, JSON, r#"{"errors":[{"error":"invalid_grant"}]}"#, TR, Some(K::Infrastructure4xx), None, None),
        // ── Retry-After is honoured on every failure that carries it, not only 429/503.
        row("RA 403 WAF with Retry-After", h(403), Some("60"), HTML, WAF_HTML, TR, Some(K::Infrastructure4xx), None, Some(60)),
        row("RA 400 invalid_grant with Retry-After", h(400), Some("60"), JSON, r#"{"error":"invalid_grant"}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), Some(60)),
        row("RA 302 with Retry-After", h(302), Some("10"), NO_CT, "", TR, Some(K::Redirect), None, Some(10)),
        // ── Trust §1: framework and gateway bodies are not verdicts.
        row("TR Spring Boot 403", h(403), NO_RA, JSON, r#"{"timestamp":"2026-09-21T14:13:20.000+00:00","status":403,"error":"Forbidden","path":"/oauth2/token"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR Spring Boot 401 with message and trace", h(401), NO_RA, JSON, r#"{"timestamp":"2026-09-21T14:13:20Z","status":401,"error":"Unauthorized","message":"Full authentication is required","trace":"at org.springframework…","path":"/oauth2/token"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR Spring Boot envelope with a snake_case error", h(400), NO_RA, JSON, r#"{"timestamp":"2026-09-21T14:13:20Z","status":400,"error":"invalid_grant","path":"/oauth2/token"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR 404 Not Found", h(404), NO_RA, JSON, r#"{"error":"Not Found"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR 401 Unauthorized", h(401), NO_RA, JSON, r#"{"error":"Unauthorized"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR 403 Forbidden", h(403), NO_RA, JSON, r#"{"error":"Forbidden"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR 200 portal Access denied", h(200), NO_RA, JSON, r#"{"error":"Access denied"}"#, TR, Some(K::MalformedSuccess), None, None),
        row("TR 200 portal access_denied", h(200), NO_RA, JSON, r#"{"error":"access_denied"}"#, TR, Some(K::OauthUnknownCode), Some("access_denied"), None),
        row("TR RFC 9457 problem details", h(400), NO_RA, Some("application/problem+json"), r#"{"type":"about:blank","title":"Bad Request","status":400,"error":"invalid_grant"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR ASP.NET statusCode", h(401), NO_RA, JSON, r#"{"statusCode":401,"error":"invalid_client"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR Express exception", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","exception":"TypeError"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR form envelope", h(400), NO_RA, FORM, "status=400&error=invalid_grant", TR, Some(K::Infrastructure4xx), None, None),
        row("TR code with a hyphen", h(400), NO_RA, JSON, r#"{"error":"invalid-grant"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR code with a space", h(400), NO_RA, JSON, r#"{"error":"invalid grant"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR code starting with a digit", h(400), NO_RA, JSON, r#"{"error":"4xx_error"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("TR lower-case gateway word", h(403), NO_RA, JSON, r#"{"error":"forbidden"}"#, TR, Some(K::OauthUnknownCode), Some("forbidden"), None),
        // ── Registered codes, each decided (docs/ARCHITECTURE.md, Decisions).
        row("TR 400 invalid_token (resource server)", h(400), NO_RA, JSON, r#"{"error":"invalid_token"}"#, TR, Some(K::OauthUnknownCode), Some("invalid_token"), None),
        row("TR 403 insufficient_scope (resource server)", h(403), NO_RA, JSON, r#"{"error":"insufficient_scope"}"#, TR, Some(K::OauthUnknownCode), Some("insufficient_scope"), None),
        row("TR 400 access_denied (authorization endpoint)", h(400), NO_RA, JSON, r#"{"error":"access_denied"}"#, TR, Some(K::OauthUnknownCode), Some("access_denied"), None),
        row("TR 400 invalid_dpop_proof", h(400), NO_RA, JSON, r#"{"error":"invalid_dpop_proof"}"#, TR, Some(K::OauthUnknownCode), Some("invalid_dpop_proof"), None),
        row("TR 400 expired_token (device flow)", h(400), NO_RA, JSON, r#"{"error":"expired_token"}"#, TR, Some(K::OauthUnknownCode), Some("expired_token"), None),
        row("TR 400 authorization_pending", h(400), NO_RA, JSON, r#"{"error":"authorization_pending"}"#, TR, Some(K::OauthUnknownCode), Some("authorization_pending"), None),
        row("TR 403 invalid_grant", h(403), NO_RA, JSON, r#"{"error":"invalid_grant"}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("TR 404 invalid_grant (not a token endpoint status)", h(404), NO_RA, JSON, r#"{"error":"invalid_grant"}"#, TR, Some(K::OauthUnknownCode), Some("invalid_grant"), None),
        row("TR 409 invalid_client", h(409), NO_RA, JSON, r#"{"error":"invalid_client"}"#, TR, Some(K::OauthUnknownCode), Some("invalid_client"), None),
        row("TR 401 unsupported_grant_type", h(401), NO_RA, JSON, r#"{"error":"unsupported_grant_type"}"#, PE, Some(K::OauthRejected), Some("unsupported_grant_type"), None),
        row("TR 400 invalid_scope form", h(400), NO_RA, FORM, "error=invalid_scope", PE, Some(K::OauthRejected), Some("invalid_scope"), None),
        // The registered retryable codes stay transient on every status that has a body verdict.
        row("TR 401 temporarily_unavailable", h(401), NO_RA, JSON, r#"{"error":"temporarily_unavailable"}"#, TR, Some(K::OauthRetryable), Some("temporarily_unavailable"), None),
        row("TR 403 server_error", h(403), NO_RA, JSON, r#"{"error":"server_error"}"#, TR, Some(K::OauthRetryable), Some("server_error"), None),
        row("TR 200 slow_down", h(200), NO_RA, JSON, r#"{"error":"slow_down"}"#, TR, Some(K::OauthRetryable), Some("slow_down"), None),
        row("TR 200 use_dpop_nonce", h(200), NO_RA, JSON, r#"{"error":"use_dpop_nonce"}"#, TR, Some(K::OauthRetryable), Some("use_dpop_nonce"), None),
        row("TR 401 use_dpop_nonce", h(401), NO_RA, JSON, r#"{"error":"use_dpop_nonce"}"#, TR, Some(K::OauthRetryable), Some("use_dpop_nonce"), None),
        // ── Vendors, in their own shapes.
        // GitHub: 200 with the RFC shape, its own codes.
        // https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens
        // https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors
        row("V GitHub 200 bad_refresh_token", h(200), NO_RA, JSON, r#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired.","error_uri":"https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"}"#, PE, Some(K::OauthRejected), Some("bad_refresh_token"), None),
        row("V GitHub 200 incorrect_client_credentials", h(200), NO_RA, JSON, r#"{"error":"incorrect_client_credentials","error_description":"The client_id and/or client_secret passed are incorrect.","error_uri":"https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials"}"#, PE, Some(K::OauthRejected), Some("incorrect_client_credentials"), None),
        row("V GitHub 200 form bad_refresh_token", h(200), NO_RA, FORM, "error=bad_refresh_token&error_description=The+refresh+token+passed+is+incorrect+or+expired.", PE, Some(K::OauthRejected), Some("bad_refresh_token"), None),
        row("V GitHub 400 bad_refresh_token", h(400), NO_RA, JSON, r#"{"error":"bad_refresh_token"}"#, PE, Some(K::OauthRejected), Some("bad_refresh_token"), None),
        row("V GitHub 200 other code", h(200), NO_RA, JSON, r#"{"error":"unverified_user_email"}"#, TR, Some(K::OauthUnknownCode), Some("unverified_user_email"), None),
        // Slack: 200 with "ok": false. https://api.slack.com/methods/oauth.v2.access
        row("V Slack invalid_refresh_token", h(200), NO_RA, JSON, r#"{"ok":false,"error":"invalid_refresh_token"}"#, PE, Some(K::OauthRejected), Some("invalid_refresh_token"), None),
        row("V Slack token_revoked", h(200), NO_RA, JSON, r#"{"ok":false,"error":"token_revoked"}"#, PE, Some(K::OauthRejected), Some("token_revoked"), None),
        row("V Slack token_expired", h(200), NO_RA, JSON, r#"{"ok":false,"error":"token_expired"}"#, PE, Some(K::OauthRejected), Some("token_expired"), None),
        row("V Slack invalid_client_id", h(200), NO_RA, JSON, r#"{"ok":false,"error":"invalid_client_id"}"#, PE, Some(K::OauthRejected), Some("invalid_client_id"), None),
        row("V Slack bad_client_secret", h(200), NO_RA, JSON, r#"{"ok":false,"error":"bad_client_secret"}"#, PE, Some(K::OauthRejected), Some("bad_client_secret"), None),
        row("V Slack invalid_grant_type", h(200), NO_RA, JSON, r#"{"ok":false,"error":"invalid_grant_type"}"#, PE, Some(K::OauthRejected), Some("invalid_grant_type"), None),
        row("V Slack ok:false invalid_grant", h(200), NO_RA, JSON, r#"{"ok":false,"error":"invalid_grant","warning":"superfluous_charset"}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("V Slack shape without ok:false", h(200), NO_RA, JSON, r#"{"error":"token_revoked"}"#, TR, Some(K::OauthUnknownCode), Some("token_revoked"), None),
        row("V Slack ok:\"false\" (a string)", h(200), NO_RA, JSON, r#"{"ok":"false","error":"token_revoked"}"#, TR, Some(K::OauthUnknownCode), Some("token_revoked"), None),
        row("V Slack ratelimited", h(200), NO_RA, JSON, r#"{"ok":false,"error":"ratelimited"}"#, TR, Some(K::OauthUnknownCode), Some("ratelimited"), None),
        row("V Slack code on a 400 (not Slack's shape)", h(400), NO_RA, JSON, r#"{"ok":false,"error":"token_revoked"}"#, TR, Some(K::OauthUnknownCode), Some("token_revoked"), None),
        // Google. https://developers.google.com/identity/protocols/oauth2#expiration,
        // https://github.com/googleapis/google-api-nodejs-client/issues/1256 (deleted_client)
        row("V Google invalid_grant", h(400), NO_RA, JSON_UTF8, "{\n  \"error\": \"invalid_grant\",\n  \"error_description\": \"Token has been expired or revoked.\"\n}", PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("V Google deleted_client", h(401), NO_RA, JSON_UTF8, r#"{"error":"deleted_client","error_description":"The OAuth client was deleted."}"#, PE, Some(K::OauthRejected), Some("deleted_client"), None),
        row("V Google invalid_client", h(401), NO_RA, JSON_UTF8, r#"{"error":"invalid_client","error_description":"The OAuth client was not found."}"#, PE, Some(K::OauthRejected), Some("invalid_client"), None),
        // Salesforce. https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm
        row("V Salesforce expired refresh token", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("V Salesforce invalid_client_id", h(400), NO_RA, JSON, r#"{"error":"invalid_client_id","error_description":"client identifier invalid"}"#, PE, Some(K::OauthRejected), Some("invalid_client_id"), None),
        row("V Salesforce inactive_user", h(400), NO_RA, JSON, r#"{"error":"inactive_user","error_description":"user is inactive"}"#, PE, Some(K::OauthRejected), Some("inactive_user"), None),
        row("V Salesforce inactive_org", h(400), NO_RA, JSON, r#"{"error":"inactive_org","error_description":"organization is locked"}"#, PE, Some(K::OauthRejected), Some("inactive_org"), None),
        row("V Salesforce rate_limit_exceeded", h(400), NO_RA, JSON, r#"{"error":"rate_limit_exceeded","error_description":"ip/user rate limit exceeded"}"#, TR, Some(K::OauthRetryable), Some("rate_limit_exceeded"), None),
        row("V Salesforce inactive_user on a 200 (no row)", h(200), NO_RA, JSON, r#"{"error":"inactive_user"}"#, TR, Some(K::OauthUnknownCode), Some("inactive_user"), None),
        // Microsoft Entra ID. https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes
        row("V Microsoft AADSTS700082 refresh token expired", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity.","error_codes":[700082],"timestamp":"2026-09-21 14:13:20Z","trace_id":"0000aaaa","correlation_id":"aaaa0000","error_uri":"https://login.microsoftonline.com/error?code=700082"}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("V Microsoft AADSTS70000", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"AADSTS70000: Provided grant is invalid or malformed.","error_codes":[70000]}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("V Microsoft AADSTS50173", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"AADSTS50173: The provided grant has expired due to it being revoked.","error_codes":[50173]}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("V Microsoft AADSTS7000215 bad secret", h(401), NO_RA, JSON, r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#, PE, Some(K::OauthRejected), Some("invalid_client"), None),
        row("V Microsoft AADSTS50196 loop detected", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"AADSTS50196: The server terminated an operation because it encountered a client request loop.","error_codes":[50196]}"#, TR, Some(K::OauthRetryable), Some("invalid_grant"), None),
        row("V Microsoft AADSTS90033 transient", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"AADSTS90033: A transient error has occurred. Please try again.","error_codes":[90033]}"#, TR, Some(K::OauthRetryable), Some("invalid_grant"), None),
        row("V Microsoft AADSTS90055 throttled", h(400), NO_RA, JSON, r#"{"error":"invalid_request","error_codes":[90055]}"#, TR, Some(K::OauthRetryable), Some("invalid_request"), None),
        row("V Microsoft sub-code as a string", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_codes":["90006"]}"#, TR, Some(K::OauthRetryable), Some("invalid_grant"), None),
        // Okta. https://developer.okta.com/docs/reference/api/oidc/#response-properties-2
        row("V Okta invalid_grant", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"The refresh token is invalid or expired."}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("V Okta invalid_client", h(401), NO_RA, JSON, r#"{"error":"invalid_client","error_description":"The client secret supplied for a confidential client is invalid."}"#, PE, Some(K::OauthRejected), Some("invalid_client"), None),
        // Auth0 answers invalid_grant with 403. https://auth0.com/docs/api/authentication#standard-error-responses
        row("V Auth0 invalid_grant 403", h(403), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("V Auth0 unauthorized_client 403", h(403), NO_RA, JSON, r#"{"error":"unauthorized_client","error_description":"Grant type 'refresh_token' not allowed for the client."}"#, PE, Some(K::OauthRejected), Some("unauthorized_client"), None),
        row("V Auth0 access_denied 401", h(401), NO_RA, JSON, r#"{"error":"access_denied","error_description":"Unauthorized"}"#, TR, Some(K::OauthUnknownCode), Some("access_denied"), None),
        // Keycloak. https://github.com/keycloak/keycloak (TokenManager, RefreshTokenGrantType)
        row("V Keycloak Token is not active", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"Token is not active"}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("V Keycloak Session not active", h(400), NO_RA, JSON, r#"{"error":"invalid_grant","error_description":"Session not active"}"#, PE, Some(K::OauthRejected), Some("invalid_grant"), None),
        row("V Keycloak unauthorized_client", h(401), NO_RA, JSON, r#"{"error":"unauthorized_client","error_description":"Invalid client or Invalid client credentials"}"#, PE, Some(K::OauthRejected), Some("unauthorized_client"), None),
        // Zoom says a dead refresh token with invalid_request: transient unless listed.
        row("V Zoom invalid_request", h(400), NO_RA, JSON, r#"{"reason":"Invalid Token!","error":"invalid_request"}"#, TR, Some(K::OauthUnknownCode), Some("invalid_request"), None),
        // Twitch answers in a framework envelope: never a verdict.
        row("V Twitch envelope", h(400), NO_RA, JSON, r#"{"status":400,"message":"Invalid refresh token"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("V Twitch envelope with error", h(400), NO_RA, JSON, r#"{"error":"Bad Request","status":400,"message":"Invalid refresh token"}"#, TR, Some(K::Infrastructure4xx), None, None),
        // ── A 2xx token with control characters is never served.
        row("CR/LF in access_token", h(200), NO_RA, JSON, r#"{"access_token":"MARKERtok\r\nX-Evil: 1","expires_in":60}"#, TR, Some(K::MalformedSuccess), None, None),
        row("LF in access_token", h(200), NO_RA, JSON, r#"{"access_token":"MARKERtok\nx"}"#, TR, Some(K::MalformedSuccess), None, None),
        row("NUL in access_token", h(200), NO_RA, JSON, r#"{"access_token":"MARKERtok\u0000"}"#, TR, Some(K::MalformedSuccess), None, None),
        row("TAB in access_token", h(200), NO_RA, JSON, r#"{"access_token":"MARKER\ttok"}"#, TR, Some(K::MalformedSuccess), None, None),
        row("DEL in access_token", h(200), NO_RA, JSON, r#"{"access_token":"MARKERtok\u007f"}"#, TR, Some(K::MalformedSuccess), None, None),
        row("C1 in access_token", h(200), NO_RA, JSON, r#"{"access_token":"MARKERtok\u0085"}"#, TR, Some(K::MalformedSuccess), None, None),
        row("form CR/LF in access_token", h(200), NO_RA, FORM, "access_token=MARKERtok%0D%0AX-Evil%3A+1", TR, Some(K::MalformedSuccess), None, None),
        row("non-ASCII access_token is still a token", h(200), NO_RA, JSON, r#"{"access_token":"MARKERtoké"}"#, OK, None, None, None),
    ]
}

#[test]
fn classification_table() {
    let rows = rows();
    assert!(rows.len() > 100);
    for r in &rows {
        check(r);
    }
}

#[test]
fn the_table_covers_every_failure_kind() {
    let rows = rows();
    // `credential_file` is the runtime's: an attempt not sent (its token file unusable)
    // never reaches the classifier.
    let classified = FailureKind::ALL
        .iter()
        .filter(|&&k| k != FailureKind::CredentialFile);
    for &k in classified {
        assert!(rows.iter().any(|r| r.kind == Some(k)), "no row for {k}");
    }
}

#[test]
fn failure_kind_names_round_trip() {
    for &k in FailureKind::ALL {
        assert_eq!(FailureKind::parse(k.as_str()), Some(k));
        assert_eq!(k.to_string(), k.as_str());
    }
    assert_eq!(FailureKind::parse("nope"), None);
    let mut names: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), FailureKind::ALL.len());
}

// ── Successful answers: what the grant holds.

/// `(name, body, expected lifetime in seconds, lifetime from the provider)`.
#[test]
#[rustfmt::skip]
fn expires_in_is_lenient_and_falls_back_to_the_default() {
    let policy = ClassifyPolicy {
        default_lifetime: Duration::from_secs(1234),
        ..ClassifyPolicy::default()
    };
    let year = MAX_LIFETIME.as_secs();
    let cases: &[(&str, &str, u64, bool)] = &[
        ("number", r#"{"access_token":"a","expires_in":3600}"#, 3600, true),
        ("numeric string", r#"{"access_token":"a","expires_in":"3600"}"#, 3600, true),
        ("padded string", r#"{"access_token":"a","expires_in":" 60 "}"#, 60, true),
        ("missing", r#"{"access_token":"a"}"#, 1234, false),
        ("null", r#"{"access_token":"a","expires_in":null}"#, 1234, false),
        ("zero", r#"{"access_token":"a","expires_in":0}"#, 1234, false),
        ("zero string", r#"{"access_token":"a","expires_in":"0"}"#, 1234, false),
        ("negative", r#"{"access_token":"a","expires_in":-5}"#, 1234, false),
        ("negative string", r#"{"access_token":"a","expires_in":"-5"}"#, 1234, false),
        ("float", r#"{"access_token":"a","expires_in":3599.9}"#, 3599, true),
        ("float string", r#"{"access_token":"a","expires_in":"59.5"}"#, 59, true),
        ("float below a second", r#"{"access_token":"a","expires_in":0.5}"#, 1234, false),
        ("word", r#"{"access_token":"a","expires_in":"soon"}"#, 1234, false),
        ("bool", r#"{"access_token":"a","expires_in":true}"#, 1234, false),
        ("array", r#"{"access_token":"a","expires_in":[3600]}"#, 1234, false),
        ("huge", r#"{"access_token":"a","expires_in":99999999999}"#, year, true),
        ("u64::MAX", r#"{"access_token":"a","expires_in":18446744073709551615}"#, year, true),
        ("beyond u64", r#"{"access_token":"a","expires_in":1e300}"#, year, true),
        ("huge string", r#"{"access_token":"a","expires_in":"99999999999999999999999"}"#, year, true),
        ("form number", "access_token=a&expires_in=7200", 7200, true),
        ("form missing", "access_token=a", 1234, false),
        ("form garbage", "access_token=a&expires_in=x", 1234, false),
    ];
    for &(name, body, secs, from_provider) in cases {
        let v = classify(&answer(200, JSON, body), T0, &policy, &[]);
        let g = grant_of(&v);
        assert_eq!(g.lifetime, Duration::from_secs(secs), "{name}");
        assert_eq!(g.lifetime_from_provider, from_provider, "{name}");
    }
}

#[test]
fn the_grant_keeps_what_the_provider_sent() {
    let v = run(&answer(
        200,
        JSON,
        r#"{"access_token":"at-1","refresh_token":"rt-2","token_type":"DPoP","scope":"repo read","expires_in":60,"extra":{"x":1}}"#,
    ));
    let g = grant_of(&v);
    assert_eq!(g.access_token.expose(), "at-1");
    assert_eq!(g.refresh_token.as_ref().map(Secret::expose), Some("rt-2"));
    assert_eq!(g.token_type, "DPoP");
    assert_eq!(g.scope.as_deref(), Some("repo read"));
    assert_eq!(g.lifetime, Duration::from_secs(60));

    // Defaults: token_type Bearer, no refresh token (an empty one is no rotation), no scope.
    let v = run(&answer(
        200,
        JSON,
        r#"{"access_token":"at","refresh_token":"","token_type":""}"#,
    ));
    let g = grant_of(&v);
    assert_eq!(g.token_type, "Bearer");
    assert!(g.refresh_token.is_none());
    assert!(g.scope.is_none());

    // token_type keeps its case.
    let v = run(&answer(
        200,
        JSON,
        r#"{"access_token":"at","token_type":"bEaReR"}"#,
    ));
    assert_eq!(grant_of(&v).token_type, "bEaReR");

    // Form-encoded: values are decoded.
    let v = run(&answer(
        200,
        FORM,
        "access_token=a%2Bb%3D&refresh_token=r%2Fs&scope=repo+user",
    ));
    let g = grant_of(&v);
    assert_eq!(g.access_token.expose(), "a+b=");
    assert_eq!(g.refresh_token.as_ref().map(Secret::expose), Some("r/s"));
    assert_eq!(g.scope.as_deref(), Some("repo user"));
}

/// Pinned: a 2xx body that carries both a token and an OAuth `error` is judged by the error
/// (the provider said something went wrong; the token is not trusted) — transient, as every
/// code on a 2xx without a vendor row.
#[test]
fn a_2xx_error_code_wins_over_a_token_in_the_same_body() {
    let v = run(&answer(
        200,
        JSON,
        r#"{"access_token":"at","error":"invalid_grant"}"#,
    ));
    assert!(
        matches!(&v, Verdict::Transient(f) if f.kind == FailureKind::OauthUnknownCode),
        "{v:?}"
    );
    // …but an `error` that is not an OAuth code does not spoil a token.
    for body in [
        r#"{"access_token":"at","error":"Access denied"}"#,
        r#"{"access_token":"at","error":""}"#,
        r#"{"access_token":"at","error":null}"#,
        r#"{"access_token":"at","error":0}"#,
    ] {
        assert!(
            matches!(run(&answer(200, JSON, body)), Verdict::Success(_)),
            "{body}"
        );
    }
}

// ── Per-policy codes.

#[test]
#[rustfmt::skip]
fn per_policy_codes_and_their_precedence() {
    let policy = ClassifyPolicy {
        transient_codes: vec!["invalid_grant".into(), "both_lists".into(), "vendor_busy".into()],
        permanent_codes: vec!["server_error".into(), "both_lists".into(), "slow_down".into(), "AccountLocked".into(), "account_locked".into()],
        ..ClassifyPolicy::default()
    };
    let rows = [
        // An extra transient code makes even invalid_grant transient (providers differ).
        row("P invalid_grant configured transient", h(400), NO_RA, JSON, r#"{"error":"invalid_grant"}"#, TR, Some(K::OauthRetryable), Some("invalid_grant"), None),
        row("P vendor code configured transient", h(403), NO_RA, JSON, r#"{"error":"vendor_busy"}"#, TR, Some(K::OauthRetryable), Some("vendor_busy"), None),
        row("P vendor code on a 200", h(200), NO_RA, JSON, r#"{"error":"vendor_busy"}"#, TR, Some(K::OauthRetryable), Some("vendor_busy"), None),
        // An extra permanent code overrides the RFC's retryable set…
        row("P server_error configured permanent", h(400), NO_RA, JSON, r#"{"error":"server_error"}"#, PE, Some(K::OauthRejected), Some("server_error"), None),
        row("P server_error on a 200", h(200), NO_RA, JSON, r#"{"error":"server_error"}"#, PE, Some(K::OauthRejected), Some("server_error"), None),
        // …but not the status rules: 408/429/5xx stay transient whatever the body says.
        row("P server_error configured permanent on a 503", h(503), NO_RA, JSON, r#"{"error":"server_error"}"#, TR, Some(K::Server5xx), Some("server_error"), None),
        row("P slow_down configured permanent on a 429", h(429), NO_RA, JSON, r#"{"error":"slow_down"}"#, TR, Some(K::RateLimited), Some("slow_down"), None),
        // A code in both lists: transient wins.
        row("P code in both lists", h(400), NO_RA, JSON, r#"{"error":"both_lists"}"#, TR, Some(K::OauthRetryable), Some("both_lists"), None),
        // Unlisted codes keep the default rules.
        row("P invalid_client unlisted", h(401), NO_RA, JSON, r#"{"error":"invalid_client"}"#, PE, Some(K::OauthRejected), Some("invalid_client"), None),
        row("P temporarily_unavailable unlisted", h(400), NO_RA, JSON, r#"{"error":"temporarily_unavailable"}"#, TR, Some(K::OauthRetryable), Some("temporarily_unavailable"), None),
        // Codes are compared exactly (case-sensitive, as RFC 6749 defines them), and a code
        // that is not lower-case snake_case is no OAuth code at all…
        row("P case differs", h(400), NO_RA, JSON, r#"{"error":"Invalid_Grant"}"#, TR, Some(K::Infrastructure4xx), None, None),
        // …unless the workload lists it.
        row("P listed code in another case", h(400), NO_RA, JSON, r#"{"error":"AccountLocked"}"#, PE, Some(K::OauthRejected), Some("AccountLocked"), None),
        // A listed code still needs the OAuth shape: a framework envelope is never a verdict.
        row("P listed code in a Spring envelope", h(400), NO_RA, JSON, r#"{"status":400,"error":"account_locked","path":"/token"}"#, TR, Some(K::Infrastructure4xx), None, None),
        row("P listed unknown code", h(400), NO_RA, JSON, r#"{"error":"account_locked"}"#, PE, Some(K::OauthRejected), Some("account_locked"), None),
    ];
    for r in &rows {
        check_with(r, &policy);
    }
}

// ── Retry-After.

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn http_date(t: Timestamp) -> String {
    httpdate::fmt_http_date(t.to_system_time())
}

#[test]
fn retry_after_parsing() {
    let max = secs(3600);
    let p = |v: &str| parse_retry_after(v, T0, max);
    let cases: Vec<(String, Option<Duration>)> = vec![
        ("0".into(), Some(secs(0))),
        ("120".into(), Some(secs(120))),
        ("0120".into(), Some(secs(120))),
        ("  120  ".into(), Some(secs(120))),
        ("\t60\r\n".into(), Some(secs(60))),
        ("3600".into(), Some(secs(3600))),
        ("3601".into(), Some(max)),
        ("18446744073709551615".into(), Some(max)),
        ("99999999999999999999999999999999999999".into(), Some(max)),
        ("-5".into(), None),
        ("+5".into(), None),
        ("1.5".into(), None),
        ("1e3".into(), None),
        ("5s".into(), None),
        ("0x10".into(), None),
        ("1 2".into(), None),
        ("\u{0661}\u{0662}".into(), None),
        ("soon".into(), None),
        ("".into(), None),
        ("   ".into(), None),
        // HTTP-dates: the future gives the distance, the past gives zero, far future clamps.
        (http_date(T0.plus(secs(90))), Some(secs(90))),
        (
            format!("  {}  ", http_date(T0.plus(secs(90)))),
            Some(secs(90)),
        ),
        (http_date(T0), Some(secs(0))),
        (
            http_date(Timestamp::from_millis(T0.as_millis() - 3_000_000)),
            Some(secs(0)),
        ),
        ("Sun, 06 Nov 1994 08:49:37 GMT".into(), Some(secs(0))),
        (http_date(T0.plus(secs(7 * 86_400))), Some(max)),
        // The obsolete forms RFC 9110 still requires recipients to accept.
        ("Monday, 21-Sep-26 14:14:50 GMT".into(), Some(secs(90))),
        ("Mon Sep 21 14:14:50 2026".into(), Some(secs(90))),
        // Not dates.
        ("Mon, 32 Sep 2026 14:14:50 GMT".into(), None),
        ("2026-09-21T14:14:50Z".into(), None),
        ("Mon, 21 Sep 2026 14:14:50 GMT garbage".into(), None),
    ];
    for (value, want) in &cases {
        assert_eq!(p(value), *want, "{value:?}");
    }
}

#[test]
fn retry_after_dates_are_relative_to_now_at_millisecond_precision() {
    let now = T0.plus(Duration::from_millis(500));
    let v = parse_retry_after(&http_date(T0.plus(secs(10))), now, secs(3600));
    assert_eq!(v, Some(Duration::from_millis(9_500)));
}

#[test]
fn retry_after_max_zero_clamps_everything_to_zero() {
    for v in ["0", "10", "99999999999999999999999"] {
        assert_eq!(
            parse_retry_after(v, T0, Duration::ZERO),
            Some(Duration::ZERO),
            "{v}"
        );
    }
    assert_eq!(parse_retry_after("junk", T0, Duration::ZERO), None);
}

#[test]
fn retry_after_uses_the_policy_maximum() {
    let policy = ClassifyPolicy {
        max_retry_after: secs(300),
        ..ClassifyPolicy::default()
    };
    let a = RawOutcome::Response(HttpAnswer {
        status: 429,
        retry_after: Some("900".into()),
        content_type: None,
        rate_limit: Default::default(),
        body: Vec::new(),
        truncated: false,
    });
    let v = classify(&a, T0, &policy, &[]);
    assert_eq!(failure_of(&v).retry_after, Some(secs(300)));
}

// ── Large and truncated bodies.

fn big_html(len: usize) -> Vec<u8> {
    let mut b = b"<html><head><title>Request blocked by policy</title></head><body>".to_vec();
    while b.len() < len {
        b.extend_from_slice(b"<p>lorem ipsum dolor sit amet</p>\n");
    }
    b.truncate(len);
    b
}

#[test]
fn an_8_mib_page_cut_to_the_body_limit_is_an_infrastructure_4xx() {
    let full = big_html(8 << 20);
    let a = HttpAnswer {
        status: 403,
        retry_after: None,
        content_type: Some("text/html".into()),
        rate_limit: Default::default(),
        body: full[..BODY_LIMIT].to_vec(),
        truncated: true,
    };
    let v = run(&RawOutcome::Response(a));
    let f = failure_of(&v);
    assert!(matches!(v, Verdict::Transient(_)));
    assert_eq!(f.kind, FailureKind::Infrastructure4xx);
    assert!(
        f.summary.contains("Request blocked by policy"),
        "{}",
        f.summary
    );
    assert_sane_summary(&f.summary, "8 MiB");

    // Handed the whole 8 MiB (a driver that forgot the limit), the answer is the same.
    let v = run(&answer(403, Some("text/html"), full));
    assert_eq!(failure_of(&v).kind, FailureKind::Infrastructure4xx);
}

#[test]
fn a_truncated_json_error_body_is_not_structured() {
    let mut body = br#"{"error":"invalid_grant","error_description":""#.to_vec();
    body.resize(BODY_LIMIT, b'x');
    let a = HttpAnswer {
        status: 400,
        retry_after: None,
        content_type: JSON.map(str::to_owned),
        rate_limit: Default::default(),
        body,
        truncated: true,
    };
    let v = run(&RawOutcome::Response(a));
    assert_eq!(failure_of(&v).kind, FailureKind::Infrastructure4xx, "{v:?}");
}

/// A form-encoded body cut at the limit can still parse, into a cut-off token or code: a
/// truncated body must never yield a token (it would be served and fail every request).
#[test]
fn a_truncated_form_body_never_yields_a_token_or_a_code() {
    let mut body = b"token_type=bearer&access_token=".to_vec();
    body.resize(BODY_LIMIT, b'a');
    let v = run(&RawOutcome::Response(HttpAnswer {
        status: 200,
        retry_after: None,
        content_type: FORM.map(str::to_owned),
        rate_limit: Default::default(),
        body,
        truncated: true,
    }));
    let f = failure_of(&v);
    assert_eq!(f.kind, FailureKind::MalformedSuccess, "{v:?}");
    assert!(!f.summary.contains("aaaa"), "{}", f.summary);

    let mut body = b"error_description=".to_vec();
    body.resize(BODY_LIMIT - 20, b'a');
    body.extend_from_slice(b"&error=invalid_gr");
    let v = run(&RawOutcome::Response(HttpAnswer {
        status: 400,
        retry_after: None,
        content_type: FORM.map(str::to_owned),
        rate_limit: Default::default(),
        body,
        truncated: true,
    }));
    let f = failure_of(&v);
    assert_eq!(f.kind, FailureKind::Infrastructure4xx, "{v:?}");
    assert_eq!(f.error_code, None);
}

/// A complete JSON token whose transport still flagged truncation (trailing bytes beyond the
/// limit) is complete by construction: JSON cannot be cut and still parse.
#[test]
fn a_complete_json_token_is_accepted_even_when_flagged_truncated() {
    let mut body = br#"{"access_token":"at","expires_in":60}"#.to_vec();
    body.resize(BODY_LIMIT, b' ');
    let v = run(&RawOutcome::Response(HttpAnswer {
        status: 200,
        retry_after: None,
        content_type: JSON.map(str::to_owned),
        rate_limit: Default::default(),
        body,
        truncated: true,
    }));
    assert!(matches!(v, Verdict::Success(_)), "{v:?}");
}

// ── Summaries.

#[test]
fn summaries_use_the_html_title_when_present() {
    let v = run(&answer(403, HTML, WAF_HTML));
    let s = &failure_of(&v).summary;
    assert!(s.contains("Attention Required! | Cloudflare"), "{s}");
    assert!(!s.contains("<title"), "{s}");
    assert!(s.contains("403") && s.contains("text/html"), "{s}");

    // Upper-case tags and attributes, whitespace inside the title.
    let v = run(&answer(
        403,
        HTML,
        "<HTML><HEAD><TITLE lang=\"en\">\n  Access\n\tDenied  </TITLE></HEAD></HTML>",
    ));
    let s = &failure_of(&v).summary;
    assert!(s.ends_with(": Access Denied"), "{s}");

    // No title: an excerpt of the text.
    let v = run(&answer(
        401,
        HTML,
        "<html><body>Unauthorized request</body></html>",
    ));
    assert!(failure_of(&v).summary.contains("Unauthorized request"));

    // An empty title falls back to the excerpt.
    let v = run(&answer(
        403,
        HTML,
        "<html><title> </title>Denied here</html>",
    ));
    assert!(failure_of(&v).summary.contains("Denied here"));
}

#[test]
fn summaries_say_when_the_body_is_empty() {
    let v = run(&answer(401, None, ""));
    let s = &failure_of(&v).summary;
    assert!(
        s.contains("empty body") && s.contains("no content type"),
        "{s}"
    );
}

#[test]
fn summaries_carry_the_code_and_description() {
    let v = run(&answer(
        400,
        JSON,
        r#"{"error":"invalid_grant","error_description":"Token has been\nexpired or revoked."}"#,
    ));
    let s = &failure_of(&v).summary;
    assert_eq!(
        s,
        "HTTP 400 invalid_grant: Token has been expired or revoked."
    );

    let v = run(&answer(429, JSON, r#"{"error":"slow_down"}"#));
    assert_eq!(failure_of(&v).summary, "HTTP 429 slow_down");
}

#[test]
fn transport_summaries_name_the_kind() {
    let v = run(&RawOutcome::Transport {
        kind: TransportKind::Dns,
        detail: "failed to lookup\naddress\tinformation".into(),
    });
    assert_eq!(
        failure_of(&v).summary,
        "dns: failed to lookup address information"
    );
}

#[test]
fn a_2xx_body_is_never_quoted() {
    let bodies: &[&[u8]] = &[
        b"<html><title>MARKERtok</title></html>",
        b"{\"id_token\":\"MARKERtok\"}",
        b"MARKERtok",
        b"{\"access_token\":\"\",\"refresh_token\":\"MARKERtok\"}",
        b"access_token=&refresh_token=MARKERtok",
    ];
    for (i, body) in bodies.iter().enumerate() {
        for status in [200, 201, 204, 299] {
            let v = run(&answer(status, JSON, *body));
            let f = failure_of(&v);
            assert_eq!(f.kind, FailureKind::MalformedSuccess, "{i}");
            assert!(!f.summary.contains("MARKER"), "{i}: {}", f.summary);
            assert!(!format!("{v:?}").contains("MARKER"), "{i}: Debug leaks");
        }
    }
}

/// An adversarial corpus: every summary is short, single-line and free of control and
/// invisible formatting characters.
#[test]
fn summaries_are_short_and_free_of_control_characters() {
    let nasty = "a\u{0}b\u{7}c\u{1b}[31mred\u{1b}[0m\r\nd\u{85}e\u{202E}evil\u{202C}f\u{200B}g\u{2066}h\u{FEFF}i\u{9b}j";
    let long_code = "c".repeat(128);
    let long_desc = "d".repeat(10_000);
    let long_ct = format!("text/html; {}", "x".repeat(1000));
    let mut outcomes = vec![
        answer(403, HTML, format!("<html><title>{nasty}</title></html>")),
        answer(403, HTML, nasty),
        answer(500, TEXT, nasty.repeat(200)),
        answer(
            400,
            JSON,
            format!(
                r#"{{"error":"invalid_grant","error_description":"{}"}}"#,
                nasty.escape_unicode()
            ),
        ),
        answer(
            400,
            JSON,
            format!(r#"{{"error":"{long_code}","error_description":"{long_desc}"}}"#),
        ),
        answer(
            503,
            JSON,
            format!(r#"{{"error":"{long_code}","error_description":"{long_desc}"}}"#),
        ),
        answer(403, Some(&long_ct), "x".repeat(5000)),
        answer(200, Some(&long_ct), "x".repeat(5000)),
        answer(403, Some(nasty), "blocked"),
        answer(403, HTML, format!("<title>{}</title>", "t".repeat(5000))),
        answer(403, HTML, " \n\t ".repeat(1000) + "late text"),
        answer(400, TEXT, "é".repeat(1000)),
        answer(400, TEXT, "€".repeat(67) + "x"),
    ];
    for kind in [TransportKind::Io, TransportKind::Tls] {
        outcomes.push(RawOutcome::Transport {
            kind,
            detail: nasty.repeat(50),
        });
    }
    for (i, o) in outcomes.iter().enumerate() {
        let v = run(o);
        assert_sane_summary(&failure_of(&v).summary, &format!("case {i}"));
    }
}

// ── Secrets echoed by a server never reach a summary.

fn secrets() -> [Secret; 2] {
    [
        Secret::from(REQUEST_SECRET),
        Secret::from("client-s3cr3t value/+=?&%"),
    ]
}

fn classify_with_secrets(o: &RawOutcome) -> Failure {
    let s = secrets();
    let v = classify(o, T0, &ClassifyPolicy::default(), &[&s[0], &s[1]]);
    failure_of(&v).clone()
}

/// Every 6-byte window of every secret: a partial secret is a leak too.
fn assert_no_secret_fragment(summary: &str, ctx: &str) {
    for s in secrets() {
        let bytes = s.expose().as_bytes();
        for w in bytes.windows(6) {
            let w = std::str::from_utf8(w).unwrap();
            assert!(
                !summary.contains(w),
                "{ctx}: fragment {w:?} of a secret in {summary:?}"
            );
        }
    }
}

fn encoded(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .unwrap()
        .trim_start_matches('=')
        .to_owned()
}

fn json_escaped(s: &str) -> String {
    let j = serde_json::to_string(s).unwrap();
    j[1..j.len() - 1].to_owned()
}

#[test]
fn echoed_secrets_are_scrubbed_from_summaries() {
    let mut outcomes = Vec::new();
    for secret in secrets() {
        let raw_s = secret.expose().to_owned();
        let enc = encoded(&raw_s);
        let enc_lower = enc.to_lowercase();
        let json_slash = json_escaped(&raw_s).replace('/', "\\/");
        let json_plain = json_escaped(&raw_s);
        let upper = raw_s.to_uppercase();
        let html: String = raw_s.chars().map(|c| format!("&#{};", c as u32)).collect();
        let json_u: String = raw_s
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        let prefix: String = raw_s.chars().take(10).collect();
        for echo in [
            &raw_s,
            &enc,
            &enc_lower,
            &json_slash,
            &json_plain,
            &upper,
            &html,
            &json_u,
            &prefix,
        ] {
            // In an HTML page (excerpt and title), a JSON body without a code, a JSON
            // description, a form description, a transport detail, on 4xx and 5xx.
            outcomes.push(answer(
                403,
                HTML,
                format!("<html><body>bad token {echo} here</body></html>"),
            ));
            outcomes.push(answer(
                403,
                HTML,
                format!("<html><title>token {echo}</title></html>"),
            ));
            outcomes.push(answer(
                502,
                JSON,
                format!(r#"{{"message":"upstream said {echo}"}}"#),
            ));
            outcomes.push(answer(
                400,
                TEXT,
                format!("refresh_token={echo} is unknown"),
            ));
            outcomes.push(RawOutcome::Transport {
                kind: TransportKind::Io,
                detail: format!("POST https://idp/token?refresh_token={echo}: failed"),
            });
        }
        // Structured descriptions are decoded before they are shown: echo the raw value.
        outcomes.push(answer(
            400,
            JSON,
            format!(
                r#"{{"error":"invalid_grant","error_description":"refresh token {} is revoked"}}"#,
                json_escaped(&raw_s)
            ),
        ));
        outcomes.push(answer(
            400,
            FORM,
            format!("error=invalid_grant&error_description=token+{enc}+revoked"),
        ));
        outcomes.push(answer(
            200,
            JSON,
            format!(
                r#"{{"error":"invalid_grant","error_description":"{}"}}"#,
                json_escaped(&raw_s)
            ),
        ));
        outcomes.push(answer(
            503,
            JSON,
            format!(
                r#"{{"error":"server_error","error_description":"{}"}}"#,
                json_escaped(&raw_s)
            ),
        ));
    }
    for (i, o) in outcomes.iter().enumerate() {
        let f = classify_with_secrets(o);
        assert_no_secret_fragment(&f.summary, &format!("case {i} {o:?}"));
        assert_sane_summary(&f.summary, &format!("case {i}"));
    }
}

/// A secret that starts just before the excerpt's cut is scrubbed whole first, so not even
/// its head shows.
#[test]
fn a_secret_straddling_the_excerpt_cut_leaves_no_fragment() {
    for offset in (EXCERPT_LIMIT - 30)..(EXCERPT_LIMIT + 5) {
        let body = format!("{}{REQUEST_SECRET} trailing text", "y".repeat(offset));
        for o in [
            answer(403, TEXT, body.clone()),
            answer(403, HTML, format!("<title>{body}</title>")),
            answer(
                400,
                JSON,
                format!(r#"{{"error":"invalid_grant","error_description":"{body}"}}"#),
            ),
            RawOutcome::Transport {
                kind: TransportKind::Io,
                detail: body.clone(),
            },
        ] {
            let f = classify_with_secrets(&o);
            assert_no_secret_fragment(&f.summary, &format!("offset {offset}"));
        }
    }
}

/// Pinned: secrets shorter than 4 bytes are not scrubbed (scrubbing "a" would blank every
/// "a"); real refresh tokens and client secrets are far longer.
#[test]
fn very_short_secrets_are_not_scrubbed() {
    let short = Secret::from("abc");
    let v = classify(
        &answer(403, TEXT, "abc denied"),
        T0,
        &ClassifyPolicy::default(),
        &[&short],
    );
    assert!(failure_of(&v).summary.contains("abc denied"));
}

#[test]
fn the_debug_form_of_an_answer_never_shows_the_body() {
    let a = HttpAnswer {
        status: 200,
        retry_after: None,
        content_type: None,
        rate_limit: Default::default(),
        body: b"{\"access_token\":\"MARKERtok\"}".to_vec(),
        truncated: false,
    };
    let d = format!("{a:?}");
    assert!(!d.contains("MARKER") && d.contains("body_len"), "{d}");
    let v = run(&RawOutcome::Response(a));
    assert!(!format!("{v:?}").contains("MARKER"));
}

#[test]
fn excerpt_cuts_at_a_character_boundary_and_marks_the_cut() {
    let e = excerpt("é".repeat(300).as_bytes());
    assert!(e.ends_with('…'));
    assert!(e.len() <= EXCERPT_LIMIT + '…'.len_utf8());
    assert_eq!(excerpt(b"  a \n\n b  "), "a b");
    assert_eq!(excerpt(b""), "");
    assert_eq!(excerpt(b"\xff\xfe"), "");
}

// ── Vendor rate-limit headers.

/// `T0` in epoch seconds, for `X-RateLimit-Reset` values.
const T0_SECS: u64 = 1_790_000_000;

/// Which header a case sets.
#[derive(Debug, Clone, Copy)]
enum Rl {
    Reset(&'static str),
    Remaining(&'static str),
    Ietf(&'static str),
    IetfReset(&'static str),
    IetfRemaining(&'static str),
    RetryAfter(&'static str),
}

fn with_headers(status: u16, body: &str, headers: &[Rl]) -> RawOutcome {
    let mut a = HttpAnswer {
        status,
        retry_after: None,
        content_type: JSON.map(str::to_owned),
        rate_limit: RateLimitHeaders::default(),
        body: body.as_bytes().to_vec(),
        truncated: false,
    };
    for h in headers {
        let v = |s: &str| Some(s.to_owned());
        match *h {
            Rl::Reset(s) => a.rate_limit.reset = v(s),
            Rl::Remaining(s) => a.rate_limit.remaining = v(s),
            Rl::Ietf(s) => a.rate_limit.ietf = v(s),
            Rl::IetfReset(s) => a.rate_limit.ietf_reset = v(s),
            Rl::IetfRemaining(s) => a.rate_limit.ietf_remaining = v(s),
            Rl::RetryAfter(s) => a.retry_after = v(s),
        }
    }
    RawOutcome::Response(a)
}

/// `(name, status, headers, expected hold in seconds)`, with `max_retry_after` = 3600 and
/// `now` = T0. Sources: GitHub documents epoch seconds
/// (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api), so do
/// Okta (`X-Rate-Limit-Reset`, https://developer.okta.com/docs/reference/rl-best-practices/)
/// and Auth0 (https://auth0.com/docs/troubleshoot/customer-support/operational-policies/rate-limit-policy);
/// the IETF fields are draft-ietf-httpapi-ratelimit-headers (-06 and earlier: `RateLimit-Reset`
/// delta seconds; -07 dictionary `reset`; -08 on list items with `r` / `t`).
#[test]
#[rustfmt::skip]
fn rate_limit_headers_become_holds() {
    use Rl::*;
    let epoch_60 = (T0_SECS + 60).to_string().leak() as &'static str;
    let epoch_120 = (T0_SECS + 120).to_string().leak() as &'static str;
    let epoch_7200 = (T0_SECS + 7200).to_string().leak() as &'static str;
    let epoch_past = (T0_SECS - 60).to_string().leak() as &'static str;
    let epoch_frac = format!("{}.2", T0_SECS + 60).leak() as &'static str;
    let cases: Vec<(&str, u16, Vec<Rl>, Option<u64>)> = vec![
        ("429 X-RateLimit-Reset epoch (GitHub)", 429, vec![Reset(epoch_60)], Some(60)),
        ("429 X-Rate-Limit-Reset epoch (Okta)", 429, vec![Reset(epoch_120), Remaining("0")], Some(120)),
        ("429 X-RateLimit-Reset delta", 429, vec![Reset("30")], Some(30)),
        ("503 X-RateLimit-Reset delta", 503, vec![Reset("45")], Some(45)),
        ("429 reset epoch in the past", 429, vec![Reset(epoch_past)], Some(0)),
        ("429 reset epoch with a fraction", 429, vec![Reset(epoch_frac)], Some(61)),
        ("429 reset delta with a fraction", 429, vec![Reset("1.5")], Some(2)),
        ("429 reset delta padded", 429, vec![Reset("  30 ")], Some(30)),
        ("429 reset RFC 3339 (Atlassian)", 429, vec![Reset("2026-09-21T14:14:20Z")], Some(60)),
        ("429 reset beyond the max", 429, vec![Reset(epoch_7200)], Some(3600)),
        ("429 reset overflowing", 429, vec![Reset("99999999999999999999999")], Some(3600)),
        ("403 remaining 0 (GitHub secondary limit)", 403, vec![Reset(epoch_120), Remaining("0")], Some(120)),
        ("403 remaining 5: no hold", 403, vec![Reset(epoch_120), Remaining("5")], None),
        ("403 reset without remaining: no hold", 403, vec![Reset(epoch_120)], None),
        ("400 invalid_grant with remaining 10: no hold", 400, vec![Reset("30"), Remaining("10")], None),
        ("503 RateLimit-Reset", 503, vec![IetfReset("15")], Some(15)),
        ("403 RateLimit-Remaining 0 + RateLimit-Reset", 403, vec![IetfReset("20"), IetfRemaining("0")], Some(20)),
        ("403 RateLimit-Reset alone: no hold", 403, vec![IetfReset("20")], None),
        ("429 RateLimit dictionary (-07)", 429, vec![Ietf("limit=10, remaining=0, reset=5")], Some(5)),
        ("403 RateLimit dictionary spent", 403, vec![Ietf("limit=10, remaining=0, reset=7")], Some(7)),
        ("403 RateLimit dictionary not spent: no hold", 403, vec![Ietf("limit=10, remaining=4, reset=7")], None),
        ("429 RateLimit list (-08), one spent", 429, vec![Ietf("\"burst\";r=0;t=5, \"day\";r=100;t=3600")], Some(5)),
        ("429 RateLimit list, none spent: the soonest", 429, vec![Ietf("\"burst\";r=3;t=9, \"day\";r=100;t=3600")], Some(9)),
        ("403 RateLimit list, day spent: clamped", 403, vec![Ietf("\"day\";r=0;t=86400")], Some(3600)),
        ("Retry-After wins over reset", 429, vec![RetryAfter("10"), Reset("60")], Some(10)),
        ("garbage Retry-After falls back to reset", 429, vec![RetryAfter("soon"), Reset("60")], Some(60)),
        ("the latest of several resets", 429, vec![Reset("30"), IetfReset("40")], Some(40)),
        // Hostile values: ignored.
        ("429 reset negative", 429, vec![Reset("-5")], None),
        ("429 reset exponent", 429, vec![Reset("1e9")], None),
        ("429 reset garbage", 429, vec![Reset("soon")], None),
        ("429 reset empty", 429, vec![Reset("")], None),
        ("429 reset bare dot", 429, vec![Reset("5.")], None),
        ("429 reset hex", 429, vec![Reset("0x10")], None),
        ("429 reset non-ASCII digits", 429, vec![Reset("\u{0661}\u{0662}")], None),
        ("429 RateLimit-Reset negative", 429, vec![IetfReset("-1")], None),
        ("429 RateLimit garbage", 429, vec![Ietf("x")], None),
        ("429 RateLimit without reset", 429, vec![Ietf("limit=10, remaining=0")], None),
        ("403 remaining garbage: no hold", 403, vec![Reset("30"), Remaining("none")], None),
        ("429 RateLimit with a huge t", 429, vec![Ietf("\"a\";r=0;t=99999999999999999999")], Some(3600)),
    ];
    for (name, status, headers, want) in cases {
        let body = if status == 400 { r#"{"error":"invalid_grant"}"# } else { "" };
        let v = run(&with_headers(status, body, &headers));
        let f = failure_of(&v);
        assert_eq!(f.retry_after, want.map(secs), "{name}: {f:?}");
    }
}

#[test]
fn rate_limit_headers_use_the_policy_maximum_and_now() {
    let policy = ClassifyPolicy {
        max_retry_after: secs(300),
        ..ClassifyPolicy::default()
    };
    let v = classify(
        &with_headers(429, "", &[Rl::Reset("900")]),
        T0,
        &policy,
        &[],
    );
    assert_eq!(failure_of(&v).retry_after, Some(secs(300)));
    // Epoch resets are relative to the `now` given, at millisecond precision.
    let now = T0.plus(Duration::from_millis(500));
    let reset = (T0_SECS + 10).to_string();
    assert_eq!(
        parse_reset(&reset, now, secs(3600)),
        Some(Duration::from_millis(9_500))
    );
    // The threshold: 10⁹ is a delta (clamped), above it an epoch.
    assert_eq!(parse_reset("1000000000", T0, secs(3600)), Some(secs(3600)));
    assert_eq!(parse_reset("1000000001", T0, secs(3600)), Some(secs(0)));
}

/// A 200 that carries rate-limit headers is a success; a hold needs a failure.
#[test]
fn a_success_with_rate_limit_headers_is_just_a_success() {
    let v = run(&with_headers(
        200,
        r#"{"access_token":"at","expires_in":60}"#,
        &[Rl::Reset("30"), Rl::Remaining("0")],
    ));
    assert!(matches!(v, Verdict::Success(_)), "{v:?}");
}

// ── Unknown codes: the note that tells the operator how to make them final.

#[test]
fn not_final_notes_name_the_code_and_permanent_codes() {
    assert_eq!(
        not_final_note("account_locked"),
        "unknown error code \"account_locked\" treated as transient; add it to permanent_codes \
         if it is final"
    );
    let n = not_final_note("invalid_request");
    assert!(
        n.starts_with("error code \"invalid_request\" is not final here")
            && n.contains("permanent_codes"),
        "{n}"
    );
    // A registered final code on a 2xx, too.
    assert!(not_final_note("invalid_grant").contains("not final here"));
    // Whatever reaches it is sanitised.
    assert!(!not_final_note("a\u{1b}[31mb\nc").contains('\u{1b}'));
}

/// Each table's codes are in the form the shape check accepts, and the tables do not
/// contradict each other.
#[test]
fn the_code_tables_are_consistent() {
    for c in FINAL_CODES
        .iter()
        .chain(NOT_FINAL_CODES)
        .chain(RETRYABLE_CODES)
    {
        assert!(is_snake_case(c) && is_error_code(c), "{c}");
    }
    for c in FINAL_CODES {
        assert!(
            !NOT_FINAL_CODES.contains(c) && !RETRYABLE_CODES.contains(c),
            "{c}"
        );
    }
    for r in VENDOR_ROWS {
        assert!(!r.values.is_empty(), "{}", r.vendor);
        if r.field == "error" {
            for c in r.values {
                assert!(is_snake_case(c), "{}: {c}", r.vendor);
            }
        }
    }
}

#[test]
fn a_refresh_token_in_a_rejected_2xx_is_found() {
    // Table: (status, body, refresh token expected)
    let rows: &[(u16, &str, Option<&str>)] = &[
        // malformed_success: no access token, but a rotated refresh token
        (
            200,
            r#"{"refresh_token":"rt-new","token_type":"Bearer"}"#,
            Some("rt-new"),
        ),
        // a control character in the access token
        (
            200,
            "{\"access_token\":\"a\\nb\",\"refresh_token\":\"rt-2\"}",
            Some("rt-2"),
        ),
        // form-encoded
        (200, "refresh_token=rt-3&token_type=bearer", Some("rt-3")),
        (200, r#"{"refresh_token":""}"#, None),
        (200, "{\"refresh_token\":\"x\\ny\"}", None),
        (
            400,
            r#"{"error":"invalid_grant","refresh_token":"rt-4"}"#,
            None,
        ),
        (200, "<html>refresh_token=rt-5</html>", None),
    ];
    for (status, body, want) in rows {
        let outcome = answer(*status, Some("application/json"), body.as_bytes().to_vec());
        let got = refresh_token_in_2xx(&outcome);
        assert_eq!(got.as_ref().map(Secret::expose), *want, "{status} {body}");
    }
}
