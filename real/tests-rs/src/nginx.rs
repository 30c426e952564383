//! One nginx per test, in front of the provider: its own prefix directory, config, pid file
//! and logs (never the system's nginx), started in the foreground with
//! `nginx -p PREFIX -c PREFIX/conf/nginx.conf -e PREFIX/logs/error.log`, switched between
//! the modes of `real/nginx/modes/` by `nginx … -s reload`, stopped by its PID.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::components::{
    INSTALL, Proc, complete_lines, free_port, nginx_bin, now_ms, real_dir, wait_until_within,
};

/// What nginx does with token requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A plain reverse proxy to the provider.
    Pass,
    /// A WAF: 403 with an HTML page.
    Waf403,
    /// 429 with `Retry-After: secs` and an HTML page.
    RetryAfter429 {
        /// The `Retry-After` value.
        secs: u32,
    },
    /// 503 with an HTML page, no `Retry-After`.
    Unavailable503,
    /// The upstream is down (a closed port): nginx's own 502.
    BadGateway502,
    /// The provider behind `limit_req` (2 r/s, `burst`), refusals 429 + `Retry-After: 1`.
    LimitReq {
        /// The burst allowed.
        burst: u32,
    },
    /// The provider behind `limit_req` at 40 r/s for all clients, burst 0, refusals 429 +
    /// `Retry-After: 1` (the rate-limited recovery benchmark).
    LimitReq40,
    /// Proxied to an upstream that never answers.
    Slow,
}

impl Mode {
    /// The template's file stem in `real/nginx/modes/`, also the name in the access log.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pass => "pass",
            Mode::Waf403 => "waf403",
            Mode::RetryAfter429 { .. } => "retry_after429",
            Mode::Unavailable503 => "unavailable503",
            Mode::BadGateway502 => "bad_gateway502",
            Mode::LimitReq { .. } => "limit_req",
            Mode::LimitReq40 => "limit_req40",
            Mode::Slow => "slow",
        }
    }
}

/// One line of the access log (`log_format tv` of real/nginx/nginx.conf.in).
#[derive(Debug, Clone, Deserialize)]
pub struct Access {
    /// When the request was logged (seconds since the epoch, millisecond precision).
    pub t: f64,
    /// The mode in force.
    pub mode: String,
    /// The request path.
    pub uri: String,
    /// What nginx answered.
    pub status: u16,
    /// What the upstream answered (empty when nginx answered by itself).
    pub upstream_status: String,
    /// The Basic-auth user (the client id, for client_secret_basic clients).
    pub user: String,
}

impl Access {
    /// [`Access::t`] in milliseconds.
    pub fn t_ms(&self) -> u64 {
        (self.t * 1000.0).round() as u64
    }
}

/// Where nginx sends what.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// The provider, `127.0.0.1:PORT`.
    pub provider: String,
    /// The never-answering upstream, for [`Mode::Slow`].
    pub slow: Option<String>,
}

/// One nginx's files and addresses.
struct Layout {
    bin: PathBuf,
    prefix: PathBuf,
    port: u16,
    upstreams: Upstreams,
    /// A port on 127.0.0.1 that nothing listens on (for [`Mode::BadGateway502`]): bound by
    /// a socket that never listens, so that connections are refused and no other process can
    /// take the port while this nginx lives.
    closed: u16,
    _closed_guard: tokio::net::TcpSocket,
    /// Counts configuration switches; `GET /__mode` answers the mode and this.
    generation: u32,
}

