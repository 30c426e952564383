//! Property-based fuzzing of the hostile-input surface of the core (issue 6 §3): the
//! classifier over arbitrary answers and transport failures, the `Retry-After` parser over
//! arbitrary strings, and the token-response parser (reached through `classify` on a 2xx).
//!
//! Inputs are built from pieces that mix arbitrary text, arbitrary bytes (invalid UTF-8
//! included), markup, control and invisible characters, and the request's own secrets in the
//! forms a server echoes them in (raw, percent-encoded in either hex case, JSON-escaped).
//! Bodies come in every shape the classifier distinguishes: raw bytes, JSON objects with the
//! RFC 6749 members holding any JSON value, JSON nested thousands deep, JSON of up to
//! [`BODY_LIMIT`] bytes cut anywhere, form-encoded pairs (encoded or not), HTML pages.
//!
//! Every case must not panic and must keep these invariants:
//! - a summary is non-empty, at most [`SUMMARY_LIMIT`] bytes, with no control or invisible
//!   formatting character, and none of the request's secrets in any echoed form; the same
//!   holds for the `error_code` a failure keeps (it is written to status files);
//! - a permanent verdict is `oauth_rejected`, has a structured code, and answers a 2xx or a
//!   4xx other than 408/429; transport failures, 3xx, 408, 429 and 5xx are always transient;
//! - a success answers a 2xx with a non-empty `access_token` and a lifetime in
//!   `1 s ..= max(MAX_LIFETIME, default_lifetime)` (the default exactly when the provider's
//!   `expires_in` is unusable);
//! - a `Retry-After` never exceeds the policy maximum.
//!
//! Bounded: [`CASES`] cases per property, a few seconds in CI. To fuzz longer:
//! `PROPTEST_CASES=200000 cargo nextest run -p tokenvisor-core --test fuzz`.

use std::time::Duration;

use proptest::prelude::*;
use tokenvisor_core::classify::{BODY_LIMIT, MAX_LIFETIME, SUMMARY_LIMIT, parse_retry_after};
use tokenvisor_core::{
    ClassifyPolicy, Failure, FailureKind, HttpAnswer, RawOutcome, Secret, Timestamp, TransportKind,
    Verdict, classify,
};

/// Cases per property (the `PROPTEST_CASES` environment variable overrides it).
const CASES: u32 = 2_000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        cases,
        // Shrinking a 64 KiB body can take long; a failing case is reported either way.
        max_shrink_iters: 2_000,
        // A failure prints its minimal input; no regression files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ── Secrets and how a server echoes them.

/// How an echoed secret is spelled.
#[derive(Debug, Clone, Copy)]
enum Enc {
    Raw,
    Percent,
    PercentLower,
    Json,
    JsonSlash,
}

fn percent(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .unwrap()
        .trim_start_matches('=')
        .to_owned()
}

fn lower_hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut hex_left = 0;
    for c in s.chars() {
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

fn json_escaped(s: &str) -> String {
    let j = serde_json::to_string(s).unwrap();
    j[1..j.len() - 1].to_owned()
}

fn spell(secret: &str, enc: Enc) -> String {
    match enc {
        Enc::Raw => secret.to_owned(),
        Enc::Percent => percent(secret),
        Enc::PercentLower => lower_hex(&percent(secret)),
        Enc::Json => json_escaped(secret),
        Enc::JsonSlash => json_escaped(secret).replace('/', "\\/"),
    }
}

/// Every spelling of `secret` that must never show.
fn spellings(secret: &str) -> Vec<String> {
    [
        Enc::Raw,
        Enc::Percent,
        Enc::PercentLower,
        Enc::Json,
        Enc::JsonSlash,
    ]
    .into_iter()
    .map(|e| spell(secret, e))
    .collect()
}

/// Secrets: 8–48 characters of what real tokens and client secrets are made of, including
/// the characters that percent- and JSON-encoding change (`/`, `+`, `=`, `~`, `"`, `\`).
fn secret_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9]{8,48}",
        "[A-Za-z0-9._~+/=-]{8,48}",
        "[A-Za-z0-9\"\\\\ !#$%&'()*,:;<>?@^`{|}]{8,24}",
    ]
}

// ── Pieces of text.

