//! The raw schema: serde-derived structs with `deny_unknown_fields`, every value `Spanned` so
//! that a problem names its line. A value is only typed here (a duration parses, a number is
//! a number); the rules are the validation pass's. A type error reads `invalid type: <found>,
//! expected <what>`, `<what>` given by serde's `expecting`, so a value (a secret) is never
//! echoed.

use std::time::Duration;

use serde::Deserialize;
use strum::{Display, IntoStaticStr};
use tokenvisor_core::Secret;
use tokenvisor_core::spec::AuthMethod;
use toml::Spanned;

/// An optional value with its span.
pub(crate) type Opt<T> = Option<Spanned<T>>;
/// A list of strings, each with its span.
pub(crate) type List = Spanned<Vec<Spanned<String>>>;

/// `[service]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) status_dir: Opt<String>,
    pub(crate) admin_listen: Opt<String>,
    pub(crate) admin_token_file: Opt<String>,
    pub(crate) state_dir: Opt<String>,
    pub(crate) admin_header_timeout: Opt<HumanDuration>,
    pub(crate) admin_idle_timeout: Opt<HumanDuration>,
    pub(crate) admin_max_connections: Opt<Count>,
    pub(crate) status_refresh_interval: Opt<HumanDuration>,
    pub(crate) log_format: Opt<LogFormat>,
    pub(crate) log_level: Opt<String>,
}

/// The timing and classification keys of `[defaults]` and a `[[workload]]`, each written
/// once: its raw type, the check that resolves it (`duration`, `number`, `count`: the key's
/// rule by its name, in `tokenvisor_core::spec::rules`; `codes`: a list of RFC 6749 error
/// codes) and the [`crate::spec::WorkloadPolicy`] field it sets. The schema's fields, the
/// validation pass and `check-config`'s listing (in this order) are generated from it:
/// `$then` is the macro that takes the list.
macro_rules! policy_keys {
    ($then:ident $arg:tt) => {
        $then! { $arg
            request_timeout: HumanDuration, duration => request_timeout;
            connect_timeout: HumanDuration, duration => connect_timeout;
            refresh_at: Number, number => schedule.refresh_at;
            refresh_jitter: Number, number => schedule.refresh_jitter;
            default_lifetime: HumanDuration, duration => default_lifetime;
            backoff_initial: HumanDuration, duration => backoff.initial;
            backoff_max: HumanDuration, duration => backoff.max;
            backoff_multiplier: Number, number => backoff.multiplier;
            give_up_after: HumanDuration, duration => give_up_after;
            max_retry_after: HumanDuration, duration => max_retry_after;
            endpoint_concurrency: Count, count => endpoint_concurrency;
            transient_codes: Vec<Spanned<String>>, codes => transient_codes;
            permanent_codes: Vec<Spanned<String>>, codes => permanent_codes;
        }
    };
}
pub(crate) use policy_keys;

/// `[defaults]`, and the same keys inside a `[[workload]]`: the policy keys, then the
/// provider and grant keys.
macro_rules! raw_policy {
    ({ $($other:ident: $oty:ty,)* } $($name:ident: $ty:ty, $check:ident => $($f:ident).+;)*) => {
        /// `[defaults]`, and the same keys inside a `[[workload]]`.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct RawPolicy {
            $(pub(crate) $name: Opt<$ty>,)*
            $(pub(crate) $other: $oty,)*
        }
    };
}

policy_keys!(raw_policy {
    client_key_file: Opt<String>,
    client_key_id: Opt<String>,
    client_assertion_alg: Opt<tokenvisor_core::spec::AssertionAlg>,
    client_assertion_audience: Opt<String>,
    client_cert_file: Opt<String>,
    ca_file: Opt<String>,
    ca_only: Opt<bool>,
    proxy: Opt<String>,
    proxy_credentials_file: Opt<String>,
    no_proxy: Opt<String>,
    issuer: Opt<String>,
    extra_params: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    assertion_file: Opt<String>,
    subject_token_file: Opt<String>,
    subject_token_type: Opt<String>,
    actor_token_file: Opt<String>,
    actor_token_type: Opt<String>,
    requested_token_type: Opt<String>,
});

/// The keys of a `[[workload]]` that `[defaults]` does not have.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkload {
    pub(crate) name: Opt<String>,
    pub(crate) token_url: Opt<String>,
    pub(crate) client_id: Opt<String>,
    pub(crate) client_secret: Opt<RawSecret>,
    pub(crate) client_secret_file: Opt<String>,
    pub(crate) client_secret_env: Opt<String>,
    pub(crate) auth_method: Opt<AuthMethod>,
    pub(crate) grant: Opt<RawGrant>,
    pub(crate) refresh_token_file: Opt<String>,
    pub(crate) refresh_token: Opt<RawSecret>,
    pub(crate) token_sink_file: Opt<String>,
    pub(crate) scopes: Option<List>,
    pub(crate) resource: Opt<String>,
    pub(crate) audience: Opt<String>,
    // `tokenvisor login` (crate::login)
    pub(crate) authorization_url: Opt<String>,
    pub(crate) device_authorization_url: Opt<String>,
    pub(crate) redirect_port: Opt<Count>,
    pub(crate) login_scopes: Option<List>,
}

/// `grant` (serde and strum derive the names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub(crate) enum RawGrant {
    RefreshToken,
    ClientCredentials,
    JwtBearer,
    TokenExchange,
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

    fn try_from(DurationText::Text(s): DurationText) -> Result<Self, String> {
        humantime::parse_duration(s.trim()).map(HumanDuration).map_err(|e| {
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

/// A whole number. (Not an `expecting` enum: serde cannot buffer an `i128`, which TOML reads
/// for an integer beyond `i64`; `read` words its type error.)
pub(crate) type Count = i128;

/// An inline secret: `Debug` prints `…`, and a value of the wrong type is not echoed.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "invalid type: expected a string (the value is not shown)"
)]
pub(crate) enum RawSecret {
    Text(#[serde(deserialize_with = "secret")] Secret),
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::from)
}

/// Log output format (`"text"`, `"json"`: serde and strum derive the names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, IntoStaticStr, Display)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `"text"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
