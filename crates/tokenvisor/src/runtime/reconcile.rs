//! The one reconcile diff: the workloads wanted against the workloads running → a [`Plan`].
//!
//! A pure function (no actor, no file, no clock), used by [`super::Runtime::reconcile`] at
//! start (reconcile from nothing: every workload starts) and at every reload:
//!
//! - a name only running is stopped;
//! - a name only wanted is started (in the order wanted);
//! - a name in both restarts only when its own settings changed ([`same_workload`]): the
//!   refresh token's current value is not a setting (its file changes with every rotation),
//!   and `endpoint_concurrency` belongs to the endpoint;
//! - an endpoint whose `endpoint_concurrency` changed is resized (no workload restarts for
//!   it); a new endpoint needs nothing, its gate is made when its first workload starts.

use std::collections::{BTreeMap, BTreeSet};

use tokenvisor_core::{Secret, TokenUrl, WorkloadName};

use crate::spec::{GrantSpec, WorkloadSpec};

/// What a reconcile must do, applied in this order: resize endpoints, stop, restart, start.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Plan {
    /// Workloads to start (not running), in the order wanted.
    pub start: Vec<WorkloadSpec>,
    /// Workloads to stop (no longer wanted), by name.
    pub stop: Vec<WorkloadName>,
    /// Workloads to stop and start again with these settings, by name.
    pub restart: Vec<WorkloadSpec>,
    /// Endpoints whose live gate gets a new limit, by URL.
    pub resize_endpoints: Vec<Resize>,
    /// Running workloads left as they are.
    pub keep: usize,
}

/// A changed `endpoint_concurrency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resize {
    pub token_url: TokenUrl,
    /// The running limit.
    pub from: usize,
    /// The wanted limit.
    pub to: usize,
}

/// Diffs `desired` (a name listed twice: the last one counts) against `running`.
pub(crate) fn plan<'a>(
    desired: Vec<WorkloadSpec>,
    running: impl IntoIterator<Item = &'a WorkloadSpec>,
) -> Plan {
    let running: BTreeMap<&WorkloadName, &WorkloadSpec> =
        running.into_iter().map(|s| (&s.name, s)).collect();
    let resize_endpoints = resizes(&desired, running.values().copied());
    let last: BTreeMap<WorkloadName, usize> = desired
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    let mut plan = Plan {
        resize_endpoints,
        ..Plan::default()
    };
    let mut wanted: BTreeSet<WorkloadName> = BTreeSet::new();
    let mut restart = BTreeMap::new();
    for (i, spec) in desired.into_iter().enumerate() {
        if last.get(&spec.name) != Some(&i) {
            continue;
        }
        wanted.insert(spec.name.clone());
        match running.get(&spec.name) {
            None => plan.start.push(spec),
            Some(old) if same_workload(old, &spec) => plan.keep += 1,
            Some(_) => {
                restart.insert(spec.name.clone(), spec);
            }
        }
    }
    plan.restart = restart.into_values().collect();
    plan.stop = running
        .keys()
        .filter(|n| !wanted.contains(**n))
        .map(|n| (*n).clone())
        .collect();
    plan
}

/// Every endpoint running with one `endpoint_concurrency` and wanted with another (the
/// configuration guarantees one value per `token_url`).
fn resizes<'a>(
    desired: &[WorkloadSpec],
    running: impl Iterator<Item = &'a WorkloadSpec>,
) -> Vec<Resize> {
    let per_url = |specs: &mut dyn Iterator<Item = &WorkloadSpec>| {
        specs
            .map(|s| (s.token_url.clone(), s.policy.endpoint_concurrency))
            .collect::<BTreeMap<TokenUrl, usize>>()
    };
    let before = per_url(&mut { running });
    let after = per_url(&mut desired.iter());
    after
        .into_iter()
        .filter_map(|(token_url, to)| {
            let from = *before.get(&token_url)?;
            (from != to).then_some(Resize {
                token_url,
                from,
                to,
            })
        })
        .collect()
}

