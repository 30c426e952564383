//! Trust §4 and §5 end to end: directories and files tokenvisor does not own, one daemon per
//! status directory and per refresh-token file, and sharing the status directory with
//! ToolHive. The built `tokenvisor run` against the test identity provider on 127.0.0.1.
//!
//! - A second daemon on the same status directory, or on a refresh-token file another daemon
//!   holds, exits 1 naming the holder's PID and sends no request (counted at the provider).
//! - A workload added by SIGHUP on a refresh-token file another daemon holds is refused.
//! - A daemon whose admin port is taken exits before its first request.
//! - A status directory with foreign files and no marker is refused at start, untouched.
//! - A symbolic-linked status directory is used and never chmod-ed.
//! - `check-config` notes trimmed secret files, warns about loose modes and `http://` to a
//!   remote host, and refuses a control character inside a token.
//! - ToolHive's lock: a reader that locks `<name>.lock` like ToolHive always reads whole,
//!   parseable files while the daemon writes; a lock held for 3 s keeps the file unchanged,
//!   and the daemon's write lands after the release.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::{run, tokenvisor};
use crate::harness::{
    Admin, Launch, PATIENCE, POLL, metric, poll_until, start_daemon, status_of, wait_until_within,
    write,
};
use rustix::fs::{FlockOperation, flock};
use tokenvisor_core::{StatusRecord, WorkloadStatus};
use tokenvisor_idp::{ClientSpec, IdpConfig, IdpServer};

const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// One workload of a test configuration.
struct Wl<'a> {
    name: &'a str,
    client: &'a str,
    rt_file: &'a Path,
    token_url: String,
}

