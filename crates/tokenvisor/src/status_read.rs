//! Status files as `tokenvisor status` shows them: the status store's read-only
//! [`list`](crate::status_store::list) and [`inspect`](crate::status_store::inspect) turned
//! into the core's [`StatusEntry`] (a record, or why the file is corrupt or unreadable).
//! Nothing here renames, removes or rewrites a file: a corrupt one is reported, not set
//! aside (that is the daemon's start-up recovery). The views over the entries (table,
//! summary) are pure: `tokenvisor_core::status_view`.

use std::path::Path;

use tokenvisor_core::WorkloadName;
use tokenvisor_core::status_view::StatusEntry;

use crate::status_store::{self, Inspected, StoreError};

/// The entry for what the status store found.
fn entry(found: Inspected) -> StatusEntry {
    match found {
        Inspected::Record(record) => StatusEntry::Ok(record),
        Inspected::Corrupt(reason) => StatusEntry::Corrupt(reason),
        Inspected::NotAFile => StatusEntry::Unreadable("not a regular file".to_owned()),
        Inspected::Unreadable(kind) => StatusEntry::Unreadable(format!("cannot read: {kind}")),
    }
}

/// Every status file of `dir`, sorted by name, read through the status store without
/// changing anything.
///
/// # Errors
/// [`StoreError`] naming `dir` when the directory cannot be listed (a file that cannot be
/// read is an entry, [`StatusEntry::Unreadable`]).
pub fn read_entries(dir: &Path) -> Result<Vec<(WorkloadName, StatusEntry)>, StoreError> {
    Ok(status_store::list(dir)?
        .into_iter()
        .map(|(name, found)| (name, entry(found)))
        .collect())
}

/// The status file of `name` in `dir`; `None` when there is none.
#[must_use]
pub fn inspect_entry(dir: &Path, name: &WorkloadName) -> Option<StatusEntry> {
    status_store::inspect(dir, name).map(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_never_quote_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.json"), br#"{"status":"sk-live-SECRET"}"#).unwrap();
        let name = WorkloadName::new("w").unwrap();
        let Some(StatusEntry::Corrupt(d)) = inspect_entry(dir.path(), &name) else {
            panic!("not reported corrupt");
        };
        assert!(!d.contains("SECRET"), "{d}");
        assert!(d.contains("line 1"), "{d}");
    }

    #[test]
    fn listing_changes_nothing_and_reports_every_kind_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("bad.json"), b"{\"token\": [").unwrap();
        std::fs::create_dir(d.join("dir.json")).unwrap();
        std::fs::write(d.join(".bad.json.a1B2c3"), b"").unwrap();
        std::fs::write(d.join("bad.json.corrupted"), b"").unwrap();
        let before = names(d);
        let listed = read_entries(d).unwrap();
        let shown: Vec<(&str, String)> = listed
            .iter()
            .map(|(n, e)| (n.as_str(), format!("{e:?}")))
            .collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert_eq!(shown[0].0, "bad");
        assert!(shown[0].1.starts_with("Corrupt("), "{shown:?}");
        assert_eq!(
            shown[1],
            ("dir", r#"Unreadable("not a regular file")"#.to_owned())
        );
        assert_eq!(names(d), before);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}
