//! Credentials: secret sources and the refresh-token store with atomic write-back.
//!
//! - [`read_secret_file`], [`read_secret_env`]: secrets from a file or a variable. Files are
//!   read by the one reader, `tokenvisor_config::secrets` (also the configuration's): a UTF-8
//!   byte order mark, a CR/LF line ending and surrounding whitespace are trimmed (and
//!   reported in [`SecretFileNotes`]); a control character inside the value is an error; a
//!   file readable by group or others is reported too. Its errors become
//!   [`CredentialError`]s here.
//! - [`write_secret_file`]: an atomic, fsynced, mode-0600 write of one secret (used for
//!   rotated refresh tokens and token sink files).
//! - [`CredentialStore`]: one per workload, shared between its token actor and the attempt
//!   tasks. It holds the current client secret and grant under a `generation` counter, writes
//!   rotated refresh tokens back to their file *before* the attempt reports success, accepts
//!   operator-supplied credentials, and picks up an operator's edit of the refresh-token file.
//!
//! Nothing here ever formats a secret: `Debug` prints `…` for every secret, and errors name
//! files and variables, never contents.
//!
//! ## Generations
//!
//! Every change of the credentials bumps the generation. An attempt takes a
//! [`CredentialSnapshot`] (credentials plus generation) before it sends its request; when it
//! comes back with a rotated refresh token it calls [`CredentialStore::store_rotated`] with
//! the generation it started from. If the *refresh token* was replaced in the meantime (by an
//! operator, or by an edited file), the rotated token belongs to a grant nobody uses any
//! more: it is dropped ([`RotateOutcome::Stale`]) and nothing is written. A new client secret
//! alone never drops it: the provider has consumed the old refresh token, so the rotated one
//! is the only one that still works, whatever secret authenticates it.
//!
//! ## One owner
//!
//! At most one request per workload is ever in flight: an attempt holds
//! [`CredentialStore::owner`] from before it takes its snapshot until its rotated token is
//! stored, so an attempt started while another is in flight (new credentials, a restarted
//! actor) waits for it and then presents the token it left. On a final answer the attempt
//! asks [`CredentialStore::current_durable_refresh_token`] whether the durable refresh token
//! changed since its snapshot (someone rotated or replaced it) and, if so, tries that one.
//!
//! ## Files
//!
//! All writes of one workload's refresh-token file are serialised (a `tokio::sync::Mutex`),
//! so a rotation and an operator replacement never interleave. Each write goes through
//! [`crate::atomic`] (a temp file in the same directory, mode 0600 → fsync → rename → fsync of
//! the directory), on the blocking pool. A symbolic link at the target is replaced by a regular file.
//!
//! Client secrets supplied at run time are kept in memory only: the operator updates the
//! secret file (or environment variable, or configuration) so that a restart uses them too.
//!
//! ## Token sink
//!
//! A workload with a `token_sink_file` gets each access token it serves written there
//! ([`CredentialStore::write_token_sink`]), by one writer at a time on the blocking pool: a
//! token published while a write is in progress waits for it, and a token replaced before its
//! write began is never written, so the file never goes back to an older token. A failed write
//! is retried after short pauses, then counted and logged; the next token is written anyway.
//! After its first successful write the sink, like the refresh-token file, removes the temp
//! files that a killed process left next to it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use std::sync::OnceLock;

use ractor::ActorRef;
use tokenvisor_core::write_queue::FileWrite;
use tokenvisor_core::{Secret, WorkloadName};

use crate::journal::{Patch, StoredCredential, TokenHash};
use crate::persistence::{Durability, PersistenceLink, PersistenceMsg};

use crate::spec::{GrantSpec, WorkloadSpec};
use crate::transport::Grant;

use tokenvisor_config::secrets::{self, SecretError};
pub use tokenvisor_config::secrets::{SECRET_FILE_LIMIT, SecretFileNotes};

/// Pauses before the retries of a failed refresh-token write (so at most four attempts).
const WRITE_RETRY_PAUSES: [Duration; 3] = [
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(250),
];

