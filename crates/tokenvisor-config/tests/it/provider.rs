//! The provider keys (client keys and certificates, roots, proxy): each resolves, from
//! `[defaults]` or a workload, and each mistake names FILE:LINE: KEY: reason.

use std::path::{Path, PathBuf};

use tokenvisor_config::ConfigError;
use tokenvisor_config::spec::{AssertionAlg, AuthMethod};

/// The test keys (shared with the runtime's tests).
fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tokenvisor/tests/fixtures/keys")
}

/// A workload of `client_credentials` with `extra` keys, after a `[defaults]` of `defaults`,
/// in a directory holding a client secret, a CA file and the test keys.
fn parse(defaults: &str, extra: &str) -> Result<tokenvisor_config::Config, ConfigError> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("client.secret"), "s3cret-value\n").unwrap();
    std::fs::write(dir.join("creds"), "proxy-user:proxy-pass\n").unwrap();
    let keys = keys().display().to_string();
    let text = format!(
        "[defaults]\n{defaults}\n[[workload]]\nname = \"app\"\ntoken_url = \"https://idp.example.com/token\"\n\
         client_id = \"app\"\ngrant = \"client_credentials\"\n{extra}\n"
    )
    .replace("KEYS", &keys);
    let home = |k: &str| (k == "HOME").then(|| "/home/tv".to_owned());
    tokenvisor_config::parse(&text, &dir.join("tv.toml"), &home)
}

#[track_caller]
fn problem(defaults: &str, extra: &str, key: &str, line: usize, reason: &str) {
    let err = parse(defaults, extra).expect_err("a problem");
    let rendered = err.to_string();
    let prefix = format!("{}:{line}: {key}: ", err.file().display());
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(reason)),
        "no line {prefix}…{reason}… in:\n{rendered}"
    );
}

#[test]
fn private_key_jwt_resolves_from_defaults_and_the_workload() {
    let c = parse(
        "client_key_file = \"KEYS/ec384.pem\"\nclient_key_id = \"k1\"",
        "auth_method = \"private_key_jwt\"\nclient_assertion_audience = \"https://idp.example.com\"",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let w = &c.workloads[0];
    assert_eq!(w.auth_method, AuthMethod::PrivateKeyJwt);
    let p = &w.policy.provider;
    assert_eq!(
        p.client_key_file.as_deref(),
        Some(&*keys().join("ec384.pem").components().collect::<PathBuf>())
    );
    assert_eq!(p.client_key_id.as_deref(), Some("k1"));
    assert_eq!(
        p.client_assertion_audience.as_deref(),
        Some("https://idp.example.com")
    );
    assert_eq!(p.client_assertion_alg, None);
    assert_eq!(w.client_secret, None, "no secret needed");
}

#[test]
fn every_setting_resolves() {
    let c = parse(
        "",
        "auth_method = \"tls_client_auth\"\nclient_key_file = \"KEYS/rsa.pem\"\nclient_cert_file = \"KEYS/cert.pem\"\n\
         ca_file = \"KEYS/cert.pem\"\nca_only = true\nproxy = \"http://127.0.0.1:3128\"\n\
         proxy_credentials_file = \"creds\"\nno_proxy = \"localhost,.internal\"\nclient_assertion_alg = \"PS256\"",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = &c.workloads[0].policy.provider;
    assert!(p.ca_only);
    assert_eq!(p.proxy.as_deref(), Some("http://127.0.0.1:3128"));
    assert_eq!(p.no_proxy.as_deref(), Some("localhost,.internal"));
    assert_eq!(p.client_assertion_alg, Some(AssertionAlg::PS256));
    assert!(
        p.proxy_credentials_file
            .as_ref()
            .is_some_and(|f| f.ends_with("creds"))
    );
}

#[test]
fn each_mistake_names_file_line_and_key() {
    let w = "workload[0]";
    // lines: 1 [defaults], 2 the defaults' key, 3 [[workload]] … 8 the first extra key
    problem(
        "client_key_file = \"KEYS/ec-sec1.pem\"",
        "",
        "defaults.client_key_file",
        2,
        "PKCS#8",
    );
    problem(
        "client_key_file = \"KEYS/none.pem\"",
        "",
        "defaults.client_key_file",
        2,
        "cannot read",
    );
    problem(
        "",
        "client_key_file = \"KEYS/rsa.pub.pem\"",
        &format!("{w}.client_key_file"),
        8,
        "not a supported PEM private key",
    );
    problem(
        "",
        "auth_method = \"private_key_jwt\"",
        &format!("{w}.auth_method"),
        8,
        "needs client_key_file",
    );
    problem(
        "client_key_file = \"KEYS/ec256.pem\"",
        "auth_method = \"private_key_jwt\"\nclient_assertion_alg = \"RS256\"",
        &format!("{w}.auth_method"),
        8,
        "does not fit client_key_file's key",
    );
    problem(
        "",
        "auth_method = \"client_secret_jwt\"",
        &format!("{w}.auth_method"),
        8,
        "needs a client secret",
    );
    problem(
        "",
        "client_secret_file = \"client.secret\"\nauth_method = \"client_secret_jwt\"\nclient_assertion_alg = \"ES256\"",
        &format!("{w}.auth_method"),
        9,
        "signs with HS256",
    );
    problem(
        "",
        "auth_method = \"self_signed_tls_client_auth\"\nclient_key_file = \"KEYS/rsa.pem\"",
        &format!("{w}.auth_method"),
        8,
        "needs client_cert_file and client_key_file",
    );
    problem(
        "",
        "client_cert_file = \"KEYS/rsa.pem\"",
        &format!("{w}.client_cert_file"),
        8,
        "no PEM certificate",
    );
    problem(
        "ca_file = \"creds\"",
        "",
        "defaults.ca_file",
        2,
        "no PEM certificate",
    );
    problem(
        "ca_only = true",
        "",
        &format!("{w}.ca_only"),
        3,
        "needs ca_file",
    );
    problem(
        "",
        "proxy = \"http://u:p@proxy:3128\"",
        &format!("{w}.proxy"),
        8,
        "no credentials",
    );
    problem(
        "",
        "proxy = \"socks5://proxy:1080\"",
        &format!("{w}.proxy"),
        8,
        "http:// or https://",
    );
    problem(
        "no_proxy = \"localhost\"",
        "",
        &format!("{w}.proxy"),
        3,
        "apply to proxy",
    );
    problem(
        "proxy = \"http://p:1\"\nproxy_credentials_file = \"client.secret\"",
        "",
        "defaults.proxy_credentials_file",
        3,
        "user:password",
    );
    problem(
        "client_assertion_alg = \"HS512\"",
        "",
        "defaults.client_assertion_alg",
        2,
        "unknown variant",
    );
}

/// config/tokenvisor.toml shows every provider key, and docs/PROVIDERS.md names each.
#[test]
fn the_reference_shows_every_provider_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = std::fs::read_to_string(root.join("config/tokenvisor.toml")).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/PROVIDERS.md")).unwrap();
    for key in [
        "client_key_file",
        "client_key_id",
        "client_assertion_alg",
        "client_assertion_audience",
        "client_cert_file",
        "ca_file",
        "ca_only",
        "proxy",
        "proxy_credentials_file",
        "no_proxy",
    ] {
        let shown = (example.lines()).any(|l| {
            l.trim_start_matches(['#', ' '])
                .starts_with(&format!("{key} ="))
        });
        assert!(shown, "config/tokenvisor.toml does not show `{key}`");
        assert!(
            doc.contains(&format!("`{key}`")),
            "docs/PROVIDERS.md does not name `{key}`"
        );
    }
}
