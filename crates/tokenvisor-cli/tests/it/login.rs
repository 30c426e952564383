//! `tokenvisor login`'s usage errors, before any request: each names what to do, exit 2.
//! (The flows themselves run against a real provider: real/tests-rs/tests/real/login.rs.)

use std::path::Path;

use crate::common::run;

/// A configuration with a refresh_token workload `app` (login keys as given, its
/// refresh-token file absent: login must not need it) and a client_credentials one.
fn config(dir: &Path, login_keys: &str) -> String {
    let text = format!(
        r#"[service]
status_dir = "{dir}/statuses"
state_dir = "{dir}/state"
admin_listen = "off"

[[workload]]
name = "app"
token_url = "http://127.0.0.1:9/token"
client_id = "app"
client_secret = "s3cret-value"
grant = "refresh_token"
refresh_token_file = "app.rt"
{login_keys}

[[workload]]
name = "m2m"
token_url = "http://127.0.0.1:9/token"
client_id = "m2m"
client_secret = "s3cret-value"
grant = "client_credentials"
"#,
        dir = dir.display()
    );
    let path = dir.join("tokenvisor.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Each usage error: exit 2, and the message says what to change.
#[test]
fn usage_errors_name_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let plain = config(dir.path(), "");
    let missing = dir.path().join("nope.toml");
    let missing = missing.to_string_lossy();
    let table: [(&[&str], &str); 6] = [
        (&["login", "app", "-c", &missing], "no such file"),
        (&["login", "ghost", "-c", &plain], "no workload \"ghost\""),
        (&["login", "m2m", "-c", &plain], "client_credentials"),
        (&["login", "app", "-c", &plain], "set authorization_url"),
        (
            &["login", "app", "-c", &plain, "--device"],
            "set device_authorization_url",
        ),
        (
            &["login", "app", "-c", &plain, "--timeout", "0s"],
            "more than 0s",
        ),
    ];
    for (args, expected) in table {
        let r = run(args);
        assert_eq!(r.code, Some(2), "{args:?}: {r:#?}");
        assert!(
            r.stderr.contains(expected),
            "{args:?}: {expected:?} in {r:#?}"
        );
    }
    // login needs a configuration
    let r = run(&["login", "app"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
}

/// An invalid configuration is the configuration's problem (exit 1, FILE:LINE: KEY).
#[test]
fn an_invalid_login_key_is_a_configuration_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "redirect_port = 70000");
    let r = run(&["login", "app", "-c", &path]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(r.stderr.contains("workload[0].redirect_port"), "{r:#?}");
}

/// A provider that cannot be reached: the device authorization request fails, reported
/// with exit 1 and no file written.
#[test]
fn an_unreachable_provider_fails_the_device_login() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = config(
        dir.path(),
        &format!("device_authorization_url = \"http://127.0.0.1:{port}/device\""),
    );
    let r = run(&["login", "app", "-c", &path, "--device"]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(
        r.stderr.contains("the device authorization request failed"),
        "{r:#?}"
    );
    assert!(!dir.path().join("app.rt").exists());
}
