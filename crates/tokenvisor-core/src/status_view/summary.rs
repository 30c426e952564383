//! The fleet at a glance from one read of the status directory (`tokenvisor status
//! --summary` and `--watch`), sized for 100,000 workloads. Counts per status, counts per token endpoint (when `--config` says which
//! endpoint each workload uses), and the workloads needing attention first, each with its
//! reason; never one line per workload.
//!
//! Built from the entries the status store's read-only `list` returned:
//! one pass to count, a partial selection of the first `--top` workloads needing attention
//! (error, corrupt or unreadable files first, then unauthenticated, auth_retrying,
//! starting; within a status the longest-standing first), so a refresh costs one read of
//! the directory and O(n) work beyond it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use super::StatusEntry as Entry;
use crate::status::TokenState;
use crate::text::{Table, absolute, relative, safe_text, truncate_chars};
use crate::{Timestamp, WorkloadName, WorkloadStatus};

/// The columns of the status and endpoint tables, in order: every status, then the files
/// that did not read.
pub const COLUMNS: [&str; 8] = [
    "running",
    "auth_retrying",
    "unauthenticated",
    "starting",
    "stopped",
    "error",
    "corrupt",
    "unreadable",
];

/// The longest reason cell, in characters.
const REASON_CHARS: usize = 100;

/// The endpoint label of a status file whose workload the configuration does not name.
pub const NOT_CONFIGURED: &str = "(not in the configuration)";

/// The column of an entry.
fn column(entry: &Entry) -> usize {
    match entry {
        Entry::Ok(r) => match r.status {
            WorkloadStatus::Running => 0,
            WorkloadStatus::AuthRetrying => 1,
            WorkloadStatus::Unauthenticated => 2,
            WorkloadStatus::Starting => 3,
            WorkloadStatus::Stopped => 4,
            WorkloadStatus::Error => 5,
        },
        Entry::Corrupt(_) => 6,
        Entry::Unreadable(_) => 7,
    }
}

/// How urgently an entry needs an operator (lower first); `None`: it does not.
fn urgency(entry: &Entry) -> Option<u8> {
    match entry {
        Entry::Corrupt(_) | Entry::Unreadable(_) => Some(0),
        Entry::Ok(r) => match r.status {
            WorkloadStatus::Error => Some(0),
            WorkloadStatus::Unauthenticated => Some(1),
            WorkloadStatus::AuthRetrying => Some(2),
            WorkloadStatus::Starting => Some(3),
            WorkloadStatus::Running | WorkloadStatus::Stopped => None,
        },
    }
}

/// Since when a record has been in its trouble: the start of its run of failures, the time
/// it became unauthenticated, else its last update.
fn since(entry: &Entry) -> Option<Timestamp> {
    let Entry::Ok(r) = entry else { return None };
    let token = r.token.as_ref();
    let by_state = token.and_then(|t| match t.state {
        TokenState::TransientBackoff | TokenState::Refreshing => t.first_failure_at,
        TokenState::Unauthenticated | TokenState::Stopped => t.since,
        TokenState::Healthy => None,
    });
    Some(by_state.unwrap_or(r.updated_at))
}

/// The summary of one read of the status directory.
#[derive(Debug)]
pub struct Summary<'a> {
    /// How many entries were read.
    pub total: usize,
    /// Per column of [`COLUMNS`].
    pub counts: [usize; COLUMNS.len()],
    /// Per endpoint label, per column; empty without a configuration.
    pub endpoints: BTreeMap<&'a str, [usize; COLUMNS.len()]>,
    /// How many need attention (all of them, not only the listed).
    pub attention_total: usize,
    /// The first `top` needing attention, most urgent first.
    pub attention: Vec<&'a (WorkloadName, Entry)>,
}

