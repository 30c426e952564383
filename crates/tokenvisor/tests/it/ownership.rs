//! One owner per credential, on tokio's paused clock with the in-memory transport: whatever
//! asks for a refresh while one is in flight (a forced refresh, new credentials, a reload
//! that changes the workload, a removal), no refresh token is ever presented twice, and the
//! token a refresh rotated to is the one presented next. A provider with reuse detection
//! revokes the whole grant when a consumed refresh token comes back; here the fake records
//! every token presented, and each test asserts none came twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokenvisor::credentials::NewCredentials;
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport, Release};
use tokenvisor::{Runtime, RuntimeConfig, TokenHandle};
use tokenvisor_core::{Secret, Timestamp, WorkloadName, WorkloadStatus};
use tokenvisor_test_support::wait::wait_until_within;

const S: fn(u64) -> Duration = Duration::from_secs;

fn name(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap()
}

struct Harness {
    rt: Runtime,
    fake: FakeTransport,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeTransport::new();
        let mut cfg = RuntimeConfig::new(dir.path().join("status"), Arc::new(fake.clone()));
        cfg.seed = Some(11);
        cfg.clock = Some(tokenvisor::Clock::anchored(Timestamp::from_millis(
            1_800_000_000_000,
        )));
        let rt = Runtime::start(cfg).await.unwrap();
        Harness { rt, fake, dir }
    }

    /// A rotating refresh-token workload `wl` (client id `wl`), its token in a file when
    /// `with_file`; returns its spec.
    fn spec(&self, with_file: bool) -> WorkloadSpec {
        let file = with_file.then(|| self.rt_file());
        if let Some(f) = &file {
            std::fs::write(f, "rt-initial\n").unwrap();
        }
        let mut s = WorkloadSpec::new(
            name("wl"),
            "http://127.0.0.1:9/token".parse().unwrap(),
            "wl",
            GrantSpec::RefreshToken {
                token: Secret::from("rt-initial"),
                file,
            },
        )
        .with_client_secret("secret-1");
        s.policy.request_timeout = S(30);
        s.policy.connect_timeout = S(2);
        s
    }

    fn rt_file(&self) -> PathBuf {
        self.dir.path().join("wl.rt")
    }

    /// `wl` added and running on its first rotated token (`rt-1`).
    async fn running(&self, with_file: bool) -> TokenHandle {
        self.fake.set_client("wl", FakeReply::rotating(3600));
        let handle = self.rt.add(self.spec(with_file)).await.unwrap();
        wait_until_within("running", S(120), || {
            status(&handle) == Some(WorkloadStatus::Running)
        })
        .await;
        handle
    }

    /// The next refresh of `wl` is answered (a rotation) only when the returned release is
    /// released; returns it once that refresh is in flight.
    async fn refresh_in_flight(&self) -> Release {
        let release = Release::new();
        let before = self.fake.count("wl");
        self.fake.push(
            "wl",
            [FakeReply::Held(
                release.clone(),
                Box::new(FakeReply::rotating(3600)),
            )],
        );
        assert!(self.rt.force_refresh(&name("wl")).await.unwrap());
        wait_until_within("the held refresh sent", S(120), || {
            self.fake.count("wl") == before + 1
        })
        .await;
        release
    }

    /// Every refresh token presented, in order.
    fn presented(&self) -> Vec<String> {
        self.fake
            .seen()
            .into_iter()
            .filter_map(|r| r.refresh_token)
            .collect()
    }

    /// No refresh token was presented twice (a provider with reuse detection would have
    /// revoked the grant).
    fn assert_no_reuse(&self) {
        let presented = self.presented();
        let mut sorted = presented.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            presented.len(),
            "a refresh token was presented twice: {presented:?}"
        );
    }
}

fn status(h: &TokenHandle) -> Option<WorkloadStatus> {
    h.status().map(|r| r.status)
}

/// `PUT …/credentials` with only a new client secret while a refresh is in flight: the new
/// attempt waits for the one in flight and presents the token it rotated to, with the new
/// secret; the rotated token is kept, not dropped as stale.
#[tokio::test(start_paused = true)]
async fn a_new_client_secret_during_a_refresh_waits_for_it_and_keeps_its_rotated_token() {
    let h = Harness::start().await;
    let handle = h.running(true).await;
    let release = h.refresh_in_flight().await;
    h.rt.supply_credentials(
        &name("wl"),
        NewCredentials {
            refresh_token: None,
            client_secret: Some(Secret::from("secret-2")),
        },
    )
    .await
    .unwrap();
    // Give the new attempt every chance to send beside the one in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.fake.count("wl"),
        2,
        "a second request while one was in flight"
    );
    release.release();
    wait_until_within("the new attempt sent", S(120), || h.fake.count("wl") == 3).await;
    wait_until_within("running", S(120), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    h.assert_no_reuse();
    let last = h.fake.seen().pop().unwrap();
    assert_eq!(last.refresh_token.as_deref(), Some("rt-2"));
    assert_eq!(last.client_secret.as_deref(), Some("secret-2"));
    assert_eq!(std::fs::read_to_string(h.rt_file()).unwrap().trim(), "rt-3");
}

