//! Status files on real disk: atomic writes, modes, recovery.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use tempfile::TempDir;
use tokenvisor::status_store::{self, StoreError};
use tokenvisor_core::status::SCHEMA;
use tokenvisor_core::{StatusRecord, WorkloadName, WorkloadStatus};

fn name(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap()
}

/// A full record (built from JSON so that fields added to the record later keep their
/// defaults here).
fn record(i: u32) -> StatusRecord {
    let json = format!(
        r#"{{
            "status": "auth_retrying",
            "status_context": "refresh failing #{i}",
            "created_at": "2026-09-21T10:00:00Z",
            "updated_at": "2026-09-21T10:00:00.{ms:03}Z",
            "process_id": {i},
            "token": {{
                "schema": {SCHEMA},
                "state": "transient_backoff",
                "expires_at": null,
                "attempt": 2,
                "first_failure_at": "2026-09-21T10:00:00Z",
                "next_attempt_at": "2026-09-21T10:01:10Z",
                "last_error": {{
                    "outcome": "transient", "kind": "infrastructure_4xx", "http_status": 403,
                    "error_code": null, "retry_after_secs": null, "summary": "HTTP 403 text/html"
                }}
            }}
        }}"#,
        ms = i % 1000,
    );
    StatusRecord::from_json(json.as_bytes()).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// A status dir inside a temp dir (so tests can create it, chmod it, replace it).
fn status_dir() -> (TempDir, std::path::PathBuf) {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("statuses");
    status_store::ensure_dir(&dir).unwrap();
    (tmp, dir)
}

#[test]
fn round_trip() {
    let (_tmp, dir) = status_dir();
    let n = name("github-mcp");
    assert_eq!(status_store::read(&dir, &n).unwrap(), None);
    status_store::write_atomic(&dir, &n, &record(1)).unwrap();
    assert_eq!(status_store::read(&dir, &n).unwrap(), Some(record(1)));
    status_store::write_atomic(&dir, &n, &record(2)).unwrap();
    assert_eq!(status_store::read(&dir, &n).unwrap(), Some(record(2)));
    assert_eq!(
        status_store::path_for(&dir, &n),
        dir.join("github-mcp.json")
    );
    // The bytes on disk are exactly the record's serialisation.
    assert_eq!(
        fs::read(dir.join("github-mcp.json")).unwrap(),
        record(2).to_json()
    );
}

#[test]
fn file_is_0600_and_dir_is_0700() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("a/b/statuses");
    status_store::ensure_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);

    let n = name("w1");
    status_store::write_atomic(&dir, &n, &record(1)).unwrap();
    assert_eq!(mode(&dir.join("w1.json")), 0o600);

    // An existing, looser file does not pass its mode on.
    let loose = dir.join("w2.json");
    fs::write(&loose, b"{}").unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    status_store::write_atomic(&dir, &name("w2"), &record(2)).unwrap();
    assert_eq!(mode(&loose), 0o600);
}

/// Trust §4: a directory tokenvisor did not create is never chmod-ed.
#[test]
fn ensure_dir_never_chmods_an_existing_dir() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("statuses");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(!status_store::ensure_dir(&dir).unwrap());
    assert_eq!(mode(&dir), 0o755);
    // A missing one is created 0700.
    let fresh = tmp.path().join("fresh").join("statuses");
    assert!(status_store::ensure_dir(&fresh).unwrap());
    assert_eq!(mode(&fresh), 0o700);
}

#[test]
fn ensure_dir_on_a_file_is_not_a_directory() {
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("statuses");
    fs::write(&file, b"not a dir").unwrap();
    let err = status_store::ensure_dir(&file).unwrap_err();
    assert_eq!(err.kind(), Some(io::ErrorKind::NotADirectory), "{err}");
    assert_eq!(err.path(), file);
    assert!(err.to_string().contains("statuses"), "{err}");

    // A path below a file cannot be created either.
    let below = file.join("sub");
    let err = status_store::ensure_dir(&below).unwrap_err();
    assert!(matches!(err, StoreError::Dir { .. }), "{err}");
}

