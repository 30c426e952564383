//! The fenced store against a real etcd (tokenvisor-test-support's `etcd`: Debian's
//! `etcd-server` 3.4 on 127.0.0.1): shard claim and release, two stores racing for one
//! shard, a lapsed or revoked lease that can write nothing (the fence), the credential's
//! revision check, the membership watch, one etcd member of three killed, and shard
//! ownership spread over live members by the coordinator as members leave, stall and join.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokenvisor::{
    Claim, Clock, ClusterError, ClusterOptions, ClusterStore, InFlight, Release, StoredCredential,
    WriteOutcome, default_member, spawn_coordinator,
};
use tokenvisor_core::cluster::{ShardId, desired_shards};
use tokenvisor_core::{Secret, StatusRecord};
use tokenvisor_test_support::etcd::EtcdCluster;
use tokenvisor_test_support::wait::wait_for;

/// Bound of every wait here (real time; only a hang reaches it).
const LIMIT: Duration = Duration::from_secs(30);

fn options(etcd: &EtcdCluster, member: &str, ttl_secs: u64) -> ClusterOptions {
    ClusterOptions {
        endpoints: etcd.endpoints(),
        prefix: "test/".to_owned(),
        member: member.to_owned(),
        lease_ttl: Duration::from_secs(ttl_secs),
        request_timeout: Duration::from_secs(2),
        ca_file: None,
        client_cert: None,
        auth: None,
        admin: None,
    }
}

async fn store(etcd: &EtcdCluster, member: &str, ttl_secs: u64) -> ClusterStore {
    ClusterStore::connect(&options(etcd, member, ttl_secs), Clock::new())
        .await
        .unwrap_or_else(|e| panic!("connect {member}: {e}"))
}

fn credential(token: &str, generation: u64) -> StoredCredential {
    StoredCredential {
        refresh_token: Secret::from(token),
        generation,
    }
}

fn record() -> StatusRecord {
    serde_json::from_str(
        r#"{"status":"running","status_context":"","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","process_id":0}"#,
    )
    .expect("a status record")
}

#[tokio::test]
async fn claim_release_and_holders() {
    let etcd = EtcdCluster::start(1).await;
    let (a, b) = (store(&etcd, "a", 10).await, store(&etcd, "b", 10).await);
    assert_eq!(a.claim(3).await.expect("claim"), Claim::Claimed);
    assert_eq!(
        a.claim(3).await.expect("again"),
        Claim::Claimed,
        "a claim of our own shard is idempotent"
    );
    assert_eq!(
        b.claim(3).await.expect("claim"),
        Claim::HeldBy("a".to_owned())
    );
    let holders = b.shard_holders().await.expect("holders");
    assert_eq!(holders.get(&3), Some(&("a".to_owned(), false)));
    assert_eq!(
        a.shard_holders().await.expect("holders").get(&3),
        Some(&("a".to_owned(), true))
    );
    assert_eq!(
        b.release(3).await.expect("release"),
        Release::NotHeld,
        "b cannot release a's shard"
    );
    assert_eq!(a.release(3).await.expect("release"), Release::Released);
    assert_eq!(b.claim(3).await.expect("claim"), Claim::Claimed);
    assert_eq!(a.release(3).await.expect("release"), Release::NotHeld);
    assert_eq!((a.stats().claims, a.stats().releases), (1, 1));
    assert_eq!(a.members().await.expect("members"), ["a", "b"]);
}

#[tokio::test]
async fn two_stores_racing_for_one_shard_one_wins() {
    let etcd = EtcdCluster::start(1).await;
    let (a, b) = (store(&etcd, "a", 10).await, store(&etcd, "b", 10).await);
    for shard in 0..32 {
        let (ra, rb) = tokio::join!(a.claim(shard), b.claim(shard));
        match (ra.expect("a"), rb.expect("b")) {
            (Claim::Claimed, Claim::HeldBy(w)) => assert_eq!(w, "a"),
            (Claim::HeldBy(w), Claim::Claimed) => assert_eq!(w, "b"),
            other => panic!("shard {shard}: both or neither won: {other:?}"),
        }
    }
    assert_eq!(a.stats().claims + b.stats().claims, 32);
}

