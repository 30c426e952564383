//! tokenvisor end to end: the runtime over real HTTP against `tokenvisor-idp` on 127.0.0.1,
//! with real but short time, and status files read back from disk.
//!
//! - [`scenarios`]: the shared scenarios of tokenvisor-test-support over HTTP (WAF blip,
//!   outage across expiry, give-up ceiling, invalid_grant, Retry-After holds and floor,
//!   single flight, new credentials, force all), then client_credentials, basic and post.
//! - [`fleet`]: 1,000 workloads on one endpoint through a fault window.
//! - [`restart`]: rotated refresh tokens survive a restart of the runtime.
//! - [`huge_body`]: an 8 MiB HTML 403 is a short, transient `infrastructure_4xx`.
//! - [`ownership`]: a new client secret during a refresh never reuses the refresh token.
//! - [`example`]: the embedding example runs and exits 0 without printing a token.
//! - [`verdicts`]: which answers are verdicts (a framework's 403, an unknown code, Slack).

mod common;
mod example;
mod fleet;
mod huge_body;
mod ownership;
mod restart;
mod scenarios;
mod verdicts;
