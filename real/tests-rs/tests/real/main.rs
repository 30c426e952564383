//! The real-components suite: tokenvisor against a real identity provider (oidc-provider, on
//! the machine's node) behind a real reverse proxy (nginx, from Debian's packages), every
//! process started here on 127.0.0.1 and stopped by its PID, also when a test fails.
//!
//! Run it with `bash real/install.sh && scripts/test --real`
//! (real/README.md). A missing component fails every test with the command that installs it.
//!
//! - [`components`]: where nginx, node and oidc-provider are; free ports; process guards.
//! - [`oidc`]: oidc-provider (real/oidc/provider.mjs), the scripted authorization_code +
//!   PKCE login (real/oidc/login.mjs), its request log, RFC 7009 revocation, introspection.
//! - [`nginx`]: one nginx per test with its own prefix, switched between the modes of
//!   real/nginx/modes by `nginx -s reload`, and its JSON access log.
//! - [`slow`]: an upstream that accepts requests and never answers.
//! - [`harness`]: the stack of one test (provider, nginx, the tokenvisor runtime in process,
//!   every state change, status files read back from disk); the bounded wait, the status
//!   readers, the event collector, the daemon spawner and the admin client are
//!   tokenvisor-test-support's.
//! - [`endpoint`]: [`endpoint::RealEndpoint`], the shared scenarios' endpoint (nginx's
//!   modes as the faults).
//! - [`scenarios`]: the shared scenarios of tokenvisor-test-support, then faults only this
//!   suite has (502, a slow upstream, `limit_req`, client_credentials), in process.
//! - [`dashboard`]: the admin dashboard in headless chromium (chromedriver): a known fleet's
//!   counts, a revoked grant appearing live, a screenshot in `target/artifacts/`.
//! - [`daemon`]: 100 rotations through `tokenvisor run`, across a restart of the daemon.
//! - [`crash_loop`]: `kill -9` of `tokenvisor run` in a loop, start-up included; grants lost
//!   only with a refresh in flight at a kill (the small run of `examples/crash_loop.rs`).
//!
//! Time is real but short: access tokens live a few seconds, backoff starts at 200 ms and is
//! capped at 1 s, requests time out after 2 s. Tests never sleep to let time pass: they poll
//! for an event (a status, a log line) with a bounded wait, and assert no durations.

mod components;
mod crash_loop;
mod daemon;
mod dashboard;
mod endpoint;
mod harness;
mod nginx;
mod oidc;
mod scenarios;
mod slow;
