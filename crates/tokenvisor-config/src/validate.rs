//! The validation pass: raw sections ([`crate::read`]) → a [`Config`], or every problem.
//!
//! `[service]`, then `[defaults]` over the built-in policy and each `[[workload]]`'s policy
//! keys over the defaults (each value remembers where it was set, so that a rule tying two
//! keys names both origins), then a workload's own keys and the checks across workloads.
//! A scalar key's rule is found by its name (`tokenvisor_core::spec::rules`: the limits a
//! spec built in code keeps too), in every section.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokenvisor_core::spec::rules::{self, resource, text, token_url};
use tokenvisor_core::{Secret, TokenUrl, WorkloadName};
use toml::Spanned;

use crate::problems::{Cx, Span, span, value};
use crate::schema::{Count, HumanDuration, List, Number, Opt, RawGrant, RawPolicy, RawSecret};
use crate::schema::{RawService, RawWorkload};
use crate::secrets::{admin_token_long_enough, read_secret_env};
use crate::spec::{AdminLimits, AdminListen, GrantSpec, SecretOrigin as Origin, ServiceConfig};
use crate::spec::{DEFAULT_STATUS_REFRESH_INTERVAL, WorkloadPolicy, WorkloadSpec};
use crate::{Config, ConfigError, default_state_dir, default_status_dir, under};

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A duration, number or count (at `key`) through the key's rule (`tokenvisor_core::spec::rules`).
fn duration(cx: &mut Cx, key: &str, raw: &Opt<HumanDuration>) -> Option<Duration> {
    cx.check(key, raw.as_ref(), |d| rules::duration(key, d.0))
}

fn number(cx: &mut Cx, key: &str, raw: &Opt<Number>) -> Option<f64> {
    cx.check(key, raw.as_ref(), |&Number::Float(x)| rules::number(key, x))
}

fn count(cx: &mut Cx, key: &str, raw: &Opt<Count>) -> Option<usize> {
    cx.check(key, raw.as_ref(), |n| rules::count(key, *n))
}

/// Extra error codes, each by RFC 6749's grammar.
fn codes(cx: &mut Cx, key: &str, raw: &Option<List>) -> Option<Vec<String>> {
    cx.each_valid(key, raw.as_ref()?, rules::error_code, rules::ERROR_CODE)
}

/// Reads and validates `text` (named `source`; relative paths resolve against `base`);
/// `login`: refresh-token files are not read (`crate::login::load_for_login`).
pub(crate) fn parse_mode(
    text: &str,
    source: &Path,
    base: &Path,
    env: Env<'_>,
    login: bool,
) -> Result<Config, ConfigError> {
    let (cx, seen) = (Cx::new(text), Seen::default());
    let mut v = V {
        cx,
        base,
        env,
        seen,
        login,
    };
    let Some(raw) = crate::read::read(&mut v.cx, text) else {
        return Err(v.cx.into_error(source));
    };
    v.cx.path = "service".to_owned();
    let service = v.service(&raw.service);
    let defaults = v.policy(&Level::default(), &raw.defaults, "defaults");
    let mut workloads = Vec::new();
    for (path, header, raw_policy, raw) in raw.workloads {
        let policy = v.policy(&defaults, &raw_policy, &path);
        v.cx.header = Some(header);
        workloads.extend(v.workload(&raw, policy));
    }
    let cluster = (raw.cluster)
        .and_then(|(h, raw)| crate::cluster::resolve(&mut v.cx, &raw, Some(h), base, &workloads));
    if !v.cx.problems.is_empty() {
        return Err(v.cx.into_error(source));
    }
    let (source, defaults, mut warnings) = (source.to_path_buf(), defaults.policy, v.cx.warnings);
    warnings.sort_by_key(|p| p.line);
    Ok(Config {
        source,
        service,
        defaults,
        workloads,
        warnings,
        cluster,
    })
}

/// The pass: the collector, where relative paths resolve, the environment, and what the
/// workloads seen so far use.
struct V<'a> {
    cx: Cx,
    base: &'a Path,
    env: Env<'a>,
    seen: Seen,
    /// Loading for `tokenvisor login`: refresh-token files are not read.
    login: bool,
}