/// Summarises `entries`; `endpoints` maps a workload to its (redacted) token endpoint when
/// a configuration was given.
#[must_use]
pub fn summarize<'a>(
    entries: &'a [(WorkloadName, Entry)],
    endpoints: Option<&'a HashMap<WorkloadName, String>>,
    top: usize,
) -> Summary<'a> {
    let mut counts = [0; COLUMNS.len()];
    let mut per_endpoint: BTreeMap<&'a str, [usize; COLUMNS.len()]> = BTreeMap::new();
    let mut needing: Vec<(u8, Option<Timestamp>, &'a (WorkloadName, Entry))> = Vec::new();
    for item in entries {
        let (name, entry) = item;
        let col = column(entry);
        counts[col] += 1;
        if let Some(map) = endpoints {
            let label = map.get(name).map_or(NOT_CONFIGURED, String::as_str);
            per_endpoint.entry(label).or_insert([0; COLUMNS.len()])[col] += 1;
        }
        if let Some(u) = urgency(entry) {
            needing.push((u, since(entry), item));
        }
    }
    let attention_total = needing.len();
    let order = |a: &(u8, Option<Timestamp>, &(WorkloadName, Entry)),
                 b: &(u8, Option<Timestamp>, &(WorkloadName, Entry))| {
        (a.0, a.1, &a.2.0).cmp(&(b.0, b.1, &b.2.0))
    };
    if needing.len() > top {
        if top > 0 {
            needing.select_nth_unstable_by(top - 1, order);
        }
        needing.truncate(top);
    }
    needing.sort_unstable_by(order);
    Summary {
        total: entries.len(),
        counts,
        endpoints: per_endpoint,
        attention_total,
        attention: needing.into_iter().map(|(_, _, item)| item).collect(),
    }
}

/// The reason shown for an entry needing attention.
fn reason(entry: &Entry) -> String {
    match entry {
        Entry::Ok(r) => super::last_error(r),
        Entry::Corrupt(why) | Entry::Unreadable(why) => why.clone(),
    }
}

fn status_label(entry: &Entry) -> &'static str {
    COLUMNS[column(entry)]
}

/// What the header line says about where and when.
#[derive(Debug)]
pub struct Heading<'a> {
    /// The status directory read.
    pub dir: &'a std::path::Path,
    /// When it was read.
    pub at: Timestamp,
    /// How long the read took.
    pub took: Duration,
}

