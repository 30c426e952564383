//! Benchmark (not a test): cluster mode at scale on one machine (issue 12).
//!
//! A 3-member etcd (Debian's etcd-server 3.4, the real suite's harness), tokenvisor-idp on
//! 127.0.0.1 in this process (every client rotates its refresh token on every use, reuse
//! detection on), and `--instances` daemons of the `cluster`-featured binary (built in this
//! example's profile: run it with `--release` for a scale figure) serving **one** list of
//! `--workloads` rotating grants together (the issue's "3 instances × 30,000 workloads": one
//! list of 30,000 shared by 3, each running about a third). Every instance has its own
//! status and state directories; they share etcd and the configuration's list.
//!
//! Measured, from each instance's `/metrics` (`tokenvisor_workloads{status="running"}`,
//! `tokenvisor_cluster_shards_owned`, `tokenvisor_cluster_writes_total`), etcd's own
//! `/metrics` on a client port (`etcd_server_proposals_committed_total`, `etcd_mvcc_put_total`,
//! `etcd_mvcc_txn_total`, `etcd_mvcc_db_total_size_in_bytes`) and the provider's counters:
//!
//! 1. start → every workload `running` on exactly one instance, every shard owned: the time,
//!    the spread (workloads and shards per instance against the rendezvous share), RSS;
//! 2. a steady window of `--window` seconds: etcd writes per refresh (refreshes are the
//!    provider's successes in the window);
//! 3. a fourth instance joins: the time until every member holds exactly its rendezvous
//!    share over four and every workload runs again; then it is stopped (SIGTERM) and the
//!    time until the three hold their shares again;
//! 4. the provider's `invalid_grant` / reuse counters (must stay 0: no rotated-away token
//!    was ever presented).
//!
//! `--no-cluster` runs one instance without `[cluster]` on the same list instead (the
//! comparison: time to all running, RSS).
//!
//! ```sh
//! bash real/install.sh          # etcd-server, protobuf-compiler
//! cargo run --release -p tokenvisor-real --features real --example cluster_scale -- \
//!     [--workloads 30000] [--instances 3] [--shards 256] [--access-ttl 300] [--window 120] \
//!     [--no-cluster] [--keep DIR]
//! ```
//!
//! Prints a line per phase and one JSON line at the end.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use tokenvisor_core::cluster::{desired_shards, shard_of};
use tokenvisor_idp::{ClientSpec, IdpConfig, IdpServer};
use tokenvisor_real::binary::{tokenvisor_bin, tokenvisor_cluster_bin};
use tokenvisor_test_support::config::quote;
use tokenvisor_test_support::daemon::{Daemon, Launch};
use tokenvisor_test_support::etcd::EtcdCluster;

/// Options of a run.
#[derive(Debug, Clone)]
struct Options {
    workloads: usize,
    instances: usize,
    shards: u32,
    access_ttl: u64,
    window: u64,
    cluster: bool,
    keep: Option<PathBuf>,
}

fn parse<T: std::str::FromStr>(flag: &str, value: Option<String>) -> T {
    let v = value.unwrap_or_else(|| panic!("{flag} needs a value"));
    v.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{flag} {v:?}: not a number"))
}

/// Bound of every wait for a settled fleet (real time on a shared 2-core machine).
const SETTLE: Duration = Duration::from_secs(900);
/// The lease (what an attempt needs once it sends, 10 + 3 + 1 s, + 2 s for etcd, fits two
/// thirds of it: 16 < 20 s; round 1 ran 5 s requests, which the provider outlived at the
/// start's burst once etcd no longer throttled the endpoint slots).
const LEASE_TTL: u64 = 30;

/// How long to wait for every workload `running` once the shares are held.
const RUNNING: Duration = Duration::from_secs(240);

/// What [`Bench::wait_balanced`] saw.
#[derive(Debug, Default)]
struct Balance {
    shards_s: Option<f64>,
    running_s: Option<f64>,
    max_running: u64,
    spread: BTreeMap<usize, Scrape>,
}

/// One instance's `/metrics`, the figures read here.
#[derive(Debug, Clone, Copy, Default)]
struct Scrape {
    running: u64,
    shards: u64,
    writes: u64,
}

