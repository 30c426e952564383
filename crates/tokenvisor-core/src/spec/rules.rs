//! The rules a resolved spec keeps, whoever built it: each value's limits by the name of its
//! key ([`duration`]: a duration's ceiling and why; [`number`], [`count`]), the rules tying
//! two keys of a [`WorkloadPolicy`] ([`WorkloadPolicy::pair_rules`]) and RFC 6749's
//! grammars ([`scope_token`], [`error_code`]), and the value rules of a workload's own keys
//! ([`text`], [`token_url`], [`resource`], [`token_type`]). `tokenvisor-config` applies a key's rule as
//! it reads the key and names its `FILE:LINE`; an embedder building a spec in code gets the
//! same verdicts as data from [`WorkloadPolicy::check`].

use std::sync::Arc;
use std::time::Duration;

use humantime::format_duration as human;

use super::{TOKEN_TYPE_ALIASES, WorkloadPolicy, WorkloadSpec};
use crate::TokenUrl;

/// The longest duration accepted for any key (longer ones are typos, and would overflow
/// deadline arithmetic). Each key has its own, smaller limit: [`duration_limit`].
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

/// The largest `endpoint_concurrency` accepted (in effect: unlimited).
pub const MAX_ENDPOINT_CONCURRENCY: usize = 1_000_000;

/// The largest `service.admin_max_connections` accepted.
pub const MAX_ADMIN_MAX_CONNECTIONS: usize = 65_536;

const DAY: u64 = 24 * 3600;
/// Each duration key: its ceiling in seconds, whether it must be longer than 0s, and why the
/// ceiling. No timer waits longer than the timer service holds (30 days); the tighter
/// ceilings catch typos ("30d" for "30s").
const DURATIONS: [(&str, u64, bool, &str); 11] = [
    ("request_timeout", 600, true, REQUEST),
    ("connect_timeout", 600, true, REQUEST),
    ("default_lifetime", 365 * DAY, true, LIFETIME),
    ("backoff_initial", DAY, true, BACKOFF),
    ("backoff_max", DAY, true, BACKOFF),
    ("give_up_after", 30 * DAY, false, GIVE_UP),
    ("max_retry_after", DAY, false, RETRY_AFTER),
    ("admin_header_timeout", 3600, true, ADMIN),
    ("admin_idle_timeout", 3600, true, ADMIN),
    ("status_refresh_interval", 3600, false, STATUS),
    ("lease_ttl", 3600, true, LEASE),
];
const REQUEST: &str =
    "a token request that takes longer has failed; the attempt backstop adds both";
const LIFETIME: &str = "a provider's expires_in is capped at one year too";
const BACKOFF: &str = "a longer wait between attempts would hide an outage for days";
const GIVE_UP: &str = "the longest a timer waits; use 0s to never give up";
const RETRY_AFTER: &str = "no provider may stop every refresh of an endpoint for longer";
const ADMIN: &str = "the admin API waits no longer for a client";
const STATUS: &str = "a status file may show timestamps at most an hour old";
const LEASE: &str = "a member gone is noticed only after it";

/// The longest value accepted for a duration key, and why (for the error message); `None`
/// for a key that is not a duration. Nothing configured may make a timer wait longer than
/// the timer service holds ([`crate::policy::MAX_TIMER_DELAY`], 30 days); the tighter limits
/// catch typos ("30d" for "30s") that would silently stop refreshes for days.
pub fn duration_limit(key: &str) -> Option<(Duration, &'static str)> {
    let rule = DURATIONS.iter().find(|r| r.0 == key);
    rule.map(|&(_, secs, _, why)| (Duration::from_secs(secs), why))
}

/// The duration `d` at `key`, or why it breaks the key's limit (a key without one: at most
/// [`MAX_DURATION`]).
///
/// # Errors
/// Zero where the key must be longer, or longer than its ceiling (the value, the ceiling and
/// why).
pub fn duration(key: &str, d: Duration) -> Result<Duration, String> {
    let typo = ("", MAX_DURATION.as_secs(), true, "longer is a typo");
    let (_, max, positive, why) = *DURATIONS.iter().find(|r| r.0 == key).unwrap_or(&typo);
    let max = Duration::from_secs(max);
    if positive && d.is_zero() {
        return Err("must be longer than 0s".to_owned());
    }
    let (shown, most) = (human(d), human(max));
    (d <= max)
        .then_some(d)
        .ok_or_else(|| format!("is {shown}; it must be at most {most} ({why})"))
}

