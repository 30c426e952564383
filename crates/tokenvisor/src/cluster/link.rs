//! The runtime's wiring to the cluster ([`ClusterLink`]): one per runtime in cluster mode,
//! shared by the supervisor (which workloads run here), every token actor's attempts (may
//! this one be sent, and is its credential the cluster's) and the persistence path (status
//! records mirrored to etcd).
//!
//! - **Connection.** A driver task connects the [`ClusterStore`] (retrying while etcd is
//!   unreachable), runs the coordinator with this link as its [`ShardHooks`], and when the
//!   lease is lost (expired while this instance was paused or cut off) reports nothing owned
//!   and connects again with a new lease: recovery needs no operator.
//! - **Which shards are active.** A shard is *active* while it is owned and not leaving.
//!   The supervisor runs the token actors of active shards only ([`ClusterLink::active`]).
//!   An attempt takes a [`SendGuard`] of its shard right before its request; the guard is
//!   refused for a shard that is not active, and counts the attempt in flight until its
//!   result is written. The coordinator's drain and the count happen under one lock
//!   ([`ShardHooks::drain`]), so a shard is released only when no attempt of it is in flight
//!   and none can start.
//! - **The credential.** A rotating grant's first attempt under a new ownership reads the
//!   credential from etcd: etcd holds the newest refresh token (every rotation is written
//!   there first, fenced) and wins over the local journal; when etcd has none (the first
//!   owner ever) the local one seeds it, fenced. Those etcd round trips run before the
//!   attempt takes its endpoint's permit ([`ClusterLink::sync_ahead`], under the
//!   workload's owner lock): the permit bounds requests at the provider, not etcd's
//!   latency. An attempt is sent only when `may_send(backstop)` holds, the backstop being
//!   what is left of the attempt once it sends (request and connect timeouts, 1 s of local
//!   work) plus the etcd write of its result; a rotated refresh token is written to etcd (fenced,
//!   revision-checked) before the local journal, and an attempt whose write did not land is
//!   not a success (`auth_retrying`, the reason in the status context; the next attempt
//!   writes the token first, and a new ownership here that finds an older generation in
//!   etcd writes it over etcd's instead of adopting it). A fence rejection means the shard is lost: counted, nothing
//!   sent. On `invalid_grant` the credential is read again and a newer token adopted.
//! - **etcd unavailable.** Nothing changes hands (no step succeeds); owners keep serving
//!   their valid tokens; rotating grants are not refreshed once the lease is no longer
//!   confirmed for a whole attempt (their reason says so); `client_credentials` grants keep
//!   no state in etcd and keep refreshing.
//! - **Status records** are mirrored to etcd, coalesced: the latest record of a workload
//!   waits in a map and a task writes what changed every `status_interval` (fenced); a
//!   record of a shard no longer active is dropped, not written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokenvisor_config::cluster::{ClusterConfig, ETCD_REQUEST_TIMEOUT};
use tokenvisor_core::cluster::{ShardId, shard_of};
use tokenvisor_core::{Secret, StatusRecord, WorkloadName};
use tokio::sync::{Semaphore, watch};

use super::coordinator::{ShardHooks, spawn_with_hooks};
use super::seam::Coordination;
use super::store::StatsHandle;
use super::{
    ClusterError, ClusterOptions, ClusterStats, ClusterStore, StoredCredential, WriteOutcome,
};
use crate::clock::Clock;
use crate::credentials::{CredentialStore, NewCredentials};
use crate::spec::{GrantSpec, WorkloadSpec};
use crate::transport::Grant;

/// Cluster mode's settings for a runtime ([`crate::RuntimeConfig`]'s `cluster`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// How to reach etcd and who this instance is.
    pub options: ClusterOptions,
    /// The number of shards (the same on every instance).
    pub shards: NonZeroU32,
    /// How often changed status records are written to etcd (coalesced).
    pub status_interval: Duration,
    /// Tests: the store the link coordinates through instead of etcd (no connection).
    #[cfg(feature = "test-util")]
    substitute: Option<Substitute>,
}

/// A [`Coordination`] a test gave ([`ClusterSettings::with_coordination`]).
#[cfg(feature = "test-util")]
#[derive(Clone)]
struct Substitute(Arc<dyn Coordination>);

#[cfg(feature = "test-util")]
impl std::fmt::Debug for Substitute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Substitute")
    }
}