/// A paused instance (its keepalive stalled, as under SIGSTOP) stops being allowed to send,
/// its lease lapses on the server, another member claims the shard, and every write of the
/// stalled one is refused by the fence (counted) and changes nothing.
#[tokio::test]
async fn a_store_whose_lease_lapsed_cannot_write() {
    let etcd = EtcdCluster::start(1).await;
    let a = store(&etcd, "a", 2).await;
    assert_eq!(a.claim(1).await.expect("claim"), Claim::Claimed);
    let written = a
        .write_credential(1, "w", &credential("rt-1", 1), 0, Some(&record()))
        .await;
    let Ok(WriteOutcome::Written { revision }) = written else {
        panic!("{written:?}")
    };
    assert!(a.may_send(Duration::ZERO));

    a.stall_keepalive();
    wait_for("the stalled store to stop sending", LIMIT, || async {
        !a.may_send(Duration::ZERO)
    })
    .await;
    let b = store(&etcd, "b", 10).await;
    wait_for("the lapsed shard to be claimable", LIMIT, || async {
        b.claim(1).await.expect("claim") == Claim::Claimed
    })
    .await;

    let stale = a
        .write_credential(1, "w", &credential("rt-zombie", 2), revision, None)
        .await;
    assert_eq!(stale.expect("an answer"), WriteOutcome::FenceRejected);
    let status = a.write_status(1, "w", &record()).await;
    assert_eq!(status.expect("an answer"), WriteOutcome::FenceRejected);
    assert_eq!(a.stats().fence_rejections, 2);
    assert_eq!(a.stats().writes, 1);
    // nothing of the zombie's reached etcd; the new owner reads the last fenced write
    let now = b.read_credential("w").await.expect("read");
    assert_eq!(
        (now.value, now.revision),
        (Some(credential("rt-1", 1)), revision)
    );
    assert!(b.read_status("w").await.expect("read").is_some());
    // and the new owner writes
    let w = b
        .write_credential(1, "w", &credential("rt-2", 2), revision, None)
        .await;
    assert!(matches!(w, Ok(WriteOutcome::Written { .. })), "{w:?}");
}

/// A lease revoked on the server (an operator, or the server expiring it): the keepalive
/// learns it, the store may not send, and its writes are refused before reaching etcd.
#[tokio::test]
async fn a_revoked_lease_is_lost_and_writes_nothing() {
    let etcd = EtcdCluster::start(1).await;
    let a = store(&etcd, "a", 3).await;
    assert_eq!(a.claim(1).await.expect("claim"), Claim::Claimed);
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("client");
    client.lease_revoke(a.lease_id()).await.expect("revoke");
    wait_for("the store to learn its lease is gone", LIMIT, || async {
        a.lease().lost
    })
    .await;
    assert!(!a.may_send(Duration::ZERO));
    let w = a
        .write_credential(1, "w", &credential("rt", 1), 0, None)
        .await;
    assert!(matches!(w, Err(ClusterError::LeaseLost)), "{w:?}");
    assert!(matches!(a.claim(2).await, Err(ClusterError::LeaseLost)));
    let b = store(&etcd, "b", 10).await;
    assert_eq!(
        b.claim(1).await.expect("claim"),
        Claim::Claimed,
        "the revoked lease's shard key is gone"
    );
}

#[tokio::test]
async fn a_credential_written_since_the_read_is_a_conflict() {
    let etcd = EtcdCluster::start(1).await;
    let a = store(&etcd, "a", 10).await;
    assert_eq!(a.claim(7).await.expect("claim"), Claim::Claimed);
    let read = a.read_credential("w").await.expect("read");
    assert_eq!((read.value, read.revision), (None, 0));
    let Ok(WriteOutcome::Written { revision: r1 }) = a
        .write_credential(7, "w", &credential("rt-1", 1), 0, Some(&record()))
        .await
    else {
        panic!("first write")
    };
    // a writer that read before that write (revision 0) must read again
    let stale = a
        .write_credential(7, "w", &credential("rt-other", 1), 0, None)
        .await;
    assert_eq!(
        stale.expect("an answer"),
        WriteOutcome::Conflict { revision: r1 }
    );
    assert_eq!(a.stats().conflicts, 1);
    assert_eq!(a.stats().fence_rejections, 0);
    let read = a.read_credential("w").await.expect("read");
    assert_eq!(
        (read.value, read.revision),
        (Some(credential("rt-1", 1)), r1)
    );
    let next = a
        .write_credential(7, "w", &credential("rt-2", 2), r1, None)
        .await;
    assert!(
        matches!(next, Ok(WriteOutcome::Written { revision }) if revision > r1),
        "{next:?}"
    );
}

