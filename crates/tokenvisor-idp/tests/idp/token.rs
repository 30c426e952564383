//! `/token` and `/revoke`: grants, rotation, reuse detection, client authentication.

use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use tokenvisor_idp::{AuthMethod, ClientSpec, ExpiresInShape, TokenShape};

use crate::common::{
    APP, APP_SECRET, Auth, OTHER, OTHER_SECRET, assert_oauth_error, http, json, post_form, refresh,
    refresh_as, start,
};

#[tokio::test]
async fn refresh_with_rotation_issues_a_new_refresh_token() {
    let idp = start().await;
    let rt0 = idp.issue_refresh_token(APP).unwrap();

    let resp = refresh(&idp, &rt0).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
    let body = json(resp).await;
    assert!(body["access_token"].as_str().unwrap().starts_with("at_"));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let rt1 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt0);
    assert_eq!(idp.live_refresh_tokens(APP), vec![rt1.clone()]);

    let body = json(refresh(&idp, &rt1).await).await;
    let rt2 = body["refresh_token"].as_str().unwrap();
    assert_ne!(rt2, rt1);
    assert_eq!(idp.counters().success, 2);
    idp.shutdown().await;
}

#[tokio::test]
async fn reuse_of_a_rotated_token_revokes_the_whole_family() {
    let idp = start().await;
    let rt0 = idp.issue_refresh_token(APP).unwrap();
    let unrelated = idp.issue_refresh_token(APP).unwrap();
    let rt1 = json(refresh(&idp, &rt0).await).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let body = assert_oauth_error(refresh(&idp, &rt0).await, 400, "invalid_grant").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("reuse")
    );
    // The newest token of the family is dead too.
    assert_oauth_error(refresh(&idp, &rt1).await, 400, "invalid_grant").await;
    // Another grant of the same client is not affected.
    assert_eq!(refresh(&idp, &unrelated).await.status(), 200);

    let c = idp.counters();
    assert_eq!(c.reuse_detected, 1);
    assert_eq!(c.revoked, 1);
    assert_eq!(c.invalid_grant, 2);
    assert_eq!(c.revocations, 1);
    assert_eq!(c.success, 2);
}

#[tokio::test]
async fn without_rotation_the_refresh_token_stays_valid() {
    let idp = start().await;
    idp.register_client(ClientSpec::new("fixed", "pw").with_rotation(false));
    let rt = idp.issue_refresh_token("fixed").unwrap();
    for _ in 0..3 {
        let resp = refresh_as(&idp, Auth::Basic("fixed", "pw"), &rt).await;
        assert_eq!(resp.status(), 200);
        let body = json(resp).await;
        assert!(body.get("refresh_token").is_none(), "{body}");
        assert!(body["access_token"].is_string());
    }
    assert_eq!(idp.counters().reuse_detected, 0);
}

