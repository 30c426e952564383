//! Micro-benchmarks of the runtime's hot paths: token reads and status-file writes.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tokenvisor::Clock;
use tokenvisor::handle::{AccessToken, Slot, TokenHandle, WorkloadShared};
use tokenvisor::status_store;
use tokenvisor_core::machine::{Machine, MachineConfig, Resume};
use tokenvisor_core::{Secret, StatusRecord, Timestamp, WorkloadName};

fn bench_handle(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let clock = Clock::new();
    let shared = WorkloadShared::new(WorkloadName::new("bench").expect("name"), clock);
    shared.set_slot(Slot::Token(AccessToken {
        secret: Secret::from("at-bench"),
        token_type: "Bearer".into(),
        expires_at: clock.now().plus(std::time::Duration::from_secs(3600)),
    }));
    let handle = TokenHandle::new(shared);
    let mut g = c.benchmark_group("handle");
    g.bench_function("current", |b| {
        b.iter(|| black_box(handle.current().map(|t| t.token().expires_at)));
    });
    g.bench_function("current_unchecked", |b| {
        b.iter(|| black_box(handle.current_unchecked().map(|t| t.token().expires_at)));
    });
    g.finish();
}

fn record(now: Timestamp) -> StatusRecord {
    let (m, _) = Machine::start(MachineConfig::default(), Resume::Fresh, None, now);
    let (status, status_context) = m.workload_status();
    StatusRecord {
        status,
        status_context,
        created_at: now,
        updated_at: now,
        process_id: 1,
        token: Some(m.token_section()),
    }
}

fn bench_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    status_store::ensure_dir(dir.path()).expect("dir");
    let rec = record(Timestamp::from_millis(1_800_000_000_000));
    let names: Vec<WorkloadName> = (0..64)
        .map(|i| WorkloadName::new(&format!("wl-{i}")).expect("name"))
        .collect();
    let mut g = c.benchmark_group("status_store");
    g.sample_size(10);
    g.bench_function("write_atomic_batch_64_sequential", |b| {
        b.iter_batched(
            || (),
            |()| {
                for n in &names {
                    status_store::write_atomic(dir.path(), n, &rec).expect("write");
                }
            },
            BatchSize::PerIteration,
        );
    });
    // What the persistence actor does with a batch: each file staged (temp, fsync, rename),
    // then one fsync of the directory for all of them.
    g.bench_function("write_staged_batch_64_one_dir_fsync", |b| {
        b.iter_batched(
            || (),
            |()| {
                for n in &names {
                    status_store::write_staged(dir.path(), n, &rec).expect("write");
                }
                status_store::sync_dir(dir.path()).expect("fsync");
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion_group!(benches, bench_handle, bench_write);
criterion_main!(benches);
