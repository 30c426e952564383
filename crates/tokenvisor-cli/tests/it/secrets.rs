//! Secrets never leak (issue 6 §4): a daemon holding known, distinctive secret values (client
//! secrets inline, in a file and in an environment variable; refresh tokens in files, rotated
//! and supplied through the API; the admin token) runs with `RUST_LOG=trace`, in text and in
//! JSON log format, through every fault: the IdP's WAF page, 429 and 503 with `Retry-After`,
//! a trickled body, a dropped connection, a huge page, an HTML 200, `invalid_grant`; and a
//! token endpoint that echoes the request's own secrets back (raw, percent-encoded,
//! JSON-escaped) in HTML titles, plain text, `error_description`, form bodies and even as
//! the `error` code. The admin API is driven through every route (list, get, refresh,
//! credentials PUT with new secret values, token delivery, metrics, wrong bearers, bad and
//! oversized bodies), then SIGHUP and SIGTERM.
//!
//! Afterwards every secret value, in every spelling, is searched for in the captured stderr,
//! every file of the status directory, every admin API answer (the token endpoint's
//! `access_token` field excepted: delivering it is its job) and the metrics text: none may
//! appear. Access and refresh tokens minted by the servers are searched for too.
//!
//! A library-level test covers what the daemon has no trigger for: a token actor made to
//! panic (`Runtime::inject_crash`) until its restart budget is spent; the panic messages, the
//! supervisor's `ActorFailed` logs (captured through a tracing subscriber) and the `error`
//! status file carry no secret.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::common::has_token_like;
use crate::harness::{
    Admin, Answer, Canned, Launch, PATIENCE, POLL, ScriptServer, Seen, files_under, form_encode,
    poll_until, start_daemon, status_of, wait_until_within, write,
};
use tokenvisor_core::WorkloadStatus;
use tokenvisor_idp::{ClientSpec, Fault, FaultScope, IdpConfig, IdpServer, RetryAfter, Times};

/// The admin API's bearer token.
const ADMIN_TOKEN: &str = "adm-SECRET/bearer+tok=9f8e7d6c";
/// Client secret of `alpha` at the IdP (basic auth, in a file).
const CS_ALPHA: &str = "cs-ALPHA/Sekr3t+basic=7c41d9";
/// The client secret `alpha` is given later through the API.
const CS_ALPHA_NEW: &str = "cs-ALPHA/NEW+Sekr3t=b02e55";
/// Client secret of `envy` (client_credentials, post auth), from an environment variable.
const CS_ENVY: &str = "cs-ENVY/Sekr3t+env=1a2b3c";
/// The environment variable holding it.
const CS_ENVY_VAR: &str = "TOKENVISOR_TEST_ENVY_SECRET";
/// Client secret of `echo` (post auth, inline in the config).
const CS_ECHO: &str = "cs-ECHO/Sekr3t+post=91fa3e";
/// Refresh token of `echo` at start (in a file).
const RT_ECHO: &str = "rt-ECHO/Refr3sh+tok=5d2c8b";
/// The refresh token the echo endpoint rotates to.
const RT_ECHO_ROTATED: &str = "rt-ECHO/ROTATED+tok=e47a10";
/// Credentials supplied through the API after `echo` became unauthenticated.
const RT_ECHO_SUPPLIED: &str = "rt-ECHO/SUPPLIED+tok=0b9d77";
const CS_ECHO_SUPPLIED: &str = "cs-ECHO/SUPPLIED+sec=c3e8a2";
const RT_ECHO_SUPPLIED_2: &str = "rt-ECHO/SUPPLIED2+tok=66aa01";
/// A secret sent in a refused (malformed or oversized) credentials body.
const RT_REFUSED: &str = "rt-REFUSED/never+kept=d00d42";

