//! One timer service for every token actor, supervised.
//!
//! Each token actor has at most one armed timer (its machine's `wake_at`). Arming it with
//! ractor's `send_after` spawns a tokio task per arming, about 0.6 KB of RSS each, and every
//! healthy workload always has one armed. Here one task owns a [`DelayQueue`] of
//! `(actor, generation)` entries (tens of bytes each) and casts [`TokenMsg::Timer`] when an
//! entry is due. Arming replaces the actor's previous entry; the actor still ignores a timer
//! whose generation is not its current one, so a message already cast before a re-arm is
//! harmless.
//!
//! Commands travel over an unbounded channel (a send never waits, so a handler can arm
//! without awaiting). The service ends when every [`Timers`] handle is dropped.
//!
//! ## Nothing fails silently
//! - **Clamp.** A delay is clamped to [`MAX_TIMER_DELAY`] (30 days) before it becomes a
//!   deadline: `DelayQueue` panics on a deadline beyond 2^36 ms (about 2.2 years), and
//!   `Instant + Duration` panics on overflow. A timer clamped this way fires early; the actor
//!   sees that nothing is due yet and arms again.
//! - **Supervision.** A watcher task owns the service task's `JoinHandle`. If the service
//!   ends while handles remain (a panic), the watcher marks it down
//!   ([`Timers::is_up`] false, gauge `tokenvisor_timer_service_up` 0), waits a short backoff
//!   (100 ms, doubling for crashes less than a minute apart, at most 10 s), starts a new
//!   service on a new channel, counts the restart
//!   (`tokenvisor_timer_service_restarts_total`) and publishes it on
//!   [`Timers::restarts`]. The armed entries died with the old task: the runtime answers the
//!   restart by asking every token actor to arm its timer again (each knows its `wake_at`).
//!   Commands sent while the service was down are lost the same way and restored the same way.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::{ActorId, ActorRef};
use tokenvisor_core::policy::MAX_TIMER_DELAY;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use crate::metrics as m;
use crate::msg::TokenMsg;

enum Cmd {
    Arm {
        actor: ActorRef<TokenMsg>,
        generation: u64,
        at: Instant,
    },
    Disarm {
        actor: ActorId,
    },
    /// Fault injection: panic inside the service task.
    #[cfg(any(test, feature = "test-util"))]
    Crash,
}

/// The first wait before a crashed service is started again.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait before a crashed service is started again.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Crashes further apart than this start the backoff afresh.
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(60);

/// A handle on the timer service (cheap to clone).
#[derive(Clone)]
pub(crate) struct Timers {
    inner: Arc<Inner>,
}

struct Inner {
    /// The current service's channel (replaced at each restart).
    tx: ArcSwap<mpsc::UnboundedSender<Cmd>>,
    /// False from the moment the service task ended until its replacement runs.
    up: AtomicBool,
    /// Restarts so far; changes once per restart.
    restarts: watch::Sender<u64>,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("up", &self.is_up())
            .field("restarts", &*self.inner.restarts.borrow())
            .finish()
    }
}

impl Timers {
    /// Starts the service, and its watcher, on the current tokio runtime.
    pub(crate) fn start() -> Timers {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            tx: ArcSwap::from_pointee(tx),
            up: AtomicBool::new(true),
            restarts: watch::channel(0).0,
        });
        metrics::gauge!(m::TIMER_SERVICE_UP).set(1.0);
        tokio::spawn(watch_service(Arc::downgrade(&inner), rx));
        Timers { inner }
    }

    /// Casts `Timer { generation }` to `actor` after `delay` (at most [`MAX_TIMER_DELAY`]),
    /// replacing its armed timer.
    pub(crate) fn arm(&self, actor: &ActorRef<TokenMsg>, generation: u64, delay: Duration) {
        self.send(Cmd::Arm {
            actor: actor.clone(),
            generation,
            at: Instant::now() + delay.min(MAX_TIMER_DELAY),
        });
    }

    /// Drops `actor`'s armed timer, if any.
    pub(crate) fn disarm(&self, actor: &ActorRef<TokenMsg>) {
        self.send(Cmd::Disarm {
            actor: actor.get_id(),
        });
    }

    fn send(&self, cmd: Cmd) {
        // A send fails only while the service is down: its watcher restarts it and every
        // actor arms again then, so the command is not needed.
        let _ = self.inner.tx.load().send(cmd);
    }

    /// False while no timer can fire: the service task ended and is not running again yet.
    pub(crate) fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// How many times the service was restarted; a receiver sees each restart (after the
    /// new service runs), so the owner can have every timer armed again.
    pub(crate) fn restarts(&self) -> watch::Receiver<u64> {
        self.inner.restarts.subscribe()
    }

    /// How many times the service was restarted.
    pub(crate) fn restart_count(&self) -> u64 {
        *self.inner.restarts.borrow()
    }

    /// Fault injection for supervision tests: makes the service task panic.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn inject_crash(&self) {
        self.send(Cmd::Crash);
    }
}

