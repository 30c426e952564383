use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A patch that remembers every update it holds, in order (to check nothing is lost).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Log(Vec<u32>);

impl Coalesce for Log {
    fn coalesce(&mut self, newer: Self) {
        self.0.extend(newer.0);
    }
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + ms)
}

fn queue() -> WriteQueue<&'static str, Log> {
    WriteQueue::new(QueueConfig {
        max_batch: 100,
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        status_refresh_interval: Duration::from_secs(30),
        urgent_fill: 100,
    })
}

fn keys(b: &Batch<&'static str, Log>) -> Vec<(&'static str, Vec<u32>, bool)> {
    b.items
        .iter()
        .map(|i| (i.key, i.value.0.clone(), i.write_file))
        .collect()
}

#[test]
fn takes_everything_ready_in_one_batch_coalescing_per_workload() {
    let mut q = queue();
    q.submit("a", Log(vec![1]), FileWrite::Now);
    q.submit("b", Log(vec![2]), FileWrite::Now);
    q.submit("a", Log(vec![3]), FileWrite::None);
    let b = q.take_batch(t(0)).expect("a batch");
    assert_eq!(
        keys(&b),
        vec![("a", vec![1, 3], true), ("b", vec![2], true)]
    );
    assert_eq!(q.counts().coalesced, 1);
    // One batch at a time.
    q.submit("c", Log(vec![4]), FileWrite::None);
    assert_eq!(q.take_batch(t(0)), None);
    q.committed(b.id);
    let b = q.take_batch(t(0)).expect("the next batch");
    assert_eq!(keys(&b), vec![("c", vec![4], false)]);
}

#[test]
fn an_update_during_a_commit_follows_it_and_is_not_lost() {
    let mut q = queue();
    q.submit("a", Log(vec![1]), FileWrite::None);
    let b = q.take_batch(t(0)).expect("batch");
    let seq2 = q.submit("a", Log(vec![2]), FileWrite::None);
    assert!(!q.is_durable(&"a", seq2));
    q.committed(b.id);
    assert!(!q.is_durable(&"a", seq2));
    let b = q.take_batch(t(0)).expect("batch");
    assert_eq!(keys(&b), vec![("a", vec![2], false)]);
    q.committed(b.id);
    assert!(q.is_durable(&"a", seq2));
    assert_eq!(q.pending(), 0);
}

#[test]
fn a_failed_commit_is_retried_after_backoff_with_newer_updates_merged() {
    let mut q = queue();
    q.submit("a", Log(vec![1]), FileWrite::Now);
    let b = q.take_batch(t(0)).expect("batch");
    q.submit("a", Log(vec![2]), FileWrite::None);
    q.failed(b.id, b.items, t(0));
    assert_eq!(q.failures(), 1);
    assert_eq!(q.take_batch(t(50)), None, "backoff");
    assert_eq!(q.next_wake(), Some(t(100)));
    let b = q.take_batch(t(100)).expect("retry");
    assert_eq!(
        keys(&b),
        vec![("a", vec![1, 2], true)],
        "the file write is kept"
    );
    q.failed(b.id, b.items, t(100));
    assert_eq!(q.next_wake(), Some(t(300)), "doubled");
    let b = q.take_batch(t(300)).expect("retry");
    q.committed(b.id);
    assert_eq!(q.failures(), 0);
}

#[test]
fn flush_waits_for_everything_before_it_and_times_out_naming_workloads() {
    let mut q = queue();
    assert_eq!(q.add_flush(1, t(10)), Some(Answer::Durable));
    q.submit("a", Log(vec![1]), FileWrite::None);
    q.submit("b", Log(vec![2]), FileWrite::None);
    assert_eq!(q.add_flush(2, t(1000)), None);
    q.submit("c", Log(vec![3]), FileWrite::None);
    let b = q.take_batch(t(0)).expect("batch");
    let first = b.items[..2].to_vec();
    // Commit all three, flush 2 only needs a and b.
    assert_eq!(q.committed(b.id), vec![(2, Answer::Durable)]);
    drop(first);
    q.submit("a", Log(vec![4]), FileWrite::None);
    assert_eq!(q.add_flush(3, t(500)), None);
    let b = q.take_batch(t(0)).expect("batch");
    q.failed(b.id, b.items, t(0));
    assert_eq!(q.poll(t(499)), vec![]);
    assert_eq!(q.poll(t(500)), vec![(3, Answer::TimedOut(vec!["a"]))]);
    assert_eq!(q.undurable(), vec!["a"], "still pending, still retried");
}

