//! Reading: the TOML text → the raw sections of [`crate::schema`]. Syntax errors, unknown
//! keys (with "did you mean" and "it belongs in" hints) and values of the wrong type are
//! reported here, each at its dotted key and line; a section whose keys are partly wrong
//! still yields the others, so one pass reports every problem of the file.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};

use crate::problems::Cx;
use crate::schema::{
    RawPolicy, RawService, RawWorkload, SECTIONS, home_of, policy_keys, section_hint, service_keys,
    suggest, workload_keys,
};

/// The file's sections, typed; every problem found on the way is in the collector.
#[derive(Default)]
pub(crate) struct RawFile {
    pub(crate) service: RawService,
    pub(crate) defaults: RawPolicy,
    /// Each workload: its dotted path (`workload[i]`), the span of its header, its policy
    /// keys and its own keys. A workload that is not a table is left out.
    pub(crate) workloads: Vec<(String, Range<usize>, RawPolicy, RawWorkload)>,
}

/// Reads `text`. `None` when it is not valid TOML (the syntax errors are reported).
pub(crate) fn read(cx: &mut Cx, text: &str) -> Option<RawFile> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let mut errors: Vec<_> = errors
            .iter()
            .map(|e| (e.span(), e.message().to_owned()))
            .collect();
        errors.sort_by_key(|(span, _)| span.as_ref().map(|s| s.start));
        let mut lines_seen = HashSet::new();
        for (span, message) in errors {
            let line = span.as_ref().map(|s| cx.line(s.start));
            if !lines_seen.insert(line) {
                continue; // one syntax error per line: the rest are usually its echoes
            }
            let mut key = span
                .as_ref()
                .map(|s| locate(doc.get_ref(), s.start, ""))
                .unwrap_or_default();
            // A duplicate key is not in the recovered document: its span is the key itself.
            if message == "duplicate key"
                && let Some(dup) = span.as_ref().and_then(|s| text.get(s.clone()))
            {
                let dup = dup.trim_matches(['"', '\'']);
                if !dup.is_empty() && !key.ends_with(dup) {
                    key = join_key(&key, dup);
                }
            }
            cx.problem(key, span, format!("invalid TOML: {message}"));
        }
        return None;
    }

    let (service_keys, policy_keys, workload_keys) =
        (service_keys(), policy_keys(), workload_keys());
    let all_workload_keys: Vec<&str> = workload_keys.iter().chain(policy_keys).copied().collect();

    let mut file = RawFile::default();
    let mut raw_workloads = Vec::new();
    for (k, v) in doc.into_inner() {
        let name: &str = k.get_ref();
        match name {
            "service" => {
                if let Some((span, entries)) = table(cx, name.to_owned(), "[service]", v) {
                    let hint = |k: &str| section_hint(k, policy_keys, workload_keys, name);
                    let entries = drop_unknown(cx, name, entries, service_keys, &hint);
                    file.service = read_section(cx, name, &span, entries);
                }
            }
            "defaults" => {
                if let Some((span, entries)) = table(cx, name.to_owned(), "[defaults]", v) {
                    let hint = |k: &str| section_hint(k, service_keys, workload_keys, name);
                    let entries = drop_unknown(cx, name, entries, policy_keys, &hint);
                    file.defaults = read_section(cx, name, &span, entries);
                }
            }
            "workload" => {
                let span = v.span();
                let found = describe_type(v.get_ref());
                let is_table = v.get_ref().is_table();
                if let DeValue::Array(a) = v.into_inner() {
                    for (i, el) in a.into_iter().enumerate() {
                        let el_span = el.span();
                        let entries = table(cx, format!("workload[{i}]"), "[[workload]]", el);
                        raw_workloads.push((el_span, entries.map(|(_, e)| e).unwrap_or_default()));
                    }
                } else if is_table {
                    cx.problem(
                        "workload".to_owned(),
                        Some(span),
                        "write each workload as [[workload]] (an array of tables), not [workload]",
                    );
                } else {
                    cx.problem(
                        "workload".to_owned(),
                        Some(span),
                        format!("must be an array of tables ([[workload]]), not {found}"),
                    );
                }
            }
            _ => {
                let home = home_of(name);
                let reason = match suggest(name, SECTIONS) {
                    None if let Some(home) = home => {
                        format!("`{name}` is not a top-level key; it belongs in {home}")
                    }
                    Some(s) => format!(
                        "unknown section or key `{name}`; did you mean `{s}`? (sections: [service], [defaults], [[workload]])"
                    ),
                    None => format!(
                        "unknown section or key `{name}` (sections: [service], [defaults], [[workload]])"
                    ),
                };
                cx.problem(name.to_owned(), Some(k.span()), reason);
            }
        }
    }

    for (i, (span, entries)) in raw_workloads.into_iter().enumerate() {
        let path = format!("workload[{i}]");
        if cx.is_broken(&path) {
            continue;
        }
        let hint = |k: &str| section_hint(k, service_keys, &[], "workload");
        let entries = drop_unknown(cx, &path, entries, &all_workload_keys, &hint);
        let (policy_entries, own_entries): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(k, _)| policy_keys.contains(&&**k.get_ref()));
        let raw_policy: RawPolicy = read_section(cx, &path, &span, policy_entries);
        let raw: RawWorkload = read_section(cx, &path, &span, own_entries);
        file.workloads.push((path, span, raw_policy, raw));
    }
    Some(file)
}

type Entry<'i> = (Spanned<DeString<'i>>, Spanned<DeValue<'i>>);

