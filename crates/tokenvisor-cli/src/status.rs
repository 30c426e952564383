//! `tokenvisor status`: reads the status files, prints a table or JSON.
//!
//! Read-only: unlike the daemon's start-up recovery, this never renames, removes or rewrites
//! anything in the status directory (a corrupt file is reported, not set aside).

use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use clap::Args;
use clap::error::ErrorKind;
use serde::Serialize;
use tokenvisor_core::status::{LastError, RecordError, TokenState};
use tokenvisor_core::{StatusRecord, Timestamp, WorkloadName, WorkloadStatus};

use crate::output::{Table, absolute, compact_duration, now, relative, safe_text, truncate_chars};
use crate::{EXIT_PROBLEM, usage_error};

/// Files larger than this are not status records (the daemon's status store uses the same
/// limit).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The longest last-error cell in the table, in characters.
const ERROR_CELL_CHARS: usize = 72;

/// Arguments of `tokenvisor status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The status directory [default: $XDG_DATA_HOME/tokenvisor/statuses, else
    /// $HOME/.local/share/tokenvisor/statuses, as for the configuration's
    /// service.status_dir].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Show only this workload.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Print JSON: an array of {"name": …, …the status record} (one object with NAME).
    /// Corrupt files appear as {"name": …, "status": "corrupt", "error": …}.
    #[arg(long)]
    json: bool,
}

/// One listed workload.
#[derive(Debug)]
enum Entry {
    /// The file parsed.
    Ok(Box<StatusRecord>),
    /// The file exists but did not parse; why (never the file's bytes).
    Corrupt(String),
    /// The file exists but could not be read; why.
    Unreadable(String),
}

impl Entry {
    /// True when this workload needs an operator (exit status 1).
    fn needs_attention(&self) -> bool {
        match self {
            Entry::Ok(r) => match r.status {
                WorkloadStatus::Unauthenticated | WorkloadStatus::Error => true,
                WorkloadStatus::Running
                | WorkloadStatus::AuthRetrying
                | WorkloadStatus::Starting
                | WorkloadStatus::Stopped => false,
            },
            Entry::Corrupt(_) | Entry::Unreadable(_) => true,
        }
    }
}

/// The JSON form of one entry.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonEntry<'a> {
    Ok {
        name: &'a str,
        #[serde(flatten)]
        record: &'a StatusRecord,
    },
    Bad {
        name: &'a str,
        status: &'static str,
        error: &'a str,
    },
}

impl<'a> JsonEntry<'a> {
    fn new(name: &'a str, entry: &'a Entry) -> Self {
        match entry {
            Entry::Ok(record) => JsonEntry::Ok { name, record },
            Entry::Corrupt(error) => JsonEntry::Bad {
                name,
                status: "corrupt",
                error,
            },
            Entry::Unreadable(error) => JsonEntry::Bad {
                name,
                status: "unreadable",
                error,
            },
        }
    }
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: &StatusArgs) -> anyhow::Result<u8> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => tokenvisor::config::default_status_dir(&|var| std::env::var(var).ok()).ok_or_else(
            || {
                usage_error(
                    "status",
                    ErrorKind::MissingRequiredArgument,
                    "cannot tell the default status directory: neither XDG_DATA_HOME nor HOME is \
                 set; pass --dir DIR"
                        .to_owned(),
                )
            },
        )?,
    };
    match std::fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(usage_error(
                "status",
                ErrorKind::ValueValidation,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(usage_error(
                "status",
                ErrorKind::ValueValidation,
                format!(
                    "status directory {} does not exist (no workload has run with it yet, or \
                     the daemon uses another service.status_dir: pass --dir DIR)",
                    dir.display()
                ),
            ));
        }
        Err(e) => {
            return Err(usage_error(
                "status",
                ErrorKind::Io,
                format!("cannot read status directory {}: {e}", dir.display()),
            ));
        }
    }

    let entries: Vec<(WorkloadName, Entry)> = match &args.name {
        Some(name) => {
            let name = WorkloadName::new(name).map_err(|e| {
                usage_error(
                    "status",
                    ErrorKind::ValueValidation,
                    format!("invalid workload name {:?}: {e}", safe_text(name)),
                )
            })?;
            match read_entry(&tokenvisor::status_store::path_for(&dir, &name)) {
                Some(entry) => vec![(name, entry)],
                None => {
                    return Err(usage_error(
                        "status",
                        ErrorKind::ValueValidation,
                        format!(
                            "unknown workload {}: there is no {} in {}",
                            name.as_str(),
                            file_name(&name),
                            dir.display()
                        ),
                    ));
                }
            }
        }
        None => list(&dir).map_err(|e| {
            usage_error(
                "status",
                ErrorKind::Io,
                format!("cannot list status directory {}: {e}", dir.display()),
            )
        })?,
    };

    if args.json {
        let json = match (&args.name, entries.first()) {
            (Some(_), Some((name, entry))) => {
                serde_json::to_string_pretty(&JsonEntry::new(name.as_str(), entry))?
            }
            (Some(_) | None, _) => {
                let all: Vec<JsonEntry<'_>> = entries
                    .iter()
                    .map(|(name, entry)| JsonEntry::new(name.as_str(), entry))
                    .collect();
                serde_json::to_string_pretty(&all)?
            }
        };
        println!("{json}");
    } else if entries.is_empty() {
        eprintln!("no status files in {}", dir.display());
    } else {
        print!("{}", table(&entries, now()));
    }

    Ok(if entries.iter().any(|(_, e)| e.needs_attention()) {
        EXIT_PROBLEM
    } else {
        0
    })
}

