//! The masked rendering of a valid configuration, for `tokenvisor check-config`
//! ([`Config::describe_masked`]): every effective setting as TOML, defaults included, each
//! secret printed as `"…"` with a comment saying where it came from (inline, a file, an
//! environment variable), never its value.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::Config;
use crate::spec::{GrantSpec, SecretOrigin, WorkloadPolicy};

/// A [`Config`] displayed as TOML, secrets masked.
pub(crate) struct Masked<'a>(pub(crate) &'a Config);

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
            writeln!(f, "token_url = {}", q(&w.token_url.redacted()))?;
            writeln!(f, "client_id = {}", q(&w.client_id))?;
            match &w.client_secret {
                Some(_) => writeln!(
                    f,
                    "client_secret = \"…\"  # {}",
                    origin(w.client_secret_origin.as_ref())
                )?,
                None => writeln!(f, "# client_secret: none (public client)")?,
            }
            writeln!(f, "auth_method = {}", q(w.auth_method.as_str()))?;
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
        if let Some(cluster) = &c.cluster {
            write!(f, "\n{cluster}")?;
        }
        Ok(())
    }
}