/// Every fixed secret value.
const FIXED_SECRETS: &[&str] = &[
    ADMIN_TOKEN,
    CS_ALPHA,
    CS_ALPHA_NEW,
    CS_ENVY,
    CS_ECHO,
    RT_ECHO,
    RT_ECHO_ROTATED,
    RT_ECHO_SUPPLIED,
    CS_ECHO_SUPPLIED,
    RT_ECHO_SUPPLIED_2,
    RT_REFUSED,
];

// ---------------------------------------------------------------------------------------
// spellings

/// JSON string contents of `s` (without the quotes).
fn json_escaped(s: &str) -> String {
    let j = serde_json::to_string(s).unwrap();
    j[1..j.len() - 1].to_owned()
}

fn lower_hex(encoded: &str) -> String {
    let mut out = String::new();
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            if c == '%' {
                hex_left = 2;
            }
            out.push(c);
        }
    }
    out
}

/// Standard base64 with padding (what HTTP Basic carries).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every spelling of `secret` a leak could take: raw, percent-encoded (both hex cases),
/// JSON-escaped (with and without `\/`).
fn spellings(secret: &str) -> Vec<String> {
    let pct = form_encode(secret);
    let json = json_escaped(secret);
    let mut v = vec![
        secret.to_owned(),
        lower_hex(&pct),
        pct,
        json.replace('/', "\\/"),
        json,
    ];
    v.sort();
    v.dedup();
    v
}

/// All secrets of a run and the searches that prove none leaked.
struct Secrets {
    /// Values with the spellings to look for.
    values: Vec<(String, Vec<String>)>,
}

impl Secrets {
    fn new(values: impl IntoIterator<Item = String>) -> Secrets {
        let set: BTreeSet<String> = values.into_iter().collect();
        Secrets {
            values: set
                .into_iter()
                .map(|v| {
                    let s = spellings(&v);
                    (v, s)
                })
                .collect(),
        }
    }

    /// Adds the HTTP Basic credentials of `client_id` with each of `secrets` (base64 of
    /// `urlencode(id):urlencode(secret)`, RFC 6749 §2.3.1).
    fn with_basic(mut self, client_id: &str, secrets: &[&str]) -> Secrets {
        for s in secrets {
            let cred = base64(format!("{}:{}", form_encode(client_id), form_encode(s)).as_bytes());
            self.values
                .push((format!("Basic credentials of {client_id}"), vec![cred]));
        }
        self
    }

    /// Fails when `text` (from `origin`) contains a secret, or a token minted by the IdP
    /// (`rt_…`, `at_…`) or the script server (`at_script…`).
    fn assert_absent(&self, origin: &str, text: &str) {
        for (value, spellings) in &self.values {
            for s in spellings {
                if text.contains(s.as_str()) {
                    panic!(
                        "{origin}: secret {value:?} leaked as {s:?}:\n…{}…",
                        excerpt_around(text, s)
                    );
                }
            }
        }
        for prefix in ["rt_", "at_"] {
            assert!(
                !has_token_like(text, prefix),
                "{origin}: a token {prefix}… leaked:\n{}",
                excerpt_around(text, prefix)
            );
        }
    }
}

/// A few hundred bytes of `text` around the first `needle`.
fn excerpt_around(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let mut from = at.saturating_sub(200);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (at + needle.len() + 200).min(text.len());
    while !text.is_char_boundary(to) {
        to += 1;
    }
    text[from..to].to_owned()
}

// ---------------------------------------------------------------------------------------
// the daemon run

/// What the echo endpoint puts in an answer: the request's refresh token and client secret
/// (decoded, i.e. raw), and the whole form body as sent (percent-encoded).
fn echoed(s: &Seen) -> (String, String, String) {
    (
        s.param("refresh_token").unwrap_or("").to_owned(),
        s.param("client_secret").unwrap_or("").to_owned(),
        String::from_utf8_lossy(&s.raw).into_owned(),
    )
}

/// The echo endpoint's hostile answers: `(what, responder, expected status, kind)`.
type EchoCase = (
    &'static str,
    Box<dyn Fn(&Seen) -> Canned + Send + Sync>,
    WorkloadStatus,
    &'static str,
);

