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
//! - [`fs`]: temporary directories that are removed, writes and reads that name the path.
//!
//! With the `runtime` feature:
//! - [`status`]: status-file readers.
//! - [`events`]: every state change of a runtime, and whether the collector lagged.
//! - [`daemon`]: the one spawner of `tokenvisor run` (ready line, admin address and token,
//!   stderr, signals, stop by PID).
//! - [`admin`]: an admin-API client that records every answer; Prometheus text reader.
//! - [`config`]: a writer of daemon configuration files.
//! - [`scenario`]: the endpoint abstraction and the scenarios written once over it.

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
