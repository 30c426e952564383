//! Shared helpers: a server with a few clients, an HTTP client, form posts.

use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use tokenvisor_idp::{ClientSpec, IdpConfig, IdpServer};

/// The client most tests use.
pub(crate) const APP: &str = "app";
/// Its secret.
pub(crate) const APP_SECRET: &str = "app-secret";
/// A second client.
pub(crate) const OTHER: &str = "other";
/// Its secret.
pub(crate) const OTHER_SECRET: &str = "other-secret";

/// Installs the ring provider (reqwest is built without one).
pub(crate) fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server with `app` and `other` registered.
pub(crate) async fn start() -> IdpServer {
    install_crypto();
    let idp = IdpServer::start(IdpConfig::default())
        .await
        .expect("idp starts");
    idp.register_client(ClientSpec::new(APP, APP_SECRET));
    idp.register_client(ClientSpec::new(OTHER, OTHER_SECRET));
    idp
}

/// An HTTP client with short timeouts, no proxy, no redirects followed.
pub(crate) fn http() -> reqwest::Client {
    http_with_timeout(Duration::from_secs(10))
}

/// The same with a given total timeout and no connection reuse.
pub(crate) fn http_with_timeout(timeout: Duration) -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client builds")
}

/// How a request authenticates its client.
#[derive(Clone, Copy)]
pub(crate) enum Auth<'a> {
    /// RFC 6749 §2.3.1 Basic: id and secret form-urlencoded, then base64.
    Basic(&'a str, &'a str),
    /// Basic without the urlencoding step (what many clients do).
    BasicPlain(&'a str, &'a str),
    /// `client_id`/`client_secret` form fields.
    Post(&'a str, &'a str),
    /// Nothing.
    None,
}

fn urlencode(value: &str) -> String {
    serde_urlencoded::to_string([("", value)]).unwrap()[1..].to_owned()
}

/// The `Authorization` header value for Basic credentials.
pub(crate) fn basic_header(id: &str, secret: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("Basic {}", b64.encode(format!("{id}:{secret}")))
}

/// POSTs a form with client authentication.
pub(crate) async fn post_form(
    http: &reqwest::Client,
    url: &str,
    auth: Auth<'_>,
    params: &[(&str, &str)],
) -> reqwest::Result<reqwest::Response> {
    let mut fields: Vec<(&str, &str)> = params.to_vec();
    let mut req = http.post(url);
    match auth {
        Auth::Basic(id, secret) => {
            req = req.header(
                AUTHORIZATION,
                basic_header(&urlencode(id), &urlencode(secret)),
            );
        }
        Auth::BasicPlain(id, secret) => {
            req = req.header(AUTHORIZATION, basic_header(id, secret));
        }
        Auth::Post(id, secret) => {
            fields.push(("client_id", id));
            fields.push(("client_secret", secret));
        }
        Auth::None => {}
    }
    req.header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(&fields).unwrap())
        .send()
        .await
}

/// A refresh grant for `app` (Basic auth).
pub(crate) async fn refresh(idp: &IdpServer, refresh_token: &str) -> reqwest::Response {
    refresh_as(idp, Auth::Basic(APP, APP_SECRET), refresh_token).await
}

/// A refresh grant with the given auth.
pub(crate) async fn refresh_as(
    idp: &IdpServer,
    auth: Auth<'_>,
    refresh_token: &str,
) -> reqwest::Response {
    post_form(
        &http(),
        &idp.token_url(),
        auth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
    .expect("request completes")
}

/// The body parsed as JSON.
pub(crate) async fn json(resp: reqwest::Response) -> Value {
    let bytes = resp.bytes().await.expect("body");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// The `Content-Type` header.
pub(crate) fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Asserts an RFC 6749 error answer and returns the body.
pub(crate) async fn assert_oauth_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert!(content_type(&resp).starts_with("application/json"));
    let body = json(resp).await;
    assert_eq!(body["error"], code, "{body}");
    body
}

/// GET and parse JSON from the admin API.
pub(crate) async fn admin_get(idp: &IdpServer, path: &str) -> reqwest::Response {
    http()
        .get(format!("{}{path}", idp.admin_url()))
        .send()
        .await
        .expect("admin request")
}

/// POST JSON to the admin API.
pub(crate) async fn admin_post(idp: &IdpServer, path: &str, body: &str) -> reqwest::Response {
    http()
        .post(format!("{}{path}", idp.admin_url()))
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("admin request")
}
