//! Status files on disk: atomic writes and start-up recovery (DESIGN.md §4).
//!
//! Every function here is blocking; async code calls them from `spawn_blocking` (the
//! [persistence actor](crate::persistence) does).
//!
//! - [`ensure_dir`]: create the directory 0700 (and tighten an existing one).
//! - [`write_atomic`]: temp file in `dir` → one write → 0600 → fsync → rename → fsync of the
//!   directory. Readers see the old file or the new one, never a partial one; the file is
//!   never readable by anyone but the owner, not even as a temp. Split in two for batches:
//!   [`write_staged`] (everything up to the rename) and [`sync_dir`] (one directory fsync
//!   makes every staged rename of the batch durable).
//! - [`read`]: one file.
//! - [`recover`]: one pass over the directory at start-up: every `<name>.json` is read,
//!   corrupt files are set aside as `<name>.json.corrupted` and reported, stray temp files of
//!   interrupted writes are removed.
//!
//! Errors ([`StoreError`]) name the path, the operation and the [`io::ErrorKind`]; they never
//! carry file contents (a corrupt file is described by line and column, not by its bytes).

use std::collections::HashMap;
use std::fs::{self, File, Permissions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tokenvisor_core::status::RecordError;
use tokenvisor_core::{StatusRecord, WorkloadName};

/// Mode of the status directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every status file.
pub const FILE_MODE: u32 = 0o600;
/// Files larger than this are not status records: they are treated as corrupt.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The extension of status files.
const EXT: &[u8] = b".json";
/// Appended to a corrupt file's name when it is set aside.
const CORRUPTED_SUFFIX: &str = ".corrupted";
/// The random suffix length of atomic-write-file's temp names (`.<name>.json.XXXXXX`).
const TEMP_SUFFIX_LEN: usize = 6;
/// Below this many files, [`recover`] reads on the calling thread only.
const PARALLEL_THRESHOLD: usize = 512;
/// At most this many reader threads in [`recover`].
const MAX_READERS: usize = 8;

/// Why a status-store operation failed. Names the path, never the contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Creating, inspecting, listing or syncing the status directory failed.
    #[error("status directory {}: {op} failed: {kind}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What was being done (`create`, `chmod`, `list`, …).
        op: &'static str,
        /// The I/O error kind.
        kind: io::ErrorKind,
    },
    /// Reading, writing or renaming one status file failed.
    #[error("status file {}: {op} failed: {kind}", path.display())]
    File {
        /// The file (the target path for writes, not the temp file).
        path: PathBuf,
        /// What was being done (`create temp file`, `write`, `commit`, `read`, …).
        op: &'static str,
        /// The I/O error kind.
        kind: io::ErrorKind,
    },
    /// The file exists but is not a status record.
    #[error("status file {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why, without any of the file's bytes (e.g. `syntax error at line 3 column 7`).
        reason: String,
    },
    /// The blocking writer panicked (a bug); the write is retried like any failure.
    #[error("status file {}: the writer panicked", path.display())]
    Panicked {
        /// The file.
        path: PathBuf,
    },
}

impl StoreError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            StoreError::Dir { path, .. }
            | StoreError::File { path, .. }
            | StoreError::Corrupt { path, .. }
            | StoreError::Panicked { path } => path,
        }
    }

    /// The I/O error kind, for I/O failures.
    pub fn kind(&self) -> Option<io::ErrorKind> {
        match self {
            StoreError::Dir { kind, .. } | StoreError::File { kind, .. } => Some(*kind),
            StoreError::Corrupt { .. } | StoreError::Panicked { .. } => None,
        }
    }

    fn dir(path: &Path, op: &'static str, e: &io::Error) -> Self {
        StoreError::Dir {
            path: path.to_path_buf(),
            op,
            kind: e.kind(),
        }
    }

    fn file(path: &Path, op: &'static str, e: &io::Error) -> Self {
        StoreError::File {
            path: path.to_path_buf(),
            op,
            kind: e.kind(),
        }
    }
}

/// A status file that did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptFile {
    /// Whose file.
    pub name: WorkloadName,
    /// Why it was rejected (no file contents).
    pub reason: String,
    /// Where it was moved (`<name>.json.corrupted`); `None` when the rename failed and the
    /// file is still in place (the failure is logged).
    pub set_aside: Option<PathBuf>,
}