fn echo_cases() -> Vec<EchoCase> {
    vec![
        (
            "403 HTML whose title and body echo the secrets",
            Box::new(|s: &Seen| {
                let (rt, cs, form) = echoed(s);
                Canned::new(
                    403,
                    "text/html",
                    format!(
                        "<html><head><title>Blocked {rt} {cs}</title></head><body>request: {form}</body></html>"
                    ),
                )
            }),
            WorkloadStatus::AuthRetrying,
            "infrastructure_4xx",
        ),
        (
            "403 HTML without a title: the secrets first in the text",
            Box::new(|s: &Seen| {
                let (rt, cs, form) = echoed(s);
                Canned::new(
                    403,
                    "text/html",
                    format!("<p>{rt}</p>\n<p>{cs}</p><p>{form}</p>"),
                )
            }),
            WorkloadStatus::AuthRetrying,
            "infrastructure_4xx",
        ),
        (
            "429 plain text echoing the form body, with Retry-After",
            Box::new(|s: &Seen| {
                let (_, _, form) = echoed(s);
                Canned::new(429, "text/plain", format!("rate limited: {form}"))
                    .header("retry-after", "1")
            }),
            WorkloadStatus::AuthRetrying,
            "rate_limited",
        ),
        (
            "503 JSON temporarily_unavailable with the secrets in error_description",
            Box::new(|s: &Seen| {
                let (rt, cs, form) = echoed(s);
                let body = serde_json::json!({
                    "error": "temporarily_unavailable",
                    "error_description": format!("rt={rt} cs={cs} form={form}"),
                    "error_uri": format!("https://idp.example/e?rt={}", form_encode(&rt)),
                });
                Canned::new(503, "application/json", body.to_string())
            }),
            WorkloadStatus::AuthRetrying,
            "server_5xx",
        ),
        (
            "500 with the raw form as its body",
            Box::new(|s: &Seen| {
                Canned::new(500, "application/x-www-form-urlencoded", s.raw.clone())
            }),
            WorkloadStatus::AuthRetrying,
            "server_5xx",
        ),
        (
            "200 HTML echoing the secrets",
            Box::new(|s: &Seen| {
                let (rt, cs, _) = echoed(s);
                Canned::new(200, "text/html", format!("<title>{rt}</title>{cs}"))
            }),
            WorkloadStatus::AuthRetrying,
            "malformed_success",
        ),
        (
            "200 form error with the secrets percent-encoded",
            Box::new(|s: &Seen| {
                let (rt, cs, _) = echoed(s);
                Canned::new(
                    200,
                    "application/x-www-form-urlencoded",
                    format!(
                        "error=server_error&error_description={}%20{}",
                        form_encode(&rt),
                        form_encode(&cs)
                    ),
                )
            }),
            WorkloadStatus::AuthRetrying,
            "oauth_retryable",
        ),
        (
            "400 invalid_grant echoing the refresh token (JSON-escaped with \\/)",
            Box::new(|s: &Seen| {
                let (rt, cs, _) = echoed(s);
                let desc =
                    serde_json::to_string(&format!("refresh token {rt} of client {cs} is revoked"))
                        .unwrap()
                        .replace('/', "\\/");
                Canned::new(
                    400,
                    "application/json",
                    format!(r#"{{"error":"invalid_grant","error_description":{desc}}}"#),
                )
            }),
            WorkloadStatus::Unauthenticated,
            "oauth_rejected",
        ),
        (
            // Not an OAuth code (upper case, '/'): the body is quoted, scrubbed.
            "400 whose error code is the refresh token itself",
            Box::new(|s: &Seen| {
                let (rt, cs, _) = echoed(s);
                let body = serde_json::json!({ "error": rt, "error_description": cs });
                Canned::new(400, "application/json", body.to_string())
            }),
            WorkloadStatus::AuthRetrying,
            "infrastructure_4xx",
        ),
        (
            "200 Slack-style ok:false invalid_refresh_token echoing the secrets",
            Box::new(|s: &Seen| {
                let (rt, cs, form) = echoed(s);
                let body = serde_json::json!({
                    "ok": false,
                    "error": "invalid_refresh_token",
                    "error_description": format!("{rt} {cs}"),
                    "warning": form,
                });
                Canned::new(200, "application/json", body.to_string())
            }),
            WorkloadStatus::Unauthenticated,
            "oauth_rejected",
        ),
    ]
}

/// The IdP faults `alpha` goes through: `(fault, expected kind)`. (Not the trickled body: the
/// IdP rotates the refresh token before trickling, and a client that gives up mid-body has
/// lost the rotated one; `envy` gets that fault.)
fn idp_faults() -> Vec<(Fault, &'static str)> {
    vec![
        (Fault::HtmlForbidden, "infrastructure_4xx"),
        (Fault::JsonForbiddenNoError, "infrastructure_4xx"),
        (
            Fault::TooManyRequests {
                retry_after: Some(RetryAfter::Seconds(1)),
                slow_down_body: true,
            },
            "rate_limited",
        ),
        (
            Fault::ServiceUnavailable {
                retry_after: Some(RetryAfter::Seconds(1)),
            },
            "server_5xx",
        ),
        (Fault::ServerError(502), "server_5xx"),
        (
            Fault::OAuthErrorForm {
                status: 400,
                code: "temporarily_unavailable".to_owned(),
            },
            "oauth_retryable",
        ),
        (Fault::OkHtml, "malformed_success"),
        (Fault::Redirect, "redirect"),
        (
            Fault::HugeBody {
                status: 403,
                bytes: 1 << 20,
            },
            "infrastructure_4xx",
        ),
        (Fault::Drop, "eof"),
    ]
}

struct Run {
    tmp: tempfile::TempDir,
}

impl Run {
    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn status_dir(&self) -> std::path::PathBuf {
        self.dir().join("statuses")
    }
}

fn config(
    dir: &Path,
    idp: &IdpServer,
    echo: &ScriptServer,
    log_format: &str,
) -> std::path::PathBuf {
    write(&dir.join("admin.token"), &format!("{ADMIN_TOKEN}\n"));
    write(&dir.join("alpha.secret"), &format!("{CS_ALPHA}\n"));
    write(&dir.join("echo.rt"), &format!("{RT_ECHO}\n"));
    let text = format!(
        r#"[service]
status_dir = "statuses"
admin_listen = "127.0.0.1:0"
admin_token_file = "admin.token"
log_format = "{log_format}"
log_level = "trace"

[defaults]
request_timeout = "1s"
connect_timeout = "1s"
backoff_initial = "100ms"
backoff_max = "500ms"
max_retry_after = "2s"
give_up_after = "0s"

[[workload]]
name = "alpha"
token_url = "{idp_url}"
client_id = "alpha"
client_secret_file = "alpha.secret"
auth_method = "basic"
grant = "refresh_token"
refresh_token_file = "alpha.rt"
token_sink_file = "alpha.token"

[[workload]]
name = "envy"
token_url = "{idp_url}"
client_id = "envy"
client_secret_env = "{CS_ENVY_VAR}"
auth_method = "post"
grant = "client_credentials"

[[workload]]
name = "echo"
token_url = "{echo_url}"
client_id = "echo"
client_secret = "{CS_ECHO}"
auth_method = "post"
grant = "refresh_token"
refresh_token_file = "echo.rt"
"#,
        idp_url = idp.token_url(),
        echo_url = echo.token_url(),
    );
    let path = dir.join("tokenvisor.toml");
    write(&path, &text);
    path
}

fn is(dir: &Path, name: &str, want: WorkloadStatus) -> bool {
    status_of(dir, name).is_some_and(|r| r.status == want)
}

/// Waits until `name` shows `status` with a last error of `kind`.
async fn wait_error(status_dir: &Path, name: &str, status: WorkloadStatus, kind: &str) {
    let ok = poll_until(PATIENCE, POLL, || {
        status_of(status_dir, name).is_some_and(|r| {
            r.status == status
                && r.token
                    .as_ref()
                    .and_then(|t| t.last_error.as_ref())
                    .is_some_and(|e| e.kind == kind)
        })
    })
    .await;
    assert!(
        ok,
        "timed out waiting for {name} {status:?} with {kind}; last status: {:#?}",
        status_of(status_dir, name)
    );
}

async fn wait_running(status_dir: &Path, name: &str) {
    let ok = poll_until(PATIENCE, POLL, || {
        is(status_dir, name, WorkloadStatus::Running)
    })
    .await;
    assert!(
        ok,
        "timed out waiting for {name} running; last status: {:#?}",
        status_of(status_dir, name)
    );
}

/// Every status file's contents at each moment the run looked (files are overwritten: a
/// state the run passes through is searched as it was).
type Snapshots = Mutex<Vec<(String, String)>>;

/// Reads every admin view of every workload (list, get, token) and copies every status file,
/// so that each state the run passes through is searched too.
async fn look(admin: &Admin, status_dir: &Path, snapshots: &Snapshots) {
    for f in files_under(status_dir) {
        if let Ok(bytes) = std::fs::read(&f) {
            snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((
                    f.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
        }
    }
    admin.call("GET", "/v1/workloads", None).await;
    for name in ["alpha", "envy", "echo"] {
        admin
            .call("GET", &format!("/v1/workloads/{name}"), None)
            .await;
        admin
            .call("GET", &format!("/v1/workloads/{name}/token"), None)
            .await;
    }
}

/// One full run in `log_format`, then the search. `TOKENVISOR_TEST_DUMP_LOG=PATH` also
/// writes the captured log to `PATH.<format>` for inspection.
async fn secret_run(log_format: &str) {
    let run = Run {
        tmp: tempfile::tempdir().unwrap(),
    };
    let dir = run.dir();
    let status_dir = run.status_dir();
    let idp = IdpServer::start(
        IdpConfig::default().with_access_token_lifetime(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    idp.register_client(ClientSpec::new("alpha", CS_ALPHA));
    idp.register_client(ClientSpec::new("envy", CS_ENVY));
    let mut idp_refresh_tokens = vec![idp.issue_refresh_token("alpha").unwrap()];
    write(&dir.join("alpha.rt"), &idp_refresh_tokens[0]);
    let echo = ScriptServer::start().await;
    // Healthy: a token, and a rotated refresh token.
    echo.set(|s| Canned::token(s.n, "3600", Some(RT_ECHO_ROTATED)));
    let cfg = config(dir, &idp, &echo, log_format);
    let d = start_daemon(
        &cfg,
        Launch {
            env: vec![
                ("RUST_LOG".to_owned(), "trace".to_owned()),
                (CS_ENVY_VAR.to_owned(), CS_ENVY.to_owned()),
            ],
            ..Launch::default()
        },
    )
    .await;
    let admin = Admin::new(&d, Some(ADMIN_TOKEN));
    let snapshots = Snapshots::default();
    for name in ["alpha", "envy", "echo"] {
        wait_running(&status_dir, name).await;
    }
    // The rotated refresh token was written back.
    wait_until_within("echo.rt rotated", PATIENCE, || {
        std::fs::read_to_string(dir.join("echo.rt")).is_ok_and(|t| t.trim() == RT_ECHO_ROTATED)
    })
    .await;
    admin.call_as(None, "GET", "/healthz", None).await;
    look(&admin, &status_dir, &snapshots).await;
    admin.metrics().await;

    // ── The IdP's faults, on alpha.
    let alpha = FaultScope::Client("alpha".to_owned());
    for (fault, kind) in idp_faults() {
        idp.set_fault(alpha.clone(), fault.clone(), Times::Always);
        admin
            .call("POST", "/v1/workloads/alpha/refresh", None)
            .await;
        wait_error(&status_dir, "alpha", WorkloadStatus::AuthRetrying, kind).await;
        look(&admin, &status_dir, &snapshots).await;
        idp.clear_fault(&alpha);
        wait_running(&status_dir, "alpha").await;
    }
    // invalid_grant: unauthenticated. Then new credentials, including a new client secret.
    idp.set_fault(
        alpha.clone(),
        Fault::OAuthError {
            status: 400,
            code: "invalid_grant".to_owned(),
        },
        Times::Always,
    );
    admin
        .call("POST", "/v1/workloads/alpha/refresh", None)
        .await;
    wait_error(
        &status_dir,
        "alpha",
        WorkloadStatus::Unauthenticated,
        "oauth_rejected",
    )
    .await;
    look(&admin, &status_dir, &snapshots).await;
    let a = admin
        .call("POST", "/v1/workloads/alpha/refresh", None)
        .await;
    assert_eq!(a.status, 409, "{a:?}");
    idp.clear_fault(&alpha);
    idp.register_client(ClientSpec::new("alpha", CS_ALPHA_NEW));
    let new_rt = idp.issue_refresh_token("alpha").unwrap();
    idp_refresh_tokens.push(new_rt.clone());
    let body = serde_json::json!({ "refresh_token": new_rt, "client_secret": CS_ALPHA_NEW });
    let a = admin
        .call(
            "PUT",
            "/v1/workloads/alpha/credentials",
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    wait_running(&status_dir, "alpha").await;
    // envy (client_credentials: no refresh token a trickled answer could rotate away)
    // through a WAF page and a slow-loris body.
    let envy = FaultScope::Client("envy".to_owned());
    for (fault, kind) in [
        (Fault::HtmlForbidden, "infrastructure_4xx"),
        (
            Fault::SlowBody {
                chunk_bytes: 1,
                interval: Duration::from_millis(300),
            },
            "timeout",
        ),
    ] {
        idp.set_fault(envy.clone(), fault, Times::Always);
        admin.call("POST", "/v1/workloads/envy/refresh", None).await;
        wait_error(&status_dir, "envy", WorkloadStatus::AuthRetrying, kind).await;
        look(&admin, &status_dir, &snapshots).await;
        idp.clear_fault(&envy);
        wait_running(&status_dir, "envy").await;
    }

    // ── The echo endpoint, on echo.
    let mut supplied = [
        (RT_ECHO_SUPPLIED, CS_ECHO_SUPPLIED),
        (RT_ECHO_SUPPLIED_2, CS_ECHO_SUPPLIED),
    ]
    .into_iter();
    for (what, responder, status, kind) in echo_cases() {
        echo.set(responder);
        let a = admin.call("POST", "/v1/workloads/echo/refresh", None).await;
        assert_eq!(a.status, 202, "{what}: {a:?}");
        wait_error(&status_dir, "echo", status, kind).await;
        look(&admin, &status_dir, &snapshots).await;
        echo.set(|s| Canned::token(s.n, "3600", Some(RT_ECHO_ROTATED)));
        if status == WorkloadStatus::Unauthenticated {
            let (rt, cs) = supplied.next().unwrap();
            let body = serde_json::json!({ "refresh_token": rt, "client_secret": cs });
            let a = admin
                .call(
                    "PUT",
                    "/v1/workloads/echo/credentials",
                    Some(body.to_string().into_bytes()),
                )
                .await;
            assert_eq!(a.status, 204, "{what}: {a:?}");
        }
        wait_running(&status_dir, "echo").await;
    }

    // ── Admin API misuse carrying secrets: wrong bearers, refused bodies.
    for auth in [
        None,
        Some(format!("Bearer {RT_REFUSED}")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
    ] {
        let a = admin.call_as(auth, "GET", "/v1/workloads", None).await;
        assert_eq!(a.status, 401, "{a:?}");
    }
    for body in [
        format!(r#"{{"refresh_token":"{RT_REFUSED}","unknown":"{RT_REFUSED}"}}"#),
        format!(r#"{{"refresh_token":["{RT_REFUSED}"]}}"#),
        format!(r#"{{"refresh_token":"{RT_REFUSED}""#),
        format!(r#"{{"refresh_token":"{RT_REFUSED}","refresh_token":"{RT_REFUSED}"}}"#),
        format!(
            r#"{{"refresh_token":"{RT_REFUSED}{}"}}"#,
            " ".repeat(20_000)
        ),
    ] {
        let a = admin
            .call(
                "PUT",
                "/v1/workloads/echo/credentials",
                Some(body.into_bytes()),
            )
            .await;
        assert!(a.status == 400 || a.status == 413, "{a:?}");
    }
    let a = admin
        .call(
            "PUT",
            "/v1/workloads/envy/credentials",
            Some(format!(r#"{{"refresh_token":"{RT_REFUSED}"}}"#).into_bytes()),
        )
        .await;
    assert_eq!(a.status, 400, "{a:?}");

    // ── SIGHUP (the same file: nothing changes, everything is logged at trace), metrics.
    d.signal("-HUP");
    d.wait_log("SIGHUP: reloaded").await;
    look(&admin, &status_dir, &snapshots).await;
    let metrics = admin.metrics().await;
    assert!(
        metrics.contains("tokenvisor_refresh_attempts_total"),
        "{metrics}"
    );

    // ── SIGTERM: a clean exit with every status flushed.
    let mut d = d;
    d.signal("-TERM");
    assert_eq!(d.wait_exit().await, Some(0), "{}", d.log_now());
    let log = d.log_now();
    assert!(
        log.contains("TRACE") || log.contains("\"TRACE\""),
        "not at trace level"
    );
    if let Ok(path) = std::env::var("TOKENVISOR_TEST_DUMP_LOG") {
        std::fs::write(format!("{path}.{log_format}"), &log).unwrap();
    }

    // ── The search.
    let mut values: Vec<String> = FIXED_SECRETS.iter().map(|s| (*s).to_owned()).collect();
    values.extend(idp_refresh_tokens);
    values.extend(idp.live_refresh_tokens("alpha"));
    for f in ["alpha.rt", "echo.rt"] {
        values.push(
            std::fs::read_to_string(dir.join(f))
                .unwrap()
                .trim()
                .to_owned(),
        );
    }
    let secrets = Secrets::new(values).with_basic("alpha", &[CS_ALPHA, CS_ALPHA_NEW]);

    secrets.assert_absent(&format!("stderr ({log_format} log at trace)"), &log);
    let files = files_under(&status_dir);
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        secrets.assert_absent(&format!("status file {}", f.display()), &text);
    }
    let snapshots = snapshots
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    assert!(snapshots.len() > 50, "{} snapshots", snapshots.len());
    for (path, text) in &snapshots {
        secrets.assert_absent(&format!("status file {path} during the run"), text);
    }
    let mut tokens_delivered = 0;
    for a in admin.answers() {
        let Answer {
            what,
            headers,
            body,
            ..
        } = &a;
        secrets.assert_absent(&format!("{what}: headers"), &headers.join("\n"));
        if what.ends_with("/token") && a.status == 200 {
            // The token endpoint's job is the access token: every other field is searched.
            let mut j = a.json();
            let token = j["access_token"].take();
            assert!(
                token.as_str().is_some_and(|t| t.starts_with("at_")),
                "{a:?}"
            );
            tokens_delivered += 1;
            secrets.assert_absent(what, &j.to_string());
        } else {
            secrets.assert_absent(what, body);
        }
    }
    assert!(tokens_delivered > 10, "{tokens_delivered} tokens delivered");
    secrets.assert_absent("the last metrics scrape", &metrics);
    // The echo endpoint really did see (and send back) the secrets searched for above.
    assert!(echo.requests() > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_leaks_with_text_logs_at_trace() {
    secret_run("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_leaks_with_json_logs_at_trace() {
    secret_run("json").await;
}

// ---------------------------------------------------------------------------------------
// panics (library level: the daemon has no crash trigger)

/// Everything the tracing subscriber of this test binary wrote.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static CAPTURE: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let writer = move || Capture(sink.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(false)
            .with_writer(writer)
            .try_init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every panic message of this test binary (the default hook still prints them).
fn panics() -> &'static Arc<Mutex<Vec<String>>> {
    static PANICS: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(info.to_string());
            previous(info);
        }));
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_messages_and_actor_failed_logs_carry_no_secret() {
    use tokenvisor::spec::{GrantSpec, WorkloadSpec};
    use tokenvisor::testing::{FakeReply, FakeTransport};
    use tokenvisor::{Runtime, RuntimeConfig};
    use tokenvisor_core::{Secret, WorkloadName};

    let logs = captured().clone();
    let panic_messages = panics().clone();
    let tmp = tempfile::tempdir().unwrap();
    let status_dir = tmp.path().join("statuses");
    let fake = FakeTransport::new();
    // Answers that echo the secrets, then tokens.
    fake.push(
        "crashy",
        [FakeReply::Http {
            status: 403,
            content_type: Some("text/html".into()),
            retry_after: None,
            body: format!("<title>{RT_ECHO} {CS_ECHO}</title>"),
        }],
    );
    fake.set_client("crashy", FakeReply::rotating(3600));
    // The state journal holds tokens by design (0600 in a 0700 directory): kept apart from
    // the status files searched below.
    let mut config = RuntimeConfig::new(&status_dir, Arc::new(fake.clone()));
    config.state_dir = Some(status_dir.with_file_name("state"));
    let runtime = Runtime::start(config).await.unwrap();
    let name = WorkloadName::new("crashy").unwrap();
    let spec = WorkloadSpec::new(
        name.clone(),
        "https://idp.example.test/oauth/token".parse().unwrap(),
        "crashy",
        GrantSpec::RefreshToken {
            token: Secret::from(RT_ECHO),
            file: None,
        },
    )
    .with_client_secret(CS_ECHO);
    let handle = runtime.add(spec).await.unwrap();
    wait_until_within("crashy running", PATIENCE, || handle.current().is_ok()).await;
    let served = handle.current().unwrap().expose().to_owned();

    // Crash until the restart budget (3 in 60 s) is spent: restarts, then `error`.
    for i in 0..4 {
        runtime.inject_crash(&name);
        let want = if i < 3 {
            "restarting"
        } else {
            "leaving it down"
        };
        let needle = want.to_owned();
        wait_until_within(&format!("crash {i} handled"), PATIENCE, || {
            let text =
                String::from_utf8_lossy(&logs.lock().unwrap_or_else(PoisonError::into_inner))
                    .into_owned();
            text.matches("token actor crashed").count() > i && (i < 3 || text.contains(&needle))
        })
        .await;
        if i < 3 {
            wait_until_within("crashy back", PATIENCE, || handle.current().is_ok()).await;
        }
    }
    runtime.flush(Duration::from_secs(10)).await.unwrap();
    wait_until_within("status error on disk", PATIENCE, || {
        is(&status_dir, "crashy", WorkloadStatus::Error)
    })
    .await;
    runtime.shutdown(Duration::from_secs(10)).await.unwrap();

    let log =
        String::from_utf8_lossy(&logs.lock().unwrap_or_else(PoisonError::into_inner)).into_owned();
    assert!(
        log.contains("injected crash in token actor crashy"),
        "{log}"
    );
    let messages = panic_messages
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(
        messages
            .iter()
            .filter(|m| m.contains("injected crash"))
            .count()
            >= 4,
        "{messages:?}"
    );
    // (The fake's own tokens, `at-N` and `rt-N`, are too short to search for.)
    assert!(served.starts_with("at-"), "{served}");
    let secrets = Secrets::new(FIXED_SECRETS.iter().map(|s| (*s).to_owned()));
    secrets.assert_absent("tracing logs of the crashes", &log);
    secrets.assert_absent("panic messages", &messages.join("\n"));
    for f in files_under(&status_dir) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        secrets.assert_absent(&format!("status file {}", f.display()), &text);
    }
    let _ = std::io::stderr().flush();
}
