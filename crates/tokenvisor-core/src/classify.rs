//! Classification: the raw outcome of one refresh attempt → a [`Verdict`].
//!
//! This is the rule that tokenvisor exists for: only an error code that is known to mean "this
//! grant or this client is dead" is final. Everything else — an HTML page from a WAF, a 429,
//! a 5xx, a redirect, a broken connection, a framework's JSON error page, an unknown code —
//! is transient: it backs off and ends only at the workload's give-up ceiling.
//!
//! Rules, in order:
//! 1. **Status.** 3xx, 408, 429, 5xx and statuses outside 2xx–5xx are transient whatever the
//!    body says.
//! 2. **Shape** (`oauth_code`): a body is an OAuth error response only when it is a JSON
//!    object or a form body, not labelled HTML or XML, whose `error` is a lower-case
//!    snake_case RFC 6749 code (or one the workload lists) and which carries no
//!    [`ENVELOPE_MEMBERS`] (Spring Boot's `{"status":403,"error":"Forbidden","path":…}` is
//!    not one). Anything else on a 4xx is `infrastructure_4xx`.
//! 3. **Code** (`judge_code`): the workload's `transient_codes`, then its
//!    `permanent_codes`; a vendor's retryable sub-code ([`VENDOR_ROWS`]) or a
//!    [`RETRYABLE_CODES`] code is transient; a vendor's final code (in the vendor's own shape,
//!    e.g. Slack's 200 `"ok":false`) or a [`FINAL_CODES`] code on 400/401/403 is permanent.
//!    Every other code — unknown, a registered code that does not judge the grant
//!    ([`NOT_FINAL_CODES`]), a final code on a 2xx without a vendor row — is
//!    `oauth_unknown_code`, transient, and [`not_final_note`] tells the operator how to make
//!    it final.
//! 4. **Holds.** `Retry-After`, else the vendor rate-limit headers (`X-RateLimit-Reset`,
//!    `X-Rate-Limit-Reset`, IETF `RateLimit` / `RateLimit-Reset`) on a 429/503 or when a
//!    `remaining` is 0 ([`rate_limit_hold`]), clamped to `max_retry_after`.
//! 5. **Success.** A 2xx with a non-empty `access_token` free of control characters; anything
//!    else is `malformed_success`, and a 2xx body is never quoted.
//!
//! Summaries and kept codes go through [`crate::scrub`]: decoded, cleaned, the request's
//! secrets removed in any encoding or case, then cut.

use std::fmt;
use std::time::Duration;

pub use crate::scrub::{EXCERPT_LIMIT, excerpt};
use crate::scrub::{LazyScrubber, scrub};
use crate::secret::Secret;
use crate::time::Timestamp;

/// The largest body prefix the classifier looks at (and the runtime reads).
pub const BODY_LIMIT: usize = 64 * 1024;

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

/// The rate-limit headers an answer carried, raw (each value at most a few hundred bytes).
///
/// Read only on a 429 or 503, or when a `remaining` value says the quota is spent: most
/// providers send these on every answer, and a 200 with `X-RateLimit-Reset` is no reason to
/// wait. See [`rate_limit_hold`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `X-RateLimit-Reset` or `X-Rate-Limit-Reset`: epoch seconds (GitHub, Okta, Auth0,
    /// X/Twitter) or delta seconds (others); an RFC 3339 time (Atlassian) is read too.
    pub reset: Option<String>,
    /// `X-RateLimit-Remaining` or `X-Rate-Limit-Remaining`.
    pub remaining: Option<String>,
    /// The IETF `RateLimit` field: `limit=10, remaining=0, reset=5` (drafts up to -07) or
    /// `"policy";r=0;t=5` (draft -08 on).
    pub ietf: Option<String>,
    /// The IETF `RateLimit-Reset` field (delta seconds, drafts up to -06).
    pub ietf_reset: Option<String>,
    /// The IETF `RateLimit-Remaining` field (drafts up to -06).
    pub ietf_remaining: Option<String>,
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
    /// Vendor and IETF rate-limit headers, raw.
    pub rate_limit: RateLimitHeaders,
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
            .field("rate_limit", &self.rate_limit)
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
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
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
    #[strum(serialize = "server_5xx")]
    Server5xx,
    /// A structured RFC 6749 code from the retryable set (or configured transient, or a
    /// vendor's retryable sub-code).
    OauthRetryable,
    /// An OAuth error response whose code is not known to be final where it appeared: an
    /// unknown or vendor code, a registered code that does not judge the grant
    /// (`invalid_request`, …), or a final code on a 2xx without a vendor row. Transient; a
    /// workload's `permanent_codes` can make it final.
    OauthUnknownCode,
    /// A 4xx without a structured RFC 6749 code (WAF, CDN, proxy, empty body).
    #[strum(serialize = "infrastructure_4xx")]
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
    /// Not sent: the token a workload-identity grant presents (`assertion_file`,
    /// `subject_token_file`, `actor_token_file`) could not be read, was empty or too large,
    /// or is a JWT past its `exp`. Local and transient: the platform rotates the file.
    CredentialFile,
}