fn file_name(name: &WorkloadName) -> String {
    format!("{}.json", name.as_str())
}

/// Every `<name>.json` of `dir` whose stem is a valid workload name, sorted by name.
/// Temp files of interrupted writes (`.<name>.json.XXXXXX`) and set-aside corrupt files
/// (`<name>.json.corrupted`) do not end in `.json` and are not listed.
fn list(dir: &Path) -> io::Result<Vec<(WorkloadName, Entry)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(stem) = file_name.as_bytes().strip_suffix(b".json") else {
            continue;
        };
        let Some(name) = std::str::from_utf8(stem)
            .ok()
            .and_then(|s| WorkloadName::new(s).ok())
        else {
            continue;
        };
        if let Some(read) = read_entry(&entry.path()) {
            out.push((name, read));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Reads one status file; `None` when it does not exist (or vanished since the listing).
fn read_entry(path: &Path) -> Option<Entry> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Entry::Unreadable(format!("cannot read: {}", e.kind()))),
    };
    match file.metadata() {
        Ok(meta) if !meta.is_file() => {
            return Some(Entry::Unreadable("not a regular file".to_owned()));
        }
        Ok(_) => {}
        Err(e) => return Some(Entry::Unreadable(format!("cannot read: {}", e.kind()))),
    }
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
        return Some(Entry::Unreadable(format!("cannot read: {}", e.kind())));
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Some(Entry::Corrupt(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Some(match StatusRecord::from_json(&bytes) {
        Ok(record) => Entry::Ok(Box::new(record)),
        Err(e) => Entry::Corrupt(describe_parse_error(&e)),
    })
}

/// Why a file did not parse, without quoting any of its bytes (serde's messages may quote
/// values, e.g. an unknown variant).
fn describe_parse_error(e: &RecordError) -> String {
    match e {
        RecordError::Parse(e) => {
            let what = match e.classify() {
                serde_json::error::Category::Io => "read error",
                serde_json::error::Category::Syntax => "not JSON: syntax error",
                serde_json::error::Category::Data => "not a status record: unexpected data",
                serde_json::error::Category::Eof => "truncated JSON",
            };
            format!("{what} at line {} column {}", e.line(), e.column())
        }
        RecordError::Schema { .. } => e.to_string(),
    }
}

/// The table of `entries`, with times relative to `now`.
fn table(entries: &[(WorkloadName, Entry)], now: Timestamp) -> String {
    let mut t = Table::new(&[
        "NAME",
        "STATUS",
        "STATE",
        "EXPIRY / NEXT ATTEMPT",
        "LAST ERROR",
    ]);
    for (name, entry) in entries {
        let row = match entry {
            Entry::Ok(record) => {
                let state = record
                    .token
                    .as_ref()
                    .map_or("-", |token| token.state.as_str());
                vec![
                    name.as_str().to_owned(),
                    record.status.as_str().to_owned(),
                    state.to_owned(),
                    when(record, now),
                    truncate_chars(&safe_text(&last_error(record)), ERROR_CELL_CHARS),
                ]
            }
            Entry::Corrupt(reason) => vec![
                name.as_str().to_owned(),
                "corrupt".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                truncate_chars(reason, ERROR_CELL_CHARS),
            ],
            Entry::Unreadable(reason) => vec![
                name.as_str().to_owned(),
                "unreadable".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                truncate_chars(reason, ERROR_CELL_CHARS),
            ],
        };
        t.row(&row);
    }
    t.render()
}

/// The time that matters in the record's state, relative and absolute.
fn when(record: &StatusRecord, now: Timestamp) -> String {
    let at = |label: &str, t: Timestamp| format!("{label} {} ({})", relative(t, now), absolute(t));
    let Some(token) = &record.token else {
        return "-".to_owned();
    };
    match token.state {
        TokenState::TransientBackoff => match token.next_attempt_at {
            Some(t) if t >= now => at("next attempt", t),
            Some(t) => format!(
                "next attempt overdue by {} ({})",
                compact_duration(now.since(t)),
                absolute(t)
            ),
            None => "-".to_owned(),
        },
        TokenState::Healthy | TokenState::Refreshing => match token.expires_at {
            Some(t) if t > now => at("expires", t),
            Some(t) => at("expired", t),
            None => "-".to_owned(),
        },
        TokenState::Unauthenticated | TokenState::Stopped => match token.since {
            Some(t) => at("since", t),
            None => "-".to_owned(),
        },
    }
}

/// The last error, or the status context when there is none.
fn last_error(record: &StatusRecord) -> String {
    match record.token.as_ref().and_then(|t| t.last_error.as_ref()) {
        Some(e) => describe_last_error(e),
        None => record.status_context.clone(),
    }
}

fn describe_last_error(e: &LastError) -> String {
    // Summaries already name the status and code (`HTTP 400 invalid_grant: …`) or the
    // transport kind (`connect: …`): say only what they do not.
    if e.summary.is_empty() {
        let mut head = e.kind.clone();
        match (e.http_status, &e.error_code) {
            (Some(status), Some(code)) => head.push_str(&format!(" (HTTP {status} {code})")),
            (Some(status), None) => head.push_str(&format!(" (HTTP {status})")),
            (None, Some(code)) => head.push_str(&format!(" ({code})")),
            (None, None) => {}
        }
        head
    } else if e.summary.starts_with(e.kind.as_str()) {
        e.summary.clone()
    } else {
        format!("{}: {}", e.kind, e.summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dir_follows_xdg_then_home() {
        let env = |xdg: Option<&'static str>, home: Option<&'static str>| {
            move |var: &str| match var {
                "XDG_DATA_HOME" => xdg.map(str::to_owned),
                "HOME" => home.map(str::to_owned),
                _ => None,
            }
        };
        assert_eq!(
            tokenvisor::config::default_status_dir(&env(Some("/x"), Some("/h"))),
            Some(PathBuf::from("/x/tokenvisor/statuses"))
        );
        assert_eq!(
            tokenvisor::config::default_status_dir(&env(Some("rel"), Some("/h"))),
            Some(PathBuf::from("/h/.local/share/tokenvisor/statuses"))
        );
        assert_eq!(
            tokenvisor::config::default_status_dir(&env(Some(""), Some("/h"))),
            Some(PathBuf::from("/h/.local/share/tokenvisor/statuses"))
        );
        assert_eq!(
            tokenvisor::config::default_status_dir(&env(None, None)),
            None
        );
    }

    #[test]
    fn parse_errors_never_quote_the_file() {
        let e = StatusRecord::from_json(br#"{"status":"sk-live-SECRET"}"#).unwrap_err();
        let d = describe_parse_error(&e);
        assert!(!d.contains("SECRET"), "{d}");
        assert!(d.contains("line 1"), "{d}");
    }
}
