//! `tokenvisor demo`: the embedded default. An in-process fault-injecting OAuth provider
//! (tokenvisor-idp on 127.0.0.1) and a small fleet (12 workloads by default) with 4-second
//! tokens go through five acts — a WAF 403 window, a 429 with `Retry-After` (the endpoint
//! holds every workload), a 503 outage, one workload's grant revoked, then its credentials
//! re-supplied — each with a visible effect, then a summary.
//!
//! ## One screen
//! On a terminal the story is a live table redrawn in place (indicatif): the act and the
//! fault the provider injects now, the provider's request rate, how many workloads are in
//! each state, and the last few transitions. When stdout is not a terminal (or with
//! `--plain`) it prints plain lines: one per act, a counts line when the counts change (at
//! most every 2 s), and the revoked workload's transitions. The summary lists, per act,
//! how many workloads it moved out of `running`.
//!
//! ## State names that mean what they say
//! The table shows the ToolHive status, except that a workload that had a token and is back
//! to `starting` because the token ran out while its refresh waited (a `Retry-After` hold
//! longer than the token's life) is shown as `expired`: it is not a restart.
//!
//! Exits 0 when only the revoked workload was ever `unauthenticated` and everything ends
//! `running`; 1 otherwise.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
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
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    workloads: u32,
    /// How long the storyline runs (at least 20s).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    duration: Duration,
    /// Where status files go (default: a temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    status_dir: Option<PathBuf>,
    /// Plain lines even on a terminal (no live table).
    #[arg(long)]
    plain: bool,
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
/// Transitions the live table shows.
const RECENT: usize = 6;
/// The lifetime of the provider's access tokens.
const LIFETIME: Duration = Duration::from_secs(4);

/// Waits until every workload is `running` again or `deadline` comes, whichever is first: an
/// act that starts from a healthy fleet shows its effect.
async fn settle(runtime: &Runtime, deadline: Instant) {
    while Instant::now() < deadline {
        let healthy = runtime.list().await.is_ok_and(|views| {
            views.iter().all(|v| {
                v.handle
                    .status()
                    .is_some_and(|r| r.status == WorkloadStatus::Running)
            })
        });
        if healthy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the demo. Returns the exit code.
pub fn run(args: &DemoArgs) -> crate::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(demo(args))
}

fn wl_name(i: u32) -> String {
    format!("demo-{i:03}")
}

/// What the demo shows for a workload: its ToolHive status, with `starting` split into
/// "never had a token" and "its token ran out while a refresh waited".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Shown {
    /// Fetching its first token.
    Starting,
    /// It has a valid token.
    Running,
    /// Refreshes are failing transiently; it keeps trying.
    Retrying,
    /// It had a token, the token ran out while its refresh waited (not a restart).
    Expired,
    /// Only new credentials help.
    Unauthenticated,
    /// Stopped.
    Stopped,
    /// An internal error.
    Error,
}

impl Shown {
    /// Every value, in the table's order.
    const ALL: [Shown; 7] = [
        Shown::Running,
        Shown::Retrying,
        Shown::Expired,
        Shown::Unauthenticated,
        Shown::Starting,
        Shown::Stopped,
        Shown::Error,
    ];

    /// `status` as shown, for a workload that has (`had_token`) or has never had a token.
    pub(crate) fn of(status: WorkloadStatus, had_token: bool) -> Shown {
        match status {
            WorkloadStatus::Starting if had_token => Shown::Expired,
            WorkloadStatus::Starting => Shown::Starting,
            WorkloadStatus::Running => Shown::Running,
            WorkloadStatus::AuthRetrying => Shown::Retrying,
            WorkloadStatus::Unauthenticated => Shown::Unauthenticated,
            WorkloadStatus::Stopped => Shown::Stopped,
            WorkloadStatus::Error => Shown::Error,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Shown::Starting => "starting",
            Shown::Running => "running",
            Shown::Retrying => "auth_retrying",
            Shown::Expired => "expired",
            Shown::Unauthenticated => "unauthenticated",
            Shown::Stopped => "stopped",
            Shown::Error => "error",
        }
    }
}

/// One transition, for the table's "last changes".
#[derive(Debug, Clone)]
struct Change {
    at: f64,
    name: String,
    from: Option<Shown>,
    to: Shown,
    why: String,
}

/// An act of the story: its title, the fault the provider injects, the workloads that left
/// `running` during it and those that (re)entered it.
#[derive(Debug, Clone, Default)]
struct Act {
    title: String,
    fault: String,
    moved: BTreeSet<String>,
    recovered: BTreeSet<String>,
}

