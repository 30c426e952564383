//! The real transport against real HTTP on 127.0.0.1: `tokenvisor-idp` for protocol cases
//! and faults, and a few raw TCP servers for what a well-behaved server cannot do (an endless
//! body, a closed port).
//!
//! Real time with short timeouts; no test sleeps to wait for time, and nothing asserts on
//! durations.

use std::sync::Arc;
use std::time::Duration;

use tokenvisor::spec::AuthMethod;
use tokenvisor::{ExchangeRequest, Grant, Transport};
use tokenvisor::{HttpConfig, HttpTransport};
use tokenvisor_core::classify::BODY_LIMIT;
use tokenvisor_core::{
    ClassifyPolicy, HttpAnswer, RawOutcome, Secret, Timestamp, TransportKind, Verdict, classify,
};
use tokenvisor_idp::{
    AuthMethod as SeenAuth, ClientSpec, Fault, FaultScope, IdpConfig, IdpServer, RetryAfter, Times,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CLIENT: &str = "app";
const SECRET: &str = "client-secret-5ecr3t";

fn transport() -> HttpTransport {
    HttpTransport::new(HttpConfig {
        use_env_proxy: false,
        ..HttpConfig::default()
    })
    .expect("client builds")
}

fn request(token_url: &str, auth: AuthMethod, grant: Grant) -> ExchangeRequest {
    ExchangeRequest {
        token_url: token_url.parse().expect("a token URL"),
        client_id: CLIENT.into(),
        client_secret: Some(Secret::from(SECRET)),
        auth_method: auth,
        provider: Arc::default(),
        grant,
        scopes: Arc::from(Vec::<String>::new()),
        resource: None,
        audience: None,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
    }
}

async fn idp() -> IdpServer {
    let idp = IdpServer::start(IdpConfig::default())
        .await
        .expect("idp starts");
    idp.register_client(ClientSpec::new(CLIENT, SECRET));
    idp
}

fn refresh_grant(idp: &IdpServer) -> Grant {
    Grant::RefreshToken(Secret::from(
        idp.issue_refresh_token(CLIENT).expect("known client"),
    ))
}

/// Asserts that no secret of `req` shows in the outcome's detail or `Debug`, nor in the
/// request's own `Debug`.
fn assert_no_secrets(outcome: &RawOutcome, req: &ExchangeRequest) {
    let debug = format!("{outcome:?} {req:?}");
    let detail = match outcome {
        RawOutcome::Transport { detail, .. } => detail.as_str(),
        RawOutcome::Response(_) => "",
    };
    for secret in req.secrets() {
        assert!(!debug.contains(secret.expose()), "secret in Debug: {debug}");
        assert!(
            !detail.contains(secret.expose()),
            "secret in detail: {detail}"
        );
    }
}

async fn exchange(req: &ExchangeRequest) -> RawOutcome {
    let outcome = transport().exchange(req.clone()).await;
    assert_no_secrets(&outcome, req);
    outcome
}

fn answer(outcome: RawOutcome) -> HttpAnswer {
    match outcome {
        RawOutcome::Response(answer) => answer,
        RawOutcome::Transport { kind, detail } => {
            panic!("expected an HTTP answer, got {kind:?}: {detail}")
        }
    }
}

fn transport_failure(outcome: RawOutcome) -> (TransportKind, String) {
    match outcome {
        RawOutcome::Transport { kind, detail } => {
            eprintln!("transport failure: {kind:?}: {detail}");
            (kind, detail)
        }
        RawOutcome::Response(answer) => panic!("expected a transport failure, got {answer:?}"),
    }
}

fn json(answer: &HttpAnswer) -> serde_json::Value {
    serde_json::from_slice(&answer.body).expect("JSON body")
}

#[tokio::test]
async fn refresh_token_with_basic_auth_sends_scopes_resource_and_audience() {
    let idp = idp().await;
    let grant = refresh_grant(&idp);
    let Grant::RefreshToken(rt) = &grant else {
        unreachable!()
    };
    let rt = rt.expose().to_owned();
    let mut req = request(&idp.token_url(), AuthMethod::Basic, grant);
    req.scopes = Arc::from(vec!["read".to_owned(), "write".to_owned()]);
    req.resource = Some("https://mcp.example.com".into());
    req.audience = Some("mcp".into());

    let answer = answer(exchange(&req).await);
    assert_eq!(answer.status, 200);
    assert!(!answer.truncated);
    assert!(
        answer
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{answer:?}"
    );
    let body = json(&answer);
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["refresh_token"].as_str().is_some_and(|t| t != rt));

    let seen = idp.last_request(CLIENT).expect("the idp saw the request");
    assert_eq!(seen.auth, SeenAuth::Basic);
    assert_eq!(seen.grant_type.as_deref(), Some("refresh_token"));
    assert_eq!(seen.param("refresh_token"), Some(rt.as_str()));
    assert_eq!(
        seen.param("client_secret"),
        None,
        "basic auth keeps the secret out of the body"
    );
    assert_eq!(seen.scope(), Some("read write"));
    assert_eq!(seen.resources(), vec!["https://mcp.example.com"]);
    assert_eq!(seen.audiences(), vec!["mcp"]);
}

