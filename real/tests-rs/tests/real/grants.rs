//! The workload-identity grants against oidc-provider, through nginx: `jwt_bearer` (RFC 7523
//! §2.1) and `token_exchange` (RFC 8693), both registered in the provider through its own
//! extension point (`provider.registerGrantType`, real/oidc/grants.mjs), which verifies the
//! "platform's" tokens: JWTs signed ES256 with the test-only key real/oidc/keys/platform.pem,
//! or (token exchange) an access token the provider issued itself.
//!
//! What is checked: each grant refreshes with every setting (public client, client secret
//! basic/post, private_key_jwt; actor token, requested_token_type, audience, resource,
//! scopes) and the provider saw what the configuration says; the file is read at every attempt
//! (rotated between attempts, the new token is presented); an expired assertion is not sent
//! and the workload says so, then recovers when the file is replaced; a rejected assertion
//! (signed by a key the provider does not trust) is transient, never `unauthenticated`; an
//! unreadable subject token is reported, then recovers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokenvisor::spec::{
    AuthMethod, GrantSpec, PresentedToken, ProviderSpec, TokenExchangeSpec, WorkloadSpec,
};
use tokenvisor_core::WorkloadStatus;

use crate::components::{complete_lines, now_ms, real_dir, wait_until};
use crate::harness::{Stack, Workload, fast_policy, last_error, name};

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The platform's signing key (the provider trusts its public half).
fn platform_key() -> PathBuf {
    real_dir().join("oidc/keys/platform.pem")
}

/// A key the provider does not trust (an EC P-256 test key of the runtime's fixtures).
fn unknown_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/tokenvisor/tests/fixtures/keys/ec256.pem")
}

/// A platform token for the provider at `aud`, living `ttl_secs` from now (negative: already
/// expired), named `jti`, signed with `key`.
fn platform_jwt(key: &Path, aud: &str, ttl_secs: i64, jti: &str) -> String {
    let pem = std::fs::read(key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    let key = EncodingKey::from_ec_pem(&pem).unwrap_or_else(|e| panic!("{e}"));
    let now = i64::try_from(now_ms() / 1000).unwrap();
    let claims = serde_json::json!({
        "iss": "https://platform.test",
        "sub": "system:serviceaccount:prod:agent",
        "aud": aud,
        "iat": now,
        "exp": now + ttl_secs,
        "jti": jti,
    });
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap()
}

/// The provider's log lines of `grant` requests by `client`, as JSON (with the `detail` of
/// what was presented).
fn grant_requests(s: &Stack, client: &str, grant: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(s.work().join("oidc.log")).unwrap_or_default();
    complete_lines(&text)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("provider log line {l:?}: {e}"))
        })
        .filter(|l| l["client"] == client && l["grant_type"] == grant)
        .collect()
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Adds a workload of `grant` for `client` through nginx, with `edit` applied to its spec.
async fn add(
    s: &Stack,
    workload: &str,
    client: &str,
    grant: GrantSpec,
    edit: impl FnOnce(&mut WorkloadSpec),
) -> Workload {
    let url = s.ep.nginx.token_url().parse().unwrap();
    let mut spec = WorkloadSpec::new(name(workload), url, client, grant);
    spec.policy = fast_policy();
    edit(&mut spec);
    s.add_workload(spec).await
}

