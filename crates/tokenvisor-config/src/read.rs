//! Reading: the TOML text → the raw sections of [`crate::schema`]. Syntax errors, unknown
//! keys ("did you mean", by `strsim`; "it belongs in") and values of the wrong type are
//! reported here, each at its dotted key and line; the other keys of a section are kept.

use std::collections::HashSet;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde_aux::serde_introspection::serde_introspect as keys_of;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};

use crate::problems::{Cx, join_key};
use crate::schema::{RawPolicy, RawService, RawWorkload};

/// The file's sections, typed; every problem found on the way is in the collector.
#[derive(Default)]
pub(crate) struct RawFile {
    pub(crate) service: RawService,
    pub(crate) defaults: RawPolicy,
    /// Each workload: its dotted path (`workload[i]`), the span of its header, its policy
    /// keys and its own keys. A workload that is not a table is left out.
    pub(crate) workloads: Vec<(String, Range<usize>, RawPolicy, RawWorkload)>,
    /// `[cluster]` (span of its header), when present.
    pub(crate) cluster: Option<(Range<usize>, crate::cluster::RawCluster)>,
}

type Entry<'i> = (Spanned<DeString<'i>>, Spanned<DeValue<'i>>);
/// A section's span and its known entries; `None` when it is not a table.
type Section<'i> = Option<(Range<usize>, Vec<Entry<'i>>)>;

const SECTIONS: &str = "(sections: [service], [defaults], [[workload]], [cluster])";

/// Reads `text`. `None` when it is not valid TOML (the syntax errors are reported).
pub(crate) fn read(cx: &mut Cx, text: &str) -> Option<RawFile> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let mut errors: Vec<_> = errors.iter().map(|e| (e.span(), e.message())).collect();
        errors.sort_by_key(|(span, _)| span.as_ref().map(|s| s.start));
        let mut lines_seen = HashSet::new();
        for (span, message) in errors {
            // one syntax error per line: the rest are usually its echoes
            if !lines_seen.insert(span.as_ref().map(|s| cx.line(s.start))) {
                continue;
            }
            let at = span.clone().unwrap_or_default();
            let mut key = span
                .as_ref()
                .map_or_else(String::new, |s| locate(doc.get_ref(), s.start, ""));
            // A duplicate key is not in the recovered document: its span is the key itself.
            let dup = text.get(at).unwrap_or_default().trim_matches(['"', '\'']);
            if message == "duplicate key" && !dup.is_empty() && !key.ends_with(dup) {
                key = join_key(&key, dup);
            }
            cx.problem(key, span, format!("invalid TOML: {message}"));
        }
        return None;
    }
    let (mut file, mut workloads) = (RawFile::default(), Vec::new());
    for (k, v) in doc.into_inner() {
        let (name, span, found): (&str, _, _) = (k.get_ref(), v.span(), describe_type(v.get_ref()));
        if name == "service" {
            let t = table(cx, name, v, name);
            file.service = read_section(cx, name, t);
        } else if name == "defaults" {
            let t = table(cx, name, v, name);
            file.defaults = read_section(cx, name, t);
        } else if name == "cluster" {
            if let Some(t) = table(cx, name, v, name) {
                file.cluster = Some((t.0.clone(), read_section(cx, name, Some(t))));
            }
        } else if let Some(a) = v.get_ref().as_array().filter(|_| name == "workload") {
            for (i, el) in a.iter().enumerate() {
                let path = format!("workload[{i}]");
                workloads.push((table(cx, &path, el.clone(), name), path));
            }
        } else if name == "workload" {
            let reason = match v.get_ref().is_table() {
                true => "write each workload as [[workload]] (an array of tables), not [workload]",
                false => &format!("must be an array of tables ([[workload]]), not {found}"),
            };
            cx.problem(name.to_owned(), Some(span), reason);
        } else {
            let near = suggest(name, &["service", "defaults", "workload", "cluster"]);
            let reason = match (near, home_of(name)) {
                (None, Some(home)) => {
                    format!("`{name}` is not a top-level key; it belongs in {home}")
                }
                (Some(s), _) => {
                    format!("unknown section or key `{name}`; did you mean `{s}`? {SECTIONS}")
                }
                (None, None) => format!("unknown section or key `{name}` {SECTIONS}"),
            };
            cx.problem(name.to_owned(), Some(k.span()), reason);
        }
    }
    let policy = keys_of::<RawPolicy>();
    for (section, path) in workloads {
        let Some((span, entries)) = section else {
            continue;
        };
        let (policy_keys, own): (Vec<_>, Vec<_>) =
            (entries.into_iter()).partition(|(k, _)| policy.contains(&&**k.get_ref()));
        let raw_policy = read_section(cx, &path, Some((span.clone(), policy_keys)));
        let raw = read_section(cx, &path, Some((span.clone(), own)));
        file.workloads.push((path, span, raw_policy, raw));
    }
    Some(file)
}