/// Reading, writing or replacing credentials failed. Names files and variables, never values.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A secret file could not be read or holds no usable secret (the one secret-file
    /// reader's error, `tokenvisor_config::secrets`).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The environment variable is not set.
    #[error("environment variable {var} is not set")]
    EnvMissing {
        /// The variable's name.
        var: String,
    },
    /// The environment variable is not valid Unicode.
    #[error("environment variable {var} is not valid Unicode")]
    EnvNotUnicode {
        /// The variable's name.
        var: String,
    },
    /// The environment variable is empty (or holds only whitespace).
    #[error("environment variable {var} is empty")]
    EnvEmpty {
        /// The variable's name.
        var: String,
    },
    /// Writing a secret file failed.
    #[error("cannot write secret file {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// Why (the last attempt's error).
        source: io::Error,
    },
    /// A refresh token was supplied for a workload that uses the client_credentials grant.
    #[error("workload {workload} uses the client_credentials grant and has no refresh token")]
    NotRefreshTokenGrant {
        /// The workload, whose grant is `client_credentials`.
        workload: WorkloadName,
    },
    /// New credentials were requested but none were given.
    #[error("no credentials supplied: give a refresh token, a client secret, or both")]
    NothingSupplied,
    /// A supplied secret is empty.
    #[error("the supplied {what} is empty")]
    EmptySecret {
        /// Which one (`"refresh token"` or `"client secret"`).
        what: &'static str,
    },
    /// A blocking file task panicked or was cancelled.
    #[error("the file task for {} failed: {reason}", path.display())]
    Task {
        /// The file the task was reading or writing.
        path: PathBuf,
        /// The join error, as text.
        reason: String,
    },
}

/// Reads a secret from a file with `read_secret_file_noted`, dropping the notes.
///
/// Blocking; call it from configuration loading or `spawn_blocking`.
///
/// # Errors
/// [`CredentialError`] naming the file: unreadable, larger than [`SECRET_FILE_LIMIT`], not
/// UTF-8, empty, or holding a control character.
pub fn read_secret_file(path: impl AsRef<Path>) -> Result<Secret, CredentialError> {
    Ok(secrets::read_secret_file(path)?)
}

/// Reads a secret from a file with the one reader (`tokenvisor_config::secrets`): trimmed,
/// checked, and what was trimmed noted.
///
/// Blocking; call it from configuration loading or `spawn_blocking`.
///
/// # Errors
/// As [`read_secret_file`].
pub fn read_secret_file_noted(
    path: impl AsRef<Path>,
) -> Result<(Secret, SecretFileNotes), CredentialError> {
    Ok(secrets::read_secret_file_noted(path)?)
}

/// Reads a secret from an environment variable: trailing whitespace removed; unset, empty or
/// non-Unicode is an error.
///
/// # Errors
/// [`CredentialError::EnvMissing`], [`CredentialError::EnvNotUnicode`] or
/// [`CredentialError::EnvEmpty`], naming the variable.
pub fn read_secret_env(var: &str) -> Result<Secret, CredentialError> {
    let value = std::env::var_os(var).ok_or_else(|| CredentialError::EnvMissing {
        var: var.to_owned(),
    })?;
    let value = value
        .into_string()
        .map_err(|_| CredentialError::EnvNotUnicode {
            var: var.to_owned(),
        })?;
    let value = value.trim_end();
    if value.is_empty() {
        return Err(CredentialError::EnvEmpty {
            var: var.to_owned(),
        });
    }
    Ok(Secret::from(value))
}

/// Writes `secret` (exactly its value, no newline) to `path` atomically: a temporary file in
/// the same directory, mode 0600, fsync, rename over `path`, fsync of the directory. Readers
/// see the old content or the new one, never a mix; a failure leaves the old file as it was.
///
/// Blocking; call it from `spawn_blocking`. The directory must exist.
///
/// # Errors
/// [`CredentialError::Write`] when the temp file cannot be created, written, synced or
/// renamed over `path` (the old file is then unchanged).
pub fn write_secret_file(path: &Path, secret: &Secret) -> Result<(), CredentialError> {
    crate::atomic::write(path, secret.expose().as_bytes()).map_err(|e| CredentialError::Write {
        path: path.to_owned(),
        source: e.source,
    })
}

/// Operator-supplied credentials (admin API, CLI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewCredentials {
    /// A new refresh token (refresh_token workloads only); written to the workload's
    /// refresh-token file when it has one.
    pub refresh_token: Option<Secret>,
    /// A new client secret; kept in memory only (update the secret's source for restarts).
    pub client_secret: Option<Secret>,
}

