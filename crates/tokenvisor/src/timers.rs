//! One timer service for every token actor.
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

use std::collections::HashMap;
use std::future::poll_fn;
use std::time::Duration;

use ractor::{ActorId, ActorRef};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use crate::token::TokenMsg;

enum Cmd {
    Arm {
        actor: ActorRef<TokenMsg>,
        generation: u64,
        at: Instant,
    },
    Disarm {
        actor: ActorId,
    },
}

/// A handle on the timer service (cheap to clone).
#[derive(Debug, Clone)]
pub struct Timers {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Timers {
    /// Starts the service on the current tokio runtime.
    pub fn start() -> Timers {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Timers { tx }
    }

    /// Casts `Timer { generation }` to `actor` after `delay`, replacing its armed timer.
    pub fn arm(&self, actor: &ActorRef<TokenMsg>, generation: u64, delay: Duration) {
        // The service is gone only when the runtime is: then no timer matters.
        let _ = self.tx.send(Cmd::Arm {
            actor: actor.clone(),
            generation,
            at: Instant::now() + delay,
        });
    }

    /// Drops `actor`'s armed timer, if any.
    pub fn disarm(&self, actor: &ActorRef<TokenMsg>) {
        let _ = self.tx.send(Cmd::Disarm {
            actor: actor.get_id(),
        });
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
                for cmd in cmds.drain(..) {
                    // Either command drops the actor's armed entry; `Arm` then adds the new one.
                    let (id, arm) = match cmd {
                        Cmd::Arm { actor, generation, at } => {
                            (actor.get_id(), Some(((actor, generation), at)))
                        }
                        Cmd::Disarm { actor } => (actor, None),
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
}
