//! The status lane: each workload's newest status patch, coalesced *before* the persistence
//! actor's mailbox, so that the mailbox carries at most one wake-up however many status
//! changes arrive.
//!
//! Why: the mailbox is FIFO. With 100,000 workloads changing state together (a chaos window,
//! a fleet-wide outage's end), one message per status change kept more than 90 s of work in
//! it, and everything behind them waited that long: a rotated refresh token's `Commit` (its
//! refresh reported `auth_retrying` when the wait timed out, which added more status
//! changes) and a `Flush` (answered only after its deadline). Through the lane a burst of N
//! changes of one workload is one slot, and N workloads' changes are one wake-up.
//!
//! The rules (pure: the runtime keeps a [`Lane`] behind a mutex):
//! - **One slot per workload.** [`put`] coalesces a patch into the workload's slot (in
//!   order: the slot writes what the patches written one after the other would have written),
//!   with the strongest [`FileWrite`] asked for. Memory is bounded by the number of
//!   workloads.
//! - **One wake-up per fill.** [`put`] returns `true` exactly when the lane had no wake-up
//!   outstanding: the caller then sends one. [`take`] empties the lane and clears the
//!   wake-up, so the next [`put`] asks for a new one. Between two takes there is exactly one
//!   `true`, and only if something was put.
//! - **Order against the mailbox.** The driver takes the lane before handling *any* message
//!   of its mailbox, so a patch put before a message was sent is submitted before that
//!   message is handled (a flush covers it). Credentials never use the lane (they keep the
//!   mailbox's order), but a mailbox message may carry a served token or a status too (an
//!   adoption clears the token of the old credentials): per workload, patches are applied in
//!   the order sent. Before such a message is sent, [`hold`] takes the workload's slot (put
//!   earlier: it goes in the message, in front) and holds the workload's later puts back from
//!   [`take`]; when the message is handled, [`release`] hands them over, to be submitted
//!   after it.
//!
//! [`put`]: Lane::put
//! [`take`]: Lane::take
//! [`hold`]: Lane::hold
//! [`release`]: Lane::release

use std::collections::HashMap;
use std::hash::Hash;

use super::{Coalesce, FileWrite};

/// The pending status patches, one slot per workload; see the module docs.
#[derive(Debug)]
pub struct Lane<K, V> {
    slots: HashMap<K, (V, FileWrite)>,
    /// The workloads with mailbox messages sent ([`Lane::hold`]) and not yet handled
    /// ([`Lane::release`]), and what was put for them since: apart from `slots`, so that a
    /// take costs what it hands over (100,000 workloads added at once are 100,000 held
    /// workloads, and the driver takes the lane before every message).
    held: HashMap<K, Held<V>>,
    /// A wake-up was asked for and the lane has not been taken since.
    woken: bool,
    /// Patches put, and of those merged into a slot.
    counts: LaneCounts,
}

/// A held workload: its mailbox messages not yet handled, and its slot put since.
#[derive(Debug)]
struct Held<V> {
    messages: u32,
    slot: Option<(V, FileWrite)>,
}

/// Counters of a [`Lane`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneCounts {
    /// Patches put.
    pub put: u64,
    /// Patches merged into a workload's slot (not a slot of their own).
    pub coalesced: u64,
    /// Wake-ups asked for.
    pub wakes: u64,
}

impl<K, V> Default for Lane<K, V> {
    fn default() -> Self {
        Lane {
            slots: HashMap::new(),
            held: HashMap::new(),
            woken: false,
            counts: LaneCounts::default(),
        }
    }
}

/// What [`Lane::take`] hands over: each workload once, with its coalesced patch and file
/// request.
pub type Taken<K, V> = Vec<(K, V, FileWrite)>;

impl<K: Eq + Hash, V: Coalesce> Lane<K, V> {
    /// An empty lane.
    pub fn new() -> Self {
        Self::default()
    }

