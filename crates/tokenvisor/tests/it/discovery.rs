//! Discovery over real HTTP on 127.0.0.1: a small server plays the provider (its metadata
//! document at the OpenID Connect location only, a token endpoint that records each form),
//! switchable between a good document, a 503 and a document naming another issuer.
//!
//! Real time with short timeouts; waiting for the retry after a failure polls with the
//! bounded wait helper; nothing asserts on durations.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenvisor::spec::{AuthMethod, ProviderSpec};
use tokenvisor::{ExchangeRequest, Grant, HttpConfig, HttpTransport, Issuer, Transport};
use tokenvisor_core::{
    ClassifyPolicy, RawOutcome, Secret, Timestamp, TransportKind, Verdict, classify,
};
use tokenvisor_test_support::wait::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const GOOD: u8 = 0;
const DOWN: u8 = 1;
const OTHER_ISSUER: u8 = 2;

/// The provider: what it serves and what it saw.
#[derive(Default)]
struct Provider {
    mode: AtomicU8,
    /// GETs of `/.well-known/openid-configuration`.
    metadata: AtomicUsize,
    /// GETs of `/.well-known/oauth-authorization-server` (always 404).
    rfc8414: AtomicUsize,
    /// Each token request's form.
    forms: Mutex<Vec<String>>,
}

async fn provider() -> (Arc<Provider>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let p = Arc::new(Provider::default());
    let (state, iss) = (p.clone(), issuer.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, state.clone(), iss.clone()));
        }
    });
    (p, issuer)
}

async fn serve(mut socket: tokio::net::TcpStream, p: Arc<Provider>, issuer: String) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let length: usize = (head.lines())
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while seen.len() < head_end + length {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let (status, body) = if head.starts_with("get /.well-known/oauth-authorization-server") {
        p.rfc8414.fetch_add(1, Ordering::SeqCst);
        ("404 Not Found", String::new())
    } else if head.starts_with("get /.well-known/openid-configuration") {
        p.metadata.fetch_add(1, Ordering::SeqCst);
        match p.mode.load(Ordering::SeqCst) {
            DOWN => ("503 Service Unavailable", String::new()),
            mode => {
                let named = match mode {
                    OTHER_ISSUER => "https://someone-else.example",
                    _ => issuer.as_str(),
                };
                let doc = format!(
                    r#"{{"issuer":"{named}","token_endpoint":"{issuer}/token",
                    "token_endpoint_auth_methods_supported":["client_secret_basic"],
                    "grant_types_supported":["client_credentials","refresh_token"]}}"#
                );
                ("200 OK", doc)
            }
        }
    } else if head.starts_with("post /token") {
        let form = String::from_utf8_lossy(&seen[head_end..]).into_owned();
        p.forms.lock().unwrap().push(form);
        let ok = r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600}"#;
        ("200 OK", ok.to_owned())
    } else {
        ("404 Not Found", String::new())
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(answer.as_bytes()).await;
}

fn transport() -> HttpTransport {
    HttpTransport::new(HttpConfig {
        use_env_proxy: false,
        ..HttpConfig::default()
    })
    .expect("client builds")
}

fn request(issuer: &str) -> ExchangeRequest {
    let issuer = Issuer::parse(issuer).expect("an issuer");
    let provider = ProviderSpec {
        issuer: Some(issuer.clone()),
        extra_params: [("tenant".to_owned(), "contoso".to_owned())].into(),
        ..ProviderSpec::default()
    };
    ExchangeRequest {
        token_url: issuer.as_token_url(),
        client_id: "app".into(),
        client_secret: Some(Secret::from("client-5ecret")),
        auth_method: AuthMethod::Basic,
        provider: Arc::new(provider),
        grant: Grant::ClientCredentials,
        scopes: Arc::from(Vec::<String>::new()),
        resource: None,
        audience: None,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
    }
}

