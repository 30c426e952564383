//! The stack of one test: oidc-provider, nginx in front of it, the tokenvisor runtime in
//! process over a temporary status directory (real HTTP transport, token URL through nginx),
//! every state change collected, status files read back from disk.

use std::path::{Path, PathBuf};

use tokenvisor::TokenHandle;
use tokenvisor::spec::{AuthMethod, GrantSpec, WorkloadSpec};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::status::ErrorOutcome;
use tokenvisor_core::{Secret, StatusRecord, WorkloadName, WorkloadStatus};
use tokenvisor_test_support::scenario::http_transport;

use crate::components::{now_ms, wait_until};
use crate::endpoint::RealEndpoint;
use crate::oidc::{secret_of, uses_basic};

/// A workload name (panics on an invalid one: test input).
pub fn name(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap_or_else(|e| panic!("bad workload name {s:?}: {e}"))
}

pub use crate::endpoint::fast_policy;
pub use tokenvisor_test_support::events::Events;
pub use tokenvisor_test_support::status::{last_error, read_status};

/// A workload added to the stack.
#[derive(Clone)]
pub struct Workload {
    /// Its name.
    pub name: String,
    /// The provider's client it uses.
    pub client: String,
    /// Its handle.
    pub handle: TokenHandle,
}

/// One test's stack: the components of a [`RealEndpoint`] and a runtime in process over
/// its work directory. Fields drop in order: the runtime's handles, then the components
/// (stopped by PID) and the work directory.
pub struct Stack {
    /// The tokenvisor runtime, in process.
    pub rt: Runtime,
    /// Every state change of the runtime.
    pub events: Events,
    /// The provider behind nginx, and the work directory.
    pub ep: RealEndpoint,
}

impl Stack {
    /// The provider (access tokens living `access_ttl` seconds), nginx in pass mode in front
    /// of it (and a slow upstream if `with_slow`), a runtime over a fresh status directory.
    pub async fn start(access_ttl: u32, with_slow: bool) -> Stack {
        let ep = RealEndpoint::start_with(access_ttl, with_slow).await;
        let rt = Runtime::start(RuntimeConfig::new(
            ep.work().join("statuses"),
            http_transport(),
        ))
        .await
        .unwrap_or_else(|e| panic!("cannot start the runtime: {e}"));
        let events = Events::collect(&rt);
        Stack { rt, events, ep }
    }

    /// The status directory.
    pub fn status_dir(&self) -> PathBuf {
        self.ep.work().join("statuses")
    }

    /// The work directory (credential files live here).
    pub fn work(&self) -> &Path {
        self.ep.work()
    }

    fn spec(&self, workload: &str, client: &str, grant: GrantSpec) -> WorkloadSpec {
        let mut spec = WorkloadSpec::new(
            name(workload),
            self.ep.nginx.token_url().parse().unwrap(),
            client,
            grant,
        )
        .with_client_secret(&secret_of(client));
        spec.auth_method = if uses_basic(client) {
            AuthMethod::Basic
        } else {
            AuthMethod::Post
        };
        spec.policy = fast_policy();
        spec
    }

    /// Logs in as `client` (authorization_code + PKCE) and adds a refresh_token workload
    /// whose refresh token lives in `<work>/<workload>.rt`.
    pub async fn add_refresh(&self, workload: &str, client: &str) -> Workload {
        let rt = self.ep.oidc.login(client, 1).remove(0);
        let file = self.work().join(format!("{workload}.rt"));
        std::fs::write(&file, &rt).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let spec = self.spec(
            workload,
            client,
            GrantSpec::RefreshToken {
                token: Secret::from(rt.as_str()),
                file: Some(file.clone()),
            },
        );
        self.add_workload(spec).await
    }

    /// The refresh token a refresh_token workload holds now (its `<work>/<workload>.rt`).
    pub fn refresh_token(&self, w: &Workload) -> String {
        let file = self.work().join(format!("{}.rt", w.name));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_owned()
    }

    /// Adds a client_credentials workload for `client` (with `secret` instead of the right
    /// one, if given).
    pub async fn add_client_credentials(
        &self,
        workload: &str,
        client: &str,
        secret: Option<&str>,
    ) -> Workload {
        let mut spec = self.spec(workload, client, GrantSpec::ClientCredentials);
        if let Some(s) = secret {
            spec = spec.with_client_secret(s);
        }
        self.add_workload(spec).await
    }

    /// Adds the workload of `spec` to the runtime (panics if refused).
    pub async fn add_workload(&self, spec: WorkloadSpec) -> Workload {
        let (name, client) = (spec.name.to_string(), spec.client_id.to_string());
        let handle = (self.rt.add(spec).await).unwrap_or_else(|e| panic!("cannot add {name}: {e}"));
        Workload {
            name,
            client,
            handle,
        }
    }