#[test]
fn a_flush_cancels_the_backoff() {
    let mut q = queue();
    q.submit("a", Log(vec![1]), FileWrite::None);
    let b = q.take_batch(t(0)).expect("batch");
    q.failed(b.id, b.items, t(0));
    assert_eq!(q.take_batch(t(1)), None);
    assert_eq!(q.add_flush(7, t(10_000)), None);
    let b = q.take_batch(t(1)).expect("retried at once");
    assert_eq!(q.committed(b.id), vec![(7, Answer::Durable)]);
}

#[test]
fn key_waiters_hear_of_the_commit_or_of_the_failure() {
    let mut q = queue();
    let seq = q.submit("a", Log(vec![1]), FileWrite::None);
    assert_eq!(q.add_key_waiter(1, "a", seq), None);
    let b = q.take_batch(t(0)).expect("batch");
    assert_eq!(q.failed(b.id, b.items, t(0)), vec![(1, Answer::Failed)]);
    assert_eq!(q.add_key_waiter(2, "a", seq), None);
    let b = q.take_batch(t(100)).expect("batch");
    let later = q.submit("a", Log(vec![2]), FileWrite::None);
    assert_eq!(q.add_key_waiter(3, "a", later), None);
    assert_eq!(q.committed(b.id), vec![(2, Answer::Durable)]);
    assert_eq!(q.add_key_waiter(4, "a", seq), Some(Answer::Durable));
    let b = q.take_batch(t(100)).expect("batch");
    assert_eq!(q.committed(b.id), vec![(3, Answer::Durable)]);
}

#[test]
fn routine_file_writes_are_coalesced_to_one_per_interval() {
    let mut q = queue();
    // Table: (time ms, file request, file written with this commit?)
    let steps = [
        (0, FileWrite::Routine, true),      // first ever: written
        (1_000, FileWrite::Routine, false), // within 30 s: deferred
        (2_000, FileWrite::Routine, false), // still deferred (one due entry)
        (3_000, FileWrite::Now, true),      // a state change: at once
        (4_000, FileWrite::Routine, false), // 30 s from 3 s
        (33_000, FileWrite::Routine, true), // interval passed
        (34_000, FileWrite::None, false),   // credential only
    ];
    for (ms, file, written) in steps {
        q.submit("a", Log(vec![ms as u32]), file);
        let b = q.take_batch(t(ms)).expect("batch");
        assert_eq!(b.items[0].write_file, written, "at {ms} ms");
        q.committed(b.id);
    }
    assert_eq!(
        q.due_files(t(60_000), usize::MAX),
        Vec::<&str>::new(),
        "nothing left deferred"
    );
    q.submit("a", Log(vec![1]), FileWrite::Routine);
    let b = q.take_batch(t(40_000)).expect("batch");
    assert!(!b.items[0].write_file);
    q.committed(b.id);
    assert_eq!(q.next_file_due(), Some(t(63_000)));
    assert_eq!(q.next_wake(), None, "a due file is not a commit wake-up");
    assert_eq!(q.due_files(t(62_999), usize::MAX), Vec::<&str>::new());
    assert_eq!(q.due_files(t(63_000), usize::MAX), vec!["a"]);
    assert_eq!(q.next_file_due(), None);
}

/// A driver writes at most `limit` routine files per job: the longest due first, the rest
/// stay due (and say so) for the next job; none is lost or written twice.
#[test]
fn due_routine_files_are_taken_longest_due_first_at_most_limit_at_a_time() {
    let mut q = queue();
    // Each workload's file written at `first` ms, then a routine change deferring the next.
    let table = [("c", 2_000), ("a", 0), ("d", 3_000), ("b", 1_000)];
    for (key, first) in table {
        q.submit(key, Log(vec![1]), FileWrite::Now);
        let b = q.take_batch(t(first)).expect("batch");
        q.committed(b.id);
        q.submit(key, Log(vec![2]), FileWrite::Routine);
        let b = q.take_batch(t(first + 10)).expect("batch");
        assert!(!b.items[0].write_file, "{key}: deferred");
        q.committed(b.id);
    }
    // Due at 30 s after each first write.
    assert_eq!(q.next_file_due(), Some(t(30_000)));
    // (now, limit) → taken; then when the next one is due.
    let steps: [(u64, usize, Vec<&str>, Option<u64>); 4] = [
        (29_999, 2, vec![], Some(30_000)),
        (40_000, 2, vec!["a", "b"], Some(32_000)),
        (40_000, 0, vec![], Some(32_000)),
        (40_000, 2, vec!["c", "d"], None),
    ];
    for (now, limit, taken, next) in steps {
        assert_eq!(
            q.due_files(t(now), limit),
            taken,
            "at {now} ms, limit {limit}"
        );
        assert_eq!(
            q.next_file_due(),
            next.map(t),
            "after {now} ms, limit {limit}"
        );
    }
}

