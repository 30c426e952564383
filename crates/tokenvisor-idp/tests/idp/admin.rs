//! Lifecycle, health and the admin JSON API.

use std::net::SocketAddr;

use tokenvisor_idp::{
    Counters, Fault, FaultCommand, FaultKind, FaultScope, IdpConfig, IdpError, IdpServer,
    RequestInfo, Times,
};

use crate::common::{
    APP, APP_SECRET, Auth, admin_get, admin_post, assert_oauth_error, http, json, post_form,
    refresh, refresh_as, start,
};

#[tokio::test]
async fn healthz_answers_ok() {
    let idp = start().await;
    assert!(idp.addr().ip().is_loopback());
    let resp = http()
        .get(format!("{}/healthz", idp.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok\n");
    let resp = http()
        .get(format!("{}/nowhere", idp.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text().await.unwrap(), "not found\n");
    let resp = http().get(idp.token_url()).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.text().await.unwrap(), "method not allowed\n");
    // HEAD is not GET: the routes answer only the methods they name.
    let resp = http()
        .head(format!("{}/healthz", idp.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let resp = http()
        .put(format!("{}/admin/faults", idp.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.text().await.unwrap(), "method not allowed\n");
    assert_eq!(
        idp.counters().total,
        0,
        "only /token and /revoke are counted"
    );
}

#[tokio::test]
async fn non_loopback_addresses_are_refused() {
    for addr in ["0.0.0.0:0", "192.0.2.1:0", "[::]:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let err = IdpServer::start(IdpConfig::default().with_listen(addr))
            .await
            .unwrap_err();
        assert!(
            matches!(err, IdpError::NotLoopback(a) if a == addr),
            "{err}"
        );
    }
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_open_connections() {
    let idp = start().await;
    let addr = idp.addr();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // A keep-alive connection, open when the server stops.
    assert_eq!(
        http.get(format!("{}/healthz", idp.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    idp.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(
        http.get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let idp = start().await;
    let addr = idp.addr();
    drop(idp);
    // The server task notices on its next poll; no wall-clock wait.
    let mut stopped = false;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            stopped = true;
            break;
        }
    }
    assert!(stopped);
}

#[tokio::test]
async fn admin_fault_endpoint_arms_lists_and_clears() {
    let idp = start().await;
    let command = FaultCommand {
        scope: FaultScope::Client(APP.into()),
        fault: Fault::OAuthError {
            status: 400,
            code: "invalid_grant".into(),
        },
        times: Times::Next(1),
    };
    let resp = admin_post(&idp, "/fault", &command.to_json()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(idp.faults(), vec![command]);
    let listed = json(admin_get(&idp, "/faults").await).await;
    assert_eq!(listed[0]["client"], APP);
    assert_eq!(listed[0]["fault"]["kind"], "oauth_error");

    let rt = idp.issue_refresh_token(APP).unwrap();
    assert_oauth_error(refresh(&idp, &rt).await, 400, "invalid_grant").await;
    assert_eq!(refresh(&idp, &rt).await.status(), 200);

    let body = r#"{"fault":{"kind":"too_many_requests","retry_after":5}}"#;
    assert_eq!(admin_post(&idp, "/fault", body).await.status(), 200);
    assert_eq!(idp.faults().len(), 1);
    let resp = http()
        .delete(format!("{}/faults", idp.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(idp.faults().is_empty());
    assert_eq!(admin_post(&idp, "/fault", body).await.status(), 200);
    assert_eq!(admin_post(&idp, "/faults/clear", "").await.status(), 200);
    assert!(idp.faults().is_empty());

    let resp = admin_post(&idp, "/fault", r#"{"fault":{"kind":"bogus"}}"#).await;
    assert_eq!(resp.status(), 400);
    assert!(
        json(resp).await["error"]
            .as_str()
            .unwrap()
            .contains("bogus")
    );
}

#[tokio::test]
async fn admin_counters_match_the_library_counters() {
    let idp = start().await;
    idp.set_fault(FaultScope::Global, Fault::Drop, Times::Next(1));
    let dropped = post_form(
        &http(),
        &idp.token_url(),
        Auth::Basic(APP, APP_SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert!(dropped.is_err());
    let rt = idp.issue_refresh_token(APP).unwrap();
    let _ = refresh(&idp, &rt).await;
    let _ = refresh(&idp, &rt).await;

    let resp = admin_get(&idp, "/counters").await;
    assert_eq!(resp.status(), 200);
    let counters: Counters = serde_json::from_value(json(resp).await).unwrap();
    assert_eq!(counters, idp.counters());
    assert_eq!(counters.fault(FaultKind::Drop), 1);
    assert_eq!(counters.reuse_detected, 1);
    assert_eq!(counters.client(APP), 3);

    assert_eq!(admin_post(&idp, "/counters/reset", "").await.status(), 200);
    assert_eq!(idp.counters().total, 0);
}

#[tokio::test]
async fn admin_registers_clients_issues_and_revokes_tokens() {
    let idp = start().await;
    let spec = r#"{"id":"remote","secret":"pw","rotation":false,"lifetime":"2s","scope":"s"}"#;
    assert_eq!(admin_post(&idp, "/clients", spec).await.status(), 201);
    let ids = json(admin_get(&idp, "/clients").await).await;
    assert_eq!(ids, serde_json::json!([APP, "other", "remote"]));

    let resp = admin_post(&idp, "/refresh-token", r#"{"client_id":"remote"}"#).await;
    let rt = json(resp).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json(refresh_as(&idp, Auth::Basic("remote", "pw"), &rt).await).await;
    assert_eq!(body["expires_in"], 2);
    assert_eq!(body["scope"], "s");
    assert!(body.get("refresh_token").is_none(), "rotation is off");

    let resp = admin_post(&idp, "/refresh-token", r#"{"client_id":"ghost"}"#).await;
    assert_eq!(resp.status(), 404);

    let body = format!(r#"{{"refresh_token":"{rt}"}}"#);
    let resp = admin_post(&idp, "/revoke", &body).await;
    assert_eq!(json(resp).await["revoked"], 1);
    let resp = refresh_as(&idp, Auth::Basic("remote", "pw"), &rt).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;

    idp.issue_refresh_token(APP).unwrap();
    idp.issue_refresh_token(APP).unwrap();
    let resp = admin_post(&idp, "/revoke", r#"{"client_id":"app"}"#).await;
    assert_eq!(json(resp).await["revoked"], 2);
    let resp = admin_post(&idp, "/revoke", "{}").await;
    assert_eq!(resp.status(), 400);
    let resp = admin_post(&idp, "/clients", r#"{"id":"no-secret"}"#).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn admin_last_request() {
    let idp = start().await;
    assert_eq!(admin_get(&idp, "/last-request").await.status(), 404);
    let resp = post_form(
        &http(),
        &idp.token_url(),
        Auth::Post(APP, APP_SECRET),
        &[("grant_type", "client_credentials"), ("audience", "aud")],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);

    let info: RequestInfo =
        serde_json::from_value(json(admin_get(&idp, "/last-request?client_id=app").await).await)
            .unwrap();
    assert_eq!(info, idp.last_request(APP).unwrap());
    assert_eq!(info.audiences(), ["aud"]);
    let any: RequestInfo =
        serde_json::from_value(json(admin_get(&idp, "/last-request").await).await).unwrap();
    assert_eq!(any, info);
    assert_eq!(
        admin_get(&idp, "/last-request?client_id=other")
            .await
            .status(),
        404
    );
}
