//! `--scenario recovery`: a runtime restart over N existing status files.
//!
//! N workloads (tokens living `provider.quiet_lifetime`; no refresh-token rotation, so the
//! restarted runtime can present the configured refresh tokens again) are brought to three
//! states before the restart:
//! - every 100th (i % 100 == 0): its grant revoked at the provider, then refreshed →
//!   `unauthenticated`;
//! - every 100th + 50 (i % 100 == 50): the provider answers 500 to its client (a 503 would pace the whole endpoint), then refreshed
//!   → `auth_retrying` (attempt 1); these alone back off about an hour, so that they make no
//!   further attempt before the restart;
//! - the rest: `running`. They keep the profile's backoff (1 s to 10 s by default): the
//!   set-up starts N workloads on one endpoint at once, and a first refresh that fails
//!   there (an attempt not sent while the endpoint's request slots stayed busy, a timeout)
//!   is retried within seconds, as an operator's policy would, instead of an hour later,
//!   past the settle timeout (the set-up then failed with thousands never `running`). The
//!   restart measured below sends no request for these workloads whatever their backoff.
//!
//! After a flush, every record is kept and the runtime shut down (files say `stopped`, their
//! token sections carry the state). A new runtime starts over the same directory
//! (`start_secs`: it reads every file), the same N workloads are added (`add_secs`), and the
//! clock runs until every workload is back to its pre-restart state (`steady_secs`, from the
//! new start): `running` again, serving the access token kept in the state journal without
//! a request (`serving_secs`, `refreshes_after_restart`);
//! still `unauthenticated`, without a single request to the provider; `auth_retrying` with
//! the same first failure and a further attempt. Checked too: every status file was
//! recovered (none corrupt) and every workload kept its `created_at`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokenvisor::TokenHandle;
use tokenvisor::spec::WorkloadPolicy;
use tokenvisor_core::{StatusRecord, WorkloadStatus};
use tokenvisor_idp::{Fault, FaultScope, Times};
use tokio::time::Instant;

use super::harness::{self, Client, Harness};
use super::profile::Profile;
use super::{Options, Report, secs};

/// The backoff of the workloads brought to `auth_retrying`: no further attempt before the
/// restart.
const RETRYING_BACKOFF: Duration = Duration::from_secs(3600);

/// The state a workload had before the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Running,
    Unauthenticated,
    Retrying,
}

fn class(i: usize) -> Class {
    match i % 100 {
        0 => Class::Unauthenticated,
        50 => Class::Retrying,
        _ => Class::Running,
    }
}

/// Whether `now` is back to the state of `pre`.
fn recovered(class: Class, pre: &StatusRecord, now: Option<&StatusRecord>) -> bool {
    let Some(now) = now else {
        return false;
    };
    match class {
        Class::Running => now.status == WorkloadStatus::Running,
        Class::Unauthenticated => now.status == WorkloadStatus::Unauthenticated,
        Class::Retrying => {
            let attempt = |r: &StatusRecord| r.token.as_ref().map_or(0, |t| t.attempt);
            now.status == WorkloadStatus::AuthRetrying && attempt(now) > attempt(pre)
        }
    }
}

/// The policies of the two kinds of workload (each built once: every spec shares its `Arc`s).
struct Policies {
    /// The profile's.
    profile: WorkloadPolicy,
    /// The profile's with a backoff of [`RETRYING_BACKOFF`].
    retrying: WorkloadPolicy,
}

impl Policies {
    fn new(profile: &Profile) -> Policies {
        Policies {
            profile: profile.policy.workload_policy(),
            retrying: profile
                .policy
                .with_backoff(RETRYING_BACKOFF)
                .workload_policy(),
        }
    }

    /// The policy of the `i`th workload.
    fn of(&self, i: usize) -> &WorkloadPolicy {
        match class(i) {
            Class::Running | Class::Unauthenticated => &self.profile,
            Class::Retrying => &self.retrying,
        }
    }
}

/// Adds a workload per client, each with its class's policy.
async fn add_all(
    h: &Harness,
    policies: &Policies,
    clients: &[Client],
) -> crate::Result<Vec<TokenHandle>> {
    h.add_all_with(clients, |i| policies.of(i)).await
}

/// The set-up's first step: every workload added and `running`.
async fn bring_up(
    h: &Harness,
    policies: &Policies,
    clients: &[Client],
) -> crate::Result<Vec<TokenHandle>> {
    let handles = add_all(h, policies, clients).await?;
    if let Err(left) = harness::wait_all(&handles, h.settle_timeout(), |_, h| {
        harness::status_of(h) == Some(WorkloadStatus::Running)
    })
    .await
    {
        return Err(crate::Error::failed(format!(
            "{left} of {} workloads never became healthy",
            clients.len()
        )));
    }
    Ok(handles)
}

