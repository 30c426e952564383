//! Discovery (`issuer` instead of `token_url`) and `extra_params` against oidc-provider
//! through nginx. nginx's pass mode rewrites the provider's discovery document to name
//! nginx's address as the issuer (as a provider configured with its public URL would), and
//! serves a second view, the issuer `…/narrow`, whose document does not advertise
//! `client_secret_post` (real/nginx/modes/pass.conf). The provider logs the names (never the
//! values) of each token request's parameters.
//!
//! - an issuer refreshes: the endpoint comes from the document (one fetch for two workloads),
//!   the requests go through nginx, and `extra_params` reach the provider;
//! - discovery failing (nginx's 503) is transient (`auth_retrying`), and the workload recovers
//!   when the document comes back;
//! - a document naming another issuer (fetched as `localhost`, it names `127.0.0.1`) is
//!   refused (RFC 8414 §3.3): transient, and no token request is sent;
//! - `check-config --online` and `probe --issuer` show what was discovered and warn that the
//!   `…/narrow` issuer does not advertise `client_secret_post`.

use std::process::Command;
use std::sync::Arc;

use tokenvisor::spec::{AuthMethod, GrantSpec, ProviderSpec, WorkloadSpec};
use tokenvisor_core::status::ErrorOutcome;
use tokenvisor_core::{Issuer, Secret, WorkloadStatus};
use tokenvisor_real::binary::tokenvisor_bin;

use crate::components::wait_until;
use crate::harness::{Stack, Workload, fast_policy, last_error, name};
use crate::nginx::Mode;
use crate::oidc::secret_of;

/// nginx's base URL, the issuer its discovery documents name.
fn issuer_of(s: &Stack) -> String {
    let url = s.ep.nginx.token_url();
    url.strip_suffix("/token").unwrap_or(&url).to_owned()
}

/// Adds a workload of `client` (a refresh_token grant when `refresh`, else
/// client_credentials) that discovers its endpoint from `issuer` and sends `tenant=contoso`.
async fn add(s: &Stack, workload: &str, client: &str, issuer: &str, refresh: bool) -> Workload {
    let grant = match refresh {
        true => {
            let rt = s.ep.oidc.login(client, 1).remove(0);
            let file = s.work().join(format!("{workload}.rt"));
            std::fs::write(&file, &rt).unwrap();
            GrantSpec::RefreshToken {
                token: Secret::from(rt.as_str()),
                file: Some(file),
            }
        }
        false => GrantSpec::ClientCredentials,
    };
    let issuer = Issuer::parse(issuer).unwrap_or_else(|e| panic!("{issuer}: {e}"));
    let mut spec = WorkloadSpec::new(name(workload), issuer.as_token_url(), client, grant)
        .with_client_secret(&secret_of(client));
    spec.auth_method = AuthMethod::Basic;
    spec.policy = fast_policy();
    spec.policy.provider = Arc::new(ProviderSpec {
        issuer: Some(issuer),
        extra_params: [("tenant".to_owned(), "contoso".to_owned())].into(),
        ..ProviderSpec::default()
    });
    s.add_workload(spec).await
}