#[test]
fn a_failed_commit_does_not_count_its_file_as_written() {
    let mut q = queue();
    q.submit("a", Log(vec![1]), FileWrite::Routine);
    let b = q.take_batch(t(0)).expect("batch");
    assert!(b.items[0].write_file);
    q.failed(b.id, b.items, t(0));
    let b = q.take_batch(t(100)).expect("batch");
    assert!(b.items[0].write_file, "still the first write");
}

#[test]
fn batches_are_bounded() {
    let mut q: WriteQueue<u32, Log> = WriteQueue::new(QueueConfig {
        max_batch: 3,
        ..QueueConfig::default()
    });
    for k in 0..7 {
        q.submit(k, Log(vec![k]), FileWrite::None);
    }
    let b = q.take_batch(t(0)).expect("batch");
    assert_eq!(b.items.len(), 3);
    q.committed(b.id);
    let b = q.take_batch(t(0)).expect("batch");
    assert_eq!(b.items.len(), 3);
}

/// A patch someone waits for (a rotated refresh token) is committed next, ahead of a
/// backlog of status changes, in a small batch: its commit does not wait for the backlog
/// (the 100,000-workload ramp stalled when it did).
#[test]
fn a_waited_for_patch_jumps_the_backlog_in_a_small_batch() {
    let mut q: WriteQueue<u32, Log> = WriteQueue::new(QueueConfig {
        max_batch: 100,
        urgent_fill: 2,
        ..QueueConfig::default()
    });
    for k in 0..50 {
        q.submit(k, Log(vec![k]), FileWrite::Now);
    }
    let seq = q.submit(99, Log(vec![99]), FileWrite::None);
    assert_eq!(q.add_key_waiter(7, 99, seq), None);
    let b = q.take_batch(t(0)).expect("batch");
    let taken: Vec<u32> = b.items.iter().map(|i| i.key).collect();
    assert_eq!(
        taken,
        vec![99, 0, 1],
        "the waited-for patch first, two others"
    );
    assert_eq!(q.committed(b.id), vec![(7, Answer::Durable)]);
    // Without a waiter the backlog drains in full batches, in order, nothing lost.
    let b = q.take_batch(t(0)).expect("batch");
    assert_eq!(b.items.len(), 48);
    assert_eq!(b.items[0].key, 2);
    q.committed(b.id);
    assert_eq!(q.pending(), 0);
}

/// A waiter for a patch that arrived while the workload's previous one was in flight: once
/// that commit ends, the new patch goes first too.
#[test]
fn a_waited_for_patch_behind_one_in_flight_goes_first_after_it() {
    let mut q: WriteQueue<u32, Log> = WriteQueue::new(QueueConfig {
        max_batch: 100,
        urgent_fill: 0,
        ..QueueConfig::default()
    });
    q.submit(99, Log(vec![1]), FileWrite::Now);
    let b = q.take_batch(t(0)).expect("batch");
    for k in 0..10 {
        q.submit(k, Log(vec![k]), FileWrite::Now);
    }
    let seq = q.submit(99, Log(vec![2]), FileWrite::None);
    assert_eq!(q.add_key_waiter(1, 99, seq), None);
    assert!(q.committed(b.id).is_empty(), "not the update waited for");
    let b = q.take_batch(t(0)).expect("batch");
    let got: Vec<(u32, Vec<u32>, bool)> = b
        .items
        .iter()
        .map(|i| (i.key, i.value.0.clone(), i.write_file))
        .collect();
    assert_eq!(got, vec![(99, vec![2], false)]);
    assert_eq!(q.committed(b.id), vec![(1, Answer::Durable)]);
    let b = q.take_batch(t(0)).expect("batch");
    assert_eq!(b.items.len(), 10);
}