#[tokio::test]
async fn client_credentials_with_post_auth() {
    let idp = idp().await;
    let mut req = request(&idp.token_url(), AuthMethod::Post, Grant::ClientCredentials);
    req.scopes = Arc::from(vec!["api".to_owned()]);

    let answer = answer(exchange(&req).await);
    assert_eq!(answer.status, 200);
    assert!(json(&answer)["access_token"].as_str().is_some());

    let seen = idp.last_request(CLIENT).expect("the idp saw the request");
    assert_eq!(seen.auth, SeenAuth::Post);
    assert_eq!(seen.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(seen.param("client_id"), Some(CLIENT));
    assert_eq!(seen.param("client_secret"), Some(SECRET));
    assert_eq!(seen.scope(), Some("api"));
    assert!(seen.resources().is_empty());
    assert!(seen.audiences().is_empty());
}

#[tokio::test]
async fn an_rfc6749_error_is_captured_raw() {
    let idp = idp().await;
    let req = request(
        &idp.token_url(),
        AuthMethod::Basic,
        Grant::RefreshToken(Secret::from("never-issued-token")),
    );
    let answer = answer(exchange(&req).await);
    assert_eq!(answer.status, 400);
    assert_eq!(json(&answer)["error"], "invalid_grant");
}

#[tokio::test]
async fn html_403_keeps_status_and_content_type() {
    let idp = idp().await;
    idp.set_fault(FaultScope::Global, Fault::HtmlForbidden, Times::Always);
    let req = request(&idp.token_url(), AuthMethod::Basic, refresh_grant(&idp));
    let answer = answer(exchange(&req).await);
    assert_eq!(answer.status, 403);
    assert!(
        answer
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("text/html")),
        "{answer:?}"
    );
    assert!(!answer.body.is_empty());
    assert!(!answer.truncated);
}

#[tokio::test]
async fn status_429_keeps_retry_after() {
    let idp = idp().await;
    idp.set_fault(
        FaultScope::Global,
        Fault::TooManyRequests {
            retry_after: Some(RetryAfter::Seconds(30)),
            slow_down_body: true,
        },
        Times::Always,
    );
    let req = request(&idp.token_url(), AuthMethod::Basic, refresh_grant(&idp));
    let answer = answer(exchange(&req).await);
    assert_eq!(answer.status, 429);
    assert_eq!(answer.retry_after.as_deref(), Some("30"));
    assert_eq!(json(&answer)["error"], "slow_down");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let idp = idp().await;
    idp.set_fault(FaultScope::Global, Fault::Redirect, Times::Always);
    let req = request(&idp.token_url(), AuthMethod::Basic, refresh_grant(&idp));
    let answer = answer(exchange(&req).await);
    assert_eq!(answer.status, 302, "the redirect itself is the answer");
    assert_eq!(idp.counters().token_requests, 1);
}