/// Parses a Prometheus text exposition: the sum of the samples of `metric` whose labels
/// contain `label` (empty: any).
fn sample(text: &str, metric: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        if !label.is_empty() && !labels.contains(label) {
            continue;
        }
        if let Ok(v) = value.trim().split(' ').next().unwrap_or("").parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

struct Bench {
    opts: Options,
    work: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    etcd: Option<EtcdCluster>,
    idp: IdpServer,
    tokens: Vec<String>,
    client: reqwest::Client,
    daemons: Vec<Option<Daemon>>,
}

impl Bench {
    fn member(i: usize) -> String {
        format!("member-{i}")
    }

    fn name(w: usize) -> String {
        format!("w-{w:05}")
    }

    fn shards(&self) -> NonZeroU32 {
        NonZeroU32::new(self.opts.shards).expect("--shards > 0")
    }

    /// The workloads and shards each of `members` should hold (rendezvous).
    fn shares(&self, members: &[usize]) -> BTreeMap<usize, (usize, usize)> {
        let ids: Vec<String> = members.iter().map(|&i| Bench::member(i)).collect();
        members
            .iter()
            .map(|&i| {
                let mine = desired_shards(&Bench::member(i), &ids, self.shards());
                let workloads = (0..self.opts.workloads)
                    .filter(|&w| mine.contains(&shard_of(&Bench::name(w), self.shards())))
                    .count();
                (i, (workloads, mine.len()))
            })
            .collect()
    }

    /// Instance `i`'s configuration: the shared list, its own directories.
    fn write_config(&self, i: usize) -> PathBuf {
        let dir = self.work.join(format!("i{i}"));
        std::fs::create_dir_all(dir.join("statuses")).expect("instance dir");
        let token = self.work.join("admin.token");
        if !token.exists() {
            std::fs::write(&token, "cluster-scale-admin-token-0123456789\n").expect("token");
        }
        let mut t = String::with_capacity(self.opts.workloads * 260);
        t.push_str(&format!(
            "[service]\nstatus_dir = {}\nstate_dir = {}\nadmin_listen = \"127.0.0.1:0\"\n\
             admin_token_file = {}\n\n[defaults]\nrequest_timeout = \"10s\"\n\
             connect_timeout = \"3s\"\n\n",
            quote(dir.join("statuses").to_string_lossy()),
            quote(dir.join("state").to_string_lossy()),
            quote(token.to_string_lossy()),
        ));
        let url = self.idp.token_url();
        for (w, rt) in self.tokens.iter().enumerate() {
            t.push_str(&format!(
                "[[workload]]\nname = \"{}\"\ntoken_url = \"{url}\"\nclient_id = \"c-{w}\"\n\
                 client_secret = \"s-{w}\"\ngrant = \"refresh_token\"\nrefresh_token = \"{rt}\"\n\n",
                Bench::name(w),
            ));
        }
        if let Some(etcd) = &self.etcd {
            let endpoints: Vec<String> = etcd.endpoints().iter().map(quote).collect();
            t.push_str(&format!(
                "[cluster]\nbackend = \"etcd\"\nendpoints = [{}]\nprefix = \"tv-scale/\"\n\
                 member = \"{}\"\nlease_ttl = \"{LEASE_TTL}s\"\nshards = {}\n",
                endpoints.join(", "),
                Bench::member(i),
                self.opts.shards,
            ));
        }
        let config = dir.join("tokenvisor.toml");
        std::fs::write(&config, t).expect("config");
        config
    }

    /// Starts instances `which` at once (each waits for its ready line).
    async fn spawn(&mut self, which: &[usize]) {
        let bin = if self.opts.cluster {
            tokenvisor_cluster_bin()
        } else {
            tokenvisor_bin()
        };
        let mut tasks = Vec::new();
        for &i in which {
            let config = self.write_config(i);
            let launch = Launch {
                stderr_file: Some(self.work.join(format!("i{i}.log"))),
                ready_within: SETTLE,
                ..Launch::default()
            };
            let bin = bin.clone();
            tasks.push((
                i,
                tokio::spawn(async move { Daemon::start(bin, &config, launch).await }),
            ));
        }
        for (i, task) in tasks {
            let d = task.await.expect("daemon start");
            if self.daemons.len() <= i {
                self.daemons.resize_with(i + 1, || None);
            }
            self.daemons[i] = Some(d);
        }
    }

    async fn get(&self, url: String, bearer: Option<&str>) -> Option<String> {
        let mut req = self.client.get(url);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        req.send().await.ok()?.text().await.ok()
    }

    async fn scrape(&self, i: usize) -> Option<Scrape> {
        let d = self.daemons.get(i)?.as_ref()?;
        let text = self
            .get(format!("{}/metrics", d.admin_url()), Some(&d.admin_token()))
            .await?;
        let n = |m: &str, l: &str| sample(&text, m, l).unwrap_or(0.0) as u64;
        Some(Scrape {
            running: n("tokenvisor_workloads", "status=\"running\""),
            shards: n("tokenvisor_cluster_shards_owned", ""),
            writes: n("tokenvisor_cluster_writes_total", ""),
        })
    }

    async fn scrape_all(&self, live: &[usize]) -> BTreeMap<usize, Scrape> {
        let mut out = BTreeMap::new();
        for &i in live {
            out.insert(i, self.scrape(i).await.unwrap_or_default());
        }
        out
    }

    /// etcd's own counters (from member 0's client port).
    async fn etcd_metrics(&self) -> BTreeMap<&'static str, f64> {
        let mut out = BTreeMap::new();
        let Some(etcd) = &self.etcd else {
            return out;
        };
        let Some(text) = self
            .get(format!("{}/metrics", etcd.endpoint(0)), None)
            .await
        else {
            return out;
        };
        for m in [
            "etcd_server_proposals_committed_total",
            "etcd_mvcc_put_total",
            "etcd_mvcc_txn_total",
            "etcd_mvcc_db_total_size_in_bytes",
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "etcd_debugging_mvcc_keys_total",
        ] {
            if let Some(v) = sample(&text, m, "") {
                out.insert(m, v);
            }
        }
        out
    }

    /// Waits until each of `live` holds exactly its rendezvous share of shards (every
    /// shard owned), then until every workload runs (bounded by `RUNNING`: on a loaded
    /// machine a workload may be between two attempts). Returns the seconds from `since`
    /// to the shares, to all running (`None`: not within the bound), and the most workloads
    /// seen running.
    async fn wait_balanced(&self, what: &str, live: &[usize], since: Instant) -> Balance {
        let shares = self.shares(live);
        let deadline = Instant::now() + SETTLE;
        let mut last_print = Instant::now();
        let mut out = Balance::default();
        loop {
            let s = self.scrape_all(live).await;
            let running: u64 = s.values().map(|x| x.running).sum();
            out.max_running = out.max_running.max(running);
            let owned = live
                .iter()
                .all(|i| !self.opts.cluster || s[i].shards as usize == shares[i].1);
            if owned && out.shards_s.is_none() {
                let t = since.elapsed().as_secs_f64();
                println!("{what}: every member at its rendezvous share after {t:.1} s: {s:?}");
                out.shards_s = Some(t);
            }
            if owned && running as usize == self.opts.workloads {
                let t = since.elapsed().as_secs_f64();
                println!("{what}: all running after {t:.1} s: {s:?}");
                out.running_s = Some(t);
                out.spread = s;
                return out;
            }
            if last_print.elapsed() > Duration::from_secs(10) {
                println!(
                    "  {what}: {:.0} s: running {running}/{}; {s:?}",
                    since.elapsed().as_secs_f64(),
                    self.opts.workloads
                );
                last_print = Instant::now();
            }
            let running_bound = out
                .shards_s
                .is_some_and(|t| since.elapsed().as_secs_f64() > t + RUNNING.as_secs_f64());
            if running_bound || Instant::now() > deadline {
                println!(
                    "{what}: NOT all running {:.0} s after the shares (most seen {}): {s:?} (want {shares:?})",
                    RUNNING.as_secs_f64(),
                    out.max_running
                );
                out.spread = s;
                return out;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn rss_mib(&self, live: &[usize]) -> BTreeMap<usize, f64> {
        live.iter()
            .filter_map(|&i| {
                let d = self.daemons.get(i)?.as_ref()?;
                Some((i, d.rss_kib() as f64 / 1024.0))
            })
            .collect()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut opts = Options {
        workloads: 30_000,
        instances: 3,
        shards: 256,
        access_ttl: 300,
        window: 120,
        cluster: true,
        keep: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--workloads" => opts.workloads = parse(&flag, args.next()),
            "--instances" => opts.instances = parse(&flag, args.next()),
            "--shards" => opts.shards = parse(&flag, args.next()),
            "--access-ttl" => opts.access_ttl = parse(&flag, args.next()),
            "--window" => opts.window = parse(&flag, args.next()),
            "--no-cluster" => opts.cluster = false,
            "--keep" => opts.keep = Some(PathBuf::from(parse::<String>(&flag, args.next()))),
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: cluster_scale [--workloads N] \
                     [--instances N] [--shards N] [--access-ttl S] [--window S] [--no-cluster] \
                     [--keep DIR]"
                );
                std::process::exit(2);
            }
        }
    }
    if !opts.cluster {
        opts.instances = 1;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!("cluster_scale: {opts:?}");
    let (tmp, work) = match &opts.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).expect("--keep dir");
            (None, dir.clone())
        }
        None => {
            let t = tempfile::tempdir().expect("tempdir");
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };

    let t = Instant::now();
    let idp = IdpServer::start(
        IdpConfig::default().with_access_token_lifetime(Duration::from_secs(opts.access_ttl)),
    )
    .await
    .expect("idp");
    let tokens: Vec<String> = (0..opts.workloads)
        .map(|w| {
            idp.register_client(ClientSpec::new(format!("c-{w}"), format!("s-{w}")));
            idp.issue_refresh_token(&format!("c-{w}")).expect("token")
        })
        .collect();
    let etcd = if opts.cluster {
        Some(EtcdCluster::start(3).await)
    } else {
        None
    };
    println!(
        "setup: idp with {} clients (and a 3-member etcd with the cluster) in {:.1} s",
        opts.workloads,
        t.elapsed().as_secs_f64()
    );
    let mut b = Bench {
        opts: opts.clone(),
        work: work.clone(),
        _tmp: tmp,
        etcd,
        idp,
        tokens,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client"),
        daemons: Vec::new(),
    };
    // Built before the clock starts.
    let _ = if opts.cluster {
        tokenvisor_cluster_bin()
    } else {
        tokenvisor_bin()
    };

    // 1. Start.
    let live: Vec<usize> = (0..opts.instances).collect();
    let etcd0 = b.etcd_metrics().await;
    let idp0 = b.idp.counters();
    let start = Instant::now();
    b.spawn(&live).await;
    let ready = start.elapsed().as_secs_f64();
    println!("start: {} instance(s) ready in {ready:.1} s", live.len());
    let started = b.wait_balanced("start", &live, start).await;
    let spread = started.spread.clone();
    let shares = b.shares(&live);
    let rss_start = b.rss_mib(&live);
    let etcd1 = b.etcd_metrics().await;
    let idp1 = b.idp.counters();
    let d = |a: &BTreeMap<&str, f64>, z: &BTreeMap<&str, f64>, k: &str| {
        z.get(k).copied().unwrap_or(0.0) - a.get(k).copied().unwrap_or(0.0)
    };
    let start_refreshes = idp1.success - idp0.success;
    let start_proposals = d(&etcd0, &etcd1, "etcd_server_proposals_committed_total");
    println!(
        "start: shares {:?} s, all running {:?} s (most {}); spread {spread:?} (rendezvous {shares:?}); \
         RSS MiB {rss_start:?}; refreshes {start_refreshes}; etcd proposals {start_proposals} \
         ({:.2} per refresh); etcd {etcd1:?}",
        started.shards_s,
        started.running_s,
        started.max_running,
        start_proposals / start_refreshes.max(1) as f64
    );

    // 2. The steady window.
    let w0 = (
        b.etcd_metrics().await,
        b.idp.counters(),
        b.scrape_all(&live).await,
    );
    let wt = Instant::now();
    tokio::time::sleep(Duration::from_secs(opts.window)).await;
    let w1 = (
        b.etcd_metrics().await,
        b.idp.counters(),
        b.scrape_all(&live).await,
    );
    let window_s = wt.elapsed().as_secs_f64();
    let refreshes = w1.1.success - w0.1.success;
    let ours: u64 =
        w1.2.values().map(|s| s.writes).sum::<u64>() - w0.2.values().map(|s| s.writes).sum::<u64>();
    let proposals = d(&w0.0, &w1.0, "etcd_server_proposals_committed_total");
    let puts = d(&w0.0, &w1.0, "etcd_mvcc_put_total");
    let txns = d(&w0.0, &w1.0, "etcd_mvcc_txn_total");
    let per = |x: f64| x / refreshes.max(1) as f64;
    println!(
        "window {window_s:.0} s: {refreshes} refreshes ({:.1}/s); our fenced writes {ours} \
         ({:.3}/refresh); etcd proposals {proposals} ({:.3}/refresh), puts {puts} ({:.3}), \
         txns {txns} ({:.3}); running {:?}",
        refreshes as f64 / window_s,
        per(ours as f64),
        per(proposals),
        per(puts),
        per(txns),
        w1.2.iter()
            .map(|(i, s)| (*i, s.running))
            .collect::<BTreeMap<_, _>>()
    );

    // 3. A member joins, then leaves.
    let (mut join_s, mut leave_s, mut rss_four) = (None, None, BTreeMap::new());
    if opts.cluster {
        let extra = opts.instances;
        let mut four = live.clone();
        four.push(extra);
        let t = Instant::now();
        b.spawn(&[extra]).await;
        join_s = Some(b.wait_balanced("join", &four, t).await);
        rss_four = b.rss_mib(&four);
        let t = Instant::now();
        if let Some(d) = b.daemons[extra].as_mut() {
            d.terminate().await;
        }
        b.daemons[extra] = None;
        leave_s = Some(b.wait_balanced("leave", &live, t).await);
    }

    // 4. Safety and the end state.
    let idp_end = b.idp.counters();
    let etcd_end = b.etcd_metrics().await;
    let rss_end = b.rss_mib(&live);
    println!(
        "end: provider invalid_grant {} reuse_detected {} revocations {}; etcd {etcd_end:?}; \
         RSS MiB {rss_end:?}",
        idp_end.invalid_grant, idp_end.reuse_detected, idp_end.revocations
    );
    let json = serde_json::json!({
        "workloads": opts.workloads,
        "instances": opts.instances,
        "cluster": opts.cluster,
        "shards": opts.shards,
        "access_ttl_s": opts.access_ttl,
        "ready_s": ready,
        "shares_s": started.shards_s,
        "all_running_s": started.running_s,
        "max_running": started.max_running,
        "running_per_instance": spread.iter().map(|(i, s)| (i.to_string(), s.running)).collect::<BTreeMap<_, _>>(),
        "shards_per_instance": spread.iter().map(|(i, s)| (i.to_string(), s.shards)).collect::<BTreeMap<_, _>>(),
        "rendezvous": shares.iter().map(|(i, s)| (i.to_string(), [s.0, s.1])).collect::<BTreeMap<_, _>>(),
        "rss_mib_start": rss_start.iter().map(|(i, v)| (i.to_string(), v.round())).collect::<BTreeMap<_, _>>(),
        "rss_mib_four": rss_four.iter().map(|(i, v)| (i.to_string(), v.round())).collect::<BTreeMap<_, _>>(),
        "start_refreshes": start_refreshes,
        "start_etcd_proposals": start_proposals,
        "window_s": window_s,
        "window_refreshes": refreshes,
        "window_fenced_writes": ours,
        "window_etcd_proposals": proposals,
        "window_etcd_puts": puts,
        "window_etcd_txns": txns,
        "join_shares_s": join_s.as_ref().and_then(|b| b.shards_s),
        "join_running_s": join_s.as_ref().and_then(|b| b.running_s),
        "leave_shares_s": leave_s.as_ref().and_then(|b| b.shards_s),
        "leave_running_s": leave_s.as_ref().and_then(|b| b.running_s),
        "etcd_db_bytes": etcd_end.get("etcd_mvcc_db_total_size_in_bytes"),
        "etcd_keys": etcd_end.get("etcd_debugging_mvcc_keys_total"),
        "invalid_grant": idp_end.invalid_grant,
        "reuse_detected": idp_end.reuse_detected,
    });
    println!("{json}");
    for d in b.daemons.iter_mut().flatten() {
        d.terminate().await;
    }
    let bad = idp_end.reuse_detected + idp_end.revocations;
    if bad > 0 {
        eprintln!("a rotated-away refresh token was presented ({bad})");
        std::process::exit(1);
    }
    let _ = Path::new(&work);
}
