//! Tests of the admin API: a real [`Runtime`] over the in-memory [`FakeTransport`] (real
//! time; the fake answers at once) in a temporary status directory, driven through the
//! router with `tower::ServiceExt::oneshot`. Waits are bounded polls on workload state.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::Value;
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::{Secret, WorkloadName, WorkloadStatus};
use tokenvisor_test_support::wait::wait_until_within;
use tower::ServiceExt as _;

use super::{AdminState, BODY_LIMIT, bearer_token, constant_time_eq, router};

mod cluster;
mod watch;

const ADMIN: &str = "admin-token-0123456789";
const CLIENT_SECRET: &str = "cs-SECRET-7f3a9c";
const REFRESH_TOKEN: &str = "rt-SECRET-b81d42";
const NEW_REFRESH_TOKEN: &str = "rt-SECRET-NEW-55e0";
const NEW_CLIENT_SECRET: &str = "cs-SECRET-NEW-a1b2";

/// Every secret a test hands to the runtime; no response may contain one (the token
/// endpoint's `access_token` is not among them).
const SECRETS: &[&str] = &[
    CLIENT_SECRET,
    REFRESH_TOKEN,
    NEW_REFRESH_TOKEN,
    NEW_CLIENT_SECRET,
    ADMIN,
];

/// The listener address the router is told about; requests name it in `Host`.
const LISTEN: &str = "127.0.0.1:7878";

/// Bound of every wait on state.
const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    _dir: tempfile::TempDir,
    fake: FakeTransport,
    runtime: Runtime,
    app: Router,
    /// The router's state (cluster tests set a view on it).
    state: AdminState,
    token: Option<&'static str>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn assert_no_secret(&self, what: &str) {
        let text = self.text();
        for s in SECRETS {
            assert!(!text.contains(s), "{what}: body contains a secret: {text}");
            for (name, value) in &self.headers {
                assert!(
                    !value.to_str().unwrap_or("").contains(s),
                    "{what}: header {name} contains a secret"
                );
            }
        }
    }
}

fn wn(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap()
}

/// A refresh_token workload with a client secret; its client id is its name.
fn rt_spec(name: &str) -> WorkloadSpec {
    WorkloadSpec::new(
        wn(name),
        "https://idp.example.test/oauth/token".parse().unwrap(),
        name,
        GrantSpec::RefreshToken {
            token: Secret::from(REFRESH_TOKEN),
            file: None,
        },
    )
    .with_client_secret(CLIENT_SECRET)
}

/// A client_credentials workload; its client id is its name.
fn cc_spec(name: &str) -> WorkloadSpec {
    WorkloadSpec::new(
        wn(name),
        "https://idp.example.test/oauth/token".parse().unwrap(),
        name,
        GrantSpec::ClientCredentials,
    )
    .with_client_secret(CLIENT_SECRET)
}

async fn fixture(token: Option<&'static str>) -> Fixture {
    fixture_with(token, None).await
}

async fn fixture_with(
    token: Option<&'static str>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Fixture {
    fixture_full(token, metrics, crate::EventLimits::default()).await
}

/// A fixture with every knob: the admin token, a metrics handle, the event stream's bounds.
async fn fixture_full(
    token: Option<&'static str>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    limits: crate::EventLimits,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    let runtime = Runtime::start(RuntimeConfig::new(
        dir.path().join("statuses"),
        Arc::new(fake.clone()),
    ))
    .await
    .unwrap();
    let state = AdminState::with_event_limits(
        runtime.clone(),
        Secret::from(token.unwrap_or(ADMIN)),
        LISTEN.parse().unwrap(),
        metrics,
        limits,
    );
    Fixture {
        _dir: dir,
        fake,
        runtime,
        app: router(state.clone()),
        state,
        token,
    }
}

impl Fixture {
    /// A request with the fixture's admin token (if any).
    async fn call(&self, method: Method, uri: &str, body: Option<&[u8]>) -> Answer {
        self.call_as(self.token, method, uri, body).await
    }

