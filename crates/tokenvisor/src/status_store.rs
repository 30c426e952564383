//! Status files on disk: the directory's ownership, atomic writes under ToolHive's lock, and
//! start-up recovery.
//!
//! Every function here is blocking; async code calls them from `spawn_blocking` (the
//! persistence actor does).
//!
//! - [`claim_dir`]: makes a directory tokenvisor's at daemon start: a missing one is created
//!   0700; an existing one is used as it is (never chmod-ed, whether it is a symbolic link,
//!   shared with ToolHive or created by the operator); one without the [`MARKER`] file is
//!   accepted only if everything in it is a status file or a ToolHive file, and is refused
//!   with the names of a few foreign entries otherwise; then the marker is locked
//!   (`flock`, held for the life of the process, the PID written in it), so a second daemon
//!   on the same directory fails naming the first one's PID.
//! - [`ensure_dir`]: creates the directory 0700 when it is missing (only a directory it
//!   created is ever chmod-ed).
//! - [`write_view`]: the daemon's write (status files are views of the state journal): under
//!   ToolHive's lock on `<name>.lock` (below), through [`crate::atomic::replace_via_spare`]:
//!   the spare `.<name>.json.spare` written in place (0600) and exchanged with the file, no
//!   fsync ("Spares", below).
//! - [`write_atomic`]: under the same lock, through [`crate::atomic`] (the one atomic-file
//!   writer): temp file in `dir` → one write → 0600 → fsync → rename → fsync of the
//!   directory. Readers see the old file or the new one, never a partial one; the file is
//!   never readable by anyone but the owner, not even as a temp. Split in two for batches:
//!   [`write_staged`] (everything up to the rename) and [`sync_dir`] (one directory fsync
//!   makes every staged rename of the batch durable).
//! - [`read`]: one file.
//! - [`list`] and [`inspect`]: read-only looks at every status file or one (what
//!   `tokenvisor status` shows): nothing is renamed, removed or rewritten.
//! - [`recover`]: one pass over the directory at start-up: every `<name>.json` is read;
//!   corrupt files that are recognisably tokenvisor's are set aside as
//!   `<name>.json.corrupted` and reported, other unparseable files are left untouched and
//!   reported as foreign; stray temp files of tokenvisor's interrupted writes are removed,
//!   and so are spares whose status file is gone. Nothing else in the directory is ever
//!   renamed or removed.
//!
//! ## Sharing the directory with ToolHive
//! ToolHive reads and writes `<dir>/<name>.json` under an exclusive `flock` on
//! `<dir>/<name>.lock` and removes the lock file after each operation. [`write_staged`] takes
//! the same lock without waiting: when ToolHive holds it, the write does not happen and
//! returns [`StoreError::Busy`] (the persistence actor retries that workload later while it
//! writes the others). tokenvisor keeps the lock file after its write (ToolHive removes its
//! own after each operation): creating and removing it took half of a write's directory
//! operations, and its removal serialised the writer threads on the directory's lock. A
//! kept `<name>.lock` is what ToolHive itself leaves between its create and remove, and
//! after a crash (it removes unlocked ones older than 5 minutes at CLI start-up; the next
//! write creates it again), so ToolHive's listing already meets lock files it did not just
//! create; status files are found by their `.json` name. Removing a lock file has a known
//! race, which ToolHive accepts: a process that opened the file before the removal may lock
//! the removed inode while another creates and locks a new one. tokenvisor's side of it is
//! closed: after taking the lock it checks that the path still names the inode it locked,
//! and reopens if not.
//!
//! ## Spares
//! Replacing a file by rename frees the old file's block; on a file system mounted with
//! `discard` (this project's machine) a freed block that was written back waits for a
//! synchronous discard, ≈ 1 ms per file (`docs/BENCHMARKS.md`, round 6). [`write_view`]
//! frees none: each status file has a spare inode `.<name>.json.spare` (the previous
//! version), written in place and swapped in with `renameat2(RENAME_EXCHANGE)`. Why a reader
//! never sees a partial file:
//! - a reader opening `<name>.json` gets the old inode or the new one, both complete (the
//!   spare is written completely before the exchange, which is atomic);
//! - the only inode ever written in place is the spare, and only once it has stopped being
//!   `<name>.json` for [`SPARE_MIN_AGE`] (its change time, set by the exchange): a reader
//!   that opened the file just before that exchange would have to be still reading a
//!   sub-4-KiB file a second later. A spare younger than that (two writes of a workload
//!   within a second) is left alone and a temp file is renamed over the file instead (the
//!   old way, one freed block);
//! - ToolHive reads under a shared `flock` on `<name>.lock`, which excludes the write (the
//!   exclusive lock is held from before the spare is opened until after the exchange);
//!   `tokenvisor status` and the daemon's own reads take no lock and rely on the age rule.
//!
//! Spares do not end in `.json` and start with a dot, so [`list`] skips them, and so does a
//! listing by `*.json` such as ToolHive's; they
//! are 0600 like the files. A crash between writing a spare and the exchange leaves the
//! old file in place (start-up rewrites it from the journal) and a spare that the next write
//! overwrites. [`recover`] removes spares whose status file no longer exists; a spare that
//! is not a regular file, has other links or a change time in the future is replaced by the
//! next write, never written through.
//!
//! ## Whose files are these
//! - A directory is tokenvisor's when it carries [`MARKER`] (`.tokenvisor`, which cannot be a
//!   status file: workload names do not start with a dot). A directory without it is adopted
//!   (the marker is written) only when every entry is a status file (`<name>.json` that
//!   parses as a status record — tokenvisor's of an older version, or ToolHive's), a lock
//!   file (`<name>.lock`), a set-aside copy (`<name>.json.corrupted`), a tokenvisor temp file
//!   (`.<name>.json.XXXXXX`), a spare (`.<name>.json.spare`) or a ToolHive temp file
//!   (`.tmp-…`).
//! - A status file is tokenvisor's when it parses and has a `token` section (ToolHive's have
//!   none). An unparseable one is tokenvisor's only when its bytes contain the `"token"`
//!   member name; any other is left where it is (a workload of that name, if one is
//!   configured, writes its own status there later).
//! - Temp files named `.<name>.json.XXXXXX` (six alphanumerics) and spares
//!   `.<name>.json.spare` are tokenvisor's.
//!
//! Errors ([`StoreError`], [`ClaimError`]) name the path, the operation and the
//! [`io::ErrorKind`]; they never carry file contents (a corrupt file is described by line
//! and column, not by its bytes).

