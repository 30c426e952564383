//! The masked rendering of a valid configuration, for `tokenvisor check-config`
//! ([`Config::describe_masked`]): every effective setting as TOML, defaults included, each
//! secret printed as `"…"` with a comment saying where it came from, never its value.
//! Key, certificate and credential files are shown as paths (never their contents), a proxy
//! URL without its password, `extra_params` values cut to their first characters, URLs as
//! [`tokenvisor_core::TokenUrl`] redacts them. A key that is not set is a comment saying
//! what applies instead. Values are written by `toml` (any `Serialize`); durations as
//! `humantime` writes them.

use std::fmt::{Display, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokenvisor_core::spec::ClusterConfig;

use crate::Config;
use crate::spec::{GrantSpec, ProviderSpec, SecretOrigin, WorkloadPolicy};

/// A value as TOML (a string quoted and escaped, a number, a list of strings).
fn toml(v: impl Serialize) -> String {
    toml::Value::try_from(v).map_or_else(|e| e.to_string(), |v| v.to_string())
}

/// A path as TOML.
fn path(p: &Path) -> String {
    toml(p.to_string_lossy())
}

/// How each kind of policy key is shown (named as the checks of `schema::policy_keys!`).
fn duration(d: &Duration) -> String {
    toml(humantime::format_duration(*d).to_string())
}
use self::{toml as codes, toml as count, toml as number};

/// The listing, one line per setting.
#[derive(Default)]
struct Out(String);

impl Out {
    /// `key = value`, or `# key: {unset}` when there is no value.
    fn opt(&mut self, key: &str, value: Option<impl Display>, unset: &str) {
        let _ = match value {
            Some(v) => writeln!(self.0, "{key} = {v}"),
            None => writeln!(self.0, "# {key}: {unset}"),
        };
    }

    fn set(&mut self, key: &str, value: impl Display) {
        self.opt(key, Some(value), "");
    }

    fn line(&mut self, line: &str) {
        self.0.extend([line, "\n"]);
    }

    fn policy(&mut self, p: &WorkloadPolicy) {
        macro_rules! show {
            ($p:tt $($name:ident: $ty:ty, $check:ident => $($f:ident).+;)*) => {
                $(self.set(stringify!($name), $check(&p.$($f).+));)*
            };
        }
        crate::schema::policy_keys!(show _);
        self.provider(&p.provider);
    }

    /// The provider keys of one level: files as paths, no contents.
    fn provider(&mut self, p: &ProviderSpec) {
        let (unset, file) = ("not set", |f: &Option<PathBuf>| f.as_deref().map(path));
        self.opt("issuer", p.issuer.as_ref().map(|i| toml(i.as_str())), unset);
        self.opt("client_key_file", file(&p.client_key_file), unset);
        self.opt("client_key_id", p.client_key_id.as_deref().map(toml), unset);
        let alg = p.client_assertion_alg.map(|a| toml(a.as_str()));
        self.opt("client_assertion_alg", alg, "not set (the key's default)");
        let audience = p.client_assertion_audience.as_deref().map(toml);
        let unset_audience = "not set (the token endpoint)";
        self.opt("client_assertion_audience", audience, unset_audience);
        self.opt("client_cert_file", file(&p.client_cert_file), unset);
        self.opt("ca_file", file(&p.ca_file), "not set (the system's roots)");
        self.set("ca_only", p.ca_only);
        let proxy = p.proxy.as_deref().map(|u| toml(proxy_url(u)));
        let env = "not set (the environment's HTTPS_PROXY/HTTP_PROXY/NO_PROXY)";
        self.opt("proxy", proxy, env);
        let creds = file(&p.proxy_credentials_file).map(|f| f + "  # user:password, not shown");
        self.opt("proxy_credentials_file", creds, unset);
        self.opt("no_proxy", p.no_proxy.as_deref().map(toml), unset);
        let params: Vec<_> = (p.extra_params.iter())
            .map(|(k, v)| format!("{} = {}", toml(k), toml(cut(v))))
            .collect();
        self.set("extra_params", format!("{{{}}}", params.join(", ")));
    }

    /// The grant's own keys: the refresh token masked, the presented tokens' files.
    fn grant(&mut self, grant: &GrantSpec) {
        let every = "  # read at every attempt";
        match grant {
            GrantSpec::RefreshToken { file, .. } => {
                let from = match file {
                    Some(p) => {
                        let p = p.display();
                        format!("from file {p} (rotated tokens are written back to it)")
                    }
                    None => "inline in the configuration (rotated tokens are kept in memory only)"
                        .into(),
                };
                self.set("refresh_token", format!("\"…\"  # {from}"));
            }
            GrantSpec::ClientCredentials => {}
            GrantSpec::JwtBearer { assertion_file: f } => {
                self.set("assertion_file", path(f) + every);
            }
            GrantSpec::TokenExchange(x) => {
                for (who, t) in [("subject", Some(&x.subject)), ("actor", x.actor.as_ref())] {
                    let Some(t) = t else { continue };
                    self.set(&format!("{who}_token_file"), path(&t.file) + every);
                    self.set(&format!("{who}_token_type"), toml(&*t.token_type));
                }
                if let Some(t) = &x.requested_token_type {
                    self.set("requested_token_type", toml(&**t));
                }
            }
        }
    }

    fn cluster(&mut self, c: &ClusterConfig) {
        self.line("[cluster]");
        self.set("backend", "\"etcd\"");
        self.set("endpoints", toml(&c.endpoints));
        self.set("prefix", toml(&c.prefix));
        let derived = "not set; <hostname>-<8 hex of the state directory's SHA-256>";
        self.opt("member", c.member.as_deref().map(toml), derived);
        self.set("lease_ttl", duration(&c.lease_ttl));
        self.set("shards", c.shards);
        if let Some(ca) = &c.ca_file {
            self.set("ca_file", path(ca));
        }
        if let Some((cert, key)) = &c.client_cert {
            self.set("cert_file", path(cert));
            self.set("key_file", path(key));
        }
        if let Some((user, _)) = &c.auth {
            self.set("user", toml(user));
            self.set("password", "\"…\"  # from password_file");
        }
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
    let head = format!("# {source}: valid; {n} workload{plural}; secrets are masked");
    out.line(&head);
    out.line("\n[service]");
    out.set("status_dir", path(&s.status_dir));
    out.set("admin_listen", toml(s.admin_listen.to_string()));
    let generated = "not set; the daemon generates <state_dir>/admin.token";
    let token = s.admin_token_file.as_deref().map(path);
    out.opt("admin_token_file", token, generated);
    let state = s.state_dir.as_deref().map(path);
    out.opt("state_dir", state, "not set and not derivable (not needed)");
    let limits = &s.admin_limits;
    out.set("admin_header_timeout", duration(&limits.header_timeout));
    out.set("admin_idle_timeout", duration(&limits.idle_timeout));
    out.set("admin_max_connections", limits.max_connections);
    out.set("log_format", toml(s.log_format.as_str()));
    out.set("log_level", toml(&s.log_level));
    out.line("\n[defaults]");
    out.policy(&c.defaults);
    for w in &c.workloads {
        out.line("\n[[workload]]");
        out.set("name", toml(w.name.as_str()));
        let discovered = "discovered from issuer (check-config --online shows it)";
        let url = Some(toml(w.token_url.redacted())).filter(|_| w.policy.provider.issuer.is_none());
        out.opt("token_url", url, discovered);
        out.set("client_id", toml(&*w.client_id));
        let origin = match &w.client_secret_origin {
            Some(SecretOrigin::Inline) | None => "inline in the configuration".to_owned(),
            Some(SecretOrigin::File(p)) => format!("from file {}", p.display()),
            Some(SecretOrigin::Env(v)) => format!("from environment variable {v}"),
        };
        let secret = (w.client_secret.as_ref()).map(|_| format!("\"…\"  # {origin}"));
        out.opt("client_secret", secret, "none (public client)");
        out.set("auth_method", toml(w.auth_method.as_str()));
        out.set("grant", toml(w.grant.as_str()));
        out.grant(&w.grant);
        let sink = w.token_sink_file.as_deref().map(path);
        out.opt("token_sink_file", sink, "not set");
        out.set("scopes", toml(&*w.scopes));
        out.opt("resource", w.resource.as_deref().map(toml), "not set");
        out.opt("audience", w.audience.as_deref().map(toml), "not set");
        // The keys of `tokenvisor login`, for the workloads that log in (the others cannot).
        if let GrantSpec::RefreshToken { .. } = w.grant {
            let (l, url) = (&w.login, |u: &Option<tokenvisor_core::TokenUrl>| {
                u.as_ref().map(|u| toml(u.redacted()))
            });
            out.opt("authorization_url", url(&l.authorization_url), "not set");
            let device = url(&l.device_authorization_url);
            out.opt("device_authorization_url", device, "not set");
            out.set("redirect_port", l.redirect_port);
            let scopes = l.login_scopes.as_deref().map(toml);
            out.opt("login_scopes", scopes, "not set (scopes)");
        }
        out.policy(&w.policy);
    }
    if let Some(cluster) = &c.cluster {
        out.line("");
        out.cluster(cluster);
    }
    out.0
}

/// `[cluster]` as TOML, defaults included, the password masked (for `check-config`).
pub fn cluster_section(c: &ClusterConfig) -> String {
    let mut out = Out::default();
    out.cluster(c);
    out.0
}
