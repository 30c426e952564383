//! # tokenvisor-test-support
//!
//! Helpers shared by the workspace's test suites, so that each is written once. A
//! dev-dependency only: nothing here is linked into a library or the binary.
//!
//! ## Map
//! - [`layering`]: reads a crate's `src/` and builds its module graph (which top-level
//!   module names which through `crate::…`), and finds a cycle in it; the core's and the
//!   runtime's layering tests assert on it.

pub mod layering;
