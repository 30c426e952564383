//! The one atomic-file writer: every file tokenvisor replaces (status files, refresh-token
//! files, the generated admin token) is written here, and nowhere else.
//!
//! A write is: a temp file `.<file name>.XXXXXX` (six ASCII alphanumerics) in the target's
//! directory, created 0600 → one write → chmod 0600 (whatever the umask) → fsync → rename
//! over the target ([`stage`]) or link into place without replacing anything
//! ([`stage_new`]) → fsync of the directory ([`sync_dir`]). Readers see the old file or the
//! new one, never a partial one; the file is never readable by anyone but its owner, not even
//! as a temp; on failure the temp file is removed and the previous file is left as it was.
//!
//! [`stage`] and [`sync_dir`] are separate so that a batch of writes in one directory shares
//! one directory fsync (the status store does); [`write()`] is both. The temp-name pattern is
//! the one recovery sweeps rely on: [`temp_target`] recognises it.
//!
//! [`replace_via_spare`] is the status files' write (views of the state journal, no fsync):
//! instead of a new temp file renamed over the target, which frees the old file's block (on
//! a file system mounted with `discard`, a synchronous discard: ≈ 1 ms per file), it
//! overwrites a per-file spare inode in place and exchanges it with the target
//! (`renameat2(RENAME_EXCHANGE)`, through `rustix`); the old target is the next spare. A
//! spare is only overwritten once it has stopped being the target for a minimum age, so a
//! reader that opened the old target just before the exchange never sees it change.
//!
//! Built on `tempfile` (named temp file + persist). Every function is blocking; async code
//! calls them from `spawn_blocking`.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The mode of every file written here.
pub const FILE_MODE: u32 = 0o600;
/// The length of the random suffix of temp names (`.<file name>.XXXXXX`).
pub const TEMP_SUFFIX_LEN: usize = 6;

/// The step of an atomic write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creating the temp file.
    CreateTemp,
    /// Writing the content to the temp file.
    Write,
    /// Setting the temp file's mode.
    Chmod,
    /// Fsyncing the temp file.
    Fsync,
    /// Renaming (or linking) the temp file over the target.
    Rename,
    /// Fsyncing the directory.
    SyncDir,
}

impl Step {
    /// A short description (`create temp file`, `write`, …), as the status store's errors
    /// name their operation.
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::CreateTemp => "create temp file",
            Step::Write => "write",
            Step::Chmod => "chmod",
            Step::Fsync => "fsync",
            Step::Rename => "rename",
            Step::SyncDir => "fsync directory",
        }
    }
}

/// Why an atomic write failed: the step and the I/O error (never the content).
#[derive(Debug, thiserror::Error)]
#[error("{} failed: {source}", step.as_str())]
pub struct WriteError {
    /// The step that failed.
    pub step: Step,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

impl WriteError {
    fn at(step: Step) -> impl FnOnce(io::Error) -> Self {
        move |source| WriteError { step, source }
    }
}

/// What [`stage_new`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The file was created with the content.
    Created,
    /// The target already existed: nothing was written (the temp file was removed).
    AlreadyExists,
}

/// `.<file name>.`: the prefix of the temp names of writes of `path`.
pub fn temp_prefix(path: &Path) -> OsString {
    let mut prefix = OsString::from(".");
    if let Some(name) = path.file_name() {
        prefix.push(name);
    }
    prefix.push(".");
    prefix
}

/// The target file name of a temp name `.<file name>.XXXXXX` (six ASCII alphanumerics), or
/// `None` when `temp` is not such a name.
pub fn temp_target(temp: &[u8]) -> Option<&[u8]> {
    let rest = temp.strip_prefix(b".")?;
    if rest.len() < TEMP_SUFFIX_LEN + 2 {
        return None;
    }
    let (head, suffix) = rest.split_at(rest.len() - TEMP_SUFFIX_LEN);
    if !suffix.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    head.strip_suffix(b".").filter(|target| !target.is_empty())
}

/// The directory of `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        Some(_) | None => Path::new("."),
    }
}

/// A fsynced 0600 temp file next to `path` holding `content`.
fn temp_with(path: &Path, content: &[u8]) -> Result<tempfile::NamedTempFile, WriteError> {
    temp_with_sync(path, content, true)
}

/// [`temp_with`], the fsync of the temp file only when `sync`.
fn temp_with_sync(
    path: &Path,
    content: &[u8],
    sync: bool,
) -> Result<tempfile::NamedTempFile, WriteError> {
    let mut temp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .rand_bytes(TEMP_SUFFIX_LEN)
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir_of(path))
        .map_err(WriteError::at(Step::CreateTemp))?;
    temp.write_all(content)
        .map_err(WriteError::at(Step::Write))?;
    let file = temp.as_file();
    // The creation mode is subject to the umask; set it exactly.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(WriteError::at(Step::Chmod))?;
    if sync {
        file.sync_all().map_err(WriteError::at(Step::Fsync))?;
    }
    Ok(temp)
}

