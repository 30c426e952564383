//! The one daemon spawner: start the built `tokenvisor run --config FILE`, wait (bounded)
//! for its JSON ready line, read its admin address and token, collect its stderr (in memory
//! or in a file), signal it, and stop it by its PID. A [`Daemon`] is killed (SIGKILL, by
//! PID) and reaped when dropped, so no daemon outlives a failed assertion.
//!
//! The binary's path is the caller's: a test of the CLI crate passes
//! `env!("CARGO_BIN_EXE_tokenvisor")`, other suites build it first.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::wait::{LIMIT, poll_until, wait_until};

/// `text` up to its last newline: stderr reaches the log in chunks (the pipe's reads, a
/// file being appended to) that may end inside a line, and a caller that waited for a line
/// reads the rest of it.
fn complete_lines(text: &str) -> &str {
    text.rfind('\n').map_or("", |i| &text[..=i])
}

/// Environment variables a test daemon never inherits: the servers are on loopback and
/// the log filter is the configuration's.
pub const CLEARED_ENV: [&str; 7] = [
    "RUST_LOG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// A command for `program` with [`CLEARED_ENV`] removed.
pub fn command(program: impl AsRef<Path>) -> Command {
    let mut cmd = Command::new(program.as_ref());
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// How to launch a daemon.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Extra environment variables (`RUST_LOG`, …).
    pub env: Vec<(String, String)>,
    /// Run it through `sh` with SIGXFSZ ignored, so that a lowered file-size limit makes
    /// writes fail (`EFBIG`) instead of killing the process.
    pub ignore_sigxfsz: bool,
    /// Run it through `sh` after `ulimit <this>` (e.g. `-n 64`).
    pub ulimit: Option<String>,
    /// Its working directory (the test's by default).
    pub current_dir: Option<PathBuf>,
    /// Append its stderr to this file instead of collecting it in memory.
    pub stderr_file: Option<PathBuf>,
    /// How long to wait for the ready line.
    pub ready_within: Duration,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            env: Vec::new(),
            ignore_sigxfsz: false,
            ulimit: None,
            current_dir: None,
            stderr_file: None,
            ready_within: Duration::from_secs(60),
        }
    }
}

enum Log {
    Memory(Arc<Mutex<Vec<u8>>>),
    File(PathBuf),
}

