//! Cluster mode's shard handling in the supervisor, without etcd (feature `cluster`): the
//! runtime's cluster link coordinates through a fake store ([`tokenvisor::Coordination`],
//! substituted with `ClusterSettings::with_coordination`) and the test plays the
//! coordinator (`ClusterLink::coordinator_owned` / `coordinator_drain`, the two calls of a
//! coordinator step). On tokio's paused clock with the in-memory transport:
//!
//! - a workload of a shard not owned here is *parked*: known (listed, a handle), never run
//!   (no request, no credential read, no status file), for hours;
//! - a shard gained starts its workloads, each presenting the credential read from the
//!   store (not its local one), and a rotation is written back with the revision read;
//! - a shard leaving is drained: its attempt in flight is counted (so the coordinator does
//!   not release it), no new attempt starts, and the count reaches 0 only once the attempt
//!   ended and its rotation was written; the workload's own status file then says `stopped`;
//! - the etcd round trips of a new ownership (the first read) run before the endpoint's
//!   permit, so they hold none of its request slots, and at most 64 run at once;
//! - the send rule asks the lease for what is left of an attempt once it sends (its
//!   request, 1 s of local work, the etcd write of its result), not for its waits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenvisor::spec::WorkloadSpec;
use tokenvisor::testing::{FakeReply, FakeTransport, Release};
use tokenvisor::{
    ClusterError, ClusterLink, ClusterSettings, Coordination, CoordinationFuture, Runtime,
    RuntimeConfig, StoredCredential, Versioned, WriteOutcome,
};
use tokenvisor_core::cluster::{ShardId, shard_of};
use tokenvisor_core::{Secret, StatusRecord, Timestamp, WorkloadStatus};
use tokenvisor_test_support::scenario::{Endpoint as _, FakeEndpoint, name, refresh_spec, status};
use tokenvisor_test_support::status::read_status;
use tokenvisor_test_support::wait::wait_until_within;

const S: fn(u64) -> Duration = Duration::from_secs;
const SHARDS: u32 = 8;

/// The fake etcd: credentials with revisions (the revision compare is kept; the fence is
/// not, a single instance here), and a log of what was asked.
#[derive(Debug, Default)]
struct FakeEtcd {
    state: Mutex<EtcdState>,
    /// How long a credential read takes (an etcd round trip; paused clock).
    read_delay: Mutex<Duration>,
    /// Reads in progress now, and the most at once.
    reading: AtomicUsize,
    most_reading: AtomicUsize,
    /// The lease as confirmed, from any `now` (a 15 s lease right before a keepalive has
    /// 10 s); `None`: every backstop fits.
    lease_left: Mutex<Option<Duration>>,
    /// Every backstop the send rule was asked for.
    backstops: Mutex<Vec<Duration>>,
}

#[derive(Debug, Default)]
struct EtcdState {
    revision: i64,
    credentials: HashMap<String, (StoredCredential, i64)>,
    /// Names whose credential was read, in order.
    reads: Vec<String>,
    /// Credential writes: (name, refresh token, generation, expected revision).
    writes: Vec<(String, String, u64, i64)>,
    /// Status writes: (name, status).
    statuses: Vec<(String, WorkloadStatus)>,
}

impl FakeEtcd {
    fn state(&self) -> std::sync::MutexGuard<'_, EtcdState> {
        self.state.lock().unwrap()
    }

    /// Puts `name`'s credential as another owner wrote it.
    fn seed(&self, name: &str, token: &str, generation: u64) {
        let mut st = self.state();
        st.revision += 1;
        let rev = st.revision;
        st.credentials.insert(
            name.to_owned(),
            (
                StoredCredential {
                    refresh_token: Secret::from(token),
                    generation,
                },
                rev,
            ),
        );
    }

    fn reads(&self, n: &str) -> usize {
        self.state().reads.iter().filter(|r| *r == n).count()
    }

    fn writes(&self, n: &str) -> Vec<(String, u64, i64)> {
        (self.state().writes.iter())
            .filter(|w| w.0 == n)
            .map(|w| (w.1.clone(), w.2, w.3))
            .collect()
    }

    fn statuses(&self, n: &str) -> usize {
        self.state().statuses.iter().filter(|s| s.0 == n).count()
    }
}

