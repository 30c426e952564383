//! Where the outside components are, and the process guard every started process lives in.
//!
//! A component that is missing fails the test (never skips it) with [`INSTALL`].

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to do when a component is missing.
pub const INSTALL: &str = "install the suite's components with `bash real/install.sh` \
     (nginx, tinyproxy and openssl from Debian's packages, oidc-provider with `npm ci` in \
     real/oidc), then run \
     `scripts/test --real` (see real/README.md)";

pub use tokenvisor_test_support::wait::{LIMIT, POLL, wait_until, wait_until_within};

/// The repository's `real/` directory.
pub fn real_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    dir.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Wall-clock milliseconds since the epoch (the clock nginx and node log with).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The complete lines of a log another process appends to: up to its last newline. A line
/// is appended by one write, but a write that crosses a page of the page cache becomes
/// visible a page at a time, so a reader may see the start of a line before its end: that
/// part is left for the next read.
pub fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    text[..end].lines().filter(|l| !l.trim().is_empty())
}

/// Finds an executable: `$env_var` if set, then `candidates`, then `name` on `PATH`.
fn find_exe(env_var: &str, candidates: &[&str], name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let from_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(from_path)
        .find(|p| p.is_file())
}

/// Fails the test, naming every missing component, unless nginx, node and oidc-provider are
/// all there.
pub fn require_all() {
    let mut missing = Vec::new();
    if find_nginx().is_none() {
        missing.push("nginx (looked at $REAL_NGINX, /usr/sbin/nginx and PATH)".to_owned());
    }
    if find_exe("REAL_NODE", &[], "node").is_none() {
        missing.push("node (looked at $REAL_NODE and PATH)".to_owned());
    }
    let module = real_dir().join("oidc/node_modules/oidc-provider/package.json");
    if !module.is_file() {
        missing.push(format!(
            "oidc-provider ({} does not exist)",
            module.display()
        ));
    }
    assert!(
        missing.is_empty(),
        "missing: {}: {INSTALL}",
        missing.join("; ")
    );
}

fn find_nginx() -> Option<PathBuf> {
    find_exe(
        "REAL_NGINX",
        &["/usr/sbin/nginx", "/usr/local/sbin/nginx"],
        "nginx",
    )
}

/// The nginx binary (`$REAL_NGINX`, `/usr/sbin/nginx`, or on `PATH`).
pub fn nginx_bin() -> PathBuf {
    find_nginx().unwrap_or_else(|| {
        panic!("nginx is missing (looked at $REAL_NGINX, /usr/sbin/nginx and PATH): {INSTALL}")
    })
}

/// The node binary (`$REAL_NODE` or on `PATH`).
pub fn node_bin() -> PathBuf {
    find_exe("REAL_NODE", &[], "node")
        .unwrap_or_else(|| panic!("node is missing (looked at $REAL_NODE and PATH): {INSTALL}"))
}

/// `real/oidc`, with oidc-provider installed in its `node_modules`.
pub fn oidc_dir() -> PathBuf {
    let dir = real_dir().join("oidc");
    let installed = dir.join("node_modules/oidc-provider/package.json");
    assert!(
        installed.is_file(),
        "oidc-provider is missing ({} does not exist): {INSTALL}",
        installed.display()
    );
    dir
}

/// Sends `sig` (`-STOP`, `-CONT`, …) to `pid` with kill(1); fails the test if it cannot.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// A port on 127.0.0.1 that was free a moment ago (the caller retries if it is taken).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port on 127.0.0.1: {e}"))
}

/// A child process, stopped by its PID when dropped (SIGTERM, then SIGKILL after 10 s), so
/// that nothing outlives its test, whether it passed or failed.
pub struct Proc {
    what: &'static str,
    child: Option<Child>,
    stderr_file: Option<PathBuf>,
}

impl Proc {
    /// Spawns `cmd` (its stderr should already go to `stderr_file`, if given).
    pub fn spawn(what: &'static str, cmd: &mut Command, stderr_file: Option<PathBuf>) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}: {INSTALL}"));
        Proc {
            what,
            child: Some(child),
            stderr_file,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child, for its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .unwrap_or_else(|| panic!("{} was stopped", self.what))
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// What it wrote to its stderr file so far (for failure messages).
    pub fn stderr(&self) -> String {
        let Some(path) = &self.stderr_file else {
            return String::new();
        };
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Sends `signal` (a `kill` argument such as `-TERM`), waits up to `limit` for the process
    /// to exit, then kills it (SIGKILL) if it is still there; reaps it. Returns how it exited
    /// and whether it had to be killed.
    pub fn stop_with(
        &mut self,
        signal: &str,
        limit: Duration,
    ) -> Option<(std::process::ExitStatus, bool)> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some((st, false));
        }
        let pid = child.id();
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        // Wait on another thread, with a deadline here.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        if let Ok(Ok(st)) = rx.recv_timeout(limit) {
            return Some((st, false));
        }
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(st)) => Some((st, true)),
            _ => None,
        }
    }

    /// Stops it: SIGTERM, then SIGKILL if it is still there after 10 s.
    pub fn stop(&mut self) {
        let _ = self.stop_with("-TERM", Duration::from_secs(10));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::complete_lines;

    #[test]
    fn a_line_still_being_written_is_left_for_the_next_read() {
        let text = "{\"a\":1}\n\n{\"b\":2}\n{\"c\":";
        assert_eq!(
            complete_lines(text).collect::<Vec<_>>(),
            ["{\"a\":1}", "{\"b\":2}"]
        );
        assert_eq!(complete_lines("{\"c\":").count(), 0);
        assert_eq!(complete_lines("").count(), 0);
    }
}