#[test]
fn write_into_a_missing_or_broken_dir_fails_with_the_path_and_kind() {
    let tmp = TempDir::new().unwrap();
    let missing = tmp.path().join("missing");
    let err = status_store::write_atomic(&missing, &name("w"), &record(1)).unwrap_err();
    assert_eq!(err.kind(), Some(io::ErrorKind::NotFound), "{err}");
    assert_eq!(err.path(), missing.join("w.json"));

    let file = tmp.path().join("file");
    fs::write(&file, b"x").unwrap();
    let err = status_store::write_atomic(&file, &name("w"), &record(1)).unwrap_err();
    assert_eq!(err.kind(), Some(io::ErrorKind::NotADirectory), "{err}");
}

#[test]
fn no_temp_files_left_behind() {
    let (_tmp, dir) = status_dir();
    for i in 0..50 {
        let n = name(&format!("w{}", i % 10));
        status_store::write_atomic(&dir, &n, &record(i)).unwrap();
    }
    let want: Vec<String> = {
        // Each file and its lock file (kept between writes).
        let mut v: Vec<String> = (0..10)
            .flat_map(|i| [format!("w{i}.json"), format!("w{i}.lock")])
            .collect();
        v.sort();
        v
    };
    assert_eq!(entries(&dir), want);
}

