//! `tokenvisor probe` against the fault-injecting test identity provider: every fault is
//! classified as the daemon classifies it (`tokenvisor_core::classify`), the exit code follows the verdict, and no token or secret
//! ever reaches stdout or stderr.

use std::time::{Duration, SystemTime};

use crate::common::{Run, has_token_like, run, run_cmd, tokenvisor};
use serde_json::{Value, json};
use tokenvisor_idp::{
    AuthMethod, ClientSpec, ExpiresInShape, Fault, FaultScope, IdpConfig, IdpServer, RetryAfter,
    Times, TokenShape,
};

/// The client secret of every test client.
const SECRET: &str = "cs-Very-Secret-4711";

/// Starts a server with one client (`id`, rotation as given) and returns a refresh token.
async fn server(id: &str, rotation: bool) -> (IdpServer, String) {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    idp.register_client(ClientSpec::new(id, SECRET).with_rotation(rotation));
    let rt = idp.issue_refresh_token(id).unwrap();
    (idp, rt)
}

/// The arguments of a refresh-token probe with `--json`, plus `extra`.
fn args(idp: &IdpServer, client: &str, rt: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "probe",
        "--token-url",
        &idp.token_url(),
        "--client-id",
        client,
        "--client-secret",
        SECRET,
        "--refresh-token",
        rt,
        "--json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

/// Runs the binary off the runtime's threads (the server keeps serving meanwhile).
async fn probe(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || run_cmd(tokenvisor().args(&args)))
        .await
        .unwrap()
}

/// Asserts that no secret, no given token and nothing shaped like a test-IdP token appears
/// in either stream.
fn assert_no_secrets(r: &Run, tokens: &[&str]) {
    let all = r.all();
    assert!(!all.contains(SECRET), "client secret leaked: {r:#?}");
    for t in tokens {
        assert!(!all.contains(t), "a token leaked: {r:#?}");
    }
    assert!(
        !has_token_like(&all, "at_"),
        "an access token leaked: {r:#?}"
    );
    assert!(
        !has_token_like(&all, "rt_"),
        "a refresh token leaked: {r:#?}"
    );
}

/// What one probe should report.
#[derive(Debug, Clone)]
struct Expect {
    outcome: &'static str,
    kind: &'static str,
    http_status: Option<u16>,
    error_code: Option<&'static str>,
    retry_after_secs: Option<u64>,
    /// False when the caller checks `retry_after_secs` itself.
    exact_retry_after: bool,
}

impl Expect {
    fn transient(kind: &'static str, status: Option<u16>) -> Self {
        Expect {
            outcome: "transient",
            kind,
            http_status: status,
            error_code: None,
            retry_after_secs: None,
            exact_retry_after: true,
        }
    }

