//! `tokenvisor status --cluster`: every workload of a cluster with its owner, read through
//! one running instance's admin API (`GET /v1/workloads`, which in cluster mode lists the
//! whole cluster with `owner`). Any instance will do: each reads the same etcd key space.
//!
//! The admin API, not etcd directly: the default build of the binary links no etcd client
//! (`.ci/run` checks it), and the instance already holds the connection, the TLS and auth
//! settings and the paging rules. The instance is `--admin URL`, else the configuration's
//! `service.admin_listen` (`--config`); the token is `--admin-token-file`, else the
//! configuration's `admin_token_file`, else `<state_dir>/admin.token`.
//!
//! Exit status: 0 when every workload is fine and owned; 1 when one is unauthenticated or
//! down, when no member holds one's shard, or when the instance cannot be asked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use serde::Deserialize;
use tokenvisor_core::status::{LastError, TokenState};
use tokenvisor_core::{Timestamp, WorkloadStatus};

use super::StatusArgs;
use crate::output::{Table, absolute, compact_duration, now, relative, safe_text, truncate_chars};
use crate::{EXIT_PROBLEM, usage_error};

/// How long the instance may take to answer.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The largest answer read (a 250,000-workload listing is well under it).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// One workload as the admin API lists it in cluster mode.
#[derive(Debug, Deserialize)]
struct Row {
    name: String,
    status: WorkloadStatus,
    #[serde(default)]
    status_context: String,
    token_state: Option<TokenState>,
    expires_at: Option<Timestamp>,
    next_attempt_at: Option<Timestamp>,
    last_error: Option<LastError>,
    /// Absent: the instance is not in cluster mode; `null`: no member owns it.
    #[serde(default, deserialize_with = "present")]
    owner: Option<Option<String>>,
}

/// A field that is present (`null` included): `Some(value)`; absent: `None` (the default).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl Row {
    fn owner(&self) -> Option<&str> {
        self.owner.as_ref().and_then(|o| o.as_deref())
    }

    fn needs_attention(&self) -> bool {
        let status = match self.status {
            WorkloadStatus::Unauthenticated | WorkloadStatus::Error => true,
            WorkloadStatus::Running
            | WorkloadStatus::AuthRetrying
            | WorkloadStatus::Starting
            | WorkloadStatus::Stopped => false,
        };
        status || self.owner().is_none()
    }
}

/// The instance's admin base URL and its token file, from the arguments.
fn target(args: &StatusArgs) -> anyhow::Result<Result<(String, PathBuf), u8>> {
    let cfg = match &args.config {
        Some(path) => match tokenvisor::config::load(path) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                eprintln!("{e}");
                return Ok(Err(EXIT_PROBLEM));
            }
        },
        None => None,
    };
    let service = cfg.as_ref().map(|c| &c.service);
    let url = match (&args.admin, service.and_then(|s| s.admin_listen.addr())) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(addr)) => format!("http://{}", reachable(addr)),
        (None, None) => {
            return Err(usage_error(
                "status",
                ErrorKind::MissingRequiredArgument,
                "--cluster asks a running instance: pass --admin URL, or --config FILE with \
                 service.admin_listen on"
                    .to_owned(),
            ));
        }
    };
    let token = args
        .admin_token_file
        .clone()
        .or_else(|| service.and_then(|s| s.admin_token_file.clone()))
        .or_else(|| service.and_then(|s| s.state_dir.as_ref().map(|d| d.join("admin.token"))))
        .ok_or_else(|| {
            usage_error(
                "status",
                ErrorKind::MissingRequiredArgument,
                "--cluster needs the admin token: pass --admin-token-file FILE (the instances \
                 share one) or --config FILE"
                    .to_owned(),
            )
        })?;
    Ok(Ok((url, token)))
}

