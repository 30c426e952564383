//! The state journal through the runtime, on tokio's paused clock with the in-memory
//! transport: durable before use, restarts that resume instead of refreshing, grants kept
//! from rejected answers, operator edits adopted, and status files that agree with the
//! journal. The journal and the status files are real files in a temporary directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokenvisor::journal::Journal;
use tokenvisor::persistence::DEFAULT_JOURNAL_SUBDIR;
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport};
use tokenvisor::{Runtime, RuntimeConfig, TokenHandle};
use tokenvisor_core::policy::BackoffPolicy;
use tokenvisor_core::{Secret, StatusRecord, Timestamp, WorkloadName, WorkloadStatus};
use tokenvisor_test_support::wait::wait_until_within;

const S: fn(u64) -> Duration = Duration::from_secs;

fn name(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap()
}

/// A refresh-token workload whose client id is its name, with `token` (and `file`).
fn spec_with(n: &str, token: &str, file: Option<&Path>) -> WorkloadSpec {
    let mut s = WorkloadSpec::new(
        name(n),
        "http://127.0.0.1:9/token".parse().unwrap(),
        n,
        GrantSpec::RefreshToken {
            token: Secret::from(token),
            file: file.map(Path::to_path_buf),
        },
    );
    s.policy.backoff = BackoffPolicy {
        initial: S(5),
        max: S(60),
        multiplier: 2.0,
    };
    s.policy.give_up_after = S(6 * 3600);
    s.policy.request_timeout = S(10);
    s
}

fn spec(n: &str) -> WorkloadSpec {
    spec_with(n, &format!("rt-initial-{n}"), None)
}

/// One wall clock for the whole test (anchored once, it follows tokio's paused time), so
/// that a restarted runtime sees the time that passed.
fn clock() -> tokenvisor::Clock {
    thread_local! {
        static CLOCK: tokenvisor::Clock =
            tokenvisor::Clock::anchored(Timestamp::from_millis(1_800_000_000_000));
    }
    CLOCK.with(|c| *c)
}

async fn start(dir: &Path, fake: &FakeTransport) -> Runtime {
    let mut cfg = RuntimeConfig::new(dir, Arc::new(fake.clone()));
    cfg.seed = Some(7);
    cfg.clock = Some(clock());
    Runtime::start(cfg).await.unwrap()
}

/// A runtime over `dir` whose transport answers `reply`, with `spec` added and `running`.
async fn running(
    dir: &Path,
    spec: WorkloadSpec,
    reply: FakeReply,
) -> (FakeTransport, Runtime, TokenHandle) {
    let fake = FakeTransport::new();
    fake.set_default(reply);
    let rt = start(dir, &fake).await;
    let handle = rt.add(spec).await.unwrap();
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    (fake, rt, handle)
}

fn status(h: &TokenHandle) -> Option<WorkloadStatus> {
    h.status().map(|r| r.status)
}

fn presented(fake: &FakeTransport, n: &str) -> Vec<String> {
    fake.seen()
        .into_iter()
        .filter(|r| r.client_id == n)
        .filter_map(|r| r.refresh_token)
        .collect()
}

