//! The shared scenarios' [`Endpoint`] for the real components: oidc-provider behind nginx,
//! the faults being nginx's modes (real/nginx/modes). Every workload gets its own client of
//! the provider, an odd-numbered one (`tv-01`, `tv-03`, …: Basic authentication, so nginx's
//! access log names it), and a grant obtained by the scripted authorization_code + PKCE
//! login; its refresh token lives in a file, written back on rotation.
//!
//! What nginx cannot express: a fault for one client only (its modes apply to every request
//! of the endpoint: [`Endpoint::fail_client`] is `false`) and a delayed answer. When a fault
//! nginx answers by itself ends, [`Endpoint::heal`] checks that nginx answered every token
//! request of the window with the fault's status and that none reached the provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokenvisor::Transport;
use tokenvisor::spec::{AuthMethod, WorkloadPolicy, WorkloadSpec};
use tokenvisor_core::policy::BackoffPolicy;
use tokenvisor_test_support::scenario::{
    Endpoint, Fault, Lifetime, Pace, http_transport, refresh_spec,
};

use crate::components::{LIMIT, now_ms, wait_until};
use crate::nginx::{Mode, Nginx, Upstreams};
use crate::oidc::{Oidc, secret_of, uses_basic};
use crate::slow::SlowUpstream;

/// oidc-provider behind nginx, both started for one test and stopped by their PIDs. Fields
/// drop in order: nginx and the provider, then the work directory.
pub struct RealEndpoint {
    /// nginx in front of the provider.
    pub nginx: Nginx,
    /// The provider.
    pub oidc: Oidc,
    /// An upstream that never answers (nginx's `slow` mode), if asked for.
    pub slow: Option<SlowUpstream>,
    /// `(workload, client, refresh-token file)` of every grant.
    grants: Vec<(String, String, PathBuf)>,
    /// The mode in force since when (ms), while failing.
    failing: Option<(Mode, u64)>,
    work: tempfile::TempDir,
}

impl RealEndpoint {
    /// The provider (access tokens living `access_ttl` seconds, whatever a scenario's
    /// [`Lifetime`]) with nginx in pass mode in front of it.
    pub async fn start(access_ttl: u32) -> RealEndpoint {
        RealEndpoint::start_with(access_ttl, false).await
    }

    /// Like [`RealEndpoint::start`], with a slow upstream for nginx's `slow` mode if
    /// `with_slow`.
    pub async fn start_with(access_ttl: u32, with_slow: bool) -> RealEndpoint {
        crate::components::require_all();
        let work = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let oidc = Oidc::start(work.path(), access_ttl);
        let slow = if with_slow {
            Some(SlowUpstream::start().await)
        } else {
            None
        };
        let nginx = Nginx::start(
            &work.path().join("nginx"),
            Upstreams {
                provider: oidc.addr(),
                slow: slow.as_ref().map(SlowUpstream::addr),
            },
            Mode::Pass,
        )
        .await;
        RealEndpoint {
            nginx,
            oidc,
            slow,
            grants: Vec::new(),
            failing: None,
            work,
        }
    }

    /// The work directory (credential files, the provider's and nginx's logs).
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    fn rt_file(&self, client: &str) -> PathBuf {
        self.grants
            .iter()
            .find(|(_, c, _)| c == client)
            .map(|(_, _, f)| f.clone())
            .unwrap_or_else(|| panic!("no grant for {client}"))
    }
}

impl Endpoint for RealEndpoint {
    fn pace(&self) -> Pace {
        Pace {
            policy: fast_policy(),
            give_up_after: Duration::from_secs(2),
            short_hold: 3,
            long_hold: 10,
            patience: LIMIT,
        }
    }

    fn transport(&self) -> Arc<dyn Transport> {
        http_transport()
    }

    async fn grant(&mut self, workload: &str, _lifetime: Lifetime) -> WorkloadSpec {
        let n = 2 * self.grants.len() + 1;
        assert!(n <= 24, "the provider has 24 clients");
        let client = format!("tv-{n:02}");
        assert!(uses_basic(&client));
        let rt = self.oidc.login(&client, 1).remove(0);
        let file = self.work.path().join(format!("{workload}.rt"));
        std::fs::write(&file, &rt).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut spec = refresh_spec(
            workload,
            &self.nginx.token_url(),
            &client,
            &secret_of(&client),
            &rt,
            Some(file.clone()),
            &fast_policy(),
        );
        spec.auth_method = AuthMethod::Basic;
        self.grants.push((workload.to_owned(), client, file));
        spec
    }

