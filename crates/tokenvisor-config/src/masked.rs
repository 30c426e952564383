//! The masked rendering of a valid configuration, for `tokenvisor check-config`
//! ([`Config::describe_masked`]): every effective setting as TOML, defaults included, each
//! secret printed as `"…"` with a comment saying where it came from, never its value.
//! The provider keys too ([`provider`]): key, certificate and credential files as paths
//! (never their contents), a proxy URL without its password, `extra_params` values cut to
//! their first characters.

use std::path::Path;
use std::time::Duration;

use crate::Config;
use crate::spec::{GrantSpec, ProviderSpec, SecretOrigin, WorkloadPolicy};

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn qp(p: &Path) -> String {
    q(&p.to_string_lossy())
}

fn d(x: Duration) -> String {
    q(&humantime::format_duration(x).to_string())
}

fn list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// `key = value`, or `# key: <comment>` when there is no value.
fn opt(key: &str, value: Option<String>, comment: &str) -> String {
    value.map_or_else(|| format!("# {key}: {comment}"), |v| format!("{key} = {v}"))
}

fn policy(p: &WorkloadPolicy) -> [String; 13] {
    [
        format!("request_timeout = {}", d(p.request_timeout)),
        format!("connect_timeout = {}", d(p.connect_timeout)),
        format!("refresh_at = {:?}", p.schedule.refresh_at),
        format!("refresh_jitter = {:?}", p.schedule.refresh_jitter),
        format!("default_lifetime = {}", d(p.default_lifetime)),
        format!("backoff_initial = {}", d(p.backoff.initial)),
        format!("backoff_max = {}", d(p.backoff.max)),
        format!("backoff_multiplier = {:?}", p.backoff.multiplier),
        format!("give_up_after = {}", d(p.give_up_after)),
        format!("max_retry_after = {}", d(p.max_retry_after)),
        format!("endpoint_concurrency = {}", p.endpoint_concurrency),
        format!("transient_codes = {}", list(&p.transient_codes)),
        format!("permanent_codes = {}", list(&p.permanent_codes)),
    ]
}

/// An `extra_params` value as shown: its first 4 characters, then `…` (values are not
/// secrets, but are not printed in full either).
pub(crate) fn cut(v: &str) -> String {
    match v.chars().count() > 4 {
        true => format!("{}…", v.chars().take(4).collect::<String>()),
        false => v.to_owned(),
    }
}

/// A proxy URL with any password replaced by `…`.
fn proxy_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("…"));
            u.to_string()
        }
        Ok(_) | Err(_) => s.to_owned(),
    }
}

/// The provider keys of one level: files as paths, no contents.
fn provider(p: &ProviderSpec) -> Vec<String> {
    let path = |f: &Option<std::path::PathBuf>| f.as_deref().map(qp);
    let text = |t: &Option<std::sync::Arc<str>>| t.as_deref().map(q);
    let params: Vec<String> = (p.extra_params.iter())
        .map(|(k, v)| format!("{} = {}", q(k), q(&cut(v))))
        .collect();
    vec![
        opt(
            "issuer",
            p.issuer.as_ref().map(|i| q(i.as_str())),
            "not set",
        ),
        opt("client_key_file", path(&p.client_key_file), "not set"),
        opt("client_key_id", text(&p.client_key_id), "not set"),
        opt(
            "client_assertion_alg",
            p.client_assertion_alg.map(|a| q(a.into())),
            "not set (the key's default)",
        ),
        opt(
            "client_assertion_audience",
            text(&p.client_assertion_audience),
            "not set (the token endpoint)",
        ),
        opt("client_cert_file", path(&p.client_cert_file), "not set"),
        opt("ca_file", path(&p.ca_file), "not set (the system's roots)"),
        format!("ca_only = {}", p.ca_only),
        opt(
            "proxy",
            p.proxy.as_deref().map(|u| q(&proxy_url(u))),
            "not set (the environment's HTTPS_PROXY/HTTP_PROXY/NO_PROXY)",
        ),
        opt(
            "proxy_credentials_file",
            path(&p.proxy_credentials_file).map(|f| format!("{f}  # user:password, not shown")),
            "not set",
        ),
        opt("no_proxy", text(&p.no_proxy), "not set"),
        format!("extra_params = {{{}}}", params.join(", ")),
    ]
}

