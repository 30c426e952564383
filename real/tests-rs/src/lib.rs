//! The real-components suite's support library: tokenvisor against a real identity provider
//! (oidc-provider, on the machine's node) behind a real reverse proxy (nginx, from Debian's
//! packages), every process started here on 127.0.0.1 and stopped by its PID. The suite's
//! tests (`tests/real/`) and its benchmark programs (`examples/`) share it.
//!
//! - [`components`]: where nginx, node and oidc-provider are; free ports; process guards;
//!   the bounded wait.
//! - [`oidc`]: oidc-provider (real/oidc/provider.mjs), the scripted authorization_code +
//!   PKCE login (real/oidc/login.mjs), its request log, RFC 7009 revocation, introspection.
//! - [`nginx`]: one nginx per test with its own prefix, switched between the modes of
//!   real/nginx/modes by `nginx -s reload`, and its JSON access log.
//! - [`slow`]: an upstream that accepts requests and never answers.
//! - [`harness`]: the stack of one test (provider, nginx, the tokenvisor runtime in process,
//!   every state change, status files read back from disk).
//! - [`endpoint`]: [`endpoint::RealEndpoint`], the shared scenarios' endpoint (nginx's
//!   modes as the faults).
//!
//! - [`binary`]: the workspace's `tokenvisor` binary, built when it is older than its sources.
//! - [`crash_loop`]: `kill -9` of `tokenvisor run` in a loop while grants rotate, and the
//!   count of grants lost against refreshes in flight at each kill (issue 11, target 4).
//! - [`cluster_instance`]: one `tokenvisor run` instance of a cluster on a real etcd (its
//!   directory, configuration and start), shared by the cluster tests and the chaos run.
//! - `cluster_chaos` (with the `real` feature): three cluster instances on a real etcd
//!   through `kill -9`, a zombie, a restart, a fourth joining and leaving, an etcd member
//!   killed; failover times, grants lost against refreshes in flight (issue 12).
//!
//! A component that is missing fails (never skips) with the command that installs it.

pub mod binary;
#[cfg(feature = "real")]
pub mod cluster_chaos;
pub mod cluster_instance;
pub mod components;
pub mod crash_loop;
pub mod endpoint;
pub mod harness;
pub mod nginx;
pub mod oidc;
pub mod slow;
