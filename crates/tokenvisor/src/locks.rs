//! One daemon per status directory and per credential file: exclusive `flock(2)` locks held
//! for the life of the process.
//!
//! - [`FileLock`]: an exclusive, non-blocking `flock` on a lock file (created 0600, never
//!   through a symbolic link), which then holds the owner's PID so a second process can name
//!   it. The kernel drops the lock when the process exits, however it exits, so a lock file
//!   left behind by a killed daemon never blocks the next one.
//! - [`hold`]: takes a lock and keeps it in a process-wide registry until the process exits.
//!   Taking a path this process already holds is a no-op: `flock` locks belong to an open file
//!   description, so a second `open` + `flock` of the same file by the same process would
//!   conflict with itself.
//! - [`hold_credentials`]: holds a workload's [`credential_lock_path`]. Together with the
//!   status directory's marker, these are the locks `startup::acquire_for` takes before a
//!   daemon's first request.
//!
//! ## Why a sibling lock file for refresh-token files
//! A refresh-token file is replaced by a rename on every rotation, so a lock on the file
//! itself would stay on the old inode: a second daemon opening the new file would get a lock
//! of its own. The lock lives on `<refresh_token_file>.lock` instead, which is never renamed
//! and never removed (removing it would let a process that opened it before the removal and
//! one that creates it afresh both hold "the" lock).
//!
//! ## Locks and the same file
//! After the lock is taken, the path is checked to still name the locked inode; if another
//! process removed or replaced the file in between, the open and the lock are tried again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use rustix::fs::{FlockOperation, flock};

use crate::spec::{GrantSpec, WorkloadSpec};

/// Mode of lock files.
const LOCK_FILE_MODE: u32 = 0o600;
/// How often the open-lock-verify sequence is retried when the file keeps being replaced.
const REOPEN_ATTEMPTS: usize = 8;

/// Taking a lock failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{what} {} is in use by another tokenvisor process ({}); stop it, or give this one \
             its own {what}", path.display(), holder_text(*holder))]
    Held {
        /// What the lock protects (`status_dir`, `refresh_token_file`).
        what: &'static str,
        /// The file or directory the lock protects (not the lock file).
        path: PathBuf,
        /// The holder's PID, as it wrote it in the lock file (`None` if unreadable yet).
        holder: Option<u32>,
    },
    /// Opening, locking or writing the lock file failed.
    #[error("cannot lock {}: {op} failed: {kind}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The I/O error kind.
        kind: io::ErrorKind,
    },
}

fn holder_text(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("PID {pid}"),
        None => "PID unknown".to_owned(),
    }
}

impl LockError {
    /// The holder's PID, when the lock is held by another process that wrote it.
    pub fn holder(&self) -> Option<u32> {
        match self {
            LockError::Held { holder, .. } => *holder,
            LockError::Io { .. } => None,
        }
    }
}

/// What [`FileLock::try_lock`] found.
#[derive(Debug)]
pub enum TryLock {
    /// The lock is ours.
    Locked(FileLock),
    /// Another process (or another open file description) holds it; its PID if written.
    Held(Option<u32>),
}