impl Coordination for FakeEtcd {
    fn read_credential<'a>(
        &'a self,
        name: &'a str,
    ) -> CoordinationFuture<'a, Versioned<StoredCredential>> {
        Box::pin(async move {
            let now = self.reading.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_reading.fetch_max(now, Ordering::SeqCst);
            let delay = *self.read_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            self.reading.fetch_sub(1, Ordering::SeqCst);
            let mut st = self.state();
            st.reads.push(name.to_owned());
            Ok::<_, ClusterError>(match st.credentials.get(name) {
                Some((c, rev)) => Versioned {
                    value: Some(c.clone()),
                    revision: *rev,
                },
                None => Versioned {
                    value: None,
                    revision: 0,
                },
            })
        })
    }

    fn write_credential<'a>(
        &'a self,
        _shard: ShardId,
        name: &'a str,
        credential: &'a StoredCredential,
        expected: i64,
    ) -> CoordinationFuture<'a, WriteOutcome> {
        Box::pin(async move {
            let mut st = self.state();
            let current = st.credentials.get(name).map_or(0, |(_, rev)| *rev);
            if current != expected {
                return Ok(WriteOutcome::Conflict { revision: current });
            }
            st.revision += 1;
            let revision = st.revision;
            st.credentials
                .insert(name.to_owned(), (credential.clone(), revision));
            st.writes.push((
                name.to_owned(),
                credential.refresh_token.expose().to_owned(),
                credential.generation,
                expected,
            ));
            Ok(WriteOutcome::Written { revision })
        })
    }

    fn write_status<'a>(
        &'a self,
        _shard: ShardId,
        name: &'a str,
        record: &'a StatusRecord,
    ) -> CoordinationFuture<'a, WriteOutcome> {
        Box::pin(async move {
            let mut st = self.state();
            st.revision += 1;
            let revision = st.revision;
            st.statuses.push((name.to_owned(), record.status));
            Ok(WriteOutcome::Written { revision })
        })
    }

    fn may_send(&self, backstop: Duration) -> bool {
        self.backstops.lock().unwrap().push(backstop);
        self.lease_left
            .lock()
            .unwrap()
            .is_none_or(|left| backstop < left)
    }
}

/// A refresh-token workload whose client id is its name (the shared paused policy).
fn spec(n: &str) -> WorkloadSpec {
    refresh_spec(
        n,
        "http://127.0.0.1:9/token",
        n,
        "client-secret-value",
        &format!("rt-initial-{n}"),
        None,
        &FakeEndpoint::new().pace().policy,
    )
}

fn shards() -> NonZeroU32 {
    NonZeroU32::new(SHARDS).unwrap()
}

fn shard(n: &str) -> ShardId {
    shard_of(n, shards())
}

/// Two workload names in different shards.
fn two_names() -> (String, String) {
    let a = "w-0".to_owned();
    let b = (1..)
        .map(|i| format!("w-{i}"))
        .find(|b| shard(b) != shard(&a))
        .unwrap();
    (a, b)
}

fn set(v: &[ShardId]) -> BTreeSet<ShardId> {
    v.iter().copied().collect()
}

