//! # tokenvisor-core
//!
//! The sans-IO heart of tokenvisor. Nothing here reads a clock, touches a socket or a file,
//! or spawns a task: time (`now`) and randomness (`fastrand::Rng`) are arguments, so every
//! behaviour is a plain function that tests drive with explicit time.
//!
//! ## Map
//! - [`assertion`]: the workload-identity grants' local check of a presented token (a
//!   JWT's `exp`, read without verifying it).
//! - [`classify`](mod@classify): the raw outcome of one refresh attempt → `Success` /
//!   `Transient` / `Permanent`, with a sanitised summary.
//! - [`machine`]: the per-workload state machine (Healthy, Refreshing, TransientBackoff,
//!   Unauthenticated, Stopped) as `(state, input, now, rng) → (state, effects)`.
//! - [`discovery`]: the issuer, its metadata locations (RFC 8414, OpenID Connect), the
//!   metadata document parsed and checked, the advertised authentication methods.
//! - [`cluster`]: cluster mode's pure rules: a name's shard (XXH3-64), a shard's owner
//!   (rendezvous hashing), the handover plan, and the send rule against the lease.
//! - [`diagnosis`]: a verdict in words: what tokenvisor would do with it, a likely cause
//!   (`tokenvisor probe`'s explanation and hint).
//! - [`device_poll`]: `tokenvisor login --device`'s polling decision (RFC 8628:
//!   `authorization_pending`, `slow_down`, expiry) with explicit time.
//! - [`limiter`]: adaptive pacing of one token endpoint: an AIMD concurrency limit under
//!   `endpoint_concurrency` and a request rate learned from 429/503 answers.
//! - [`scrub`]: the one text sanitiser: decode, clean, remove secrets in any encoding.
//! - [`policy`]: backoff with full jitter, the refresh schedule, restart intensity.
//! - [`status_view`]: what `tokenvisor status` shows of the status files: entries, the
//!   table, the reason and time cells, the fleet summary ([`status_view::summary`]).
//! - [`text`]: plain text for a terminal: aligned tables, compact and relative durations.
//! - [`status`]: the on-disk status record (ToolHive's fields and the `token` section).
//! - [`projection`]: the one status projection: machine → record, record → resume; the only
//!   module that knows both the machine and the record.
//! - [`name`]: validated workload names (safe single path components).
//! - [`secret`]: a string type that never prints its value.
//! - [`spec`]: what a workload is, resolved ([`spec::WorkloadSpec`], its policy, grant,
//!   provider and login settings) and cluster mode's settings: plain data that
//!   `tokenvisor-config` produces from TOML and an embedder may build in code.
//! - [`time`]: [`Timestamp`], milliseconds since the epoch, serialised as RFC 3339.
//! - [`write_queue`]: the persistence logic, sans I/O: coalescing per workload, batches for
//!   group commit, retries, flush and key waiters, status-file coalescing.
//! - [`token_url`]: [`TokenUrl`], a validated token-endpoint URL whose display never shows
//!   userinfo or query values.

pub mod assertion;
pub mod classify;
pub mod cluster;
pub mod device_poll;
pub mod diagnosis;
pub mod discovery;
pub mod limiter;
pub mod machine;
pub mod name;
pub mod policy;
pub mod projection;
pub mod scrub;
pub mod secret;
pub mod spec;
pub mod status;
pub mod status_view;
pub mod text;
pub mod time;
pub mod token_url;
pub mod write_queue;

pub use classify::{
    ClassifyPolicy, Failure, FailureKind, HttpAnswer, RawOutcome, TokenGrant, TransportKind,
    Verdict, classify,
};
pub use discovery::{Issuer, ProviderMetadata};
pub use machine::{AttemptId, Effects, Input, Machine, MachineConfig, Resume, State};
pub use name::{NameError, WorkloadName};
pub use secret::Secret;
pub use status::{StatusRecord, TokenSection, WorkloadStatus};
pub use time::Timestamp;
pub use token_url::{TokenUrl, TokenUrlError};