/// One piece of a body, a description, a detail.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Bytes(Vec<u8>),
    Secret(usize, Enc),
}

fn enc_strategy() -> impl Strategy<Value = Enc> {
    prop_oneof![
        Just(Enc::Raw),
        Just(Enc::Percent),
        Just(Enc::PercentLower),
        Just(Enc::Json),
        Just(Enc::JsonSlash),
    ]
}

/// Fragments that mean something to one of the parsers or to a terminal.
const SPICE: &[&str] = &[
    "<title>",
    "</title>",
    "<TITLE >",
    "<html>",
    "error=",
    "error=invalid_grant",
    "access_token=",
    "&",
    "=",
    "%",
    "%zz",
    "{",
    "}",
    "\"",
    "\\",
    "\u{FEFF}",
    "\u{202E}",
    "\u{200B}",
    "\u{2066}",
    "\u{1b}[31m",
    "\r\n",
    "\0",
    "\u{85}",
    "\u{FFFD}",
    " ",
    "\t",
    "…",
    "é",
    "𝄞",
];

fn piece_strategy() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => any::<String>().prop_map(Piece::Text),
        2 => prop::sample::select(SPICE).prop_map(|s| Piece::Text(s.to_owned())),
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Piece::Bytes),
        1 => "[ -~]{0,300}".prop_map(Piece::Text),
        3 => (0..2usize, enc_strategy()).prop_map(|(i, e)| Piece::Secret(i, e)),
    ]
}

fn pieces_strategy(max: usize) -> impl Strategy<Value = Vec<Piece>> {
    prop::collection::vec(piece_strategy(), 0..max)
}

fn render_bytes(pieces: &[Piece], secrets: &[String; 2]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::Bytes(b) => out.extend_from_slice(b),
            Piece::Secret(i, e) => out.extend_from_slice(spell(&secrets[*i], *e).as_bytes()),
        }
    }
    out
}

fn render_text(pieces: &[Piece], secrets: &[String; 2]) -> String {
    String::from_utf8_lossy(&render_bytes(pieces, secrets)).into_owned()
}

// ── JSON values and bodies.

#[derive(Debug, Clone)]
enum JVal {
    Str(Vec<Piece>),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A number literal written as is (huge, exponent, negative zero).
    Literal(String),
    Bool(bool),
    Null,
    Arr(Vec<JVal>),
    Obj(Vec<(String, JVal)>),
}

fn jval_strategy() -> impl Strategy<Value = JVal> {
    let leaf = prop_oneof![
        4 => pieces_strategy(6).prop_map(JVal::Str),
        1 => any::<i64>().prop_map(JVal::Int),
        1 => prop_oneof![Just(0u64), Just(1), Just(3600), Just(u64::MAX), any::<u64>()]
            .prop_map(JVal::UInt),
        1 => any::<f64>().prop_map(JVal::Float),
        1 => prop::sample::select(&["1e300", "-0", "0.0", "-1", "1e-9", "99999999999999999999999", "3599.9"][..])
            .prop_map(|s| JVal::Literal(s.to_owned())),
        1 => any::<bool>().prop_map(JVal::Bool),
        1 => Just(JVal::Null),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(JVal::Arr),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4).prop_map(JVal::Obj),
        ]
    })
}

fn to_json(v: &JVal, secrets: &[String; 2]) -> String {
    match v {
        JVal::Str(p) => serde_json::to_string(&render_text(p, secrets)).unwrap(),
        JVal::Int(i) => i.to_string(),
        JVal::UInt(u) => u.to_string(),
        // NaN and infinities are not JSON: serde_json writes `null` for them.
        JVal::Float(f) => serde_json::to_string(f).unwrap(),
        JVal::Literal(s) => s.clone(),
        JVal::Bool(b) => b.to_string(),
        JVal::Null => "null".to_owned(),
        JVal::Arr(items) => {
            let items: Vec<String> = items.iter().map(|i| to_json(i, secrets)).collect();
            format!("[{}]", items.join(","))
        }
        JVal::Obj(members) => obj_json(members, secrets),
    }
}

fn obj_json(members: &[(String, JVal)], secrets: &[String; 2]) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|(k, v)| {
            format!(
                "{}:{}",
                serde_json::to_string(k).unwrap(),
                to_json(v, secrets)
            )
        })
        .collect();
    format!("{{{}}}", members.join(","))
}

