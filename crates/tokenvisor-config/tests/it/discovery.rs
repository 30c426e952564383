//! `issuer` (discovery instead of `token_url`) and `extra_params`: each resolves, from
//! `[defaults]` or a workload, each mistake names FILE:LINE: KEY: reason, and the masked
//! listing shows every provider key without a file's contents or a value in full.

use tokenvisor_config::ConfigError;

/// A `client_credentials` workload with `extra` keys (and no `token_url`), after a
/// `[defaults]` of `defaults`.
fn parse(defaults: &str, extra: &str) -> Result<tokenvisor_config::Config, ConfigError> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("creds"), "proxy-user:proxy-pass-5ecret\n").unwrap();
    std::fs::write(dir.join("client.secret"), "s3cret-value\n").unwrap();
    let text = format!(
        "[defaults]\n{defaults}\n[[workload]]\nname = \"app\"\nclient_id = \"app\"\n\
         client_secret_file = \"client.secret\"\ngrant = \"client_credentials\"\n{extra}\n"
    );
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
fn an_issuer_replaces_the_token_url_from_defaults_or_the_workload() {
    let c =
        parse("issuer = \"https://idp.example.com/tenant\"", "").unwrap_or_else(|e| panic!("{e}"));
    let w = &c.workloads[0];
    let issuer = w
        .policy
        .provider
        .issuer
        .as_ref()
        .expect("the defaults' issuer");
    assert_eq!(issuer.as_str(), "https://idp.example.com/tenant");
    assert_eq!(
        w.token_url.expose(),
        "https://idp.example.com/tenant",
        "the endpoint identity"
    );

    // a workload's token_url wins over the defaults' issuer
    let c = parse(
        "issuer = \"https://idp.example.com\"",
        "token_url = \"https://other.example.com/token\"",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let w = &c.workloads[0];
    assert_eq!(w.policy.provider.issuer, None);
    assert_eq!(w.token_url.expose(), "https://other.example.com/token");

    let c = parse("", "issuer = \"http://127.0.0.1:8080\"").unwrap_or_else(|e| panic!("{e}"));
    assert!(c.workloads[0].policy.provider.issuer.is_some());
}

#[test]
fn issuer_mistakes_name_file_line_and_key() {
    let w = "workload[0]";
    // lines: 1 [defaults], 2 the defaults' key, 3 [[workload]] … 8 the first extra key
    problem(
        "",
        "issuer = \"https://idp.example.com\"\ntoken_url = \"https://idp.example.com/token\"",
        &format!("{w}.token_url"),
        9,
        "and issuer are both set",
    );
    problem(
        "",
        "issuer = \"http://idp.example.com\"",
        &format!("{w}.issuer"),
        8,
        "must be an https URL",
    );
    problem(
        "issuer = \"https://idp.example.com/?x=1\"",
        "",
        "defaults.issuer",
        2,
        "no user:password, query",
    );
    problem(
        "",
        "",
        &format!("{w}.token_url"),
        3,
        "or issuer, to discover it",
    );
}

#[test]
fn extra_params_merge_over_defaults_and_refuse_what_tokenvisor_sets() {
    let c = parse(
        "extra_params = { tenant = \"contoso\", prompt = \"none\" }",
        "extra_params = { prompt = \"login\", acr_values = \"mfa\" }\ntoken_url = \"https://idp.example.com/token\"",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = &c.workloads[0].policy.provider;
    let got: Vec<(&str, &str)> = p
        .extra_params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("acr_values", "mfa"),
            ("prompt", "login"),
            ("tenant", "contoso")
        ]
    );

    let w = "workload[0]";
    let url = "\ntoken_url = \"https://idp.example.com/token\"";
    for (name, why) in [
        ("grant_type", "set by grant"),
        ("refresh_token", "cannot be overridden"),
        ("client_id", "set by client_id"),
        ("client_secret", "cannot be overridden"),
        ("client_assertion", "set by auth_method"),
        ("scope", "use scopes"),
        ("resource", "use resource"),
        ("subject_token", "token_exchange"),
    ] {
        problem(
            "",
            &format!("extra_params = {{ {name} = \"x\" }}{url}"),
            &format!("{w}.extra_params.{name}"),
            8,
            why,
        );
    }
    problem(
        "[defaults.extra_params]\n\"a b\" = \"x\"",
        url,
        "defaults.extra_params.a b",
        3,
        "printable ASCII without spaces",
    );
    problem(
        "",
        &format!("extra_params = {{ t = \"a\\nb\" }}{url}"),
        &format!("{w}.extra_params.t"),
        8,
        "control characters",
    );
}

#[test]
fn the_masked_listing_shows_every_provider_key_and_no_content() {
    let c = parse(
        "extra_params = { tenant = \"contoso-long-value\" }",
        "issuer = \"https://idp.example.com\"\nproxy = \"http://127.0.0.1:3128\"\n\
         proxy_credentials_file = \"creds\"\nno_proxy = \"localhost\"",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = c.describe_masked();
    for want in [
        "issuer = \"https://idp.example.com\"",
        "# token_url: discovered from issuer",
        "proxy = \"http://127.0.0.1:3128\"",
        "no_proxy = \"localhost\"",
        "# client_key_file: not set",
        "ca_only = false",
        "extra_params = {\"tenant\" = \"cont…\"}",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("proxy_credentials_file = ")
                && l.contains("creds\"  # user:password, not shown")),
        "{out}"
    );
    for secret in ["proxy-pass-5ecret", "contoso-long-value", "s3cret-value"] {
        assert!(!out.contains(secret), "{secret} shown:\n{out}");
    }
}
