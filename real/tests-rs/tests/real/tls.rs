//! TLS to the provider: nginx terminates TLS with a server certificate from a CA generated
//! here (openssl), in front of oidc-provider. Without `ca_file` the CA is unknown: a
//! transient TLS failure whose `status_context` names the server and the reason; with
//! `ca_file` (added to the system roots) or `ca_only` (instead of them) the workload runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokenvisor::spec::{AuthMethod, GrantSpec, ProviderSpec, WorkloadSpec};
use tokenvisor_core::WorkloadStatus;
use tokenvisor_core::status::ErrorOutcome;

use crate::components::{Proc, free_port, nginx_bin, real_dir, wait_until};
use crate::harness::{Stack, fast_policy, last_error, name};
use crate::oidc::secret_of;

/// Runs openssl with `args` in `dir`; panics with its stderr when it fails.
pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`, `ca.key`) and a server certificate for 127.0.0.1 it issued
/// (`server.pem`, `server.key`), in `dir`.
pub(crate) fn make_pki(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca = [
        &ec[..],
        &["-x509", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
    ]
    .concat();
    openssl(
        dir,
        &[&["req"], &ca[..], &["-subj", "/CN=tokenvisor test CA"]].concat(),
    );
    let csr = [&ec[..], &["-keyout", "server.key", "-out", "server.csr"]].concat();
    openssl(
        dir,
        &[&["req"], &csr[..], &["-subj", "/CN=127.0.0.1"]].concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

/// nginx terminating TLS (real/nginx/tls.conf.in) in front of `upstream`, its PKI in
/// `<prefix>/tls` (made by [`make_pki`]).
pub(crate) struct TlsFront {
    _proc: Proc,
    port: u16,
}

impl TlsFront {
    pub(crate) async fn start(prefix: &Path, upstream: &str) -> TlsFront {
        for dir in ["conf", "logs", "tmp"] {
            std::fs::create_dir_all(prefix.join(dir)).unwrap();
        }
        let port = free_port();
        let conf = std::fs::read_to_string(real_dir().join("nginx/tls.conf.in"))
            .unwrap()
            .replace("@PREFIX@", &prefix.display().to_string())
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@UPSTREAM@", upstream);
        let conf_path = prefix.join("conf/nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let stderr_path = prefix.join("logs/stderr.log");
        let mut cmd = Command::new(nginx_bin());
        cmd.arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let proc = Proc::spawn("nginx (TLS)", &mut cmd, Some(stderr_path));
        wait_until(&format!("nginx (TLS) listening on {port}"), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        TlsFront { _proc: proc, port }
    }

    pub(crate) fn token_url(&self) -> String {
        format!("https://127.0.0.1:{}/token", self.port)
    }
}

/// A client_credentials workload of `client` (HTTP Basic) at `url` with `provider`.
pub(crate) fn spec(
    workload: &str,
    url: &str,
    client: &str,
    provider: ProviderSpec,
) -> WorkloadSpec {
    let mut spec = WorkloadSpec::new(
        name(workload),
        url.parse().unwrap(),
        client,
        GrantSpec::ClientCredentials,
    )
    .with_client_secret(&secret_of(client));
    spec.auth_method = AuthMethod::Basic;
    spec.policy = fast_policy();
    spec.policy.provider = Arc::new(provider);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_ca_is_a_transient_tls_failure_and_ca_file_trusts_it() {
    let s = Stack::start(3, false).await;
    let prefix: PathBuf = s.work().join("tls-nginx");
    make_pki(&prefix.join("tls"));
    let front = TlsFront::start(&prefix, &s.ep.oidc.addr()).await;
    let url = front.token_url();
    let ca = Some(prefix.join("tls/ca.pem"));
    let with = |ca_only| ProviderSpec {
        ca_file: ca.clone(),
        ca_only,
        ..ProviderSpec::default()
    };
    for (w, client, p) in [
        ("tls-unknown-ca", "tv-07", ProviderSpec::default()),
        ("tls-ca-file", "tv-09", with(false)),
        ("tls-ca-only", "tv-11", with(true)),
    ] {
        s.rt.add(spec(w, &url, client, p)).await.unwrap();
    }
    for w in ["tls-ca-file", "tls-ca-only"] {
        s.wait_file(w, "running", |r| r.status == WorkloadStatus::Running)
            .await;
    }
    let r = s
        .wait_file("tls-unknown-ca", "auth_retrying", |r| {
            r.status == WorkloadStatus::AuthRetrying
        })
        .await;
    let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
    assert_eq!(e.outcome, ErrorOutcome::Transient, "{e:?}");
    let context = r.status_context.clone();
    for part in [
        "127.0.0.1:",
        "not issued by a trusted CA",
        "UnknownIssuer",
        "certificate CN=127.0.0.1 issued by CN=tokenvisor test CA",
    ] {
        assert!(context.contains(part), "{part:?} not in {context:?}");
    }
    println!(
        "observed: without ca_file: auth_retrying, status_context {context:?}; with ca_file and with ca_only: running"
    );
}

/// RFC 8705 through nginx: `tls_client_auth` (a certificate issued by the provider's client
/// CA, subject CN=tv-mtls) and `self_signed_tls_client_auth` (the registered self-signed
/// certificate) renew their tokens; the self-signed certificate presented for the
/// CA-issued client is `invalid_client`, final. The three share one nginx, one runtime and
/// one transport: had they shared a connection pool, the wrong identity would ride on a
/// connection the right one opened and succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_client_certificates_authenticate_per_identity() {
    let s = Stack::start(3, false).await;
    let prefix: PathBuf = s.work().join("tls-nginx");
    make_pki(&prefix.join("tls"));
    let front = TlsFront::start(&prefix, &s.ep.oidc.addr()).await;
    let keys = real_dir().join("oidc/keys");
    let identity = |cert: &str, key: &str| ProviderSpec {
        client_cert_file: Some(keys.join(cert)),
        client_key_file: Some(keys.join(key)),
        ca_file: Some(prefix.join("tls/ca.pem")),
        ..ProviderSpec::default()
    };
    let ca_issued = identity("tls-client.pem", "tls-client.key");
    let self_signed = identity("self-signed.pem", "self-signed.key");
    for (w, client, method, p) in [
        ("mtls", "tv-mtls", AuthMethod::TlsClientAuth, ca_issued),
        (
            "mtls-self",
            "tv-ss",
            AuthMethod::SelfSignedTlsClientAuth,
            self_signed.clone(),
        ),
        (
            "mtls-wrong",
            "tv-mtls",
            AuthMethod::TlsClientAuth,
            self_signed,
        ),
    ] {
        let mut spec = spec(w, &front.token_url(), client, p);
        spec.client_secret = None;
        spec.client_secret_origin = None;
        spec.auth_method = method;
        s.rt.add(spec).await.unwrap();
    }
    for (w, client) in [("mtls", "tv-mtls"), ("mtls-self", "tv-ss")] {
        s.wait_file(w, "running", |r| r.status == WorkloadStatus::Running)
            .await;
        wait_until(&format!("{w}: three renewals"), || {
            let ok = s.ep.oidc.refreshes(client);
            ok.iter().filter(|l| l.status == Some(200)).count() >= 3
        })
        .await;
    }
    s.wait_invalid_client("mtls-wrong").await;
    println!(
        "observed: tls_client_auth {} and self_signed_tls_client_auth {} accepted renewals; the \
         wrong certificate: invalid_client, unauthenticated",
        s.ep.oidc.refreshes("tv-mtls").len(),
        s.ep.oidc.refreshes("tv-ss").len()
    );
}
