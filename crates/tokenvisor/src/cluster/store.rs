//! The fenced store: one instance's connection to etcd, its member lease, and the
//! operations the ownership rules need (claim, release, holders, members) and the fenced,
//! revision-checked reads and writes of a workload's credential and status.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KeyValue,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokenvisor_config::cluster::ClusterConfig;
use tokenvisor_core::cluster::{ShardId, lease_confirmed_until, may_send};
use tokenvisor_core::{Secret, StatusRecord};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ClusterError, LeaseState, lease, members};
use crate::clock::Clock;

/// How to reach the cluster and who this instance is.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// etcd endpoints (`http://host:port`, or all `https://` with `ca_file`).
    pub endpoints: Vec<String>,
    /// The cluster's key space, ending in `/`.
    pub prefix: String,
    /// This instance's member id.
    pub member: String,
    /// The member lease's TTL (whole seconds).
    pub lease_ttl: Duration,
    /// The bound of each etcd request and of connecting.
    pub request_timeout: Duration,
    /// TLS: the CA's PEM file.
    pub ca_file: Option<std::path::PathBuf>,
    /// TLS client certificate and key PEM files.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// etcd user and password.
    pub auth: Option<(String, Secret)>,
    /// Where this member's admin API is reached (`http://127.0.0.1:PORT`), published in its
    /// member key at every connect (the cluster's token route redirects there); `None`: not
    /// published.
    pub admin: Option<String>,
}

impl ClusterOptions {
    /// The options of a `[cluster]` section; `state_dir` names the default member id
    /// ([`default_member`]) when the section sets none.
    pub fn from_config(cfg: &ClusterConfig, state_dir: &Path) -> Self {
        ClusterOptions {
            endpoints: cfg.endpoints.clone(),
            prefix: cfg.prefix.clone(),
            member: cfg
                .member
                .clone()
                .unwrap_or_else(|| default_member(state_dir)),
            lease_ttl: cfg.lease_ttl,
            request_timeout: tokenvisor_config::cluster::ETCD_REQUEST_TIMEOUT,
            ca_file: cfg.ca_file.clone(),
            client_cert: cfg.client_cert.clone(),
            auth: cfg.auth.clone(),
            admin: None,
        }
    }
}

/// The default member id: `<hostname>-<8 hex digits of the SHA-256 of the state
/// directory's path>`. Stable across restarts of one instance; two instances on one host
/// differ by their state directories (which must differ anyway: each has its journal).
pub fn default_member(state_dir: &Path) -> String {
    let host = rustix::system::uname();
    let host: String = host
        .nodename()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    match host.trim_start_matches('.') {
        "" => format!("tokenvisor-{hash}"),
        host => format!("{host}-{hash}"),
    }
}

/// A workload's credential as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The refresh token (prints `…`).
    pub refresh_token: Secret,
    /// Its generation (bumped at each rotation or replacement).
    pub generation: u64,
}

/// A value read with the revision that last modified its key (0: the key is absent). A
/// write that must not overwrite a newer one passes this revision back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value (`None`: absent).
    pub value: Option<T>,
    /// The key's `mod_revision`, 0 when absent.
    pub revision: i64,
}

/// The answer to a claim of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The shard key is ours (written now, or already bound to our lease).
    Claimed,
    /// Another member's live lease holds it.
    HeldBy(String),
}

/// The answer to a release of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The shard key was ours and is deleted.
    Released,
    /// It was not ours (absent, or bound to another lease): nothing deleted.
    NotHeld,
}

/// The answer to a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written; the revision of the write (the credential's new `mod_revision`).
    Written {
        /// etcd's revision after the transaction.
        revision: i64,
    },
    /// The fence refused it: the shard key is not bound to our lease (we lost or released
    /// the shard, or our lease expired). Nothing was written.
    FenceRejected,
    /// The credential changed since the revision given; nothing was written.
    Conflict {
        /// Its current `mod_revision` (0: absent).
        revision: i64,
    },
}

/// Counters of one store (no workload label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterStats {
    /// Fenced writes done.
    pub writes: u64,
    /// Fenced writes refused by the fence.
    pub fence_rejections: u64,
    /// Credential writes refused by the revision check.
    pub conflicts: u64,
    /// Shards claimed.
    pub claims: u64,
    /// Shards released.
    pub releases: u64,
}

