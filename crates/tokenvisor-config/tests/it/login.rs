//! The keys of `tokenvisor login` (`authorization_url`, `device_authorization_url`,
//! `redirect_port`, `login_scopes`) and [`tokenvisor_config::load_for_login`].

use std::path::{Path, PathBuf};

use tokenvisor_config::spec::GrantSpec;
use tokenvisor_config::{self as config, Config, ConfigError};

const BASE: &str = r#"
[[workload]]
name = "app"
token_url = "https://idp.example.com/token"
client_id = "app"
client_secret = "s3cret-value"
grant = "refresh_token"
refresh_token_file = "app.rt"
"#;

fn parse(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    config::parse(text, &dir.join("tokenvisor.toml"), &|v| {
        (v == "HOME").then(|| "/home/op".to_owned())
    })
}

fn with_rt(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(dir.join("app.rt"), "rt-value\n").unwrap();
    std::fs::set_permissions(dir.join("app.rt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    dir.join("app.rt")
}

/// Every key resolved; unset, none (port 0 = any, scopes = the workload's).
#[test]
fn login_keys_resolve() {
    let dir = tempfile::tempdir().unwrap();
    with_rt(dir.path());
    let c = parse(dir.path(), BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.workloads[0].login, config::login::LoginSpec::default());
    let text = format!(
        "{BASE}authorization_url = \"https://idp.example.com/authorize?tenant=t1\"\n\
         device_authorization_url = \"http://127.0.0.1:9/device\"\n\
         redirect_port = 8400\nlogin_scopes = [\"openid\", \"offline_access\"]\n"
    );
    let c = parse(dir.path(), &text).unwrap_or_else(|e| panic!("{e}"));
    let l = &c.workloads[0].login;
    assert_eq!(
        l.authorization_url
            .as_ref()
            .map(tokenvisor_core::TokenUrl::expose),
        Some("https://idp.example.com/authorize?tenant=t1")
    );
    assert_eq!(
        l.device_authorization_url
            .as_ref()
            .map(tokenvisor_core::TokenUrl::expose),
        Some("http://127.0.0.1:9/device")
    );
    assert_eq!(l.redirect_port, 8400);
    assert_eq!(
        l.login_scopes.as_deref(),
        Some(&["openid".to_owned(), "offline_access".to_owned()][..])
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warning_lines());
}

/// Bad values name FILE:LINE: KEY: reason.
#[test]
fn bad_login_keys_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    with_rt(dir.path());
    let table = [
        (
            "authorization_url = \"ftp://idp/authorize\"",
            "authorization_url",
            "http",
        ),
        (
            "authorization_url = \"https://u:p@idp/a\"",
            "authorization_url",
            "credentials",
        ),
        (
            "device_authorization_url = \"https://idp/d#x\"",
            "device_authorization_url",
            "fragment",
        ),
        ("redirect_port = 70000", "redirect_port", "0 to 65535"),
        ("redirect_port = -1", "redirect_port", "0 to 65535"),
        ("login_scopes = [\"a b\"]", "login_scopes[0]", "scope token"),
    ];
    for (line, key, reason) in table {
        let text = format!("{BASE}{line}\n");
        let err = parse(dir.path(), &text).expect_err(line);
        let at = text.lines().position(|l| l == line).unwrap() + 1;
        let expected = format!(
            "{}:{at}: workload[0].{key}: ",
            dir.path().join("tokenvisor.toml").display()
        );
        let rendered = err.to_string();
        assert!(
            rendered
                .lines()
                .any(|l| l.starts_with(&expected) && l.contains(reason)),
            "{line}: expected {expected:?} … {reason:?} in:\n{rendered}"
        );
    }
}

/// Plain http to a remote host, and login keys on a client_credentials workload, warn.
#[test]
fn login_keys_warn_where_they_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    with_rt(dir.path());
    let text = format!("{BASE}authorization_url = \"http://idp.example.com/authorize\"\n");
    let c = parse(dir.path(), &text).unwrap_or_else(|e| panic!("{e}"));
    let w = c.warning_lines().join("\n");
    assert!(
        w.contains("workload[0].authorization_url: warning: http:// to idp.example.com"),
        "{w}"
    );
    let cc = r#"
[[workload]]
name = "m2m"
token_url = "https://idp.example.com/token"
client_id = "m2m"
client_secret = "s3cret-value"
grant = "client_credentials"
redirect_port = 8400
"#;
    let c = parse(dir.path(), cc).unwrap_or_else(|e| panic!("{e}"));
    let w = c.warning_lines().join("\n");
    assert!(
        w.contains("workload[0].redirect_port: warning: only a grant = \"refresh_token\""),
        "{w}"
    );
}

/// `load_for_login` needs no refresh-token file (it is what login creates); `load` still
/// does. The spec keeps the file's path, and an empty token.
#[test]
fn load_for_login_reads_no_refresh_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenvisor.toml");
    std::fs::write(&path, BASE).unwrap();
    let err = config::load(&path).expect_err("the refresh-token file is missing");
    assert!(err.to_string().contains("refresh_token_file"), "{err}");
    let c = config::load_for_login(&path).unwrap_or_else(|e| panic!("{e}"));
    match &c.workloads[0].grant {
        GrantSpec::RefreshToken { token, file } => {
            assert_eq!(file.as_deref(), Some(dir.path().join("app.rt").as_path()));
            assert_eq!(token.expose(), "");
        }
        other @ (GrantSpec::ClientCredentials
        | GrantSpec::JwtBearer { .. }
        | GrantSpec::TokenExchange(_)) => panic!("{other:?}"),
    }
    // every other rule still holds
    std::fs::write(&path, format!("{BASE}redirect_port = 70000\n")).unwrap();
    let err = config::load_for_login(&path).expect_err("bad port");
    assert!(err.to_string().contains("redirect_port"), "{err}");
}

/// `check-config`'s listing shows the login keys of a workload that logs in (its URLs
/// redacted like `token_url`), and none for a workload that cannot log in.
#[test]
fn the_masked_listing_shows_the_login_keys() {
    let dir = tempfile::tempdir().unwrap();
    with_rt(dir.path());
    let text = format!(
        "{BASE}authorization_url = \"https://idp.example.com/authorize?tenant=t1\"\n\
         redirect_port = 8400\nlogin_scopes = [\"openid\", \"offline_access\"]\n\
         \n[[workload]]\nname = \"cc\"\ntoken_url = \"https://idp.example.com/token\"\n\
         client_id = \"cc\"\nclient_secret = \"s3cret-value\"\ngrant = \"client_credentials\"\n"
    );
    let out = parse(dir.path(), &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .describe_masked();
    assert!(
        out.contains("authorization_url = \"https://idp.example.com/authorize?tenant="),
        "{out}"
    );
    assert!(
        !out.contains("tenant=t1"),
        "query values are redacted: {out}"
    );
    assert!(out.contains("# device_authorization_url: not set"), "{out}");
    assert!(out.contains("redirect_port = 8400"), "{out}");
    assert!(
        out.contains("login_scopes = [\"openid\", \"offline_access\"]"),
        "{out}"
    );
    assert_eq!(out.matches("redirect_port").count(), 1, "{out}");
}
