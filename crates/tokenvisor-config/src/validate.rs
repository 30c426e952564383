//! The validation pass: raw sections ([`crate::read`]) → a [`Config`], or every problem.
//!
//! Each section is resolved by its module — [`crate::service`], [`crate::policy`] (the
//! `[defaults]`, then each workload's keys over them), [`crate::workload`] (a workload's own
//! keys, its secrets, and the checks across workloads) — all reporting into one collector, so
//! that a file with several problems gets all of them, in file order.

use std::path::Path;

use crate::policy::{EffPolicy, resolve_policy};
use crate::problems::Cx;
use crate::service::resolve_service;
use crate::workload::{Seen, WorkloadCx};
use crate::{Config, ConfigError, read};

/// Reads and validates `text` (named `source`; relative paths resolve against `base`).
pub(crate) fn parse_in(
    text: &str,
    source: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut cx = Cx::new(text);
    let Some(raw) = read::read(&mut cx, text) else {
        return Err(cx.into_error(source));
    };
    let service = resolve_service(&mut cx, raw.service, base, env);
    let defaults = resolve_policy(&mut cx, &EffPolicy::builtin(), raw.defaults, "defaults");

    let mut seen = Seen::default();
    let mut workloads = Vec::new();
    for (path, header, raw_policy, raw) in raw.workloads {
        let policy = resolve_policy(&mut cx, &defaults, raw_policy, &path);
        let w = WorkloadCx {
            path: &path,
            header,
            base,
            env,
        };
        if let Some(spec) = w.resolve(&mut cx, &raw, policy, &mut seen) {
            workloads.push(spec);
        }
    }

    if !cx.problems.is_empty() {
        return Err(cx.into_error(source));
    }
    Ok(Config {
        source: source.to_path_buf(),
        service,
        defaults: defaults.policy,
        workloads,
        warnings: {
            let mut w = cx.warnings;
            w.sort_by_key(|p| p.line);
            w
        },
    })
}