impl ClusterStats {
    /// The two counts added, field by field.
    #[must_use]
    pub fn plus(self, o: ClusterStats) -> ClusterStats {
        ClusterStats {
            writes: self.writes + o.writes,
            fence_rejections: self.fence_rejections + o.fence_rejections,
            conflicts: self.conflicts + o.conflicts,
            claims: self.claims + o.claims,
            releases: self.releases + o.releases,
        }
    }
}

/// A store's counters, readable after the store is gone (the runtime's link keeps those of
/// the stores whose lease was lost: its counters are cumulative).
#[derive(Debug, Clone)]
pub(crate) struct StatsHandle(Arc<Counters>);

impl StatsHandle {
    /// A handle counting `stats` already (unit tests of its readers).
    #[cfg(test)]
    pub(crate) fn counting(stats: ClusterStats) -> Self {
        let c = Counters::default();
        c.writes.store(stats.writes, Ordering::Relaxed);
        c.fence_rejections
            .store(stats.fence_rejections, Ordering::Relaxed);
        c.conflicts.store(stats.conflicts, Ordering::Relaxed);
        c.claims.store(stats.claims, Ordering::Relaxed);
        c.releases.store(stats.releases, Ordering::Relaxed);
        StatsHandle(Arc::new(c))
    }

    /// The counts now.
    pub(crate) fn stats(&self) -> ClusterStats {
        let c = &self.0;
        ClusterStats {
            writes: c.writes.load(Ordering::Relaxed),
            fence_rejections: c.fence_rejections.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            claims: c.claims.load(Ordering::Relaxed),
            releases: c.releases.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    writes: AtomicU64,
    fence_rejections: AtomicU64,
    conflicts: AtomicU64,
    claims: AtomicU64,
    releases: AtomicU64,
}

/// One instance's connection to the cluster: its member lease (kept alive by a task of its
/// own) and the fenced operations. Dropping it stops the keepalive: the lease then expires
/// on the server after its TTL; [`ClusterStore::leave`] revokes it at once.
pub struct ClusterStore {
    client: Client,
    prefix: String,
    member: String,
    lease_id: i64,
    lease: watch::Receiver<LeaseState>,
    keepalive: JoinHandle<()>,
    clock: Clock,
    counters: Arc<Counters>,
    /// How often a request refused before it was sent is sent again.
    retries: usize,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("prefix", &self.prefix)
            .field("member", &self.member)
            .field("lease_id", &self.lease_id)
            .finish_non_exhaustive()
    }
}

impl Drop for ClusterStore {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// Whether a request never left this host: the connection to the etcd member the client
/// picked was refused (that member is down). Sending it again is safe, even a write, and
/// the client's balancer may pick a live member.
fn never_sent(e: &etcd_client::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> =
        if let etcd_client::Error::GRpcStatus(s) = e {
            Some(s)
        } else if let etcd_client::Error::TransportError(t) = e {
            Some(t)
        } else {
            None
        };
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        next = err.source();
    }
    false
}

fn is_lease_gone(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("requested lease not found"))
}