#[test]
fn read_reports_a_corrupt_file_without_its_contents_and_leaves_it() {
    let (_tmp, dir) = status_dir();
    let path = dir.join("w.json");
    fs::write(&path, br#"{"status": "running", "token": "SECRET-abc123"#).unwrap();
    let err = status_store::read(&dir, &name("w")).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(!err.to_string().contains("SECRET"), "{err}");
    assert!(path.exists());
}

#[test]
fn recover_sets_corrupt_files_aside_and_loads_the_others() {
    let (_tmp, dir) = status_dir();
    for i in 0..3 {
        status_store::write_atomic(&dir, &name(&format!("ok{i}")), &record(i)).unwrap();
    }
    let garbage = b"<html>SECRET-abc123 WAF says no</html>";
    fs::write(dir.join("bad.json"), garbage).unwrap();
    // An older set-aside copy is replaced.
    fs::write(dir.join("bad.json.corrupted"), b"older").unwrap();
    // A newer token schema is not ours to read.
    let mut newer = record(9);
    newer.token.as_mut().unwrap().schema = SCHEMA + 1;
    fs::write(dir.join("newer.json"), newer.to_json()).unwrap();

    // Truncated JSON of ours (it names the token section).
    let ours = record(1).to_json();
    fs::write(dir.join("short.json"), &ours[..ours.len() - 30]).unwrap();
    // Truncated before the token section: not recognisably ours, left alone.
    fs::write(dir.join("stub.json"), &ours[..20]).unwrap();

    let rec = status_store::recover(&dir).unwrap();
    assert_eq!(rec.records.len(), 3);
    for i in 0..3 {
        assert_eq!(rec.records[&name(&format!("ok{i}"))], record(i));
    }
    let mut corrupt: Vec<&str> = rec.corrupted.iter().map(|c| c.name.as_str()).collect();
    corrupt.sort_unstable();
    assert_eq!(corrupt, ["newer", "short"]);
    let mut foreign = rec.foreign.clone();
    foreign.sort();
    assert_eq!(foreign, [dir.join("bad.json"), dir.join("stub.json")]);
    assert_eq!(fs::read(dir.join("bad.json")).unwrap(), garbage);
    assert_eq!(fs::read(dir.join("bad.json.corrupted")).unwrap(), b"older");
    for c in &rec.corrupted {
        assert!(!c.reason.contains("SECRET"), "{}", c.reason);
        assert!(!c.reason.is_empty());
        let aside = c.set_aside.as_ref().unwrap();
        assert_eq!(*aside, dir.join(format!("{}.json.corrupted", c.name)));
        assert!(aside.exists());
        assert!(!dir.join(format!("{}.json", c.name)).exists());
    }
    assert!(rec.skipped.is_empty(), "{:?}", rec.skipped);
    assert!(rec.unreadable.is_empty());

    // A second pass finds nothing new.
    let again = status_store::recover(&dir).unwrap();
    assert_eq!(again.records.len(), 3);
    assert!(again.corrupted.is_empty());
    assert_eq!(again.foreign.len(), 2);
}

#[test]
fn recover_skips_invalid_names_and_non_files_and_ignores_the_rest() {
    let (_tmp, dir) = status_dir();
    status_store::write_atomic(&dir, &name("good"), &record(1)).unwrap();
    let valid_json = record(2).to_json();
    let long = format!("{}.json", "x".repeat(101));
    for bad in [
        ".hidden.json",
        "bad name.json",
        "ünï.json",
        ".json",
        long.as_str(),
    ] {
        fs::write(dir.join(bad), &valid_json).unwrap();
    }
    fs::create_dir(dir.join("subdir.json")).unwrap();
    std::os::unix::fs::symlink(dir.join("good.json"), dir.join("link.json")).unwrap();
    fs::write(dir.join("README"), b"hello").unwrap();
    fs::write(dir.join("good.json.corrupted"), b"old").unwrap();
    fs::write(dir.join(".unrelated-hidden"), b"keep me").unwrap();

    let rec = status_store::recover(&dir).unwrap();
    assert_eq!(rec.records.len(), 1);
    assert_eq!(rec.records[&name("good")], record(1));
    let skipped: HashSet<String> = rec
        .skipped
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    let want: HashSet<String> = [
        ".hidden.json",
        "bad name.json",
        "ünï.json",
        ".json",
        long.as_str(),
        "subdir.json",
        "link.json",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(skipped, want);
    assert!(rec.corrupted.is_empty());
    // Nothing was touched.
    for keep in [
        "README",
        "good.json.corrupted",
        ".unrelated-hidden",
        ".hidden.json",
    ] {
        assert!(dir.join(keep).exists(), "{keep}");
    }
}

#[test]
fn recover_removes_leftover_temp_files() {
    let (_tmp, dir) = status_dir();
    status_store::write_atomic(&dir, &name("w1"), &record(1)).unwrap();
    // What an atomic write leaves when a process dies before the rename.
    fs::write(dir.join(".w1.json.a1B2c3"), b"{\"status\":").unwrap();
    fs::write(dir.join(".w2.json.ZZ99zz"), b"").unwrap();
    // Look-alikes that are not ours stay.
    fs::write(dir.join(".w3.json.abc"), b"").unwrap();
    fs::write(dir.join(".bad name.json.abcdef"), b"").unwrap();

    let rec = status_store::recover(&dir).unwrap();
    assert_eq!(rec.temp_files_removed, 2);
    assert_eq!(rec.records.len(), 1);
    assert_eq!(
        entries(&dir),
        [
            ".bad name.json.abcdef",
            ".w3.json.abc",
            "w1.json",
            "w1.lock"
        ]
    );
}

#[test]
fn recover_loads_a_toolhive_file_without_token() {
    let (_tmp, dir) = status_dir();
    let json = br#"{"status":"unauthenticated","status_context":"Token retrieval failed","created_at":"2026-05-01T10:00:00.123456789Z","updated_at":"2026-05-01T10:00:00Z","process_id":0}"#;
    fs::write(dir.join("toolhive-wl.json"), json).unwrap();
    let rec = status_store::recover(&dir).unwrap();
    let r = &rec.records[&name("toolhive-wl")];
    assert_eq!(r.status, WorkloadStatus::Unauthenticated);
    assert!(r.token.is_none());
    assert!(rec.corrupted.is_empty());
}

#[test]
fn recover_of_a_missing_dir_is_empty() {
    let tmp = TempDir::new().unwrap();
    let rec = status_store::recover(&tmp.path().join("nope")).unwrap();
    assert!(rec.records.is_empty());
    assert!(rec.corrupted.is_empty());
    assert!(rec.skipped.is_empty());
}

#[test]
fn recover_rejects_oversized_files() {
    let (_tmp, dir) = status_dir();
    let mut big = record(1).to_json();
    big.pop();
    big.resize(
        usize::try_from(status_store::MAX_FILE_BYTES).unwrap() + 10,
        b' ',
    );
    fs::write(dir.join("big.json"), &big).unwrap();
    let rec = status_store::recover(&dir).unwrap();
    assert!(rec.records.is_empty());
    assert_eq!(rec.corrupted.len(), 1);
    assert!(
        rec.corrupted[0].reason.contains("larger"),
        "{}",
        rec.corrupted[0].reason
    );
}

#[test]
fn recover_over_2000_files() {
    let (_tmp, dir) = status_dir();
    let n = 2_000u32;
    // Plain writes (no fsync): this test is about reading.
    for i in 0..n {
        fs::write(dir.join(format!("wl-{i:05}.json")), record(i).to_json()).unwrap();
    }
    // A few corrupt ones among them, spread over the reader threads' chunks.
    for i in [0u32, 777, 1999] {
        fs::write(dir.join(format!("wl-{i:05}.json")), b"{\"token\": {").unwrap();
    }
    let rec = status_store::recover(&dir).unwrap();
    assert_eq!(rec.records.len(), 1_997);
    assert_eq!(rec.corrupted.len(), 3);
    for i in 0..n {
        let key = name(&format!("wl-{i:05}"));
        match rec.records.get(&key) {
            Some(r) => assert_eq!(*r, record(i)),
            None => assert!([0, 777, 1999].contains(&i), "{key} missing"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Trust §4 and §5: directories and files tokenvisor does not own, ToolHive's lock.

/// A ToolHive status record (no token section).
const TOOLHIVE_JSON: &[u8] = br#"{
  "status": "running",
  "created_at": "2026-05-01T10:00:00.123456789Z",
  "updated_at": "2026-05-01T10:00:00Z",
  "process_id": 4242
}"#;

fn pid_in_marker(dir: &Path) -> String {
    fs::read_to_string(dir.join(status_store::MARKER)).unwrap()
}

#[test]
fn claim_dir_creates_a_missing_dir_0700_with_its_marker_and_pid() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("a").join("statuses");
    let claim = status_store::claim_dir(&dir).unwrap();
    assert!(claim.created && claim.adopted);
    assert_eq!(claim.loose_mode, None);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(pid_in_marker(&dir), format!("{}\n", std::process::id()));
    assert_eq!(mode(&dir.join(status_store::MARKER)), 0o600);
    // Claiming again in the same process is a no-op.
    let again = status_store::claim_dir(&dir).unwrap();
    assert!(!again.created && !again.adopted);
}

#[test]
fn claim_dir_adopts_an_empty_dir_without_chmod() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("statuses");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    let claim = status_store::claim_dir(&dir).unwrap();
    assert!(!claim.created && claim.adopted);
    assert_eq!(claim.loose_mode, Some(0o750));
    assert_eq!(mode(&dir), 0o750);
    assert_eq!(entries(&dir), [status_store::MARKER]);
}

/// An upgrading user's directory (our older files, no marker) and a directory shared with
/// ToolHive are adopted; nothing in them is touched.
#[test]
fn claim_dir_adopts_status_and_toolhive_files() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("statuses");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("ours.json"), record(1).to_json()).unwrap();
    fs::write(dir.join("toolhive-wl.json"), TOOLHIVE_JSON).unwrap();
    fs::write(dir.join("toolhive-wl.lock"), b"").unwrap();
    fs::write(dir.join("old.json.corrupted"), b"{").unwrap();
    fs::write(dir.join(".tmp-123456"), b"{").unwrap();
    fs::write(dir.join(".ours.json.a1B2c3"), b"{").unwrap();
    let before = entries(&dir);
    let claim = status_store::claim_dir(&dir).unwrap();
    assert!(claim.adopted);
    let mut want = before;
    want.push(status_store::MARKER.to_owned());
    want.sort();
    assert_eq!(entries(&dir), want);
    assert_eq!(
        fs::read(dir.join("toolhive-wl.json")).unwrap(),
        TOOLHIVE_JSON
    );
}

#[test]
fn claim_dir_refuses_foreign_content_naming_it_and_touches_nothing() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("home");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("ours.json"), record(1).to_json()).unwrap();
    fs::write(dir.join("notes.txt"), b"mine").unwrap();
    fs::write(dir.join("package.json"), b"{\"name\": \"x\"}").unwrap();
    fs::create_dir(dir.join("src")).unwrap();
    fs::write(dir.join("zzz"), b"").unwrap();
    let before = entries(&dir);

    let err = status_store::claim_dir(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, status_store::ClaimError::Foreign { total: 4, .. }),
        "{err:?}"
    );
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(
        msg.contains("notes.txt") && msg.contains("package.json"),
        "{msg}"
    );
    assert!(msg.contains("and 1 more"), "{msg}");
    assert_eq!(entries(&dir), before, "nothing written, nothing removed");
    assert_eq!(mode(&dir), 0o755);
}