struct Harness {
    rt: Runtime,
    fake: FakeTransport,
    etcd: Arc<FakeEtcd>,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeTransport::new();
        let etcd = Arc::new(FakeEtcd::default());
        let mut cfg = RuntimeConfig::new(dir.path(), Arc::new(fake.clone()));
        cfg.seed = Some(7);
        cfg.clock = Some(tokenvisor::Clock::anchored(Timestamp::from_millis(
            1_800_000_000_000,
        )));
        cfg.cluster = Some(ClusterSettings::with_coordination(
            "member-a",
            shards(),
            etcd.clone(),
        ));
        let rt = Runtime::start(cfg).await.unwrap();
        Harness {
            rt,
            fake,
            etcd,
            dir,
        }
    }

    fn link(&self) -> &Arc<ClusterLink> {
        self.rt.cluster().expect("cluster mode")
    }

    /// The workload's own status file (after a flush).
    async fn file(&self, n: &str) -> Option<StatusRecord> {
        let report = self.rt.flush(S(5)).await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        read_status(self.dir.path(), n)
    }

    /// The refresh tokens presented by `n`'s requests, in order.
    fn presented(&self, n: &str) -> Vec<String> {
        (self.fake.seen().into_iter())
            .filter(|r| r.client_id == n)
            .filter_map(|r| r.refresh_token)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_workload_of_a_shard_not_owned_is_known_but_never_run() {
    let h = Harness::start().await;
    h.fake.set_default(FakeReply::rotating(3600));
    let (a, b) = two_names();
    let ha = h.rt.add(spec(&a)).await.unwrap();
    let hb = h.rt.add(spec(&b)).await.unwrap();
    h.link().coordinator_owned(&set(&[shard(&a)]));
    wait_until_within("a running", S(60), || {
        status(&ha) == Some(WorkloadStatus::Running)
    })
    .await;
    // Hours of refreshes of `a` (a one-hour token); `b` stays parked throughout.
    tokio::time::sleep(S(5 * 3600)).await;
    assert!(h.fake.count(&a) >= 5, "a refreshes: {}", h.fake.count(&a));
    assert_eq!(h.fake.count(&b), 0, "a parked workload sent a request");
    assert_eq!(h.etcd.reads(&b), 0, "a parked workload read its credential");
    assert!(hb.current().is_err(), "a parked workload serves no token");
    let listed: Vec<String> = (h.rt.list().await.unwrap().into_iter())
        .map(|v| v.spec.name.as_str().to_owned())
        .collect();
    assert!(
        listed.contains(&b),
        "a parked workload is known: {listed:?}"
    );
    assert!(
        h.file(&b).await.is_none(),
        "a parked workload has no status file of this instance"
    );
    assert_eq!(h.etcd.statuses(&b), 0, "nor a status record mirrored");
    assert_eq!(
        h.file(&a).await.map(|r| r.status),
        Some(WorkloadStatus::Running)
    );
}

#[tokio::test(start_paused = true)]
async fn a_shard_gained_starts_its_workloads_with_the_credential_read_from_the_store() {
    let h = Harness::start().await;
    h.fake.set_default(FakeReply::rotating(3600));
    let (a, b) = two_names();
    // `b`'s previous owner rotated its token twice: the store holds generation 3.
    h.etcd.seed(&b, "rt-cluster-b", 3);
    let stored_rev = h.etcd.state().credentials[&b].1;
    let _ha = h.rt.add(spec(&a)).await.unwrap();
    let hb = h.rt.add(spec(&b)).await.unwrap();
    h.link().coordinator_owned(&set(&[shard(&a)]));
    tokio::time::sleep(S(600)).await;
    assert_eq!(h.fake.count(&b), 0, "parked before its shard arrives");

    // The shard arrives: `b` starts, reading the store first.
    h.link().coordinator_owned(&set(&[shard(&a), shard(&b)]));
    wait_until_within("b running", S(60), || {
        status(&hb) == Some(WorkloadStatus::Running)
    })
    .await;
    let presented = h.presented(&b);
    assert_eq!(
        presented.first().map(String::as_str),
        Some("rt-cluster-b"),
        "the first request presents the store's token, not the local one: {presented:?}"
    );
    assert!(
        !presented.iter().any(|t| t == "rt-initial-b"),
        "the local (rotated-away) token was presented: {presented:?}"
    );
    assert_eq!(h.etcd.reads(&b), 1, "one read under the new ownership");
    // The rotation is written back over the revision read, as generation 4.
    let writes = h.etcd.writes(&b);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!((writes[0].1, writes[0].2), (4, stored_rev), "{writes:?}");
    assert_ne!(writes[0].0, "rt-cluster-b", "the rotated token is written");
    // Its next refresh presents the token it wrote.
    let written = writes[0].0.clone();
    wait_until_within("b refreshed again", S(2 * 3600), || {
        h.presented(&b).len() >= 2
    })
    .await;
    assert_eq!(h.presented(&b)[1], written);
}

#[tokio::test(start_paused = true)]
async fn a_leaving_shard_is_drained_and_releasable_only_with_nothing_in_flight() {
    let h = Harness::start().await;
    let (a, _) = two_names();
    let release = Release::new();
    // `a`'s first refresh is held in flight until the test lets it go.
    h.fake.push(
        &a,
        [FakeReply::Held(
            release.clone(),
            Box::new(FakeReply::rotating(3600)),
        )],
    );
    h.fake.set_default(FakeReply::rotating(3600));
    let ha = h.rt.add(spec(&a)).await.unwrap();
    let sa = shard(&a);
    h.link().coordinator_owned(&set(&[sa]));
    wait_until_within("a's refresh in flight", S(60), || h.fake.count(&a) == 1).await;

    // The shard leaves: counted in flight, so the coordinator would not release it.
    let counts = h.link().coordinator_drain(&set(&[sa]));
    assert_eq!(counts, BTreeMap::from([(sa, 1)]), "the attempt in flight");
    // However long the answer takes (within the attempt's bound), still not releasable.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.link().coordinator_drain(&set(&[sa])),
        BTreeMap::from([(sa, 1)])
    );
    assert!(h.etcd.writes(&a).len() == 1, "only the seed so far");

    // The answer arrives: the attempt ends, its rotation is written, then the count is 0.
    release.release();
    wait_until_within("drained", S(60), || {
        h.link().coordinator_drain(&set(&[sa])).is_empty()
    })
    .await;
    let writes = h.etcd.writes(&a);
    assert_eq!(
        writes.len(),
        2,
        "the seed, then the rotation, both before the release: {writes:?}"
    );
    assert_eq!(writes[0].0, format!("rt-initial-{a}"), "seeded from local");
    assert_eq!(writes[1].1, 2, "the rotation, generation 2");
    // Released: the coordinator's next step owns nothing.
    h.link().coordinator_owned(&BTreeSet::new());
    wait_until_within("a stopped here", S(60), || {
        status(&ha) == Some(WorkloadStatus::Stopped)
    })
    .await;
    assert_eq!(
        h.file(&a).await.map(|r| r.status),
        Some(WorkloadStatus::Stopped),
        "its status file here says stopped; the new owner's says the truth"
    );
    // No new attempt, for hours.
    tokio::time::sleep(S(5 * 3600)).await;
    assert_eq!(h.fake.count(&a), 1, "an attempt after the shard left");
}