use std::collections::HashMap;
use std::fs::{self, File, Permissions};
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tokenvisor_core::status::RecordError;
use tokenvisor_core::{StatusRecord, WorkloadName};

/// Mode of the status directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every status file.
pub const FILE_MODE: u32 = crate::atomic::FILE_MODE;
/// Files larger than this are not status records: they are treated as corrupt.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The file that marks a directory as tokenvisor's and carries its daemon's lock and PID.
pub const MARKER: &str = ".tokenvisor";

/// The extension of status files.
const EXT: &[u8] = b".json";
/// The extension of ToolHive's per-workload lock files.
const LOCK_EXT: &[u8] = b".lock";
/// The suffix of spare files (`.<name>.json.spare`).
const SPARE_EXT: &[u8] = b".json.spare";
/// How long a spare must have stopped being its status file before [`write_view`] writes
/// it in place: a reader that opened the file just before the exchange that made it the
/// spare has this long to finish reading (status files are read in microseconds).
pub const SPARE_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(1);
/// The prefix of ToolHive's temp files (`fileutils.AtomicWriteFile`).
const TOOLHIVE_TEMP_PREFIX: &[u8] = b".tmp-";
/// How many foreign entries a refusal names.
const FOREIGN_EXAMPLES: usize = 3;
/// Appended to a corrupt file's name when it is set aside.
const CORRUPTED_SUFFIX: &str = ".corrupted";
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
        /// The status directory.
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
        /// The file that did not parse.
        path: PathBuf,
        /// Why, without any of the file's bytes (e.g. `syntax error at line 3 column 7`).
        reason: String,
    },
    /// The blocking writer panicked (a bug); the write is retried like any failure.
    #[error("status file {}: the writer panicked", path.display())]
    Panicked {
        /// The file being written.
        path: PathBuf,
    },
    /// Another process (ToolHive) holds the file's lock (`<name>.lock`): nothing was written.
    #[error("status file {}: locked by another process; not written", path.display())]
    Busy {
        /// The locked status file.
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
            | StoreError::Panicked { path }
            | StoreError::Busy { path } => path,
        }
    }

    /// The I/O error kind, for I/O failures.
    pub fn kind(&self) -> Option<io::ErrorKind> {
        match self {
            StoreError::Dir { kind, .. } | StoreError::File { kind, .. } => Some(*kind),
            StoreError::Corrupt { .. } | StoreError::Panicked { .. } | StoreError::Busy { .. } => {
                None
            }
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
    /// The workload the file is named after.
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
    /// The workload the file is named after.
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
    /// `<name>.json` files that do not parse and are not recognisably tokenvisor's (module
    /// docs, "Whose files are these"); left untouched.
    pub foreign: Vec<PathBuf>,
    /// Leftover temp files of interrupted writes, and spares (`.<name>.json.spare`) whose
    /// status file no longer exists, that were removed.
    pub temp_files_removed: usize,
}

/// `<dir>/<name>.json`.
pub fn path_for(dir: &Path, name: &WorkloadName) -> PathBuf {
    let mut file = String::with_capacity(name.as_str().len() + EXT.len());
    file.push_str(name.as_str());
    file.push_str(".json");
    dir.join(file)
}

/// Creates `dir` (and missing parents) with mode 0700 when it does not exist; returns whether
/// it did. An existing directory (or a symbolic link to one) is used as it is: tokenvisor
/// never chmods a directory it did not create. A path that exists but is not a directory is
/// an error of kind [`io::ErrorKind::NotADirectory`].
///
/// # Errors
/// [`StoreError::Dir`] when the directory cannot be created or inspected, or the path is
/// not a directory.
pub fn ensure_dir(dir: &Path) -> Result<bool, StoreError> {
    let not_a_dir = || StoreError::Dir {
        path: dir.to_path_buf(),
        op: "create",
        kind: io::ErrorKind::NotADirectory,
    };
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(false),
        Ok(_) => return Err(not_a_dir()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::dir(dir, "stat", &e)),
    }
    if let Err(e) = fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
    {
        // `create_dir_all` reports an existing non-directory (a dangling link) as AlreadyExists.
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
    let meta = fs::symlink_metadata(dir).map_err(|e| StoreError::dir(dir, "stat", &e))?;
    if !meta.is_dir() {
        return Err(not_a_dir());
    }
    // Ours: created just now (the umask may have taken bits away, never added them; set the
    // mode exactly).
    if meta.permissions().mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(|e| StoreError::dir(dir, "chmod", &e))?;
    }
    Ok(true)
}

