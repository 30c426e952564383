//! Cluster mode end to end: several `tokenvisor run` (built with the `cluster` feature) on
//! one real 3-member etcd (Debian's etcd-server), sharing one workload list of rotating
//! grants at oidc-provider (rotation on every use, reuse detection on: a consumed refresh
//! token presented again revokes the whole grant) behind nginx.
//!
//! Every instance has its own status directory, state directory and copies of the
//! refresh-token files (as on separate machines); they share only etcd. "Owned by" an
//! instance is read from the status files: a workload runs on an instance when that
//! instance's status file says `running` (an instance that handed a workload over says
//! `stopped`; a killed one's file is ignored).
//!
//! The scenarios: the workloads spread over three instances, each on exactly one, with no
//! reuse; `kill -9` of one and the failover (its workloads running elsewhere, measured from
//! the kill; target `lease_ttl` + 5 s); an instance paused (SIGSTOP) past its lease then
//! resumed, a zombie that must send nothing and whose writes the fence refuses; etcd
//! unavailable (every member paused): rotating grants wait (`auth_retrying`, the reason
//! says why), client_credentials grants go on refreshing, and all recover when etcd returns.
//!
//! The pauses of a process are held until an event (its workloads running elsewhere), not
//! for a time; every other wait polls for an event with a bound.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokenvisor_core::WorkloadStatus;
use tokenvisor_real::binary::tokenvisor_cluster_bin;
use tokenvisor_real::cluster_chaos::instances_saying;
use tokenvisor_real::cluster_instance::{Cluster, Grant};
use tokenvisor_real::components::{now_ms, signal};
use tokenvisor_real::nginx::Nginx;
use tokenvisor_real::oidc::Oidc;
use tokenvisor_test_support::daemon::Daemon;
use tokenvisor_test_support::etcd::EtcdCluster;
use tokenvisor_test_support::status::read_status;
use tokenvisor_test_support::wait::wait_until_within;

/// The lease of every instance here (the issue's default).
const LEASE_TTL: u64 = 15;
/// Bound of the waits for a settled fleet (real time on a shared machine).
const SETTLE: Duration = Duration::from_secs(120);

/// A workload of a run.
#[derive(Debug, Clone)]
struct Workload {
    name: String,
    client: String,
    /// A rotating refresh_token grant (minted into `<work>/<name>.rt`); else
    /// client_credentials.
    rotating: bool,
}

/// The fleet's provider, proxy and etcd, and the instances' directory.
struct Fleet {
    /// What the instances share (the token URL, etcd, the `[cluster]` settings).
    cluster: Cluster,
    oidc: Oidc,
    _nginx: Nginx,
    etcd: EtcdCluster,
    workloads: Vec<Workload>,
    started_ms: u64,
    /// The instances' directories, removed last.
    _work: tempfile::TempDir,
}

impl Fleet {
    /// The provider (access tokens of `access_ttl` s), nginx, a 3-member etcd, `rotating`
    /// grants minted (each its own login) and `cc` client_credentials workloads.
    async fn start(access_ttl: u32, rotating: usize, cc: usize) -> Fleet {
        tokenvisor_real::components::require_all();
        let work = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let oidc = Oidc::start(work.path(), access_ttl);
        let nginx = Nginx::pass_to(work.path(), oidc.addr()).await;
        let etcd = EtcdCluster::start(3).await;
        let mut by_client: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in 0..rotating {
            by_client
                .entry(format!("tv-{:02}", i % 6 + 1))
                .or_default()
                .push(format!("rot-{i:02}"));
        }
        let mut workloads = Vec::new();
        for (client, names) in by_client {
            let tokens = oidc.login(&client, names.len());
            for (name, token) in names.into_iter().zip(tokens) {
                let file = work.path().join(format!("{name}.rt"));
                std::fs::write(&file, token).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                workloads.push(Workload {
                    name,
                    client: client.clone(),
                    rotating: true,
                });
            }
        }
        for i in 0..cc {
            workloads.push(Workload {
                name: format!("cc-{i:02}"),
                client: format!("tv-{:02}", i % 6 + 7),
                rotating: false,
            });
        }
        Fleet {
            // Member ids `member-N`: the spread is deterministic (fixed names, rendezvous),
            // and with these ids every instance owns some workloads of every run here (with
            // `iN`, the 8 workloads of the etcd test would all go to one). What an attempt
            // needs once it sends (1 + 1 + 1 s, + 2 s for etcd) fits two thirds of the lease.
            cluster: Cluster {
                work: work.path().to_owned(),
                token_url: nginx.token_url(),
                endpoints: etcd.endpoints(),
                prefix: "tv-run/".to_owned(),
                lease_ttl: LEASE_TTL,
                shards: 64,
                request_timeout: 1,
                connect_timeout: 1,
            },
            _work: work,
            oidc,
            _nginx: nginx,
            etcd,
            workloads,
            started_ms: now_ms(),
        }
    }

