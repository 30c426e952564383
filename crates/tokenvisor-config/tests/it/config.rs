//! The TOML configuration: a full round trip, defaults, overrides, relative paths, the
//! documented example, and one test per validation rule (each checks that the message names
//! the file, the key, the line where it is known, and the reason).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenvisor_config::spec::{AuthMethod, GrantSpec, SecretOrigin, WorkloadPolicy};
use tokenvisor_config::{self as config, AdminListen, Config, ConfigError, LogFormat};
use tokenvisor_core::policy::{BackoffPolicy, RefreshSchedule};

const S: fn(u64) -> Duration = Duration::from_secs;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

/// A scratch directory with a few secret files, and the path a config in it would have.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("client.secret"), "s3cret-value\n").expect("write");
        std::fs::write(dir.path().join("app.rt"), "rt-value\n").expect("write");
        std::fs::write(dir.path().join("empty.secret"), "\n  \n").expect("write");
        std::fs::write(dir.path().join("admin.token"), "admin-token-16b+\n").expect("write");
        Scratch { dir }
    }

    fn source(&self) -> PathBuf {
        self.dir.path().join("tokenvisor.toml")
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        self.parse_env(text, &[("HOME", "/home/op"), ("APP_SECRET", "env-secret")])
    }

    fn parse_env(&self, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        config::parse(text, &self.source(), &env_of(env))
    }

    fn ok(&self, text: &str) -> Config {
        match self.parse(text) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    fn err(&self, text: &str) -> ConfigError {
        match self.parse(text) {
            Ok(c) => panic!("expected an error, got {c:#?}"),
            Err(e) => e,
        }
    }
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

/// Asserts that `err` has a problem at `key` (and `line`, when given) whose reason contains
/// `reason`, and that its rendering is `FILE:LINE: KEY: reason…`.
#[track_caller]
fn assert_problem(err: &ConfigError, key: &str, line: Option<usize>, reason: &str) {
    let rendered = err.to_string();
    let p = err
        .problems()
        .iter()
        .find(|p| p.key == key && p.reason.contains(reason))
        .unwrap_or_else(|| panic!("no problem at {key} containing {reason:?} in:\n{rendered}"));
    if let Some(line) = line {
        assert_eq!(p.line, Some(line), "line of {key} in:\n{rendered}");
    }
    let prefix = match p.line {
        Some(l) => format!("{}:{l}: {key}: ", err.file().display()),
        None => format!("{}: {key}: ", err.file().display()),
    };
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(reason)),
        "no line starting {prefix:?} in:\n{rendered}"
    );
}

/// A valid workload, to which tests add or change keys.
const BASE: &str = r#"
[[workload]]
name = "app"
token_url = "https://idp.example.com/token"
client_id = "app"
client_secret_file = "client.secret"
grant = "refresh_token"
refresh_token_file = "app.rt"
"#;

// -----------------------------------------------------------------------------------------
// Valid configurations

#[test]
fn full_config_round_trip() {
    let dir = fixtures();
    let source = dir.join("full.toml");
    let text = std::fs::read_to_string(&source).expect("read fixture");
    let env = env_of(&[("FIXTURE_MACHINE_SECRET", "machine-secret\n")]);
    let c = config::parse(&text, &source, &env).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(c.source, source);
    assert_eq!(c.service.status_dir, dir.join("statuses"));
    assert_eq!(
        c.service.admin_listen,
        AdminListen::Addr("[::1]:9090".parse::<SocketAddr>().expect("addr"))
    );
    assert!(c.service.admin_listen.is_loopback());
    assert_eq!(
        c.service.admin_token_file,
        Some(dir.join("secrets/admin.token"))
    );
    assert_eq!(c.service.log_format, LogFormat::Json);
    assert_eq!(c.service.log_level, "debug,tokenvisor=trace");

    let defaults = WorkloadPolicy {
        request_timeout: S(20),
        connect_timeout: S(3),
        schedule: RefreshSchedule {
            refresh_at: 0.75,
            refresh_jitter: 0.2,
        },
        default_lifetime: S(1800),
        backoff: BackoffPolicy {
            initial: S(2),
            max: S(300),
            multiplier: 3.0,
        },
        give_up_after: S(12 * 3600),
        max_retry_after: S(900),
        endpoint_concurrency: 16,
        transient_codes: vec!["busy".into()],
        permanent_codes: vec!["account_locked".into()],
        provider: Default::default(),
    };
    assert_eq!(c.defaults, defaults);
    assert_eq!(c.workloads.len(), 3);

    let full = &c.workloads[0];
    assert_eq!(full.name.as_str(), "full");
    assert_eq!(
        full.token_url.expose(),
        "https://idp.example.com/oauth/token"
    );
    assert_eq!(&*full.client_id, "full-client");
    assert_eq!(
        full.client_secret
            .as_ref()
            .map(tokenvisor_core::Secret::expose),
        Some("fixture-client-secret")
    );
    assert_eq!(
        full.client_secret_origin,
        Some(SecretOrigin::File(dir.join("secrets/client.secret")))
    );
    assert_eq!(full.auth_method, AuthMethod::Post);
    match &full.grant {
        GrantSpec::RefreshToken { token, file } => {
            assert_eq!(token.expose(), "fixture-refresh-token");
            assert_eq!(file.as_deref(), Some(&*dir.join("state/full.rt")));
        }
        GrantSpec::ClientCredentials
        | GrantSpec::JwtBearer { .. }
        | GrantSpec::TokenExchange(_) => {
            panic!("wrong grant")
        }
    }
    assert_eq!(full.token_sink_file, Some(dir.join("sink/full.token")));
    assert_eq!(&*full.scopes, ["repo".to_owned(), "read:org".to_owned()]);
    assert_eq!(full.resource.as_deref(), Some("https://mcp.example.com"));
    assert_eq!(full.audience.as_deref(), Some("mcp"));
    assert_eq!(
        full.policy,
        WorkloadPolicy {
            request_timeout: S(10),
            connect_timeout: S(1),
            schedule: RefreshSchedule {
                refresh_at: 0.5,
                refresh_jitter: 0.25,
            },
            default_lifetime: S(7200),
            backoff: BackoffPolicy {
                initial: S(1),
                max: S(60),
                multiplier: 1.5,
            },
            give_up_after: S(0),
            max_retry_after: S(30),
            endpoint_concurrency: 2,
            transient_codes: vec!["slow_down_please".into(), "try_later".into()],
            permanent_codes: vec![],
            provider: Default::default(),
        }
    );

    let inline = &c.workloads[1];
    assert_eq!(
        inline
            .client_secret
            .as_ref()
            .map(tokenvisor_core::Secret::expose),
        Some("inline-client-secret")
    );
    assert_eq!(inline.client_secret_origin, Some(SecretOrigin::Inline));
    assert_eq!(inline.auth_method, AuthMethod::Basic);
    match &inline.grant {
        GrantSpec::RefreshToken { token, file } => {
            assert_eq!(token.expose(), "inline-refresh-token");
            assert_eq!(*file, None);
        }
        GrantSpec::ClientCredentials
        | GrantSpec::JwtBearer { .. }
        | GrantSpec::TokenExchange(_) => {
            panic!("wrong grant")
        }
    }
    assert_eq!(inline.policy, defaults, "inherits every default");
    assert!(inline.scopes.is_empty() && inline.resource.is_none() && inline.audience.is_none());
    assert_eq!(inline.token_sink_file, None);

    let machine = &c.workloads[2];
    assert_eq!(machine.grant, GrantSpec::ClientCredentials);
    assert_eq!(
        machine
            .client_secret
            .as_ref()
            .map(tokenvisor_core::Secret::expose),
        Some("machine-secret"),
        "trailing newline trimmed"
    );
    assert_eq!(
        machine.client_secret_origin,
        Some(SecretOrigin::Env("FIXTURE_MACHINE_SECRET".into()))
    );
    assert_eq!(
        c.workload("machine").map(|w| &w.client_id),
        Some(&machine.client_id)
    );
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    let s = Scratch::new();
    let c = s
        .parse_env(BASE, &[("XDG_DATA_HOME", "/data"), ("HOME", "/home/op")])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.service.status_dir, Path::new("/data/tokenvisor/statuses"));
    assert_eq!(
        c.service.admin_listen,
        AdminListen::Addr(config::DEFAULT_ADMIN_LISTEN)
    );
    assert_eq!(c.service.admin_listen.to_string(), "127.0.0.1:7878");
    assert_eq!(c.service.admin_token_file, None);
    assert_eq!(c.service.log_format, LogFormat::Text);
    assert_eq!(c.service.log_level, "info");
    assert_eq!(c.defaults, WorkloadPolicy::default());

    let w = &c.workloads[0];
    assert_eq!(w.policy, WorkloadPolicy::default());
    assert_eq!(w.auth_method, AuthMethod::Basic);
    assert!(w.scopes.is_empty());
    // The documented defaults (config/tokenvisor.toml), spelled out.
    let p = &w.policy;
    assert_eq!(
        (p.request_timeout, p.connect_timeout, p.default_lifetime),
        (S(30), S(5), S(3600))
    );
    assert_eq!(
        (p.schedule.refresh_at, p.schedule.refresh_jitter),
        (0.8, 0.1)
    );
    assert_eq!(
        (p.backoff.initial, p.backoff.max, p.backoff.multiplier),
        (S(5), S(600), 2.0)
    );
    assert_eq!(
        (p.give_up_after, p.max_retry_after, p.endpoint_concurrency),
        (S(86_400), S(3600), 64)
    );
    assert!(p.transient_codes.is_empty() && p.permanent_codes.is_empty());
}

