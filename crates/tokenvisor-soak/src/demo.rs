//! `tokenvisor demo`: the embedded default. An in-process fault-injecting OAuth provider
//! (tokenvisor-idp on 127.0.0.1) and N workloads with short token lifetimes go through a
//! scripted storyline — a WAF 403 window, a 429 with `Retry-After`, a 503 burst, one
//! workload's grant revoked and later its credentials re-supplied — shown live, one line per
//! status change, then a summary. Exits 0 when only the revoked workload was ever
//! `unauthenticated` and everything ends `running`; 1 otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Context as _;
use tokenvisor::NewCredentials;
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor::{HttpConfig, HttpTransport};
use tokenvisor::{Runtime, RuntimeConfig};
use tokenvisor_core::policy::BackoffPolicy;
use tokenvisor_core::scrub::truncate_chars;
use tokenvisor_core::{Secret, WorkloadName, WorkloadStatus};
use tokenvisor_idp::{ClientSpec, Fault, FaultScope, IdpConfig, IdpServer, RetryAfter, Times};
use tokio::time::Instant;

/// Arguments of `tokenvisor demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many workloads.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    workloads: u32,
    /// How long the storyline runs (at least 20s).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    duration: Duration,
    /// Where status files go (default: a temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    status_dir: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(20) {
        return Err("the storyline needs at least 20s".into());
    }
    Ok(d)
}

/// The workload whose grant the storyline revokes.
const VICTIM: u32 = 7;

/// Runs the demo. Returns the exit code.
pub fn run(args: &DemoArgs) -> crate::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(demo(args))
}

#[derive(Default)]
struct Tally {
    last: BTreeMap<WorkloadName, WorkloadStatus>,
    transitions: u64,
    unauthenticated: BTreeMap<WorkloadName, String>,
}

fn wl_name(i: u32) -> String {
    format!("demo-{i:03}")
}

