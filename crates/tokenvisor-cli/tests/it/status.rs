//! `tokenvisor status`: reads status files written with `StatusRecord::to_json`, prints a
//! table or JSON, and exits 0, 1 or 2 as documented.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::{Run, run, run_cmd, tokenvisor};
use tokenvisor_core::status::{ErrorOutcome, LastError, SCHEMA, TokenSection, TokenState};
use tokenvisor_core::{StatusRecord, Timestamp, WorkloadStatus};

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

fn record(status: WorkloadStatus, token: Option<TokenSection>) -> StatusRecord {
    let t = now();
    StatusRecord {
        status,
        status_context: String::new(),
        created_at: t,
        updated_at: t,
        process_id: 4242,
        token,
    }
}

fn token(state: TokenState) -> TokenSection {
    TokenSection {
        schema: SCHEMA,
        state,
        since: Some(now()),
        expires_at: None,
        attempt: 0,
        first_failure_at: None,
        next_attempt_at: None,
        last_error: None,
    }
}

fn running(expires_in: Duration) -> StatusRecord {
    record(
        WorkloadStatus::Running,
        Some(TokenSection {
            expires_at: Some(now().plus(expires_in)),
            ..token(TokenState::Healthy)
        }),
    )
}

fn waf_error(summary: &str) -> LastError {
    LastError {
        outcome: ErrorOutcome::Transient,
        kind: "infrastructure_4xx".to_owned(),
        http_status: Some(403),
        error_code: None,
        retry_after_secs: None,
        summary: summary.to_owned(),
    }
}

fn retrying(next_in: Duration, summary: &str) -> StatusRecord {
    let mut r = record(
        WorkloadStatus::AuthRetrying,
        Some(TokenSection {
            attempt: 3,
            first_failure_at: Some(now()),
            next_attempt_at: Some(now().plus(next_in)),
            last_error: Some(waf_error(summary)),
            ..token(TokenState::TransientBackoff)
        }),
    );
    r.status_context = "refresh failing; retrying".to_owned();
    r
}

fn unauthenticated() -> StatusRecord {
    let mut r = record(
        WorkloadStatus::Unauthenticated,
        Some(TokenSection {
            attempt: 1,
            last_error: Some(LastError {
                outcome: ErrorOutcome::Permanent,
                kind: "oauth_rejected".to_owned(),
                http_status: Some(400),
                error_code: Some("invalid_grant".to_owned()),
                retry_after_secs: None,
                summary: "HTTP 400 invalid_grant: refresh token revoked".to_owned(),
            }),
            ..token(TokenState::Unauthenticated)
        }),
    );
    r.status_context = "credentials rejected".to_owned();
    r
}

fn write(dir: &Path, name: &str, r: &StatusRecord) {
    std::fs::write(dir.join(format!("{name}.json")), r.to_json()).unwrap();
}

/// A directory holding one healthy workload, one retrying, one starting, one stopped.
fn healthy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "alpha", &running(Duration::from_secs(3600)));
    write(
        dir.path(),
        "beta",
        &retrying(
            Duration::from_secs(30),
            "HTTP 403 text/html: Attention Required",
        ),
    );
    write(
        dir.path(),
        "gamma",
        &record(
            WorkloadStatus::Starting,
            Some(token(TokenState::Refreshing)),
        ),
    );
    write(
        dir.path(),
        "delta",
        &record(WorkloadStatus::Stopped, Some(token(TokenState::Stopped))),
    );
    dir
}

fn status(dir: &Path, extra: &[&str]) -> Run {
    let mut argv = vec!["status", "--dir", dir.to_str().unwrap()];
    argv.extend_from_slice(extra);
    run(&argv)
}

/// The table line of workload `name`.
fn line<'a>(r: &'a Run, name: &str) -> &'a str {
    r.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no line for {name}: {r:#?}"))
}