#[test]
fn status_dir_default_falls_back_to_home() {
    let s = Scratch::new();
    let home = |env: &[(&str, &str)]| {
        s.parse_env(BASE, env)
            .unwrap_or_else(|e| panic!("{e}"))
            .service
            .status_dir
    };
    let want = Path::new("/home/op/.local/share/tokenvisor/statuses");
    assert_eq!(home(&[("HOME", "/home/op")]), want);
    // An empty or relative XDG_DATA_HOME is ignored (XDG base directory spec).
    assert_eq!(home(&[("XDG_DATA_HOME", ""), ("HOME", "/home/op")]), want);
    assert_eq!(
        home(&[("XDG_DATA_HOME", "rel/data"), ("HOME", "/home/op")]),
        want
    );

    let err = s.parse_env(BASE, &[]).expect_err("no HOME");
    assert_problem(
        &err,
        "service.status_dir",
        None,
        "neither XDG_DATA_HOME nor HOME",
    );
}

#[test]
fn a_workload_overrides_a_default_for_itself_only() {
    let s = Scratch::new();
    let text = r#"
[defaults]
request_timeout = "10s"
transient_codes = ["busy"]
refresh_jitter = 0.3

[[workload]]
name = "a"
token_url = "https://idp.example.com/token"
client_id = "a"
client_secret = "x"
grant = "client_credentials"
request_timeout = "20s"
transient_codes = ["other"]
refresh_at = 0.5

[[workload]]
name = "b"
token_url = "https://idp.example.com/token"
client_id = "b"
client_secret = "x"
grant = "client_credentials"
"#;
    let c = s.ok(text);
    let (a, b) = (&c.workloads[0].policy, &c.workloads[1].policy);
    assert_eq!(a.request_timeout, S(20));
    assert_eq!(b.request_timeout, S(10));
    assert_eq!(
        a.transient_codes,
        ["other"],
        "a list is replaced, not merged"
    );
    assert_eq!(b.transient_codes, ["busy"]);
    assert_eq!(a.schedule.refresh_at, 0.5);
    assert_eq!(
        a.schedule.refresh_jitter, 0.3,
        "inherited next to an override"
    );
    assert_eq!(b.schedule.refresh_at, 0.8);
    assert_eq!(c.defaults.request_timeout, S(10));
    assert_eq!(a.connect_timeout, S(5), "built-in default");
}

/// Workloads that set no provider key share one provider section (one allocation for all of
/// them, not one each); a workload that sets one has its own.
#[test]
fn workloads_without_provider_keys_share_one_provider_section() {
    let s = Scratch::new();
    let text = r#"
[defaults]
proxy = "http://proxy.example.com:3128"

[[workload]]
name = "a"
token_url = "https://idp.example.com/token"
client_id = "a"
client_secret = "x"
grant = "client_credentials"

[[workload]]
name = "b"
token_url = "https://idp.example.com/token"
client_id = "b"
client_secret = "x"
grant = "client_credentials"

[[workload]]
name = "c"
token_url = "https://idp.example.com/token"
client_id = "c"
client_secret = "x"
grant = "client_credentials"
no_proxy = "localhost"
"#;
    let c = s.ok(text);
    let (a, b, own) = (
        &c.workloads[0].policy.provider,
        &c.workloads[1].policy.provider,
        &c.workloads[2].policy.provider,
    );
    assert!(std::sync::Arc::ptr_eq(a, b), "one section for a and b");
    assert!(!std::sync::Arc::ptr_eq(a, own));
    assert_eq!(own.no_proxy.as_deref(), Some("localhost"));
    assert_eq!(own.proxy, a.proxy, "inherited next to its own key");
}

#[test]
fn load_resolves_relative_paths_against_the_files_directory() {
    let dir = fixtures();
    let c = config::load(&dir.join("relative.toml")).unwrap_or_else(|e| panic!("{e}"));
    let abs = std::path::absolute(&dir).expect("absolute");
    assert_eq!(c.service.status_dir, abs.join("statuses"));
    assert_eq!(c.service.admin_listen, AdminListen::Off);
    let w = &c.workloads[0];
    assert_eq!(
        w.client_secret_origin,
        Some(SecretOrigin::File(abs.join("secrets/client.secret")))
    );
    assert_eq!(w.token_sink_file, Some(abs.join("sink/relative.token")));
    match &w.grant {
        GrantSpec::RefreshToken { token, file } => {
            assert_eq!(token.expose(), "relative-refresh-token");
            assert_eq!(
                file.as_deref(),
                Some(&*abs.join("state/relative.rt")),
                "`./` dropped"
            );
        }
        GrantSpec::ClientCredentials
        | GrantSpec::JwtBearer { .. }
        | GrantSpec::TokenExchange(_) => {
            panic!("wrong grant")
        }
    }
}