/// The members token and error responses carry, and a few others.
const KEYS: &[&str] = &[
    "error",
    "error_description",
    "error_uri",
    "access_token",
    "refresh_token",
    "expires_in",
    "token_type",
    "scope",
    "message",
];

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn members_strategy() -> impl Strategy<Value = Vec<(String, JVal)>> {
    prop::collection::vec((key_strategy(), jval_strategy()), 0..8)
}

/// A body shape, rendered once the secrets are known.
#[derive(Debug, Clone)]
enum BodyShape {
    /// Bytes as they come.
    Raw(Vec<Piece>),
    /// A JSON object, maybe after a BOM and whitespace.
    Json {
        members: Vec<(String, JVal)>,
        bom: bool,
    },
    /// An RFC 6749 error, well formed, with an arbitrary description.
    OAuthError { code: Vec<Piece>, desc: Vec<Piece> },
    /// A token response with an arbitrary `expires_in`.
    Token {
        token: Vec<Piece>,
        expires_in: JVal,
        extra: Vec<(String, JVal)>,
    },
    /// `{"a":{"a":…}}` or `{"a":[[[…]]]}` nested `depth` deep, closed or not.
    Nested {
        depth: usize,
        arrays: bool,
        closed: bool,
    },
    /// A JSON object of about `size` bytes (a long string member), cut at `cut` if set.
    Huge {
        members: Vec<(String, JVal)>,
        size: usize,
        cut: Option<usize>,
    },
    /// `key=value&…`, values percent-encoded or not.
    Form(Vec<(String, Vec<Piece>, bool)>),
    /// An HTML page with a title and `filler` bytes of body.
    Html { title: Vec<Piece>, filler: usize },
}

fn body_strategy() -> impl Strategy<Value = BodyShape> {
    prop_oneof![
        3 => pieces_strategy(12).prop_map(BodyShape::Raw),
        4 => (members_strategy(), any::<bool>())
            .prop_map(|(members, bom)| BodyShape::Json { members, bom }),
        3 => (
            prop_oneof![
                3 => prop::sample::select(&["invalid_grant", "invalid_client", "slow_down", "temporarily_unavailable", "server_error", "use_dpop_nonce", "vendor_code", "x"][..])
                    .prop_map(|c| vec![Piece::Text(c.to_owned())]),
                1 => pieces_strategy(3),
            ],
            pieces_strategy(8),
        )
            .prop_map(|(code, desc)| BodyShape::OAuthError { code, desc }),
        3 => (pieces_strategy(3), jval_strategy(), members_strategy())
            .prop_map(|(token, expires_in, extra)| BodyShape::Token { token, expires_in, extra }),
        1 => (1..6000usize, any::<bool>(), any::<bool>())
            .prop_map(|(depth, arrays, closed)| BodyShape::Nested { depth, arrays, closed }),
        1 => (members_strategy(), 0..(BODY_LIMIT + 4096), proptest::option::of(0..(BODY_LIMIT + 4096)))
            .prop_map(|(members, size, cut)| BodyShape::Huge { members, size, cut }),
        3 => prop::collection::vec((key_strategy(), pieces_strategy(4), any::<bool>()), 0..6)
            .prop_map(BodyShape::Form),
        2 => (pieces_strategy(6), 0..20_000usize)
            .prop_map(|(title, filler)| BodyShape::Html { title, filler }),
    ]
}