#[test]
fn the_table_shows_every_workload_and_exits_0_when_none_needs_attention() {
    let dir = healthy_dir();
    // Not status files: a temp file of an interrupted write, a set-aside corrupt file, a
    // file whose stem is not a workload name, an unrelated file.
    std::fs::write(dir.path().join(".alpha.json.Xy12Ab"), "{").unwrap();
    std::fs::write(dir.path().join("old.json.corrupted"), "{").unwrap();
    std::fs::write(dir.path().join("bad name.json"), "{").unwrap();
    std::fs::write(dir.path().join("README"), "hello").unwrap();

    let r = status(dir.path(), &[]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "header + 4 workloads: {r:#?}");
    for col in [
        "NAME",
        "STATUS",
        "STATE",
        "EXPIRY / NEXT ATTEMPT",
        "LAST ERROR",
    ] {
        assert!(lines[0].contains(col), "{r:#?}");
    }
    // Sorted by name.
    let names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "delta", "gamma"]);

    let alpha = line(&r, "alpha");
    assert!(alpha.contains("running"), "{alpha}");
    assert!(alpha.contains("healthy"), "{alpha}");
    assert!(alpha.contains("expires in "), "{alpha}");
    // The absolute time too, RFC 3339 in UTC.
    assert!(alpha.contains('T') && alpha.contains("Z)"), "{alpha}");

    let beta = line(&r, "beta");
    assert!(beta.contains("auth_retrying"), "{beta}");
    assert!(beta.contains("transient_backoff"), "{beta}");
    assert!(beta.contains("next attempt in "), "{beta}");
    assert!(
        beta.contains("infrastructure_4xx: HTTP 403 text/html: Attention Required"),
        "{beta}"
    );

    assert!(line(&r, "gamma").contains("starting"), "{r:#?}");
    assert!(line(&r, "delta").contains("stopped"), "{r:#?}");
}

#[test]
fn unauthenticated_or_error_exits_1() {
    let dir = healthy_dir();
    write(dir.path(), "zulu", &unauthenticated());
    let r = status(dir.path(), &[]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    let zulu = line(&r, "zulu");
    assert!(zulu.contains("unauthenticated"), "{zulu}");
    assert!(
        zulu.contains("oauth_rejected: HTTP 400 invalid_grant: refresh token revoked"),
        "{zulu}"
    );

    let dir = healthy_dir();
    let mut crashed = record(WorkloadStatus::Error, None);
    crashed.status_context = "actor crashed 5 times in 60s".to_owned();
    write(dir.path(), "crashed", &crashed);
    let r = status(dir.path(), &[]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    let crashed = line(&r, "crashed");
    assert!(crashed.contains("error"), "{crashed}");
    // Without a last error, the status context is shown.
    assert!(
        crashed.contains("actor crashed 5 times in 60s"),
        "{crashed}"
    );
}

#[test]
fn a_corrupt_file_is_listed_with_the_parse_error_not_its_content() {
    let dir = healthy_dir();
    std::fs::write(
        dir.path().join("broken.json"),
        "{\"status\": \"running\", \"token\": sk-live-SECRET-CONTENT",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("wrongshape.json"),
        r#"{"status": "sk-live-OTHER-SECRET", "created_at": "x", "updated_at": "y"}"#,
    )
    .unwrap();
    let r = status(dir.path(), &[]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(!r.all().contains("SECRET"), "{r:#?}");
    let broken = line(&r, "broken");
    assert!(broken.contains("corrupt"), "{broken}");
    assert!(broken.contains("line 1 column"), "{broken}");
    assert!(line(&r, "wrongshape").contains("corrupt"), "{r:#?}");
    // Read-only: the file is still there, under its own name.
    assert!(dir.path().join("broken.json").exists());

    let r = status(dir.path(), &["--json"]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(!r.all().contains("SECRET"), "{r:#?}");
    let v = r.json();
    let broken = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "broken")
        .unwrap();
    assert_eq!(broken["status"], "corrupt");
    assert!(
        broken["error"].as_str().unwrap().contains("line 1"),
        "{broken}"
    );
}

#[test]
fn json_is_an_array_of_name_plus_record() {
    let dir = healthy_dir();
    write(dir.path(), "zulu", &unauthenticated());
    let r = status(dir.path(), &["--json"]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    let v = r.json();
    let all = v.as_array().unwrap();
    let names: Vec<&str> = all.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "delta", "gamma", "zulu"]);

    // Each entry is the record as on disk, plus its name.
    let beta = &all[1];
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("beta.json")).unwrap()).unwrap();
    let mut without_name = beta.clone();
    without_name.as_object_mut().unwrap().remove("name");
    assert_eq!(without_name, on_disk);
    assert_eq!(beta["status"], "auth_retrying");
    assert_eq!(beta["token"]["state"], "transient_backoff");
    assert_eq!(beta["token"]["last_error"]["http_status"], 403);
    assert_eq!(all[4]["token"]["last_error"]["error_code"], "invalid_grant");
}