#[tokio::test]
async fn an_8_mib_body_is_cut_at_the_limit() {
    let idp = idp().await;
    idp.set_fault(
        FaultScope::Global,
        Fault::HugeBody {
            status: 403,
            bytes: 8 << 20,
        },
        Times::Always,
    );
    let req = request(&idp.token_url(), AuthMethod::Basic, refresh_grant(&idp));
    let answer = answer(exchange(&req).await);
    assert_eq!(answer.status, 403);
    assert_eq!(answer.body.len(), BODY_LIMIT);
    assert!(answer.truncated);
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_not_truncated() {
    let (url, _server) = raw_server(move |mut socket| async move {
        let body = vec![b'x'; BODY_LIMIT];
        read_request_head(&mut socket).await;
        let head = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        socket.write_all(head.as_bytes()).await.ok();
        socket.write_all(&body).await.ok();
        socket.flush().await.ok();
        // Keep the connection open until the client is done.
        let mut sink = [0u8; 64];
        let _ = socket.read(&mut sink).await;
    })
    .await;
    let req = request(&url, AuthMethod::Basic, Grant::ClientCredentials);
    let answer = answer(exchange(&req).await);
    assert_eq!(answer.body.len(), BODY_LIMIT);
    assert!(!answer.truncated);
}

/// An endless body: the call can only return if reading stops at the limit, and the server
/// sees its connection closed (the rest is never drained).
#[tokio::test]
async fn an_endless_body_is_cut_and_the_connection_dropped() {
    let (written_tx, written_rx) = tokio::sync::oneshot::channel::<u64>();
    let written_tx = std::sync::Mutex::new(Some(written_tx));
    let (url, _server) = raw_server(move |mut socket| {
        let tx = written_tx.lock().unwrap().take();
        async move {
            read_request_head(&mut socket).await;
            let head = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n\
                        Transfer-Encoding: chunked\r\n\r\n";
            let mut written = 0u64;
            if socket.write_all(head.as_bytes()).await.is_ok() {
                let chunk = format!("4000\r\n{}\r\n", "a".repeat(0x4000));
                // Until the client goes away.
                while socket.write_all(chunk.as_bytes()).await.is_ok() {
                    written += 0x4000;
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(written);
            }
        }
    })
    .await;
    let mut req = request(&url, AuthMethod::Basic, Grant::ClientCredentials);
    req.timeout = Duration::from_secs(60);
    let answer = answer(exchange(&req).await);
    assert_eq!(answer.status, 403);
    assert_eq!(answer.body.len(), BODY_LIMIT);
    assert!(answer.truncated);
    assert!(answer.body.iter().all(|b| *b == b'a'));
    // The server's writes fail once the client has closed the connection. The guard only
    // turns a hang into a failure.
    let written = tokio::time::timeout(Duration::from_secs(60), written_rx)
        .await
        .expect("the client closed the connection")
        .expect("the server reported");
    assert!(written >= BODY_LIMIT as u64);
}

#[tokio::test]
async fn a_trickling_body_times_out() {
    let idp = idp().await;
    idp.set_fault(
        FaultScope::Global,
        Fault::SlowBody {
            chunk_bytes: 1,
            interval: Duration::from_millis(100),
        },
        Times::Always,
    );
    let mut req = request(&idp.token_url(), AuthMethod::Basic, refresh_grant(&idp));
    req.timeout = Duration::from_millis(300);
    let (kind, detail) = transport_failure(exchange(&req).await);
    assert_eq!(kind, TransportKind::Timeout, "{detail}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let idp = idp().await;
    idp.set_fault(
        FaultScope::Global,
        Fault::Delay(Duration::from_secs(30)),
        Times::Always,
    );
    let mut req = request(&idp.token_url(), AuthMethod::Basic, refresh_grant(&idp));
    req.timeout = Duration::from_millis(200);
    let (kind, detail) = transport_failure(exchange(&req).await);
    assert_eq!(kind, TransportKind::Timeout, "{detail}");
}

#[tokio::test]
async fn a_closed_port_is_a_connect_failure() {
    let url = format!("http://{}/token?api_key=query-secret-value", closed_port());
    let req = request(&url, AuthMethod::Basic, Grant::ClientCredentials);
    let (kind, detail) = transport_failure(exchange(&req).await);
    assert_eq!(kind, TransportKind::Connect, "{detail}");
    assert!(!detail.contains("query-secret-value"), "{detail}");
    assert!(!detail.contains("api_key"), "{detail}");
}

#[tokio::test]
async fn a_dropped_connection_is_an_eof_not_a_timeout() {
    let idp = idp().await;
    idp.set_fault(FaultScope::Global, Fault::Drop, Times::Always);
    let req = request(&idp.token_url(), AuthMethod::Basic, refresh_grant(&idp));
    let (kind, detail) = transport_failure(exchange(&req).await);
    assert_eq!(kind, TransportKind::Eof, "{detail}");
}

#[tokio::test]
async fn a_connection_closed_mid_body_is_an_eof() {
    let (url, _server) = raw_server(|mut socket| async move {
        read_request_head(&mut socket).await;
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"acc";
        socket.write_all(head.as_bytes()).await.ok();
        socket.shutdown().await.ok();
    })
    .await;
    let req = request(&url, AuthMethod::Basic, Grant::ClientCredentials);
    let (kind, detail) = transport_failure(exchange(&req).await);
    assert_eq!(kind, TransportKind::Eof, "{detail}");
}

#[tokio::test]
async fn tls_to_a_plain_http_server_is_a_tls_failure() {
    let idp = idp().await;
    let url = idp.token_url().replacen("http://", "https://", 1);
    let req = request(&url, AuthMethod::Basic, refresh_grant(&idp));
    let (kind, detail) = transport_failure(exchange(&req).await);
    assert_eq!(kind, TransportKind::Tls, "{detail}");
}

#[tokio::test]
async fn distinct_connect_timeouts_share_one_transport() {
    let idp = idp().await;
    let transport = transport();
    for connect_timeout in [
        Duration::from_secs(1),
        Duration::from_secs(2),
        Duration::from_secs(1),
    ] {
        let mut req = request(&idp.token_url(), AuthMethod::Post, Grant::ClientCredentials);
        req.connect_timeout = connect_timeout;
        let answer = answer(transport.exchange(req).await);
        assert_eq!(answer.status, 200);
    }
    assert_eq!(idp.counters().success, 3);
    // Debug shows the configuration, never a secret.
    let debug = format!("{transport:?}");
    assert!(debug.contains("HttpTransport"), "{debug}");
}

#[tokio::test]
async fn the_exchange_future_is_send_and_static() {
    fn assert_send_static<F: std::future::Future + Send + 'static>(_: &F) {}
    let idp = idp().await;
    let fut = transport().exchange(request(
        &idp.token_url(),
        AuthMethod::Basic,
        Grant::ClientCredentials,
    ));
    assert_send_static(&fut);
    // And it runs on another task.
    let outcome = tokio::spawn(fut).await.expect("task");
    assert_eq!(answer(outcome).status, 200);
}

// ===== raw servers =====

/// A port nothing listens on: bind, note the port, close.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

/// A one-purpose HTTP server on 127.0.0.1: each connection is handed to `serve`.
async fn raw_server<F, Fut>(serve: F) -> (String, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket));
        }
    });
    (format!("http://{addr}/token"), task)
}

