//! `tokenvisor login` (the real binary) against oidc-provider's own pages: a scripted
//! browser (reqwest with a cookie jar of its own, no redirects followed by itself) reads each
//! page the provider serves and submits its forms as a person would — the development login
//! form, the consent form, the device flow's user-code and confirmation pages — for the
//! clients `tv-login` and `tv-login-short` (real/oidc/config.mjs), which provider.mjs never
//! logs in automatically.
//!
//! - the code flow: a daemon whose workload is `unauthenticated` (its refresh token is no
//!   grant) gets the new token through its admin API and is `running` at once;
//! - the device flow: the user code confirmed on the provider's page, the token written to
//!   `refresh_token_file` (no daemon), then a daemon started on it runs;
//! - a daemon that does not run the workload refuses the hand-over: the token goes to the
//!   file instead;
//! - failures: the user cancels at the login page (`access_denied`), a redirect with another
//!   `state` (nothing exchanged), a device code that expires, the user aborting the device
//!   confirmation (`access_denied`).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokenvisor_core::WorkloadStatus;
use tokenvisor_test_support::config::ConfigFile;
use tokenvisor_test_support::daemon::{Daemon, Launch};

use tokenvisor_real::binary::tokenvisor_bin;

use tokenvisor_test_support::wait::poll_until;

use crate::components::{POLL, Proc, now_ms, wait_until};
use crate::harness::read_status;
use crate::oidc::{Oidc, secret_of};

/// The bound of every wait for the CLI's output or exit.
const WAIT: Duration = Duration::from_secs(30);

/// A test's provider and work directory.
struct Setup {
    oidc: Oidc,
    work: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        crate::components::require_all();
        let work = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let oidc = Oidc::start(work.path(), 6);
        Setup { oidc, work }
    }

    fn work(&self) -> &Path {
        self.work.path()
    }

    fn rt_file(&self) -> PathBuf {
        self.work().join("app.rt")
    }

    /// A configuration with workload `app` of `client`, the provider's login endpoints and
    /// `offline_access` among the login scopes.
    fn config(&self, client: &str) -> PathBuf {
        let work = self.work();
        let mut c = ConfigFile::new(&work.join("statuses"));
        c.service
            .str("state_dir", work.join("state").to_string_lossy());
        let secret = work.join("app.secret");
        std::fs::write(&secret, format!("{}\n", secret_of(client)))
            .unwrap_or_else(|e| panic!("{}: {e}", secret.display()));
        let issuer = self.oidc.issuer();
        c.refresh_workload(
            "app",
            &format!("{issuer}/token"),
            client,
            &secret.to_string_lossy(),
            &self.rt_file().to_string_lossy(),
        )
        .str("authorization_url", format!("{issuer}/auth"))
        .str("device_authorization_url", format!("{issuer}/device/auth"))
        .set("login_scopes", r#"["openid", "offline_access", "api"]"#);
        c.write(&work.join("tokenvisor.toml"))
    }

    /// Authorization-code token requests that reached the provider.
    fn code_exchanges(&self) -> usize {
        (self.oidc.log().iter())
            .filter(|l| {
                l.path.as_deref() == Some("/token")
                    && l.grant_type.as_deref() == Some("authorization_code")
            })
            .count()
    }
}

/// `tokenvisor login` running, its stdout read line by line.
struct Login {
    proc: Proc,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: PathBuf,
}

impl Login {
    fn start(config: &Path, args: &[&str]) -> Login {
        let stderr = config.with_file_name(format!("login-{}.stderr", now_ms()));
        let file =
            std::fs::File::create(&stderr).unwrap_or_else(|e| panic!("{}: {e}", stderr.display()));
        let mut cmd = Command::new(tokenvisor_bin());
        cmd.arg("login")
            .arg("app")
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file);
        let mut proc = Proc::spawn("tokenvisor login", &mut cmd, Some(stderr.clone()));
        let stdout = (proc.child_mut().stdout.take()).unwrap_or_else(|| panic!("no stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Login {
            proc,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The first stdout line `pick` accepts (bounded wait).
    fn line(&mut self, what: &str, pick: impl Fn(&str) -> Option<String>) -> String {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(v) = pick(&line) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {what} from tokenvisor login; stdout {:?}; stderr:\n{}",
                    self.seen,
                    self.proc.stderr()
                ),
            }
        }
    }

    /// The authorization URL it printed.
    fn url(&mut self) -> String {
        self.line("authorization URL", |l| {
            l.starts_with("http").then(|| l.to_owned())
        })
    }

    /// The device flow's verification URI (complete) and user code.
    fn device(&mut self) -> (String, String) {
        let line = self.line("verification URI", |l| {
            l.starts_with("To log in workload app, open ")
                .then(|| l.to_owned())
        });
        let words: Vec<&str> = line.split(' ').collect();
        let uri = words.iter().find(|w| w.starts_with("http")).copied();
        let code = words.last().copied();
        match (uri, code) {
            (Some(u), Some(c)) => (u.to_owned(), c.to_owned()),
            (None, _) | (_, None) => panic!("unexpected device line {line:?}"),
        }
    }

    /// Waits for the exit; returns (exit code, all stdout, stderr).
    async fn finish(mut self) -> (Option<i32>, String, String) {
        let mut status = None;
        let exited = poll_until(WAIT, POLL, || {
            status = self.proc.exited();
            status.is_some()
        })
        .await;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(
            exited,
            "tokenvisor login did not exit within {WAIT:?}; stdout {:?}; stderr:\n{stderr}",
            self.seen
        );
        (status.and_then(|s| s.code()), self.seen.join("\n"), stderr)
    }
}

