//! The masked rendering of a valid configuration, for `tokenvisor check-config`
//! ([`Config::describe_masked`]): every effective setting as TOML, defaults included, each
//! secret printed as `"…"` with a comment saying where it came from, never its value.
//! Key, certificate and credential files are shown as paths (never their contents), a proxy
//! URL without its password, `extra_params` values cut to their first characters, URLs as
//! [`tokenvisor_core::TokenUrl`] redacts them. A key that is not set is a comment saying
//! what applies instead.

use std::path::Path;
use std::time::Duration;

use crate::Config;
use crate::spec::{GrantSpec, LoginSpec, ProviderSpec, SecretOrigin, WorkloadPolicy};
use tokenvisor_core::spec::ClusterConfig;

/// A value as TOML.
trait Toml {
    fn toml(&self) -> String;
}

impl Toml for str {
    fn toml(&self) -> String {
        toml::Value::String(self.to_owned()).to_string()
    }
}

impl Toml for Path {
    fn toml(&self) -> String {
        self.to_string_lossy().toml()
    }
}

impl Toml for Duration {
    fn toml(&self) -> String {
        humantime::format_duration(*self).to_string().toml()
    }
}

impl Toml for f64 {
    fn toml(&self) -> String {
        format!("{self:?}")
    }
}

impl Toml for usize {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl Toml for [String] {
    fn toml(&self) -> String {
        let items: Vec<_> = self.iter().map(|s| s.toml()).collect();
        format!("[{}]", items.join(", "))
    }
}

/// The listing, one line per setting.
#[derive(Default)]
struct Out(Vec<String>);

impl Out {
    fn set(&mut self, key: &str, value: impl std::fmt::Display) {
        self.0.push(format!("{key} = {value}"));
    }

    /// `key = value`, or `# key: <unset>` when there is no value.
    fn opt(&mut self, key: &str, value: Option<String>, unset: &str) {
        self.0
            .push(value.map_or_else(|| format!("# {key}: {unset}"), |v| format!("{key} = {v}")));
    }

    fn section(&mut self, header: &str) {
        self.0.extend([String::new(), header.to_owned()]);
    }

    fn policy(&mut self, p: &WorkloadPolicy) {
        macro_rules! show {
            ($p:tt $($name:ident: $ty:ty, $check:ident => $($f:ident).+;)*) => {
                $(self.set(stringify!($name), p.$($f).+.toml());)*
            };
        }
        crate::schema::policy_keys!(show _);
        self.provider(&p.provider);
    }

    /// The provider keys of one level: files as paths, no contents.
    fn provider(&mut self, p: &ProviderSpec) {
        let path = |f: &Option<std::path::PathBuf>| f.as_deref().map(Path::toml);
        let text = |t: &Option<std::sync::Arc<str>>| t.as_deref().map(str::toml);
        let unset = "not set";
        self.opt(
            "issuer",
            p.issuer.as_ref().map(|i| i.as_str().toml()),
            unset,
        );
        self.opt("client_key_file", path(&p.client_key_file), unset);
        self.opt("client_key_id", text(&p.client_key_id), unset);
        let alg = p.client_assertion_alg.map(|a| a.as_str().toml());
        self.opt("client_assertion_alg", alg, "not set (the key's default)");
        let audience = text(&p.client_assertion_audience);
        self.opt(
            "client_assertion_audience",
            audience,
            "not set (the token endpoint)",
        );
        self.opt("client_cert_file", path(&p.client_cert_file), unset);
        self.opt("ca_file", path(&p.ca_file), "not set (the system's roots)");
        self.set("ca_only", p.ca_only);
        let proxy = p.proxy.as_deref().map(|u| proxy_url(u).toml());
        let env = "not set (the environment's HTTPS_PROXY/HTTP_PROXY/NO_PROXY)";
        self.opt("proxy", proxy, env);
        let creds =
            path(&p.proxy_credentials_file).map(|f| format!("{f}  # user:password, not shown"));
        self.opt("proxy_credentials_file", creds, unset);
        self.opt("no_proxy", text(&p.no_proxy), unset);
        let params: Vec<_> = (p.extra_params.iter())
            .map(|(k, v)| format!("{} = {}", k.toml(), cut(v).toml()))
            .collect();
        self.set("extra_params", format!("{{{}}}", params.join(", ")));
    }

    /// The grant's own keys: the refresh token masked, the presented tokens' files.
    fn grant(&mut self, grant: &GrantSpec) {
        let every = "  # read at every attempt";
        match grant {
            GrantSpec::RefreshToken { file: Some(p), .. } => self.set(
                "refresh_token",
                format!(
                    "\"…\"  # from file {} (rotated tokens are written back to it)",
                    p.display()
                ),
            ),
            GrantSpec::RefreshToken { file: None, .. } => self.set(
                "refresh_token",
                "\"…\"  # inline in the configuration (rotated tokens are kept in memory only)",
            ),
            GrantSpec::ClientCredentials => {}
            GrantSpec::JwtBearer { assertion_file } => {
                self.set(
                    "assertion_file",
                    format!("{}{every}", assertion_file.toml()),
                );
            }
            GrantSpec::TokenExchange(x) => {
                let tokens = [("subject", Some(&x.subject)), ("actor", x.actor.as_ref())];
                for (who, t) in tokens.into_iter().filter_map(|(w, t)| Some((w, t?))) {
                    self.set(
                        &format!("{who}_token_file"),
                        format!("{}{every}", t.file.toml()),
                    );
                    self.set(&format!("{who}_token_type"), t.token_type.toml());
                }
                if let Some(t) = &x.requested_token_type {
                    self.set("requested_token_type", t.toml());
                }
            }
        }
    }