/// Why a status directory cannot be tokenvisor's ([`claim_dir`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// It cannot be created, listed or inspected, or is not a directory.
    #[error(transparent)]
    Dir(#[from] StoreError),
    /// It has no marker and holds entries tokenvisor did not write.
    #[error(
        "status directory {} holds files tokenvisor did not write ({}) and no {MARKER} marker: \
         refusing to use it; choose an empty or new directory for service.status_dir",
        dir.display(), foreign_list(examples, *total)
    )]
    Foreign {
        /// The refused directory.
        dir: PathBuf,
        /// A few of the foreign entries' names, sorted.
        examples: Vec<String>,
        /// How many foreign entries there are.
        total: usize,
    },
    /// Another process holds the directory's lock (or the marker could not be locked).
    #[error(transparent)]
    Locked(#[from] crate::locks::LockError),
}

fn foreign_list(examples: &[String], total: usize) -> String {
    let mut s = examples.join(", ");
    if total > examples.len() {
        s.push_str(&format!(" and {} more", total - examples.len()));
    }
    s
}

impl ClaimError {
    /// The PID of the daemon holding the directory, when that is the reason.
    pub fn holder(&self) -> Option<u32> {
        match self {
            ClaimError::Locked(e) => e.holder(),
            ClaimError::Dir(_) | ClaimError::Foreign { .. } => None,
        }
    }
}

/// What `claim_dir` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirClaim {
    /// The directory did not exist and was created 0700.
    pub created: bool,
    /// The directory had no marker (new, empty, or holding only status and ToolHive files)
    /// and now has one.
    pub adopted: bool,
    /// The existing directory's mode when it lets group or others in (left as it is: status
    /// files are 0600 whatever the directory's mode).
    pub loose_mode: Option<u32>,
}

