//! The TOML configuration (DESIGN.md §7) → [`crate::spec::WorkloadSpec`]s.
//!
//! [`load`] reads a file, [`parse`] a string; both resolve and validate everything (secrets
//! included) before a [`Config`] exists, so a bad configuration is one [`ConfigError`] that
//! lists every problem found, one per line, as `FILE:LINE: KEY: reason`.
//!
//! ## Decisions
//! - Sections: `[service]`, `[defaults]`, `[[workload]]`. Unknown sections and keys are errors
//!   (with a "did you mean" hint when a known key is close).
//! - Every `[defaults]` key may be set inside one `[[workload]]`; the workload's value replaces
//!   the default (lists too: a workload's `transient_codes` replaces the defaults' list, it is
//!   not appended to it).
//! - Relative paths (`status_dir`, `admin_token_file`, `client_secret_file`,
//!   `refresh_token_file`, `token_sink_file`) resolve against the configuration file's
//!   directory.
//! - `grant` is required: nothing is inferred from which other keys happen to be present.
//! - Secrets (client secrets, refresh tokens, the admin token) are read and checked here: a
//!   file or variable that is missing or empty is a configuration error, not a runtime one.
//!   A byte order mark and surrounding whitespace (CR/LF included) are trimmed from secret
//!   files, a control character inside the value is an error. No error message ever contains
//!   a secret.
//! - Warnings ([`Config::warnings`]) do not stop a configuration: a secret file that needed
//!   trimming beyond a final newline, a secret file readable by group or others, an
//!   `http://` token URL to a host that is not loopback.
//! - Files that tokenvisor writes (`refresh_token_file`, `token_sink_file`) may not be shared
//!   between workloads, nor with any `client_secret_file`.
//! - Workloads with the same `token_url` share one endpoint gate, so they must agree on
//!   `endpoint_concurrency`.
//! - Every duration key has a ceiling ([`duration_limit`]: 10 minutes for the timeouts, a
//!   day for the backoff and `max_retry_after`, 30 days for `give_up_after`, a year for
//!   `default_lifetime`); a longer value is an error naming the value, the limit and why.
//!   Nothing configured can ask a timer to wait longer than the timer service holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Visitor};
use tokenvisor_core::{Secret, WorkloadName};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};

use crate::spec::{AuthMethod, GrantSpec, SecretOrigin, WorkloadPolicy, WorkloadSpec};

/// The admin API's address when `service.admin_listen` is not set.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7878));

/// The shortest admin token accepted, in bytes (a shorter `admin_token_file` is an error).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// `service.admin_header_timeout` when not set.
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `service.admin_idle_timeout` when not set.
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `service.admin_max_connections` when not set.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 256;

/// The largest `service.admin_max_connections` accepted.
pub const MAX_ADMIN_MAX_CONNECTIONS: usize = 65_536;

/// The `source` of a configuration that did not come from a file.
pub const EMBEDDED_SOURCE: &str = "<embedded>";

/// The largest secret file read (a bigger one is almost certainly the wrong file).
pub const MAX_SECRET_FILE_BYTES: u64 = crate::credentials::SECRET_FILE_LIMIT as u64;

/// The longest duration accepted for any key (longer ones are typos, and would overflow
/// deadline arithmetic). Each key has its own, smaller limit: [`duration_limit`].
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

/// The longest value accepted for a duration key of `[defaults]` or `[[workload]]`, and why
/// (for the error message); `None` for a key that is not a duration. Nothing configured may
/// make a timer wait longer than the timer service holds
/// ([`tokenvisor_core::policy::MAX_TIMER_DELAY`], 30 days); the tighter limits catch typos
/// ("30d" for "30s") that would otherwise silently stop refreshes for days.
pub fn duration_limit(key: &str) -> Option<(Duration, &'static str)> {
    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    let (secs, why) = match key {
        "request_timeout" | "connect_timeout" => (
            10 * MIN,
            "a token request that takes longer has failed; the attempt backstop adds both",
        ),
        "default_lifetime" => (
            365 * DAY,
            "a provider's expires_in is capped at one year too",
        ),
        "backoff_initial" | "backoff_max" => (
            DAY,
            "a longer wait between attempts would hide an outage for days",
        ),
        "give_up_after" => (
            30 * DAY,
            "the longest a timer waits; use 0s to never give up",
        ),
        "max_retry_after" => (
            DAY,
            "no provider may stop every refresh of an endpoint for longer",
        ),
        _ => return None,
    };
    Some((Duration::from_secs(secs), why))
}

/// The largest `endpoint_concurrency` accepted (in effect: unlimited).
pub const MAX_ENDPOINT_CONCURRENCY: usize = 1_000_000;

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, as given (or [`EMBEDDED_SOURCE`]).
    pub source: PathBuf,
    /// The `[service]` section.
    pub service: ServiceConfig,
    /// The resolved `[defaults]` section (what a workload added later would inherit).
    pub defaults: WorkloadPolicy,
    /// The workloads, in file order.
    pub workloads: Vec<WorkloadSpec>,
    /// What is accepted but worth a look, as `FILE:LINE: KEY: reason` problems (see
    /// [`Config::warning_lines`]), in file order.
    pub warnings: Vec<ConfigProblem>,
}

impl Config {
    /// The workload called `name`, if any.
    pub fn workload(&self, name: &str) -> Option<&WorkloadSpec> {
        self.workloads.iter().find(|w| w.name.as_str() == name)
    }

    /// Every effective setting, as TOML, with secrets masked as `"…"` and where each came
    /// from in a comment (for `tokenvisor check-config`).
    pub fn describe_masked(&self) -> String {
        Masked(self).to_string()
    }

    /// The warnings, one line each: `FILE:LINE: KEY: warning: reason`.
    pub fn warning_lines(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|p| {
                let mut line = self.source.display().to_string();
                if let Some(n) = p.line {
                    line.push_str(&format!(":{n}"));
                }
                if !p.key.is_empty() {
                    line.push_str(&format!(": {}", p.key));
                }
                line.push_str(&format!(": warning: {}", p.reason));
                line
            })
            .collect()
    }
}

/// The `[service]` section, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Where status files are written.
    pub status_dir: PathBuf,
    /// Where the admin API listens.
    pub admin_listen: AdminListen,
    /// The file holding the admin API's bearer token (checked readable and at least
    /// [`MIN_ADMIN_TOKEN_BYTES`] long when the admin API is on). `None`: the daemon generates
    /// one in `<state_dir>/admin.token`.
    pub admin_token_file: Option<PathBuf>,
    /// tokenvisor's own state (the generated admin token), kept apart from the status
    /// directory, which ToolHive shares. `None` only when it is not set, cannot be derived
    /// (no `XDG_STATE_HOME`, no `HOME`) and nothing needs it.
    pub state_dir: Option<PathBuf>,
    /// Limits of the admin API's listener.
    pub admin_limits: AdminLimits,
    /// Log output format.
    pub log_format: LogFormat,
    /// Log filter: a level or a tracing filter directive such as `info,tokenvisor=debug`.
    pub log_level: String,
}

/// Limits of the admin API's listener (`[service]` keys `admin_header_timeout`,
/// `admin_idle_timeout`, `admin_max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// A request head must arrive within this, counted from when the connection starts
    /// waiting for it (so an idle keep-alive connection is closed after it too).
    pub header_timeout: Duration,
    /// A connection on which no byte moved either way for this long is closed (a stalled
    /// body, a client that stops reading).
    pub idle_timeout: Duration,
    /// Connections served at once; the daemon lowers it further to a quarter of its file
    /// descriptor limit. Excess connections are closed at once.
    pub max_connections: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            header_timeout: DEFAULT_ADMIN_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_ADMIN_IDLE_TIMEOUT,
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
        }
    }
}

/// Where the admin API listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// `"off"`: no admin API.
    Off,
    /// This socket address.
    Addr(SocketAddr),
}

impl AdminListen {
    /// The address, when the admin API is on.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            AdminListen::Off => None,
            AdminListen::Addr(a) => Some(*a),
        }
    }

    /// True when the admin API is on and reachable only from this host.
    pub fn is_loopback(&self) -> bool {
        match self {
            AdminListen::Off => false,
            AdminListen::Addr(a) => a.ip().is_loopback(),
        }
    }
}

