//! Helpers shared by the CLI tests: run the built `tokenvisor` binary and inspect its output.

use std::process::Command;

/// What one run of the binary produced.
#[derive(Debug)]
pub(crate) struct Run {
    /// The exit code (`None` when killed by a signal).
    pub(crate) code: Option<i32>,
    /// Standard output, lossily decoded.
    pub(crate) stdout: String,
    /// Standard error, lossily decoded.
    pub(crate) stderr: String,
}

impl Run {
    /// Stdout parsed as one JSON value (panics with both streams when it is not).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {self:#?}"))
    }

    /// Both streams, for searching.
    pub(crate) fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The built `tokenvisor` binary.
pub(crate) const TOKENVISOR: &str = env!("CARGO_BIN_EXE_tokenvisor");

/// A command for the built binary, with a clean environment for what matters here: no
/// proxies (the servers are on loopback), no log filter from the caller.
pub(crate) fn tokenvisor() -> Command {
    tokenvisor_test_support::daemon::command(TOKENVISOR)
}

/// Runs the binary with `args` and waits for it.
pub(crate) fn run(args: &[&str]) -> Run {
    run_cmd(tokenvisor().args(args))
}

/// Runs a prepared command and waits for it.
pub(crate) fn run_cmd(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("the tokenvisor binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// True when `text` holds `prefix` followed by at least 16 ASCII alphanumerics: what the test
/// identity provider's tokens look like (`at_…`, `rt_…`).
pub(crate) fn has_token_like(text: &str, prefix: &str) -> bool {
    text.match_indices(prefix).any(|(i, _)| {
        text[i + prefix.len()..]
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count()
            >= 16
    })
}