impl FailureKind {
    /// The stable snake_case name used in status files, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Every kind, in declaration order, for metric pre-registration and exhaustive tests.
    pub const ALL: &'static [FailureKind] = <FailureKind as strum::VariantArray>::VARIANTS;

    /// Parses [`FailureKind::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
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

/// IANA "OAuth Extensions Error Registry" codes that are final at a token endpoint for the
/// `refresh_token` and `client_credentials` grants: the grant or the client is dead, or the
/// client may not have what it asks for, and asking again changes nothing. Final only on
/// 400, 401 or 403 (RFC 6749 §5.2 names 400 and 401; Auth0 answers 403).
pub const FINAL_CODES: &[&str] = &[
    // RFC 6749 §5.2.
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    // RFC 8707 §2: the `resource` we send is not accepted.
    "invalid_target",
];

/// Codes final for the `refresh_token` and `client_credentials` grants that are not final
/// for the grants presenting a credential the platform rotates (`jwt_bearer`,
/// `token_exchange`): `invalid_grant` there judges the one assertion or subject token
/// presented (expired in flight, not yet valid, issued by a key the provider has not fetched
/// yet), and the next attempt presents the file's next one. See [`for_presented_credential`].
pub const NOT_FINAL_FOR_PRESENTED: &[&str] = &["invalid_grant"];

/// The verdict for a grant that presents a credential read again at every attempt
/// (`jwt_bearer`, `token_exchange`): a final verdict whose code is in
/// [`NOT_FINAL_FOR_PRESENTED`] becomes transient (`oauth_unknown_code`: the status context
/// says how to make it final), unless the workload lists the code in `permanent_codes`.
/// Every other verdict is unchanged: `invalid_client`, `unauthorized_client`,
/// `unsupported_grant_type`, `invalid_scope` and `invalid_target` judge the configuration,
/// which no rotation changes.
pub fn for_presented_credential(verdict: Verdict, policy: &ClassifyPolicy) -> Verdict {
    match verdict {
        Verdict::Permanent(f)
            if f.kind == FailureKind::OauthRejected
                && f.error_code.as_deref().is_some_and(|code| {
                    NOT_FINAL_FOR_PRESENTED.contains(&code)
                        && !policy.permanent_codes.iter().any(|c| c == code)
                }) =>
        {
            Verdict::Transient(Failure {
                kind: FailureKind::OauthUnknownCode,
                ..f
            })
        }
        other @ (Verdict::Success(_) | Verdict::Transient(_) | Verdict::Permanent(_)) => other,
    }
}

/// Registered codes that do not judge the grant, each transient (`oauth_unknown_code`) unless
/// a workload lists it in `permanent_codes` (the reasons are in docs/ARCHITECTURE.md):
/// `invalid_request` (a malformed request: our bug or a gateway's, not a dead grant; some
/// providers use it for anything), `invalid_token` and `insufficient_scope` (resource-server
/// codes, RFC 6750), `access_denied` (authorization endpoint), `invalid_dpop_proof` (RFC 9449,
/// the proof, not the grant), `invalid_authorization_details` (RFC 9396), and the device-flow
/// codes `authorization_pending` and `expired_token` (RFC 8628).
pub const NOT_FINAL_CODES: &[&str] = &[
    "invalid_request",
    "invalid_token",
    "insufficient_scope",
    "access_denied",
    "invalid_dpop_proof",
    "invalid_authorization_details",
    "authorization_pending",
    "expired_token",
];

/// Members that mark a framework's or a gateway's error envelope rather than an RFC 6749
/// error response: Spring Boot (`timestamp`, `status`, `error`, `path`), RFC 9457 problem
/// details (`status`), ASP.NET and Express error pages (`statusCode`, `trace`,
/// `exception`). A body with any of them is never an OAuth verdict.
pub const ENVELOPE_MEMBERS: &[&str] = &["status", "statusCode", "path", "trace", "exception"];

/// Which statuses a [`VendorRow`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statuses {
    /// 200–299 (providers that answer errors with 200).
    Success,
    /// 400, 401 and 403.
    Client,
    /// Both.
    Either,
}

