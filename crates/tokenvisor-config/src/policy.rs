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
    eff: EffPolicy,
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
        self.eff.from.insert(name, (key, span.clone()));
        self.here.insert(name, span);
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
        let d = raw.get_ref().0;
        if positive && d.is_zero() {
            cx.problem(self.key(name), Some(raw.span()), "must be longer than 0s");
            return None;
        }
        let (max, why) = duration_limit(name).unwrap_or((MAX_DURATION, "longer is a typo"));
        if d > max {
            cx.problem(
                self.key(name),
                Some(raw.span()),
                format!(
                    "is {}; it must be at most {} ({why})",
                    humantime::format_duration(d),
                    humantime::format_duration(max)
                ),
            );
            return None;
        }
        Some(d)
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
        let mut out = Vec::new();
        let mut ok = true;
        for (j, code) in raw.get_ref().iter().enumerate() {
            let c = code.get_ref();
            // RFC 6749 §5.2: error = 1*( %x20-21 / %x23-5B / %x5D-7E )
            let valid = !c.is_empty()
                && c.trim() == c
                && c.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E));
            if valid {
                out.push(c.clone());
            } else {
                ok = false;
                cx.problem(
                    format!("{}[{j}]", self.key(name)),
                    Some(code.span()),
                    format!(
                        "{c:?} is not an RFC 6749 error code (printable ASCII without '\"' or '\\', \
                         not empty, no leading or trailing space)"
                    ),
                );
            }
        }
        ok.then_some(out)
    }
}

pub(crate) fn resolve_policy(
    cx: &mut Cx,
    base: &EffPolicy,
    raw: RawPolicy,
    path: &str,
) -> EffPolicy {
    let mut pc = PolicyCx {
        path,
        eff: base.clone(),
        here: HashMap::new(),
    };

    if let Some(d) = pc.duration(cx, "request_timeout", raw.request_timeout, true) {
        pc.eff.policy.request_timeout = d;
    }
    if let Some(d) = pc.duration(cx, "connect_timeout", raw.connect_timeout, true) {
        pc.eff.policy.connect_timeout = d;
    }
    if let Some(x) = pc.number(
        cx,
        "refresh_at",
        raw.refresh_at,
        |x| x > 0.0 && x <= 1.0,
        "it must be above 0 and at most 1 (a fraction of the token's lifetime)",
    ) {
        pc.eff.policy.schedule.refresh_at = x;
    }
    if let Some(x) = pc.number(
        cx,
        "refresh_jitter",
        raw.refresh_jitter,
        |x| (0.0..1.0).contains(&x),
        "it must be at least 0 and below refresh_at",
    ) {
        pc.eff.policy.schedule.refresh_jitter = x;
    }
    if let Some(d) = pc.duration(cx, "default_lifetime", raw.default_lifetime, true) {
        pc.eff.policy.default_lifetime = d;
    }
    if let Some(d) = pc.duration(cx, "backoff_initial", raw.backoff_initial, true) {
        pc.eff.policy.backoff.initial = d;
    }
    if let Some(d) = pc.duration(cx, "backoff_max", raw.backoff_max, true) {
        pc.eff.policy.backoff.max = d;
    }
    if let Some(x) = pc.number(
        cx,
        "backoff_multiplier",
        raw.backoff_multiplier,
        |x| x >= 1.0,
        "it must be at least 1",
    ) {
        pc.eff.policy.backoff.multiplier = x;
    }
    if let Some(d) = pc.duration(cx, "give_up_after", raw.give_up_after, false) {
        pc.eff.policy.give_up_after = d;
    }
    if let Some(d) = pc.duration(cx, "max_retry_after", raw.max_retry_after, false) {
        pc.eff.policy.max_retry_after = d;
    }
    if let Some(raw) = raw.endpoint_concurrency {
        pc.set_here("endpoint_concurrency", raw.span());
        match usize::try_from(*raw.get_ref()) {
            Ok(n) if (1..=MAX_ENDPOINT_CONCURRENCY).contains(&n) => {
                pc.eff.policy.endpoint_concurrency = n;
            }
            Ok(_) | Err(_) => cx.problem(
                pc.key("endpoint_concurrency"),
                Some(raw.span()),
                format!(
                    "is {}; it must be at least 1 and at most {MAX_ENDPOINT_CONCURRENCY}",
                    raw.get_ref()
                ),
            ),
        }
    }
    if let Some(c) = pc.codes(cx, "transient_codes", raw.transient_codes) {
        pc.eff.policy.transient_codes = c;
    }
    if let Some(c) = pc.codes(cx, "permanent_codes", raw.permanent_codes) {
        pc.eff.policy.permanent_codes = c;
    }

    // Rules that tie two keys together: checked where at least one of them is set, and only
    // when neither was already reported.
    let pair_ok = |pc: &PolicyCx<'_>, cx: &Cx, a: &'static str, b: &'static str| {
        let set_here = pc.here.contains_key(a) || pc.here.contains_key(b);
        let clean = [a, b].iter().all(|k| {
            pc.eff
                .from
                .get(k)
                .is_none_or(|(from, _)| !cx.is_broken(from))
        });
        set_here && clean
    };
    // The key to blame: `b` if set here, else `a`.
    let blame = |pc: &PolicyCx<'_>, a: &'static str, b: &'static str| {
        let k = if pc.here.contains_key(b) { b } else { a };
        (pc.key(k), pc.here.get(k).cloned())
    };
    // Where a value not set at this level came from.
    let origin = |pc: &PolicyCx<'_>, name: &'static str| {
        if pc.here.contains_key(name) {
            String::new()
        } else {
            match pc.eff.from.get(name) {
                Some((from, _)) => format!(", from {from}"),
                None => ", the default".to_owned(),
            }
        }
    };

    let s = pc.eff.policy.schedule;
    if pair_ok(&pc, cx, "refresh_at", "refresh_jitter") && s.refresh_jitter >= s.refresh_at {
        let (key, span) = blame(&pc, "refresh_at", "refresh_jitter");
        cx.problem(
            key,
            span,
            format!(
                "refresh_jitter ({}{}) must be below refresh_at ({}{})",
                s.refresh_jitter,
                origin(&pc, "refresh_jitter"),
                s.refresh_at,
                origin(&pc, "refresh_at"),
            ),
        );
    }
    let b = pc.eff.policy.backoff;
    if pair_ok(&pc, cx, "backoff_initial", "backoff_max") && b.max < b.initial {
        let (key, span) = blame(&pc, "backoff_initial", "backoff_max");
        cx.problem(
            key,
            span,
            format!(
                "backoff_max ({}{}) must be at least backoff_initial ({}{})",
                humantime::format_duration(b.max),
                origin(&pc, "backoff_max"),
                humantime::format_duration(b.initial),
                origin(&pc, "backoff_initial"),
            ),
        );
    }
    if pair_ok(&pc, cx, "transient_codes", "permanent_codes") {
        let p = &pc.eff.policy;
        let both: Vec<&String> = p
            .permanent_codes
            .iter()
            .filter(|c| p.transient_codes.contains(c))
            .collect();
        if !both.is_empty() {
            let (key, span) = blame(&pc, "transient_codes", "permanent_codes");
            let paren = |o: String| {
                o.strip_prefix(", ")
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default()
            };
            cx.problem(
                key,
                span,
                format!(
                    "{both:?} in both transient_codes{} and permanent_codes{}; \
                     a code can only be one or the other",
                    paren(origin(&pc, "transient_codes")),
                    paren(origin(&pc, "permanent_codes")),
                ),
            );
        }
    }
    pc.eff
}