/// A status file that exists but could not be read (permissions, I/O error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableFile {
    /// Whose file.
    pub name: WorkloadName,
    /// The I/O error kind.
    pub kind: io::ErrorKind,
}

/// What [`recover`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every status record that parsed, by workload.
    pub records: HashMap<WorkloadName, StatusRecord>,
    /// Files that did not parse; each was renamed to `<name>.json.corrupted`.
    pub corrupted: Vec<CorruptFile>,
    /// Entries ending in `.json` that are not status files: the stem is not a valid
    /// [`WorkloadName`], or the entry is not a regular file. Left untouched. Other entries
    /// (`*.corrupted`, unrelated files) are ignored without being listed.
    pub skipped: Vec<PathBuf>,
    /// Status files that could not be read; left untouched.
    pub unreadable: Vec<UnreadableFile>,
    /// Leftover temp files of interrupted writes that were removed.
    pub temp_files_removed: usize,
}

/// `<dir>/<name>.json`.
pub fn path_for(dir: &Path, name: &WorkloadName) -> PathBuf {
    let mut file = String::with_capacity(name.as_str().len() + EXT.len());
    file.push_str(name.as_str());
    file.push_str(".json");
    dir.join(file)
}

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is set to 0700.
/// A path that exists but is not a directory is an error of kind
/// [`io::ErrorKind::NotADirectory`].
pub fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if let Err(e) = fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
    {
        // `create_dir_all` reports an existing non-directory as AlreadyExists.
        let kind = if e.kind() == io::ErrorKind::AlreadyExists {
            io::ErrorKind::NotADirectory
        } else {
            e.kind()
        };
        return Err(StoreError::Dir {
            path: dir.to_path_buf(),
            op: "create",
            kind,
        });
    }
    let meta = fs::metadata(dir).map_err(|e| StoreError::dir(dir, "stat", &e))?;
    if !meta.is_dir() {
        return Err(StoreError::Dir {
            path: dir.to_path_buf(),
            op: "create",
            kind: io::ErrorKind::NotADirectory,
        });
    }
    if meta.permissions().mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(|e| StoreError::dir(dir, "chmod", &e))?;
    }
    Ok(())
}

/// Writes `record` to `<dir>/<name>.json` atomically and durably: [`write_staged`] then
/// [`sync_dir`]. On any failure the previous file, if any, is left as it was (or, if only
/// the directory fsync failed, the new file may be in place but is not known durable). The
/// directory must exist (see [`ensure_dir`]).
pub fn write_atomic(
    dir: &Path,
    name: &WorkloadName,
    record: &StatusRecord,
) -> Result<(), StoreError> {
    write_staged(dir, name, record)?;
    sync_dir(dir)
}

/// Replaces `<dir>/<name>.json` with `record` atomically, but not yet durably: a temp file
/// `.<name>.json.XXXXXX` in `dir` (created 0600) → one write of the serialised record →
/// chmod 0600 (whatever the umask) → fsync → rename over the target. Readers see the old file
/// or the new one, never a partial one; on failure the temp file is removed and the previous
/// file is left as it was.
///
/// The rename is durable only once [`sync_dir`] has returned `Ok`: a batch of records is
/// staged one by one and made durable by one directory fsync (DESIGN.md §4's sequence with
/// its last step shared), and no record may be reported durable before that.
pub fn write_staged(
    dir: &Path,
    name: &WorkloadName,
    record: &StatusRecord,
) -> Result<(), StoreError> {
    let bytes = record.to_json();
    let path = path_for(dir, name);
    let mut prefix = String::with_capacity(name.as_str().len() + EXT.len() + 2);
    prefix.push('.');
    prefix.push_str(name.as_str());
    prefix.push_str(".json.");
    let mut temp = tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(TEMP_SUFFIX_LEN)
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
        .map_err(|e| StoreError::file(&path, "create temp file", &e))?;
    temp.write_all(&bytes)
        .map_err(|e| StoreError::file(&path, "write", &e))?;
    let file = temp.as_file();
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(|e| StoreError::file(&path, "chmod", &e))?;
    file.sync_all()
        .map_err(|e| StoreError::file(&path, "fsync", &e))?;
    // On failure the returned temp file is dropped, which removes it.
    temp.persist(&path)
        .map_err(|e| StoreError::file(&path, "rename", &e.error))?;
    Ok(())
}

