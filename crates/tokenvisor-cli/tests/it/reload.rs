//! SIGHUP reloads of `tokenvisor run`, end to end (the built binary, the test identity
//! provider on 127.0.0.1, signals):
//! - a reload that changes `endpoint_concurrency` resizes the live endpoint gate (observed at
//!   the provider) and restarts no workload; a workload whose own setting changed restarts;
//! - a reload stuck reading a secret file (a FIFO) times out, blocks nothing, and SIGTERM
//!   still shuts the daemon down at once with exit 0.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Launch, start_daemon, wait_until, write};
use tokenvisor_core::{StatusRecord, WorkloadStatus};
use tokenvisor_idp::{ClientSpec, Fault, FaultScope, IdpConfig, IdpServer, Times};
use tokenvisor_test_support::config::ConfigFile;
use tokenvisor_test_support::status::{status_is, status_of};

const ADMIN_TOKEN: &str = "admin-token-0123456789";

fn running(dir: &Path, name: &str) -> bool {
    status_is(&dir.join("statuses"), name, WorkloadStatus::Running)
}

/// A config with `[defaults] endpoint_concurrency = concurrency` and one refresh-token
/// workload per name (registering the clients at the provider on first use); `extra` is
/// appended to the workload called `d`.
fn config(
    dir: &Path,
    idp: &IdpServer,
    names: &[&str],
    concurrency: usize,
    extra: &[(&str, &str)],
) -> PathBuf {
    let mut c = ConfigFile::new(&dir.join("statuses"));
    c.service.str("admin_token_file", "admin.token");
    c.defaults
        .str("request_timeout", "5s")
        .set("endpoint_concurrency", concurrency.to_string());
    for n in names {
        let rt_file = dir.join(format!("{n}.rt"));
        if !rt_file.exists() {
            idp.register_client(ClientSpec::new(*n, format!("secret-{n}")).with_rotation(true));
            write(&rt_file, &idp.issue_refresh_token(n).unwrap());
            write(&dir.join(format!("{n}.secret")), &format!("secret-{n}\n"));
        }
        let w = c.refresh_workload(
            n,
            &idp.token_url(),
            n,
            &format!("{n}.secret"),
            &format!("{n}.rt"),
        );
        if *n == "d" {
            for (k, v) in extra {
                w.str(k, v);
            }
        }
    }
    write(&dir.join("admin.token"), ADMIN_TOKEN);
    c.write(&dir.join("tokenvisor.toml"))
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_resizes_the_endpoint_gate_and_restarts_only_changed_workloads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let idp = IdpServer::start(
        IdpConfig::default().with_access_token_lifetime(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let names = ["a", "b", "c", "d"];
    let cfg = config(dir, &idp, &names, 1, &[]);
    let mut daemon = start_daemon(&cfg, Launch::default()).await;
    wait_until("every workload running", || {
        names.iter().all(|n| running(dir, n))
    })
    .await;
    let before: Vec<(u64, StatusRecord)> = names
        .iter()
        .map(|n| {
            (
                idp.counters().client(n),
                status_of(&dir.join("statuses"), n).unwrap(),
            )
        })
        .collect();

    // Reload: the endpoint's concurrency 1 → 4 (a [defaults] key every workload inherits),
    // and d's own backoff_max changes.
    config(dir, &idp, &names, 4, &[("backoff_max", "2s")]);
    daemon.signal("-HUP");
    wait_until("the reload", || daemon.log_count("SIGHUP: reloaded") == 1).await;
    let log = daemon.log_plain();
    let reloaded = log
        .lines()
        .find(|l| l.contains("SIGHUP: reloaded"))
        .unwrap();
    assert!(
        reloaded.contains("changed=1") && reloaded.contains("endpoints_resized=1"),
        "{reloaded}"
    );
    // The reload's line is logged once d's new actor is spawned, before its first request
    // and before its new record is on disk (the old file still says running): wait for both.
    wait_until(
        "d restarted (a new request from d; else d was not restarted)",
        || idp.counters().client("d") > before[3].0,
    )
    .await;
    wait_until("d running again", || {
        status_of(&dir.join("statuses"), "d").is_some_and(|r| {
            r.status == WorkloadStatus::Running && r.updated_at > before[3].1.updated_at
        })
    })
    .await;
    // a, b and c were not restarted: no request, same record (created_at, updated_at).
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(idp.counters().client(n), before[i].0, "{n} sent a request");
        let now = status_of(&dir.join("statuses"), n).unwrap();
        assert_eq!(now.created_at, before[i].1.created_at, "{n}");
        assert_eq!(now.updated_at, before[i].1.updated_at, "{n} was restarted");
    }

    // The new limit is live: with every answer delayed 2 s, four forced refreshes are all
    // at the provider before the first is answered (with the old limit of 1, the fourth
    // would be sent only after three answers).
    idp.set_fault(
        FaultScope::Global,
        Fault::Delay(Duration::from_secs(2)),
        Times::Always,
    );
    let base = idp.counters();
    let http = client();
    for n in names {
        let r = http
            .post(format!("{}/v1/workloads/{n}/refresh", daemon.admin_url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "refresh {n}");
    }
    wait_until("four requests at the provider", || {
        idp.counters().token_requests >= base.token_requests + 4
    })
    .await;
    let answered = idp.counters().success - base.success;
    assert_eq!(
        answered, 0,
        "requests were sent one by one (answered first: {answered})"
    );
    idp.clear_faults();

    assert_eq!(daemon.terminate().await, Some(0), "{}", daemon.log_plain());
    assert_eq!(idp.counters().reuse_detected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_stuck_on_a_fifo_times_out_and_sigterm_still_works() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    let cfg = config(dir, &idp, &["a"], 4, &[]);
    let mut daemon = start_daemon(&cfg, Launch::default()).await;
    wait_until("a running", || running(dir, "a")).await;

    // The secret file becomes a FIFO nobody writes to: opening it blocks forever.
    let secret = dir.join("a.secret");
    std::fs::remove_file(&secret).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&secret)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");

    daemon.signal("-HUP");
    wait_until("the reload to start", || {
        daemon.log_count("SIGHUP: reloading") == 1
    })
    .await;
    // SIGHUPs during the stuck reload coalesce (no pile of blocked reads).
    daemon.signal("-HUP");
    daemon.signal("-HUP");
    wait_until("the reload to time out", || {
        daemon.log_count("SIGHUP: reload timed out") == 1
    })
    .await;
    // The coalesced request runs next and refuses to pin a second thread on the FIFO.
    wait_until("the coalesced reload refused", || {
        daemon.log_count("still stuck reading") >= 1
    })
    .await;
    assert!(
        running(dir, "a"),
        "a stopped: the failed reload changed something"
    );

    // SIGTERM while the read is still stuck: a prompt, clean exit.
    assert_eq!(daemon.terminate().await, Some(0), "{}", daemon.log_plain());
    let rec = status_of(&dir.join("statuses"), "a").unwrap();
    assert_eq!(rec.status, WorkloadStatus::Stopped);
}