/// Everything the table shows.
#[derive(Debug, Default)]
pub(crate) struct Board {
    workloads: u32,
    shown: HashMap<String, Shown>,
    had_token: HashSet<String>,
    transitions: u64,
    recent: VecDeque<Change>,
    unauthenticated: BTreeMap<String, String>,
    acts: Vec<Act>,
    /// Provider requests per second over the last sample, and in all.
    rate: f64,
    requests: u64,
}

impl Board {
    /// A state change of `name` at `at` seconds; false when what is shown did not change.
    fn change(&mut self, at: f64, name: &str, status: WorkloadStatus, why: &str) -> bool {
        let had = self.had_token.contains(name);
        let to = Shown::of(status, had);
        // A workload has a token from `running` on, and none once unauthenticated (new
        // credentials start it afresh).
        match to {
            Shown::Running => {
                self.had_token.insert(name.to_owned());
            }
            Shown::Unauthenticated | Shown::Stopped | Shown::Error => {
                self.had_token.remove(name);
            }
            Shown::Starting | Shown::Retrying | Shown::Expired => {}
        }
        let from = self.shown.insert(name.to_owned(), to);
        if from == Some(to) {
            return false;
        }
        self.transitions += 1;
        if to == Shown::Unauthenticated {
            self.unauthenticated.insert(name.to_owned(), why.to_owned());
        }
        if let Some(act) = self.acts.last_mut() {
            let moved = if to == Shown::Running {
                &mut act.recovered
            } else {
                &mut act.moved
            };
            moved.insert(name.to_owned());
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Change {
            at,
            name: name.to_owned(),
            from,
            to,
            why: truncate_chars(why, 70),
        });
        true
    }

    fn counts(&self) -> String {
        let mut by: BTreeMap<Shown, u32> = BTreeMap::new();
        for s in self.shown.values() {
            *by.entry(*s).or_default() += 1;
        }
        let seen = u32::try_from(self.shown.len()).unwrap_or(u32::MAX);
        *by.entry(Shown::Starting).or_default() += self.workloads.saturating_sub(seen);
        let mut line = String::new();
        for s in Shown::ALL {
            let n = by.get(&s).copied().unwrap_or(0);
            if n > 0 || matches!(s, Shown::Running | Shown::Retrying) {
                let _ = write!(line, "{} {n}   ", s.as_str());
            }
        }
        line.trim_end().to_owned()
    }

    fn act_line(&self) -> String {
        match self.acts.last() {
            Some(a) => format!("act {}/5: {}", self.acts.len(), a.title),
            None => "prologue: every workload fetches its first token".to_owned(),
        }
    }

    /// The live table: a screenful.
    pub(crate) fn render(&self, elapsed: f64, total: f64) -> String {
        let mut s = String::new();
        let fault = self.acts.last().map_or("none", |a| a.fault.as_str());
        let _ = writeln!(s, "{elapsed:>5.1}s / {total:.0}s   {}", self.act_line());
        let _ = writeln!(s, "  provider fault   {fault}");
        let _ = writeln!(
            s,
            "  provider load    {:.1} requests/s ({} in all)",
            self.rate, self.requests
        );
        let _ = writeln!(s, "  workloads        {}", self.counts());
        if self.shown.values().any(|s| *s == Shown::Expired) {
            let _ = writeln!(
                s,
                "                   (expired: the token ran out while its refresh waits; not a restart)"
            );
        }
        let _ = writeln!(s, "  last changes");
        for c in &self.recent {
            let from = c.from.map_or("-", Shown::as_str);
            let _ = writeln!(
                s,
                "    {:>5.1}s  {:<9} {:>15} → {:<15} {}",
                c.at,
                c.name,
                from,
                c.to.as_str(),
                c.why
            );
        }
        s
    }
}

/// Where the story goes: a live table on a terminal, plain lines otherwise.
#[derive(Clone)]
enum Screen {
    Live(indicatif::ProgressBar),
    Plain,
}