/// What the workloads seen so far use, for the checks across workloads: names (the key and
/// line), files by normalised path (the key, line, and whether it is written), token
/// endpoints (the first workload and its endpoint concurrency).
#[derive(Default)]
struct Seen {
    names: HashMap<String, (String, usize)>,
    files: HashMap<PathBuf, (String, usize, bool)>,
    endpoints: HashMap<TokenUrl, (String, usize)>,
}

/// A resolved policy and, per key, the dotted key and span it was set at (absent: built
/// in), and which keys were set at this level (empty once resolved).
#[derive(Debug, Clone, Default)]
struct Level {
    policy: WorkloadPolicy,
    from: BTreeMap<&'static str, (String, Range<usize>)>,
    here: HashSet<&'static str>,
    grants: crate::grants::GrantKeys,
}

impl Level {
    /// Where a value came from: `", from KEY"`, `", the default"`, or empty when set here.
    fn origin(&self, name: &str) -> String {
        match (self.here.contains(name), self.from.get(name)) {
            (true, _) => String::new(),
            (false, Some((from, _))) => format!(", from {from}"),
            (false, None) => ", the default".to_owned(),
        }
    }

    /// A rule tying `a` and `b`, `broken` (why, when it is): reported where one of them is
    /// set here and neither was reported, blamed on `b` if it is set here, else on `a`.
    fn pair(&self, cx: &mut Cx, [a, b]: [&str; 2], broken: Option<String>) {
        let from = |k| (self.from.get(k)).is_none_or(|(from, _)| !cx.broken.contains(from));
        let k = if self.here.contains(b) { b } else { a };
        if !self.here.contains(k) || !from(a) || !from(b) {
            return;
        }
        if let Some(reason) = broken {
            cx.report(k, self.from.get(k).map(|(_, at)| at.clone()), reason);
        }
    }
}