/// The number `x` at `key` (`refresh_at`, `refresh_jitter`; any other: a multiplier, at
/// least 1).
///
/// # Errors
/// Out of the key's range, or not finite.
pub fn number(key: &str, x: f64) -> Result<f64, String> {
    let frac = "a fraction of the token's lifetime";
    let (ok, rule) = match key {
        "refresh_at" => (
            x > 0.0 && x <= 1.0,
            format!("above 0 and at most 1 ({frac})"),
        ),
        "refresh_jitter" => (
            (0.0..1.0).contains(&x),
            "at least 0 and below refresh_at".into(),
        ),
        _ => (x >= 1.0, "at least 1".to_owned()),
    };
    (ok && x.is_finite())
        .then_some(x)
        .ok_or(format!("is {x}; it must be {rule}"))
}

/// The whole number `n` at `key` (`admin_max_connections`, `shards`; any other: an
/// endpoint's concurrency, at most [`MAX_ENDPOINT_CONCURRENCY`]); each at least 1.
///
/// # Errors
/// Out of the key's range.
pub fn count(key: &str, n: i128) -> Result<usize, String> {
    let (max, rule) = match key {
        "admin_max_connections" => (
            MAX_ADMIN_MAX_CONNECTIONS,
            format!("must be between 1 and {MAX_ADMIN_MAX_CONNECTIONS}"),
        ),
        "shards" => (65_536, "must be between 1 and 65536".to_owned()),
        _ => (
            MAX_ENDPOINT_CONCURRENCY,
            format!("it must be at least 1 and at most {MAX_ENDPOINT_CONCURRENCY}"),
        ),
    };
    let ok = usize::try_from(n).ok().filter(|n| (1..=max).contains(n));
    ok.ok_or_else(|| format!("is {n}; {rule}"))
}

/// An RFC 6749 §5.2 error code: `1*( %x20-21 / %x23-5B / %x5D-7E )`, and (ours) no leading
/// or trailing space.
pub fn error_code(c: &str) -> bool {
    let ascii = c
        .bytes()
        .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E));
    !c.is_empty() && c.trim() == c && ascii
}

/// What [`error_code`] accepts, in words.
pub const ERROR_CODE: &str = "an RFC 6749 error code (printable ASCII without '\"' or '\\', not \
                              empty, no leading or trailing space)";

/// An RFC 6749 §3.3 scope token: `1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

/// What [`scope_token`] accepts, in words.
pub const SCOPE_TOKEN: &str =
    "a scope token (one scope per string: printable ASCII, no spaces, '\"' or '\\')";

/// A non-empty string without control characters (`client_id`, `audience`).
///
/// # Errors
/// Empty, or a control character in it.
pub fn text(s: &str) -> Result<Arc<str>, String> {
    match s {
        s if s.trim().is_empty() => Err("must not be empty".to_owned()),
        s if s.chars().any(char::is_control) => {
            Err("must not contain control characters".to_owned())
        }
        s => Ok(Arc::from(s)),
    }
}

/// A token URL ([`TokenUrl::parse`]) without credentials or a fragment (also the rule of
/// `tokenvisor login`'s endpoints).
///
/// # Errors
/// Why, never echoing the value (it might carry credentials).
pub fn token_url(s: &str) -> Result<TokenUrl, String> {
    let url = TokenUrl::parse(s).map_err(|e| e.to_string())?;
    let u = url.as_url();
    if !u.username().is_empty() || u.password().is_some() {
        return Err(
            "must not contain credentials (user:password@); use client_id and a client secret"
                .to_owned(),
        );
    }
    match u.fragment() {
        Some(_) => Err("must not contain a fragment (#…) (RFC 6749 §3.2)".to_owned()),
        None => Ok(url),
    }
}

/// `resource` (RFC 8707): an absolute URI without a fragment.
///
/// # Errors
/// Not one.
pub fn resource(s: &str) -> Result<Arc<str>, String> {
    match url::Url::parse(s) {
        Ok(u) if u.fragment().is_none() && s.trim() == s => Ok(Arc::from(s)),
        Ok(_) | Err(_) => Err(
            "must be an absolute URI without a fragment (RFC 8707), e.g. \
                               \"https://mcp.example.com\""
                .to_owned(),
        ),
    }
}

