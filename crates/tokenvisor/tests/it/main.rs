//! The runtime's integration tests, one binary (nextest names them `module::test`).
//!
//! - [`scenarios`]: the shared workload scenarios (tokenvisor-test-support's `scenario`)
//!   on tokio's paused clock with the in-memory `FakeTransport`.
//! - [`runtime_paused`]: the rest of a workload's life on the paused clock (crashes,
//!   restarts, removal, timers, shutdown).
//! - [`reconcile`]: `Runtime::reconcile` on the paused clock.
//! - [`workload_span`]: every log line of a workload names it.
//! - [`oauth`]: the real transport over HTTP on 127.0.0.1.
//! - [`discovery`]: `issuer` discovery (cache, backoff, issuer check) and `extra_params`
//!   over HTTP on 127.0.0.1.
//! - [`journal`]: the state journal: durable before running, restarts resume, files as views.
//! - [`credentials`], [`persistence`], [`status_store`]: files on a real filesystem.
//! - [`ownership`]: one owner per credential (PUT, reload, removal, forced refresh and a
//!   foreign rotation during a refresh in flight).
//! - [`pacing`]: attempts queued during a hold leave it paced.
//! - [`workload_identity`]: jwt_bearer and token_exchange: the platform's token read at
//!   every attempt, an expired or unreadable one not sent, `invalid_grant` transient.
//! - [`layering`]: no module cycle.
//! - `cluster_parking` (feature `cluster`): the supervisor's shards without etcd (parked,
//!   gained, drained) on the paused clock, through a fake coordination store.

#[cfg(feature = "cluster")]
mod cluster_parking;
mod credentials;
mod discovery;
mod journal;
mod layering;
mod oauth;
mod ownership;
mod pacing;
mod persistence;
mod reconcile;
mod runtime_paused;
mod scenarios;
mod status_store;
mod workload_identity;
mod workload_span;