impl V<'_> {
    /// The path at `name` against the base directory; an empty one is reported.
    fn path(&mut self, name: &str, raw: &Spanned<String>) -> PathBuf {
        if raw.get_ref().is_empty() {
            self.cx.report(name, Some(raw.span()), "must not be empty");
        }
        under(self.base, raw.get_ref())
    }

    /// `[service]`: where status files go, the admin API (address, token, limits), logging.
    fn service(&mut self, raw: &RawService) -> ServiceConfig {
        let status_dir = match &raw.status_dir {
            Some(s) => self.path("status_dir", s),
            None => default_status_dir(self.env).unwrap_or_else(|| {
                let why = "not set, and neither XDG_DATA_HOME nor HOME is set to derive the default \
                    ($XDG_DATA_HOME/tokenvisor/statuses or $HOME/.local/share/tokenvisor/statuses)";
                if !self.cx.broken_here(&["status_dir"]) {
                    self.cx.report("status_dir", None, why);
                }
                PathBuf::new()
            }),
        };
        let listen = |a: &String| match a.as_str() {
            "off" => Ok(AdminListen::Off),
            a => a.parse().map(AdminListen::Addr).map_err(|_| {
                format!(
                    "{a:?} is neither \"off\" nor a socket address such as \"127.0.0.1:7878\" or \
                         \"[::1]:7878\" (host names are not resolved)"
                )
            }),
        };
        let admin_listen = (raw.admin_listen.as_ref())
            .map_or(Some(AdminListen::default()), |s| {
                self.cx.check("admin_listen", s, listen)
            })
            .unwrap_or(AdminListen::Off);
        let on = admin_listen != AdminListen::Off;
        let admin_token_file = raw.admin_token_file.as_ref().map(|f| {
            let path = self.path("admin_token_file", f);
            if !f.get_ref().is_empty() && on {
                let token = self.cx.secret_file("admin_token_file", f.span(), &path);
                if let Err(why) = token.and_then(|t| admin_token_long_enough(&path, t)) {
                    self.cx.report("admin_token_file", Some(f.span()), why);
                }
            }
            path
        });
        // Needed (a problem when it cannot be derived) only when the daemon generates the
        // admin token: the admin API is on and `admin_token_file` unset.
        let state_dir = match &raw.state_dir {
            Some(s) => Some(self.path("state_dir", s)),
            None => default_state_dir(self.env).or_else(|| {
                let why = "not set, and neither XDG_STATE_HOME nor HOME is set to derive the default \
                    ($XDG_STATE_HOME/tokenvisor or $HOME/.local/state/tokenvisor); it is where the \
                    generated admin token is kept (set state_dir or admin_token_file)";
                if on && admin_token_file.is_none() {
                    self.cx.report("state_dir", None, why);
                }
                None
            }),
        };
        let (cx, d) = (&mut self.cx, AdminLimits::default());
        let header_timeout = duration(cx, "admin_header_timeout", &raw.admin_header_timeout);
        let idle_timeout = duration(cx, "admin_idle_timeout", &raw.admin_idle_timeout);
        let max_connections = count(cx, "admin_max_connections", &raw.admin_max_connections);
        let admin_limits = AdminLimits {
            header_timeout: header_timeout.unwrap_or(d.header_timeout),
            idle_timeout: idle_timeout.unwrap_or(d.idle_timeout),
            max_connections: max_connections.unwrap_or(d.max_connections),
        };
        let interval = duration(cx, "status_refresh_interval", &raw.status_refresh_interval);
        if let AdminListen::Addr(addr) = admin_listen
            && !addr.ip().is_loopback()
            && admin_token_file.is_none()
            && !cx.broken_here(&["admin_token_file"])
        {
            let why = format!(
                "{addr} is not a loopback address, so service.admin_token_file is required \
                 (the admin API can hand out access tokens)"
            );
            cx.report("admin_listen", span(&raw.admin_listen), why);
        }
        let log_level = raw.log_level.as_ref().map_or("info", |s| s.get_ref());
        cx.check("log_level", raw.log_level.as_ref(), |l| log_filter(l));
        ServiceConfig {
            status_dir,
            admin_listen,
            admin_token_file,
            state_dir,
            admin_limits,
            status_refresh_interval: interval.unwrap_or(DEFAULT_STATUS_REFRESH_INTERVAL),
            log_format: value(&raw.log_format).unwrap_or_default(),
            log_level: log_level.to_owned(),
        }
    }

    /// `[defaults]` (over the built-in policy) or a workload's policy keys (over the
    /// defaults'), each checked by its rule, then the rules tying two keys.
    fn policy(&mut self, base: &Level, raw: &RawPolicy, path: &str) -> Level {
        let cx = &mut self.cx;
        cx.path = path.to_owned();
        let mut lvl = Level {
            here: HashSet::new(),
            ..base.clone()
        };
        crate::provider::level(cx, self.base, raw, Arc::make_mut(&mut lvl.policy.provider));
        // A level setting no provider key shares its base's section: one allocation for all
        // the workloads of `[defaults]`, not one each (100,000 workloads: ≈ 22 MB).
        if lvl.policy.provider == base.policy.provider {
            lvl.policy.provider = Arc::clone(&base.policy.provider);
        }
        if let Some(i) = &raw.issuer {
            lvl.from.insert("issuer", (cx.key("issuer"), i.span()));
        }
        crate::grants::level(cx, self.base, raw, &mut lvl.grants);
        // Each key: recorded as set here (valid or not), checked, stored.
        macro_rules! resolve {
            (($lvl:ident, $cx:ident, $raw:ident) $($name:ident: $ty:ty, $check:ident => $($f:ident).+;)*) => {$(
                if let Some(at) = span(&$raw.$name) {
                    let name = stringify!($name);
                    $lvl.from.insert(name, ($cx.key(name), at));
                    $lvl.here.insert(name);
                    if let Some(v) = $check($cx, name, &$raw.$name) {
                        $lvl.policy.$($f).+ = v;
                    }
                }
            )*};
        }
        crate::schema::policy_keys!(resolve(lvl, cx, raw));
        for (keys, why) in lvl.policy.pair_rules(&|k| lvl.origin(k)) {
            lvl.pair(cx, keys, why);
        }
        lvl.here.clear();
        lvl
    }

    /// A file this workload reads or writes (`writes`), registered with the files in use:
    /// two users of one file conflict when either writes it.
    fn file(&mut self, name: &str, raw: &Spanned<String>, writes: bool) -> Option<PathBuf> {
        let base = self.base;
        let path = self.cx.check(name, raw, |p| match p.is_empty() {
            true => Err("must not be empty".to_owned()),
            false => Ok(under(base, p)),
        })?;
        let (key, line) = (self.cx.key(name), self.cx.line(raw.span().start));
        match self.seen.files.get(&path) {
            Some((other, line, other_writes)) if writes || *other_writes => {
                let why = format!(
                    "{} is also {other} (line {line}); tokenvisor writes refresh-token and token \
                     sink files, so each needs a file of its own",
                    path.display()
                );
                self.cx.report(name, Some(raw.span()), why);
            }
            Some(_) => {}
            None => drop(self.seen.files.insert(path.clone(), (key, line, writes))),
        }
        Some(path)
    }

    /// A secret file (`writes`: tokenvisor writes it), registered with the files in use, then
    /// read; its notes become warnings.
    fn secret_file(
        &mut self,
        name: &str,
        raw: &Spanned<String>,
        writes: bool,
    ) -> Option<(Secret, PathBuf)> {
        let path = self.file(name, raw, writes)?;
        let secret = self.cx.secret_file(name, raw.span(), &path);
        let secret = secret.map_err(|why| self.cx.report(name, Some(raw.span()), why));
        Some((secret.ok()?, path))
    }

    /// One `[[workload]]`'s own keys → a [`WorkloadSpec`], or `None` when anything is wrong.
    fn workload(&mut self, raw: &RawWorkload, policy: Level) -> Option<WorkloadSpec> {
        let before = self.cx.problems.len();
        let (cx, seen) = (&mut self.cx, &mut self.seen);
        let line = span(&raw.name).map(|s| (cx.key("name"), cx.line(s.start)));
        let missing = "missing: every workload needs a name ([A-Za-z0-9._-], 1–100 characters)";
        let name = cx.required("name", raw.name.as_ref(), missing, |s| {
            let n = WorkloadName::new(s).map_err(|e| e.to_string())?;
            if let Some((other, other_line)) = seen.names.get(n.as_str()) {
                let n = n.as_str();
                return Err(format!(
                    "duplicate workload name {n:?}: {other} (line {other_line}) has it too"
                ));
            }
            seen.names.extend(line.map(|l| (n.as_str().to_owned(), l)));
            Ok(n)
        });
        // `issuer` instead of `token_url`: a workload's token_url wins over [defaults]' issuer
        let mut policy = policy;
        let here = (policy.from.get("issuer")).is_some_and(|(k, _)| *k == cx.key("issuer"));
        let issuer = crate::provider::token_url_or_issuer(cx, raw, &mut policy.policy, here);
        let missing = "missing: the provider's token endpoint, e.g. \"https://idp.example.com/oauth/token\" \
             (or issuer, to discover it)";
        let token_url = issuer.or_else(|| {
            cx.required("token_url", raw.token_url.as_ref(), missing, |s| {
                token_url(s)
            })
        });
        if let Some(host) = token_url.as_ref().and_then(TokenUrl::insecure_remote_host) {
            let why = format!(
                "http:// to {host}, which is not a loopback address: tokens and secrets cross the \
                 network unencrypted (use https)"
            );
            cx.warn("token_url", span(&raw.token_url), why);
        }
        let missing = "missing: the OAuth client id";
        let client_id = cx.required("client_id", raw.client_id.as_ref(), missing, |s| text(s));
        let secret = self.client_secret(raw);
        let auth_method = value(&raw.auth_method).unwrap_or_default();
        let at = span(&raw.auth_method).or(self.cx.header.clone());
        let p = (auth_method, secret.is_some(), &*policy.policy.provider);
        crate::provider::check(&mut self.cx, p, at.as_ref());
        let grant = self.grant(raw, secret.is_some() || !auth_method.uses_secret(), &policy);
        let sink =
            (raw.token_sink_file.as_ref()).and_then(|f| self.file("token_sink_file", f, true));
        let cx = &mut self.cx;
        let scopes = match &raw.scopes {
            Some(l) => cx.each_valid("scopes", l, rules::scope_token, rules::SCOPE_TOKEN),
            None => Some(Vec::new()),
        };
        let resource = cx.check("resource", raw.resource.as_ref(), |s| resource(s));
        let audience = cx.check("audience", raw.audience.as_ref(), |s| text(s));
        let login = crate::login::resolve(cx, raw);

        // one gate per token endpoint: its workloads must agree on the limit
        let (n, key) = (
            policy.policy.endpoint_concurrency,
            cx.key("endpoint_concurrency"),
        );
        match token_url.as_ref().map(|u| (u, self.seen.endpoints.get(u))) {
            Some((_, Some((other, m)))) if *m != n && !cx.broken.contains(&key) => {
                let set = policy.from.get("endpoint_concurrency");
                let from = set.map_or("the default", |(k, _)| k.as_str());
                let here = set.filter(|(k, _)| *k == key).map(|(_, s)| s.clone());
                let at = here.or(cx.header.clone());
                let why = format!(
                    "is {n} (from {from}) but {other} uses {m} for the same token_url; the limit is \
                     shared by every workload of one token endpoint, so they must agree"
                );
                cx.problem(key, at, why);
            }
            Some((url, None)) => drop(
                self.seen
                    .endpoints
                    .insert(url.clone(), (cx.path.clone(), n)),
            ),
            Some((_, Some(_))) | None => {}
        }

        if cx.problems.len() > before {
            return None;
        }
        let (client_secret, client_secret_origin) = secret.unzip();
        Some(WorkloadSpec {
            name: name?,
            token_url: token_url?,
            client_id: client_id?,
            client_secret,
            client_secret_origin,
            auth_method,
            grant: grant?,
            scopes: Arc::from(scopes?),
            resource,
            audience,
            token_sink_file: sink,
            policy: policy.policy,
            login,
        })
    }

    /// At most one of `keys` (with the span where each is set, if it is) may be set; the
    /// second one in the file is reported. False when more than one is.
    fn at_most_one(&mut self, keys: &[(&str, Span)]) -> bool {
        let list = keys.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ");
        let list = (list.rsplit_once(", ")).map_or(list.clone(), |(a, b)| format!("{a} and {b}"));
        let mut given: Vec<_> = keys
            .iter()
            .filter_map(|(k, at)| Some((*k, at.clone()?)))
            .collect();
        given.sort_by_key(|(_, at)| at.start);
        let [(first, _), (k, at), ..] = given.as_slice() else {
            return true;
        };
        let why = format!("set only one of {list} (this workload also sets {first})");
        self.cx.report(k, Some(at.clone()), why);
        false
    }

    /// The client secret, from one of three sources.
    fn client_secret(&mut self, raw: &RawWorkload) -> Option<(Secret, Origin)> {
        let sources = [
            ("client_secret", span(&raw.client_secret)),
            ("client_secret_file", span(&raw.client_secret_file)),
            ("client_secret_env", span(&raw.client_secret_env)),
        ];
        if !self.at_most_one(&sources) {
            return None;
        }
        if let Some(s) = &raw.client_secret {
            return Some((self.cx.check("client_secret", s, inline)?, Origin::Inline));
        }
        if let Some(f) = &raw.client_secret_file {
            let (secret, path) = self.secret_file("client_secret_file", f, false)?;
            return Some((secret, Origin::File(path)));
        }
        let env = self.env;
        let var = raw.client_secret_env.as_ref()?;
        self.cx.check("client_secret_env", var, |var| {
            if var.is_empty() || var.contains(['=', '\0']) {
                return Err(format!("{var:?} is not an environment variable name"));
            }
            read_secret_env(var, env).map(|s| (s, Origin::Env(var.clone())))
        })
    }

    /// The grant, and the refresh token (read whatever the grant, so that a missing file is
    /// reported).
    fn grant(&mut self, raw: &RawWorkload, has_secret: bool, lvl: &Level) -> Option<GrantSpec> {
        let refresh = [
            ("refresh_token_file", span(&raw.refresh_token_file)),
            ("refresh_token", span(&raw.refresh_token)),
        ];
        let both = !self.at_most_one(&refresh);
        let token = match (&raw.refresh_token_file, &raw.refresh_token) {
            (Some(_), Some(_)) | (None, None) => None,
            (Some(f), None) if self.login => {
                (self.file("refresh_token_file", f, true)).map(|p| (Secret::from(""), Some(p)))
            }
            (Some(f), None) => self
                .secret_file("refresh_token_file", f, true)
                .map(|(s, p)| (s, Some(p))),
            (None, Some(t)) => self.cx.check("refresh_token", t, inline).map(|s| (s, None)),
        };
        let cx = &mut self.cx;
        let missing = "missing: set grant = \"refresh_token\", \"client_credentials\", \
                       \"jwt_bearer\" or \"token_exchange\"";
        let secrets = ["client_secret", "client_secret_file", "client_secret_env"];
        let grant = cx.required("grant", raw.grant.as_ref(), missing, |g| Ok(*g))?;
        let presented = crate::grants::resolve(cx, grant, &lvl.grants, span(&raw.grant).as_ref());
        let (name, mut ok) = (<&str>::from(grant), true);
        let verb = match grant {
            RawGrant::RefreshToken => None,
            RawGrant::ClientCredentials => Some("takes"),
            // No refresh token, and client authentication is optional (RFC 7523 §2.1 and
            // RFC 8693 §2.1 allow a public client).
            RawGrant::JwtBearer | RawGrant::TokenExchange => Some("keeps"),
        };
        let set = refresh
            .into_iter()
            .filter_map(|(k, at)| Some((k, at?, verb?)));
        for (k, at, verb) in set {
            ok = false;
            let why = format!(
                "grant = \"{name}\" {verb} no refresh token; remove {k} or set grant = \
                 \"refresh_token\""
            );
            if !cx.broken_here(&[k]) {
                cx.report(k, Some(at), why);
            }
        }
        match (grant, token) {
            (RawGrant::RefreshToken, Some((token, file))) => {
                Some(GrantSpec::RefreshToken { token, file })
            }
            (RawGrant::RefreshToken, None) => {
                if !both && !cx.broken_here(&["refresh_token_file", "refresh_token"]) {
                    let why = "missing: grant = \"refresh_token\" needs refresh_token_file (or an \
                               inline refresh_token)";
                    cx.report("refresh_token_file", cx.header.clone(), why);
                }
                None
            }
            (RawGrant::ClientCredentials, _) => {
                if !has_secret && !cx.broken_here(&secrets) {
                    ok = false;
                    let why = "grant = \"client_credentials\" needs a client secret (client_secret, \
                               client_secret_file or client_secret_env): public clients cannot use it";
                    cx.report("grant", span(&raw.grant), why);
                }
                ok.then_some(GrantSpec::ClientCredentials)
            }
            (RawGrant::JwtBearer | RawGrant::TokenExchange, _) => {
                presented.flatten().filter(|_| ok)
            }
        }
    }
}

