//! The CLI's integration tests, one binary (nextest names them `module::test`): the built
//! `tokenvisor` binary run as operators run it.
//!
//! Shared helpers: [`common`] (run the binary, read its output) and [`harness`] (the
//! daemon, admin client, status readers and bounded wait of tokenvisor-test-support, and a
//! scriptable token endpoint); [`crash_support`] for the crash-safety suite.
//!
//! - [`check_config`], [`status`], [`status_watch`], [`probe`]: the offline commands;
//!   [`status_cluster`]: `status --cluster` against a stand-in admin API.
//! - [`login`]: `tokenvisor login`'s usage errors (its flows: the real suite).
//! - [`watch_daemon`]: events, the dashboard page and the workload gauges through the daemon.
//! - [`daemon`], [`reload`]: `tokenvisor run`, signals, reloads, the admin API.
//! - [`files`], [`secrets`], [`hostile`]: files and locks, secrets never leak, hostile input.
//! - [`crash`]: kill -9 at random moments; nothing is lost or torn.
//! - [`first_run`], [`exit_codes`], [`demo`], [`service_reload`]: the shipped configs and the
//!   local provider end to end, one exit-code table, the demo's story, `[service]` on SIGHUP.
//! - [`soak`]: `tokenvisor demo` and `tokenvisor soak` (feature `soak`).

mod common;
mod crash_support;
mod harness;

mod check_config;
mod crash;
mod daemon;
mod demo;
mod exit_codes;
mod files;
mod first_run;
mod hostile;
mod login;
mod probe;
mod reload;
mod secrets;
mod service_reload;
#[cfg(feature = "soak")]
mod soak;
mod status;
mod status_cluster;
mod status_watch;
mod watch_daemon;
