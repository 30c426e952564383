//! The validation pass: raw sections ([`crate::read`]) → a [`Config`], or every problem.
//!
//! `[service]` first; then `[defaults]` over the built-in policy, and each `[[workload]]`'s
//! policy keys over the defaults (a workload's value replaces the default, lists too; each
//! key remembers where it was set, so that a rule tying two keys together names both
//! origins); then a workload's own keys and the checks across workloads (names, files that
//! tokenvisor writes, one endpoint concurrency per token URL). Everything reports into one
//! collector, so a file with several problems gets all of them, in file order.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenvisor_core::{Secret, TokenUrl, WorkloadName};
use toml::Spanned;

use crate::problems::{Cx, count, duration};
use crate::read::{RawFile, join_key};
use crate::schema::{Number, RawGrant, RawPolicy, RawSecret, RawService, RawWorkload};
use crate::secrets::{admin_token_long_enough, read_secret_env};
use crate::spec::{
    AdminLimits, AdminListen, GrantSpec, SecretOrigin, ServiceConfig, WorkloadPolicy, WorkloadSpec,
};
use crate::{
    Config, ConfigError, MAX_ADMIN_MAX_CONNECTIONS, MAX_DURATION, MAX_ENDPOINT_CONCURRENCY,
};
use crate::{default_state_dir, default_status_dir, duration_limit};

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads and validates `text` (named `source`; relative paths resolve against `base`).
pub(crate) fn parse_in(
    text: &str,
    source: &Path,
    base: &Path,
    env: Env<'_>,
) -> Result<Config, ConfigError> {
    let mut cx = Cx::new(text);
    let Some(RawFile {
        service,
        defaults,
        workloads: raw_workloads,
    }) = crate::read::read(&mut cx, text)
    else {
        return Err(cx.into_error(source));
    };
    let service = resolve_service(&mut cx, service, base, env);
    let defaults = resolve_policy(&mut cx, &Level::default(), defaults, "defaults");
    let mut seen = Seen::default();
    let mut workloads = Vec::new();
    for (path, header, raw_policy, raw) in raw_workloads {
        let policy = resolve_policy(&mut cx, &defaults, raw_policy, &path);
        let w = Workload {
            path: &path,
            header,
            base,
            env,
        };
        workloads.extend(w.resolve(&mut cx, &raw, policy, &mut seen));
    }
    if !cx.problems.is_empty() {
        return Err(cx.into_error(source));
    }
    let mut warnings = cx.warnings;
    warnings.sort_by_key(|p| p.line);
    Ok(Config {
        source: source.to_path_buf(),
        service,
        defaults: defaults.policy,
        workloads,
        warnings,
    })
}

/// `path` against `base` (unless absolute), without `.` components.
fn resolve_path(base: &Path, path: &str) -> PathBuf {
    base.join(path).components().collect()
}

/// `raw` (the path at `key`) against `base`; an empty one is reported.
fn nonempty_path(cx: &mut Cx, key: &str, raw: &Spanned<String>, base: &Path) -> PathBuf {
    if raw.get_ref().is_empty() {
        cx.problem(key.into(), Some(raw.span()), "must not be empty");
    }
    resolve_path(base, raw.get_ref())
}

