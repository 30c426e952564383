//! Status-file readers: `<dir>/<workload>.json` as the runtime writes it, once or
//! continuously ([`DiskWatch`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// Reads one status file over and over while a scenario runs, parsing every version it
/// sees: atomic writes mean a reader never sees a partial file.
pub struct DiskWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<WatchReport>,
}

/// What a [`DiskWatch`] saw.
#[derive(Debug, Default)]
pub struct WatchReport {
    /// Successful reads (the file existed).
    pub reads: u64,
    /// Reads that did not parse, with the reason.
    pub unparsable: Vec<String>,
    /// Every distinct status seen on disk.
    pub statuses: HashSet<WorkloadStatus>,
}

impl DiskWatch {
    /// Starts watching `<dir>/<workload>.json`, reading it every `every` of tokio time.
    pub fn start(dir: &Path, workload: &str, every: Duration) -> DiskWatch {
        let path = status_path(dir, workload);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut report = WatchReport::default();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(bytes) = std::fs::read(&path) {
                    report.reads += 1;
                    match StatusRecord::from_json(&bytes) {
                        Ok(r) => {
                            report.statuses.insert(r.status);
                        }
                        Err(e) => report.unparsable.push(e.to_string()),
                    }
                }
                tokio::time::sleep(every).await;
            }
            report
        });
        DiskWatch { stop, task }
    }

    /// Stops and reports.
    pub async fn finish(self) -> WatchReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .unwrap_or_else(|e| panic!("the disk watcher failed: {e}"))
    }
}
