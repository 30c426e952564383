//! Hostile and bad input against the real daemon (issue 6 §3): the built `tokenvisor run`
//! against `tokenvisor-idp` and a scriptable endpoint on 127.0.0.1.
//!
//! - Token endpoints that misbehave: an 8 MiB HTML error page, a slow-loris body, a dropped
//!   connection, invalid JSON, invalid UTF-8, absurd `Retry-After` values (huge, negative,
//!   garbage, a date in year 9999), `expires_in` of 0, negative or huge. The daemon judges
//!   each one transient (or believes a lifetime within bounds), keeps a short summary, never
//!   marks the workload unauthenticated, and recovers.
//! - A status directory that stops taking writes while the daemon runs (replaced by a regular
//!   file; a read-only filesystem; a full filesystem; a file-size limit of zero — the tmpfs
//!   cases need `mount`, and fall back to a substitute, saying so, where it is refused):
//!   refreshing continues and tokens are served, the error is logged with the path and counted in
//!   `tokenvisor_status_write_failures_total`, and once the directory is usable again the
//!   latest status lands.
//! - The admin API with missing or wrong bearer tokens (401), oversized bodies (413) and
//!   traversal in paths (404).
//! - Configuration files that are malformed or name workloads with separators or `..`:
//!   `check-config` and `run` exit 1 naming the file and the key.
//!
//! Fault → expected → observed is tabulated in `docs/RELIABILITY.md` ("Hostile input and
//! secrets").

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::run;
use crate::harness::{
    Admin, Canned, Daemon, Launch, PATIENCE, POLL, ScriptServer, metric, poll_until, start_daemon,
    status_of, wait_until_within, write,
};
use tokenvisor_core::status::{ErrorOutcome, LastError};
use tokenvisor_core::{StatusRecord, Timestamp, WorkloadStatus};
use tokenvisor_idp::{ClientSpec, Fault, FaultScope, IdpConfig, IdpServer, Times};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const ADMIN_TOKEN: &str = "admin-token-hostile-0123456789";

/// `[service]` and `[defaults]` with short timeouts and backoffs.
fn head(dir: &Path, status_dir: &Path, log_level: &str) -> String {
    head_with(dir, status_dir, log_level, "")
}

/// [`head`] with more `[service]` lines.
fn head_with(dir: &Path, status_dir: &Path, log_level: &str, service: &str) -> String {
    write(&dir.join("admin.token"), ADMIN_TOKEN);
    format!(
        r#"[service]
status_dir = "{status}"
admin_listen = "127.0.0.1:0"
admin_token_file = "admin.token"
log_level = "{log_level}"
status_refresh_interval = "0s"
{service}

[defaults]
request_timeout = "1s"
connect_timeout = "1s"
backoff_initial = "100ms"
backoff_max = "500ms"
max_retry_after = "3s"
default_lifetime = "10m"
give_up_after = "0s"
"#,
        status = status_dir.display()
    )
}

/// A client_credentials workload (no refresh-token file to rotate).
fn cc_workload(name: &str, token_url: &str, secret: &str) -> String {
    format!(
        r#"
[[workload]]
name = "{name}"
token_url = "{token_url}"
client_id = "{name}"
client_secret = "{secret}"
grant = "client_credentials"
"#
    )
}

fn is(status_dir: &Path, name: &str, want: WorkloadStatus) -> bool {
    status_of(status_dir, name).is_some_and(|r| r.status == want)
}

/// The last error of a workload's status file, when it has one.
fn last_error(status_dir: &Path, name: &str) -> Option<(StatusRecord, LastError)> {
    let r = status_of(status_dir, name)?;
    let e = r.token.as_ref()?.last_error.clone()?;
    Some((r, e))
}

/// The current access token and its expiry, from the admin API (200 expected).
async fn token_of(admin: &Admin, name: &str) -> (String, Timestamp) {
    let a = admin
        .call("GET", &format!("/v1/workloads/{name}/token"), None)
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let j = a.json();
    (
        j["access_token"].as_str().unwrap().to_owned(),
        serde_json::from_value(j["expires_at"].clone()).unwrap(),
    )
}

async fn refresh(admin: &Admin, name: &str) {
    let a = admin
        .call("POST", &format!("/v1/workloads/{name}/refresh"), None)
        .await;
    assert_eq!(a.status, 202, "{a:?}");
}

// ---------------------------------------------------------------------------------------
// hostile token endpoints

/// Waits until `name`'s status file shows `auth_retrying` with a last error of `kind` (and
/// `http_status`), and checks the summary's bounds. Returns the error.
async fn wait_failure(
    status_dir: &Path,
    name: &str,
    kind: &str,
    http_status: Option<u16>,
) -> LastError {
    let mut found = None;
    wait_until_within(
        &format!("{name} auth_retrying with {kind} ({http_status:?})"),
        PATIENCE,
        || {
            found = last_error(status_dir, name).filter(|(r, e)| {
                r.status == WorkloadStatus::AuthRetrying
                    && e.kind == kind
                    && e.http_status == http_status
            });
            found.is_some()
        },
    )
    .await;
    let (record, e) = found.unwrap();
    assert_eq!(e.outcome, ErrorOutcome::Transient, "{e:?}");
    assert!(
        e.summary.len() <= 300,
        "summary of {} bytes",
        e.summary.len()
    );
    assert!(
        !e.summary.chars().any(char::is_control),
        "control character in {:?}",
        e.summary
    );
    assert!(record.status_context.len() <= 1024, "{record:?}");
    eprintln!(
        "observed {name}: {} {:?} retry_after={:?} summary={:?}",
        e.kind, e.http_status, e.retry_after_secs, e.summary
    );
    e
}

