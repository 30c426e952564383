//! `tokenvisor run` as operators run it: a real config file, the built binary, the test
//! identity provider on 127.0.0.1, signals. SIGHUP reloads and reconciles; SIGTERM shuts
//! down with every status flushed and exits 0. Also the admin API end to end, and the demo.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::run;
use crate::harness::{Launch, start_daemon, wait_until, write};
use tokenvisor_core::WorkloadStatus;
use tokenvisor_idp::{ClientSpec, IdpConfig, IdpServer};
use tokenvisor_test_support::config::ConfigFile;
use tokenvisor_test_support::status::status_is;

const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// Writes the config for `names` (each its own idp client with a refresh-token file).
fn config(dir: &Path, idp: &IdpServer, names: &[&str]) -> PathBuf {
    let mut c = ConfigFile::new(&dir.join("statuses"));
    c.service.str("admin_token_file", "admin.token");
    for n in names {
        let rt_file = dir.join(format!("{n}.rt"));
        if !rt_file.exists() {
            idp.register_client(ClientSpec::new(*n, format!("secret-{n}")).with_rotation(true));
            write(&rt_file, &idp.issue_refresh_token(n).unwrap());
            write(&dir.join(format!("{n}.secret")), &format!("secret-{n}\n"));
        }
        c.refresh_workload(
            n,
            &idp.token_url(),
            n,
            &format!("{n}.secret"),
            &format!("{n}.rt"),
        )
        .str("token_sink_file", format!("{n}.token"));
    }
    c.write(&dir.join("tokenvisor.toml"))
}