    /// A request with the given bearer token (or none).
    async fn call_as(
        &self,
        bearer: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<&[u8]>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_vec())))
            .unwrap();
        self.send(req).await
    }

    /// Sends `req`, naming the listener in `Host` unless the request names something.
    async fn send(&self, mut req: Request<Body>) -> Answer {
        req.headers_mut()
            .entry(header::HOST)
            .or_insert(header::HeaderValue::from_static(LISTEN));
        self.send_raw(req).await
    }

    /// Sends `req` as it is.
    async fn send_raw(&self, req: Request<Body>) -> Answer {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        assert_eq!(
            headers.get(header::CACHE_CONTROL).unwrap(),
            "no-store",
            "every answer is no-store"
        );
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn add(&self, spec: WorkloadSpec) {
        self.runtime.add(spec).await.unwrap();
    }

    /// Waits (bounded) until the workload's status record says `want`.
    async fn wait_status(&self, name: &str, want: WorkloadStatus) {
        let h = self.runtime.handle(&wn(name)).await.unwrap().unwrap();
        wait_until_within(&format!("{name} to be {}", want.as_str()), WAIT, || {
            h.status().is_some_and(|r| r.status == want)
                && (want != WorkloadStatus::Running || h.current().is_ok())
        })
        .await;
    }

    async fn shutdown(self) {
        self.runtime
            .shutdown(Duration::from_secs(10))
            .await
            .unwrap();
    }
}

fn assert_json_error(a: &Answer, status: StatusCode) -> String {
    assert_eq!(a.status, status, "{}", a.text());
    let v = a.json();
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {v}"))
        .to_owned()
}

#[tokio::test]
async fn healthz_needs_no_auth_and_counts_workloads() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    f.add(cc_spec("beta")).await;
    let a = f.call_as(None, Method::GET, "/healthz", None).await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["workloads"], 2);
    assert_eq!(v["endpoints_paced"], 0);
    assert_eq!(v["endpoints_below_ceiling"], 0);
    f.shutdown().await;
}

#[tokio::test]
async fn list_and_get_show_status_and_settings() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("beta")).await;
    f.add(cc_spec("alpha")).await;
    f.wait_status("alpha", WorkloadStatus::Running).await;
    f.wait_status("beta", WorkloadStatus::Running).await;

    let a = f.call(Method::GET, "/v1/workloads", None).await;
    assert_eq!(a.status, StatusCode::OK);
    a.assert_no_secret("list");
    let v = a.json();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "alpha", "sorted by name");
    assert_eq!(list[1]["name"], "beta");
    let alpha = &list[0];
    assert_eq!(alpha["status"], "running");
    assert_eq!(alpha["token_state"], "healthy");
    assert_eq!(alpha["grant"], "client_credentials");
    assert_eq!(list[1]["grant"], "refresh_token");
    assert_eq!(alpha["token_url"], "https://idp.example.test/oauth/token");
    assert_eq!(alpha["attempt"], 0);
    assert_eq!(alpha["last_error"], Value::Null);
    for key in [
        "status_context",
        "expires_at",
        "next_attempt_at",
        "last_error",
    ] {
        assert!(alpha.get(key).is_some(), "summary lacks {key}: {alpha}");
    }
    assert!(alpha["expires_at"].as_str().unwrap().ends_with('Z'));

    let a = f
        .call(Method::GET, "/v1/workloads?status=running", None)
        .await;
    assert_eq!(a.json().as_array().unwrap().len(), 2);
    let a = f
        .call(Method::GET, "/v1/workloads?status=unauthenticated", None)
        .await;
    assert_eq!(a.json().as_array().unwrap().len(), 0);
    let a = f
        .call(Method::GET, "/v1/workloads?status=bogus", None)
        .await;
    assert_json_error(&a, StatusCode::BAD_REQUEST);

    let a = f.call(Method::GET, "/v1/workloads/beta", None).await;
    assert_eq!(a.status, StatusCode::OK);
    a.assert_no_secret("get");
    let v = a.json();
    assert_eq!(v["name"], "beta");
    assert_eq!(v["status"], "running");
    assert_eq!(v["client_id"], "beta");
    assert_eq!(v["auth_method"], "basic");
    assert_eq!(v["client_secret_origin"]["kind"], "inline");
    assert_eq!(v["refresh_token_origin"]["kind"], "inline");
    assert_eq!(v["token_available"], true);
    assert_eq!(v["scopes"], serde_json::json!([]));
    assert_eq!(v["resource"], Value::Null);
    assert_eq!(v["policy"]["refresh_at"], 0.8);
    assert_eq!(v["policy"]["backoff_initial"], "5s");
    let a = f.call(Method::GET, "/v1/workloads/alpha", None).await;
    assert_eq!(a.json()["refresh_token_origin"], Value::Null);
    f.shutdown().await;
}