/// Back to a working endpoint: force a refresh and wait for `running` with a new token.
async fn recover(admin: &Admin, status_dir: &Path, name: &str) {
    refresh(admin, name).await;
    wait_until_within(&format!("{name} running again"), PATIENCE, || {
        is(status_dir, name, WorkloadStatus::Running)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_rides_out_hostile_token_endpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let status_dir = dir.join("statuses");
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    idp.register_client(ClientSpec::new("via-idp", "secret-via-idp"));
    let script = ScriptServer::start().await;
    let mut text = head(dir, &status_dir, "info");
    text.push_str(&cc_workload("via-idp", &idp.token_url(), "secret-via-idp"));
    text.push_str(&cc_workload(
        "via-script",
        &script.token_url(),
        "secret-via-script",
    ));
    let cfg = dir.join("tokenvisor.toml");
    write(&cfg, &text);
    let d = start_daemon(&cfg, Launch::default()).await;
    let admin = Admin::new(&d, Some(ADMIN_TOKEN));
    wait_until_within("both running", PATIENCE, || {
        is(&status_dir, "via-idp", WorkloadStatus::Running)
            && is(&status_dir, "via-script", WorkloadStatus::Running)
    })
    .await;

    // ── The IdP's faults: an 8 MiB page, a trickled body, a dropped connection.
    let scope = FaultScope::Client("via-idp".to_owned());
    let rss_before = d.peak_rss_kib();
    idp.set_fault(
        scope.clone(),
        Fault::HugeBody {
            status: 403,
            bytes: 8 << 20,
        },
        Times::Always,
    );
    refresh(&admin, "via-idp").await;
    let e = wait_failure(&status_dir, "via-idp", "infrastructure_4xx", Some(403)).await;
    // Let a few more 8 MiB answers arrive (the backoff retries), then compare the peak RSS:
    // reading stops at 64 KiB, so the 8 MiB never get near memory.
    let seen = idp.counters().fault(tokenvisor_idp::FaultKind::HugeBody);
    wait_until_within("three more huge answers", PATIENCE, || {
        idp.counters().fault(tokenvisor_idp::FaultKind::HugeBody) >= seen + 3
    })
    .await;
    let rss_growth = d.peak_rss_kib().saturating_sub(rss_before);
    eprintln!("observed: peak RSS {rss_before} KiB, grew by {rss_growth} KiB over 8 MiB answers");
    assert!(
        rss_growth < 8 * 1024,
        "peak RSS grew by {rss_growth} KiB over 8 MiB answers"
    );
    assert!(e.summary.starts_with("HTTP 403"), "{e:?}");
    idp.clear_fault(&scope);
    recover(&admin, &status_dir, "via-idp").await;

    idp.set_fault(
        scope.clone(),
        Fault::SlowBody {
            chunk_bytes: 1,
            interval: Duration::from_millis(200),
        },
        Times::Always,
    );
    refresh(&admin, "via-idp").await;
    let e = wait_failure(&status_dir, "via-idp", "timeout", None).await;
    assert!(e.summary.contains("timeout"), "{e:?}");
    idp.clear_fault(&scope);
    recover(&admin, &status_dir, "via-idp").await;

    idp.set_fault(scope.clone(), Fault::Drop, Times::Always);
    refresh(&admin, "via-idp").await;
    wait_failure(&status_dir, "via-idp", "eof", None).await;
    idp.clear_fault(&scope);
    recover(&admin, &status_dir, "via-idp").await;

    // ── Bodies: invalid JSON, invalid UTF-8 (in a 2xx and in a 4xx), deep nesting.
    let cases: Vec<(&str, Canned, &str, u16)> = vec![
        (
            "invalid JSON on 200",
            Canned::new(
                200,
                "application/json",
                r#"{"access_token": "at_x", "expires_in": "#,
            ),
            "malformed_success",
            200,
        ),
        (
            "invalid UTF-8 inside a 200 token",
            Canned::new(
                200,
                "application/json",
                b"{\"access_token\":\"\xff\xfe\xfd\",\"expires_in\":60}".to_vec(),
            ),
            "malformed_success",
            200,
        ),
        (
            "invalid UTF-8 on 400",
            Canned::new(
                400,
                "text/html; charset=utf-8",
                b"\xff\xfe\x00\x1b[31m<title>\xc3\x28 bad \xe2\x80</title>".to_vec(),
            ),
            "infrastructure_4xx",
            400,
        ),
        (
            "invalid UTF-8 as the error code",
            Canned::new(
                400,
                "application/json",
                b"{\"error\":\"\xff\xfe\"}".to_vec(),
            ),
            "infrastructure_4xx",
            400,
        ),
        (
            "JSON nested 100,000 deep",
            Canned::new(400, "application/json", {
                let mut b = "{\"error\":".to_owned();
                b.push_str(&"[".repeat(100_000));
                b.into_bytes()
            }),
            "infrastructure_4xx",
            400,
        ),
    ];
    for (what, canned, kind, status) in cases {
        script.set(move |_| canned.clone());
        refresh(&admin, "via-script").await;
        let e = wait_failure(&status_dir, "via-script", kind, Some(status)).await;
        assert_eq!(e.error_code, None, "{what}: {e:?}");
        script.set(|s| Canned::token(s.n, "3600", None));
        recover(&admin, &status_dir, "via-script").await;
    }

    // ── Retry-After: huge, negative, garbage, a date in year 9999. The maximum is 3 s.
    let cases: Vec<(&str, u16, &[u8], Option<u64>)> = vec![
        ("huge", 429, b"99999999999999999999999999", Some(3)),
        ("u64::MAX", 503, b"18446744073709551615", Some(3)),
        ("negative", 429, b"-5", None),
        ("garbage", 503, b"soon, maybe", None),
        ("fraction", 429, b"1.5", None),
        ("year 9999", 503, b"Fri, 31 Dec 9999 23:59:59 GMT", Some(3)),
        ("obs-text bytes", 429, b"\xff\xfe1", None),
    ];
    for (what, status, value, want) in cases {
        let value = value.to_vec();
        script.set(move |_| {
            Canned::new(status, "text/plain", "busy").header("retry-after", value.clone())
        });
        refresh(&admin, "via-script").await;
        let kind = if status == 429 {
            "rate_limited"
        } else {
            "server_5xx"
        };
        let e = wait_failure(&status_dir, "via-script", kind, Some(status)).await;
        assert_eq!(e.retry_after_secs, want, "Retry-After {what}: {e:?}");
        script.set(|s| Canned::token(s.n, "3600", None));
        // A clamped Retry-After holds the endpoint up to 3 s; the workload waits it out.
        wait_until_within(
            &format!("via-script running after {what}"),
            PATIENCE,
            || is(&status_dir, "via-script", WorkloadStatus::Running),
        )
        .await;
    }

    // ── expires_in: 0 and negative → the default lifetime (10 minutes here); huge → a year.
    let year = 365 * 24 * 3600;
    for (expires_in, want_secs) in [
        ("0", 600),
        ("-3600", 600),
        ("\"-1\"", 600),
        ("99999999999999", year),
        ("1e300", year),
        ("\"99999999999999999999999\"", year),
    ] {
        script.set(move |s| Canned::token(s.n, expires_in, None));
        let before = script.requests();
        refresh(&admin, "via-script").await;
        wait_until_within(
            &format!("a token with expires_in {expires_in}"),
            PATIENCE,
            || script.requests() > before,
        )
        .await;
        let mut lifetime = None;
        wait_until_within(
            &format!("running after expires_in {expires_in}"),
            PATIENCE,
            || {
                let Some(r) = status_of(&status_dir, "via-script") else {
                    return false;
                };
                let exp = r.token.as_ref().and_then(|t| t.expires_at);
                lifetime = exp.map(|e| e.since(r.updated_at).as_secs());
                r.status == WorkloadStatus::Running
                    && lifetime.is_some_and(|l| l + 5 >= want_secs && l <= want_secs)
            },
        )
        .await;
        eprintln!("observed expires_in {expires_in}: lifetime {lifetime:?} s");
        let (token, _) = token_of(&admin, "via-script").await;
        assert!(token.starts_with("at_script"), "{token}");
    }

    // Never unauthenticated; the daemon is still healthy.
    let a = admin
        .call("GET", "/v1/workloads?status=unauthenticated", None)
        .await;
    assert_eq!(a.json(), serde_json::json!([]), "{a:?}");
    let h = admin.call_as(None, "GET", "/healthz", None).await;
    assert_eq!(h.status, 200, "{h:?}");
}

// ---------------------------------------------------------------------------------------
// a status directory that stops taking writes

/// Drives one daemon through a status directory that breaks and is repaired:
/// `break_dir` makes writes fail, `restore_dir` undoes it; `log_kinds` are the error texts
/// (any of them) the log must show.
async fn ride_out_a_broken_status_dir(
    d: &Daemon,
    status_dir: &Path,
    break_dir: impl FnOnce(),
    restore_dir: impl FnOnce(),
    log_kinds: &[&str],
) {
    let lines = FailureLines {
        failed: "status file writes failed",
        path: status_dir.display().to_string(),
        recovered: "status file writes succeed again",
    };
    ride_out_broken_writes(d, status_dir, break_dir, restore_dir, log_kinds, &lines).await;
}

/// The log lines of a write failure: the failure (naming `path`), and the recovery.
struct FailureLines {
    failed: &'static str,
    path: String,
    recovered: &'static str,
}

/// [`ride_out_a_broken_status_dir`], with the log lines to expect.
async fn ride_out_broken_writes(
    d: &Daemon,
    status_dir: &Path,
    break_dir: impl FnOnce(),
    restore_dir: impl FnOnce(),
    log_kinds: &[&str],
    lines: &FailureLines,
) {
    let admin = Admin::new(d, Some(ADMIN_TOKEN));
    wait_until_within("alpha running", PATIENCE, || {
        is(status_dir, "alpha", WorkloadStatus::Running)
    })
    .await;
    let (old_token, _) = token_of(&admin, "alpha").await;
    let failures_before = metric(
        &admin.metrics().await,
        "tokenvisor_status_write_failures_total",
    )
    .unwrap_or(0.0);

    break_dir();
    // The actors keep working: a forced refresh yields a new token, served at once.
    refresh(&admin, "alpha").await;
    let mut new_token = None;
    for _ in 0..3000 {
        let (t, exp) = token_of(&admin, "alpha").await;
        if t != old_token {
            new_token = Some((t, exp));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, new_expiry) = new_token.expect("a new token while the status dir is broken");
    let a = admin.call("GET", "/v1/workloads/alpha", None).await;
    assert_eq!(a.json()["status"], "running", "{a:?}");

    // The failure is logged with the path and the reason, and counted.
    d.wait_log(lines.failed).await;
    let log = d.log_now();
    let line = log
        .lines()
        .find(|l| l.contains(lines.failed))
        .unwrap()
        .to_owned();
    eprintln!("observed log: {line}");
    assert!(line.contains(&lines.path), "{line}");
    assert!(
        log_kinds.iter().any(|k| line.to_lowercase().contains(k)),
        "none of {log_kinds:?} in {line}"
    );
    let failures = metric(
        &admin.metrics().await,
        "tokenvisor_status_write_failures_total",
    )
    .unwrap_or(0.0);
    assert!(failures > failures_before, "write failures {failures}");

    // Repaired: the latest record lands (the retried write carries the new token's expiry).
    restore_dir();
    wait_until_within("the latest status on disk", PATIENCE, || {
        status_of(status_dir, "alpha").is_some_and(|r| {
            r.status == WorkloadStatus::Running
                && r.token.as_ref().and_then(|t| t.expires_at) == Some(new_expiry)
        })
    })
    .await;
    d.wait_log(lines.recovered).await;
    let mut pending = None;
    for _ in 0..3000 {
        pending = metric(&admin.metrics().await, "tokenvisor_status_pending");
        if pending == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pending, Some(0.0), "status records still pending");
}

/// A daemon with one client_credentials workload `alpha` on a fresh IdP.
async fn alpha_daemon(dir: &Path, status_dir: &Path, launch: Launch) -> (IdpServer, Daemon) {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    idp.register_client(ClientSpec::new("alpha", "secret-alpha"));
    let mut text = head(dir, status_dir, "info");
    text.push_str(&cc_workload("alpha", &idp.token_url(), "secret-alpha"));
    let cfg = dir.join("tokenvisor.toml");
    write(&cfg, &text);
    let d = start_daemon(&cfg, launch).await;
    (idp, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_status_dir_replaced_by_a_file_keeps_the_daemon_refreshing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let status_dir = dir.join("statuses");
    let (_idp, d) = alpha_daemon(dir, &status_dir, Launch::default()).await;
    let aside = dir.join("statuses.aside");
    ride_out_a_broken_status_dir(
        &d,
        &status_dir,
        || {
            std::fs::rename(&status_dir, &aside).unwrap();
            write(&status_dir, "a regular file where the status directory was");
        },
        || {
            std::fs::remove_file(&status_dir).unwrap();
            std::fs::rename(&aside, &status_dir).unwrap();
        },
        &["not a directory"],
    )
    .await;
}

/// A tmpfs mounted for one test; unmounted (lazily) on drop.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    /// Mounts a `size`-byte tmpfs at `at`, or says why it cannot.
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs { at: at.to_owned() })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Fills the filesystem with one file until a write fails with "no space".
    fn fill(&self) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.at.join("filler")).unwrap();
        let chunk = [0u8; 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                    break;
                }
            }
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.at.join("filler")).unwrap();
    }

    /// Remounts read-only (`ro`) or read-write (`rw`). A remount to `ro` is refused while a
    /// file is open for writing (a status write in flight): it is retried a few times.
    fn remount(&self, mode: &str) {
        let mut last = String::new();
        for _ in 0..200 {
            let out = std::process::Command::new("mount")
                .args(["-o", &format!("remount,{mode}")])
                .arg(&self.at)
                .output()
                .expect("mount runs");
            if out.status.success() {
                return;
            }
            // Each attempt runs mount(8): a few milliseconds, so no sleep is needed.
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("remount,{mode} {}: {last}", self.at.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}

/// Lowers (or restores) the daemon's file-size limit with prlimit(1) (util-linux).
fn set_fsize_limit(pid: u32, soft: &str) {
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={soft}:")])
        .output()
        .expect(
            "prlimit(1) is needed for this test: install util-linux (apt-get install util-linux)",
        );
    assert!(
        out.status.success(),
        "prlimit --fsize={soft}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The substitute for a full disk that needs no privilege: the daemon's file-size limit set
/// to 0, so that every status write fails mid-file (EFBIG) like a full disk (ENOSPC) does.
async fn ride_out_a_zero_file_size_limit(dir: &Path) {
    let status_dir = dir.join("statuses");
    let launch = Launch {
        ignore_sigxfsz: true,
        ..Launch::default()
    };
    let (_idp, d) = alpha_daemon(dir, &status_dir, launch).await;
    let pid = d.pid();
    // The limit is the whole process's: the state journal's commits fail first (a status
    // file is written only from a committed record), and are retried until it is lifted.
    let lines = FailureLines {
        failed: "state journal commit failed",
        path: "journal.sqlite3".to_owned(),
        recovered: "state journal commits succeed again",
    };
    ride_out_broken_writes(
        &d,
        &status_dir,
        || set_fsize_limit(pid, "0"),
        || set_fsize_limit(pid, "unlimited"),
        &[
            "file too large",
            "disk i/o error",
            "database or disk is full",
        ],
        &lines,
    )
    .await;
    // A failed write leaves no temp file behind.
    let leftovers: Vec<_> = std::fs::read_dir(&status_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The directory's marker (`.tokenvisor`, the daemon's lock), lock files (kept) and
        // spares (`.<name>.json.spare`) belong there.
        .filter(|n| {
            !n.ends_with(".json")
                && !n.ends_with(".json.spare")
                && !n.ends_with(".lock")
                && n != ".tokenvisor"
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zero_file_size_limit_on_status_writes_is_ridden_out() {
    let tmp = tempfile::tempdir().unwrap();
    ride_out_a_zero_file_size_limit(tmp.path()).await;
}

/// A real full filesystem: a 64 KiB tmpfs, filled up. Mounting needs privilege; where it is
/// refused, the test says so and runs the file-size-limit substitute instead (the same
/// write-failure path: a write that fails mid-file).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_status_filesystem_is_ridden_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fs = match Tmpfs::mount(&dir.join("small"), "64k") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "NOTE: cannot mount a tmpfs ({why}); running the RLIMIT_FSIZE substitute instead"
            );
            ride_out_a_zero_file_size_limit(dir).await;
            return;
        }
    };
    let status_dir = fs.at.join("statuses");
    let (_idp, d) = alpha_daemon(dir, &status_dir, Launch::default()).await;
    ride_out_a_broken_status_dir(
        &d,
        &status_dir,
        || fs.fill(),
        || fs.free(),
        &["no storage space", "no space left"],
    )
    .await;
    let leftovers: Vec<_> = std::fs::read_dir(&status_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The directory's marker (`.tokenvisor`, the daemon's lock), lock files (kept) and
        // spares (`.<name>.json.spare`) belong there.
        .filter(|n| {
            !n.ends_with(".json")
                && !n.ends_with(".json.spare")
                && !n.ends_with(".lock")
                && n != ".tokenvisor"
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    drop(d);
}

/// A read-only filesystem under the status directory (a tmpfs remounted `ro`: permission
/// bits do not stop root, a read-only mount does). Where mounting is refused, the test says
/// so and runs the status-dir-replaced-by-a-file scenario instead (the same open/create
/// failure path).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_status_filesystem_is_ridden_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fs = match Tmpfs::mount(&dir.join("ro"), "1m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "NOTE: cannot mount a tmpfs ({why}); running the replaced-by-a-file substitute"
            );
            let status_dir = dir.join("statuses");
            let (_idp, d) = alpha_daemon(dir, &status_dir, Launch::default()).await;
            let aside = dir.join("statuses.aside");
            ride_out_a_broken_status_dir(
                &d,
                &status_dir,
                || {
                    std::fs::rename(&status_dir, &aside).unwrap();
                    write(&status_dir, "a regular file");
                },
                || {
                    std::fs::remove_file(&status_dir).unwrap();
                    std::fs::rename(&aside, &status_dir).unwrap();
                },
                &["not a directory"],
            )
            .await;
            return;
        }
    };
    let status_dir = fs.at.join("statuses");
    let (_idp, d) = alpha_daemon(dir, &status_dir, Launch::default()).await;
    ride_out_a_broken_status_dir(
        &d,
        &status_dir,
        || fs.remount("ro"),
        || fs.remount("rw"),
        &["read-only filesystem", "read-only file system"],
    )
    .await;
    drop(d);
}

#[test]
fn a_status_dir_that_is_a_file_at_start_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let status_dir = dir.join("statuses");
    write(&status_dir, "not a directory");
    let mut text = head(dir, &status_dir, "info");
    text.push_str(&cc_workload(
        "alpha",
        "http://127.0.0.1:9/token",
        "secret-alpha",
    ));
    let cfg = dir.join("tokenvisor.toml");
    write(&cfg, &text);
    let r = run(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(
        r.stderr.contains(&status_dir.display().to_string())
            && r.stderr.to_lowercase().contains("not a directory"),
        "{r:#?}"
    );
    assert!(!r.stderr.contains("panicked"), "{r:#?}");
}

// ---------------------------------------------------------------------------------------
// the admin API

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_api_refuses_bad_bearers_oversized_bodies_and_traversal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let status_dir = dir.join("statuses");
    let (_idp, d) = alpha_daemon(dir, &status_dir, Launch::default()).await;
    let admin = Admin::new(&d, Some(ADMIN_TOKEN));
    wait_until_within("alpha running", PATIENCE, || {
        is(&status_dir, "alpha", WorkloadStatus::Running)
    })
    .await;

    let routes: &[(&str, &str, Option<&[u8]>)] = &[
        ("GET", "/metrics", None),
        ("GET", "/v1/workloads", None),
        ("GET", "/v1/workloads/alpha", None),
        ("POST", "/v1/workloads/alpha/refresh", None),
        (
            "PUT",
            "/v1/workloads/alpha/credentials",
            Some(br#"{"client_secret":"zzzzzzzz"}"#),
        ),
        ("GET", "/v1/workloads/alpha/token", None),
    ];
    let wrong = [
        None,
        Some(String::new()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Bearer {ADMIN_TOKEN} {ADMIN_TOKEN}")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(format!("Token {ADMIN_TOKEN}")),
        Some(ADMIN_TOKEN.to_owned()),
        Some(format!("Bearer {}", "A".repeat(8 * 1024))),
    ];
    for (method, path, body) in routes {
        for auth in &wrong {
            let a = admin
                .call_as(auth.clone(), method, path, body.map(<[u8]>::to_vec))
                .await;
            assert_eq!(a.status, 401, "{auth:?} {a:?}");
            assert!(
                a.headers.iter().any(|h| h == "www-authenticate: Bearer"),
                "{a:?}"
            );
            assert!(a.json()["error"].is_string(), "{a:?}");
        }
    }
    // /healthz needs no token and says nothing more than a count.
    let a = admin.call_as(None, "GET", "/healthz", None).await;
    assert_eq!(a.status, 200, "{a:?}");

    // Oversized bodies: 413 with a JSON error, whether announced by Content-Length or
    // streamed chunked; 401 first without a token (auth comes before the body is read).
    let big = |n: usize| format!(r#"{{"client_secret":"{}"}}"#, "x".repeat(n)).into_bytes();
    let put = "/v1/workloads/alpha/credentials";
    let over = admin
        .answer_to_refused_body("PUT credentials (16 KiB + 1)", async || {
            (admin.request(reqwest::Method::PUT, put))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(big(16 * 1024 + 1))
        })
        .await;
    assert_eq!(over.status, 413, "{over:?}");
    assert!(
        over.json()["error"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{over:?}"
    );
    // 4 MiB: the answer comes before the body is read; the client may see it, or see the
    // connection closed under the rest of its body. Either way nothing is buffered.
    for (auth, want) in [(Some(format!("Bearer {ADMIN_TOKEN}")), 413), (None, 401)] {
        match admin.try_call_as(auth, "PUT", put, big(4 << 20)).await {
            Ok(a) => assert_eq!(a.status, want, "{a:?}"),
            Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
        }
    }
    // A file body is streamed chunked, without a Content-Length.
    let body_file = dir.join("body.json");
    std::fs::write(&body_file, big(20 * 1024)).unwrap();
    let streamed = admin
        .answer_to_refused_body("PUT credentials (chunked, 20 KiB)", async || {
            let file = tokio::fs::File::open(&body_file).await.unwrap();
            (admin.request(reqwest::Method::PUT, put))
                .bearer_auth(ADMIN_TOKEN)
                .body(reqwest::Body::from(file))
        })
        .await;
    assert_eq!(streamed.status, 413, "{streamed:?}");
    // Malformed bodies of an acceptable size: 400, and nothing was replaced.
    for body in [
        &b"\xff\xfe\x00"[..],
        b"{",
        b"[]",
        b"{\"client_secret\":1}",
        b"null",
    ] {
        let a = admin.call("PUT", put, Some(body.to_vec())).await;
        assert_eq!(a.status, 400, "{:?}: {a:?}", String::from_utf8_lossy(body));
    }

    // Traversal and junk in paths: 404 (a name that is not valid cannot exist), never a
    // file touched outside the status directory.
    for path in [
        "/v1/workloads/..",
        "/v1/workloads/..%2F..%2Fetc%2Fpasswd",
        "/v1/workloads/%2E%2E",
        "/v1/workloads/a%5Cb/token",
        "/v1/workloads/.hidden/refresh",
        "/v1/workloads/%00",
        "/v1/workloads/alpha%2F..%2Falpha/token",
    ] {
        for method in ["GET", "POST", "PUT"] {
            let a = admin
                .call(
                    method,
                    path,
                    (method == "PUT").then(|| br#"{"client_secret":"zzzzzzzz"}"#.to_vec()),
                )
                .await;
            assert!(a.status == 404 || a.status == 405, "{method} {path}: {a:?}");
        }
    }
    let names: Vec<String> = std::fs::read_dir(&status_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The marker, the lock file (kept) and the spare are not status files.
        .filter(|n| n != ".tokenvisor" && !n.ends_with(".lock") && !n.ends_with(".json.spare"))
        .collect();
    assert_eq!(names, ["alpha.json"], "{names:?}");

    // Still serving.
    let (token, _) = token_of(&admin, "alpha").await;
    assert!(!token.is_empty());
}

// ---------------------------------------------------------------------------------------
// the admin listener over raw TCP

/// This process's hard `RLIMIT_NOFILE` (the daemon inherits it), from `/proc/self/limits`.
fn rlimit_nofile_hard() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .expect("Max open files in /proc/self/limits")
}

/// How long a connection the daemon should close may stay open in these tests: well above
/// the 1 s limits configured, well below hyper's own defaults (30 s) and forever.
const CLOSE_PATIENCE: Duration = Duration::from_secs(10);

async fn connect(d: &Daemon) -> TcpStream {
    TcpStream::connect(d.admin.as_deref().unwrap())
        .await
        .expect("connect to the admin API")
}

/// Reads until the server closes the connection (EOF or reset) or `patience` passes.
/// Returns what arrived and whether the connection was closed.
async fn read_to_close(stream: &mut TcpStream, patience: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// Reads until a complete response head (`\r\n\r\n`) arrived, the server closed, or
/// `patience` passed.
async fn read_head(stream: &mut TcpStream, patience: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + patience;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(Ok(_) | Err(_)) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The daemon's log so far without ANSI escape sequences (the text format colours field
/// names even into a pipe).
fn plain_log(d: &Daemon) -> String {
    let raw = d.log_now();
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A request head for the daemon (`Host` names it) with extra header lines.
fn request_head(d: &Daemon, line: &str, extra: &[String]) -> String {
    let mut head = format!("{line}\r\nHost: {}\r\n", d.admin.as_deref().unwrap());
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_listener_closes_slow_idle_and_oversized_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let status_dir = dir.join("statuses");
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    idp.register_client(ClientSpec::new("alpha", "secret-alpha"));
    let mut text = head_with(
        dir,
        &status_dir,
        "info",
        "admin_header_timeout = \"1s\"\nadmin_idle_timeout = \"1s\"",
    );
    text.push_str(&cc_workload("alpha", &idp.token_url(), "secret-alpha"));
    let cfg = dir.join("tokenvisor.toml");
    write(&cfg, &text);
    // A soft descriptor limit below the hard one: raised to the hard limit at start.
    let hard = rlimit_nofile_hard();
    let launch = Launch {
        ulimit: Some("-S -n 256".to_owned()),
        ..Launch::default()
    };
    let d = start_daemon(&cfg, launch).await;
    let admin = Admin::new(&d, Some(ADMIN_TOKEN));
    wait_until_within("alpha running", PATIENCE, || {
        is(&status_dir, "alpha", WorkloadStatus::Running)
    })
    .await;
    let log = plain_log(&d);
    if hard > 256 {
        assert!(
            log.contains(&format!("was=256 soft={hard} hard={hard}")),
            "{log}"
        );
    }
    let bearer = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let put = "PUT /v1/workloads/alpha/credentials HTTP/1.1";

    // A request head that never ends (slow loris): closed after the header timeout.
    let mut slow = connect(&d).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        .await
        .unwrap();
    let (got, closed) = read_to_close(&mut slow, CLOSE_PATIENCE).await;
    assert!(closed, "a slow request head was not closed: {got:?}");
    assert!(!got.contains(" 200 "), "{got}");

    // An idle keep-alive connection: one answer, then closed.
    let mut idle = connect(&d).await;
    idle.write_all(request_head(&d, "GET /healthz HTTP/1.1", &[]).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut idle, CLOSE_PATIENCE).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let (_, closed) = read_to_close(&mut idle, CLOSE_PATIENCE).await;
    assert!(closed, "an idle keep-alive connection was not closed");

    // A body that stalls after its head (the head timeout no longer applies): closed after
    // the idle timeout, nothing replaced.
    let mut stalled = connect(&d).await;
    let head = request_head(&d, put, &[bearer.clone(), "Content-Length: 100".to_owned()]);
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(b"{\"client_s").await.unwrap();
    let (got, closed) = read_to_close(&mut stalled, CLOSE_PATIENCE).await;
    assert!(closed, "a stalled body was not closed: {got:?}");
    assert!(!got.contains(" 204 "), "{got}");

    // A request head over 16 KiB: 431, closed.
    let mut big = connect(&d).await;
    let huge = format!("X-Big: {}", "a".repeat(20 * 1024));
    let _ = big
        .write_all(request_head(&d, "GET /healthz HTTP/1.1", &[huge]).as_bytes())
        .await;
    let (got, closed) = read_to_close(&mut big, CLOSE_PATIENCE).await;
    assert!(got.starts_with("HTTP/1.1 431 "), "{got:?}");
    assert!(closed);

    // Expect: 100-continue for a body that will be refused: the refusal, never a 100.
    for (auth, length, want) in [
        (None, 1 << 20, "HTTP/1.1 401 "),
        (Some(bearer.clone()), 1 << 20, "HTTP/1.1 413 "),
    ] {
        let mut c = connect(&d).await;
        let mut extra = vec![
            format!("Content-Length: {length}"),
            "Expect: 100-continue".to_owned(),
            "Content-Type: application/json".to_owned(),
        ];
        extra.extend(auth);
        c.write_all(request_head(&d, put, &extra).as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut c, CLOSE_PATIENCE).await;
        assert!(head.starts_with(want), "{want}: {head:?}");
        assert!(!head.contains("100 Continue"), "{head}");
    }
    // …while a body that will be read gets its 100 Continue (the test can see one).
    let body = br#"{"client_secret":"secret-alpha"}"#;
    let mut c = connect(&d).await;
    let extra = vec![
        format!("Content-Length: {}", body.len()),
        "Expect: 100-continue".to_owned(),
        "Content-Type: application/json".to_owned(),
        bearer.clone(),
    ];
    c.write_all(request_head(&d, put, &extra).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut c, CLOSE_PATIENCE).await;
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head:?}");
    c.write_all(body).await.unwrap();
    let head = read_head(&mut c, CLOSE_PATIENCE).await;
    assert!(head.starts_with("HTTP/1.1 204 "), "{head:?}");

    // DNS rebinding (a foreign name in Host) and a cross-origin page, with the right bearer.
    for (host, origin, want) in [
        ("evil.example", None, "HTTP/1.1 400 "),
        ("evil.example:80", None, "HTTP/1.1 400 "),
        (
            d.admin.as_deref().unwrap(),
            Some("http://evil.example"),
            "HTTP/1.1 403 ",
        ),
    ] {
        let mut c = connect(&d).await;
        let mut req =
            format!("GET /v1/workloads/alpha/token HTTP/1.1\r\nHost: {host}\r\n{bearer}\r\n");
        if let Some(o) = origin {
            req.push_str(&format!("Origin: {o}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        let (got, _) = read_to_close(&mut c, CLOSE_PATIENCE).await;
        assert!(got.starts_with(want), "{host} {origin:?}: {got:?}");
        assert!(!got.contains("access_token"), "{got}");
    }

    // Still serving.
    let a = admin.call_as(None, "GET", "/healthz", None).await;
    assert_eq!(a.status, 200, "{a:?}");
    let (token, _) = token_of(&admin, "alpha").await;
    assert!(!token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn excess_admin_connections_are_refused_at_once_and_the_cap_follows_the_fd_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let status_dir = dir.join("statuses");
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    idp.register_client(ClientSpec::new("alpha", "secret-alpha"));
    // admin_max_connections stays 256; a descriptor limit of 64 makes the cap 64 / 4 = 16.
    let mut text = head_with(dir, &status_dir, "info", "admin_header_timeout = \"1h\"");
    text.push_str(&cc_workload("alpha", &idp.token_url(), "secret-alpha"));
    let cfg = dir.join("tokenvisor.toml");
    write(&cfg, &text);
    let launch = Launch {
        ulimit: Some("-n 64".to_owned()),
        ..Launch::default()
    };
    let d = start_daemon(&cfg, launch).await;
    let admin = Admin::new(&d, Some(ADMIN_TOKEN));
    wait_until_within("alpha running", PATIENCE, || {
        is(&status_dir, "alpha", WorkloadStatus::Running)
    })
    .await;
    let log = plain_log(&d);
    assert!(log.contains("soft=64"), "{log}");
    assert!(log.contains("max_connections=16"), "{log}");

    // 16 connections that never finish their request head hold every slot…
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut c = connect(&d).await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    // …so the next ones are answered 503 and closed at once, never queued, even for
    // /healthz.
    for _ in 0..3 {
        let mut c = connect(&d).await;
        let _ = c
            .write_all(request_head(&d, "GET /healthz HTTP/1.1", &[]).as_bytes())
            .await;
        let (got, closed) = read_to_close(&mut c, CLOSE_PATIENCE).await;
        assert!(closed, "an excess connection stayed open: {got:?}");
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 503 "),
            "an excess connection was served: {got:?}"
        );
    }
    // One slot freed: served again.
    drop(held.pop());
    wait_until_within("/healthz served again", PATIENCE, || {
        std::net::TcpStream::connect(d.admin.as_deref().unwrap())
            .and_then(|mut c| {
                use std::io::{Read as _, Write as _};
                c.set_read_timeout(Some(Duration::from_secs(5)))?;
                c.write_all(
                    format!(
                        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                        d.admin.as_deref().unwrap()
                    )
                    .as_bytes(),
                )?;
                let mut got = String::new();
                let _ = c.read_to_string(&mut got);
                Ok(got.starts_with("HTTP/1.1 200 "))
            })
            .unwrap_or(false)
    })
    .await;
    drop(held);
    let metrics = admin.metrics().await;
    assert!(
        metric(&metrics, "tokenvisor_admin_connections_refused_total").unwrap_or(0.0) >= 3.0,
        "{metrics}"
    );
    // Refreshing was never touched.
    assert!(is(&status_dir, "alpha", WorkloadStatus::Running));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_hostile_connections_leave_the_daemon_as_it_was() {
    const WAVES: usize = 50;
    const PER_WAVE: usize = 100;
    const RSS_SLACK_KIB: u64 = 50 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let status_dir = dir.join("statuses");
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    // Tokens living 2 s: a refresh about every 1.5 s throughout the attack.
    idp.register_client(
        ClientSpec::new("alpha", "secret-alpha").with_lifetime(Duration::from_secs(2)),
    );
    let mut text = head_with(
        dir,
        &status_dir,
        "info",
        "admin_header_timeout = \"2s\"\nadmin_idle_timeout = \"2s\"",
    );
    text.push_str(&cc_workload("alpha", &idp.token_url(), "secret-alpha"));
    let cfg = dir.join("tokenvisor.toml");
    write(&cfg, &text);
    let d = start_daemon(&cfg, Launch::default()).await;
    let admin = Admin::new(&d, Some(ADMIN_TOKEN));
    wait_until_within("alpha running", PATIENCE, || {
        is(&status_dir, "alpha", WorkloadStatus::Running)
    })
    .await;
    let healthz = async || admin.call_as(None, "GET", "/healthz", None).await.status;
    assert_eq!(healthz().await, 200);
    let baseline = d.rss_kib();
    let fds_before = d.fd_count();
    let requests_before = idp.counters().token_requests;
    let expiry_before = status_of(&status_dir, "alpha")
        .and_then(|r| r.token.and_then(|t| t.expires_at))
        .expect("an expiry");

    let oversized = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let mut opened = 0;
    let mut healthz_refused = 0;
    let mut last_wave = Vec::new();
    for _ in 0..WAVES {
        let mut wave = Vec::with_capacity(PER_WAVE);
        for i in 0..PER_WAVE {
            let Ok(mut c) = TcpStream::connect(d.admin.as_deref().unwrap()).await else {
                continue;
            };
            opened += 1;
            // A third slow request heads, a third silent, a third oversized heads.
            let bytes: &[u8] = match i % 3 {
                0 => b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a",
                1 => b"",
                _ => oversized.as_bytes(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), c.write_all(bytes)).await;
            wave.push(c);
        }
        // /healthz answers while the wave is open (a retry only if every slot was taken).
        let mut ok = false;
        for _ in 0..50 {
            if healthz().await == 200 {
                ok = true;
                break;
            }
            healthz_refused += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "/healthz did not answer during the attack");
        last_wave = wave;
    }
    assert!(
        opened >= WAVES * PER_WAVE * 99 / 100,
        "only {opened} connections opened"
    );
    let peak = d.peak_rss_kib();

    // The last wave stays open on our side: the daemon closes its slow and silent
    // connections itself (header and idle timeouts), its descriptors back to the baseline.
    let mut fds = d.fd_count();
    let shed = poll_until(PATIENCE, POLL, || {
        fds = d.fd_count();
        fds <= fds_before + 8
    })
    .await;
    assert!(
        shed,
        "the daemon holds {fds} descriptors, {fds_before} before the attack"
    );
    drop(last_wave);

    // After they closed, RSS comes back within 50 MB of the baseline.
    let mut after = d.rss_kib();
    let back = poll_until(PATIENCE, POLL, || {
        after = d.rss_kib();
        after <= baseline + RSS_SLACK_KIB
    })
    .await;
    eprintln!(
        "observed: {opened} hostile connections; RSS baseline {baseline} KiB, peak {peak} KiB, \
         after {after} KiB; /healthz refused {healthz_refused} times"
    );
    assert!(back, "RSS {after} KiB, baseline {baseline} KiB");

    // Refreshes went on: the IdP saw more of them and the status file's expiry advanced.
    wait_until_within("more refreshes", PATIENCE, || {
        idp.counters().token_requests >= requests_before + 2
    })
    .await;
    wait_until_within("a later expiry in the status file", PATIENCE, || {
        status_of(&status_dir, "alpha")
            .and_then(|r| r.token.and_then(|t| t.expires_at))
            .is_some_and(|e| e > expiry_before)
    })
    .await;
    assert!(is(&status_dir, "alpha", WorkloadStatus::Running));
    assert_eq!(healthz().await, 200);
}

// ---------------------------------------------------------------------------------------
// configuration files

/// Asserts `check-config` and `run` both exit 1 with a line naming `file` and `key`.
fn assert_rejected(file: &Path, key: &str, reason: &str) {
    let f = file.to_str().unwrap();
    for args in [vec!["check-config", f], vec!["run", "--config", f]] {
        let r = run(&args);
        assert_eq!(r.code, Some(1), "{args:?}: {r:#?}");
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains(f) && l.contains(key) && l.to_lowercase().contains(reason));
        assert!(
            line.is_some(),
            "{args:?}: no line naming {f}, {key} and {reason:?}: {r:#?}"
        );
        eprintln!("observed {}: {}", args[0], line.unwrap_or_default());
        assert!(!r.stderr.contains("panicked"), "{r:#?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:#?}");
    }
}

#[test]
fn workload_names_with_separators_or_traversal_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    let status_dir = tmp.path().join("statuses");
    for (i, (name, reason)) in [
        ("a/b", "contains '/'"),
        ("..", "may not start with '.'"),
        (".", "may not start with '.'"),
        ("../escape", "contains '/'"),
        ("x/../../escape", "contains '/'"),
        ("/etc/passwd", "contains '/'"),
        ("a\\b", "contains '\\\\'"),
        ("..\\escape", "contains '\\\\'"),
        ("c:\\x", "contains ':'"),
        ("nul\u{0}byte", "contains '\\0'"),
        ("", "empty"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut text = head(&dir, &status_dir, "info");
        text.push_str(&cc_workload(
            "fine",
            "http://127.0.0.1:9/token",
            "secret-fine",
        ));
        text.push_str(&cc_workload(
            "placeholder",
            "http://127.0.0.1:9/token",
            "secret-x",
        ));
        let text = text.replace(
            "name = \"placeholder\"",
            &format!("name = {}", toml_string(name)),
        );
        let cfg = dir.join(format!("names-{i}.toml"));
        write(&cfg, &text);
        assert_rejected(&cfg, "workload[1].name", reason);
    }
    // Nothing was created: no status directory, no file next to or above the config.
    assert!(!status_dir.exists());
    assert!(!tmp.path().join("escape.json").exists());
    assert!(!tmp.path().join("escape").exists());
}

/// A TOML basic string for `s` (escapes quotes, backslashes and control characters).
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn malformed_config_files_get_one_clear_error_each() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let status_dir = dir.join("statuses");
    let base = {
        let mut t = head(dir, &status_dir, "info");
        t.push_str(&cc_workload(
            "alpha",
            "http://127.0.0.1:9/token",
            "secret-alpha",
        ));
        t
    };
    // (file, contents, key, reason)
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "syntax.toml",
            base.replace("[defaults]", "[defaults"),
            "",
            "invalid toml: unclosed table",
        ),
        (
            "unknown.toml",
            base.replace("log_level", "log_levle"),
            "service.log_levle",
            "unknown key",
        ),
        (
            "type.toml",
            base.replace("\"1s\"\nconnect", "1\nconnect"),
            "defaults.request_timeout",
            "invalid type",
        ),
        (
            "duration.toml",
            base.replace("\"100ms\"", "\"-5s\""),
            "defaults.backoff_initial",
            "invalid duration",
        ),
        (
            "huge-duration.toml",
            base.replace("\"3s\"", "\"99999999999999999999y\""),
            "defaults.max_retry_after",
            "too large",
        ),
        (
            "number.toml",
            base.replace("give_up_after = \"0s\"", "endpoint_concurrency = -1"),
            "defaults.endpoint_concurrency",
            "at least 1",
        ),
        (
            "float.toml",
            base.replace("give_up_after = \"0s\"", "refresh_at = nan"),
            "defaults.refresh_at",
            "nan",
        ),
        (
            "url.toml",
            base.replace("http://127.0.0.1:9/token", "file:///etc/passwd"),
            "workload[0].token_url",
            "http or https",
        ),
        (
            "missing.toml",
            base.replace("token_url = \"http://127.0.0.1:9/token\"\n", ""),
            "workload[0].token_url",
            "missing",
        ),
        (
            "listen.toml",
            base.replace("admin_token_file = \"admin.token\"\n", "")
                .replace("127.0.0.1:0", "0.0.0.0:0"),
            "service.admin_listen",
            "admin_token_file is required",
        ),
        (
            "secretfile.toml",
            base.replace(
                "client_secret = \"secret-alpha\"",
                "client_secret_file = \"/nonexistent/secret\"",
            ),
            "workload[0].client_secret_file",
            "cannot read",
        ),
        (
            "dup.toml",
            format!(
                "{base}{}",
                cc_workload("alpha", "http://127.0.0.1:9/token", "s2")
            ),
            "workload[1].name",
            "duplicate",
        ),
    ];
    for (file, text, key, reason) in cases {
        let cfg = dir.join(file);
        write(&cfg, &text);
        assert_rejected(&cfg, key, reason);
    }
    // Not text at all: invalid UTF-8 and NUL bytes.
    let cfg = dir.join("binary.toml");
    std::fs::write(&cfg, b"\xff\xfe[service]\x00\x01").unwrap();
    assert_rejected(&cfg, "", "valid utf-8");
    assert!(!status_dir.exists());
}
