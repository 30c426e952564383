//! `tokenvisor status --cluster`: every workload of a cluster with its owner, read through
//! one running instance's admin API (`GET /v1/workloads`, which in cluster mode lists the
//! whole cluster with `owner`; the client is [`tokenvisor_admin::client`]). Any instance will
//! do: each reads the same etcd key space.
//!
//! The admin API, not etcd directly: the default build of the binary links no etcd client
//! (`.ci/run` checks it), and the instance already holds the connection, the TLS and auth
//! settings and the paging rules. The instance is `--admin URL`, else the configuration's
//! `service.admin_listen` (`--config`); the token is `--admin-token-file`, else the
//! configuration's `admin_token_file`, else `<state_dir>/admin.token`.
//!
//! Exit status: 0 when every workload is fine and owned; 1 when one is unauthenticated or
//! down, when no member holds one's shard, or when the instance cannot be asked.

use std::path::PathBuf;

use clap::error::ErrorKind;
use tokenvisor_admin::client::{AdminClient, WorkloadRow, default_token_file, reachable};
use tokenvisor_core::Timestamp;
use tokenvisor_core::status::TokenState;
use tokenvisor_core::status_view::{ERROR_CELL_CHARS, reason, when};
use tokenvisor_core::text::{Table, safe_text, truncate_chars};

use super::StatusArgs;
use crate::output::now;
use crate::{EXIT_PROBLEM, usage_error};

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
    let explicit = args.admin_token_file.clone();
    let token = match service {
        Some(service) => default_token_file(explicit, service),
        None => explicit,
    };
    let token = token.ok_or_else(|| {
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
    let client = AdminClient::new(&url, token);
    let listing = match rt.block_on(client.workloads()) {
        Ok(listing) => listing,
        Err(e) => {
            eprintln!("error: {}", safe_text(&e.to_string()));
            return Ok(EXIT_PROBLEM);
        }
    };
    if listing.rows.iter().any(|(r, _)| r.owner.is_none()) {
        eprintln!(
            "error: the instance at {url} is not in cluster mode (its listing has no owners); \
             use tokenvisor status without --cluster"
        );
        return Ok(EXIT_PROBLEM);
    }
    let rows: Vec<(WorkloadRow, serde_json::Value)> = (listing.rows.into_iter())
        .filter(|(r, _)| args.name.as_ref().is_none_or(|n| *n == r.name))
        .collect();
    let attention = rows.iter().any(|(r, _)| r.needs_attention());
    if listing.truncated {
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
        let rows: Vec<WorkloadRow> = rows.into_iter().map(|(r, _)| r).collect();
        print!("{}", table(&rows, now()));
    }
    Ok(if attention || listing.truncated {
        EXIT_PROBLEM
    } else {
        0
    })
}

/// The table: one line per workload, its owner second.
fn table(rows: &[WorkloadRow], now: Timestamp) -> String {
    let mut t = Table::new(&[
        "NAME",
        "OWNER",
        "STATUS",
        "STATE",
        "EXPIRY / NEXT ATTEMPT",
        "LAST ERROR",
    ]);
    for r in rows {
        // The listing has no `since`: an unauthenticated or stopped workload shows `-`.
        let at = when(r.token_state, r.expires_at, r.next_attempt_at, None, now);
        let why = reason(r.last_error.as_ref(), &r.status_context);
        t.row(&[
            r.name.clone(),
            r.owner()
                .map_or_else(|| "- (no owner)".to_owned(), safe_text),
            r.status.as_str().to_owned(),
            r.token_state.map_or("-", TokenState::as_str).to_owned(),
            at,
            truncate_chars(&safe_text(&why), ERROR_CELL_CHARS),
        ]);
    }
    t.render()
}