impl Default for AdminListen {
    fn default() -> Self {
        AdminListen::Addr(DEFAULT_ADMIN_LISTEN)
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminListen::Off => f.write_str("off"),
            AdminListen::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
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
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything wrong with one configuration (never empty). `Display` prints one problem per
/// line as `FILE:LINE: KEY: reason` (`LINE` and `KEY` are left out when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    problems: Vec<ConfigProblem>,
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The dotted key, e.g. `workload[2].client_secret_file` or `defaults.refresh_at`; empty
    /// when the problem concerns the whole file.
    pub key: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// Why it is wrong. Never contains a secret.
    pub reason: String,
}

impl ConfigError {
    /// The file the problems are in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The problems, in file order.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    fn single(file: &Path, reason: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problems: vec![ConfigProblem {
                key: String::new(),
                line: None,
                reason,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if !p.key.is_empty() {
                write!(f, ": {}", p.key)?;
            }
            write!(f, ": {}", p.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the configuration file at `path`, using the process environment for
/// `client_secret_env` and the `status_dir` default. Relative paths inside it resolve against
/// its directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::single(path, format!("cannot read the configuration file: {e}"))
    })?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    parse_in(&text, path, &base, &|var| std::env::var(var).ok())
}

/// Parses and validates configuration text. `source` names it in errors, and its directory
/// is where relative paths resolve; `env` looks up environment variables.
pub fn parse(
    text: &str,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let base = source.parent().unwrap_or(Path::new("")).to_path_buf();
    parse_in(text, source, &base, env)
}

// ---------------------------------------------------------------------------------------
// Raw, spanned forms of the sections.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    status_dir: Option<Spanned<String>>,
    admin_listen: Option<Spanned<String>>,
    admin_token_file: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    admin_header_timeout: Option<Spanned<HumanDuration>>,
    admin_idle_timeout: Option<Spanned<HumanDuration>>,
    admin_max_connections: Option<Spanned<Count>>,
    log_format: Option<Spanned<LogFormat>>,
    log_level: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    request_timeout: Option<Spanned<HumanDuration>>,
    connect_timeout: Option<Spanned<HumanDuration>>,
    refresh_at: Option<Spanned<Number>>,
    refresh_jitter: Option<Spanned<Number>>,
    default_lifetime: Option<Spanned<HumanDuration>>,
    backoff_initial: Option<Spanned<HumanDuration>>,
    backoff_max: Option<Spanned<HumanDuration>>,
    backoff_multiplier: Option<Spanned<Number>>,
    give_up_after: Option<Spanned<HumanDuration>>,
    max_retry_after: Option<Spanned<HumanDuration>>,
    endpoint_concurrency: Option<Spanned<Count>>,
    transient_codes: Option<Spanned<Strings>>,
    permanent_codes: Option<Spanned<Strings>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<RawSecret>>,
    client_secret_file: Option<Spanned<String>>,
    client_secret_env: Option<Spanned<String>>,
    auth_method: Option<Spanned<AuthMethod>>,
    grant: Option<Spanned<RawGrant>>,
    refresh_token_file: Option<Spanned<String>>,
    refresh_token: Option<Spanned<RawSecret>>,
    token_sink_file: Option<Spanned<String>>,
    scopes: Option<Spanned<Strings>>,
    resource: Option<Spanned<String>>,
    audience: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawGrant {
    RefreshToken,
    ClientCredentials,
}

impl RawGrant {
    fn as_str(self) -> &'static str {
        match self {
            RawGrant::RefreshToken => "refresh_token",
            RawGrant::ClientCredentials => "client_credentials",
        }
    }
}

/// A humantime duration string.
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"10m\" or \"0s\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(s.trim())
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration {s:?}: {e} (write e.g. \"30s\", \"10m\", \"1h 30m\" or \"0s\")"
                        ))
                    })
            }
        }
        d.deserialize_str(V)
    }
}