fn render_body(shape: &BodyShape, secrets: &[String; 2]) -> Vec<u8> {
    match shape {
        BodyShape::Raw(p) => render_bytes(p, secrets),
        BodyShape::Json { members, bom } => {
            let mut out = if *bom {
                b"\xEF\xBB\xBF \n".to_vec()
            } else {
                Vec::new()
            };
            out.extend_from_slice(obj_json(members, secrets).as_bytes());
            out
        }
        BodyShape::OAuthError { code, desc } => serde_json::json!({
            "error": render_text(code, secrets),
            "error_description": render_text(desc, secrets),
        })
        .to_string()
        .into_bytes(),
        BodyShape::Token {
            token,
            expires_in,
            extra,
        } => {
            let mut members = vec![
                ("access_token".to_owned(), JVal::Str(token.clone())),
                ("expires_in".to_owned(), expires_in.clone()),
            ];
            members.extend(extra.iter().cloned());
            obj_json(&members, secrets).into_bytes()
        }
        BodyShape::Nested {
            depth,
            arrays,
            closed,
        } => {
            let mut s = String::from("{\"a\":");
            for _ in 0..*depth {
                s.push_str(if *arrays { "[" } else { "{\"a\":" });
            }
            s.push('1');
            if *closed {
                for _ in 0..*depth {
                    s.push(if *arrays { ']' } else { '}' });
                }
                s.push('}');
            }
            s.into_bytes()
        }
        BodyShape::Huge { members, size, cut } => {
            let mut members = members.clone();
            members.push((
                "padding".to_owned(),
                JVal::Str(vec![Piece::Text("x".repeat(*size))]),
            ));
            let mut b = obj_json(&members, secrets).into_bytes();
            if let Some(cut) = cut {
                b.truncate(*cut);
            }
            b
        }
        BodyShape::Form(pairs) => {
            let parts: Vec<String> = pairs
                .iter()
                .map(|(k, v, encode)| {
                    let v = render_text(v, secrets);
                    if *encode {
                        format!("{}={}", percent(k), percent(&v))
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            parts.join("&").into_bytes()
        }
        BodyShape::Html { title, filler } => {
            let mut b = b"<!DOCTYPE html><html><head><title>".to_vec();
            b.extend_from_slice(&render_bytes(title, secrets));
            b.extend_from_slice(b"</title></head><body>");
            b.extend(std::iter::repeat_n(b'.', *filler));
            b.extend_from_slice(b"</body></html>");
            b
        }
    }
}

// ── Headers, statuses, policies, instants.

const T_MIN: u64 = 0;
/// 9999-12-31: HTTP-dates cannot go further.
const T_MAX: u64 = 253_402_300_799_000;

fn now_strategy() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        4 => (1_600_000_000_000u64..2_000_000_000_000).prop_map(Timestamp::from_millis),
        1 => (T_MIN..=T_MAX).prop_map(Timestamp::from_millis),
        1 => Just(Timestamp::from_millis(u64::MAX)),
    ]
}

fn http_date(ms: u64) -> String {
    httpdate::fmt_http_date(Timestamp::from_millis(ms).to_system_time())
}

fn retry_after_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        2 => "[0-9]{1,40}",
        1 => "[-+]?[0-9]{1,6}(\\.[0-9]{1,3})?",
        1 => "[ \t]{0,3}[0-9]{1,8}[ \t\r\n]{0,3}",
        2 => (T_MIN..=T_MAX).prop_map(http_date),
        1 => prop::sample::select(&[
            "", " ", "-1", "-0", "0", "1e9", "0x10", "soon", "Infinity", "NaN",
            "18446744073709551615", "18446744073709551616",
            "99999999999999999999999999999999999999999999999999",
            "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994", "Fri, 31 Dec 9999 23:59:59 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT", "Mon, 32 Sep 2026 14:14:50 GMT",
            "\u{0661}\u{0662}", "１２０",
        ][..])
        .prop_map(str::to_owned),
    ]
}

fn status_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![
        2 => any::<u16>(),
        3 => 100u16..600,
        6 => prop::sample::select(&[200u16, 201, 204, 299, 301, 302, 400, 401, 403, 404, 408, 418, 429, 499, 500, 502, 503, 599][..]),
    ]
}

fn content_type_strategy() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        prop::sample::select(
            &[
                "application/json",
                "application/json; charset=utf-8",
                "text/html",
                "application/x-www-form-urlencoded",
                "text/plain",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<String>(),
    ])
}

const CODES: &[&str] = &[
    "invalid_grant",
    "slow_down",
    "server_error",
    "vendor_code",
    "temporarily_unavailable",
];

fn policy_strategy() -> impl Strategy<Value = ClassifyPolicy> {
    (
        prop_oneof![
            Just(3600u64),
            1u64..1_000_000,
            Just(MAX_LIFETIME.as_secs() * 2)
        ],
        prop_oneof![Just(3600u64), 0u64..100_000],
        prop::collection::vec(prop::sample::select(CODES), 0..3),
        prop::collection::vec(prop::sample::select(CODES), 0..3),
    )
        .prop_map(|(life, max_ra, transient, permanent)| ClassifyPolicy {
            default_lifetime: Duration::from_secs(life),
            max_retry_after: Duration::from_secs(max_ra),
            transient_codes: transient.into_iter().map(str::to_owned).collect(),
            permanent_codes: permanent.into_iter().map(str::to_owned).collect(),
        })
}