/// A section (at `path`): `v` must be a table (`[service]`, `[defaults]`, `[[workload]]`, as
/// `section` says); its keys that are not the section's are reported ("it belongs in" when
/// another section has it, else "did you mean" when a key is close) and dropped.
fn table<'i>(cx: &mut Cx, path: &str, v: Spanned<DeValue<'i>>, section: &str) -> Section<'i> {
    let (span, found) = (v.span(), describe_type(v.get_ref()));
    let DeValue::Table(t) = v.into_inner() else {
        let header = match section {
            "workload" => "[[workload]]".to_owned(),
            _ => format!("[{section}]"),
        };
        let why = format!("must be a table ({header}), not {found}");
        cx.problem(path.to_owned(), Some(span), why);
        return None;
    };
    let known: Vec<&str> = match section {
        "service" => keys_of::<RawService>().to_vec(),
        "defaults" => keys_of::<RawPolicy>().to_vec(),
        "cluster" => keys_of::<crate::cluster::RawCluster>().to_vec(),
        _ => [keys_of::<RawWorkload>(), keys_of::<RawPolicy>()].concat(),
    };
    let (kept, unknown): (Vec<_>, Vec<_>) =
        (t.into_iter()).partition(|(k, _)| known.contains(&&**k.get_ref()));
    for (k, _) in unknown {
        let name: &str = k.get_ref();
        let hint = match home_of(name) {
            Some(home) => format!("; `{name}` is not a [{section}] key; it belongs in {home}"),
            None => {
                (suggest(name, &known)).map_or(String::new(), |s| format!("; did you mean `{s}`?"))
            }
        };
        let why = format!("unknown key `{name}`{hint}");
        cx.problem(join_key(path, name), Some(k.span()), why);
    }
    Some((span, kept))
}

/// The dotted key at `offset` inside `value` (which is at `path`), descending into arrays
/// and tables.
fn descend(value: &Spanned<DeValue<'_>>, offset: usize, path: String) -> String {
    if let Some(t) = value.get_ref().as_table() {
        return locate(t, offset, &path);
    }
    let inside = |(_, el): &(usize, &Spanned<DeValue<'_>>)| {
        el.span().contains(&offset) || el.span().end == offset
    };
    match value
        .get_ref()
        .as_array()
        .and_then(|a| a.iter().enumerate().find(inside))
    {
        Some((j, el)) => descend(el, offset, format!("{path}[{j}]")),
        None => path,
    }
}

/// The dotted key of whatever is at `offset` in `table` (at `prefix`): an entry whose key or
/// value covers it, else the `[section]` or `[[array]]` element whose header is the last one
/// before it.
fn locate(table: &DeTable<'_>, offset: usize, prefix: &str) -> String {
    for (k, v) in table {
        let (ks, vs) = (k.span(), v.span());
        if ks.start.min(vs.start) <= offset && offset <= ks.end.max(vs.end) {
            return descend(v, offset, join_key(prefix, k.get_ref()));
        }
    }
    // Sections (std tables and array-of-tables elements) whose header starts before `offset`.
    let mut best: Option<(usize, String, &DeTable<'_>)> = None;
    for (k, v) in table {
        let path = join_key(prefix, k.get_ref());
        let items: Vec<_> = match v.get_ref().as_array() {
            Some(a) => a
                .iter()
                .enumerate()
                .map(|(j, el)| (el, format!("{path}[{j}]")))
                .collect(),
            None => vec![(v, path)],
        };
        for (el, path) in items {
            let start = el.span().start;
            if let Some(t) = el.get_ref().as_table()
                && start <= offset
                && best.as_ref().is_none_or(|(b, ..)| start >= *b)
            {
                best = Some((start, path, t));
            }
        }
    }
    best.map_or(prefix.to_owned(), |(_, path, t)| locate(t, offset, &path))
}

/// Types one section (nothing when it is not a table). Each key is deserialized alone (a
/// one-key table), so every bad key is reported and dropped; then the good ones together.
fn read_section<T: DeserializeOwned + Default>(cx: &mut Cx, path: &str, section: Section<'_>) -> T {
    let Some((span, entries)) = section else {
        return T::default();
    };
    let typed = |entries: Vec<Entry<'_>>| {
        let table = DeValue::Table(entries.into_iter().collect());
        T::deserialize(ValueDeserializer::from(Spanned::new(span.clone(), table)))
    };
    let mut good = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let Err(err) = typed(vec![(k.clone(), v.clone())]) else {
            good.push((k, v));
            continue;
        };
        let at = err.span().unwrap_or_else(|| v.span());
        let name = join_key(path, k.get_ref());
        cx.broken.insert(name.clone());
        // serde's message, completed with what was found where a schema type's `expecting`
        // leaves it out (never the value: it may be a secret), and with our words for
        // serde's names of the schema's two plain types (every list is an array of strings).
        let reason = match err.message().strip_prefix("invalid type: expected ") {
            Some(what) => format!(
                "invalid type: {}, expected {what}",
                describe_type(v.get_ref())
            ),
            None => (err.message())
                .replace("expected a sequence", "expected an array of strings")
                .replace("expected i128", "expected a whole number"),
        };
        cx.problem(descend(&v, at.start, name), Some(at), reason);
    }
    typed(good).unwrap_or_else(|err| {
        cx.problem(path.to_owned(), err.span(), err.message().to_owned());
        T::default()
    })
}

/// Where a known key belongs.
fn home_of(key: &str) -> Option<&'static str> {
    [
        (keys_of::<RawService>(), "[service]"),
        (keys_of::<RawPolicy>(), "[defaults] or a [[workload]]"),
        (keys_of::<RawWorkload>(), "each [[workload]]"),
    ]
    .into_iter()
    .find_map(|(keys, home)| keys.contains(&key).then_some(home))
}

/// The closest known key, if it is close enough to be a typo ("did you mean").
fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    (known.iter())
        .map(|k| (strsim::levenshtein(name, k), *k))
        .filter(|&(d, k)| d <= 2.max(k.len() / 4))
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// "a string", "an integer", …: toml's name of the type, with its article.
fn describe_type(v: &DeValue<'_>) -> String {
    let t = v.type_str();
    format!("{} {t}", if t.starts_with(['a', 'i']) { "an" } else { "a" })
}
