//! Soak profiles: the provider's token lifetimes, tokenvisor's per-workload policy, the chaos
//! rates and the checks' thresholds (`config/soak-*.toml`; the default one is embedded).

use std::path::Path;
use std::time::Duration;

use crate::Context as _;
use serde::Deserialize;
use tokenvisor::spec::WorkloadPolicy;
use tokenvisor_core::policy::{BackoffPolicy, RefreshSchedule};
use tokenvisor_idp::Chaos;

/// The default profile (`config/soak-default.toml`), used without `--profile`.
const DEFAULT_PROFILE: &str = include_str!("../../../../config/soak-default.toml");

/// A soak profile. Every key has a default; unknown keys are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Profile {
    /// Seeds the chaos draws and tokenvisor's jitter.
    pub(crate) seed: u64,
    /// The embedded provider.
    pub(crate) provider: Provider,
    /// tokenvisor's per-workload settings.
    pub(crate) policy: Policy,
    /// Chaos rates.
    pub(crate) chaos: ChaosRates,
    /// Check thresholds.
    pub(crate) checks: Checks,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            seed: 42,
            provider: Provider::default(),
            policy: Policy::default(),
            chaos: ChaosRates::default(),
            checks: Checks::default(),
        }
    }
}

/// `[provider]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Provider {
    /// Token lifetime for the soak and timers scenarios.
    #[serde(deserialize_with = "duration")]
    pub(crate) lifetime: Duration,
    /// Token lifetime for storm, scale, burst and recovery.
    #[serde(deserialize_with = "duration")]
    pub(crate) quiet_lifetime: Duration,
    /// Refresh-token rotation.
    pub(crate) rotation: bool,
}

impl Default for Provider {
    fn default() -> Self {
        Provider {
            lifetime: Duration::from_secs(30),
            quiet_lifetime: Duration::from_secs(3600),
            rotation: true,
        }
    }
}

/// `[policy]`: the `[defaults]` keys of tokenvisor.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Policy {
    #[serde(deserialize_with = "duration")]
    request_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    connect_timeout: Duration,
    refresh_at: f64,
    refresh_jitter: f64,
    #[serde(deserialize_with = "duration")]
    backoff_initial: Duration,
    #[serde(deserialize_with = "duration")]
    backoff_max: Duration,
    backoff_multiplier: f64,
    #[serde(deserialize_with = "duration")]
    give_up_after: Duration,
    #[serde(deserialize_with = "duration")]
    max_retry_after: Duration,
    pub(crate) endpoint_concurrency: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            refresh_at: 0.8,
            refresh_jitter: 0.1,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            backoff_multiplier: 2.0,
            give_up_after: Duration::ZERO,
            max_retry_after: Duration::from_secs(30),
            endpoint_concurrency: 64,
        }
    }
}

impl Policy {
    /// As a [`WorkloadPolicy`].
    pub(crate) fn workload_policy(&self) -> WorkloadPolicy {
        WorkloadPolicy {
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            schedule: RefreshSchedule {
                refresh_at: self.refresh_at,
                refresh_jitter: self.refresh_jitter,
            },
            backoff: BackoffPolicy {
                initial: self.backoff_initial,
                max: self.backoff_max,
                multiplier: self.backoff_multiplier,
            },
            give_up_after: self.give_up_after,
            max_retry_after: self.max_retry_after,
            endpoint_concurrency: self.endpoint_concurrency,
            ..WorkloadPolicy::default()
        }
    }

    /// The same policy with a fixed backoff of about `d` (burst, and the workloads recovery
    /// brings to `auth_retrying`: a failed workload does not retry during the measurement).
    pub(crate) fn with_backoff(&self, d: Duration) -> Policy {
        Policy {
            backoff_initial: d,
            backoff_max: d,
            ..self.clone()
        }
    }

    /// The total deadline of one token request.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The connect deadline.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

/// `[chaos]`: probabilities per `/token` request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ChaosRates {
    html_403: f64,
    too_many_requests: f64,
    #[serde(deserialize_with = "duration")]
    retry_after: Duration,
    server_error: f64,
    delay: f64,
    #[serde(deserialize_with = "duration")]
    delay_for: Duration,
    drop: f64,
    revoke: f64,
}

impl Default for ChaosRates {
    fn default() -> Self {
        ChaosRates {
            html_403: 0.0,
            too_many_requests: 0.0,
            retry_after: Duration::ZERO,
            server_error: 0.0,
            delay: 0.0,
            delay_for: Duration::from_millis(500),
            drop: 0.0,
            revoke: 0.0,
        }
    }
}

impl ChaosRates {
    /// The provider's chaos setting with `seed`.
    pub(crate) fn chaos(&self, seed: u64) -> Chaos {
        Chaos {
            seed,
            html_403: self.html_403,
            too_many_requests: self.too_many_requests,
            retry_after_secs: (!self.retry_after.is_zero())
                .then(|| self.retry_after.as_secs().max(1)),
            server_error: self.server_error,
            delay: self.delay,
            delay_for: self.delay_for,
            drop: self.drop,
            revoke: self.revoke,
        }
    }

    /// Whether every rate is zero.
    pub(crate) fn is_calm(&self) -> bool {
        [
            self.html_403,
            self.too_many_requests,
            self.server_error,
            self.delay,
            self.drop,
            self.revoke,
        ]
        .iter()
        .all(|r| *r == 0.0)
    }

    /// One line for the summary.
    pub(crate) fn describe(&self) -> String {
        if self.is_calm() {
            return "none (calm)".to_owned();
        }
        format!(
            "html_403 {} · 429 {} (Retry-After {}) · 500 {} · delay {} ({}) · drop {} · revoke {}",
            self.html_403,
            self.too_many_requests,
            humantime::format_duration(self.retry_after),
            self.server_error,
            self.delay,
            humantime::format_duration(self.delay_for),
            self.drop,
            self.revoke
        )
    }
}