/// Registers `client` at `idp` and writes its secret and a fresh refresh token next to
/// `dir`; returns the refresh-token file.
fn client_files(dir: &Path, idp: &IdpServer, client: &str) -> PathBuf {
    idp.register_client(ClientSpec::new(client, format!("secret-{client}")).with_rotation(true));
    let rt = dir.join(format!("{client}.rt"));
    write(&rt, &idp.issue_refresh_token(client).unwrap());
    write(
        &dir.join(format!("{client}.secret")),
        &format!("secret-{client}\n"),
    );
    fs::set_permissions(
        dir.join(format!("{client}.secret")),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    rt
}

/// Writes a configuration at `file`; `admin_listen` is the TOML value.
fn config(file: &Path, status_dir: &Path, admin_listen: &str, workloads: &[Wl<'_>]) {
    let dir = file.parent().unwrap();
    write(&dir.join("admin.token"), ADMIN_TOKEN);
    fs::set_permissions(dir.join("admin.token"), fs::Permissions::from_mode(0o600)).unwrap();
    let mut text = format!(
        r#"[service]
status_dir = "{status}"
admin_listen = "{admin_listen}"
admin_token_file = "{admin}"
log_level = "info"
status_refresh_interval = "0s"

[defaults]
request_timeout = "2s"
connect_timeout = "1s"
backoff_initial = "200ms"
backoff_max = "1s"
"#,
        status = status_dir.display(),
        admin = dir.join("admin.token").display(),
    );
    for w in workloads {
        text.push_str(&format!(
            r#"
[[workload]]
name = "{name}"
token_url = "{url}"
client_id = "{client}"
client_secret_file = "{secret}"
grant = "refresh_token"
refresh_token_file = "{rt}"
"#,
            name = w.name,
            url = w.token_url,
            client = w.client,
            secret = dir.join(format!("{}.secret", w.client)).display(),
            rt = w.rt_file.display(),
        ));
    }
    write(file, &text);
}

/// Runs `tokenvisor run --config FILE` expecting it to exit on its own (bounded); returns
/// its exit code and stderr.
async fn run_expecting_exit(file: &Path) -> (Option<i32>, String) {
    let mut child = tokenvisor()
        .args(["run", "--config"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exited = None;
    poll_until(PATIENCE, POLL, || {
        exited = child.try_wait().unwrap();
        exited.is_some()
    })
    .await;
    let Some(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the daemon kept running");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

async fn idp() -> IdpServer {
    IdpServer::start(IdpConfig::default().with_access_token_lifetime(Duration::from_secs(60)))
        .await
        .unwrap()
}

/// The issue's story: a second daemon started by mistake must not refresh anything. On the
/// same status directory it exits 1 naming the first one's PID; with its own status
/// directory but a refresh-token file the first one holds, likewise. The provider it points
/// at never sees a request, and the first daemon's grant is never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_exits_1_naming_the_first_and_sends_no_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (first_idp, second_idp) = (idp().await, idp().await);
    let status = dir.join("statuses");
    let alpha_rt = client_files(dir, &first_idp, "alpha");
    let first_cfg = dir.join("first.toml");
    config(
        &first_cfg,
        &status,
        "127.0.0.1:0",
        &[Wl {
            name: "alpha",
            client: "alpha",
            rt_file: &alpha_rt,
            token_url: first_idp.token_url(),
        }],
    );
    let first = start_daemon(&first_cfg, Launch::default()).await;
    wait_until_within("alpha running", PATIENCE, || {
        status_of(&status, "alpha").is_some_and(|r| r.status == WorkloadStatus::Running)
    })
    .await;
    let pid = format!("PID {}", first.pid());

    // Same status directory, a workload of its own at the second provider.
    let beta_rt = client_files(dir, &second_idp, "beta");
    let same_dir = dir.join("same-dir.toml");
    config(
        &same_dir,
        &status,
        "127.0.0.1:0",
        &[Wl {
            name: "beta",
            client: "beta",
            rt_file: &beta_rt,
            token_url: second_idp.token_url(),
        }],
    );
    let (code, stderr) = run_expecting_exit(&same_dir).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&pid), "{stderr}");
    assert!(stderr.contains("status_dir"), "{stderr}");
    assert!(!status.join("beta.json").exists());

    // Its own status directory, but the first daemon's refresh-token file.
    let same_rt = dir.join("same-rt.toml");
    config(
        &same_rt,
        &dir.join("other-statuses"),
        "127.0.0.1:0",
        &[Wl {
            name: "alpha",
            client: "alpha",
            rt_file: &alpha_rt,
            token_url: second_idp.token_url(),
        }],
    );
    let (code, stderr) = run_expecting_exit(&same_rt).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&pid), "{stderr}");
    assert!(stderr.contains("refresh_token_file"), "{stderr}");
    assert!(stderr.contains(&alpha_rt.display().to_string()), "{stderr}");

    assert_eq!(
        second_idp.counters().total,
        0,
        "the second daemon sent a request"
    );
    assert_eq!(first_idp.counters().reuse_detected, 0);
    assert_eq!(first_idp.counters().revocations, 0);
    // The first daemon is unharmed.
    assert!(status_of(&status, "alpha").is_some_and(|r| r.status == WorkloadStatus::Running));
    drop(first);
}

/// Locks are held across SIGHUP: a workload added by a reload takes its file's lock then,
/// and one whose refresh-token file another daemon holds is refused with an error naming
/// that daemon's PID (no request sent for it) while the rest keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_workload_whose_file_another_daemon_holds_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (first_idp, second_idp) = (idp().await, idp().await);
    let alpha_rt = client_files(dir, &first_idp, "alpha");
    let first_cfg = dir.join("first.toml");
    let first_status = dir.join("first-statuses");
    let alpha = || Wl {
        name: "alpha",
        client: "alpha",
        rt_file: &alpha_rt,
        token_url: first_idp.token_url(),
    };
    config(&first_cfg, &first_status, "off", &[alpha()]);
    let first = start_daemon(&first_cfg, Launch::default()).await;

    let beta_rt = client_files(dir, &second_idp, "beta");
    let second_cfg = dir.join("second.toml");
    let second_status = dir.join("second-statuses");
    let beta = || Wl {
        name: "beta",
        client: "beta",
        rt_file: &beta_rt,
        token_url: second_idp.token_url(),
    };
    config(&second_cfg, &second_status, "off", &[beta()]);
    let second = start_daemon(&second_cfg, Launch::default()).await;
    wait_until_within("alpha and beta running", PATIENCE, || {
        status_of(&first_status, "alpha").is_some_and(|r| r.status == WorkloadStatus::Running)
            && status_of(&second_status, "beta")
                .is_some_and(|r| r.status == WorkloadStatus::Running)
    })
    .await;

    // The second daemon's configuration gains a workload on the first one's token file.
    let gamma_rt = client_files(dir, &second_idp, "gamma");
    config(
        &second_cfg,
        &second_status,
        "off",
        &[
            beta(),
            Wl {
                name: "stolen",
                client: "alpha",
                rt_file: &alpha_rt,
                token_url: second_idp.token_url(),
            },
            Wl {
                name: "gamma",
                client: "gamma",
                rt_file: &gamma_rt,
                token_url: second_idp.token_url(),
            },
        ],
    );
    second.signal("-HUP");
    wait_until_within("gamma running after the reload", PATIENCE, || {
        status_of(&second_status, "gamma").is_some_and(|r| r.status == WorkloadStatus::Running)
    })
    .await;
    second.wait_log("cannot start").await;
    let log = second.log_now();
    assert!(log.contains(&format!("PID {}", first.pid())), "{log}");
    assert!(log.contains("stolen"), "{log}");
    assert!(!second_status.join("stolen.json").exists());
    assert_eq!(
        second_idp.counters().client("alpha"),
        0,
        "a request for the stolen file"
    );
    assert_eq!(first_idp.counters().reuse_detected, 0);
    assert!(status_of(&first_status, "alpha").is_some_and(|r| r.status == WorkloadStatus::Running));
}

