//! A workload's own forward proxy: tinyproxy (Debian's `tinyproxy`) on 127.0.0.1 with Basic
//! credentials, in front of nginx and the provider. Through it with the right credentials
//! (from `proxy_credentials_file`), plain HTTP and TLS (CONNECT, `ca_file`); with the wrong
//! ones the proxy refuses (407): a transient failure; `no_proxy` bypasses a proxy that is
//! not even there; a server certificate from an unknown CA, through the proxy, is named.

use std::path::Path;
use std::process::{Command, Stdio};

use tokenvisor::spec::ProviderSpec;
use tokenvisor_core::WorkloadStatus;
use tokenvisor_core::status::ErrorOutcome;

use crate::components::{Proc, free_port, wait_until};
use crate::harness::{Stack, last_error};
use crate::tls::{TlsFront, make_pki, spec};

/// tinyproxy on 127.0.0.1 asking for `user:password`, logging to `<dir>/tinyproxy.log`.
struct Tinyproxy {
    _proc: Proc,
    port: u16,
}

impl Tinyproxy {
    async fn start(dir: &Path) -> Tinyproxy {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 10\nMaxClients 32\nAllow 127.0.0.1\n\
             LogFile \"{log}\"\nLogLevel Info\nPidFile \"{pid}\"\nBasicAuth tv-user tv-pass\n",
            log = dir.join("tinyproxy.log").display(),
            pid = dir.join("tinyproxy.pid").display(),
        );
        std::fs::write(dir.join("tinyproxy.conf"), conf).unwrap();
        let stderr = dir.join("stderr.log");
        let bin = std::env::var("REAL_TINYPROXY").unwrap_or_else(|_| "tinyproxy".to_owned());
        let mut cmd = Command::new(bin);
        cmd.arg("-d")
            .arg("-c")
            .arg(dir.join("tinyproxy.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let proc = Proc::spawn("tinyproxy", &mut cmd, Some(stderr));
        wait_until(&format!("tinyproxy listening on {port}"), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        Tinyproxy { _proc: proc, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_with_credentials_carries_requests_and_a_refusal_is_transient() {
    let s = Stack::start(3, false).await;
    let dir = s.work().join("proxy");
    let proxy = Tinyproxy::start(&dir).await;
    make_pki(&s.work().join("tls-nginx/tls"));
    let front = TlsFront::start(&s.work().join("tls-nginx"), &s.ep.oidc.addr()).await;
    std::fs::write(dir.join("good"), "tv-user:tv-pass\n").unwrap();
    std::fs::write(dir.join("bad"), "tv-user:not-the-password\n").unwrap();
    let via = |creds: &str| ProviderSpec {
        proxy: Some(proxy.url().into()),
        proxy_credentials_file: Some(dir.join(creds)),
        ca_file: Some(s.work().join("tls-nginx/tls/ca.pem")),
        ..ProviderSpec::default()
    };
    let http = s.ep.nginx.token_url();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let bypass = ProviderSpec {
        proxy: Some(closed.into()),
        no_proxy: Some("127.0.0.1,localhost".into()),
        ..ProviderSpec::default()
    };
    for (w, url, client, p) in [
        ("proxied-http", http.as_str(), "tv-13", via("good")),
        ("proxied-tls", &front.token_url(), "tv-15", via("good")),
        ("proxy-refuses", http.as_str(), "tv-17", via("bad")),
        ("proxy-bypassed", http.as_str(), "tv-19", bypass),
        (
            "proxied-unknown-ca",
            &front.token_url(),
            "tv-21",
            ProviderSpec {
                ca_file: None,
                ..via("good")
            },
        ),
    ] {
        s.rt.add(spec(w, url, client, p)).await.unwrap();
    }
    for w in ["proxied-http", "proxied-tls", "proxy-bypassed"] {
        s.wait_file(w, "running", |r| r.status == WorkloadStatus::Running)
            .await;
    }
    let r = s
        .wait_file("proxy-refuses", "auth_retrying", |r| {
            r.status == WorkloadStatus::AuthRetrying
        })
        .await;
    let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
    assert_eq!(e.outcome, ErrorOutcome::Transient, "{e:?}");
    // A TLS failure through the proxy names the certificate the server presented (the
    // diagnostic handshake tunnels through the proxy as the request did).
    let tls = s
        .wait_file("proxied-unknown-ca", "auth_retrying on TLS", |r| {
            r.status == WorkloadStatus::AuthRetrying
        })
        .await;
    let e = last_error(&tls).unwrap_or_else(|| panic!("no last_error"));
    assert!(
        e.summary.contains("UnknownIssuer")
            && e.summary.contains("issued by CN=tokenvisor test CA"),
        "{e:?}"
    );
    // What went through the proxy: the plain request and the CONNECT, never the bypassed one.
    let log = std::fs::read_to_string(dir.join("tinyproxy.log")).unwrap_or_default();
    let nginx_port = http
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap_or("");
    assert!(
        log.contains("CONNECT"),
        "no CONNECT in the proxy's log:\n{log}"
    );
    assert!(
        log.contains(&format!("127.0.0.1:{nginx_port}")),
        "no plain request:\n{log}"
    );
    println!(
        "observed: through tinyproxy (Basic credentials from a file) over http and CONNECT: \
         running; wrong credentials: auth_retrying, {:?}; no_proxy bypassed a closed proxy; \
         an unknown CA through the proxy: {:?}",
        r.status_context, tls.status_context
    );
}
