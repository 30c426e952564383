//! Support for the crash-safety suite ([`crate::crash`]): a seeded random number generator,
//! directory listings split into expected files and leftover temp files, and the
//! rules a status record must satisfy to describe a state that really happened.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokenvisor_core::status::{ErrorOutcome, TokenState};
use tokenvisor_core::{StatusRecord, WorkloadStatus};

/// SplitMix64: a tiny, seeded, reproducible generator (the kill moments of a run are a
/// function of its seed, printed at the start, so a failing run can be replayed).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A temp file of an atomic write of `target` (`tokenvisor::atomic` names them
/// `.<target>.XXXXXX`, six alphanumerics): returns the target's name.
pub(crate) fn temp_target(file_name: &str) -> Option<&str> {
    let rest = file_name.strip_prefix('.')?;
    let (target, suffix) = rest.rsplit_once('.')?;
    (suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) && !target.is_empty())
        .then_some(target)
}

/// The entries of a directory, split into expected names (`expected` says which) and temp
/// files of interrupted atomic writes of an expected name; anything else is `other`.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Expected files that are present.
    pub(crate) files: BTreeSet<String>,
    /// Leftover temp files (`.<expected>.XXXXXX`).
    pub(crate) temps: BTreeSet<String>,
    /// Anything else.
    pub(crate) other: BTreeSet<String>,
}

/// Lists `dir` (missing: empty).
pub(crate) fn list(dir: &Path, expected: impl Fn(&str) -> bool) -> Listing {
    let mut out = Listing::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if expected(&name) {
            out.files.insert(name);
        } else if temp_target(&name).is_some_and(&expected) {
            out.temps.insert(name);
        } else {
            out.other.insert(name);
        }
    }
    out
}

/// Writes `content` to `path` the way an operator's tool would: a temp file in the same
/// directory, fsync, rename.
pub(crate) fn replace_file(path: &Path, content: &str) {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("reseed");
    let mut f = std::fs::File::create(&tmp).expect("create the temp file");
    f.write_all(content.as_bytes())
        .expect("write the temp file");
    f.sync_all().expect("fsync the temp file");
    std::fs::rename(&tmp, path).expect("rename the temp file");
}

/// True when `token` looks like a whole refresh token of the test provider: `rt_` and 32
/// alphanumerics (a torn or partial write would not).
pub(crate) fn whole_refresh_token(token: &str) -> bool {
    token
        .strip_prefix("rt_")
        .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Checks that a status record describes a state the daemon can really have been in, at a
/// time that really was: the status is one this run can produce (no graceful stop happens,
/// no actor is made to crash, no permanent answer is ever given during the storm), the token
/// state is the one the status maps to (docs/ARCHITECTURE.md, "Status mapping"), the fields
/// of that state are present, timestamps are ordered and not in the future (`now_ms`, with
/// `slack_ms` for the daemon's clock, which is the wall clock at its start advanced by the
/// monotonic clock), and an HTTP status in the last error is one the provider was made to
/// send (`injected`). `max_lifetime_ms` bounds how far after its write a served token can
/// expire.
pub(crate) fn check_record(
    rec: &StatusRecord,
    now_ms: u64,
    slack_ms: u64,
    max_lifetime_ms: u64,
    injected: &[u16],
) -> Result<(), String> {
    let token = rec
        .token
        .as_ref()
        .ok_or_else(|| "no token section".to_owned())?;
    let updated = rec.updated_at.as_millis();
    if updated > now_ms + slack_ms {
        return Err(format!(
            "updated_at {} is {} ms in the future",
            rec.updated_at,
            updated - now_ms
        ));
    }
    if rec.created_at > rec.updated_at {
        return Err(format!(
            "created_at {} after updated_at {}",
            rec.created_at, rec.updated_at
        ));
    }
    for (what, t) in [
        ("since", token.since),
        ("first_failure_at", token.first_failure_at),
    ] {
        if let Some(t) = t
            && t > rec.updated_at
        {
            return Err(format!("{what} {t} after updated_at {}", rec.updated_at));
        }
    }
    if let Some(exp) = token.expires_at
        && exp.as_millis() > updated + max_lifetime_ms + slack_ms
    {
        return Err(format!(
            "expires_at {exp} is later than any token issued by {} could live",
            rec.updated_at
        ));
    }
    let failing = |token: &tokenvisor_core::TokenSection| -> Result<(), String> {
        let last = token
            .last_error
            .as_ref()
            .ok_or_else(|| "failing without a last_error".to_owned())?;
        if last.outcome != ErrorOutcome::Transient {
            return Err(format!(
                "a run of failures ended by a {:?} error",
                last.outcome
            ));
        }
        if token.attempt == 0 || token.first_failure_at.is_none() {
            return Err("failing with attempt 0 or no first_failure_at".to_owned());
        }
        if let Some(code) = last.http_status
            && !injected.contains(&code)
        {
            return Err(format!(
                "last_error HTTP {code}: the provider never sent that"
            ));
        }
        Ok(())
    };
    match (rec.status, token.state) {
        (WorkloadStatus::Running, TokenState::Healthy) => {
            if token.expires_at.is_none() || token.attempt != 0 || token.last_error.is_some() {
                return Err("healthy without expires_at, or with failures".to_owned());
            }
            Ok(())
        }
        (WorkloadStatus::Running, TokenState::Refreshing) => {
            if token.expires_at.is_none() || token.attempt != 0 {
                return Err("running while refreshing without a served token".to_owned());
            }
            Ok(())
        }
        (WorkloadStatus::Starting, TokenState::Refreshing) => {
            if token.expires_at.is_some() || token.attempt != 0 {
                return Err("starting with a served token or failures".to_owned());
            }
            Ok(())
        }
        (WorkloadStatus::AuthRetrying, TokenState::Refreshing) => failing(token),
        (WorkloadStatus::AuthRetrying, TokenState::TransientBackoff) => {
            if token.next_attempt_at.is_none() {
                return Err("backing off without next_attempt_at".to_owned());
            }
            failing(token)
        }
        (
            WorkloadStatus::Unauthenticated
            | WorkloadStatus::Stopped
            | WorkloadStatus::Error
            | WorkloadStatus::Running
            | WorkloadStatus::Starting
            | WorkloadStatus::AuthRetrying,
            TokenState::Healthy
            | TokenState::Refreshing
            | TokenState::TransientBackoff
            | TokenState::Unauthenticated
            | TokenState::Stopped,
        ) => Err(format!(
            "status {} with token state {}: not a state this run can produce",
            rec.status.as_str(),
            token.state.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        assert_eq!(temp_target(".w01.json.aB3dE9"), Some("w01.json"));
        assert_eq!(temp_target(".w01.rt.aB3dE9"), Some("w01.rt"));
        assert_eq!(temp_target("w01.json"), None);
        assert_eq!(temp_target(".w01.json.aB3d"), None);
    }
}
