//! The server's shared state: clients, grants (refresh-token families), faults, counters.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::chaos::{ChaosOutcome, ChaosSlot};
use crate::config::{ClientSpec, IdpConfig, TokenShape};
use crate::counters::{CounterSet, Counters, RequestInfo, bump};
use crate::fault::{Fault, FaultTable};

/// How many rotated-away refresh tokens a family remembers for reuse detection. Older ones
/// are forgotten (presenting one then answers `invalid_grant` without revoking the family),
/// which bounds memory in long soak runs. A client that loses a rotation (a crash between the
/// provider's answer and the write-back) presents the token just before the current one, so a
/// short window catches every reuse that matters. It was 16: in a 10,000-workload soak the
/// embedded provider's remembered tokens then grew the process by ≈ 5.7 KB per workload over
/// the first 16 rotations (≈ 8 minutes of 30 s tokens), which the soak's RSS-growth check,
/// meant for tokenvisor, counted (docs/BENCHMARKS.md, soak).
const USED_TOKENS_KEPT: usize = 4;

/// Length of the random part of a token.
const TOKEN_CHARS: usize = 32;

/// A random opaque token: `prefix` followed by 32 alphanumeric characters.
pub(crate) fn random_token(prefix: &str) -> String {
    let mut token = String::with_capacity(prefix.len() + TOKEN_CHARS);
    token.push_str(prefix);
    for _ in 0..TOKEN_CHARS {
        token.push(fastrand::alphanumeric());
    }
    token
}

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A registered client and what the server saw of it.
#[derive(Debug)]
pub(crate) struct ClientEntry {
    pub(crate) spec: ClientSpec,
    pub(crate) requests: AtomicU64,
    pub(crate) last: Mutex<Option<Arc<RequestInfo>>>,
}

/// One refresh token.
#[derive(Debug)]
struct TokenRecord {
    family: u64,
    used: bool,
}

/// A grant: the chain of refresh tokens issued by rotation from one initial token.
#[derive(Debug)]
struct Family {
    client_id: String,
    revoked: bool,
    scope: Option<String>,
    /// Rotated-away tokens still remembered, oldest first.
    used: VecDeque<String>,
    /// Every token of the family still in the token map (for cleanup on revoke).
    current: Option<String>,
}

#[derive(Debug, Default)]
struct GrantStore {
    tokens: HashMap<String, TokenRecord>,
    families: HashMap<u64, Family>,
    next_family: u64,
}

/// The result of presenting a refresh token.
#[derive(Debug)]
pub(crate) enum RefreshOutcome {
    /// Valid: issue an access token (and the new refresh token, on rotation).
    Issued {
        refresh_token: Option<String>,
        scope: Option<String>,
    },
    /// Not a token this server knows (or one forgotten long ago).
    Unknown,
    /// A token of another client.
    WrongClient,
    /// A token whose grant was revoked.
    Revoked,
    /// A token already rotated away: the family has now been revoked.
    Reused,
}

/// Everything the HTTP handlers and the library handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) addr: SocketAddr,
    pub(crate) default_lifetime: Duration,
    pub(crate) default_shape: TokenShape,
    clients: RwLock<HashMap<String, Arc<ClientEntry>>>,
    grants: Mutex<GrantStore>,
    pub(crate) faults: FaultTable,
    pub(crate) chaos: ChaosSlot,
    pub(crate) counters: CounterSet,
    last_any: Mutex<Option<Arc<RequestInfo>>>,
}

impl Shared {
    pub(crate) fn new(addr: SocketAddr, config: &IdpConfig) -> Self {
        Self {
            addr,
            default_lifetime: config.access_token_lifetime,
            default_shape: config.token_shape.clone(),
            clients: RwLock::default(),
            grants: Mutex::default(),
            faults: FaultTable::default(),
            chaos: ChaosSlot::default(),
            counters: CounterSet::default(),
            last_any: Mutex::default(),
        }
    }

