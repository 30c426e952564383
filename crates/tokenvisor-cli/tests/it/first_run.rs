//! First run: every shipped configuration is checked (`config/local.toml` passes as is; the
//! reference `config/tokenvisor.toml` fails only for its example secrets, which do not exist
//! here), and the local setup runs end to end: `tokenvisor idp`, then `tokenvisor run` on
//! `config/local.toml` (moved to free ports), the admin API and `probe` against it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::common::{run, run_cmd, tokenvisor};
use crate::harness::{Admin, Launch, PATIENCE, start_daemon, status_of, wait_until_within};
use tokenvisor_core::WorkloadStatus;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// The daemon configurations under config/ (the soak-*.toml files are soak profiles).
fn shipped() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(config_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".toml") && !name.starts_with("soak-")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_configuration_is_checked() {
    let files = shipped();
    let names: Vec<String> = (files.iter())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["local.toml", "tokenvisor.toml"],
        "a new config needs a case here"
    );
    for file in &files {
        let r = run(&["check-config", file.to_str().unwrap()]);
        match file.file_name().unwrap().to_str().unwrap() {
            // Runs as is: every secret it needs is shipped (demo-only).
            "local.toml" => assert_eq!(r.code, Some(0), "{r:#?}"),
            // The reference: its only problems are the example secrets, absent here.
            "tokenvisor.toml" => {
                assert_eq!(r.code, Some(1), "{r:#?}");
                let problems: Vec<&str> = (r.stderr.lines())
                    .filter(|l| l.contains(": workload[") || l.contains(": service."))
                    .collect();
                assert_eq!(problems.len(), 5, "{r:#?}");
                for p in problems {
                    assert!(
                        p.contains("cannot read secret file") || p.contains("is not set"),
                        "the reference config has a problem besides its example secrets: {p}"
                    );
                }
            }
            other => panic!("no case for config/{other}"),
        }
    }
}

/// A running `tokenvisor idp`, killed by its PID on drop.
struct Idp {
    child: Child,
    token_url: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_idp() -> Idp {
    let mut child = tokenvisor()
        .args(["idp", "--listen", "127.0.0.1:0"])
        .args([
            "--fault",
            r#"{"fault": {"kind": "html_forbidden"}, "times": 1}"#,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tokenvisor idp starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut token_url = None;
    for _ in 0..10 {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(url) = line.trim().strip_prefix("token endpoint") {
            token_url = Some(url.trim().to_owned());
            break;
        }
    }
    // Keep reading (and dropping) its output so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let token_url = token_url.expect("tokenvisor idp names its token endpoint");
    Idp { child, token_url }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_setup_runs_end_to_end() {
    let idp = tokio::task::spawn_blocking(start_idp).await.unwrap();
    // config/local.toml as shipped, moved to the provider's port and a free admin port.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(config_dir().join("local.toml")).unwrap();
    assert!(text.contains("http://127.0.0.1:8765/token") && text.contains("127.0.0.1:7878"));
    let text = text
        .replace("http://127.0.0.1:8765/token", &idp.token_url)
        .replace("127.0.0.1:7878", "127.0.0.1:0");
    std::fs::create_dir(dir.path().join("local")).unwrap();
    let secret = dir.path().join("local/demo-client.secret");
    std::fs::copy(config_dir().join("local/demo-client.secret"), &secret).unwrap();
    let config = dir.path().join("local.toml");
    std::fs::write(&config, text).unwrap();

    let daemon = start_daemon(&config, Launch::default()).await;
    let statuses = dir.path().join("local/state/statuses");
    // The armed WAF page is answered once; the workload retries and runs.
    wait_until_within("local-demo running", PATIENCE, || {
        status_of(&statuses, "local-demo").is_some_and(|r| r.status == WorkloadStatus::Running)
    })
    .await;
    let bearer = daemon.admin_token();
    let admin = Admin::new(&daemon, Some(&bearer));
    let token = admin
        .call("GET", "/v1/workloads/local-demo/token", None)
        .await;
    assert_eq!(token.status, 200, "{}", token.body);

    let args: Vec<String> = [
        "probe",
        "--token-url",
        &idp.token_url,
        "--client-id",
        "local-demo",
        "--client-secret-file",
        secret.to_str().unwrap(),
        "--grant",
        "client_credentials",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let r = tokio::task::spawn_blocking(move || run_cmd(tokenvisor().args(&args)))
        .await
        .unwrap();
    assert_eq!(r.code, Some(0), "{r:#?}");
    drop(daemon);
    drop(idp);
}

/// Every path the README's repository map names (first column, and paths in the second)
/// exists, and so does every `crates/…` path named anywhere in the README.
#[test]
fn the_readme_points_at_real_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let map = readme
        .split("## Repository map")
        .nth(1)
        .expect("the README has a repository map");
    let mut named = Vec::new();
    for row in map.lines().filter(|l| l.starts_with("| `")) {
        for (i, token) in row.split('`').enumerate() {
            let path_like = token.contains('/') && !token.contains([' ', '{', ':']);
            // Odd pieces are inside backticks; the first one is the row's path.
            if i % 2 == 1 && (i == 1 || path_like) {
                named.push(token.to_owned());
            }
        }
    }
    for token in readme.split('`').skip(1).step_by(2) {
        // config/local/state/ is what the daemon writes at its first run.
        if token.contains(' ') || token.starts_with("config/local/state") {
            continue;
        }
        if token.starts_with("crates/")
            || token.starts_with("config/")
            || token.starts_with("scripts/")
        {
            named.push(token.to_owned());
        }
    }
    assert!(named.len() > 15, "{named:?}");
    for path in &named {
        let clean = path.trim_end_matches('/');
        assert!(
            root.join(clean).exists(),
            "the README names {path}, which does not exist"
        );
    }
}

/// `tokenvisor idp --help` explains the fault syntax a new user needs: every kind, the JSON
/// shape, and how to arm a fault while it runs.
#[test]
fn the_local_provider_explains_its_faults() {
    let r = run(&["idp", "--help"]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    for needle in [
        "127.0.0.1:8765",
        "\"fault\": {\"kind\": KIND",
        "html_forbidden",
        "too_many_requests",
        "oauth_error",
        "/admin/fault",
        "/admin/faults/clear",
        "retry_after",
    ] {
        assert!(
            r.stdout.contains(needle),
            "idp --help lacks {needle:?}:\n{}",
            r.stdout
        );
    }
}