    async fn fail(&mut self, fault: Fault) {
        let mode = match fault {
            Fault::Waf403 => Mode::Waf403,
            Fault::Outage503 => Mode::Unavailable503,
            Fault::TooMany { secs } => Mode::RetryAfter429 {
                secs: u32::try_from(secs).unwrap_or(u32::MAX),
            },
            Fault::Delay(_) => panic!("nginx has no mode that delays an answer"),
        };
        let since = self.nginx.switch(mode).await;
        self.failing = Some((mode, since));
    }

    async fn fail_client(&mut self, _client: &str, _fault: Fault, _times: Option<u32>) -> bool {
        false
    }

    async fn heal(&mut self) {
        let until = now_ms();
        self.nginx.switch(Mode::Pass).await;
        let Some((mode, since)) = self.failing.take() else {
            return;
        };
        // nginx answered the window by itself: nothing reached the provider, and every
        // token request of the mode got its status from nginx, none from an upstream.
        let reached = self.oidc.refreshes_between(since, until);
        assert!(
            reached.is_empty(),
            "{}: {} token request(s) reached the provider: {reached:?}",
            mode.name(),
            reached.len()
        );
        let status = match mode {
            Mode::Waf403 => 403,
            Mode::Unavailable503 => 503,
            Mode::RetryAfter429 { .. } => 429,
            Mode::Pass
            | Mode::BadGateway502
            | Mode::LimitReq { .. }
            | Mode::LimitReq40
            | Mode::Slow => return,
        };
        let seen: Vec<_> = self
            .nginx
            .token_requests()
            .into_iter()
            .filter(|a| a.mode == mode.name())
            .collect();
        assert!(!seen.is_empty(), "nginx saw no request in {}", mode.name());
        assert!(
            seen.iter().all(|a| a.t_ms() + 1000 >= since),
            "a request of an old mode logged late: {seen:?}"
        );
        assert!(
            seen.iter()
                .any(|a| self.grants.iter().any(|(_, client, _)| *client == a.user)),
            "no Basic client of this endpoint in nginx's log: {seen:?}"
        );
        assert!(
            seen.iter()
                .all(|a| a.status == status && a.upstream_status.is_empty()),
            "{seen:?}"
        );
    }

    async fn revoke(&mut self, client: &str) {
        let file = self.rt_file(client);
        let rt = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_owned();
        self.oidc.revoke(client, &rt).await;
        wait_until("the provider to revoke the grant", || {
            self.oidc
                .events("grant.revoked")
                .iter()
                .any(|e| e.client.as_deref() == Some(client))
        })
        .await;
    }

    async fn new_grant(&mut self, client: &str) -> String {
        self.oidc.login(client, 1).remove(0)
    }

    async fn check(&self, served: &[(String, String)]) {
        for (client, token) in served {
            assert!(
                self.oidc.is_active(client, token).await,
                "{client}: the provider says its access token is not active"
            );
        }
    }

    fn waf_marker(&self) -> &'static str {
        "Attention Required"
    }
}

impl Drop for RealEndpoint {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What each component saw, for the failure report.
            for p in [
                self.work.path().join("oidc.log"),
                self.work.path().join("oidc.stderr"),
                self.work.path().join("nginx/logs/access.log"),
                self.work.path().join("nginx/logs/error.log"),
            ] {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(40);
                eprintln!("--- {} (last {} lines)", p.display(), lines.len() - from);
                eprintln!("{}", lines[from..].join("\n"));
            }
        }
    }
}

/// Short timeouts and backoff, so that each scenario takes seconds of real time.
pub fn fast_policy() -> WorkloadPolicy {
    WorkloadPolicy {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
            multiplier: 2.0,
        },
        max_retry_after: Duration::from_secs(30),
        ..WorkloadPolicy::default()
    }
}