/// The summary as text (every line sanitised).
#[must_use]
pub fn render(s: &Summary<'_>, h: &Heading<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} workloads in {} at {} (read in {} ms)",
        s.total,
        safe_text(&h.dir.display().to_string()),
        absolute(h.at),
        h.took.as_millis()
    );
    out.push('\n');
    let mut t = Table::new(&["STATUS", "WORKLOADS"]);
    for (label, n) in COLUMNS.iter().zip(s.counts) {
        // The two file problems appear only when there are some.
        if n > 0 || COLUMNS.iter().position(|c| c == label) < Some(6) {
            t.row(&[(*label).to_owned(), n.to_string()]);
        }
    }
    out.push_str(&t.render());
    if !s.endpoints.is_empty() {
        out.push('\n');
        let mut header = vec!["ENDPOINT", "WORKLOADS"];
        let upper: Vec<String> = COLUMNS.iter().map(|c| c.to_uppercase()).collect();
        header.extend(upper.iter().map(String::as_str));
        let mut t = Table::new(&header);
        for (endpoint, counts) in &s.endpoints {
            let mut row = vec![
                (*endpoint).to_owned(),
                counts.iter().sum::<usize>().to_string(),
            ];
            row.extend(counts.iter().map(ToString::to_string));
            t.row(&row);
        }
        out.push_str(&t.render());
    }
    out.push('\n');
    if s.attention_total == 0 {
        out.push_str("nothing needs attention\n");
        return out;
    }
    let _ = writeln!(
        out,
        "NEEDING ATTENTION: {}{}",
        s.attention_total,
        if s.attention.len() < s.attention_total {
            format!(" (the first {})", s.attention.len())
        } else {
            String::new()
        }
    );
    let mut t = Table::new(&["NAME", "STATUS", "SINCE", "REASON"]);
    for (name, entry) in &s.attention {
        let since = since(entry).map_or_else(|| "-".to_owned(), |t| relative(t, h.at));
        t.row(&[
            name.as_str().to_owned(),
            status_label(entry).to_owned(),
            since,
            truncate_chars(&safe_text(&reason(entry)), REASON_CHARS),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use crate::StatusRecord;
    use crate::status::{ErrorOutcome, LastError, SCHEMA, TokenSection};

    use super::*;

    fn wn(s: &str) -> WorkloadName {
        WorkloadName::new(s).unwrap()
    }

    fn rec(status: WorkloadStatus, state: TokenState, at: u64, context: &str) -> Entry {
        let t = Timestamp::from_millis(at);
        Entry::Ok(Box::new(StatusRecord {
            status,
            status_context: context.to_owned(),
            created_at: t,
            updated_at: t,
            process_id: 1,
            token: Some(TokenSection {
                schema: SCHEMA,
                state,
                since: Some(t),
                expires_at: None,
                attempt: 1,
                first_failure_at: Some(t),
                next_attempt_at: None,
                last_error: (status != WorkloadStatus::Running).then(|| LastError {
                    outcome: ErrorOutcome::Permanent,
                    kind: "oauth_rejected".into(),
                    http_status: Some(400),
                    error_code: Some("invalid_grant".into()),
                    retry_after_secs: None,
                    summary: format!("HTTP 400 invalid_grant: {context}"),
                }),
            }),
        }))
    }

    #[test]
    fn counts_per_status_and_endpoint_attention_first_with_reasons() {
        let entries = vec![
            (
                wn("a-ok"),
                rec(WorkloadStatus::Running, TokenState::Healthy, 5_000, ""),
            ),
            (
                wn("b-retry"),
                rec(
                    WorkloadStatus::AuthRetrying,
                    TokenState::TransientBackoff,
                    2_000,
                    "waf",
                ),
            ),
            (
                wn("c-dead-new"),
                rec(
                    WorkloadStatus::Unauthenticated,
                    TokenState::Unauthenticated,
                    4_000,
                    "revoked late",
                ),
            ),
            (
                wn("d-dead-old"),
                rec(
                    WorkloadStatus::Unauthenticated,
                    TokenState::Unauthenticated,
                    1_000,
                    "revoked early",
                ),
            ),
            (
                wn("e-corrupt"),
                Entry::Corrupt("line 1 column 2: expected value".into()),
            ),
            (
                wn("f-stopped"),
                rec(WorkloadStatus::Stopped, TokenState::Stopped, 1_000, ""),
            ),
        ];
        let endpoints: HashMap<WorkloadName, String> = [
            ("a-ok", "https://one/token"),
            ("b-retry", "https://one/token"),
            ("c-dead-new", "https://two/token"),
            ("d-dead-old", "https://two/token"),
        ]
        .into_iter()
        .map(|(n, e)| (wn(n), e.to_owned()))
        .collect();
        let s = summarize(&entries, Some(&endpoints), 3);
        assert_eq!(s.total, 6);
        assert_eq!(s.counts, [1, 1, 2, 0, 1, 0, 1, 0]);
        assert_eq!(s.endpoints["https://one/token"], [1, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(s.endpoints["https://two/token"], [0, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(s.endpoints[NOT_CONFIGURED], [0, 0, 0, 0, 1, 0, 1, 0]);
        assert_eq!(s.attention_total, 4);
        let names: Vec<&str> = s.attention.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["e-corrupt", "d-dead-old", "c-dead-new"]);

        let h = Heading {
            dir: std::path::Path::new("/s"),
            at: Timestamp::from_millis(65_000),
            took: Duration::from_millis(12),
        };
        let text = render(&s, &h);
        assert!(text.starts_with("6 workloads in /s at "), "{text}");
        assert!(
            text.contains("NEEDING ATTENTION: 4 (the first 3)"),
            "{text}"
        );
        assert!(text.contains("revoked early"), "{text}");
        assert!(text.contains("expected value"), "{text}");
        assert!(!text.contains("b-retry"), "only the first 3: {text}");
        assert!(text.contains("https://two/token"), "{text}");
        assert!(text.contains("1m 4s ago"), "since, relative: {text}");
    }

    #[test]
    fn without_a_configuration_there_is_no_endpoint_table() {
        let entries = vec![(
            wn("a"),
            rec(WorkloadStatus::Running, TokenState::Healthy, 0, ""),
        )];
        let s = summarize(&entries, None, 20);
        assert!(s.endpoints.is_empty());
        let text = render(
            &s,
            &Heading {
                dir: std::path::Path::new("/s"),
                at: Timestamp::from_millis(0),
                took: Duration::ZERO,
            },
        );
        assert!(text.contains("nothing needs attention"), "{text}");
        assert!(!text.contains("ENDPOINT"), "{text}");
        assert!(!text.contains("corrupt"), "{text}");
    }
}
