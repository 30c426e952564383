//! The embedding example (`crates/tokenvisor/examples/embed.rs`) builds, runs against its
//! in-process idp, exits 0, and prints no token or secret.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Building the example may wait for the build lock while other builds run: be generous.
const LIMIT: Duration = Duration::from_secs(600);

/// True when `text` holds something shaped like a token the idp issues: `at_` or `rt_`
/// followed by 32 alphanumeric characters.
fn has_token(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.windows(35).any(|w| {
        (w.starts_with(b"at_") || w.starts_with(b"rt_"))
            && w[3..].iter().all(u8::is_ascii_alphanumeric)
    })
}

/// Variables cargo sets for a test process to describe its package (not cargo settings).
fn is_package_env(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        )
}

#[test]
fn the_token_detector_detects_tokens() {
    assert!(has_token("Bearer at_0123456789abcdefghijABCDEFGHIJ0123."));
    assert!(!has_token(
        "token obtained, expires at 2030-01-01T00:00:00.000Z"
    ));
}

#[tokio::test]
async fn the_embedding_example_runs_and_exits_cleanly() {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut cargo = Command::new(env!("CARGO"));
    // Cargo describes this test's package to it in the environment; some build scripts
    // (ring's) track such variables, and a nested build that saw them would rebuild the TLS
    // stack now and again at the next ordinary build. Hand the nested cargo a clean slate.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if is_package_env(&key) {
            cargo.env_remove(&*key);
        }
    }
    let child = cargo
        .args(["run", "-q", "-p", "tokenvisor", "--example", "embed"])
        .current_dir(workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot run cargo");
    let output = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the example did not finish within {LIMIT:?}"))
        .expect("cannot collect the example's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the example failed ({}).\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for line in [
        "host: supervision: the tokenvisor supervisor started",
        "round 1: github-mcp: token obtained, expires at",
        "round 1: jira: token obtained, expires at",
        "round 1: search-agent: token obtained, expires at",
        "round 4: ",
        "host: supervision: the tokenvisor supervisor terminated",
        "status file jira.json: stopped",
        "clean shutdown",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!has_token(text), "a token was printed on {what}:\n{text}");
        assert!(
            !text.contains("-client-secret"),
            "a client secret was printed on {what}"
        );
    }
}