#[test]
fn parse_resolves_relative_paths_against_the_sources_directory() {
    let s = Scratch::new();
    let c = s.ok(&format!(
        "[service]\nstatus_dir = \"st\"\n{BASE}token_sink_file = \"out/app.token\"\n"
    ));
    assert_eq!(c.service.status_dir, s.dir.path().join("st"));
    assert_eq!(
        c.workloads[0].token_sink_file,
        Some(s.dir.path().join("out/app.token"))
    );
    // Absolute paths stay as they are.
    let abs = s.dir.path().join("client.secret");
    let c = s.ok(&BASE.replace(
        "\"client.secret\"",
        &format!("{:?}", abs.display().to_string()),
    ));
    assert_eq!(
        c.workloads[0].client_secret_origin,
        Some(SecretOrigin::File(abs))
    );
}

#[test]
fn embedded_source_and_no_workloads_are_fine() {
    let c = config::parse(
        "[service]\nstatus_dir = \"/tmp/x\"\nadmin_listen = \"off\"\n",
        Path::new(config::EMBEDDED_SOURCE),
        &env_of(&[]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.workloads.is_empty());
    assert_eq!(c.source, Path::new("<embedded>"));
}

#[test]
fn public_clients_are_allowed() {
    let s = Scratch::new();
    let c = s.ok(&BASE.replace("client_secret_file = \"client.secret\"\n", ""));
    assert_eq!(c.workloads[0].client_secret, None);
    assert_eq!(c.workloads[0].client_secret_origin, None);
}

// -----------------------------------------------------------------------------------------
// The documented example

/// The example with its absolute paths moved into `dir`, which gets the secret files.
fn example_in(dir: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/tokenvisor.toml");
    let text = std::fs::read_to_string(root).expect("config/tokenvisor.toml");
    for sub in ["etc", "var"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let d = dir.display().to_string();
    let moved = text
        .replace("\"/etc/tokenvisor/", &format!("\"{d}/etc/"))
        .replace("\"/var/lib/tokenvisor/", &format!("\"{d}/var/"));
    assert_ne!(
        moved, text,
        "the example uses /etc/tokenvisor and /var/lib/tokenvisor"
    );
    for (file, content) in [
        ("etc/admin.token", "admin-token-0123456789\n"),
        ("etc/github.secret", "github-secret\n"),
        ("var/github.rt", "github-rt\n"),
        ("var/notes-agent.rt", "notes-rt\n"),
    ] {
        std::fs::write(dir.join(file), content).expect("write");
    }
    moved
}

#[test]
fn the_documented_example_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = example_in(dir.path());
    let env = env_of(&[("BILLING_API_CLIENT_SECRET", "billing-secret")]);
    let c = config::parse(&text, &dir.path().join("tokenvisor.toml"), &env)
        .unwrap_or_else(|e| panic!("{e}"));

    // Its [service] and [defaults] values are the defaults (apart from where it says).
    assert_eq!(c.defaults, WorkloadPolicy::default());
    assert_eq!(
        c.service.admin_listen,
        AdminListen::Addr(config::DEFAULT_ADMIN_LISTEN)
    );
    assert_eq!(c.service.log_format, LogFormat::Text);
    assert_eq!(c.service.log_level, "info");

    let names: Vec<&str> = c.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["github-mcp", "billing-api", "notes-agent"]);
    let billing = &c.workloads[1];
    assert_eq!(
        billing.client_secret_origin,
        Some(SecretOrigin::Env("BILLING_API_CLIENT_SECRET".into()))
    );
    assert_eq!(billing.grant, GrantSpec::ClientCredentials);
    assert_eq!(billing.policy.endpoint_concurrency, 4);
    assert_eq!(c.workloads[2].policy.give_up_after, S(0));
    assert_eq!(c.workloads[2].client_secret, None);
}

#[test]
fn the_documented_example_shows_every_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/tokenvisor.toml");
    let text = std::fs::read_to_string(root).expect("config/tokenvisor.toml");
    let keys = [
        // [service]
        "status_dir",
        "admin_listen",
        "admin_token_file",
        "log_format",
        "log_level",
        // [defaults]
        "request_timeout",
        "connect_timeout",
        "refresh_at",
        "refresh_jitter",
        "default_lifetime",
        "backoff_initial",
        "backoff_max",
        "backoff_multiplier",
        "give_up_after",
        "max_retry_after",
        "endpoint_concurrency",
        "transient_codes",
        "permanent_codes",
        // [[workload]]
        "name",
        "token_url",
        "client_id",
        "client_secret",
        "client_secret_file",
        "client_secret_env",
        "auth_method",
        "grant",
        "refresh_token_file",
        "refresh_token",
        "token_sink_file",
        "scopes",
        "resource",
        "audience",
        "authorization_url",
        "device_authorization_url",
        "redirect_port",
        "login_scopes",
    ];
    for key in keys {
        let shown = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key} "))
        });
        assert!(shown, "config/tokenvisor.toml does not show `{key}`");
    }
    // …and every one of them is a key the parser knows: an unknown key would be an error.
    let s = Scratch::new();
    for key in keys {
        let err = s
            .parse(&format!("{BASE}{key}x = 1\n"))
            .expect_err("unknown key");
        assert_problem(&err, &format!("workload[0].{key}x"), None, "unknown key");
    }
}

#[test]
fn describe_masked_shows_every_setting_and_no_secret() {
    let dir = fixtures();
    let source = dir.join("full.toml");
    let text = std::fs::read_to_string(&source).expect("read fixture");
    let env = env_of(&[("FIXTURE_MACHINE_SECRET", "machine-secret")]);
    let c = config::parse(&text, &source, &env).unwrap_or_else(|e| panic!("{e}"));
    let out = c.describe_masked();
    for secret in [
        "fixture-client-secret",
        "fixture-refresh-token",
        "inline-client-secret",
        "inline-refresh-token",
        "machine-secret",
        "fixture-admin-token",
    ] {
        assert!(!out.contains(secret), "{secret} leaked:\n{out}");
    }
    for want in [
        "client_secret = \"…\"  # from file",
        "secrets/client.secret",
        "# inline in the configuration",
        "# from environment variable FIXTURE_MACHINE_SECRET",
        "refresh_token = \"…\"  # from file",
        "admin_listen = \"[::1]:9090\"",
        "log_format = \"json\"",
        "request_timeout = \"10s\"",
        "give_up_after = \"0s\"",
        "backoff_multiplier = 1.5",
        "transient_codes = [\"slow_down_please\", \"try_later\"]",
        "endpoint_concurrency = 2",
        "scopes = [\"repo\", \"read:org\"]",
        "auth_method = \"post\"",
        "grant = \"client_credentials\"",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // Each workload lists every policy key.
    assert_eq!(out.matches("max_retry_after = ").count(), 1 + 3);
    // It is itself TOML.
    let _: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
}

// -----------------------------------------------------------------------------------------
// Errors: syntax, unknown keys, types

#[test]
fn malformed_toml_names_file_line_and_section() {
    let s = Scratch::new();
    let text = format!("{BASE}\n[[workload]]\nname = \"b\nclient_id = \"b\"\n");
    let err = s.err(&text);
    let line = line_of(&text, "name = \"b");
    assert_problem(&err, "workload[1].name", Some(line), "invalid TOML");
    assert!(
        err.to_string()
            .starts_with(&s.source().display().to_string())
    );
}

#[test]
fn malformed_toml_at_top_level() {
    let s = Scratch::new();
    let err = s.err("this is not toml\n");
    assert_eq!(err.problems()[0].line, Some(1));
    assert!(err.problems()[0].reason.contains("invalid TOML"), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:1: ", s.source().display()))
    );
}

#[test]
fn duplicate_keys_are_syntax_errors() {
    let s = Scratch::new();
    let text = format!("{BASE}client_id = \"again\"\n");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].client_id",
        Some(line_of(&text, "\"again\"")),
        "duplicate key",
    );
}