impl ClusterStore {
    /// Connects, grants the member lease, registers `members/<member>` under it and starts
    /// the keepalive. A member key still bound to another lease (this member's previous
    /// run, killed) is waited for up to twice the TTL; a live duplicate is
    /// [`ClusterError::DuplicateMember`].
    ///
    /// # Errors
    /// [`ClusterError`]: a TLS file unreadable, etcd unreachable or refusing, a duplicate.
    pub async fn connect(opts: &ClusterOptions, clock: Clock) -> Result<Self, ClusterError> {
        let mut connect = ConnectOptions::new()
            .with_timeout(opts.request_timeout)
            .with_connect_timeout(opts.request_timeout);
        if let Some((user, password)) = &opts.auth {
            connect = connect.with_user(user.clone(), password.expose().to_owned());
        }
        if let Some(ca) = &opts.ca_file {
            let mut tls =
                TlsOptions::new().ca_certificate(Certificate::from_pem(read("ca_file", ca).await?));
            if let Some((cert, key)) = &opts.client_cert {
                let (cert, key) = (read("cert_file", cert).await?, read("key_file", key).await?);
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(tls);
        }
        let mut client = Client::connect(&opts.endpoints, Some(connect))
            .await
            .map_err(|e| ClusterError::etcd("connect", &e))?;
        let ttl = i64::try_from(opts.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let sent = clock.now();
        let grant = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| ClusterError::etcd("lease grant", &e))?;
        let lease_id = grant.id();
        let granted = Duration::from_secs(grant.ttl().unsigned_abs());
        let key = format!("{}members/{}", opts.prefix, opts.member);
        let deadline = tokio::time::Instant::now() + opts.lease_ttl * 2;
        loop {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.as_str(),
                    match &opts.admin {
                        Some(admin) => member_value(&opts.member, Some(admin)),
                        None => opts.member.clone(),
                    },
                    Some(PutOptions::new().with_lease(lease_id)),
                )]);
            let answer = client
                .txn(txn)
                .await
                .map_err(|e| ClusterError::etcd("register", &e))?;
            if answer.succeeded() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = client.lease_revoke(lease_id).await;
                return Err(ClusterError::DuplicateMember(opts.member.clone()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let initial = LeaseState {
            confirmed_until: Some(lease_confirmed_until(sent, granted)),
            lost: false,
            renewals: 0,
        };
        let (tx, rx) = watch::channel(initial);
        let keepalive = tokio::spawn(lease::keep_alive(
            client.lease_client(),
            lease_id,
            granted,
            clock,
            tx,
        ));
        Ok(ClusterStore {
            client,
            prefix: opts.prefix.clone(),
            member: opts.member.clone(),
            lease_id,
            lease: rx,
            keepalive,
            clock,
            counters: Arc::default(),
            retries: 2 * opts.endpoints.len(),
        })
    }

    /// This instance's member id.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The member lease's id (every key this instance owns is bound to it).
    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    /// The lease as last confirmed (read without awaiting).
    pub fn lease(&self) -> LeaseState {
        *self.lease.borrow()
    }

    /// A receiver of every change of [`ClusterStore::lease`].
    pub fn lease_changes(&self) -> watch::Receiver<LeaseState> {
        self.lease.clone()
    }

    /// Whether a refresh whose attempt may last `backstop` may be sent now: the lease is
    /// not lost and `now + backstop` is before its end as last confirmed
    /// (`tokenvisor_core::cluster::may_send`).
    pub fn may_send(&self, backstop: Duration) -> bool {
        let state = self.lease();
        !state.lost && may_send(self.clock.now(), backstop, state.confirmed_until)
    }

    /// The counters.
    pub fn stats(&self) -> ClusterStats {
        self.stats_handle().stats()
    }

    /// A handle on the counters that outlives the store.
    pub(crate) fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.counters.clone())
    }

    fn shard_key(&self, shard: ShardId) -> String {
        format!("{}shards/{shard:05}", self.prefix)
    }

    fn credential_key(&self, name: &str) -> String {
        format!("{}credentials/{name}", self.prefix)
    }

    fn status_key(&self, name: &str) -> String {
        format!("{}status/{name}", self.prefix)
    }

    fn check_lease(&self) -> Result<(), ClusterError> {
        if self.lease().lost {
            return Err(ClusterError::LeaseLost);
        }
        Ok(())
    }

    /// Runs `request` on a clone of the client; a request refused by a dead member before
    /// it was sent ([`never_sent`]) is sent again, up to `retries` times.
    async fn request<T, F, Fut>(&self, op: &'static str, mut request: F) -> Result<T, ClusterError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut tries = 0;
        loop {
            let started = tokio::time::Instant::now();
            let answer = request(self.client.clone()).await;
            crate::metrics::observe_etcd_request(op, started.elapsed());
            match answer {
                Ok(answer) => return Ok(answer),
                Err(e) if never_sent(&e) && tries < self.retries => tries += 1,
                Err(e) if is_lease_gone(&e) => return Err(ClusterError::LeaseLost),
                Err(e) => return Err(ClusterError::etcd(op, &e)),
            }
        }
    }

    async fn txn(&self, op: &'static str, txn: Txn) -> Result<TxnResponse, ClusterError> {
        self.request(op, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    async fn get(
        &self,
        key: String,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, ClusterError> {
        self.request("get", |mut c| {
            let (key, options) = (key.clone(), options.clone());
            async move { c.get(key, options).await }
        })
        .await
    }

    /// The live members (sorted).
    ///
    /// # Errors
    /// [`ClusterError::Etcd`].
    pub async fn members(&self) -> Result<Vec<String>, ClusterError> {
        let prefix = format!("{}members/", self.prefix);
        let (ids, _) = self
            .request("get", |mut c| {
                let prefix = prefix.clone();
                async move { members::list(&mut c, &prefix).await }
            })
            .await?;
        Ok(ids.into_iter().collect())
    }

    /// The live members, kept current by a watch task (ends when every receiver is gone).
    pub fn watch_members(&self) -> watch::Receiver<Vec<String>> {
        let (tx, rx) = watch::channel(Vec::new());
        let prefix = format!("{}members/", self.prefix);
        tokio::spawn(members::watch_members(self.client.clone(), prefix, tx));
        rx
    }

    /// Every held shard: its holder's member id and whether the key is bound to our lease
    /// (`true`: ours). A key bound to another lease is another holder's even when it names
    /// our member id (our previous run, whose lease has not expired yet).
    ///
    /// # Errors
    /// [`ClusterError::Etcd`].
    pub async fn shard_holders(&self) -> Result<BTreeMap<ShardId, (String, bool)>, ClusterError> {
        let prefix = format!("{}shards/", self.prefix);
        let answer = self
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut holders = BTreeMap::new();
        for kv in answer.kvs() {
            let shard = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(prefix.as_str()))
                .and_then(|s| s.parse::<ShardId>().ok());
            let holder = kv.value_str().ok().map(str::to_owned);
            if let (Some(shard), Some(holder)) = (shard, holder) {
                holders.insert(shard, (holder, kv.lease() == self.lease_id));
            }
        }
        Ok(holders)
    }

    /// Claims `shard`: written only if no key exists (released by its old owner, or its
    /// lease expired), bound to our lease.
    ///
    /// # Errors
    /// [`ClusterError::LeaseLost`], [`ClusterError::Etcd`].
    pub async fn claim(&self, shard: ShardId) -> Result<Claim, ClusterError> {
        self.check_lease()?;
        let key = self.shard_key(shard);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.member.as_str(),
                Some(PutOptions::new().with_lease(self.lease_id)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let answer = self.txn("claim", txn).await?;
        if answer.succeeded() {
            self.counters.claims.fetch_add(1, Ordering::Relaxed);
            return Ok(Claim::Claimed);
        }
        Ok(match first_kv(&answer, 0) {
            Some(kv) if kv.lease() == self.lease_id => Claim::Claimed,
            Some(kv) => Claim::HeldBy(kv.value_str().unwrap_or("?").to_owned()),
            // deleted between the compare and the get cannot happen in one transaction
            None => Claim::HeldBy(String::new()),
        })
    }

    /// Releases `shard` if its key is bound to our lease. The caller has drained it first
    /// (no attempt in flight: `tokenvisor_core::cluster::plan_handover`).
    ///
    /// # Errors
    /// [`ClusterError::Etcd`].
    pub async fn release(&self, shard: ShardId) -> Result<Release, ClusterError> {
        let key = self.shard_key(shard);
        let txn = Txn::new()
            .when([Compare::lease(
                key.as_str(),
                CompareOp::Equal,
                self.lease_id,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        if self.txn("release", txn).await?.succeeded() {
            self.counters.releases.fetch_add(1, Ordering::Relaxed);
            return Ok(Release::Released);
        }
        Ok(Release::NotHeld)
    }

    /// The credential of `name` with its revision (0 and `None` when absent). A new owner
    /// reads it before its first attempt; an owner told `invalid_grant` reads it again.
    ///
    /// # Errors
    /// [`ClusterError::Etcd`], [`ClusterError::Decode`].
    pub async fn read_credential(
        &self,
        name: &str,
    ) -> Result<Versioned<StoredCredential>, ClusterError> {
        let key = self.credential_key(name);
        let answer = self.get(key.clone(), None).await?;
        let Some(kv) = answer.kvs().first() else {
            return Ok(Versioned {
                value: None,
                revision: 0,
            });
        };
        let bad = |why| ClusterError::Decode {
            key: key.clone(),
            why,
        };
        let v: serde_json::Value =
            serde_json::from_slice(kv.value()).map_err(|_| bad("not JSON"))?;
        let refresh_token = v["refresh_token"]
            .as_str()
            .ok_or_else(|| bad("no refresh_token"))?;
        let generation = v["generation"]
            .as_u64()
            .ok_or_else(|| bad("no generation"))?;
        Ok(Versioned {
            value: Some(StoredCredential {
                refresh_token: Secret::from(refresh_token),
                generation,
            }),
            revision: kv.mod_revision(),
        })
    }

    /// The status record of `name` as its owner last wrote it.
    ///
    /// # Errors
    /// [`ClusterError::Etcd`], [`ClusterError::Decode`].
    pub async fn read_status(&self, name: &str) -> Result<Option<StatusRecord>, ClusterError> {
        let key = self.status_key(name);
        let answer = self.get(key.clone(), None).await?;
        answer
            .kvs()
            .first()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|_| ClusterError::Decode {
                    key: key.clone(),
                    why: "not a status record",
                })
            })
            .transpose()
    }

    /// Writes the credential of `name` (in `shard`), and its status record when given, in
    /// one transaction guarded by the fence (the shard key bound to our lease) and by the
    /// credential's revision (`expected`, as read; 0: must be absent).
    ///
    /// # Errors
    /// [`ClusterError::LeaseLost`] (known locally), [`ClusterError::Etcd`]. A refusal is an
    /// `Ok` [`WriteOutcome`].
    pub async fn write_credential(
        &self,
        shard: ShardId,
        name: &str,
        credential: &StoredCredential,
        expected: i64,
        status: Option<&StatusRecord>,
    ) -> Result<WriteOutcome, ClusterError> {
        self.check_lease()?;
        let (shard_key, key) = (self.shard_key(shard), self.credential_key(name));
        let value = json!({
            "refresh_token": credential.refresh_token.expose(),
            "generation": credential.generation,
        });
        let mut puts = vec![TxnOp::put(key.as_str(), value.to_string(), None)];
        if let Some(record) = status {
            puts.push(TxnOp::put(self.status_key(name), status_json(record), None));
        }
        let txn = Txn::new()
            .when([
                Compare::lease(shard_key.as_str(), CompareOp::Equal, self.lease_id),
                Compare::mod_revision(key.as_str(), CompareOp::Equal, expected),
            ])
            .and_then(puts)
            .or_else([
                TxnOp::get(shard_key.as_str(), None),
                TxnOp::get(key.as_str(), None),
            ]);
        let answer = self.txn("credential write", txn).await?;
        if answer.succeeded() {
            return Ok(self.written(&answer));
        }
        let fenced = first_kv(&answer, 0).is_none_or(|kv| kv.lease() != self.lease_id);
        if fenced {
            return Ok(self.fence_rejected());
        }
        self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
        let revision = first_kv(&answer, 1).map_or(0, |kv| kv.mod_revision());
        Ok(WriteOutcome::Conflict { revision })
    }

    /// Writes the status record of `name` (in `shard`) guarded by the fence.
    ///
    /// # Errors
    /// [`ClusterError::LeaseLost`] (known locally), [`ClusterError::Etcd`].
    pub async fn write_status(
        &self,
        shard: ShardId,
        name: &str,
        record: &StatusRecord,
    ) -> Result<WriteOutcome, ClusterError> {
        self.check_lease()?;
        let shard_key = self.shard_key(shard);
        let txn = Txn::new()
            .when([Compare::lease(
                shard_key.as_str(),
                CompareOp::Equal,
                self.lease_id,
            )])
            .and_then([TxnOp::put(self.status_key(name), status_json(record), None)]);
        let answer = self.txn("status write", txn).await?;
        if answer.succeeded() {
            return Ok(self.written(&answer));
        }
        Ok(self.fence_rejected())
    }

    /// [`ClusterStore::leave`] for a store still shared (the runtime's, at shutdown): stops
    /// the keepalive and revokes the lease, deleting every key bound to it.
    ///
    /// # Errors
    /// [`ClusterError::Etcd`] (the lease then expires by its TTL).
    pub async fn revoke(&self) -> Result<(), ClusterError> {
        self.keepalive.abort();
        match self.client.clone().lease_revoke(self.lease_id).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_gone(&e) => Ok(()),
            Err(e) => Err(ClusterError::etcd("lease revoke", &e)),
        }
    }

    fn written(&self, answer: &TxnResponse) -> WriteOutcome {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        WriteOutcome::Written {
            revision: answer
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision),
        }
    }

    fn fence_rejected(&self) -> WriteOutcome {
        self.counters
            .fence_rejections
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(member = %self.member, "cluster write refused by the fence: this instance no longer owns the shard");
        WriteOutcome::FenceRejected
    }

    /// Leaves the cluster at once: revokes the lease, which deletes the member key and every
    /// shard key bound to it (the caller has drained its shards first).
    ///
    /// # Errors
    /// [`ClusterError::Etcd`] (the lease then expires by its TTL).
    pub async fn leave(self) -> Result<(), ClusterError> {
        self.keepalive.abort();
        match self.client.clone().lease_revoke(self.lease_id).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_gone(&e) => Ok(()),
            Err(e) => Err(ClusterError::etcd("lease revoke", &e)),
        }
    }

    /// Test hook: stops the keepalive as a paused (`SIGSTOP`) or partitioned instance would
    /// stop renewing; the lease then lapses on the server after its TTL.
    #[cfg(feature = "test-util")]
    pub fn stall_keepalive(&self) {
        self.keepalive.abort();
    }
}

