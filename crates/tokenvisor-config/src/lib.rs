//! # tokenvisor-config
//!
//! tokenvisor's TOML configuration → [`spec::WorkloadSpec`]s: [`load`] reads a file,
//! [`parse`] a string; both validate everything (secrets included) before a [`Config`]
//! exists, so a bad configuration is one [`ConfigError`] listing every problem, one per line,
//! as `FILE:LINE: KEY: reason`. Above `tokenvisor-core`, below the runtime (which re-exports
//! it as `tokenvisor::config`). The file's rules: `docs/ARCHITECTURE.md`, "Configuration as
//! its own crate".
//!
//! Map: `schema` (the raw sections, serde-derived, `Spanned` values) → `read` (syntax errors,
//! unknown keys, wrong types) → `validate` (each key's rule, the rules between keys and
//! workloads; `problems` collects) → [`spec`] (what it resolves to). [`secrets`]: the one
//! secret-file reader, shared with the runtime. `masked`: `check-config`'s rendering.
//! `provider`: the provider keys (client assertions, TLS, proxy, discovery). `grants`: the
//! workload-identity grants' keys (`jwt_bearer`, `token_exchange`). [`cluster`]: `[cluster]`,
//! cluster mode on etcd (schema, checks, resolved form). [`login`]: the keys of `tokenvisor
//! login` and [`load_for_login`].

use std::path::{Path, PathBuf};

pub mod cluster;
pub mod login;
pub mod secrets;
pub mod spec;

mod grants;
mod masked;
mod problems;
mod provider;
mod read;
mod schema;
mod validate;

pub use login::load_for_login;
pub use problems::{ConfigError, ConfigProblem};
pub use secrets::read_admin_token;
pub use spec::{default_state_dir, default_status_dir};
pub use tokenvisor_core::spec::rules::{
    MAX_ADMIN_MAX_CONNECTIONS, MAX_DURATION, MAX_ENDPOINT_CONCURRENCY, duration_limit,
};

pub use crate::spec::{
    AdminLimits, AdminListen, DEFAULT_ADMIN_HEADER_TIMEOUT, DEFAULT_ADMIN_IDLE_TIMEOUT,
    DEFAULT_ADMIN_LISTEN, DEFAULT_ADMIN_MAX_CONNECTIONS, LogFormat, ServiceConfig,
};
use crate::spec::{WorkloadPolicy, WorkloadSpec};

/// The shortest admin token accepted, in bytes (a shorter `admin_token_file` is an error).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// The `source` of a configuration that did not come from a file.
pub const EMBEDDED_SOURCE: &str = "<embedded>";

/// The largest secret file read (a bigger one is almost certainly the wrong file).
pub const MAX_SECRET_FILE_BYTES: u64 = secrets::SECRET_FILE_LIMIT as u64;

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
    /// `[cluster]`: cluster mode on etcd; `None` (no section): one process, as always.
    pub cluster: Option<cluster::ClusterConfig>,
}

impl Config {
    /// The workload called `name`, if any.
    pub fn workload(&self, name: &str) -> Option<&WorkloadSpec> {
        self.workloads.iter().find(|w| w.name.as_str() == name)
    }

    /// Every effective setting, as TOML, with secrets masked as `"…"` and where each came
    /// from in a comment (for `tokenvisor check-config`).
    pub fn describe_masked(&self) -> String {
        masked::render(self)
    }

    /// The warnings, one line each: `FILE:LINE: KEY: warning: reason`.
    pub fn warning_lines(&self) -> Vec<String> {
        let line = |p: &ConfigProblem| p.render(&self.source, "warning: ");
        self.warnings.iter().map(line).collect()
    }
}

/// Reads and validates the configuration file at `path`, using the process environment for
/// `client_secret_env` and the `status_dir` default. Relative paths inside it resolve against
/// its directory.
///
/// # Errors
/// [`ConfigError`]: every problem of the file (or that it cannot be read), each as
/// `FILE:LINE: KEY: reason`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_mode(path, false)
}

/// [`load`]; `login`: for `tokenvisor login` ([`login::load_for_login`]).
fn load_mode(path: &Path, login: bool) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let (mut cx, why) = (
            problems::Cx::default(),
            "cannot read the configuration file",
        );
        cx.problem(String::new(), None, format!("{why}: {e}"));
        cx.into_error(path)
    })?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let env = |var: &str| std::env::var(var).ok();
    validate::parse_mode(&text, path, &base, &env, login)
}

/// `path` against `base` (unless absolute), without `.` components: where a path the
/// file names resolves (workload, provider and grant files alike).
pub(crate) fn under(base: &Path, path: &str) -> PathBuf {
    base.join(path).components().collect()
}

/// Parses and validates configuration text. `source` names it in errors, and its directory
/// is where relative paths resolve; `env` looks up environment variables.
///
/// # Errors
/// [`ConfigError`]: every problem of the text, each as `FILE:LINE: KEY: reason`.
pub fn parse(
    text: &str,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let base = source.parent().unwrap_or(Path::new("")).to_path_buf();
    validate::parse_mode(text, source, &base, env, false)
}
