//! A `[service]` change on SIGHUP: `log_level` is applied at once (the daemon's filter is
//! reloaded); any other key is named and logged as taking effect at the next start.

use crate::harness::{Launch, start_daemon, write};

fn config(status_dir: &str, log_level: &str) -> String {
    format!(
        "[service]\nstatus_dir = {status_dir:?}\nadmin_listen = \"off\"\nlog_level = {log_level:?}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_is_applied_on_sighup_and_other_service_keys_need_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokenvisor.toml");
    write(&file, &config("statuses", "warn"));
    let daemon = start_daemon(&file, Launch::default()).await;
    // At warn, the start-up's info lines are filtered out.
    let start_log = daemon.log_now();
    assert!(
        !start_log.contains("INFO"),
        "info lines at log_level = warn:\n{start_log}"
    );

    write(&file, &config("elsewhere", "info"));
    daemon.signal("-HUP");
    // A warning either way: the status directory cannot change while the daemon runs.
    daemon
        .wait_log("SIGHUP: [service] status_dir changed: takes effect at the next start")
        .await;
    // Info lines now pass: the reload's own summary is one.
    daemon
        .wait_log("SIGHUP: [service] log_level is now \"info\"")
        .await;
    daemon.wait_log("SIGHUP: reloaded").await;
}