    /// Coalesces `value` into `key`'s slot. Returns `true` when the caller must send a
    /// wake-up (none is outstanding; a held workload's put needs none: the handling of its
    /// message releases it).
    pub fn put(&mut self, key: K, value: V, file: FileWrite) -> bool {
        self.counts.put += 1;
        if let Some(held) = self.held.get_mut(&key) {
            match &mut held.slot {
                Some((pending, pending_file)) => {
                    self.counts.coalesced += 1;
                    pending.coalesce(value);
                    *pending_file = (*pending_file).max(file);
                }
                None => held.slot = Some((value, file)),
            }
            return false;
        }
        match self.slots.get_mut(&key) {
            Some((pending, pending_file)) => {
                self.counts.coalesced += 1;
                pending.coalesce(value);
                *pending_file = (*pending_file).max(file);
            }
            None => {
                self.slots.insert(key, (value, file));
            }
        }
        let wake = !self.woken;
        self.woken = true;
        if wake {
            self.counts.wakes += 1;
        }
        wake
    }

    /// Everything pending (in no particular order: each workload appears once) but the slots
    /// of held workloads; those stay, the rest of the lane is empty afterwards, and the next
    /// [`Lane::put`] asks for a wake-up.
    pub fn take(&mut self) -> Taken<K, V> {
        self.woken = false;
        std::mem::take(&mut self.slots)
            .into_iter()
            .map(|(k, (v, f))| (k, v, f))
            .collect()
    }

    /// A message carrying `key`'s patch is about to be sent through the mailbox: returns the
    /// slot put before it (it goes in front of the message's patch, in the message), and holds
    /// `key`'s later puts back from [`Lane::take`] until the message is handled
    /// ([`Lane::release`]).
    pub fn hold(&mut self, key: K) -> Option<(V, FileWrite)>
    where
        K: Clone,
    {
        if let Some(held) = self.held.get_mut(&key) {
            held.messages += 1;
            return held.slot.take();
        }
        let earlier = self.slots.remove(&key);
        let held = Held {
            messages: 1,
            slot: None,
        };
        self.held.insert(key, held);
        earlier
    }

    /// A message sent after [`Lane::hold`] was handled (or could not be sent): when it was
    /// the last one held for `key`, returns the slot put since, to submit after it.
    pub fn release(&mut self, key: &K) -> Option<(V, FileWrite)> {
        let held = self.held.get_mut(key)?;
        if held.messages > 1 {
            held.messages -= 1;
            return None;
        }
        self.held.remove(key).and_then(|h| h.slot)
    }