/// The credentials an attempt uses, and the generation they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSnapshot {
    /// The client secret, if the client has one.
    pub client_secret: Option<Secret>,
    /// The grant to send.
    pub grant: Grant,
    /// The generation of these credentials (pass it back to
    /// [`CredentialStore::store_rotated`]).
    pub generation: u64,
}

/// What became of a rotated refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// In memory and, when the workload has a refresh-token file, on disk. Also the answer
    /// when there was nothing to store (the same token again, or a refresh token sent to a
    /// client_credentials workload, which is ignored).
    Stored,
    /// In memory only: every write to the refresh-token file failed. The workload keeps
    /// working; a restart would use the old (probably revoked) token. Log and count it.
    MemoryOnly {
        /// The last write error (names the file, never the token).
        error: String,
    },
    /// The refresh token was replaced since the attempt started: the token was dropped and
    /// nothing was written.
    Stale,
    /// In memory, but the journal commit failed (it is retried with backoff): the token is
    /// not used for a refresh until it is durable, and the workload must not report
    /// `running` ([`CredentialStore::rotate`]).
    NotDurable {
        /// The commit's error (names the file, never the token).
        reason: String,
    },
}

/// A rotated token still to write back to the refresh-token file
/// ([`CredentialStore::rotate`], [`CredentialStore::write_back`]); `Debug` prints `…`.
#[derive(Debug)]
#[must_use = "a rotated token must be written back to the operator's file"]
pub struct WriteBack {
    token: Secret,
    generation: u64,
}

/// How long an attempt waits for the journal to answer a commit.
const COMMIT_WAIT: Duration = Duration::from_secs(60);

/// One workload's credentials. Share it with `Arc`; see the module docs.
pub struct CredentialStore {
    /// The workload these credentials belong to.
    workload: WorkloadName,
    /// True for the refresh_token grant.
    refresh_grant: bool,
    /// The refresh-token file, if the token is kept in one.
    file: Option<PathBuf>,
    /// The current credentials. A std mutex: held only to clone or swap, never across await.
    current: Mutex<Current>,
    /// Serialises every write (and reload) of the refresh-token file.
    file_lock: tokio::sync::Mutex<()>,
    /// Held by the one attempt allowed to talk to the provider (module docs, "One owner").
    owner: tokio::sync::Mutex<()>,
    /// Temp files left next to the file by writes of a killed process were removed (after
    /// this store's first successful write; once).
    swept: AtomicBool,
    /// The writer of the workload's token sink file, if it has one.
    sink: Option<Arc<TokenSink>>,
    /// The persistence actor, once attached ([`CredentialStore::attach_journal`]).
    journal: OnceLock<PersistenceLink>,
    /// `jwt_bearer` / `token_exchange`: the stamp of the platform's token last presented (0:
    /// none yet), so that an unauthenticated workload tries again when the file changes.
    presented: std::sync::atomic::AtomicU64,
}

/// A store resumed from the journal ([`CredentialStore::resume`]).
#[derive(Debug)]
pub struct Resumed {
    /// The store.
    pub store: Arc<CredentialStore>,
    /// True when the configured credentials were taken over the journal's (new or edited
    /// by the operator, or no journal row): the journal must record them, and a stored
    /// access token belongs to the old credentials.
    pub adopted: bool,
}

/// The writer of one token sink file (module docs, "Token sink").
struct TokenSink {
    /// The token sink file.
    path: PathBuf,
    /// The newest token not yet handed to a write.
    pending: Mutex<Option<Secret>>,
    /// A task is writing (and will write what is pending before it ends).
    writing: AtomicBool,
    /// Stale temp files next to the file were removed (once, after the first good write).
    swept: AtomicBool,
}

impl TokenSink {
    fn pending(&self) -> std::sync::MutexGuard<'_, Option<Secret>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(self: &Arc<Self>, token: Secret) {
        *self.pending() = Some(token);
        if self.writing.swap(true, Ordering::AcqRel) {
            return;
        }
        drop(tokio::spawn(Arc::clone(self).drain()));
    }

    /// Writes the pending token (on the blocking pool) until none is left.
    async fn drain(self: Arc<Self>) {
        loop {
            let next = self.pending().take();
            let Some(token) = next else {
                self.writing.store(false, Ordering::Release);
                // A token published after the take and before the store saw `writing` still
                // set and left it to this task: take it over unless another task already did.
                if self.pending().is_none() || self.writing.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            };
            match write_with_retries(&self.path, &token).await {
                Ok(()) => {
                    if !self.swept.swap(true, Ordering::AcqRel) {
                        let path = self.path.clone();
                        let _ = tokio::task::spawn_blocking(move || remove_stale_temp_files(&path))
                            .await;
                    }
                }
                Err(e) => {
                    metrics::counter!(crate::metrics::TOKEN_SINK_FAILURES).increment(1);
                    tracing::warn!(path = %self.path.display(), "cannot write the token sink file: {e}");
                }
            }
        }
    }
}