/// Makes `dir` this process's status directory for the rest of its life (module docs):
/// creates it if missing, refuses one without the [`MARKER`] that holds foreign entries,
/// then locks the marker (creating it) and writes this process's PID in it. A second call
/// in the same process is a no-op. Call it before the first status write and the first token
/// request.
///
/// # Errors
/// [`ClaimError`]: the directory cannot be created or read, it holds foreign entries and
/// no marker, or another process holds its lock.
pub fn claim_dir(dir: &Path) -> Result<DirClaim, ClaimError> {
    let created = ensure_dir(dir)?;
    let marker = dir.join(MARKER);
    let adopted = match fs::symlink_metadata(&marker) {
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let foreign = foreign_entries(dir)?;
            if !foreign.is_empty() {
                let total = foreign.len();
                let mut examples = foreign;
                examples.sort_unstable();
                examples.truncate(FOREIGN_EXAMPLES);
                return Err(ClaimError::Foreign {
                    dir: dir.to_path_buf(),
                    examples,
                    total,
                });
            }
            true
        }
        Err(e) => return Err(StoreError::file(&marker, "stat", &e).into()),
    };
    crate::locks::hold(&marker, "status_dir", dir)?;
    if adopted {
        sync_dir(dir)?;
    }
    let loose_mode = if created {
        None
    } else {
        fs::metadata(dir)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
            .filter(|m| m & 0o077 != 0)
    };
    Ok(DirClaim {
        created,
        adopted,
        loose_mode,
    })
}

/// The names of the entries of `dir` that are neither tokenvisor's nor ToolHive's (module
/// docs, "Whose files are these").
fn foreign_entries(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut foreign = Vec::new();
    let mut buf = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::dir(dir, "list", &e))? {
        let entry = entry.map_err(|e| StoreError::dir(dir, "list", &e))?;
        let file_name = entry.file_name();
        let bytes = file_name.as_bytes();
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        let known = regular
            && if let Some(stem) = bytes.strip_suffix(EXT) {
                is_name(stem)
                    && read_bounded(&entry.path(), &mut buf).is_ok()
                    && parse(&buf).is_ok()
            } else if let Some(stem) = bytes.strip_suffix(LOCK_EXT) {
                is_name(stem)
            } else if let Some(stem) = bytes.strip_suffix(CORRUPTED_SUFFIX.as_bytes()) {
                stem.strip_suffix(EXT).is_some_and(is_name)
            } else if spare_stem(bytes).is_some() {
                true
            } else {
                is_temp_name(bytes) || bytes.starts_with(TOOLHIVE_TEMP_PREFIX)
            };
        if !known {
            foreign.push(file_name.to_string_lossy().into_owned());
        }
    }
    Ok(foreign)
}

/// Whether `bytes` is a valid workload name.
fn is_name(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| WorkloadName::new(s).is_ok())
}

/// `<dir>/<name>.lock`: ToolHive's lock file for `<name>.json`.
pub fn lock_path_for(dir: &Path, name: &WorkloadName) -> PathBuf {
    let mut file = String::with_capacity(name.as_str().len() + LOCK_EXT.len());
    file.push_str(name.as_str());
    file.push_str(".lock");
    dir.join(file)
}

/// Writes `record` to `<dir>/<name>.json` atomically and durably: `write_staged` then
/// `sync_dir`. On any failure the previous file, if any, is left as it was (or, if only
/// the directory fsync failed, the new file may be in place but is not known durable). The
/// directory must exist (see [`ensure_dir`]).
///
/// # Errors
/// [`StoreError::File`] or [`StoreError::Dir`] naming the operation that failed;
/// [`StoreError::Busy`] when another process holds the file's lock.
pub fn write_atomic(
    dir: &Path,
    name: &WorkloadName,
    record: &StatusRecord,
) -> Result<(), StoreError> {
    write_staged(dir, name, record)?;
    sync_dir(dir)
}