    pub(crate) fn client(&self, id: &str) -> Option<Arc<ClientEntry>> {
        self.clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    pub(crate) fn register_client(&self, spec: ClientSpec) {
        let mut clients = self.clients.write().unwrap_or_else(PoisonError::into_inner);
        let (requests, last) = clients.get(&spec.id).map_or((0, None), |old| {
            (
                old.requests.load(Ordering::Relaxed),
                lock(&old.last).clone(),
            )
        });
        let id = spec.id.clone();
        clients.insert(
            id,
            Arc::new(ClientEntry {
                spec,
                requests: AtomicU64::new(requests),
                last: Mutex::new(last),
            }),
        );
    }

    pub(crate) fn client_ids(&self) -> Vec<String> {
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        let mut ids: Vec<String> = clients.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub(crate) fn per_client_counts(&self) -> BTreeMap<String, u64> {
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        clients
            .iter()
            .map(|(id, e)| (id.clone(), e.requests.load(Ordering::Relaxed)))
            .collect()
    }

    pub(crate) fn counters_snapshot(&self) -> Counters {
        self.counters.snapshot(self.per_client_counts())
    }

    pub(crate) fn reset_counters(&self) {
        self.counters.reset();
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        for entry in clients.values() {
            entry.requests.store(0, Ordering::Relaxed);
        }
    }

    /// Records a request as the last one (of its client, and of the server).
    pub(crate) fn record(&self, entry: Option<&ClientEntry>, info: Arc<RequestInfo>) {
        if let Some(entry) = entry {
            *lock(&entry.last) = Some(Arc::clone(&info));
        }
        *lock(&self.last_any) = Some(info);
    }

    pub(crate) fn last_request(&self, client_id: Option<&str>) -> Option<RequestInfo> {
        match client_id {
            Some(id) => self
                .client(id)
                .and_then(|e| lock(&e.last).as_deref().cloned()),
            None => lock(&self.last_any).as_deref().cloned(),
        }
    }

    /// Starts a new grant for a client and returns its first refresh token.
    pub(crate) fn new_family(&self, client_id: &str, scope: Option<String>) -> String {
        let token = random_token("rt_");
        let mut grants = lock(&self.grants);
        let family = grants.next_family;
        grants.next_family += 1;
        grants.families.insert(
            family,
            Family {
                client_id: client_id.to_owned(),
                revoked: false,
                scope,
                used: VecDeque::new(),
                current: Some(token.clone()),
            },
        );
        grants.tokens.insert(
            token.clone(),
            TokenRecord {
                family,
                used: false,
            },
        );
        token
    }

    /// Presents a refresh token for `client_id`.
    pub(crate) fn refresh(&self, client_id: &str, token: &str, rotation: bool) -> RefreshOutcome {
        // Generated outside the lock: cheap, and unused only on failures.
        let next = rotation.then(|| random_token("rt_"));
        let mut guard = lock(&self.grants);
        let grants = &mut *guard;
        let Some(record) = grants.tokens.get_mut(token) else {
            return RefreshOutcome::Unknown;
        };
        let Some(family) = grants.families.get_mut(&record.family) else {
            return RefreshOutcome::Unknown;
        };
        if family.client_id != client_id {
            return RefreshOutcome::WrongClient;
        }
        if family.revoked {
            return RefreshOutcome::Revoked;
        }
        if record.used {
            family.revoked = true;
            bump(&self.counters.revocations);
            return RefreshOutcome::Reused;
        }
        let scope = family.scope.clone();
        let Some(next) = next else {
            return RefreshOutcome::Issued {
                refresh_token: None,
                scope,
            };
        };
        record.used = true;
        let family_id = record.family;
        family.used.push_back(token.to_owned());
        family.current = Some(next.clone());
        let forgotten = if family.used.len() > USED_TOKENS_KEPT {
            family.used.pop_front()
        } else {
            None
        };
        if let Some(old) = forgotten {
            grants.tokens.remove(&old);
        }
        grants.tokens.insert(
            next.clone(),
            TokenRecord {
                family: family_id,
                used: false,
            },
        );
        RefreshOutcome::Issued {
            refresh_token: Some(next),
            scope,
        }
    }

    /// Revokes the grant a refresh token belongs to. With `client_id`, only if the token is
    /// that client's (RFC 7009: a client revokes its own tokens). True if a grant was revoked
    /// now.
    pub(crate) fn revoke_token(&self, token: &str, client_id: Option<&str>) -> bool {
        let mut guard = lock(&self.grants);
        let grants = &mut *guard;
        let Some(record) = grants.tokens.get(token) else {
            return false;
        };
        let Some(family) = grants.families.get_mut(&record.family) else {
            return false;
        };
        if client_id.is_some_and(|id| id != family.client_id) || family.revoked {
            return false;
        }
        family.revoked = true;
        bump(&self.counters.revocations);
        true
    }

    /// Revokes every live grant of a client; returns how many.
    pub(crate) fn revoke_client(&self, client_id: &str) -> usize {
        let mut grants = lock(&self.grants);
        let mut n = 0;
        for family in grants.families.values_mut() {
            if family.client_id == client_id && !family.revoked {
                family.revoked = true;
                n += 1;
            }
        }
        self.counters
            .revocations
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// The chaos draw of one `/token` request claiming `client` (when chaos is on): the fault
    /// to answer with, if any. A revocation revokes the client's grants here (a registered
    /// client only) and answers normally.
    pub(crate) fn chaos_take(&self, client: Option<&ClientEntry>) -> Option<Fault> {
        let (outcome, chaos) = self.chaos.draw()?;
        match outcome {
            ChaosOutcome::Revoke => {
                if let Some(entry) = client {
                    self.revoke_client(&entry.spec.id);
                    self.chaos.note_revoked(&entry.spec.id);
                }
                None
            }
            ChaosOutcome::Normal
            | ChaosOutcome::Html403
            | ChaosOutcome::TooManyRequests
            | ChaosOutcome::ServerError
            | ChaosOutcome::Delay
            | ChaosOutcome::Drop => chaos.fault(outcome),
        }
    }

    /// The current (latest, unused) refresh token of every live grant of a client.
    pub(crate) fn live_refresh_tokens(&self, client_id: &str) -> Vec<String> {
        let grants = lock(&self.grants);
        grants
            .families
            .values()
            .filter(|f| f.client_id == client_id && !f.revoked)
            .filter_map(|f| f.current.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(SocketAddr::from(([127, 0, 0, 1], 1)), &IdpConfig::default())
    }

    #[test]
    fn rotation_then_reuse_revokes_family() {
        let s = shared();
        let t0 = s.new_family("c", None);
        let RefreshOutcome::Issued {
            refresh_token: Some(t1),
            ..
        } = s.refresh("c", &t0, true)
        else {
            panic!("not issued");
        };
        assert!(matches!(s.refresh("c", &t0, true), RefreshOutcome::Reused));
        assert!(matches!(s.refresh("c", &t1, true), RefreshOutcome::Revoked));
        assert!(s.live_refresh_tokens("c").is_empty());
    }

    #[test]
    fn old_used_tokens_are_forgotten() {
        let s = shared();
        let first = s.new_family("c", None);
        let mut token = first.clone();
        for _ in 0..=USED_TOKENS_KEPT {
            let RefreshOutcome::Issued {
                refresh_token: Some(next),
                ..
            } = s.refresh("c", &token, true)
            else {
                panic!("not issued");
            };
            token = next;
        }
        assert!(matches!(
            s.refresh("c", &first, true),
            RefreshOutcome::Unknown
        ));
        assert_eq!(s.live_refresh_tokens("c"), vec![token]);
        assert_eq!(lock(&s.grants).tokens.len(), USED_TOKENS_KEPT + 1);
    }

    #[test]
    fn wrong_client_and_no_rotation() {
        let s = shared();
        let t = s.new_family("a", Some("read".into()));
        assert!(matches!(
            s.refresh("b", &t, false),
            RefreshOutcome::WrongClient
        ));
        for _ in 0..3 {
            let RefreshOutcome::Issued {
                refresh_token: None,
                scope,
            } = s.refresh("a", &t, false)
            else {
                panic!("not issued");
            };
            assert_eq!(scope.as_deref(), Some("read"));
        }
        assert!(!s.revoke_token(&t, Some("b")));
        assert!(s.revoke_token(&t, Some("a")));
        assert!(!s.revoke_token(&t, None));
        assert!(matches!(s.refresh("a", &t, false), RefreshOutcome::Revoked));
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = random_token("at_");
        let b = random_token("at_");
        assert_ne!(a, b);
        assert!(a.starts_with("at_"));
        assert_eq!(a.len(), 3 + TOKEN_CHARS);
    }
}
