//! The workload scenarios, written once over an endpoint abstraction and run three ways:
//! on tokio's paused clock against the runtime's in-memory `FakeTransport` ([`FakeEndpoint`],
//! the runtime's tests), over real HTTP on 127.0.0.1 against `tokenvisor-idp`
//! ([`IdpEndpoint`], `tests/it`), and against oidc-provider behind nginx (the real suite
//! implements [`Endpoint`] itself, with nginx's modes as the faults).
//!
//! An [`Endpoint`] is a token endpoint that can be told to answer a [`Fault`] (a WAF's HTML
//! 403, a 503 outage, a 429 with `Retry-After`, a slow answer), to revoke a grant
//! (`invalid_grant` next), to issue a new grant, and to heal. Its [`Pace`] scales the
//! scenario: the same policy and lifetimes in virtual hours on the paused clock, in real
//! seconds over HTTP. What the runtime sent is observed on the client side by a [`Recorder`]
//! wrapped around the endpoint's transport (every request: client, refresh token presented,
//! when, the HTTP status it got), so every endpoint is measured the same way; what each
//! endpoint can check on its side (idp's reuse counter, the provider's request log, nginx's
//! access log) it checks in [`Endpoint::heal`] and [`Endpoint::check`].
//!
//! Each scenario is a generic `async fn` taking a [`Driver`]; the test binaries instantiate
//! them per endpoint (see [`scenario_tests!`](crate::scenario_tests)). An endpoint that
//! cannot express a fault says so ([`Endpoint::fail_client`] returns `false`), and its suite
//! does not instantiate the scenarios that need it (each says why, in a comment).
//!
//! Time: waits are bounded by [`Pace::patience`] of tokio's clock (virtual on the paused
//! clock), never real sleeps; "silence" (no request after a final state) is measured in
//! events: a healthy canary workload refreshing several times.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokenvisor::credentials::NewCredentials;
use tokenvisor::spec::{GrantSpec, WorkloadPolicy, WorkloadSpec};
use tokenvisor::testing::{FakeReply, FakeTransport};
use tokenvisor::{
    Clock, ExchangeRequest, Grant, HttpConfig, HttpTransport, OutcomeFuture, Runtime,
    RuntimeConfig, TokenHandle, Transport, Unavailable,
};
use tokenvisor_core::policy::BackoffPolicy;
use tokenvisor_core::status::{ErrorOutcome, TokenState};
use tokenvisor_core::{RawOutcome, Secret, StatusRecord, Timestamp, WorkloadName, WorkloadStatus};
use tokenvisor_idp::{ClientSpec, FaultScope, IdpConfig, IdpServer, RetryAfter, Times};
use tokio::time::Instant;

use crate::events::Events;
use crate::status::{last_error, read_status_file, status_path};
use crate::wait::poll_until;

/// What an endpoint can be made to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A web application firewall's HTML page with 403 (no RFC 6749 error): transient.
    Waf403,
    /// 503 with an HTML page and no `Retry-After`: transient.
    Outage503,
    /// 429 with `Retry-After: secs`: transient, and the endpoint is held that long.
    TooMany {
        /// The `Retry-After` value, in seconds.
        secs: u64,
    },
    /// A token answered after this delay (the request is in flight meanwhile).
    Delay(Duration),
}

impl Fault {
    /// The HTTP status the endpoint answers with, if the fault is an error answer.
    pub fn status(self) -> Option<u16> {
        match self {
            Fault::Waf403 => Some(403),
            Fault::Outage503 => Some(503),
            Fault::TooMany { .. } => Some(429),
            Fault::Delay(_) => None,
        }
    }
}

/// How long the endpoint's tokens live, relative to a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Outlives the scenario's fault windows (no scheduled refresh meanwhile).
    Long,
    /// Expires during an outage; a canary with it refreshes often.
    Short,
}

/// The scale of a scenario on one endpoint.
#[derive(Debug, Clone)]
pub struct Pace {
    /// The policy of every workload (timeouts, backoff, Retry-After ceiling).
    pub policy: WorkloadPolicy,
    /// `give_up_after` of the give-up scenario: more than a few backoff steps.
    pub give_up_after: Duration,
    /// A `Retry-After` an attempt waits out (less than the 4 s an attempt may wait with a
    /// 2 s request timeout, or the policy's equivalent).
    pub short_hold: u64,
    /// A `Retry-After` no attempt waits out: forced refreshes inside it are "not sent".
    pub long_hold: u64,
    /// The longest any wait of a scenario may take (tokio time: virtual when paused).
    pub patience: Duration,
}

/// One token request the runtime sent, as the [`Recorder`] saw it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The client id.
    pub client_id: String,
    /// The refresh token presented (test data), `None` for client credentials.
    pub refresh_token: Option<String>,
    /// When it was sent (tokio time).
    pub at: Instant,
    /// The HTTP status of the answer; `None` while in flight or without an answer.
    pub status: Option<u16>,
}

/// A transport that records every request its inner transport sends, and its answer.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<dyn Transport>,
    log: Arc<Mutex<Vec<Sent>>>,
}

impl Recorder {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Transport>) -> Recorder {
        Recorder {
            inner,
            log: Arc::default(),
        }
    }

    /// Every request so far, in order.
    pub fn all(&self) -> Vec<Sent> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The requests of one client, in order.
    pub fn of(&self, client_id: &str) -> Vec<Sent> {
        self.all()
            .into_iter()
            .filter(|s| s.client_id == client_id)
            .collect()
    }

    /// How many requests one client sent.
    pub fn count(&self, client_id: &str) -> usize {
        self.of(client_id).len()
    }
}