#[tokio::test]
async fn client_credentials_grant_issues_an_access_token_only() {
    let idp = start().await;
    let resp = post_form(
        &http(),
        &idp.token_url(),
        Auth::Basic(APP, APP_SECRET),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "read write"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body = json(resp).await;
    assert!(body["access_token"].as_str().unwrap().len() > 16);
    assert!(body.get("refresh_token").is_none());
    assert_eq!(body["scope"], "read write");
    assert_eq!(
        idp.last_request(APP).unwrap().grant_type.as_deref(),
        Some("client_credentials")
    );
}

#[tokio::test]
async fn basic_and_post_client_authentication_are_both_accepted() {
    let idp = start().await;
    // A secret that changes under form-urlencoding, to check RFC 6749 §2.3.1 decoding.
    let secret = "p@ss word:+/%";
    idp.register_client(ClientSpec::new("weird id", secret));
    let cc = [("grant_type", "client_credentials")];
    let http = http();

    for (auth, method) in [
        (Auth::Basic(APP, APP_SECRET), AuthMethod::Basic),
        (Auth::BasicPlain(APP, APP_SECRET), AuthMethod::Basic),
        (Auth::Basic("weird id", secret), AuthMethod::Basic),
        (Auth::BasicPlain("weird id", secret), AuthMethod::Basic),
        (Auth::Post(APP, APP_SECRET), AuthMethod::Post),
        (Auth::Post("weird id", secret), AuthMethod::Post),
    ] {
        let resp = post_form(&http, &idp.token_url(), auth, &cc).await.unwrap();
        assert_eq!(resp.status(), 200);
        let last = idp.last_request_any().unwrap();
        assert_eq!(last.auth, method);
        assert!(matches!(last.client_id.as_deref(), Some(APP | "weird id")));
    }
    assert_eq!(idp.counters().success, 6);
    assert_eq!(idp.counters().client("weird id"), 3);
}

#[tokio::test]
async fn wrong_secret_unknown_client_and_no_credentials_are_invalid_client() {
    let idp = start().await;
    let http = http();
    let cc = [("grant_type", "client_credentials")];
    for auth in [
        Auth::Basic(APP, "nope"),
        Auth::Post(APP, "nope"),
        Auth::Basic("ghost", "x"),
        Auth::Post("ghost", "x"),
        Auth::None,
    ] {
        let resp = post_form(&http, &idp.token_url(), auth, &cc).await.unwrap();
        assert!(resp.headers().contains_key(WWW_AUTHENTICATE));
        assert_oauth_error(resp, 401, "invalid_client").await;
    }
    // A client_id field without a secret is not authentication either.
    let resp = post_form(
        &http,
        &idp.token_url(),
        Auth::None,
        &[("grant_type", "client_credentials"), ("client_id", APP)],
    )
    .await
    .unwrap();
    assert_oauth_error(resp, 401, "invalid_client").await;
    // A malformed Authorization header.
    let resp = http
        .post(idp.token_url())
        .header("authorization", "Basic !!!not-base64")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_oauth_error(resp, 401, "invalid_client").await;

    let c = idp.counters();
    assert_eq!(c.invalid_client, 7);
    assert_eq!(c.success, 0);
}

#[tokio::test]
async fn two_authentication_methods_at_once_are_invalid_request() {
    let idp = start().await;
    let resp = post_form(
        &http(),
        &idp.token_url(),
        Auth::Basic(APP, APP_SECRET),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", APP_SECRET),
        ],
    )
    .await
    .unwrap();
    assert_oauth_error(resp, 400, "invalid_request").await;
    // A client_id field that repeats the Basic id is fine.
    let resp = post_form(
        &http(),
        &idp.token_url(),
        Auth::Basic(APP, APP_SECRET),
        &[("grant_type", "client_credentials"), ("client_id", APP)],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn missing_parameters_and_unsupported_grants() {
    let idp = start().await;
    let http = http();
    let auth = Auth::Basic(APP, APP_SECRET);
    let url = idp.token_url();

    let resp = post_form(&http, &url, auth, &[]).await.unwrap();
    assert_oauth_error(resp, 400, "invalid_request").await;
    let resp = post_form(&http, &url, auth, &[("grant_type", "refresh_token")])
        .await
        .unwrap();
    assert_oauth_error(resp, 400, "invalid_request").await;
    let resp = post_form(&http, &url, auth, &[("grant_type", "password")])
        .await
        .unwrap();
    assert_oauth_error(resp, 400, "unsupported_grant_type").await;
    let resp = refresh(&idp, "rt_never_issued").await;
    assert_oauth_error(resp, 400, "invalid_grant").await;

    let c = idp.counters();
    assert_eq!(c.invalid_request, 2);
    assert_eq!(c.unsupported_grant_type, 1);
    assert_eq!(c.invalid_grant, 1);
    assert_eq!(c.token_requests, 4);
}

#[tokio::test]
async fn a_refresh_token_of_another_client_is_invalid_grant() {
    let idp = start().await;
    let rt = idp.issue_refresh_token(OTHER).unwrap();
    assert_oauth_error(refresh(&idp, &rt).await, 400, "invalid_grant").await;
    // It was not consumed.
    let resp = refresh_as(&idp, Auth::Basic(OTHER, OTHER_SECRET), &rt).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn scope_resource_and_audience_are_recorded() {
    let idp = start().await;
    idp.register_client(ClientSpec::new("scoped", "pw").with_scope("default-scope"));
    let rt = idp.issue_refresh_token(APP).unwrap();
    let resp = post_form(
        &http(),
        &idp.token_url(),
        Auth::Post(APP, APP_SECRET),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("scope", "mcp:read"),
            ("resource", "https://a.example/mcp"),
            ("resource", "https://b.example/mcp"),
            ("audience", "api://thing"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(json(resp).await["scope"], "mcp:read");
    let last = idp.last_request(APP).unwrap();
    assert_eq!(last.path, "/token");
    assert_eq!(last.grant_type.as_deref(), Some("refresh_token"));
    assert_eq!(last.scope(), Some("mcp:read"));
    assert_eq!(
        last.resources(),
        ["https://a.example/mcp", "https://b.example/mcp"]
    );
    assert_eq!(last.audiences(), ["api://thing"]);
    assert_eq!(last.param("refresh_token"), Some(rt.as_str()));
    assert!(idp.last_request(OTHER).is_none());

    // Without a requested scope, the grant's (client's default) scope is echoed.
    let rt = idp.issue_refresh_token("scoped").unwrap();
    let body = json(refresh_as(&idp, Auth::Basic("scoped", "pw"), &rt).await).await;
    assert_eq!(body["scope"], "default-scope");
}

#[tokio::test]
async fn token_lifetime_and_response_shape_are_configurable() {
    let idp = start().await;
    let cases = [
        (ExpiresInShape::Number, "Bearer", serde_json::json!(2)),
        (ExpiresInShape::String, "bearer", serde_json::json!("2")),
        (ExpiresInShape::Omit, "BEARER", serde_json::Value::Null),
    ];
    for (i, (expires_in, token_type, expected)) in cases.into_iter().enumerate() {
        let id = format!("shape-{i}");
        idp.register_client(
            ClientSpec::new(&id, "pw")
                .with_lifetime(Duration::from_secs(2))
                .with_token_shape(TokenShape {
                    expires_in,
                    token_type: token_type.to_owned(),
                }),
        );
        let resp = post_form(
            &http(),
            &idp.token_url(),
            Auth::Basic(&id, "pw"),
            &[("grant_type", "client_credentials")],
        )
        .await
        .unwrap();
        let body = json(resp).await;
        assert_eq!(body["token_type"], token_type);
        assert_eq!(
            body.get("expires_in").cloned().unwrap_or_default(),
            expected
        );
    }
    // Sub-second lifetimes are rounded up, never announced as 0.
    idp.register_client(ClientSpec::new("short", "pw").with_lifetime(Duration::from_millis(300)));
    let resp = post_form(
        &http(),
        &idp.token_url(),
        Auth::Basic("short", "pw"),
        &[("grant_type", "client_credentials")],
    )
    .await
    .unwrap();
    assert_eq!(json(resp).await["expires_in"], 1);
}

#[tokio::test]
async fn revocation_endpoint_revokes_the_grant() {
    let idp = start().await;
    let http = http();
    let rt0 = idp.issue_refresh_token(APP).unwrap();
    let rt1 = json(refresh(&idp, &rt0).await).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let resp = post_form(
        &http,
        &idp.revoke_url(),
        Auth::Basic(APP, APP_SECRET),
        &[("token", &rt1), ("token_type_hint", "refresh_token")],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_oauth_error(refresh(&idp, &rt1).await, 400, "invalid_grant").await;
    assert_eq!(idp.counters().revoked, 1);

    // Unknown tokens are answered 200 (RFC 7009 §2.2); a foreign client cannot revoke.
    let other_rt = idp.issue_refresh_token(OTHER).unwrap();
    for token in ["rt_unknown", other_rt.as_str()] {
        let resp = post_form(
            &http,
            &idp.revoke_url(),
            Auth::Post(APP, APP_SECRET),
            &[("token", token)],
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        refresh_as(&idp, Auth::Basic(OTHER, OTHER_SECRET), &other_rt)
            .await
            .status(),
        200
    );
    // Client authentication and the token parameter are required.
    let resp = post_form(
        &http,
        &idp.revoke_url(),
        Auth::Basic(APP, "bad"),
        &[("token", "x")],
    )
    .await
    .unwrap();
    assert_oauth_error(resp, 401, "invalid_client").await;
    let resp = post_form(&http, &idp.revoke_url(), Auth::Basic(APP, APP_SECRET), &[])
        .await
        .unwrap();
    assert_oauth_error(resp, 400, "invalid_request").await;

    let c = idp.counters();
    assert_eq!(c.revoke_requests, 5);
    assert_eq!(c.revocations, 1);
    assert_eq!(idp.last_request(APP).unwrap().path, "/revoke");
}

#[tokio::test]
async fn library_revocation_of_a_token_and_of_a_client() {
    let idp = start().await;
    let a = idp.issue_refresh_token(APP).unwrap();
    let b = idp.issue_refresh_token(APP).unwrap();
    let c = idp.issue_refresh_token(APP).unwrap();
    let other = idp.issue_refresh_token(OTHER).unwrap();

    assert!(idp.revoke_refresh_token(&a));
    assert!(!idp.revoke_refresh_token(&a), "already revoked");
    assert!(!idp.revoke_refresh_token("rt_unknown"));
    assert_oauth_error(refresh(&idp, &a).await, 400, "invalid_grant").await;
    assert_eq!(refresh(&idp, &b).await.status(), 200);

    assert_eq!(idp.revoke_client_grants(APP), 2);
    for token in [&b, &c] {
        assert_oauth_error(refresh(&idp, token).await, 400, "invalid_grant").await;
    }
    assert!(idp.live_refresh_tokens(APP).is_empty());
    assert_eq!(
        refresh_as(&idp, Auth::Basic(OTHER, OTHER_SECRET), &other)
            .await
            .status(),
        200
    );
    assert!(matches!(
        idp.issue_refresh_token("ghost"),
        Err(tokenvisor_idp::IdpError::UnknownClient(_))
    ));
    let counters = idp.counters();
    assert_eq!(counters.revocations, 3);
    assert_eq!(counters.revoked, 3);
}

#[tokio::test]
async fn counters_count_per_client_and_per_outcome() {
    let idp = start().await;
    let rt = idp.issue_refresh_token(APP).unwrap();
    assert_eq!(refresh(&idp, &rt).await.status(), 200);
    assert_eq!(refresh(&idp, "nope").await.status(), 400);
    let resp = refresh_as(&idp, Auth::Basic(OTHER, "bad"), "x").await;
    assert_eq!(resp.status(), 401);
    let resp = refresh_as(&idp, Auth::Basic("ghost", "bad"), "x").await;
    assert_eq!(resp.status(), 401);

    let c = idp.counters();
    assert_eq!(c.total, 4);
    assert_eq!(c.token_requests, 4);
    assert_eq!(c.success, 1);
    assert_eq!(c.invalid_grant, 1);
    assert_eq!(c.invalid_client, 2);
    assert_eq!(c.client(APP), 2);
    assert_eq!(c.client(OTHER), 1);
    assert_eq!(c.client("ghost"), 0);
    assert_eq!(c.faults_total(), 0);

    idp.reset_counters();
    assert_eq!(
        idp.counters(),
        tokenvisor_idp::Counters {
            per_client: c.per_client.keys().map(|k| (k.clone(), 0)).collect(),
            ..Default::default()
        }
    );
}