/// Two specs describe the same workload: equal but for the refresh token's current value (the
/// file it is read from changes with every rotation) and the endpoint's settings
/// (`endpoint_concurrency` is applied to the endpoint's gate without a restart).
pub(crate) fn same_workload(a: &WorkloadSpec, b: &WorkloadSpec) -> bool {
    fn normal(s: &WorkloadSpec) -> WorkloadSpec {
        let mut s = s.clone();
        if let GrantSpec::RefreshToken { token, .. } = &mut s.grant {
            *token = Secret::from("");
        }
        s.policy.endpoint_concurrency = 0;
        s
    }
    normal(a) == normal(b)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    const URL_A: &str = "https://a.example/token";
    const URL_B: &str = "https://b.example/token";

    fn name(n: &str) -> WorkloadName {
        WorkloadName::new(n).unwrap()
    }

    fn spec(n: &str, url: &str) -> WorkloadSpec {
        WorkloadSpec::new(
            name(n),
            url.parse().unwrap(),
            "client",
            GrantSpec::RefreshToken {
                token: Secret::from("rt-1"),
                file: Some(PathBuf::from(format!("/run/{n}.rt"))),
            },
        )
    }

    fn concurrency(mut s: WorkloadSpec, n: usize) -> WorkloadSpec {
        s.policy.endpoint_concurrency = n;
        s
    }

    fn names(specs: &[WorkloadSpec]) -> Vec<&str> {
        specs.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn from_nothing_everything_starts_in_the_order_wanted() {
        let p = plan(vec![spec("b", URL_A), spec("a", URL_A)], []);
        assert_eq!(names(&p.start), ["b", "a"]);
        assert_eq!((p.stop.len(), p.restart.len(), p.keep), (0, 0, 0));
        assert!(p.resize_endpoints.is_empty());
    }

    #[test]
    fn to_nothing_everything_stops() {
        let running = [spec("b", URL_A), spec("a", URL_B)];
        let p = plan(Vec::new(), &running);
        assert_eq!(p.stop, [name("a"), name("b")]);
        assert!(p.start.is_empty() && p.restart.is_empty());
    }

    /// One row per kind of change of a running workload `w`: (what changes, restarts?).
    #[test]
    fn only_a_workload_s_own_settings_restart_it() {
        type Change = fn(&mut WorkloadSpec);
        let rows: [(&str, Change, bool); 8] = [
            ("nothing", |_| {}, false),
            (
                "the refresh token's value (rotated in its file)",
                |s| {
                    if let GrantSpec::RefreshToken { token, .. } = &mut s.grant {
                        *token = Secret::from("rt-2");
                    }
                },
                false,
            ),
            (
                "endpoint_concurrency (the endpoint's)",
                |s| s.policy.endpoint_concurrency = 3,
                false,
            ),
            (
                "the refresh-token file",
                |s| {
                    s.grant = GrantSpec::RefreshToken {
                        token: Secret::from("rt-1"),
                        file: Some(PathBuf::from("/elsewhere.rt")),
                    }
                },
                true,
            ),
            ("the client id", |s| s.client_id = "other".into(), true),
            (
                "the token URL",
                |s| s.token_url = URL_B.parse().unwrap(),
                true,
            ),
            (
                "a timeout",
                |s| s.policy.request_timeout = Duration::from_secs(7),
                true,
            ),
            (
                "the client secret",
                |s| s.client_secret = Some(Secret::from("cs-2")),
                true,
            ),
        ];
        for (what, change, restarts) in rows {
            let old = spec("w", URL_A);
            let mut new = old.clone();
            change(&mut new);
            let p = plan(vec![new.clone()], [&old]);
            assert_eq!(p.restart.len(), usize::from(restarts), "{what}");
            assert_eq!(p.keep, usize::from(!restarts), "{what}");
            assert!(p.start.is_empty() && p.stop.is_empty(), "{what}");
            if restarts {
                // Restarted with the new settings.
                assert_eq!(p.restart[0], new, "{what}");
            }
        }
    }

    #[test]
    fn a_mixed_reload_stops_restarts_starts_and_keeps() {
        let running = [
            spec("gone", URL_A),
            spec("kept", URL_A),
            spec("moved", URL_A),
        ];
        let desired = vec![
            spec("new", URL_B),
            spec("moved", URL_B),
            spec("kept", URL_A),
        ];
        let p = plan(desired, &running);
        assert_eq!(names(&p.start), ["new"]);
        assert_eq!(p.stop, [name("gone")]);
        assert_eq!(names(&p.restart), ["moved"]);
        assert_eq!(p.keep, 1);
    }

    #[test]
    fn a_changed_endpoint_concurrency_resizes_its_gate_and_a_new_endpoint_needs_nothing() {
        let running = [
            concurrency(spec("a", URL_A), 8),
            concurrency(spec("b", URL_A), 8),
        ];
        let desired = vec![
            concurrency(spec("a", URL_A), 2),
            concurrency(spec("b", URL_A), 2),
            concurrency(spec("c", URL_B), 5),
        ];
        let p = plan(desired, &running);
        assert_eq!(
            p.resize_endpoints,
            [Resize {
                token_url: URL_A.parse().unwrap(),
                from: 8,
                to: 2
            }]
        );
        assert_eq!(names(&p.start), ["c"]);
        assert_eq!((p.keep, p.restart.len()), (2, 0));
        // Unchanged: no resize.
        let same = plan(running.to_vec(), &running);
        assert!(same.resize_endpoints.is_empty());
        assert_eq!(same.keep, 2);
    }

    #[test]
    fn a_name_wanted_twice_counts_once_the_last_time() {
        let p = plan(vec![spec("a", URL_A), spec("a", URL_B)], []);
        assert_eq!(p.start.len(), 1);
        assert_eq!(p.start[0].token_url.expose(), URL_B);
    }
}
