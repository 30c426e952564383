//! `[defaults]` and the same keys in a `[[workload]]`: timeouts, the refresh schedule,
//! backoff, give-up, `Retry-After` ceiling, endpoint concurrency, extra error codes. A
//! workload's keys replace the defaults' (lists too); each resolved key remembers where it
//! was set, so that a rule tying two keys together names both origins.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use crate::problems::Cx;
use crate::read::join_key;
use crate::schema::{HumanDuration, Number, RawPolicy};
use crate::spec::WorkloadPolicy;
use crate::{MAX_DURATION, MAX_ENDPOINT_CONCURRENCY, duration_limit};

/// A resolved policy and, per key, the dotted key it was set at (absent: built in).
#[derive(Debug, Clone)]
pub(crate) struct EffPolicy {
    pub(crate) policy: WorkloadPolicy,
    pub(crate) from: BTreeMap<&'static str, (String, Range<usize>)>,
}

impl EffPolicy {
    pub(crate) fn builtin() -> Self {
        EffPolicy {
            policy: WorkloadPolicy::default(),
            from: BTreeMap::new(),
        }
    }
}

struct PolicyCx<'a> {
    path: &'a str,
    /// Per key, where it was set (this level's keys included).
    from: BTreeMap<&'static str, (String, Range<usize>)>,
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
        self.from.insert(name, (key, span.clone()));
        self.here.insert(name, span);
    }

    /// A rule that ties `a` and `b` together: checked where at least one of them is set here,
    /// and only when neither was already reported. `broken` gets where each value came from
    /// ([`Self::origin`]) and says what is wrong, if anything; the problem is blamed on `b` if
    /// it is set here, else on `a`.
    fn pair(
        &self,
        cx: &mut Cx,
        a: &'static str,
        b: &'static str,
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
            cx.problem(self.key(k), self.here.get(k).cloned(), reason);
        }
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

    fn duration(
        &mut self,
        cx: &mut Cx,
        name: &'static str,
        raw: Option<Spanned<HumanDuration>>,
        positive: bool,
    ) -> Option<Duration> {
        let raw = raw?;
        self.set_here(name, raw.span());
        let limit = duration_limit(name).unwrap_or((MAX_DURATION, "longer is a typo"));
        cx.duration(self.key(name), &raw, positive, limit)
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
        let x = raw.get_ref().get();
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
        raw: Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Vec<String>> {
        let raw = raw?;
        self.set_here(name, raw.span());
        // RFC 6749 §5.2: error = 1*( %x20-21 / %x23-5B / %x5D-7E )
        let valid = |c: &str| {
            !c.is_empty()
                && c.trim() == c
                && c.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        };
        cx.each_valid(
            &self.key(name),
            &raw,
            valid,
            "an RFC 6749 error code (printable ASCII without '\"' or '\\', not empty, no \
             leading or trailing space)",
        )
    }
}

pub(crate) fn resolve_policy(
    cx: &mut Cx,
    base: &EffPolicy,
    raw: RawPolicy,
    path: &str,
) -> EffPolicy {
    let mut policy = base.policy.clone();
    let mut pc = PolicyCx {
        path,
        from: base.from.clone(),
        here: HashMap::new(),
    };

    if let Some(d) = pc.duration(cx, "request_timeout", raw.request_timeout, true) {
        policy.request_timeout = d;
    }
    if let Some(d) = pc.duration(cx, "connect_timeout", raw.connect_timeout, true) {
        policy.connect_timeout = d;
    }
    if let Some(d) = pc.duration(cx, "default_lifetime", raw.default_lifetime, true) {
        policy.default_lifetime = d;
    }
    if let Some(d) = pc.duration(cx, "backoff_initial", raw.backoff_initial, true) {
        policy.backoff.initial = d;
    }
    if let Some(d) = pc.duration(cx, "backoff_max", raw.backoff_max, true) {
        policy.backoff.max = d;
    }
    if let Some(d) = pc.duration(cx, "give_up_after", raw.give_up_after, false) {
        policy.give_up_after = d;
    }
    if let Some(d) = pc.duration(cx, "max_retry_after", raw.max_retry_after, false) {
        policy.max_retry_after = d;
    }
    if let Some(x) = pc.number(
        cx,
        "refresh_at",
        raw.refresh_at,
        |x| x > 0.0 && x <= 1.0,
        "it must be above 0 and at most 1 (a fraction of the token's lifetime)",
    ) {
        policy.schedule.refresh_at = x;
    }
    if let Some(x) = pc.number(
        cx,
        "refresh_jitter",
        raw.refresh_jitter,
        |x| (0.0..1.0).contains(&x),
        "it must be at least 0 and below refresh_at",
    ) {
        policy.schedule.refresh_jitter = x;
    }
    if let Some(x) = pc.number(
        cx,
        "backoff_multiplier",
        raw.backoff_multiplier,
        |x| x >= 1.0,
        "it must be at least 1",
    ) {
        policy.backoff.multiplier = x;
    }
    if let Some(raw) = raw.endpoint_concurrency {
        pc.set_here("endpoint_concurrency", raw.span());
        let rule = format!("it must be at least 1 and at most {MAX_ENDPOINT_CONCURRENCY}");
        let key = pc.key("endpoint_concurrency");
        if let Some(n) = cx.count(key, &raw, MAX_ENDPOINT_CONCURRENCY, &rule) {
            policy.endpoint_concurrency = n;
        }
    }
    if let Some(c) = pc.codes(cx, "transient_codes", raw.transient_codes) {
        policy.transient_codes = c;
    }
    if let Some(c) = pc.codes(cx, "permanent_codes", raw.permanent_codes) {
        policy.permanent_codes = c;
    }

    let (s, b, p) = (policy.schedule, policy.backoff, &policy);
    pc.pair(cx, "refresh_at", "refresh_jitter", |at, jitter| {
        (s.refresh_jitter >= s.refresh_at).then(|| {
            let (j, a) = (s.refresh_jitter, s.refresh_at);
            format!("refresh_jitter ({j}{jitter}) must be below refresh_at ({a}{at})")
        })
    });
    pc.pair(cx, "backoff_initial", "backoff_max", |initial, max| {
        let d = humantime::format_duration;
        (b.max < b.initial).then(|| {
            let (m, i) = (d(b.max), d(b.initial));
            format!("backoff_max ({m}{max}) must be at least backoff_initial ({i}{initial})")
        })
    });
    pc.pair(cx, "transient_codes", "permanent_codes", |t, perm| {
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
        (!both.is_empty()).then(|| {
            format!(
                "{both:?} in both transient_codes{} and permanent_codes{}; \
                 a code can only be one or the other",
                paren(t),
                paren(perm),
            )
        })
    });
    EffPolicy {
        policy,
        from: pc.from,
    }
}
