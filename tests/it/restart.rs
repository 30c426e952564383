//! Rotated refresh tokens are written back to their files and survive a restart of the
//! runtime: a new runtime over the same status directory, re-reading the files, recovers
//! every workload with the rotated tokens, and the provider never sees a rotated-away token
//! again (no reuse detection, no invalid_grant).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenvisor::TokenHandle;
use tokenvisor::read_secret_file;
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::WorkloadStatus;
use tokenvisor_core::status::TokenState;
use tokenvisor_idp::{ClientSpec, Fault, FaultScope, IdpConfig, IdpServer, Times};

use crate::common::{
    Events, fast_policy, name, read_status_file, secret_of, secs, status, transport, wait_until,
};

/// Workloads in the restart test.
const N: usize = 5;

fn workload(i: usize) -> String {
    format!("rot-{i}")
}

fn token_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("rot-{i}.refresh-token"))
}

/// A spec that reads its refresh token from its file, as the configuration loader does.
fn spec_from_file(idp: &IdpServer, creds: &Path, i: usize) -> WorkloadSpec {
    let file = token_file(creds, i);
    let token = read_secret_file(&file).unwrap();
    let mut spec = WorkloadSpec::new(
        name(&workload(i)),
        idp.token_url().parse().unwrap(),
        &workload(i),
        GrantSpec::RefreshToken {
            token,
            file: Some(file),
        },
    )
    .with_client_secret(&secret_of(&workload(i)));
    spec.policy = fast_policy();
    spec
}

async fn start(status_dir: &Path) -> (Runtime, Events) {
    let rt = Runtime::start(RuntimeConfig::new(status_dir, transport()))
        .await
        .unwrap();
    let events = Events::collect(&rt);
    (rt, events)
}

async fn add_all(rt: &Runtime, idp: &IdpServer, creds: &Path) -> Vec<TokenHandle> {
    let mut handles = Vec::new();
    for i in 0..N {
        handles.push(rt.add(spec_from_file(idp, creds, i)).await.unwrap());
    }
    handles
}

/// Waits until every workload is running and serves a token.
async fn wait_running(what: &str, handles: &[TokenHandle]) {
    wait_until(what, || {
        handles
            .iter()
            .all(|h| status(h) == Some(WorkloadStatus::Running) && h.current().is_ok())
    })
    .await;
}

/// The access token each workload serves now.
fn served(handles: &[TokenHandle]) -> Vec<String> {
    handles
        .iter()
        .map(|h| h.current().unwrap().expose().to_owned())
        .collect()
}

/// Forces a refresh of every workload.
async fn force_all(rt: &Runtime) {
    for i in 0..N {
        assert!(rt.force_refresh(&name(&workload(i))).await.unwrap());
    }
}

