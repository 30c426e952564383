//! # tokenvisor
//!
//! The runtime library: keeps OAuth2 access tokens fresh for many workloads and writes each
//! one's health to an atomic status file. Pure decisions live in `tokenvisor-core`; this
//! crate drives them with ractor actors, tokio timers, reqwest and the filesystem.
//!
//! ## Map
//! - [`runtime`]: the embedding API — start a runtime (or spawn its supervisor inside your
//!   own ractor tree), add and remove workloads, get [`handle::TokenHandle`]s, subscribe to
//!   state changes, flush, shut down.
//! - [`supervisor`]: the supervisor actor — one linked token actor per workload, restarts
//!   within a per-workload budget, status `error` when the budget is spent.
//! - [`token`]: the token actor — drives `tokenvisor_core::machine`, runs each HTTP exchange
//!   in a spawned task and receives its result as a message tagged with its attempt.
//! - [`persistence`] and [`status_store`]: the persistence actor and the atomic status files.
//! - [`handle`]: lock-free token reads (`arc-swap`), never through a mailbox.
//! - [`timers`]: one timer service (a `DelayQueue` task) for every token actor's timer.
//! - [`gate`]: per-token-endpoint concurrency limit and shared `Retry-After` hold.
//! - [`transport`], [`oauth`]: the token-endpoint seam and its real implementation (oauth2
//!   over reqwest, bounded bodies, no redirects).
//! - [`locks`]: one daemon per status directory and per refresh-token file (`flock`).
//! - [`credentials`]: client secrets and refresh tokens; rotated tokens written back
//!   atomically before the workload reports healthy.
//! - [`config`] and [`spec`]: re-exports of the `tokenvisor-config` crate (the TOML
//!   configuration → [`spec::WorkloadSpec`]s) and of its workload specs, under the paths
//!   they always had.
//! - [`atomic`]: the one atomic-file writer (temp file 0600 → fsync → rename → fsync of the
//!   directory) behind status files, refresh-token files and the admin token.
//! - [`clock`]: wall time that follows tokio's (pausable) clock.
//! - [`metrics`]: metric names (no per-workload labels).
//! - [`testing`]: an in-memory scriptable transport for paused-clock tests.

pub mod atomic;
pub mod clock;
pub use tokenvisor_config as config;
pub mod credentials;
pub mod gate;
pub mod handle;
pub mod locks;
pub mod metrics;
pub mod oauth;
pub mod persistence;
pub mod runtime;
pub use tokenvisor_config::spec;
pub mod status_store;
pub mod supervisor;
pub mod testing;
pub mod timers;
pub mod token;
pub mod transport;
