//! What a request needs besides its form: the HTTP client for the workload's TLS identity,
//! roots and proxy ([`Profile`]), and the client assertion of `private_key_jwt` /
//! `client_secret_jwt` ([`Keys::assertion`]).
//!
//! - One reqwest client per distinct [`Profile`] (connect timeout, client certificate and
//!   key, `ca_file`/`ca_only`, proxy): connections are pooled per TLS identity, never shared
//!   between two identities.
//! - Files are re-read when they change: each client and each signing key remembers the
//!   modification time and length of the files it was built from, and is rebuilt when a
//!   stat shows another (rotation without restart). Stats and reads run on the blocking pool
//!   (the caller's business, see [`crate::oauth`]).
//! - An assertion (RFC 7523 §2.2, OIDC Core §9): `iss` = `sub` = the client id, `aud` =
//!   `client_assertion_audience` or the token URL, a random `jti` (128 bits), `iat` now,
//!   `exp` 60 s later; header `alg` (the configured one or the key's default) and `kid`.
//!   It is a credential: it travels as a [`Secret`] and is scrubbed like the client secret.
//!   Signing is jsonwebtoken's (over ring, rustls' provider here).
//! - A TLS failure's certificate ([`presented_certificate`]): a diagnostic handshake that
//!   records the server's certificate and aborts (through the workload's http proxy by
//!   `CONNECT` when the request went through it); its subject and issuer names ([`names`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use tokenvisor_core::Secret;

use crate::spec::{AssertionAlg, AuthMethod, ClientKey, Jose, ProviderSpec, client_key};
use crate::transport::ExchangeRequest;

/// How long a client assertion is valid.
pub(crate) const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// `client_assertion_type` of RFC 7523.
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What one reqwest client is built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Profile {
    pub(crate) connect_timeout: Duration,
    /// Client certificate and key files (`tls_client_auth` methods only).
    identity: Option<(PathBuf, PathBuf)>,
    ca_file: Option<PathBuf>,
    ca_only: bool,
    proxy: Option<Arc<str>>,
    proxy_credentials_file: Option<PathBuf>,
    no_proxy: Option<Arc<str>>,
}

impl Profile {
    /// The profile of a request.
    pub(crate) fn of(req: &ExchangeRequest) -> Self {
        let p = &req.provider;
        let identity = match req.auth_method {
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth => {
                p.client_cert_file.clone().zip(p.client_key_file.clone())
            }
            AuthMethod::Basic
            | AuthMethod::Post
            | AuthMethod::PrivateKeyJwt
            | AuthMethod::ClientSecretJwt => None,
        };
        Profile {
            connect_timeout: req.connect_timeout,
            identity,
            ca_file: p.ca_file.clone(),
            ca_only: p.ca_only,
            proxy: p.proxy.clone(),
            proxy_credentials_file: p.proxy_credentials_file.clone(),
            no_proxy: p.no_proxy.clone(),
        }
    }

    /// The default profile with this connect timeout (no files: nothing to stat).
    pub(crate) fn plain(connect_timeout: Duration) -> Self {
        Profile::of_spec(connect_timeout, &ProviderSpec::default())
    }

    pub(crate) fn of_spec(connect_timeout: Duration, p: &ProviderSpec) -> Self {
        Profile {
            connect_timeout,
            identity: None,
            ca_file: p.ca_file.clone(),
            ca_only: p.ca_only,
            proxy: p.proxy.clone(),
            proxy_credentials_file: p.proxy_credentials_file.clone(),
            no_proxy: p.no_proxy.clone(),
        }
    }

    /// The files the client is built from.
    pub(crate) fn files(&self) -> Vec<&Path> {
        let identity = self.identity.iter().flat_map(|(c, k)| [c.as_path(), k]);
        (identity.chain(self.ca_file.as_deref()))
            .chain(self.proxy_credentials_file.as_deref())
            .collect()
    }