    fn permanent(status: u16, code: &'static str) -> Self {
        Expect {
            outcome: "permanent",
            kind: "oauth_rejected",
            http_status: Some(status),
            error_code: Some(code),
            retry_after_secs: None,
            exact_retry_after: true,
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.error_code = Some(code);
        self
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    fn any_retry_after(mut self) -> Self {
        self.exact_retry_after = false;
        self
    }

    fn exit(&self) -> i32 {
        match self.outcome {
            "ok" => 0,
            "transient" => 10,
            "permanent" => 11,
            other => panic!("unknown outcome {other}"),
        }
    }
}

/// Checks the JSON report's shape and values, and the exit code.
fn check(label: &str, r: &Run, e: &Expect) -> Value {
    let v = r.json();
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{label}: not an object: {r:#?}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "error_code",
            "expires_in_secs",
            "http_status",
            "kind",
            "outcome",
            "retry_after_secs",
            "summary"
        ],
        "{label}"
    );
    assert_eq!(v["outcome"], e.outcome, "{label}: {r:#?}");
    assert_eq!(v["kind"], e.kind, "{label}: {r:#?}");
    assert_eq!(v["http_status"], json!(e.http_status), "{label}: {r:#?}");
    assert_eq!(v["error_code"], json!(e.error_code), "{label}: {r:#?}");
    if e.exact_retry_after {
        assert_eq!(
            v["retry_after_secs"],
            json!(e.retry_after_secs),
            "{label}: {r:#?}"
        );
    }
    assert!(v["summary"].is_string(), "{label}");
    assert_eq!(r.code, Some(e.exit()), "{label}: {r:#?}");
    v
}

/// Arms `fault` for the next request of `client`, probes, checks.
async fn fault_case(
    idp: &IdpServer,
    client: &str,
    rt: &str,
    label: &str,
    fault: Fault,
    e: &Expect,
) -> Value {
    idp.set_fault(FaultScope::Client(client.to_owned()), fault, Times::Next(1));
    let r = probe(args(idp, client, rt, &[])).await;
    assert_no_secrets(&r, &[rt]);
    check(label, &r, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_reports_lifetime_and_never_the_token() {
    let (idp, rt) = server("app", false).await;
    let r = probe(args(&idp, "app", &rt, &[])).await;
    assert_no_secrets(&r, &[&rt]);
    let v = check(
        "success",
        &r,
        &Expect {
            outcome: "ok",
            kind: "ok",
            http_status: Some(200),
            error_code: None,
            retry_after_secs: None,
            exact_retry_after: true,
        },
    );
    assert_eq!(v["expires_in_secs"], 3600);
    assert_eq!(v["summary"], "token received (Bearer, expires in 3600s)");
    assert!(!r.stderr.contains("rotated"), "{r:#?}");
    let req = idp.last_request("app").unwrap();
    assert_eq!(req.grant_type.as_deref(), Some("refresh_token"));
    assert_eq!(req.auth, AuthMethod::Basic);

    // The human form says the same, with what tokenvisor would do.
    let mut human = args(&idp, "app", &rt, &[]);
    human.retain(|a| a != "--json");
    let r = probe(human).await;
    assert_no_secrets(&r, &[&rt]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(r.stdout.contains("outcome:     ok"), "{r:#?}");
    assert!(r.stdout.contains("http status: 200"), "{r:#?}");
    assert!(r.stdout.contains("expires in:  3600s"), "{r:#?}");
    assert!(
        r.stdout.contains("the workload would show running"),
        "{r:#?}"
    );
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_warned_about_and_never_printed() {
    let (idp, rt) = server("rot", true).await;
    let r = probe(args(&idp, "rot", &rt, &[])).await;
    let live = idp.live_refresh_tokens("rot");
    assert_eq!(live.len(), 1);
    assert_ne!(live[0], rt, "the server rotated");
    assert_no_secrets(&r, &[&rt, &live[0]]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(r.json()["outcome"], "ok");
    assert!(
        r.stderr.contains(
            "the provider rotated the refresh token: the old one may no longer work — probe \
             spends a refresh token!"
        ),
        "{r:#?}"
    );
    // stdout stays one JSON object: the warning is on stderr only.
    assert!(!r.stdout.contains("warning"), "{r:#?}");
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_keeps_the_rotated_refresh_token() {
    let (idp, rt) = server("rot", true).await;
    let dir = tempfile::tempdir().unwrap();
    let rt_file = dir.path().join("rt");
    let secret_file = dir.path().join("secret");
    std::fs::write(&rt_file, format!("{rt}\n")).unwrap();
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let probe_args = vec![
        "probe".to_owned(),
        "--token-url".to_owned(),
        idp.token_url(),
        "--client-id".to_owned(),
        "rot".to_owned(),
        "--client-secret-file".to_owned(),
        secret_file.display().to_string(),
        "--refresh-token-file".to_owned(),
        rt_file.display().to_string(),
        "--write-back".to_owned(),
    ];
    let r = probe(probe_args.clone()).await;
    let live = idp.live_refresh_tokens("rot");
    assert_no_secrets(&r, &[&rt, &live[0]]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(r.stderr.contains("written to"), "{r:#?}");
    assert_eq!(std::fs::read_to_string(&rt_file).unwrap(), live[0]);

    // The saved token works: the next probe succeeds (and rotates again).
    let r = probe(probe_args).await;
    assert_eq!(r.code, Some(0), "{r:#?}");
    let again = idp.live_refresh_tokens("rot");
    assert_eq!(std::fs::read_to_string(&rt_file).unwrap(), again[0]);
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_expires_in_reports_null_and_the_default() {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    idp.register_client(
        ClientSpec::new("noexp", SECRET)
            .with_rotation(false)
            .with_token_shape(TokenShape {
                expires_in: ExpiresInShape::Omit,
                token_type: "bearer".to_owned(),
            }),
    );
    let rt = idp.issue_refresh_token("noexp").unwrap();
    let r = probe(args(&idp, "noexp", &rt, &[])).await;
    assert_no_secrets(&r, &[&rt]);
    let v = r.json();
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(v["expires_in_secs"], Value::Null);
    let summary = v["summary"].as_str().unwrap();
    assert!(summary.starts_with("token received (bearer, "), "{summary}");
    assert!(summary.contains("default lifetime of 1h"), "{summary}");
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_with_post_auth_and_parameters() {
    let (idp, _rt) = server("cc", false).await;
    let r = probe(vec![
        "probe".to_owned(),
        "--token-url".to_owned(),
        idp.token_url(),
        "--client-id".to_owned(),
        "cc".to_owned(),
        "--client-secret".to_owned(),
        SECRET.to_owned(),
        "--grant".to_owned(),
        "client_credentials".to_owned(),
        "--auth-method".to_owned(),
        "post".to_owned(),
        "--scope".to_owned(),
        "read".to_owned(),
        "--scope".to_owned(),
        "write".to_owned(),
        "--resource".to_owned(),
        "https://mcp.example.com".to_owned(),
        "--audience".to_owned(),
        "mcp".to_owned(),
        "--json".to_owned(),
    ])
    .await;
    assert_no_secrets(&r, &[]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(r.json()["outcome"], "ok");
    let req = idp.last_request("cc").unwrap();
    assert_eq!(req.auth, AuthMethod::Post);
    assert_eq!(req.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(req.scope(), Some("read write"));
    assert_eq!(req.resources(), ["https://mcp.example.com"]);
    assert_eq!(req.audiences(), ["mcp"]);
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_with_post_auth() {
    let (idp, rt) = server("app", false).await;
    let r = probe(args(&idp, "app", &rt, &["--auth-method", "post"])).await;
    assert_no_secrets(&r, &[&rt]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert_eq!(idp.last_request("app").unwrap().auth, AuthMethod::Post);
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_failures_are_transient() {
    let (idp, rt) = server("app", false).await;
    let cases: Vec<(&str, Fault, Expect)> = vec![
        (
            "HTML 403",
            Fault::HtmlForbidden,
            Expect::transient("infrastructure_4xx", Some(403)),
        ),
        (
            "JSON 403 without error",
            Fault::JsonForbiddenNoError,
            Expect::transient("infrastructure_4xx", Some(403)),
        ),
        (
            "429 with Retry-After seconds",
            Fault::TooManyRequests {
                retry_after: Some(RetryAfter::Seconds(120)),
                slow_down_body: false,
            },
            Expect::transient("rate_limited", Some(429)).retry_after(120),
        ),
        (
            "429 with slow_down",
            Fault::TooManyRequests {
                retry_after: None,
                slow_down_body: true,
            },
            Expect::transient("rate_limited", Some(429)).code("slow_down"),
        ),
        (
            "503 with Retry-After",
            Fault::ServiceUnavailable {
                retry_after: Some(RetryAfter::Seconds(30)),
            },
            Expect::transient("server_5xx", Some(503)).retry_after(30),
        ),
        (
            "500 empty",
            Fault::ServerErrorEmpty(500),
            Expect::transient("server_5xx", Some(500)),
        ),
        (
            "502 HTML",
            Fault::ServerError(502),
            Expect::transient("server_5xx", Some(502)),
        ),
        (
            "huge 503 page",
            Fault::HugeBody {
                status: 503,
                bytes: 1 << 20,
            },
            Expect::transient("server_5xx", Some(503)),
        ),
    ];
    for (label, fault, e) in cases {
        fault_case(&idp, "app", &rt, label, fault, &e).await;
    }

    // A Retry-After date ten minutes ahead: whole-second HTTP-date, read against the probe's
    // own clock, so anything in (8 min, 10 min] is right.
    let at = SystemTime::now() + Duration::from_secs(600);
    let v = fault_case(
        &idp,
        "app",
        &rt,
        "429 with Retry-After date",
        Fault::TooManyRequests {
            retry_after: Some(RetryAfter::Date(at)),
            slow_down_body: false,
        },
        &Expect::transient("rate_limited", Some(429)).any_retry_after(),
    )
    .await;
    let secs = v["retry_after_secs"].as_u64().unwrap();
    assert!((480..=600).contains(&secs), "retry_after_secs = {secs}");
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_oauth_errors_decide_by_code() {
    let (idp, rt) = server("app", false).await;
    let oauth = |status, code: &str| Fault::OAuthError {
        status,
        code: code.to_owned(),
    };
    let cases: Vec<(&str, Fault, Expect)> = vec![
        (
            "invalid_grant 400",
            oauth(400, "invalid_grant"),
            Expect::permanent(400, "invalid_grant"),
        ),
        (
            "invalid_client 401",
            oauth(401, "invalid_client"),
            Expect::permanent(401, "invalid_client"),
        ),
        (
            "temporarily_unavailable 400",
            oauth(400, "temporarily_unavailable"),
            Expect::transient("oauth_retryable", Some(400)).code("temporarily_unavailable"),
        ),
        (
            "form-encoded invalid_grant 400",
            Fault::OAuthErrorForm {
                status: 400,
                code: "invalid_grant".to_owned(),
            },
            Expect::permanent(400, "invalid_grant"),
        ),
        (
            // A code on a 2xx is no verdict without a vendor row.
            "200 with an error body",
            Fault::OkError {
                code: "invalid_grant".to_owned(),
            },
            Expect::transient("oauth_unknown_code", Some(200)).code("invalid_grant"),
        ),
    ];
    for (label, fault, e) in cases {
        fault_case(&idp, "app", &rt, label, fault, &e).await;
    }
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_successes_redirects_and_drops_are_transient() {
    let (idp, rt) = server("app", false).await;
    let cases: Vec<(&str, Fault, Expect)> = vec![
        (
            "200 HTML",
            Fault::OkHtml,
            Expect::transient("malformed_success", Some(200)),
        ),
        (
            "200 JSON without access_token",
            Fault::OkJsonWithoutToken,
            Expect::transient("malformed_success", Some(200)),
        ),
        (
            "redirect",
            Fault::Redirect,
            Expect::transient("redirect", Some(302)),
        ),
        ("drop", Fault::Drop, Expect::transient("eof", None)),
    ];
    for (label, fault, e) in cases {
        fault_case(&idp, "app", &rt, label, fault, &e).await;
    }
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_rejections_are_permanent() {
    let (idp, rt) = server("app", false).await;

    // A wrong client secret: the server's own invalid_client.
    let mut wrong = args(&idp, "app", &rt, &[]);
    let i = wrong.iter().position(|a| a == SECRET).unwrap();
    wrong[i] = "cs-wrong-secret-0815".to_owned();
    let r = probe(wrong).await;
    assert_no_secrets(&r, &[&rt, "cs-wrong-secret-0815"]);
    check(
        "wrong secret",
        &r,
        &Expect::permanent(401, "invalid_client"),
    );

    // A revoked refresh token: the server's own invalid_grant.
    assert!(idp.revoke_refresh_token(&rt));
    let r = probe(args(&idp, "app", &rt, &[])).await;
    assert_no_secrets(&r, &[&rt]);
    check("revoked", &r, &Expect::permanent(400, "invalid_grant"));

    // The human form explains the consequence.
    let mut human = args(&idp, "app", &rt, &[]);
    human.retain(|a| a != "--json");
    let r = probe(human).await;
    assert_eq!(r.code, Some(11), "{r:#?}");
    assert!(
        r.stdout.contains(
            "the workload would become unauthenticated until new credentials are supplied"
        ),
        "{r:#?}"
    );
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_times_out() {
    let (idp, rt) = server("slow", false).await;
    idp.set_fault(
        FaultScope::Client("slow".to_owned()),
        Fault::SlowBody {
            chunk_bytes: 1,
            interval: Duration::from_millis(500),
        },
        Times::Next(1),
    );
    let r = probe(args(&idp, "slow", &rt, &["--timeout", "1s"])).await;
    assert_no_secrets(&r, &[&rt]);
    check("slow body", &r, &Expect::transient("timeout", None));

    // Human form: the retry explanation.
    idp.set_fault(FaultScope::Global, Fault::HtmlForbidden, Times::Next(1));
    let mut human = args(&idp, "slow", &rt, &[]);
    human.retain(|a| a != "--json");
    let r = probe(human).await;
    assert_eq!(r.code, Some(10), "{r:#?}");
    assert!(
        r.stdout.contains("tokenvisor would back off and retry"),
        "{r:#?}"
    );
    assert!(
        r.stdout.contains("the workload would show auth_retrying"),
        "{r:#?}"
    );
    idp.shutdown().await;
}

#[test]
fn connection_refused_is_transient() {
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/token");
    let r = run(&[
        "probe",
        "--token-url",
        &url,
        "--client-id",
        "x",
        "--client-secret",
        SECRET,
        "--grant",
        "client_credentials",
        "--json",
    ]);
    assert_no_secrets(&r, &[]);
    check("refused", &r, &Expect::transient("connect", None));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_str().unwrap();
    let url = "http://127.0.0.1:9/token";
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("no flags", vec!["probe"]),
        ("no grant", vec!["--token-url", url, "--client-id", "c"]),
        (
            "no token url",
            vec!["--client-id", "c", "--grant", "client_credentials"],
        ),
        (
            "no client id",
            vec!["--token-url", url, "--grant", "client_credentials"],
        ),
        (
            "client_credentials with a refresh token",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grant",
                "client_credentials",
                "--refresh-token",
                "rt_x",
            ],
        ),
        (
            "refresh_token grant without a token",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grant",
                "refresh_token",
            ],
        ),
        (
            "two refresh tokens",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--refresh-token",
                "a",
                "--refresh-token-file",
                missing,
            ],
        ),
        (
            "two client secrets",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grant",
                "client_credentials",
                "--client-secret",
                "s",
                "--client-secret-file",
                missing,
            ],
        ),
        (
            "unknown grant",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grant",
                "password",
            ],
        ),
        (
            "unknown auth method",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grant",
                "client_credentials",
                "--auth-method",
                "jwt",
            ],
        ),
        (
            "bad timeout",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grant",
                "client_credentials",
                "--timeout",
                "soon",
            ],
        ),
        (
            "zero timeout",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grant",
                "client_credentials",
                "--timeout",
                "0s",
            ],
        ),
        (
            "not an http URL",
            vec![
                "--token-url",
                "ftp://idp/token",
                "--client-id",
                "c",
                "--grant",
                "client_credentials",
            ],
        ),
        (
            "missing secret file",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grant",
                "client_credentials",
                "--client-secret-file",
                missing,
            ],
        ),
        (
            "empty refresh token file",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--refresh-token-file",
                empty,
            ],
        ),
        (
            "write-back without a file",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--refresh-token",
                "rt_x",
                "--write-back",
            ],
        ),
        (
            "unknown flag",
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grant",
                "client_credentials",
                "--frobnicate",
            ],
        ),
    ];
    for (label, mut argv) in cases {
        if argv.first() != Some(&"probe") {
            argv.insert(0, "probe");
        }
        let r = run(&argv);
        assert_eq!(r.code, Some(2), "{label}: {r:#?}");
        assert!(r.stdout.is_empty(), "{label}: {r:#?}");
        assert!(r.stderr.contains("error"), "{label}: {r:#?}");
    }

    // The secret-file errors name the file.
    let r = run(&[
        "probe",
        "--token-url",
        url,
        "--client-id",
        "c",
        "--grant",
        "client_credentials",
        "--client-secret-file",
        missing,
    ]);
    assert!(r.stderr.contains(missing), "{r:#?}");
}

#[test]
fn help_documents_that_probing_spends_a_refresh_token() {
    let r = run(&["probe", "--help"]);
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(
        r.stdout.contains("probing spends a refresh token"),
        "{r:#?}"
    );
    assert!(r.stdout.contains("--write-back"), "{r:#?}");
}

/// A framework's JSON 403 (Spring Boot's default body) is no verdict, an unknown code is
/// transient with a hint naming `permanent_codes`, a Slack-style 200 `"ok":false` is final,
/// and vendor rate-limit headers are reported as `retry_after_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_need_an_oauth_shape_and_vendor_holds_are_reported() {
    let (idp, rt) = server("app", false).await;
    let raw = |status: u16, headers: &[(&str, &str)], body: &str| Fault::Raw {
        status,
        content_type: Some("application/json".into()),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.to_owned(),
    };
    // Two hours ahead in epoch seconds: clamped to the default max_retry_after (1 h), so the
    // report does not depend on when the probe runs.
    let in_2h = (SystemTime::now() + Duration::from_secs(7200))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let cases: Vec<(&str, Fault, Expect)> = vec![
        (
            "Spring Boot 403",
            raw(
                403,
                &[],
                r#"{"timestamp":"2026-09-21T14:13:20.000+00:00","status":403,"error":"Forbidden","path":"/oauth2/token"}"#,
            ),
            Expect::transient("infrastructure_4xx", Some(403)),
        ),
        (
            "401 Unauthorized",
            raw(401, &[], r#"{"error":"Unauthorized"}"#),
            Expect::transient("infrastructure_4xx", Some(401)),
        ),
        (
            "unknown code",
            raw(400, &[], r#"{"error":"account_locked"}"#),
            Expect::transient("oauth_unknown_code", Some(400)).code("account_locked"),
        ),
        (
            "Slack ok:false",
            raw(200, &[], r#"{"ok":false,"error":"invalid_refresh_token"}"#),
            Expect::permanent(200, "invalid_refresh_token"),
        ),
        (
            "429 X-RateLimit-Reset delta",
            raw(429, &[("X-RateLimit-Reset", "30")], "{}"),
            Expect::transient("rate_limited", Some(429)).retry_after(30),
        ),
        (
            "403 GitHub secondary limit (epoch, remaining 0)",
            raw(
                403,
                &[
                    ("x-ratelimit-reset", in_2h.as_str()),
                    ("x-ratelimit-remaining", "0"),
                ],
                r#"{"message":"You have exceeded a secondary rate limit"}"#,
            ),
            Expect::transient("infrastructure_4xx", Some(403)).retry_after(3600),
        ),
        (
            "503 IETF RateLimit",
            raw(503, &[("RateLimit", "limit=10, remaining=0, reset=7")], ""),
            Expect::transient("server_5xx", Some(503)).retry_after(7),
        ),
    ];
    for (label, fault, e) in cases {
        fault_case(&idp, "app", &rt, label, fault, &e).await;
    }

    // The human form tells how to make an unknown code final.
    idp.set_fault(
        FaultScope::Client("app".to_owned()),
        raw(400, &[], r#"{"error":"account_locked"}"#),
        Times::Next(1),
    );
    let mut human = args(&idp, "app", &rt, &[]);
    human.retain(|a| a != "--json");
    let r = probe(human).await;
    assert_eq!(r.code, Some(10), "{r:#?}");
    assert!(
        r.stdout.contains(
            "unknown error code \"account_locked\" treated as transient; add it to \
             permanent_codes if it is final"
        ),
        "{r:#?}"
    );
    idp.shutdown().await;
}

/// The provider flags are checked by the configuration's own rules: a usage error (exit 2)
/// naming the flag, before any request.
#[test]
fn provider_flags_are_checked_like_the_configuration() {
    let keys =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tokenvisor/tests/fixtures/keys");
    let public = keys.join("rsa.pub.pem");
    let public = public.to_str().unwrap();
    let ec = keys.join("ec256.pem");
    let ec = ec.to_str().unwrap();
    let url = "http://127.0.0.1:9/token";
    let base = ["probe", "--client-id", "c", "--grant", "client_credentials"];
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "reserved extra param",
            vec!["--token-url", url, "--extra-param", "scope=x"],
            "cannot be overridden (use scopes)",
        ),
        (
            "extra param without =",
            vec!["--token-url", url, "--extra-param", "tenant"],
            "must be NAME=VALUE",
        ),
        (
            "a key for the method",
            vec!["--token-url", url, "--auth-method", "private_key_jwt"],
            "needs --client-key-file",
        ),
        (
            "a public key",
            vec!["--token-url", url, "--client-key-file", public],
            "--client-key-file: ",
        ),
        (
            "an alg not fitting the key",
            vec![
                "--token-url",
                url,
                "--client-key-file",
                ec,
                "--client-assertion-alg",
                "RS256",
            ],
            "does not fit the key",
        ),
        (
            "a certificate for tls_client_auth",
            vec![
                "--token-url",
                url,
                "--auth-method",
                "tls_client_auth",
                "--client-key-file",
                ec,
            ],
            "needs --client-cert-file",
        ),
        (
            "not a certificate",
            vec!["--token-url", url, "--ca-file", ec],
            "--ca-file: ",
        ),
        (
            "a socks proxy",
            vec!["--token-url", url, "--proxy", "socks5://127.0.0.1:1080"],
            "--proxy: must be an http",
        ),
        (
            "an http issuer",
            vec!["--issuer", "http://idp.example.com"],
            "must be an https URL",
        ),
        (
            "an issuer with a query",
            vec!["--issuer", "https://idp.example.com/?a=b"],
            "no user:password, query",
        ),
        (
            "issuer and token url",
            vec!["--issuer", "https://idp.example.com", "--token-url", url],
            "cannot be used with",
        ),
        (
            "no_proxy without proxy",
            vec!["--token-url", url, "--no-proxy", "localhost"],
            "--proxy",
        ),
    ];
    for (label, argv, reason) in cases {
        let argv: Vec<&str> = base.iter().copied().chain(argv).collect();
        let r = run(&argv);
        assert_eq!(r.code, Some(2), "{label}: {r:#?}");
        assert!(r.stdout.is_empty(), "{label}: {r:#?}");
        assert!(
            r.stderr.contains(reason),
            "{label}: {reason:?} not in {r:#?}"
        );
    }
}