/// A browser's part: cookies, manual redirects, forms filled and submitted.
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
    /// The login page's choice: log in as this account, or cancel.
    cancel_login: bool,
    /// The device confirmation page's choice: continue, or abort.
    abort_device: bool,
}

/// One HTML form: its action and its fields (hidden inputs and submit buttons with a value).
#[derive(Debug)]
struct Form {
    action: String,
    fields: Vec<(String, String)>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_else(|e| panic!("reqwest: {e}")),
            cookies: BTreeMap::new(),
            cancel_login: false,
            abort_device: false,
        }
    }

    fn keep_cookies(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let v = String::from_utf8_lossy(v.as_bytes());
            let pair = v.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let expired = v.to_ascii_lowercase().contains("expires=thu, 01 jan 1970");
            match value.is_empty() || expired {
                true => drop(self.cookies.remove(name.trim())),
                false => drop(
                    self.cookies
                        .insert(name.trim().to_owned(), value.to_owned()),
                ),
            }
        }
    }

    async fn send(&mut self, url: &str, form: Option<&[(String, String)]>) -> reqwest::Response {
        let mut req = match form {
            None => self.http.get(url),
            Some(form) => self
                .http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string(form).unwrap_or_default()),
        };
        if !self.cookies.is_empty() {
            let jar: Vec<String> = (self.cookies.iter())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header("cookie", jar.join("; "));
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("browser: {url}: {e:?}"));
        self.keep_cookies(&resp);
        resp
    }

    /// Opens `url` and goes on as a person would until the provider's pages end: at the
    /// loopback redirect (fetched; its page returned) or at the device flow's last page.
    async fn run(&mut self, url: &str, account: &str) -> String {
        let mut next: (String, Option<Vec<(String, String)>>) = (url.to_owned(), None);
        for _ in 0..20 {
            let (url, form) = next;
            let aborting = (form.iter().flatten()).any(|(n, v)| n == "abort" && v == "yes");
            let resp = self.send(&url, form.as_deref()).await;
            let status = resp.status().as_u16();
            if (300..400).contains(&status) {
                let location = (resp.headers().get("location"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_else(|| panic!("{status} without a location at {url}"));
                let target = reqwest::Url::parse(&url)
                    .and_then(|base| base.join(location))
                    .unwrap_or_else(|e| panic!("location {location:?}: {e}"));
                next = (target.to_string(), None);
                continue;
            }
            let page = resp.text().await.unwrap_or_default();
            let done = url.contains("/callback") || page.contains("Sign-in Success");
            if done || aborting || status >= 400 {
                return page;
            }
            let forms = forms(&page, &url);
            if forms.is_empty() {
                return page;
            }
            next = self.choose(&forms, &page, account, &url);
        }
        panic!("the provider's pages did not end within 20 steps");
    }

    /// What to submit on a page.
    fn choose(
        &self,
        forms: &[Form],
        page: &str,
        account: &str,
        url: &str,
    ) -> (String, Option<Vec<(String, String)>>) {
        let has = |f: &Form, name: &str| f.fields.iter().any(|(n, _)| n == name);
        let form = (forms.iter())
            .find(|f| !f.action.is_empty())
            .unwrap_or_else(|| panic!("no form on {url}:\n{page}"));
        let mut fields: Vec<(String, String)> = (form.fields.iter())
            .filter(|(n, _)| n != "abort")
            .cloned()
            .collect();
        if page.contains("name=\"login\"") {
            // the development login form: any account, any password; or its cancel link
            if self.cancel_login {
                let abort = page
                    .split("href=\"")
                    .filter_map(|s| s.split('"').next())
                    .find(|h| h.ends_with("/abort"))
                    .unwrap_or_else(|| panic!("no abort link on the login page:\n{page}"));
                return (absolute(url, abort), None);
            }
            fields.push(("login".into(), account.into()));
            fields.push(("password".into(), "any".into()));
        } else if has(form, "confirm") && self.abort_device {
            fields.retain(|(n, _)| n != "confirm");
            fields.push(("abort".into(), "yes".into()));
        }
        (form.action.clone(), Some(fields))
    }
}

/// `href` against the page's URL.
fn absolute(base: &str, href: &str) -> String {
    reqwest::Url::parse(base)
        .and_then(|b| b.join(href))
        .map(|u| u.to_string())
        .unwrap_or_else(|e| panic!("{href:?}: {e}"))
}

/// The value of attribute `name` in one tag's text.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].replace("&amp;", "&"))
}

