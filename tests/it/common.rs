//! The suite's harness: an in-process `tokenvisor-idp` on 127.0.0.1 and a runtime over a
//! temporary status directory with the real HTTP transport. The state-change collector,
//! the bounded wait, the status readers and the idp's policy are tokenvisor-test-support's
//! (re-exported here).
//!
//! Time is real but short: tokens live a few seconds, backoff starts at 100 ms and is capped
//! at 1 s, requests time out after 2 s. Nothing sleeps to let time pass: tests wait for an
//! event (a state change, an idp counter) with [`wait_until`], which polls every 20 ms and
//! fails with a clear message after a generous limit.

use std::time::Duration;

use tokenvisor::TokenHandle;
use tokenvisor::spec::{GrantSpec, WorkloadPolicy, WorkloadSpec};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::{Secret, StatusRecord, WorkloadStatus};
use tokenvisor_idp::{ClientSpec, IdpConfig, IdpServer};
pub(crate) use tokenvisor_test_support::events::Events;
use tokenvisor_test_support::scenario::IdpEndpoint;
pub(crate) use tokenvisor_test_support::scenario::{http_transport as transport, name, status};
pub(crate) use tokenvisor_test_support::status::read_status_file;
pub(crate) use tokenvisor_test_support::wait::wait_until;

/// Shorthand for whole seconds.
pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The client secret the idp knows each test client by.
pub(crate) fn secret_of(client_id: &str) -> String {
    IdpEndpoint::secret_of(client_id)
}

/// Short timeouts and backoff: every scenario runs in a few seconds of real time.
pub(crate) fn fast_policy() -> WorkloadPolicy {
    WorkloadPolicy {
        max_retry_after: secs(10),
        ..IdpEndpoint::policy()
    }
}

/// A refresh-token workload named `workload` for idp client `client_id`.
pub(crate) fn refresh_spec(
    idp: &IdpServer,
    workload: &str,
    client_id: &str,
    refresh_token: &str,
) -> WorkloadSpec {
    let mut spec = WorkloadSpec::new(
        name(workload),
        idp.token_url().parse().unwrap(),
        client_id,
        GrantSpec::RefreshToken {
            token: Secret::from(refresh_token),
            file: None,
        },
    )
    .with_client_secret(&secret_of(client_id));
    spec.policy = fast_policy();
    spec
}

/// A client_credentials workload named `workload` for idp client `client_id`.
pub(crate) fn client_credentials_spec(
    idp: &IdpServer,
    workload: &str,
    client_id: &str,
) -> WorkloadSpec {
    let mut spec = WorkloadSpec::new(
        name(workload),
        idp.token_url().parse().unwrap(),
        client_id,
        GrantSpec::ClientCredentials,
    )
    .with_client_secret(&secret_of(client_id));
    spec.policy = fast_policy();
    spec
}

/// One idp, one runtime, one status directory, every state change.
pub(crate) struct Harness {
    pub(crate) idp: IdpServer,
    pub(crate) rt: Runtime,
    pub(crate) events: Events,
    pub(crate) dir: tempfile::TempDir,
}

impl Harness {
    /// A fresh idp and a runtime over a fresh temporary status directory.
    pub(crate) async fn start() -> Harness {
        let idp = IdpServer::start(IdpConfig::default())
            .await
            .unwrap_or_else(|e| panic!("cannot start the idp: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let rt = Runtime::start(RuntimeConfig::new(dir.path(), transport()))
            .await
            .unwrap_or_else(|e| panic!("cannot start the runtime: {e}"));
        let events = Events::collect(&rt);
        Harness {
            idp,
            rt,
            events,
            dir,
        }
    }

    /// Registers idp client `client_id` (rotation on) whose tokens live `lifetime`, and
    /// starts a grant for it: returns the refresh token.
    pub(crate) fn client(&self, client_id: &str, lifetime: Duration) -> String {
        self.idp.register_client(
            ClientSpec::new(client_id, secret_of(client_id)).with_lifetime(lifetime),
        );
        self.idp
            .issue_refresh_token(client_id)
            .unwrap_or_else(|e| panic!("cannot issue a refresh token: {e}"))
    }

    /// Registers `client_id` with `lifetime` and adds a refresh-token workload of the same
    /// name for it.
    pub(crate) async fn add_refresh(&self, client_id: &str, lifetime: Duration) -> TokenHandle {
        let rt = self.client(client_id, lifetime);
        self.add(refresh_spec(&self.idp, client_id, client_id, &rt))
            .await
    }

    /// Adds a workload.
    pub(crate) async fn add(&self, spec: WorkloadSpec) -> TokenHandle {
        let n = spec.name.clone();
        self.rt
            .add(spec)
            .await
            .unwrap_or_else(|e| panic!("cannot add {n}: {e}"))
    }

    /// Waits until the workload's status is `want`.
    pub(crate) async fn wait_status(&self, h: &TokenHandle, want: WorkloadStatus) {
        let what = format!("{} to be {}", h.name(), want.as_str());
        wait_until(&what, || status(h) == Some(want)).await;
    }

    /// Requests the idp saw from a client.
    pub(crate) fn count(&self, client_id: &str) -> u64 {
        self.idp.counters().client(client_id)
    }

    /// Flushes the runtime, then reads the workload's status file from disk.
    pub(crate) async fn file(&self, workload: &str) -> StatusRecord {
        self.flush().await;
        read_status_file(self.dir.path(), workload)
    }

    /// Flushes the runtime and asserts every status is durable.
    pub(crate) async fn flush(&self) {
        let report = self
            .rt
            .flush(secs(10))
            .await
            .unwrap_or_else(|e| panic!("flush: {e}"));
        assert!(report.failed.is_empty(), "status writes failed: {report:?}");
    }

    /// The raw text of a workload's status file.
    pub(crate) fn raw_file(&self, workload: &str) -> String {
        let path = self.dir.path().join(format!("{workload}.json"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// Waits out the window in which a retry of a workload would reach the idp (the backoff
    /// is capped at 1 s), measured in events: three scheduled refreshes of a canary (idp
    /// client `canary`, added here) whose tokens live 2 s. "It never happened again" is
    /// checked after this, not at the verdict.
    pub(crate) async fn wait_retry_window(&self) {
        let canary = self.add_refresh("canary", secs(2)).await;
        self.wait_status(&canary, WorkloadStatus::Running).await;
        self.wait_requests("canary", self.count("canary"), 3).await;
    }

    /// Waits until the idp has seen `n` more requests from `client_id` than `since`: a window
    /// of real activity measured in events rather than in time.
    pub(crate) async fn wait_requests(&self, client_id: &str, since: u64, n: u64) {
        let what = format!("{n} more requests from {client_id}");
        wait_until(&what, || self.count(client_id) >= since + n).await;
    }
}