#[derive(Debug, Clone)]
enum Op {
    Submit(u8, FileWrite),
    Take,
    Commit,
    Fail,
    Flush,
    Wait(u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..5, prop_oneof![Just(FileWrite::None), Just(FileWrite::Routine), Just(FileWrite::Now)])
            .prop_map(|(k, f)| Op::Submit(k, f)),
        2 => Just(Op::Take),
        2 => Just(Op::Commit),
        1 => Just(Op::Fail),
        1 => Just(Op::Flush),
        1 => (0u8..5).prop_map(Op::Wait),
        1 => (0u16..5_000).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Whatever the interleaving of submissions, commits, failures and flushes: every
    /// update is committed exactly once and in order per workload, a batch holds a workload
    /// at most once, a flush is answered only when everything before it is durable, and
    /// after failures stop everything drains.
    #[test]
    fn no_update_is_lost_or_reordered(ops in proptest::collection::vec(op(), 1..200)) {
        let mut q: WriteQueue<u8, Log> = WriteQueue::new(QueueConfig {
            max_batch: 3,
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
            status_refresh_interval: Duration::from_secs(1),
            urgent_fill: 1,
        });
        let mut now = t(0);
        let mut next = 0u32;
        let mut submitted: HashMap<u8, Vec<u32>> = HashMap::new();
        let mut durable: HashMap<u8, Vec<u32>> = HashMap::new();
        let mut batch: Option<Batch<u8, Log>> = None;
        let mut flush_ids = 0u64;
        let mut flushes: HashMap<u64, HashMap<u8, usize>> = HashMap::new();
        let mut last_seq: HashMap<u8, u64> = HashMap::new();
        let check = |answers: Vec<(WaiterId, Answer<u8>)>, durable: &HashMap<u8, Vec<u32>>,
                         flushes: &mut HashMap<u64, HashMap<u8, usize>>| {
            for (id, a) in answers {
                let want = flushes.remove(&id).expect("a known flush");
                if a == Answer::Durable {
                    for (k, n) in want {
                        prop_assert!(durable.get(&k).map_or(0, Vec::len) >= n);
                    }
                }
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Submit(k, f) => {
                    next += 1;
                    submitted.entry(k).or_default().push(next);
                    last_seq.insert(k, q.submit(k, Log(vec![next]), f));
                }
                Op::Take => {
                    if batch.is_none() {
                        batch = q.take_batch(now);
                        if let Some(b) = &batch {
                            let mut ks: Vec<u8> = b.items.iter().map(|i| i.key).collect();
                            ks.sort_unstable();
                            ks.dedup();
                            prop_assert_eq!(ks.len(), b.items.len());
                        }
                    } else {
                        prop_assert!(q.take_batch(now).is_none());
                    }
                }
                Op::Commit => {
                    if let Some(b) = batch.take() {
                        for i in &b.items {
                            durable.entry(i.key).or_default().extend(i.value.0.iter().copied());
                        }
                        let answers = q.committed(b.id);
                        check(answers, &durable, &mut flushes)?;
                    }
                }
                Op::Fail => {
                    if let Some(b) = batch.take() {
                        for (id, a) in q.failed(b.id, b.items, now) {
                            prop_assert_eq!(a, Answer::Failed);
                            flushes.remove(&id);
                        }
                    }
                }
                Op::Flush => {
                    flush_ids += 1;
                    let want = submitted.iter().map(|(k, v)| (*k, v.len())).collect();
                    flushes.insert(flush_ids, want);
                    if let Some(a) = q.add_flush(flush_ids, now.plus(Duration::from_secs(3600))) {
                        check(vec![(flush_ids, a)], &durable, &mut flushes)?;
                    }
                }
                Op::Wait(k) => {
                    // A key waiter for k's latest update (a rotated refresh token).
                    if let Some(&seq) = last_seq.get(&k) {
                        flush_ids += 1;
                        let n = submitted.get(&k).map_or(0, Vec::len);
                        flushes.insert(flush_ids, HashMap::from([(k, n)]));
                        if let Some(a) = q.add_key_waiter(flush_ids, k, seq) {
                            check(vec![(flush_ids, a)], &durable, &mut flushes)?;
                        }
                    }
                }
                Op::Advance(ms) => {
                    now = now.plus(Duration::from_millis(u64::from(ms)));
                    let _ = q.due_files(now, usize::MAX);
                }
            }
        }
        // Drain without failures.
        if let Some(b) = batch.take() {
            for i in &b.items {
                durable.entry(i.key).or_default().extend(i.value.0.iter().copied());
            }
            let answers = q.committed(b.id);
            check(answers, &durable, &mut flushes)?;
        }
        now = now.plus(Duration::from_secs(10));
        while let Some(b) = q.take_batch(now) {
            for i in &b.items {
                durable.entry(i.key).or_default().extend(i.value.0.iter().copied());
            }
            let answers = q.committed(b.id);
            check(answers, &durable, &mut flushes)?;
        }
        prop_assert_eq!(&durable, &submitted);
        prop_assert_eq!(q.pending(), 0);
        prop_assert!(flushes.is_empty(), "every flush answered once drained");
    }
}