#[test]
fn claim_dir_through_a_symlink_never_chmods_the_target() {
    let tmp = TempDir::new().unwrap();
    let target = tmp.path().join("real");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    let link = tmp.path().join("statuses");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let claim = status_store::claim_dir(&link).unwrap();
    assert!(!claim.created);
    assert_eq!(mode(&target), 0o755);
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    status_store::write_atomic(&link, &name("w"), &record(1)).unwrap();
    assert!(target.join("w.json").exists());
    // Persistence's own directory check does not chmod it either.
    status_store::ensure_dir(&link).unwrap();
    assert_eq!(mode(&target), 0o755);
}

#[test]
fn another_holder_of_the_marker_is_named_by_pid() {
    use tokenvisor::locks::{FileLock, TryLock};
    let (_tmp, dir) = status_dir();
    status_store::claim_dir(&dir).unwrap();
    // Another open file description (as another process would have) cannot lock it, and
    // reads the holder's PID.
    match FileLock::try_lock(&dir.join(status_store::MARKER)).unwrap() {
        TryLock::Held(pid) => assert_eq!(pid, Some(std::process::id())),
        TryLock::Locked(_) => panic!("the marker is not locked"),
    }
}

#[test]
fn recover_touches_only_its_own_files() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("statuses");
    // Ours (marked) and shared: others' files appear after the claim.
    status_store::claim_dir(&dir).unwrap();
    fs::write(dir.join("toolhive-wl.json"), TOOLHIVE_JSON).unwrap();
    fs::write(dir.join("toolhive-wl.lock"), b"").unwrap();
    fs::write(
        dir.join("broken-th.json"),
        b"{\n  \"status\": \"running\",\n  \"crea",
    )
    .unwrap();
    fs::write(dir.join("broken-th.json.corrupted"), b"toolhive's backup").unwrap();
    fs::write(dir.join(".tmp-98765"), b"{").unwrap();
    fs::write(dir.join("notes.txt"), b"x").unwrap();
    // Ours: a temp file of an interrupted write.
    fs::write(dir.join(".mine.json.Zz9Yy8"), b"{").unwrap();
    let before: Vec<(String, Vec<u8>)> = entries(&dir)
        .into_iter()
        .filter(|e| e != ".mine.json.Zz9Yy8")
        .map(|e| {
            let bytes = fs::read(dir.join(&e)).unwrap();
            (e, bytes)
        })
        .collect();

    let rec = status_store::recover(&dir).unwrap();
    assert_eq!(rec.temp_files_removed, 1);
    assert!(rec.corrupted.is_empty());
    assert_eq!(rec.foreign, [dir.join("broken-th.json")]);
    assert!(rec.records.contains_key(&name("toolhive-wl")));
    let after: Vec<(String, Vec<u8>)> = entries(&dir)
        .into_iter()
        .map(|e| {
            let bytes = fs::read(dir.join(&e)).unwrap();
            (e, bytes)
        })
        .collect();
    assert_eq!(after, before);
}