#[test]
fn unknown_keys_name_section_key_and_line_with_a_suggestion() {
    let s = Scratch::new();
    let text = format!(
        "[service]\nstatus_dir = \"/s\"\nadmin_listn = \"off\"\n\n[defaults]\nrequest_timout = \"1s\"\ntoken_url = \"x\"\n{BASE}scope = [\"a\"]\nbogus_key = 1\nlog_level = \"info\"\n\n[workloads]\nx = 1\n"
    );
    let err = s.err(&text);
    assert_problem(
        &err,
        "service.admin_listn",
        Some(line_of(&text, "admin_listn")),
        "unknown key `admin_listn`; did you mean `admin_listen`?",
    );
    assert_problem(
        &err,
        "defaults.request_timout",
        Some(line_of(&text, "request_timout")),
        "did you mean `request_timeout`?",
    );
    assert_problem(
        &err,
        "defaults.token_url",
        Some(line_of(&text, "token_url = \"x\"")),
        "it belongs in each [[workload]]",
    );
    assert_problem(
        &err,
        "workload[0].scope",
        Some(line_of(&text, "scope = ")),
        "did you mean `scopes`?",
    );
    assert_problem(
        &err,
        "workload[0].bogus_key",
        Some(line_of(&text, "bogus_key")),
        "unknown key `bogus_key`",
    );
    assert_problem(
        &err,
        "workload[0].log_level",
        Some(line_of(&text, "log_level")),
        "it belongs in [service]",
    );
    assert_problem(
        &err,
        "workloads",
        Some(line_of(&text, "[workloads]")),
        "did you mean `workload`?",
    );
    assert_eq!(err.problems().len(), 7, "{err}");

    let err = s.err(&format!("status_dir = \"/s\"\n{BASE}"));
    assert_problem(
        &err,
        "status_dir",
        Some(1),
        "`status_dir` is not a top-level key; it belongs in [service]",
    );
}

#[test]
fn workload_must_be_an_array_of_tables() {
    let s = Scratch::new();
    let err = s.err("[workload]\nname = \"a\"\n");
    assert_problem(&err, "workload", Some(1), "[[workload]]");
    let err = s.err("[[service]]\nlog_level = \"info\"\n");
    assert_problem(&err, "service", Some(1), "must be a table");
}

#[test]
fn wrong_types_name_the_key_and_line() {
    let s = Scratch::new();
    let text = format!(
        "[service]\nlog_level = 3\n[defaults]\nendpoint_concurrency = \"many\"\nrefresh_at = \"high\"\n{BASE}scopes = \"repo\"\nresource = [1]\n"
    );
    let err = s.err(&text);
    assert_problem(
        &err,
        "service.log_level",
        Some(line_of(&text, "log_level = 3")),
        "invalid type: integer `3`, expected a string",
    );
    assert_problem(
        &err,
        "defaults.endpoint_concurrency",
        Some(line_of(&text, "\"many\"")),
        "expected a whole number",
    );
    assert_problem(
        &err,
        "defaults.refresh_at",
        Some(line_of(&text, "\"high\"")),
        "expected a number",
    );
    assert_problem(
        &err,
        "workload[0].scopes",
        Some(line_of(&text, "scopes = ")),
        "expected an array of strings",
    );
    assert_problem(
        &err,
        "workload[0].resource",
        Some(line_of(&text, "resource = ")),
        "expected a string",
    );
}

#[test]
fn a_bad_array_element_is_named_by_index() {
    let s = Scratch::new();
    let text = format!("{BASE}scopes = [\"repo\", 7]\n");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].scopes[1]",
        Some(line_of(&text, "scopes")),
        "expected a string",
    );
}

#[test]
fn bad_durations() {
    let s = Scratch::new();
    let text = format!(
        "[defaults]\nrequest_timeout = \"30 parsecs\"\nbackoff_max = 600\n{BASE}give_up_after = \"soon\"\n"
    );
    let err = s.err(&text);
    assert_problem(
        &err,
        "defaults.request_timeout",
        Some(line_of(&text, "parsecs")),
        "invalid duration \"30 parsecs\"",
    );
    assert_problem(
        &err,
        "defaults.backoff_max",
        Some(line_of(&text, "backoff_max")),
        "expected a duration string such as \"30s\"",
    );
    assert_problem(
        &err,
        "workload[0].give_up_after",
        Some(line_of(&text, "soon")),
        "invalid duration",
    );
}

#[test]
fn zero_durations_where_they_make_no_sense() {
    let s = Scratch::new();
    let text = format!(
        "[defaults]\nrequest_timeout = \"0s\"\nconnect_timeout = \"0s\"\ndefault_lifetime = \"0s\"\ngive_up_after = \"0s\"\nmax_retry_after = \"0s\"\n{BASE}"
    );
    let err = s.err(&text);
    for key in ["request_timeout", "connect_timeout", "default_lifetime"] {
        assert_problem(
            &err,
            &format!("defaults.{key}"),
            Some(line_of(&text, key)),
            "must be longer than 0s",
        );
    }
    assert_eq!(
        err.problems().len(),
        3,
        "give_up_after and max_retry_after may be 0s: {err}"
    );
}