/// A number, integer or float.
#[derive(Debug, Clone, Copy)]
struct Number(f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// A whole number (range-checked later, so that the message can say why).
#[derive(Debug, Clone, Copy)]
struct Count(i128);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                Ok(Count(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v.into()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Count, E> {
                Ok(Count(i128::try_from(v).unwrap_or(i128::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}

/// An array of strings, each with its span.
#[derive(Debug, Clone, Default)]
struct Strings(Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    out.push(s);
                }
                Ok(Strings(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// An inline secret. A value of the wrong type is rejected without being echoed.
#[derive(Debug, Clone)]
struct RawSecret(Secret);

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WRONG: &str = "invalid type: expected a string (the value is not shown)";
        impl Visitor<'_> for V {
            type Value = RawSecret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawSecret, E> {
                Ok(RawSecret(Secret::from(s)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawSecret, E> {
                Err(E::custom(WRONG))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawSecret, E> {
                Err(E::custom(WRONG))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawSecret, E> {
                Err(E::custom(WRONG))
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<RawSecret, E> {
                Err(E::custom(WRONG))
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<RawSecret, E> {
                Err(E::custom(WRONG))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawSecret, E> {
                Err(E::custom(WRONG))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<RawSecret, E> {
                Err(E::custom(WRONG))
            }
        }
        d.deserialize_str(V)
    }
}

/// The field names of a derived struct (its keys), read from its `Deserialize` impl.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Introspect<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Introspect<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("introspected"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    // The error is the point: the derived impl handed over its field list first.
    let _introspected = T::deserialize(Introspect(&mut fields));
    fields
}

// ---------------------------------------------------------------------------------------
// The collector of problems.

struct Cx {
    line_starts: Vec<usize>,
    problems: Vec<ConfigProblem>,
    warnings: Vec<ConfigProblem>,
    /// Keys already reported: later checks that depend on them stay quiet.
    broken: HashSet<String>,
}

impl Cx {
    fn new(text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Cx {
            line_starts,
            problems: Vec::new(),
            warnings: Vec::new(),
            broken: HashSet::new(),
        }
    }

    fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    fn problem(&mut self, key: String, span: Option<Range<usize>>, reason: impl Into<String>) {
        let line = span.map(|s| self.line(s.start));
        self.broken.insert(key.clone());
        self.problems.push(ConfigProblem {
            key,
            line,
            reason: reason.into(),
        });
    }

    fn warning(&mut self, key: String, span: Option<Range<usize>>, reason: impl Into<String>) {
        let line = span.map(|s| self.line(s.start));
        self.warnings.push(ConfigProblem {
            key,
            line,
            reason: reason.into(),
        });
    }

    /// Reads a secret file, turning its notes into warnings at `key`.
    fn secret_file(
        &mut self,
        key: String,
        span: Range<usize>,
        path: &Path,
    ) -> Result<Secret, String> {
        let (secret, notes) =
            crate::credentials::read_secret_file_noted(path).map_err(|e| e.to_string())?;
        if !notes.trimmed.is_empty() {
            self.warning(
                key.clone(),
                Some(span.clone()),
                format!(
                    "{}: trimmed {} around the value",
                    path.display(),
                    notes.trimmed.join(" and ")
                ),
            );
        }
        if let Some(mode) = notes.readable_by_others {
            self.warning(
                key,
                Some(span),
                format!(
                    "{}: readable by group or others (mode {mode:04o}); chmod 600 it",
                    path.display()
                ),
            );
        }
        Ok(secret)
    }

    fn is_broken(&self, key: &str) -> bool {
        self.broken.contains(key)
    }

    fn into_error(mut self, file: &Path) -> ConfigError {
        // Stable: problems without a line (whole-file ones) first, then in file order.
        self.problems.sort_by_key(|p| p.line);
        ConfigError {
            file: file.to_path_buf(),
            problems: self.problems,
        }
    }
}

type Entry<'i> = (Spanned<DeString<'i>>, Spanned<DeValue<'i>>);

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset <= span.end
}

/// The dotted key at `offset` inside `value` (which is at `path`), descending into arrays
/// and tables.
fn descend(value: &Spanned<DeValue<'_>>, offset: usize, path: String) -> String {
    match value.get_ref() {
        DeValue::Table(t) => locate(t, offset, &path),
        DeValue::Array(a) => match a.iter().position(|el| contains(&el.span(), offset)) {
            Some(j) => descend(&a[j], offset, format!("{path}[{j}]")),
            None => path,
        },
        DeValue::String(_)
        | DeValue::Integer(_)
        | DeValue::Float(_)
        | DeValue::Boolean(_)
        | DeValue::Datetime(_) => path,
    }
}

/// The dotted key of whatever is at `offset` in `table` (at `prefix`): an entry whose key or
/// value covers it, else the `[section]` or `[[array]]` element whose header is the last one
/// before it.
fn locate(table: &DeTable<'_>, offset: usize, prefix: &str) -> String {
    for (k, v) in table {
        let (ks, vs) = (k.span(), v.span());
        let whole = ks.start.min(vs.start)..ks.end.max(vs.end);
        if contains(&whole, offset) {
            return descend(v, offset, join_key(prefix, k.get_ref()));
        }
    }
    // Sections (std tables and array-of-tables elements) whose header starts before `offset`.
    let mut sections: Vec<(usize, String, &DeTable<'_>)> = Vec::new();
    for (k, v) in table {
        let path = join_key(prefix, k.get_ref());
        match v.get_ref() {
            DeValue::Table(t) => sections.push((v.span().start, path, t)),
            DeValue::Array(a) => {
                for (j, el) in a.iter().enumerate() {
                    if let DeValue::Table(t) = el.get_ref() {
                        sections.push((el.span().start, format!("{path}[{j}]"), t));
                    }
                }
            }
            DeValue::String(_)
            | DeValue::Integer(_)
            | DeValue::Float(_)
            | DeValue::Boolean(_)
            | DeValue::Datetime(_) => {}
        }
    }
    let best = sections
        .into_iter()
        .filter(|(start, _, _)| *start <= offset)
        .max_by_key(|(start, _, _)| *start);
    match best {
        Some((_, path, t)) => locate(t, offset, &path),
        None => prefix.to_owned(),
    }
}

/// Deserializes one section. Unknown keys must already be gone. Each key that fails to
/// deserialize is reported and dropped, and the rest retried, so one pass reports every bad
/// key of the section.
fn read_section<T: DeserializeOwned + Default>(
    cx: &mut Cx,
    path: &str,
    span: &Range<usize>,
    mut entries: Vec<Entry<'_>>,
) -> T {
    loop {
        let table: DeTable<'_> = entries.iter().cloned().collect();
        let value = Spanned::new(span.clone(), DeValue::Table(table));
        let err = match T::deserialize(ValueDeserializer::from(value)) {
            Ok(t) => return t,
            Err(e) => e,
        };
        let at = err.span();
        let hit = at.as_ref().and_then(|at| {
            entries
                .iter()
                .position(|(k, v)| contains(&k.span(), at.start) || contains(&v.span(), at.start))
        });
        match (hit, at) {
            (Some(i), Some(at)) => {
                let (k, v) = entries.remove(i);
                let key = descend(&v, at.start, join_key(path, k.get_ref()));
                cx.broken.insert(join_key(path, k.get_ref()));
                cx.problem(key, Some(at), err.message().to_owned());
            }
            (None, at) | (Some(_), at @ None) => {
                for (k, _) in &entries {
                    cx.broken.insert(join_key(path, k.get_ref()));
                }
                cx.problem(path.to_owned(), at, err.message().to_owned());
                return T::default();
            }
        }
    }
}

/// Splits off and reports keys that are in none of `known`; `hint` explains a key that
/// belongs elsewhere.
fn drop_unknown<'i>(
    cx: &mut Cx,
    path: &str,
    entries: Vec<Entry<'i>>,
    known: &[&str],
    hint: &dyn Fn(&str) -> Option<String>,
) -> Vec<Entry<'i>> {
    let mut kept = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let name: &str = k.get_ref();
        if known.contains(&name) {
            kept.push((k, v));
            continue;
        }
        let mut reason = format!("unknown key `{name}`");
        if let Some(h) = hint(name) {
            let _ = write!(reason, "; {h}");
        } else if let Some(s) = suggest(name, known) {
            let _ = write!(reason, "; did you mean `{s}`?");
        }
        cx.problem(join_key(path, name), Some(k.span()), reason);
    }
    kept
}

/// The closest known key, if it is close enough to be a typo.
fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|&(d, k)| d <= 2.max(k.len() / 4))
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------
// The whole file.

const SECTIONS: &[&str] = &["service", "defaults", "workload"];

fn parse_in(
    text: &str,
    source: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut cx = Cx::new(text);
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let mut errors: Vec<_> = errors
            .iter()
            .map(|e| (e.span(), e.message().to_owned()))
            .collect();
        errors.sort_by_key(|(span, _)| span.as_ref().map(|s| s.start));
        let mut lines_seen = HashSet::new();
        for (span, message) in errors {
            let line = span.as_ref().map(|s| cx.line(s.start));
            if !lines_seen.insert(line) {
                continue; // one syntax error per line: the rest are usually its echoes
            }
            let mut key = span
                .as_ref()
                .map(|s| locate(doc.get_ref(), s.start, ""))
                .unwrap_or_default();
            // A duplicate key is not in the recovered document: its span is the key itself.
            if message == "duplicate key"
                && let Some(dup) = span.as_ref().and_then(|s| text.get(s.clone()))
            {
                let dup = dup.trim_matches(['"', '\'']);
                if !dup.is_empty() && !key.ends_with(dup) {
                    key = join_key(&key, dup);
                }
            }
            cx.problem(key, span, format!("invalid TOML: {message}"));
        }
        return Err(cx.into_error(source));
    }

    let service_keys = fields_of::<RawService>();
    let policy_keys = fields_of::<RawPolicy>();
    let workload_keys = fields_of::<RawWorkload>();
    let all_workload_keys: Vec<&str> = workload_keys.iter().chain(policy_keys).copied().collect();

    let mut raw_service = None;
    let mut raw_defaults = None;
    let mut raw_workloads = Vec::new();
    for (k, v) in doc.into_inner() {
        let name: &str = k.get_ref();
        match name {
            "service" | "defaults" => {
                let span = v.span();
                let found = describe_type(v.get_ref());
                if let DeValue::Table(t) = v.into_inner() {
                    let entries: Vec<Entry<'_>> = t.into_iter().collect();
                    if name == "service" {
                        raw_service = Some((span, entries));
                    } else {
                        raw_defaults = Some((span, entries));
                    }
                } else {
                    cx.problem(
                        name.to_owned(),
                        Some(span),
                        format!("must be a table ([{name}]), not {found}"),
                    );
                }
            }
            "workload" => {
                let span = v.span();
                let found = describe_type(v.get_ref());
                let is_table = v.get_ref().is_table();
                if let DeValue::Array(a) = v.into_inner() {
                    for (i, el) in a.into_iter().enumerate() {
                        let el_span = el.span();
                        let found = describe_type(el.get_ref());
                        if let DeValue::Table(t) = el.into_inner() {
                            raw_workloads.push((el_span, t.into_iter().collect()));
                        } else {
                            cx.problem(
                                format!("workload[{i}]"),
                                Some(el_span.clone()),
                                format!("must be a table ([[workload]]), not {found}"),
                            );
                            raw_workloads.push((el_span, Vec::new()));
                        }
                    }
                } else if is_table {
                    cx.problem(
                        "workload".to_owned(),
                        Some(span),
                        "write each workload as [[workload]] (an array of tables), not [workload]",
                    );
                } else {
                    cx.problem(
                        "workload".to_owned(),
                        Some(span),
                        format!("must be an array of tables ([[workload]]), not {found}"),
                    );
                }
            }
            _ => {
                let home = home_of(name);
                let reason = match suggest(name, SECTIONS) {
                    None if let Some(home) = home => {
                        format!("`{name}` is not a top-level key; it belongs in {home}")
                    }
                    Some(s) => format!(
                        "unknown section or key `{name}`; did you mean `{s}`? (sections: [service], [defaults], [[workload]])"
                    ),
                    None => format!(
                        "unknown section or key `{name}` (sections: [service], [defaults], [[workload]])"
                    ),
                };
                cx.problem(name.to_owned(), Some(k.span()), reason);
            }
        }
    }

    // [service]
    let service_raw: RawService = match raw_service {
        Some((span, entries)) => {
            let hint = |k: &str| section_hint(k, policy_keys, workload_keys, "service");
            let entries = drop_unknown(&mut cx, "service", entries, service_keys, &hint);
            read_section(&mut cx, "service", &span, entries)
        }
        None => RawService::default(),
    };
    let service = resolve_service(&mut cx, service_raw, base, env);

    // [defaults]
    let defaults_raw: RawPolicy = match raw_defaults {
        Some((span, entries)) => {
            let hint = |k: &str| section_hint(k, service_keys, workload_keys, "defaults");
            let entries = drop_unknown(&mut cx, "defaults", entries, policy_keys, &hint);
            read_section(&mut cx, "defaults", &span, entries)
        }
        None => RawPolicy::default(),
    };
    let defaults = resolve_policy(&mut cx, &EffPolicy::builtin(), defaults_raw, "defaults");

    // [[workload]]
    let mut seen = Seen::default();
    let mut workloads = Vec::new();
    for (i, (span, entries)) in raw_workloads.into_iter().enumerate() {
        let path = format!("workload[{i}]");
        if cx.is_broken(&path) {
            continue;
        }
        let hint = |k: &str| section_hint(k, service_keys, &[], "workload");
        let entries = drop_unknown(&mut cx, &path, entries, &all_workload_keys, &hint);
        let (policy_entries, own_entries): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(k, _)| policy_keys.contains(&&**k.get_ref()));
        let raw_policy: RawPolicy = read_section(&mut cx, &path, &span, policy_entries);
        let raw: RawWorkload = read_section(&mut cx, &path, &span, own_entries);
        let policy = resolve_policy(&mut cx, &defaults, raw_policy, &path);
        let w = WorkloadCx {
            path: &path,
            header: span,
            base,
            env,
        };
        if let Some(spec) = w.resolve(&mut cx, &raw, policy, &mut seen) {
            workloads.push(spec);
        }
    }

    if !cx.problems.is_empty() {
        return Err(cx.into_error(source));
    }
    Ok(Config {
        source: source.to_path_buf(),
        service,
        defaults: defaults.policy,
        workloads,
        warnings: {
            let mut w = cx.warnings;
            w.sort_by_key(|p| p.line);
            w
        },
    })
}

fn describe_type(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Where a known key belongs.
fn home_of(key: &str) -> Option<&'static str> {
    if fields_of::<RawService>().contains(&key) {
        Some("[service]")
    } else if fields_of::<RawPolicy>().contains(&key) {
        Some("[defaults] or a [[workload]]")
    } else if fields_of::<RawWorkload>().contains(&key) {
        Some("each [[workload]]")
    } else {
        None
    }
}

/// Explains a key that is valid, just not in `section`.
fn section_hint(key: &str, a: &[&str], b: &[&str], section: &str) -> Option<String> {
    if a.contains(&key) || b.contains(&key) {
        home_of(key).map(|p| format!("`{key}` is not a [{section}] key; it belongs in {p}"))
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// [service]

fn resolve_service(
    cx: &mut Cx,
    raw: RawService,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> ServiceConfig {
    let status_dir = match &raw.status_dir {
        Some(s) => {
            if s.get_ref().is_empty() {
                cx.problem(
                    "service.status_dir".into(),
                    Some(s.span()),
                    "must not be empty",
                );
            }
            resolve_path(base, s.get_ref())
        }
        None if cx.is_broken("service.status_dir") => PathBuf::new(),
        None => default_status_dir(env).unwrap_or_else(|| {
            cx.problem(
                "service.status_dir".into(),
                None,
                "not set, and neither XDG_DATA_HOME nor HOME is set to derive the default \
                 ($XDG_DATA_HOME/tokenvisor/statuses or $HOME/.local/share/tokenvisor/statuses)",
            );
            PathBuf::new()
        }),
    };

    let admin_listen = match &raw.admin_listen {
        None => AdminListen::default(),
        Some(s) if s.get_ref() == "off" => AdminListen::Off,
        Some(s) => match s.get_ref().parse::<SocketAddr>() {
            Ok(a) => AdminListen::Addr(a),
            Err(_) => {
                cx.problem(
                    "service.admin_listen".into(),
                    Some(s.span()),
                    format!(
                        "{:?} is neither \"off\" nor a socket address such as \"127.0.0.1:7878\" \
                         or \"[::1]:7878\" (host names are not resolved)",
                        s.get_ref()
                    ),
                );
                AdminListen::Off
            }
        },
    };

    let admin_token_file = raw.admin_token_file.as_ref().map(|f| {
        let path = resolve_path(base, f.get_ref());
        if f.get_ref().is_empty() {
            cx.problem(
                "service.admin_token_file".into(),
                Some(f.span()),
                "must not be empty",
            );
        } else if admin_listen != AdminListen::Off
            && let Err(reason) = cx
                .secret_file("service.admin_token_file".into(), f.span(), &path)
                .and_then(|token| admin_token_long_enough(&path, token))
        {
            cx.problem("service.admin_token_file".into(), Some(f.span()), reason);
        }
        path
    });
    let state_dir = resolve_state_dir(cx, &raw, base, env, admin_listen, &admin_token_file);
    let admin_limits = resolve_admin_limits(cx, &raw);

    if let AdminListen::Addr(addr) = admin_listen
        && !addr.ip().is_loopback()
        && admin_token_file.is_none()
        && !cx.is_broken("service.admin_token_file")
    {
        cx.problem(
            "service.admin_listen".into(),
            raw.admin_listen.as_ref().map(Spanned::span),
            format!(
                "{addr} is not a loopback address, so service.admin_token_file is required \
                 (the admin API can hand out access tokens)"
            ),
        );
    }

    let log_level = match raw.log_level {
        Some(s) if s.get_ref().trim().is_empty() => {
            cx.problem(
                "service.log_level".into(),
                Some(s.span()),
                "must not be empty (e.g. \"info\" or \"info,tokenvisor=debug\")",
            );
            String::new()
        }
        Some(s) => s.into_inner(),
        None => "info".to_owned(),
    };

    ServiceConfig {
        status_dir,
        admin_listen,
        admin_token_file,
        state_dir,
        admin_limits,
        log_format: raw.log_format.map(Spanned::into_inner).unwrap_or_default(),
        log_level,
    }
}

/// Reads the admin token of `path`: a secret file of at least [`MIN_ADMIN_TOKEN_BYTES`].
/// Errors name the file, never its content.
pub fn read_admin_token(path: &Path) -> Result<Secret, String> {
    let token = crate::credentials::read_secret_file(path).map_err(|e| e.to_string())?;
    admin_token_long_enough(path, token)
}

/// `token` (read from `path`) when it is at least [`MIN_ADMIN_TOKEN_BYTES`] long.
fn admin_token_long_enough(path: &Path, token: Secret) -> Result<Secret, String> {
    let len = token.expose().len();
    if len < MIN_ADMIN_TOKEN_BYTES {
        return Err(format!(
            "the admin token in {} is {len} bytes long; at least {MIN_ADMIN_TOKEN_BYTES} are \
             required (e.g. `head -c 32 /dev/urandom | base64`)",
            path.display()
        ));
    }
    Ok(token)
}

/// `service.state_dir`: as set, else `$XDG_STATE_HOME/tokenvisor`, else
/// `$HOME/.local/state/tokenvisor`. Needed (a problem when it cannot be derived) only when
/// the daemon generates the admin token: the admin API is on and `admin_token_file` unset.
fn resolve_state_dir(
    cx: &mut Cx,
    raw: &RawService,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    admin_listen: AdminListen,
    admin_token_file: &Option<PathBuf>,
) -> Option<PathBuf> {
    match &raw.state_dir {
        Some(s) if s.get_ref().is_empty() => {
            cx.problem(
                "service.state_dir".into(),
                Some(s.span()),
                "must not be empty",
            );
            None
        }
        Some(s) => Some(resolve_path(base, s.get_ref())),
        None => {
            let derived = default_state_dir(env);
            if derived.is_none() && admin_listen != AdminListen::Off && admin_token_file.is_none() {
                cx.problem(
                    "service.state_dir".into(),
                    None,
                    "not set, and neither XDG_STATE_HOME nor HOME is set to derive the default \
                     ($XDG_STATE_HOME/tokenvisor or $HOME/.local/state/tokenvisor); it is where \
                     the generated admin token is kept (set state_dir or admin_token_file)",
                );
            }
            derived
        }
    }
}

/// The default `service.state_dir`: `$XDG_STATE_HOME/tokenvisor`, else
/// `$HOME/.local/state/tokenvisor`; `None` when neither variable is usable (a relative
/// `XDG_STATE_HOME` is ignored, as the XDG base directory spec says).
pub fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let state = env("XDG_STATE_HOME")
        .filter(|d| !d.is_empty() && Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".local").join("state"))
        })?;
    Some(state.join("tokenvisor"))
}

/// `service.admin_header_timeout`, `admin_idle_timeout`, `admin_max_connections`.
fn resolve_admin_limits(cx: &mut Cx, raw: &RawService) -> AdminLimits {
    let mut limits = AdminLimits::default();
    for (key, value, slot) in [
        (
            "service.admin_header_timeout",
            raw.admin_header_timeout.as_ref(),
            &mut limits.header_timeout,
        ),
        (
            "service.admin_idle_timeout",
            raw.admin_idle_timeout.as_ref(),
            &mut limits.idle_timeout,
        ),
    ] {
        let Some(v) = value else { continue };
        let d = v.get_ref().0;
        if d.is_zero() {
            cx.problem(key.into(), Some(v.span()), "must be longer than 0s");
        } else if d > Duration::from_secs(3600) {
            cx.problem(key.into(), Some(v.span()), "must be at most 1h");
        } else {
            *slot = d;
        }
    }
    if let Some(v) = &raw.admin_max_connections {
        match usize::try_from(v.get_ref().0) {
            Ok(n) if (1..=MAX_ADMIN_MAX_CONNECTIONS).contains(&n) => limits.max_connections = n,
            Ok(_) | Err(_) => cx.problem(
                "service.admin_max_connections".into(),
                Some(v.span()),
                format!(
                    "is {}; must be between 1 and {MAX_ADMIN_MAX_CONNECTIONS}",
                    v.get_ref().0
                ),
            ),
        }
    }
    limits
}

/// `path` against `base` (unless absolute), without `.` components.
fn resolve_path(base: &Path, path: &str) -> PathBuf {
    base.join(path).components().collect()
}

/// The default `service.status_dir`: `$XDG_DATA_HOME/tokenvisor/statuses`, else
/// `$HOME/.local/share/tokenvisor/statuses`; `None` when neither variable is usable. A
/// relative or empty `XDG_DATA_HOME` is ignored, as the XDG base directory spec says.
pub fn default_status_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let data = env("XDG_DATA_HOME")
        .filter(|d| !d.is_empty() && Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".local").join("share"))
        })?;
    Some(data.join("tokenvisor").join("statuses"))
}

// ---------------------------------------------------------------------------------------
// [defaults] and per-workload policy

/// A resolved policy and, per key, the dotted key it was set at (absent: built in).
#[derive(Debug, Clone)]
struct EffPolicy {
    policy: WorkloadPolicy,
    from: BTreeMap<&'static str, (String, Range<usize>)>,
}

impl EffPolicy {
    fn builtin() -> Self {
        EffPolicy {
            policy: WorkloadPolicy::default(),
            from: BTreeMap::new(),
        }
    }
}

struct PolicyCx<'a> {
    path: &'a str,
    eff: EffPolicy,
    /// Spans of the keys set at this level.
    here: HashMap<&'static str, Range<usize>>,
}

impl PolicyCx<'_> {
    fn key(&self, name: &str) -> String {
        join_key(self.path, name)
    }

    /// Records that `name` was set here (valid or not).
    fn set_here(&mut self, name: &'static str, span: Range<usize>) {
        let key = self.key(name);
        self.eff.from.insert(name, (key, span.clone()));
        self.here.insert(name, span);
    }

    fn duration(
        &mut self,
        cx: &mut Cx,
        name: &'static str,
        raw: Option<Spanned<HumanDuration>>,
        positive: bool,
    ) -> Option<Duration> {
        let raw = raw?;
        self.set_here(name, raw.span());
        let d = raw.get_ref().0;
        if positive && d.is_zero() {
            cx.problem(self.key(name), Some(raw.span()), "must be longer than 0s");
            return None;
        }
        let (max, why) = duration_limit(name).unwrap_or((MAX_DURATION, "longer is a typo"));
        if d > max {
            cx.problem(
                self.key(name),
                Some(raw.span()),
                format!(
                    "is {}; it must be at most {} ({why})",
                    humantime::format_duration(d),
                    humantime::format_duration(max)
                ),
            );
            return None;
        }
        Some(d)
    }

    fn number(
        &mut self,
        cx: &mut Cx,
        name: &'static str,
        raw: Option<Spanned<Number>>,
        ok: impl Fn(f64) -> bool,
        rule: &str,
    ) -> Option<f64> {
        let raw = raw?;
        self.set_here(name, raw.span());
        let x = raw.get_ref().0;
        if x.is_finite() && ok(x) {
            Some(x)
        } else {
            cx.problem(self.key(name), Some(raw.span()), format!("is {x}; {rule}"));
            None
        }
    }

    fn codes(
        &mut self,
        cx: &mut Cx,
        name: &'static str,
        raw: Option<Spanned<Strings>>,
    ) -> Option<Vec<String>> {
        let raw = raw?;
        self.set_here(name, raw.span());
        let mut out = Vec::new();
        let mut ok = true;
        for (j, code) in raw.get_ref().0.iter().enumerate() {
            let c = code.get_ref();
            // RFC 6749 §5.2: error = 1*( %x20-21 / %x23-5B / %x5D-7E )
            let valid = !c.is_empty()
                && c.trim() == c
                && c.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E));
            if valid {
                out.push(c.clone());
            } else {
                ok = false;
                cx.problem(
                    format!("{}[{j}]", self.key(name)),
                    Some(code.span()),
                    format!(
                        "{c:?} is not an RFC 6749 error code (printable ASCII without '\"' or '\\', \
                         not empty, no leading or trailing space)"
                    ),
                );
            }
        }
        ok.then_some(out)
    }
}

