//! Client authentication by a signed assertion (RFC 7523 §2.2) against oidc-provider,
//! through nginx: `private_key_jwt` (ES256, the key of real/oidc/keys/private-key-jwt.pem,
//! whose public half the provider registered) and `client_secret_jwt` (HS256 over the
//! secret). Each mints a grant by the scripted login, then refreshes it through tokenvisor;
//! a wrong key is the provider's `invalid_client`, which the classifier treats as final
//! (`classify::FINAL_CODES`): one attempt, then `unauthenticated` and silence.

use std::path::{Path, PathBuf};

use tokenvisor::spec::{AuthMethod, GrantSpec, ProviderSpec, WorkloadSpec};
use tokenvisor_core::{Secret, WorkloadStatus};

use crate::components::{real_dir, wait_until};
use crate::harness::{Stack, Workload, fast_policy, name};
use crate::oidc::secret_of;

/// The key registered for `tv-pkjwt`.
fn registered_key() -> PathBuf {
    real_dir().join("oidc/keys/private-key-jwt.pem")
}

/// A key the provider does not know (an EC P-256 test key of the runtime's fixtures).
fn unknown_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/tokenvisor/tests/fixtures/keys/ec256.pem")
}

/// Logs in as `client` and adds a refresh_token workload authenticating with `method`
/// (`key`: its client_key_file), the issuer as the assertion's audience (the provider
/// accepts its issuer, its own token endpoint URL or the endpoint's; the URL through nginx is
/// none of these).
async fn add(
    s: &Stack,
    workload: &str,
    client: &str,
    method: AuthMethod,
    key: PathBuf,
) -> Workload {
    let rt = s.ep.oidc.login(client, 1).remove(0);
    let file = s.work().join(format!("{workload}.rt"));
    std::fs::write(&file, &rt).unwrap();
    let grant = GrantSpec::RefreshToken {
        token: Secret::from(rt.as_str()),
        file: Some(file),
    };
    let url = s.ep.nginx.token_url().parse().unwrap();
    let mut spec = WorkloadSpec::new(name(workload), url, client, grant);
    if method == AuthMethod::ClientSecretJwt {
        spec = spec.with_client_secret(&secret_of(client));
    }
    spec.auth_method = method;
    spec.policy = fast_policy();
    spec.policy.provider = std::sync::Arc::new(ProviderSpec {
        client_key_file: Some(key),
        // the kid of the registered key (with client_secret_jwt, a kid would name no key)
        client_key_id: (method == AuthMethod::PrivateKeyJwt).then(|| "tv-pkjwt-1".into()),
        client_assertion_audience: Some(s.ep.oidc.issuer().into()),
        ..ProviderSpec::default()
    });
    s.add_workload(spec).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assertion_clients_refresh_and_a_wrong_key_is_invalid_client() {
    let s = Stack::start(3, false).await;
    let pk = add(
        &s,
        "pkjwt",
        "tv-pkjwt",
        AuthMethod::PrivateKeyJwt,
        registered_key(),
    )
    .await;
    let cs = add(
        &s,
        "csjwt",
        "tv-csjwt",
        AuthMethod::ClientSecretJwt,
        registered_key(),
    )
    .await;
    s.wait_all(&[&pk, &cs], WorkloadStatus::Running).await;
    // Three rotations each, every one accepted by the provider.
    for w in [&pk, &cs] {
        wait_until(&format!("{}: three refreshes", w.name), || {
            let ok = s.ep.oidc.refreshes(&w.client);
            ok.iter().filter(|l| l.status == Some(200)).count() >= 3
        })
        .await;
        let bad: Vec<_> = (s.ep.oidc.refreshes(&w.client).into_iter())
            .filter(|l| l.status != Some(200))
            .collect();
        assert!(bad.is_empty(), "{}: {bad:?}", w.name);
        assert!(w.handle.current().is_ok(), "{} serves a token", w.name);
    }

    // A key the provider does not know: invalid_client once, then unauthenticated.
    let wrong = add(
        &s,
        "pkjwt-wrong",
        "tv-pkjwt",
        AuthMethod::PrivateKeyJwt,
        unknown_key(),
    )
    .await;
    s.wait_invalid_client(&wrong.name).await;
    // "Then silence": counted once a retry would have shown, not at the verdict.
    s.wait_more_refreshes(&pk, 3).await;
    let refused: Vec<_> = (s.ep.oidc.log().into_iter())
        .filter(|l| {
            l.path.as_deref() == Some("/token") && l.error.as_deref() == Some("invalid_client")
        })
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(!s.events.ever(&pk.name, WorkloadStatus::Unauthenticated));
    println!(
        "observed: private_key_jwt (ES256) and client_secret_jwt (HS256) refreshed through nginx \
         ({} and {} accepted refreshes); an unknown key got 401 invalid_client once, then \
         unauthenticated",
        s.ep.oidc.refreshes(&pk.client).len(),
        s.ep.oidc.refreshes(&cs.client).len(),
    );
}