/// Runs the service; starts it again whenever it ends while a handle remains.
async fn watch_service(inner: Weak<Inner>, rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut task = tokio::spawn(run(rx));
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut last_crash: Option<Instant> = None;
    loop {
        let ended = (&mut task).await;
        let Some(timers) = inner.upgrade() else {
            return; // every handle is gone: the service ended because it should
        };
        timers.up.store(false, Ordering::Release);
        metrics::gauge!(m::TIMER_SERVICE_UP).set(0.0);
        let why = match ended {
            Ok(()) => "it ended".to_owned(),
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                format!(
                    "it panicked: {}",
                    tokenvisor_core::classify::excerpt(text.as_bytes())
                )
            }
            Err(_) => "it was cancelled".to_owned(),
        };
        backoff = match last_crash {
            Some(t) if t.elapsed() < RESTART_BACKOFF_RESET => {
                (backoff * 2).min(RESTART_BACKOFF_MAX)
            }
            Some(_) | None => RESTART_BACKOFF_MIN,
        };
        last_crash = Some(Instant::now());
        tracing::error!(
            "the timer service stopped ({why}); no timer fires until it restarts in {}ms",
            backoff.as_millis()
        );
        drop(timers);
        tokio::time::sleep(backoff).await;
        let Some(timers) = inner.upgrade() else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        timers.tx.store(Arc::new(tx));
        task = tokio::spawn(run(rx));
        timers.up.store(true, Ordering::Release);
        metrics::gauge!(m::TIMER_SERVICE_UP).set(1.0);
        metrics::counter!(m::TIMER_SERVICE_RESTARTS).increment(1);
        timers.restarts.send_modify(|n| *n += 1);
        tracing::warn!("the timer service restarted; every timer is being armed again");
    }
}

/// How many commands, or due entries, the service handles before it yields to other tasks.
const BATCH: usize = 1024;