impl Layout {
    fn args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            self.prefix.display().to_string(),
            "-c".into(),
            self.prefix.join("conf/nginx.conf").display().to_string(),
            "-e".into(),
            self.prefix.join("logs/error.log").display().to_string(),
        ]
    }

    /// Renders `mode` into `PREFIX/conf/mode.conf` (write to a temporary file, rename).
    fn write_mode(&self, mode: Mode) {
        let template_path = real_dir().join(format!("nginx/modes/{}.conf", mode.name()));
        let template = std::fs::read_to_string(&template_path)
            .unwrap_or_else(|e| panic!("{}: {e}", template_path.display()));
        let (retry_after, burst) = match mode {
            Mode::RetryAfter429 { secs } => (secs, 0),
            Mode::LimitReq { burst } => (1, burst),
            Mode::Pass
            | Mode::Waf403
            | Mode::Unavailable503
            | Mode::BadGateway502
            | Mode::LimitReq40
            | Mode::Slow => (1, 0),
        };
        let body = render(
            &template,
            &[
                ("@UPSTREAM@", self.upstreams.provider.clone()),
                ("@CLOSED@", format!("127.0.0.1:{}", self.closed)),
                (
                    "@SLOW@",
                    self.upstreams
                        .slow
                        .clone()
                        .unwrap_or_else(|| format!("127.0.0.1:{}", self.closed)),
                ),
                ("@RETRY_AFTER@", retry_after.to_string()),
                ("@BURST@", burst.to_string()),
            ],
        );
        let text = format!(
            "# rendered from real/nginx/modes/{}.conf\nset $tv_mode {};\nset $tv_gen {};\n{body}",
            mode.name(),
            mode.name(),
            self.generation
        );
        let tmp = self.prefix.join("conf/mode.conf.tmp");
        std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
        std::fs::rename(&tmp, self.prefix.join("conf/mode.conf"))
            .unwrap_or_else(|e| panic!("mode.conf: {e}"));
    }

    /// `nginx -t`: the rendered configuration is valid.
    fn check_config(&self) {
        let out = Command::new(&self.bin)
            .arg("-t")
            .args(self.args())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}: {INSTALL}", self.bin.display()));
        assert!(
            out.status.success(),
            "nginx -t refused the configuration:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A running nginx.
pub struct Nginx {
    proc: Proc,
    layout: Layout,
}

impl Nginx {
    /// Starts nginx under `prefix` in `mode`, and waits until it answers.
    pub async fn start(prefix: &Path, upstreams: Upstreams, mode: Mode) -> Nginx {
        let bin = nginx_bin();
        for dir in ["conf", "logs", "tmp"] {
            std::fs::create_dir_all(prefix.join(dir))
                .unwrap_or_else(|e| panic!("{}: {e}", prefix.display()));
        }
        let mut last_error = String::new();
        // The port is free when picked but may be taken before nginx binds it: try again.
        for _ in 0..5 {
            let port = free_port();
            let (closed, closed_guard) = closed_port();
            let conf = render(
                &std::fs::read_to_string(real_dir().join("nginx/nginx.conf.in"))
                    .unwrap_or_else(|e| panic!("real/nginx/nginx.conf.in: {e}")),
                &[
                    ("@PREFIX@", prefix.display().to_string()),
                    ("@LISTEN@", format!("127.0.0.1:{port}")),
                ],
            );
            std::fs::write(prefix.join("conf/nginx.conf"), conf)
                .unwrap_or_else(|e| panic!("nginx.conf: {e}"));
            let layout = Layout {
                bin: bin.clone(),
                prefix: prefix.to_owned(),
                port,
                upstreams: upstreams.clone(),
                closed,
                _closed_guard: closed_guard,
                generation: 1,
            };
            layout.write_mode(mode);
            layout.check_config();
            let stderr_path = prefix.join("logs/stderr.log");
            let stderr = std::fs::File::create(&stderr_path)
                .unwrap_or_else(|e| panic!("{}: {e}", stderr_path.display()));
            let mut cmd = Command::new(&bin);
            cmd.args(layout.args())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            let proc = Proc::spawn("nginx", &mut cmd, Some(stderr_path));
            let mut nginx = Nginx { proc, layout };
            if nginx.wait_mode(mode, 1).await {
                return nginx;
            }
            last_error = format!(
                "{}\n{}",
                nginx.proc.stderr(),
                std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default()
            );
            nginx.proc.stop();
        }
        panic!("nginx did not start: {last_error}");
    }

    /// nginx under `<work>/nginx` in pass mode in front of the provider at `provider`
    /// (`127.0.0.1:PORT`), with no slow upstream: the stack of the daemon tests and runs.
    pub async fn pass_to(work: &Path, provider: String) -> Nginx {
        let upstreams = Upstreams {
            provider,
            slow: None,
        };
        Nginx::start(&work.join("nginx"), upstreams, Mode::Pass).await
    }

    /// The token endpoint, through nginx.
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.layout.port)
    }

    /// The master process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Switches to `mode` by a configuration reload (`nginx -p … -c … -s reload`, a HUP to
    /// the master) and waits until new connections are served in that mode. Returns the
    /// wall-clock time (ms) at which the new mode was seen answering.
    pub async fn switch(&mut self, mode: Mode) -> u64 {
        assert!(
            self.proc.exited().is_none(),
            "nginx exited: {}",
            self.proc.stderr()
        );
        self.layout.generation += 1;
        self.layout.write_mode(mode);
        self.layout.check_config();
        let out = Command::new(&self.layout.bin)
            .args(self.layout.args())
            .args(["-s", "reload"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nginx -s reload: {e}"));
        assert!(
            out.status.success(),
            "nginx -s reload failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generation = self.layout.generation;
        assert!(
            self.wait_mode(mode, generation).await,
            "nginx did not switch to {} (generation {generation}): {}",
            mode.name(),
            std::fs::read_to_string(self.layout.prefix.join("logs/error.log")).unwrap_or_default()
        );
        // The old worker keeps serving requests that arrive on connections it already has
        // (tokenvisor's pooled keep-alive connection) until it has shut down: only when it is
        // gone is every request answered in the new mode.
        let master = self.proc.pid();
        wait_until_within(
            &format!(
                "nginx's old worker to exit after the switch to {}",
                mode.name()
            ),
            Duration::from_secs(30),
            || workers_of(master).len() == 1,
        )
        .await;
        now_ms()
    }

    /// Polls `GET /__mode` on fresh connections until it names `mode` and `generation`;
    /// false if nginx exited or did not get there within 10 s.
    async fn wait_mode(&mut self, mode: Mode, generation: u32) -> bool {
        let want = format!("{} {generation}", mode.name());
        let port = self.layout.port;
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.proc.exited().is_some() {
                return false;
            }
            if probe(port).await.is_some_and(|body| body.trim() == want) {
                return true;
            }
            tokio::time::sleep(crate::components::POLL).await;
        }
        false
    }

    /// Every complete line of the access log so far (nginx writes a request's line once it
    /// has answered it: after the provider logged the request, after the client got the
    /// answer).
    pub fn access_log(&self) -> Vec<Access> {
        let text =
            std::fs::read_to_string(self.layout.prefix.join("logs/access.log")).unwrap_or_default();
        complete_lines(&text)
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line {l:?}: {e}"))
            })
            .collect()
    }

    /// The token requests (`/token`) nginx saw, in order.
    pub fn token_requests(&self) -> Vec<Access> {
        let mut v: Vec<Access> = self
            .access_log()
            .into_iter()
            .filter(|a| a.uri == "/token")
            .collect();
        v.sort_by(|a, b| a.t.total_cmp(&b.t));
        v
    }

    /// Waits until nginx logged a token request matching `pred`; returns it.
    pub async fn wait_token_request(&self, what: &str, pred: impl Fn(&Access) -> bool) -> Access {
        let mut found = None;
        wait_until_within(what, crate::components::LIMIT, || {
            found = self.token_requests().into_iter().find(|a| pred(a));
            found.is_some()
        })
        .await;
        found.unwrap_or_else(unreachable_found)
    }
}

fn unreachable_found() -> Access {
    panic!("wait_until returned without a match")
}

/// A port on 127.0.0.1 held by a bound socket that never listens: connecting to it is refused.
fn closed_port() -> (u16, tokio::net::TcpSocket) {
    let sock = tokio::net::TcpSocket::new_v4()
        .and_then(|s| s.bind(([127, 0, 0, 1], 0).into()).map(|()| s))
        .unwrap_or_else(|e| panic!("cannot reserve a closed port: {e}"));
    let port = sock
        .local_addr()
        .unwrap_or_else(|e| panic!("closed port: {e}"))
        .port();
    (port, sock)
}

/// The child processes (workers) of nginx's master `pid`.
fn workers_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    // Without /proc/…/children: every process whose parent is `pid`.
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid …: the comm may contain spaces, so split after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

/// Replaces each `(from, to)` in `text`.
fn render(text: &str, pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .fold(text.to_owned(), |acc, (from, to)| acc.replace(from, to))
}

/// `GET /__mode` on a fresh connection; the body, if nginx answered 200.
async fn probe(port: u16) -> Option<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /__mode HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}