    /// Applies the files and the proxy to `builder` (reads the files).
    pub(crate) fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, String> {
        if let Some((cert, key)) = &self.identity {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
            builder = builder.identity(identity);
        }
        if let Some(ca) = &self.ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            builder = match self.ca_only {
                true => builder.tls_certs_only(certs),
                false => builder.tls_certs_merge(certs),
            };
        }
        if let Some(url) = &self.proxy {
            let mut proxy = reqwest::Proxy::all(&**url).map_err(|e| format!("proxy: {e}"))?;
            if let Some(file) = &self.proxy_credentials_file {
                let creds = crate::credentials::read_secret_file(file)
                    .map_err(|e| format!("proxy_credentials_file: {e}"))?;
                let (user, password) = creds
                    .expose()
                    .split_once(':')
                    .unwrap_or((creds.expose(), ""));
                proxy = proxy.basic_auth(user, password);
            }
            let no_proxy = self
                .no_proxy
                .as_deref()
                .and_then(reqwest::NoProxy::from_string);
            builder = builder.proxy(proxy.no_proxy(no_proxy));
        }
        Ok(builder)
    }
}

/// A file's modification time and length, `None` when it cannot be read.
pub(crate) type Stamp = Option<(SystemTime, u64)>;

/// The stamps of `files`, in order.
pub(crate) fn stamps(files: &[&Path]) -> Vec<Stamp> {
    let stamp = |f: &&Path| {
        let m = std::fs::metadata(f).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    files.iter().map(stamp).collect()
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))
}

/// Signing keys by file, each with the stamp it was read at.
#[derive(Default)]
pub(crate) struct Keys {
    keys: Mutex<HashMap<PathBuf, (Stamp, ClientKey)>>,
}

impl Keys {
    /// The key in `path`, read again when the file changed.
    fn key(&self, path: &Path) -> Result<ClientKey, String> {
        let stamp = stamps(&[path]).pop().flatten();
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((s, key)) = keys.get(path)
            && stamp.is_some()
            && *s == stamp
        {
            return Ok(key.clone());
        }
        let key = client_key(&read(path)?)
            .map_err(|why| format!("client_key_file {}: {why}", path.display()))?;
        keys.insert(path.to_owned(), (stamp, key.clone()));
        Ok(key)
    }

    /// The client assertion of `req`, if its method uses one (reads the key file when it
    /// changed: call it on the blocking pool).
    pub(crate) fn assertion(&self, req: &ExchangeRequest) -> Result<Option<Secret>, String> {
        let p = &req.provider;
        let (key, alg) = match req.auth_method {
            AuthMethod::PrivateKeyJwt => {
                let path = p.client_key_file.as_deref().ok_or("no client_key_file")?;
                let key = self.key(path)?;
                (key.key, p.client_assertion_alg.unwrap_or(key.algs[0]))
            }
            AuthMethod::ClientSecretJwt => {
                let secret = req.client_secret.as_ref().ok_or("no client secret")?;
                (
                    EncodingKey::from_secret(secret.expose().as_bytes()),
                    AssertionAlg::HS256,
                )
            }
            AuthMethod::Basic
            | AuthMethod::Post
            | AuthMethod::TlsClientAuth
            | AuthMethod::SelfSignedTlsClientAuth => return Ok(None),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| format!("no randomness for jti: {e}"))?;
        let aud = (p.client_assertion_audience.as_deref()).unwrap_or(req.token_url.expose());
        let claims = serde_json::json!({
            "iss": &*req.client_id,
            "sub": &*req.client_id,
            "aud": aud,
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME.as_secs(),
        });
        let mut header = Header::new(alg.jose());
        header.kid = p.client_key_id.as_deref().map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &key)
            .map(|jwt| Some(Secret::from(jwt)))
            .map_err(|e| format!("cannot sign the client assertion with {alg:?}: {e}"))
    }
}