/// Fsyncs the directory `dir`, making the renames of [`write_staged`] durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::dir(dir, "fsync", &e))
}

/// Reads `<dir>/<name>.json`: `Ok(None)` when it does not exist, [`StoreError::Corrupt`] when
/// it does not parse (the file is left in place; only [`recover`] sets files aside).
pub fn read(dir: &Path, name: &WorkloadName) -> Result<Option<StatusRecord>, StoreError> {
    let path = path_for(dir, name);
    let mut buf = Vec::new();
    match read_bounded(&path, &mut buf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::file(&path, "read", &e)),
    }
    match parse(&buf) {
        Ok(r) => Ok(Some(r)),
        Err(reason) => Err(StoreError::Corrupt { path, reason }),
    }
}

/// Reads every status file in `dir` (one directory listing; large directories are read by a
/// few threads). A file that does not parse is renamed to `<name>.json.corrupted` (replacing
/// an older one) and reported; temp files left by interrupted writes
/// (`.<name>.json.XXXXXX`) are removed; see [`Recovered`] for everything else. A missing
/// directory recovers nothing. If anything was renamed or removed, the directory is fsynced.
///
/// Run it before the persistence actor starts writing to `dir`: a temp file removed under a
/// running writer makes that write fail (it is then retried).
pub fn recover(dir: &Path) -> Result<Recovered, StoreError> {
    let mut out = Recovered::default();
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::dir(dir, "list", &e)),
    };

    let mut names: Vec<WorkloadName> = Vec::new();
    let mut temps: Vec<std::ffi::OsString> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::dir(dir, "list", &e))?;
        let file_name = entry.file_name();
        let bytes = file_name.as_bytes();
        if let Some(stem) = bytes.strip_suffix(EXT) {
            let name = std::str::from_utf8(stem)
                .ok()
                .and_then(|s| WorkloadName::new(s).ok());
            // `file_type` comes from the directory entry itself on Linux (no stat).
            let regular = entry.file_type().is_ok_and(|t| t.is_file());
            match name {
                Some(name) if regular => names.push(name),
                Some(_) | None => out.skipped.push(dir.join(&file_name)),
            }
        } else if is_temp_name(bytes) {
            temps.push(file_name);
        }
    }

    let outcomes = read_all(dir, &names);
    out.records.reserve(outcomes.len());
    let mut changed = false;
    for (name, outcome) in names.into_iter().zip(outcomes) {
        match outcome {
            Ok(record) => {
                out.records.insert(name, record);
            }
            Err(Fail::Corrupt(reason)) => {
                let set_aside = set_aside(dir, &name);
                changed |= set_aside.is_some();
                out.corrupted.push(CorruptFile {
                    name,
                    reason,
                    set_aside,
                });
            }
            Err(Fail::Unreadable(kind)) => {
                tracing::warn!(path = %path_for(dir, &name).display(), %kind, "status file unreadable; left in place");
                out.unreadable.push(UnreadableFile { name, kind });
            }
            Err(Fail::Vanished) => {}
        }
    }

    for temp in temps {
        let path = dir.join(&temp);
        match fs::remove_file(&path) {
            Ok(()) => {
                out.temp_files_removed += 1;
                changed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), kind = %e.kind(), "could not remove a stray temp file");
            }
        }
    }

    if changed {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::dir(dir, "fsync", &e))?;
    }
    Ok(out)
}

/// The result of reading one listed status file.
type Outcome = Result<StatusRecord, Fail>;

/// Why a listed status file yielded no record.
enum Fail {
    /// Did not parse; why.
    Corrupt(String),
    /// Could not be read.
    Unreadable(io::ErrorKind),
    /// Removed between the listing and the read.
    Vanished,
}