/// Trust §5: while another process (ToolHive) holds `<name>.lock`, a write changes nothing
/// and says so; once released, the write lands. The lock file is kept (module docs of
/// `status_store`, "Sharing the directory with ToolHive").
#[test]
fn a_write_never_happens_under_toolhives_lock() {
    use tokenvisor::locks::{FileLock, TryLock};
    let (_tmp, dir) = status_dir();
    let n = name("shared");
    status_store::write_atomic(&dir, &n, &record(1)).unwrap();
    assert_eq!(
        entries(&dir),
        ["shared.json", "shared.lock"],
        "lock file kept"
    );

    let TryLock::Locked(held) = FileLock::try_lock(&status_store::lock_path_for(&dir, &n)).unwrap()
    else {
        panic!("free lock");
    };
    let before = fs::read(dir.join("shared.json")).unwrap();
    let err = status_store::write_atomic(&dir, &n, &record(2)).unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err}");
    assert_eq!(fs::read(dir.join("shared.json")).unwrap(), before);
    assert_eq!(entries(&dir), ["shared.json", "shared.lock"]);

    drop(held);
    status_store::write_atomic(&dir, &n, &record(2)).unwrap();
    assert_eq!(status_store::read(&dir, &n).unwrap(), Some(record(2)));
    assert_eq!(entries(&dir), ["shared.json", "shared.lock"]);
}

