//! `tokenvisor status --cluster`: the binary asks an instance's admin API (here a stand-in
//! on 127.0.0.1 answering `GET /v1/workloads` as an instance in cluster mode does, bearer
//! checked) and prints every workload with its owner; exit 1 for a workload without an
//! owner, an unreachable instance, or an instance not in cluster mode.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};

use crate::common::{Run, run_cmd, tokenvisor};

const TOKEN: &str = "cluster-status-admin-token-0123";

/// Serves `listing` at `/v1/workloads` to a caller presenting [`TOKEN`].
async fn instance(listing: Value) -> SocketAddr {
    let app = Router::new().route(
        "/v1/workloads",
        get(move |headers: HeaderMap| {
            let listing = listing.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if auth == format!("Bearer {TOKEN}") {
                    (StatusCode::OK, axum::Json(listing))
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"error": "missing or invalid bearer token"})),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn row(name: &str, status: &str, owner: Option<&str>) -> Value {
    json!({
        "name": name, "status": status, "status_context": "", "token_state": "healthy",
        "expires_at": null, "next_attempt_at": null, "attempt": 0, "last_error": null,
        "token_url": "https://idp.example.test/token", "grant": "refresh_token",
        "owner": owner, "shard": 7,
    })
}

async fn status(addr: SocketAddr, token_file: &std::path::Path, extra: &[&str]) -> Run {
    let mut cmd = tokenvisor();
    cmd.args(["status", "--cluster", "--admin"])
        .arg(format!("http://{addr}"))
        .arg("--admin-token-file")
        .arg(token_file)
        .args(extra);
    tokio::task::spawn_blocking(move || run_cmd(&mut cmd))
        .await
        .unwrap()
}

fn token_file(dir: &tempfile::TempDir, content: &str) -> std::path::PathBuf {
    let path = dir.path().join("admin.token");
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cluster_prints_every_workload_with_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, TOKEN);
    let addr = instance(json!([
        row("alpha", "running", Some("tv-1")),
        row("beta", "auth_retrying", Some("tv-2")),
    ]))
    .await;
    let r = status(addr, &file, &[]).await;
    assert_eq!(r.code, Some(0), "{r:#?}");
    assert!(r.stdout.contains("OWNER"), "{r:#?}");
    let alpha = r.stdout.lines().find(|l| l.starts_with("alpha")).unwrap();
    assert!(
        alpha.contains("tv-1") && alpha.contains("running"),
        "{alpha}"
    );
    let beta = r.stdout.lines().find(|l| l.starts_with("beta")).unwrap();
    assert!(
        beta.contains("tv-2") && beta.contains("auth_retrying"),
        "{beta}"
    );

    let r = status(addr, &file, &["--json", "beta"]).await;
    assert_eq!(r.code, Some(0), "{r:#?}");
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["owner"], "tv-2");
    assert!(!r.all().contains(TOKEN), "the admin token was printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cluster_exits_1_without_an_owner_a_token_or_cluster_mode() {
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(&dir, TOKEN);
    let addr = instance(json!([
        row("alpha", "running", Some("tv-1")),
        row("orphan", "running", None),
    ]))
    .await;
    let r = status(addr, &file, &[]).await;
    assert_eq!(r.code, Some(1), "a workload no member owns: {r:#?}");
    let orphan = r.stdout.lines().find(|l| l.starts_with("orphan")).unwrap();
    assert!(orphan.contains("no owner"), "{orphan}");

    let other = tempfile::tempdir().unwrap();
    let wrong = token_file(&other, "not-the-admin-token-000");
    let r = status(addr, &wrong, &[]).await;
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(r.stderr.contains("401"), "{r:#?}");

    let mut single = row("alpha", "running", None);
    single.as_object_mut().unwrap().remove("owner");
    let single = instance(json!([single])).await;
    let r = status(single, &file, &[]).await;
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(r.stderr.contains("not in cluster mode"), "{r:#?}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let r = status(closed, &file, &[]).await;
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(r.stderr.contains("cannot reach"), "{r:#?}");

    let r = run_cmd(tokenvisor().args(["status", "--cluster"]));
    assert_eq!(r.code, Some(2), "neither --admin nor --config: {r:#?}");
}