impl ClusterSettings {
    /// The settings of a `[cluster]` section; `state_dir` names the default member id.
    pub fn from_config(cfg: &ClusterConfig, state_dir: &Path) -> Self {
        ClusterSettings {
            options: ClusterOptions::from_config(cfg, state_dir),
            shards: cfg.shards,
            status_interval: Duration::from_secs(1),
            #[cfg(feature = "test-util")]
            substitute: None,
        }
    }

    /// Settings for `member` over `shards` shards that coordinate through `store` instead
    /// of etcd (`seam` module docs): the link connects to nothing; the test drives the
    /// shards with [`ClusterLink::coordinator_owned`] and [`ClusterLink::coordinator_drain`].
    #[cfg(feature = "test-util")]
    pub fn with_coordination(
        member: &str,
        shards: NonZeroU32,
        store: Arc<dyn Coordination>,
    ) -> Self {
        ClusterSettings {
            options: ClusterOptions {
                endpoints: Vec::new(),
                prefix: "test/".into(),
                member: member.into(),
                lease_ttl: Duration::from_secs(15),
                request_timeout: ETCD_REQUEST_TIMEOUT,
                ca_file: None,
                client_cert: None,
                auth: None,
                admin: None,
            },
            shards,
            status_interval: Duration::from_secs(1),
            substitute: Some(Substitute(store)),
        }
    }

    /// The coordinator's period: a third of the lease (a lapsed owner's key vanishes with
    /// no membership event of ours to wake on).
    fn tick(&self) -> Duration {
        (self.options.lease_ttl / 3).max(Duration::from_millis(200))
    }
}

/// What the wiring counted (no workload label).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Attempts not sent: the lease was not confirmed for the attempt's whole backstop.
    pub not_sent_lease: u64,
    /// Attempts not sent: their shard was no longer active here (handed over).
    pub not_sent_handover: u64,
    /// Writes of this instance refused by the fence (it had lost the shard).
    pub fence_rejections: u64,
    /// Refresh tokens adopted from etcd (a new owner's first read, or after `invalid_grant`).
    pub adopted: u64,
    /// Credentials seeded into etcd by their first owner.
    pub seeded: u64,
    /// Credential writes to etcd (seeds and rotations).
    pub credential_writes: u64,
    /// Status records written to etcd.
    pub status_writes: u64,
    /// Leases lost (each followed by a new connection).
    pub leases_lost: u64,
}

#[derive(Debug, Default)]
struct Counters {
    not_sent_lease: AtomicU64,
    not_sent_handover: AtomicU64,
    fence_rejections: AtomicU64,
    adopted: AtomicU64,
    seeded: AtomicU64,
    credential_writes: AtomicU64,
    status_writes: AtomicU64,
    leases_lost: AtomicU64,
}

/// Owned, leaving and in-flight shards, under one lock.
#[derive(Debug, Default)]
struct ShardTable {
    owned: BTreeSet<ShardId>,
    leaving: BTreeSet<ShardId>,
    in_flight: BTreeMap<ShardId, u32>,
}

impl ShardTable {
    fn active(&self) -> BTreeSet<ShardId> {
        self.owned.difference(&self.leaving).copied().collect()
    }
}

/// The credential of a workload as this instance last read or wrote it in etcd.
#[derive(Debug, Clone)]
struct Synced {
    revision: i64,
    generation: u64,
    token: Secret,
}

/// How many etcd requests of attempts bringing their credential in step (a new ownership's
/// reads and seeds) run at once. Those run before the endpoint's permit, so nothing else
/// bounds them: 10,000 workloads gained at once would send 10,000 reads together, and etcd
/// answers few of them within its request timeout (measured: 20,000 timed-out reads in a
/// start of 30,000 over three instances). Queued here, they wait for their turn instead.
const ETCD_SYNC_CONCURRENCY: usize = 64;

/// Why an attempt is not sent or not a success, in cluster mode: the status context's
/// sanitised reason (never a token).
pub(crate) type NotSent = String;