    fn status_dir(&self, instance: usize) -> PathBuf {
        self.cluster.status_dir(instance)
    }

    /// Writes instance `i`'s configuration (its own directories and files, the same
    /// workload list and `[cluster]` as every other) and starts it.
    async fn spawn(&self, i: usize) -> Daemon {
        let grants: Vec<Grant<'_>> = (self.workloads.iter())
            .map(|w| Grant {
                name: &w.name,
                client: &w.client,
                rotating: w.rotating,
            })
            .collect();
        // `$CLUSTER_RUN_LOGS`: keep each instance's log there (to read after a failure).
        let stderr_file = std::env::var_os("CLUSTER_RUN_LOGS")
            .map(|d| PathBuf::from(d).join(format!("{}-i{i}.log", self.started_ms)));
        self.cluster.spawn(i, &grants, stderr_file).await
    }

    /// Per workload, the instances (of `live`) whose status file says `running`.
    fn running_on(&self, live: &[usize]) -> BTreeMap<String, Vec<usize>> {
        let names = self.workloads.iter().map(|w| w.name.as_str());
        instances_saying(names, |i| self.status_dir(i), live, WorkloadStatus::Running)
    }

    /// Waits until every workload runs on exactly one of `live`; returns the owners.
    async fn wait_settled(&self, what: &str, live: &[usize]) -> BTreeMap<String, usize> {
        let mut last = BTreeMap::new();
        let settled =
            tokenvisor_test_support::wait::poll_until(SETTLE, Duration::from_millis(200), || {
                last = self.running_on(live);
                last.values().all(|on| on.len() == 1)
            })
            .await;
        assert!(
            settled,
            "{what}: not every workload runs on exactly one instance of {live:?}: {last:?}"
        );
        last.into_iter().map(|(n, on)| (n, on[0])).collect()
    }

    /// Waits until every workload runs on exactly one of `live` and each of `live` runs
    /// some; returns the owners.
    async fn wait_spread(&self, what: &str, live: &[usize]) -> BTreeMap<String, usize> {
        let mut on = BTreeMap::new();
        let spread =
            tokenvisor_test_support::wait::poll_until(SETTLE, Duration::from_millis(200), || {
                on = self.running_on(live);
                on.values().all(|v| v.len() == 1)
                    && live.iter().all(|i| on.values().any(|v| v[0] == *i))
            })
            .await;
        assert!(spread, "{what}: not spread over {live:?}: {on:?}");
        self.wait_settled(what, live).await
    }

    /// Successful refreshes (200) of rotating grants the provider answered since `from_ms`.
    fn rotations_since(&self, from_ms: u64) -> usize {
        self.oidc
            .log()
            .iter()
            .filter(|l| l.is_refresh_request() && l.t >= from_ms && l.status == Some(200))
            .filter(|l| l.grant_type.as_deref() == Some("refresh_token"))
            .count()
    }

    /// Waits until the provider rotated at least `n` more refresh tokens since `from_ms`.
    async fn wait_rotations(&self, what: &str, from_ms: u64, n: usize) {
        wait_until_within(what, SETTLE, || self.rotations_since(from_ms) >= n).await;
    }

    /// Grants the provider revoked (reuse detection firing: a rotated-away token presented).
    fn reuse(&self) -> usize {
        self.oidc.events("grant.revoked").len()
    }