/// `[service]`: where status files go, the admin API (address, token, limits), logging.
fn resolve_service(cx: &mut Cx, raw: RawService, base: &Path, env: Env<'_>) -> ServiceConfig {
    let status_dir = match &raw.status_dir {
        Some(s) => nonempty_path(cx, "service.status_dir", s, base),
        None if cx.is_broken("service.status_dir") => PathBuf::new(),
        None => default_status_dir(env).unwrap_or_else(|| {
            let why = "not set, and neither XDG_DATA_HOME nor HOME is set to derive the default \
                ($XDG_DATA_HOME/tokenvisor/statuses or $HOME/.local/share/tokenvisor/statuses)";
            cx.problem("service.status_dir".into(), None, why);
            PathBuf::new()
        }),
    };

    let admin_listen = match &raw.admin_listen {
        None => AdminListen::default(),
        Some(s) if s.get_ref() == "off" => AdminListen::Off,
        Some(s) => (cx.check("service.admin_listen".into(), s, |a| {
            a.parse().map(AdminListen::Addr).map_err(|_| {
                format!(
                    "{a:?} is neither \"off\" nor a socket address such as \"127.0.0.1:7878\" \
                     or \"[::1]:7878\" (host names are not resolved)"
                )
            })
        }))
        .unwrap_or(AdminListen::Off),
    };

    let admin_token_file = raw.admin_token_file.as_ref().map(|f| {
        let (key, path) = (
            "service.admin_token_file",
            nonempty_path(cx, "service.admin_token_file", f, base),
        );
        if !f.get_ref().is_empty()
            && admin_listen != AdminListen::Off
            && let Err(reason) = cx
                .secret_file(key, f.span(), &path)
                .and_then(|t| admin_token_long_enough(&path, t))
        {
            cx.problem(key.into(), Some(f.span()), reason);
        }
        path
    });

    // Needed (a problem when it cannot be derived) only when the daemon generates the admin
    // token: the admin API is on and `admin_token_file` unset.
    let state_dir = match &raw.state_dir {
        Some(s) => Some(nonempty_path(cx, "service.state_dir", s, base)),
        None => {
            let derived = default_state_dir(env);
            if derived.is_none() && admin_listen != AdminListen::Off && admin_token_file.is_none() {
                let why = "not set, and neither XDG_STATE_HOME nor HOME is set to derive the default \
                    ($XDG_STATE_HOME/tokenvisor or $HOME/.local/state/tokenvisor); it is where \
                    the generated admin token is kept (set state_dir or admin_token_file)";
                cx.problem("service.state_dir".into(), None, why);
            }
            derived
        }
    };

    let mut admin_limits = AdminLimits::default();
    let limit = (
        std::time::Duration::from_secs(3600),
        "the admin API waits no longer for a client",
    );
    for (key, value, slot) in [
        (
            "service.admin_header_timeout",
            &raw.admin_header_timeout,
            &mut admin_limits.header_timeout,
        ),
        (
            "service.admin_idle_timeout",
            &raw.admin_idle_timeout,
            &mut admin_limits.idle_timeout,
        ),
    ] {
        if let Some(d) = value
            .as_ref()
            .and_then(|v| cx.check(key.into(), v, |d| duration(d, true, limit)))
        {
            *slot = d;
        }
    }
    if let Some(v) = &raw.admin_max_connections {
        let rule = format!("must be between 1 and {MAX_ADMIN_MAX_CONNECTIONS}");
        let n = cx.check("service.admin_max_connections".into(), v, |n| {
            count(n, MAX_ADMIN_MAX_CONNECTIONS, &rule)
        });
        admin_limits.max_connections = n.unwrap_or(admin_limits.max_connections);
    }

    if let AdminListen::Addr(addr) = admin_listen
        && !addr.ip().is_loopback()
        && admin_token_file.is_none()
        && !cx.is_broken("service.admin_token_file")
    {
        let why = format!(
            "{addr} is not a loopback address, so service.admin_token_file is required \
             (the admin API can hand out access tokens)"
        );
        cx.problem(
            "service.admin_listen".into(),
            raw.admin_listen.as_ref().map(Spanned::span),
            why,
        );
    }

    let log_level = match raw.log_level {
        Some(s) if s.get_ref().trim().is_empty() => {
            let why = "must not be empty (e.g. \"info\" or \"info,tokenvisor=debug\")";
            cx.problem("service.log_level".into(), Some(s.span()), why);
            String::new()
        }
        Some(s) => s.into_inner(),
        None => "info".to_owned(),
    };
    let log_format = raw.log_format.map(Spanned::into_inner).unwrap_or_default();
    ServiceConfig {
        status_dir,
        admin_listen,
        admin_token_file,
        state_dir,
        admin_limits,
        log_format,
        log_level,
    }
}

/// A resolved policy and, per key, the dotted key and span it was set at (absent: built in).
#[derive(Debug, Clone, Default)]
pub(crate) struct Level {
    pub(crate) policy: WorkloadPolicy,
    from: BTreeMap<&'static str, (String, Range<usize>)>,
    /// Spans of the keys set at this level (empty once resolved).
    here: HashMap<&'static str, Range<usize>>,
}

impl Level {
    /// Records that `name` (at `path`) was set here, valid or not; its dotted key.
    fn set_here(&mut self, path: &str, name: &'static str, span: Range<usize>) -> String {
        let key = join_key(path, name);
        self.from.insert(name, (key.clone(), span.clone()));
        self.here.insert(name, span);
        key
    }

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
        path: &str,
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
            cx.problem(join_key(path, k), self.here.get(k).cloned(), reason);
        }
    }
}

type Slot<T> = fn(&mut WorkloadPolicy) -> &mut T;