/// A leaving shard whose workload is idle (no attempt in flight) is releasable at once, and
/// no attempt of it starts afterwards even when one falls due.
#[tokio::test(start_paused = true)]
async fn an_idle_leaving_shard_is_releasable_at_once_and_starts_nothing() {
    let h = Harness::start().await;
    h.fake.set_default(FakeReply::rotating(600));
    let (a, _) = two_names();
    let ha = h.rt.add(spec(&a)).await.unwrap();
    let sa = shard(&a);
    h.link().coordinator_owned(&set(&[sa]));
    wait_until_within("a running", S(60), || {
        status(&ha) == Some(WorkloadStatus::Running)
    })
    .await;
    let before = h.fake.count(&a);
    assert_eq!(h.link().coordinator_drain(&set(&[sa])), BTreeMap::new());
    // Its next refresh falls due within the hour: none is sent.
    tokio::time::sleep(S(3600)).await;
    assert_eq!(h.fake.count(&a), before, "an attempt of a leaving shard");
    // The shard comes back before it was released: active again, refreshing again.
    h.link().coordinator_drain(&BTreeSet::new());
    h.link().coordinator_owned(&set(&[sa]));
    wait_until_within("a refreshes again", S(3600), || h.fake.count(&a) > before).await;
}

/// A routine refresh (running before and after; its token's state goes `refreshing` and
/// back) costs one store write, its credential's: the status record mirrored is written
/// again only when the status or its reason changes.
#[tokio::test(start_paused = true)]
async fn a_routine_refresh_writes_its_credential_and_no_status_record() {
    let h = Harness::start().await;
    h.fake.set_default(FakeReply::rotating(600));
    let (a, _) = two_names();
    let ha = h.rt.add(spec(&a)).await.unwrap();
    h.link().coordinator_owned(&set(&[shard(&a)]));
    wait_until_within("a running", S(60), || {
        status(&ha) == Some(WorkloadStatus::Running)
    })
    .await;
    // The `running` record reaches the store at the next flush.
    tokio::time::sleep(S(2)).await;
    let (statuses, writes, calls) = (
        h.etcd.statuses(&a),
        h.etcd.writes(&a).len(),
        h.fake.count(&a),
    );
    assert!(statuses >= 1, "the running record was mirrored");
    // Two hours of ten-minute tokens: a dozen routine refreshes.
    tokio::time::sleep(S(2 * 3600)).await;
    let refreshes = h.fake.count(&a) - calls;
    assert!(refreshes >= 10, "{refreshes} refreshes");
    assert_eq!(
        h.etcd.writes(&a).len() - writes,
        usize::try_from(refreshes).unwrap(),
        "one credential write per rotation"
    );
    assert_eq!(
        h.etcd.statuses(&a),
        statuses,
        "a routine refresh wrote a status record"
    );
    assert_eq!(status(&ha), Some(WorkloadStatus::Running));
}

