//! `tokenvisor status --config FILE`, `--summary` and `--watch`: the status directory from
//! the configuration, counts per status and per endpoint, the workloads needing attention
//! first with their reasons, periodic plain blocks when stdout is not a terminal.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::common::run;
use tokenvisor_core::status::{ErrorOutcome, LastError, SCHEMA, TokenSection, TokenState};
use tokenvisor_core::{StatusRecord, Timestamp, WorkloadStatus};

const CLIENT_SECRET: &str = "cs-SECRET-4b1e97";

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

fn record(status: WorkloadStatus, state: TokenState, summary: Option<&str>) -> StatusRecord {
    let t = now();
    StatusRecord {
        status,
        status_context: String::new(),
        created_at: t,
        updated_at: t,
        process_id: 4242,
        token: Some(TokenSection {
            schema: SCHEMA,
            state,
            since: Some(t),
            expires_at: None,
            attempt: 1,
            first_failure_at: summary.map(|_| t),
            next_attempt_at: None,
            last_error: summary.map(|s| LastError {
                outcome: ErrorOutcome::Permanent,
                kind: "oauth_rejected".to_owned(),
                http_status: Some(400),
                error_code: Some("invalid_grant".to_owned()),
                retry_after_secs: None,
                summary: s.to_owned(),
            }),
        }),
    }
}

/// A configuration naming `statuses/` and three workloads on two endpoints; the status
/// directory holds their files (one unauthenticated, one retrying) and one of a workload
/// the configuration does not name.
fn fleet() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("client.secret"), CLIENT_SECRET).unwrap();
    let cfg = d.join("tokenvisor.toml");
    std::fs::write(
        &cfg,
        r#"
[service]
status_dir = "statuses"
admin_listen = "off"

[[workload]]
name = "alpha"
token_url = "https://one.example.com/oauth/token"
client_id = "a"
client_secret_file = "client.secret"
grant = "client_credentials"

[[workload]]
name = "beta"
token_url = "https://one.example.com/oauth/token"
client_id = "b"
client_secret_file = "client.secret"
grant = "client_credentials"

[[workload]]
name = "gamma"
token_url = "https://two.example.com/token?key=SECRETKEY"
client_id = "c"
client_secret_file = "client.secret"
grant = "client_credentials"
"#,
    )
    .unwrap();
    let statuses = d.join("statuses");
    std::fs::create_dir(&statuses).unwrap();
    let write = |name: &str, r: &StatusRecord| {
        std::fs::write(statuses.join(format!("{name}.json")), r.to_json()).unwrap();
    };
    write(
        "alpha",
        &record(WorkloadStatus::Running, TokenState::Healthy, None),
    );
    write(
        "beta",
        &record(
            WorkloadStatus::AuthRetrying,
            TokenState::TransientBackoff,
            Some("HTTP 503 text/html: maintenance"),
        ),
    );
    write(
        "gamma",
        &record(
            WorkloadStatus::Unauthenticated,
            TokenState::Unauthenticated,
            Some("HTTP 400 invalid_grant: refresh token revoked"),
        ),
    );
    write(
        "orphan",
        &record(WorkloadStatus::Stopped, TokenState::Stopped, None),
    );
    (dir, cfg)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn status_reads_the_directory_named_by_the_configuration() {
    let (_dir, cfg) = fleet();
    // The table, from --config alone (no --dir, whatever the default directory is).
    let r = run(&["status", "--config", s(&cfg)]);
    assert_eq!(r.code, Some(1), "gamma needs attention: {r:#?}");
    for name in ["alpha", "beta", "gamma", "orphan"] {
        assert!(
            r.stdout.lines().any(|l| l.starts_with(name)),
            "{name}: {r:#?}"
        );
    }
    // --dir and --config together are a usage error.
    let both = run(&["status", "--config", s(&cfg), "--dir", "/tmp"]);
    assert_eq!(both.code, Some(2), "{both:#?}");
}

#[test]
fn an_invalid_configuration_is_named_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[service]\nstatus_dirr = \"x\"\n").unwrap();
    let r = run(&["status", "--config", s(&cfg), "--summary"]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(
        r.stderr.contains("bad.toml:2:") && r.stderr.contains("status_dirr"),
        "FILE:LINE: KEY: {r:#?}"
    );
}

#[test]
fn the_summary_counts_per_status_and_endpoint_with_attention_first() {
    let (_dir, cfg) = fleet();
    let r = run(&["status", "--config", s(&cfg), "--summary"]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    let out = &r.stdout;
    assert!(out.starts_with("4 workloads in "), "{out}");
    let count = |status: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(status))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no {status} line: {out}"))
            .to_owned()
    };
    assert_eq!(count("running"), "1");
    assert_eq!(count("auth_retrying"), "1");
    assert_eq!(count("unauthenticated"), "1");
    assert_eq!(count("stopped"), "1");
    // Per endpoint: redacted URLs, and the status file no workload of the file names.
    let ep = |prefix: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no endpoint line {prefix}: {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        ep("https://one.example.com/oauth/token")[1..5],
        ["2", "1", "1", "0"]
    );
    assert_eq!(
        ep("https://two.example.com/token")[1..5],
        ["1", "0", "0", "1"]
    );
    assert!(out.contains("(not in the configuration)"), "{out}");
    assert!(!out.contains("SECRETKEY"), "URLs are redacted: {out}");
    // Attention: unauthenticated before retrying, each with its reason; running and
    // stopped are not listed.
    let attention = out.split("NEEDING ATTENTION: 2").nth(1).expect(out);
    let gamma = attention.find("gamma").expect(out);
    let beta = attention.find("beta").expect(out);
    assert!(gamma < beta, "{out}");
    assert!(attention.contains("refresh token revoked"), "{out}");
    assert!(attention.contains("maintenance"), "{out}");
    assert!(!attention.contains("alpha") && !attention.contains("orphan"));
    assert!(!out.contains('\u{1b}'), "no terminal codes in a pipe");

    // --top bounds the list.
    let r = run(&["status", "--config", s(&cfg), "--summary", "--top", "1"]);
    assert!(
        r.stdout.contains("NEEDING ATTENTION: 2 (the first 1)"),
        "{r:#?}"
    );
    assert!(!r.stdout.contains("maintenance"), "{r:#?}");
}

#[test]
fn watch_prints_plain_blocks_when_not_on_a_terminal() {
    let (dir, cfg) = fleet();
    let r = run(&[
        "status",
        "--config",
        s(&cfg),
        "--watch",
        "--interval",
        "10ms",
        "--count",
        "3",
    ]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert_eq!(
        r.stdout.matches("4 workloads in ").count(),
        3,
        "three refreshes: {r:#?}"
    );
    assert!(!r.stdout.contains('\u{1b}'), "no terminal codes in a pipe");
    // Without a configuration: the default --dir path works too, with no endpoint table.
    let r = run(&[
        "status",
        "--dir",
        s(&dir.path().join("statuses")),
        "--watch",
        "--interval",
        "10ms",
        "--count",
        "1",
    ]);
    assert_eq!(r.stdout.matches("4 workloads in ").count(), 1, "{r:#?}");
    assert!(!r.stdout.contains("ENDPOINT"), "{r:#?}");
    // --count needs --watch; --watch refuses --json.
    assert_eq!(
        run(&["status", "--config", s(&cfg), "--count", "1"]).code,
        Some(2)
    );
    assert_eq!(
        run(&["status", "--config", s(&cfg), "--watch", "--json"]).code,
        Some(2)
    );
}
