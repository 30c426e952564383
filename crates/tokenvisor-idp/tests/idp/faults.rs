//! Faults: each kind's status, headers and body shape; scopes; `Times::Next`.

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_LENGTH, LOCATION, RETRY_AFTER};
use tokenvisor_idp::{Fault, FaultKind, FaultScope, IdpServer, RetryAfter, Times};

use crate::common::{
    APP, APP_SECRET, Auth, OTHER, OTHER_SECRET, assert_oauth_error, content_type, http,
    http_with_timeout, json, post_form, refresh, refresh_as, start,
};

/// Arms `fault` globally for one request and returns the answer to a refresh.
async fn one_faulted_refresh(idp: &IdpServer, fault: Fault) -> reqwest::Response {
    idp.set_fault(FaultScope::Global, fault, Times::Next(1));
    let rt = idp.issue_refresh_token(APP).unwrap();
    refresh(idp, &rt).await
}

async fn text(resp: reqwest::Response) -> String {
    resp.text().await.unwrap()
}

#[tokio::test]
async fn html_forbidden_is_a_403_html_page() {
    let idp = start().await;
    let resp = one_faulted_refresh(&idp, Fault::HtmlForbidden).await;
    assert_eq!(resp.status(), 403);
    assert!(content_type(&resp).starts_with("text/html"));
    let body = text(resp).await;
    assert!(
        body.contains("<html>") && body.contains("firewall"),
        "{body}"
    );
    assert_eq!(idp.counters().fault(FaultKind::HtmlForbidden), 1);
}

#[tokio::test]
async fn json_forbidden_has_no_error_member() {
    let idp = start().await;
    let resp = one_faulted_refresh(&idp, Fault::JsonForbiddenNoError).await;
    assert_eq!(resp.status(), 403);
    assert!(content_type(&resp).starts_with("application/json"));
    assert_eq!(json(resp).await, serde_json::json!({"message": "blocked"}));
}

#[tokio::test]
async fn too_many_requests_with_seconds_and_slow_down_body() {
    let idp = start().await;
    let fault = Fault::TooManyRequests {
        retry_after: Some(RetryAfter::Seconds(7)),
        slow_down_body: true,
    };
    let resp = one_faulted_refresh(&idp, fault).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()[RETRY_AFTER], "7");
    assert_oauth_error_status_any(resp, "slow_down").await;
}

async fn assert_oauth_error_status_any(resp: reqwest::Response, code: &str) {
    let status = resp.status().as_u16();
    assert_oauth_error(resp, status, code).await;
}

#[tokio::test]
async fn too_many_requests_with_a_date_and_a_plain_body() {
    let idp = start().await;
    let at = SystemTime::now() + Duration::from_secs(120);
    let fault = Fault::TooManyRequests {
        retry_after: Some(RetryAfter::Date(at)),
        slow_down_body: false,
    };
    let resp = one_faulted_refresh(&idp, fault).await;
    assert_eq!(resp.status(), 429);
    let header = resp.headers()[RETRY_AFTER].to_str().unwrap().to_owned();
    let parsed = httpdate::parse_http_date(&header).unwrap();
    assert_eq!(header, httpdate::fmt_http_date(at));
    assert!(parsed > SystemTime::now());
    assert!(content_type(&resp).starts_with("text/plain"));
    assert!(text(resp).await.contains("Too Many Requests"));

    let resp = one_faulted_refresh(
        &idp,
        Fault::TooManyRequests {
            retry_after: None,
            slow_down_body: false,
        },
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert!(!resp.headers().contains_key(RETRY_AFTER));
}

#[tokio::test]
async fn service_unavailable_with_retry_after() {
    let idp = start().await;
    let resp = one_faulted_refresh(
        &idp,
        Fault::ServiceUnavailable {
            retry_after: Some(RetryAfter::Seconds(30)),
        },
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()[RETRY_AFTER], "30");
    assert!(content_type(&resp).starts_with("text/html"));
    assert!(text(resp).await.contains("Service Unavailable"));
}

#[tokio::test]
async fn server_errors_with_html_or_empty_bodies() {
    let idp = start().await;
    let resp = one_faulted_refresh(&idp, Fault::ServerError(502)).await;
    assert_eq!(resp.status(), 502);
    assert!(content_type(&resp).starts_with("text/html"));
    assert!(text(resp).await.contains("502"));

    let resp = one_faulted_refresh(&idp, Fault::ServerErrorEmpty(504)).await;
    assert_eq!(resp.status(), 504);
    assert!(text(resp).await.is_empty());
    let c = idp.counters();
    assert_eq!(c.fault(FaultKind::ServerError), 1);
    assert_eq!(c.fault(FaultKind::ServerErrorEmpty), 1);
}

#[tokio::test]
async fn oauth_errors_as_json_and_as_a_form() {
    let idp = start().await;
    let resp = one_faulted_refresh(
        &idp,
        Fault::OAuthError {
            status: 400,
            code: "temporarily_unavailable".into(),
        },
    )
    .await;
    let body = assert_oauth_error(resp, 400, "temporarily_unavailable").await;
    assert!(body["error_description"].is_string());

    let resp = one_faulted_refresh(
        &idp,
        Fault::OAuthErrorForm {
            status: 401,
            code: "invalid_client".into(),
        },
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(content_type(&resp), "application/x-www-form-urlencoded");
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&text(resp).await).unwrap();
    assert_eq!(form[0], ("error".to_owned(), "invalid_client".to_owned()));
    assert_eq!(form[1].0, "error_description");
}

#[tokio::test]
async fn malformed_successes() {
    let idp = start().await;
    let resp = one_faulted_refresh(&idp, Fault::OkHtml).await;
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("text/html"));
    assert!(text(resp).await.contains("Sign in"));

    let resp = one_faulted_refresh(&idp, Fault::OkJsonWithoutToken).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await, serde_json::json!({"foo": 1}));

    let resp = one_faulted_refresh(
        &idp,
        Fault::OkError {
            code: "invalid_grant".into(),
        },
    )
    .await;
    assert_oauth_error(resp, 200, "invalid_grant").await;
    assert_eq!(idp.counters().success, 0);
}