/// A forced refresh while one is in flight joins it (single flight).
#[tokio::test(start_paused = true)]
async fn a_forced_refresh_during_a_refresh_joins_it() {
    let h = Harness::start().await;
    let handle = h.running(false).await;
    let release = h.refresh_in_flight().await;
    for _ in 0..5 {
        assert!(h.rt.force_refresh(&name("wl")).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    release.release();
    wait_until_within("running on rt-2", S(120), || {
        handle.current().is_ok_and(|t| t.expose() == "at-2")
    })
    .await;
    tokio::time::sleep(S(5)).await;
    assert_eq!(h.fake.count("wl"), 2);
    h.assert_no_reuse();
}

/// A removal while a refresh is in flight answers once it is done; the workload added again
/// (from its file) presents the token that refresh rotated to.
#[tokio::test(start_paused = true)]
async fn a_removal_during_a_refresh_waits_for_it() {
    let h = Harness::start().await;
    h.running(true).await;
    let release = h.refresh_in_flight().await;
    let rt = h.rt.clone();
    let removal = tokio::spawn(async move { rt.remove(&name("wl")).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !removal.is_finished(),
        "removal answered with a refresh in flight"
    );
    release.release();
    assert!(removal.await.unwrap());
    assert_eq!(std::fs::read_to_string(h.rt_file()).unwrap().trim(), "rt-2");
    let mut again = h.spec(false);
    again.grant = GrantSpec::RefreshToken {
        token: tokenvisor::credentials::read_secret_file(h.rt_file()).unwrap(),
        file: Some(h.rt_file()),
    };
    let handle = h.rt.add(again).await.unwrap();
    wait_until_within("running again", S(120), || {
        status(&handle) == Some(WorkloadStatus::Running)
    })
    .await;
    h.assert_no_reuse();
}

/// A reload (SIGHUP → `Runtime::reconcile`) that changes the workload while a refresh is in
/// flight: the restart waits for it and the new actor presents the token it rotated to —
/// from the file, and also when the refresh token is inline in the configuration (no file:
/// the rotated token lived only in the old actor's credential store).
#[tokio::test(start_paused = true)]
async fn a_reload_changing_the_workload_during_a_refresh_presents_the_rotated_token() {
    for with_file in [true, false] {
        let h = Harness::start().await;
        h.running(with_file).await;
        let release = h.refresh_in_flight().await;
        // The same workload with another setting, the configured token as loaded again.
        let mut changed = h.spec(with_file);
        if with_file {
            changed.grant = GrantSpec::RefreshToken {
                token: Secret::from("rt-1"),
                file: Some(h.rt_file()),
            };
        }
        changed.scopes = Arc::from(vec!["read".to_owned()]);
        let rt = h.rt.clone();
        let reload = tokio::spawn(async move {
            rt.reconcile(vec![changed], |_| Ok::<(), String>(()))
                .await
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            h.fake.count("wl"),
            2,
            "file {with_file}: a second request in flight"
        );
        release.release();
        let report = reload.await.unwrap();
        assert_eq!(report.changed, 1);
        let handle = h.rt.handle(&name("wl")).await.unwrap().unwrap();
        wait_until_within("running after the reload", S(120), || {
            handle.current().is_ok_and(|t| t.expose() == "at-3")
        })
        .await;
        h.assert_no_reuse();
        assert_eq!(
            h.presented().last().map(String::as_str),
            Some("rt-2"),
            "file {with_file}"
        );
    }
}

/// `invalid_grant` for a token someone else rotated meanwhile (another tool wrote the
/// refresh-token file): the attempt reads the file again, tries the token it finds, and the
/// workload stays running instead of becoming unauthenticated.
#[tokio::test(start_paused = true)]
async fn invalid_grant_after_the_file_was_rotated_elsewhere_adopts_the_new_token() {
    let h = Harness::start().await;
    let handle = h.running(true).await;
    let mut events = h.rt.subscribe();
    std::fs::write(h.rt_file(), "rt-from-elsewhere\n").unwrap();
    h.fake
        .push("wl", [FakeReply::oauth_error(400, "invalid_grant")]);
    assert!(h.rt.force_refresh(&name("wl")).await.unwrap());
    wait_until_within("both requests", S(120), || h.fake.count("wl") == 3).await;
    wait_until_within("running on the new token", S(120), || {
        handle.current().is_ok_and(|t| t.expose() == "at-3")
    })
    .await;
    assert_eq!(status(&handle), Some(WorkloadStatus::Running));
    while let Ok(change) = events.try_recv() {
        assert_ne!(
            change.status,
            WorkloadStatus::Unauthenticated,
            "unauthenticated on a token someone else had rotated"
        );
    }
    assert_eq!(
        h.presented(),
        vec!["rt-initial", "rt-1", "rt-from-elsewhere"]
    );
    assert_eq!(std::fs::read_to_string(h.rt_file()).unwrap().trim(), "rt-3");
}

/// `invalid_grant` when nothing changed stays final: one request, unauthenticated.
#[tokio::test(start_paused = true)]
async fn invalid_grant_with_the_current_token_is_still_final() {
    let h = Harness::start().await;
    let handle = h.running(true).await;
    h.fake
        .push("wl", [FakeReply::oauth_error(400, "invalid_grant")]);
    assert!(h.rt.force_refresh(&name("wl")).await.unwrap());
    wait_until_within("unauthenticated", S(120), || {
        status(&handle) == Some(WorkloadStatus::Unauthenticated)
    })
    .await;
    assert_eq!(h.fake.count("wl"), 2);
}
