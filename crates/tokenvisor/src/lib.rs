//! # tokenvisor
//!
//! The runtime library: keeps OAuth2 access tokens fresh for many workloads and writes each
//! one's health to an atomic status file. Pure decisions live in `tokenvisor-core`; this
//! crate drives them with ractor actors, tokio timers, reqwest and the filesystem.
//!
//! ## The face
//! Everything an embedder, the admin API, the CLI and the soak use is at the crate root:
//! start a [`Runtime`] from a [`RuntimeConfig`] with a [`Transport`] (the real one is
//! [`HttpTransport`]), add [`spec::WorkloadSpec`]s, read tokens through [`TokenHandle`]s
//! (lock-free, never through a mailbox), and hear of changes as [`StateChange`]s. Around it:
//! status files outside a runtime ([`list_statuses`], [`inspect_status`], [`read_status`],
//! [`write_status`], [`ensure_status_dir`]; [`read_status_entries`] and
//! [`inspect_status_entry`] as `tokenvisor status` shows them, module `status_read`),
//! the daemon's locks ([`acquire_for`], [`hold_credentials`]), secret files
//! ([`read_secret_file`], [`write_secret_file`], [`NewCredentials`] for a running workload),
//! the atomic writer's no-clobber create ([`create_new_file`], for the admin token) and the
//! metric names the admin API's scrape and the soak read (`METRIC_*`, [`describe_metrics`]).
//! [`config`] and [`spec`] re-export `tokenvisor-config`. Two commands' logic has a module
//! of its own, public: [`login`] (the login flows) and [`probe`] (one classified attempt).
//! Every other module is private but [`journal`]: actor
//! messages, timers, gates' internals, the persistence actor and the credential store are
//! not part of the face. With the `test-util` feature the crate also exposes its test hooks:
//! the in-memory `testing::FakeTransport`, the modules `atomic`, `credentials`, `handle`,
//! `locks`, `metrics`, `persistence` and `status_store` with their internals, and the
//! runtime's `inject_*` fault injection.
//!
//! ## Map
//! - `runtime`: [`Runtime`] — start a runtime (or spawn its supervisor inside your own
//!   ractor tree), add and remove workloads, get [`TokenHandle`]s, subscribe to state
//!   changes, flush, reconcile, shut down.
//! - `supervisor`: the supervisor actor — one linked token actor per workload, restarts
//!   within a per-workload budget, status `error` when the budget is spent.
//! - `token`: the token actor — drives `tokenvisor_core::machine`, runs each HTTP exchange
//!   in a spawned task and receives its result as a message tagged with its attempt.
//! - `msg`: the token actor's messages (shared by the token actor, the supervisor and the
//!   timer service without a cycle).
//! - `persistence` and `status_store`: the persistence actor and the atomic status files.
//! - `handle`: lock-free token reads (`arc-swap`), never through a mailbox.
//! - `timers`: one timer service (a `DelayQueue` task) for every token actor's timer.
//! - `gate`: per-token-endpoint concurrency limit and shared `Retry-After` hold, and what
//!   each endpoint saw ([`Gates::stats`] → [`EndpointStats`]).
//! - `transport`, `oauth`: the token-endpoint seam ([`Transport`]) and its real
//!   implementation ([`HttpTransport`]: oauth2 over reqwest, bounded bodies, no redirects);
//!   [`HttpTransport::post_form`] ([`FormField`]): any other form POST with a workload's
//!   client authentication (`tokenvisor login`'s code, device and token requests).
//! - [`probe`]: one refresh attempt classified as the daemon would (`tokenvisor probe`): the
//!   verdict as data, its report (JSON and text), a rotated refresh token to save.
//! - [`login`]: a workload's login (`tokenvisor login`): the authorization code flow with
//!   PKCE and a loopback redirect listener, the device flow (RFC 8628), their endpoints.
//! - `locks`: `flock` locks; `startup`: [`acquire_for`], the locks a daemon takes first.
//! - `credentials`: client secrets and refresh tokens; rotated tokens written back
//!   atomically before the workload reports healthy.
//! - [`config`] and [`spec`]: re-exports of the `tokenvisor-config` crate (the TOML
//!   configuration → [`spec::WorkloadSpec`]s) and of its workload specs.
//! - `atomic`: the one atomic-file writer (temp file 0600 → fsync → rename → fsync of the
//!   directory) behind status files, refresh-token files and the admin token.
//! - `cluster` (feature `cluster`, off by default): cluster mode on etcd, the fenced store
//!   (`ClusterStore`): member lease and keepalive, shard claim and release, credential and status writes guarded by the shard
//!   key's lease (the fence) and the credential's revision; the runtime's wiring
//!   (`ClusterLink`, `RuntimeConfig::cluster`): workloads run where their shard is owned.
//! - `cluster_view`: the [`ClusterView`] seam (always built, no etcd type): every workload
//!   with its owner, members' admin URLs, lease health and counters, as data; the admin API
//!   serves the cluster through it, `cluster`'s `EtcdView` implements it.
//! - `clock`: [`Clock`], wall time that follows tokio's (pausable) clock.
//! - [`journal`] (public: the CLI locates it, benchmarks write through it): the state
//!   journal (SQLite, WAL): per workload the credential, the served access token and the
//!   status record; one transaction per batch.
//! - `metrics`: metric names (no per-workload labels).
//! - `testing` (feature `test-util`): an in-memory scriptable transport for paused-clock tests.
//!
//! The modules form layers: none uses another that uses it back (`tests/it/layering.rs`).