/// `[checks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Checks {
    /// RSS growth (last third vs first third) above this fraction is flagged.
    pub(crate) rss_growth_max: f64,
    /// Runs shorter than this report RSS growth without judging it.
    #[serde(deserialize_with = "duration")]
    pub(crate) rss_judge_after: Duration,
    /// How long reaching an awaited state may take.
    #[serde(deserialize_with = "duration")]
    pub(crate) settle_timeout: Duration,
    /// After the soak window's chaos ends, how long the fleet may take to be back to
    /// `running` (every workload whose grant chaos did not revoke).
    #[serde(deserialize_with = "duration")]
    pub(crate) recover_timeout: Duration,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            rss_growth_max: 0.25,
            rss_judge_after: Duration::from_secs(120),
            settle_timeout: Duration::from_secs(300),
            recover_timeout: Duration::from_secs(30),
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
}

impl Profile {
    /// The embedded default profile.
    pub(crate) fn embedded() -> crate::Result<Profile> {
        Profile::parse(DEFAULT_PROFILE).context("the embedded default profile")
    }

    /// Reads and validates a profile file.
    pub(crate) fn load(path: &Path) -> crate::Result<Profile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the profile {}", path.display()))?;
        Profile::parse(&text).with_context(|| format!("profile {}", path.display()))
    }

    /// Parses and validates profile text.
    pub(crate) fn parse(text: &str) -> crate::Result<Profile> {
        let profile: Profile = toml::from_str(text)?;
        profile.validate()?;
        Ok(profile)
    }

    fn validate(&self) -> crate::Result<()> {
        let p = &self.policy;
        let fail = |key: &str, why: &str| Err(crate::Error::failed(format!("{key}: {why}")));
        if self.provider.lifetime < Duration::from_secs(2) {
            return fail("provider.lifetime", "at least 2s");
        }
        if self.provider.quiet_lifetime < Duration::from_secs(60) {
            return fail("provider.quiet_lifetime", "at least 1m");
        }
        if !(p.refresh_at > 0.0 && p.refresh_at <= 1.0) {
            return fail("policy.refresh_at", "a fraction in (0, 1]");
        }
        if !(p.refresh_jitter >= 0.0 && p.refresh_jitter < p.refresh_at) {
            return fail("policy.refresh_jitter", "at least 0 and below refresh_at");
        }
        if p.backoff_multiplier.is_nan() || p.backoff_multiplier < 1.0 {
            return fail("policy.backoff_multiplier", "at least 1");
        }
        if p.backoff_initial.is_zero() || p.backoff_max < p.backoff_initial {
            return fail("policy.backoff_initial", "above 0s and at most backoff_max");
        }
        if p.request_timeout.is_zero() || p.connect_timeout.is_zero() {
            return fail("policy.request_timeout", "timeouts must be above 0s");
        }
        if p.endpoint_concurrency == 0 || p.endpoint_concurrency > 10_000 {
            return fail("policy.endpoint_concurrency", "between 1 and 10000");
        }
        if let Err(why) = self.chaos.chaos(self.seed).validate() {
            return Err(crate::Error::failed(format!("chaos: {why}")));
        }
        if self.chaos.delay > 0.0 && self.chaos.delay_for >= p.request_timeout {
            return fail(
                "chaos.delay_for",
                "must stay below policy.request_timeout (a delayed answer that arrives after \
                 the client gave up rotates a refresh token the client never sees)",
            );
        }
        if self.checks.rss_growth_max.is_nan() || self.checks.rss_growth_max < 0.0 {
            return fail("checks.rss_growth_max", "at least 0");
        }
        if self.checks.settle_timeout.is_zero() {
            return fail("checks.settle_timeout", "above 0s");
        }
        if self.checks.recover_timeout.is_zero() {
            return fail("checks.recover_timeout", "above 0s");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profiles_parse() {
        let default = Profile::embedded().unwrap();
        assert!(!default.chaos.is_calm());
        assert_eq!(default.seed, 42);
        let calm = Profile::parse(include_str!("../../../../config/soak-calm.toml")).unwrap();
        assert!(calm.chaos.is_calm());
        let off =
            Profile::parse(include_str!("../../../../config/soak-rotation-off.toml")).unwrap();
        assert!(!off.provider.rotation);
        assert_eq!(off.chaos.chaos(1).html_403, default.chaos.chaos(1).html_403);
    }

    #[test]
    fn missing_keys_take_defaults_and_unknown_keys_are_errors() {
        let p = Profile::parse("[chaos]\nhtml_403 = 0.5\n").unwrap();
        assert_eq!(p.provider.lifetime, Duration::from_secs(30));
        assert_eq!(p.chaos.chaos(1).html_403, 0.5);
        assert!(Profile::parse("[chaos]\nhtml403 = 0.5\n").is_err());
        assert!(Profile::parse("lifetime = \"30s\"\n").is_err());
    }

    #[test]
    fn impossible_values_are_refused() {
        assert!(Profile::parse("[chaos]\nhtml_403 = 0.7\ndrop = 0.7\n").is_err());
        assert!(Profile::parse("[provider]\nlifetime = \"1s\"\n").is_err());
        assert!(Profile::parse("[provider]\nlifetime = \"soon\"\n").is_err());
        assert!(Profile::parse("[policy]\nrefresh_jitter = 0.9\n").is_err());
        assert!(
            Profile::parse("[chaos]\ndelay = 0.1\ndelay_for = \"10s\"\n").is_err(),
            "a delay beyond the request timeout is refused"
        );
    }
}
