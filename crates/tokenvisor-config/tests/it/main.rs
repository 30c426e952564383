//! The configuration crate's integration tests, one binary (nextest names them
//! `module::test`). Fixtures live in `tests/fixtures/`.
//!
//! - [`cluster`]: the `[cluster]` section (cluster mode on etcd).
//! - [`config`]: the TOML configuration, one test per validation rule.
//! - [`grants`]: the workload-identity grants' keys (jwt_bearer, token_exchange).
//! - [`layering`]: the crate's place in the workspace and the shape of its schema.
//! - [`provider`]: client keys and certificates, roots, proxy.

mod cluster;
mod config;
mod grants;
mod layering;
mod log_level;
mod provider;