/// "Take every lock and bind every listener before the first request is sent": a daemon
/// whose admin port is taken exits 1 without a request, its refresh token untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_admin_port_is_taken_exits_before_any_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let provider = idp().await;
    let rt = client_files(dir, &provider, "alpha");
    let before = fs::read(&rt).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = dir.join("tokenvisor.toml");
    config(
        &cfg,
        &dir.join("statuses"),
        &taken.local_addr().unwrap().to_string(),
        &[Wl {
            name: "alpha",
            client: "alpha",
            rt_file: &rt,
            token_url: provider.token_url(),
        }],
    );
    let (code, stderr) = run_expecting_exit(&cfg).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert_eq!(provider.counters().total, 0, "a request was sent");
    assert_eq!(fs::read(&rt).unwrap(), before);
    drop(taken);
}

/// A status directory holding someone else's files (and no marker) is refused at start,
/// naming the directory and the files; nothing in it changes and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_dir_with_foreign_files_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let provider = idp().await;
    let rt = client_files(dir, &provider, "alpha");
    let home = dir.join("home");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
    write(&home.join("notes.txt"), "mine");
    write(&home.join("alpha.json"), "{\"not\": \"a status\"}");
    let before = entries(&home);
    let cfg = dir.join("tokenvisor.toml");
    config(
        &cfg,
        &home,
        "off",
        &[Wl {
            name: "alpha",
            client: "alpha",
            rt_file: &rt,
            token_url: provider.token_url(),
        }],
    );
    let (code, stderr) = run_expecting_exit(&cfg).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&home.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("notes.txt") && stderr.contains("alpha.json"),
        "{stderr}"
    );
    assert_eq!(entries(&home), before);
    assert_eq!(mode(&home), 0o755);
    assert_eq!(provider.counters().total, 0);
}

/// A status directory that is a symbolic link to a directory the operator made is used as
/// it is: never chmod-ed. The daemon also logs the warnings `check-config` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_status_dir_is_used_and_never_chmodded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let provider = idp().await;
    let rt = client_files(dir, &provider, "alpha");
    // A secret file with a CR/LF ending, readable by others.
    write(&dir.join("alpha.secret"), "secret-alpha\r\n");
    fs::set_permissions(dir.join("alpha.secret"), fs::Permissions::from_mode(0o644)).unwrap();
    let target = dir.join("shared-statuses");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    let link = dir.join("statuses");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let cfg = dir.join("tokenvisor.toml");
    config(
        &cfg,
        &link,
        "off",
        &[Wl {
            name: "alpha",
            client: "alpha",
            rt_file: &rt,
            token_url: provider.token_url(),
        }],
    );
    let d = start_daemon(&cfg, Launch::default()).await;
    wait_until_within("alpha running", PATIENCE, || {
        status_of(&target, "alpha").is_some_and(|r| r.status == WorkloadStatus::Running)
    })
    .await;
    assert_eq!(mode(&target), 0o755);
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_to_string(target.join(".tokenvisor")).unwrap(),
        format!("{}\n", d.pid())
    );
    let log = d.log_now();
    assert!(log.contains("readable by group or others"), "{log}");
    assert!(log.contains("CR/LF"), "{log}");
    assert!(log.contains("open to group or others"), "{log}");
}

