//! `Runtime::reconcile` on tokio's paused clock with the in-memory transport: start-up is a
//! reconcile from nothing, a reload stops, restarts (re-reading the refresh-token file),
//! starts and resizes endpoints, and the `admit` hook can refuse a start.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport};
use tokenvisor::{ReconcileReport, Runtime, RuntimeConfig};
use tokenvisor_core::{Secret, StatusRecord, Timestamp, WorkloadName, WorkloadStatus};
use tokenvisor_test_support::wait::wait_until_within;

const S: fn(u64) -> Duration = Duration::from_secs;

fn name(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap()
}

/// A refresh-token workload whose client id is its name, its token in `file` if given.
fn spec(n: &str, file: Option<&Path>) -> WorkloadSpec {
    let mut s = WorkloadSpec::new(
        name(n),
        "http://127.0.0.1:9/token".parse().unwrap(),
        n,
        GrantSpec::RefreshToken {
            token: Secret::from(format!("rt-loaded-{n}")),
            file: file.map(Path::to_path_buf),
        },
    )
    .with_client_secret("client-secret-value");
    s.policy.request_timeout = S(10);
    s.policy.connect_timeout = S(2);
    s
}

async fn start(dir: &Path, fake: &FakeTransport) -> Runtime {
    let mut cfg = RuntimeConfig::new(dir, Arc::new(fake.clone()));
    cfg.seed = Some(7);
    cfg.clock = Some(tokenvisor::Clock::anchored(Timestamp::from_millis(
        1_800_000_000_000,
    )));
    Runtime::start(cfg).await.unwrap()
}

fn admit_all(_: &WorkloadSpec) -> Result<(), String> {
    Ok(())
}