struct Current {
    client_secret: Option<Secret>,
    refresh_token: Option<Secret>,
    generation: u64,
    /// The generation at which the refresh token last changed (rotation, operator, file):
    /// a rotation from an attempt that started before it is stale.
    token_generation: u64,
    /// What the refresh-token file is believed to hold: the token read at start, the last
    /// token written, or the last content read. A file whose content differs was edited by
    /// someone else; one that still holds this is unchanged, even when the in-memory token
    /// differs (a rotated token whose write failed must not be undone by the old file).
    file_token: Option<Secret>,
    /// The journal update of a rotated refresh token whose commit failed: no refresh is sent
    /// with the token until it is durable ([`CredentialStore::ensure_durable`]).
    undurable: Option<u64>,
    /// The hash of the operator's token as last seen or written (the journal's
    /// `source_hash`): a configured token hashing differently is new credentials.
    source_hash: Option<TokenHash>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.lock();
        f.debug_struct("CredentialStore")
            .field("workload", &self.workload)
            .field(
                "grant",
                &if self.refresh_grant {
                    "refresh_token"
                } else {
                    "client_credentials"
                },
            )
            .field("file", &self.file)
            .field("token_sink", &self.sink.as_ref().map(|s| &s.path))
            .field("generation", &current.generation)
            .field("has_client_secret", &current.client_secret.is_some())
            .finish()
    }
}

