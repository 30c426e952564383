//! The admin dashboard (`GET /` of tokenvisor-admin) in a real headless browser: Debian's
//! chromium driven over WebDriver (chromedriver, the `fantoccini` crate), against the admin
//! router over a runtime whose workloads talk to oidc-provider behind nginx.
//!
//! The page is opened as an operator would (`/#token=…`); the test checks the counts of a
//! known fleet, the workloads needing attention and their reasons, revokes one workload's
//! grant at the provider, and sees the page update from the live event stream. A screenshot
//! is kept as `target/artifacts/dashboard.png` (`$CARGO_TARGET_DIR` if set).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokenvisor_admin::{AdminState, router};
use tokenvisor_core::{Secret, WorkloadStatus};

use crate::components::{LIMIT, POLL, Proc, free_port};
use crate::harness::Stack;

/// What to do when the browser is missing.
const INSTALL_BROWSER: &str = "install chromium and chromedriver with `bash real/install.sh` \
     (Debian's `chromium` and `chromium-driver` packages), then run \
     `scripts/test --real` (see real/README.md)";

/// The admin token of the test's admin API.
const ADMIN: &str = "dashboard-admin-token-7d41a0c2";

/// Chromium's flags: headless, no sandbox (root in a container), nothing phoning home.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
];

/// Finds an executable among `candidates`, then on `PATH`.
fn find(env_var: &str, candidates: &[&str], name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path).map(|d| d.join(name)))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, or a failure naming the install command.
fn require_browser() -> (PathBuf, PathBuf) {
    let chromium = find(
        "REAL_CHROMIUM",
        &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
        "chromium",
    );
    let driver = find(
        "REAL_CHROMEDRIVER",
        &["/usr/bin/chromedriver"],
        "chromedriver",
    );
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => panic!(
            "missing: {}{}: {INSTALL_BROWSER}",
            if c.is_none() {
                "chromium ($REAL_CHROMIUM, /usr/bin/chromium, PATH) "
            } else {
                ""
            },
            if d.is_none() {
                "chromedriver ($REAL_CHROMEDRIVER, /usr/bin/chromedriver, PATH)"
            } else {
                ""
            },
        ),
    }
}