#[tokio::test]
async fn unknown_workloads_paths_and_methods_answer_json_errors() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    for (method, uri, body) in [
        (Method::GET, "/v1/workloads/nope", None),
        (Method::POST, "/v1/workloads/nope/refresh", None),
        (
            Method::PUT,
            "/v1/workloads/nope/credentials",
            Some(br#"{"client_secret":"x"}"#.as_slice()),
        ),
        (Method::GET, "/v1/workloads/nope/token", None),
        // Not a valid name: cannot exist.
        (Method::GET, "/v1/workloads/.hidden", None),
        (Method::GET, "/v1/workloads/a%20b/token", None),
        (Method::GET, "/v1/nothing-here", None),
        // `/` is the dashboard; nothing else is served beside it.
        (Method::GET, "/index.html", None),
    ] {
        let a = f.call(method.clone(), uri, body).await;
        let msg = assert_json_error(&a, StatusCode::NOT_FOUND);
        assert!(!msg.is_empty(), "{method} {uri}");
    }
    for (method, uri) in [
        (Method::DELETE, "/v1/workloads/alpha"),
        (Method::GET, "/v1/workloads/alpha/refresh"),
        (Method::POST, "/v1/workloads/alpha/credentials"),
        (Method::POST, "/healthz"),
        (Method::POST, "/v1/workloads"),
        (Method::POST, "/"),
    ] {
        let a = f.call(method.clone(), uri, None).await;
        assert_json_error(&a, StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            a.header(header::ALLOW).is_some(),
            "{method} {uri}: no Allow"
        );
    }
    f.shutdown().await;
}

#[tokio::test]
async fn refresh_sends_a_request_and_is_refused_when_it_cannot() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    f.wait_status("alpha", WorkloadStatus::Running).await;
    let before = f.fake.count("alpha");
    let a = f
        .call(Method::POST, "/v1/workloads/alpha/refresh", None)
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    assert_eq!(a.json(), serde_json::json!({"accepted": true}));
    wait_until_within("the forced refresh to reach the provider", WAIT, || {
        f.fake.count("alpha") > before
    })
    .await;

    // An unauthenticated workload would ignore the request: say so.
    f.fake
        .push("dead", [FakeReply::oauth_error(400, "invalid_grant")]);
    f.add(rt_spec("dead")).await;
    f.wait_status("dead", WorkloadStatus::Unauthenticated).await;
    let a = f
        .call(Method::POST, "/v1/workloads/dead/refresh", None)
        .await;
    let msg = assert_json_error(&a, StatusCode::CONFLICT);
    assert!(msg.contains("unauthenticated"), "{msg}");
    assert_eq!(f.fake.count("dead"), 1, "no request while unauthenticated");
    f.shutdown().await;
}