/// Reads until the end of the request head (the small form body may follow; it is ignored)
/// and returns what was read, or `None` if the connection ended first.
async fn read_request_head(socket: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    Some(seen)
}

#[tokio::test]
async fn an_echoed_basic_authorization_header_is_scrubbed_from_the_summary() {
    // A misconfigured gateway that answers with the request's own headers in an HTML page.
    let (url, _server) = raw_server(|mut socket| async move {
        let Some(seen) = read_request_head(&mut socket).await else {
            return;
        };
        let head = String::from_utf8_lossy(&seen);
        let auth = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
            .unwrap_or("no authorization header")
            .to_owned();
        let body = format!("<html><body>Bad request. {auth}</body></html>");
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(answer.as_bytes()).await.ok();
        socket.shutdown().await.ok();
    })
    .await;
    let req = request(
        &url,
        AuthMethod::Basic,
        Grant::RefreshToken(Secret::from("rt-echo-test")),
    );
    let outcome = exchange(&req).await;
    let body = String::from_utf8_lossy(&answer(outcome.clone()).body).into_owned();
    assert!(
        body.contains("Basic "),
        "the server echoed the header: {body}"
    );
    let secrets = req.secrets();
    let refs: Vec<&Secret> = secrets.iter().collect();
    let verdict = classify(
        &outcome,
        Timestamp::from_millis(1_800_000_000_000),
        &ClassifyPolicy::default(),
        &refs,
    );
    let Verdict::Transient(failure) = verdict else {
        panic!("an HTML 400 is transient: {verdict:?}");
    };
    let credential = body
        .split("Basic ")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the echoed credential")
        .trim()
        .to_owned();
    assert!(credential.len() > 8, "{credential}");
    assert!(
        !failure.summary.contains(&credential),
        "the Basic credential in the summary: {}",
        failure.summary
    );
    assert!(failure.summary.contains("Basic …"), "{}", failure.summary);
}