impl Statuses {
    fn contains(self, status: u16) -> bool {
        let success = (200..=299).contains(&status);
        let client = matches!(status, 400 | 401 | 403);
        match self {
            Statuses::Success => success,
            Statuses::Client => client,
            Statuses::Either => success || client,
        }
    }
}

/// What a [`VendorRow`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// The grant or the client is dead: permanent.
    Final,
    /// Try again later, whatever the `error` code says: transient.
    Retry,
}

/// A JSON value a [`VendorRow`] requires of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lit {
    /// `true` or `false`.
    Bool(bool),
    /// A string.
    Str(&'static str),
}

/// One row of the vendor table: what a provider really returns, in its own shape.
///
/// A row matches an OAuth error response (one that passed the shape check) when the status
/// is in `statuses`, every `requires` member has its value (JSON bodies), and `field` holds
/// one of `values` — a string equal to it, a number whose decimal form equals it, or an array
/// with such an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorRow {
    /// Who answers this way (for tests and docs).
    pub vendor: &'static str,
    /// The statuses the row applies to.
    pub statuses: Statuses,
    /// The member matched: `error`, or a sub-code member such as Microsoft's `error_codes`.
    pub field: &'static str,
    /// The values that match.
    pub values: &'static [&'static str],
    /// Members that must be present with these values.
    pub requires: &'static [(&'static str, Lit)],
    /// The verdict.
    pub judgement: Judgement,
}

