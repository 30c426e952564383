//! # tokenvisor-admin
//!
//! The admin HTTP API of a tokenvisor [`Runtime`](tokenvisor::Runtime), as a
//! library: an axum [`Router`](axum::Router) an embedder mounts in its own app, and the
//! listener the `tokenvisor` daemon serves it with. The runtime crate does not depend on
//! axum or hyper; only this crate does.
//!
//! | method, path                          | answers                                                   |
//! | ------------------------------------- | --------------------------------------------------------- |
//! | `GET /healthz`                        | 200 `{"ok":true,"workloads":N}`; 503 when the runtime is not healthy; never needs auth |
//! | `GET /metrics`                        | 200 Prometheus text; 404 when no recorder was installed   |
//! | `GET /v1/workloads[?status=S]`        | 200 array of summaries (sorted by name)                   |
//! | `GET /v1/workloads/{name}`            | 200 summary plus resolved settings; 404                   |
//! | `POST /v1/workloads/{name}/refresh`   | 202; 409 when the workload cannot refresh                 |
//! | `PUT /v1/workloads/{name}/credentials`| 204; 400 bad body or wrong grant; 413 over [`BODY_LIMIT`] |
//! | `GET /v1/workloads/{name}/token`      | 200 token; 503 + `Retry-After` when none is valid         |
//! | `GET /v1/summary[?attention=N]`       | 200 counts per status and endpoint, attention first       |
//! | `GET /v1/endpoints`                   | 200 requests, failures, holds, latency per token endpoint |
//! | `GET /v1/events`                      | 200 Server-Sent Events of state changes (`Last-Event-ID` resume, [`EventLimits`]) |
//! | `GET /`                               | the dashboard: a static page that calls the routes above  |
//!
//! **Cluster mode** ([`AdminState::set_cluster_view`]): `GET /v1/workloads` lists every
//! workload of the cluster with its `owner` and `shard`; the token route answers on any
//! instance (a token held here, else a 307 redirect to the owner's admin URL, 503
//! `no_owner` while no member holds the shard); `/healthz` and `/metrics` show the
//! cluster. Without a view nothing changes. The instances share one admin token.
//!
//! Every route but `/healthz` and the dashboard's static page needs
//! `Authorization: Bearer <admin token>`; every request
//! must name the listener in `Host` and carry no foreign `Origin` (DNS rebinding, browsers).
//!
//! ## Map
//! - Face: [`AdminState`] (what is served), [`router`] (the routes, guards and auth),
//!   [`BODY_LIMIT`], [`EventLimits`] (the event stream's buffer and client cap).
//! - Listener: [`prepare`] (descriptor limit, admin token, bind) → [`Prepared::serve`] → a
//!   [`Serving`] address; an accept loop over hyper's HTTP/1 builder with the limits
//!   `axum::serve` cannot set (head timeout, idle timeout, head size, connection cap).
//! - Metrics: [`install_metrics_recorder`] (the process's Prometheus recorder) and
//!   [`spawn_metrics_upkeep`]; scrape-time gauges are filled in by `/metrics`.
//! - Errors: [`ListenError`], [`TokenError`], [`MetricsError`].
//! - [`client`]: the API's client for the `tokenvisor` command (`status --cluster`'s
//!   listing, `login`'s hand-over of a refresh token), on the same shapes.
//! - Private parts: `cluster` (the routes' cluster mode, through the runtime's
//!   `ClusterView`: this crate links no etcd client), `api` (handlers, auth, error answers; its tests in `api/tests.rs`),
//!   `views` (the JSON shapes, never a secret's value), `guard` (Host and Origin),
//!   `token` (the configured or generated admin token), `listener`, `prometheus`, `fleet`
//!   (summary, endpoint health and the live counts, from the runtime's list), `events` (the
//!   SSE hub), `dashboard` (the page and why it holds no token).
//!
//! ## Mounting the router in your own app
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use tokenvisor::Runtime;
//! use tokenvisor_admin::{AdminState, router};
//! use tokenvisor_core::Secret;
//!
//! async fn serve(runtime: Runtime, admin_token: Secret) -> std::io::Result<()> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     let addr: SocketAddr = listener.local_addr()?;
//!     // `addr` is what `Host` must name; `None`: no `/metrics` (see install_metrics_recorder).
//!     let admin = router(AdminState::new(runtime, admin_token, addr, None));
//!     let app = axum::Router::new()
//!         .route("/", axum::routing::get(|| async { "my service" }))
//!         .nest("/tokenvisor", admin);
//!     axum::serve(listener, app).await
//! }
//! ```
//!
//! `axum::serve` sets no connection limits: on a socket open to other local users prefer
//! [`prepare`] and [`Prepared::serve`], or set limits of your own. A runnable version:
//! `cargo run -p tokenvisor-admin --example mount`.

mod api;
pub mod client;
mod cluster;
mod dashboard;
mod error;
mod events;
mod fleet;
mod guard;
mod listener;
mod prometheus;
mod token;
mod views;

pub use api::{AdminState, BODY_LIMIT, router};
pub use error::{ListenError, MetricsError, TokenError};
pub use events::EventLimits;
pub use listener::{Prepared, Serving, prepare};
pub use metrics_exporter_prometheus::PrometheusHandle;
pub use prometheus::{install_metrics_recorder, spawn_metrics_upkeep};