fn transport_kind_strategy() -> impl Strategy<Value = TransportKind> {
    prop::sample::select(
        &[
            TransportKind::Connect,
            TransportKind::Reset,
            TransportKind::Dns,
            TransportKind::Tls,
            TransportKind::Timeout,
            TransportKind::Eof,
            TransportKind::Io,
        ][..],
    )
}

/// A raw outcome, before the secrets are known.
#[derive(Debug, Clone)]
enum OutcomeShape {
    Response {
        status: u16,
        retry_after: Option<String>,
        content_type: Option<String>,
        body: BodyShape,
        truncated: bool,
    },
    Transport {
        kind: TransportKind,
        detail: Vec<Piece>,
    },
}

fn outcome_strategy() -> impl Strategy<Value = OutcomeShape> {
    prop_oneof![
        9 => (
            status_strategy(),
            proptest::option::of(retry_after_strategy()),
            content_type_strategy(),
            body_strategy(),
            any::<bool>(),
        )
            .prop_map(|(status, retry_after, content_type, body, truncated)| {
                OutcomeShape::Response { status, retry_after, content_type, body, truncated }
            }),
        1 => (transport_kind_strategy(), pieces_strategy(10))
            .prop_map(|(kind, detail)| OutcomeShape::Transport { kind, detail }),
    ]
}

/// The outcome a transport would hand over: the body cut at [`BODY_LIMIT`] (and flagged
/// truncated) like the real transport does, or flagged truncated at random.
fn render_outcome(shape: &OutcomeShape, secrets: &[String; 2]) -> RawOutcome {
    match shape {
        OutcomeShape::Response {
            status,
            retry_after,
            content_type,
            body,
            truncated,
        } => {
            let mut body = render_body(body, secrets);
            let mut truncated = *truncated;
            if body.len() > BODY_LIMIT {
                body.truncate(BODY_LIMIT);
                truncated = true;
            }
            RawOutcome::Response(HttpAnswer {
                status: *status,
                retry_after: retry_after.clone(),
                content_type: content_type.clone(),
                rate_limit: Default::default(),
                body,
                truncated,
            })
        }
        OutcomeShape::Transport { kind, detail } => RawOutcome::Transport {
            kind: *kind,
            detail: render_text(detail, secrets),
        },
    }
}

// ── Invariants.

/// C0/C1 controls and the invisible formatting characters that can disguise text.
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

fn assert_no_secret(what: &str, text: &str, secrets: &[String; 2]) -> Result<(), TestCaseError> {
    for s in secrets {
        for spelled in spellings(s) {
            prop_assert!(
                !text.contains(&spelled),
                "{what} {text:?} contains the secret {s:?} as {spelled:?}"
            );
        }
    }
    Ok(())
}

fn check_failure(f: &Failure, secrets: &[String; 2]) -> Result<(), TestCaseError> {
    let s = &f.summary;
    prop_assert!(!s.is_empty(), "empty summary");
    prop_assert!(
        s.len() <= SUMMARY_LIMIT,
        "summary of {} bytes: {s:?}",
        s.len()
    );
    prop_assert!(
        !s.chars().any(is_forbidden_char),
        "control or invisible character in {s:?}"
    );
    assert_no_secret("summary", s, secrets)?;
    if let Some(code) = &f.error_code {
        prop_assert!(!code.is_empty() && code.len() <= 128, "error_code {code:?}");
        prop_assert!(
            !code.chars().any(is_forbidden_char),
            "control character in error_code {code:?}"
        );
        assert_no_secret("error_code", code, secrets)?;
    }
    Ok(())
}