/// The certificate a server presents, for a TLS failure's detail: a second handshake to
/// `host:port` (bounded by `timeout`) that accepts any certificate, records the server's own
/// and stops. Direct, or through `proxy` (an `http://` proxy URL, with `user:password` from
/// `credentials` as Basic) by `CONNECT`, as the request went (an `https://` proxy is not
/// tunnelled: `None`). Returns "certificate CN=… issued by CN=…"; `None` when the server
/// cannot be reached or the certificate read (the detail then goes without it). Blocking:
/// run it on the blocking pool.
pub(crate) fn presented_certificate(
    host: &str,
    port: u16,
    timeout: Duration,
    proxy: Option<(&str, Option<&Path>)>,
) -> Option<String> {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpStream, ToSocketAddrs};
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
    let recorder = Arc::new(Recorder::default());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let (to_host, to_port) = match proxy {
        None => (host.to_owned(), port),
        Some((url, _)) => {
            let u = reqwest::Url::parse(url)
                .ok()
                .filter(|u| u.scheme() == "http")?;
            let h = u.host_str()?.trim_start_matches('[').trim_end_matches(']');
            (h.to_owned(), u.port_or_known_default()?)
        }
    };
    let addr = (to_host.as_str(), to_port).to_socket_addrs().ok()?.next()?;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    if let Some((_, credentials)) = proxy {
        use base64::Engine as _;
        let target = match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        };
        let auth = match credentials {
            Some(f) => {
                let creds = std::fs::read_to_string(f).ok()?;
                let b64 = base64::engine::general_purpose::STANDARD.encode(creds.trim());
                format!("Proxy-Authorization: Basic {b64}\r\n")
            }
            None => String::new(),
        };
        let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n");
        tcp.write_all(connect.as_bytes()).ok()?;
        // the proxy's answer head, byte by byte (nothing of the tunnel is read past it)
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            tcp.read_exact(&mut byte).ok()?;
            head.push(byte[0]);
        }
        let status = String::from_utf8_lossy(&head);
        let ok = status.split_whitespace().nth(1) == Some("200");
        ok.then_some(())?;
    }
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    while tls.is_handshaking() && recorder.der().is_none() {
        if tls.complete_io(&mut tcp).is_err() {
            break;
        }
    }
    let (subject, issuer) = names(&recorder.der()?)?;
    Some(format!("certificate {subject} issued by {issuer}"))
}

/// Whether `no_proxy` (comma-separated, as `NO_PROXY`: `*`, a host, a domain with or without
/// its leading dot) exempts `host` from the proxy.
pub(crate) fn bypasses_proxy(no_proxy: Option<&str>, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy.is_some_and(|list| {
        list.split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .any(|e| {
                let domain = e.trim_start_matches('.');
                e == "*" || host == domain || host.ends_with(&format!(".{domain}"))
            })
    })
}

/// The subject's and the issuer's common names (`CN=…`) in a DER certificate.
pub(crate) fn names(der: &[u8]) -> Option<(String, String)> {
    use simple_asn1::ASN1Block as B;
    let blocks = simple_asn1::from_der(der).ok()?;
    let Some(B::Sequence(_, cert)) = blocks.first() else {
        return None;
    };
    let Some(B::Sequence(_, tbs)) = cert.first() else {
        return None;
    };
    // The Names are the first two sequences of sets: issuer, then subject.
    let cn = |name: &[B]| -> String {
        let cn = name.iter().find_map(|rdn| {
            let B::Set(_, attrs) = rdn else { return None };
            attrs.iter().find_map(|attr| {
                let B::Sequence(_, kv) = attr else {
                    return None;
                };
                let (Some(B::ObjectIdentifier(_, oid)), Some(value)) = (kv.first(), kv.get(1))
                else {
                    return None;
                };
                (oid.as_vec::<u64>().ok()? == [2, 5, 4, 3]).then_some(value)?;
                if let B::UTF8String(_, s)
                | B::PrintableString(_, s)
                | B::IA5String(_, s)
                | B::TeletexString(_, s) = value
                {
                    return Some(format!("CN={s}"));
                }
                None
            })
        });
        cn.unwrap_or_else(|| "(no CN)".to_owned())
    };
    let mut found = tbs.iter().filter_map(|b| {
        let B::Sequence(_, rdns) = b else { return None };
        (!rdns.is_empty() && rdns.iter().all(|r| matches!(r, B::Set(..)))).then(|| cn(rdns))
    });
    let issuer = found.next()?;
    Some((found.next()?, issuer))
}

/// A verifier that accepts any certificate and keeps the server's own (diagnosis only:
/// nothing is ever sent over such a connection).
#[derive(Debug, Default)]
struct Recorder(Mutex<Option<Vec<u8>>>);