/// Where artifacts go: `$CARGO_TARGET_DIR/artifacts`, else the workspace's `target/artifacts`.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || crate::components::real_dir().join("../target"),
        PathBuf::from,
    );
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// chromedriver on a free port of 127.0.0.1, stopped by its PID when dropped.
async fn start_driver(driver: &PathBuf, work: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let log = work.join("chromedriver.log");
    let stderr = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let proc = Proc::spawn(
        "chromedriver",
        Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!(
                "--log-path={}",
                work.join("chromedriver.verbose.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr),
        Some(log),
    );
    let started = tokio::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < LIMIT,
            "chromedriver did not listen on 127.0.0.1:{port}: {}",
            proc.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
    (proc, port)
}

async fn open_browser(chromium: &std::path::Path, port: u16, profile: &std::path::Path) -> Client {
    let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": args },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("cannot open a chromium session: {e}: {INSTALL_BROWSER}"))
}

/// Runs `script` in the page until it returns `want`, polling (bounded).
async fn wait_js(c: &Client, what: &str, script: &str, want: Value) -> Value {
    let started = tokio::time::Instant::now();
    loop {
        let got = c
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{what}: script failed: {e}"));
        if got == want {
            return got;
        }
        assert!(
            started.elapsed() < LIMIT,
            "timed out after {LIMIT:?} waiting for the page to show {what}: want {want}, got {got}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The text of the element with id `id` (or null).
fn text_of(id: &str) -> String {
    format!("const e = document.getElementById({id:?}); return e ? e.textContent : null;")
}

/// The status of the attention row of `name` (or null).
fn attention_of(name: &str) -> String {
    format!(
        "const r = document.querySelector('#attention tr[data-name=\"{name}\"]'); \
         return r ? [r.dataset.status, r.querySelector('.reason').textContent] : null;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_fleet_and_updates_live_in_a_real_browser() {
    let (chromium, driver) = require_browser();
    let s = Stack::start(60, false).await;
    // The admin API on 127.0.0.1 (the router, served by axum), up before the workloads, as
    // in the daemon.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr: SocketAddr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let app = router(AdminState::new(
        s.rt.clone(),
        Secret::from(ADMIN),
        addr,
        None,
    ));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // A known fleet: three client_credentials workloads, one with a wrong client secret, one
    // refresh_token workload.
    let mut fleet = Vec::new();
    for (w, client) in [
        ("billing", "tv-01"),
        ("search", "tv-02"),
        ("reports", "tv-03"),
    ] {
        fleet.push(s.add_client_credentials(w, client, None).await);
    }
    let wrong = s
        .add_client_credentials("legacy-sync", "tv-04", Some("not-the-secret-of-tv-04"))
        .await;
    let victim = s.add_refresh("mailer", "tv-05").await;
    fleet.push(victim.clone());
    s.wait_all(&fleet.iter().collect::<Vec<_>>(), WorkloadStatus::Running)
        .await;
    s.wait_all(&[&wrong], WorkloadStatus::Unauthenticated).await;

    let (mut driver_proc, port) = start_driver(&driver, s.work()).await;
    let profile = s.work().join("chromium-profile");
    let c = open_browser(&chromium, port, &profile).await;
    c.goto(&format!("http://127.0.0.1:{}/#token={ADMIN}", addr.port()))
        .await
        .unwrap_or_else(|e| panic!("goto: {e}"));

    wait_js(&c, "5 workloads", &text_of("count-total"), json!("5")).await;
    wait_js(&c, "4 running", &text_of("count-running"), json!("4")).await;
    wait_js(
        &c,
        "1 unauthenticated",
        &text_of("count-unauthenticated"),
        json!("1"),
    )
    .await;
    wait_js(&c, "the live stream", &text_of("conn"), json!("live")).await;
    let row = c
        .execute(&attention_of("legacy-sync"), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(row[0], "unauthenticated", "{row}");
    assert!(
        row[1]
            .as_str()
            .is_some_and(|r| r.contains("invalid_client")),
        "the reason is shown: {row}"
    );
    wait_js(
        &c,
        "one endpoint row",
        "return document.querySelectorAll('#endpoints tbody tr').length",
        json!(1),
    )
    .await;
    // The token left the address bar (it stays in this tab's session storage).
    let url = c.current_url().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !url.as_str().contains(ADMIN),
        "the token is still in the URL: {url}"
    );

    // A grant revoked at the provider: the next refresh is refused and the page follows.
    let rt = s.refresh_token(&victim);
    s.ep.oidc.revoke(&victim.client, &rt).await;
    s.force(&[&victim]).await;
    wait_js(
        &c,
        "the transition of mailer",
        "const e = document.querySelector('#events li[data-name=\"mailer\"][data-to=\"unauthenticated\"]'); \
         return e ? e.dataset.from : null",
        json!("running"),
    )
    .await;
    wait_js(&c, "3 running", &text_of("count-running"), json!("3")).await;
    wait_js(
        &c,
        "2 unauthenticated",
        &text_of("count-unauthenticated"),
        json!("2"),
    )
    .await;
    let row = c
        .execute(&attention_of("mailer"), vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(row[0], "unauthenticated", "{row}");
    assert!(
        row[1].as_str().is_some_and(|r| r.contains("invalid_grant")),
        "{row}"
    );
    let page = c.source().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!page.contains(&rt), "the page shows no refresh token");

    // Keep a screenshot.
    let png = c
        .screenshot()
        .await
        .unwrap_or_else(|e| panic!("screenshot: {e}"));
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let shot = artifacts_dir().join("dashboard.png");
    std::fs::write(&shot, &png).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    eprintln!("dashboard screenshot: {}", shot.display());

    c.close().await.unwrap_or_else(|e| panic!("close: {e}"));
    driver_proc.stop_with("-TERM", Duration::from_secs(10));
    server.abort();
}
