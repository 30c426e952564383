//! The raw schema: what the file may say, as serde-derived structs with
//! `deny_unknown_fields`, every value `Spanned` so that a problem can name its line. A value
//! is only typed here (a duration parses, a number is a number); whether it makes sense is
//! the validation pass's business ([`crate::validate`]).
//!
//! Type errors read `invalid type: <found>, expected <what>`; most scalar types below say
//! `<what>` through serde's `expecting`, so an inline secret of the wrong type is rejected
//! without its value being echoed.

use std::time::Duration;

use serde::Deserialize;
use serde_aux::serde_introspection::serde_introspect;
use tokenvisor_core::Secret;
use toml::Spanned;

use crate::LogFormat;
use crate::spec::AuthMethod;

/// `[service]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) status_dir: Option<Spanned<String>>,
    pub(crate) admin_listen: Option<Spanned<String>>,
    pub(crate) admin_token_file: Option<Spanned<String>>,
    pub(crate) state_dir: Option<Spanned<String>>,
    pub(crate) admin_header_timeout: Option<Spanned<HumanDuration>>,
    pub(crate) admin_idle_timeout: Option<Spanned<HumanDuration>>,
    pub(crate) admin_max_connections: Option<Spanned<Count>>,
    pub(crate) status_refresh_interval: Option<Spanned<HumanDuration>>,
    pub(crate) log_format: Option<Spanned<LogFormat>>,
    pub(crate) log_level: Option<Spanned<String>>,
}

/// `[defaults]`, and the same keys inside a `[[workload]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub(crate) request_timeout: Option<Spanned<HumanDuration>>,
    pub(crate) connect_timeout: Option<Spanned<HumanDuration>>,
    pub(crate) refresh_at: Option<Spanned<Number>>,
    pub(crate) refresh_jitter: Option<Spanned<Number>>,
    pub(crate) default_lifetime: Option<Spanned<HumanDuration>>,
    pub(crate) backoff_initial: Option<Spanned<HumanDuration>>,
    pub(crate) backoff_max: Option<Spanned<HumanDuration>>,
    pub(crate) backoff_multiplier: Option<Spanned<Number>>,
    pub(crate) give_up_after: Option<Spanned<HumanDuration>>,
    pub(crate) max_retry_after: Option<Spanned<HumanDuration>>,
    pub(crate) endpoint_concurrency: Option<Spanned<Count>>,
    pub(crate) transient_codes: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) permanent_codes: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The keys of a `[[workload]]` that `[defaults]` does not have.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkload {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) token_url: Option<Spanned<String>>,
    pub(crate) client_id: Option<Spanned<String>>,
    pub(crate) client_secret: Option<Spanned<RawSecret>>,
    pub(crate) client_secret_file: Option<Spanned<String>>,
    pub(crate) client_secret_env: Option<Spanned<String>>,
    pub(crate) auth_method: Option<Spanned<AuthMethod>>,
    pub(crate) grant: Option<Spanned<RawGrant>>,
    pub(crate) refresh_token_file: Option<Spanned<String>>,
    pub(crate) refresh_token: Option<Spanned<RawSecret>>,
    pub(crate) token_sink_file: Option<Spanned<String>>,
    pub(crate) scopes: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) resource: Option<Spanned<String>>,
    pub(crate) audience: Option<Spanned<String>>,
}

/// `grant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawGrant {
    RefreshToken,
    ClientCredentials,
}

/// A humantime duration string ("30s", "1h 30m"), parsed as it is read.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "DurationText")]
pub(crate) struct HumanDuration(pub(crate) Duration);

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "invalid type: expected a duration string such as \"30s\", \"10m\" or \"0s\""
)]
enum DurationText {
    Text(String),
}

impl TryFrom<DurationText> for HumanDuration {
    type Error = String;

    fn try_from(text: DurationText) -> Result<Self, String> {
        let DurationText::Text(s) = text;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                format!("invalid duration {s:?}: {e} (write e.g. \"30s\", \"10m\", \"1h 30m\" or \"0s\")")
            })
    }
}

/// A number, integer or float.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged, expecting = "invalid type: expected a number")]
pub(crate) enum Number {
    Float(f64),
}

impl Number {
    pub(crate) fn get(self) -> f64 {
        let Number::Float(x) = self;
        x
    }
}

/// A whole number, range-checked by the validation pass so that the message can say why.
/// (Not an `expecting` enum like [`Number`]: serde cannot buffer an `i128`, and TOML reads
/// an integer beyond `i64` as one; `read` words its type error.)
pub(crate) type Count = i128;

/// An inline secret: `Debug` prints `…`, and a value of the wrong type is not echoed.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "SecretText")]
pub(crate) struct RawSecret(pub(crate) Secret);

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "invalid type: expected a string (the value is not shown)"
)]
enum SecretText {
    Text(String),
}

impl From<SecretText> for RawSecret {
    fn from(text: SecretText) -> Self {
        let SecretText::Text(s) = text;
        RawSecret(Secret::from(s))
    }
}

/// The top-level sections.
pub(crate) const SECTIONS: &[&str] = &["service", "defaults", "workload"];

/// The keys of `[service]`.
pub(crate) fn service_keys() -> &'static [&'static str] {
    serde_introspect::<RawService>()
}

/// The keys of `[defaults]` (a `[[workload]]` may set them too).
pub(crate) fn policy_keys() -> &'static [&'static str] {
    serde_introspect::<RawPolicy>()
}

/// The keys only a `[[workload]]` has.
pub(crate) fn workload_keys() -> &'static [&'static str] {
    serde_introspect::<RawWorkload>()
}

/// Where a known key belongs.
pub(crate) fn home_of(key: &str) -> Option<&'static str> {
    if service_keys().contains(&key) {
        Some("[service]")
    } else if policy_keys().contains(&key) {
        Some("[defaults] or a [[workload]]")
    } else if workload_keys().contains(&key) {
        Some("each [[workload]]")
    } else {
        None
    }
}

/// Explains a key that is valid, just not in `section` (`a` and `b`: the other sections'
/// keys).
pub(crate) fn section_hint(key: &str, a: &[&str], b: &[&str], section: &str) -> Option<String> {
    if a.contains(&key) || b.contains(&key) {
        home_of(key).map(|p| format!("`{key}` is not a [{section}] key; it belongs in {p}"))
    } else {
        None
    }
}

/// The closest known key, if it is close enough to be a typo ("did you mean").
pub(crate) fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(name, k), *k))
        .filter(|&(d, k)| d <= 2.max(k.len() / 4))
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}
