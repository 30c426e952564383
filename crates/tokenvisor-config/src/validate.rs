//! The validation pass: raw sections ([`crate::read`]) → a [`Config`], or every problem.
//!
//! `[service]` first (its `log_level` is checked as a filter: each directive a level or
//! `TARGET=LEVEL`, [`log_filter`]); then `[defaults]` over the built-in policy, and each `[[workload]]`'s
//! policy keys over the defaults (a workload's value replaces the default, lists too; each
//! key remembers where it was set, so that a rule tying two keys together names both
//! origins); then a workload's own keys and the checks across workloads (names, files that
//! tokenvisor writes, one endpoint concurrency per token URL). Everything reports into one
//! collector, so a file with several problems gets all of them, in file order.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use humantime::format_duration as human;
use tokenvisor_core::{Secret, TokenUrl, WorkloadName};
use toml::Spanned;

use crate::problems::{Cx, count, duration};
use crate::read::RawFile;
use crate::schema::{Count, HumanDuration, List, Number, RawGrant, RawPolicy, RawSecret};
use crate::schema::{RawService, RawWorkload};
use crate::secrets::{admin_token_long_enough, read_secret_env};
use crate::spec::{
    AdminListen, GrantSpec, SecretOrigin, ServiceConfig, WorkloadPolicy, WorkloadSpec,
};
use crate::{Config, ConfigError, MAX_ADMIN_MAX_CONNECTIONS as MAX_CONNS, MAX_DURATION};
use crate::{MAX_ENDPOINT_CONCURRENCY, default_state_dir, default_status_dir, duration_limit};

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads and validates `text` (named `source`; relative paths resolve against `base`).
pub(crate) fn parse_in(
    text: &str,
    source: &Path,
    base: &Path,
    env: Env<'_>,
) -> Result<Config, ConfigError> {
    let mut v = V {
        cx: Cx::new(text),
        base,
        env,
        seen: Seen::default(),
    };
    let Some(raw) = crate::read::read(&mut v.cx, text) else {
        return Err(v.cx.into_error(source));
    };
    let RawFile {
        service,
        defaults,
        workloads: raw_workloads,
        cluster,
    } = raw;
    v.cx.path = "service".to_owned();
    let service = v.service(service);
    let defaults = v.policy(&Level::default(), defaults, "defaults");
    let mut workloads = Vec::new();
    for (path, header, raw_policy, raw) in raw_workloads {
        let policy = v.policy(&defaults, raw_policy, &path);
        v.cx.header = Some(header);
        workloads.extend(v.workload(&raw, policy));
    }
    let cluster = cluster
        .and_then(|(h, raw)| crate::cluster::resolve(&mut v.cx, &raw, Some(h), base, &workloads));
    if !v.cx.problems.is_empty() {
        return Err(v.cx.into_error(source));
    }
    let mut warnings = v.cx.warnings;
    warnings.sort_by_key(|p| p.line);
    let defaults = defaults.policy;
    Ok(Config {
        source: source.to_path_buf(),
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
}

/// What the workloads seen so far use, for the checks across workloads.
#[derive(Default)]
struct Seen {
    names: HashMap<String, (String, usize)>,
    /// Files, by normalised path: the key that uses it, its line, and whether it is written.
    files: HashMap<PathBuf, (String, usize, bool)>,
    /// Token endpoint → the workload that first used it and its endpoint concurrency.
    endpoints: HashMap<TokenUrl, (String, usize)>,
}

/// A resolved policy and, per key, the dotted key and span it was set at (absent: built in).
#[derive(Debug, Clone, Default)]
struct Level {
    policy: WorkloadPolicy,
    from: BTreeMap<&'static str, (String, Range<usize>)>,
    /// Spans of the keys set at this level (empty once resolved).
    here: HashMap<&'static str, Range<usize>>,
}

impl Level {
    /// Where a value not set at this level came from: `", from KEY"` or `", the default"`
    /// (empty when set here).
    fn origin(&self, name: &'static str) -> String {
        match (self.here.contains_key(name), self.from.get(name)) {
            (true, _) => String::new(),
            (false, Some((from, _))) => format!(", from {from}"),
            (false, None) => ", the default".to_owned(),
        }
    }

    /// A rule that ties `a` and `b` together: checked where at least one of them is set here,
    /// and only when neither was already reported. `broken` gets where each value came from
    /// ([`Self::origin`]) and says what is wrong, if anything; the problem is blamed on `b` if
    /// it is set here, else on `a`.
    fn pair(
        &self,
        cx: &mut Cx,
        [a, b]: [&'static str; 2],
        broken: impl FnOnce(String, String) -> Option<String>,
    ) {
        let set_here = self.here.contains_key(a) || self.here.contains_key(b);
        let clean = [a, b]
            .iter()
            .all(|k| self.from.get(k).is_none_or(|(from, _)| !cx.is_broken(from)));
        if let Some(reason) = (set_here && clean)
            .then(|| broken(self.origin(a), self.origin(b)))
            .flatten()
        {
            let k = if self.here.contains_key(b) { b } else { a };
            cx.report(k, self.here.get(k).cloned(), reason);
        }
    }
}

impl V<'_> {
    /// The path at `name` against the base directory; an empty one is reported.
    fn path(&mut self, name: &str, raw: &Spanned<String>) -> PathBuf {
        if raw.get_ref().is_empty() {
            self.cx.report(name, Some(raw.span()), "must not be empty");
        }
        resolve(self.base, raw.get_ref())
    }

    /// `[service]`: where status files go, the admin API (address, token, limits), logging.
    fn service(&mut self, raw: RawService) -> ServiceConfig {
        let (cx, env) = (&mut self.cx, self.env);
        let status_dir = match &raw.status_dir {
            Some(s) => self.path("status_dir", s),
            None if cx.broken_here(&["status_dir"]) => PathBuf::new(),
            None => default_status_dir(env).unwrap_or_else(|| {
                let why = "not set, and neither XDG_DATA_HOME nor HOME is set to derive the default \
                    ($XDG_DATA_HOME/tokenvisor/statuses or $HOME/.local/share/tokenvisor/statuses)";
                cx.report("status_dir", None, why);
                PathBuf::new()
            }),
        };
        let admin_listen = match &raw.admin_listen {
            None => AdminListen::default(),
            Some(s) if s.get_ref() == "off" => AdminListen::Off,
            Some(s) => (self.cx.check("admin_listen", s, |a| {
                let why = "is neither \"off\" nor a socket address such as \"127.0.0.1:7878\" or \
                    \"[::1]:7878\" (host names are not resolved)";
                a.parse()
                    .map(AdminListen::Addr)
                    .map_err(|_| format!("{a:?} {why}"))
            }))
            .unwrap_or(AdminListen::Off),
        };
        let on = admin_listen != AdminListen::Off;
        let admin_token_file = raw.admin_token_file.as_ref().map(|f| {
            let path = self.path("admin_token_file", f);
            let secret = |cx: &mut Cx| cx.secret_file("admin_token_file", f.span(), &path);
            if !f.get_ref().is_empty()
                && on
                && let Err(why) =
                    secret(&mut self.cx).and_then(|t| admin_token_long_enough(&path, t))
            {
                self.cx.report("admin_token_file", Some(f.span()), why);
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
        let cx = &mut self.cx;
        let mut limits = crate::AdminLimits::default();
        let wait = (
            Duration::from_secs(3600),
            "the admin API waits no longer for a client",
        );
        let timeouts = [
            (
                "admin_header_timeout",
                &raw.admin_header_timeout,
                &mut limits.header_timeout,
            ),
            (
                "admin_idle_timeout",
                &raw.admin_idle_timeout,
                &mut limits.idle_timeout,
            ),
        ];
        for (name, value, slot) in timeouts {
            if let Some(d) = value
                .as_ref()
                .and_then(|v| cx.check(name, v, |d| duration(d, true, wait)))
            {
                *slot = d;
            }
        }
        if let Some(v) = &raw.admin_max_connections {
            let rule = format!("must be between 1 and {MAX_CONNS}");
            let n = cx.check("admin_max_connections", v, |n| count(n, MAX_CONNS, &rule));
            limits.max_connections = n.unwrap_or(limits.max_connections);
        }
        let status_refresh_interval = raw
            .status_refresh_interval
            .as_ref()
            .and_then(|v| {
                let most = (
                    Duration::from_secs(3600),
                    "a status file may show timestamps at most an hour old",
                );
                cx.check("status_refresh_interval", v, |d| duration(d, false, most))
            })
            .unwrap_or(crate::spec::DEFAULT_STATUS_REFRESH_INTERVAL);
        if let AdminListen::Addr(addr) = admin_listen
            && !addr.ip().is_loopback()
            && admin_token_file.is_none()
            && !cx.broken_here(&["admin_token_file"])
        {
            let why = format!(
                "{addr} is not a loopback address, so service.admin_token_file is required \
                 (the admin API can hand out access tokens)"
            );
            cx.report(
                "admin_listen",
                raw.admin_listen.as_ref().map(Spanned::span),
                why,
            );
        }
        let log_level = match raw.log_level {
            Some(s) => {
                cx.check("log_level", &s, |l| log_filter(l));
                s.into_inner()
            }
            None => "info".to_owned(),
        };
        let log_format = raw.log_format.map(Spanned::into_inner).unwrap_or_default();
        let (admin_limits, listen) = (limits, admin_listen);
        ServiceConfig {
            status_dir,
            admin_listen: listen,
            admin_token_file,
            state_dir,
            admin_limits,
            status_refresh_interval,
            log_format,
            log_level,
        }
    }

    /// `[defaults]` (over the built-in policy) or a workload's policy keys (over the
    /// defaults'): timeouts, the refresh schedule, backoff, give-up, `Retry-After` ceiling,
    /// endpoint concurrency, extra error codes.
    fn policy(&mut self, base: &Level, raw: RawPolicy, path: &str) -> Level {
        let cx = &mut self.cx;
        cx.path = path.to_owned();
        let mut lvl = Level {
            here: HashMap::new(),
            ..base.clone()
        };
        // Each key: recorded as set here (valid or not), checked, stored.
        macro_rules! keys {
            ($($name:ident => $($field:ident).+ : $check:ident($($arg:expr),*);)*) => {$(
                if let Some(raw) = raw.$name {
                    let name = stringify!($name);
                    lvl.from.insert(name, (cx.key(name), raw.span()));
                    lvl.here.insert(name, raw.span());
                    if let Some(v) = $check(cx, name, &raw, $($arg),*) {
                        lvl.policy.$($field).+ = v;
                    }
                }
            )*};
        }
        keys! {
            request_timeout => request_timeout: dur(true);
            connect_timeout => connect_timeout: dur(true);
            refresh_at => schedule.refresh_at: num(|x| x > 0.0 && x <= 1.0,
                "it must be above 0 and at most 1 (a fraction of the token's lifetime)");
            refresh_jitter => schedule.refresh_jitter: num(|x| (0.0..1.0).contains(&x),
                "it must be at least 0 and below refresh_at");
            default_lifetime => default_lifetime: dur(true);
            backoff_initial => backoff.initial: dur(true);
            backoff_max => backoff.max: dur(true);
            backoff_multiplier => backoff.multiplier: num(|x| x >= 1.0, "it must be at least 1");
            give_up_after => give_up_after: dur(false);
            max_retry_after => max_retry_after: dur(false);
            endpoint_concurrency => endpoint_concurrency: concurrency();
            transient_codes => transient_codes: codes();
            permanent_codes => permanent_codes: codes();
        }
        let (s, b, p) = (lvl.policy.schedule, lvl.policy.backoff, &lvl.policy);
        lvl.pair(cx, ["refresh_at", "refresh_jitter"], |at, jitter| {
            let (j, a) = (s.refresh_jitter, s.refresh_at);
            (j >= a)
                .then(|| format!("refresh_jitter ({j}{jitter}) must be below refresh_at ({a}{at})"))
        });
        lvl.pair(cx, ["backoff_initial", "backoff_max"], |initial, max| {
            let (m, i) = (human(b.max), human(b.initial));
            let why =
                format!("backoff_max ({m}{max}) must be at least backoff_initial ({i}{initial})");
            (b.max < b.initial).then_some(why)
        });
        lvl.pair(cx, ["transient_codes", "permanent_codes"], |t, perm| {
            let both: Vec<&String> = p
                .permanent_codes
                .iter()
                .filter(|c| p.transient_codes.contains(c))
                .collect();
            let paren = |o: String| {
                o.strip_prefix(", ")
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default()
            };
            let (t, perm) = (paren(t), paren(perm));
            let why = "a code can only be one or the other";
            (!both.is_empty()).then(|| {
                format!("{both:?} in both transient_codes{t} and permanent_codes{perm}; {why}")
            })
        });
        lvl.here.clear();
        lvl
    }

    /// A file this workload reads or writes (`writes`), registered with the files in use:
    /// two users of one file conflict when either writes it.
    fn file(&mut self, name: &str, raw: &Spanned<String>, writes: bool) -> Option<PathBuf> {
        let base = self.base;
        let path = self.cx.check(name, raw, |p| match p.is_empty() {
            true => Err("must not be empty".to_owned()),
            false => Ok(resolve(base, p)),
        })?;
        let (norm, key, line): (PathBuf, _, _) = (
            path.components().collect(),
            self.cx.key(name),
            self.cx.line(raw.span().start),
        );
        match self.seen.files.get(&norm) {
            Some((other, line, other_writes)) if writes || *other_writes => {
                let why = format!(
                    "{} is also {other} (line {line}); tokenvisor writes refresh-token and token \
                     sink files, so each needs a file of its own",
                    path.display()
                );
                self.cx.report(name, Some(raw.span()), why);
            }
            Some(_) => {}
            None => drop(self.seen.files.insert(norm, (key, line, writes))),
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
        secret
            .map_err(|why| self.cx.report(name, Some(raw.span()), why))
            .ok()
            .map(|s| (s, path))
    }

    /// One `[[workload]]`'s own keys → a [`WorkloadSpec`]: name, token URL, client, the client
    /// secret (one source of three), the grant and its refresh token, token sink, scopes,
    /// `resource`, `audience`; `None` when anything is wrong with it.
    fn workload(&mut self, raw: &RawWorkload, policy: Level) -> Option<WorkloadSpec> {
        let before = self.cx.problems.len();
        let line = raw
            .name
            .as_ref()
            .map(|s| (self.cx.key("name"), self.cx.line(s.span().start)));
        let (cx, seen) = (&mut self.cx, &mut self.seen);
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
        let missing =
            "missing: the provider's token endpoint, e.g. \"https://idp.example.com/oauth/token\"";
        let token_url = cx.required("token_url", raw.token_url.as_ref(), missing, |s| {
            token_url(s)
        });
        if let (Some(url), Some(u)) = (&token_url, &raw.token_url)
            && let Some(host) = url.insecure_remote_host()
        {
            let why = format!(
                "http:// to {host}, which is not a loopback address: tokens and secrets cross the \
                 network unencrypted (use https)"
            );
            cx.warn("token_url", Some(u.span()), why);
        }
        let missing = "missing: the OAuth client id";
        let client_id = cx.required("client_id", raw.client_id.as_ref(), missing, |s| text(s));
        let secret = self.client_secret(raw);
        let auth_method = raw
            .auth_method
            .as_ref()
            .map(|m| *m.get_ref())
            .unwrap_or_default();
        let grant = self.grant(raw, secret.is_some());
        let token_sink_file = raw
            .token_sink_file
            .as_ref()
            .and_then(|f| self.file("token_sink_file", f, true));
        let cx = &mut self.cx;
        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        let scope = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        };
        let what = "a scope token (one scope per string: printable ASCII, no spaces, '\"' or '\\')";
        let scopes = raw.scopes.as_ref().map_or(Some(Vec::new()), |l| {
            cx.each_valid("scopes", l, scope, what)
        });
        let resource = raw.resource.as_ref().and_then(|r| {
            cx.check("resource", r, |s| match url::Url::parse(s) {
                Ok(u) if u.fragment().is_none() && s.trim() == s => Ok(Arc::from(s.as_str())),
                Ok(_) | Err(_) => Err("must be an absolute URI without a fragment (RFC 8707), \
                     e.g. \"https://mcp.example.com\""
                    .to_owned()),
            })
        });
        let audience = raw
            .audience
            .as_ref()
            .and_then(|a| cx.check("audience", a, |s| text(s)));

        // one gate per token endpoint: its workloads must agree on the limit
        let (n, key) = (
            policy.policy.endpoint_concurrency,
            cx.key("endpoint_concurrency"),
        );
        match token_url
            .as_ref()
            .map(|url| (url, self.seen.endpoints.get(url)))
        {
            Some((_, Some((other, m)))) if *m != n && !cx.is_broken(&key) => {
                let set = policy.from.get("endpoint_concurrency");
                let from = set.map_or("the default", |(k, _)| k.as_str());
                let span = set
                    .filter(|(k, _)| *k == key)
                    .map_or(cx.header.clone(), |(_, s)| Some(s.clone()));
                let why = format!(
                    "is {n} (from {from}) but {other} uses {m} for the same token_url; the limit is \
                     shared by every workload of one token endpoint, so they must agree"
                );
                cx.problem(key, span, why);
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
        let (name, token_url, client_id, grant, scopes) =
            (name?, token_url?, client_id?, grant?, Arc::from(scopes?));
        let (resource, audience, policy) = (resource, audience, policy.policy);
        Some(WorkloadSpec {
            name,
            token_url,
            client_id,
            client_secret,
            client_secret_origin,
            auth_method,
            grant,
            scopes,
            resource,
            audience,
            token_sink_file,
            policy,
        })
    }

    /// At most one of `keys` (with the span where each is set, if it is) may be set; the
    /// second one in the file is reported. False when more than one is.
    fn at_most_one(&mut self, keys: &[(&str, Option<Range<usize>>)], list: &str) -> bool {
        let mut given: Vec<_> = keys
            .iter()
            .filter_map(|(k, span)| Some((*k, span.clone()?)))
            .collect();
        given.sort_by_key(|(_, span)| span.start);
        let [(first, _), (k, span), ..] = given.as_slice() else {
            return true;
        };
        let why = format!("set only one of {list} (this workload also sets {first})");
        self.cx.report(k, Some(span.clone()), why);
        false
    }

    fn client_secret(&mut self, raw: &RawWorkload) -> Option<(Secret, SecretOrigin)> {
        let sources = [
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
        ];
        if !self.at_most_one(
            &sources,
            "client_secret, client_secret_file and client_secret_env",
        ) {
            return None;
        }
        if let Some(s) = &raw.client_secret {
            return Some((
                self.cx.check("client_secret", s, inline)?,
                SecretOrigin::Inline,
            ));
        }
        if let Some(f) = &raw.client_secret_file {
            let (secret, path) = self.secret_file("client_secret_file", f, false)?;
            return Some((secret, SecretOrigin::File(path)));
        }
        let env = self.env;
        self.cx.check(
            "client_secret_env",
            raw.client_secret_env.as_ref()?,
            |var| {
                if var.is_empty() || var.contains(['=', '\0']) {
                    return Err(format!("{var:?} is not an environment variable name"));
                }
                read_secret_env(var, env).map(|s| (s, SecretOrigin::Env(var.clone())))
            },
        )
    }

    fn grant(&mut self, raw: &RawWorkload, has_secret: bool) -> Option<GrantSpec> {
        // The refresh token, read whatever the grant, so that a missing file is reported.
        let refresh = [
            (
                "refresh_token_file",
                raw.refresh_token_file.as_ref().map(Spanned::span),
            ),
            (
                "refresh_token",
                raw.refresh_token.as_ref().map(Spanned::span),
            ),
        ];
        let both = !self.at_most_one(&refresh, "refresh_token_file and refresh_token");
        let token = match (&raw.refresh_token_file, &raw.refresh_token) {
            (Some(_), Some(_)) | (None, None) => None,
            (Some(f), None) => self
                .secret_file("refresh_token_file", f, true)
                .map(|(s, p)| (s, Some(p))),
            (None, Some(t)) => self.cx.check("refresh_token", t, inline).map(|s| (s, None)),
        };
        let cx = &mut self.cx;
        let missing = "missing: set grant = \"refresh_token\" or grant = \"client_credentials\"";
        match (
            cx.required("grant", raw.grant.as_ref(), missing, |g| Ok(*g))?,
            token,
        ) {
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
                let mut ok = true;
                for (k, span) in refresh.into_iter().filter_map(|(k, s)| Some((k, s?))) {
                    ok = false;
                    if !cx.broken_here(&[k]) {
                        let why = format!(
                            "grant = \"client_credentials\" takes no refresh token; remove {k} or \
                             set grant = \"refresh_token\""
                        );
                        cx.report(k, Some(span), why);
                    }
                }
                if !has_secret
                    && !cx.broken_here(&[
                        "client_secret",
                        "client_secret_file",
                        "client_secret_env",
                    ])
                {
                    ok = false;
                    let why = "grant = \"client_credentials\" needs a client secret (client_secret, \
                               client_secret_file or client_secret_env): public clients cannot use it";
                    cx.report("grant", raw.grant.as_ref().map(Spanned::span), why);
                }
                ok.then_some(GrantSpec::ClientCredentials)
            }
        }
    }
}

/// A duration key of the policy, within its ceiling ([`duration_limit`]).
fn dur(cx: &mut Cx, name: &str, raw: &Spanned<HumanDuration>, positive: bool) -> Option<Duration> {
    let limit = duration_limit(name).unwrap_or((MAX_DURATION, "longer is a typo"));
    cx.check(name, raw, |d| duration(d, positive, limit))
}

/// A number key of the policy: finite and `ok`, else "is X; `rule`".
fn num(
    cx: &mut Cx,
    name: &str,
    raw: &Spanned<Number>,
    ok: fn(f64) -> bool,
    rule: &str,
) -> Option<f64> {
    cx.check(name, raw, |&Number::Float(x)| {
        (x.is_finite() && ok(x))
            .then_some(x)
            .ok_or(format!("is {x}; {rule}"))
    })
}

fn concurrency(cx: &mut Cx, name: &str, raw: &Spanned<Count>) -> Option<usize> {
    let rule = format!("it must be at least 1 and at most {MAX_ENDPOINT_CONCURRENCY}");
    cx.check(name, raw, |n| count(n, MAX_ENDPOINT_CONCURRENCY, &rule))
}

/// Extra error codes. RFC 6749 §5.2: error = 1*( %x20-21 / %x23-5B / %x5D-7E )
fn codes(cx: &mut Cx, name: &str, raw: &List) -> Option<Vec<String>> {
    let code = |c: &str| {
        !c.is_empty()
            && c.trim() == c
            && c.bytes()
                .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
    };
    let what = "an RFC 6749 error code (printable ASCII without '\"' or '\\', not empty, no leading \
                or trailing space)";
    cx.each_valid(name, raw, code, what)
}

/// `path` against `base` (unless absolute), without `.` components.
fn resolve(base: &Path, path: &str) -> PathBuf {
    base.join(path).components().collect()
}

/// A non-empty string without control characters.
fn text(s: &str) -> Result<Arc<str>, String> {
    match s {
        s if s.trim().is_empty() => Err("must not be empty".to_owned()),
        s if s.chars().any(char::is_control) => {
            Err("must not contain control characters".to_owned())
        }
        s => Ok(Arc::from(s)),
    }
}

/// An inline secret, which must not be empty.
fn inline(RawSecret::Text(s): &RawSecret) -> Result<Secret, String> {
    match s.is_empty() {
        true => Err("is empty".to_owned()),
        false => Ok(s.clone()),
    }
}

/// A token URL ([`TokenUrl::parse`]) without credentials or a fragment. The value is not
/// echoed (it might carry credentials).
fn token_url(s: &str) -> Result<TokenUrl, String> {
    let url = TokenUrl::parse(s).map_err(|e| e.to_string())?;
    let (u, why) = (url.as_url(), "use client_id and a client secret");
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "must not contain credentials (user:password@); {why}"
        ));
    }
    match u.fragment() {
        Some(_) => Err("must not contain a fragment (#…) (RFC 6749 §3.2)".to_owned()),
        None => Ok(url),
    }
}

/// The log levels a `log_level` filter may name (case-insensitive, as `tracing` reads them).
pub(crate) const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// `[service] log_level`: comma-separated directives, each a level (`info`) or
/// `TARGET=LEVEL` (`tokenvisor=debug`, also with a span filter such as
/// `tokenvisor[refresh]=trace`). A bare word that is not a level would be read by the
/// logger as a target enabled at `trace` and every other line silenced (`"verbose"` logs
/// nothing at all), so it is refused, with a "did you mean" when it is close to a level.
pub(crate) fn log_filter(filter: &str) -> Result<(), String> {
    const EXAMPLE: &str = "e.g. \"info\" or \"info,tokenvisor=debug\"";
    let levels = LOG_LEVELS.join(", ");
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
                "{filter:?} has an empty directive; write comma-separated levels or \
                 TARGET=LEVEL ({EXAMPLE})"
            ));
        }
        if LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            continue;
        }
        let lower = level.to_ascii_lowercase();
        let hint = (LOG_LEVELS.iter())
            .map(|l| (strsim::levenshtein(&lower, l), *l))
            .filter(|&(d, l)| {
                d <= 2 || (lower.len() > 2 && (lower.starts_with(l) || l.starts_with(&lower)))
            })
            .min_by_key(|&(d, _)| d)
            .map(|(_, l)| format!("; did you mean `{l}`?"))
            .unwrap_or_default();
        return Err(match target {
            Some(t) => format!("{level:?} (for {t}) is not a log level{hint} (one of {levels})"),
            None => format!(
                "{level:?} is not a log level{hint}; a level is one of {levels}, and a target \
                 is written TARGET=LEVEL ({EXAMPLE})"
            ),
        });
    }
    Ok(())
}