/// Runs the workspace's `tokenvisor` with `args`: its exit code, stdout and stderr.
fn tokenvisor(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(tokenvisor_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("tokenvisor {args:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// nginx's answers to discovery requests: (uri, status).
fn discovery_requests(s: &Stack) -> Vec<(String, u16)> {
    (s.ep.nginx.access_log().into_iter())
        .filter(|a| a.uri.contains("/.well-known/"))
        .map(|a| (a.uri, a.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_issuer_refreshes_through_nginx_and_extra_params_reach_the_provider() {
    let s = Stack::start(3, false).await;
    let issuer = issuer_of(&s);
    let rt = add(&s, "disc-rt", "tv-01", &issuer, true).await;
    let cc = add(&s, "disc-cc", "tv-03", &issuer, false).await;
    s.wait_all(&[&rt, &cc], WorkloadStatus::Running).await;
    wait_until("disc-rt: three refreshes", || {
        let ok = s.ep.oidc.refreshes(&rt.client);
        ok.iter().filter(|l| l.status == Some(200)).count() >= 3
    })
    .await;
    for w in [&rt, &cc] {
        let seen = s.ep.oidc.refreshes(&w.client);
        assert!(!seen.is_empty(), "{}: no token request", w.name);
        for l in &seen {
            assert_eq!(l.status, Some(200), "{}: {l:?}", w.name);
            assert!(l.params.iter().any(|p| p == "tenant"), "{}: {l:?}", w.name);
        }
        // nginx logs a request once it has relayed the answer, after the provider logged
        // it: wait for its log to catch up with the requests the provider saw.
        let what = format!("{}: the token requests went through nginx", w.name);
        wait_until(&what, || {
            let via_nginx = (s.ep.nginx.token_requests().into_iter())
                .filter(|a| a.user == w.client)
                .count();
            via_nginx >= seen.len()
        })
        .await;
    }
    s.assert_tokens_active(&[&rt, &cc]).await;
    // nginx's line for the discovery, too, is written after its answer was relayed.
    wait_until("nginx to log the discovery", || {
        !discovery_requests(&s).is_empty()
    })
    .await;
    let disc = discovery_requests(&s);
    // oidc-provider serves its metadata at the RFC 8414 location too: the first one tried
    assert_eq!(
        disc,
        [("/.well-known/oauth-authorization-server".to_owned(), 200)],
        "one discovery, shared"
    );
    println!(
        "observed: two workloads of issuer {issuer} refreshed through nginx ({} refreshes of \
         tv-01, {} of tv-03), with one discovery (200 at the RFC 8414 location); every token \
         request carried the extra parameter `tenant`",
        s.ep.oidc.refreshes(&rt.client).len(),
        s.ep.oidc.refreshes(&cc.client).len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_failing_is_transient_and_recovers() {
    let mut s = Stack::start(3, false).await;
    let issuer = issuer_of(&s);
    s.ep.nginx.switch(Mode::Unavailable503).await;
    let w = add(&s, "disc-down", "tv-05", &issuer, false).await;
    let r = s
        .wait_file(&w.name, "auth_retrying on discovery", |r| {
            r.status == WorkloadStatus::AuthRetrying
        })
        .await;
    let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
    assert_eq!(e.outcome, ErrorOutcome::Transient, "{e:?}");
    assert!(
        e.summary.contains(&format!("discovery of {issuer}"))
            && e.summary
                .contains("/.well-known/openid-configuration: HTTP 503"),
        "{e:?}"
    );
    s.ep.nginx.switch(Mode::Pass).await;
    s.wait_all(&[&w], WorkloadStatus::Running).await;
    assert!(!s.events.ever(&w.name, WorkloadStatus::Unauthenticated));
    // No token request without an endpoint. nginx answers everything itself in the 503
    // mode, so the provider could not have seen one: nginx's log is where one would show,
    // complete now (the switch back returned once the old worker, which logs each request
    // after answering it, had exited).
    let blind: Vec<_> = (s.ep.nginx.token_requests().into_iter())
        .filter(|a| a.mode == Mode::Unavailable503.name())
        .collect();
    assert!(
        blind.is_empty(),
        "token requests sent while discovery failed: {blind:?}"
    );
    println!(
        "observed: discovery through nginx's 503 left {} auth_retrying ({}); after the switch \
         back to pass it discovered and became running ({} discovery requests in all)",
        w.name,
        e.summary,
        discovery_requests(&s).len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_document_naming_another_issuer_is_refused() {
    let s = Stack::start(3, false).await;
    let issuer = issuer_of(&s).replace("127.0.0.1", "localhost");
    let w = add(&s, "disc-mismatch", "tv-07", &issuer, false).await;
    let r = s
        .wait_file(&w.name, "auth_retrying on the mismatch", |r| {
            r.status == WorkloadStatus::AuthRetrying
        })
        .await;
    let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
    assert_eq!(e.outcome, ErrorOutcome::Transient, "{e:?}");
    assert!(e.summary.contains("RFC 8414 §3.3"), "{e:?}");
    assert!(
        s.ep.oidc.refreshes(&w.client).is_empty(),
        "its token endpoint was never used"
    );
    assert!(!s.events.ever(&w.name, WorkloadStatus::Unauthenticated));
    println!("observed: issuer {issuer} refused: {}", e.summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_config_online_and_probe_warn_when_the_method_is_not_advertised() {
    let s = Stack::start(3, false).await;
    let narrow = format!("{}/narrow", issuer_of(&s));
    let secret = s.work().join("tv-02.secret");
    std::fs::write(&secret, secret_of("tv-02")).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = s.work().join("tokenvisor.toml");
    let text = format!(
        "[service]\nstatus_dir = \"{dir}/cc-statuses\"\nstate_dir = \"{dir}/cc-state\"\n\
         admin_listen = \"off\"\n\n[[workload]]\nname = \"narrow\"\nissuer = \"{narrow}\"\n\
         client_id = \"tv-02\"\nclient_secret_file = \"{secret}\"\nauth_method = \"post\"\n\
         grant = \"client_credentials\"\nextra_params = {{ tenant = \"contoso\" }}\n",
        dir = s.work().display(),
        secret = secret.display(),
    );
    std::fs::write(&config, text).unwrap();
    let config_arg = config.display().to_string();
    let (code, stdout, stderr) = tokenvisor(&["check-config", "--online", &config_arg]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("# discovered from issuer {narrow}:"))
            && stdout.contains("token_endpoint = http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stderr.contains("workload narrow: auth_method: warning: the provider does not advertise client_secret_post"),
        "{stderr}"
    );

    let (code, pout, perr) = tokenvisor(&[
        "probe",
        "--issuer",
        &narrow,
        "--client-id",
        "tv-02",
        "--auth-method",
        "post",
        "--grant",
        "client_credentials",
        "--extra-param",
        "tenant=contoso",
        "--client-secret-file",
        &secret.display().to_string(),
    ]);
    // the provider does support the method: the probe succeeds, with the warning
    assert_eq!(code, Some(0), "{pout}\n{perr}");
    assert!(
        pout.contains("token url:")
            && pout
                .lines()
                .any(|l| l.starts_with("outcome:") && l.ends_with(" ok")),
        "{pout}"
    );
    assert!(
        perr.contains("warning: the provider does not advertise client_secret_post"),
        "{perr}"
    );
    let last = s.ep.oidc.refreshes("tv-02");
    assert!(
        last.iter().any(|l| l.params.iter().any(|p| p == "tenant")),
        "{last:?}"
    );

    // an issuer whose document names another: check-config --online fails, naming it
    let wrong = issuer_of(&s).replace("127.0.0.1", "localhost");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&narrow, &wrong);
    std::fs::write(&config, text).unwrap();
    let (code, _, err) = tokenvisor(&["check-config", "--online", &config_arg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("workload narrow: issuer: discovery of") && err.contains("RFC 8414 §3.3"),
        "{err}"
    );
    println!(
        "observed: check-config --online: {}; probe --issuer: {}",
        stderr
            .lines()
            .find(|l| l.contains("advertise"))
            .unwrap_or_default(),
        perr.lines()
            .find(|l| l.contains("advertise"))
            .unwrap_or_default()
    );
}