/// The span and entries of `v` (at `key`), which must be a table (written `header`).
fn table<'i>(
    cx: &mut Cx,
    key: String,
    header: &str,
    v: Spanned<DeValue<'i>>,
) -> Option<(Range<usize>, Vec<Entry<'i>>)> {
    let (span, found) = (v.span(), describe_type(v.get_ref()));
    if let DeValue::Table(t) = v.into_inner() {
        return Some((span, t.into_iter().collect()));
    }
    cx.problem(
        key,
        Some(span),
        format!("must be a table ({header}), not {found}"),
    );
    None
}

pub(crate) fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset <= span.end
}

/// The dotted key at `offset` inside `value` (which is at `path`), descending into arrays
/// and tables.
fn descend(value: &Spanned<DeValue<'_>>, offset: usize, path: String) -> String {
    match value.get_ref() {
        DeValue::Table(t) => locate(t, offset, &path),
        DeValue::Array(a) => match a.iter().position(|el| contains(&el.span(), offset)) {
            Some(j) => descend(&a[j], offset, format!("{path}[{j}]")),
            None => path,
        },
        DeValue::String(_)
        | DeValue::Integer(_)
        | DeValue::Float(_)
        | DeValue::Boolean(_)
        | DeValue::Datetime(_) => path,
    }
}

/// The dotted key of whatever is at `offset` in `table` (at `prefix`): an entry whose key or
/// value covers it, else the `[section]` or `[[array]]` element whose header is the last one
/// before it.
fn locate(table: &DeTable<'_>, offset: usize, prefix: &str) -> String {
    for (k, v) in table {
        let (ks, vs) = (k.span(), v.span());
        let whole = ks.start.min(vs.start)..ks.end.max(vs.end);
        if contains(&whole, offset) {
            return descend(v, offset, join_key(prefix, k.get_ref()));
        }
    }
    // Sections (std tables and array-of-tables elements) whose header starts before `offset`.
    let mut sections: Vec<(usize, String, &DeTable<'_>)> = Vec::new();
    for (k, v) in table {
        let path = join_key(prefix, k.get_ref());
        match v.get_ref() {
            DeValue::Table(t) => sections.push((v.span().start, path, t)),
            DeValue::Array(a) => {
                for (j, el) in a.iter().enumerate() {
                    if let DeValue::Table(t) = el.get_ref() {
                        sections.push((el.span().start, format!("{path}[{j}]"), t));
                    }
                }
            }
            DeValue::String(_)
            | DeValue::Integer(_)
            | DeValue::Float(_)
            | DeValue::Boolean(_)
            | DeValue::Datetime(_) => {}
        }
    }
    let best = sections
        .into_iter()
        .filter(|(start, _, _)| *start <= offset)
        .max_by_key(|(start, _, _)| *start);
    match best {
        Some((_, path, t)) => locate(t, offset, &path),
        None => prefix.to_owned(),
    }
}

/// Types one section. Unknown keys must already be gone. Each key is deserialized alone (a
/// one-key table), so every bad key is reported and dropped; then the good ones together.
fn read_section<T: DeserializeOwned + Default>(
    cx: &mut Cx,
    path: &str,
    span: &Range<usize>,
    entries: Vec<Entry<'_>>,
) -> T {
    let typed = |entries: Vec<Entry<'_>>| {
        let table: DeTable<'_> = entries.into_iter().collect();
        T::deserialize(ValueDeserializer::from(Spanned::new(
            span.clone(),
            DeValue::Table(table),
        )))
    };
    let mut good = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match typed(vec![(k.clone(), v.clone())]) {
            Ok(_) => good.push((k, v)),
            Err(err) => {
                let at = err.span().unwrap_or_else(|| v.span());
                let name = join_key(path, k.get_ref());
                cx.broken.insert(name.clone());
                let key = descend(&v, at.start, name);
                cx.problem(key, Some(at), reason(err.message(), v.get_ref()));
            }
        }
    }
    typed(good).unwrap_or_else(|err| {
        cx.problem(path.to_owned(), err.span(), err.message().to_owned());
        T::default()
    })
}

/// serde's message, completed with what was found where a [`crate::schema`] type's
/// `expecting` leaves it out (never the value: it may be a secret), and with our words for
/// serde's names of the schema's two plain types (every list is an array of strings).
fn reason(message: &str, found: &DeValue<'_>) -> String {
    match message.strip_prefix("invalid type: expected ") {
        Some(what) => format!("invalid type: {}, expected {what}", describe_type(found)),
        None => message
            .replace("expected a sequence", "expected an array of strings")
            .replace("expected i128", "expected a whole number"),
    }
}

/// Splits off and reports keys that are in none of `known`; `hint` explains a key that
/// belongs elsewhere.
fn drop_unknown<'i>(
    cx: &mut Cx,
    path: &str,
    entries: Vec<Entry<'i>>,
    known: &[&str],
    hint: &dyn Fn(&str) -> Option<String>,
) -> Vec<Entry<'i>> {
    let mut kept = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let name: &str = k.get_ref();
        if known.contains(&name) {
            kept.push((k, v));
            continue;
        }
        let mut reason = format!("unknown key `{name}`");
        if let Some(h) = hint(name) {
            let _ = write!(reason, "; {h}");
        } else if let Some(s) = suggest(name, known) {
            let _ = write!(reason, "; did you mean `{s}`?");
        }
        cx.problem(join_key(path, name), Some(k.span()), reason);
    }
    kept
}

fn describe_type(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