/// Reads the files of `names` in order, on up to [`MAX_READERS`] threads when there are many.
fn read_all(dir: &Path, names: &[WorkloadName]) -> Vec<Outcome> {
    let threads = if names.len() < PARALLEL_THRESHOLD {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(MAX_READERS)
    };
    if threads <= 1 {
        return read_chunk(dir, names);
    }
    let chunk = names.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|part| s.spawn(move || read_chunk(dir, part)))
            .collect();
        let mut all = Vec::with_capacity(names.len());
        for (h, part) in handles.into_iter().zip(names.chunks(chunk)) {
            match h.join() {
                Ok(v) => all.extend(v),
                // A panicking reader is a bug; its files are reported, not lost silently.
                Err(_) => all.extend(
                    part.iter()
                        .map(|_| Err(Fail::Unreadable(io::ErrorKind::Other))),
                ),
            }
        }
        all
    })
}

/// Reads a run of files with one reused path and one reused buffer.
fn read_chunk(dir: &Path, names: &[WorkloadName]) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(names.len());
    let mut path = dir.join("x.json");
    let mut file_name = String::with_capacity(128);
    let mut buf = Vec::with_capacity(4096);
    for name in names {
        file_name.clear();
        file_name.push_str(name.as_str());
        file_name.push_str(".json");
        path.set_file_name(&file_name);
        let outcome = match read_bounded(&path, &mut buf) {
            Ok(()) => parse(&buf).map_err(Fail::Corrupt),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Fail::Vanished),
            Err(e) => Err(Fail::Unreadable(e.kind())),
        };
        out.push(outcome);
    }
    out
}

/// Reads a whole file into `buf` (cleared first); a file over [`MAX_FILE_BYTES`] leaves
/// `buf` longer than the limit, which [`parse`] rejects.
fn read_bounded(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let file = File::open(path)?;
    file.take(MAX_FILE_BYTES + 1).read_to_end(buf)?;
    Ok(())
}

/// Parses a record, describing a failure without quoting the bytes.
fn parse(bytes: &[u8]) -> Result<StatusRecord, String> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    StatusRecord::from_json(bytes).map_err(|e| match e {
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
    })
}

/// Renames `<name>.json` to `<name>.json.corrupted`; `None` (logged) on failure.
fn set_aside(dir: &Path, name: &WorkloadName) -> Option<PathBuf> {
    let from = path_for(dir, name);
    let mut to = from.clone().into_os_string();
    to.push(CORRUPTED_SUFFIX);
    let to = PathBuf::from(to);
    match fs::rename(&from, &to) {
        Ok(()) => {
            tracing::warn!(path = %from.display(), to = %to.display(), "corrupt status file set aside");
            Some(to)
        }
        Err(e) => {
            tracing::warn!(path = %from.display(), kind = %e.kind(), "corrupt status file could not be set aside");
            None
        }
    }
}

/// Whether `bytes` is an atomic-write-file temp name of a status file:
/// `.` + a valid workload name + `.json.` + six ASCII alphanumerics.
fn is_temp_name(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b".") else {
        return false;
    };
    if rest.len() < TEMP_SUFFIX_LEN + 1 {
        return false;
    }
    let (head, suffix) = rest.split_at(rest.len() - TEMP_SUFFIX_LEN);
    if !suffix.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let Some(stem) = head.strip_suffix(b".").and_then(|h| h.strip_suffix(EXT)) else {
        return false;
    };
    std::str::from_utf8(stem).is_ok_and(|s| WorkloadName::new(s).is_ok())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn recognises_temp_names() {
        assert!(is_temp_name(b".github-mcp.json.a1B2c3"));
        assert!(!is_temp_name(b".github-mcp.json.a1B2c"));
        assert!(!is_temp_name(b".github-mcp.json.a1B2c!"));
        assert!(!is_temp_name(b"github-mcp.json.a1B2c3"));
        assert!(!is_temp_name(b"..x.json.a1B2c3"));
        assert!(!is_temp_name(b".bad name.json.a1B2c3"));
        assert!(!is_temp_name(b".x.jsonXa1B2c3"));
        assert!(!is_temp_name(b"."));
        assert!(!is_temp_name(OsStr::new(".json.abcdef").as_bytes()));
    }

    #[test]
    fn parse_errors_do_not_quote_the_file() {
        let reason = parse(br#"{"status":"hunter2-secret"}"#).unwrap_err();
        assert!(!reason.contains("hunter2"), "{reason}");
        assert!(reason.contains("line 1"), "{reason}");
    }
}