/// An inline secret, which must not be empty.
fn inline(RawSecret::Text(s): &RawSecret) -> Result<Secret, String> {
    (!s.is_empty())
        .then(|| s.clone())
        .ok_or_else(|| "is empty".to_owned())
}

/// The log levels a `log_level` filter may name (case-insensitive, as `tracing` reads them).
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// `[service] log_level`: comma-separated directives, each a level or `TARGET=LEVEL`. A bare
/// word that is not a level would be read by the logger as a target enabled at `trace`,
/// every other line silenced, so it is refused, with a "did you mean" near a level.
fn log_filter(filter: &str) -> Result<(), String> {
    const EXAMPLE: &str = "e.g. \"info\" or \"info,tokenvisor=debug\"";
    if filter.trim().is_empty() {
        return Err(format!("must not be empty ({EXAMPLE})"));
    }
    for directive in filter.split(',').map(str::trim) {
        let (target, level) = match directive.rsplit_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, directive),
        };
        if directive.is_empty() || target.is_some_and(str::is_empty) {
            return Err(format!(
                "{filter:?} has an empty directive; write comma-separated levels or TARGET=LEVEL ({EXAMPLE})"
            ));
        }
        let lower = level.to_ascii_lowercase();
        if LOG_LEVELS.contains(&lower.as_str()) {
            continue;
        }
        let prefix = |l: &str| lower.len() > 2 && (lower.starts_with(l) || l.starts_with(&lower));
        let near = LOG_LEVELS
            .iter()
            .map(|l| (strsim::levenshtein(&lower, l), *l));
        let near = near
            .filter(|&(d, l)| d <= 2 || prefix(l))
            .min_by_key(|&(d, _)| d);
        let hint = near
            .map(|(_, l)| format!("; did you mean `{l}`?"))
            .unwrap_or_default();
        let levels = LOG_LEVELS.join(", ");
        return Err(match target {
            Some(t) => format!("{level:?} (for {t}) is not a log level{hint} (one of {levels})"),
            None => format!(
                "{level:?} is not a log level{hint}; a level is one of {levels}, and a target is \
                 written TARGET=LEVEL ({EXAMPLE})"
            ),
        });
    }
    Ok(())
}