/// Replaces `path` with `content` atomically, but not yet durably: every step but the
/// directory fsync (module docs). The rename is durable once [`sync_dir`] of its directory
/// has returned `Ok`. The directory must exist.
pub fn stage(path: &Path, content: &[u8]) -> Result<(), WriteError> {
    // On failure the returned temp file is dropped, which removes it.
    temp_with(path, content)?
        .persist(path)
        .map_err(|e| WriteError::at(Step::Rename)(e.error))?;
    Ok(())
}

/// Replaces `path` with `content` atomically without any fsync: readers see the old file
/// or the new one, never a partial one, but after a power loss either (or, on some file
/// systems, an empty file) may be found. For files that are views of a durable store (the
/// status files, rewritten from the state journal at every start). The directory must exist.
pub fn replace_unsynced(path: &Path, content: &[u8]) -> Result<(), WriteError> {
    temp_with_sync(path, content, false)?
        .persist(path)
        .map_err(|e| WriteError::at(Step::Rename)(e.error))?;
    Ok(())
}

/// What [`replace_via_spare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The spare was overwritten in place and exchanged with the target: the old target is
    /// the next spare, no block was freed.
    Swapped,
    /// There was no usable spare: a new temp file was exchanged with the target, and the old
    /// target became the spare (the unusable spare, if any, was replaced).
    SpareMade,
    /// The spare left being the target less than `min_age` ago (a reader may still hold it
    /// open): a new temp file was renamed over the target, as [`replace_unsynced`] does; the
    /// spare was kept. Also what a file system without `RENAME_EXCHANGE` gets.
    Renamed,
    /// The target did not exist: the new content was renamed into place; no spare is left.
    Created,
}

/// Replaces `path` with `content` atomically, without any fsync (like [`replace_unsynced`]),
/// reusing a spare inode instead of freeing a block: the spare file `spare` (in the same
/// directory) is overwritten in place (from offset 0, then truncated to the content's
/// length, mode set to 0600) and exchanged with `path` by `renameat2(RENAME_EXCHANGE)`;
/// the old target is the next write's spare. On a file system mounted with `discard`, a
/// rename over a written-back file waits for a synchronous discard of its freed block; this
/// frees none.
///
/// The spare is written in place only when it is a regular file with one link whose change
/// time (set by the exchange that made it the spare) is at least `min_age` before `now`:
/// a reader that opened the target before that exchange and is still reading it then is
/// the only one who could see the overwrite. A younger spare: a temp file is renamed over
/// the target ([`Replaced::Renamed`]). A missing or unusable spare (not a regular file,
/// linked elsewhere, a change time in the future): a temp file is exchanged with the target
/// and the old target renamed over the spare ([`Replaced::SpareMade`]).
///
/// Readers see the old file or the new one, never a partial one, so long as none keeps a
/// file open for `min_age` after opening it. The caller must exclude concurrent writers of
/// `path` (the status store holds ToolHive's lock).
///
/// # Errors
/// [`WriteError`] naming the step that failed; the target is left as it was (a spare
/// written but not exchanged holds the new content and is rewritten by the next write).
pub fn replace_via_spare(
    path: &Path,
    spare: &Path,
    content: &[u8],
    min_age: Duration,
    now: SystemTime,
) -> Result<Replaced, WriteError> {
    match open_spare(spare, min_age, now) {
        SpareState::Ready(file) => {
            if !file
                .metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o7777 == FILE_MODE)
            {
                file.set_permissions(Permissions::from_mode(FILE_MODE))
                    .map_err(WriteError::at(Step::Chmod))?;
            }
            file.write_all_at(content, 0)
                .map_err(WriteError::at(Step::Write))?;
            file.set_len(content.len() as u64)
                .map_err(WriteError::at(Step::Write))?;
            drop(file);
            match exchange(spare, path) {
                Ok(()) => Ok(Replaced::Swapped),
                Err(Exchange::NoTarget) => {
                    std::fs::rename(spare, path).map_err(WriteError::at(Step::Rename))?;
                    Ok(Replaced::Created)
                }
                Err(Exchange::Unsupported) => {
                    std::fs::rename(spare, path).map_err(WriteError::at(Step::Rename))?;
                    Ok(Replaced::Renamed)
                }
                Err(Exchange::Failed(e)) => Err(WriteError::at(Step::Rename)(e)),
            }
        }
        SpareState::Young => {
            replace_unsynced(path, content)?;
            Ok(Replaced::Renamed)
        }
        SpareState::Unusable => {
            let temp = temp_with_sync(path, content, false)?.into_temp_path();
            match exchange(&temp, path) {
                Ok(()) => match temp.persist(spare) {
                    Ok(()) => Ok(Replaced::SpareMade),
                    // The target is replaced; the old one (at the temp name) is removed
                    // when the error drops its path.
                    Err(e) => {
                        tracing::debug!(path = %spare.display(), kind = %e.error.kind(), "could not keep a status file's spare");
                        Ok(Replaced::Renamed)
                    }
                },
                Err(Exchange::NoTarget) => {
                    temp.persist(path)
                        .map_err(|e| WriteError::at(Step::Rename)(e.error))?;
                    Ok(Replaced::Created)
                }
                Err(Exchange::Unsupported) => {
                    temp.persist(path)
                        .map_err(|e| WriteError::at(Step::Rename)(e.error))?;
                    Ok(Replaced::Renamed)
                }
                Err(Exchange::Failed(e)) => Err(WriteError::at(Step::Rename)(e)),
            }
        }
    }
}