/// The etcd round trips of a new ownership (here the first read of each credential, 3 s on
/// a slow etcd) run before the attempt takes its endpoint's permit: with one request slot,
/// four workloads gained at once read their credentials together, and each then sends with
/// no second read. (With the reads under the permit, one at a time: the slot turned over
/// once per round trip, and queued attempts outlived their budget.)
#[tokio::test(start_paused = true)]
async fn the_etcd_round_trips_of_a_new_ownership_hold_no_request_slot() {
    let h = Harness::start().await;
    h.fake.set_default(FakeReply::rotating(3600));
    *h.etcd.read_delay.lock().unwrap() = S(3);
    let names: Vec<String> = (0..4).map(|i| format!("w-{i}")).collect();
    let mut handles = Vec::new();
    for n in &names {
        let mut s = spec(n);
        s.policy.endpoint_concurrency = 1;
        handles.push(h.rt.add(s).await.unwrap());
    }
    let all: BTreeSet<ShardId> = names.iter().map(|n| shard(n)).collect();
    h.link().coordinator_owned(&all);
    wait_until_within("all running", S(120), || {
        handles
            .iter()
            .all(|w| status(w) == Some(WorkloadStatus::Running))
    })
    .await;
    assert_eq!(
        h.etcd.most_reading.load(Ordering::SeqCst),
        names.len(),
        "the credential reads waited for the one request slot"
    );
    for n in &names {
        assert_eq!(h.etcd.reads(n), 1, "{n}: read once, before the permit");
        assert_eq!(h.fake.count(n), 1, "{n}: one request");
    }
}

/// The send rule asks the lease for what is left of an attempt once it sends: its request
/// (request 4 s + connect 1 s + 1 s of local work) and the etcd write of its result (2 s),
/// 8 s, which a 15 s lease right before a keepalive (10 s confirmed) holds. The attempt's
/// waits (its hold, pace and slot, up to 4 s more) are over by then; counting them too
/// (12 s) left a 15 s lease only 1 s timeouts, which a loaded provider outlives.
#[tokio::test(start_paused = true)]
async fn the_send_rule_counts_the_request_and_the_etcd_write_not_the_waits() {
    let h = Harness::start().await;
    h.fake.set_default(FakeReply::rotating(3600));
    *h.etcd.lease_left.lock().unwrap() = Some(S(10));
    let (a, _) = two_names();
    let mut s = spec(&a);
    s.policy.request_timeout = S(4);
    s.policy.connect_timeout = S(1);
    let ha = h.rt.add(s).await.unwrap();
    h.link().coordinator_owned(&set(&[shard(&a)]));
    wait_until_within("a running", S(60), || {
        status(&ha) == Some(WorkloadStatus::Running)
    })
    .await;
    let asked = h.etcd.backstops.lock().unwrap().clone();
    assert!(!asked.is_empty());
    assert!(asked.iter().all(|b| *b == S(8)), "{asked:?}");
    // A lease confirmed for less than that sends nothing.
    *h.etcd.lease_left.lock().unwrap() = Some(S(8));
    let calls = h.fake.count(&a);
    assert!(h.rt.force_refresh(&name(&a)).await.unwrap());
    tokio::time::sleep(S(60)).await;
    assert_eq!(h.fake.count(&a), calls, "sent past the confirmed lease");
}

/// The reads of a new ownership, which no endpoint slot bounds any more, are bounded by the
/// link itself: 100 workloads gained at once (a start of 10,000 here sent 10,000 reads
/// together, and etcd answered few within its timeout) read at most 64 credentials at
/// once, and every one of them runs.
#[tokio::test(start_paused = true)]
async fn the_reads_of_a_new_ownership_are_bounded() {
    let h = Harness::start().await;
    h.fake.set_default(FakeReply::rotating(3600));
    *h.etcd.read_delay.lock().unwrap() = S(1);
    let names: Vec<String> = (0..100).map(|i| format!("w-{i}")).collect();
    let mut handles = Vec::new();
    for n in &names {
        handles.push(h.rt.add(spec(n)).await.unwrap());
    }
    h.link().coordinator_owned(&(0..SHARDS).collect());
    wait_until_within("all running", S(600), || {
        handles
            .iter()
            .all(|w| status(w) == Some(WorkloadStatus::Running))
    })
    .await;
    assert_eq!(h.etcd.most_reading.load(Ordering::SeqCst), 64);
    for n in &names {
        assert_eq!(h.etcd.reads(n), 1, "{n}");
    }
}
