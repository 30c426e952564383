//! The code flow end to end on 127.0.0.1, without a browser: the test reads the
//! authorization URL the flow built, plays the browser's redirect, and a one-route token
//! endpoint (raw HTTP/1.1, answering every request with the same JSON) records what the
//! exchange sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oauth2::url::Url;
use tokenvisor_core::{Secret, TokenUrl, WorkloadName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{Endpoints, Login, LoginError};
use crate::spec::{GrantSpec, WorkloadSpec};

const CLIENT_SECRET: &str = "cs-SECRET-1b2c";
const TOKEN_ANSWER: &str = r#"{"access_token":"at-1","token_type":"Bearer","expires_in":600,"refresh_token":"rt-NEW-9f8e"}"#;

/// A token endpoint on 127.0.0.1 recording each request's body.
async fn token_endpoint() -> (TokenUrl, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = read_request(&mut s).await;
            seen.lock().unwrap().push(body);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{TOKEN_ANSWER}",
                TOKEN_ANSWER.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    (TokenUrl::parse(&url).unwrap(), bodies)
}

/// One request's body (by its Content-Length).
async fn read_request(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the request ended early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = (text[..end].lines())
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text[end + 4..].to_owned();
            }
        }
    }
}

/// The browser: a GET of `uri`, the page it gets.
async fn browse(uri: String) -> String {
    let url = Url::parse(&uri).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut s = TcpStream::connect(addr).await.unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap_or(""));
    let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut page = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut page)).await;
    String::from_utf8_lossy(&page).into_owned()
}

fn login(token: &TokenUrl) -> (Login, TokenUrl) {
    let mut spec = WorkloadSpec::new(
        WorkloadName::new("app").unwrap(),
        token.clone(),
        "app-client",
        GrantSpec::RefreshToken {
            token: Secret::from(""),
            file: None,
        },
    )
    .with_client_secret(CLIENT_SECRET);
    spec.scopes = Arc::from(vec!["openid".to_owned(), "offline_access".to_owned()]);
    let authorize = TokenUrl::parse("http://127.0.0.1:9/authorize").unwrap();
    let endpoints = Endpoints {
        authorization: Some(authorize.clone()),
        device_authorization: None,
        token: token.clone(),
    };
    (Login::new(&spec, &endpoints).unwrap(), authorize)
}

fn param(url: &Url, name: &str) -> Option<String> {
    (url.query_pairs())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The authorization URL carries the client, the redirect, `state`, the S256 challenge and,
/// with offline_access, prompt=consent; the redirect's code is exchanged with the PKCE
/// verifier and the same redirect URI, and the refresh token comes back.
#[tokio::test]
async fn the_code_flow_exchanges_the_redirects_code_with_the_verifier() {
    let (token, bodies) = token_endpoint().await;
    let (login, authorize) = login(&token);
    let code = login.start_code(&authorize, 0).await.unwrap();
    let url = Url::parse(&code.url).unwrap();
    assert_eq!(param(&url, "client_id").as_deref(), Some("app-client"));
    assert_eq!(param(&url, "redirect_uri"), Some(code.redirect_uri.clone()));
    assert_eq!(
        param(&url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(param(&url, "prompt").as_deref(), Some("consent"));
    assert!(!code.url.contains(CLIENT_SECRET), "{}", code.url);
    let state = param(&url, "state").unwrap();
    let browser = tokio::spawn(browse(format!(
        "{}?state={state}&code=c-123",
        code.redirect_uri
    )));
    let redirect_uri = code.redirect_uri.clone();
    let refresh_token = code.finish(Duration::from_secs(20)).await.unwrap();
    assert_eq!(refresh_token.expose(), "rt-NEW-9f8e");
    assert!(browser.await.unwrap().contains("You may close this tab"));
    let bodies = bodies.lock().unwrap().clone();
    let [body] = &bodies[..] else {
        panic!("one token request expected: {bodies:?}");
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("grant_type"), Some("authorization_code"));
    assert_eq!(get("code"), Some("c-123"));
    assert_eq!(get("redirect_uri"), Some(redirect_uri.as_str()));
    let verifier = get("code_verifier").unwrap();
    assert!(verifier.len() >= 43, "an RFC 7636 verifier: {verifier}");
}

/// A redirect whose `state` is not this login's ends it: nothing is exchanged.
#[tokio::test]
async fn a_forged_redirect_exchanges_nothing() {
    let (token, bodies) = token_endpoint().await;
    let (login, authorize) = login(&token);
    let code = login.start_code(&authorize, 0).await.unwrap();
    let browser = tokio::spawn(browse(format!(
        "{}?state=forged&code=c-evil",
        code.redirect_uri
    )));
    let e = code.finish(Duration::from_secs(20)).await.unwrap_err();
    assert!(matches!(e, LoginError::Redirect(_)), "{e:?}");
    assert!(e.to_string().contains("state does not match"), "{e}");
    assert!(browser.await.unwrap().contains("did not complete"));
    assert!(bodies.lock().unwrap().is_empty(), "nothing was exchanged");
}