async fn running_names(rt: &Runtime) -> Vec<String> {
    let list = rt.list().await.unwrap();
    list.iter().map(|v| v.spec.name.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn start_up_is_a_reconcile_from_nothing_and_admit_can_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    let rt = start(dir.path(), &fake).await;
    let refuse_b = |s: &WorkloadSpec| {
        if s.name.as_str() == "b" {
            Err("its refresh-token file is locked")
        } else {
            Ok(())
        }
    };
    let report = rt
        .reconcile(
            vec![spec("a", None), spec("b", None), spec("c", None)],
            refuse_b,
        )
        .await
        .unwrap();
    assert_eq!(
        report,
        ReconcileReport {
            added: 3,
            removed: 0,
            changed: 0,
            endpoints_resized: 0,
            total: 2,
        }
    );
    assert_eq!(running_names(&rt).await, ["a", "c"]);
    wait_until_within("a and c fetched a token", S(60), || {
        fake.count("a") == 1 && fake.count("c") == 1
    })
    .await;
    assert_eq!(fake.count("b"), 0, "a refused workload sends nothing");

    // The same set again changes nothing.
    let again = rt
        .reconcile(vec![spec("a", None), spec("c", None)], admit_all)
        .await
        .unwrap();
    assert_eq!(
        (again.added, again.changed, again.removed, again.total),
        (0, 0, 0, 2)
    );
    rt.shutdown(S(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_reload_stops_restarts_with_the_live_refresh_token_and_starts() {
    let dir = tempfile::tempdir().unwrap();
    let status_dir = dir.path().join("status");
    let rt_file = dir.path().join("moved.rt");
    std::fs::write(&rt_file, "rt-on-disk-1\n").unwrap();
    let fake = FakeTransport::new();
    let rt = start(&status_dir, &fake).await;
    rt.reconcile(
        vec![
            spec("gone", None),
            spec("moved", Some(&rt_file)),
            spec("kept", None),
        ],
        admit_all,
    )
    .await
    .unwrap();
    wait_until_within("three tokens", S(60), || fake.total() == 3).await;

    // The old actor's rotation wrote a newer token than the one the reload just loaded.
    std::fs::write(&rt_file, "rt-on-disk-2\n").unwrap();
    let mut moved = spec("moved", Some(&rt_file));
    moved.client_id = "moved-v2".into();
    let report = rt
        .reconcile(
            vec![spec("kept", None), moved, spec("new", None)],
            admit_all,
        )
        .await
        .unwrap();
    assert_eq!(
        report,
        ReconcileReport {
            added: 1,
            removed: 1,
            changed: 1,
            endpoints_resized: 0,
            total: 3,
        }
    );
    assert_eq!(running_names(&rt).await, ["kept", "moved", "new"]);
    wait_until_within("the restarted and the new workload fetched", S(60), || {
        fake.count("moved-v2") == 1 && fake.count("new") == 1
    })
    .await;
    let presented: Vec<Option<String>> = fake
        .seen()
        .into_iter()
        .filter(|r| r.client_id == "moved-v2")
        .map(|r| r.refresh_token)
        .collect();
    assert_eq!(presented, [Some("rt-on-disk-2".to_owned())]);
    assert_eq!(
        fake.count("kept"),
        1,
        "an unchanged workload is not restarted"
    );

    rt.flush(S(5)).await.unwrap();
    let gone = std::fs::read(status_dir.join("gone.json")).unwrap();
    assert_eq!(
        StatusRecord::from_json(&gone).unwrap().status,
        WorkloadStatus::Stopped
    );
    rt.shutdown(S(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_changed_endpoint_concurrency_resizes_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    fake.set_default(FakeReply::token(3600));
    let rt = start(dir.path(), &fake).await;
    rt.reconcile(vec![spec("a", None), spec("b", None)], admit_all)
        .await
        .unwrap();
    wait_until_within("two tokens", S(60), || fake.total() == 2).await;
    let narrow = |n: &str| {
        let mut s = spec(n, None);
        s.policy.endpoint_concurrency = 1;
        s
    };
    let report = rt
        .reconcile(vec![narrow("a"), narrow("b")], admit_all)
        .await
        .unwrap();
    assert_eq!(
        (report.endpoints_resized, report.changed, report.total),
        (1, 0, 2)
    );
    for view in rt.list().await.unwrap() {
        assert_eq!(view.spec.policy.endpoint_concurrency, 1);
    }
    assert_eq!(fake.total(), 2, "nothing restarted");
    rt.shutdown(S(5)).await.unwrap();
}

/// A spec built in code is held to the rules a configuration file's workload is: `add`
/// refuses one that breaks them, naming each key, and starts nothing (no exchange is sent);
/// a reconcile skips it and starts the others.
#[tokio::test(start_paused = true)]
async fn a_spec_built_in_code_that_breaks_a_rule_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    fake.set_default(FakeReply::token(3600));
    let rt = start(dir.path(), &fake).await;
    let mut bad = spec("bad", None);
    bad.policy.request_timeout = Duration::ZERO;
    bad.policy.permanent_codes = vec!["quote\"d".into()];
    let err = rt.add(bad.clone()).await.unwrap_err();
    let tokenvisor::RuntimeError::InvalidSpec { name: n, problems } = &err else {
        panic!("{err}");
    };
    assert_eq!(n, &name("bad"));
    let keys: Vec<&str> = problems.iter().map(|p| p.key).collect();
    assert!(keys.contains(&"request_timeout"), "{keys:?}");
    assert!(keys.contains(&"permanent_codes"), "{keys:?}");
    assert!(err.to_string().starts_with("workload bad: "), "{err}");
    let mut creds_in_url = spec("creds-in-url", None);
    creds_in_url.token_url = "https://user:pa55@idp.example/token".parse().unwrap();
    let err = rt.add(creds_in_url).await.unwrap_err().to_string();
    assert!(
        err.starts_with("workload creds-in-url: token_url: "),
        "{err}"
    );
    assert!(!err.contains("pa55"), "{err}");
    assert!(running_names(&rt).await.is_empty());

    let report = rt
        .reconcile(vec![bad, spec("good", None)], admit_all)
        .await
        .unwrap();
    assert_eq!(report.total, 1);
    assert_eq!(running_names(&rt).await, ["good"]);
    assert_eq!(fake.count("bad"), 0);
    rt.shutdown(S(5)).await.unwrap();
}