fn resolve_policy(cx: &mut Cx, base: &EffPolicy, raw: RawPolicy, path: &str) -> EffPolicy {
    let mut pc = PolicyCx {
        path,
        eff: base.clone(),
        here: HashMap::new(),
    };

    if let Some(d) = pc.duration(cx, "request_timeout", raw.request_timeout, true) {
        pc.eff.policy.request_timeout = d;
    }
    if let Some(d) = pc.duration(cx, "connect_timeout", raw.connect_timeout, true) {
        pc.eff.policy.connect_timeout = d;
    }
    if let Some(x) = pc.number(
        cx,
        "refresh_at",
        raw.refresh_at,
        |x| x > 0.0 && x <= 1.0,
        "it must be above 0 and at most 1 (a fraction of the token's lifetime)",
    ) {
        pc.eff.policy.schedule.refresh_at = x;
    }
    if let Some(x) = pc.number(
        cx,
        "refresh_jitter",
        raw.refresh_jitter,
        |x| (0.0..1.0).contains(&x),
        "it must be at least 0 and below refresh_at",
    ) {
        pc.eff.policy.schedule.refresh_jitter = x;
    }
    if let Some(d) = pc.duration(cx, "default_lifetime", raw.default_lifetime, true) {
        pc.eff.policy.default_lifetime = d;
    }
    if let Some(d) = pc.duration(cx, "backoff_initial", raw.backoff_initial, true) {
        pc.eff.policy.backoff.initial = d;
    }
    if let Some(d) = pc.duration(cx, "backoff_max", raw.backoff_max, true) {
        pc.eff.policy.backoff.max = d;
    }
    if let Some(x) = pc.number(
        cx,
        "backoff_multiplier",
        raw.backoff_multiplier,
        |x| x >= 1.0,
        "it must be at least 1",
    ) {
        pc.eff.policy.backoff.multiplier = x;
    }
    if let Some(d) = pc.duration(cx, "give_up_after", raw.give_up_after, false) {
        pc.eff.policy.give_up_after = d;
    }
    if let Some(d) = pc.duration(cx, "max_retry_after", raw.max_retry_after, false) {
        pc.eff.policy.max_retry_after = d;
    }
    if let Some(raw) = raw.endpoint_concurrency {
        pc.set_here("endpoint_concurrency", raw.span());
        match usize::try_from(raw.get_ref().0) {
            Ok(n) if (1..=MAX_ENDPOINT_CONCURRENCY).contains(&n) => {
                pc.eff.policy.endpoint_concurrency = n;
            }
            Ok(_) | Err(_) => cx.problem(
                pc.key("endpoint_concurrency"),
                Some(raw.span()),
                format!(
                    "is {}; it must be at least 1 and at most {MAX_ENDPOINT_CONCURRENCY}",
                    raw.get_ref().0
                ),
            ),
        }
    }
    if let Some(c) = pc.codes(cx, "transient_codes", raw.transient_codes) {
        pc.eff.policy.transient_codes = c;
    }
    if let Some(c) = pc.codes(cx, "permanent_codes", raw.permanent_codes) {
        pc.eff.policy.permanent_codes = c;
    }

    // Rules that tie two keys together: checked where at least one of them is set, and only
    // when neither was already reported.
    let pair_ok = |pc: &PolicyCx<'_>, cx: &Cx, a: &'static str, b: &'static str| {
        let set_here = pc.here.contains_key(a) || pc.here.contains_key(b);
        let clean = [a, b].iter().all(|k| {
            pc.eff
                .from
                .get(k)
                .is_none_or(|(from, _)| !cx.is_broken(from))
        });
        set_here && clean
    };
    // The key to blame: `b` if set here, else `a`.
    let blame = |pc: &PolicyCx<'_>, a: &'static str, b: &'static str| {
        let k = if pc.here.contains_key(b) { b } else { a };
        (pc.key(k), pc.here.get(k).cloned())
    };
    // Where a value not set at this level came from.
    let origin = |pc: &PolicyCx<'_>, name: &'static str| {
        if pc.here.contains_key(name) {
            String::new()
        } else {
            match pc.eff.from.get(name) {
                Some((from, _)) => format!(", from {from}"),
                None => ", the default".to_owned(),
            }
        }
    };

    let s = pc.eff.policy.schedule;
    if pair_ok(&pc, cx, "refresh_at", "refresh_jitter") && s.refresh_jitter >= s.refresh_at {
        let (key, span) = blame(&pc, "refresh_at", "refresh_jitter");
        cx.problem(
            key,
            span,
            format!(
                "refresh_jitter ({}{}) must be below refresh_at ({}{})",
                s.refresh_jitter,
                origin(&pc, "refresh_jitter"),
                s.refresh_at,
                origin(&pc, "refresh_at"),
            ),
        );
    }
    let b = pc.eff.policy.backoff;
    if pair_ok(&pc, cx, "backoff_initial", "backoff_max") && b.max < b.initial {
        let (key, span) = blame(&pc, "backoff_initial", "backoff_max");
        cx.problem(
            key,
            span,
            format!(
                "backoff_max ({}{}) must be at least backoff_initial ({}{})",
                humantime::format_duration(b.max),
                origin(&pc, "backoff_max"),
                humantime::format_duration(b.initial),
                origin(&pc, "backoff_initial"),
            ),
        );
    }
    if pair_ok(&pc, cx, "transient_codes", "permanent_codes") {
        let p = &pc.eff.policy;
        let both: Vec<&String> = p
            .permanent_codes
            .iter()
            .filter(|c| p.transient_codes.contains(c))
            .collect();
        if !both.is_empty() {
            let (key, span) = blame(&pc, "transient_codes", "permanent_codes");
            let paren = |o: String| {
                o.strip_prefix(", ")
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default()
            };
            cx.problem(
                key,
                span,
                format!(
                    "{both:?} in both transient_codes{} and permanent_codes{}; \
                     a code can only be one or the other",
                    paren(origin(&pc, "transient_codes")),
                    paren(origin(&pc, "permanent_codes")),
                ),
            );
        }
    }
    pc.eff
}