impl Screen {
    fn new(plain: bool) -> Screen {
        if plain || !std::io::stdout().is_terminal() {
            return Screen::Plain;
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            None,
            indicatif::ProgressDrawTarget::stdout_with_hz(8),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        Screen::Live(bar)
    }

    /// A line that stays (above the live table, or plain).
    fn line(&self, text: &str) {
        match self {
            Screen::Live(bar) => bar.println(text),
            Screen::Plain => println!("{text}"),
        }
    }
}

/// The shared state of the story.
struct Story {
    board: Mutex<Board>,
    started: Instant,
    total: f64,
    screen: Screen,
    victim: String,
}

impl Story {
    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Starts an act: shown at once, with the fault the provider now injects.
    fn act(&self, title: &str, fault: &str) {
        let mut b = self.board();
        b.acts.push(Act {
            title: title.to_owned(),
            fault: fault.to_owned(),
            ..Act::default()
        });
        let line = format!(
            "{:>5.1}s  ── {}   [provider: {fault}]",
            self.elapsed(),
            b.act_line()
        );
        drop(b);
        self.screen.line(&line);
    }
}

async fn demo(args: &DemoArgs) -> crate::Result<u8> {
    let n = args.workloads;
    let idp = Arc::new(
        IdpServer::start(IdpConfig::default().with_access_token_lifetime(LIFETIME))
            .await
            .context("cannot start the embedded provider")?,
    );
    let (dir, _tmp) = match &args.status_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::tempdir().context("cannot create a temporary status directory")?;
            (t.path().to_owned(), Some(t))
        }
    };
    println!(
        "tokenvisor demo: {n} workloads, tokens living {}s, provider at {}",
        LIFETIME.as_secs(),
        idp.token_url()
    );
    println!("status files: {}", dir.display());

    let transport = HttpTransport::new(HttpConfig {
        use_env_proxy: false,
        ..HttpConfig::default()
    })?;
    let runtime = Runtime::start(RuntimeConfig::new(&dir, Arc::new(transport))).await?;
    let victim = WorkloadName::new(&wl_name(VICTIM.min(n - 1)))?;
    let story = Arc::new(Story {
        board: Mutex::new(Board {
            workloads: n,
            ..Board::default()
        }),
        started: Instant::now(),
        total: args.duration.as_secs_f64(),
        screen: Screen::new(args.plain),
        victim: victim.to_string(),
    });
    let listener = {
        let mut rx = runtime.subscribe();
        let story = story.clone();
        tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                let at = story.elapsed();
                let name = e.name.as_str();
                let changed = story.board().change(at, name, e.status, &e.context);
                if changed && matches!(story.screen, Screen::Plain) && name == story.victim {
                    let shown = story.board().shown.get(name).copied();
                    let to = shown.map_or("-", Shown::as_str);
                    let why = truncate_chars(&e.context, 90);
                    println!("{at:>5.1}s  {name} → {to}  {why}");
                }
            }
        })
    };
    let ticker = tokio::spawn(tick(story.clone(), idp.clone()));

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
            max: Duration::from_secs(2),
            multiplier: 2.0,
        };
        spec.policy.request_timeout = Duration::from_secs(2);
        spec.policy.connect_timeout = Duration::from_secs(1);
        spec.policy.give_up_after = Duration::from_secs(600);
        runtime.add(spec).await?;
    }

    let d = args.duration;
    let at = |f: f64| story.started + d.mul_f64(f);
    tokio::time::sleep_until(at(0.10)).await;
    story.act(
        "a WAF answers 403 with an HTML page (a VPN flap): transient, workloads retry",
        "403 text/html",
    );
    idp.set_fault(FaultScope::Global, Fault::HtmlForbidden, Times::Always);
    tokio::time::sleep_until(at(0.25)).await;
    idp.clear_faults();
    if let Some(a) = story.board().acts.last_mut() {
        a.fault = "none (WAF window over)".to_owned();
    }
    tokio::time::sleep_until(at(0.33)).await;
    story.act(
        "429 with Retry-After: 5 — the endpoint holds every workload 5s, longer than a token lives",
        "429 Retry-After: 5",
    );
    idp.set_fault(
        FaultScope::Global,
        Fault::TooManyRequests {
            retry_after: Some(RetryAfter::Seconds(5)),
            slow_down_body: false,
        },
        Times::Next(1),
    );
    tokio::time::sleep_until(at(0.60)).await;
    // The hold (and the pace the endpoint is given after it) may still keep the fleet out of
    // `running`: the outage starts once it is back, so that it shows.
    settle(&runtime, at(0.72)).await;
    let outage = Instant::now();
    story.act("the provider is down: 503 for every request", "503");
    idp.set_fault(
        FaultScope::Global,
        Fault::ServiceUnavailable { retry_after: None },
        Times::Always,
    );
    // Longer than a token's refresh interval: the hold synchronised the fleet's refreshes.
    tokio::time::sleep_until(at(0.78).max(outage + LIFETIME)).await;
    idp.clear_faults();
    if let Some(a) = story.board().acts.last_mut() {
        a.fault = "none (provider back)".to_owned();
    }
    tokio::time::sleep_until(at(0.80)).await;
    settle(&runtime, at(0.88)).await;
    let revoked = Instant::now();
    story.act(
        &format!("{victim}'s grant is revoked, a refresh forced: invalid_grant is final"),
        &format!("invalid_grant for {victim}"),
    );
    idp.revoke_client_grants(victim.as_str());
    // Its next refresh now, not up to a token's life later: the act shows at once.
    runtime.force_refresh(&victim).await?;
    tokio::time::sleep_until(at(0.90).max(revoked + Duration::from_millis(1500))).await;
    let supplied = Instant::now();
    story.act(
        &format!("an operator supplies new credentials for {victim}"),
        "none",
    );
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
    tokio::time::sleep_until(at(1.0).max(supplied + Duration::from_secs(2))).await;

    let views = runtime.list().await?;
    let counters = idp.counters();
    ticker.abort();
    listener.abort();
    if let Screen::Live(bar) = &story.screen {
        bar.finish_and_clear();
    }
    runtime.shutdown(Duration::from_secs(10)).await?;
    if let Ok(idp) = Arc::try_unwrap(idp) {
        idp.shutdown().await;
    }

    let b = story.board();
    print!("{}", b.render(story.elapsed(), story.total));
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
    for (i, act) in b.acts.iter().enumerate() {
        println!(
            "  act {}: {:>3} left running, {:>3} (back) to running   {}",
            i + 1,
            act.moved.len(),
            act.recovered.len(),
            truncate_chars(&act.title, 60)
        );
    }
    println!("  status changes:        {}", b.transitions);
    println!(
        "  refreshes (provider):  {} ok of {} requests",
        counters.success, counters.token_requests
    );
    println!("  final statuses:        {finals:?}");
    if b.unauthenticated.is_empty() {
        println!("  ever unauthenticated:  none");
    } else {
        println!("  ever unauthenticated:");
        for (name, why) in &b.unauthenticated {
            println!("    {name}: {}", truncate_chars(why, 120));
        }
    }
    let unexpected: Vec<&String> = b
        .unauthenticated
        .keys()
        .filter(|name| **name != story.victim)
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