/// Runs the scenario.
pub(crate) async fn run(opts: &Options) -> crate::Result<Report> {
    let mut report = Report::default();
    let n = opts.n;
    let policies = Policies::new(&opts.profile);
    let mut h = Harness::start(
        &opts.profile,
        opts.status_dir.as_deref(),
        opts.quiet_lifetime(),
    )
    .await?;
    opts.progress(&format!(
        "tokenvisor soak --scenario recovery: {n} workloads; status files in {}",
        h.dir.display()
    ));
    let clients = h.register(n, "recovery", false)?;
    let handles = bring_up(&h, &policies, &clients).await?;

    // Bring 1 % to unauthenticated and 1 % to auth_retrying.
    let mut special = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        match class(i) {
            Class::Unauthenticated => {
                h.idp.revoke_client_grants(&c.id);
                special.push(handles[i].clone());
            }
            Class::Retrying => {
                // A 500, not a 503: a 503 is the whole endpoint's overload (RFC 9110) and
                // paces every workload of it, so 1,000 of them would slow the 98,000
                // healthy ones sharing the endpoint to the pace's floor (the set-up then
                // outlasted its settle timeout); here 1 % fail on their own.
                h.idp.set_fault(
                    FaultScope::Client(c.id.clone()),
                    Fault::ServerError(500),
                    Times::Always,
                );
                special.push(handles[i].clone());
            }
            Class::Running => {}
        }
    }
    h.force_refresh_each(&special).await?;
    let settled = harness::wait_all(&handles, h.settle_timeout(), |i, h| {
        let want = match class(i) {
            Class::Running => WorkloadStatus::Running,
            Class::Unauthenticated => WorkloadStatus::Unauthenticated,
            Class::Retrying => WorkloadStatus::AuthRetrying,
        };
        harness::status_of(h) == Some(want)
    })
    .await;
    if let Err(left) = settled {
        return Err(crate::Error::failed(format!(
            "{left} of {n} workloads did not reach their pre-restart state"
        )));
    }
    h.runtime.flush(Duration::from_secs(120)).await?;
    let pre: Vec<Arc<StatusRecord>> = handles
        .iter()
        .map(|h| {
            h.status()
                .ok_or_else(|| crate::Error::failed(format!("{} has no record", h.name())))
        })
        .collect::<crate::Result<_>>()?;
    let shutdown_started = Instant::now();
    let flushed = h.runtime.shutdown(Duration::from_secs(120)).await?;
    let shutdown = shutdown_started.elapsed();
    if !flushed.failed.is_empty() {
        report.fail(format!(
            "{} status records not durable at shutdown",
            flushed.failed.len()
        ));
    }
    let (requests_before, running_before): (HashMap<String, u64>, u64) = {
        let c = h.idp.counters();
        let unauth = clients
            .iter()
            .enumerate()
            .filter(|(i, _)| class(*i) == Class::Unauthenticated)
            .map(|(_, cl)| (cl.id.clone(), c.client(&cl.id)))
            .collect();
        let running = clients
            .iter()
            .enumerate()
            .filter(|(i, _)| class(*i) == Class::Running)
            .map(|(_, cl)| c.client(&cl.id))
            .sum();
        (unauth, running)
    };
    opts.progress(&format!(
        "pre-restart: {}; shut down in {:.2}s; restarting",
        harness::fmt_counts(&harness::status_counts(&handles)),
        shutdown.as_secs_f64()
    ));

    // The restart.
    let started = Instant::now();
    h.start_again().await?;
    let start = started.elapsed();
    let recovery = h.runtime.recovery().clone();
    let new_handles: Vec<TokenHandle> = add_all(&h, &policies, &clients).await?;
    let add = started.elapsed() - start;
    // Workloads whose token was still valid serve it from the state journal.
    let serving = harness::wait_all(&new_handles, h.settle_timeout(), |i, h| {
        class(i) != Class::Running || h.current().is_ok()
    })
    .await;
    let serving_secs = started.elapsed();
    if let Err(left) = serving {
        report.fail(format!(
            "{left} of {n} running workloads serve no token after the restart"
        ));
    }
    let steady = harness::wait_all(&new_handles, h.settle_timeout(), |i, h| {
        recovered(class(i), &pre[i], h.status().as_deref())
    })
    .await;
    let steady_secs = started.elapsed();
    if let Err(left) = steady {
        report.fail(format!(
            "{left} of {n} workloads not back to their pre-restart state after {}",
            humantime::format_duration(h.settle_timeout())
        ));
    }

    // The checks.
    if recovery.recovered != n as usize {
        report.fail(format!(
            "the runtime recovered {} status files of {n}",
            recovery.recovered
        ));
    }
    if !recovery.corrupted.is_empty() {
        report.fail(format!(
            "{} status files were corrupt",
            recovery.corrupted.len()
        ));
    }
    let mut created_changed = 0usize;
    let mut retry_lost = 0usize;
    let mut unauth_since_changed = 0usize;
    for (i, handle) in new_handles.iter().enumerate() {
        let Some(now) = handle.status() else {
            created_changed += 1;
            continue;
        };
        if now.created_at != pre[i].created_at {
            created_changed += 1;
        }
        let token = |r: &StatusRecord| r.token.clone();
        match class(i) {
            Class::Running => {}
            Class::Unauthenticated => {
                if token(&now).and_then(|t| t.since) != token(&pre[i]).and_then(|t| t.since) {
                    unauth_since_changed += 1;
                }
            }
            Class::Retrying => {
                if token(&now).and_then(|t| t.first_failure_at)
                    != token(&pre[i]).and_then(|t| t.first_failure_at)
                {
                    retry_lost += 1;
                }
            }
        }
    }
    if created_changed > 0 {
        report.fail(format!("{created_changed} workloads lost their created_at"));
    }
    if retry_lost > 0 {
        report.fail(format!(
            "{retry_lost} retrying workloads restarted their run of failures"
        ));
    }
    if unauth_since_changed > 0 {
        report.fail(format!(
            "{unauth_since_changed} unauthenticated workloads changed their since"
        ));
    }
    let counters = h.idp.counters();
    let hammered = requests_before
        .iter()
        .filter(|(id, before)| counters.client(id) != **before)
        .count();
    let running_after: u64 = clients
        .iter()
        .enumerate()
        .filter(|(i, _)| class(*i) == Class::Running)
        .map(|(_, cl)| counters.client(&cl.id))
        .sum();
    let refreshes_after_restart = running_after - running_before;
    if hammered > 0 {
        report.fail(format!(
            "{hammered} unauthenticated workloads sent requests after the restart"
        ));
    }
    let counts = harness::status_counts(&new_handles);
    h.runtime.shutdown(Duration::from_secs(120)).await?;
    h.idp.shutdown().await;

    report.line(format!("workloads {n}: {}", harness::fmt_counts(&counts)));
    report.line(format!(
        "restart: runtime start (reads {} files) {:.3}s, adding {n} workloads {:.3}s, every \
         workload back to its state after {:.3}s; every running one serving after {:.3}s \
         with {refreshes_after_restart} refresh requests",
        recovery.recovered,
        start.as_secs_f64(),
        add.as_secs_f64(),
        steady_secs.as_secs_f64(),
        serving_secs.as_secs_f64()
    ));
    report.set("workloads", n);
    report.set("recovered", recovery.recovered);
    report.set("corrupted", recovery.corrupted.len());
    report.set("shutdown_secs", secs(shutdown));
    report.set("start_secs", secs(start));
    report.set("add_secs", secs(add));
    report.set("steady_secs", secs(steady_secs));
    report.set("serving_secs", secs(serving_secs));
    report.set("refreshes_after_restart", refreshes_after_restart);
    report.set(
        "unauthenticated",
        (0..n as usize)
            .filter(|&i| class(i) == Class::Unauthenticated)
            .count(),
    );
    report.set(
        "auth_retrying",
        (0..n as usize)
            .filter(|&i| class(i) == Class::Retrying)
            .count(),
    );
    report.set("states_recovered", report.ok());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the workloads brought to `auth_retrying` back off an hour; the others keep the
    /// profile's backoff.
    #[test]
    fn only_the_retrying_class_backs_off_an_hour() {
        let profile = Profile::default();
        let policies = Policies::new(&profile);
        let initial = |i: usize| policies.of(i).backoff.initial;
        let profiles = profile.policy.workload_policy().backoff.initial;
        assert_eq!(class(0), Class::Unauthenticated);
        assert_eq!(initial(0), profiles);
        assert_eq!(class(1), Class::Running);
        assert_eq!(initial(1), profiles);
        assert_eq!(class(50), Class::Retrying);
        assert_eq!(initial(50), RETRYING_BACKOFF);
        assert_eq!(policies.of(50).backoff.max, RETRYING_BACKOFF);
    }

    /// A workload of the healthy majority whose first refresh fails (a transient 500 here; in
    /// the 100,000 start-up burst, an attempt not sent while every request slot stayed busy)
    /// is retried at the profile's backoff and the set-up goes on: it used to back off an
    /// hour, past the settle timeout ("never became healthy").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_healthy_workload_whose_first_refresh_fails_is_running_within_the_settle_timeout() {
        let mut profile = Profile::default();
        profile.checks.settle_timeout = Duration::from_secs(20);
        let h = Harness::start(&profile, None, Duration::from_secs(3600))
            .await
            .expect("harness");
        let clients = h.register(3, "recovery", false).expect("clients");
        assert_eq!(class(1), Class::Running);
        h.idp.set_fault(
            FaultScope::Client(clients[1].id.clone()),
            Fault::ServerError(500),
            Times::Next(1),
        );
        let brought_up = bring_up(&h, &Policies::new(&profile), &clients).await;
        let counts = brought_up
            .as_ref()
            .map(|handles| harness::fmt_counts(&harness::status_counts(handles)));
        let requests = h.idp.counters().client(&clients[1].id);
        h.runtime
            .shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
        h.idp.shutdown().await;
        assert_eq!(counts.ok().as_deref(), Some("running 3"));
        assert_eq!(requests, 2, "the failed first refresh and its retry");
    }
}