/// Replaces `<dir>/<name>.json` with `record` atomically, but not yet durably, under
/// ToolHive's lock: an exclusive `flock` on `<dir>/<name>.lock` taken without waiting (held
/// by another process: [`StoreError::Busy`], nothing written) → a temp file
/// `.<name>.json.XXXXXX` in `dir` (created 0600) → one write of the serialised record →
/// chmod 0600 (whatever the umask) → fsync → rename over the target → unlocked (the lock file
/// kept). Readers see the old file or the new one, never a partial one; on failure
/// the temp file is removed and the previous file is left as it was.
///
/// The rename is durable only once [`sync_dir`] has returned `Ok`: a batch of records is
/// staged one by one and made durable by one directory fsync (the per-file sequence temp →
/// write → fsync → rename → fsync directory, its last step shared), and no record may be
/// reported durable before that.
///
/// # Errors
/// As [`write_atomic`], except that the directory is not synced.
pub fn write_staged(
    dir: &Path,
    name: &WorkloadName,
    record: &StatusRecord,
) -> Result<(), StoreError> {
    let path = path_for(dir, name);
    let lock = lock_for_write(dir, name, &path)?;
    let result = stage_under_lock(record, &path);
    // Released, the lock file kept (module docs, "Sharing the directory with ToolHive").
    drop(lock);
    result
}

/// Takes ToolHive's lock on `<dir>/<name>.lock` without waiting: [`StoreError::Busy`] when
/// another process holds it.
fn lock_for_write(
    dir: &Path,
    name: &WorkloadName,
    path: &Path,
) -> Result<crate::locks::FileLock, StoreError> {
    match crate::locks::FileLock::try_lock(&lock_path_for(dir, name)) {
        Ok(crate::locks::TryLock::Locked(lock)) => Ok(lock),
        Ok(crate::locks::TryLock::Held(_)) => Err(StoreError::Busy {
            path: path.to_path_buf(),
        }),
        Err(e) => {
            let kind = match &e {
                crate::locks::LockError::Io { kind, .. } => *kind,
                crate::locks::LockError::Held { .. } => io::ErrorKind::WouldBlock,
            };
            Err(StoreError::File {
                path: path.to_path_buf(),
                op: "lock",
                kind,
            })
        }
    }
}

/// Replaces `<dir>/<name>.json` with `record` as a view of the state journal, without any
/// fsync (the journal holds the record durably and start-up rewrites every file from it),
/// under ToolHive's lock (held by another process: [`StoreError::Busy`], nothing written),
/// through the spare `.<name>.json.spare` ([`crate::atomic::replace_via_spare`]: written in
/// place, mode 0600, exchanged with the file; a spare that stopped being the file less than
/// [`SPARE_MIN_AGE`] ago is not overwritten: a temp file is renamed instead). Readers see
/// the old file or the new one, never a partial one (module docs, "Spares").
///
/// # Errors
/// As [`write_staged`].
pub fn write_view(
    dir: &Path,
    name: &WorkloadName,
    record: &StatusRecord,
) -> Result<(), StoreError> {
    write_view_aged(
        dir,
        name,
        record,
        SPARE_MIN_AGE,
        std::time::SystemTime::now(),
    )
    .map(|_| ())
}

/// [`write_view`] with the spare's minimum age and the time given (tests).
fn write_view_aged(
    dir: &Path,
    name: &WorkloadName,
    record: &StatusRecord,
    min_age: std::time::Duration,
    now: std::time::SystemTime,
) -> Result<crate::atomic::Replaced, StoreError> {
    let path = path_for(dir, name);
    let lock = lock_for_write(dir, name, &path)?;
    let json = record.to_json();
    let result =
        crate::atomic::replace_via_spare(&path, &spare_path_for(dir, name), &json, min_age, now)
            .map_err(|e| StoreError::File {
                path: path.clone(),
                op: e.step.as_str(),
                kind: e.source.kind(),
            });
    drop(lock);
    result
}

/// `<dir>/.<name>.json.spare`: the inode the next [`write_view`] of `<name>.json` writes
/// in place (module docs, "Spares").
pub fn spare_path_for(dir: &Path, name: &WorkloadName) -> PathBuf {
    let mut file = String::with_capacity(name.as_str().len() + SPARE_EXT.len() + 1);
    file.push('.');
    file.push_str(name.as_str());
    file.push_str(".json.spare");
    dir.join(file)
}