fn read_file(dir: &Path, n: &str) -> StatusRecord {
    let bytes = std::fs::read(dir.join(format!("{n}.json"))).unwrap();
    StatusRecord::from_json(&bytes).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_rotated_token_that_cannot_be_saved_keeps_the_workload_out_of_running_and_fails_shutdown()
{
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    fake.set_client("wl", FakeReply::rotating(3600));
    let rt = start(dir.path(), &fake).await;
    let handle = rt.add(spec("wl")).await.unwrap();
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    let served = handle.current().unwrap().expose().to_owned();

    // The disk fills up; the provider rotates the grant on the next refresh.
    rt.inject_journal_failures(true);
    let mut changes = rt.subscribe();
    assert!(rt.force_refresh(&name("wl")).await.unwrap());
    wait_until_within("auth_retrying", S(60), || {
        status(&handle) == Some(WorkloadStatus::AuthRetrying)
    })
    .await;
    let record = handle.status().unwrap();
    assert!(
        record.status_context.contains("not saved"),
        "{}",
        record.status_context
    );
    // The token it held is still served; the new one is not.
    assert_eq!(handle.current().unwrap().expose(), served);
    let sent = fake.count("wl");

    // Minutes later (several backoffs): never `running`, and no refresh sent with a token
    // that is not durable.
    tokio::time::sleep(S(300)).await;
    assert_eq!(
        fake.count("wl"),
        sent,
        "a refresh was sent with an unsaved token"
    );
    while let Ok(change) = changes.try_recv() {
        assert_ne!(change.status, WorkloadStatus::Running, "{change:?}");
    }

    // Shutdown cannot save it: the report names the workload (the daemon exits non-zero).
    let report = rt.shutdown(S(2)).await.unwrap();
    assert_eq!(report.credentials_not_saved, vec![name("wl")], "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_commit_that_succeeds_again_lets_the_workload_run_with_the_saved_token() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    fake.set_client("wl", FakeReply::rotating(3600));
    let rt = start(dir.path(), &fake).await;
    let handle = rt.add(spec("wl")).await.unwrap();
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    rt.inject_journal_failures(true);
    assert!(rt.force_refresh(&name("wl")).await.unwrap());
    wait_until_within("auth_retrying", S(60), || {
        status(&handle) == Some(WorkloadStatus::AuthRetrying)
    })
    .await;
    rt.inject_journal_failures(false);
    wait_until_within("running again", S(600), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    // The next refresh presented the rotated token that was saved late.
    let seen = presented(&fake, "wl");
    assert_eq!(seen[..3], ["rt-initial-wl", "rt-1", "rt-2"], "{seen:?}");
    let report = rt.shutdown(S(5)).await.unwrap();
    assert!(report.credentials_not_saved.is_empty(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_valid_tokens_sends_no_refresh_request() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c"];
    {
        let fake = FakeTransport::new();
        fake.set_default(FakeReply::rotating(3600));
        let rt = start(dir.path(), &fake).await;
        let mut handles = Vec::new();
        for n in names {
            handles.push(rt.add(spec(n)).await.unwrap());
        }
        wait_until_within("all running", S(60), || {
            handles
                .iter()
                .all(|h| status(h) == Some(WorkloadStatus::Running))
        })
        .await;
        let report = rt.shutdown(S(5)).await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
    }
    // Ten minutes later, a new process over the same directories.
    tokio::time::sleep(S(600)).await;
    let fake = FakeTransport::new();
    fake.set_default(FakeReply::rotating(3600));
    let rt = start(dir.path(), &fake).await;
    for n in names {
        let handle = rt.add(spec(n)).await.unwrap();
        // Served at once, from the journal.
        assert!(handle.current().is_ok(), "{n}: {:?}", handle.current());
    }
    tokio::time::sleep(S(60)).await;
    for n in names {
        let handle = rt.handle(&name(n)).await.unwrap().unwrap();
        assert_eq!(status(&handle), Some(WorkloadStatus::Running), "{n}");
    }
    assert_eq!(fake.total(), 0, "refresh requests for tokens not due");

    // When they fall due they are refreshed with the journal's (rotated) refresh token.
    tokio::time::sleep(S(3600)).await;
    let mut firsts: Vec<String> = names
        .iter()
        .map(|n| presented(&fake, n).first().cloned().unwrap_or_default())
        .collect();
    for (n, first) in names.iter().zip(&firsts) {
        assert!(
            first.starts_with("rt-") && !first.starts_with("rt-initial"),
            "{n}: {first}"
        );
    }
    firsts.dedup();
    assert_eq!(firsts.len(), names.len(), "{firsts:?}");
    rt.shutdown(S(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rejected_2xx_carrying_a_refresh_token_saves_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    // A 200 without an access token (malformed_success) that rotated the grant.
    fake.push(
        "wl",
        [FakeReply::Http {
            status: 200,
            content_type: Some("application/json".into()),
            retry_after: None,
            body: r#"{"refresh_token":"rt-from-rejected","token_type":"Bearer"}"#.into(),
        }],
    );
    fake.set_client("wl", FakeReply::rotating(3600));
    let rt = start(dir.path(), &fake).await;
    let handle = rt.add(spec("wl")).await.unwrap();
    wait_until_within("running", S(120), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    let seen = presented(&fake, "wl");
    assert_eq!(seen[..2], ["rt-initial-wl", "rt-from-rejected"], "{seen:?}");
    rt.shutdown(S(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rejected_2xx_refresh_token_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let fake = FakeTransport::new();
        fake.set_client(
            "wl",
            FakeReply::Http {
                status: 200,
                content_type: Some("application/json".into()),
                retry_after: None,
                body: r#"{"refresh_token":"rt-from-rejected"}"#.into(),
            },
        );
        let rt = start(dir.path(), &fake).await;
        let handle = rt.add(spec("wl")).await.unwrap();
        wait_until_within("retrying", S(60), || {
            status(&handle) == Some(WorkloadStatus::AuthRetrying)
        })
        .await;
        rt.shutdown(S(5)).await.unwrap();
    }
    let (fake, rt, _handle) = running(dir.path(), spec("wl"), FakeReply::token(3600)).await;
    assert_eq!(presented(&fake, "wl")[0], "rt-from-rejected");
    rt.shutdown(S(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_operator_edit_of_the_refresh_token_file_is_adopted_and_otherwise_the_journal_wins() {
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let file = creds.path().join("wl.rt");
    std::fs::write(&file, "rt-initial-wl").unwrap();
    {
        let (_fake, rt, _handle) = running(
            dir.path(),
            spec_with("wl", "rt-initial-wl", Some(&file)),
            FakeReply::rotating(60),
        )
        .await;
        rt.shutdown(S(5)).await.unwrap();
    }
    // Rotated and written back.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "rt-1");

    // Unchanged file, token expired: the journal's token is used (the same one here).
    tokio::time::sleep(S(120)).await;
    {
        let (fake, rt, _handle) = running(
            dir.path(),
            spec_with("wl", "rt-1", Some(&file)),
            FakeReply::token(60),
        )
        .await;
        assert_eq!(presented(&fake, "wl"), ["rt-1"]);
        rt.shutdown(S(5)).await.unwrap();
    }

    // The operator puts new credentials in the file while tokenvisor is down.
    std::fs::write(&file, "rt-operator").unwrap();
    let (fake, rt, _handle) = running(
        dir.path(),
        spec_with("wl", "rt-operator", Some(&file)),
        FakeReply::token(3600),
    )
    .await;
    assert_eq!(presented(&fake, "wl"), ["rt-operator"]);
    rt.shutdown(S(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_file_put_back_by_the_operator_is_adopted() {
    // The operator restores an older token into the file: whatever it is, a content that
    // differs from what tokenvisor last wrote there (the rotated token) is new credentials.
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let file = creds.path().join("wl.rt");
    std::fs::write(&file, "rt-initial-wl").unwrap();
    {
        let (_fake, rt, _handle) = running(
            dir.path(),
            spec_with("wl", "rt-initial-wl", Some(&file)),
            FakeReply::rotating(60),
        )
        .await;
        rt.shutdown(S(5)).await.unwrap();
    }
    std::fs::write(&file, "rt-initial-wl").unwrap();
    tokio::time::sleep(S(120)).await;
    let (fake, rt, _handle) = running(
        dir.path(),
        spec_with("wl", "rt-initial-wl", Some(&file)),
        FakeReply::token(60),
    )
    .await;
    // The file's content differs from what tokenvisor last wrote (rt-1): an operator edit.
    assert_eq!(presented(&fake, "wl"), ["rt-initial-wl"]);
    rt.shutdown(S(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn status_files_agree_with_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    fake.set_client("ok", FakeReply::rotating(3600));
    fake.set_client("bad", FakeReply::oauth_error(400, "invalid_grant"));
    fake.set_client("flaky", FakeReply::waf_403());
    let rt = start(dir.path(), &fake).await;
    for n in ["ok", "bad", "flaky"] {
        rt.add(spec(n)).await.unwrap();
    }
    tokio::time::sleep(S(120)).await;
    let report = rt.flush(S(5)).await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    let journal = Journal::open(&dir.path().join(DEFAULT_JOURNAL_SUBDIR)).unwrap();
    let entries = journal.load().unwrap();
    for n in ["ok", "bad", "flaky"] {
        let from_journal = entries[&name(n)].status.clone().unwrap();
        assert_eq!(read_file(dir.path(), n), from_journal, "{n}");
    }
    assert!(entries[&name("ok")].access.is_some());
    assert!(entries[&name("bad")].access.is_none());
    drop(journal);
    rt.shutdown(S(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_workload_removed_and_added_again_presents_its_last_rotated_token() {
    // A reload that changes a workload removes it and adds it again. With an inline refresh
    // token (no file), the configuration still says the first token, which the provider
    // rotated away long ago: the new actor must present the last one the old actor held.
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    fake.set_client("wl", FakeReply::rotating(3600));
    let rt = start(dir.path(), &fake).await;
    let handle = rt.add(spec("wl")).await.unwrap();
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    assert!(rt.remove(&name("wl")).await.unwrap());
    let mut changed = spec("wl");
    changed.policy.request_timeout = S(20);
    let handle = rt.add(changed).await.unwrap();
    assert!(rt.force_refresh(&name("wl")).await.unwrap());
    wait_until_within("a second request", S(60), || fake.count("wl") == 2).await;
    wait_until_within("running", S(60), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    assert_eq!(presented(&fake, "wl"), ["rt-initial-wl", "rt-1"]);
    rt.shutdown(S(5)).await.unwrap();
}

/// A restart whose tokens came due while it was down but are still valid serves them and
/// sends nothing in its quiet period (`policy::START_QUIET`, 10 s): a kill then can lose no
/// rotating grant. After it, each is refreshed once, with the journal's token.
#[tokio::test(start_paused = true)]
async fn a_restart_leaves_due_but_valid_tokens_alone_for_its_first_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b"];
    {
        let fake = FakeTransport::new();
        fake.set_default(FakeReply::rotating(3600));
        let rt = start(dir.path(), &fake).await;
        let mut handles = Vec::new();
        for n in names {
            handles.push(rt.add(spec(n)).await.unwrap());
        }
        wait_until_within("all running", S(60), || {
            handles
                .iter()
                .all(|h| status(h) == Some(WorkloadStatus::Running))
        })
        .await;
        rt.shutdown(S(5)).await.unwrap();
    }
    // Down past the refresh time (70–80 % of 3,600 s), not past the expiry.
    tokio::time::sleep(S(2_950)).await;
    let fake = FakeTransport::new();
    fake.set_default(FakeReply::rotating(3600));
    let rt = start(dir.path(), &fake).await;
    for n in names {
        let handle = rt.add(spec(n)).await.unwrap();
        assert!(handle.current().is_ok(), "{n}: {:?}", handle.current());
    }
    tokio::time::sleep(S(9)).await;
    assert_eq!(fake.total(), 0, "a refresh in the quiet period");
    for n in names {
        let handle = rt.handle(&name(n)).await.unwrap().unwrap();
        assert_eq!(status(&handle), Some(WorkloadStatus::Running), "{n}");
    }
    wait_until_within("both refreshed after the quiet period", S(15), || {
        names.iter().all(|n| presented(&fake, n).len() == 1)
    })
    .await;
    for n in names {
        let first = presented(&fake, n).remove(0);
        assert!(
            first.starts_with("rt-") && !first.starts_with("rt-initial"),
            "{n}: {first}"
        );
    }
    rt.shutdown(S(5)).await.unwrap();
}

/// The endpoint permit bounds the rotations not yet durable: an attempt whose rotated
/// refresh token is still being committed keeps its slot (and its workload's owner: it
/// reports nothing, and its workload sends nothing, until the token is durable), so a
/// kill -9 can never lose more rotations than `endpoint_concurrency`. Released before the
/// commit, the slots let a slow disk pile up answered-but-unsaved rotations, and the kill -9
/// suite lost more grants at one kill than there are slots.
#[tokio::test(start_paused = true)]
async fn a_rotation_not_yet_durable_keeps_its_endpoint_slot() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTransport::new();
    fake.set_client("a", FakeReply::rotating(3600));
    fake.set_client("b", FakeReply::rotating(3600));
    let rt = start(dir.path(), &fake).await;
    let one_slot = |n: &str| {
        let mut s = spec(n);
        s.policy.endpoint_concurrency = 1;
        s
    };
    let a = rt.add(one_slot("a")).await.unwrap();
    let b = rt.add(one_slot("b")).await.unwrap();
    wait_until_within("both running", S(60), || {
        status(&a) == Some(WorkloadStatus::Running) && status(&b) == Some(WorkloadStatus::Running)
    })
    .await;
    let a_served = a.current().unwrap().expose().to_owned();

    // The disk hangs: a's rotated token cannot commit.
    rt.inject_journal_stall(true);
    assert!(rt.force_refresh(&name("a")).await.unwrap());
    wait_until_within("a's refresh answered", S(5), || fake.count("a") == 2).await;
    // b's request waits while a's rotation is not durable (the one slot is a's).
    assert!(rt.force_refresh(&name("b")).await.unwrap());
    tokio::time::sleep(S(3)).await;
    assert_eq!(
        fake.count("b"),
        1,
        "b sent while a's rotation was not durable"
    );
    // a is not reported refreshed on a token that is not durable: it still serves the
    // token it had.
    assert_eq!(a.current().unwrap().expose(), a_served);
    assert_eq!(presented(&fake, "a").len(), 2);

    rt.inject_journal_stall(false);
    wait_until_within("a refreshed once its token is durable", S(60), || {
        a.current().is_ok_and(|t| t.expose() != a_served)
            && status(&a) == Some(WorkloadStatus::Running)
    })
    .await;
    wait_until_within("b refreshed once the slot is free", S(60), || {
        fake.count("b") >= 2 && status(&b) == Some(WorkloadStatus::Running)
    })
    .await;
    let report = rt.shutdown(S(5)).await.unwrap();
    assert!(report.credentials_not_saved.is_empty(), "{report:?}");
}
