//! `tokenvisor check-config`: 0 and the masked settings for a valid file; 1 and every
//! problem (naming file and key) for an invalid one; 2 for usage errors.

use std::path::{Path, PathBuf};

use crate::common::{Run, run};

const CLIENT_SECRET: &str = "cs-SUPER-secret-0001";
const REFRESH_TOKEN: &str = "rt-SUPER-refresh-0002";
const INLINE_SECRET: &str = "inline-SUPER-secret-0003";

/// A directory with a client secret file and a refresh token file.
fn dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("client.secret"),
        format!("{CLIENT_SECRET}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("github.rt"), format!("{REFRESH_TOKEN}\n")).unwrap();
    dir
}

fn valid_toml() -> String {
    format!(
        r#"
[service]
status_dir = "statuses"
admin_listen = "off"

[defaults]
request_timeout = "10s"

[[workload]]
name = "github-mcp"
token_url = "https://idp.example.com/oauth/token"
client_id = "tokenvisor"
client_secret_file = "client.secret"
grant = "refresh_token"
refresh_token_file = "github.rt"
scopes = ["repo"]

[[workload]]
name = "inline"
token_url = "https://idp.example.com/oauth/token"
client_id = "other"
client_secret = "{INLINE_SECRET}"
auth_method = "post"
grant = "client_credentials"
"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn check(path: &Path) -> Run {
    run(&["check-config", path.to_str().unwrap()])
}

fn assert_no_secrets(r: &Run) {
    let all = r.all();
    for s in [CLIENT_SECRET, REFRESH_TOKEN, INLINE_SECRET] {
        assert!(!all.contains(s), "a secret leaked: {r:#?}");
    }
}

/// Asserts exit 1 and a stderr line naming the file and the key.
fn assert_invalid(r: &Run, file: &Path, key: &str, reason: &str) {
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(r.stdout.is_empty(), "{r:#?}");
    let file = file.to_str().unwrap();
    let found = r
        .stderr
        .lines()
        .any(|l| l.starts_with(file) && l.contains(key) && l.to_lowercase().contains(reason));
    assert!(found, "no line naming {file}, {key} and {reason:?}: {r:#?}");
    assert_no_secrets(r);
}

#[test]
fn a_valid_file_prints_the_workloads_with_secrets_masked() {
    let d = dir();
    let path = write(d.path(), "tokenvisor.toml", &valid_toml());
    let r = check(&path);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_no_secrets(&r);
    assert!(r.stdout.contains("valid"), "{r:#?}");
    assert!(r.stdout.contains("name = \"github-mcp\""), "{r:#?}");
    assert!(r.stdout.contains("name = \"inline\""), "{r:#?}");
    assert!(r.stdout.contains("client_secret = \"…\""), "{r:#?}");
    assert!(r.stdout.contains("refresh_token = \"…\""), "{r:#?}");
    assert!(r.stdout.contains("request_timeout = \"10s\""), "{r:#?}");

    // `--config FILE` is the same as FILE.
    let r2 = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(r2.code, Some(0), "{r2:#?}");
    assert_eq!(r2.stdout, r.stdout);
}

#[test]
fn malformed_toml_exits_1() {
    let d = dir();
    let path = write(d.path(), "bad.toml", "[service\nstatus_dir = \"x\"\n");
    let r = check(&path);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(r.stderr.starts_with(path.to_str().unwrap()), "{r:#?}");
    assert!(r.stderr.to_lowercase().contains("toml"), "{r:#?}");
}

#[test]
fn an_unknown_key_exits_1_naming_file_and_key() {
    let d = dir();
    let text = valid_toml().replace("scopes = [\"repo\"]", "scopez = [\"repo\"]");
    let path = write(d.path(), "typo.toml", &text);
    let r = check(&path);
    assert_invalid(&r, &path, "workload[0].scopez", "unknown key");
}

#[test]
fn a_missing_secret_file_exits_1_naming_file_and_key() {
    let d = dir();
    let text = valid_toml().replace("client.secret", "nosuch.secret");
    let path = write(d.path(), "nosecret.toml", &text);
    let r = check(&path);
    assert_invalid(&r, &path, "workload[0].client_secret_file", "nosuch.secret");
}

#[test]
fn a_bad_name_exits_1_naming_file_and_key() {
    let d = dir();
    let text = valid_toml().replace("\"github-mcp\"", "\"github/mcp\"");
    let path = write(d.path(), "badname.toml", &text);
    let r = check(&path);
    assert_invalid(&r, &path, "workload[0].name", "name");
}

#[test]
fn a_bad_duration_exits_1_naming_file_and_key() {
    let d = dir();
    let text = valid_toml().replace("\"10s\"", "\"forever\"");
    let path = write(d.path(), "badduration.toml", &text);
    let r = check(&path);
    assert_invalid(&r, &path, "defaults.request_timeout", "duration");
}

#[test]
fn every_problem_is_listed() {
    let d = dir();
    let text = valid_toml()
        .replace("\"10s\"", "\"forever\"")
        .replace("\"github-mcp\"", "\"github/mcp\"")
        .replace("scopes = [\"repo\"]", "scopez = [\"repo\"]");
    let path = write(d.path(), "all.toml", &text);
    let r = check(&path);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert_no_secrets(&r);
    for key in [
        "defaults.request_timeout",
        "workload[0].name",
        "workload[0].scopez",
    ] {
        assert!(r.stderr.contains(key), "{key} missing: {r:#?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let d = dir();
    let r = check(&d.path().join("missing.toml"));
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("missing.toml"), "{r:#?}");

    let r = run(&["check-config"]);
    assert_eq!(r.code, Some(2), "{r:#?}");

    let path = write(d.path(), "ok.toml", &valid_toml());
    let p = path.to_str().unwrap();
    let r = run(&["check-config", p, "--config", p]);
    assert_eq!(r.code, Some(2), "{r:#?}");
}