    /// Workloads with a pending patch (held ones included).
    pub fn len(&self) -> usize {
        self.slots.len() + self.held.values().filter(|h| h.slot.is_some()).count()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters so far.
    pub fn counts(&self) -> LaneCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A patch that remembers every update it holds, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Log(Vec<u32>);

    impl Coalesce for Log {
        fn coalesce(&mut self, newer: Self) {
            self.0.extend(newer.0);
        }
    }

    fn sorted(taken: Taken<&'static str, Log>) -> Vec<(&'static str, Vec<u32>, FileWrite)> {
        let mut v: Vec<_> = taken.into_iter().map(|(k, v, f)| (k, v.0, f)).collect();
        v.sort_by_key(|(k, _, _)| *k);
        v
    }

    #[test]
    fn a_burst_for_one_workload_is_one_slot_and_one_wake_up() {
        let mut lane = Lane::new();
        let wakes: Vec<bool> = (0..1000)
            .map(|i| lane.put("a", Log(vec![i]), FileWrite::Routine))
            .collect();
        assert_eq!(wakes.iter().filter(|w| **w).count(), 1);
        assert!(wakes[0], "the first put asks for the wake-up");
        assert_eq!(lane.len(), 1);
        let taken = sorted(lane.take());
        assert_eq!(taken, vec![("a", (0..1000).collect(), FileWrite::Routine)]);
        assert_eq!(
            lane.counts(),
            LaneCounts {
                put: 1000,
                coalesced: 999,
                wakes: 1
            }
        );
    }

    /// (puts before the take, expected wake-ups, expected take)
    #[test]
    fn table() {
        type Row = (
            &'static str,
            Vec<(&'static str, u32, FileWrite)>,
            Vec<bool>,
            Vec<(&'static str, Vec<u32>, FileWrite)>,
        );
        let rows: Vec<Row> = vec![
            ("nothing put: nothing taken", vec![], vec![], vec![]),
            (
                "two workloads: one wake-up, two slots",
                vec![("a", 1, FileWrite::Now), ("b", 2, FileWrite::Routine)],
                vec![true, false],
                vec![
                    ("a", vec![1], FileWrite::Now),
                    ("b", vec![2], FileWrite::Routine),
                ],
            ),
            (
                "the strongest file request wins (a state change is not deferred)",
                vec![
                    ("a", 1, FileWrite::Now),
                    ("a", 2, FileWrite::Routine),
                    ("a", 3, FileWrite::None),
                ],
                vec![true, false, false],
                vec![("a", vec![1, 2, 3], FileWrite::Now)],
            ),
            (
                "a credential-free access change alone writes no file",
                vec![("a", 1, FileWrite::None), ("a", 2, FileWrite::None)],
                vec![true, false],
                vec![("a", vec![1, 2], FileWrite::None)],
            ),
        ];
        for (why, puts, wakes, taken) in rows {
            let mut lane = Lane::new();
            let got: Vec<bool> = puts
                .into_iter()
                .map(|(k, v, f)| lane.put(k, Log(vec![v]), f))
                .collect();
            assert_eq!(got, wakes, "{why}: wake-ups");
            assert_eq!(sorted(lane.take()), taken, "{why}: taken");
            assert!(lane.is_empty(), "{why}: empty after the take");
        }
    }

    #[test]
    fn a_put_after_a_take_asks_for_a_new_wake_up() {
        let mut lane = Lane::new();
        assert!(lane.put("a", Log(vec![1]), FileWrite::Now));
        assert!(!lane.put("b", Log(vec![2]), FileWrite::Now));
        assert_eq!(lane.take().len(), 2);
        assert!(lane.put("a", Log(vec![3]), FileWrite::Now));
        // An empty take clears the wake-up too (the driver took the lane before a message).
        let _ = lane.take();
        assert!(lane.take().is_empty());
        assert!(lane.put("a", Log(vec![4]), FileWrite::Now));
    }

    #[test]
    fn a_mailbox_message_keeps_its_place_among_a_workloads_puts() {
        let mut lane = Lane::new();
        assert!(lane.put("a", Log(vec![1]), FileWrite::Routine));
        // A message for `a` is sent: the earlier put goes in it, in front.
        let (mut message, file) = lane.hold("a").unwrap();
        message.coalesce(Log(vec![2]));
        assert_eq!((message.0, file), (vec![1, 2], FileWrite::Routine));
        // Puts after it wait for it; other workloads' do not.
        assert!(!lane.put("a", Log(vec![3]), FileWrite::Now));
        assert!(!lane.put("b", Log(vec![4]), FileWrite::Now));
        assert_eq!(sorted(lane.take()), vec![("b", vec![4], FileWrite::Now)]);
        assert_eq!(lane.len(), 1, "a's later put is still pending");
        assert!(
            !lane.put("a", Log(vec![5]), FileWrite::None),
            "held: no wake-up (the message's handling releases it)"
        );
        assert!(lane.take().is_empty(), "held back again");
        // Handled: what was put since comes out, once.
        let later = lane.release(&"a").map(|(l, f)| (l.0, f));
        assert_eq!(later, Some((vec![3, 5], FileWrite::Now)));
        assert_eq!(lane.release(&"a").map(|(l, _)| l.0), None);
        assert!(lane.is_empty());
        // Two messages in flight: only the second's release hands the later puts over.
        assert!(lane.hold("a").is_none());
        assert!(!lane.put("a", Log(vec![6]), FileWrite::Now));
        assert_eq!(lane.hold("a").map(|(l, _)| l.0), Some(vec![6]));
        let _ = lane.put("a", Log(vec![7]), FileWrite::Now);
        assert!(lane.release(&"a").is_none(), "the first message handled");
        assert!(lane.take().is_empty());
        assert_eq!(lane.release(&"a").map(|(l, _)| l.0), Some(vec![7]));
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A status patch through the lane.
        Put(u8, u32),
        /// A patch through the mailbox.
        Send(u8, u32),
        /// The driver handles its next message (taking the lane first), or just takes.
        Handle,
    }

    proptest! {
        /// Puts and mailbox messages interleaved with the driver's handling: every workload's
        /// patches are applied in the order they were sent, whichever way each went.
        #[test]
        fn a_workloads_patches_are_applied_in_the_order_sent(
            steps in proptest::collection::vec(
                prop_oneof![
                    3 => (0u8..4, any::<u32>()).prop_map(|(k, v)| Step::Put(k, v)),
                    1 => (0u8..4, any::<u32>()).prop_map(|(k, v)| Step::Send(k, v)),
                    2 => Just(Step::Handle),
                ],
                0..200,
            )
        ) {
            let mut lane: Lane<u8, Log> = Lane::new();
            let mut mailbox = std::collections::VecDeque::new();
            let (mut sent, mut applied) = (BTreeMap::<u8, Vec<u32>>::new(), BTreeMap::<u8, Vec<u32>>::new());
            let mut handle = |lane: &mut Lane<u8, Log>, mailbox: &mut std::collections::VecDeque<(u8, Log)>| {
                for (k, v, _) in lane.take() {
                    applied.entry(k).or_default().extend(v.0);
                }
                if let Some((k, message)) = mailbox.pop_front() {
                    applied.entry(k).or_default().extend(message.0);
                    if let Some((later, _)) = lane.release(&k) {
                        applied.entry(k).or_default().extend(later.0);
                    }
                }
            };
            for step in steps {
                match step {
                    Step::Put(k, v) => {
                        let _ = lane.put(k, Log(vec![v]), FileWrite::Now);
                        sent.entry(k).or_default().push(v);
                    }
                    Step::Send(k, v) => {
                        let mut message = lane.hold(k).map_or(Log(vec![]), |(l, _)| l);
                        message.coalesce(Log(vec![v]));
                        mailbox.push_back((k, message));
                        sent.entry(k).or_default().push(v);
                    }
                    Step::Handle => handle(&mut lane, &mut mailbox),
                }
            }
            while !mailbox.is_empty() {
                handle(&mut lane, &mut mailbox);
            }
            handle(&mut lane, &mut mailbox);
            prop_assert!(lane.is_empty());
            prop_assert_eq!(applied, sent);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u32, u8),
        Take,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6, any::<u32>(), 0u8..3).prop_map(|(k, v, f)| Op::Put(k, v, f)),
            1 => Just(Op::Take),
        ]
    }

    fn file(f: u8) -> FileWrite {
        match f {
            0 => FileWrite::None,
            1 => FileWrite::Routine,
            _ => FileWrite::Now,
        }
    }

    proptest! {
        /// Whatever the interleaving of puts and takes: every patch comes out exactly once,
        /// each workload's in the order put; a take holds each workload once with the
        /// strongest file request of its patches; there is exactly one wake-up per
        /// non-empty fill, asked for by its first put; the lane never holds more slots than
        /// workloads.
        #[test]
        fn nothing_lost_order_kept_one_wake_up_per_fill(ops in proptest::collection::vec(op(), 0..200)) {
            let mut lane: Lane<u8, Log> = Lane::new();
            let mut out: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
            let mut expected: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
            let mut fill: BTreeMap<u8, FileWrite> = BTreeMap::new();
            let mut wakes_in_fill = 0;
            let ops = ops.into_iter().chain([Op::Take]);
            for op in ops {
                match op {
                    Op::Put(k, v, f) => {
                        let first = fill.is_empty();
                        let wake = lane.put(k, Log(vec![v]), file(f));
                        prop_assert_eq!(wake, first, "a wake-up exactly with a fill's first put");
                        wakes_in_fill += usize::from(wake);
                        expected.entry(k).or_default().push(v);
                        let e = fill.entry(k).or_insert(FileWrite::None);
                        *e = (*e).max(file(f));
                        prop_assert!(lane.len() <= 6);
                    }
                    Op::Take => {
                        let taken = lane.take();
                        let mut seen = std::collections::BTreeSet::new();
                        for (k, v, f) in taken {
                            prop_assert!(seen.insert(k), "a workload once per take");
                            prop_assert_eq!(Some(&f), fill.get(&k));
                            out.entry(k).or_default().extend(v.0);
                        }
                        prop_assert_eq!(seen.len(), fill.len());
                        prop_assert!(wakes_in_fill <= 1);
                        fill.clear();
                        wakes_in_fill = 0;
                    }
                }
            }
            prop_assert!(lane.is_empty());
            prop_assert_eq!(out, expected);
        }
    }
}
