//! Status-file readers: `<dir>/<workload>.json` as the runtime writes it.

use std::path::{Path, PathBuf};

use tokenvisor_core::status::LastError;
use tokenvisor_core::{StatusRecord, WorkloadStatus};

/// The path of a workload's status file.
pub fn status_path(dir: &Path, workload: &str) -> PathBuf {
    dir.join(format!("{workload}.json"))
}

/// The status record of `workload`, if its file exists and parses (a test that corrupts
/// files on purpose, or races a writer of its own, reads with this).
pub fn status_of(dir: &Path, workload: &str) -> Option<StatusRecord> {
    let bytes = std::fs::read(status_path(dir, workload)).ok()?;
    StatusRecord::from_json(&bytes).ok()
}

/// The status record of `workload` if its file exists; panics if it does not parse (the
/// runtime's writes are atomic: a reader never sees a partial file).
pub fn read_status(dir: &Path, workload: &str) -> Option<StatusRecord> {
    let path = status_path(dir, workload);
    let bytes = std::fs::read(&path).ok()?;
    Some(
        StatusRecord::from_json(&bytes)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display())),
    )
}

/// The status record of `workload`; panics if the file is missing or does not parse.
pub fn read_status_file(dir: &Path, workload: &str) -> StatusRecord {
    read_status(dir, workload)
        .unwrap_or_else(|| panic!("no status file {}", status_path(dir, workload).display()))
}

/// Whether `workload`'s status file says `status`.
pub fn status_is(dir: &Path, workload: &str, status: WorkloadStatus) -> bool {
    status_of(dir, workload).is_some_and(|r| r.status == status)
}

/// The last error of a status record.
pub fn last_error(r: &StatusRecord) -> Option<&LastError> {
    r.token.as_ref().and_then(|t| t.last_error.as_ref())
}