fn verdict(raw: &RawOutcome) -> Verdict {
    classify(
        raw,
        Timestamp::from_millis(1_700_000_000_000),
        &ClassifyPolicy::default(),
        &[],
    )
}

#[tokio::test]
async fn an_issuer_is_discovered_once_for_many_requests_and_its_endpoint_used() {
    let (p, issuer) = provider().await;
    let t = transport();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        set.spawn(t.exchange(request(&issuer)));
    }
    let outcomes = set.join_all().await;
    for raw in &outcomes {
        assert!(matches!(verdict(raw), Verdict::Success(_)), "{raw:?}");
    }
    assert_eq!(
        p.rfc8414.load(Ordering::SeqCst),
        1,
        "RFC 8414 location tried once"
    );
    assert_eq!(p.metadata.load(Ordering::SeqCst), 1, "one fetch, shared");
    let forms = p.forms.lock().unwrap().clone();
    assert_eq!(forms.len(), 8);
    for form in &forms {
        assert!(form.contains("grant_type=client_credentials"), "{form}");
        assert!(form.contains("tenant=contoso"), "extra_params sent: {form}");
    }
    let doc = t
        .discover(
            &Issuer::parse(&issuer).unwrap(),
            &ProviderSpec::default(),
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await
        .expect("cached");
    assert_eq!(doc.token_endpoint.expose(), format!("{issuer}/token"));
    assert_eq!(
        p.metadata.load(Ordering::SeqCst),
        1,
        "discover uses the cache too"
    );
}

#[tokio::test]
async fn a_discovery_failure_is_transient_holds_back_and_recovers() {
    let (p, issuer) = provider().await;
    p.mode.store(DOWN, Ordering::SeqCst);
    let t = transport();
    let raw = t.exchange(request(&issuer)).await;
    let RawOutcome::Transport { kind, detail } = &raw else {
        panic!("a transport failure, not an answer to classify: {raw:?}");
    };
    assert_eq!(*kind, TransportKind::Io);
    assert!(
        detail.contains(&format!("discovery of {issuer}"))
            && detail.contains("/.well-known/openid-configuration: HTTP 503"),
        "{detail}"
    );
    assert!(
        matches!(verdict(&raw), Verdict::Transient(_)),
        "never a verdict"
    );
    assert!(
        p.forms.lock().unwrap().is_empty(),
        "no token request without an endpoint"
    );

    // within the backoff, attempts fail at once with the same reason: no second fetch
    let again = t.exchange(request(&issuer)).await;
    assert!(matches!(verdict(&again), Verdict::Transient(_)));
    assert_eq!(
        p.metadata.load(Ordering::SeqCst),
        1,
        "held back, not fetched again"
    );

    p.mode.store(GOOD, Ordering::SeqCst);
    let t2 = t.clone();
    let iss = issuer.clone();
    wait_for(
        "discovery retried after its backoff",
        Duration::from_secs(20),
        move || {
            let (t, iss) = (t2.clone(), iss.clone());
            async move {
                matches!(
                    verdict(&t.exchange(request(&iss)).await),
                    Verdict::Success(_)
                )
            }
        },
    )
    .await;
    assert_eq!(
        p.metadata.load(Ordering::SeqCst),
        2,
        "one more fetch, after the hold"
    );
}

#[tokio::test]
async fn a_document_naming_another_issuer_is_refused() {
    let (p, issuer) = provider().await;
    p.mode.store(OTHER_ISSUER, Ordering::SeqCst);
    let raw = transport().exchange(request(&issuer)).await;
    let RawOutcome::Transport { detail, .. } = &raw else {
        panic!("refused: {raw:?}");
    };
    assert!(
        detail.contains("the document names \"https://someone-else.example\"")
            && detail.contains("RFC 8414 §3.3"),
        "{detail}"
    );
    assert!(matches!(verdict(&raw), Verdict::Transient(_)));
    assert!(
        p.forms.lock().unwrap().is_empty(),
        "its token endpoint is never used"
    );
}
