//! `GET /v1/events`: the runtime's state changes as a Server-Sent Events stream, with
//! `Last-Event-ID` resume from a bounded buffer.
//!
//! One hub task per [`AdminState`](crate::AdminState) subscribes to the runtime's
//! [`StateChange`] broadcast, numbers each change (ids increase by one from 1 for the life
//! of the admin state), remembers each workload's last status (for `from`), and keeps the
//! newest [`EventLimits::buffer`] events in a ring. A client receives:
//!
//! - `event: change`, `id: N`, `data: {"id","name","from","to","state","reason","at"}`
//!   (`from` is `null` for a workload the hub has not seen before; `reason` is the record's
//!   sanitised `status_context`, never a secret);
//! - `event: reset` (`data: {"reason": …}`) when events were lost to it: its
//!   `Last-Event-ID` is older than the buffer or unknown (a daemon restart numbers from 1
//!   again), or it read too slowly, or the hub itself fell behind the runtime. The client
//!   then lists again (`GET /v1/summary`, `GET /v1/workloads`) and carries on from the
//!   reset's id.
//!
//! Without `Last-Event-ID` a client gets the changes from now on. At most
//! [`EventLimits::max_clients`] streams are open at once (more: 503); a comment line is sent
//! every [`KEEP_ALIVE`] so proxies and our listener's idle timeout keep the stream open.
//! Lines are written under the hub's lock only as ring pushes (no I/O, no await).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokenvisor::StateChange;
use tokenvisor_core::status::TokenState;
use tokenvisor_core::{Timestamp, WorkloadName, WorkloadStatus};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

/// Interval of the keep-alive comment on an idle stream (below the admin listener's
/// 30 s inactivity timeout).
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Bounds of the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Events kept for `Last-Event-ID` resume (at least 1).
    pub buffer: usize,
    /// Streams open at once; one more is answered 503.
    pub max_clients: usize,
}

impl Default for EventLimits {
    /// 4,096 events, 16 clients.
    fn default() -> Self {
        EventLimits {
            buffer: 4_096,
            max_clients: 16,
        }
    }
}

/// One numbered state change, as sent.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Change {
    id: u64,
    name: WorkloadName,
    from: Option<WorkloadStatus>,
    to: WorkloadStatus,
    state: TokenState,
    #[serde(serialize_with = "as_str")]
    reason: Arc<str>,
    at: Timestamp,
}

/// What the hub broadcasts to live streams.
#[derive(Debug, Clone)]
enum Live {
    Change(Arc<Change>),
    /// The hub lost runtime events (it lagged): every client must re-list. Carries the id
    /// after which numbering continues.
    Gap(u64),
}

struct Ring {
    /// Newest last; ids are consecutive.
    events: VecDeque<Arc<Change>>,
    /// The id of the newest event (0: none yet).
    last_id: u64,
    /// The last status seen per workload (for `from`); a stopped workload is forgotten.
    last_status: HashMap<WorkloadName, WorkloadStatus>,
    /// The id after which the hub lost runtime events (the newest such gap): a client that
    /// saw no later event missed them and must reset.
    gap_after: Option<u64>,
}

/// The hub of one admin state: the ring, the live broadcast, the client cap.
pub(crate) struct Hub {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Live>,
    clients: Arc<Semaphore>,
    limits: EventLimits,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub fed by `changes` (a runtime subscription); spawns its feeding task, which ends
    /// when the runtime's broadcast closes. Call inside a tokio runtime.
    pub(crate) fn start(
        changes: broadcast::Receiver<StateChange>,
        limits: EventLimits,
    ) -> Arc<Hub> {
        let limits = EventLimits {
            buffer: limits.buffer.max(1),
            max_clients: limits.max_clients,
        };
        let (live, _) = broadcast::channel(limits.buffer.clamp(16, 4_096));
        let hub = Arc::new(Hub {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(limits.buffer.min(4_096)),
                last_id: 0,
                last_status: HashMap::new(),
                gap_after: None,
            }),
            live,
            clients: Arc::new(Semaphore::new(limits.max_clients)),
            limits,
        });
        tokio::spawn(feed(Arc::downgrade(&hub), changes));
        hub
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers and records one change, and sends it to the live streams.
    fn push(&self, c: StateChange) {
        let mut ring = self.ring();
        ring.last_id += 1;
        let from = if c.status == WorkloadStatus::Stopped {
            ring.last_status.remove(&c.name)
        } else {
            ring.last_status.insert(c.name.clone(), c.status)
        };
        let change = Arc::new(Change {
            id: ring.last_id,
            name: c.name,
            from,
            to: c.status,
            state: c.state,
            reason: c.context,
            at: c.at,
        });
        if ring.events.len() == self.limits.buffer {
            ring.events.pop_front();
        }
        ring.events.push_back(change.clone());
        // Sent under the lock, so a client subscribing under it sees each event once.
        let _ = self.live.send(Live::Change(change));
    }

    /// The hub missed runtime events: what it knows of `from` may be wrong, and every
    /// client missed them too.
    fn gap(&self) {
        let mut ring = self.ring();
        ring.gap_after = Some(ring.last_id);
        ring.last_status.clear();
        let _ = self.live.send(Live::Gap(ring.last_id));
    }

    /// Opens a stream for a client that last saw `last_seen`, or 503's worth of `None` when
    /// [`EventLimits::max_clients`] streams are open.
    pub(crate) fn open(
        &self,
        last_seen: Option<u64>,
    ) -> Option<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>> {
        let permit = self.clients.clone().try_acquire_owned().ok()?;
        let ring = self.ring();
        let mut first: VecDeque<Event> = VecDeque::new();
        match last_seen {
            None => {}
            Some(seen) => {
                let oldest = ring.events.front().map_or(ring.last_id + 1, |e| e.id);
                let replayable = seen <= ring.last_id
                    && seen + 1 >= oldest
                    && ring.gap_after.is_none_or(|gap| seen > gap);
                if replayable {
                    first.extend(
                        ring.events
                            .iter()
                            .filter(|e| e.id > seen)
                            .map(|e| change_event(e)),
                    );
                } else {
                    let why = if seen > ring.last_id {
                        "unknown Last-Event-ID (the daemon restarted?)"
                    } else if seen + 1 < oldest {
                        "Last-Event-ID is older than the event buffer"
                    } else {
                        "the server missed state changes after Last-Event-ID"
                    };
                    first.push_back(reset_event(ring.last_id, why));
                }
            }
        }
        // Subscribed under the lock: every later event reaches this stream, none twice.
        let rx = self.live.subscribe();
        let next_id = ring.last_id + 1;
        drop(ring);
        let state = ClientState {
            first,
            rx,
            next_id,
            _permit: permit,
        };
        let stream = futures_util::stream::unfold(state, next_event);
        Some(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
    }
}