async fn demo(args: &DemoArgs) -> crate::Result<u8> {
    let n = args.workloads;
    let lifetime = Duration::from_secs(4);
    let idp = IdpServer::start(IdpConfig::default().with_access_token_lifetime(lifetime))
        .await
        .context("cannot start the embedded provider")?;
    let (dir, _tmp) = match &args.status_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::tempdir().context("cannot create a temporary status directory")?;
            (t.path().to_owned(), Some(t))
        }
    };
    println!(
        "tokenvisor demo: {n} workloads, tokens living {}s, provider at {}",
        lifetime.as_secs(),
        idp.token_url()
    );
    println!("status files: {}", dir.display());

    let transport = HttpTransport::new(HttpConfig {
        use_env_proxy: false,
        ..HttpConfig::default()
    })?;
    let runtime = Runtime::start(RuntimeConfig::new(&dir, Arc::new(transport))).await?;
    let started = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let printer = {
        let mut rx = runtime.subscribe();
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                let mut t = tally
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let prev = t.last.insert(e.name.clone(), e.status);
                if prev == Some(e.status) {
                    continue;
                }
                t.transitions += 1;
                if e.status == WorkloadStatus::Unauthenticated {
                    t.unauthenticated
                        .insert(e.name.clone(), e.context.to_string());
                }
                let from = prev.map_or("-", WorkloadStatus::as_str);
                let why = if e.context.is_empty() {
                    String::new()
                } else {
                    format!("  {}", truncate_chars(&e.context, 90))
                };
                println!(
                    "{:>6.1}s  {:<9} {:>15} → {:<15}{why}",
                    started.elapsed().as_secs_f64(),
                    e.name,
                    from,
                    e.status.as_str()
                );
            }
        })
    };

    for i in 0..n {
        let id = wl_name(i);
        let secret = format!("demo-secret-{i}");
        idp.register_client(ClientSpec::new(&id, &secret).with_rotation(true));
        let rt = idp.issue_refresh_token(&id)?;
        let mut spec = WorkloadSpec::new(
            WorkloadName::new(&id)?,
            idp.token_url().parse()?,
            &id,
            GrantSpec::RefreshToken {
                token: Secret::from(rt),
                file: None,
            },
        )
        .with_client_secret(&secret);
        spec.policy.backoff = BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(4),
            multiplier: 2.0,
        };
        spec.policy.request_timeout = Duration::from_secs(2);
        spec.policy.connect_timeout = Duration::from_secs(1);
        spec.policy.give_up_after = Duration::from_secs(600);
        runtime.add(spec).await?;
    }

    let d = args.duration;
    let at = |f: f64| started + d.mul_f64(f);
    let banner = |text: &str| {
        println!("{:>6.1}s  ── {text}", started.elapsed().as_secs_f64());
    };
    tokio::time::sleep_until(at(0.15)).await;
    banner("WAF: the provider now answers 403 with an HTML page (a VPN flap through a WAF)");
    idp.set_fault(FaultScope::Global, Fault::HtmlForbidden, Times::Always);
    tokio::time::sleep_until(at(0.30)).await;
    idp.clear_faults();
    banner("WAF window over");
    tokio::time::sleep_until(at(0.38)).await;
    banner("rate limit: 429 with Retry-After: 3 — every workload of the endpoint waits it out");
    idp.set_fault(
        FaultScope::Global,
        Fault::TooManyRequests {
            retry_after: Some(RetryAfter::Seconds(3)),
            slow_down_body: false,
        },
        Times::Next(5),
    );
    tokio::time::sleep_until(at(0.48)).await;
    banner("503 burst: the provider is down");
    idp.set_fault(
        FaultScope::Global,
        Fault::ServiceUnavailable { retry_after: None },
        Times::Always,
    );
    tokio::time::sleep_until(at(0.58)).await;
    idp.clear_faults();
    banner("provider back");
    tokio::time::sleep_until(at(0.62)).await;
    let victim = WorkloadName::new(&wl_name(VICTIM.min(n - 1)))?;
    banner(&format!(
        "{victim}: its grant is revoked at the provider (invalid_grant is final)"
    ));
    idp.revoke_client_grants(victim.as_str());
    tokio::time::sleep_until(at(0.80)).await;
    banner(&format!("{victim}: an operator supplies new credentials"));
    let fresh = idp.issue_refresh_token(victim.as_str())?;
    runtime
        .supply_credentials(
            &victim,
            NewCredentials {
                refresh_token: Some(Secret::from(fresh)),
                client_secret: None,
            },
        )
        .await?;
    tokio::time::sleep_until(at(1.0)).await;
    banner("end of the storyline");

    let views = runtime.list().await?;
    let counters = idp.counters();
    printer.abort();
    runtime.shutdown(Duration::from_secs(10)).await?;
    idp.shutdown().await;

    let t = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut finals: BTreeMap<&str, u32> = BTreeMap::new();
    let mut not_running = BTreeSet::new();
    for v in &views {
        let s = v
            .record
            .as_ref()
            .map_or(WorkloadStatus::Starting, |r| r.status);
        *finals.entry(s.as_str()).or_default() += 1;
        if s != WorkloadStatus::Running {
            not_running.insert(v.spec.name.to_string());
        }
    }
    println!("\nsummary");
    println!("  status changes:        {}", t.transitions);
    println!(
        "  refreshes (provider):  {} ok of {} requests",
        counters.success, counters.token_requests
    );
    println!("  final statuses:        {finals:?}");
    if t.unauthenticated.is_empty() {
        println!("  ever unauthenticated:  none");
    } else {
        println!("  ever unauthenticated:");
        for (name, why) in &t.unauthenticated {
            println!("    {name}: {}", truncate_chars(why, 120));
        }
    }
    let unexpected: Vec<&WorkloadName> = t
        .unauthenticated
        .keys()
        .filter(|name| **name != victim)
        .collect();
    let mut ok = true;
    if !unexpected.is_empty() {
        println!("  FAIL: unauthenticated without a revoked grant: {unexpected:?}");
        ok = false;
    }
    if !not_running.is_empty() {
        println!("  FAIL: not running at the end: {not_running:?}");
        ok = false;
    }
    if ok {
        println!(
            "  ok: only {victim} (revoked) was ever unauthenticated, and every workload ends running"
        );
    }
    Ok(if ok {
        crate::EXIT_OK
    } else {
        crate::EXIT_PROBLEM
    })
}