/// The workload name of a spare's file name `.<name>.json.spare`, if it is one.
fn spare_stem(bytes: &[u8]) -> Option<&[u8]> {
    bytes
        .strip_prefix(b".")?
        .strip_suffix(SPARE_EXT)
        .filter(|stem| is_name(stem))
}

/// [`write_staged`]'s steps between taking and releasing the lock.
fn stage_under_lock(record: &StatusRecord, path: &Path) -> Result<(), StoreError> {
    let json = record.to_json();
    crate::atomic::stage(path, &json).map_err(|e| StoreError::File {
        path: path.to_path_buf(),
        op: e.step.as_str(),
        kind: e.source.kind(),
    })
}

/// Fsyncs the directory `dir`, making the renames of [`write_staged`] durable.
///
/// # Errors
/// [`StoreError::Dir`] when the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    crate::atomic::sync_dir(dir).map_err(|e| StoreError::dir(dir, "fsync", &e.source))
}

/// Reads `<dir>/<name>.json`: `Ok(None)` when it does not exist, [`StoreError::Corrupt`] when
/// it does not parse (the file is left in place; only `recover` sets files aside).
///
/// # Errors
/// [`StoreError::File`] when the file exists but cannot be read; [`StoreError::Corrupt`]
/// when it does not parse as a status record.
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

/// What a read-only look at one status file found ([`list`], [`inspect`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Inspected {
    /// The file parsed.
    Record(Box<StatusRecord>),
    /// The file did not parse; why (never the file's bytes).
    Corrupt(String),
    /// The entry exists but is not a regular file (a directory, a socket…).
    NotAFile,
    /// The file exists but could not be read.
    Unreadable(io::ErrorKind),
}

/// Looks at `<dir>/<name>.json` without changing anything: `None` when it does not exist.
/// Unlike [`read`], a corrupt file is a value, and a non-file is told apart.
pub fn inspect(dir: &Path, name: &WorkloadName) -> Option<Inspected> {
    inspect_path(&path_for(dir, name))
}

/// Every `<name>.json` of `dir` whose stem is a valid workload name, read and sorted by
/// name, without renaming, removing or rewriting anything (for readers such as
/// `tokenvisor status`; the daemon's start-up pass is `recover`). Temp files of
/// interrupted writes (`.<name>.json.XXXXXX`) and set-aside corrupt files
/// (`<name>.json.corrupted`) do not end in `.json` and are not listed; a file that vanishes
/// between the listing and its read is left out.
///
/// # Errors
/// [`StoreError`] naming `dir` when the directory cannot be listed (a file that cannot be
/// read is listed as [`Inspected::Unreadable`] instead).
pub fn list(dir: &Path) -> Result<Vec<(WorkloadName, Inspected)>, StoreError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| StoreError::dir(dir, "list", &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::dir(dir, "list", &e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.as_bytes().strip_suffix(EXT).and_then(|stem| {
            std::str::from_utf8(stem)
                .ok()
                .and_then(|s| WorkloadName::new(s).ok())
        }) else {
            continue;
        };
        if let Some(found) = inspect_path(&entry.path()) {
            out.push((name, found));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// [`inspect`] of one path.
fn inspect_path(path: &Path) -> Option<Inspected> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Inspected::Unreadable(e.kind())),
    };
    match file.metadata() {
        Ok(meta) if !meta.is_file() => return Some(Inspected::NotAFile),
        Ok(_) => {}
        Err(e) => return Some(Inspected::Unreadable(e.kind())),
    }
    let mut buf = Vec::new();
    if let Err(e) = file.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf) {
        return Some(Inspected::Unreadable(e.kind()));
    }
    Some(match parse(&buf) {
        Ok(record) => Inspected::Record(Box::new(record)),
        Err(reason) => Inspected::Corrupt(reason),
    })
}