#[tokio::test]
async fn the_membership_watch_sees_members_join_and_leave() {
    let etcd = EtcdCluster::start(1).await;
    let a = store(&etcd, "a", 10).await;
    let members = a.watch_members();
    wait_for("a alone", LIMIT, || async { *members.borrow() == ["a"] }).await;
    let b = store(&etcd, "b", 10).await;
    wait_for("b joined", LIMIT, || async {
        *members.borrow() == ["a", "b"]
    })
    .await;
    b.leave().await.expect("leave");
    wait_for("b left", LIMIT, || async { *members.borrow() == ["a"] }).await;
}

#[tokio::test]
async fn a_second_live_instance_with_the_same_member_id_is_refused() {
    let etcd = EtcdCluster::start(1).await;
    let _a = store(&etcd, "a", 2).await;
    let twin = ClusterStore::connect(&options(&etcd, "a", 2), Clock::new()).await;
    assert!(
        matches!(twin, Err(ClusterError::DuplicateMember(ref m)) if m == "a"),
        "{twin:?}"
    );
}

/// Three etcd members, one killed (kill -9): the store keeps its lease alive and claims and
/// writes again (through the two left, after an election if the leader died).
#[tokio::test]
async fn the_store_survives_one_etcd_member_killed() {
    let mut etcd = EtcdCluster::start(3).await;
    let a = store(&etcd, "a", 5).await;
    assert_eq!(a.claim(0).await.expect("claim"), Claim::Claimed);
    etcd.kill(0);
    let renewals = a.lease().renewals;
    wait_for("keepalives answered after the kill", LIMIT, || async {
        a.lease().renewals >= renewals + 2
    })
    .await;
    wait_for("a claim through the members left", LIMIT, || async {
        matches!(a.claim(1).await, Ok(Claim::Claimed))
    })
    .await;
    // (a write whose answer was lost to the kill, then retried, finds its own revision:
    // a conflict; either way the value is in etcd)
    wait_for("a fenced write through the members left", LIMIT, || async {
        matches!(
            a.write_credential(0, "w", &credential("rt", 1), 0, None)
                .await,
            Ok(WriteOutcome::Written { .. } | WriteOutcome::Conflict { .. })
        )
    })
    .await;
    // the cluster has settled: from now on every request succeeds, though the client's
    // balancer still picks the dead member at times (the store sends a request refused
    // before it left again)
    for _ in 0..40 {
        let read = a.read_credential("w").await.expect("read");
        assert_eq!(read.value, Some(credential("rt", 1)));
    }
    assert!(a.may_send(Duration::ZERO));
    assert_eq!(a.stats().fence_rejections, 0);
}

/// Whether every coordinator in `owned` holds exactly its rendezvous share among `members`.
fn balanced(
    owned: &[(&str, &tokio::sync::watch::Receiver<BTreeSet<ShardId>>)],
    members: &[&str],
    shards: NonZeroU32,
) -> bool {
    let members: Vec<String> = members.iter().map(|&m| m.to_owned()).collect();
    owned
        .iter()
        .all(|(m, rx)| *rx.borrow() == desired_shards(m, &members, shards))
}

