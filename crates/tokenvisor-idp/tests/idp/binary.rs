//! The `tokenvisor-idp` binary: ready line, tokens file, flags, signals.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{Auth, http, install_crypto, json, post_form};

const BIN: &str = env!("CARGO_BIN_EXE_tokenvisor-idp");

/// Kills the child if a test fails half-way.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a blocking step off the runtime, with a generous guard against hangs.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(Duration::from_secs(30), tokio::task::spawn_blocking(f))
        .await
        .expect("the binary answers")
        .unwrap()
}

#[tokio::test]
async fn binary_prints_a_ready_line_serves_and_stops_on_sigterm() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let tokens_path = dir.path().join("tokens.jsonl");
    let mut child = Command::new(BIN)
        .args([
            "--clients",
            "2",
            "--lifetime",
            "2s",
            "--expires-in",
            "string",
        ])
        .arg("--print-tokens-to")
        .arg(&tokens_path)
        .args([
            "--fault",
            r#"{"client":"client-1","fault":{"kind":"html_forbidden"},"times":1}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut guard = Guard(Some(child));
    let line = blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await;
    let ready: Value = serde_json::from_str(&line).unwrap();
    let url = ready["url"].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    assert_eq!(ready["token_url"], format!("{url}/token"));
    assert_eq!(ready["revoke_url"], format!("{url}/revoke"));
    assert_eq!(ready["admin_url"], format!("{url}/admin"));
    assert_eq!(ready["clients"], 2);
    let token_url = ready["token_url"].as_str().unwrap();

    let tokens: Vec<Value> = std::fs::read_to_string(&tokens_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[1]["client_id"], "client-1");
    assert_eq!(tokens[1]["client_secret"], "secret-1");

    let http = http();
    let mut statuses = Vec::new();
    for entry in &tokens {
        let id = entry["client_id"].as_str().unwrap();
        let secret = entry["client_secret"].as_str().unwrap();
        let rt = entry["refresh_token"].as_str().unwrap();
        let resp = post_form(
            &http,
            token_url,
            Auth::Basic(id, secret),
            &[("grant_type", "refresh_token"), ("refresh_token", rt)],
        )
        .await
        .unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 200 {
            let body = json(resp).await;
            assert_eq!(body["expires_in"], "2");
            assert!(body["refresh_token"].is_string(), "rotation defaults to on");
        }
    }
    assert_eq!(statuses, [200, 403]);

    let counters = http
        .get(format!("{url}/admin/counters"))
        .send()
        .await
        .unwrap();
    let counters = json(counters).await;
    assert_eq!(counters["faults"]["html_forbidden"], 1);
    assert_eq!(counters["success"], 1);

    let mut child = guard.0.take().unwrap();
    let pid = child.id().to_string();
    assert_eq!(ready["pid"].to_string(), pid);
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = blocking(move || child.wait().unwrap()).await;
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn binary_refuses_a_non_loopback_address() {
    let output = blocking(|| {
        Command::new(BIN)
            .args(["--listen", "0.0.0.0:0"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await;
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[tokio::test]
async fn binary_rotation_off_and_bad_fault_flag() {
    let output = blocking(|| {
        Command::new(BIN)
            .args(["--fault", r#"{"fault":{"kind":"nope"}}"#])
            .output()
            .unwrap()
    })
    .await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid fault"));

    let mut child = Command::new(BIN)
        .args(["--rotation", "off", "--clients", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Guard(Some(child));
    let line = blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await;
    let ready: Value = serde_json::from_str(&line).unwrap();
    assert!(ready["tokens_file"].is_null());
    // Issue a token through the admin API, as a script would.
    install_crypto();
    let url = ready["url"].as_str().unwrap();
    let resp = http()
        .post(format!("{url}/admin/refresh-token"))
        .body(r#"{"client_id":"client-0"}"#)
        .send()
        .await
        .unwrap();
    let rt = json(resp).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        let resp = post_form(
            &http(),
            ready["token_url"].as_str().unwrap(),
            Auth::Post("client-0", "secret-0"),
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(json(resp).await.get("refresh_token").is_none());
    }
}