fn status_json(record: &StatusRecord) -> String {
    serde_json::to_string(record).unwrap_or_default()
}

/// The first key-value of the `i`-th operation of a transaction's answer, if it was a get
/// that found one.
fn first_kv(answer: &TxnResponse, i: usize) -> Option<KeyValue> {
    match answer.op_responses().into_iter().nth(i)? {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        TxnOpResponse::Put(_) | TxnOpResponse::Delete(_) | TxnOpResponse::Txn(_) => None,
    }
}

async fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClusterError> {
    tokio::fs::read(path).await.map_err(|e| ClusterError::File {
        what,
        path: path.display().to_string(),
        kind: e.kind(),
    })
}

// ---------------------------------------------------------------------------------------
// The cluster view's reads and the member's published admin URL (`super::view`).

/// One page of a range read: the keys (under the prefix, the directory stripped) with
/// their values, and whether more follow.
pub(super) struct Page {
    /// `(key without "<prefix><dir>", value, the lease it is bound to (0: none))`, in key
    /// order.
    pub(super) entries: Vec<(String, Vec<u8>, i64)>,
    /// More keys follow the last one.
    pub(super) more: bool,
    /// The revision the page was read at.
    pub(super) revision: i64,
}

/// The value of a member key: `{"id", "admin"}` (JSON) once the member published its admin
/// URL ([`ClusterStore::publish_admin`]), its bare id before.
pub(super) fn member_value(id: &str, admin: Option<&str>) -> String {
    json!({ "id": id, "admin": admin }).to_string()
}

