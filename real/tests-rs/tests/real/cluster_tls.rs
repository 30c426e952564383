//! Cluster mode's surfaces and etcd's TLS and auth against a real etcd (Debian's
//! etcd-server 3.4 on 127.0.0.1, tokenvisor-test-support's `etcd`):
//!
//! - the cluster view (`EtcdView`): status, shard and member keys seeded through
//!   `ClusterStore` (fenced writes, claims, a published admin URL) read back through the view
//!   (owners, members' admin URLs, paging past one page, the bound), and through the admin
//!   API's routes served on 127.0.0.1 (owners in `GET /v1/workloads`, the token route's 307
//!   to the owner and its 503 without one, `/healthz`);
//! - etcd serving TLS only with client certificates (a CA made here with openssl, as the
//!   `tls` module does): `ca_file` and a client certificate connect, no certificate does not;
//! - etcd with authentication on (`root` user, `auth enable`, through etcd's own API): the
//!   user and password connect, none or a wrong one do not.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokenvisor::{
    Claim, Clock, ClusterOptions, ClusterStore, ClusterView, EtcdView, Owner, Runtime,
    RuntimeConfig, VIEW_PAGE, WriteOutcome,
};
use tokenvisor_admin::{AdminState, router};
use tokenvisor_core::cluster::{ShardId, shard_of};
use tokenvisor_core::{Secret, StatusRecord, WorkloadName};
use tokenvisor_test_support::etcd::{EtcdCluster, EtcdTls};
use tokio::sync::watch;

use crate::tls::{make_pki, openssl};

const SHARDS: NonZeroU32 = NonZeroU32::new(256).unwrap();
const TTL: Duration = Duration::from_secs(10);
const ADMIN: &str = "cluster-admin-token-0123456789";

fn options(endpoints: Vec<String>, member: &str) -> ClusterOptions {
    ClusterOptions {
        endpoints,
        prefix: "view/".to_owned(),
        member: member.to_owned(),
        lease_ttl: TTL,
        request_timeout: Duration::from_secs(2),
        ca_file: None,
        client_cert: None,
        auth: None,
        admin: None,
    }
}

async fn connect(opts: &ClusterOptions) -> ClusterStore {
    ClusterStore::connect(opts, Clock::new())
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", opts.member))
}

fn record(status: &str, context: &str) -> StatusRecord {
    serde_json::from_value(serde_json::json!({
        "status": status,
        "status_context": context,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "process_id": 0,
    }))
    .expect("a status record")
}

fn wn(s: &str) -> WorkloadName {
    WorkloadName::new(s).expect("a workload name")
}

/// Claims the shard of `name` for `store` and writes its status record (fenced).
async fn own_and_write(store: &ClusterStore, name: &str, status: &str) -> ShardId {
    let shard = shard_of(name, SHARDS);
    assert_eq!(store.claim(shard).await.expect("claim"), Claim::Claimed);
    let written = store
        .write_status(shard, name, &record(status, name))
        .await
        .expect("write status");
    assert!(
        matches!(written, WriteOutcome::Written { .. }),
        "{written:?}"
    );
    shard
}

async fn json_of(resp: reqwest::Response) -> serde_json::Value {
    let body = resp.bytes().await.expect("a body");
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
}