/// A running `tokenvisor run`; killed (SIGKILL, by PID) and reaped on drop.
pub struct Daemon {
    child: Child,
    /// Kept open so that the daemon never writes into a closed pipe.
    _stdout: Option<BufReader<ChildStdout>>,
    log: Log,
    reaped: bool,
    /// The admin API's address (`host:port`), when it listens.
    pub admin: Option<String>,
    /// The file holding the admin API's bearer token (from the ready line).
    pub admin_token_file: Option<PathBuf>,
    /// The ready line, parsed.
    pub ready: serde_json::Value,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("pid", &self.child.id())
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

impl Daemon {
    /// Starts `program run --config <config>` and waits for its ready line; fails the test
    /// (with the daemon's stderr) if it does not get ready.
    pub async fn start(program: impl AsRef<Path>, config: &Path, launch: Launch) -> Daemon {
        Daemon::try_start(program, config, launch)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Daemon::start`], but a daemon that does not get ready (killed, then) is an
    /// error naming why, with its stderr.
    pub async fn try_start(
        program: impl AsRef<Path>,
        config: &Path,
        launch: Launch,
    ) -> Result<Daemon, String> {
        let program = program.as_ref();
        let mut cmd = if launch.ignore_sigxfsz || launch.ulimit.is_some() {
            let mut script = String::new();
            if launch.ignore_sigxfsz {
                script.push_str("trap '' XFSZ; ");
            }
            if let Some(args) = &launch.ulimit {
                script.push_str(&format!("ulimit {args}; "));
            }
            script.push_str(r#"exec "$0" "$@""#);
            let mut cmd = command("sh");
            cmd.arg("-c").arg(script).arg(program);
            cmd
        } else {
            command(program)
        };
        cmd.args(["run", "--config"])
            .arg(config)
            .env("NO_PROXY", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(dir) = &launch.current_dir {
            cmd.current_dir(dir);
        }
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        let log = match &launch.stderr_file {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                cmd.stderr(Stdio::from(file));
                Log::File(path.clone())
            }
            None => {
                cmd.stderr(Stdio::piped());
                Log::Memory(Arc::new(Mutex::new(Vec::new())))
            }
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        if let Log::Memory(sink) = &log {
            let mut pipe = child
                .stderr
                .take()
                .ok_or_else(|| "no stderr pipe".to_owned())?;
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sink
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| "no stdout pipe".to_owned())?;
        let mut daemon = Daemon {
            child,
            _stdout: None,
            log,
            reaped: false,
            admin: None,
            admin_token_file: None,
            ready: serde_json::Value::Null,
        };
        // The read blocks; a thread bounds it. If the daemon never prints, killing it (drop)
        // closes the pipe and ends the thread.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send((read, reader));
        });
        let limit = launch.ready_within;
        let (read, reader) = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(got)) => got,
            Ok(Err(_)) => return Err(daemon.failed("the ready-line reader died")),
            Err(_) => return Err(daemon.failed(&format!("no ready line within {limit:?}"))),
        };
        daemon._stdout = Some(reader);
        let line = match read {
            Ok(line) => line,
            Err(e) => return Err(daemon.failed(&format!("reading the ready line: {e}"))),
        };
        let ready: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => return Err(daemon.failed(&format!("no ready line ({e}): {line:?}"))),
        };
        if ready["event"] != "ready" || ready["pid"] != daemon.pid() {
            return Err(daemon.failed(&format!("unexpected ready line {line:?}")));
        }
        daemon.admin = ready["admin"].as_str().map(str::to_owned);
        daemon.admin_token_file = ready["admin_token_file"].as_str().map(PathBuf::from);
        daemon.ready = ready;
        Ok(daemon)
    }

    /// Kills the daemon and describes why it failed, with its stderr.
    fn failed(&mut self, why: &str) -> String {
        self.kill_and_reap();
        format!("{why}\nstderr:\n{}", self.log_now())
    }

    fn kill_and_reap(&mut self) {
        if !self.reaped {
            // `Child::kill` sends SIGKILL to this PID.
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin API's base URL (`http://host:port`); panics when it does not listen.
    pub fn admin_url(&self) -> String {
        format!(
            "http://{}",
            self.admin.as_deref().expect("the admin API listens")
        )
    }

    /// The admin API's bearer token, read from the file the ready line names.
    pub fn admin_token(&self) -> String {
        let path = self
            .admin_token_file
            .as_ref()
            .expect("the ready line names the admin token file");
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim_end()
            .to_owned()
    }

    /// Everything the daemon logged so far (lossy UTF-8).
    pub fn log_now(&self) -> String {
        match &self.log {
            Log::Memory(buf) => {
                String::from_utf8_lossy(&buf.lock().unwrap_or_else(PoisonError::into_inner))
                    .into_owned()
            }
            Log::File(path) => std::fs::read(path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
        }
    }

    /// The log so far without terminal colour codes (`ESC [ … m`).
    pub fn log_plain(&self) -> String {
        let raw = self.log_now();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// How many complete lines of the (plain) log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        complete_lines(&self.log_plain())
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits (bounded) until a complete line of the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        wait_until(&format!("{needle:?} in the log"), || {
            complete_lines(&self.log_now()).contains(needle)
        })
        .await;
    }

    /// Sends a signal (`-HUP`, `-TERM`, …) with `kill(1)`, by PID.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill(1) runs")
            .success();
        assert!(ok, "kill {sig} {}", self.pid());
    }

    /// Its exit code if it has exited (`Some(None)`: killed by a signal).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        let status = self.child.try_wait().expect("try_wait")?;
        self.reaped = true;
        Some(status.code())
    }

    /// Waits (bounded) for the daemon to exit; its exit code (`None`: killed by a signal).
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let mut code = None;
        let exited = poll_until(LIMIT, Duration::from_millis(20), || {
            code = self.exited();
            code.is_some()
        })
        .await;
        assert!(exited, "the daemon did not exit:\n{}", self.log_now());
        code.flatten()
    }

    /// SIGTERM, then waits (bounded) for the exit code (it flushes every status and exits 0).
    pub async fn terminate(&mut self) -> Option<i32> {
        self.signal("-TERM");
        self.wait_exit().await
    }

    /// `kill -9` by PID, then reap the process.
    pub fn kill9(mut self) {
        self.kill_and_reap();
    }

    fn proc_status(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/PID/status"))
    }

    /// The daemon's resident set now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status("VmRSS:")
    }

    /// The daemon's peak resident set (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status("VmHWM:")
    }

    /// How many file descriptors the daemon has open.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(Iterator::count)
            .unwrap_or(usize::MAX)
    }
}