/// `check-config` notes trimmed secret files and loose modes, warns about `http://` to a
/// host that is not loopback, and refuses a control character inside a token naming
/// FILE:LINE: KEY.
#[test]
fn check_config_notes_trimming_and_warns_about_modes_and_plain_http() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("a.secret"), b"\xef\xbb\xbfsecret-a\r\n").unwrap();
    fs::set_permissions(dir.join("a.secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(dir.join("a.rt"), b"rt-a\n").unwrap();
    fs::set_permissions(dir.join("a.rt"), fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        r#"[service]
status_dir = "{status}"
admin_listen = "off"

[[workload]]
name = "a"
token_url = "http://idp.example.test/token"
client_id = "a"
client_secret_file = "a.secret"
grant = "refresh_token"
refresh_token_file = "a.rt"

[[workload]]
name = "b"
token_url = "http://127.0.0.1:9/token"
client_id = "b"
client_secret = "inline"
grant = "client_credentials"
"#,
        status = dir.join("statuses").display()
    );
    let cfg = dir.join("tokenvisor.toml");
    write(&cfg, &text);
    let out = run(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let file = cfg.display().to_string();
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 3, "{}", out.stderr);
    assert!(
        warnings[0].starts_with(&format!(
            "{file}:7: workload[0].token_url: warning: http://"
        )),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("idp.example.test"), "{}", warnings[0]);
    assert!(
        warnings[1].starts_with(&format!(
            "{file}:9: workload[0].client_secret_file: warning:"
        )),
        "{}",
        warnings[1]
    );
    assert!(
        warnings[1].contains("byte order mark") && warnings[1].contains("CR/LF"),
        "{}",
        warnings[1]
    );
    assert!(
        warnings[2].starts_with(&format!(
            "{file}:11: workload[0].refresh_token_file: warning:"
        )),
        "{}",
        warnings[2]
    );
    assert!(warnings[2].contains("mode 0644"), "{}", warnings[2]);
    assert!(!out.all().contains("secret-a") && !out.all().contains("rt-a"));

    // A control character inside the token is an error at FILE:LINE: KEY.
    fs::write(dir.join("a.rt"), b"rt\x1b[31m-a\n").unwrap();
    let out = run(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr
            .contains(&format!("{file}:11: workload[0].refresh_token_file: ")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("control character"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------
// ToolHive's lock

/// Opens and locks `<status>/<name>.lock` as ToolHive does (gofrs/flock: create, `flock`,
/// polled every 100 ms for at most 1 s), checking that the locked file is still the one the
/// path names. `None` when the lock stayed busy for the whole second.
async fn toolhive_lock(path: &Path, op: FlockOperation) -> Option<fs::File> {
    for _ in 0..10 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .unwrap();
        if flock(&file, op).is_ok() {
            let same = fs::metadata(path).is_ok_and(|m| m.ino() == file.metadata().unwrap().ino());
            if same {
                return Some(file);
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// ToolHive's unlock: remove the lock file, then release.
fn toolhive_unlock(path: &Path, file: fs::File) {
    let _ = fs::remove_file(path);
    drop(file);
}

/// The file's content and modification time.
fn snapshot(path: &Path) -> (String, i64, i64) {
    let m = fs::metadata(path).unwrap();
    (
        String::from_utf8_lossy(&fs::read(path).unwrap()).into_owned(),
        m.mtime(),
        m.mtime_nsec(),
    )
}

/// Trust §5: in a directory ToolHive made (0750, its record of the workload already there,
/// whose `created_at` is kept), while the daemon rewrites the status file about every
/// second, a reader locking like ToolHive always gets a whole, parseable record; a ToolHive lock held for 3 s keeps
/// the file exactly as it was (the daemon's writes meanwhile are deferred, counted), and the
/// daemon's next write lands once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_never_writes_under_toolhives_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Short-lived access tokens: a refresh, and so a status write, about every second.
    let provider =
        IdpServer::start(IdpConfig::default().with_access_token_lifetime(Duration::from_secs(2)))
            .await
            .unwrap();
    let rt = client_files(dir, &provider, "shared");
    let status = dir.join("statuses");
    // ToolHive wrote this workload's file first (its shape: no token section, nanoseconds):
    // the directory is adopted and the file's `created_at` kept.
    fs::create_dir(&status).unwrap();
    fs::set_permissions(&status, fs::Permissions::from_mode(0o750)).unwrap();
    let toolhive = br#"{
  "status": "starting",
  "created_at": "2026-05-01T10:00:00.123456789Z",
  "updated_at": "2026-05-01T10:00:00.123456789Z",
  "process_id": 4242
}"#;
    fs::write(status.join("shared.json"), toolhive).unwrap();
    let created_at = StatusRecord::from_json(toolhive).unwrap().created_at;
    let cfg = dir.join("tokenvisor.toml");
    config(
        &cfg,
        &status,
        "127.0.0.1:0",
        &[Wl {
            name: "shared",
            client: "shared",
            rt_file: &rt,
            token_url: provider.token_url(),
        }],
    );
    let d = start_daemon(&cfg, Launch::default()).await;
    let admin = Admin::new(&d, Some(ADMIN_TOKEN));
    let file = status.join("shared.json");
    let lock_path = status.join("shared.lock");
    wait_until_within("shared running", PATIENCE, || {
        status_of(&status, "shared").is_some_and(|r| r.status == WorkloadStatus::Running)
    })
    .await;

    // A ToolHive reader, all along: shared lock, whole file, parse, unlock + remove.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, reads, file, lock_path) =
            (stop.clone(), reads.clone(), file.clone(), lock_path.clone());
        tokio::spawn(async move {
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(lock) =
                    toolhive_lock(&lock_path, FlockOperation::NonBlockingLockShared).await
                {
                    let bytes = fs::read(&file).unwrap();
                    if let Err(e) = StatusRecord::from_json(&bytes) {
                        bad.push(format!("{e}: {}", String::from_utf8_lossy(&bytes)));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    toolhive_unlock(&lock_path, lock);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            bad
        })
    };

    // Wait for a few writes the reader saw go by.
    let first = snapshot(&file);
    wait_until_within("the status file rewritten", PATIENCE, || {
        snapshot(&file) != first
    })
    .await;

    let deferred_before = metric(
        &admin.metrics().await,
        "tokenvisor_status_writes_deferred_total",
    )
    .unwrap_or(0.0);
    let held = toolhive_lock(&lock_path, FlockOperation::NonBlockingLockExclusive)
        .await
        .expect("the lock is free within a second");
    let under = snapshot(&file);
    // A real event: ToolHive holding its lock for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        snapshot(&file),
        under,
        "the file changed under ToolHive's lock"
    );
    let deferred = metric(
        &admin.metrics().await,
        "tokenvisor_status_writes_deferred_total",
    )
    .unwrap_or(0.0);
    assert!(
        deferred > deferred_before,
        "no write was attempted while the lock was held ({deferred_before} → {deferred})"
    );
    toolhive_unlock(&lock_path, held);
    wait_until_within(
        "the deferred write lands after the release",
        PATIENCE,
        || snapshot(&file) != under,
    )
    .await;
    let last = status_of(&status, "shared").unwrap();
    assert_eq!(last.status, WorkloadStatus::Running);
    assert_eq!(
        last.created_at, created_at,
        "created_at kept across updates"
    );
    assert_eq!(last.process_id, d.pid());
    assert_eq!(
        mode(&status),
        0o750,
        "a directory we did not create keeps its mode"
    );

    stop.store(true, Ordering::Relaxed);
    let bad = reader.await.unwrap();
    assert!(bad.is_empty(), "unparseable reads: {bad:?}");
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(provider.counters().reuse_detected, 0);
}