    /// Answers `invalid_grant` to a refresh since the start.
    fn invalid_grants(&self) -> usize {
        self.oidc
            .log()
            .iter()
            .filter(|l| l.is_refresh_request() && l.t >= self.started_ms)
            .filter(|l| l.error.as_deref() == Some("invalid_grant"))
            .count()
    }
}

fn by_owner(owners: &BTreeMap<String, usize>) -> BTreeMap<usize, usize> {
    let mut n = BTreeMap::new();
    for i in owners.values() {
        *n.entry(*i).or_insert(0) += 1;
    }
    n
}

/// The last 40 lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The daemons' cluster surfaces: any instance lists every workload with its owner (the
/// instance whose status file says `running`), and its token route serves what it owns and
/// redirects to the owner's admin API for the rest.
async fn check_surfaces(daemons: &[Option<Daemon>], owners: &BTreeMap<String, usize>) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    let live: Vec<(usize, &Daemon)> = (daemons.iter().enumerate())
        .filter_map(|(i, d)| Some((i, d.as_ref()?)))
        .collect();
    for &(i, d) in &live {
        let token = d.admin_token();
        let get = |path: String| {
            client
                .get(format!("{}{path}", d.admin_url()))
                .bearer_auth(&token)
                .send()
        };
        let body = get("/v1/workloads".to_owned())
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("instance {i}: /v1/workloads: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("instance {i}: /v1/workloads: {e}"));
        let list: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("instance {i}: /v1/workloads: {e}: {body}"));
        let shown: BTreeMap<String, String> = (list.as_array().expect("a list").iter())
            .map(|w| {
                (
                    w["name"].as_str().unwrap_or_default().to_owned(),
                    w["owner"].as_str().unwrap_or("none").to_owned(),
                )
            })
            .collect();
        let expected: BTreeMap<String, String> = (owners.iter())
            .map(|(n, o)| (n.clone(), format!("member-{o}")))
            .collect();
        assert_eq!(
            shown, expected,
            "instance {i}'s listing: every workload with its owner"
        );
        // `tokenvisor status --cluster` prints the same through this instance.
        let out = std::process::Command::new(tokenvisor_cluster_bin())
            .args(["status", "--cluster", "--json", "--admin", &d.admin_url()])
            .arg("--admin-token-file")
            .arg(
                d.admin_token_file
                    .as_deref()
                    .expect("the ready line names it"),
            )
            .output()
            .unwrap_or_else(|e| panic!("status --cluster: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "status --cluster through instance {i}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, owner) in &expected {
            assert!(
                text.contains(name.as_str()) && text.contains(owner.as_str()),
                "status --cluster shows {name} on {owner}: {text}"
            );
        }
        for (name, &owner) in owners {
            let answer = get(format!("/v1/workloads/{name}/token"))
                .await
                .unwrap_or_else(|e| panic!("instance {i}: token of {name}: {e}"));
            let status = answer.status().as_u16();
            match owner == i {
                true => assert_eq!(status, 200, "instance {i} serves its own {name}"),
                false => {
                    // New credentials given to a non-owner would never be presented (the
                    // owner's come from etcd): refused, not silently kept.
                    let put = client
                        .put(format!("{}/v1/workloads/{name}/credentials", d.admin_url()))
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(r#"{"refresh_token":"not-for-this-instance"}"#)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("instance {i}: credentials of {name}: {e}"));
                    assert_eq!(
                        put.status().as_u16(),
                        409,
                        "instance {i} refuses credentials for {name}, owned elsewhere"
                    );
                    let to = answer
                        .headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok());
                    let owner_url = live
                        .iter()
                        .find(|(j, _)| *j == owner)
                        .map(|(_, d)| d.admin_url());
                    assert_eq!(status, 307, "instance {i} redirects {name} to its owner");
                    assert_eq!(
                        to.map(str::to_owned),
                        owner_url.map(|u| format!("{u}/v1/workloads/{name}/token")),
                        "the redirect names the owner's admin API"
                    );
                }
            }
        }
    }
}

