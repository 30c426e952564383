//! The locks a daemon takes before its first request: [`acquire_for`] claims the status
//! directory (its marker, [`claim_dir`]) and holds each workload's refresh-token file lock
//! ([`hold_credentials`]). Its own module because it joins the two lower ones, [`locks`](crate::locks)
//! and [`status_store`](crate::status_store), which must not know each other both ways.

use std::path::Path;

use crate::locks::{LockError, hold_credentials};
use crate::spec::WorkloadSpec;
use crate::status_store::{ClaimError, DirClaim, claim_dir};

/// Why a daemon cannot start: its status directory or a credential file belongs to someone
/// else.
#[derive(Debug, thiserror::Error)]
pub enum StartupLockError {
    /// The status directory is refused (foreign content, not a directory, I/O) or locked.
    #[error(transparent)]
    StatusDir(#[from] ClaimError),
    /// A refresh-token file is locked by another process (or its lock file is unusable).
    #[error("workload {workload}: {source}")]
    Credentials {
        /// The workload whose refresh-token file is locked.
        workload: tokenvisor_core::WorkloadName,
        /// The lock failure (it names the holder's PID when known).
        source: LockError,
    },
}

impl StartupLockError {
    /// The PID of the process holding the lock, when that is the reason.
    pub fn holder(&self) -> Option<u32> {
        match self {
            StartupLockError::StatusDir(e) => e.holder(),
            StartupLockError::Credentials { source, .. } => source.holder(),
        }
    }
}

/// Takes every lock a daemon needs before its first request: the status directory (claimed
/// and locked through its marker, see `claim_dir`) and each workload's
/// refresh-token file. Held until the process exits. Blocking: call it before the async
/// runtime starts, or from `spawn_blocking`.
///
/// # Errors
/// [`StartupLockError::StatusDir`] when the status directory is refused or locked by
/// another daemon; [`StartupLockError::Credentials`] naming the first workload whose
/// refresh-token file is locked.
pub fn acquire_for(
    status_dir: &Path,
    workloads: &[WorkloadSpec],
) -> Result<DirClaim, StartupLockError> {
    let claim = claim_dir(status_dir)?;
    for spec in workloads {
        hold_credentials(spec).map_err(|source| StartupLockError::Credentials {
            workload: spec.name.clone(),
            source,
        })?;
    }
    Ok(claim)
}
