//! `tokenvisor run` (the daemon binary) against oidc-provider through nginx: 100 consecutive
//! rotations of one refresh token, half before and half after a restart of the daemon, while
//! a second workload rotates on its own schedule throughout. oidc-provider's reuse detection
//! (a consumed refresh token presented again revokes the grant) must never fire.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tokenvisor_core::WorkloadStatus;

use tokenvisor_test_support::admin::Admin;
use tokenvisor_test_support::config::ConfigFile;
use tokenvisor_test_support::daemon::{Daemon, Launch};
use tokenvisor_test_support::wait::wait_for;

use tokenvisor_real::binary::tokenvisor_bin;

use crate::components::{LIMIT, now_ms, wait_until};
use crate::harness::read_status;
use crate::nginx::Nginx;
use crate::oidc::{Oidc, secret_of};

/// Rotations forced before the restart, and again after it.
const ROTATIONS_PER_RUN: usize = 50;

/// Starts `tokenvisor run` in `work` with its stderr in a file of its own; stopped (by PID)
/// when dropped.
async fn start(config: &Path, work: &Path) -> Daemon {
    let launch = Launch {
        current_dir: Some(work.to_owned()),
        stderr_file: Some(work.join(format!("daemon-{}.stderr", now_ms()))),
        ..Launch::default()
    };
    Daemon::start(tokenvisor_bin(), config, launch).await
}

fn config(work: &Path, token_url: &str, workloads: &[(&str, &str)]) -> PathBuf {
    let mut c = ConfigFile::new(&work.join("statuses"));
    c.service
        .str("state_dir", work.join("state").to_string_lossy());
    for (name, client) in workloads {
        let secret = work.join(format!("{name}.secret"));
        std::fs::write(&secret, format!("{}\n", secret_of(client)))
            .unwrap_or_else(|e| panic!("{}: {e}", secret.display()));
        let method = if crate::oidc::uses_basic(client) {
            "basic"
        } else {
            "post"
        };
        c.refresh_workload(
            name,
            token_url,
            client,
            &secret.to_string_lossy(),
            &work.join(format!("{name}.rt")).to_string_lossy(),
        )
        .str("auth_method", method);
    }
    c.write(&work.join("tokenvisor.toml"))
}

