//! The resolved spec types are plain data an embedder builds in code, without a TOML file:
//! their defaults, what they map to (the machine's and the classifier's settings), that a
//! secret in them never prints, and the two value rules shared with the command line.

use std::time::Duration;

use tokenvisor_core::spec::{
    AuthMethod, GrantSpec, RESERVED_PARAMS, SecretOrigin, WorkloadSpec, extra_param, proxy_url,
};
use tokenvisor_core::{Secret, TokenUrl, WorkloadName};

fn spec() -> WorkloadSpec {
    let name = WorkloadName::new("app").expect("name");
    let url = TokenUrl::parse("https://idp.example.com/token").expect("url");
    let grant = GrantSpec::RefreshToken {
        token: Secret::from("rt-5ecret"),
        file: None,
    };
    WorkloadSpec::new(name, url, "app", grant).with_client_secret("cs-5ecret")
}

#[test]
fn a_spec_built_in_code_has_the_documented_defaults() {
    let s = spec();
    assert_eq!(s.auth_method, AuthMethod::Basic);
    assert_eq!(s.client_secret_origin, Some(SecretOrigin::Inline));
    let p = &s.policy;
    assert_eq!(
        (p.request_timeout, p.connect_timeout, p.endpoint_concurrency),
        (Duration::from_secs(30), Duration::from_secs(5), 64)
    );
    // The attempt backstop is request + connect + 5 s; a hold may take what is left less 1 s.
    assert_eq!(p.machine_config().attempt_timeout, Duration::from_secs(40));
    assert_eq!(p.hold_wait_budget(), Duration::from_secs(4));
    assert_eq!(
        p.classify_policy().default_lifetime,
        Duration::from_secs(3600)
    );
    assert_eq!(
        (s.grant.as_str(), s.grant.presents_platform_token()),
        ("refresh_token", false)
    );
}

#[test]
fn a_spec_never_prints_its_secrets() {
    let shown = format!("{:?}", spec());
    for secret in ["rt-5ecret", "cs-5ecret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn auth_method_names() {
    let table = [
        (AuthMethod::Basic, "basic", "client_secret_basic", true),
        (AuthMethod::Post, "post", "client_secret_post", true),
        (
            AuthMethod::PrivateKeyJwt,
            "private_key_jwt",
            "private_key_jwt",
            false,
        ),
        (
            AuthMethod::ClientSecretJwt,
            "client_secret_jwt",
            "client_secret_jwt",
            true,
        ),
        (
            AuthMethod::TlsClientAuth,
            "tls_client_auth",
            "tls_client_auth",
            false,
        ),
    ];
    for (m, name, registered, secret) in table {
        assert_eq!(
            (m.as_str(), m.registered_name(), m.uses_secret()),
            (name, registered, secret)
        );
    }
}

#[test]
fn extra_params_refuse_what_tokenvisor_sets() {
    for (name, _) in RESERVED_PARAMS {
        let why = extra_param(name, "x").expect_err(name);
        assert!(why.contains("cannot be overridden"), "{why}");
    }
    assert_eq!(extra_param("tenant", "contoso"), Ok(()));
    for (name, value) in [("", "x"), ("a b", "x"), ("a=b", "x"), ("t", "a\nb")] {
        assert!(extra_param(name, value).is_err(), "{name:?} = {value:?}");
    }
}

#[test]
fn a_proxy_is_an_http_url_without_credentials() {
    assert!(proxy_url("http://127.0.0.1:3128").is_ok());
    assert!(proxy_url("https://proxy.example.com").is_ok());
    for bad in ["socks5://h:1", "http://u:p@h:1", "not a url", "http://"] {
        assert!(proxy_url(bad).is_err(), "{bad}");
    }
}
