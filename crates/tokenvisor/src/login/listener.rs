//! The code flow's loopback redirect listener (RFC 8252 §7.3): one connection at a time,
//! a request head within [`HEAD_TIMEOUT`] and [`HEAD_LIMIT`] bytes (else 408/431 and the
//! connection is closed), 404 for another path, 405 for another method; the redirect's
//! query is returned with its connection, not yet answered ([`respond`]).

use std::time::Duration;

use tokenvisor_core::Secret;
use tokenvisor_core::scrub::{clean as safe_text, truncate_chars};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::config::login::REDIRECT_PATH;

/// The longest request head the redirect listener reads, in bytes.
pub(super) const HEAD_LIMIT: usize = 8 * 1024;
/// How long the redirect listener waits for one connection's request head.
pub(super) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The page shown after the redirect.
pub(super) const DONE_PAGE: &str = "<!doctype html><meta charset=utf-8><title>tokenvisor login</title>\
    <p>tokenvisor received the authorization. You may close this tab.</p>";

/// The page shown after a redirect that ends the login without a code.
pub(super) const FAILED_PAGE: &str = "<!doctype html><meta charset=utf-8><title>tokenvisor login</title>\
    <p>The login did not complete: see the terminal where tokenvisor login runs. You may close \
    this tab.</p>";

/// What the redirect carried.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Redirect {
    params: Vec<(String, String)>,
}

impl Redirect {
    fn get(&self, name: &str) -> Option<&str> {
        (self.params.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The code, if `state` matches and the provider sent no error.
    pub(super) fn check(&self, state: &str) -> Result<Secret, String> {
        if self.get("state") != Some(state) {
            return Err(
                "the redirect's state does not match this login's (a redirect not \
                        started here, or a forged one): nothing was exchanged"
                    .to_owned(),
            );
        }
        if let Some(error) = self.get("error") {
            let description = self
                .get("error_description")
                .map(|d| format!(": {}", truncate_chars(&safe_text(d), 200)))
                .unwrap_or_default();
            return Err(format!(
                "the provider refused the authorization: {}{description}",
                truncate_chars(&safe_text(error), 64)
            ));
        }
        match self.get("code") {
            Some(code) if !code.is_empty() => Ok(Secret::from(code)),
            Some(_) | None => Err("the redirect carries neither a code nor an error".to_owned()),
        }
    }
}

/// Serves the loopback listener until a request for the redirect path arrives, one
/// connection at a time; anything else is answered and the wait goes on. Returns the
/// redirect and its connection, not yet answered.
pub(super) async fn wait_for_redirect(
    listener: &TcpListener,
) -> std::io::Result<(Redirect, TcpStream)> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        match serve_one(&mut stream).await {
            Some(redirect) => return Ok((redirect, stream)),
            None => continue,
        }
    }
}

/// One connection: the redirect (unanswered), or `None` after answering anything else.
async fn serve_one(stream: &mut TcpStream) -> Option<Redirect> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(Head::TooLarge)) => {
            respond(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
            return None;
        }
        Ok(Err(Head::Closed)) => return None,
        Err(_elapsed) => {
            respond(stream, "408 Request Timeout", "text/plain", "").await;
            return None;
        }
    };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != REDIRECT_PATH {
        respond(stream, "404 Not Found", "text/plain", "not found\n").await;
        return None;
    }
    if method != "GET" {
        respond(stream, "405 Method Not Allowed", "text/plain", "").await;
        return None;
    }
    let params = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Some(Redirect { params })
}

/// Why no request head was read.
enum Head {
    TooLarge,
    Closed,
}

/// Reads up to the end of the request head (`\r\n\r\n`), at most [`HEAD_LIMIT`] bytes.
async fn read_head(stream: &mut TcpStream) -> Result<String, Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| Head::Closed)?;
        if n == 0 {
            return Err(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end > HEAD_LIMIT {
                return Err(Head::TooLarge);
            }
            buf.truncate(end);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > HEAD_LIMIT {
            return Err(Head::TooLarge);
        }
    }
}

/// Answers and closes (bounded: a peer that does not read is dropped).
pub(super) async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(HEAD_TIMEOUT, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(query: &str) -> Redirect {
        Redirect {
            params: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The redirect's checks: the state first (a forged redirect is refused whatever it
    /// carries), then an error, then the code.
    #[test]
    fn redirect_checks() {
        let table = [
            ("state=s1&code=c1", Ok("c1")),
            ("state=other&code=c1", Err("state does not match")),
            ("code=c1", Err("state does not match")),
            (
                "state=other&error=access_denied",
                Err("state does not match"),
            ),
            (
                "state=s1&error=access_denied&error_description=End-User+aborted",
                Err("refused the authorization: access_denied: End-User aborted"),
            ),
            (
                "state=s1&error=bad%1B%5B31mred",
                Err("refused the authorization: bad"),
            ),
            ("state=s1", Err("neither a code nor an error")),
            ("state=s1&code=", Err("neither a code nor an error")),
        ];
        for (query, expected) in table {
            let got = redirect(query).check("s1");
            match (got, expected) {
                (Ok(code), Ok(want)) => assert_eq!(code.expose(), want, "{query}"),
                (Err(why), Err(want)) => {
                    assert!(why.contains(want), "{query}: {why}");
                    assert!(
                        !why.contains('\u{1b}'),
                        "{query}: control characters: {why:?}"
                    );
                }
                (got, want) => panic!("{query}: {got:?} vs {want:?}"),
            }
        }
    }

    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(request).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// The loopback listener's limits: a head over HEAD_LIMIT is answered 431, another path
    /// 404, another method 405, a client that closes early nothing; the wait goes on, and the
    /// redirect that follows is the one returned.
    #[tokio::test]
    async fn the_listener_survives_hostile_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let waiting = tokio::spawn(async move {
            let (redirect, mut stream) = wait_for_redirect(&listener).await.unwrap();
            respond(&mut stream, "200 OK", "text/html", DONE_PAGE).await;
            redirect
        });
        let huge = format!(
            "GET /callback?state=s1&code=evil HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(HEAD_LIMIT + 10)
        );
        let answer = exchange(addr, huge.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        let answer = exchange(addr, b"GET /favicon.ico HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = exchange(addr, b"POST /callback?state=s1&code=c HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        drop(TcpStream::connect(addr).await.unwrap());
        let answer = exchange(
            addr,
            b"GET /callback?state=s1&code=good HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        assert!(answer.contains("You may close this tab"), "{answer}");
        let redirect = waiting.await.unwrap();
        assert_eq!(redirect.check("s1").unwrap().expose(), "good");
    }
}