fn check_verdict(
    outcome: &RawOutcome,
    policy: &ClassifyPolicy,
    secrets: &[String; 2],
    verdict: &Verdict,
) -> Result<(), TestCaseError> {
    if let Some(f) = verdict.failure() {
        check_failure(f, secrets)?;
        prop_assert!(
            f.retry_after.is_none_or(|ra| ra <= policy.max_retry_after),
            "retry_after {:?} above the maximum {:?}",
            f.retry_after,
            policy.max_retry_after
        );
    }
    match outcome {
        RawOutcome::Transport { .. } => {
            let Verdict::Transient(f) = verdict else {
                return Err(TestCaseError::fail(format!(
                    "a transport failure judged {verdict:?}"
                )));
            };
            prop_assert_eq!(f.http_status, None);
            prop_assert_eq!(f.retry_after, None);
            prop_assert_eq!(&f.error_code, &None);
        }
        RawOutcome::Response(a) => {
            if let Some(f) = verdict.failure() {
                prop_assert_eq!(f.http_status, Some(a.status));
            }
            let always_transient = matches!(a.status, 300..=399 | 408 | 429 | 500..=599)
                || !(200..=599).contains(&a.status);
            match verdict {
                Verdict::Success(g) => {
                    prop_assert!((200..=299).contains(&a.status), "success on {}", a.status);
                    prop_assert!(!g.access_token.is_empty(), "empty access token");
                    prop_assert!(!g.token_type.is_empty(), "empty token_type");
                    let ceiling = MAX_LIFETIME.max(policy.default_lifetime);
                    prop_assert!(
                        g.lifetime >= Duration::from_secs(1) || !g.lifetime_from_provider,
                        "lifetime {:?}",
                        g.lifetime
                    );
                    prop_assert!(g.lifetime <= ceiling, "lifetime {:?}", g.lifetime);
                    if !g.lifetime_from_provider {
                        prop_assert_eq!(g.lifetime, policy.default_lifetime);
                    }
                }
                Verdict::Permanent(f) => {
                    prop_assert!(!always_transient, "permanent on {}", a.status);
                    prop_assert!(
                        matches!(a.status, 200..=299 | 400..=499),
                        "permanent on {}",
                        a.status
                    );
                    prop_assert_eq!(f.kind, FailureKind::OauthRejected);
                    prop_assert!(f.error_code.is_some(), "permanent without a code");
                }
                Verdict::Transient(f) => {
                    prop_assert_ne!(f.kind, FailureKind::OauthRejected);
                }
            }
            if always_transient {
                prop_assert!(
                    matches!(verdict, Verdict::Transient(_)),
                    "HTTP {} judged {}",
                    a.status,
                    verdict.outcome()
                );
            }
        }
    }
    Ok(())
}

fn secrets_of(a: &str, b: &str) -> [Secret; 2] {
    [Secret::from(a), Secret::from(b)]
}