// Public with `test-util` (their internals are test hooks), private otherwise: the face
// below re-exports what an embedder, the admin API, the CLI and the soak need.
#[cfg(feature = "test-util")]
pub mod atomic;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub, dead_code)]
mod atomic;
mod clock;
#[cfg(feature = "cluster")]
mod cluster;
mod cluster_view;
#[cfg(feature = "test-util")]
pub mod credentials;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub, dead_code, unused_imports)]
mod credentials;
#[cfg(feature = "test-util")]
pub mod handle;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub, dead_code)]
mod handle;
pub mod journal;
#[cfg(feature = "test-util")]
pub mod locks;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub, dead_code)]
mod locks;
#[cfg(feature = "test-util")]
pub mod metrics;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub, dead_code)]
mod metrics;
#[cfg(feature = "test-util")]
pub mod persistence;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub, dead_code)]
mod persistence;
#[cfg(feature = "test-util")]
pub mod status_store;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub, dead_code)]
mod status_store;
pub use tokenvisor_config as config;
mod discovery;
mod gate;
pub mod login;
mod msg;
mod oauth;
mod oauth_auth;
pub mod probe;
mod runtime;
pub use tokenvisor_config::spec;
mod startup;
mod status_read;
mod supervisor;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod timers;
mod token;
mod transport;
mod workload_identity;

pub use crate::metrics::{
    CLUSTER_CONFLICTS as METRIC_CLUSTER_CONFLICTS,
    CLUSTER_ETCD_CONNECTED as METRIC_CLUSTER_ETCD_CONNECTED,
    CLUSTER_FENCE_REJECTIONS as METRIC_CLUSTER_FENCE_REJECTIONS,
    CLUSTER_HANDOVERS as METRIC_CLUSTER_HANDOVERS,
    CLUSTER_SHARDS_OWNED as METRIC_CLUSTER_SHARDS_OWNED, CLUSTER_WRITES as METRIC_CLUSTER_WRITES,
    ETCD_REQUEST_BUCKETS, ETCD_REQUEST_DURATION as METRIC_ETCD_REQUEST_DURATION,
};
pub use crate::metrics::{
    REFRESH_ATTEMPTS as METRIC_REFRESH_ATTEMPTS, REFRESH_DURATION as METRIC_REFRESH_DURATION,
    STATUS_PENDING as METRIC_STATUS_PENDING, STATUS_WRITE_FAILURES as METRIC_STATUS_WRITE_FAILURES,
    STATUS_WRITES as METRIC_STATUS_WRITES, TIMER_LATENESS as METRIC_TIMER_LATENESS,
    WORKLOADS as METRIC_WORKLOADS, describe as describe_metrics,
};
pub use atomic::{Created, Step as WriteStep, WriteError, stage_new as create_new_file};
pub use clock::Clock;
#[cfg(feature = "cluster")]
pub use cluster::{
    Claim, ClusterError, ClusterLink, ClusterOptions, ClusterSettings, ClusterStats, ClusterStore,
    Coordination, CoordinationFuture, InFlight, LeaseState, LinkStats, Release, StoredCredential,
    Versioned, WriteOutcome, default_member, rebalance, spawn_coordinator,
};
#[cfg(feature = "cluster")]
pub use cluster::{EtcdView, VIEW_MAX_RECORDS, VIEW_PAGE, cluster_view};
pub use cluster_view::{
    ClusterCounters, ClusterHealth, ClusterMember, ClusterSnapshot, ClusterView, ClusterViewError,
    ClusterWorkload, LeaseHealth, Owner, ViewFuture,
};
pub use credentials::{CredentialError, NewCredentials, read_secret_file, write_secret_file};
pub use discovery::{DISCOVERY_BACKOFF, DiscoveryError, REFETCH_AFTER};
pub use gate::{EndpointStats, Gates, LATENCY_BUCKETS_MS, Pacing};
pub use handle::{AccessToken, TokenHandle, TokenRef, Unavailable};
pub use locks::{LockError, hold_credentials};
pub use oauth::form::FormField;
pub use oauth::{HttpConfig, HttpError, HttpTransport};
pub use persistence::{
    DEFAULT_JOURNAL_SUBDIR, FlushReport, PENDING_PLACES, PersistStats, PersistenceConfig,
};
pub use runtime::{Health, ReconcileReport, RecoveryReport, Runtime, RuntimeConfig, RuntimeError};
pub use startup::{StartupLockError, acquire_for};
pub use status_read::{inspect_entry as inspect_status_entry, read_entries as read_status_entries};
pub use status_store::{
    DirClaim, Inspected, StoreError, ensure_dir as ensure_status_dir, inspect as inspect_status,
    list as list_statuses, read as read_status, write_atomic as write_status,
};
pub use supervisor::{SupervisorError, WorkloadView};
pub use token::StateChange;
pub use tokenvisor_core::discovery::{Advertised, Issuer, ProviderMetadata};
pub use transport::{ExchangeRequest, ExchangeTokens, Grant, OutcomeFuture, Transport};