    /// The keys of `tokenvisor login`, for the workloads that log in (the others cannot).
    fn login(&mut self, l: &LoginSpec, grant: &GrantSpec) {
        let GrantSpec::RefreshToken { .. } = grant else {
            return;
        };
        let url = |u: &Option<tokenvisor_core::TokenUrl>| u.as_ref().map(|u| u.redacted().toml());
        self.opt("authorization_url", url(&l.authorization_url), "not set");
        let device = url(&l.device_authorization_url);
        self.opt("device_authorization_url", device, "not set");
        self.set("redirect_port", l.redirect_port);
        let scopes = l.login_scopes.as_deref().map(<[String]>::toml);
        self.opt("login_scopes", scopes, "not set (scopes)");
    }

    fn cluster(&mut self, c: &ClusterConfig) {
        self.0.push("[cluster]".to_owned());
        self.set("backend", "\"etcd\"");
        self.set("endpoints", c.endpoints.toml());
        self.set("prefix", c.prefix.toml());
        let member = c.member.as_deref().map(str::toml);
        let derived = "not set; <hostname>-<8 hex of the state directory's SHA-256>";
        self.opt("member", member, derived);
        self.set("lease_ttl", c.lease_ttl.toml());
        self.set("shards", c.shards);
        if let Some(ca) = &c.ca_file {
            self.set("ca_file", ca.toml());
        }
        if let Some((cert, key)) = &c.client_cert {
            self.set("cert_file", cert.toml());
            self.set("key_file", key.toml());
        }
        if let Some((user, _)) = &c.auth {
            self.set("user", user.toml());
            self.set("password", "\"…\"  # from password_file");
        }
    }

    fn text(self) -> String {
        self.0.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// An `extra_params` value as shown: its first 4 characters, then `…` (values are not
/// secrets, but are not printed in full either).
fn cut(v: &str) -> String {
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

/// `c` as TOML, secrets masked (one line per setting, a blank line between sections).
pub(crate) fn render(c: &Config) -> String {
    let (n, s, mut out) = (c.workloads.len(), &c.service, Out::default());
    let plural = if n == 1 { "" } else { "s" };
    let source = c.source.display();
    out.0.push(format!(
        "# {source}: valid; {n} workload{plural}; secrets are masked"
    ));
    out.section("[service]");
    out.set("status_dir", s.status_dir.toml());
    out.set("admin_listen", s.admin_listen.to_string().toml());
    let token = s.admin_token_file.as_deref().map(Path::toml);
    out.opt(
        "admin_token_file",
        token,
        "not set; the daemon generates <state_dir>/admin.token",
    );
    let state = s.state_dir.as_deref().map(Path::toml);
    out.opt("state_dir", state, "not set and not derivable (not needed)");
    out.set("admin_header_timeout", s.admin_limits.header_timeout.toml());
    out.set("admin_idle_timeout", s.admin_limits.idle_timeout.toml());
    out.set("admin_max_connections", s.admin_limits.max_connections);
    out.set("log_format", s.log_format.as_str().toml());
    out.set("log_level", s.log_level.toml());
    out.section("[defaults]");
    out.policy(&c.defaults);
    for w in &c.workloads {
        out.section("[[workload]]");
        out.set("name", w.name.as_str().toml());
        match w.policy.provider.issuer {
            Some(_) => (out.0).push(
                "# token_url: discovered from issuer (check-config --online shows it)".to_owned(),
            ),
            None => out.set("token_url", w.token_url.redacted().toml()),
        }
        out.set("client_id", w.client_id.toml());
        let origin = match &w.client_secret_origin {
            Some(SecretOrigin::Inline) | None => "inline in the configuration".to_owned(),
            Some(SecretOrigin::File(p)) => format!("from file {}", p.display()),
            Some(SecretOrigin::Env(v)) => format!("from environment variable {v}"),
        };
        let secret = w
            .client_secret
            .as_ref()
            .map(|_| format!("\"…\"  # {origin}"));
        out.opt("client_secret", secret, "none (public client)");
        out.set("auth_method", w.auth_method.as_str().toml());
        out.set("grant", w.grant.as_str().toml());
        out.grant(&w.grant);
        let sink = w.token_sink_file.as_deref().map(Path::toml);
        out.opt("token_sink_file", sink, "not set");
        out.set("scopes", w.scopes.toml());
        out.opt("resource", w.resource.as_deref().map(str::toml), "not set");
        out.opt("audience", w.audience.as_deref().map(str::toml), "not set");
        out.login(&w.login, &w.grant);
        out.policy(&w.policy);
    }
    if let Some(cluster) = &c.cluster {
        out.0.push(String::new());
        out.cluster(cluster);
    }
    out.text()
}

/// `[cluster]` as TOML, defaults included, the password masked (for `check-config`).
pub fn cluster_section(c: &ClusterConfig) -> String {
    let mut out = Out::default();
    out.cluster(c);
    out.text()
}