/// `[defaults]` (over the built-in policy) or a workload's policy keys (over the defaults'):
/// timeouts, the refresh schedule, backoff, give-up, `Retry-After` ceiling, endpoint
/// concurrency, extra error codes.
pub(crate) fn resolve_policy(cx: &mut Cx, base: &Level, raw: RawPolicy, path: &str) -> Level {
    let mut lvl = Level {
        here: HashMap::new(),
        ..base.clone()
    };
    let durations: [(_, _, _, Slot<_>); 7] = [
        ("request_timeout", raw.request_timeout, true, |p| {
            &mut p.request_timeout
        }),
        ("connect_timeout", raw.connect_timeout, true, |p| {
            &mut p.connect_timeout
        }),
        ("default_lifetime", raw.default_lifetime, true, |p| {
            &mut p.default_lifetime
        }),
        ("backoff_initial", raw.backoff_initial, true, |p| {
            &mut p.backoff.initial
        }),
        ("backoff_max", raw.backoff_max, true, |p| &mut p.backoff.max),
        ("give_up_after", raw.give_up_after, false, |p| {
            &mut p.give_up_after
        }),
        ("max_retry_after", raw.max_retry_after, false, |p| {
            &mut p.max_retry_after
        }),
    ];
    for (name, raw, positive, slot) in durations {
        let Some(raw) = raw else { continue };
        let key = lvl.set_here(path, name, raw.span());
        let limit = duration_limit(name).unwrap_or((MAX_DURATION, "longer is a typo"));
        if let Some(d) = cx.check(key, &raw, |d| duration(d, positive, limit)) {
            *slot(&mut lvl.policy) = d;
        }
    }
    let numbers: [(_, _, fn(f64) -> bool, _, Slot<_>); 3] = [
        (
            "refresh_at",
            raw.refresh_at,
            |x| x > 0.0 && x <= 1.0,
            "it must be above 0 and at most 1 (a fraction of the token's lifetime)",
            |p| &mut p.schedule.refresh_at,
        ),
        (
            "refresh_jitter",
            raw.refresh_jitter,
            |x| (0.0..1.0).contains(&x),
            "it must be at least 0 and below refresh_at",
            |p| &mut p.schedule.refresh_jitter,
        ),
        (
            "backoff_multiplier",
            raw.backoff_multiplier,
            |x| x >= 1.0,
            "it must be at least 1",
            |p| &mut p.backoff.multiplier,
        ),
    ];
    for (name, raw, ok, rule, slot) in numbers {
        let Some(raw) = raw else { continue };
        let key = lvl.set_here(path, name, raw.span());
        let check = |&Number::Float(x): &Number| {
            (x.is_finite() && ok(x))
                .then_some(x)
                .ok_or(format!("is {x}; {rule}"))
        };
        if let Some(x) = cx.check(key, &raw, check) {
            *slot(&mut lvl.policy) = x;
        }
    }
    if let Some(raw) = raw.endpoint_concurrency {
        let key = lvl.set_here(path, "endpoint_concurrency", raw.span());
        let rule = format!("it must be at least 1 and at most {MAX_ENDPOINT_CONCURRENCY}");
        if let Some(n) = cx.check(key, &raw, |n| count(n, MAX_ENDPOINT_CONCURRENCY, &rule)) {
            lvl.policy.endpoint_concurrency = n;
        }
    }
    let codes: [(_, _, Slot<_>); 2] = [
        ("transient_codes", raw.transient_codes, |p| {
            &mut p.transient_codes
        }),
        ("permanent_codes", raw.permanent_codes, |p| {
            &mut p.permanent_codes
        }),
    ];
    for (name, raw, slot) in codes {
        let Some(raw) = raw else { continue };
        let key = lvl.set_here(path, name, raw.span());
        // RFC 6749 §5.2: error = 1*( %x20-21 / %x23-5B / %x5D-7E )
        let valid = |c: &str| {
            !c.is_empty()
                && c.trim() == c
                && c.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        };
        let what = "an RFC 6749 error code (printable ASCII without '\"' or '\\', not empty, no \
                    leading or trailing space)";
        if let Some(c) = cx.each_valid(&key, &raw, valid, what) {
            *slot(&mut lvl.policy) = c;
        }
    }

    let (s, b, p) = (lvl.policy.schedule, lvl.policy.backoff, &lvl.policy);
    lvl.pair(cx, path, ["refresh_at", "refresh_jitter"], |at, jitter| {
        let (j, a) = (s.refresh_jitter, s.refresh_at);
        (j >= a).then(|| format!("refresh_jitter ({j}{jitter}) must be below refresh_at ({a}{at})"))
    });
    lvl.pair(
        cx,
        path,
        ["backoff_initial", "backoff_max"],
        |initial, max| {
            let (m, i) = (
                humantime::format_duration(b.max),
                humantime::format_duration(b.initial),
            );
            (b.max < b.initial).then(|| {
                format!("backoff_max ({m}{max}) must be at least backoff_initial ({i}{initial})")
            })
        },
    );
    lvl.pair(cx, path, ["transient_codes", "permanent_codes"], |t, perm| {
        let both: Vec<&String> = p.permanent_codes.iter().filter(|c| p.transient_codes.contains(c)).collect();
        let paren = |o: String| o.strip_prefix(", ").map(|o| format!(" ({o})")).unwrap_or_default();
        (!both.is_empty()).then(|| {
            let (t, perm) = (paren(t), paren(perm));
            format!("{both:?} in both transient_codes{t} and permanent_codes{perm}; a code can only be one or the other")
        })
    });
    lvl.here.clear();
    lvl
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

/// One `[[workload]]`: its own keys → a [`WorkloadSpec`]: name, token URL, client, the
/// client secret (one source of three), the grant and its refresh token, token sink, scopes,
/// `resource`, `audience`.
struct Workload<'a> {
    path: &'a str,
    header: Range<usize>,
    base: &'a Path,
    env: Env<'a>,
}