/// Vendor and IETF rate-limit headers reach the classifier raw (either spelling of the vendor
/// header), and a 429 carrying `X-RateLimit-Reset` as epoch seconds becomes a hold.
#[tokio::test]
async fn rate_limit_headers_are_captured_and_become_a_hold() {
    let idp = idp().await;
    let now = Timestamp::from_millis(1_790_000_000_000);
    let headers = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    idp.set_fault(
        FaultScope::Global,
        Fault::Raw {
            status: 429,
            content_type: Some("application/json".into()),
            headers: headers(&[
                ("X-RateLimit-Reset", "1790000042"),
                ("X-RateLimit-Remaining", "0"),
                ("RateLimit", "limit=10, remaining=0, reset=7"),
                ("RateLimit-Reset", "7"),
                ("RateLimit-Remaining", "0"),
            ]),
            body: r#"{"message":"API rate limit exceeded"}"#.into(),
        },
        Times::Next(1),
    );
    let req = request(&idp.token_url(), AuthMethod::Basic, refresh_grant(&idp));
    let outcome = exchange(&req).await;
    let a = answer(outcome.clone());
    assert_eq!(a.status, 429);
    assert_eq!(a.rate_limit.reset.as_deref(), Some("1790000042"));
    assert_eq!(a.rate_limit.remaining.as_deref(), Some("0"));
    assert_eq!(
        a.rate_limit.ietf.as_deref(),
        Some("limit=10, remaining=0, reset=7")
    );
    assert_eq!(a.rate_limit.ietf_reset.as_deref(), Some("7"));
    assert_eq!(a.rate_limit.ietf_remaining.as_deref(), Some("0"));
    let v = classify(&outcome, now, &ClassifyPolicy::default(), &[]);
    let f = v.failure().expect("a failure");
    assert_eq!(f.retry_after, Some(Duration::from_secs(42)), "{f:?}");

    // Okta's spelling.
    idp.set_fault(
        FaultScope::Global,
        Fault::Raw {
            status: 429,
            content_type: None,
            headers: headers(&[
                ("X-Rate-Limit-Reset", "1790000030"),
                ("X-Rate-Limit-Remaining", "0"),
            ]),
            body: String::new(),
        },
        Times::Next(1),
    );
    let a = answer(exchange(&req).await);
    assert_eq!(a.rate_limit.reset.as_deref(), Some("1790000030"));
    assert_eq!(a.rate_limit.remaining.as_deref(), Some("0"));
}

