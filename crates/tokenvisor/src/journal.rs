//! The state journal: one SQLite database (WAL mode, `synchronous=FULL`) holding, per
//! workload, everything a restart needs.
//!
//! | column | what |
//! | --- | --- |
//! | `refresh_token`, `generation` | the credential in use and its generation |
//! | `source_hash` | SHA-256 of the refresh token as the operator last gave it (the configured or file token at adoption) or as tokenvisor last wrote it to the `refresh_token_file`: a file whose token hashes differently was edited by someone else |
//! | `access_token`, `token_type`, `expires_at` | the token served, so a restart serves it again at once |
//! | `status` | the status record (JSON, the status file's format); status files are views of it |
//!
//! A batch of [`Patch`]es is committed in one transaction ([`Journal::commit`]): one WAL
//! append and one fsync for the whole batch (group commit), on the blocking pool, one
//! statement per patch (an upsert of the columns the patch sets). Blocking throughout: call
//! it from `spawn_blocking`.
//!
//! ## Secrets at rest
//! Refresh and access tokens are stored in clear, protected as the refresh-token files are:
//! the directory is created 0700 and the database, its `-wal` and `-shm` files are 0600
//! (set again after each open and checkpoint, whatever the umask); nothing here logs or
//! formats a value, and errors name the file and the operation only.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension as _, params};
use sha2::{Digest as _, Sha256};
use tokenvisor_core::write_queue::Coalesce;
use tokenvisor_core::{Secret, StatusRecord, Timestamp, WorkloadName};

/// The journal's file name in its directory.
pub const FILE_NAME: &str = "journal.sqlite3";

/// The journal directory for a daemon whose status directory is `status_dir`:
/// `<state_dir>/journal/<16 hex digits of the SHA-256 of the status directory's path>`. One
/// journal per status directory: two daemons sharing a state directory (as they share the
/// generated admin token) but serving different status directories never share rows, and
/// the status directory's lock (one daemon per status directory) makes each journal's
/// writer unique.
pub fn dir_for(state_dir: &Path, status_dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(status_dir).unwrap_or_else(|_| status_dir.to_path_buf());
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    state_dir.join("journal").join(hex)
}

/// Writes one patch: a new row takes the columns the patch sets (the others stay NULL); an
/// existing row changes only those (`?2`, `?5`, `?7`, `?11`: whether the patch sets the
/// credential, the source hash, the served token, the status).
const UPSERT: &str = "INSERT INTO workloads \
     (name, refresh_token, generation, source_hash, access_token, token_type, expires_at, status) \
     VALUES (?1, ?3, ?4, ?6, ?8, ?9, ?10, ?12) \
     ON CONFLICT(name) DO UPDATE SET \
     refresh_token = iif(?2, excluded.refresh_token, refresh_token), \
     generation = iif(?2, excluded.generation, generation), \
     source_hash = iif(?5, excluded.source_hash, source_hash), \
     access_token = iif(?7, excluded.access_token, access_token), \
     token_type = iif(?7, excluded.token_type, token_type), \
     expires_at = iif(?7, excluded.expires_at, expires_at), \
     status = iif(?11, excluded.status, status)";

/// The schema version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// A SHA-256 digest of a refresh token (what the journal keeps of the operator's file).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &Secret) -> Self {
        TokenHash(Sha256::digest(token.expose().as_bytes()).into())
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(…)")
    }
}

/// A stored access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccess {
    /// The token (Debug prints `…`).
    pub token: Secret,
    /// Its `token_type`.
    pub token_type: Arc<str>,
    /// When it expires.
    pub expires_at: Timestamp,
}

/// A stored credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The refresh token in use (`None` for client_credentials).
    pub refresh_token: Option<Secret>,
    /// Its generation.
    pub generation: u64,
}

/// One workload's row, as read at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// The credential, if one was stored.
    pub credential: Option<StoredCredential>,
    /// The operator's token as last seen or written (see the module docs).
    pub source_hash: Option<TokenHash>,
    /// The last access token served, if any.
    pub access: Option<StoredAccess>,
    /// The last status record.
    pub status: Option<StatusRecord>,
}