/// An exclusive `flock` on one file, released when dropped (or when the process exits).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Opens (creating it 0600 if missing, never following a symbolic link) and tries to lock
    /// `path` without waiting. Does not write anything into the file.
    ///
    /// # Errors
    /// [`LockError::Io`] when the lock file cannot be opened or created, or is a symbolic
    /// link. A lock held by another process is not an error: it is [`TryLock::Held`].
    pub fn try_lock(path: &Path) -> Result<TryLock, LockError> {
        let io_err = |op: &'static str, e: &io::Error| LockError::Io {
            path: path.to_path_buf(),
            op,
            kind: e.kind(),
        };
        for _ in 0..REOPEN_ATTEMPTS {
            // The lock is held through a read-only descriptor: a file open for writing would
            // keep the filesystem from being remounted read-only for as long as we run.
            let file = match OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(LOCK_FILE_MODE)
                        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                        .open(path)
                    {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io_err("create", &e)),
                    }
                    continue;
                }
                Err(e) => return Err(io_err("open", &e)),
            };
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    return Ok(TryLock::Held(read_pid(path)));
                }
                Err(e) => return Err(io_err("flock", &io::Error::from(e))),
            }
            let ours = file.metadata().map_err(|e| io_err("stat", &e))?;
            match std::fs::symlink_metadata(path) {
                Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                    return Ok(TryLock::Locked(FileLock {
                        file,
                        path: path.to_path_buf(),
                    }));
                }
                // Removed or replaced between our open and our lock: we hold a lock nobody
                // else will look at. Try again on what the path names now.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("stat", &e)),
            }
        }
        Err(LockError::Io {
            path: path.to_path_buf(),
            op: "lock (the file kept being replaced)",
            kind: io::ErrorKind::WouldBlock,
        })
    }

    /// Writes this process's PID into the lock file (replacing its content, in place: the
    /// lock stays on this file), for [`LockError::Held`] messages of other processes.
    ///
    /// # Errors
    /// [`LockError::Io`] when the file cannot be truncated or written.
    pub fn write_pid(&mut self) -> Result<(), LockError> {
        let pid = std::process::id();
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&self.path)
            .and_then(|mut f| f.write_all(format!("{pid}\n").as_bytes()))
            .map_err(|e| LockError::Io {
                path: self.path.clone(),
                op: "write PID",
                kind: e.kind(),
            })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file while still holding the lock, then releases it (as ToolHive
    /// does after each status operation). A process that opened the file before the removal
    /// may then lock the removed inode; [`FileLock::try_lock`] checks for that and reopens.
    ///
    /// # Errors
    /// The I/O error of the removal (the lock is released either way).
    pub fn remove(self) -> io::Result<()> {
        let result = match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        drop(self.file);
        result
    }
}

/// The PID written in a lock file, if it holds one.
fn read_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path)
        .ok()?
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

/// The locks this process holds for its lifetime, by lock-file path.
fn registry() -> std::sync::MutexGuard<'static, HashMap<PathBuf, FileLock>> {
    static HELD: OnceLock<Mutex<HashMap<PathBuf, FileLock>>> = OnceLock::new();
    HELD.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Takes the lock on `lock_file` for the rest of the process's life and writes this
/// process's PID into it; a lock this process already holds is fine. `what` and `protects`
/// name, in a [`LockError::Held`], what the lock is for.
///
/// # Errors
/// [`LockError::Held`] (naming the holder's PID when known) when another process holds
/// it; [`LockError::Io`] when the lock file is unusable.
pub fn hold(lock_file: &Path, what: &'static str, protects: &Path) -> Result<(), LockError> {
    let mut held = registry();
    if held.contains_key(lock_file) {
        return Ok(());
    }
    match FileLock::try_lock(lock_file)? {
        TryLock::Locked(mut lock) => {
            lock.write_pid()?;
            held.insert(lock_file.to_path_buf(), lock);
            Ok(())
        }
        TryLock::Held(holder) => Err(LockError::Held {
            what,
            path: protects.to_path_buf(),
            holder,
        }),
    }
}

/// `<refresh_token_file>.lock`: the lock that makes a refresh-token file one daemon's
/// (module docs).
pub fn credential_lock_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Takes the lock on a workload's refresh-token file (if it has one) for the life of the
/// process. Call it before the workload's first request.
///
/// # Errors
/// As `hold`, for `<refresh_token_file>.lock`.
pub fn hold_credentials(spec: &WorkloadSpec) -> Result<(), LockError> {
    match &spec.grant {
        GrantSpec::RefreshToken {
            file: Some(file), ..
        } => hold(&credential_lock_path(file), "refresh_token_file", file),
        // The workload-identity grants' files are the platform's, only read: no lock.
        GrantSpec::RefreshToken { file: None, .. }
        | GrantSpec::ClientCredentials
        | GrantSpec::JwtBearer { .. }
        | GrantSpec::TokenExchange(_) => Ok(()),
    }
}