/// Waits until `client` made `n` successful `grant` requests presenting `jti`.
async fn wait_presented(s: &Stack, client: &str, grant: &str, jti: &str, n: usize) {
    wait_until(
        &format!("{client}: {n} accepted requests presenting {jti}"),
        || {
            let ok = grant_requests(s, client, grant).into_iter();
            ok.filter(|l| l["status"] == 200 && l["detail"]["presented"] == jti)
                .count()
                >= n
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_bearer_refreshes_reads_the_rotated_assertion_and_never_sends_an_expired_one() {
    let s = Stack::start(3, false).await;
    let aud = s.ep.oidc.issuer();
    let file = s.work().join("assertion.jwt");
    std::fs::write(&file, platform_jwt(&platform_key(), &aud, 3600, "a1")).unwrap();
    let grant = GrantSpec::JwtBearer {
        assertion_file: file.clone(),
    };
    // A public client (no client authentication), and a private_key_jwt client.
    let public = add(&s, "jwtb", "tv-jwtb", grant.clone(), |_| {}).await;
    let pk_file = s.work().join("assertion-pk.jwt");
    std::fs::write(&pk_file, platform_jwt(&platform_key(), &aud, 3600, "p1")).unwrap();
    let pk_grant = GrantSpec::JwtBearer {
        assertion_file: pk_file,
    };
    let pk = add(&s, "jwtb-pk", "tv-pkjwt", pk_grant, |spec| {
        spec.auth_method = AuthMethod::PrivateKeyJwt;
        spec.policy.provider = Arc::new(ProviderSpec {
            client_key_file: Some(real_dir().join("oidc/keys/private-key-jwt.pem")),
            client_key_id: Some("tv-pkjwt-1".into()),
            client_assertion_audience: Some(aud.clone().into()),
            ..ProviderSpec::default()
        });
    })
    .await;
    s.wait_all(&[&public, &pk], WorkloadStatus::Running).await;
    // Tokens live 3 s: several refreshes, each presenting the file's assertion.
    wait_presented(&s, "tv-jwtb", JWT_BEARER, "a1", 2).await;
    wait_presented(&s, "tv-pkjwt", JWT_BEARER, "p1", 2).await;
    assert!(public.handle.current().is_ok() && pk.handle.current().is_ok());

    // The platform rotates the file: the next attempt presents the new assertion.
    std::fs::write(&file, platform_jwt(&platform_key(), &aud, 3600, "a2")).unwrap();
    wait_presented(&s, "tv-jwtb", JWT_BEARER, "a2", 1).await;

    // An expired assertion is not sent: the workload says so, the provider sees nothing.
    let before = grant_requests(&s, "tv-jwtb", JWT_BEARER).len();
    std::fs::write(&file, platform_jwt(&platform_key(), &aud, -60, "a3")).unwrap();
    let r = s
        .wait_file(&public.name, "auth_retrying, assertion expired", |r| {
            r.status == WorkloadStatus::AuthRetrying
                && r.status_context.contains("assertion_file")
                && r.status_context.contains("expired at")
        })
        .await;
    let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
    assert_eq!(e.kind.as_str(), "credential_file", "{e:?}");
    let sent = grant_requests(&s, "tv-jwtb", JWT_BEARER);
    let expired_sent = sent
        .iter()
        .filter(|l| l["detail"]["presented"] == "a3")
        .count();
    assert_eq!(expired_sent, 0, "an expired assertion reached the provider");
    assert!(
        sent.len() <= before + 1,
        "requests while the assertion was expired: {}",
        sent.len() - before
    );

    // Replaced by the platform: running again, with the new one.
    std::fs::write(&file, platform_jwt(&platform_key(), &aud, 3600, "a4")).unwrap();
    s.wait_all(&[&public], WorkloadStatus::Running).await;
    wait_presented(&s, "tv-jwtb", JWT_BEARER, "a4", 1).await;
    // The check above saw the first attempt after the expiry; every attempt while the file
    // held the expired assertion came before the one presenting a4, which the provider has
    // logged now: none of them presented a3 either.
    let expired_sent = (grant_requests(&s, "tv-jwtb", JWT_BEARER).iter())
        .filter(|l| l["detail"]["presented"] == "a3")
        .count();
    assert_eq!(
        expired_sent, 0,
        "an expired assertion reached the provider on a retry"
    );
    println!(
        "observed: jwt_bearer refreshed as a public client and with private_key_jwt ({} and {} \
         requests); a rotated assertion was presented at the next attempt; an expired one was \
         not sent ({}), then the replaced file recovered the workload",
        grant_requests(&s, "tv-jwtb", JWT_BEARER).len(),
        grant_requests(&s, "tv-pkjwt", JWT_BEARER).len(),
        r.status_context,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejected_assertion_is_transient_and_recovers_with_the_next_one() {
    let s = Stack::start(3, false).await;
    let aud = s.ep.oidc.issuer();
    let file = s.work().join("assertion.jwt");
    // Signed by a key the provider does not trust: invalid_grant.
    std::fs::write(&file, platform_jwt(&unknown_key(), &aud, 3600, "wrong")).unwrap();
    let grant = GrantSpec::JwtBearer {
        assertion_file: file.clone(),
    };
    let w = add(&s, "jwtb-wrong", "tv-jwtb", grant, |_| {}).await;
    // Rejected several times, each attempt transient (never unauthenticated).
    wait_until("three rejections", || {
        let refused = grant_requests(&s, "tv-jwtb", JWT_BEARER).into_iter();
        refused.filter(|l| l["error"] == "invalid_grant").count() >= 3
    })
    .await;
    let r = s
        .wait_file(&w.name, "auth_retrying on invalid_grant", |r| {
            r.status == WorkloadStatus::AuthRetrying && r.status_context.contains("invalid_grant")
        })
        .await;
    let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
    assert_eq!(e.kind.as_str(), "oauth_unknown_code", "{e:?}");
    assert!(!s.events.ever(&w.name, WorkloadStatus::Unauthenticated));

    // The platform's next assertion is accepted.
    std::fs::write(&file, platform_jwt(&platform_key(), &aud, 3600, "right")).unwrap();
    s.wait_all(&[&w], WorkloadStatus::Running).await;
    wait_presented(&s, "tv-jwtb", JWT_BEARER, "right", 1).await;
    println!(
        "observed: an assertion signed by an unknown key got invalid_grant ({}), transient; the \
         next assertion in the file was accepted",
        r.status_context
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_exchange_refreshes_with_every_setting_and_reports_an_unreadable_subject() {
    let s = Stack::start(3, false).await;
    let aud = s.ep.oidc.issuer();
    let subject = s.work().join("subject.jwt");
    let actor = s.work().join("actor.jwt");
    std::fs::write(&subject, platform_jwt(&platform_key(), &aud, 3600, "s1")).unwrap();
    std::fs::write(&actor, platform_jwt(&platform_key(), &aud, 3600, "actor-1")).unwrap();
    // Client secret basic; subject and actor JWTs, requested type, audience, resource, scope.
    let full = GrantSpec::TokenExchange(Arc::new(TokenExchangeSpec {
        subject: PresentedToken {
            file: subject.clone(),
            token_type: JWT.into(),
        },
        actor: Some(PresentedToken {
            file: actor,
            token_type: JWT.into(),
        }),
        requested_token_type: Some(ACCESS.into()),
    }));
    let tx = add(&s, "tx", "tv-tx", full, |spec| {
        *spec = spec.clone().with_client_secret("secret-of-tv-tx");
        spec.audience = Some("https://api.test".into());
        spec.resource = Some("https://api.test/v1".into());
        spec.scopes = Arc::from(vec!["api".to_owned()]);
    })
    .await;
    // Client secret post; the subject an access token the provider issued.
    let issued = s.work().join("issued.at");
    let cc = s
        .add_client_credentials("tx-cc", "tv-tx", Some("secret-of-tv-tx"))
        .await;
    s.wait_all(&[&cc], WorkloadStatus::Running).await;
    std::fs::write(&issued, s.access_token(&cc)).unwrap();
    let post_grant = GrantSpec::TokenExchange(Arc::new(TokenExchangeSpec {
        subject: PresentedToken {
            file: issued,
            token_type: ACCESS.into(),
        },
        actor: None,
        requested_token_type: None,
    }));
    let post = add(&s, "tx-post", "tv-tx-post", post_grant, |spec| {
        *spec = spec.clone().with_client_secret("secret-of-tv-tx-post");
        spec.auth_method = AuthMethod::Post;
    })
    .await;
    s.wait_all(&[&tx, &post], WorkloadStatus::Running).await;
    wait_presented(&s, "tv-tx", TOKEN_EXCHANGE, "s1", 2).await;
    wait_presented(&s, "tv-tx-post", TOKEN_EXCHANGE, "provider-access-token", 1).await;
    let seen = grant_requests(&s, "tv-tx", TOKEN_EXCHANGE);
    let d = &seen.iter().find(|l| l["status"] == 200).unwrap()["detail"];
    assert_eq!(d["subject_token_type"], JWT, "{d}");
    assert_eq!(d["actor"], "actor-1", "{d}");
    assert_eq!(d["actor_token_type"], JWT, "{d}");
    assert_eq!(d["requested_token_type"], ACCESS, "{d}");
    assert_eq!(d["audience"], "https://api.test", "{d}");
    assert_eq!(d["resource"], "https://api.test/v1", "{d}");
    // The post client stops here (its subject, a provider access token, expires soon).
    s.rt.remove(&name(&post.name)).await.unwrap();

    // The subject token file disappears: reported, nothing sent; back when it returns.
    std::fs::remove_file(&subject).unwrap();
    let r = s
        .wait_file(&tx.name, "auth_retrying, subject unreadable", |r| {
            r.status == WorkloadStatus::AuthRetrying
                && r.status_context.contains("subject_token_file")
                && r.status_context.contains("cannot read")
        })
        .await;
    let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
    assert_eq!(e.kind.as_str(), "credential_file", "{e:?}");
    std::fs::write(&subject, platform_jwt(&platform_key(), &aud, 3600, "s2")).unwrap();
    s.wait_all(&[&tx], WorkloadStatus::Running).await;
    wait_presented(&s, "tv-tx", TOKEN_EXCHANGE, "s2", 1).await;
    println!(
        "observed: token_exchange refreshed with basic and post clients, JWT and access-token \
         subjects, an actor token, requested_token_type, audience, resource and scope; an \
         unreadable subject was reported ({}) and the restored file recovered the workload",
        r.status_context
    );
}