/// One runtime's cluster wiring (module docs).
pub struct ClusterLink {
    settings: ClusterSettings,
    store: ArcSwapOption<ClusterStore>,
    table: Mutex<ShardTable>,
    active: watch::Sender<BTreeSet<ShardId>>,
    synced: Mutex<HashMap<WorkloadName, Synced>>,
    /// Rotations whose etcd write did not land: the token and the etcd generation it would
    /// have (0: not known). Kept across a lost lease and a new ownership (unlike `synced`):
    /// a new read that finds another token at an older (or unknown) generation in etcd
    /// writes this instance's newer one instead of adopting the rotated-away one. (After a
    /// rotation only its new token is valid at the provider, and nobody else has it unless
    /// its write landed.)
    pending: Mutex<HashMap<WorkloadName, (Secret, u64)>>,
    status: Mutex<HashMap<WorkloadName, Arc<StatusRecord>>>,
    counters: Counters,
    /// Bounds the etcd reads and writes of attempts bringing their credential in step
    /// ([`ETCD_SYNC_CONCURRENCY`]).
    etcd_slots: Semaphore,
    /// The counters of the stores this link used before the one in use (each lease lost
    /// retires its store; a handle keeps counting what its late operations do): the
    /// cluster's counters are cumulative over the runtime's life.
    retired: Mutex<Vec<StatsHandle>>,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink")
            .field("member", &self.settings.options.member)
            .finish_non_exhaustive()
    }
}

/// An attempt in flight on an active shard; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct SendGuard {
    link: Arc<ClusterLink>,
    shard: ShardId,
}

impl Drop for SendGuard {
    fn drop(&mut self) {
        let mut t = self.link.table();
        if let Some(n) = t.in_flight.get_mut(&self.shard) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.in_flight.remove(&self.shard);
            }
        }
    }
}

impl ShardHooks for ClusterLink {
    fn drain(&self, leaving: &BTreeSet<ShardId>) -> BTreeMap<ShardId, u32> {
        let mut t = self.table();
        t.leaving.clone_from(leaving);
        let counts = leaving
            .iter()
            .filter_map(|s| t.in_flight.get(s).map(|n| (*s, *n)))
            .collect();
        self.publish(&t);
        counts
    }

    fn owned(&self, owned: &BTreeSet<ShardId>) {
        let mut t = self.table();
        t.owned.clone_from(owned);
        let kept: BTreeSet<ShardId> = t.leaving.intersection(owned).copied().collect();
        t.leaving = kept;
        self.publish(&t);
    }
}

impl ClusterLink {
    /// A link, not connected yet ([`ClusterLink::spawn_driver`] connects it).
    pub(crate) fn new(settings: ClusterSettings) -> Arc<Self> {
        Arc::new(ClusterLink {
            settings,
            store: ArcSwapOption::empty(),
            table: Mutex::default(),
            active: watch::channel(BTreeSet::new()).0,
            synced: Mutex::default(),
            pending: Mutex::default(),
            status: Mutex::default(),
            counters: Counters::default(),
            etcd_slots: Semaphore::new(ETCD_SYNC_CONCURRENCY),
            retired: Mutex::default(),
        })
    }