/// (1) and (2): three instances share 24 rotating workloads, each on exactly one, with no
/// reuse; `kill -9` of one: its workloads run on the others again (the failover time is
/// printed: target `lease_ttl` + 5 s), still with no reuse and no grant lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_rotating_grants_and_survive_a_kill_9() {
    let fleet = Fleet::start(4, 24, 0).await;
    let mut daemons = Vec::new();
    for i in 0..3 {
        daemons.push(Some(fleet.spawn(i).await));
    }
    let owners = fleet.wait_spread("three instances", &[0, 1, 2]).await;
    let spread = by_owner(&owners);
    println!("cluster run: 24 workloads over 3 instances: {spread:?}");
    let t = now_ms();
    fleet.wait_rotations("two rotations each", t, 48).await;
    assert_eq!(
        fleet.reuse(),
        0,
        "the provider saw a rotated refresh token reused"
    );
    let settled = fleet.wait_settled("after rotating", &[0, 1, 2]).await;
    check_surfaces(&daemons, &settled).await;

    // kill -9 the instance owning the most workloads.
    let victim = spread
        .iter()
        .max_by_key(|(_, n)| **n)
        .map_or(0, |(i, _)| *i);
    let theirs: Vec<String> = owners
        .iter()
        .filter(|(_, i)| **i == victim)
        .map(|(n, _)| n.clone())
        .collect();
    let killed = tokio::time::Instant::now();
    let killed_ms = now_ms();
    daemons[victim].take().expect("running").kill9();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    wait_until_within(
        "the killed instance's workloads running elsewhere",
        SETTLE,
        || {
            let on = fleet.running_on(&survivors);
            theirs.iter().all(|n| {
                on.get(n).is_some_and(|v| !v.is_empty())
                    && survivors.iter().any(|&i| {
                        read_status(&fleet.status_dir(i), n).is_some_and(|r| {
                            r.status == WorkloadStatus::Running
                                && r.updated_at.to_system_time()
                                    >= std::time::UNIX_EPOCH + Duration::from_millis(killed_ms)
                        })
                    })
            })
        },
    )
    .await;
    let failover = killed.elapsed();
    println!(
        "cluster run: failover of {} workloads after kill -9: {:.1} s (lease_ttl {LEASE_TTL} s; target {} s)",
        theirs.len(),
        failover.as_secs_f64(),
        LEASE_TTL + 5
    );
    fleet.wait_settled("two survivors", &survivors).await;
    let t = now_ms();
    fleet.wait_rotations("two more rotations each", t, 48).await;
    let after = fleet
        .wait_settled("two survivors, rotating", &survivors)
        .await;
    assert_eq!(
        fleet.reuse(),
        0,
        "the provider saw a rotated refresh token reused"
    );
    println!(
        "cluster run: after the failover {:?}; invalid_grant answers {}",
        by_owner(&after),
        fleet.invalid_grants()
    );
}

/// (3) A zombie: an instance paused (SIGSTOP) until its workloads run on the other one (its
/// lease expired on the server), then resumed (SIGCONT). It sends nothing with the tokens it
/// held (no reuse), its writes are refused (fence or lost lease), it joins again, and the
/// workloads spread over both again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_instance_resumes_as_a_zombie_that_sends_and_writes_nothing() {
    let fleet = Fleet::start(4, 12, 0).await;
    let a = fleet.spawn(0).await;
    let b = fleet.spawn(1).await;
    let owners = fleet.wait_spread("two instances", &[0, 1]).await;
    let t = now_ms();
    fleet.wait_rotations("a rotation each", t, 12).await;
    let owners_b: Vec<String> = owners
        .iter()
        .filter(|(_, i)| **i == 1)
        .map(|(n, _)| n.clone())
        .collect();
    assert!(!owners_b.is_empty(), "instance 1 owns some of {owners:?}");

    signal(b.pid(), "-STOP");
    let paused_ms = now_ms();
    // Held until its lease has expired and the other instance runs its workloads.
    wait_until_within(
        "the paused instance's workloads running on the other",
        SETTLE,
        || {
            owners_b.iter().all(|n| {
                read_status(&fleet.status_dir(0), n).is_some_and(|r| {
                    r.status == WorkloadStatus::Running
                        && r.updated_at.to_system_time()
                            >= std::time::UNIX_EPOCH + Duration::from_millis(paused_ms)
                })
            })
        },
    )
    .await;
    signal(b.pid(), "-CONT");
    wait_until_within("the zombie learns its lease is gone", SETTLE, || {
        b.log_plain().contains("the cluster lease was lost")
    })
    .await;
    wait_until_within("the zombie joins again", SETTLE, || {
        b.log_count("joined the cluster") >= 2
    })
    .await;
    let t = now_ms();
    fleet
        .wait_rotations("a rotation each after the zombie", t, 12)
        .await;
    let after = fleet.wait_settled("both again", &[0, 1]).await;
    let refused = b.log_count("refused by the fence");
    println!(
        "cluster run: zombie: {} workloads; fence rejections logged {refused}; after: {:?}; \
         reuse {}",
        owners_b.len(),
        by_owner(&after),
        fleet.reuse()
    );
    assert_eq!(
        fleet.reuse(),
        0,
        "the zombie presented a rotated-away refresh token"
    );
    assert!(
        !b.log_plain().contains("rotated refresh token not durable"),
        "the zombie rotated a token it could not write"
    );
    drop(a);
}