    /// The status file of `workload` on disk, if written yet.
    pub fn status_file(&self, workload: &str) -> Option<StatusRecord> {
        read_status(&self.status_dir(), workload)
    }

    /// Waits until the status file of `workload` on disk satisfies `pred`; returns it.
    pub async fn wait_file(
        &self,
        workload: &str,
        what: &str,
        pred: impl Fn(&StatusRecord) -> bool,
    ) -> StatusRecord {
        let mut found = None;
        wait_until(&format!("{workload}: {what}"), || {
            found = self.status_file(workload).filter(|r| pred(r));
            found.is_some()
        })
        .await;
        found.unwrap_or_else(|| panic!("wait_until returned without a record"))
    }

    /// Waits until `workload` is `unauthenticated` by the provider's `invalid_client` verdict
    /// (a wrong secret, key or certificate), and checks that it is that verdict.
    pub async fn wait_invalid_client(&self, workload: &str) {
        let r = self
            .wait_file(workload, "unauthenticated", |r| {
                r.status == WorkloadStatus::Unauthenticated
            })
            .await;
        let e = last_error(&r).unwrap_or_else(|| panic!("no last_error"));
        assert_eq!(
            (e.outcome, e.error_code.as_deref()),
            (ErrorOutcome::Permanent, Some("invalid_client")),
            "{e:?}"
        );
    }

    /// Waits until `witness` has been refreshed `n` more times (answered 200 by the
    /// provider) than when called: a window of real activity, measured in events rather than
    /// in time, after which "it never happened again" can be checked. With tokens living a
    /// few seconds, three refreshes outlast the backoff's 1 s cap: a retry would be in the
    /// provider's log by then (it logs a request before answering it).
    pub async fn wait_more_refreshes(&self, witness: &Workload, n: usize) {
        let ok = || {
            (self.ep.oidc.refreshes(&witness.client).iter())
                .filter(|l| l.status == Some(200))
                .count()
        };
        let before = ok();
        let what = format!("{}: {n} more refreshes", witness.name);
        wait_until(&what, || ok() >= before + n).await;
    }

    /// Waits until the status file of every workload says `status`.
    pub async fn wait_all(&self, workloads: &[&Workload], status: WorkloadStatus) {
        for w in workloads {
            self.wait_file(&w.name, status.as_str(), |r| r.status == status)
                .await;
        }
    }

    /// Forces a refresh of each workload now.
    pub async fn force(&self, workloads: &[&Workload]) {
        for w in workloads {
            let accepted = self
                .rt
                .force_refresh(&name(&w.name))
                .await
                .unwrap_or_else(|e| panic!("force_refresh {}: {e}", w.name));
            assert!(accepted, "force_refresh {} refused", w.name);
        }
    }

    /// Waits until the token each workload was serving when this was called has expired,
    /// while its refreshes keep failing (the outage spans the expiry); asserts the workload is
    /// then `auth_retrying` on disk, not `unauthenticated`, and no longer serves a token.
    pub async fn wait_expired_while_failing(&self, workloads: &[&Workload]) {
        for w in workloads {
            let expires_at = self
                .status_file(&w.name)
                .and_then(|r| r.token.and_then(|t| t.expires_at))
                .map_or(0, tokenvisor_core::Timestamp::as_millis);
            let what = format!(
                "{}: its token (expiring at {expires_at} ms) to expire",
                w.name
            );
            wait_until(&what, || {
                now_ms() > expires_at && w.handle.current().is_err()
            })
            .await;
            let r = self
                .wait_file(&w.name, "auth_retrying after expiry", |r| {
                    r.status == WorkloadStatus::AuthRetrying
                        && r.updated_at.as_millis() > expires_at
                })
                .await;
            let e = last_error(&r).unwrap_or_else(|| panic!("{}: no last_error", w.name));
            assert_eq!(e.outcome, ErrorOutcome::Transient, "{}: {e:?}", w.name);
        }
    }

    /// The access token a workload serves now (panics if none).
    pub fn access_token(&self, w: &Workload) -> String {
        w.handle
            .current()
            .unwrap_or_else(|e| panic!("{} serves no token: {e}", w.name))
            .expose()
            .to_owned()
    }

    /// Asserts that the token each workload serves is active at the provider (RFC 7662).
    pub async fn assert_tokens_active(&self, workloads: &[&Workload]) {
        for w in workloads {
            let token = self.access_token(w);
            assert!(
                self.ep.oidc.is_active(&w.client, &token).await,
                "{}: the provider says its access token is not active",
                w.name
            );
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The status files, for the failure report (the endpoint adds its components').
            if let Ok(rd) = std::fs::read_dir(self.status_dir()) {
                for e in rd.flatten() {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    eprintln!("--- {}\n{text}", e.path().display());
                }
            }
        }
    }
}