impl ClusterStore {
    /// Publishes where this member's admin API is reached (`http://127.0.0.1:PORT`, the
    /// admin router's base): the member key's value becomes `{"id", "admin"}`, still bound
    /// to our lease. Call it after [`ClusterStore::connect`] (again after a reconnect).
    /// `false`: the member key is not ours any more (the lease is gone).
    ///
    /// # Errors
    /// [`ClusterError::LeaseLost`], [`ClusterError::Etcd`].
    pub async fn publish_admin(&self, admin_url: &str) -> Result<bool, ClusterError> {
        self.check_lease()?;
        let key = format!("{}members/{}", self.prefix, self.member);
        let txn = Txn::new()
            .when([Compare::lease(
                key.as_str(),
                CompareOp::Equal,
                self.lease_id,
            )])
            .and_then([TxnOp::put(
                key.as_str(),
                member_value(&self.member, Some(admin_url)),
                Some(PutOptions::new().with_lease(self.lease_id)),
            )]);
        Ok(self.txn("publish admin", txn).await?.succeeded())
    }

    /// One page of the keys under `<prefix><dir>` after `after` (a key as returned, without
    /// the directory), at most `limit` of them, read at `revision` (0: the newest; pass the
    /// first page's revision to the next pages, so that all of them show one revision).
    ///
    /// # Errors
    /// [`ClusterError::Etcd`] (a compacted revision included).
    pub(super) async fn range_page(
        &self,
        dir: &str,
        after: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> Result<Page, ClusterError> {
        let base = format!("{}{dir}", self.prefix);
        let start = match after {
            Some(k) => format!("{base}{k}\0"),
            None => base.clone(),
        };
        let mut options = GetOptions::new()
            .with_range(prefix_end(&base))
            .with_limit(limit)
            .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Ascend);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let answer = self.get(start, Some(options)).await?;
        let entries = answer
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?.strip_prefix(base.as_str())?;
                Some((key.to_owned(), kv.value().to_vec(), kv.lease()))
            })
            .collect();
        Ok(Page {
            entries,
            more: answer.more(),
            revision: answer
                .header()
                .map_or(revision, etcd_client::ResponseHeader::revision),
        })
    }

    /// The value of one key under the prefix (`dir` + `key`) and the lease it is bound to
    /// (0: none), if present.
    ///
    /// # Errors
    /// [`ClusterError::Etcd`].
    pub(super) async fn get_value(
        &self,
        dir: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, i64)>, ClusterError> {
        let answer = self.get(format!("{}{dir}{key}", self.prefix), None).await?;
        Ok(answer
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.lease())))
    }

    /// The clock the lease is confirmed on.
    pub(super) fn clock(&self) -> Clock {
        self.clock
    }
}

/// The end of the range of every key starting with `prefix` (etcd's prefix rule: the last
/// byte below 0xff incremented, the rest dropped).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