impl Transport for Recorder {
    fn exchange(&self, req: ExchangeRequest) -> OutcomeFuture {
        let index = {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.push(Sent {
                client_id: req.client_id.to_string(),
                refresh_token: match &req.grant {
                    Grant::RefreshToken(rt) => Some(rt.expose().to_owned()),
                    Grant::ClientCredentials | Grant::JwtBearer(_) | Grant::TokenExchange(_) => {
                        None
                    }
                },
                at: Instant::now(),
                status: None,
            });
            log.len() - 1
        };
        let answer = self.inner.exchange(req);
        let log = self.log.clone();
        Box::pin(async move {
            let outcome = answer.await;
            let status = match &outcome {
                RawOutcome::Response(a) => Some(a.status),
                RawOutcome::Transport { .. } => None,
            };
            log.lock().unwrap_or_else(PoisonError::into_inner)[index].status = status;
            outcome
        })
    }
}

/// A token endpoint the scenarios can drive.
// The scenarios are generic (never `dyn`) and await these on the test's own task: no
// `Send` bound is needed on the futures.
#[allow(async_fn_in_trait)]
pub trait Endpoint {
    /// The endpoint's scale.
    fn pace(&self) -> Pace;

    /// The transport to it (the [`Driver`] wraps it in a [`Recorder`]).
    fn transport(&self) -> Arc<dyn Transport>;

    /// The runtime's clock (`None`: the default, wall time).
    fn clock(&self) -> Option<Clock> {
        None
    }

    /// A new grant for a new client: a `refresh_token` workload named `workload` (its
    /// client id may differ: [`WorkloadSpec::client_id`]), tokens living `lifetime`. The
    /// spec's policy is the pace's.
    async fn grant(&mut self, workload: &str, lifetime: Lifetime) -> WorkloadSpec;

    /// From now on every request is answered with `fault`, until [`Endpoint::heal`].
    async fn fail(&mut self, fault: Fault);

    /// The requests of one client are answered with `fault`: the next `times`, or all
    /// until [`Endpoint::heal`] (`None`). `false`: this endpoint cannot single out one
    /// client (nothing changed).
    async fn fail_client(&mut self, client_id: &str, fault: Fault, times: Option<u32>) -> bool;

    /// Every request is answered normally again. An endpoint may check here what it saw
    /// while failing (nothing reached the provider behind a proxy's answers, …).
    async fn heal(&mut self);

    /// The grant of `client_id` is revoked: its next refresh is answered `invalid_grant`.
    async fn revoke(&mut self, client_id: &str);

    /// A new grant for an existing client (the user authorised again): its refresh token.
    async fn new_grant(&mut self, client_id: &str) -> String;

    /// The endpoint's own checks at the end of a scenario: `served` are the access tokens
    /// the workloads serve, by client id (a provider checks they are active).
    async fn check(&self, served: &[(String, String)]);

    /// Words of the endpoint's WAF page that the status summary must carry.
    fn waf_marker(&self) -> &'static str;
}

/// A runtime over an endpoint: the recorder, every state change, a temporary status
/// directory.
pub struct Driver<E: Endpoint> {
    /// The endpoint.
    pub endpoint: E,
    /// The runtime.
    pub rt: Runtime,
    /// Every state change.
    pub events: Events,
    /// Every request the runtime sent.
    pub sent: Recorder,
    /// The endpoint's pace.
    pub pace: Pace,
    dir: tempfile::TempDir,
}

impl<E: Endpoint> Driver<E> {
    /// Starts a runtime (seed 7) over a fresh status directory against `endpoint`.
    pub async fn start(endpoint: E) -> Driver<E> {
        let dir = crate::fs::tempdir();
        let sent = Recorder::new(endpoint.transport());
        let mut cfg = RuntimeConfig::new(dir.path().join("statuses"), Arc::new(sent.clone()));
        cfg.seed = Some(7);
        cfg.clock = endpoint.clock();
        let rt = Runtime::start(cfg)
            .await
            .unwrap_or_else(|e| panic!("cannot start the runtime: {e}"));
        let events = Events::collect(&rt);
        let pace = endpoint.pace();
        Driver {
            endpoint,
            rt,
            events,
            sent,
            pace,
            dir,
        }
    }

    /// The status directory.
    pub fn status_dir(&self) -> PathBuf {
        self.dir.path().join("statuses")
    }