/// Reads every status file in `dir` (one directory listing; large directories are read by a
/// few threads). A file that does not parse is renamed to `<name>.json.corrupted` (replacing
/// an older one) and reported; temp files left by interrupted writes
/// (`.<name>.json.XXXXXX`) are removed; see [`Recovered`] for everything else. A missing
/// directory recovers nothing. If anything was renamed or removed, the directory is fsynced.
///
/// Run it before the persistence actor starts writing to `dir`: a temp file removed under a
/// running writer makes that write fail (it is then retried).
///
/// # Errors
/// [`StoreError::Dir`] when the directory cannot be listed or synced. A file that cannot be
/// read or parsed is reported in [`Recovered`], not as an error.
pub fn recover(dir: &Path) -> Result<Recovered, StoreError> {
    let mut out = Recovered::default();
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::dir(dir, "list", &e)),
    };

    let mut names: Vec<WorkloadName> = Vec::new();
    let mut temps: Vec<std::ffi::OsString> = Vec::new();
    let mut spares: Vec<(std::ffi::OsString, WorkloadName)> = Vec::new();
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
        } else if let Some(name) = spare_stem(bytes)
            .and_then(|stem| std::str::from_utf8(stem).ok())
            .and_then(|s| WorkloadName::new(s).ok())
        {
            spares.push((file_name, name));
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
            Err(Fail::Corrupt(reason, false)) => {
                let path = path_for(dir, &name);
                tracing::warn!(path = %path.display(), "unparseable status file that tokenvisor did not write; left in place: {reason}");
                out.foreign.push(path);
            }
            Err(Fail::Corrupt(reason, true)) => {
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

    // A spare is kept while its status file exists (the next write reuses it); one whose
    // file is gone (removed by someone else, or a crash before the first exchange) is
    // removed like a temp file.
    for (spare, name) in spares {
        if fs::symlink_metadata(path_for(dir, &name))
            .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        {
            temps.push(spare);
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
    /// Did not parse; why, and whether the bytes are recognisably tokenvisor's.
    Corrupt(String, bool),
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
            Ok(()) => parse(&buf).map_err(|reason| Fail::Corrupt(reason, looks_ours(&buf))),
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

/// Whether unparseable status-file bytes are recognisably tokenvisor's: they name the `token`
/// member, which ToolHive's records do not have.
fn looks_ours(bytes: &[u8]) -> bool {
    bytes.windows(TOKEN_MEMBER.len()).any(|w| w == TOKEN_MEMBER)
}

/// The member name only tokenvisor's records carry.
const TOKEN_MEMBER: &[u8] = b"\"token\"";

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

/// Whether `bytes` is the temp name of a status file's atomic write
/// ([`crate::atomic`]: `.` + a valid workload name + `.json.` + six ASCII alphanumerics).
fn is_temp_name(bytes: &[u8]) -> bool {
    crate::atomic::temp_target(bytes)
        .and_then(|target| target.strip_suffix(EXT))
        .is_some_and(is_name)
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

    use std::os::unix::fs::MetadataExt as _;
    use std::time::{Duration, SystemTime};

    use crate::atomic::Replaced;

    fn record(i: u32) -> StatusRecord {
        let json = format!(
            r#"{{"status": "running", "status_context": "n{i}",
                "created_at": "2026-09-21T10:00:00Z", "updated_at": "2026-09-21T10:00:0{d}Z",
                "process_id": {i}}}"#,
            d = i % 10
        );
        StatusRecord::from_json(json.as_bytes()).unwrap()
    }

    fn ino(p: &Path) -> u64 {
        fs::symlink_metadata(p).unwrap().ino()
    }

    /// The spare's life: the first write creates the file, the second keeps the old file as
    /// the spare, later ones write the spare in place and swap it in (its inode becomes the
    /// file's), the file holding the last record every time, 0600.
    #[test]
    fn views_swap_the_spare_in_and_keep_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let (dir, n) = (dir.path(), WorkloadName::new("w").unwrap());
        let (file, spare) = (path_for(dir, &n), spare_path_for(dir, &n));
        let later = SystemTime::now() + Duration::from_secs(3600);
        let write = |i| write_view_aged(dir, &n, &record(i), SPARE_MIN_AGE, later).unwrap();
        assert_eq!(write(1), Replaced::Created);
        let first = ino(&file);
        assert_eq!(write(2), Replaced::SpareMade);
        assert_eq!(ino(&spare), first, "the old file is the spare");
        for i in 3..=12 {
            let was_spare = ino(&spare);
            assert_eq!(write(i), Replaced::Swapped);
            assert_eq!(ino(&file), was_spare, "write {i} reused the spare");
            assert_eq!(read(dir, &n).unwrap(), Some(record(i)));
        }
        for p in [&file, &spare] {
            assert_eq!(
                fs::metadata(p).unwrap().permissions().mode() & 0o7777,
                FILE_MODE
            );
        }
    }

    /// A reader holding the file open while it is replaced twice in quick succession reads
    /// the record it opened: the inode it holds became the spare at the first write and is
    /// too young to be written at the second (a temp file is renamed instead).
    #[test]
    fn a_young_spare_is_never_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (dir, n) = (dir.path(), WorkloadName::new("w").unwrap());
        let file = path_for(dir, &n);
        let later = SystemTime::now() + Duration::from_secs(3600);
        write_view_aged(dir, &n, &record(1), SPARE_MIN_AGE, later).unwrap();
        write_view_aged(dir, &n, &record(2), SPARE_MIN_AGE, later).unwrap();
        let mut reader = File::open(&file).unwrap();
        let held = fs::read(&file).unwrap();
        // The held inode becomes the spare (the older spare looks old enough "later")…
        assert_eq!(
            write_view_aged(dir, &n, &record(3), SPARE_MIN_AGE, later).unwrap(),
            Replaced::Swapped
        );
        // …and is not written through right after.
        let now = SystemTime::now();
        let fourth = write_view_aged(dir, &n, &record(4), SPARE_MIN_AGE, now).unwrap();
        assert_ne!(fourth, Replaced::Swapped);
        let mut seen = Vec::new();
        reader.read_to_end(&mut seen).unwrap();
        assert_eq!(seen, held, "the open file changed under its reader");
        assert_eq!(read(dir, &n).unwrap(), Some(record(4)));
    }

    /// A spare that is not a regular file with one link (a directory, a symbolic link, a
    /// file linked elsewhere) is never written through: it is replaced, and what it pointed
    /// to or shared is left as it was.
    #[test]
    fn an_odd_spare_is_replaced_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let (dir, n) = (dir.path(), WorkloadName::new("w").unwrap());
        let (file, spare) = (path_for(dir, &n), spare_path_for(dir, &n));
        let later = SystemTime::now() + Duration::from_secs(3600);
        write_view_aged(dir, &n, &record(1), SPARE_MIN_AGE, later).unwrap();
        let outside = dir.join("outside");
        fs::write(&outside, b"keep me").unwrap();

        std::os::unix::fs::symlink(&outside, &spare).unwrap();
        let old = ino(&file);
        assert_eq!(
            write_view_aged(dir, &n, &record(2), SPARE_MIN_AGE, later).unwrap(),
            Replaced::SpareMade
        );
        assert_eq!(
            ino(&spare),
            old,
            "the symbolic link was replaced by the old file"
        );

        fs::remove_file(&spare).unwrap();
        fs::hard_link(&outside, &spare).unwrap();
        assert_eq!(
            write_view_aged(dir, &n, &record(3), SPARE_MIN_AGE, later).unwrap(),
            Replaced::SpareMade
        );
        assert_eq!(fs::read(&outside).unwrap(), b"keep me");
        assert_eq!(read(dir, &n).unwrap(), Some(record(3)));

        fs::remove_file(&spare).unwrap();
        fs::create_dir(&spare).unwrap();
        // A directory cannot be renamed over: the write still lands, without a spare kept.
        write_view_aged(dir, &n, &record(4), SPARE_MIN_AGE, later).unwrap();
        assert_eq!(read(dir, &n).unwrap(), Some(record(4)));
    }

    #[test]
    fn recognises_spare_names() {
        assert_eq!(
            spare_stem(b".github-mcp.json.spare"),
            Some(&b"github-mcp"[..])
        );
        assert_eq!(spare_stem(b"github-mcp.json.spare"), None);
        assert_eq!(spare_stem(b".bad name.json.spare"), None);
        assert_eq!(spare_stem(b"..json.spare"), None);
        assert!(!is_temp_name(b".github-mcp.json.spare"));
    }

    #[test]
    fn parse_errors_do_not_quote_the_file() {
        let reason = parse(br#"{"status":"hunter2-secret"}"#).unwrap_err();
        assert!(!reason.contains("hunter2"), "{reason}");
        assert!(reason.contains("line 1"), "{reason}");
    }
}
