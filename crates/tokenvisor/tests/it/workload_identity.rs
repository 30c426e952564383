//! The workload-identity grants (`jwt_bearer`, `token_exchange`) in the runtime, on tokio's
//! paused clock with the in-memory transport: the platform's token is read at every attempt
//! (a rotated file is presented at the next one), an expired JWT is never sent and the
//! workload says why, an unreadable subject token likewise, and the provider's
//! `invalid_grant` is transient for these grants (final for a refresh token).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokenvisor::spec::{GrantSpec, PresentedToken, TokenExchangeSpec, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport};
use tokenvisor::{Runtime, RuntimeConfig, TokenHandle};
use tokenvisor_core::{Secret, Timestamp, WorkloadName, WorkloadStatus};
use tokenvisor_test_support::wait::wait_until_within;

const S: fn(u64) -> Duration = Duration::from_secs;
/// The runtime's clock (anchored, paused), in seconds since the epoch.
const NOW: u64 = 1_800_000_000;

async fn start() -> (tempfile::TempDir, FakeTransport, Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    let mut cfg = RuntimeConfig::new(dir.path(), Arc::new(fake.clone()));
    cfg.seed = Some(7);
    cfg.clock = Some(tokenvisor::Clock::anchored(Timestamp::from_millis(
        NOW * 1000,
    )));
    let rt = Runtime::start(cfg).await.unwrap();
    (dir, fake, rt)
}

/// An (unsigned) JWT expiring at `exp`, told apart by `jti`.
fn jwt(exp: u64, jti: &str) -> String {
    let e = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let claims = format!(r#"{{"exp":{exp},"jti":"{jti}"}}"#);
    format!("{}.{}.sig", e(r#"{"alg":"ES256"}"#.to_owned()), e(claims))
}

fn spec(name: &str, grant: GrantSpec) -> WorkloadSpec {
    let mut s = WorkloadSpec::new(
        WorkloadName::new(name).unwrap(),
        "http://127.0.0.1:9/token".parse().unwrap(),
        name,
        grant,
    );
    s.policy.request_timeout = S(10);
    s.policy.connect_timeout = S(2);
    s
}

async fn wait_status(h: &TokenHandle, what: &str, want: impl Fn(WorkloadStatus, &str) -> bool) {
    wait_until_within(what, S(600), || {
        h.status()
            .is_some_and(|r| want(r.status, &r.status_context))
    })
    .await;
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_expired_assertion_is_not_sent_and_a_rotated_one_is_presented() {
    let (dir, fake, rt) = start().await;
    let file = dir.path().join("assertion.jwt");
    write(&file, &jwt(NOW - 60, "old"));
    let grant = GrantSpec::JwtBearer {
        assertion_file: file.clone(),
    };
    let h = rt.add(spec("agent", grant)).await.unwrap();
    wait_status(&h, "auth_retrying: assertion expired", |s, ctx| {
        s == WorkloadStatus::AuthRetrying
            && ctx.contains("assertion_file")
            && ctx.contains("expired at 2027-01-15T07:59:00")
    })
    .await;
    assert_eq!(fake.count("agent"), 0, "an expired assertion was sent");

    // The platform writes a fresh one: the next attempt presents it.
    write(&file, &format!("{}\n", jwt(NOW + 86_400, "a1")));
    wait_status(&h, "running", |s, _| s == WorkloadStatus::Running).await;
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].presented.as_deref(),
        Some(jwt(NOW + 86_400, "a1").as_str())
    );
    assert_eq!(seen[0].refresh_token, None);

    // Rotated between attempts: the next attempt reads the file again.
    write(&file, &jwt(NOW + 86_400, "a2"));
    assert!(
        rt.force_refresh(&WorkloadName::new("agent").unwrap())
            .await
            .unwrap()
    );
    wait_until_within("a second request", S(60), || fake.count("agent") == 2).await;
    assert_eq!(
        fake.seen()[1].presented.as_deref(),
        Some(jwt(NOW + 86_400, "a2").as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_subject_token_is_reported_and_nothing_is_sent() {
    let (dir, fake, rt) = start().await;
    let subject = dir.path().join("subject");
    let grant = GrantSpec::TokenExchange(Arc::new(TokenExchangeSpec {
        subject: PresentedToken {
            file: subject.clone(),
            token_type: "urn:ietf:params:oauth:token-type:access_token".into(),
        },
        actor: None,
        requested_token_type: None,
    }));
    let h = rt.add(spec("tx", grant)).await.unwrap();
    wait_status(&h, "auth_retrying: subject unreadable", |s, ctx| {
        s == WorkloadStatus::AuthRetrying
            && ctx.contains("subject_token_file")
            && ctx.contains("cannot read")
    })
    .await;
    assert_eq!(fake.count("tx"), 0);
    // An opaque token (no `exp` to read) is presented as it is.
    write(&subject, "opaque-subject-token");
    wait_status(&h, "running", |s, _| s == WorkloadStatus::Running).await;
    assert_eq!(
        fake.seen()[0].presented.as_deref(),
        Some("opaque-subject-token")
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_is_transient_for_an_assertion_and_final_for_a_refresh_token() {
    let (dir, fake, rt) = start().await;
    let file = dir.path().join("assertion.jwt");
    write(&file, &jwt(NOW + 86_400, "a1"));
    fake.set_default(FakeReply::oauth_error(400, "invalid_grant"));
    let assertion = rt
        .add(spec(
            "agent",
            GrantSpec::JwtBearer {
                assertion_file: file,
            },
        ))
        .await
        .unwrap();
    let refresh = rt
        .add(spec(
            "refresher",
            GrantSpec::RefreshToken {
                token: Secret::from("rt-0"),
                file: None,
            },
        ))
        .await
        .unwrap();
    wait_status(&refresh, "refresh token: unauthenticated", |s, _| {
        s == WorkloadStatus::Unauthenticated
    })
    .await;
    wait_until_within("three rejected assertions", S(600), || {
        fake.count("agent") >= 3
    })
    .await;
    let r = assertion.status().unwrap();
    assert_eq!(
        r.status,
        WorkloadStatus::AuthRetrying,
        "{}",
        r.status_context
    );
    assert!(
        r.status_context.contains("invalid_grant"),
        "{}",
        r.status_context
    );
}

/// A final verdict (`invalid_client`) leaves the workload unauthenticated while its token
/// file holds the token already presented; the platform's next token wakes it.
#[tokio::test(start_paused = true)]
async fn an_unauthenticated_workload_tries_again_when_its_token_file_changes() {
    let (dir, fake, rt) = start().await;
    let file = dir.path().join("assertion.jwt");
    write(&file, &jwt(NOW + 86_400, "a1"));
    fake.set_default(FakeReply::oauth_error(401, "invalid_client"));
    let grant = GrantSpec::JwtBearer {
        assertion_file: file.clone(),
    };
    let h = rt.add(spec("agent", grant)).await.unwrap();
    wait_status(&h, "unauthenticated", |s, _| {
        s == WorkloadStatus::Unauthenticated
    })
    .await;
    // Three polls of the unchanged file: nothing sent again.
    tokio::time::sleep(S(35)).await;
    assert_eq!(fake.count("agent"), 1);
    fake.set_default(FakeReply::token(3600));
    write(&file, &jwt(NOW + 86_400, "a2"));
    wait_status(&h, "running with the new token", |s, _| {
        s == WorkloadStatus::Running
    })
    .await;
    assert_eq!(fake.count("agent"), 2);
    assert_eq!(
        fake.seen()[1].presented.as_deref(),
        Some(jwt(NOW + 86_400, "a2").as_str())
    );
}
