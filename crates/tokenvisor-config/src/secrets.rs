//! The one reader of secret files, shared by the configuration (client secrets, refresh
//! tokens, the admin token) and the runtime (a refresh-token file edited by an operator);
//! and the readers built on it: the admin token ([`read_admin_token`]) and a secret held in
//! an environment variable.
//!
//! A UTF-8 byte order mark and surrounding whitespace (CR/LF line endings included) are
//! trimmed and reported in [`SecretFileNotes`] (which `check-config` and the daemon's log
//! show as warnings); an empty file, a file over [`SECRET_FILE_LIMIT`] bytes, a non-UTF-8
//! file or a value with a control character inside is an error (a token never contains one,
//! and sending it would only earn a confusing rejection). A file readable by group or others
//! is noted too. Errors name the file, never its content.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tokenvisor_core::Secret;

use crate::MIN_ADMIN_TOKEN_BYTES;

/// The largest secret file read, in bytes (a bigger file is a configuration mistake).
pub const SECRET_FILE_LIMIT: usize = 64 * 1024;

/// Reading a secret file failed. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file could not be read.
    #[error("cannot read secret file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The secret file is larger than [`SECRET_FILE_LIMIT`].
    #[error("secret file {} is larger than {SECRET_FILE_LIMIT} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The secret file is not UTF-8 text.
    #[error("secret file {} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The secret file is empty (or holds only whitespace).
    #[error("secret file {} is empty", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// The value holds a control character (other than surrounding whitespace, which is
    /// trimmed).
    #[error(
        "secret file {} holds a control character inside its value (only a byte order mark \
         and surrounding whitespace are trimmed)",
        path.display()
    )]
    ControlCharacter {
        /// The file.
        path: PathBuf,
    },
}

/// What reading a secret file found besides the secret (for warnings; never the value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretFileNotes {
    /// What was trimmed around the value, beyond one final newline: `"a UTF-8 byte order
    /// mark"`, `"a CR/LF line ending"`, `"surrounding whitespace"`.
    pub trimmed: Vec<&'static str>,
    /// The file's permission bits, when group or others may read it.
    pub readable_by_others: Option<u32>,
}

impl SecretFileNotes {
    /// The notes in words, one warning each, naming `path` (never the value).
    pub fn warnings(&self, path: &Path) -> Vec<String> {
        let mut out = Vec::new();
        if !self.trimmed.is_empty() {
            let trimmed = self.trimmed.join(" and ");
            out.push(format!(
                "{}: trimmed {trimmed} around the value",
                path.display()
            ));
        }
        if let Some(mode) = self.readable_by_others {
            out.push(format!(
                "{}: readable by group or others (mode {mode:04o}); chmod 600 it",
                path.display()
            ));
        }
        out
    }
}

/// Reads a secret from a file with [`read_secret_file_noted`], dropping the notes.
///
/// Blocking; call it from configuration loading or `spawn_blocking`.
///
/// # Errors
/// As [`read_secret_file_noted`].
pub fn read_secret_file(path: impl AsRef<Path>) -> Result<Secret, SecretError> {
    read_secret_file_noted(path).map(|(secret, _)| secret)
}

/// Reads a secret from a file (module docs). The notes say what was trimmed (one final `\n`
/// is not worth a note) and whether group or others may read the file.
///
/// Blocking; call it from configuration loading or `spawn_blocking`.
///
/// # Errors
/// [`SecretError`] naming the file (never its content): unreadable, too large, not UTF-8,
/// empty once trimmed, or a control character inside the value.
pub fn read_secret_file_noted(
    path: impl AsRef<Path>,
) -> Result<(Secret, SecretFileNotes), SecretError> {
    use std::os::unix::fs::PermissionsExt as _;

    let path = path.as_ref();
    let read_err = |source| SecretError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
    let mut bytes = Vec::new();
    // One byte over the limit tells "too large" from "exactly the limit".
    file.take(SECRET_FILE_LIMIT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() > SECRET_FILE_LIMIT {
        return Err(SecretError::TooLarge { path: path.into() });
    }
    let text = String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 { path: path.into() })?;
    let mut notes = SecretFileNotes {
        trimmed: Vec::new(),
        readable_by_others: (mode & 0o044 != 0).then_some(mode),
    };
    let unmarked = text.strip_prefix('\u{feff}');
    let bom = unmarked.map(|_| "a UTF-8 byte order mark");
    notes.trimmed.extend(bom);
    let unmarked = unmarked.unwrap_or(&text);
    let value = unmarked.trim();
    if value.is_empty() {
        return Err(SecretError::EmptyFile { path: path.into() });
    }
    let leading = &unmarked[..unmarked.len() - unmarked.trim_start().len()];
    let trailing = &unmarked[unmarked.trim_end().len()..];
    if trailing.contains('\r') {
        notes.trimmed.push("a CR/LF line ending");
    }
    if !leading.is_empty() || !matches!(trailing, "" | "\n" | "\r\n") {
        notes.trimmed.push("surrounding whitespace");
    }
    if value.chars().any(char::is_control) {
        return Err(SecretError::ControlCharacter { path: path.into() });
    }
    Ok((Secret::from(value), notes))
}

/// Reads the admin token of `path`: a secret file of at least [`MIN_ADMIN_TOKEN_BYTES`].
///
/// # Errors
/// Why, naming the file and never its content: unreadable, empty, or too short.
pub fn read_admin_token(path: &Path) -> Result<Secret, String> {
    let token = read_secret_file(path).map_err(|e| e.to_string())?;
    admin_token_long_enough(path, token)
}

/// `token` (read from `path`) when it is at least [`MIN_ADMIN_TOKEN_BYTES`] long.
pub(crate) fn admin_token_long_enough(path: &Path, token: Secret) -> Result<Secret, String> {
    let len = token.expose().len();
    if len < MIN_ADMIN_TOKEN_BYTES {
        return Err(format!(
            "the admin token in {} is {len} bytes long; at least {MIN_ADMIN_TOKEN_BYTES} are \
             required (e.g. `head -c 32 /dev/urandom | base64`)",
            path.display()
        ));
    }
    Ok(token)
}

/// Reads a secret from an environment variable: trailing whitespace trimmed, not empty.
/// Errors name the variable, never its content.
pub(crate) fn read_secret_env(
    var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, String> {
    let value = env(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
    let value = value.trim_end();
    if value.is_empty() {
        return Err(format!("environment variable {var} is empty"));
    }
    Ok(Secret::from(value))
}