fn read_rt(work: &Path, name: &str) -> String {
    let p = work.join(format!("{name}.rt"));
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

fn status(work: &Path, name: &str) -> Option<WorkloadStatus> {
    read_status(&work.join("statuses"), name).map(|r| r.status)
}

/// Forces `n` rotations of `name` through the admin API, one after the other: each waits
/// until the rotated refresh token is in the file and the workload is running again. Returns
/// every refresh token seen in the file.
async fn rotate(admin: &Admin, work: &Path, name: &str, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for i in 0..n {
        let before = read_rt(work, name);
        let answer = admin
            .call("POST", &format!("/v1/workloads/{name}/refresh"), None)
            .await;
        assert_eq!(answer.status, 202, "rotation {i}: refresh not accepted");
        let what = format!("{name}: rotation {i} written back and running");
        let mut now = String::new();
        wait_until(&what, || {
            now = read_rt(work, name);
            now != before && status(work, name) == Some(WorkloadStatus::Running)
        })
        .await;
        seen.push(now);
        assert_ne!(status(work, name), Some(WorkloadStatus::Unauthenticated));
    }
    seen
}

/// 100 forced rotations (50, a daemon restart, 50 more) through nginx, a second workload
/// rotating by itself all along: every refresh token is new, each one written back before the
/// workload reports running, and the provider never sees one used twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_rotations_across_a_daemon_restart_never_reuse_a_refresh_token() {
    crate::components::require_all();
    let work_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let work = work_dir.path();
    let bin = tokenvisor_bin();
    assert!(bin.is_file());
    let oidc = Oidc::start(work, 4);
    let nginx = Nginx::pass_to(work, oidc.addr()).await;
    let workloads = [("rot-forced", "tv-11"), ("rot-natural", "tv-12")];
    let mut initial = Vec::new();
    for (name, client) in workloads {
        let rt = oidc.login(client, 1).remove(0);
        std::fs::write(work.join(format!("{name}.rt")), &rt)
            .unwrap_or_else(|e| panic!("{name}.rt: {e}"));
        initial.push(rt);
    }
    let cfg = config(work, &nginx.token_url(), &workloads);

    let mut all_seen: Vec<String> = vec![initial[0].clone()];
    let mut d = start(&cfg, work).await;
    let admin = Admin::new(&d, Some(&d.admin_token()));
    wait_until("both running", || {
        workloads
            .iter()
            .all(|(n, _)| status(work, n) == Some(WorkloadStatus::Running))
    })
    .await;
    all_seen.extend(rotate(&admin, work, "rot-forced", ROTATIONS_PER_RUN).await);

    // Restart: SIGTERM right after asking for one more rotation, so that a refresh is likely
    // in flight while the daemon shuts down (it waits for it and writes the rotated token
    // back); every status flushed, exit 0. Then the same configuration again.
    let answer = admin
        .call("POST", "/v1/workloads/rot-forced/refresh", None)
        .await;
    assert_eq!(answer.status, 202);
    assert_eq!(
        d.terminate().await,
        Some(0),
        "daemon exit; stderr:\n{}",
        d.log_now()
    );
    all_seen.push(read_rt(work, "rot-forced"));
    all_seen.dedup();
    for (n, _) in workloads {
        assert_eq!(
            status(work, n),
            Some(WorkloadStatus::Stopped),
            "{n} after SIGTERM"
        );
    }
    let natural_before_restart = read_rt(work, "rot-natural");
    drop(d);
    let d = start(&cfg, work).await;
    let admin = Admin::new(&d, Some(&d.admin_token()));
    wait_until("both running after the restart", || {
        workloads
            .iter()
            .all(|(n, _)| status(work, n) == Some(WorkloadStatus::Running))
    })
    .await;
    all_seen.extend(rotate(&admin, work, "rot-forced", ROTATIONS_PER_RUN).await);
    // The naturally rotating workload rotated across the restart too.
    wait_until("rot-natural to rotate after the restart", || {
        read_rt(work, "rot-natural") != natural_before_restart
    })
    .await;

    // Every refresh token seen in the file is new.
    let distinct: HashSet<&String> = all_seen.iter().collect();
    assert_eq!(distinct.len(), all_seen.len(), "a refresh token came back");
    assert!(all_seen.len() > 2 * ROTATIONS_PER_RUN);
    // The provider: at least 100 rotations of rot-forced, every refresh answered 200, no
    // refused grant, and reuse detection (which revokes the grant) never fired.
    let forced = oidc.refreshes("tv-11");
    assert!(
        forced.len() >= 2 * ROTATIONS_PER_RUN,
        "{} refreshes",
        forced.len()
    );
    for client in ["tv-11", "tv-12"] {
        let bad: Vec<_> = oidc
            .refreshes(client)
            .into_iter()
            .filter(|l| l.status != Some(200))
            .collect();
        assert!(bad.is_empty(), "{client}: refused refreshes {bad:?}");
    }
    assert!(
        oidc.events("grant.revoked").is_empty(),
        "{:?}",
        oidc.events("grant.revoked")
    );
    assert!(
        oidc.events("grant.error").is_empty(),
        "{:?}",
        oidc.events("grant.error")
    );
    // The tokens in the files are the live ones; the first one is long consumed. Both
    // workloads go on rotating by themselves, and the provider consumes a refresh token
    // before the daemon writes its successor to the file: a read in between holds a
    // consumed one. Read the file again until its token is active (bounded).
    for (name, client) in workloads {
        let what = format!("{name}: an active refresh token in its file");
        wait_for(&what, LIMIT, || async {
            oidc.is_active(client, &read_rt(work, name)).await
        })
        .await;
    }
    assert!(
        !oidc.is_active("tv-11", &initial[0]).await,
        "a consumed refresh token is active"
    );
    let mut d = d;
    assert_eq!(
        d.terminate().await,
        Some(0),
        "daemon exit; stderr:\n{}",
        d.log_now()
    );
    // Keep nginx alive until here (it is stopped by its PID when dropped).
    assert!(nginx.pid() > 0);
    println!(
        "observed: {} refreshes of rot-forced and {} of rot-natural at the provider, all 200; \
         {} distinct refresh tokens in the file, none repeated; daemon restarted once (SIGTERM \
         with a refresh in flight, exit 0); reuse detection (grant.revoked) fired 0 times",
        forced.len(),
        oidc.refreshes("tv-12").len(),
        all_seen.len()
    );
}