/// What the spare of [`replace_via_spare`] is good for.
enum SpareState {
    /// A regular file, one link, old enough: open for writing.
    Ready(File),
    /// A regular file that left being the target less than the minimum age ago.
    Young,
    /// Missing, not a regular file, linked elsewhere, unreadable metadata, or a change time
    /// in the future (a clock set back): replaced by the next spare.
    Unusable,
}

fn open_spare(spare: &Path, min_age: Duration, now: SystemTime) -> SpareState {
    // Never through a symbolic link; a FIFO planted there must not block the open.
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let Ok(file) = OpenOptions::new()
        .write(true)
        .custom_flags(flags.bits() as i32)
        .open(spare)
    else {
        return SpareState::Unusable;
    };
    let Ok(meta) = file.metadata() else {
        return SpareState::Unusable;
    };
    if !meta.is_file() || meta.nlink() != 1 {
        return SpareState::Unusable;
    }
    let (Ok(secs), Ok(nanos)) = (
        u64::try_from(meta.ctime()),
        u32::try_from(meta.ctime_nsec()),
    ) else {
        return SpareState::Unusable;
    };
    let changed = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
    match now.duration_since(changed) {
        Ok(age) if age >= min_age => SpareState::Ready(file),
        Ok(_) => SpareState::Young,
        Err(_) => SpareState::Unusable,
    }
}

/// Why `renameat2(RENAME_EXCHANGE)` did not exchange.
enum Exchange {
    /// The target (the second path) does not exist.
    NoTarget,
    /// The file system does not support the exchange.
    Unsupported,
    /// Any other error.
    Failed(io::Error),
}

/// Exchanges the directory entries `a` and `b` atomically.
fn exchange(a: &Path, b: &Path) -> Result<(), Exchange> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::NOENT && a.exists() => Err(Exchange::NoTarget),
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::OPNOTSUPP => {
            Err(Exchange::Unsupported)
        }
        Err(e) => Err(Exchange::Failed(io::Error::from(e))),
    }
}

/// Creates `path` with `content` atomically and durably unless it exists: like `write()`,
/// but the temp file is linked into place without replacing anything, so of two processes
/// creating the same file at once exactly one wins and the other gets
/// [`Created::AlreadyExists`].
///
/// # Errors
/// [`WriteError`] naming the step that failed (nothing is left behind: the temp file is
/// removed).
pub fn stage_new(path: &Path, content: &[u8]) -> Result<Created, WriteError> {
    match temp_with(path, content)?.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            return Ok(Created::AlreadyExists);
        }
        Err(e) => return Err(WriteError::at(Step::Rename)(e.error)),
    }
    sync_dir(dir_of(path))?;
    Ok(Created::Created)
}

/// Fsyncs the directory `dir`, making the renames of [`stage`] in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WriteError::at(Step::SyncDir))
}

/// Replaces `path` with `content` atomically and durably: [`stage`] then [`sync_dir`] of its
/// directory. On failure the previous file is left as it was (or, if only the directory
/// fsync failed, the new file may be in place but is not known durable).
pub fn write(path: &Path, content: &[u8]) -> Result<(), WriteError> {
    stage(path, content)?;
    sync_dir(dir_of(path))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn temp_names_follow_the_pattern_recovery_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt");
        let temp = tempfile::Builder::new()
            .prefix(&temp_prefix(&path))
            .rand_bytes(TEMP_SUFFIX_LEN)
            .tempfile_in(dir.path())
            .unwrap();
        let name = temp.path().file_name().unwrap().as_encoded_bytes().to_vec();
        assert_eq!(temp_target(&name), Some(&b"rt"[..]), "{name:?}");
    }

    #[test]
    fn recognises_temp_names() {
        assert_eq!(temp_target(b".a.json.a1B2c3"), Some(&b"a.json"[..]));
        assert_eq!(temp_target(b".rt.Zz09aa"), Some(&b"rt"[..]));
        assert_eq!(temp_target(b".a.json.a1B2c"), None);
        assert_eq!(temp_target(b".a.json.a1B2c!"), None);
        assert_eq!(temp_target(b"a.json.a1B2c3"), None);
        assert_eq!(temp_target(b"..a1B2c3"), None);
        assert_eq!(temp_target(b".a.jsonXa1B2c3"), None);
        assert_eq!(temp_target(b"."), None);
    }

    #[test]
    fn writes_replace_with_mode_0600_and_leave_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stage_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(stage_new(&path, b"first").unwrap(), Created::Created);
        assert_eq!(stage_new(&path, b"second").unwrap(), Created::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"old").unwrap();
        let missing = dir.path().join("no-such-dir").join("f");
        let e = write(&missing, b"new").unwrap_err();
        assert_eq!(e.step, Step::CreateTemp);
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