fn is(dir: &Path, name: &str, s: WorkloadStatus) -> bool {
    status_is(&dir.join("statuses"), name, s)
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
async fn run_reloads_on_sighup_and_flushes_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(&dir.join("admin.token"), ADMIN_TOKEN);
    let idp =
        IdpServer::start(IdpConfig::default().with_access_token_lifetime(Duration::from_secs(30)))
            .await
            .unwrap();
    let cfg = config(dir, &idp, &["alpha", "beta"]);
    let mut d = start_daemon(&cfg, Launch::default()).await;
    wait_until("alpha and beta running", || {
        is(dir, "alpha", WorkloadStatus::Running) && is(dir, "beta", WorkloadStatus::Running)
    })
    .await;

    // The admin API: auth, list, token delivery, metrics.
    let http = client();
    let base = d.admin_url();
    let r = http
        .get(format!("{base}/v1/workloads"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/v1/workloads"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let r = http
        .get(format!("{base}/v1/workloads/alpha/token"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tok: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let access = tok["access_token"].as_str().unwrap().to_owned();
    assert!(!access.is_empty());
    // The token sink file holds the same token, 0600.
    let sink = dir.join("alpha.token");
    wait_until("the token sink file", || {
        std::fs::read_to_string(&sink).is_ok_and(|t| t == access)
    })
    .await;
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&sink).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "sink mode {mode:o}");
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tokenvisor_workloads"), "{metrics}");
    assert!(!metrics.contains("alpha"), "metrics carry a workload name");

    // SIGHUP: beta removed, gamma added.
    let cfg = config(dir, &idp, &["alpha", "gamma"]);
    d.signal("-HUP");
    wait_until("beta stopped, gamma running", || {
        is(dir, "beta", WorkloadStatus::Stopped) && is(dir, "gamma", WorkloadStatus::Running)
    })
    .await;
    assert!(is(dir, "alpha", WorkloadStatus::Running));

    // A broken file on SIGHUP changes nothing.
    write(&cfg, "this is [ not toml");
    d.signal("-HUP");
    let r = http
        .get(format!("{base}/v1/workloads/gamma"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // SIGTERM: every status flushed as stopped, exit 0.
    assert_eq!(d.terminate().await, Some(0), "daemon exit");
    for n in ["alpha", "beta", "gamma"] {
        assert!(is(dir, n, WorkloadStatus::Stopped), "{n} not stopped");
    }
    // Rotated refresh tokens were written back and still work at the provider.
    assert_eq!(idp.counters().reuse_detected, 0);
    let rt = std::fs::read_to_string(dir.join("alpha.rt")).unwrap();
    assert!(idp.live_refresh_tokens("alpha").contains(&rt));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_token_file_a_token_is_generated_kept_and_required() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    idp.register_client(ClientSpec::new("alpha", "secret-alpha").with_rotation(true));
    write(
        &dir.join("alpha.rt"),
        &idp.issue_refresh_token("alpha").unwrap(),
    );
    let cfg = dir.join("tokenvisor.toml");
    write(
        &cfg,
        &format!(
            r#"[service]
status_dir = "statuses"
state_dir = "state"
admin_listen = "127.0.0.1:0"

[[workload]]
name = "alpha"
token_url = "{url}"
client_id = "alpha"
client_secret = "secret-alpha"
grant = "refresh_token"
refresh_token_file = "alpha.rt"
"#,
            url = idp.token_url()
        ),
    );
    let mut d = start_daemon(&cfg, Launch::default()).await;
    let token_file = d
        .admin_token_file
        .clone()
        .expect("the ready line names the token file");
    assert_eq!(token_file, dir.join("state").join("admin.token"));
    let token = d.admin_token();
    assert_eq!(token.len(), 43, "32 random bytes, base64url");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&dir.join("state")), 0o700);
    // Not among ToolHive's status files.
    assert!(!dir.join("statuses").join("admin.token").exists());
    wait_until("alpha running", || {
        is(dir, "alpha", WorkloadStatus::Running)
    })
    .await;

    // Every route but /healthz is locked without it: nobody overwrites the refresh token,
    // forces a refresh, lists workloads or reads metrics.
    let http = client();
    let base = d.admin_url();
    let rt_before = std::fs::read_to_string(dir.join("alpha.rt")).unwrap();
    let requests_before = idp.counters().token_requests;
    for (method, path) in [
        (reqwest::Method::PUT, "/v1/workloads/alpha/credentials"),
        (reqwest::Method::POST, "/v1/workloads/alpha/refresh"),
        (reqwest::Method::GET, "/v1/workloads"),
        (reqwest::Method::GET, "/v1/workloads/alpha"),
        (reqwest::Method::GET, "/v1/workloads/alpha/token"),
        (reqwest::Method::GET, "/metrics"),
    ] {
        let r = http
            .request(method.clone(), format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(r#"{"refresh_token":"rt-from-an-intruder"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("alpha.rt")).unwrap(),
        rt_before
    );
    assert_eq!(idp.counters().token_requests, requests_before);
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // With the token from the file: served.
    let r = http
        .get(format!("{base}/v1/workloads/alpha/token"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A restart keeps the token.
    assert_eq!(d.terminate().await, Some(0));
    let d = start_daemon(&cfg, Launch::default()).await;
    assert_eq!(d.admin_token(), token);
    let r = http
        .get(format!("{}/v1/workloads", d.admin_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn an_admin_token_shorter_than_16_bytes_refuses_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("tokenvisor.toml");
    let token = tmp.path().join("admin.token");
    write(&token, "fifteen-bytes!!\n");
    write(
        &cfg,
        "[service]\nstatus_dir = \"statuses\"\nadmin_listen = \"127.0.0.1:0\"\n\
         admin_token_file = \"admin.token\"\n",
    );
    let r = run(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(
        r.stderr
            .contains("tokenvisor.toml:4: service.admin_token_file")
            && r.stderr.contains(&token.display().to_string())
            && r.stderr.contains("15 bytes long; at least 16 are required"),
        "{r:#?}"
    );
    assert!(!r.all().contains("fifteen"), "never the token: {r:#?}");
    assert!(r.stdout.is_empty(), "no ready line: {r:#?}");
}

#[test]
fn run_with_a_bad_config_exits_1_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    write(&cfg, "[service]\nstatus_dirr = \"/tmp/x\"\n");
    let r = run(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(
        r.stderr.contains("bad.toml") && r.stderr.contains("status_dirr"),
        "{r:#?}"
    );
}

#[test]
#[cfg(feature = "soak")] // `tokenvisor demo` exists only with the feature
fn the_demo_tells_its_story_and_exits_0() {
    let r = run(&["demo", "--workloads", "12", "--duration", "20s"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    for needle in [
        "auth_retrying",
        "unauthenticated",
        "running",
        "summary",
        "ok: only",
    ] {
        assert!(
            r.stdout.contains(needle),
            "missing {needle:?}:\n{}",
            r.stdout
        );
    }
    assert!(
        !crate::common::has_token_like(&r.all(), "at_")
            && !crate::common::has_token_like(&r.all(), "rt_")
    );
}