// ---------------------------------------------------------------------------------------
// [[workload]]

/// What the workloads seen so far use, for the checks across workloads.
#[derive(Default)]
struct Seen {
    names: HashMap<String, (String, Option<usize>)>,
    /// Files, by normalised path: the key that uses it, its line, and whether it is written.
    files: HashMap<PathBuf, (String, Option<usize>, bool)>,
    /// Token URL → the workload that first used it and its endpoint concurrency.
    endpoints: HashMap<String, (String, usize)>,
}

struct WorkloadCx<'a> {
    path: &'a str,
    header: Range<usize>,
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl WorkloadCx<'_> {
    fn key(&self, name: &str) -> String {
        join_key(self.path, name)
    }

    /// Reports a missing required key, unless it was present but already reported.
    fn missing(&self, cx: &mut Cx, name: &str, reason: &str) {
        let key = self.key(name);
        if !cx.is_broken(&key) {
            cx.problem(key, Some(self.header.clone()), reason);
        }
    }

    /// A non-empty string without control characters.
    fn text(&self, cx: &mut Cx, name: &str, raw: Option<&Spanned<String>>) -> Option<Arc<str>> {
        let raw = raw?;
        let s = raw.get_ref();
        if s.trim().is_empty() {
            cx.problem(self.key(name), Some(raw.span()), "must not be empty");
            None
        } else if s.chars().any(char::is_control) {
            cx.problem(
                self.key(name),
                Some(raw.span()),
                "must not contain control characters",
            );
            None
        } else {
            Some(Arc::from(s.as_str()))
        }
    }

    fn path_of(&self, cx: &mut Cx, name: &str, raw: &Spanned<String>) -> Option<PathBuf> {
        if raw.get_ref().is_empty() {
            cx.problem(self.key(name), Some(raw.span()), "must not be empty");
            None
        } else {
            Some(resolve_path(self.base, raw.get_ref()))
        }
    }

    /// Registers a file this workload reads or writes; two users of one file conflict when
    /// either writes it.
    fn use_file(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        name: &str,
        path: &Path,
        span: Range<usize>,
        writes: bool,
    ) {
        let norm: PathBuf = path.components().collect();
        let key = self.key(name);
        let line = cx.line(span.start);
        match seen.files.get(&norm) {
            Some((other, other_line, other_writes)) if writes || *other_writes => {
                let at = other_line
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                cx.problem(
                    key,
                    Some(span),
                    format!(
                        "{} is also {other}{at}; tokenvisor writes refresh-token and token sink \
                         files, so each needs a file of its own",
                        path.display()
                    ),
                );
            }
            Some(_) => {}
            None => {
                seen.files.insert(norm, (key, Some(line), writes));
            }
        }
    }

    fn resolve(
        &self,
        cx: &mut Cx,
        raw: &RawWorkload,
        policy: EffPolicy,
        seen: &mut Seen,
    ) -> Option<WorkloadSpec> {
        let before = cx.problems.len();

        // name
        let name = match &raw.name {
            None => {
                self.missing(
                    cx,
                    "name",
                    "missing: every workload needs a name ([A-Za-z0-9._-], 1–100 characters)",
                );
                None
            }
            Some(s) => match WorkloadName::new(s.get_ref()) {
                Ok(n) => {
                    let line = cx.line(s.span().start);
                    match seen.names.get(n.as_str()) {
                        Some((other, other_line)) => {
                            let at = other_line
                                .map(|l| format!(" (line {l})"))
                                .unwrap_or_default();
                            cx.problem(
                                self.key("name"),
                                Some(s.span()),
                                format!(
                                    "duplicate workload name {:?}: {other}{at} has it too",
                                    n.as_str()
                                ),
                            );
                        }
                        None => {
                            seen.names
                                .insert(n.as_str().to_owned(), (self.key("name"), Some(line)));
                        }
                    }
                    Some(n)
                }
                Err(e) => {
                    cx.problem(self.key("name"), Some(s.span()), e.to_string());
                    None
                }
            },
        };

        // token_url
        let token_url = match &raw.token_url {
            None => {
                self.missing(
                    cx,
                    "token_url",
                    "missing: the provider's token endpoint, e.g. \"https://idp.example.com/oauth/token\"",
                );
                None
            }
            Some(u) => match check_http_url(u.get_ref()) {
                Ok(()) => {
                    if let Some(host) = plain_http_remote_host(u.get_ref()) {
                        cx.warning(
                            self.key("token_url"),
                            Some(u.span()),
                            format!(
                                "http:// to {host}, which is not a loopback address: tokens and \
                                 secrets cross the network unencrypted (use https)"
                            ),
                        );
                    }
                    Some(Arc::<str>::from(u.get_ref().as_str()))
                }
                Err(reason) => {
                    cx.problem(self.key("token_url"), Some(u.span()), reason);
                    None
                }
            },
        };

        // client_id
        let client_id = match &raw.client_id {
            None => {
                self.missing(cx, "client_id", "missing: the OAuth client id");
                None
            }
            Some(_) => self.text(cx, "client_id", raw.client_id.as_ref()),
        };

        // client secret: at most one source
        let secret = self.client_secret(cx, seen, raw);

        let auth_method = raw
            .auth_method
            .as_ref()
            .map(|m| *m.get_ref())
            .unwrap_or_default();

        // grant and refresh token
        let grant = self.grant(cx, seen, raw, secret.as_ref().map(|(s, _)| s));

        // token sink
        let token_sink_file = raw.token_sink_file.as_ref().and_then(|f| {
            let p = self.path_of(cx, "token_sink_file", f)?;
            self.use_file(cx, seen, "token_sink_file", &p, f.span(), true);
            Some(p)
        });

        // scopes, resource, audience
        let mut scopes = Vec::new();
        if let Some(list) = &raw.scopes {
            for (j, s) in list.get_ref().0.iter().enumerate() {
                // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
                let valid = !s.get_ref().is_empty()
                    && s.get_ref()
                        .bytes()
                        .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E));
                if valid {
                    scopes.push(s.get_ref().clone());
                } else {
                    cx.problem(
                        format!("{}[{j}]", self.key("scopes")),
                        Some(s.span()),
                        format!(
                            "{:?} is not a scope token (one scope per string: printable ASCII, \
                             no spaces, '\"' or '\\')",
                            s.get_ref()
                        ),
                    );
                }
            }
        }
        let resource = raw.resource.as_ref().and_then(|r| {
            match reqwest::Url::parse(r.get_ref()) {
                Ok(u) if u.fragment().is_none() && r.get_ref().trim() == r.get_ref() => {
                    Some(Arc::<str>::from(r.get_ref().as_str()))
                }
                Ok(_) | Err(_) => {
                    cx.problem(
                        self.key("resource"),
                        Some(r.span()),
                        "must be an absolute URI without a fragment (RFC 8707), e.g. \"https://mcp.example.com\"",
                    );
                    None
                }
            }
        });
        let audience = self.text(cx, "audience", raw.audience.as_ref());

        // one gate per token endpoint: its workloads must agree on the limit
        if let Some(url) = &token_url {
            let n = policy.policy.endpoint_concurrency;
            match seen.endpoints.get(&**url) {
                Some((other, m)) if *m != n && !cx.is_broken(&self.key("endpoint_concurrency")) => {
                    let from = policy
                        .from
                        .get("endpoint_concurrency")
                        .map_or_else(|| "the default".to_owned(), |(key, _)| key.clone());
                    let span = match policy.from.get("endpoint_concurrency") {
                        Some((key, span)) if *key == self.key("endpoint_concurrency") => {
                            span.clone()
                        }
                        Some(_) | None => self.header.clone(),
                    };
                    cx.problem(
                        self.key("endpoint_concurrency"),
                        Some(span),
                        format!(
                            "is {n} (from {from}) but {other} uses {m} for the same token_url; \
                             the limit is shared by every workload of one token endpoint, so they must agree"
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    seen.endpoints
                        .insert(url.to_string(), (self.path.to_owned(), n));
                }
            }
        }

        if cx.problems.len() > before {
            return None;
        }
        let (client_secret, client_secret_origin) = match secret {
            Some((s, o)) => (Some(s), Some(o)),
            None => (None, None),
        };
        Some(WorkloadSpec {
            name: name?,
            token_url: token_url?,
            client_id: client_id?,
            client_secret,
            client_secret_origin,
            auth_method,
            grant: grant?,
            scopes: Arc::from(scopes),
            resource,
            audience,
            token_sink_file,
            policy: policy.policy,
        })
    }

    fn client_secret(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        raw: &RawWorkload,
    ) -> Option<(Secret, SecretOrigin)> {
        let mut given: Vec<(&str, Range<usize>)> = [
            (
                "client_secret",
                raw.client_secret.as_ref().map(Spanned::span),
            ),
            (
                "client_secret_file",
                raw.client_secret_file.as_ref().map(Spanned::span),
            ),
            (
                "client_secret_env",
                raw.client_secret_env.as_ref().map(Spanned::span),
            ),
        ]
        .into_iter()
        .filter_map(|(k, s)| Some((k, s?)))
        .collect();
        given.sort_by_key(|(_, s)| s.start);
        if given.len() > 1 {
            let (k, span) = given[1].clone();
            cx.problem(
                self.key(k),
                Some(span),
                format!(
                    "set only one of client_secret, client_secret_file and client_secret_env \
                     (this workload also sets {})",
                    given[0].0
                ),
            );
            return None;
        }
        if let Some(s) = &raw.client_secret {
            if s.get_ref().0.is_empty() {
                cx.problem(self.key("client_secret"), Some(s.span()), "is empty");
                return None;
            }
            return Some((s.get_ref().0.clone(), SecretOrigin::Inline));
        }
        if let Some(f) = &raw.client_secret_file {
            let path = self.path_of(cx, "client_secret_file", f)?;
            self.use_file(cx, seen, "client_secret_file", &path, f.span(), false);
            return match cx.secret_file(self.key("client_secret_file"), f.span(), &path) {
                Ok(s) => Some((s, SecretOrigin::File(path))),
                Err(reason) => {
                    cx.problem(self.key("client_secret_file"), Some(f.span()), reason);
                    None
                }
            };
        }
        if let Some(v) = &raw.client_secret_env {
            let var = v.get_ref();
            if var.is_empty() || var.contains(['=', '\0']) {
                cx.problem(
                    self.key("client_secret_env"),
                    Some(v.span()),
                    format!("{var:?} is not an environment variable name"),
                );
                return None;
            }
            return match read_secret_env(var, self.env) {
                Ok(s) => Some((s, SecretOrigin::Env(var.clone()))),
                Err(reason) => {
                    cx.problem(self.key("client_secret_env"), Some(v.span()), reason);
                    None
                }
            };
        }
        None
    }

    fn grant(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        raw: &RawWorkload,
        client_secret: Option<&Secret>,
    ) -> Option<GrantSpec> {
        // The refresh token, read whatever the grant, so that a missing file is reported.
        let both = raw.refresh_token_file.is_some() && raw.refresh_token.is_some();
        if both {
            let f = raw.refresh_token_file.as_ref().map(Spanned::span);
            let t = raw.refresh_token.as_ref().map(Spanned::span);
            let (key, span) = if t.as_ref().map(|s| s.start) > f.as_ref().map(|s| s.start) {
                ("refresh_token", t)
            } else {
                ("refresh_token_file", f)
            };
            cx.problem(
                self.key(key),
                span,
                "set only one of refresh_token_file and refresh_token",
            );
        }
        let mut token: Option<(Secret, Option<PathBuf>)> = None;
        if !both {
            if let Some(f) = &raw.refresh_token_file {
                if let Some(path) = self.path_of(cx, "refresh_token_file", f) {
                    self.use_file(cx, seen, "refresh_token_file", &path, f.span(), true);
                    match cx.secret_file(self.key("refresh_token_file"), f.span(), &path) {
                        Ok(s) => token = Some((s, Some(path))),
                        Err(reason) => {
                            cx.problem(self.key("refresh_token_file"), Some(f.span()), reason);
                        }
                    }
                }
            } else if let Some(t) = &raw.refresh_token {
                if t.get_ref().0.is_empty() {
                    cx.problem(self.key("refresh_token"), Some(t.span()), "is empty");
                } else {
                    token = Some((t.get_ref().0.clone(), None));
                }
            }
        }

        let Some(grant) = &raw.grant else {
            self.missing(
                cx,
                "grant",
                "missing: set grant = \"refresh_token\" or grant = \"client_credentials\"",
            );
            return None;
        };
        match grant.get_ref() {
            RawGrant::RefreshToken => {
                let reported = both
                    || cx.is_broken(&self.key("refresh_token_file"))
                    || cx.is_broken(&self.key("refresh_token"));
                match token {
                    Some((token, file)) => Some(GrantSpec::RefreshToken { token, file }),
                    None => {
                        if !reported {
                            cx.problem(
                                self.key("refresh_token_file"),
                                Some(self.header.clone()),
                                "missing: grant = \"refresh_token\" needs refresh_token_file \
                                 (or an inline refresh_token)",
                            );
                        }
                        None
                    }
                }
            }
            RawGrant::ClientCredentials => {
                let mut ok = true;
                for (k, span) in [
                    (
                        "refresh_token_file",
                        raw.refresh_token_file.as_ref().map(Spanned::span),
                    ),
                    (
                        "refresh_token",
                        raw.refresh_token.as_ref().map(Spanned::span),
                    ),
                ] {
                    if let Some(span) = span {
                        ok = false;
                        if !cx.is_broken(&self.key(k)) {
                            cx.problem(
                                self.key(k),
                                Some(span),
                                format!(
                                    "grant = \"{}\" takes no refresh token; remove {k} or set \
                                     grant = \"refresh_token\"",
                                    grant.get_ref().as_str()
                                ),
                            );
                        }
                    }
                }
                let secret_reported = ["client_secret", "client_secret_file", "client_secret_env"]
                    .iter()
                    .any(|k| cx.is_broken(&self.key(k)));
                if client_secret.is_none() && !secret_reported {
                    ok = false;
                    cx.problem(
                        self.key("grant"),
                        Some(grant.span()),
                        "grant = \"client_credentials\" needs a client secret (client_secret, \
                         client_secret_file or client_secret_env): public clients cannot use it",
                    );
                }
                ok.then_some(GrantSpec::ClientCredentials)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Values

/// An http(s) URL with a host, no credentials and no fragment. The value is not echoed (it
/// might carry credentials).
fn check_http_url(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    let url = reqwest::Url::parse(s).map_err(|e| format!("is not a valid URL: {e}"))?;
    match url.scheme() {
        "https" | "http" => {}
        other => {
            return Err(format!(
                "must be an http or https URL, not {other:?} (use https; http only for a local \
                 test provider)"
            ));
        }
    }
    // The URL standard forgives "https:/host" and "https:///host"; a token URL should not.
    let authority = s.split_once("://").map_or("/", |(_, rest)| rest);
    if url.host_str().is_none_or(str::is_empty) || authority.starts_with(['/', '\\']) {
        return Err("has no host (write e.g. \"https://idp.example.com/oauth/token\")".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not contain credentials (user:password@); use client_id and a client secret"
                .to_owned(),
        );
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment (#…) (RFC 6749 §3.2)".to_owned());
    }
    Ok(())
}

/// The host of an `http://` URL whose host is not loopback (`localhost`, 127.0.0.0/8,
/// `::1`); `None` for https, loopback or an unparseable URL.
fn plain_http_remote_host(s: &str) -> Option<String> {
    let url = reqwest::Url::parse(s).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    };
    (!loopback).then(|| host.to_owned())
}

/// Reads a secret from an environment variable: trailing whitespace trimmed, not empty.
/// Errors name the variable, never its content.
fn read_secret_env(var: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, String> {
    let value = env(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
    let value = value.trim_end();
    if value.is_empty() {
        return Err(format!("environment variable {var} is empty"));
    }
    Ok(Secret::from(value))
}

// ---------------------------------------------------------------------------------------
// check-config output

struct Masked<'a>(&'a Config);

fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn qp(p: &Path) -> String {
    q(&p.to_string_lossy())
}

fn d(x: Duration) -> String {
    q(&humantime::format_duration(x).to_string())
}

fn write_policy(f: &mut fmt::Formatter<'_>, p: &WorkloadPolicy) -> fmt::Result {
    let list = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|s| q(s)).collect();
        format!("[{}]", items.join(", "))
    };
    writeln!(f, "request_timeout = {}", d(p.request_timeout))?;
    writeln!(f, "connect_timeout = {}", d(p.connect_timeout))?;
    writeln!(f, "refresh_at = {:?}", p.schedule.refresh_at)?;
    writeln!(f, "refresh_jitter = {:?}", p.schedule.refresh_jitter)?;
    writeln!(f, "default_lifetime = {}", d(p.default_lifetime))?;
    writeln!(f, "backoff_initial = {}", d(p.backoff.initial))?;
    writeln!(f, "backoff_max = {}", d(p.backoff.max))?;
    writeln!(f, "backoff_multiplier = {:?}", p.backoff.multiplier)?;
    writeln!(f, "give_up_after = {}", d(p.give_up_after))?;
    writeln!(f, "max_retry_after = {}", d(p.max_retry_after))?;
    writeln!(f, "endpoint_concurrency = {}", p.endpoint_concurrency)?;
    writeln!(f, "transient_codes = {}", list(&p.transient_codes))?;
    writeln!(f, "permanent_codes = {}", list(&p.permanent_codes))
}

fn origin(o: Option<&SecretOrigin>) -> String {
    match o {
        Some(SecretOrigin::Inline) | None => "inline in the configuration".to_owned(),
        Some(SecretOrigin::File(p)) => format!("from file {}", p.display()),
        Some(SecretOrigin::Env(v)) => format!("from environment variable {v}"),
    }
}

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let n = c.workloads.len();
        writeln!(
            f,
            "# {}: valid; {n} workload{}; secrets are masked",
            c.source.display(),
            if n == 1 { "" } else { "s" }
        )?;
        writeln!(f)?;
        let s = &c.service;
        writeln!(f, "[service]")?;
        writeln!(f, "status_dir = {}", qp(&s.status_dir))?;
        writeln!(f, "admin_listen = {}", q(&s.admin_listen.to_string()))?;
        match &s.admin_token_file {
            Some(p) => writeln!(f, "admin_token_file = {}", qp(p))?,
            None => writeln!(
                f,
                "# admin_token_file: not set; the daemon generates <state_dir>/admin.token"
            )?,
        }
        match &s.state_dir {
            Some(p) => writeln!(f, "state_dir = {}", qp(p))?,
            None => writeln!(f, "# state_dir: not set and not derivable (not needed)")?,
        }
        writeln!(
            f,
            "admin_header_timeout = {}",
            d(s.admin_limits.header_timeout)
        )?;
        writeln!(f, "admin_idle_timeout = {}", d(s.admin_limits.idle_timeout))?;
        writeln!(
            f,
            "admin_max_connections = {}",
            s.admin_limits.max_connections
        )?;
        writeln!(f, "log_format = {}", q(s.log_format.as_str()))?;
        writeln!(f, "log_level = {}", q(&s.log_level))?;
        writeln!(f)?;
        writeln!(f, "[defaults]")?;
        write_policy(f, &c.defaults)?;
        for w in &c.workloads {
            writeln!(f)?;
            writeln!(f, "[[workload]]")?;
            writeln!(f, "name = {}", q(w.name.as_str()))?;
            writeln!(f, "token_url = {}", q(&w.token_url))?;
            writeln!(f, "client_id = {}", q(&w.client_id))?;
            match &w.client_secret {
                Some(_) => writeln!(
                    f,
                    "client_secret = \"…\"  # {}",
                    origin(w.client_secret_origin.as_ref())
                )?,
                None => writeln!(f, "# client_secret: none (public client)")?,
            }
            let method = match w.auth_method {
                AuthMethod::Basic => "basic",
                AuthMethod::Post => "post",
            };
            writeln!(f, "auth_method = {}", q(method))?;
            writeln!(f, "grant = {}", q(w.grant.as_str()))?;
            match &w.grant {
                GrantSpec::RefreshToken { file: Some(p), .. } => writeln!(
                    f,
                    "refresh_token = \"…\"  # from file {} (rotated tokens are written back to it)",
                    p.display()
                )?,
                GrantSpec::RefreshToken { file: None, .. } => writeln!(
                    f,
                    "refresh_token = \"…\"  # inline in the configuration (rotated tokens are kept in memory only)"
                )?,
                GrantSpec::ClientCredentials => {}
            }
            match &w.token_sink_file {
                Some(p) => writeln!(f, "token_sink_file = {}", qp(p))?,
                None => writeln!(f, "# token_sink_file: not set")?,
            }
            let scopes: Vec<String> = w.scopes.iter().map(|s| q(s)).collect();
            writeln!(f, "scopes = [{}]", scopes.join(", "))?;
            match &w.resource {
                Some(r) => writeln!(f, "resource = {}", q(r))?,
                None => writeln!(f, "# resource: not set")?,
            }
            match &w.audience {
                Some(a) => writeln!(f, "audience = {}", q(a))?,
                None => writeln!(f, "# audience: not set")?,
            }
            write_policy(f, &w.policy)?;
        }
        Ok(())
    }
}