    /// Adds a refresh-token workload on a new grant; its spec is also returned.
    pub async fn add(&mut self, workload: &str, lifetime: Lifetime) -> (TokenHandle, WorkloadSpec) {
        let spec = self.endpoint.grant(workload, lifetime).await;
        let handle = self
            .rt
            .add(spec.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot add {workload}: {e}"));
        (handle, spec)
    }

    /// How often waits look: every [`POLL`](crate::wait::POLL), or a hundred-thousandth of
    /// the patience if that is longer (on the paused clock, so that a failing wait of
    /// virtual hours ends in seconds of real time).
    pub fn step(&self) -> Duration {
        crate::wait::POLL.max(self.pace.patience / 100_000)
    }

    /// Waits (bounded by the pace) until `cond` holds.
    pub async fn wait(&self, what: &str, cond: impl FnMut() -> bool) {
        let limit = self.pace.patience;
        assert!(
            poll_until(limit, self.step(), cond).await,
            "timed out after {limit:?} waiting for: {what}"
        );
    }

    /// Waits until the workload's status is `want`.
    pub async fn wait_status(&self, h: &TokenHandle, want: WorkloadStatus) {
        let what = format!("{} to be {}", h.name(), want.as_str());
        self.wait(&what, || status(h) == Some(want)).await;
    }

    /// Forces a refresh (asserting it was accepted).
    pub async fn force(&self, workload: &str) {
        let accepted = self
            .rt
            .force_refresh(&name(workload))
            .await
            .unwrap_or_else(|e| panic!("force_refresh {workload}: {e}"));
        assert!(accepted, "force_refresh {workload} refused");
    }

    /// Flushes the runtime (every status durable) and reads the workload's file.
    pub async fn file(&self, workload: &str) -> StatusRecord {
        let report = self
            .rt
            .flush(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("flush: {e}"));
        assert!(report.failed.is_empty(), "status writes failed: {report:?}");
        read_status_file(&self.status_dir(), workload)
    }

    /// A workload's status file (after a flush) read between two attempts: while a retry is
    /// in flight (`refreshing`) the record has no next attempt, so the read is repeated
    /// (bounded by the pace's patience) until it shows another state.
    pub async fn file_between_attempts(&self, workload: &str) -> StatusRecord {
        let deadline = tokio::time::Instant::now() + self.pace.patience;
        loop {
            let rec = self.file(workload).await;
            if rec
                .token
                .as_ref()
                .is_none_or(|t| t.state != TokenState::Refreshing)
            {
                return rec;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{workload}: still refreshing after {:?}: {rec:?}",
                self.pace.patience
            );
            tokio::time::sleep(self.step()).await;
        }
    }

    /// The raw text of a workload's status file.
    pub fn raw_file(&self, workload: &str) -> String {
        crate::fs::read(&status_path(&self.status_dir(), workload))
    }

    /// Requests the runtime sent for a client.
    pub fn count(&self, client_id: &str) -> usize {
        self.sent.count(client_id)
    }

    /// Waits until the workload (a canary) has sent `n` more requests that were answered
    /// 200 than it had when called: a window of real activity measured in events.
    pub async fn wait_canary(&self, client_id: &str, n: usize) {
        let ok = |d: &Self| {
            d.sent
                .of(client_id)
                .iter()
                .filter(|s| s.status == Some(200))
                .count()
        };
        let from = ok(self);
        let what = format!("{n} more refreshes of the canary {client_id}");
        self.wait(&what, || ok(self) >= from + n).await;
    }

    /// The endpoint's own checks, with the tokens the given workloads serve.
    pub async fn check(&self, workloads: &[(&TokenHandle, &WorkloadSpec)]) {
        let served: Vec<(String, String)> = workloads
            .iter()
            .map(|(h, spec)| {
                let token = h
                    .current()
                    .unwrap_or_else(|e| panic!("{} serves no token: {e}", h.name()));
                (spec.client_id.to_string(), token.expose().to_owned())
            })
            .collect();
        self.endpoint.check(&served).await;
    }
}

/// A workload name (panics on an invalid one: test input).
pub fn name(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap_or_else(|e| panic!("bad workload name {s:?}: {e}"))
}

/// The runtime's status of a workload, as last sent to persistence.
pub fn status(h: &TokenHandle) -> Option<WorkloadStatus> {
    h.status().map(|r| r.status)
}

/// A refresh-token workload spec with the pace's policy.
pub fn refresh_spec(
    workload: &str,
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    refresh_token: &str,
    file: Option<PathBuf>,
    policy: &WorkloadPolicy,
) -> WorkloadSpec {
    let mut spec = WorkloadSpec::new(
        name(workload),
        token_url.parse().expect("a token URL"),
        client_id,
        GrantSpec::RefreshToken {
            token: Secret::from(refresh_token),
            file,
        },
    )
    .with_client_secret(client_secret);
    spec.policy = policy.clone();
    spec
}

// ---------------------------------------------------------------------------------------
// the scenarios

/// A WAF blocks refreshes with an HTML 403 for a while: the workload is `auth_retrying`
/// (transient `infrastructure_4xx`, the page's words in the summary, no error code) and
/// keeps serving its old token; when the WAF clears it runs with a new token, attempt and
/// error cleared. A blip of exactly two answers (where the endpoint can single out a
/// client) costs exactly three requests. `unauthenticated` is never sent nor written, and
/// every version of the file on disk parses.
pub async fn waf_blip_recovers_without_unauthenticated<E: Endpoint>(mut d: Driver<E>) {
    // Densely in real time (every 2 ms); on the paused clock as often as waits look.
    let every = Duration::from_millis(2).max(d.pace.patience / 100_000);
    let watch = crate::status::DiskWatch::start(&d.status_dir(), "waf", every);
    let (h, spec) = d.add("waf", Lifetime::Long).await;
    let client = spec.client_id.to_string();
    d.wait_status(&h, WorkloadStatus::Running).await;
    let first = h.current().unwrap().expose().to_owned();

    d.endpoint.fail(Fault::Waf403).await;
    d.force("waf").await;
    d.wait("three WAF pages", || {
        d.sent
            .of(&client)
            .iter()
            .filter(|s| s.status == Some(403))
            .count()
            >= 3
    })
    .await;
    let rec = d.file("waf").await;
    assert_eq!(rec.status, WorkloadStatus::AuthRetrying, "{rec:?}");
    let token = rec.token.as_ref().unwrap();
    assert!(token.attempt >= 2, "{token:?}");
    let last = token.last_error.as_ref().unwrap();
    assert_eq!(last.outcome, ErrorOutcome::Transient, "{last:?}");
    assert_eq!(last.kind, "infrastructure_4xx", "{last:?}");
    assert_eq!(last.http_status, Some(403), "{last:?}");
    assert_eq!(last.error_code, None, "{last:?}");
    let marker = d.endpoint.waf_marker();
    assert!(last.summary.contains(marker), "{marker:?} not in {last:?}");
    // The old token is still served while it lives.
    assert_eq!(h.current().unwrap().expose(), first);

    d.endpoint.heal().await;
    d.wait("running with a new token", || {
        status(&h) == Some(WorkloadStatus::Running)
            && h.current().is_ok_and(|t| t.expose() != first)
    })
    .await;
    let rec = d.file("waf").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    let token = rec.token.unwrap();
    assert_eq!((token.attempt, token.last_error), (0, None));

    // A blip of exactly the next two answers: retrying, then running, three requests.
    let before = d.count(&client);
    if d.endpoint
        .fail_client(&client, Fault::Waf403, Some(2))
        .await
    {
        d.force("waf").await;
        d.wait("three more requests", || d.count(&client) >= before + 3)
            .await;
        d.wait_status(&h, WorkloadStatus::Running).await;
        assert_eq!(d.file("waf").await.status, WorkloadStatus::Running);
        assert_eq!(d.count(&client), before + 3);
    }

    let seen = d.events.statuses_of("waf");
    assert!(seen.contains(&WorkloadStatus::AuthRetrying), "{seen:?}");
    d.events.assert_never(WorkloadStatus::Unauthenticated);
    let disk = watch.finish().await;
    assert!(disk.reads > 0, "the watcher never read the file");
    assert!(
        disk.unparsable.is_empty(),
        "partial files: {:?}",
        disk.unparsable
    );
    assert!(
        !disk.statuses.contains(&WorkloadStatus::Unauthenticated),
        "{:?}",
        disk.statuses
    );
    d.check(&[(&h, &spec)]).await;
}

/// A 503 outage longer than the token lives: the token is withdrawn at expiry (served no
/// more: backing off), the workload stays `auth_retrying` (transient `server_5xx`, 503,
/// attempts counted, a next attempt scheduled, `expires_at` cleared), never
/// `unauthenticated`; when the outage ends it runs with a fresh token.
pub async fn outage_across_expiry_degrades_then_recovers<E: Endpoint>(mut d: Driver<E>) {
    let (h, spec) = d.add("outage", Lifetime::Short).await;
    d.wait_status(&h, WorkloadStatus::Running).await;

    d.endpoint.fail(Fault::Outage503).await;
    d.wait("the token withdrawn", || {
        h.current().is_err()
            && h.status()
                .is_some_and(|r| r.token.as_ref().is_some_and(|t| t.expires_at.is_none()))
    })
    .await;
    assert!(
        matches!(h.current(), Err(Unavailable::BackingOff { .. })),
        "{:?}",
        h.current()
    );
    let rec = d.file_between_attempts("outage").await;
    assert_eq!(rec.status, WorkloadStatus::AuthRetrying, "{rec:?}");
    let token = rec.token.unwrap();
    assert_eq!(token.expires_at, None);
    assert!(token.attempt >= 2, "{token:?}");
    assert!(token.first_failure_at.is_some(), "{token:?}");
    assert!(token.next_attempt_at.is_some(), "{token:?}");
    let last = token.last_error.unwrap();
    assert_eq!(last.outcome, ErrorOutcome::Transient, "{last:?}");
    assert_eq!(last.kind, "server_5xx", "{last:?}");
    assert_eq!(last.http_status, Some(503), "{last:?}");

    d.endpoint.heal().await;
    d.wait("recovered", || {
        status(&h) == Some(WorkloadStatus::Running) && h.current().is_ok()
    })
    .await;
    let rec = d.file("outage").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    assert!(rec.token.unwrap().expires_at.is_some());
    let seen = d.events.statuses_of("outage");
    assert!(seen.contains(&WorkloadStatus::AuthRetrying), "{seen:?}");
    d.events.assert_never(WorkloadStatus::Unauthenticated);
    d.check(&[(&h, &spec)]).await;
}

/// A workload whose refreshes fail transiently for longer than `give_up_after` ends
/// `unauthenticated` ("gave up", `server_5xx`, no next attempt, no token), not before the
/// ceiling; then it is silent: a forced refresh is ignored, and while a healthy canary on
/// the same endpoint refreshes four more times it sends nothing.
pub async fn give_up_ceiling_ends_in_unauthenticated_and_silence<E: Endpoint>(mut d: Driver<E>) {
    let (canary, canary_spec) = d.add("canary", Lifetime::Short).await;
    d.wait_status(&canary, WorkloadStatus::Running).await;

    let mut spec = d.endpoint.grant("doomed", Lifetime::Short).await;
    let client = spec.client_id.to_string();
    spec.policy.give_up_after = d.pace.give_up_after;
    assert!(
        d.endpoint
            .fail_client(&client, Fault::Outage503, None)
            .await,
        "this endpoint cannot fail one client: do not instantiate this scenario"
    );
    let started = Instant::now();
    let h = d.rt.add(spec).await.unwrap();
    d.wait_status(&h, WorkloadStatus::Unauthenticated).await;
    assert!(
        started.elapsed() >= d.pace.give_up_after,
        "gave up early: {:?}",
        started.elapsed()
    );
    let rec = d.file("doomed").await;
    assert!(
        rec.status_context.contains("gave up"),
        "{}",
        rec.status_context
    );
    let token = rec.token.unwrap();
    assert_eq!(token.state, TokenState::Unauthenticated);
    assert_eq!(token.next_attempt_at, None);
    assert_eq!(token.last_error.unwrap().kind, "server_5xx");
    assert!(matches!(
        h.current(),
        Err(Unavailable::Unauthenticated { .. })
    ));
    assert!(d.events.ever("doomed", WorkloadStatus::AuthRetrying));
    let calls = d.count(&client);
    assert!(calls >= 2, "gave up after {calls} request(s)");

    assert!(d.rt.force_refresh(&name("doomed")).await.unwrap());
    d.wait_canary(&canary_spec.client_id, 4).await;
    assert_eq!(d.count(&client), calls, "requests after giving up");
    assert_eq!(status(&h), Some(WorkloadStatus::Unauthenticated));
    assert_eq!(status(&canary), Some(WorkloadStatus::Running));
    d.endpoint.heal().await;
    d.check(&[(&canary, &canary_spec)]).await;
}

/// A grant revoked at the provider: the next refresh hears `invalid_grant`, and after that
/// one attempt the workload is `unauthenticated` (permanent, 400, no next attempt, no
/// expiry, no token served, never retried); then silent while a canary refreshes four more
/// times, a forced refresh ignored. Neither the refresh token nor the client secret is in
/// the status file.
pub async fn invalid_grant_is_final_and_silent<E: Endpoint>(mut d: Driver<E>) {
    let (canary, canary_spec) = d.add("canary", Lifetime::Short).await;
    let (h, spec) = d.add("revoked", Lifetime::Long).await;
    let client = spec.client_id.to_string();
    d.wait_status(&h, WorkloadStatus::Running).await;
    d.wait_status(&canary, WorkloadStatus::Running).await;

    d.endpoint.revoke(&client).await;
    let before = d.count(&client);
    d.force("revoked").await;
    d.wait_status(&h, WorkloadStatus::Unauthenticated).await;
    assert_eq!(d.count(&client), before + 1, "one attempt, no retries");
    assert!(matches!(
        h.current(),
        Err(Unavailable::Unauthenticated { .. })
    ));

    assert!(d.rt.force_refresh(&name("revoked")).await.unwrap());
    d.wait_canary(&canary_spec.client_id, 4).await;
    assert_eq!(d.count(&client), before + 1, "requests after invalid_grant");
    let rec = d.file("revoked").await;
    assert_eq!(rec.status, WorkloadStatus::Unauthenticated);
    let token = rec.token.unwrap();
    assert_eq!(token.next_attempt_at, None);
    assert_eq!(token.expires_at, None);
    let last = token.last_error.unwrap();
    assert_eq!(last.outcome, ErrorOutcome::Permanent, "{last:?}");
    assert_eq!(
        last.error_code.as_deref(),
        Some("invalid_grant"),
        "{last:?}"
    );
    assert_eq!(last.http_status, Some(400), "{last:?}");
    assert!(!d.events.ever("revoked", WorkloadStatus::AuthRetrying));
    let raw = d.raw_file("revoked");
    let presented: Vec<String> = d
        .sent
        .of(&client)
        .into_iter()
        .filter_map(|s| s.refresh_token)
        .collect();
    assert!(!presented.is_empty());
    for rt in presented {
        assert!(!raw.contains(&rt), "a refresh token is in the status file");
    }
    let secret = spec.client_secret.as_ref().unwrap().expose().to_owned();
    assert!(
        !raw.contains(&secret),
        "the client secret is in the status file"
    );
    assert_eq!(status(&canary), Some(WorkloadStatus::Running));
    d.check(&[(&canary, &canary_spec)]).await;
}

/// A 429 with a short `Retry-After` (one an attempt waits out) for one workload: it is
/// `auth_retrying` without a retry inside the hold; another workload of the same endpoint,
/// forced during the hold, waits it out and is sent after it — not counted as a failure,
/// it never leaves `running`. Both send their next request no sooner than the hold's end
/// and no later than its jitter after it.
pub async fn a_short_hold_is_waited_out<E: Endpoint>(mut d: Driver<E>) {
    let hold = Duration::from_secs(d.pace.short_hold);
    let (a, a_spec) = d.add("ra-a", Lifetime::Long).await;
    let (b, b_spec) = d.add("ra-b", Lifetime::Long).await;
    let (ca, cb) = (a_spec.client_id.to_string(), b_spec.client_id.to_string());
    d.wait_status(&a, WorkloadStatus::Running).await;
    d.wait_status(&b, WorkloadStatus::Running).await;
    let (a0, b0) = (d.count(&ca), d.count(&cb));

    let secs = d.pace.short_hold;
    assert!(
        d.endpoint
            .fail_client(&ca, Fault::TooMany { secs }, Some(1))
            .await,
        "this endpoint cannot fail one client: do not instantiate this scenario"
    );
    d.force("ra-a").await;
    d.wait("ra-a retrying after its 429", || {
        status(&a) == Some(WorkloadStatus::AuthRetrying)
    })
    .await;
    assert_eq!(d.count(&ca), a0 + 1, "retried inside Retry-After");
    let limited = d.sent.of(&ca)[a0].at;

    d.force("ra-b").await;
    d.wait("both running again, ra-b refreshed", || {
        status(&a) == Some(WorkloadStatus::Running)
            && status(&b) == Some(WorkloadStatus::Running)
            && d.count(&cb) > b0
    })
    .await;
    assert_eq!(d.count(&ca), a0 + 2);
    assert_eq!(d.count(&cb), b0 + 1);
    let b_sent = d.sent.of(&cb)[b0].at - limited;
    assert!(
        b_sent >= hold,
        "ra-b sent {b_sent:?} after the 429, into the hold"
    );
    // Within the hold's jitter (a quarter of it) after its end.
    assert!(
        b_sent <= hold + hold / 4,
        "ra-b waited {b_sent:?} for a hold of {hold:?}"
    );
    let a_next = d.sent.of(&ca)[a0 + 1].at - limited;
    assert!(a_next >= hold, "ra-a retried {a_next:?} after the 429");
    assert!(
        !d.events.ever("ra-b", WorkloadStatus::AuthRetrying),
        "ra-b counted the hold it waited out as a failure: {:?}",
        d.events.statuses_of("ra-b")
    );
    let rec = d.file("ra-b").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    assert!(rec.token.unwrap().last_error.is_none());
    assert_eq!(d.file("ra-a").await.status, WorkloadStatus::Running);
    d.events.assert_never(WorkloadStatus::Unauthenticated);
    d.check(&[(&a, &a_spec), (&b, &b_spec)]).await;
}

/// The first answer a new workload gets is a 429 with `Retry-After`: it retries no sooner
/// than that, then runs.
pub async fn retry_after_is_a_floor_for_the_next_attempt<E: Endpoint>(mut d: Driver<E>) {
    let secs = d.pace.short_hold;
    let spec = d.endpoint.grant("floor", Lifetime::Long).await;
    let client = spec.client_id.to_string();
    d.endpoint.fail(Fault::TooMany { secs }).await;
    let h = d.rt.add(spec.clone()).await.unwrap();
    d.wait("the 429", || {
        d.sent.of(&client).iter().any(|s| s.status == Some(429))
    })
    .await;
    d.endpoint.heal().await;
    d.wait_status(&h, WorkloadStatus::Running).await;
    let sent = d.sent.of(&client);
    assert!(sent.len() >= 2, "{sent:?}");
    assert_eq!(sent[0].status, Some(429), "{sent:?}");
    for s in &sent[1..] {
        let gap = s.at - sent[0].at;
        assert!(
            gap >= Duration::from_secs(secs),
            "retried after {gap:?}, before Retry-After: {secs}"
        );
    }
    d.check(&[(&h, &spec)]).await;
}

/// A 429 with a long `Retry-After` holds every workload of the endpoint: the one that met
/// it is `auth_retrying` (`rate_limited`, the Retry-After recorded) with its next attempt
/// no sooner than the hold's end; the endpoint answers normally again at once, yet the
/// others, forced inside the hold, are "not sent" (`rate_limited`, no HTTP status) and no
/// request at all leaves until the hold ends; then all run again.
pub async fn a_long_hold_holds_every_workload_of_the_endpoint<E: Endpoint>(mut d: Driver<E>) {
    let secs = d.pace.long_hold;
    let hold = Duration::from_secs(secs);
    let (first, first_spec) = d.add("ra-first", Lifetime::Long).await;
    let mut others = Vec::new();
    for n in 0..3 {
        others.push(d.add(&format!("ra-other-{n}"), Lifetime::Long).await);
    }
    d.wait_status(&first, WorkloadStatus::Running).await;
    for (h, _) in &others {
        d.wait_status(h, WorkloadStatus::Running).await;
    }
    let client = first_spec.client_id.to_string();
    let before = d.sent.all().len();

    d.endpoint.fail(Fault::TooMany { secs }).await;
    d.force("ra-first").await;
    let r = {
        let mut found = None;
        d.wait("ra-first auth_retrying with the 429", || {
            found = first.status().filter(|r| {
                r.status == WorkloadStatus::AuthRetrying
                    && last_error(r).is_some_and(|e| e.http_status == Some(429))
            });
            found.is_some()
        })
        .await;
        found.unwrap()
    };
    let limited = d.sent.all()[before..]
        .iter()
        .find(|s| s.status == Some(429))
        .map(|s| s.at)
        .expect("the 429 was recorded");
    let e = last_error(&r).unwrap();
    assert_eq!(
        (e.kind.as_str(), e.retry_after_secs),
        ("rate_limited", Some(secs)),
        "{e:?}"
    );
    let next = r.token.as_ref().and_then(|t| t.next_attempt_at).unwrap();
    assert!(
        next.as_millis() + 1000 >= r.updated_at.as_millis() + hold.as_millis() as u64,
        "next attempt at {next:?}, inside the hold (updated {:?})",
        r.updated_at
    );

    // The endpoint answers again, but the hold is in force for every workload.
    d.endpoint.heal().await;
    let healed = limited.elapsed();
    assert!(
        healed + Duration::from_secs(5) < hold,
        "healing took {healed:?}: too long for a hold of {hold:?} to mean anything"
    );
    for (h, _) in &others {
        d.force(h.name().as_str()).await;
    }
    for (h, _) in &others {
        let what = format!("{}: auth_retrying, not sent because of the hold", h.name());
        d.wait(&what, || {
            h.status().is_some_and(|r| {
                r.status == WorkloadStatus::AuthRetrying
                    && last_error(&r).is_some_and(|e| e.kind == "rate_limited")
            })
        })
        .await;
        let r = d.file(h.name().as_str()).await;
        let e = last_error(&r).unwrap();
        assert_eq!(
            e.http_status,
            None,
            "{}: sent during the hold: {e:?}",
            h.name()
        );
        assert!(e.summary.starts_with("not sent"), "{}: {e:?}", h.name());
        assert!(
            e.retry_after_secs.is_some_and(|s| s >= 1),
            "{}: {e:?}",
            h.name()
        );
    }
    d.wait_status(&first, WorkloadStatus::Running).await;
    for (h, _) in &others {
        d.wait_status(h, WorkloadStatus::Running).await;
    }
    // Nothing left during the hold after the 429 itself.
    let during: Vec<Sent> = d.sent.all()[before..]
        .iter()
        .filter(|s| s.at > limited && s.at - limited < hold)
        .cloned()
        .collect();
    assert!(
        during.is_empty(),
        "requests sent during the hold: {during:?}"
    );
    assert!(d.count(&client) > 0);
    d.events.assert_never(WorkloadStatus::Unauthenticated);
    let mut all = vec![(&first, &first_spec)];
    all.extend(others.iter().map(|(h, s)| (h, s)));
    d.check(&all).await;
}

/// Fifty forced refreshes while one is in flight make one request (single flight), and the
/// workload ends with a new token.
pub async fn concurrent_force_refreshes_make_one_request<E: Endpoint>(mut d: Driver<E>) {
    let (h, spec) = d.add("single", Lifetime::Long).await;
    let client = spec.client_id.to_string();
    d.wait_status(&h, WorkloadStatus::Running).await;
    let first = h.current().unwrap().expose().to_owned();
    let before = d.count(&client);

    // In flight for half the request timeout: every force arrives meanwhile.
    let delay = Fault::Delay(d.pace.policy.request_timeout / 2);
    assert!(
        d.endpoint.fail_client(&client, delay, Some(1)).await,
        "this endpoint cannot delay an answer: do not instantiate this scenario"
    );
    let forces: Vec<_> = (0..50)
        .map(|_| {
            let rt = d.rt.clone();
            tokio::spawn(async move { rt.force_refresh(&name("single")).await.unwrap() })
        })
        .collect();
    for f in forces {
        assert!(f.await.unwrap());
    }
    d.wait("a new token", || {
        h.current().is_ok_and(|t| t.expose() != first)
    })
    .await;
    assert_eq!(d.file("single").await.status, WorkloadStatus::Running);
    assert_eq!(d.count(&client), before + 1, "single flight: one request");
    d.check(&[(&h, &spec)]).await;
}

/// An `unauthenticated` workload (its grant revoked) recovers when the operator supplies
/// the refresh token of a new grant: one request presenting it, then running with no error;
/// the refresh token rotated by that exchange is the one presented next.
pub async fn new_credentials_recover_an_unauthenticated_workload<E: Endpoint>(mut d: Driver<E>) {
    let (h, spec) = d.add("creds", Lifetime::Long).await;
    let client = spec.client_id.to_string();
    d.wait_status(&h, WorkloadStatus::Running).await;
    d.endpoint.revoke(&client).await;
    d.force("creds").await;
    d.wait_status(&h, WorkloadStatus::Unauthenticated).await;

    let fresh = d.endpoint.new_grant(&client).await;
    let before = d.count(&client);
    d.rt.supply_credentials(
        &name("creds"),
        NewCredentials {
            refresh_token: Some(Secret::from(fresh.as_str())),
            client_secret: None,
        },
    )
    .await
    .unwrap();
    d.wait_status(&h, WorkloadStatus::Running).await;
    assert!(h.current().is_ok());
    let sent = d.sent.of(&client);
    assert_eq!(sent.len(), before + 1);
    assert_eq!(sent[before].refresh_token.as_deref(), Some(fresh.as_str()));
    let rec = d.file("creds").await;
    assert_eq!(rec.status, WorkloadStatus::Running);
    assert_eq!(rec.token.unwrap().last_error, None);

    // The next refresh presents the token rotated by that exchange.
    let served = h.current().unwrap().expose().to_owned();
    d.force("creds").await;
    d.wait("the next token", || {
        h.current().is_ok_and(|t| t.expose() != served)
    })
    .await;
    let sent = d.sent.of(&client);
    assert_eq!(sent.len(), before + 2);
    let next = sent[before + 1].refresh_token.clone().unwrap();
    assert_ne!(next, fresh, "the rotated refresh token was not used");
    d.events.assert_never(WorkloadStatus::AuthRetrying);
    d.check(&[(&h, &spec)]).await;
}

/// `force_refresh_all` refreshes every workload exactly once.
pub async fn force_refresh_all_refreshes_every_workload_once<E: Endpoint>(mut d: Driver<E>) {
    let mut ws = Vec::new();
    for n in ["f1", "f2", "f3"] {
        ws.push(d.add(n, Lifetime::Long).await);
    }
    for (h, _) in &ws {
        d.wait_status(h, WorkloadStatus::Running).await;
    }
    let before: Vec<usize> = ws.iter().map(|(_, s)| d.count(&s.client_id)).collect();
    let tokens: Vec<String> = ws
        .iter()
        .map(|(h, _)| h.current().unwrap().expose().to_owned())
        .collect();
    assert_eq!(d.rt.force_refresh_all().await.unwrap(), 3);
    for ((h, _), old) in ws.iter().zip(&tokens) {
        d.wait("a new token", || {
            h.current().is_ok_and(|t| t.expose() != old)
        })
        .await;
    }
    d.rt.flush(Duration::from_secs(10)).await.unwrap();
    for ((h, s), n) in ws.iter().zip(&before) {
        assert_eq!(
            d.count(&s.client_id),
            n + 1,
            "{}: one request per force",
            h.name()
        );
        assert_eq!(status(h), Some(WorkloadStatus::Running));
    }
    let all: Vec<_> = ws.iter().map(|(h, s)| (h, s)).collect();
    d.check(&all).await;
}

/// Instantiates the shared scenarios as tests: `scenario_tests!(attribute, start; name,
/// …)` writes, for each name, `#[attribute] async fn name() { scenario::name(start).await }`
/// where `start` is an expression giving a [`Driver`].
#[macro_export]
macro_rules! scenario_tests {
    (#[$attr:meta] $start:expr; $($name:ident),+ $(,)?) => {
        $(
            #[$attr]
            async fn $name() {
                $crate::scenario::$name($start).await;
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------
// the endpoints

/// The runtime's in-memory `FakeTransport`, for tokio's paused clock: virtual hours pass in
/// milliseconds. Clients are the workloads' names; each issues rotating refresh tokens
/// (`rt-N`) and access tokens (`at-N`). A revoked client answers `invalid_grant`.
pub struct FakeEndpoint {
    fake: FakeTransport,
    lifetimes: Vec<(String, u64)>,
    grants: u64,
}

impl FakeEndpoint {
    /// Long tokens live an hour, short ones two minutes.
    pub const LONG: u64 = 3600;
    /// See [`FakeEndpoint::LONG`].
    pub const SHORT: u64 = 120;

    /// A fresh fake.
    pub fn new() -> FakeEndpoint {
        FakeEndpoint {
            fake: FakeTransport::new(),
            lifetimes: Vec::new(),
            grants: 0,
        }
    }

    /// The fake itself (to script what the scenarios do not).
    pub fn fake(&self) -> &FakeTransport {
        &self.fake
    }

    fn healthy(&self, client: &str) -> FakeReply {
        let secs = self
            .lifetimes
            .iter()
            .find(|(c, _)| c == client)
            .map_or(Self::LONG, |(_, s)| *s);
        FakeReply::rotating(secs)
    }

    fn reply(fault: Fault, healthy: FakeReply) -> FakeReply {
        match fault {
            Fault::Waf403 => FakeReply::waf_403(),
            Fault::Outage503 => FakeReply::unavailable(None),
            Fault::TooMany { secs } => FakeReply::too_many(secs),
            Fault::Delay(d) => FakeReply::Delayed(d, Box::new(healthy)),
        }
    }
}

impl Default for FakeEndpoint {
    fn default() -> Self {
        FakeEndpoint::new()
    }
}

impl Endpoint for FakeEndpoint {
    fn pace(&self) -> Pace {
        let policy = WorkloadPolicy {
            backoff: BackoffPolicy {
                initial: Duration::from_secs(5),
                max: Duration::from_secs(60),
                multiplier: 2.0,
            },
            give_up_after: Duration::from_secs(6 * 3600),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(3600),
            ..WorkloadPolicy::default()
        };
        Pace {
            policy,
            give_up_after: Duration::from_secs(600),
            short_hold: 3,
            long_hold: 900,
            patience: Duration::from_secs(4 * 3600),
        }
    }

    fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.fake.clone())
    }

    fn clock(&self) -> Option<Clock> {
        Some(Clock::anchored(Timestamp::from_millis(1_800_000_000_000)))
    }

    async fn grant(&mut self, workload: &str, lifetime: Lifetime) -> WorkloadSpec {
        let secs = match lifetime {
            Lifetime::Long => Self::LONG,
            Lifetime::Short => Self::SHORT,
        };
        self.lifetimes.push((workload.to_owned(), secs));
        self.fake.set_client(workload, FakeReply::rotating(secs));
        self.grants += 1;
        refresh_spec(
            workload,
            "http://127.0.0.1:9/token",
            workload,
            "client-secret-value",
            &format!("rt-initial-{workload}"),
            None,
            &self.pace().policy,
        )
    }

    async fn fail(&mut self, fault: Fault) {
        for (client, _) in self.lifetimes.clone() {
            let healthy = self.healthy(&client);
            self.fake.set_client(&client, Self::reply(fault, healthy));
        }
    }

    async fn fail_client(&mut self, client_id: &str, fault: Fault, times: Option<u32>) -> bool {
        let reply = Self::reply(fault, self.healthy(client_id));
        match times {
            Some(n) => self.fake.push(client_id, (0..n).map(|_| reply.clone())),
            None => self.fake.set_client(client_id, reply),
        }
        true
    }

    async fn heal(&mut self) {
        for (client, _) in self.lifetimes.clone() {
            self.fake.set_client(&client, self.healthy(&client));
        }
    }

    async fn revoke(&mut self, client_id: &str) {
        self.fake
            .set_client(client_id, FakeReply::oauth_error(400, "invalid_grant"));
    }

    async fn new_grant(&mut self, client_id: &str) -> String {
        self.fake.set_client(client_id, self.healthy(client_id));
        self.grants += 1;
        format!("rt-from-operator-{}", self.grants)
    }

    async fn check(&self, _served: &[(String, String)]) {}

    fn waf_marker(&self) -> &'static str {
        "Attention Required"
    }
}

/// `tokenvisor-idp` over real HTTP on 127.0.0.1, with real but short time: long tokens live
/// a minute, short ones two seconds; backoff from 100 ms to 1 s. Clients rotate their
/// refresh tokens with reuse detection; [`Endpoint::check`] asserts no reuse was seen and
/// one `invalid_grant` answer per revoked grant (none retried).
pub struct IdpEndpoint {
    /// The server.
    pub idp: IdpServer,
    /// Grants revoked so far: each is answered `invalid_grant` exactly once.
    revoked: u64,
}

impl IdpEndpoint {
    /// Starts an idp on 127.0.0.1.
    pub async fn start() -> IdpEndpoint {
        let idp = IdpServer::start(IdpConfig::default())
            .await
            .unwrap_or_else(|e| panic!("cannot start the idp: {e}"));
        IdpEndpoint { idp, revoked: 0 }
    }

    /// The client secret the idp knows a test client by.
    pub fn secret_of(client_id: &str) -> String {
        format!("secret-of-{client_id}")
    }

    /// The short policy of every workload on this endpoint.
    pub fn policy() -> WorkloadPolicy {
        WorkloadPolicy {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            backoff: BackoffPolicy {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                multiplier: 2.0,
            },
            max_retry_after: Duration::from_secs(30),
            ..WorkloadPolicy::default()
        }
    }

    fn fault(fault: Fault) -> tokenvisor_idp::Fault {
        match fault {
            Fault::Waf403 => tokenvisor_idp::Fault::HtmlForbidden,
            Fault::Outage503 => tokenvisor_idp::Fault::ServiceUnavailable { retry_after: None },
            Fault::TooMany { secs } => tokenvisor_idp::Fault::TooManyRequests {
                retry_after: Some(RetryAfter::Seconds(secs)),
                slow_down_body: false,
            },
            Fault::Delay(d) => tokenvisor_idp::Fault::Delay(d),
        }
    }
}

/// The real HTTP transport, never through an environment proxy (servers are on loopback).
pub fn http_transport() -> Arc<dyn Transport> {
    let http = HttpTransport::new(HttpConfig {
        use_env_proxy: false,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("cannot build the HTTP transport: {e}"));
    Arc::new(http)
}

impl Endpoint for IdpEndpoint {
    fn pace(&self) -> Pace {
        Pace {
            policy: IdpEndpoint::policy(),
            give_up_after: Duration::from_secs(2),
            short_hold: 2,
            long_hold: 8,
            patience: crate::wait::LIMIT,
        }
    }

    fn transport(&self) -> Arc<dyn Transport> {
        http_transport()
    }

    async fn grant(&mut self, workload: &str, lifetime: Lifetime) -> WorkloadSpec {
        let secs = match lifetime {
            Lifetime::Long => 60,
            Lifetime::Short => 2,
        };
        self.idp.register_client(
            ClientSpec::new(workload, IdpEndpoint::secret_of(workload))
                .with_lifetime(Duration::from_secs(secs)),
        );
        let rt = self
            .idp
            .issue_refresh_token(workload)
            .unwrap_or_else(|e| panic!("cannot issue a refresh token: {e}"));
        refresh_spec(
            workload,
            &self.idp.token_url(),
            workload,
            &IdpEndpoint::secret_of(workload),
            &rt,
            None,
            &IdpEndpoint::policy(),
        )
    }

    async fn fail(&mut self, fault: Fault) {
        self.idp
            .set_fault(FaultScope::Global, IdpEndpoint::fault(fault), Times::Always);
    }

    async fn fail_client(&mut self, client_id: &str, fault: Fault, times: Option<u32>) -> bool {
        self.idp.set_fault(
            FaultScope::Client(client_id.to_owned()),
            IdpEndpoint::fault(fault),
            times.map_or(Times::Always, Times::Next),
        );
        true
    }

    async fn heal(&mut self) {
        self.idp.clear_faults();
    }

    async fn revoke(&mut self, client_id: &str) {
        assert_eq!(self.idp.revoke_client_grants(client_id), 1);
        self.revoked += 1;
    }

    async fn new_grant(&mut self, client_id: &str) -> String {
        self.idp
            .issue_refresh_token(client_id)
            .unwrap_or_else(|e| panic!("cannot issue a refresh token: {e}"))
    }

    async fn check(&self, served: &[(String, String)]) {
        let counters = self.idp.counters();
        assert_eq!(counters.reuse_detected, 0, "a refresh token was reused");
        assert_eq!(
            counters.invalid_grant, self.revoked,
            "invalid_grant answers: one per revoked grant"
        );
        for (client, _) in served {
            let live = self.idp.live_refresh_tokens(client);
            assert_eq!(live.len(), 1, "{client}: live grants {}", live.len());
        }
    }

    fn waf_marker(&self) -> &'static str {
        "403"
    }
}