/// Absurd durations are rejected per key, `FILE:LINE: KEY: reason`: nothing configured may
/// make a timer wait longer than the timer service holds (`max_retry_after = "3y"` plus a
/// huge `Retry-After` used to stop every timer of the process). The limit itself is fine.
#[test]
fn absurd_durations_are_rejected_per_key() {
    let s = Scratch::new();
    let table = [
        // key, too long, the longest accepted
        ("request_timeout", "11m", "10m"),
        ("connect_timeout", "1h", "10m"),
        ("default_lifetime", "366days", "365days"),
        ("backoff_initial", "25h", "1day"),
        ("backoff_max", "2days", "1day"),
        ("give_up_after", "31days", "30days"),
        ("max_retry_after", "3y", "24h"),
        ("max_retry_after", "1day 1s", "86400s"),
    ];
    for (key, bad, limit) in table {
        // In a workload (backoff_initial stays below backoff_max, which is checked apart).
        let extra = if key == "backoff_initial" {
            "backoff_max = \"1day\"\n"
        } else {
            ""
        };
        let text = format!("{BASE}{extra}{key} = \"{bad}\"\n");
        let err = s.err(&text);
        assert_problem(
            &err,
            &format!("workload[0].{key}"),
            Some(line_of(&text, &format!("{key} = \"{bad}\""))),
            "it must be at most",
        );
        assert_eq!(err.problems().len(), 1, "{key} = {bad}: {err}");
        s.ok(&format!("{BASE}{extra}{key} = \"{limit}\"\n"));
        // In [defaults] too.
        let text = format!("[defaults]\n{key} = \"{bad}\"\n{BASE}");
        assert_problem(
            &s.err(&text),
            &format!("defaults.{key}"),
            Some(2),
            "it must be at most",
        );
    }
    // The reason says what was given, the limit and why.
    let text = format!("{BASE}max_retry_after = \"3y\"\n");
    let err = s.err(&text);
    let line = err.to_string();
    assert!(
        line.ends_with(
            "workload[0].max_retry_after: is 3years; it must be at most 1day \
             (no provider may stop every refresh of an endpoint for longer)"
        ),
        "{line}"
    );
    // Every duration key has a limit no longer than what a timer holds.
    for key in [
        "request_timeout",
        "connect_timeout",
        "default_lifetime",
        "backoff_initial",
        "backoff_max",
        "give_up_after",
        "max_retry_after",
    ] {
        let (max, _) = config::duration_limit(key).unwrap();
        assert!(
            key == "default_lifetime" || max <= tokenvisor_core::policy::MAX_TIMER_DELAY,
            "{key}"
        );
    }
}

#[test]
fn bad_enum_values() {
    let s = Scratch::new();
    let text = format!("[service]\nlog_format = \"xml\"\n{BASE}auth_method = \"digest\"\n")
        .replace("grant = \"refresh_token\"", "grant = \"password\"");
    let err = s.err(&text);
    assert_problem(
        &err,
        "service.log_format",
        Some(2),
        "unknown variant `xml`, expected `text` or `json`",
    );
    assert_problem(
        &err,
        "workload[0].auth_method",
        Some(line_of(&text, "digest")),
        "expected one of `basic`, `post`, `private_key_jwt`",
    );
    assert_problem(
        &err,
        "workload[0].grant",
        Some(line_of(&text, "password")),
        "expected one of `refresh_token`, `client_credentials`, `jwt_bearer`, `token_exchange`",
    );
    assert_eq!(
        err.problems().len(),
        3,
        "no knock-on 'missing grant': {err}"
    );
}

// -----------------------------------------------------------------------------------------
// Errors: workload identity

#[test]
fn bad_workload_names() {
    let s = Scratch::new();
    for (name, reason) in [
        ("../etc", "contains '/'"),
        ("", "empty"),
        (".hidden", "may not start with '.'"),
        ("a b", "contains ' '"),
    ] {
        let text = BASE.replace("name = \"app\"", &format!("name = {name:?}"));
        let err = s.err(&text);
        assert_problem(
            &err,
            "workload[0].name",
            Some(line_of(&text, "name =")),
            reason,
        );
    }
    let long = "x".repeat(101);
    let err = s.err(&BASE.replace("\"app\"\ntoken", &format!("\"{long}\"\ntoken")));
    assert_problem(&err, "workload[0].name", Some(3), "at most 100");
}

#[test]
fn duplicate_names() {
    let s = Scratch::new();
    let second = BASE
        .replace("\"app.rt\"", "\"other.rt\"")
        .replace("client_secret_file = \"client.secret\"\n", "");
    std::fs::write(s.dir.path().join("other.rt"), "x").expect("write");
    let text = format!("{BASE}{second}");
    let err = s.err(&text);
    let first_line = line_of(&text, "name = \"app\"");
    let second_line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name = \"app\""))
        .nth(1)
        .map(|(i, _)| i + 1);
    assert_problem(
        &err,
        "workload[1].name",
        second_line,
        &format!("duplicate workload name \"app\": workload[0].name (line {first_line})"),
    );
}

#[test]
fn missing_required_keys_point_at_the_workload_header() {
    let s = Scratch::new();
    let text = "[[workload]]\nclient_secret = \"x\"\n\n[[workload]]\nname = \"b\"\n";
    let err = s.err(text);
    for key in ["name", "token_url", "client_id", "grant"] {
        assert_problem(&err, &format!("workload[0].{key}"), Some(1), "missing");
    }
    for key in ["token_url", "client_id", "grant"] {
        assert_problem(&err, &format!("workload[1].{key}"), Some(4), "missing");
    }
    assert_eq!(err.problems().len(), 7, "{err}");
}

#[test]
fn token_url_must_be_http_with_a_host() {
    let s = Scratch::new();
    for (url, reason) in [
        (
            "ftp://idp.example.com/token",
            "must be an http or https URL",
        ),
        ("idp.example.com/token", "is not a valid URL"),
        ("https://", "is not a valid URL"),
        ("https:///token", "has no host"),
        ("https:/idp.example.com/token", "has no host"),
        (
            "https://user:pw@idp.example.com/token",
            "must not contain credentials",
        ),
        (
            "https://idp.example.com/token#frag",
            "must not contain a fragment",
        ),
        ("https://idp.example.com/ token", "whitespace"),
        ("", "must not be empty"),
    ] {
        let text = BASE.replace("https://idp.example.com/token", url);
        let err = s.err(&text);
        assert_problem(
            &err,
            "workload[0].token_url",
            Some(line_of(&text, "token_url")),
            reason,
        );
        if url.contains("pw@") {
            assert!(
                !err.to_string().contains("pw@"),
                "URL credentials echoed: {err}"
            );
        }
    }
    s.ok(&BASE.replace(
        "https://idp.example.com/token",
        "http://127.0.0.1:9000/t?x=1",
    ));
}

#[test]
fn bad_scopes_resource_and_audience() {
    let s = Scratch::new();
    let text = format!(
        "{BASE}scopes = [\"repo read\", \"\"]\nresource = \"/relative\"\naudience = \"\"\n"
    );
    let err = s.err(&text);
    let line = line_of(&text, "scopes");
    assert_problem(
        &err,
        "workload[0].scopes[0]",
        Some(line),
        "is not a scope token",
    );
    assert_problem(
        &err,
        "workload[0].scopes[1]",
        Some(line),
        "is not a scope token",
    );
    assert_problem(
        &err,
        "workload[0].resource",
        Some(line_of(&text, "resource")),
        "absolute URI",
    );
    assert_problem(
        &err,
        "workload[0].audience",
        Some(line_of(&text, "audience")),
        "must not be empty",
    );
}

// -----------------------------------------------------------------------------------------
// Errors: policy