/// (4) etcd unavailable (every member paused): rotating grants are not refreshed without a
/// fenced write (`auth_retrying`, the reason in the status context), client_credentials grants
/// keep refreshing; when etcd returns everything recovers, with no reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_etcd_down_rotating_grants_wait_and_client_credentials_go_on() {
    let fleet = Fleet::start(4, 6, 2).await;
    let a = fleet.spawn(0).await;
    let b = fleet.spawn(1).await;
    fleet.wait_spread("two instances", &[0, 1]).await;
    let pids: Vec<u32> = (0..3).filter_map(|i| fleet.etcd.pid(i)).collect();
    for pid in &pids {
        signal(*pid, "-STOP");
    }
    let down_ms = now_ms();
    let rotating: Vec<&Workload> = fleet.workloads.iter().filter(|w| w.rotating).collect();
    let waiting =
        tokenvisor_test_support::wait::poll_until(SETTLE, Duration::from_millis(200), || {
            rotating.iter().any(|w| {
                (0..2).any(|i| {
                    read_status(&fleet.status_dir(i), &w.name).is_some_and(|r| {
                        r.status == WorkloadStatus::AuthRetrying
                            && r.status_context.contains("fenced write")
                    })
                })
            })
        })
        .await;
    if !waiting {
        let statuses: Vec<String> = rotating
            .iter()
            .flat_map(|w| {
                (0..2).filter_map(|i| {
                    read_status(&fleet.status_dir(i), &w.name)
                        .map(|r| format!("{} on {i}: {:?} {}", w.name, r.status, r.status_context))
                })
            })
            .collect();
        panic!(
            "no rotating grant waiting for etcd with the reason in its status: {statuses:#?}\n\
             instance 0: {}\ninstance 1: {}",
            tail(&a.log_plain()),
            tail(&b.log_plain())
        );
    }
    let cc_refreshes = |from: u64| {
        fleet
            .oidc
            .log()
            .iter()
            .filter(|l| l.t >= from && l.status == Some(200))
            .filter(|l| l.grant_type.as_deref() == Some("client_credentials"))
            .count()
    };
    wait_until_within(
        "client_credentials refreshing with etcd down",
        SETTLE,
        || cc_refreshes(down_ms) >= 4,
    )
    .await;
    let rotated_while_down = fleet.rotations_since(down_ms + 2_000);
    for pid in &pids {
        signal(*pid, "-CONT");
    }
    let up_ms = now_ms();
    wait_until_within(
        "every rotating grant refreshed after etcd returned",
        SETTLE,
        || {
            rotating.iter().all(|w| {
                (0..2).any(|i| {
                    read_status(&fleet.status_dir(i), &w.name).is_some_and(|r| {
                        r.status == WorkloadStatus::Running
                            && r.updated_at.to_system_time()
                                >= std::time::UNIX_EPOCH + Duration::from_millis(up_ms)
                    })
                })
            })
        },
    )
    .await;
    fleet.wait_settled("recovered", &[0, 1]).await;
    println!(
        "cluster run: etcd down: rotations while down (after the first 2 s) {rotated_while_down}, \
         client_credentials refreshes {}",
        cc_refreshes(down_ms)
    );
    assert_eq!(
        fleet.reuse(),
        0,
        "the provider saw a rotated refresh token reused"
    );
}