/// Three instances split 64 shards by rendezvous hashing; one leaves (its lease revoked after
/// its coordinator stopped) and the two left take its shards; one stalls (SIGSTOP-like) and
/// its shards move only once its lease has lapsed; a new one joins and gets its share once
/// the others released it. Every state is exactly the rendezvous assignment, never two
/// owners of a shard (a claim needs the key absent).
#[tokio::test]
async fn shards_follow_the_live_members() {
    let etcd = EtcdCluster::start(1).await;
    let shards = NonZeroU32::new(64).expect("non-zero");
    let idle: InFlight = Arc::new(BTreeMap::new);
    let tick = Duration::from_millis(200);
    let mut stores = BTreeMap::new();
    let mut owned = BTreeMap::new();
    for m in ["a", "b", "c"] {
        let s = Arc::new(store(&etcd, m, 3).await);
        let (rx, task) = spawn_coordinator(s.clone(), shards, tick, idle.clone());
        stores.insert(m, (s, task));
        owned.insert(m, rx);
    }
    let view = |owned: &BTreeMap<&'static str, _>,
                ms: &[&'static str]|
     -> Vec<(
        &'static str,
        tokio::sync::watch::Receiver<BTreeSet<ShardId>>,
    )> {
        ms.iter()
            .map(|m| (*m, owned.get(m).cloned().expect("a coordinator")))
            .collect()
    };
    let check = |ms: &'static [&'static str], owned: &BTreeMap<&'static str, _>| {
        let v = view(owned, ms);
        move || {
            let refs: Vec<_> = v.iter().map(|(m, rx)| (*m, rx)).collect();
            let ok = balanced(&refs, ms, shards);
            async move { ok }
        }
    };
    wait_for(
        "a, b and c hold their shares",
        LIMIT,
        check(&["a", "b", "c"], &owned),
    )
    .await;

    // c leaves: its coordinator stops, then its lease is revoked (its keys go at once)
    let (c, task) = stores.remove("c").expect("c");
    task.abort();
    let _ = task.await;
    Arc::try_unwrap(c)
        .expect("the only handle")
        .leave()
        .await
        .expect("leave");
    wait_for("a and b took c's shares", LIMIT, check(&["a", "b"], &owned)).await;

    // b stalls: its keepalive stops; its shards move once its lease has lapsed
    stores["b"].0.stall_keepalive();
    wait_for(
        "a took b's shares after b's lease lapsed",
        LIMIT,
        check(&["a"], &owned),
    )
    .await;

    // d joins: a releases d's share (nothing in flight) and d claims it
    let d = Arc::new(store(&etcd, "d", 3).await);
    let (rx, task) = spawn_coordinator(d.clone(), shards, tick, idle.clone());
    stores.insert("d", (d, task));
    owned.insert("d", rx);
    wait_for(
        "a and d hold their shares",
        LIMIT,
        check(&["a", "d"], &owned),
    )
    .await;
}

/// A shard with an attempt in flight is drained, not released: the joiner waits for it.
#[tokio::test]
async fn a_shard_with_an_attempt_in_flight_is_released_only_when_idle() {
    let etcd = EtcdCluster::start(1).await;
    let shards = NonZeroU32::new(16).expect("non-zero");
    let a = Arc::new(store(&etcd, "a", 5).await);
    let busy = Arc::new(std::sync::Mutex::new(BTreeMap::<ShardId, u32>::new()));
    let counts = busy.clone();
    let in_flight: InFlight = Arc::new(move || counts.lock().expect("lock").clone());
    let (a_owned, _ta) =
        spawn_coordinator(a.clone(), shards, Duration::from_millis(100), in_flight);
    wait_for("a owns every shard", LIMIT, || async {
        a_owned.borrow().len() == 16
    })
    .await;
    // the shard b will want, busy on a
    let both = ["a".to_owned(), "b".to_owned()];
    let wanted: BTreeSet<ShardId> = desired_shards("b", &both, shards);
    let busy_shard = *wanted.first().expect("b wants at least one shard of 16");
    busy.lock().expect("lock").insert(busy_shard, 1);
    let b = Arc::new(store(&etcd, "b", 5).await);
    let idle: InFlight = Arc::new(BTreeMap::new);
    let (b_owned, _tb) = spawn_coordinator(b.clone(), shards, Duration::from_millis(100), idle);
    let rest: BTreeSet<ShardId> = wanted
        .iter()
        .copied()
        .filter(|&s| s != busy_shard)
        .collect();
    wait_for("b holds its share but the busy shard", LIMIT, || async {
        *b_owned.borrow() == rest
    })
    .await;
    assert!(
        a_owned.borrow().contains(&busy_shard),
        "a keeps the busy shard while draining"
    );
    busy.lock().expect("lock").clear();
    wait_for("b holds its whole share", LIMIT, || async {
        *b_owned.borrow() == wanted
    })
    .await;
}