/// A name whose shard differs from every shard in `taken`.
fn name_outside(prefix: &str, taken: &BTreeSet<ShardId>) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|n| !taken.contains(&shard_of(n, SHARDS)))
        .expect("a free name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_reads_every_workload_and_owner_from_etcd_and_the_admin_api_serves_it() {
    let etcd = EtcdCluster::start(1).await;
    let a = Arc::new(connect(&options(etcd.endpoints(), "member-a")).await);
    let b = connect(&options(etcd.endpoints(), "member-b")).await;

    // a owns "alpha", b owns "beta"; "orphan"'s shard is held by no one.
    let mut owned_by_a = BTreeSet::new();
    owned_by_a.insert(own_and_write(&a, "alpha", "running").await);
    let beta_shard = own_and_write(&b, "beta", "auth_retrying").await;
    let taken: BTreeSet<ShardId> = owned_by_a.iter().copied().chain([beta_shard]).collect();
    let orphan = name_outside("orphan", &taken);
    assert!(
        b.publish_admin("http://127.0.0.1:9")
            .await
            .expect("publish"),
        "b's member key is bound to its lease"
    );

    let (_owned_tx, owned_rx) = watch::channel(owned_by_a.clone());
    let view = EtcdView::new(a.clone(), SHARDS, TTL, owned_rx);
    let snap = view
        .snapshot(&[wn("alpha"), wn(&orphan)])
        .await
        .expect("snapshot");
    assert_eq!(snap.member, "member-a");
    assert!(!snap.truncated);
    let members: Vec<(&str, Option<&str>)> = snap
        .members
        .iter()
        .map(|m| (m.id.as_str(), m.admin.as_deref()))
        .collect();
    assert_eq!(
        members,
        [("member-a", None), ("member-b", Some("http://127.0.0.1:9"))],
        "a bare id before publishing, {{id, admin}} after"
    );
    let rows: Vec<(&str, Option<&str>, Option<&str>)> = snap
        .workloads
        .iter()
        .map(|w| {
            (
                w.name.as_str(),
                w.owner.as_deref(),
                w.record.as_ref().map(|r| r.status.as_str()),
            )
        })
        .collect();
    let mut want = vec![
        ("alpha", Some("member-a"), Some("running")),
        ("beta", Some("member-b"), Some("auth_retrying")),
        (orphan.as_str(), None, None),
    ];
    want.sort_unstable();
    assert_eq!(rows, want);

    assert_eq!(view.owner_of(&wn("alpha")).await.expect("owner"), Owner::Me);
    match view.owner_of(&wn("beta")).await.expect("owner") {
        Owner::Other(m) => {
            assert_eq!(m.id, "member-b");
            assert_eq!(m.admin.as_deref(), Some("http://127.0.0.1:9"));
        }
        other @ (Owner::Me | Owner::Nobody { .. }) => panic!("beta's owner: {other:?}"),
    }
    assert_eq!(
        view.owner_of(&wn(&orphan)).await.expect("owner"),
        Owner::Nobody {
            shard: shard_of(&orphan, SHARDS)
        }
    );
    let health = view.health();
    assert_eq!(health.member, "member-a");
    assert_eq!(health.shards_owned, 1);

    // The admin API over the real view, served on 127.0.0.1.
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::start(RuntimeConfig::new(
        dir.path().join("statuses"),
        tokenvisor_test_support::scenario::http_transport(),
    ))
    .await
    .expect("runtime");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let metrics = tokenvisor_admin::install_metrics_recorder().expect("recorder");
    let state = AdminState::new(rt.clone(), Secret::from(ADMIN), addr, Some(metrics));
    assert!(state.set_cluster_view(Arc::new(view)));
    let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let get = |path: &str| {
        client
            .get(format!("http://{addr}{path}"))
            .bearer_auth(ADMIN)
            .send()
    };
    let list = json_of(get("/v1/workloads").await.expect("list")).await;
    let owners: Vec<(&str, &serde_json::Value)> = list
        .as_array()
        .expect("an array")
        .iter()
        .map(|w| (w["name"].as_str().unwrap_or(""), &w["owner"]))
        .collect();
    assert!(
        owners.contains(&("alpha", &serde_json::json!("member-a")))
            && owners.contains(&("beta", &serde_json::json!("member-b"))),
        "{list}"
    );
    let beta = get("/v1/workloads/beta/token").await.expect("beta token");
    assert_eq!(beta.status(), 307);
    assert_eq!(
        beta.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("http://127.0.0.1:9/v1/workloads/beta/token")
    );
    let none = get(&format!("/v1/workloads/{orphan}/token"))
        .await
        .expect("orphan token");
    assert_eq!(none.status(), 503);
    let body = json_of(none).await;
    assert_eq!(body["reason"], "no_owner", "{body}");
    let health = json_of(get("/healthz").await.expect("healthz")).await;
    assert_eq!(health["cluster"]["member"], "member-a", "{health}");
    assert_eq!(health["cluster"]["shards_owned"], 1, "{health}");
    assert_eq!(health["cluster"]["etcd"], "connected", "{health}");
    let text = get("/metrics")
        .await
        .expect("metrics")
        .bytes()
        .await
        .expect("a body");
    let text = String::from_utf8_lossy(&text);
    for series in [
        "tokenvisor_cluster_shards_owned 1",
        "tokenvisor_cluster_handovers_total{direction=\"acquired\"} 1",
        "tokenvisor_cluster_fence_rejections_total 0",
        // the view's reads since the recorder was installed
        "tokenvisor_etcd_request_duration_seconds_bucket{op=\"get\",le=",
    ] {
        assert!(text.contains(series), "no {series:?} in:\n{text}");
    }
    assert!(!text.contains("alpha"), "a workload name in /metrics");
    server.abort();
    rt.shutdown(Duration::from_secs(5)).await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_pages_through_more_records_than_a_page_and_stops_at_its_bound() {
    let etcd = EtcdCluster::start(1).await;
    let a = Arc::new(connect(&options(etcd.endpoints(), "member-a")).await);
    for shard in 0..SHARDS.get() {
        assert_eq!(a.claim(shard).await.expect("claim"), Claim::Claimed);
    }
    let n = usize::try_from(VIEW_PAGE).expect("a page") + 37;
    for i in 0..n {
        let name = format!("w{i:04}");
        let shard = shard_of(&name, SHARDS);
        a.write_status(shard, &name, &record("running", ""))
            .await
            .expect("write");
    }
    let (_tx, rx) = watch::channel(BTreeSet::new());
    let view = EtcdView::new(a.clone(), SHARDS, TTL, rx);
    let snap = view.snapshot(&[]).await.expect("snapshot");
    assert_eq!(snap.workloads.len(), n, "every record, over two pages");
    assert!(!snap.truncated);
    assert!(
        snap.workloads
            .iter()
            .all(|w| w.owner.as_deref() == Some("member-a") && w.record.is_some())
    );
    let (_tx, rx) = watch::channel(BTreeSet::new());
    let bounded = EtcdView::new(a, SHARDS, TTL, rx).with_max_records(10);
    let snap = bounded.snapshot(&[]).await.expect("snapshot");
    assert_eq!(snap.workloads.len(), 10);
    assert!(snap.truncated, "the bound is said");
}

/// A client certificate for `CN=tokenvisor` issued by the CA in `dir` (`client.pem`,
/// `client.key`).
fn client_cert(dir: &Path) {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=tokenvisor",
    ]);
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "2",
        "-extfile",
        "client.ext",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates() {
    let pki = tempfile::tempdir().expect("tempdir");
    let dir = pki.path();
    make_pki(dir);
    client_cert(dir);
    let etcd = EtcdCluster::start_tls(
        1,
        &EtcdTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        },
    )
    .await;
    assert!(etcd.endpoint(0).starts_with("https://"));

    let mut opts = options(etcd.endpoints(), "tls-member");
    opts.ca_file = Some(dir.join("ca.pem"));
    opts.client_cert = Some((dir.join("client.pem"), dir.join("client.key")));
    let store = connect(&opts).await;
    assert_eq!(store.claim(1).await.expect("claim"), Claim::Claimed);
    assert!(
        matches!(
            store
                .write_status(1, "over-tls", &record("running", ""))
                .await
                .expect("write"),
            WriteOutcome::Written { .. }
        ),
        "a fenced write over TLS"
    );

    let mut no_cert = options(etcd.endpoints(), "no-cert");
    no_cert.ca_file = Some(dir.join("ca.pem"));
    let refused = ClusterStore::connect(&no_cert, Clock::new()).await;
    assert!(
        refused.is_err(),
        "etcd requires a client certificate: {refused:?}"
    );
    store.leave().await.expect("leave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_authentication_on() {
    let etcd = EtcdCluster::start(1).await;
    let password = "root-password-for-the-test";
    {
        let mut admin = etcd_client::Client::connect(etcd.endpoints(), None)
            .await
            .expect("connect");
        admin
            .user_add("root", password, None)
            .await
            .expect("user add");
        admin.role_add("root").await.expect("role add");
        admin
            .user_grant_role("root", "root")
            .await
            .expect("grant root");
        admin.auth_enable().await.expect("auth enable");
    }

    let mut opts = options(etcd.endpoints(), "auth-member");
    opts.auth = Some(("root".to_owned(), Secret::from(password)));
    let store = connect(&opts).await;
    assert_eq!(store.claim(2).await.expect("claim"), Claim::Claimed);
    assert_eq!(store.members().await.expect("members"), ["auth-member"]);

    let anonymous = ClusterStore::connect(&options(etcd.endpoints(), "anon"), Clock::new()).await;
    assert!(anonymous.is_err(), "auth is on: {anonymous:?}");
    let mut wrong = options(etcd.endpoints(), "wrong");
    wrong.auth = Some(("root".to_owned(), Secret::from("not-the-password")));
    let refused = ClusterStore::connect(&wrong, Clock::new()).await;
    let message = format!("{refused:?}");
    assert!(refused.is_err(), "a wrong password: {message}");
    assert!(
        !message.contains("not-the-password"),
        "the password leaked: {message}"
    );
    store.leave().await.expect("leave");
}