/// A token type (RFC 8693 §3): one of the short [`TOKEN_TYPE_ALIASES`] (its URN), or an
/// absolute URI.
///
/// # Errors
/// Neither (the value and the aliases named).
pub fn token_type(s: &str) -> Result<String, String> {
    if let Some((_, urn)) = TOKEN_TYPE_ALIASES.iter().find(|(alias, _)| *alias == s) {
        return Ok((*urn).to_owned());
    }
    let aliases: Vec<&str> = TOKEN_TYPE_ALIASES.iter().map(|(a, _)| *a).collect();
    match url::Url::parse(s) {
        Ok(_) if s.trim() == s && !s.chars().any(char::is_control) => Ok(s.to_owned()),
        Ok(_) | Err(_) => Err(format!(
            "{s:?} is neither an absolute URI (e.g. \"urn:ietf:params:oauth:token-type:jwt\") nor \
             one of {}",
            aliases.join(", ")
        )),
    }
}

/// One broken rule of a spec built in code: the key (its configuration name) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key, as the configuration file names it.
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

impl WorkloadPolicy {
    /// The rules tying two keys, each as its two keys and why it is broken (`None`: kept).
    /// `origin(key)` is written after a value in the message, saying where it came from
    /// (`", from defaults.refresh_at"`, `", the default"`; empty: nothing to say).
    pub fn pair_rules(
        &self,
        origin: &dyn Fn(&str) -> String,
    ) -> [([&'static str; 2], Option<String>); 3] {
        let (s, b) = (self.schedule, self.backoff);
        let (j, a) = (s.refresh_jitter, s.refresh_at);
        let (jo, ao) = (origin("refresh_jitter"), origin("refresh_at"));
        let jitter = format!("refresh_jitter ({j}{jo}) must be below refresh_at ({a}{ao})");
        let (m, i) = (human(b.max), human(b.initial));
        let (mo, io) = (origin("backoff_max"), origin("backoff_initial"));
        let backoff = format!("backoff_max ({m}{mo}) must be at least backoff_initial ({i}{io})");
        let both: Vec<_> = (self.permanent_codes.iter())
            .filter(|c| self.transient_codes.contains(c))
            .collect();
        let paren = |k| {
            let o = origin(k);
            o.strip_prefix(", ")
                .map(|o| format!(" ({o})"))
                .unwrap_or_default()
        };
        let (t, p) = (paren("transient_codes"), paren("permanent_codes"));
        let codes = format!(
            "{both:?} in both transient_codes{t} and permanent_codes{p}; a code can only be one \
             or the other"
        );
        [
            (["refresh_at", "refresh_jitter"], (j >= a).then_some(jitter)),
            (
                ["backoff_initial", "backoff_max"],
                (b.max < b.initial).then_some(backoff),
            ),
            (
                ["transient_codes", "permanent_codes"],
                (!both.is_empty()).then_some(codes),
            ),
        ]
    }

    /// Every rule this policy breaks, as data: each value against its key's limit, each
    /// listed code against RFC 6749's grammar, then the rules tying two keys. What the
    /// configuration file's validation checks, for a policy built in code.
    pub fn check(&self) -> Vec<Invalid> {
        let durations = [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("default_lifetime", self.default_lifetime),
            ("backoff_initial", self.backoff.initial),
            ("backoff_max", self.backoff.max),
            ("give_up_after", self.give_up_after),
            ("max_retry_after", self.max_retry_after),
        ];
        let numbers = [
            ("refresh_at", self.schedule.refresh_at),
            ("refresh_jitter", self.schedule.refresh_jitter),
            ("backoff_multiplier", self.backoff.multiplier),
        ];
        let concurrency = i128::try_from(self.endpoint_concurrency).unwrap_or(i128::MAX);
        let codes = [
            ("transient_codes", &self.transient_codes),
            ("permanent_codes", &self.permanent_codes),
        ];
        let codes = codes.into_iter().flat_map(|(key, list)| {
            let bad = list.iter().filter(|c| !error_code(c));
            bad.map(move |c| (key, Err(format!("{c:?} is not {ERROR_CODE}"))))
        });
        let values = (durations.into_iter())
            .map(|(key, d)| (key, duration(key, d).map(drop)))
            .chain(numbers.map(|(key, x)| (key, number(key, x).map(drop))))
            .chain([("endpoint_concurrency", count("", concurrency).map(drop))])
            .chain(codes);
        let pairs = (self.pair_rules(&|_| String::new()).into_iter())
            .map(|([_, key], why)| (key, why.map_or(Ok(()), Err)));
        (values.chain(pairs))
            .filter_map(|(key, r)| r.err().map(|reason| Invalid { key, reason }))
            .collect()
    }
}

impl WorkloadSpec {
    /// Every rule this spec breaks, as data: its policy's ([`WorkloadPolicy::check`]), its
    /// provider keys' against its authentication ([`super::ProviderSpec::check`]; `key_algs`
    /// as there), its client id, token URL, scopes, resource and audience. What the
    /// configuration file's validation checks, for a spec built in code.
    pub fn check(&self, key_algs: Option<&[super::AssertionAlg]>) -> Vec<Invalid> {
        let mut out = self.policy.check();
        let secret = self.client_secret.is_some();
        out.extend((self.policy.provider).check(self.auth_method, secret, key_algs));
        let scopes = self.scopes.iter().find(|s| !scope_token(s));
        let scopes = scopes.map(|s| Err(format!("{s:?} is not {SCOPE_TOKEN}")));
        let values = [
            ("client_id", text(&self.client_id).map(drop)),
            (
                "token_url",
                token_url(self.token_url.as_url().as_str()).map(drop),
            ),
            ("scopes", scopes.unwrap_or(Ok(()))),
            (
                "resource",
                self.resource
                    .as_deref()
                    .map_or(Ok(()), |r| resource(r).map(drop)),
            ),
            (
                "audience",
                self.audience
                    .as_deref()
                    .map_or(Ok(()), |a| text(a).map(drop)),
            ),
        ];
        let values = values
            .into_iter()
            .filter_map(|(key, r)| Some((key, r.err()?)));
        out.extend(values.map(|(key, reason)| Invalid { key, reason }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_built_in_code_is_checked_as_the_file_is() {
        assert_eq!(WorkloadPolicy::default().check(), []);
        let mut p = WorkloadPolicy {
            request_timeout: Duration::from_secs(3600),
            endpoint_concurrency: 0,
            transient_codes: vec!["busy".into(), " x".into()],
            permanent_codes: vec!["busy".into()],
            ..WorkloadPolicy::default()
        };
        p.schedule.refresh_jitter = 0.9;
        let keys: Vec<_> = p.check().into_iter().map(|i| i.key).collect();
        let want = [
            "request_timeout",
            "endpoint_concurrency",
            "transient_codes",
            "refresh_jitter",
            "permanent_codes",
        ];
        assert_eq!(keys, want);
        let why = &p.check()[0].reason;
        assert!(why.starts_with("is 1h; it must be at most 10m"), "{why}");
    }

    #[test]
    fn a_workload_built_in_code_is_checked_as_the_file_is() {
        let url = TokenUrl::parse("https://u:p@idp.example.com/token").expect("a URL");
        let name = crate::WorkloadName::new("w").expect("a name");
        let mut w = WorkloadSpec::new(name, url, " ", super::super::GrantSpec::ClientCredentials);
        w.scopes = Arc::from(vec!["a b".to_owned()]);
        w.resource = Some(Arc::from("https://mcp.example.com#x"));
        w.auth_method = super::super::AuthMethod::PrivateKeyJwt;
        let keys: Vec<_> = w.check(None).into_iter().map(|i| i.key).collect();
        let want = [
            "auth_method",
            "client_id",
            "token_url",
            "scopes",
            "resource",
        ];
        assert_eq!(keys, want);
        assert_eq!(
            token_type("jwt"),
            Ok("urn:ietf:params:oauth:token-type:jwt".into())
        );
        assert!(token_type("not a uri").is_err());
    }

    #[test]
    fn each_duration_key_has_a_ceiling_no_timer_exceeds() {
        for (key, ..) in DURATIONS {
            let (max, _) = duration_limit(key).expect("a limit");
            let long = key == "default_lifetime";
            assert!(long || max <= crate::policy::MAX_TIMER_DELAY, "{key}");
            assert_eq!(duration(key, max), Ok(max));
            assert!(
                duration(key, max + Duration::from_secs(1)).is_err(),
                "{key}"
            );
        }
        assert!(duration("other", MAX_DURATION).is_ok());
    }
}