/// A change of one workload's row; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    /// A new credential.
    pub credential: Option<StoredCredential>,
    /// A new source hash.
    pub source_hash: Option<TokenHash>,
    /// The served token changed: `Some(None)` clears it.
    pub access: Option<Option<StoredAccess>>,
    /// A new status record.
    pub status: Option<Arc<StatusRecord>>,
}

impl Coalesce for Patch {
    fn coalesce(&mut self, newer: Self) {
        let Patch {
            credential,
            source_hash,
            access,
            status,
        } = newer;
        if credential.is_some() {
            self.credential = credential;
        }
        if source_hash.is_some() {
            self.source_hash = source_hash;
        }
        if access.is_some() {
            self.access = access;
        }
        if status.is_some() {
            self.status = status;
        }
    }
}

/// A journal operation failed. Names the file and the operation, never a value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state journal {}: {op}: {reason}", path.display())]
pub struct JournalError {
    /// The database file.
    pub path: PathBuf,
    /// What was being done (`open`, `commit`, …).
    pub op: &'static str,
    /// The error, as text (SQLite's messages name no value).
    pub reason: String,
}

/// The open journal (one connection, one writer).
pub struct Journal {
    path: PathBuf,
    conn: Connection,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (creating) the journal in `dir` (created 0700 if missing).
    ///
    /// # Errors
    /// [`JournalError`] when the directory or the database cannot be created or opened, or
    /// the database is of an unknown schema.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        let path = dir.join(FILE_NAME);
        let err = |op: &'static str| {
            let path = path.clone();
            move |e: &dyn fmt::Display| JournalError {
                path,
                op,
                reason: e.to_string(),
            }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err("create directory")(&e))?;
        // Created 0600 before SQLite opens it, whatever the umask.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| err("create")(&e))?;
        let conn = Connection::open(&path).map_err(|e| err("open")(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err("journal_mode=WAL")(&e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| err("synchronous=FULL")(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| err("busy_timeout")(&e))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| err("read schema version")(&e))?;
        match version {
            0 => {
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS workloads (
                        name TEXT PRIMARY KEY NOT NULL,
                        refresh_token TEXT,
                        generation INTEGER,
                        source_hash BLOB,
                        access_token TEXT,
                        token_type TEXT,
                        expires_at INTEGER,
                        status TEXT
                    ) WITHOUT ROWID;
                    PRAGMA user_version = 1;",
                )
                .map_err(|e| err("create schema")(&e))?;
            }
            SCHEMA_VERSION => {}
            other => {
                return Err(JournalError {
                    path,
                    op: "open",
                    reason: format!(
                        "schema version {other} is newer than this tokenvisor's ({SCHEMA_VERSION})"
                    ),
                });
            }
        }
        let journal = Journal { path, conn };
        journal.restrict_modes();
        Ok(journal)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the database and its WAL and shared-memory files to 0600 (best effort: a file
    /// that does not exist yet is skipped).
    fn restrict_modes(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = fs::set_permissions(&p, Permissions::from_mode(0o600));
        }
    }

    /// Every workload's row.
    ///
    /// # Errors
    /// [`JournalError`] when the table cannot be read. A row that does not decode (a name
    /// that is not a workload name, an unparseable status) is skipped and logged.
    pub fn load(&self) -> Result<HashMap<WorkloadName, Entry>, JournalError> {
        let err = |e: rusqlite::Error| JournalError {
            path: self.path.clone(),
            op: "read",
            reason: e.to_string(),
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, refresh_token, generation, source_hash, access_token, token_type, \
                 expires_at, status FROM workloads",
            )
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut out = HashMap::new();
        while let Some(row) = rows.next().map_err(err)? {
            let name: String = row.get(0).map_err(err)?;
            let Ok(name) = WorkloadName::new(&name) else {
                tracing::warn!(path = %self.path.display(), "journal row with an invalid workload name skipped");
                continue;
            };
            let refresh: Option<String> = row.get(1).map_err(err)?;
            let generation: Option<i64> = row.get(2).map_err(err)?;
            let hash: Option<Vec<u8>> = row.get(3).map_err(err)?;
            let access: Option<String> = row.get(4).map_err(err)?;
            let token_type: Option<String> = row.get(5).map_err(err)?;
            let expires: Option<i64> = row.get(6).map_err(err)?;
            let status: Option<Vec<u8>> = row.get(7).map_err(err)?;
            let status = status.and_then(|s| match StatusRecord::from_json(&s) {
                Ok(r) => Some(r),
                Err(_) => {
                    tracing::warn!(workload = %name, "journal status record unreadable; ignored");
                    None
                }
            });
            let entry = Entry {
                credential: generation.map(|g| StoredCredential {
                    refresh_token: refresh.map(Secret::from),
                    generation: u64::try_from(g).unwrap_or(0),
                }),
                source_hash: hash
                    .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
                    .map(TokenHash),
                access: match (access, expires) {
                    (Some(token), Some(at)) => Some(StoredAccess {
                        token: Secret::from(token),
                        token_type: token_type.unwrap_or_else(|| "Bearer".into()).into(),
                        expires_at: Timestamp::from_millis(u64::try_from(at).unwrap_or(0)),
                    }),
                    (Some(_), None) | (None, Some(_) | None) => None,
                },
                status,
            };
            out.insert(name, entry);
        }
        Ok(out)
    }

    /// One workload's row, if it has one.
    ///
    /// # Errors
    /// As [`Journal::load`].
    pub fn get(&self, name: &WorkloadName) -> Result<Option<Entry>, JournalError> {
        let exists: Option<String> = self
            .conn
            .query_row(
                "SELECT name FROM workloads WHERE name = ?1",
                [name.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| JournalError {
                path: self.path.clone(),
                op: "read",
                reason: e.to_string(),
            })?;
        if exists.is_none() {
            return Ok(None);
        }
        Ok(self.load()?.remove(name))
    }

    /// Applies every patch in one transaction, made durable by one fsync (group commit).
    /// Nothing is applied when it fails.
    ///
    /// # Errors
    /// [`JournalError`] when the transaction cannot be written or committed (disk full,
    /// descriptors exhausted, I/O error).
    pub fn commit<'a>(
        &mut self,
        patches: impl IntoIterator<Item = (&'a WorkloadName, &'a Patch)>,
    ) -> Result<(), JournalError> {
        let path = self.path.clone();
        let err = move |op: &'static str| {
            let path = path.clone();
            move |e: rusqlite::Error| JournalError {
                path,
                op,
                reason: e.to_string(),
            }
        };
        let tx = self.conn.transaction().map_err(err("begin"))?;
        {
            // One statement per patch (an insert that updates the columns the patch sets), not
            // an insert and an update per column: the commit a rotated token waits for runs
            // fewer statements (`a_patch_is_one_statement`).
            let mut upsert = tx.prepare_cached(UPSERT).map_err(err("prepare"))?;
            for (name, patch) in patches {
                let credential = patch.credential.as_ref();
                let access = patch.access.as_ref();
                let served = access.and_then(Option::as_ref);
                let status = patch.status.as_ref().map(|s| s.to_json());
                upsert
                    .execute(params![
                        name.as_str(),
                        credential.is_some(),
                        credential.and_then(|c| c.refresh_token.as_ref().map(Secret::expose)),
                        credential.map(|c| i64::try_from(c.generation).unwrap_or(i64::MAX)),
                        patch.source_hash.is_some(),
                        patch.source_hash.as_ref().map(|h| &h.0[..]),
                        access.is_some(),
                        served.map(|a| a.token.expose()),
                        served.map(|a| &*a.token_type),
                        served.map(|a| i64::try_from(a.expires_at.as_millis()).unwrap_or(i64::MAX)),
                        status.is_some(),
                        status,
                    ])
                    .map_err(err("write"))?;
            }
        }
        tx.commit().map_err(err("commit"))?;
        Ok(())
    }

    /// Moves the WAL into the database (at shutdown: the next start reads one file) and
    /// restricts the modes again.
    pub fn checkpoint(&self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::debug!(path = %self.path.display(), "journal checkpoint failed: {e}");
        }
        self.restrict_modes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> WorkloadName {
        WorkloadName::new(s).expect("name")
    }

    #[test]
    fn a_committed_patch_is_read_back_and_fields_merge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let mut j = Journal::open(&state).expect("open");
        let a = name("a");
        let first = Patch {
            credential: Some(StoredCredential {
                refresh_token: Some(Secret::from("rt-1".to_owned())),
                generation: 1,
            }),
            source_hash: Some(TokenHash::of(&Secret::from("rt-0".to_owned()))),
            access: Some(Some(StoredAccess {
                token: Secret::from("at-1".to_owned()),
                token_type: "Bearer".into(),
                expires_at: Timestamp::from_millis(5_000),
            })),
            status: None,
        };
        j.commit([(&a, &first)]).expect("commit");
        let second = Patch {
            access: Some(None),
            ..Patch::default()
        };
        j.commit([(&a, &second)]).expect("commit");
        drop(j);
        let j = Journal::open(&state).expect("reopen");
        let entry = j.get(&a).expect("read").expect("a row");
        assert_eq!(entry.credential, first.credential);
        assert_eq!(entry.source_hash, first.source_hash);
        assert_eq!(entry.access, None, "cleared by the second patch");
        use std::os::unix::fs::MetadataExt as _;
        let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(FILE_NAME)), 0o600);
    }

    /// One statement per patch: the commit a rotated token waits for writes each workload's
    /// row once (an insert and an update per column wrote a new row up to five times and an
    /// existing one up to four), and leaves the columns the patch does not set as they were.
    #[test]
    fn a_patch_is_one_statement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path()).expect("open");
        let (a, b) = (name("a"), name("b"));
        let credential = Patch {
            credential: Some(StoredCredential {
                refresh_token: Some(Secret::from("rt-1".to_owned())),
                generation: 1,
            }),
            ..Patch::default()
        };
        let served = Patch {
            access: Some(Some(StoredAccess {
                token: Secret::from("at-1".to_owned()),
                token_type: "Bearer".into(),
                expires_at: Timestamp::from_millis(5_000),
            })),
            status: Some(Arc::new(StatusRecord {
                status: tokenvisor_core::WorkloadStatus::Running,
                status_context: String::new(),
                created_at: Timestamp::from_millis(1),
                updated_at: Timestamp::from_millis(2),
                process_id: 1,
                token: None,
            })),
            ..Patch::default()
        };
        let before = j.conn.total_changes();
        j.commit([(&a, &credential), (&b, &served)])
            .expect("new rows");
        assert_eq!(j.conn.total_changes() - before, 2, "one write per new row");
        let before = j.conn.total_changes();
        j.commit([(&a, &served), (&b, &credential)])
            .expect("existing rows");
        assert_eq!(
            j.conn.total_changes() - before,
            2,
            "one write per existing row"
        );
        let rows = j.load().expect("load");
        for n in [&a, &b] {
            let row = &rows[n];
            assert_eq!(row.credential, credential.credential, "{n}");
            assert_eq!(row.access, served.access.clone().flatten(), "{n}");
            assert_eq!(row.status.as_ref(), served.status.as_deref(), "{n}");
            assert_eq!(row.source_hash, None, "{n}: never set");
        }
    }

    #[test]
    fn patches_coalesce_field_by_field() {
        let mut p = Patch {
            source_hash: Some(TokenHash::of(&Secret::from("x".to_owned()))),
            access: Some(None),
            ..Patch::default()
        };
        p.coalesce(Patch {
            credential: Some(StoredCredential {
                refresh_token: None,
                generation: 3,
            }),
            ..Patch::default()
        });
        assert!(p.source_hash.is_some() && p.access == Some(None));
        assert_eq!(p.credential.map(|c| c.generation), Some(3));
    }

    #[test]
    fn debug_never_shows_a_token() {
        let p = Patch {
            credential: Some(StoredCredential {
                refresh_token: Some(Secret::from("rt-secret-value".to_owned())),
                generation: 1,
            }),
            access: Some(Some(StoredAccess {
                token: Secret::from("at-secret-value".to_owned()),
                token_type: "Bearer".into(),
                expires_at: Timestamp::from_millis(1),
            })),
            ..Patch::default()
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("secret-value"), "{shown}");
    }
}