#[tokio::test]
async fn redirect_points_to_a_login_page_on_the_same_server() {
    let idp = start().await;
    let resp = one_faulted_refresh(&idp, Fault::Redirect).await;
    assert_eq!(resp.status(), 302);
    let location = resp.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(location, format!("{}/login", idp.url()));
    let page = http().get(&location).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(content_type(&page).starts_with("text/html"));
}

#[tokio::test]
async fn delay_then_answers_normally() {
    let idp = start().await;
    let resp = one_faulted_refresh(&idp, Fault::Delay(Duration::from_millis(20))).await;
    assert_eq!(resp.status(), 200);
    assert!(json(resp).await["refresh_token"].is_string());
    let c = idp.counters();
    assert_eq!(c.fault(FaultKind::Delay), 1);
    assert_eq!(c.success, 1);
}

#[tokio::test]
async fn a_client_that_gives_up_during_a_delay_keeps_its_refresh_token() {
    let idp = start().await;
    let rt = idp.issue_refresh_token(APP).unwrap();
    idp.set_fault(
        FaultScope::Global,
        Fault::Delay(Duration::from_secs(3600)),
        Times::Next(1),
    );
    let err = post_form(
        &http_with_timeout(Duration::from_millis(200)),
        &idp.token_url(),
        Auth::Basic(APP, APP_SECRET),
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(refresh(&idp, &rt).await.status(), 200);
}

#[tokio::test]
async fn slow_body_trickles_a_normal_answer() {
    let idp = start().await;
    let resp = one_faulted_refresh(
        &idp,
        Fault::SlowBody {
            chunk_bytes: 16,
            interval: Duration::from_millis(1),
        },
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key(CONTENT_LENGTH));
    let body = json(resp).await;
    assert!(body["access_token"].is_string());
    assert_eq!(idp.counters().fault(FaultKind::SlowBody), 1);
}

#[tokio::test]
async fn slow_body_makes_a_client_with_a_total_timeout_time_out() {
    let idp = start().await;
    idp.set_fault(
        FaultScope::Global,
        Fault::SlowBody {
            chunk_bytes: 1,
            interval: Duration::from_secs(3600),
        },
        Times::Always,
    );
    let http = http_with_timeout(Duration::from_millis(300));
    let resp = post_form(
        &http,
        &idp.token_url(),
        Auth::Basic(APP, APP_SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await
    .expect("headers arrive at once");
    assert_eq!(resp.status(), 200);
    let err = resp.bytes().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn drop_closes_the_connection_without_a_response() {
    let idp = start().await;
    idp.set_fault(FaultScope::Global, Fault::Drop, Times::Next(1));
    let rt = idp.issue_refresh_token(APP).unwrap();
    let err = post_form(
        &http(),
        &idp.token_url(),
        Auth::Basic(APP, APP_SECRET),
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await
    .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.status().is_none());
    assert_eq!(idp.counters().fault(FaultKind::Drop), 1);
    // The server is fine and the refresh token was not consumed.
    assert_eq!(refresh(&idp, &rt).await.status(), 200);
}

#[tokio::test]
async fn huge_body_is_served_whole() {
    let idp = start().await;
    let size = 8 << 20;
    let resp = one_faulted_refresh(
        &idp,
        Fault::HugeBody {
            status: 403,
            bytes: size,
        },
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert!(content_type(&resp).starts_with("text/html"));
    assert_eq!(resp.headers()[CONTENT_LENGTH], size.to_string().as_str());
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), size);
    assert!(body.starts_with(b"<!DOCTYPE html>"));
}

#[tokio::test]
async fn next_n_clears_itself_and_faults_do_not_consume_tokens() {
    let idp = start().await;
    let rt = idp.issue_refresh_token(APP).unwrap();
    idp.set_fault(FaultScope::Global, Fault::HtmlForbidden, Times::Next(2));
    assert_eq!(idp.faults().len(), 1);
    assert_eq!(idp.faults()[0].times, Times::Next(2));
    assert_eq!(refresh(&idp, &rt).await.status(), 403);
    assert_eq!(idp.faults()[0].times, Times::Next(1));
    assert_eq!(refresh(&idp, &rt).await.status(), 403);
    assert!(idp.faults().is_empty());
    // Still the original token: faulted requests never touched the grant.
    assert_eq!(refresh(&idp, &rt).await.status(), 200);
    let c = idp.counters();
    assert_eq!(c.fault(FaultKind::HtmlForbidden), 2);
    assert_eq!(c.success, 1);
    assert_eq!(c.total, 3);
}

#[tokio::test]
async fn client_faults_apply_to_that_client_and_beat_global_ones() {
    let idp = start().await;
    let app_rt = idp.issue_refresh_token(APP).unwrap();
    let other_rt = idp.issue_refresh_token(OTHER).unwrap();
    let other = Auth::Basic(OTHER, OTHER_SECRET);

    idp.set_fault(
        FaultScope::Client(OTHER.into()),
        Fault::ServerError(500),
        Times::Always,
    );
    assert_eq!(refresh(&idp, &app_rt).await.status(), 200);
    assert_eq!(refresh_as(&idp, other, &other_rt).await.status(), 500);

    idp.set_fault(FaultScope::Global, Fault::HtmlForbidden, Times::Always);
    assert_eq!(refresh_as(&idp, other, &other_rt).await.status(), 500);
    let app_rt2 = idp.issue_refresh_token(APP).unwrap();
    assert_eq!(refresh(&idp, &app_rt2).await.status(), 403);
    // Faults act before authentication, on the claimed client id.
    assert_eq!(
        refresh_as(&idp, Auth::Basic(OTHER, "wrong"), "x")
            .await
            .status(),
        500
    );

    idp.clear_fault(&FaultScope::Client(OTHER.into()));
    assert_eq!(refresh_as(&idp, other, &other_rt).await.status(), 403);
    idp.clear_faults();
    assert!(idp.faults().is_empty());
    assert_eq!(refresh_as(&idp, other, &other_rt).await.status(), 200);
}

#[tokio::test]
async fn raw_sends_the_status_headers_and_body_as_given() {
    let idp = start().await;
    let fault = Fault::Raw {
        status: 403,
        content_type: Some("application/json".into()),
        headers: vec![
            ("X-RateLimit-Reset".into(), "1790000042".into()),
            ("RateLimit".into(), "limit=10, remaining=0, reset=7".into()),
            ("bad header name".into(), "skipped".into()),
        ],
        body: r#"{"status":403,"error":"Forbidden","path":"/oauth2/token"}"#.into(),
    };
    // The JSON form (admin API, `--fault`) round-trips.
    let cmd = tokenvisor_idp::FaultCommand {
        scope: FaultScope::Global,
        fault: fault.clone(),
        times: Times::Next(1),
    };
    assert_eq!(
        tokenvisor_idp::FaultCommand::from_json(&cmd.to_json()).unwrap(),
        cmd
    );
    let resp = one_faulted_refresh(&idp, fault).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(content_type(&resp), "application/json");
    assert_eq!(resp.headers()["x-ratelimit-reset"], "1790000042");
    assert_eq!(
        resp.headers()["ratelimit"],
        "limit=10, remaining=0, reset=7"
    );
    assert_eq!(json(resp).await["error"], "Forbidden");
    assert_eq!(idp.counters().fault(FaultKind::Raw), 1);
    assert_eq!(idp.counters().success, 0);
}