impl Recorder {
    fn der(&self) -> Option<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(end_entity.to_vec());
        // Stop here: the certificate is all this connection is for.
        Err(rustls::Error::General("certificate recorded".to_owned()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("diagnosis only".to_owned()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("diagnosis only".to_owned()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use tokenvisor_core::WorkloadName;

    use super::*;
    use crate::spec::{GrantSpec, WorkloadSpec};
    use crate::transport::Grant;

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
    const TOKEN_URL: &str = "https://idp.example.com/oauth/token";

    fn request(method: AuthMethod, provider: ProviderSpec) -> ExchangeRequest {
        let name = WorkloadName::new("w").unwrap();
        let mut spec = WorkloadSpec::new(
            name,
            TOKEN_URL.parse().unwrap(),
            "client-1",
            GrantSpec::ClientCredentials,
        )
        .with_client_secret("a-client-secret-of-32-bytes-or-more!");
        spec.auth_method = method;
        spec.policy.provider = Arc::new(provider);
        ExchangeRequest::for_spec(&spec, Grant::ClientCredentials)
    }

    fn key_file(name: &str) -> ProviderSpec {
        ProviderSpec {
            client_key_file: Some(Path::new(KEYS).join(name)),
            ..ProviderSpec::default()
        }
    }

    /// The assertion's claims, verified with `key` for `alg` and the expected audience.
    fn verify(jwt: &Secret, key: &DecodingKey, alg: Algorithm, aud: &str) -> serde_json::Value {
        let mut v = Validation::new(alg);
        v.set_audience(&[aud]);
        v.set_issuer(&["client-1"]);
        v.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub", "jti"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(jwt.expose(), key, &v)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(data.header.alg, alg);
        data.claims
    }

    fn public(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(KEYS).join(name)).unwrap()
    }

    /// Every key type and algorithm: the claims RFC 7523 asks for, verified with the public
    /// key; `jti` unique; `exp` = `iat` + 60 s; the configured `kid`.
    #[test]
    fn assertions_verify_with_the_public_key() {
        let rsa = || DecodingKey::from_rsa_pem(&public("rsa.pub.pem")).unwrap();
        let table: [(&str, Option<AssertionAlg>, Algorithm, DecodingKey); 5] = [
            ("rsa.pem", None, Algorithm::RS256, rsa()),
            (
                "rsa.pem",
                Some(AssertionAlg::PS256),
                Algorithm::PS256,
                rsa(),
            ),
            (
                "ec256.pem",
                None,
                Algorithm::ES256,
                DecodingKey::from_ec_pem(&public("ec256.pub.pem")).unwrap(),
            ),
            (
                "ec384.pem",
                None,
                Algorithm::ES384,
                DecodingKey::from_ec_pem(&public("ec384.pub.pem")).unwrap(),
            ),
            (
                "ed25519.pem",
                None,
                Algorithm::EdDSA,
                DecodingKey::from_ed_pem(&public("ed25519.pub.pem")).unwrap(),
            ),
        ];
        let keys = Keys::default();
        let mut jtis = HashSet::new();
        for (file, alg, expected, decoding) in table {
            let provider = ProviderSpec {
                client_key_id: Some("kid-7".into()),
                client_assertion_alg: alg,
                ..key_file(file)
            };
            let req = request(AuthMethod::PrivateKeyJwt, provider);
            for _ in 0..2 {
                let jwt = keys.assertion(&req).unwrap().expect("an assertion");
                let header = jsonwebtoken::decode_header(jwt.expose()).unwrap();
                assert_eq!(header.kid.as_deref(), Some("kid-7"), "{file}");
                let claims = verify(&jwt, &decoding, expected, TOKEN_URL);
                assert_eq!(claims["sub"], "client-1", "{file}");
                let (iat, exp) = (
                    claims["iat"].as_u64().unwrap(),
                    claims["exp"].as_u64().unwrap(),
                );
                assert_eq!(exp - iat, 60, "{file}");
                let jti = claims["jti"].as_str().unwrap().to_owned();
                assert_eq!(jti.len(), 32, "{file}");
                assert!(jtis.insert(jti), "{file}: a jti was repeated");
            }
        }
        // A PKCS#1 RSA key signs too.
        let req = request(AuthMethod::PrivateKeyJwt, key_file("rsa-pkcs1.pem"));
        assert!(keys.assertion(&req).unwrap().is_some());
    }

    /// `client_secret_jwt`: HS256 over the client secret; `client_assertion_audience`
    /// replaces the token URL as `aud`.
    #[test]
    fn client_secret_jwt_signs_with_the_secret_and_the_audience_override() {
        let provider = ProviderSpec {
            client_assertion_audience: Some("https://idp.example.com".into()),
            ..ProviderSpec::default()
        };
        let req = request(AuthMethod::ClientSecretJwt, provider);
        let jwt = Keys::default()
            .assertion(&req)
            .unwrap()
            .expect("an assertion");
        let secret = req.client_secret.as_ref().unwrap().expose().as_bytes();
        let claims = verify(
            &jwt,
            &DecodingKey::from_secret(secret),
            Algorithm::HS256,
            "https://idp.example.com",
        );
        assert_eq!(claims["iss"], "client-1");
        // the other methods make none
        for method in [
            AuthMethod::Basic,
            AuthMethod::Post,
            AuthMethod::TlsClientAuth,
        ] {
            assert!(
                Keys::default()
                    .assertion(&request(method, ProviderSpec::default()))
                    .unwrap()
                    .is_none()
            );
        }
    }

    /// A key file replaced on disk is read again: the next assertion verifies only with the
    /// new key. A key file that vanished is an error naming it, not a panic.
    #[test]
    fn a_rotated_key_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.pem");
        std::fs::copy(Path::new(KEYS).join("ec256.pem"), &path).unwrap();
        let provider = ProviderSpec {
            client_key_file: Some(path.clone()),
            ..ProviderSpec::default()
        };
        let req = request(AuthMethod::PrivateKeyJwt, provider);
        let keys = Keys::default();
        let jwt = keys.assertion(&req).unwrap().unwrap();
        let ec = DecodingKey::from_ec_pem(&public("ec256.pub.pem")).unwrap();
        verify(&jwt, &ec, Algorithm::ES256, TOKEN_URL);
        std::fs::copy(Path::new(KEYS).join("ed25519.pem"), &path).unwrap();
        let jwt = keys.assertion(&req).unwrap().unwrap();
        let ed = DecodingKey::from_ed_pem(&public("ed25519.pub.pem")).unwrap();
        verify(&jwt, &ed, Algorithm::EdDSA, TOKEN_URL);
        std::fs::remove_file(&path).unwrap();
        let err = keys.assertion(&req).unwrap_err();
        assert!(err.contains("client.pem"), "{err}");
    }

    /// The names of a certificate: a self-signed test certificate names itself.
    #[test]
    fn names_of_a_certificate() {
        use base64::Engine as _;
        let pem = std::fs::read_to_string(Path::new(KEYS).join("cert.pem")).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let cn = "CN=tokenvisor test client".to_owned();
        assert_eq!(names(&der), Some((cn.clone(), cn)));
        assert_eq!(names(b"not DER"), None);
    }

    /// Key material never prints.
    #[test]
    fn a_client_key_debugs_as_an_ellipsis() {
        let key = client_key(&std::fs::read(Path::new(KEYS).join("rsa.pem")).unwrap()).unwrap();
        assert_eq!(format!("{key:?}"), "…");
    }

    #[test]
    fn no_proxy_exempts_hosts_and_domains() {
        let cases = [
            (Some("127.0.0.1,localhost"), "127.0.0.1", true),
            (Some(" .corp , other"), "idp.corp", true),
            (Some("corp"), "idp.corp", true),
            (Some("corp"), "idpcorp", false),
            (Some("*"), "anything", true),
            (Some("idp.example"), "IDP.example", true),
            (Some(""), "idp", false),
            (None, "idp", false),
        ];
        for (list, host, bypass) in cases {
            assert_eq!(bypasses_proxy(list, host), bypass, "{list:?} {host}");
        }
    }
}