#[test]
fn a_name_selects_one_workload() {
    let dir = healthy_dir();
    write(dir.path(), "zulu", &unauthenticated());

    // Only that workload counts for the exit code.
    let r = status(dir.path(), &["alpha"]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(r.stdout.lines().count(), 2, "{r:#?}");
    assert!(line(&r, "alpha").contains("running"), "{r:#?}");

    let r = status(dir.path(), &["zulu", "--json"]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    let v = r.json();
    assert!(v.is_object(), "{r:#?}");
    assert_eq!(v["name"], "zulu");
    assert_eq!(v["status"], "unauthenticated");
}

#[test]
fn long_errors_are_cut_in_the_table_but_not_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("HTTP 403 text/html: {}", "x".repeat(250));
    write(dir.path(), "long", &retrying(Duration::from_secs(5), &long));
    let r = status(dir.path(), &[]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    let l = line(&r, "long");
    assert!(l.ends_with('…'), "{l}");
    assert!(!l.contains(&long), "{l}");
    let r = status(dir.path(), &["--json"]);
    assert_eq!(r.json()[0]["token"]["last_error"]["summary"], long.as_str());
}

#[test]
fn usage_errors_exit_2() {
    let dir = healthy_dir();

    let r = status(dir.path(), &["nosuch"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("unknown workload nosuch"), "{r:#?}");
    assert!(r.stdout.is_empty(), "{r:#?}");

    let r = status(dir.path(), &["../etc/passwd"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("invalid workload name"), "{r:#?}");

    let missing = dir.path().join("missing");
    let r = status(&missing, &[]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("does not exist"), "{r:#?}");
    assert!(r.stderr.contains(missing.to_str().unwrap()), "{r:#?}");

    let file = dir.path().join("alpha.json");
    let r = status(&file, &[]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("not a directory"), "{r:#?}");

    let r = run(&["status", "--bogus"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
}

#[test]
fn an_empty_directory_lists_nothing_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let r = status(dir.path(), &[]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(r.stdout.is_empty(), "{r:#?}");
    assert!(r.stderr.contains("no status files"), "{r:#?}");
    let r = status(dir.path(), &["--json"]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(r.json(), serde_json::json!([]));
}

#[test]
fn the_default_directory_follows_xdg_data_home_then_home() {
    let data = tempfile::tempdir().unwrap();
    let statuses = data.path().join("tokenvisor").join("statuses");
    std::fs::create_dir_all(&statuses).unwrap();
    write(&statuses, "alpha", &running(Duration::from_secs(60)));

    let r = run_cmd(
        tokenvisor()
            .args(["status", "--json"])
            .env("XDG_DATA_HOME", data.path())
            .env("HOME", "/nonexistent"),
    );
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(r.json()[0]["name"], "alpha");

    let home = tempfile::tempdir().unwrap();
    let statuses = home.path().join(".local/share/tokenvisor/statuses");
    std::fs::create_dir_all(&statuses).unwrap();
    write(&statuses, "beta", &running(Duration::from_secs(60)));
    let r = run_cmd(
        tokenvisor()
            .args(["status", "--json"])
            .env_remove("XDG_DATA_HOME")
            .env("HOME", home.path()),
    );
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(r.json()[0]["name"], "beta");

    let r = run_cmd(
        tokenvisor()
            .arg("status")
            .env_remove("XDG_DATA_HOME")
            .env_remove("HOME"),
    );
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("--dir"), "{r:#?}");
}

/// Without --dir or --config, `status` reads the configuration's default status directory:
/// $XDG_DATA_HOME (when absolute), else $HOME/.local/share.
#[test]
fn default_dir_follows_xdg_then_home() {
    use std::path::PathBuf;
    let env = |xdg: Option<&'static str>, home: Option<&'static str>| {
        move |var: &str| match var {
            "XDG_DATA_HOME" => xdg.map(str::to_owned),
            "HOME" => home.map(str::to_owned),
            _ => None,
        }
    };
    let dir = tokenvisor::config::default_status_dir;
    assert_eq!(
        dir(&env(Some("/x"), Some("/h"))),
        Some(PathBuf::from("/x/tokenvisor/statuses"))
    );
    assert_eq!(
        dir(&env(Some("rel"), Some("/h"))),
        Some(PathBuf::from("/h/.local/share/tokenvisor/statuses"))
    );
    assert_eq!(
        dir(&env(Some(""), Some("/h"))),
        Some(PathBuf::from("/h/.local/share/tokenvisor/statuses"))
    );
    assert_eq!(dir(&env(None, None)), None);
}