/// `private_key_jwt` and `client_secret_jwt` over HTTP: the form carries `client_id`,
/// `client_assertion_type` and a `client_assertion` that verifies with the client's key,
/// and neither the client secret nor an `Authorization` header (the idp sees no Basic
/// credentials). The idp itself knows no assertions, so it answers `invalid_client`: what it
/// recorded is the point.
#[tokio::test]
async fn jwt_client_authentication_sends_an_assertion_and_no_secret() {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use tokenvisor::spec::ProviderSpec;
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    let idp = idp().await;
    let public = std::fs::read(keys.join("ec256.pub.pem")).unwrap();
    let cases = [
        (
            AuthMethod::PrivateKeyJwt,
            Algorithm::ES256,
            DecodingKey::from_ec_pem(&public).unwrap(),
        ),
        (
            AuthMethod::ClientSecretJwt,
            Algorithm::HS256,
            DecodingKey::from_secret(SECRET.as_bytes()),
        ),
    ];
    for (method, alg, key) in cases {
        let mut req = request(&idp.token_url(), method, refresh_grant(&idp));
        req.provider = Arc::new(ProviderSpec {
            client_key_file: Some(keys.join("ec256.pem")),
            ..ProviderSpec::default()
        });
        let outcome = answer(exchange(&req).await);
        assert_eq!(outcome.status, 401, "{method:?}");
        let seen = idp.last_request(CLIENT).expect("the idp saw the request");
        assert_eq!(seen.auth, SeenAuth::None, "{method:?}: no Basic, no secret");
        assert_eq!(seen.param("client_secret"), None, "{method:?}");
        assert!(
            seen.params.iter().all(|(_, v)| !v.contains(SECRET)),
            "{method:?}: the secret in {:?}",
            seen.params
        );
        assert_eq!(seen.param("client_id"), Some(CLIENT));
        assert_eq!(
            seen.param("client_assertion_type"),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        let jwt = seen.param("client_assertion").expect("an assertion");
        let mut v = Validation::new(alg);
        v.set_audience(&[idp.token_url()]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
            .unwrap_or_else(|e| panic!("{method:?}: {e}"))
            .claims;
        assert_eq!(claims["iss"], CLIENT);
        assert_eq!(claims["sub"], CLIENT);
    }
}

/// A TLS failure through a workload's proxy names the presented certificate: the diagnostic
/// handshake goes through the proxy by `CONNECT`, as the request did (the proxy sees two
/// tunnels: the request's and the diagnostic's).
#[tokio::test]
async fn a_tls_failure_through_a_proxy_names_the_certificate_through_the_proxy() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(keys.join("cert.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(keys.join("rsa.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = Arc::new(config);
    // the TLS server (blocking threads: a handshake per connection, then closed)
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in server.incoming() {
            let (Ok(mut tcp), config) = (tcp, config.clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let mut conn = rustls::ServerConnection::new(config).unwrap();
                while conn.is_handshaking() {
                    if conn.complete_io(&mut tcp).is_err() {
                        break;
                    }
                }
            });
        }
    });
    // the proxy: CONNECT only, counted, then bytes both ways
    let connects = Arc::new(AtomicUsize::new(0));
    let seen = connects.clone();
    let (proxy_url, _task) = raw_server(move |mut socket| {
        let seen = seen.clone();
        async move {
            let Some(head) = read_request_head(&mut socket).await else {
                return;
            };
            if !head.starts_with(format!("CONNECT {server_addr} ").as_bytes()) {
                return;
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let Ok(mut upstream) = tokio::net::TcpStream::connect(server_addr).await else {
                return;
            };
            let _ = socket
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await;
            let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
        }
    })
    .await;
    let proxy = proxy_url.trim_end_matches("/token").to_owned();
    let mut req = request(
        &format!("https://{server_addr}/token"),
        AuthMethod::Post,
        Grant::ClientCredentials,
    );
    req.provider = Arc::new(tokenvisor::spec::ProviderSpec {
        proxy: Some(proxy.into()),
        ..tokenvisor::spec::ProviderSpec::default()
    });
    let outcome = transport().exchange(req).await;
    let RawOutcome::Transport { kind, detail } = &outcome else {
        panic!("a TLS failure: {outcome:?}");
    };
    assert_eq!(*kind, TransportKind::Tls, "{detail}");
    assert!(
        detail
            .contains("certificate CN=tokenvisor test client issued by CN=tokenvisor test client"),
        "{detail}"
    );
    assert_eq!(
        connects.load(Ordering::SeqCst),
        2,
        "the request's tunnel and the diagnostic's"
    );
}
