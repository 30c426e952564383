//! The configuration crate's integration tests, one binary (nextest names them
//! `module::test`). Fixtures live in `tests/fixtures/`.
//!
//! - [`cluster`]: the `[cluster]` section (cluster mode on etcd).
//! - [`config`]: the TOML configuration, one test per validation rule.
//! - [`discovery`]: `issuer` instead of `token_url`, `extra_params`, the masked listing.
//! - [`login`]: the keys of `tokenvisor login`, and loading for it.
//! - [`grants`]: the workload-identity grants' keys (jwt_bearer, token_exchange).
//! - [`layering`]: the crate's place in the workspace and the shape of its schema.
//! - [`provider`]: client keys and certificates, roots, proxy.

mod cluster;
mod config;
mod discovery;
mod grants;
mod layering;
mod log_level;
mod login;
mod provider;
