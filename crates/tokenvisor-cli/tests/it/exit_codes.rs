//! The exit-code table: one meaning per code for every command (0 ok, 1 a problem, 2 usage,
//! 10/11 probe's transient/permanent), shown by `--help`; each command's codes checked.

use std::path::Path;
use std::process::Stdio;

use crate::common::{Run, run, run_cmd, tokenvisor};
use crate::harness::PATIENCE;
use tokenvisor_idp::{ClientSpec, IdpConfig, IdpServer};

/// Runs the binary with `args`; a run that has not exited within [`PATIENCE`] (a daemon
/// that started when it should have refused) is killed and fails the test.
async fn run_bounded(args: &[&str]) -> Run {
    let mut child = tokenvisor()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tokenvisor binary runs");
    let exited = crate::harness::poll_until(PATIENCE, crate::harness::POLL, || {
        child.try_wait().expect("wait").is_some()
    })
    .await;
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{args:?} is still running after {PATIENCE:?}");
    }
    let out = child.wait_with_output().expect("output");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[track_caller]
fn exits(r: &Run, code: i32, what: &str) {
    assert_eq!(r.code, Some(code), "{what}: {r:#?}");
}

#[test]
fn help_shows_the_exit_code_table() {
    let r = run(&["--help"]);
    exits(&r, 0, "--help");
    assert!(
        r.stdout
            .contains("Exit codes (the same for every command):"),
        "{r:#?}"
    );
    for row in [
        "   0  all",
        "   1  all",
        "   2  all",
        "  10  probe",
        "  11  probe",
    ] {
        assert!(r.stdout.contains(row), "--help lacks {row:?}: {r:#?}");
    }
}

#[test]
fn a_bad_flag_is_2_for_every_command() {
    for sub in [
        "run",
        "status",
        "probe",
        "check-config",
        "demo",
        "soak",
        "idp",
    ] {
        exits(&run(&[sub, "--no-such-flag"]), 2, sub);
    }
    exits(&run(&["no-such-command"]), 2, "an unknown command");
}

#[test]
fn a_missing_configuration_file_is_2_for_run_and_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["run", "--config", missing],
        vec!["check-config", missing],
        vec!["check-config", "--config", missing],
    ] {
        let r = run(&args);
        exits(&r, 2, &args.join(" "));
        assert!(r.stderr.contains("no such file"), "{r:#?}");
    }
}

#[tokio::test]
async fn an_invalid_configuration_is_1_for_run_and_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[service]\nadmin_listen = \"off\"\nlog_level = \"verbose\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for args in [vec!["run", "--config", file], vec!["check-config", file]] {
        let r = run_bounded(&args).await;
        exits(&r, 1, &args.join(" "));
        assert!(r.stderr.contains(":3: service.log_level: "), "{r:#?}");
    }
}

/// `[cluster]` is validated (check-config accepts it), but a build without the `cluster`
/// feature (the default) cannot run it: `run` refuses it (1) rather than run one instance
/// that other instances would race for the same grants.
#[cfg(not(feature = "cluster"))]
#[tokio::test]
async fn run_refuses_a_cluster_section_that_check_config_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    let status = dir.path().join("status");
    std::fs::write(
        &file,
        format!(
            "[service]\nstatus_dir = {:?}\nadmin_listen = \"off\"\n\n[cluster]\nbackend = \"etcd\"\n\
             endpoints = [\"http://127.0.0.1:2379\"]\n",
            status.to_str().unwrap()
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    exits(&run(&["check-config", file]), 0, "check-config");
    let r = run_bounded(&["run", "--config", file]).await;
    exits(&r, 1, "run with [cluster]");
    assert!(
        r.stderr
            .contains("cluster mode is not available in this build"),
        "{r:#?}"
    );
}

#[test]
fn status_is_2_for_a_missing_directory_and_0_for_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    exits(
        &run(&["status", "--dir", missing.to_str().unwrap()]),
        2,
        "status on a missing directory",
    );
    exits(
        &run(&["status", "--dir", dir.path().to_str().unwrap()]),
        0,
        "status on an empty directory",
    );
}

#[test]
fn demo_and_soak_refuse_bad_values_with_2() {
    exits(&run(&["demo", "--duration", "1s"]), 2, "demo --duration 1s");
    exits(&run(&["demo", "--workloads", "0"]), 2, "demo --workloads 0");
    exits(&run(&["soak", "--workloads", "x"]), 2, "soak --workloads x");
}

#[test]
fn idp_is_2_for_a_bad_fault_and_1_when_it_cannot_listen() {
    let r = run(&["idp", "--listen", "127.0.0.1:0", "--fault", "{not json"]);
    exits(&r, 2, "idp --fault with bad JSON");
    assert!(r.stderr.contains("invalid fault command"), "{r:#?}");
    // Only loopback addresses: anything else is refused before binding.
    let r = run(&["idp", "--listen", "192.0.2.1:0"]);
    exits(&r, 1, "idp on a non-loopback address");
}

fn probe_args<'a>(token_url: &'a str, secret: &'a str) -> Vec<&'a str> {
    vec![
        "probe",
        "--token-url",
        token_url,
        "--client-id",
        "app",
        "--client-secret",
        secret,
        "--grant",
        "client_credentials",
        "--timeout",
        "5s",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_is_0_10_or_11() {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    idp.register_client(ClientSpec::new("app", "right-secret"));
    let url = idp.token_url();
    let ok = probe_args(&url, "right-secret");
    let wrong = probe_args(&url, "wrong-secret");
    // A port nobody listens on: a connection refused is transient.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/token", closed.local_addr().unwrap());
    drop(closed);
    let refused = probe_args(&closed_url, "right-secret");
    for (args, code) in [(ok, 0), (wrong, 11), (refused, 10)] {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let r = tokio::task::spawn_blocking(move || run_cmd(tokenvisor().args(&args)))
            .await
            .unwrap();
        exits(&r, code, "probe");
    }
    exits(
        &run(&["probe", "--client-id", "app"]),
        2,
        "probe without --token-url",
    );
    idp.shutdown().await;
}

#[test]
fn the_readme_documents_the_table() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    assert!(
        readme.contains("## Exit codes"),
        "README has no exit-code section"
    );
}