#[test]
fn the_default_member_id_is_stable_per_state_directory_and_a_valid_name() {
    let (a, b) = (
        Path::new("/var/lib/tokenvisor/a"),
        Path::new("/var/lib/tokenvisor/b"),
    );
    let id = default_member(a);
    assert_eq!(id, default_member(a), "stable");
    assert_ne!(id, default_member(b), "two instances on one host differ");
    assert!(tokenvisor_core::WorkloadName::new(&id).is_ok(), "{id:?}");
    assert!(
        id.len() > 9 && id.as_bytes()[id.len() - 9] == b'-',
        "{id:?}"
    );
}

/// A TLS file that cannot be read fails the connection naming the key and the path, before
/// anything is sent.
#[tokio::test]
async fn an_unreadable_tls_file_is_an_error_naming_it() {
    let opts = ClusterOptions {
        endpoints: vec!["https://127.0.0.1:1".to_owned()],
        prefix: "test/".to_owned(),
        member: "a".to_owned(),
        lease_ttl: Duration::from_secs(5),
        request_timeout: Duration::from_secs(1),
        ca_file: Some("/nonexistent/ca.pem".into()),
        client_cert: None,
        auth: None,
        admin: None,
    };
    let err = ClusterStore::connect(&opts, Clock::new())
        .await
        .expect_err("no CA file");
    assert!(
        matches!(
            err,
            ClusterError::File {
                what: "ca_file",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

/// 32 writers, each rotating its own workload's credential 50 times through fenced,
/// revision-checked transactions (status record included) on a three-member etcd: every
/// write lands, none is refused, and each workload ends at its last generation. Prints the
/// latency and rate (`--no-capture`; figures in docs/RELIABILITY.md), asserts none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fenced_writes_all_land() {
    let etcd = EtcdCluster::start(3).await;
    let a = Arc::new(store(&etcd, "a", 15).await);
    for shard in 0..32 {
        assert_eq!(a.claim(shard).await.expect("claim"), Claim::Claimed);
    }
    let mut latencies = Vec::new();
    let mut revision = 0;
    for generation in 0..200 {
        let started = tokio::time::Instant::now();
        let c = credential(&format!("rt-{generation:040}"), generation);
        let w = a
            .write_credential(0, "seq", &c, revision, Some(&record()))
            .await;
        let Ok(WriteOutcome::Written { revision: r }) = w else {
            panic!("{w:?}")
        };
        revision = r;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let started = tokio::time::Instant::now();
    let writers: Vec<_> = (0..32u32)
        .map(|w| {
            let a = a.clone();
            tokio::spawn(async move {
                let mut revision = 0;
                for generation in 0..50 {
                    let c = credential(&format!("rt-{w}-{generation}"), generation);
                    let name = format!("w{w}");
                    let out = a
                        .write_credential(w, &name, &c, revision, Some(&record()))
                        .await;
                    let Ok(WriteOutcome::Written { revision: r }) = out else {
                        panic!("{out:?}")
                    };
                    revision = r;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let elapsed = started.elapsed();
    for w in 0..32u32 {
        let read = a.read_credential(&format!("w{w}")).await.expect("read");
        assert_eq!(read.value.map(|c| c.generation), Some(49));
    }
    let stats = a.stats();
    assert_eq!(
        (stats.writes, stats.fence_rejections, stats.conflicts),
        (1_800, 0, 0)
    );
    eprintln!(
        "fenced writes, 3-member etcd: sequential p50 {:?} p99 {:?}; 32 writers: 1,600 in {elapsed:?} ({:.0}/s)",
        latencies[100],
        latencies[198],
        1_600.0 / elapsed.as_secs_f64()
    );
}