#[test]
fn refresh_at_must_be_in_zero_one() {
    let s = Scratch::new();
    for v in ["0", "0.0", "1.5", "-0.2", "nan", "inf"] {
        let text = format!("[defaults]\nrefresh_at = {v}\n{BASE}");
        let err = s.err(&text);
        assert_problem(
            &err,
            "defaults.refresh_at",
            Some(2),
            "above 0 and at most 1",
        );
        assert_eq!(err.problems().len(), 1, "{err}");
    }
    s.ok(&format!("[defaults]\nrefresh_at = 1\n{BASE}"));
}

#[test]
fn refresh_jitter_must_be_below_refresh_at() {
    let s = Scratch::new();
    let err = s.err(&format!("[defaults]\nrefresh_jitter = -0.1\n{BASE}"));
    assert_problem(&err, "defaults.refresh_jitter", Some(2), "at least 0");

    let err = s.err(&format!(
        "[defaults]\nrefresh_at = 0.5\nrefresh_jitter = 0.5\n{BASE}"
    ));
    assert_problem(
        &err,
        "defaults.refresh_jitter",
        Some(3),
        "refresh_jitter (0.5) must be below refresh_at (0.5)",
    );

    // A workload's jitter against the defaults' refresh_at: blamed on the workload, with the
    // origin of the other value.
    let text = format!("[defaults]\nrefresh_at = 0.4\n{BASE}refresh_jitter = 0.45\n");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].refresh_jitter",
        Some(line_of(&text, "refresh_jitter")),
        "refresh_jitter (0.45) must be below refresh_at (0.4, from defaults.refresh_at)",
    );
    assert_eq!(err.problems().len(), 1, "{err}");
}

#[test]
fn backoff_rules() {
    let s = Scratch::new();
    let text = format!(
        "[defaults]\nbackoff_initial = \"0s\"\nbackoff_multiplier = 0.5\n{BASE}backoff_initial = \"20m\"\n"
    );
    let err = s.err(&text);
    assert_problem(
        &err,
        "defaults.backoff_initial",
        Some(2),
        "must be longer than 0s",
    );
    assert_problem(&err, "defaults.backoff_multiplier", Some(3), "at least 1");
    assert_problem(
        &err,
        "workload[0].backoff_initial",
        Some(line_of(&text, "\"20m\"")),
        "backoff_max (10m, the default) must be at least backoff_initial (20m)",
    );
    assert_eq!(err.problems().len(), 3, "{err}");

    let text = format!("[defaults]\nbackoff_max = \"1s\"\n{BASE}");
    let err = s.err(&text);
    assert_problem(
        &err,
        "defaults.backoff_max",
        Some(2),
        "backoff_max (1s) must be at least backoff_initial (5s, the default)",
    );
}

#[test]
fn endpoint_concurrency_must_be_positive() {
    let s = Scratch::new();
    for v in ["0", "-3", "1000001", "99999999999999999999"] {
        let text = format!("{BASE}endpoint_concurrency = {v}\n");
        let err = s.err(&text);
        assert_problem(
            &err,
            "workload[0].endpoint_concurrency",
            Some(line_of(&text, "endpoint_concurrency")),
            "must be at least 1",
        );
    }
}

#[test]
fn workloads_of_one_endpoint_must_agree_on_its_concurrency() {
    let s = Scratch::new();
    let second = BASE
        .replace("\"app\"", "\"app2\"")
        .replace("\"app.rt\"", "\"app2.rt\"");
    std::fs::write(s.dir.path().join("app2.rt"), "x").expect("write");
    let text = format!("{BASE}{second}endpoint_concurrency = 8\n");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[1].endpoint_concurrency",
        Some(line_of(&text, "endpoint_concurrency")),
        "is 8 (from workload[1].endpoint_concurrency) but workload[0] uses 64 for the same token_url",
    );
}

/// One endpoint is one parsed URL (`TokenUrl`), however it is spelled: the runtime keys its
/// gates the same way.
#[test]
fn one_endpoint_however_its_url_is_spelled() {
    let s = Scratch::new();
    let second = BASE
        .replace("\"app\"", "\"app2\"")
        .replace("\"app.rt\"", "\"app2.rt\"")
        .replace(
            "https://idp.example.com/token",
            "HTTPS://IDP.Example.com:443/token",
        );
    std::fs::write(s.dir.path().join("app2.rt"), "x").expect("write");
    let text = format!("{BASE}{second}endpoint_concurrency = 8\n");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[1].endpoint_concurrency",
        Some(line_of(&text, "endpoint_concurrency")),
        "but workload[0] uses 64 for the same token_url",
    );
}

#[test]
fn a_code_cannot_be_both_transient_and_permanent() {
    let s = Scratch::new();
    let text = format!(
        "[defaults]\ntransient_codes = [\"busy\", \"x\"]\npermanent_codes = [\"busy\"]\n{BASE}"
    );
    let err = s.err(&text);
    assert_problem(
        &err,
        "defaults.permanent_codes",
        Some(3),
        "[\"busy\"] in both transient_codes and permanent_codes",
    );
    assert_eq!(
        err.problems().len(),
        1,
        "reported once, not per workload: {err}"
    );

    let text =
        format!("[defaults]\ntransient_codes = [\"busy\"]\n{BASE}permanent_codes = [\"busy\"]\n");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].permanent_codes",
        Some(line_of(&text, "permanent_codes")),
        "in both transient_codes (from defaults.transient_codes) and permanent_codes;",
    );

    let text = format!("{BASE}transient_codes = [\"ok\", \"has\\\"quote\"]\n");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].transient_codes[1]",
        Some(line_of(&text, "transient_codes")),
        "is not an RFC 6749 error code",
    );
}

// -----------------------------------------------------------------------------------------
// Errors: secrets and grants

#[test]
fn at_most_one_client_secret_source() {
    let s = Scratch::new();
    let text = format!("{BASE}client_secret_env = \"APP_SECRET\"\n");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].client_secret_env",
        Some(line_of(&text, "client_secret_env")),
        "set only one of client_secret, client_secret_file and client_secret_env (this workload also sets client_secret_file)",
    );
}

#[test]
fn client_secret_from_env_and_inline() {
    let s = Scratch::new();
    let c = s.ok(&BASE.replace(
        "client_secret_file = \"client.secret\"",
        "client_secret_env = \"APP_SECRET\"",
    ));
    assert_eq!(
        c.workloads[0]
            .client_secret
            .as_ref()
            .map(tokenvisor_core::Secret::expose),
        Some("env-secret")
    );
}