/// The vendor table: only rows the generic rules would judge differently (a vendor code, a
/// final code on a 2xx, a retryable sub-code under a final code). Vendors that answer with
/// registered codes in the RFC 6749 shape (Google `invalid_grant`, Okta, Auth0, Keycloak,
/// Salesforce `invalid_grant`, Microsoft `invalid_grant` with AADSTS70000 / 700082 / 50173 /
/// 70008 / 70043) need no row; `classify/tests.rs` has their bodies, with sources.
pub const VENDOR_ROWS: &[VendorRow] = &[
    // GitHub answers token errors with 200 (and the RFC shape): `bad_refresh_token` for an
    // expired, revoked or already used refresh token, `incorrect_client_credentials` for a
    // wrong client id or secret.
    // https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens
    // https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors
    // https://github.com/orgs/community/discussions/24745 (`bad_refresh_token` on 200)
    VendorRow {
        vendor: "GitHub",
        statuses: Statuses::Either,
        field: "error",
        values: &["bad_refresh_token", "incorrect_client_credentials"],
        requires: &[],
        judgement: Judgement::Final,
    },
    // Slack's Web API answers 200 with `"ok": false` and a Slack code; oauth.v2.access
    // lists these for a refresh.
    // https://api.slack.com/methods/oauth.v2.access (Errors)
    // https://api.slack.com/authentication/rotation (token_revoked / token_expired)
    VendorRow {
        vendor: "Slack",
        statuses: Statuses::Success,
        field: "error",
        values: &[
            "invalid_refresh_token",
            "token_revoked",
            "token_expired",
            "invalid_client_id",
            "bad_client_secret",
            "invalid_grant_type",
        ],
        requires: &[("ok", Lit::Bool(false))],
        judgement: Judgement::Final,
    },
    // Slack with token rotation may also answer 200 `ok:false` with `invalid_grant`.
    // https://api.slack.com/authentication/rotation
    VendorRow {
        vendor: "Slack",
        statuses: Statuses::Success,
        field: "error",
        values: &["invalid_grant", "invalid_client"],
        requires: &[("ok", Lit::Bool(false))],
        judgement: Judgement::Final,
    },
    // Google: `deleted_client` (401) once the OAuth client was deleted.
    // https://github.com/googleapis/google-api-nodejs-client/issues/1256
    // https://developers.google.com/identity/protocols/oauth2#expiration (invalid_grant)
    VendorRow {
        vendor: "Google",
        statuses: Statuses::Client,
        field: "error",
        values: &["deleted_client"],
        requires: &[],
        judgement: Judgement::Final,
    },
    // Salesforce token endpoint codes beyond RFC 6749: `invalid_client_id` (unknown
    // consumer key), `invalid_client_credentials` (wrong secret), `inactive_user`,
    // `inactive_org` (locked, closed or suspended org).
    // https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm
    VendorRow {
        vendor: "Salesforce",
        statuses: Statuses::Client,
        field: "error",
        values: &[
            "invalid_client_id",
            "invalid_client_credentials",
            "inactive_user",
            "inactive_org",
        ],
        requires: &[],
        judgement: Judgement::Final,
    },
    // Salesforce `rate_limit_exceeded` (400): too many logins or token requests.
    // https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm
    VendorRow {
        vendor: "Salesforce",
        statuses: Statuses::Client,
        field: "error",
        values: &["rate_limit_exceeded"],
        requires: &[],
        judgement: Judgement::Retry,
    },
    // Microsoft Entra ID sends AADSTS sub-codes in `error_codes`, often under
    // `invalid_grant`. These say "try again", not "the grant is dead": 50196 LoopDetected
    // (a client loop, throttled), 90033 MsodsServiceUnavailable ("a transient error has
    // occurred"), 90006 ExternalServerRetryableError, 90055 TenantThrottlingError, 80001
    // OnPremiseStoreIsNotAvailable (the on-premises agent is down). Final ones (700082
    // refresh token expired by inactivity, 70000 invalid grant, 50173 grant revoked, 70008
    // expired or revoked, 70043 sign-in frequency) stay final through `invalid_grant`.
    // https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes
    VendorRow {
        vendor: "Microsoft",
        statuses: Statuses::Either,
        field: "error_codes",
        values: &["50196", "90033", "90006", "90055", "80001"],
        requires: &[],
        judgement: Judgement::Retry,
    },
];

impl VendorRow {
    fn matches(&self, status: u16, code: &str, body: &Body) -> bool {
        if !self.statuses.contains(status) {
            return false;
        }
        let requires = self.requires.iter().all(|(key, lit)| match body {
            Body::Json(map) => match (map.get(*key), lit) {
                (Some(serde_json::Value::Bool(b)), Lit::Bool(want)) => b == want,
                (Some(serde_json::Value::String(s)), Lit::Str(want)) => s == want,
                (Some(_) | None, Lit::Bool(_) | Lit::Str(_)) => false,
            },
            Body::Form(_) | Body::Other => false,
        });
        if !requires {
            return false;
        }
        if self.field == "error" {
            return self.values.contains(&code);
        }
        let hit = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => self.values.contains(&s.as_str()),
            serde_json::Value::Number(n) => self.values.contains(&n.to_string().as_str()),
            serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Array(_)
            | serde_json::Value::Object(_) => false,
        };
        match body {
            Body::Json(map) => match map.get(self.field) {
                Some(serde_json::Value::Array(items)) => items.iter().any(hit),
                Some(v) => hit(v),
                None => false,
            },
            Body::Form(_) => body
                .get(self.field)
                .is_some_and(|v| self.values.contains(&v)),
            Body::Other => false,
        }
    }
}

/// The human note for a code that was not a verdict (kind `oauth_unknown_code`): how to make
/// it final. The status context and `probe` show it.
pub fn not_final_note(code: &str) -> String {
    let code = crate::scrub::excerpt(code.as_bytes());
    if FINAL_CODES.contains(&code.as_str())
        || NOT_FINAL_CODES.contains(&code.as_str())
        || RETRYABLE_CODES.contains(&code.as_str())
    {
        format!(
            "error code \"{code}\" is not final here, treated as transient; add it to \
             permanent_codes if it is final"
        )
    } else {
        format!(
            "unknown error code \"{code}\" treated as transient; add it to permanent_codes if \
             it is final"
        )
    }
}