async fn run(mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut queue: DelayQueue<(ActorRef<TokenMsg>, u64)> = DelayQueue::new();
    let mut keys: HashMap<ActorId, Key> = HashMap::new();
    let mut cmds = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut cmds, BATCH) => {
                if n == 0 {
                    return;
                }
                // Belt and braces: `arm` clamps already, but no deadline may ever reach the
                // queue beyond what it holds.
                let latest = Instant::now() + MAX_TIMER_DELAY;
                for cmd in cmds.drain(..) {
                    // Either command drops the actor's armed entry; `Arm` then adds the new one.
                    let (id, arm) = match cmd {
                        Cmd::Arm { actor, generation, at } => {
                            (actor.get_id(), Some(((actor, generation), at.min(latest))))
                        }
                        Cmd::Disarm { actor } => (actor, None),
                        #[cfg(any(test, feature = "test-util"))]
                        Cmd::Crash => panic!("injected crash in the timer service"),
                    };
                    if let Some(old) = keys.remove(&id) {
                        queue.try_remove(&old);
                    }
                    if let Some((entry, at)) = arm {
                        keys.insert(id, queue.insert_at(entry, at));
                    }
                }
                if keys.capacity() > 4 * keys.len().max(1024) {
                    keys.shrink_to_fit();
                }
            }
            Some(first) = poll_fn(|cx| queue.poll_expired(cx)) => {
                let mut next = Some(first);
                let mut fired = 0;
                while let Some(expired) = next.take() {
                    let key = expired.key();
                    let (actor, generation) = expired.into_inner();
                    let id = actor.get_id();
                    if keys.get(&id) == Some(&key) {
                        keys.remove(&id);
                    }
                    // The actor may be gone (removed, restarting): then the timer is moot.
                    let _ = actor.cast(TokenMsg::Timer { generation });
                    fired += 1;
                    if fired < BATCH {
                        next = poll_fn(|cx| match queue.poll_expired(cx) {
                            std::task::Poll::Ready(e) => std::task::Poll::Ready(e),
                            std::task::Poll::Pending => std::task::Poll::Ready(None),
                        })
                        .await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ractor::{Actor, ActorProcessingErr};

    use super::*;

    /// Records the generation of every timer it receives.
    struct Recorder;

    impl Actor for Recorder {
        type Msg = TokenMsg;
        type State = Arc<Mutex<Vec<(u64, Instant)>>>;
        type Arguments = Arc<Mutex<Vec<(u64, Instant)>>>;

        async fn pre_start(
            &self,
            _me: ActorRef<TokenMsg>,
            seen: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(seen)
        }

        async fn handle(
            &self,
            _me: ActorRef<TokenMsg>,
            msg: TokenMsg,
            seen: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let TokenMsg::Timer { generation } = msg {
                seen.lock().unwrap().push((generation, Instant::now()));
            }
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn arming_replaces_and_disarming_drops_the_timer() {
        let timers = Timers::start();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, _) = Actor::spawn(None, Recorder, seen.clone()).await.unwrap();
        let seen_b = Arc::new(Mutex::new(Vec::new()));
        let (b, _) = Actor::spawn(None, Recorder, seen_b.clone()).await.unwrap();
        let t0 = Instant::now();
        timers.arm(&a, 1, Duration::from_secs(10));
        timers.arm(&a, 2, Duration::from_secs(30)); // replaces generation 1
        timers.arm(&b, 7, Duration::from_secs(5));
        timers.disarm(&b);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].0, 2);
        assert!(seen[0].1 - t0 >= Duration::from_secs(30));
        assert!(seen[0].1 - t0 < Duration::from_secs(31));
        assert!(seen_b.lock().unwrap().is_empty(), "a disarmed timer fired");
        a.stop(None);
        b.stop(None);
    }

    /// Yields (no time passes on the paused clock) until `cond` holds, at most 1000 times.
    async fn yield_until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..1000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{what} never happened");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_beyond_what_the_queue_holds_is_clamped_and_other_timers_still_fire() {
        let timers = Timers::start();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, _) = Actor::spawn(None, Recorder, seen.clone()).await.unwrap();
        let seen_b = Arc::new(Mutex::new(Vec::new()));
        let (b, _) = Actor::spawn(None, Recorder, seen_b.clone()).await.unwrap();
        let t0 = Instant::now();
        // 3.2 years: beyond DelayQueue's 2^36 ms (it panicked there), and Duration::MAX
        // (`Instant + Duration` overflows).
        timers.arm(&a, 1, Duration::from_secs(99_999_999));
        timers.arm(&b, 1, Duration::MAX);
        timers.arm(&b, 2, Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(timers.is_up());
        assert_eq!(seen_b.lock().unwrap().len(), 1, "b's timer did not fire");
        // a's fires at the clamp, early: its actor arms again for what is left.
        tokio::time::sleep(MAX_TIMER_DELAY).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let fired = seen[0].1 - t0;
        assert!(fired >= MAX_TIMER_DELAY && fired < MAX_TIMER_DELAY + Duration::from_secs(1));
        a.stop(None);
        b.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashed_service_is_down_then_restarted_and_announces_it() {
        let timers = Timers::start();
        let mut restarts = timers.restarts();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, _) = Actor::spawn(None, Recorder, seen.clone()).await.unwrap();
        timers.arm(&a, 1, Duration::from_secs(10));
        timers.inject_crash();
        yield_until("the service is down", || !timers.is_up()).await;
        assert_eq!(timers.restart_count(), 0);
        // The restart is announced once the new service runs.
        restarts.changed().await.unwrap();
        assert!(timers.is_up());
        assert_eq!(*restarts.borrow_and_update(), 1);
        assert_eq!(timers.restart_count(), 1);
        // The armed entry died with the old task; the owner arms again and it fires.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(seen.lock().unwrap().is_empty(), "a lost timer fired");
        timers.arm(&a, 2, Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(seen.lock().unwrap().len(), 1);
        // A second crash soon after: restarted again (after a longer backoff).
        timers.inject_crash();
        yield_until("the service is down again", || !timers.is_up()).await;
        restarts.changed().await.unwrap();
        assert!(timers.is_up());
        assert_eq!(timers.restart_count(), 2);
        a.stop(None);
    }
}