/// An address a client can connect to: a wildcard listener is asked on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// Runs `status --cluster`; returns the exit code.
pub(crate) fn run(args: &StatusArgs) -> anyhow::Result<u8> {
    let (url, token_file) = match target(args)? {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let token = match tokenvisor::config::read_admin_token(&token_file) {
        Ok(t) => t,
        Err(reason) => {
            eprintln!("error: admin token: {reason}");
            return Ok(EXIT_PROBLEM);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = rt.block_on(fetch(&url, token.expose()));
    let (rows, truncated) = match answer {
        Ok(r) => r,
        Err(message) => {
            eprintln!("error: {}", safe_text(&message));
            return Ok(EXIT_PROBLEM);
        }
    };
    if rows.iter().any(|(r, _)| r.owner.is_none()) {
        eprintln!(
            "error: the instance at {url} is not in cluster mode (its listing has no owners); \
             use tokenvisor status without --cluster"
        );
        return Ok(EXIT_PROBLEM);
    }
    let rows: Vec<(Row, serde_json::Value)> = rows
        .into_iter()
        .filter(|(r, _)| args.name.as_ref().is_none_or(|n| *n == r.name))
        .collect();
    let attention = rows.iter().any(|(r, _)| r.needs_attention());
    if truncated {
        eprintln!(
            "warning: the listing stopped at the instance's bound; not every workload is shown"
        );
    }
    if args.json {
        let all: Vec<&serde_json::Value> = rows.iter().map(|(_, v)| v).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else if rows.is_empty() {
        eprintln!("no workloads in the cluster seen by {url}");
    } else {
        let rows: Vec<Row> = rows.into_iter().map(|(r, _)| r).collect();
        print!("{}", table(&rows, now()));
    }
    Ok(if attention || truncated {
        EXIT_PROBLEM
    } else {
        0
    })
}

/// GET `<url>/v1/workloads`: each row parsed and as received; whether it was truncated.
async fn fetch(url: &str, token: &str) -> Result<(Vec<(Row, serde_json::Value)>, bool), String> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = client
        .get(format!("{url}/v1/workloads"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("cannot reach the instance at {url}: {}", without_url(&e)))?;
    let status = resp.status();
    let truncated = resp
        .headers()
        .get("x-tokenvisor-truncated")
        .is_some_and(|v| v == "true");
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(format!(
            "the answer of {url} is larger than {MAX_BODY} bytes"
        ));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading the answer of {url}: {}", without_url(&e)))?;
    if !status.is_success() {
        let why = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("{url}/v1/workloads answered {status}: {why}"));
    }
    let values: Vec<serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|e| format!("{url}/v1/workloads answered something that is not a listing: {e}"))?;
    let rows = values
        .into_iter()
        .map(|v| {
            serde_json::from_value::<Row>(v.clone())
                .map(|r| (r, v))
                .map_err(|e| format!("{url}/v1/workloads: a workload that does not parse: {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok((rows, truncated))
}

/// A reqwest error without its URL (ours; said once by the caller).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The table: one line per workload, its owner second.
fn table(rows: &[Row], now: Timestamp) -> String {
    let mut t = Table::new(&[
        "NAME",
        "OWNER",
        "STATUS",
        "STATE",
        "EXPIRY / NEXT ATTEMPT",
        "LAST ERROR",
    ]);
    for r in rows {
        t.row(&[
            r.name.clone(),
            r.owner()
                .map_or_else(|| "- (no owner)".to_owned(), safe_text),
            r.status.as_str().to_owned(),
            r.token_state.map_or("-", TokenState::as_str).to_owned(),
            when(r, now),
            truncate_chars(&safe_text(&last_error(r)), super::ERROR_CELL_CHARS),
        ]);
    }
    t.render()
}

fn when(r: &Row, now: Timestamp) -> String {
    let at = |label: &str, t: Timestamp| format!("{label} {} ({})", relative(t, now), absolute(t));
    match r.token_state {
        Some(TokenState::TransientBackoff) => match r.next_attempt_at {
            Some(t) if t >= now => at("next attempt", t),
            Some(t) => format!(
                "next attempt overdue by {} ({})",
                compact_duration(now.since(t)),
                absolute(t)
            ),
            None => "-".to_owned(),
        },
        Some(TokenState::Healthy | TokenState::Refreshing) => match r.expires_at {
            Some(t) if t > now => at("expires", t),
            Some(t) => at("expired", t),
            None => "-".to_owned(),
        },
        Some(TokenState::Unauthenticated | TokenState::Stopped) | None => "-".to_owned(),
    }
}

fn last_error(r: &Row) -> String {
    match &r.last_error {
        Some(e) => super::describe_last_error(e),
        None => r.status_context.clone(),
    }
}
