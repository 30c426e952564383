//! # tokenvisor-test-support
//!
//! Helpers shared by the workspace's test suites, so that each is written once. A
//! dev-dependency only: nothing here is linked into a library or the binary.
//!
//! ## Map
//! - [`layering`]: reads a crate's `src/` and builds its module graph (which top-level
//!   module names which through `crate::…`), and finds a cycle in it; the core's and the
//!   runtime's layering tests assert on it.
//! - [`wait`]: the one bounded wait (`wait_until`, `wait_until_within`, `poll_until`), on
//!   tokio's clock, real or paused.
//! - [`etcd`]: a real etcd cluster (Debian's `etcd-server`, n members on 127.0.0.1, own
//!   data directories and free ports), healthy before use, killed by PID on drop.
//! - [`fs`]: temporary directories that are removed, writes and reads that name the path.
//!
//! With the `runtime` feature (what the runtime's, the CLI's, `tests/` and the real suite's
//! tests use; the core's and the configuration's need neither it nor the runtime):
//! - `status`: status-file readers, once or continuously (`DiskWatch`).
//! - `events`: every state change of a runtime, and whether the collector lagged.
//! - `daemon`: the one spawner of `tokenvisor run` (ready line, admin address and token,
//!   stderr in memory or a file, signals, bounded exit, stop by PID on drop).
//! - `admin`: an admin-API client that records every answer; a Prometheus text reader.
//! - `config`: a writer of daemon configuration files (`ConfigFile`).
//! - `scenario`: the `Endpoint` abstraction, the `Driver`, the scenarios written once over
//!   them, the `scenario_tests!` macro that instantiates them, and two endpoints:
//!   `FakeEndpoint` (paused clock) and `IdpEndpoint` (tokenvisor-idp over HTTP).
//!
//! ## Which helper to use
//! - Waiting for anything: `wait::wait_until` (or `_within` a limit of your own, or
//!   `poll_until` for a yes/no). Never a bare `sleep` to let time pass.
//! - A daemon: `daemon::Daemon::start(binary, config, Launch)`; the CLI passes
//!   `env!("CARGO_BIN_EXE_tokenvisor")`, others build the binary first.
//! - A scenario of a workload's life against a token endpoint: write it once in
//!   `scenario`, instantiate it with `scenario_tests!` in each suite whose endpoint can
//!   express its faults.

pub mod etcd;
pub mod fs;
pub mod layering;
pub mod wait;

#[cfg(feature = "runtime")]
pub mod admin;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(feature = "runtime")]
pub mod daemon;
#[cfg(feature = "runtime")]
pub mod events;
#[cfg(feature = "runtime")]
pub mod scenario;
#[cfg(feature = "runtime")]
pub mod status;
