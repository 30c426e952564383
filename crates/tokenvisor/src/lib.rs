//! # tokenvisor
//!
//! The runtime library: keeps OAuth2 access tokens fresh for many workloads and writes each
//! one's health to an atomic status file. Pure decisions live in `tokenvisor-core`; this
//! crate drives them with ractor actors, tokio timers, reqwest and the filesystem.
//!
//! ## The face
//! An embedder needs the types at the crate root: start a [`Runtime`] from a
//! [`RuntimeConfig`] with a [`Transport`] (the real one is [`HttpTransport`]), add
//! [`spec::WorkloadSpec`]s, read tokens through [`TokenHandle`]s (lock-free, never through a
//! mailbox), and hear of changes as [`StateChange`]s. A few groups of items stay modules:
//! [`config`] and [`spec`] (re-exports of `tokenvisor-config`), [`status_store`] (read and
//! write status files outside a runtime, as `tokenvisor status` does), [`locks`] (one daemon
//! per status directory and per refresh-token file), [`credentials`] (secret files) and
//! [`metrics`] (metric names). Actor messages, timers, gates and the persistence actor are
//! private. With the `test-util` feature the crate also exposes its test hooks: the
//! in-memory `testing::FakeTransport`, the `persistence` actor, the handle's cells and the
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
//! - `persistence` and [`status_store`]: the persistence actor and the atomic status files.
//! - `handle`: lock-free token reads (`arc-swap`), never through a mailbox.
//! - `timers`: one timer service (a `DelayQueue` task) for every token actor's timer.
//! - `gate`: per-token-endpoint concurrency limit and shared `Retry-After` hold.
//! - `transport`, `oauth`: the token-endpoint seam ([`Transport`]) and its real
//!   implementation ([`HttpTransport`]: oauth2 over reqwest, bounded bodies, no redirects).
//! - [`locks`]: `flock` locks; `startup`: [`acquire_for`], the locks a daemon takes first.
//! - [`credentials`]: client secrets and refresh tokens; rotated tokens written back
//!   atomically before the workload reports healthy.
//! - [`config`] and [`spec`]: re-exports of the `tokenvisor-config` crate (the TOML
//!   configuration → [`spec::WorkloadSpec`]s) and of its workload specs.
//! - [`atomic`]: the one atomic-file writer (temp file 0600 → fsync → rename → fsync of the
//!   directory) behind status files, refresh-token files and the admin token.
//! - `clock`: [`Clock`], wall time that follows tokio's (pausable) clock.
//! - [`journal`]: the state journal (SQLite, WAL): per workload the credential, the served
//!   access token and the status record; one transaction per batch.
//! - [`metrics`]: metric names (no per-workload labels).
//! - `testing` (feature `test-util`): an in-memory scriptable transport for paused-clock tests.
//!
//! The modules form layers: none uses another that uses it back (`tests/layering.rs`).

pub mod atomic;
mod clock;
pub use tokenvisor_config as config;
pub mod credentials;
mod gate;
#[cfg(feature = "test-util")]
pub mod handle;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub)]
mod handle;
pub mod journal;
pub mod locks;
pub mod metrics;
mod msg;
mod oauth;
#[cfg(feature = "test-util")]
pub mod persistence;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub)]
mod persistence;
mod runtime;
pub use tokenvisor_config::spec;
mod startup;
pub mod status_store;
mod supervisor;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod timers;
mod token;
mod transport;

pub use clock::Clock;
pub use gate::Gates;
pub use handle::{AccessToken, TokenHandle, TokenRef, Unavailable};
pub use oauth::{HttpConfig, HttpError, HttpTransport};
pub use persistence::{FlushReport, PersistStats, PersistenceConfig};
pub use runtime::{Health, ReconcileReport, RecoveryReport, Runtime, RuntimeConfig, RuntimeError};
pub use startup::{StartupLockError, acquire_for};
pub use status_store::DirClaim;
pub use supervisor::{SupervisorError, WorkloadView};
pub use token::StateChange;
pub use transport::{ExchangeRequest, Grant, OutcomeFuture, Transport};