/// The forms of a page, each with its hidden inputs and named inputs' values.
fn forms(page: &str, url: &str) -> Vec<Form> {
    page.split("<form")
        .skip(1)
        .map(|chunk| {
            let tag = chunk.split('>').next().unwrap_or_default();
            let body = chunk.split("</form>").next().unwrap_or_default();
            let fields = body
                .split("<input")
                .skip(1)
                .filter_map(|i| {
                    let tag = i.split('>').next()?;
                    let name = attr(tag, "name")?;
                    let value = attr(tag, "value")?;
                    Some((name, value))
                })
                .collect();
            Form {
                action: attr(tag, "action").map_or_else(String::new, |a| absolute(url, &a)),
                fields,
            }
        })
        .collect()
}

fn status(work: &Path) -> Option<WorkloadStatus> {
    read_status(&work.join("statuses"), "app").map(|r| r.status)
}

async fn start_daemon(config: &Path, work: &Path) -> Daemon {
    let launch = Launch {
        current_dir: Some(work.to_owned()),
        stderr_file: Some(work.join(format!("daemon-{}.stderr", now_ms()))),
        ..Launch::default()
    };
    Daemon::start(tokenvisor_bin(), config, launch).await
}

/// The code flow, end to end: the daemon's workload holds no grant and is
/// `unauthenticated`; `tokenvisor login` prints the URL, the scripted browser logs in and
/// consents on the provider's pages, the redirect reaches the CLI's loopback listener, the
/// code is exchanged, the refresh token handed to the daemon (admin API), and the workload
/// is `running` at once. The CLI never prints the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_through_the_providers_pages_reaches_the_running_daemon() {
    let s = Setup::new();
    let config = s.config("tv-login");
    std::fs::write(s.rt_file(), "not-a-grant\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(s.rt_file(), std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let daemon = start_daemon(&config, s.work()).await;
    wait_until("app unauthenticated", || {
        status(s.work()) == Some(WorkloadStatus::Unauthenticated)
    })
    .await;

    let admin = daemon.admin_url();
    let admin = admin.trim_start_matches("http://");
    let mut login = Login::start(&config, &["--admin", admin, "--timeout", "60s"]);
    let url = login.url();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );
    assert!(url.contains("prompt=consent"), "{url}");
    let page = Browser::new().run(&url, "alice").await;
    assert!(page.contains("You may close this tab"), "{page}");
    let (code, out, err) = login.finish().await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("handed to the running daemon"), "{out}");

    wait_until("app running on the new grant", || {
        status(s.work()) == Some(WorkloadStatus::Running)
    })
    .await;
    let rt = std::fs::read_to_string(s.rt_file()).unwrap_or_default();
    let rt = rt.trim();
    assert_ne!(rt, "not-a-grant");
    assert!(
        !out.contains(rt) && !err.contains(rt),
        "the token was printed"
    );
    assert_eq!(s.code_exchanges(), 1);
    drop(daemon);
}