proptest! {
    #![proptest_config(config())]

    /// The classifier over arbitrary answers and transport failures: no panic, and every
    /// invariant of the module doc.
    #[test]
    fn classify_never_panics_and_keeps_its_invariants(
        secrets in (secret_strategy(), secret_strategy()),
        shape in outcome_strategy(),
        now in now_strategy(),
        policy in policy_strategy(),
    ) {
        let secrets = [secrets.0, secrets.1];
        let outcome = render_outcome(&shape, &secrets);
        let held = secrets_of(&secrets[0], &secrets[1]);
        let verdict = classify(&outcome, now, &policy, &[&held[0], &held[1]]);
        check_verdict(&outcome, &policy, &secrets, &verdict)?;
        // Debug output (what a log line shows) never shows a secret either.
        if !matches!(verdict, Verdict::Success(_)) {
            assert_no_secret("Debug of the verdict", &format!("{verdict:?}"), &secrets)?;
        }
    }

    /// Any status code with any body whose `error` member is a secret echoed back: the code
    /// the failure keeps is scrubbed like the summary.
    #[test]
    fn an_echoed_secret_as_the_error_code_is_never_kept(
        secrets in (secret_strategy(), secret_strategy()),
        status in status_strategy(),
        which in 0..2usize,
        form in any::<bool>(),
    ) {
        let secrets = [secrets.0, secrets.1];
        let body = if form {
            format!("error={}&error_description={}", percent(&secrets[which]), percent(&secrets[1 - which]))
        } else {
            serde_json::json!({"error": secrets[which], "error_description": secrets[1 - which]}).to_string()
        };
        let outcome = RawOutcome::Response(HttpAnswer {
            status,
            retry_after: None,
            content_type: None,
            rate_limit: Default::default(),
            body: body.into_bytes(),
            truncated: false,
        });
        let held = secrets_of(&secrets[0], &secrets[1]);
        let policy = ClassifyPolicy::default();
        let verdict = classify(&outcome, Timestamp::from_millis(1_790_000_000_000), &policy, &[&held[0], &held[1]]);
        check_verdict(&outcome, &policy, &secrets, &verdict)?;
    }

    /// `Retry-After` over arbitrary strings: no panic; never above the maximum;
    /// delta-seconds are exact (clamped); a leading sign, a fraction or a unit is refused.
    #[test]
    fn retry_after_never_panics_and_is_clamped(
        value in retry_after_strategy(),
        now in now_strategy(),
        max_secs in prop_oneof![Just(0u64), Just(3600), any::<u64>()],
    ) {
        let max = Duration::from_secs(max_secs);
        let parsed = parse_retry_after(&value, now, max);
        if let Some(d) = parsed {
            prop_assert!(d <= max, "{value:?} → {d:?} above {max:?}");
        }
        let trimmed = value.trim();
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            let want = trimmed
                .parse::<u64>()
                .map_or(max, |n| Duration::from_secs(n).min(max));
            prop_assert_eq!(parsed, Some(want), "{:?}", value);
        }
        if trimmed.starts_with(['-', '+']) || trimmed.contains('.') {
            prop_assert_eq!(parsed, None, "{:?}", value);
        }
    }

    /// An HTTP-date `Retry-After` is the distance from now (zero in the past), clamped.
    #[test]
    fn retry_after_dates_are_relative_and_clamped(
        at in T_MIN..=T_MAX,
        now in now_strategy(),
        max_secs in 0u64..10_000_000,
    ) {
        let max = Duration::from_secs(max_secs);
        let whole = at - at % 1000;
        let got = parse_retry_after(&http_date(at), now, max);
        let want = Timestamp::from_millis(whole).since(now).min(max);
        prop_assert_eq!(got, Some(want));
    }

    /// The token-response parser: a 2xx JSON object with a non-empty string `access_token`
    /// and no structured `error` is a success whose lifetime follows `expires_in`: a positive
    /// integer (number or numeric string) is believed up to a year; zero, negative and
    /// unusable values give the default.
    #[test]
    fn token_responses_follow_expires_in(
        token in "[A-Za-z0-9._~+/=-]{1,64}",
        expires_in in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| format!("\"{n}\"")),
            Just("1e300".to_owned()),
            Just("null".to_owned()),
            Just("\"soon\"".to_owned()),
        ],
        default_secs in 1u64..1_000_000,
        status in 200u16..300,
        form in any::<bool>(),
    ) {
        let body = if form {
            format!("access_token={}&expires_in={}", percent(&token), percent(expires_in.trim_matches('"')))
        } else {
            format!(r#"{{"access_token":{},"expires_in":{expires_in},"token_type":"bearer"}}"#,
                serde_json::to_string(&token).unwrap())
        };
        let policy = ClassifyPolicy {
            default_lifetime: Duration::from_secs(default_secs),
            ..ClassifyPolicy::default()
        };
        let outcome = RawOutcome::Response(HttpAnswer {
            status,
            retry_after: None,
            content_type: Some("application/json".to_owned()),
            rate_limit: Default::default(),
            body: body.clone().into_bytes(),
            truncated: false,
        });
        let verdict = classify(&outcome, Timestamp::from_millis(1_790_000_000_000), &policy, &[]);
        let Verdict::Success(g) = &verdict else {
            return Err(TestCaseError::fail(format!("{body:?} judged {verdict:?}")));
        };
        prop_assert_eq!(g.access_token.expose(), token.as_str());
        let raw = expires_in.trim_matches('"');
        let want = match raw.parse::<i128>() {
            Ok(n) if n > 0 => Duration::from_secs(u64::try_from(n).unwrap_or(u64::MAX)).min(MAX_LIFETIME),
            Ok(_) => policy.default_lifetime,
            Err(_) if raw == "1e300" => MAX_LIFETIME,
            Err(_) => policy.default_lifetime,
        };
        prop_assert_eq!(g.lifetime, want, "{}", body);
    }
}