#[tokio::test]
async fn credentials_recover_an_invalid_grant_workload() {
    let f = fixture(Some(ADMIN)).await;
    let rt_file = f._dir.path().join("alpha.rt");
    std::fs::write(&rt_file, REFRESH_TOKEN).unwrap();
    let mut spec = rt_spec("alpha");
    spec.grant = GrantSpec::RefreshToken {
        token: Secret::from(REFRESH_TOKEN),
        file: Some(rt_file.clone()),
    };
    f.fake
        .push("alpha", [FakeReply::oauth_error(400, "invalid_grant")]);
    f.add(spec).await;
    f.wait_status("alpha", WorkloadStatus::Unauthenticated)
        .await;

    let a = f.call(Method::GET, "/v1/workloads/alpha/token", None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    a.assert_no_secret("token while unauthenticated");
    assert_eq!(a.json()["reason"], "unauthenticated");
    assert!(
        a.json()["detail"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );
    assert!(a.json().get("access_token").is_none());
    let a = f.call(Method::GET, "/v1/workloads/alpha", None).await;
    assert_eq!(a.json()["status"], "unauthenticated");
    assert_eq!(a.json()["last_error"]["error_code"], "invalid_grant");
    assert_eq!(a.json()["refresh_token_origin"]["kind"], "file");

    let body = format!(
        r#"{{"refresh_token":"{NEW_REFRESH_TOKEN}","client_secret":"{NEW_CLIENT_SECRET}"}}"#
    );
    let a = f
        .call(
            Method::PUT,
            "/v1/workloads/alpha/credentials",
            Some(body.as_bytes()),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text());
    assert!(a.body.is_empty());
    f.wait_status("alpha", WorkloadStatus::Running).await;
    let last = f.fake.seen().last().cloned().unwrap();
    assert_eq!(last.refresh_token.as_deref(), Some(NEW_REFRESH_TOKEN));
    assert_eq!(last.client_secret.as_deref(), Some(NEW_CLIENT_SECRET));
    assert_eq!(
        std::fs::read_to_string(&rt_file).unwrap(),
        NEW_REFRESH_TOKEN,
        "the supplied refresh token is written to its file"
    );
    let a = f.call(Method::GET, "/v1/workloads/alpha/token", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    f.shutdown().await;
}

#[tokio::test]
async fn credentials_bodies_are_validated() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    f.add(cc_spec("cc")).await;
    let put = |name: &'static str, body: Vec<u8>| {
        let f = &f;
        async move {
            f.call(
                Method::PUT,
                &format!("/v1/workloads/{name}/credentials"),
                Some(&body),
            )
            .await
        }
    };
    for (body, hint) in [
        (b"{}".to_vec(), "no credentials"),
        (br#"{"refresh_token":null}"#.to_vec(), "no credentials"),
        (br#"{"refresh_token":""}"#.to_vec(), "empty"),
        (br#"{"client_secret":"   "}"#.to_vec(), "empty"),
        (b"".to_vec(), "JSON"),
        (b"{\"refresh_token\": \"abc".to_vec(), "JSON"),
        (b"not json".to_vec(), "malformed JSON"),
        (b"[1,2]".to_vec(), "invalid"),
        (
            format!(r#"{{"refresh_token":"{NEW_REFRESH_TOKEN}","extra":"{NEW_CLIENT_SECRET}"}}"#)
                .into_bytes(),
            "unknown field",
        ),
        (
            format!(r#"{{"refresh_token":["{NEW_REFRESH_TOKEN}"]}}"#).into_bytes(),
            "invalid field value",
        ),
    ] {
        let a = put("alpha", body.clone()).await;
        let msg = assert_json_error(&a, StatusCode::BAD_REQUEST);
        assert!(
            msg.contains(hint),
            "{:?}: {msg}",
            String::from_utf8_lossy(&body)
        );
        a.assert_no_secret("credentials 400");
    }

    // A refresh token for a client_credentials workload: 400 with the reason.
    let a = put(
        "cc",
        format!(r#"{{"refresh_token":"{NEW_REFRESH_TOKEN}"}}"#).into_bytes(),
    )
    .await;
    let msg = assert_json_error(&a, StatusCode::BAD_REQUEST);
    assert!(msg.contains("client_credentials"), "{msg}");
    a.assert_no_secret("wrong grant");
    // A client secret for it is fine.
    let a = put(
        "cc",
        format!(r#"{{"client_secret":"{NEW_CLIENT_SECRET}"}}"#).into_bytes(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text());

    // Over the body limit: 413.
    let big = format!(r#"{{"refresh_token":"{}"}}"#, "x".repeat(BODY_LIMIT + 1));
    let a = put("alpha", big.into_bytes()).await;
    assert_json_error(&a, StatusCode::PAYLOAD_TOO_LARGE);
    // Just under it: accepted as a body (and then judged on its content).
    let fits = format!(r#"{{"refresh_token":"{}"}}"#, "y".repeat(BODY_LIMIT - 100));
    let a = put("alpha", fits.into_bytes()).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text());
    f.shutdown().await;
}

#[tokio::test]
async fn token_delivery_serves_the_current_token() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    f.wait_status("alpha", WorkloadStatus::Running).await;
    let a = f.call(Method::GET, "/v1/workloads/alpha/token", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.header(header::CACHE_CONTROL), Some("no-store"));
    let v = a.json();
    let h = f.runtime.handle(&wn("alpha")).await.unwrap().unwrap();
    let current = h.current().unwrap();
    assert_eq!(v["access_token"], current.expose());
    assert!(current.expose().starts_with("at-"));
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_at"], current.token().expires_at.to_rfc3339());
    let expires_in = v["expires_in"].as_u64().unwrap();
    assert!(expires_in > 0 && expires_in <= 3600, "{expires_in}");
    // Even then, nothing but the access token.
    a.assert_no_secret("token 200");
    f.shutdown().await;
}

#[tokio::test]
async fn token_delivery_explains_a_backoff_with_retry_after() {
    let f = fixture(Some(ADMIN)).await;
    // Every answer: 429 with Retry-After 300 (a floor for the backoff).
    f.fake.set_client("alpha", FakeReply::too_many(300));
    f.add(rt_spec("alpha")).await;
    let h = f.runtime.handle(&wn("alpha")).await.unwrap().unwrap();
    wait_until_within("alpha to back off", WAIT, || {
        h.status().is_some_and(|r| {
            r.token
                .as_ref()
                .is_some_and(|t| t.state == tokenvisor_core::status::TokenState::TransientBackoff)
        })
    })
    .await;
    let a = f.call(Method::GET, "/v1/workloads/alpha/token", None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    a.assert_no_secret("token 503");
    let v = a.json();
    assert!(v.get("access_token").is_none());
    assert_eq!(v["reason"], "auth_retrying");
    assert!(v["next_attempt_at"].is_string(), "{v}");
    let retry_after: u64 = a
        .header(header::RETRY_AFTER)
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(v["retry_after_secs"], retry_after);
    f.shutdown().await;
}

#[tokio::test]
async fn token_delivery_while_starting_is_503() {
    let f = fixture(Some(ADMIN)).await;
    f.fake.set_client("slow", FakeReply::Hang);
    // A short request timeout: shutdown waits for the attempt in flight.
    let mut spec = rt_spec("slow");
    spec.policy.request_timeout = std::time::Duration::from_secs(1);
    spec.policy.connect_timeout = std::time::Duration::from_secs(1);
    f.add(spec).await;
    let a = f.call(Method::GET, "/v1/workloads/slow/token", None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.json()["reason"], "starting");
    let retry_after: u64 = a.header(header::RETRY_AFTER).unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    f.shutdown().await;
}

#[tokio::test]
async fn a_configured_admin_token_guards_every_route_but_healthz() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    f.wait_status("alpha", WorkloadStatus::Running).await;
    let routes = [
        (Method::GET, "/metrics", None),
        (Method::GET, "/v1/workloads", None),
        (Method::GET, "/v1/workloads/alpha", None),
        (Method::POST, "/v1/workloads/alpha/refresh", None),
        (
            Method::PUT,
            "/v1/workloads/alpha/credentials",
            Some(br#"{"client_secret":"zzz"}"#.as_slice()),
        ),
        (Method::GET, "/v1/workloads/alpha/token", None),
    ];
    for (method, uri, body) in &routes {
        for bearer in [
            None,
            Some("wrong"),
            Some("admin-token-012345678"),
            Some("admin-token-01234567890"),
        ] {
            let a = f.call_as(bearer, method.clone(), uri, *body).await;
            assert_json_error(&a, StatusCode::UNAUTHORIZED);
            assert_eq!(a.header(header::WWW_AUTHENTICATE), Some("Bearer"));
            a.assert_no_secret("401");
        }
        // Another scheme with the right secret is still refused.
        let req = Request::builder()
            .method(method.clone())
            .uri(*uri)
            .header(header::AUTHORIZATION, format!("Basic {ADMIN}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(f.send(req).await.status, StatusCode::UNAUTHORIZED);
    }
    // The right token, scheme in any case.
    let req = Request::builder()
        .uri("/v1/workloads/alpha/token")
        .header(header::AUTHORIZATION, format!("bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.send(req).await.status, StatusCode::OK);
    let a = f.call(Method::GET, "/v1/workloads", None).await;
    assert_eq!(a.status, StatusCode::OK);
    f.shutdown().await;
}

#[tokio::test]
async fn an_empty_admin_token_refuses_everything() {
    let f = fixture(Some("")).await;
    let req = Request::builder()
        .uri("/v1/workloads")
        .header(header::AUTHORIZATION, "Bearer ")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.send(req).await.status, StatusCode::UNAUTHORIZED);
    f.shutdown().await;
}

#[tokio::test]
async fn metrics_expose_the_expected_names_and_no_workload_name() {
    let handle = crate::install_metrics_recorder().unwrap();
    // A second installation is harmless.
    let _again = crate::install_metrics_recorder().unwrap();
    let f = fixture_with(Some(ADMIN), Some(handle)).await;
    f.fake
        .set_client("metrics-held-wl", FakeReply::too_many(300));
    f.add(rt_spec("metrics-ok-wl")).await;
    f.add(rt_spec("metrics-held-wl")).await;
    f.wait_status("metrics-ok-wl", WorkloadStatus::Running)
        .await;
    f.wait_status("metrics-held-wl", WorkloadStatus::AuthRetrying)
        .await;
    f.runtime.flush(Duration::from_secs(10)).await.unwrap();

    let a = f.call(Method::GET, "/metrics", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(
        a.header(header::CONTENT_TYPE)
            .unwrap()
            .starts_with("text/plain")
    );
    let text = a.text();
    for name in [
        "tokenvisor_workloads{status=\"running\"}",
        "tokenvisor_refresh_attempts_total{",
        "tokenvisor_refresh_duration_seconds_bucket{",
        "tokenvisor_endpoints_on_hold ",
        "tokenvisor_endpoint_holds_total",
        // The held workload's 429 paced its endpoint (no endpoint label: aggregates).
        "tokenvisor_endpoints_paced 1",
        "tokenvisor_endpoints_below_ceiling ",
        "tokenvisor_endpoint_concurrency_limit_sum ",
        "tokenvisor_endpoint_min_rate ",
        "tokenvisor_status_pending ",
        "tokenvisor_status_writes_total ",
        "tokenvisor_status_updates_total ",
        "# HELP tokenvisor_workloads ",
    ] {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
    assert!(!text.contains("metrics-ok-wl") && !text.contains("metrics-held-wl"));
    a.assert_no_secret("metrics");
    // The 429 paced its endpoint and cut its limit: /healthz counts it too.
    let hz = f.call_as(None, Method::GET, "/healthz", None).await.json();
    assert_eq!(hz["endpoints_paced"], 1, "{hz}");
    assert_eq!(hz["endpoints_below_ceiling"], 1, "{hz}");

    // Without a recorder handle, /metrics is not served.
    let g = fixture(Some(ADMIN)).await;
    assert_json_error(
        &g.call(Method::GET, "/metrics", None).await,
        StatusCode::NOT_FOUND,
    );
    let upkeep = crate::spawn_metrics_upkeep(crate::install_metrics_recorder().unwrap());
    upkeep.abort();
    g.shutdown().await;
    f.shutdown().await;
}

/// A request whose body records whether anything polled it (it never ends).
fn request_with_watched_body(
    method: Method,
    uri: &str,
    headers: &[(header::HeaderName, &str)],
) -> (Request<Body>, Arc<std::sync::atomic::AtomicBool>) {
    let polled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = polled.clone();
    let stream = futures_util::stream::poll_fn(move |_| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(axum::body::Bytes::from(
            vec![b'x'; 1024],
        ))))
    });
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    (req.body(Body::from_stream(stream)).unwrap(), polled)
}

#[tokio::test]
async fn refused_requests_are_answered_without_reading_their_body() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    let put = "/v1/workloads/alpha/credentials";
    let bearer = format!("Bearer {ADMIN}");
    let big = (1024 * 1024).to_string();
    let small = "100".to_owned();
    let cases: Vec<(Vec<(header::HeaderName, &str)>, StatusCode)> = vec![
        // No bearer: 401 before the body.
        (
            vec![
                (header::HOST, LISTEN),
                (header::CONTENT_LENGTH, &small),
                (header::EXPECT, "100-continue"),
            ],
            StatusCode::UNAUTHORIZED,
        ),
        // A declared body over the limit: 413 before the body.
        (
            vec![
                (header::HOST, LISTEN),
                (header::AUTHORIZATION, &bearer),
                (header::CONTENT_LENGTH, &big),
                (header::EXPECT, "100-continue"),
            ],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        // A foreign Host or Origin: refused before anything else.
        (
            vec![
                (header::HOST, "evil.example:7878"),
                (header::AUTHORIZATION, &bearer),
                (header::CONTENT_LENGTH, &small),
            ],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![
                (header::HOST, LISTEN),
                (header::ORIGIN, "http://evil.example"),
                (header::AUTHORIZATION, &bearer),
                (header::CONTENT_LENGTH, &small),
            ],
            StatusCode::FORBIDDEN,
        ),
    ];
    for (headers, want) in cases {
        let (req, polled) = request_with_watched_body(Method::PUT, put, &headers);
        let a = f.send_raw(req).await;
        assert_json_error(&a, want);
        assert!(
            !polled.load(std::sync::atomic::Ordering::SeqCst),
            "{want}: the body was read"
        );
    }
    f.shutdown().await;
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused_on_every_route() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    f.wait_status("alpha", WorkloadStatus::Running).await;
    for uri in [
        "/healthz",
        "/metrics",
        "/v1/workloads",
        "/v1/workloads/alpha",
        "/v1/workloads/alpha/token",
        "/nowhere",
    ] {
        let get = |host: Option<&str>, origin: Option<&str>| {
            let mut req = Request::builder()
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"));
            if let Some(h) = host {
                req = req.header(header::HOST, h);
            }
            if let Some(o) = origin {
                req = req.header(header::ORIGIN, o);
            }
            req.body(Body::empty()).unwrap()
        };
        // DNS rebinding: a name the attacker controls, resolving to 127.0.0.1.
        let a = f.send_raw(get(Some("evil.example:7878"), None)).await;
        let msg = assert_json_error(&a, StatusCode::BAD_REQUEST);
        assert!(msg.contains("Host"), "{msg}");
        assert!(!a.text().contains("evil"), "never echoed: {}", a.text());
        assert!(!a.text().contains("at-"), "no token: {}", a.text());
        // HTTP/1.1 without Host.
        let a = f.send_raw(get(None, None)).await;
        assert_json_error(&a, StatusCode::BAD_REQUEST);
        // A cross-origin browser request.
        let a = f
            .send_raw(get(Some("localhost:7878"), Some("http://evil.example")))
            .await;
        assert_json_error(&a, StatusCode::FORBIDDEN);
        assert!(!a.text().contains("at-"), "no token: {}", a.text());
        // Same origin, and loopback names, pass the guard.
        for (host, origin) in [
            ("localhost:7878", Some("http://localhost:7878")),
            ("127.0.0.1:7878", None),
            ("[::1]:7878", None),
            ("localhost", None),
        ] {
            let a = f.send_raw(get(Some(host), origin)).await;
            // (This fixture installs no metrics recorder.)
            let want = if uri == "/nowhere" || uri == "/metrics" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            assert_eq!(a.status, want, "{uri} {host} {origin:?}: {}", a.text());
        }
    }
    f.shutdown().await;
}

#[tokio::test]
async fn no_answer_but_the_token_carries_a_secret() {
    let f = fixture(Some(ADMIN)).await;
    f.fake
        .push("dead", [FakeReply::oauth_error(400, "invalid_grant")]);
    f.fake.set_client("waf", FakeReply::waf_403());
    f.add(rt_spec("ok")).await;
    f.add(cc_spec("cc")).await;
    f.add(rt_spec("dead")).await;
    f.add(rt_spec("waf")).await;
    f.wait_status("ok", WorkloadStatus::Running).await;
    f.wait_status("cc", WorkloadStatus::Running).await;
    f.wait_status("dead", WorkloadStatus::Unauthenticated).await;
    f.wait_status("waf", WorkloadStatus::AuthRetrying).await;
    let mut uris = vec![
        (Method::GET, "/healthz".to_owned(), None),
        (Method::GET, "/v1/workloads".to_owned(), None),
        (Method::GET, "/nowhere".to_owned(), None),
    ];
    for name in ["ok", "cc", "dead", "waf", "missing"] {
        uris.push((Method::GET, format!("/v1/workloads/{name}"), None));
        uris.push((Method::POST, format!("/v1/workloads/{name}/refresh"), None));
        uris.push((Method::DELETE, format!("/v1/workloads/{name}"), None));
        uris.push((
            Method::PUT,
            format!("/v1/workloads/{name}/credentials"),
            Some(format!(
                r#"{{"client_secret":"{NEW_CLIENT_SECRET}","x":1}}"#
            )),
        ));
        if name != "ok" && name != "cc" {
            uris.push((Method::GET, format!("/v1/workloads/{name}/token"), None));
        }
    }
    for (method, uri, body) in uris {
        let a = f
            .call(method.clone(), &uri, body.as_deref().map(str::as_bytes))
            .await;
        a.assert_no_secret(&format!("{method} {uri}"));
        assert!(
            !a.text().contains("\"at-"),
            "{method} {uri}: an access token: {}",
            a.text()
        );
    }
    f.shutdown().await;
}

#[test]
fn bearer_parsing_and_comparison() {
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bearer   abc"), Some("abc"));
    assert_eq!(bearer_token("BEARER abc "), Some("abc"));
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("Bearer"), None);
    assert_eq!(bearer_token("Basic abc"), None);
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secreT", b"secret"));
    assert!(!constant_time_eq(b"secret2", b"secret"));
    assert!(!constant_time_eq(b"secre", b"secret"));
    assert!(!constant_time_eq(b"", b"secret"));
    assert!(!constant_time_eq(b"secret\0", b"secret"));
}

/// A token URL may carry a secret in its query (some providers want a key there); the views
/// show it as `TokenUrl` redacts it. (Credentials in userinfo are refused at `add`, as by
/// the configuration: `reconcile::a_spec_built_in_code_that_breaks_a_rule_is_refused`.)
#[tokio::test]
async fn token_urls_lose_their_query_values() {
    let f = fixture(Some(ADMIN)).await;
    let mut spec = cc_spec("alpha");
    spec.token_url = "https://idp.example.com/token?x=a@b&key=pa55"
        .parse()
        .unwrap();
    f.add(spec).await;
    for path in ["/v1/workloads", "/v1/workloads/alpha"] {
        let answer = f.call(Method::GET, path, None).await;
        let body = answer.json().to_string();
        assert!(
            body.contains("https://idp.example.com/token?x=…&key=…"),
            "{path}: {body}"
        );
        assert!(
            !body.contains("pa55") && !body.contains("a@b"),
            "{path}: {body}"
        );
    }
}

/// While the timer service is down no refresh, retry or expiry can fire: `/healthz` says so
/// with a 503 and the reason, and answers 200 again once it has restarted.
#[tokio::test]
async fn healthz_answers_503_while_no_timer_can_fire() {
    let f = fixture(Some(ADMIN)).await;
    f.add(cc_spec("alpha")).await;
    f.runtime.inject_timer_service_crash();
    // The service restarts after 100 ms; a current-thread runtime that only yields reaches
    // the dead task's watcher well before that.
    let mut down = false;
    for _ in 0..1000 {
        if !f.runtime.health().ok() {
            down = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(down, "the timer service never went down");
    let a = f.call_as(None, Method::GET, "/healthz", None).await;
    let error = assert_json_error(&a, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error.contains("timer service"), "{error}");
    assert_eq!(a.json()["ok"], false);

    wait_until_within("the timer service restarted", WAIT, || {
        f.runtime.health().ok()
    })
    .await;
    let a = f.call_as(None, Method::GET, "/healthz", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    f.shutdown().await;
}

/// Mounted under a prefix in a host's own app (what an embedder does), the admin API keeps
/// its Host guard, bearer auth, JSON fallbacks and `no-store`, and leaves the host's own
/// routes alone.
#[tokio::test]
async fn the_router_nested_in_a_host_app_keeps_its_guards() {
    let mut f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("alpha")).await;
    f.wait_status("alpha", WorkloadStatus::Running).await;
    let host_app = Router::new()
        .route("/", axum::routing::get(|| async { "the host's page" }))
        .nest("/tokenvisor", f.app.clone());
    f.app = host_app.clone();

    let own = host_app
        .oneshot(Request::builder().uri("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    assert!(
        own.headers().get(header::CACHE_CONTROL).is_none(),
        "the admin API's layers stay on its own routes"
    );

    let a = f
        .call_as(None, Method::GET, "/tokenvisor/healthz", None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["workloads"], 1);
    let a = f
        .call_as(None, Method::GET, "/tokenvisor/v1/workloads", None)
        .await;
    assert_json_error(&a, StatusCode::UNAUTHORIZED);
    let a = f.call(Method::GET, "/tokenvisor/v1/workloads", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()[0]["name"], "alpha");
    let a = f
        .call(Method::GET, "/tokenvisor/v1/workloads/alpha/token", None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_json_error(
        &f.call(Method::GET, "/tokenvisor/v2/nothing", None).await,
        StatusCode::NOT_FOUND,
    );
    assert_json_error(
        &f.call(Method::DELETE, "/tokenvisor/v1/workloads", None)
            .await,
        StatusCode::METHOD_NOT_ALLOWED,
    );
    let foreign = Request::builder()
        .uri("/tokenvisor/healthz")
        .header(header::HOST, "evil.example:7878")
        .body(Body::empty())
        .unwrap();
    assert_json_error(&f.send(foreign).await, StatusCode::BAD_REQUEST);
    f.shutdown().await;
}