#[test]
fn missing_or_empty_secrets() {
    let s = Scratch::new();
    let cases = [
        (
            "client_secret_file = \"nope.secret\"",
            "workload[0].client_secret_file",
            "cannot read secret file",
        ),
        (
            "client_secret_file = \"empty.secret\"",
            "workload[0].client_secret_file",
            "is empty",
        ),
        (
            "client_secret_env = \"UNSET_VAR\"",
            "workload[0].client_secret_env",
            "environment variable UNSET_VAR is not set",
        ),
        (
            "client_secret_env = \"EMPTY_VAR\"",
            "workload[0].client_secret_env",
            "environment variable EMPTY_VAR is empty",
        ),
        (
            "client_secret = \"\"",
            "workload[0].client_secret",
            "is empty",
        ),
    ];
    for (line, key, reason) in cases {
        let text = BASE.replace("client_secret_file = \"client.secret\"", line);
        let err = s
            .parse_env(&text, &[("HOME", "/h"), ("EMPTY_VAR", " \n")])
            .expect_err(line);
        assert_problem(&err, key, Some(line_of(&text, line)), reason);
        if reason.contains("secret file") {
            assert!(
                err.to_string()
                    .contains(&*s.dir.path().display().to_string()),
                "names the path: {err}"
            );
        }
    }
    let missing = s.dir.path().join("nope.secret");
    let err = s.err(&BASE.replace("\"client.secret\"", "\"nope.secret\""));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn secrets_never_appear_in_errors() {
    let s = Scratch::new();
    let text = BASE.replace(
        "client_secret_file = \"client.secret\"",
        "client_secret = 123456789",
    );
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].client_secret",
        Some(line_of(&text, "client_secret")),
        "expected a string (the value is not shown)",
    );
    assert!(!err.to_string().contains("123456789"), "{err}");

    // A config that is wrong elsewhere does not print the secrets it read.
    let text = format!("{BASE}audience = \"\"\n");
    let err = s.err(&text);
    let shown = err.to_string();
    assert!(
        !shown.contains("s3cret-value") && !shown.contains("rt-value"),
        "{shown}"
    );
}

#[test]
fn refresh_token_grant_needs_a_refresh_token() {
    let s = Scratch::new();
    let text = BASE.replace("refresh_token_file = \"app.rt\"\n", "");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].refresh_token_file",
        Some(line_of(&text, "[[workload]]")),
        "grant = \"refresh_token\" needs refresh_token_file (or an inline refresh_token)",
    );

    let text = format!("{BASE}refresh_token = \"inline\"\n");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].refresh_token",
        Some(line_of(&text, "refresh_token = ")),
        "set only one of refresh_token_file and refresh_token (this workload also sets \
         refresh_token_file)",
    );
    assert_eq!(err.problems().len(), 1, "{err}");

    let text = BASE.replace("\"app.rt\"", "\"missing.rt\"");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].refresh_token_file",
        Some(line_of(&text, "missing.rt")),
        "cannot read secret file",
    );
    assert_eq!(
        err.problems().len(),
        1,
        "no knock-on 'missing refresh token': {err}"
    );
}

#[test]
fn client_credentials_takes_no_refresh_token_and_needs_a_secret() {
    let s = Scratch::new();
    let text = BASE.replace("\"refresh_token\"", "\"client_credentials\"");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].refresh_token_file",
        Some(line_of(&text, "refresh_token_file")),
        "grant = \"client_credentials\" takes no refresh token",
    );

    let text = BASE
        .replace("\"refresh_token\"", "\"client_credentials\"")
        .replace("refresh_token_file = \"app.rt\"\n", "")
        .replace("client_secret_file = \"client.secret\"\n", "");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].grant",
        Some(line_of(&text, "grant")),
        "needs a client secret",
    );
}

#[test]
fn files_tokenvisor_writes_are_not_shared() {
    let s = Scratch::new();
    let second = BASE.replace("\"app\"", "\"app2\"").replace(
        "refresh_token_file = \"app.rt\"\n",
        "refresh_token = \"r\"\n",
    );
    let text = format!(
        "{BASE}token_sink_file = \"out.token\"\n{second}token_sink_file = \"./out.token\"\n"
    );
    let err = s.err(&text);
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("out.token"))
        .map(|(i, _)| i + 1)
        .collect();
    assert_problem(
        &err,
        "workload[1].token_sink_file",
        Some(lines[1]),
        &format!("is also workload[0].token_sink_file (line {})", lines[0]),
    );

    // A sink may not overwrite a secret file; two workloads may share a client secret file.
    let text = format!("{BASE}token_sink_file = \"client.secret\"\n");
    let err = s.err(&text);
    assert_problem(
        &err,
        "workload[0].token_sink_file",
        None,
        "is also workload[0].client_secret_file",
    );
}

// -----------------------------------------------------------------------------------------
// Errors: [service]

#[test]
fn admin_listen_must_be_off_or_a_socket_address() {
    let s = Scratch::new();
    for v in ["localhost:7878", "7878", "on", "127.0.0.1"] {
        let text = format!("[service]\nadmin_listen = \"{v}\"\n{BASE}");
        let err = s.err(&text);
        assert_problem(
            &err,
            "service.admin_listen",
            Some(2),
            "is neither \"off\" nor a socket address",
        );
    }
    let c = s.ok(&format!("[service]\nadmin_listen = \"off\"\n{BASE}"));
    assert_eq!(c.service.admin_listen, AdminListen::Off);
    assert_eq!(c.service.admin_listen.addr(), None);
}

#[test]
fn a_non_loopback_admin_listen_needs_a_token_file() {
    let s = Scratch::new();
    let text = format!("[service]\nadmin_listen = \"0.0.0.0:7878\"\n{BASE}");
    let err = s.err(&text);
    assert_problem(
        &err,
        "service.admin_listen",
        Some(2),
        "0.0.0.0:7878 is not a loopback address, so service.admin_token_file is required",
    );

    let c = s.ok(&format!(
        "[service]\nadmin_listen = \"0.0.0.0:7878\"\nadmin_token_file = \"admin.token\"\n{BASE}"
    ));
    assert_eq!(
        c.service.admin_token_file,
        Some(s.dir.path().join("admin.token"))
    );
    assert!(!c.service.admin_listen.is_loopback());

    let text = format!(
        "[service]\nadmin_listen = \"10.0.0.1:7878\"\nadmin_token_file = \"no.token\"\n{BASE}"
    );
    let err = s.err(&text);
    assert_problem(
        &err,
        "service.admin_token_file",
        Some(3),
        "cannot read secret file",
    );
    assert_eq!(err.problems().len(), 1, "{err}");
}

#[test]
fn an_admin_token_shorter_than_16_bytes_is_refused() {
    let s = Scratch::new();
    std::fs::write(s.dir.path().join("short.token"), "fifteen-bytes!!\n").expect("write");
    let text = format!("[service]\nadmin_token_file = \"short.token\"\n{BASE}");
    let err = s.err(&text);
    let path = s.dir.path().join("short.token");
    assert_problem(
        &err,
        "service.admin_token_file",
        Some(2),
        &format!(
            "the admin token in {} is 15 bytes long; at least 16 are required",
            path.display()
        ),
    );
    assert!(
        !err.to_string().contains("fifteen"),
        "never the token: {err}"
    );
    // 16 bytes are enough; with the admin API off the file is not read at all.
    std::fs::write(&path, "sixteen-bytes!!!\n").expect("write");
    s.ok(&text);
    std::fs::write(&path, "short\n").expect("write");
    s.ok(&format!(
        "[service]\nadmin_listen = \"off\"\nadmin_token_file = \"short.token\"\n{BASE}"
    ));
}