    fn table(&self) -> MutexGuard<'_, ShardTable> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, t: &ShardTable) {
        let active = t.active();
        self.active.send_if_modified(|a| {
            let changed = *a != active;
            if changed {
                a.clone_from(&active);
            }
            changed
        });
    }

    /// The shards active here (owned, not leaving), and every change of them.
    pub(crate) fn active(&self) -> watch::Receiver<BTreeSet<ShardId>> {
        self.active.subscribe()
    }

    /// The shard of `name`.
    pub(crate) fn shard_of(&self, name: &WorkloadName) -> ShardId {
        shard_of(name.as_str(), self.settings.shards)
    }

    /// The settings it runs with.
    pub(crate) fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// The cluster as the admin API shows it (every workload with its owner, the members'
    /// admin URLs, the lease's health), read through the store in use at each call.
    pub fn view(self: &Arc<Self>) -> Arc<dyn crate::ClusterView> {
        Arc::new(super::view::EtcdView::of_link(self))
    }

    /// This instance's member id.
    pub fn member(&self) -> &str {
        &self.settings.options.member
    }

    /// The store in use now (`None` while connecting).
    pub fn store(&self) -> Option<Arc<ClusterStore>> {
        self.store.load_full()
    }

    /// What the attempts and the status mirror coordinate through: the store in use (a
    /// test's substitute with `test-util`, `seam` module docs).
    fn coordination(&self) -> Option<Arc<dyn Coordination>> {
        #[cfg(feature = "test-util")]
        if let Some(Substitute(s)) = &self.settings.substitute {
            return Some(s.clone());
        }
        self.store().map(|s| s as Arc<dyn Coordination>)
    }

    /// Tests (`test-util`): what a coordinator step tells the link after it ran, the shards
    /// owned ([`ShardHooks::owned`]).
    #[cfg(feature = "test-util")]
    pub fn coordinator_owned(&self, owned: &BTreeSet<ShardId>) {
        ShardHooks::owned(self, owned);
    }

    /// Tests (`test-util`): what a coordinator step asks before its plan: `leaving` take no
    /// new attempt; the attempts still in flight per shard ([`ShardHooks::drain`]; a shard
    /// is released only once absent from the answer).
    #[cfg(feature = "test-util")]
    pub fn coordinator_drain(&self, leaving: &BTreeSet<ShardId>) -> BTreeMap<ShardId, u32> {
        ShardHooks::drain(self, leaving)
    }

    /// The counters.
    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            not_sent_lease: get(&c.not_sent_lease),
            not_sent_handover: get(&c.not_sent_handover),
            fence_rejections: get(&c.fence_rejections),
            adopted: get(&c.adopted),
            seeded: get(&c.seeded),
            credential_writes: get(&c.credential_writes),
            status_writes: get(&c.status_writes),
            leases_lost: get(&c.leases_lost),
        }
    }

    /// The store counters (writes, fence rejections, conflicts, claims, releases) summed
    /// over every store this link used: those of stores retired by a lost lease plus the
    /// one in use. (A zombie's fence rejections happen on the store whose lease it lost,
    /// right before that store is replaced.)
    pub fn store_stats(&self) -> ClusterStats {
        let retired = self
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(StatsHandle::stats)
            .fold(ClusterStats::default(), ClusterStats::plus);
        retired.plus(self.store().map(|s| s.stats()).unwrap_or_default())
    }

    /// Keeps the counters of a store whose lease was lost.
    fn retire(&self, handle: StatsHandle) {
        self.retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(handle);
    }

    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets what this instance knew of `name`'s credential in etcd: its next attempt
    /// reads it again (a token actor started here, after a handover or a restart).
    pub(crate) fn forget(&self, name: &WorkloadName) {
        self.synced_map().remove(name);
    }

    fn pending_map(&self) -> MutexGuard<'_, HashMap<WorkloadName, (Secret, u64)>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn synced_map(&self) -> MutexGuard<'_, HashMap<WorkloadName, Synced>> {
        self.synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The guard of an attempt of a workload in `shard`, if the shard is active here.
    fn begin(self: &Arc<Self>, shard: ShardId) -> Option<SendGuard> {
        let mut t = self.table();
        if !t.owned.contains(&shard) || t.leaving.contains(&shard) {
            return None;
        }
        *t.in_flight.entry(shard).or_insert(0) += 1;
        Some(SendGuard {
            link: self.clone(),
            shard,
        })
    }

    /// Before an attempt of a rotating grant takes its endpoint's permit (with its
    /// workload's owner lock held): the credential brought in step with etcd, so that the
    /// etcd round trips of a new ownership (the first read, the seed) hold no request slot
    /// of the provider. Counted in flight on its shard meanwhile (a drain waits for the
    /// round trip; a write lands only under the fence anyway). [`ClusterLink::prepare`]
    /// checks again after the permit, without I/O unless something changed meanwhile.
    /// `Err`: not sent, and why.
    pub(crate) async fn sync_ahead(
        self: &Arc<Self>,
        spec: &WorkloadSpec,
        creds: &CredentialStore,
    ) -> Result<(), NotSent> {
        if !matches!(spec.grant, GrantSpec::RefreshToken { .. }) {
            return Ok(());
        }
        let shard = self.shard_of(&spec.name);
        let Some(_guard) = self.begin(shard) else {
            self.count(&self.counters.not_sent_handover);
            return Err(
                "not sent: this instance no longer owns the workload's shard (handed over)".into(),
            );
        };
        let Some(store) = self.coordination() else {
            return Err("not sent: not connected to etcd; a rotating grant is refreshed only with a fenced write".into());
        };
        self.sync(&*store, shard, spec, creds).await
    }

    /// Right before an attempt's request: the guard of its shard, the credential in step
    /// with etcd (rotating grants; [`ClusterLink::sync_ahead`] did the I/O already, as a
    /// rule), the local journal's last commit confirmed, and the send rule with the
    /// backstop: `send_bound` (what is left of the attempt: its request and the local work
    /// around it, `WorkloadPolicy::send_bound`) plus the bound of the etcd write of its
    /// result. `Err`: not sent, and why.
    pub(crate) async fn prepare(
        self: &Arc<Self>,
        spec: &WorkloadSpec,
        creds: &CredentialStore,
        send_bound: Duration,
    ) -> Result<SendGuard, NotSent> {
        let shard = self.shard_of(&spec.name);
        let Some(guard) = self.begin(shard) else {
            self.count(&self.counters.not_sent_handover);
            return Err(
                "not sent: this instance no longer owns the workload's shard (handed over)".into(),
            );
        };
        if !matches!(spec.grant, GrantSpec::RefreshToken { .. }) {
            // client_credentials keeps no state in etcd: it refreshes while etcd is away.
            return Ok(guard);
        }
        let Some(store) = self.coordination() else {
            return Err("not sent: not connected to etcd; a rotating grant is refreshed only with a fenced write".into());
        };
        self.sync(&*store, shard, spec, creds).await?;
        // Whatever waits for the journal waits before the send rule, not between it and
        // the request (the request then follows at once; the attempt's own check is a
        // no-op).
        creds.ensure_durable().await.map_err(|reason| {
            format!("the rotated refresh token is not saved yet ({reason}); retrying")
        })?;
        if !store.may_send(send_bound + ETCD_REQUEST_TIMEOUT) {
            self.count(&self.counters.not_sent_lease);
            return Err(
                "not sent: the cluster lease is not confirmed for this attempt's whole duration \
                 (etcd unreachable?); a rotating grant is refreshed only with a fenced write"
                    .into(),
            );
        }
        Ok(guard)
    }

    /// Whether another request of an attempt of `spec` may be sent now (the send rule; a
    /// `client_credentials` grant always may).
    pub(crate) fn may_send(&self, spec: &WorkloadSpec, send_bound: Duration) -> bool {
        if !matches!(spec.grant, GrantSpec::RefreshToken { .. }) {
            return true;
        }
        self.coordination()
            .is_some_and(|s| s.may_send(send_bound + ETCD_REQUEST_TIMEOUT))
    }

    /// Brings the local credential in step with etcd (module docs): first read under this
    /// ownership (adopt etcd's, or seed it), or write a local change (a rotation whose write
    /// did not land, new credentials) to etcd before it is presented.
    async fn sync(
        &self,
        store: &dyn Coordination,
        shard: ShardId,
        spec: &WorkloadSpec,
        creds: &CredentialStore,
    ) -> Result<(), NotSent> {
        for _ in 0..2 {
            let local = local_token(creds);
            let known = self.synced_map().get(&spec.name).cloned();
            let (credential, expected) = match known {
                None => {
                    let read = {
                        let _slot = self.etcd_slot().await;
                        store.read_credential(spec.name.as_str()).await
                    }
                    .map_err(|e| etcd_reason("read the credential from", &e))?;
                    let newer_here =
                        self.pending_map()
                            .get(&spec.name)
                            .and_then(|(t, g)| match &read.value {
                                None => Some((*g).max(1)),
                                Some(v)
                                    if v.refresh_token != *t && (*g == 0 || *g > v.generation) =>
                                {
                                    Some((*g).max(v.generation + 1))
                                }
                                Some(_) => None,
                            });
                    match (read.value, local, newer_here) {
                        // This instance rotated the token after etcd's (its write did not
                        // land): etcd's is rotated away; write ours over it.
                        (Some(_), Some(local), Some(generation)) => (
                            StoredCredential {
                                refresh_token: local,
                                generation,
                            },
                            read.revision,
                        ),
                        (Some(stored), local, _) => {
                            self.pending_map().remove(&spec.name);
                            self.adopt(spec, creds, &stored, local.as_ref()).await?;
                            self.synced_map().insert(
                                spec.name.clone(),
                                Synced {
                                    revision: read.revision,
                                    generation: stored.generation,
                                    token: stored.refresh_token,
                                },
                            );
                            return Ok(());
                        }
                        (None, None, _) => return Ok(()),
                        (None, Some(local), _) => {
                            self.count(&self.counters.seeded);
                            (
                                StoredCredential {
                                    refresh_token: local,
                                    generation: 1,
                                },
                                0,
                            )
                        }
                    }
                }
                Some(s) => match local {
                    Some(local) if local != s.token => (
                        StoredCredential {
                            refresh_token: local,
                            generation: s.generation + 1,
                        },
                        s.revision,
                    ),
                    Some(_) | None => return Ok(()),
                },
            };
            let written = {
                let _slot = self.etcd_slot().await;
                self.write(store, shard, &spec.name, credential, expected)
                    .await
            };
            match written? {
                Written::Yes => return Ok(()),
                Written::Conflict => {}
            }
        }
        Err("not sent: the credential in etcd changed twice while it was read; retrying".into())
    }

    /// A turn for one etcd request of [`ClusterLink::sync`] ([`ETCD_SYNC_CONCURRENCY`]).
    async fn etcd_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // Never closed: `None` would only let the request through unbounded.
        self.etcd_slots.acquire().await.ok()
    }

    /// Adopts etcd's refresh token when it differs from the local one.
    async fn adopt(
        &self,
        spec: &WorkloadSpec,
        creds: &CredentialStore,
        stored: &StoredCredential,
        local: Option<&Secret>,
    ) -> Result<(), NotSent> {
        if local == Some(&stored.refresh_token) {
            return Ok(());
        }
        creds
            .replace(NewCredentials {
                refresh_token: Some(stored.refresh_token.clone()),
                client_secret: None,
            })
            .await
            .map_err(|e| {
                format!("not sent: the refresh token read from etcd was not stored: {e}")
            })?;
        self.count(&self.counters.adopted);
        tracing::info!(workload = %spec.name, generation = stored.generation, "adopted the cluster's refresh token from etcd");
        Ok(())
    }

    /// One fenced, revision-checked credential write.
    async fn write(
        &self,
        store: &dyn Coordination,
        shard: ShardId,
        name: &WorkloadName,
        credential: StoredCredential,
        expected: i64,
    ) -> Result<Written, NotSent> {
        let outcome = store
            .write_credential(shard, name.as_str(), &credential, expected)
            .await
            .map_err(|e| etcd_reason("write the credential to", &e))?;
        match outcome {
            WriteOutcome::Written { revision } => {
                self.count(&self.counters.credential_writes);
                self.pending_map().remove(name);
                self.synced_map().insert(
                    name.clone(),
                    Synced {
                        revision,
                        generation: credential.generation,
                        token: credential.refresh_token,
                    },
                );
                Ok(Written::Yes)
            }
            WriteOutcome::Conflict { .. } => {
                self.forget(name);
                Ok(Written::Conflict)
            }
            WriteOutcome::FenceRejected => {
                self.count(&self.counters.fence_rejections);
                Err("refused by the cluster fence: this instance lost the workload's shard".into())
            }
        }
    }

    /// After a successful exchange that rotated the refresh token: writes the new one to
    /// etcd (fenced) before anything else keeps it. `Err`: not written, and why (the caller
    /// keeps the token locally and does not report a success; the next attempt writes it).
    pub(crate) async fn commit_rotation(
        &self,
        spec: &WorkloadSpec,
        rotated: &Secret,
    ) -> Result<(), NotSent> {
        let keep = |generation| {
            self.pending_map()
                .insert(spec.name.clone(), (rotated.clone(), generation));
        };
        let Some(store) = self.coordination() else {
            keep(0);
            return Err("not connected to etcd".into());
        };
        let Some(s) = self.synced_map().get(&spec.name).cloned() else {
            // Forgotten meanwhile (a new lease, a restarted actor): written at the next read.
            keep(0);
            return Err("the credential was not read from etcd first".into());
        };
        let credential = StoredCredential {
            refresh_token: rotated.clone(),
            generation: s.generation + 1,
        };
        let generation = credential.generation;
        let shard = self.shard_of(&spec.name);
        let written = self
            .write(&*store, shard, &spec.name, credential, s.revision)
            .await;
        if !matches!(written, Ok(Written::Yes)) {
            // Kept locally: the next attempt (or a new ownership here) writes it first.
            keep(generation);
        }
        match written? {
            Written::Yes => Ok(()),
            Written::Conflict => Err("the credential in etcd changed meanwhile".into()),
        }
    }

    /// After a final answer to `presented`: reads etcd again and adopts a newer refresh
    /// token there. True when one was adopted (the caller tries it once).
    pub(crate) async fn reread(
        &self,
        spec: &WorkloadSpec,
        creds: &CredentialStore,
        presented: &Secret,
    ) -> bool {
        let Some(store) = self.coordination() else {
            return false;
        };
        let Ok(read) = store.read_credential(spec.name.as_str()).await else {
            return false;
        };
        let Some(stored) = read.value else {
            return false;
        };
        let newer_here = self.pending_map().get(&spec.name).is_some_and(|(t, g)| {
            stored.refresh_token != *t && (*g == 0 || *g > stored.generation)
        });
        if &stored.refresh_token == presented || newer_here {
            return false;
        }
        let local = local_token(creds);
        if self
            .adopt(spec, creds, &stored, local.as_ref())
            .await
            .is_err()
        {
            return false;
        }
        self.synced_map().insert(
            spec.name.clone(),
            Synced {
                revision: read.revision,
                generation: stored.generation,
                token: stored.refresh_token,
            },
        );
        true
    }

    /// A workload's status record changed: mirrored to etcd at the next flush (coalesced).
    pub(crate) fn status_changed(&self, name: &WorkloadName, record: Arc<StatusRecord>) {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), record);
    }

    /// Writes the pending status records of active shards (one fenced write each); the
    /// others are dropped. Records not written for want of etcd wait for the next flush.
    async fn flush_status(&self) {
        let pending: Vec<(WorkloadName, Arc<StatusRecord>)> = std::mem::take(
            &mut *self
                .status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .collect();
        if pending.is_empty() {
            return;
        }
        let Some(store) = self.coordination() else {
            self.requeue(pending);
            return;
        };
        let active = self.table().active();
        let mut failed = Vec::new();
        for (name, record) in pending {
            let shard = self.shard_of(&name);
            if !active.contains(&shard) {
                continue;
            }
            match store.write_status(shard, name.as_str(), &record).await {
                Ok(WriteOutcome::Written { .. }) => self.count(&self.counters.status_writes),
                Ok(WriteOutcome::FenceRejected) => self.count(&self.counters.fence_rejections),
                Ok(WriteOutcome::Conflict { .. }) => {}
                // Refused locally: the lease is gone, the next owner writes its own.
                Err(ClusterError::LeaseLost) => {}
                Err(
                    ClusterError::Etcd { .. }
                    | ClusterError::File { .. }
                    | ClusterError::DuplicateMember(_)
                    | ClusterError::Decode { .. },
                ) => failed.push((name, record)),
            }
        }
        self.requeue(failed);
    }

    /// Puts records back unless a newer one arrived meanwhile.
    fn requeue(&self, records: Vec<(WorkloadName, Arc<StatusRecord>)>) {
        let mut map = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, record) in records {
            map.entry(name).or_insert(record);
        }
    }

    /// The driver: connect, coordinate until the lease is lost, connect again; and the
    /// status mirror. Both end when `stop` turns true.
    pub(crate) fn spawn_driver(self: &Arc<Self>, clock: Clock, mut stop: watch::Receiver<bool>) {
        let link = self.clone();
        let mut stop2 = stop.clone();
        #[cfg(feature = "test-util")]
        let substituted = self.settings.substitute.is_some();
        #[cfg(not(feature = "test-util"))]
        let substituted = false;
        // A test's substitute store: no etcd to join; the test plays the coordinator.
        tokio::spawn(async move {
            if substituted {
                return;
            }
            let mut retry = Duration::from_millis(250);
            while !*stop.borrow() {
                let store = match ClusterStore::connect(&link.settings.options, clock).await {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot join the cluster; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(retry) => {}
                            changed = stop.changed() => if changed.is_err() { return },
                        }
                        retry = (retry * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                retry = Duration::from_millis(250);
                tracing::info!(member = %link.member(), "joined the cluster");
                link.synced_map().clear();
                link.store.store(Some(store.clone()));
                let (_owned, task) = spawn_with_hooks(
                    store.clone(),
                    link.settings.shards,
                    link.settings.tick(),
                    link.clone(),
                );
                let abort = task.abort_handle();
                tokio::select! {
                    _ = task => {}
                    _ = stop.changed() => { abort.abort(); return; }
                }
                link.count(&link.counters.leases_lost);
                tracing::warn!(member = %link.member(), "the cluster lease was lost; this instance owns nothing now and joins again");
                // Swapped out, then retired: a read in between misses its counters for a
                // moment (harmless: the metrics only rise), never counts them twice.
                link.store.store(None);
                link.retire(store.stats_handle());
            }
        });
        let link = self.clone();
        tokio::spawn(async move {
            let every = link.settings.status_interval;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => link.flush_status().await,
                    _ = stop2.changed() => { link.flush_status().await; return; }
                }
            }
        });
    }

    /// Leaves the cluster at once (the runtime is shutting down, its actors stopped): the
    /// lease is revoked and every shard key with it, so other instances take over now
    /// rather than after the TTL. The driver must be stopped first.
    pub(crate) async fn leave(&self) {
        {
            let mut t = self.table();
            t.owned.clear();
            t.leaving.clear();
            self.publish(&t);
        }
        if let Some(store) = self.store.swap(None)
            && let Err(e) = store.revoke().await
        {
            tracing::warn!(error = %e, "cluster lease not revoked; it expires by its TTL");
        }
    }
}

