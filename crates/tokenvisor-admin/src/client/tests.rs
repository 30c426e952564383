//! The client against the real router served over HTTP on 127.0.0.1 (a [`Runtime`] over the
//! in-memory [`FakeTransport`]): the listing's rows, the hand-over of a refresh token, and
//! each way a call fails. Waits are bounded polls on workload state.

use std::sync::Arc;
use std::time::Duration;

use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::{Secret, WorkloadName, WorkloadStatus};
use tokenvisor_test_support::wait::wait_until_within;

use super::{AdminClient, ClientError, HandOverError};
use crate::{AdminState, router};

const ADMIN: &str = "admin-token-0123456789";
const REFRESH_TOKEN: &str = "rt-SECRET-b81d42";
const NEW_REFRESH_TOKEN: &str = "rt-SECRET-NEW-55e0";
const WAIT: Duration = Duration::from_secs(20);

/// A runtime with one refresh_token workload `alpha` whose provider answers invalid_grant,
/// and its router served on 127.0.0.1.
async fn serve(dir: &std::path::Path) -> (Runtime, std::net::SocketAddr) {
    let fake = FakeTransport::new();
    let runtime = Runtime::start(RuntimeConfig::new(
        dir.join("statuses"),
        Arc::new(fake.clone()),
    ))
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(AdminState::new(
        runtime.clone(),
        Secret::from(ADMIN),
        addr,
        None,
    ));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let rt_file = dir.join("alpha.rt");
    std::fs::write(&rt_file, REFRESH_TOKEN).unwrap();
    let name = WorkloadName::new("alpha").unwrap();
    let spec = WorkloadSpec::new(
        name.clone(),
        "https://idp.example.test/oauth/token".parse().unwrap(),
        "alpha",
        GrantSpec::RefreshToken {
            token: Secret::from(REFRESH_TOKEN),
            file: Some(rt_file),
        },
    );
    fake.push("alpha", [FakeReply::oauth_error(400, "invalid_grant")]);
    runtime.add(spec).await.unwrap();
    wait_for(&runtime, &name, WorkloadStatus::Unauthenticated).await;
    (runtime, addr)
}

async fn wait_for(runtime: &Runtime, name: &WorkloadName, want: WorkloadStatus) {
    let h = runtime.handle(name).await.unwrap().unwrap();
    wait_until_within(&format!("alpha to be {}", want.as_str()), WAIT, || {
        h.status().is_some_and(|r| r.status == want)
    })
    .await;
}

#[tokio::test]
async fn the_listing_parses_and_a_refresh_token_is_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, addr) = serve(dir.path()).await;
    let client = AdminClient::at(addr, Secret::from(ADMIN));

    let listing = client.workloads().await.unwrap();
    assert!(!listing.truncated);
    let [(row, raw)] = &listing.rows[..] else {
        panic!("one row expected: {:?}", listing.rows);
    };
    assert_eq!(
        (row.name.as_str(), row.status),
        ("alpha", WorkloadStatus::Unauthenticated)
    );
    assert_eq!(
        row.last_error
            .as_ref()
            .and_then(|e| e.error_code.as_deref()),
        Some("invalid_grant")
    );
    assert!(row.owner.is_none(), "not in cluster mode: no owner field");
    assert!(row.needs_attention());
    assert_eq!(raw["name"], "alpha", "the row as received is kept");

    client
        .supply_refresh_token("alpha", &Secret::from(NEW_REFRESH_TOKEN))
        .await
        .unwrap();
    let name = WorkloadName::new("alpha").unwrap();
    wait_for(&runtime, &name, WorkloadStatus::Running).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("alpha.rt")).unwrap(),
        NEW_REFRESH_TOKEN
    );

    let refused = client
        .supply_refresh_token("nope", &Secret::from(NEW_REFRESH_TOKEN))
        .await
        .unwrap_err();
    let HandOverError::Refused(why) = &refused else {
        panic!("{refused:?}");
    };
    assert!(why.starts_with("HTTP 404"), "{why}");
    assert!(!why.contains(NEW_REFRESH_TOKEN), "{why}");

    let wrong = AdminClient::new(&format!("http://{addr}/"), Secret::from("not-the-token"));
    let e = wrong.workloads().await.unwrap_err();
    assert!(matches!(e, ClientError::Status { .. }), "{e:?}");
    assert!(e.to_string().contains("401"), "{e}");
    runtime.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn nothing_listening_is_no_daemon() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let client = AdminClient::at(closed, Secret::from(ADMIN));
    let e = client
        .supply_refresh_token("alpha", &Secret::from(NEW_REFRESH_TOKEN))
        .await
        .unwrap_err();
    assert!(matches!(e, HandOverError::NotRunning), "{e:?}");
    let e = client.workloads().await.unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot reach the instance at http://{closed}: ")),
        "{e}"
    );
}

#[test]
fn a_wildcard_listener_is_asked_on_loopback() {
    let table = [
        ("0.0.0.0:7878", "127.0.0.1:7878"),
        ("[::]:7878", "[::1]:7878"),
        ("10.1.2.3:7878", "10.1.2.3:7878"),
    ];
    for (listen, want) in table {
        assert_eq!(super::reachable(listen.parse().unwrap()).to_string(), want);
    }
}