/// The daemon's write (`write_view`, through the spare) under a lock ToolHive holds: Busy,
/// neither the file nor its spare touched; once released, the write lands through the
/// spare and the lock file stays.
#[test]
fn a_view_write_never_happens_under_toolhives_lock() {
    use tokenvisor::locks::{FileLock, TryLock};
    let (_tmp, dir) = status_dir();
    let n = name("shared");
    status_store::write_view(&dir, &n, &record(1)).unwrap();
    status_store::write_view(&dir, &n, &record(2)).unwrap();
    assert_eq!(
        entries(&dir),
        [".shared.json.spare", "shared.json", "shared.lock"]
    );
    let spare = status_store::spare_path_for(&dir, &n);

    let TryLock::Locked(held) = FileLock::try_lock(&status_store::lock_path_for(&dir, &n)).unwrap()
    else {
        panic!("free lock");
    };
    let (file_before, spare_before) = (
        fs::read(dir.join("shared.json")).unwrap(),
        fs::read(&spare).unwrap(),
    );
    let err = status_store::write_view(&dir, &n, &record(3)).unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err}");
    assert_eq!(fs::read(dir.join("shared.json")).unwrap(), file_before);
    assert_eq!(fs::read(&spare).unwrap(), spare_before);

    drop(held);
    status_store::write_view(&dir, &n, &record(3)).unwrap();
    assert_eq!(status_store::read(&dir, &n).unwrap(), Some(record(3)));
    assert_eq!(mode(&dir.join("shared.json")), 0o600);
    assert_eq!(mode(&spare), 0o600);
    assert_eq!(
        entries(&dir),
        [".shared.json.spare", "shared.json", "shared.lock"]
    );
}

/// A reader opening the file while a writer replaces it again and again reads a whole
/// record every time, and the file holds the last record at the end.
#[test]
fn readers_see_whole_records_while_views_are_written() {
    let (_tmp, dir) = status_dir();
    let n = name("busy");
    status_store::write_view(&dir, &n, &record(0)).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u32;
            while !done.load(std::sync::atomic::Ordering::Acquire) || reads == 0 {
                let r = status_store::read(&dir, &n)
                    .unwrap()
                    .expect("the file exists");
                assert_eq!(r.status, WorkloadStatus::AuthRetrying);
                reads += 1;
            }
            reads
        });
        for i in 1..=500 {
            status_store::write_view(&dir, &n, &record(i)).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        assert!(reader.join().unwrap() > 0);
    });
    assert_eq!(status_store::read(&dir, &n).unwrap(), Some(record(500)));
}

/// Spares are tokenvisor's: `list` never shows them, `claim_dir` adopts a directory holding
/// them, and `recover` keeps a spare whose file exists and removes one whose file is gone
/// (a crash before the first exchange, or the file removed by someone else).
#[test]
fn spares_are_ours_listed_never_and_orphans_recovered() {
    let (_tmp, dir) = status_dir();
    let (kept, orphan) = (name("kept"), name("orphan"));
    for n in [&kept, &orphan] {
        status_store::write_view(&dir, n, &record(1)).unwrap();
        status_store::write_view(&dir, n, &record(2)).unwrap();
    }
    fs::remove_file(status_store::path_for(&dir, &orphan)).unwrap();
    let listed: Vec<String> = status_store::list(&dir)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.as_str().to_owned())
        .collect();
    assert_eq!(listed, ["kept"]);
    status_store::claim_dir(&dir).unwrap();

    let rec = status_store::recover(&dir).unwrap();
    assert_eq!(rec.temp_files_removed, 1);
    assert_eq!(rec.records.len(), 1);
    assert!(rec.skipped.is_empty() && rec.foreign.is_empty(), "{rec:?}");
    assert_eq!(
        entries(&dir),
        [
            ".kept.json.spare",
            ".tokenvisor",
            "kept.json",
            "kept.lock",
            "orphan.lock"
        ]
    );
}

/// A lock file removed (by ToolHive, after its operation) between our open and our lock is
/// not trusted: the lock is taken on the file the path names.
#[test]
fn a_lock_on_a_removed_lock_file_is_retaken_on_the_current_one() {
    use tokenvisor::locks::{FileLock, TryLock};
    let (_tmp, dir) = status_dir();
    let path = dir.join("w.lock");
    let TryLock::Locked(first) = FileLock::try_lock(&path).unwrap() else {
        panic!("free lock");
    };
    first.remove().unwrap();
    assert!(!path.exists());
    let TryLock::Locked(second) = FileLock::try_lock(&path).unwrap() else {
        panic!("free lock");
    };
    assert!(path.exists());
    // A third opener sees the second's lock.
    assert!(matches!(
        FileLock::try_lock(&path).unwrap(),
        TryLock::Held(_)
    ));
    drop(second);
}