enum Written {
    Yes,
    Conflict,
}

fn local_token(creds: &CredentialStore) -> Option<Secret> {
    match creds.snapshot().grant {
        Grant::RefreshToken(t) => Some(t),
        // Stateless grants: nothing rotates, nothing to keep in etcd.
        Grant::ClientCredentials | Grant::JwtBearer(_) | Grant::TokenExchange(_) => None,
    }
}

/// The reason of an attempt not sent for want of etcd: short, so that the status context
/// keeps all of it (etcd's own error goes to the log).
fn etcd_reason(what: &str, e: &ClusterError) -> NotSent {
    tracing::warn!(error = %e, "cannot {what} etcd");
    format!("not sent: cannot {what} etcd; a rotating grant is refreshed only with a fenced write")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Arc<ClusterLink> {
        ClusterLink::new(ClusterSettings {
            options: ClusterOptions {
                endpoints: vec!["http://127.0.0.1:1".into()],
                prefix: "t/".into(),
                member: "a".into(),
                lease_ttl: Duration::from_secs(15),
                request_timeout: Duration::from_secs(2),
                ca_file: None,
                client_cert: None,
                auth: None,
                admin: None,
            },
            shards: NonZeroU32::new(8).expect("non-zero"),
            status_interval: Duration::from_secs(1),
            #[cfg(feature = "test-util")]
            substitute: None,
        })
    }

    fn set(v: &[ShardId]) -> BTreeSet<ShardId> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_draining_shard_takes_no_new_attempt_and_counts_those_in_flight() {
        let l = link();
        l.owned(&set(&[1, 2]));
        assert_eq!(*l.active().borrow(), set(&[1, 2]));
        let g1 = l.begin(1).expect("shard 1 is active");
        let g1b = l.begin(1).expect("again");
        assert!(l.begin(3).is_none(), "not owned");
        // Shard 1 leaves: the count and the stop happen together.
        let counts = l.drain(&set(&[1]));
        assert_eq!(counts, BTreeMap::from([(1, 2)]));
        assert!(l.begin(1).is_none(), "a leaving shard takes no new attempt");
        assert_eq!(*l.active().borrow(), set(&[2]));
        // Publishing owned (still holding 1) does not make it active again.
        l.owned(&set(&[1, 2]));
        assert!(l.begin(1).is_none());
        drop((g1, g1b));
        assert_eq!(l.drain(&set(&[1])), BTreeMap::new(), "idle: releasable");
        l.owned(&set(&[2]));
        assert_eq!(*l.active().borrow(), set(&[2]));
        // Wanted again before it was released: active again.
        l.owned(&set(&[1, 2]));
        l.drain(&BTreeSet::new());
        assert!(l.begin(1).is_some());
    }

    #[test]
    fn the_counters_of_stores_retired_by_a_lost_lease_still_count_in_the_view() {
        let l = link();
        // Two leases lost, each after its store had counted (a zombie's fence rejections
        // happen on the store whose lease it lost, right before the store is replaced).
        l.retire(StatsHandle::counting(ClusterStats {
            fence_rejections: 3,
            claims: 5,
            releases: 1,
            writes: 7,
            conflicts: 0,
        }));
        l.retire(StatsHandle::counting(ClusterStats {
            fence_rejections: 1,
            claims: 2,
            ..ClusterStats::default()
        }));
        let c = l.view().counters();
        assert_eq!(
            c.fence_rejections, 4,
            "/metrics keeps the zombie's rejections"
        );
        assert_eq!((c.acquired, c.released, c.writes), (7, 1, 7));
    }

    #[test]
    fn a_lost_lease_leaves_nothing_active() {
        let l = link();
        l.owned(&set(&[0, 5]));
        l.owned(&BTreeSet::new());
        assert!(l.active().borrow().is_empty());
        assert!(l.begin(0).is_none());
    }
}
