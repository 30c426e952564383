//! The real-components suite: tokenvisor against a real identity provider (oidc-provider, on
//! the machine's node) behind a real reverse proxy (nginx, from Debian's packages), every
//! process started here on 127.0.0.1 and stopped by its PID, also when a test fails.
//!
//! Run it with `bash real/install.sh && scripts/test --real`
//! (real/README.md). A missing component fails every test with the command that installs it.
//!
//! The support modules are the library's ([`tokenvisor_real`], `real/tests-rs/src/`), shared
//! with the benchmark examples: `components`, `oidc`, `nginx`, `slow`, `harness`, `endpoint`.
//!
//! The tests, this binary's own modules:
//!
//! - [`cluster`]: cluster mode's fenced store against a real 3-member etcd (Debian's
//!   etcd-server): claims, the fence, revisions, membership, an etcd member killed.
//! - [`cluster_tls`]: cluster mode's surfaces (the cluster view and the admin routes over
//!   it) against a real etcd, and etcd with TLS client certificates and with auth on.
//! - [`cluster_run`]: `tokenvisor run` instances sharing rotating grants on that etcd: spread,
//!   `kill -9` and failover, a zombie (SIGSTOP past its lease), etcd unavailable.
//! - [`cluster_chaos`]: issue 12's acceptance, small: three instances through `kill -9`, a
//!   zombie, a restart, a fourth joining and leaving, an etcd member killed; no grant lost
//!   but a refresh in flight at a kill or pause.
//! - [`client_auth`]: private_key_jwt and client_secret_jwt against the provider, a wrong key.
//! - [`discovery`]: `issuer` through nginx (one fetch, shared), `extra_params` at the
//!   provider, discovery down (transient, recovers), an issuer mismatch, `check-config
//!   --online` and `probe --issuer` warning of a method not advertised.
//! - [`grants`]: jwt_bearer and token_exchange, registered in the provider through
//!   `registerGrantType`: each refreshes, a rotated file, an expired or rejected assertion,
//!   an unreadable subject token.
//! - [`tls`]: nginx terminating TLS with a CA made at test time: an unknown CA, ca_file, ca_only.
//! - [`proxy`]: a workload's forward proxy (tinyproxy) with credentials, its refusal, no_proxy.
//! - [`scenarios`]: the shared scenarios of tokenvisor-test-support, then faults only this
//!   suite has (502, a slow upstream, `limit_req`, client_credentials), in process.
//! - [`dashboard`]: the admin dashboard in headless chromium (chromedriver): a known fleet's
//!   counts, a revoked grant appearing live, a screenshot in `target/artifacts/`.
//! - [`login`]: `tokenvisor login` through the provider's own login, consent and device
//!   pages (a scripted browser): the code flow into a running daemon, the device flow into
//!   the file, access denied, a forged state, an expired device code.
//! - [`daemon`]: 100 rotations through `tokenvisor run`, across a restart of the daemon.
//! - [`crash_loop`]: `kill -9` of `tokenvisor run` in a loop, start-up included; grants lost
//!   only with a refresh in flight at a kill (the small run of `examples/crash_loop.rs`).
//!
//! Time is real but short: access tokens live a few seconds, backoff starts at 200 ms and is
//! capped at 1 s, requests time out after 2 s. Tests never sleep to let time pass: they poll
//! for an event (a status, a log line) with a bounded wait, and assert no durations.

use tokenvisor_real::{components, endpoint, harness, nginx, oidc};

mod client_auth;
mod cluster;
mod cluster_chaos;
mod cluster_run;
mod cluster_tls;
mod crash_loop;
mod daemon;
mod dashboard;
mod discovery;
mod grants;
mod login;
mod proxy;
mod scenarios;
mod tls;