/// Feeds the hub from the runtime until the runtime's broadcast closes or the hub is gone.
async fn feed(hub: std::sync::Weak<Hub>, mut changes: broadcast::Receiver<StateChange>) {
    loop {
        let got = changes.recv().await;
        let Some(hub) = hub.upgrade() else { return };
        match got {
            Ok(change) => hub.push(change),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("admin event stream: missed {n} state changes; clients reset");
                hub.gap();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

struct ClientState {
    /// Replayed events (or a reset) to send first.
    first: VecDeque<Event>,
    rx: broadcast::Receiver<Live>,
    /// Live events below this id were replayed already.
    next_id: u64,
    /// Held for the stream's life (the client cap).
    _permit: OwnedSemaphorePermit,
}

async fn next_event(mut st: ClientState) -> Option<(Result<Event, Infallible>, ClientState)> {
    if let Some(e) = st.first.pop_front() {
        return Some((Ok(e), st));
    }
    loop {
        match st.rx.recv().await {
            Ok(Live::Change(c)) => {
                if c.id < st.next_id {
                    continue;
                }
                st.next_id = c.id + 1;
                let e = change_event(&c);
                return Some((Ok(e), st));
            }
            Ok(Live::Gap(after)) => {
                st.next_id = after + 1;
                let e = reset_event(after, "the server missed state changes");
                return Some((Ok(e), st));
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // This client read too slowly: it lost events and must re-list. Numbering
                // carries on from the next event it receives.
                let e = reset_event(st.next_id.saturating_sub(1), "this client fell behind");
                st.next_id = 0;
                return Some((Ok(e), st));
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

fn as_str<S: serde::Serializer>(s: &Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

fn change_event(c: &Change) -> Event {
    Event::default()
        .id(c.id.to_string())
        .event("change")
        .json_data(c)
        .unwrap_or_else(|_| Event::default().event("change"))
}

fn reset_event(id: u64, reason: &str) -> Event {
    let data = serde_json::json!({ "reason": reason, "relist": true });
    let e = Event::default().event("reset").data(data.to_string());
    if id > 0 { e.id(id.to_string()) } else { e }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;
    use futures_util::StreamExt as _;

    use super::*;

    fn change(n: u64) -> StateChange {
        StateChange {
            name: WorkloadName::new(&format!("w{n}")).unwrap(),
            status: WorkloadStatus::Running,
            state: TokenState::Healthy,
            context: Arc::from(""),
            at: Timestamp::from_millis(n),
        }
    }

    /// The body of an opened stream, read chunk by chunk.
    fn body(
        sse: Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static>,
    ) -> axum::body::BodyDataStream {
        sse.into_response().into_body().into_data_stream()
    }

    async fn next_text(body: &mut axum::body::BodyDataStream) -> String {
        let chunk = body.next().await.unwrap().unwrap();
        String::from_utf8(chunk.to_vec()).unwrap()
    }

    /// Lets the hub's feeding task run (paused clock: no time passes).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_gets_a_keep_alive_comment() {
        let (tx, rx) = broadcast::channel(16);
        let hub = Hub::start(rx, EventLimits::default());
        let mut b = body(hub.open(None).unwrap());
        let read = tokio::spawn(async move { next_text(&mut b).await });
        settle().await;
        assert!(!read.is_finished(), "nothing before the interval");
        tokio::time::advance(KEEP_ALIVE).await;
        settle().await;
        let text = read.await.unwrap();
        assert!(text.starts_with(':'), "a comment line: {text:?}");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hub_that_fell_behind_the_runtime_resets_its_clients() {
        let (tx, rx) = broadcast::channel(16);
        let hub = Hub::start(rx, EventLimits::default());
        tx.send(change(1)).unwrap();
        settle().await;
        let mut live = body(hub.open(None).unwrap());
        // More changes than the runtime's channel holds before the hub reads again.
        for n in 2..40 {
            tx.send(change(n)).unwrap();
        }
        settle().await;
        let text = next_text(&mut live).await;
        assert!(text.contains("event: reset"), "{text}");
        // A resume from before the gap resets too; one from after it replays.
        let mut old = body(hub.open(Some(1)).unwrap());
        let text = next_text(&mut old).await;
        assert!(
            text.contains("event: reset") && text.contains("missed"),
            "{text}"
        );
        let newest = hub.ring().last_id;
        tx.send(change(99)).unwrap();
        settle().await;
        let mut after = body(hub.open(Some(newest)).unwrap());
        let text = next_text(&mut after).await;
        assert!(text.contains("event: change"), "{text}");
        assert!(text.contains(&format!("id: {}", newest + 1)), "{text}");
    }
}
