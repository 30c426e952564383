//! The core's integration tests, one binary (nextest names them `module::test`).
//!
//! - [`fuzz`]: property tests of the hostile-input surface (classifier, parsers).
//! - [`fleet`]: a simulated fleet's first refreshes are spread by the schedule's jitter.
//! - [`purity`]: the core stays sans-IO (manifest and sources).
//! - [`layering`]: no module cycle.
//! - [`spec`]: the resolved spec types, built in code (defaults, mappings, no secret shown).

mod fleet;
mod fuzz;
mod layering;
mod purity;
mod spec;