impl CredentialStore {
    /// The store for `spec`, at generation 0, holding the spec's client secret and grant.
    pub fn new(spec: &WorkloadSpec) -> Arc<Self> {
        let (refresh_grant, refresh_token, file) = match &spec.grant {
            GrantSpec::RefreshToken { token, file } => (true, Some(token.clone()), file.clone()),
            // The workload-identity grants keep no refresh token: their token is read from the
            // platform's file at every attempt (`workload_identity`).
            GrantSpec::ClientCredentials
            | GrantSpec::JwtBearer { .. }
            | GrantSpec::TokenExchange(_) => (false, None, None),
        };
        Arc::new(CredentialStore {
            workload: spec.name.clone(),
            refresh_grant,
            file_lock: tokio::sync::Mutex::new(()),
            owner: tokio::sync::Mutex::new(()),
            swept: AtomicBool::new(false),
            sink: spec.token_sink_file.clone().map(|path| {
                Arc::new(TokenSink {
                    path,
                    pending: Mutex::new(None),
                    writing: AtomicBool::new(false),
                    swept: AtomicBool::new(false),
                })
            }),
            current: Mutex::new(Current {
                client_secret: spec.client_secret.clone(),
                file_token: file.as_ref().and(refresh_token.clone()),
                source_hash: refresh_token.as_ref().map(TokenHash::of),
                refresh_token,
                generation: 0,
                token_generation: 0,
                undurable: None,
            }),
            file,
            journal: OnceLock::new(),
            presented: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The store for `spec` resumed from its journal row (module docs, "Journal"): the
    /// journal's refresh token and generation win unless the configured token (the
    /// `refresh_token_file`'s content, or the inline value) differs from what tokenvisor last
    /// saw or wrote there; then the configured one is new credentials: adopted, generation
    /// bumped, and [`Resumed::adopted`] is true.
    pub fn resume(spec: &WorkloadSpec, entry: Option<&crate::journal::Entry>) -> Resumed {
        let store = Self::new(spec);
        let Some(entry) = entry else {
            return Resumed {
                store,
                adopted: true,
            };
        };
        let stored = entry.credential.as_ref();
        let adopted = {
            let mut current = store.lock();
            let configured = current.refresh_token.clone();
            let same_source = match (&configured, entry.source_hash) {
                (Some(token), Some(hash)) => TokenHash::of(token) == hash,
                (None, _) => true,
                (Some(_), None) => false,
            };
            let journal_token = stored.and_then(|c| c.refresh_token.clone());
            let generation = stored.map_or(0, |c| c.generation);
            let adopted = match (same_source, journal_token) {
                (true, Some(token)) if store.refresh_grant => {
                    current.refresh_token = Some(token);
                    current.generation = generation;
                    current.source_hash = entry.source_hash;
                    false
                }
                (true | false, Some(_) | None) => {
                    current.generation = generation + u64::from(stored.is_some());
                    configured.is_some() || stored.is_none()
                }
            };
            current.token_generation = current.generation;
            adopted
        };
        Resumed { store, adopted }
    }

    /// The credential in use and the source hash, as a journal row without access token or
    /// status: what a workload removed and added again (a reload that changed it) resumes
    /// from, so it presents the token this store last held, not the configured one.
    pub fn journal_entry(&self) -> crate::journal::Entry {
        let current = self.lock();
        crate::journal::Entry {
            credential: Some(StoredCredential {
                refresh_token: current.refresh_token.clone(),
                generation: current.generation,
            }),
            source_hash: current.source_hash,
            access: None,
            status: None,
        }
    }

    /// The journal patch recording the credential in use and, when `source` is given, the
    /// operator's token as seen or written.
    pub fn journal_patch(&self, source: Option<&Secret>) -> Patch {
        let current = self.lock();
        Patch {
            credential: Some(StoredCredential {
                refresh_token: current.refresh_token.clone(),
                generation: current.generation,
            }),
            source_hash: source.map(TokenHash::of),
            ..Patch::default()
        }
    }

    /// Connects the store to the persistence actor: rotated tokens are committed to the
    /// journal before use, operator changes are journaled. Once; later calls are ignored.
    pub(crate) fn attach_journal(&self, persistence: PersistenceLink) {
        let _ = self.journal.set(persistence);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The workload these credentials belong to.
    pub fn workload(&self) -> &WorkloadName {
        &self.workload
    }

    /// The current credentials and their generation (cheap: a lock held for a clone).
    pub fn snapshot(&self) -> CredentialSnapshot {
        let current = self.lock();
        let grant = match (&current.refresh_token, self.refresh_grant) {
            (Some(token), true) => Grant::RefreshToken(token.clone()),
            (None, true | false) | (Some(_), false) => Grant::ClientCredentials,
        };
        CredentialSnapshot {
            client_secret: current.client_secret.clone(),
            grant,
            generation: current.generation,
        }
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The refresh-token file, if the token is kept in one.
    pub fn file_path(&self) -> Option<PathBuf> {
        self.file.clone()
    }

    /// True when there is a refresh-token file to watch for operator edits
    /// ([`CredentialStore::reload_from_file`]).
    pub fn watches_file(&self) -> bool {
        self.file.is_some()
    }

    /// Records the stamp of the platform token an attempt presents (`workload_identity`).
    pub(crate) fn set_presented(&self, stamp: u64) {
        self.presented
            .store(stamp, std::sync::atomic::Ordering::Release);
    }

    /// The stamp of the platform token last presented (0: none in this process).
    pub(crate) fn presented(&self) -> u64 {
        self.presented.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stores a rotated refresh token received by an attempt that started at `generation`.
    ///
    /// If `generation` is still current: the token replaces the in-memory one and the
    /// generation is bumped; with a journal attached, it is committed there and this waits
    /// for the commit ([`RotateOutcome::NotDurable`] when it failed: the commit is retried
    /// and [`CredentialStore::ensure_durable`] keeps the token from being sent until it is
    /// durable); then the token is written to the refresh-token file (if any), with up to
    /// three retries ([`RotateOutcome::MemoryOnly`] if every write fails and there is no
    /// journal to hold it). If the refresh token was replaced since (an operator's or a
    /// file's new token), the result is [`RotateOutcome::Stale`] and nothing changes; a new
    /// client secret alone does not make it stale. A token equal to the current one changes
    /// nothing and is not written.
    pub async fn store_rotated(&self, generation: u64, new_refresh_token: Secret) -> RotateOutcome {
        let (rotated, write_back) = self.rotate(generation, new_refresh_token).await;
        let file = match write_back {
            Some(w) => self.write_back(w).await,
            None => Ok(()),
        };
        match (rotated, file) {
            (RotateOutcome::Stored, Err(error)) => RotateOutcome::MemoryOnly { error },
            (
                outcome @ (RotateOutcome::Stored
                | RotateOutcome::Stale
                | RotateOutcome::MemoryOnly { .. }
                | RotateOutcome::NotDurable { .. }),
                Ok(()) | Err(_),
            ) => outcome,
        }
    }

    /// The first half of [`CredentialStore::store_rotated`]: the token in memory and, with a
    /// journal, committed (waiting for the commit). Returns the outcome so far
    /// ([`RotateOutcome::Stored`] or [`RotateOutcome::NotDurable`], or `Stale`) and the
    /// write-back to the refresh-token file still to do ([`CredentialStore::write_back`]):
    /// an attempt does it after the commit, since the journal already holds the token (the
    /// file is the operator's view of it); its endpoint permit it released before this.
    pub async fn rotate(
        &self,
        generation: u64,
        new_refresh_token: Secret,
    ) -> (RotateOutcome, Option<WriteBack>) {
        let _file = self.file_lock.lock().await;
        let new_generation = {
            let mut current = self.lock();
            // Stale only when the refresh token itself was replaced since the attempt began.
            if current.token_generation > generation {
                return (RotateOutcome::Stale, None);
            }
            if !self.refresh_grant
                || new_refresh_token.is_empty()
                || current.refresh_token.as_ref() == Some(&new_refresh_token)
            {
                return (RotateOutcome::Stored, None);
            }
            current.refresh_token = Some(new_refresh_token.clone());
            current.generation += 1;
            current.token_generation = current.generation;
            current.generation
        };
        let durable = match self.journal.get() {
            Some(persistence) => (self.commit(persistence.actor(), self.journal_patch(None))).await,
            None => Ok(()),
        };
        // Written to the file even when the journal failed: it may be the only copy left.
        let write_back = self.file.is_some().then_some(WriteBack {
            token: new_refresh_token,
            generation: new_generation,
        });
        match durable {
            Ok(()) => (RotateOutcome::Stored, write_back),
            Err(reason) => (RotateOutcome::NotDurable { reason }, write_back),
        }
    }

    /// Writes a rotated token back to the refresh-token file (atomically, with retries),
    /// unless the credentials changed since (then the newer ones own the file); records what
    /// the file now holds (in memory and, not awaited, in the journal).
    ///
    /// # Errors
    /// The last write error, as text (names the file, never the token).
    pub async fn write_back(&self, write_back: WriteBack) -> Result<(), String> {
        let WriteBack { token, generation } = write_back;
        let Some(path) = &self.file else {
            return Ok(());
        };
        let _file = self.file_lock.lock().await;
        // A newer refresh token (operator, file) owns the file now; a new client secret
        // alone does not.
        if self.lock().token_generation != generation {
            return Ok(());
        }
        write_with_retries(path, &token)
            .await
            .map_err(|e| e.to_string())?;
        self.sweep_stale_temps(path).await;
        {
            let mut current = self.lock();
            current.file_token = Some(token.clone());
            current.source_hash = Some(TokenHash::of(&token));
        }
        if let Some(persistence) = self.journal.get() {
            self.journal_update(
                persistence,
                Patch {
                    source_hash: Some(TokenHash::of(&token)),
                    ..Patch::default()
                },
            );
        }
        Ok(())
    }

    /// Commits `patch` and waits: `Err(reason)` when the commit failed (then the update is
    /// remembered as undurable).
    async fn commit(
        &self,
        persistence: &ActorRef<PersistenceMsg>,
        patch: Patch,
    ) -> Result<(), String> {
        let name = self.workload.clone();
        let answer = persistence
            .call(
                |reply| PersistenceMsg::Commit {
                    name,
                    patch: Box::new(patch),
                    reply,
                },
                Some(COMMIT_WAIT),
            )
            .await;
        self.settle(answer)
    }

    /// Records the outcome of a commit or a wait for one.
    fn settle(
        &self,
        answer: Result<ractor::rpc::CallResult<Durability>, ractor::MessagingErr<PersistenceMsg>>,
    ) -> Result<(), String> {
        let result = match answer {
            Ok(ractor::rpc::CallResult::Success(Durability::Durable)) => Ok(()),
            Ok(ractor::rpc::CallResult::Success(Durability::NotYet { reason, seq })) => {
                Err((reason, Some(seq)))
            }
            Ok(ractor::rpc::CallResult::Timeout) => {
                Err(("the state journal did not answer in time".to_owned(), None))
            }
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
                Err(("the state journal is not running".to_owned(), None))
            }
        };
        let mut current = self.lock();
        match result {
            Ok(_) => {
                current.undurable = None;
                Ok(())
            }
            Err((reason, seq)) => {
                if let Some(seq) = seq {
                    current.undurable = Some(seq);
                } else if current.undurable.is_none() {
                    current.undurable = Some(0);
                }
                Err(reason)
            }
        }
    }

    /// Before a refresh is sent: `Ok` when the refresh token in use is durable (waiting for
    /// a commit retry if an earlier commit of it failed), `Err(reason)` when it still is not
    /// (the refresh must not be sent: a crash would lose the grant).
    ///
    /// # Errors
    /// The failed commit's reason.
    pub async fn ensure_durable(&self) -> Result<(), String> {
        let Some(seq) = self.lock().undurable else {
            return Ok(());
        };
        let Some(persistence) = self.journal.get() else {
            return Ok(());
        };
        let name = self.workload.clone();
        let answer = if seq == 0 {
            // The earlier commit's fate is unknown: commit the credential again.
            return (self.commit(persistence.actor(), self.journal_patch(None))).await;
        } else {
            persistence
                .actor()
                .call(
                    |reply| PersistenceMsg::WaitDurable { name, seq, reply },
                    Some(COMMIT_WAIT),
                )
                .await
        };
        self.settle(answer)
    }

    /// Casts a journal update (not awaited), in order with the workload's status patches.
    fn journal_update(&self, persistence: &PersistenceLink, patch: Patch) {
        let sent = persistence.update(self.workload.clone(), patch, FileWrite::None);
        if sent.is_err() {
            tracing::warn!(workload = %self.workload, "state journal not running: credential change not recorded");
        }
    }

    /// Journals the credential in use after an operator change.
    fn journal_credentials(&self, source: Option<&Secret>) {
        if let Some(persistence) = self.journal.get() {
            self.journal_update(persistence, self.journal_patch(source));
        }
    }

    /// Replaces the credentials with operator-supplied ones and returns the new generation.
    ///
    /// A refresh token is written to the refresh-token file first (atomically, with
    /// retries), when the workload has one; if that fails nothing changes and the error is
    /// returned. A client secret is kept in memory only (see the module docs). A refresh
    /// token for a client_credentials workload, an empty secret, or nothing at all is an
    /// error. The generation is bumped even when the values equal the current ones: the
    /// operator asked for a fresh start.
    ///
    /// # Errors
    /// [`CredentialError::NothingSupplied`], [`CredentialError::EmptySecret`],
    /// [`CredentialError::NotRefreshTokenGrant`], or a write error of the refresh-token file
    /// (then nothing changed).
    pub async fn replace(&self, new: NewCredentials) -> Result<u64, CredentialError> {
        if new.refresh_token.is_none() && new.client_secret.is_none() {
            return Err(CredentialError::NothingSupplied);
        }
        if new.refresh_token.as_ref().is_some_and(Secret::is_empty) {
            return Err(CredentialError::EmptySecret {
                what: "refresh token",
            });
        }
        if new.client_secret.as_ref().is_some_and(Secret::is_empty) {
            return Err(CredentialError::EmptySecret {
                what: "client secret",
            });
        }
        if new.refresh_token.is_some() && !self.refresh_grant {
            return Err(CredentialError::NotRefreshTokenGrant {
                workload: self.workload.clone(),
            });
        }
        let _file = self.file_lock.lock().await;
        let written = match (&new.refresh_token, &self.file) {
            (Some(token), Some(path)) => {
                write_with_retries(path, token).await?;
                self.sweep_stale_temps(path).await;
                true
            }
            (Some(_), None) | (None, Some(_) | None) => false,
        };
        let mut current = self.lock();
        current.generation += 1;
        if let Some(token) = new.refresh_token {
            if written {
                current.file_token = Some(token.clone());
            }
            current.refresh_token = Some(token);
            current.token_generation = current.generation;
        }
        if let Some(secret) = new.client_secret {
            current.client_secret = Some(secret);
        }
        let generation = current.generation;
        let source = current.file_token.clone().filter(|_| written);
        if let Some(token) = &source {
            current.source_hash = Some(TokenHash::of(token));
        }
        drop(current);
        self.journal_credentials(source.as_ref());
        Ok(generation)
    }

    /// Reads the refresh-token file and, if someone changed it since this store last read or
    /// wrote it, adopts its token: returns the new generation. `Ok(None)` when the workload
    /// has no file, or the file is unchanged, or it holds the token already in use.
    ///
    /// An unreadable or empty file is an error and changes nothing.
    ///
    /// # Errors
    /// A read error of the refresh-token file ([`read_secret_file`]'s), or
    /// [`CredentialError::Task`] when the blocking read did not complete.
    pub async fn reload_from_file(&self) -> Result<Option<u64>, CredentialError> {
        let Some(path) = self.file.clone() else {
            return Ok(None);
        };
        let _file = self.file_lock.lock().await;
        let task_path = path.clone();
        let read = tokio::task::spawn_blocking(move || read_secret_file(&task_path))
            .await
            .map_err(|e| CredentialError::Task {
                path,
                reason: e.to_string(),
            })??;
        let mut current = self.lock();
        if current.file_token.as_ref() == Some(&read) {
            return Ok(None);
        }
        current.file_token = Some(read.clone());
        if current.refresh_token.as_ref() == Some(&read) {
            return Ok(None);
        }
        current.refresh_token = Some(read.clone());
        current.generation += 1;
        current.token_generation = current.generation;
        current.source_hash = Some(TokenHash::of(&read));
        let generation = current.generation;
        drop(current);
        self.journal_credentials(Some(&read));
        Ok(Some(generation))
    }

    /// The refresh token as it stands durably now, after adopting an edit of the
    /// refresh-token file ([`CredentialStore::reload_from_file`]); the in-memory one (which
    /// the journal holds) when the workload has no file or the file cannot be read (logged).
    /// The one place an attempt asks "did the refresh token change since my snapshot?" after
    /// a final answer.
    pub async fn current_durable_refresh_token(&self) -> Option<Secret> {
        if let Err(e) = self.reload_from_file().await {
            tracing::warn!(workload = %self.workload, "cannot read the refresh-token file again: {e}");
        }
        self.lock().refresh_token.clone()
    }

    /// Waits until no other attempt of this workload talks to the provider, and holds that
    /// right until the guard drops (module docs, "One owner").
    pub async fn owner(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.owner.lock().await
    }
}

impl CredentialStore {
    /// Hands a newly served access token to the workload's token sink file, if it has one
    /// (module docs, "Token sink"). Returns at once; the write runs on the blocking pool, so
    /// call it inside a tokio runtime (token actors do).
    pub fn write_token_sink(&self, token: &Secret) {
        if let Some(sink) = &self.sink {
            sink.publish(token.clone());
        }
    }

    /// Once per store, after a successful write of `path` (the file lock held, so no write of
    /// this store is in progress): removes the temp files that writes interrupted by a crash
    /// (`kill -9`, power loss) left next to it. Each holds a refresh token and nothing else
    /// would ever remove them.
    async fn sweep_stale_temps(&self, path: &Path) {
        if self.swept.swap(true, Ordering::AcqRel) {
            return;
        }
        let path = path.to_owned();
        let _ = tokio::task::spawn_blocking(move || remove_stale_temp_files(&path)).await;
    }
}

/// Removes the temp files of interrupted atomic writes of `path` (`.<file name>.XXXXXX`, six
/// alphanumerics: [`crate::atomic`]'s names) from its directory; returns how many. Blocking.
fn remove_stale_temp_files(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let name = name.as_encoded_bytes();
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let stale = crate::atomic::temp_target(file_name.as_encoded_bytes()) == Some(name);
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::warn!(path = %path.display(), removed, "removed temp files of interrupted writes of this credential file");
    }
    removed
}

/// Writes on the blocking pool, retrying after short pauses; returns the last error.
async fn write_with_retries(path: &Path, secret: &Secret) -> Result<(), CredentialError> {
    let mut pauses = WRITE_RETRY_PAUSES.iter();
    loop {
        let task_path = path.to_owned();
        let task_secret = secret.clone();
        let result =
            tokio::task::spawn_blocking(move || write_secret_file(&task_path, &task_secret))
                .await
                .unwrap_or_else(|e| {
                    Err(CredentialError::Task {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })
                });
        match (result, pauses.next()) {
            (Ok(()), _) => return Ok(()),
            (Err(e), None) => return Err(e),
            (Err(e), Some(pause)) => {
                tracing::debug!(path = %path.display(), "secret file write failed, retrying: {e}");
                tokio::time::sleep(*pause).await;
            }
        }
    }
}