/// Judges one attempt.
///
/// `now` resolves an HTTP-date `Retry-After` and epoch rate-limit resets; `request_secrets`
/// are the secrets the request carried (refresh token, client secret), scrubbed from every
/// summary and kept code in case a server echoes them.
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
        RawOutcome::Response(answer) => {
            classify_answer(answer, now, policy, &LazyScrubber::new(request_secrets))
        }
    }
}

fn classify_answer(
    a: &HttpAnswer,
    now: Timestamp,
    policy: &ClassifyPolicy,
    secrets: &LazyScrubber<'_>,
) -> Verdict {
    let retry_after = a
        .retry_after
        .as_deref()
        .and_then(|v| parse_retry_after(v, now, policy.max_retry_after))
        .or_else(|| rate_limit_hold(a.status, &a.rate_limit, now, policy.max_retry_after));
    let body = parse_body(&a.body, a.truncated);
    let code = oauth_code(&body, a.content_type.as_deref(), policy);
    let failure = |kind: FailureKind, summary: String| Failure {
        kind,
        http_status: Some(a.status),
        // A server may echo a secret as its `error` code: it is kept scrubbed, like the summary.
        error_code: code.map(|c| secrets.scrub(c)),
        retry_after,
        summary: cap(secrets.scrub(&summary)),
    };
    let status = a.status;
    match status {
        200..=299 => {
            if let Some(code) = code {
                // Most providers answering 200 with an `error` are not judging the grant
                // (portals, gateways); a vendor row says which are.
                return judge_code(code, status, &body, policy, |kind| {
                    failure(kind, describe_error(status, code, &body, secrets))
                });
            }
            match body.token(policy) {
                Ok(grant) => Verdict::Success(grant),
                Err(why) => Verdict::Transient(failure(
                    FailureKind::MalformedSuccess,
                    // Never quote a 2xx body: it may hold tokens.
                    format!(
                        "HTTP {status} {} {why}",
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
            Some(code) => judge_code(code, status, &body, policy, |kind| {
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

/// Decides the code of an OAuth error response seen on a 4xx (other than 408/429) or a 2xx.
///
/// Order: the workload's `transient_codes`, its `permanent_codes`, a vendor's retryable
/// sub-code, the registered retryable codes, a vendor's final code, a registered final code
/// on 400/401/403; anything else is `oauth_unknown_code`, transient.
fn judge_code(
    code: &str,
    status: u16,
    body: &Body,
    policy: &ClassifyPolicy,
    failure: impl Fn(FailureKind) -> Failure,
) -> Verdict {
    let listed = |list: &[String]| list.iter().any(|c| c == code);
    let vendor = |j: Judgement| {
        VENDOR_ROWS
            .iter()
            .any(|r| r.judgement == j && r.matches(status, code, body))
    };
    if listed(&policy.transient_codes) {
        Verdict::Transient(failure(FailureKind::OauthRetryable))
    } else if listed(&policy.permanent_codes) {
        Verdict::Permanent(failure(FailureKind::OauthRejected))
    } else if vendor(Judgement::Retry) || RETRYABLE_CODES.contains(&code) {
        Verdict::Transient(failure(FailureKind::OauthRetryable))
    } else if vendor(Judgement::Final)
        || (matches!(status, 400 | 401 | 403) && FINAL_CODES.contains(&code))
    {
        Verdict::Permanent(failure(FailureKind::OauthRejected))
    } else {
        Verdict::Transient(failure(FailureKind::OauthUnknownCode))
    }
}

/// The shape check: the body's `error` code when the answer is an OAuth error response at
/// all, else `None`.
///
/// An OAuth error response is a JSON object or a form body (not labelled HTML or XML) whose
/// `error` member is a string of RFC 6749 `error` characters in lower-case snake_case (or a
/// code the workload lists), and that carries none of the [`ENVELOPE_MEMBERS`] of a
/// framework's error page. `{"status":403,"error":"Forbidden","path":"/oauth2/token"}`,
/// `{"error":"Not Found"}` and `{"error":"Access denied"}` are not.
fn oauth_code<'b>(
    body: &'b Body,
    content_type: Option<&str>,
    policy: &ClassifyPolicy,
) -> Option<&'b str> {
    if content_type.is_some_and(is_markup) {
        return None;
    }
    let code = body.get("error").filter(|c| is_error_code(c))?;
    let listed = policy
        .transient_codes
        .iter()
        .chain(&policy.permanent_codes)
        .any(|c| c == code);
    if !listed && !is_snake_case(code) {
        return None;
    }
    if ENVELOPE_MEMBERS.iter().any(|m| body.has(m)) {
        return None;
    }
    Some(code)
}

/// A content type for people (HTML, XHTML) or XML: never an OAuth error response.
fn is_markup(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or(content_type)
        .trim()
        .to_ascii_lowercase();
    media.contains("html") || media.contains("xml")
}

/// Lower-case snake_case: `[a-z][a-z0-9_]*`, the form of every registered code.
fn is_snake_case(code: &str) -> bool {
    code.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
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

/// Reset values above this many seconds are epoch seconds, below it delta seconds (10⁹ s is
/// 2001-09-09; no vendor documents a window of 31 years).
pub const EPOCH_THRESHOLD: u64 = 1_000_000_000;

/// Whole seconds, a decimal fraction rounded up (`"1.2"` → 2); overflow saturates. `None`
/// for anything else (signs, exponents, garbage).
fn whole_seconds(v: &str) -> Option<u64> {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (v.contains('.') && frac.is_empty()) {
        return None;
    }
    let secs = int.parse::<u64>().unwrap_or(u64::MAX);
    Some(if frac.bytes().any(|b| b != b'0') {
        secs.saturating_add(1)
    } else {
        secs
    })
}

/// Parses an `X-RateLimit-Reset` value: epoch seconds above [`EPOCH_THRESHOLD`] (GitHub,
/// Okta, Auth0, X), delta seconds below it, or an RFC 3339 time (Atlassian); relative to `now`,
/// clamped to `max`. A past instant gives zero; garbage gives `None`.
pub fn parse_reset(value: &str, now: Timestamp, max: Duration) -> Option<Duration> {
    let v = value.trim();
    let d = match whole_seconds(v) {
        Some(secs) if secs > EPOCH_THRESHOLD => {
            Timestamp::from_millis(secs.saturating_mul(1000)).since(now)
        }
        Some(secs) => Duration::from_secs(secs),
        None => {
            let at = humantime::parse_rfc3339_weak(v).ok()?;
            Timestamp::from_system_time(at).since(now)
        }
    };
    Some(d.min(max))
}

/// The `(remaining, reset)` pairs of an IETF `RateLimit` field, one per policy: the
/// dictionary form of drafts up to -07 (`limit=10, remaining=0, reset=5`) is one policy;
/// the list form of -08 on (`"burst";r=0;t=5, "day";r=90;t=3600`) one per item.
fn ietf_policies(value: &str) -> Vec<(Option<u64>, Option<u64>)> {
    let items: Vec<&str> = if value.contains(';') {
        value.split(',').collect()
    } else {
        vec![value]
    };
    items
        .into_iter()
        .map(|item| {
            let mut remaining = None;
            let mut reset = None;
            for param in item.split([';', ',']) {
                let Some((k, v)) = param.split_once('=') else {
                    continue;
                };
                let v = whole_seconds(v.trim().trim_matches('"'));
                match k.trim().to_ascii_lowercase().as_str() {
                    "remaining" | "r" => remaining = v,
                    "reset" | "t" => reset = v,
                    _ => {}
                }
            }
            (remaining, reset)
        })
        .collect()
}

/// The hold that rate-limit headers ask for, when they apply: on a 429 or a 503, or when a
/// `remaining` value is 0 (GitHub's secondary limits answer 403 with
/// `x-ratelimit-remaining: 0`). The latest reset that applies wins, clamped to `max`.
/// `Retry-After`, when it parses, is used instead (see [`classify`]).
pub fn rate_limit_hold(
    status: u16,
    h: &RateLimitHeaders,
    now: Timestamp,
    max: Duration,
) -> Option<Duration> {
    let spent = |v: &Option<String>| v.as_deref().and_then(|v| whole_seconds(v.trim())) == Some(0);
    let policies = h.ietf.as_deref().map(ietf_policies).unwrap_or_default();
    let ietf_spent = policies.iter().any(|(r, _)| *r == Some(0));
    let limited = matches!(status, 429 | 503);
    let mut holds: Vec<Duration> = Vec::new();
    if limited || spent(&h.remaining) {
        holds.extend(h.reset.as_deref().and_then(|v| parse_reset(v, now, max)));
    }
    if limited || spent(&h.ietf_remaining) {
        holds.extend(
            h.ietf_reset
                .as_deref()
                .and_then(|v| whole_seconds(v.trim()))
                .map(Duration::from_secs),
        );
    }
    if ietf_spent {
        // The policies that are spent decide.
        holds.extend(
            policies
                .iter()
                .filter(|(r, _)| *r == Some(0))
                .filter_map(|(_, t)| t.map(Duration::from_secs)),
        );
    } else if limited {
        // Limited without a spent policy: the soonest reset (a later one is a longer quota).
        holds.extend(
            policies
                .iter()
                .filter_map(|(_, t)| t.map(Duration::from_secs))
                .min(),
        );
    }
    holds.into_iter().max().map(|d| d.min(max))
}

/// The refresh token carried by a 2xx answer, whatever its verdict: a provider that rotated
/// the grant and sent a body the classifier rejects (`malformed_success`: no usable access
/// token, a control character in it, a 2xx with an error code) may have revoked the token
/// that was sent, so the new one is the only valid one and must be kept. `None` for anything
/// but a 2xx, a body without one, or a token with control characters (never stored: it could
/// not be sent in a form body as received).
pub fn refresh_token_in_2xx(outcome: &RawOutcome) -> Option<Secret> {
    let RawOutcome::Response(answer) = outcome else {
        return None;
    };
    if !(200..300).contains(&answer.status) {
        return None;
    }
    parse_body(&answer.body, answer.truncated)
        .get("refresh_token")
        .filter(|t| !t.is_empty() && !t.chars().any(char::is_control))
        .map(Secret::from)
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
    /// True when the body has a member `key`, of any type.
    fn has(&self, key: &str) -> bool {
        match self {
            Body::Json(map) => map.contains_key(key),
            Body::Form(pairs) => pairs.iter().any(|(k, _)| k == key),
            Body::Other => false,
        }
    }

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

    /// The grant of a 2xx body, or why there is none (for the summary, never quoting it).
    fn token(&self, policy: &ClassifyPolicy) -> Result<TokenGrant, &'static str> {
        let access_token = self
            .get("access_token")
            .filter(|t| !t.is_empty())
            .ok_or("without an access_token")?;
        // A token with CR, LF or another control character would be sent in an
        // `Authorization` header (header injection) or refused there: never serve it.
        if access_token.chars().any(char::is_control) {
            return Err("with an access_token containing control characters");
        }
        let expires_in = match self {
            Body::Json(map) => map.get("expires_in").and_then(json_seconds),
            Body::Form(_) => self.get("expires_in").and_then(str_seconds),
            Body::Other => None,
        };
        let (lifetime, from_provider) = match expires_in {
            Some(secs) if secs > 0 => (Duration::from_secs(secs).min(MAX_LIFETIME), true),
            Some(_) | None => (policy.default_lifetime, false),
        };
        Ok(TokenGrant {
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

fn describe_error(status: u16, code: &str, body: &Body, secrets: &LazyScrubber<'_>) -> String {
    match body.get("error_description").filter(|d| !d.is_empty()) {
        Some(desc) => format!(
            "HTTP {status} {code}: {}",
            excerpt(secrets.scrub(desc).as_bytes())
        ),
        None => format!("HTTP {status} {code}"),
    }
}

fn describe(
    status: u16,
    a: &HttpAnswer,
    code: Option<&str>,
    body: &Body,
    secrets: &LazyScrubber<'_>,
) -> String {
    if let Some(code) = code {
        return describe_error(status, code, body, secrets);
    }
    let ct = content_type_label(a.content_type.as_deref());
    // Scrub before cutting, so that no secret is left half-visible at the cut.
    let head = &a.body[..a.body.len().min(8 * 1024)];
    let safe = secrets.scrub(&String::from_utf8_lossy(head));
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

#[cfg(test)]
mod tests;