/// `c` as TOML, secrets masked (one line per setting, a blank line between sections).
pub(crate) fn render(c: &Config) -> String {
    let (n, s) = (c.workloads.len(), &c.service);
    let plural = if n == 1 { "" } else { "s" };
    let mut lines = vec![
        format!(
            "# {}: valid; {n} workload{plural}; secrets are masked",
            c.source.display()
        ),
        String::new(),
        "[service]".to_owned(),
        format!("status_dir = {}", qp(&s.status_dir)),
        format!("admin_listen = {}", q(&s.admin_listen.to_string())),
        opt(
            "admin_token_file",
            s.admin_token_file.as_deref().map(qp),
            "not set; the daemon generates <state_dir>/admin.token",
        ),
        opt(
            "state_dir",
            s.state_dir.as_deref().map(qp),
            "not set and not derivable (not needed)",
        ),
        format!(
            "admin_header_timeout = {}",
            d(s.admin_limits.header_timeout)
        ),
        format!("admin_idle_timeout = {}", d(s.admin_limits.idle_timeout)),
        format!("admin_max_connections = {}", s.admin_limits.max_connections),
        format!("log_format = {}", q(s.log_format.as_str())),
        format!("log_level = {}", q(&s.log_level)),
        String::new(),
        "[defaults]".to_owned(),
    ];
    lines.extend(policy(&c.defaults));
    lines.extend(provider(&c.defaults.provider));
    for w in &c.workloads {
        let origin = match &w.client_secret_origin {
            Some(SecretOrigin::Inline) | None => "inline in the configuration".to_owned(),
            Some(SecretOrigin::File(p)) => format!("from file {}", p.display()),
            Some(SecretOrigin::Env(v)) => format!("from environment variable {v}"),
        };
        let secret = w
            .client_secret
            .as_ref()
            .map(|_| format!("\"…\"  # {origin}"));
        let refresh = match &w.grant {
            GrantSpec::RefreshToken { file: Some(p), .. } => Some(format!(
                "refresh_token = \"…\"  # from file {} (rotated tokens are written back to it)",
                p.display()
            )),
            GrantSpec::RefreshToken { file: None, .. } => Some(
                "refresh_token = \"…\"  # inline in the configuration (rotated tokens are kept in \
                 memory only)"
                    .to_owned(),
            ),
            GrantSpec::ClientCredentials => None,
            GrantSpec::JwtBearer { assertion_file } => Some(format!(
                "assertion_file = {}  # read at every attempt",
                qp(assertion_file)
            )),
            GrantSpec::TokenExchange(x) => Some(
                [
                    Some(format!(
                        "subject_token_file = {}  # read at every attempt",
                        qp(&x.subject.file)
                    )),
                    Some(format!("subject_token_type = {}", q(&x.subject.token_type))),
                    x.actor.as_ref().map(|a| {
                        format!(
                            "actor_token_file = {}  # read at every attempt\nactor_token_type = {}",
                            qp(&a.file),
                            q(&a.token_type)
                        )
                    }),
                    x.requested_token_type
                        .as_deref()
                        .map(|t| format!("requested_token_type = {}", q(t))),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n"),
            ),
        };
        lines.extend([
            String::new(),
            "[[workload]]".to_owned(),
            format!("name = {}", q(w.name.as_str())),
            match w.policy.provider.issuer {
                Some(_) => "# token_url: discovered from issuer (check-config --online shows it)"
                    .to_owned(),
                None => format!("token_url = {}", q(&w.token_url.redacted())),
            },
            format!("client_id = {}", q(&w.client_id)),
            opt("client_secret", secret, "none (public client)"),
            format!("auth_method = {}", q(w.auth_method.as_str())),
            format!("grant = {}", q(w.grant.as_str())),
        ]);
        lines.extend(refresh);
        lines.extend([
            opt(
                "token_sink_file",
                w.token_sink_file.as_deref().map(qp),
                "not set",
            ),
            format!("scopes = {}", list(&w.scopes)),
            opt("resource", w.resource.as_deref().map(q), "not set"),
            opt("audience", w.audience.as_deref().map(q), "not set"),
        ]);
        lines.extend(login(&w.login, &w.grant));
        lines.extend(policy(&w.policy));
        lines.extend(provider(&w.policy.provider));
    }
    if let Some(cluster) = &c.cluster {
        lines.push(String::new());
        lines.extend(cluster_section(cluster).lines().map(str::to_owned));
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The keys of `tokenvisor login`, for the workloads that log in (the others cannot).
fn login(l: &crate::login::LoginSpec, grant: &GrantSpec) -> Vec<String> {
    let GrantSpec::RefreshToken { .. } = grant else {
        return Vec::new();
    };
    let url = |u: &Option<tokenvisor_core::TokenUrl>| u.as_ref().map(|u| q(&u.redacted()));
    let scopes = l.login_scopes.as_deref().map(list);
    vec![
        opt("authorization_url", url(&l.authorization_url), "not set"),
        opt(
            "device_authorization_url",
            url(&l.device_authorization_url),
            "not set",
        ),
        format!("redirect_port = {}", l.redirect_port),
        opt("login_scopes", scopes, "not set (scopes)"),
    ]
}

/// `[cluster]` as TOML, defaults included, the password masked (for `check-config`).
pub fn cluster_section(c: &crate::cluster::ClusterConfig) -> String {
    Cluster(c).to_string()
}

struct Cluster<'a>(&'a crate::cluster::ClusterConfig);

impl std::fmt::Display for Cluster<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.0;
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let p = |p: &Path| q(&p.to_string_lossy());
        let endpoints: Vec<String> = c.endpoints.iter().map(|e| q(e)).collect();
        writeln!(
            f,
            "[cluster]\nbackend = \"etcd\"\nendpoints = [{}]",
            endpoints.join(", ")
        )?;
        writeln!(f, "prefix = {}", q(&c.prefix))?;
        match &c.member {
            Some(m) => writeln!(f, "member = {}", q(m))?,
            None => writeln!(
                f,
                "# member: not set; <hostname>-<8 hex of the state directory's SHA-256>"
            )?,
        }
        let ttl = humantime::format_duration(c.lease_ttl);
        writeln!(f, "lease_ttl = \"{ttl}\"\nshards = {}", c.shards)?;
        if let Some(ca) = &c.ca_file {
            writeln!(f, "ca_file = {}", p(ca))?;
        }
        if let Some((cert, key)) = &c.client_cert {
            writeln!(f, "cert_file = {}\nkey_file = {}", p(cert), p(key))?;
        }
        if let Some((user, _)) = &c.auth {
            writeln!(
                f,
                "user = {}\npassword = \"…\"  # from password_file",
                q(user)
            )?;
        }
        Ok(())
    }
}