/// Samples the provider's request rate each second and redraws: the live table four times a
/// second, or (plain) a counts line when the counts changed, at most every 2 s.
async fn tick(story: Arc<Story>, idp: Arc<IdpServer>) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut last_sample, mut last_requests) = (Instant::now(), 0u64);
    let (mut printed, mut printed_at) = (String::new(), f64::MIN);
    loop {
        every.tick().await;
        let now = story.elapsed();
        if last_sample.elapsed() >= Duration::from_secs(1) {
            let requests = idp.counters().token_requests;
            let secs = last_sample.elapsed().as_secs_f64();
            let mut b = story.board();
            b.rate = requests.saturating_sub(last_requests) as f64 / secs;
            b.requests = requests;
            (last_sample, last_requests) = (Instant::now(), requests);
        }
        match &story.screen {
            Screen::Live(bar) => bar.set_message(story.board().render(now, story.total)),
            Screen::Plain => {
                let b = story.board();
                let counts = b.counts();
                if counts != printed && now - printed_at >= 2.0 {
                    println!(
                        "{now:>5.1}s     {counts}   (provider {:.1} requests/s)",
                        b.rate
                    );
                    (printed, printed_at) = (counts, now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_back_to_starting_after_a_token_is_shown_expired() {
        let mut b = Board {
            workloads: 2,
            ..Board::default()
        };
        assert!(b.change(0.1, "a", WorkloadStatus::Starting, "fetching a token"));
        assert_eq!(b.shown["a"], Shown::Starting);
        assert!(b.change(0.5, "a", WorkloadStatus::Running, ""));
        assert!(b.change(9.0, "a", WorkloadStatus::Starting, "fetching a token"));
        assert_eq!(b.shown["a"], Shown::Expired, "not a restart");
        assert!(!b.change(9.1, "a", WorkloadStatus::Starting, "fetching a token"));
        let table = b.render(9.2, 40.0);
        assert!(table.contains("expired 1"), "{table}");
        assert!(table.contains("not a restart"), "{table}");
        // The workload never seen counts as starting.
        assert!(table.contains("starting 1"), "{table}");
    }

    #[test]
    fn an_act_counts_the_workloads_it_moved_and_the_table_keeps_the_last_few() {
        let mut b = Board {
            workloads: 20,
            ..Board::default()
        };
        b.acts.push(Act {
            title: "WAF".to_owned(),
            fault: "403 text/html".to_owned(),
            ..Act::default()
        });
        for i in 0..20 {
            let name = format!("w{i}");
            b.change(1.0, &name, WorkloadStatus::Running, "");
            b.change(
                2.0,
                &name,
                WorkloadStatus::AuthRetrying,
                "HTTP 403 text/html",
            );
        }
        assert_eq!(b.acts[0].moved.len(), 20);
        assert_eq!(b.recent.len(), RECENT);
        let table = b.render(2.5, 40.0);
        assert!(table.contains("act 1/5: WAF"), "{table}");
        assert!(table.contains("provider fault   403 text/html"), "{table}");
        assert!(table.contains("auth_retrying 20"), "{table}");
        assert!(table.lines().count() <= 6 + RECENT, "one screen:\n{table}");
    }
}