/// Shuts the runtime down (every status written) and checks the idp never saw a rotated-away
/// token presented nor answered `invalid_grant`.
async fn shut_down_without_reuse(rt: Runtime, idp: &IdpServer) {
    let report = rt.shutdown(secs(10)).await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    let c = idp.counters();
    assert_eq!(c.reuse_detected, 0, "a rotated-away token was presented");
    assert_eq!(c.invalid_grant, 0);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The file holds exactly the provider's one live refresh token of that client.
fn assert_file_is_live(idp: &IdpServer, creds: &Path, i: usize) {
    let live = idp.live_refresh_tokens(&workload(i));
    assert_eq!(live.len(), 1, "{}: live grants", workload(i));
    let file = read_secret_file(token_file(creds, i)).unwrap();
    assert!(
        file.expose() == live[0],
        "{}: the file does not hold the live refresh token",
        workload(i)
    );
}

/// An idp with `N` rotating clients whose tokens live 2 s, and their initial refresh tokens
/// written to files (with the process umask: tokenvisor must make them 0600 itself).
async fn setup(creds: &Path) -> IdpServer {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    for i in 0..N {
        idp.register_client(
            ClientSpec::new(workload(i), secret_of(&workload(i)))
                .with_rotation(true)
                .with_lifetime(secs(2)),
        );
        let rt = idp.issue_refresh_token(&workload(i)).unwrap();
        std::fs::write(token_file(creds, i), format!("{rt}\n")).unwrap();
    }
    idp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_refresh_tokens_survive_a_restart() {
    let status_dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let idp = setup(creds.path()).await;

    let (rt, events) = start(status_dir.path()).await;
    let handles = add_all(&rt, &idp, creds.path()).await;
    // Tokens live 2 s: four requests per client are three rotations after the first.
    wait_until("four rotations each", || {
        let c = idp.counters();
        (0..N).all(|i| c.client(&workload(i)) >= 4)
    })
    .await;
    wait_running("all running", &handles).await;
    let report = rt.shutdown(secs(10)).await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    for i in 0..N {
        assert_file_is_live(&idp, creds.path(), i);
        assert_eq!(mode(&token_file(creds.path(), i)), 0o600, "{}", workload(i));
        let rec = read_status_file(status_dir.path(), &workload(i));
        assert_eq!(rec.status, WorkloadStatus::Stopped);
    }
    assert_eq!(events.lagged(), 0);

    // A new runtime over the same status directory, its specs re-reading the files. From
    // here on tokens live a minute: every request is one the test accounts for.
    for i in 0..N {
        idp.register_client(
            ClientSpec::new(workload(i), secret_of(&workload(i))).with_lifetime(secs(60)),
        );
    }
    let before: Vec<u64> = {
        let c = idp.counters();
        (0..N).map(|i| c.client(&workload(i))).collect()
    };
    let rotated: Vec<String> = (0..N)
        .map(|i| {
            read_secret_file(token_file(creds.path(), i))
                .unwrap()
                .expose()
                .to_owned()
        })
        .collect();
    let (rt2, events2) = start(status_dir.path()).await;
    assert_eq!(rt2.recovery().recovered, N);
    assert!(rt2.recovery().corrupted.is_empty());
    let handles = add_all(&rt2, &idp, creds.path()).await;
    wait_running("all running after the restart", &handles).await;
    for (i, token) in rotated.iter().enumerate() {
        // A token still valid is served from the state journal without a request; an
        // expired one is refreshed at once. Either way the first request presents the
        // rotated token from the file.
        let sent = idp.counters().client(&workload(i)) - before[i];
        assert!(sent <= 1, "{}: {sent} requests at the restart", workload(i));
        if sent == 0 {
            let served = handles[i].current().unwrap().expose().to_owned();
            assert!(rt2.force_refresh(&name(&workload(i))).await.unwrap());
            wait_until("a first refresh", || {
                handles[i].current().is_ok_and(|t| t.expose() != served)
            })
            .await;
        }
        let req = idp.last_request(&workload(i)).unwrap();
        assert!(
            req.param("refresh_token") == Some(token.as_str()),
            "{}: the restarted runtime did not use the rotated token",
            workload(i)
        );
    }
    // Two more rotations each (forced), then a clean stop: the files hold the live tokens.
    for _ in 0..2 {
        let served = served(&handles);
        force_all(&rt2).await;
        wait_until("a new token each", || {
            handles
                .iter()
                .zip(&served)
                .all(|(h, old)| h.current().is_ok_and(|t| t.expose() != old))
        })
        .await;
    }
    shut_down_without_reuse(rt2, &idp).await;
    for i in 0..N {
        assert_file_is_live(&idp, creds.path(), i);
        assert_eq!(mode(&token_file(creds.path(), i)), 0o600);
        assert!(!events.ever(&workload(i), WorkloadStatus::Unauthenticated));
        assert!(!events2.ever(&workload(i), WorkloadStatus::Unauthenticated));
    }
    assert_eq!(events2.lagged(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_in_flight_at_shutdown_is_not_lost() {
    let status_dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let idp = setup(creds.path()).await;
    // Long-lived tokens here: the only refreshes are the ones the test asks for.
    for i in 0..N {
        idp.register_client(
            ClientSpec::new(workload(i), secret_of(&workload(i))).with_lifetime(secs(60)),
        );
    }
    let (rt, _events) = start(status_dir.path()).await;
    let handles = add_all(&rt, &idp, creds.path()).await;
    wait_running("all running", &handles).await;

    // rot-0's provider is slow: a refresh is in flight when the runtime shuts down. The
    // provider rotates when it answers; the rotated token must reach the file before the
    // shutdown completes, or the next start presents a rotated-away token.
    idp.set_fault(
        FaultScope::Client(workload(0)),
        Fault::Delay(Duration::from_millis(700)),
        Times::Next(1),
    );
    let before = idp.counters().client(&workload(0));
    assert!(rt.force_refresh(&name(&workload(0))).await.unwrap());
    wait_until("the slow refresh to reach the provider", || {
        idp.counters().client(&workload(0)) > before
    })
    .await;
    let report = rt.shutdown(secs(10)).await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    for i in 0..N {
        assert_file_is_live(&idp, creds.path(), i);
    }

    let (rt2, events2) = start(status_dir.path()).await;
    let handles = add_all(&rt2, &idp, creds.path()).await;
    wait_running("all running after the restart", &handles).await;
    // Let the slow request finish wherever it went, then refresh everything once more: a
    // grant revoked by reuse detection would answer invalid_grant now.
    wait_until("every request answered", || {
        let c = idp.counters();
        c.token_requests == c.success + c.invalid_grant
    })
    .await;
    let served = served(&handles);
    force_all(&rt2).await;
    wait_until("a new token or a verdict each", || {
        handles.iter().zip(&served).all(|(h, old)| {
            h.current().is_ok_and(|t| t.expose() != old)
                || status(h) == Some(WorkloadStatus::Unauthenticated)
        })
    })
    .await;
    shut_down_without_reuse(rt2, &idp).await;
    for i in 0..N {
        assert!(!events2.ever(&workload(i), WorkloadStatus::Unauthenticated));
        assert_file_is_live(&idp, creds.path(), i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_valid_tokens_sends_no_request() {
    let status_dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let idp = setup(creds.path()).await;
    // Tokens live an hour: none is due again during the test.
    for i in 0..N {
        idp.register_client(
            ClientSpec::new(workload(i), secret_of(&workload(i)))
                .with_rotation(true)
                .with_lifetime(secs(3600)),
        );
        let rt = idp.issue_refresh_token(&workload(i)).unwrap();
        std::fs::write(token_file(creds.path(), i), format!("{rt}\n")).unwrap();
    }
    let (rt, _events) = start(status_dir.path()).await;
    let handles = add_all(&rt, &idp, creds.path()).await;
    wait_running("all running", &handles).await;
    let served = served(&handles);
    let report = rt.shutdown(secs(10)).await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    let before = idp.counters().token_requests;

    let (rt2, _events2) = start(status_dir.path()).await;
    let handles = add_all(&rt2, &idp, creds.path()).await;
    for (h, token) in handles.iter().zip(&served) {
        // Served at once, the same token.
        assert_eq!(h.current().unwrap().expose(), token);
    }
    wait_running("all running after the restart", &handles).await;
    let report = rt2.flush(secs(10)).await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    // No attempt at all: one in flight would show as `refreshing`, one done would have
    // changed the token, and the provider would have counted it.
    for (h, token) in handles.iter().zip(&served) {
        let state = h.status().and_then(|r| r.token.as_ref().map(|t| t.state));
        assert_eq!(state, Some(TokenState::Healthy));
        assert_eq!(h.current().unwrap().expose(), token);
    }
    assert_eq!(
        idp.counters().token_requests,
        before,
        "refresh requests at the restart"
    );
    rt2.shutdown(secs(10)).await.unwrap();
}