/// The device flow: the user code confirmed on the provider's page, login and consent, the
/// CLI's polling ends with the token written to refresh_token_file (0600; no daemon runs);
/// a daemon started on that file runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_through_the_confirmation_page_writes_the_file() {
    let s = Setup::new();
    let config = s.config("tv-login");
    let mut login = Login::start(&config, &["--device", "--timeout", "60s"]);
    let (uri, user_code) = login.device();
    assert!(uri.contains("user_code="), "{uri}");
    let page = Browser::new().run(&uri, "bob").await;
    assert!(page.contains("Sign-in Success"), "{page}");
    let (code, out, err) = login.finish().await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("written to"), "{out}");
    assert!(out.contains(&user_code), "{out}");
    let meta = std::fs::metadata(s.rt_file()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let rt = std::fs::read_to_string(s.rt_file()).unwrap_or_default();
    assert!(!rt.trim().is_empty());
    assert!(!out.contains(rt.trim()) && !err.contains(rt.trim()));

    let daemon = start_daemon(&config, s.work()).await;
    wait_until("app running on the device grant", || {
        status(s.work()) == Some(WorkloadStatus::Running)
    })
    .await;
    drop(daemon);
}

/// The user cancels at the provider's login page: the redirect carries
/// `error=access_denied`, the CLI says so and exits 1; nothing is exchanged or written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_is_reported_plainly() {
    let s = Setup::new();
    let config = s.config("tv-login");
    let mut login = Login::start(&config, &["--timeout", "60s"]);
    let url = login.url();
    let mut browser = Browser::new();
    browser.cancel_login = true;
    browser.run(&url, "alice").await;
    let (code, out, err) = login.finish().await;
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("refused the authorization: access_denied"),
        "{err}"
    );
    assert_eq!(s.code_exchanges(), 0);
    assert!(!s.rt_file().exists());
}

/// A redirect whose `state` is not this login's (the authorization request's `state`
/// replaced): the CLI refuses it, exchanges nothing and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_with_another_state_is_refused() {
    let s = Setup::new();
    let config = s.config("tv-login");
    let mut login = Login::start(&config, &["--timeout", "60s"]);
    let url = login.url();
    let mut forged = reqwest::Url::parse(&url).unwrap_or_else(|e| panic!("{e}"));
    let pairs: Vec<(String, String)> = (forged.query_pairs())
        .map(|(k, v)| match &*k {
            "state" => (k.into_owned(), "forged-state".to_owned()),
            _ => (k.into_owned(), v.into_owned()),
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    Browser::new().run(forged.as_str(), "mallory").await;
    let (code, out, err) = login.finish().await;
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("state does not match"), "{err}");
    assert_eq!(s.code_exchanges(), 0);
    assert!(!s.rt_file().exists());
}

/// `tv-login-short`'s device codes expire before the first poll is due: the CLI stops at
/// `expires_in` and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_code_that_expires_ends_the_login() {
    let s = Setup::new();
    let config = s.config("tv-login-short");
    let login = Login::start(&config, &["--device", "--timeout", "60s"]);
    let (code, out, err) = login.finish().await;
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("the device code expired"), "{err}");
    assert!(!s.rt_file().exists());
}

/// The user aborts on the provider's device confirmation page: the next poll answers
/// `access_denied`, and the CLI stops with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_aborting_the_device_confirmation_is_access_denied() {
    let s = Setup::new();
    let config = s.config("tv-login");
    let mut login = Login::start(&config, &["--device", "--timeout", "60s"]);
    let (uri, _) = login.device();
    let mut browser = Browser::new();
    browser.abort_device = true;
    browser.run(&uri, "bob").await;
    let (code, out, err) = login.finish().await;
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("access_denied"), "{err}");
    assert!(!s.rt_file().exists());
}

/// A daemon that does not run the workload refuses the hand-over (404): the CLI says so and
/// writes the token to `refresh_token_file` instead, so the grant is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_refuses_the_token_leaves_it_in_the_file() {
    let s = Setup::new();
    let config = s.config("tv-login");
    // the daemon: the same state directory (so the same admin token), no workloads
    let mut other = ConfigFile::new(&s.work().join("statuses-other"));
    other
        .service
        .str("state_dir", s.work().join("state").to_string_lossy());
    let other = other.write(&s.work().join("other.toml"));
    let daemon = start_daemon(&other, s.work()).await;
    let admin = daemon.admin_url();
    let admin = admin.trim_start_matches("http://");
    let mut login = Login::start(&config, &["--admin", admin, "--timeout", "60s"]);
    let url = login.url();
    Browser::new().run(&url, "alice").await;
    let (code, out, err) = login.finish().await;
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("did not take the refresh token (HTTP 404"),
        "{err}"
    );
    assert!(out.contains("written to"), "{out}");
    let rt = std::fs::read_to_string(s.rt_file()).unwrap_or_default();
    assert!(!rt.trim().is_empty());
    assert!(!out.contains(rt.trim()) && !err.contains(rt.trim()));
    drop(daemon);
}