impl Workload<'_> {
    fn key(&self, name: &str) -> String {
        join_key(self.path, name)
    }

    /// `raw` through `f`, or a missing required key reported (unless it was present but
    /// already reported).
    fn required<S, T>(
        &self,
        cx: &mut Cx,
        name: &str,
        raw: Option<&Spanned<S>>,
        missing: &str,
        f: impl FnOnce(&S) -> Result<T, String>,
    ) -> Option<T> {
        match raw {
            Some(raw) => cx.check(self.key(name), raw, f),
            None if cx.is_broken(&self.key(name)) => None,
            None => {
                cx.problem(self.key(name), Some(self.header.clone()), missing);
                None
            }
        }
    }

    fn path_of(&self, cx: &mut Cx, name: &str, raw: &Spanned<String>) -> Option<PathBuf> {
        cx.check(self.key(name), raw, |p| match p.is_empty() {
            true => Err("must not be empty".to_owned()),
            false => Ok(resolve_path(self.base, p)),
        })
    }

    /// A file this workload reads or writes (`writes`), registered with the files in use:
    /// two users of one file conflict when either writes it.
    fn use_file(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        name: &str,
        raw: &Spanned<String>,
        writes: bool,
    ) -> Option<PathBuf> {
        let path = self.path_of(cx, name, raw)?;
        let norm: PathBuf = path.components().collect();
        match seen.files.get(&norm) {
            Some((other, line, other_writes)) if writes || *other_writes => {
                let why = format!(
                    "{} is also {other} (line {line}); tokenvisor writes refresh-token and token sink \
                     files, so each needs a file of its own",
                    path.display()
                );
                cx.problem(self.key(name), Some(raw.span()), why);
            }
            Some(_) => {}
            None => drop(
                seen.files
                    .insert(norm, (self.key(name), cx.line(raw.span().start), writes)),
            ),
        }
        Some(path)
    }

    fn resolve(
        &self,
        cx: &mut Cx,
        raw: &RawWorkload,
        policy: Level,
        seen: &mut Seen,
    ) -> Option<WorkloadSpec> {
        let before = cx.problems.len();
        let line = raw
            .name
            .as_ref()
            .map(|s| (self.key("name"), cx.line(s.span().start)));
        let missing = "missing: every workload needs a name ([A-Za-z0-9._-], 1–100 characters)";
        let name = self.required(cx, "name", raw.name.as_ref(), missing, |s| {
            let n = WorkloadName::new(s).map_err(|e| e.to_string())?;
            if let Some((other, other_line)) = seen.names.get(n.as_str()) {
                return Err(format!(
                    "duplicate workload name {:?}: {other} (line {other_line}) has it too",
                    n.as_str()
                ));
            }
            seen.names.extend(line.map(|l| (n.as_str().to_owned(), l)));
            Ok(n)
        });
        let missing =
            "missing: the provider's token endpoint, e.g. \"https://idp.example.com/oauth/token\"";
        let token_url = self.required(cx, "token_url", raw.token_url.as_ref(), missing, |s| {
            check_http_url(s)
        });
        if let (Some(_), Some(u)) = (&token_url, &raw.token_url)
            && let Some(host) = plain_http_remote_host(u.get_ref())
        {
            let why = format!(
                "http:// to {host}, which is not a loopback address: tokens and secrets cross the \
                 network unencrypted (use https)"
            );
            cx.warning(self.key("token_url"), Some(u.span()), why);
        }
        let client_id = self.required(
            cx,
            "client_id",
            raw.client_id.as_ref(),
            "missing: the OAuth client id",
            |s| text(s),
        );
        let secret = self.client_secret(cx, seen, raw);
        let auth_method = raw
            .auth_method
            .as_ref()
            .map(|m| *m.get_ref())
            .unwrap_or_default();
        let grant = self.grant(cx, seen, raw, secret.is_some());
        let token_sink_file = (raw.token_sink_file.as_ref())
            .and_then(|f| self.use_file(cx, seen, "token_sink_file", f, true));
        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        let scope = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        };
        let what = "a scope token (one scope per string: printable ASCII, no spaces, '\"' or '\\')";
        let scopes = match &raw.scopes {
            Some(list) => cx.each_valid(&self.key("scopes"), list, scope, what),
            None => Some(Vec::new()),
        };
        let resource = raw.resource.as_ref().and_then(|r| {
            cx.check(self.key("resource"), r, |s| match url::Url::parse(s) {
                Ok(u) if u.fragment().is_none() && s.trim() == s => Ok(Arc::from(s.as_str())),
                Ok(_) | Err(_) => Err("must be an absolute URI without a fragment (RFC 8707), \
                     e.g. \"https://mcp.example.com\""
                    .to_owned()),
            })
        });
        let audience = raw
            .audience
            .as_ref()
            .and_then(|a| cx.check(self.key("audience"), a, |s| text(s)));

        // one gate per token endpoint: its workloads must agree on the limit
        if let Some(url) = &token_url {
            let (n, key) = (
                policy.policy.endpoint_concurrency,
                self.key("endpoint_concurrency"),
            );
            match seen.endpoints.get(url) {
                Some((other, m)) if *m != n && !cx.is_broken(&key) => {
                    let set = policy.from.get("endpoint_concurrency");
                    let from = set.map_or("the default", |(k, _)| k.as_str());
                    let span = set
                        .filter(|(k, _)| *k == key)
                        .map_or_else(|| self.header.clone(), |(_, s)| s.clone());
                    let why = format!(
                        "is {n} (from {from}) but {other} uses {m} for the same token_url; \
                         the limit is shared by every workload of one token endpoint, so they must agree"
                    );
                    cx.problem(key, Some(span), why);
                }
                Some(_) => {}
                None => drop(
                    seen.endpoints
                        .insert(url.clone(), (self.path.to_owned(), n)),
                ),
            }
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
            token_sink_file,
            policy: policy.policy,
        })
    }

    /// At most one of `keys` (with the span where each is set, if it is) may be set; the
    /// second one in the file is reported. False when more than one is.
    fn at_most_one(&self, cx: &mut Cx, keys: &[(&str, Option<Range<usize>>)], list: &str) -> bool {
        let mut given: Vec<_> = keys
            .iter()
            .filter_map(|(k, span)| Some((*k, span.clone()?)))
            .collect();
        given.sort_by_key(|(_, span)| span.start);
        if let [(first, _), (k, span), ..] = given.as_slice() {
            let why = format!("set only one of {list} (this workload also sets {first})");
            cx.problem(self.key(k), Some(span.clone()), why);
            return false;
        }
        true
    }

    /// A secret file (`writes`: tokenvisor writes it), registered with the files in use, then
    /// read; its notes become warnings.
    fn secret_file(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        name: &str,
        raw: &Spanned<String>,
        writes: bool,
    ) -> Option<(Secret, PathBuf)> {
        let path = self.use_file(cx, seen, name, raw, writes)?;
        let secret = cx.secret_file(&self.key(name), raw.span(), &path);
        secret
            .map_err(|reason| cx.problem(self.key(name), Some(raw.span()), reason))
            .ok()
            .map(|s| (s, path))
    }

    fn client_secret(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        raw: &RawWorkload,
    ) -> Option<(Secret, SecretOrigin)> {
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
            cx,
            &sources,
            "client_secret, client_secret_file and client_secret_env",
        ) {
            return None;
        }
        if let Some(s) = &raw.client_secret {
            return Some((
                cx.check(self.key("client_secret"), s, inline)?,
                SecretOrigin::Inline,
            ));
        }
        if let Some(f) = &raw.client_secret_file {
            let (secret, path) = self.secret_file(cx, seen, "client_secret_file", f, false)?;
            return Some((secret, SecretOrigin::File(path)));
        }
        cx.check(
            self.key("client_secret_env"),
            raw.client_secret_env.as_ref()?,
            |var| {
                if var.is_empty() || var.contains(['=', '\0']) {
                    return Err(format!("{var:?} is not an environment variable name"));
                }
                read_secret_env(var, self.env).map(|s| (s, SecretOrigin::Env(var.clone())))
            },
        )
    }

    fn grant(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        raw: &RawWorkload,
        has_secret: bool,
    ) -> Option<GrantSpec> {
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
        let both = !self.at_most_one(cx, &refresh, "refresh_token_file and refresh_token");
        let token = match (&raw.refresh_token_file, &raw.refresh_token) {
            (Some(_), Some(_)) | (None, None) => None,
            (Some(f), None) => self
                .secret_file(cx, seen, "refresh_token_file", f, true)
                .map(|(s, p)| (s, Some(p))),
            (None, Some(t)) => cx
                .check(self.key("refresh_token"), t, inline)
                .map(|s| (s, None)),
        };
        let broken = |cx: &Cx, keys: &[&str]| keys.iter().any(|k| cx.is_broken(&self.key(k)));
        let missing = "missing: set grant = \"refresh_token\" or grant = \"client_credentials\"";
        let grant = self.required(cx, "grant", raw.grant.as_ref(), missing, |g| Ok(*g))?;
        match (grant, token) {
            (RawGrant::RefreshToken, Some((token, file))) => {
                Some(GrantSpec::RefreshToken { token, file })
            }
            (RawGrant::RefreshToken, None) => {
                if !both && !broken(cx, &["refresh_token_file", "refresh_token"]) {
                    let why = "missing: grant = \"refresh_token\" needs refresh_token_file (or an inline refresh_token)";
                    cx.problem(
                        self.key("refresh_token_file"),
                        Some(self.header.clone()),
                        why,
                    );
                }
                None
            }
            (RawGrant::ClientCredentials, _) => {
                let mut ok = true;
                for (k, span) in refresh.into_iter().filter_map(|(k, s)| Some((k, s?))) {
                    ok = false;
                    if !cx.is_broken(&self.key(k)) {
                        let why = format!(
                            "grant = \"client_credentials\" takes no refresh token; remove {k} or set \
                             grant = \"refresh_token\""
                        );
                        cx.problem(self.key(k), Some(span), why);
                    }
                }
                if !has_secret
                    && !broken(
                        cx,
                        &["client_secret", "client_secret_file", "client_secret_env"],
                    )
                {
                    ok = false;
                    let why = "grant = \"client_credentials\" needs a client secret (client_secret, \
                         client_secret_file or client_secret_env): public clients cannot use it";
                    cx.problem(
                        self.key("grant"),
                        raw.grant.as_ref().map(Spanned::span),
                        why,
                    );
                }
                ok.then_some(GrantSpec::ClientCredentials)
            }
        }
    }
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
    match s.expose().is_empty() {
        true => Err("is empty".to_owned()),
        false => Ok(s.clone()),
    }
}

/// An http(s) URL with a host, no credentials and no fragment, as a [`TokenUrl`]. The value
/// is not echoed (it might carry credentials).
fn check_http_url(s: &str) -> Result<TokenUrl, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    let url = url::Url::parse(s).map_err(|e| format!("is not a valid URL: {e}"))?;
    let scheme = url.scheme();
    if !matches!(scheme, "https" | "http") {
        return Err(format!(
            "must be an http or https URL, not {scheme:?} (use https; http only for a local \
             test provider)"
        ));
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
    TokenUrl::parse(s).map_err(|e| e.to_string())
}

/// The host of an `http://` URL whose host is not loopback (`localhost`, 127.0.0.0/8,
/// `::1`); `None` for https, loopback or an unparseable URL.
fn plain_http_remote_host(s: &str) -> Option<String> {
    let url = url::Url::parse(s).ok().filter(|u| u.scheme() == "http")?;
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    };
    (!loopback).then(|| host.to_owned())
}