#[test]
fn the_state_dir_follows_xdg_state_then_home_and_is_needed_only_for_a_generated_token() {
    let s = Scratch::new();
    let c = s.parse_env(BASE, &[("HOME", "/home/op")]).unwrap();
    assert_eq!(
        c.service.state_dir,
        Some(PathBuf::from("/home/op/.local/state/tokenvisor"))
    );
    let c = s
        .parse_env(
            BASE,
            &[("HOME", "/home/op"), ("XDG_STATE_HOME", "/xdg/state")],
        )
        .unwrap();
    assert_eq!(
        c.service.state_dir,
        Some(PathBuf::from("/xdg/state/tokenvisor"))
    );
    let c = s
        .parse_env(
            BASE,
            &[("HOME", "/home/op"), ("XDG_STATE_HOME", "relative")],
        )
        .unwrap();
    assert_eq!(
        c.service.state_dir,
        Some(PathBuf::from("/home/op/.local/state/tokenvisor"))
    );
    // Relative to the file, like every path.
    let c = s
        .parse_env(
            &format!("[service]\nstatus_dir = \"statuses\"\nstate_dir = \"st\"\n{BASE}"),
            &[],
        )
        .unwrap();
    assert_eq!(c.service.state_dir, Some(s.dir.path().join("st")));
    // No HOME: needed when the daemon generates the admin token…
    let text = format!("[service]\nstatus_dir = \"statuses\"\n{BASE}");
    let err = s.parse_env(&text, &[]).unwrap_err();
    assert_problem(
        &err,
        "service.state_dir",
        None,
        "neither XDG_STATE_HOME nor HOME",
    );
    // …but not with a token file, nor with the admin API off.
    let c = s
        .parse_env(
            &format!(
                "[service]\nstatus_dir = \"statuses\"\nadmin_token_file = \"admin.token\"\n{BASE}"
            ),
            &[],
        )
        .unwrap();
    assert_eq!(c.service.state_dir, None);
    s.parse_env(
        &format!("[service]\nstatus_dir = \"statuses\"\nadmin_listen = \"off\"\n{BASE}"),
        &[],
    )
    .unwrap();
    let err = s.err(&format!("[service]\nstate_dir = \"\"\n{BASE}"));
    assert_problem(&err, "service.state_dir", Some(2), "must not be empty");
}

#[test]
fn admin_listener_limits_have_defaults_and_bounds() {
    let s = Scratch::new();
    let c = s.ok(BASE);
    assert_eq!(c.service.admin_limits, config::AdminLimits::default());
    assert_eq!(
        c.service.admin_limits.header_timeout,
        Duration::from_secs(10)
    );
    assert_eq!(c.service.admin_limits.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.service.admin_limits.max_connections, 256);
    let c = s.ok(&format!(
        "[service]\nadmin_header_timeout = \"2s\"\nadmin_idle_timeout = \"500ms\"\n\
         admin_max_connections = 8\n{BASE}"
    ));
    assert_eq!(
        c.service.admin_limits.header_timeout,
        Duration::from_secs(2)
    );
    assert_eq!(
        c.service.admin_limits.idle_timeout,
        Duration::from_millis(500)
    );
    assert_eq!(c.service.admin_limits.max_connections, 8);
    for (line, key, reason) in [
        (
            "admin_header_timeout = \"0s\"",
            "service.admin_header_timeout",
            "longer than 0s",
        ),
        (
            "admin_idle_timeout = \"2h\"",
            "service.admin_idle_timeout",
            "at most 1h",
        ),
        (
            "admin_max_connections = 0",
            "service.admin_max_connections",
            "between 1 and 65536",
        ),
        (
            "admin_max_connections = -3",
            "service.admin_max_connections",
            "between 1 and 65536",
        ),
        (
            "admin_max_connections = 100000",
            "service.admin_max_connections",
            "between 1 and 65536",
        ),
    ] {
        let err = s.err(&format!("[service]\n{line}\n{BASE}"));
        assert_problem(&err, key, Some(2), reason);
    }
}

// -----------------------------------------------------------------------------------------
// Collecting, ordering and loading

#[test]
fn every_problem_is_reported_in_file_order() {
    let s = Scratch::new();
    let text = r#"[service]
admin_listen = "nowhere"
log_format = "yaml"

[defaults]
refresh_at = 2.0
backoff_initial = "fast"

[[workload]]
name = "bad name"
token_url = "gopher://x"
client_id = "a"
grant = "refresh_token"

[[workload]]
name = "ok"
token_url = "https://idp.example.com/token"
client_id = "b"
client_secret_env = "NOT_SET"
grant = "client_credentials"
endpoint_concurrency = 0
"#;
    let err = s.err(text);
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "service.admin_listen",
            "service.log_format",
            "defaults.refresh_at",
            "defaults.backoff_initial",
            "workload[0].refresh_token_file",
            "workload[0].name",
            "workload[0].token_url",
            "workload[1].client_secret_env",
            "workload[1].endpoint_concurrency",
        ],
        "{err}"
    );
    let lines: Vec<Option<usize>> = err.problems().iter().map(|p| p.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    assert_eq!(err.to_string().lines().count(), keys.len());
}

#[test]
fn load_names_an_unreadable_file() {
    let missing = fixtures().join("does-not-exist.toml");
    let err = config::load(&missing).expect_err("missing file");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}: cannot read the configuration file",
            missing.display()
        )),
        "{shown}"
    );
    assert_eq!(err.file(), missing);
}

#[test]
fn load_reports_problems_with_the_path_as_given() {
    let s = Scratch::new();
    let path = s.source();
    std::fs::write(&path, "[service]\nlog_format = \"xml\"\n").expect("write");
    let err = config::load(&path).expect_err("bad");
    assert!(
        err.to_string().starts_with(&format!(
            "{}:2: service.log_format: unknown variant",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn type_errors_name_the_type_found_never_the_value() {
    let s = Scratch::new();
    let text = format!(
        "[service]\nadmin_max_connections = 2.5\n[defaults]\nrefresh_at = \"hi-value-1\"\nrequest_timeout = 30\n{BASE}refresh_token = true\n"
    )
    .replace("refresh_token_file = \"app.rt\"\n", "");
    let err = s.err(&text);
    assert_problem(
        &err,
        "service.admin_max_connections",
        Some(2),
        "invalid type: floating point `2.5`, expected a whole number",
    );
    assert_problem(
        &err,
        "defaults.refresh_at",
        Some(4),
        "invalid type: a string, expected a number",
    );
    assert_problem(
        &err,
        "defaults.request_timeout",
        Some(5),
        "invalid type: an integer, expected a duration string such as \"30s\"",
    );
    assert_problem(
        &err,
        "workload[0].refresh_token",
        Some(line_of(&text, "refresh_token = true")),
        "invalid type: a boolean, expected a string (the value is not shown)",
    );
    assert!(!err.to_string().contains("hi-value-1"), "{err}");
    assert_eq!(err.problems().len(), 4, "{err}");
}
