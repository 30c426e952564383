//! The state journal's store, measured: one durable transaction per batch of N records
//! (N = 1, 64, 1024; a record ≈ 300 B: a refresh token, an access token with its expiry and
//! a status record) in SQLite (WAL, `synchronous=FULL`, and `NORMAL` for comparison) through
//! rusqlite, and in redb (`Durability::Immediate`). Each iteration writes the batch over the
//! same keys (the journal updates rows in place), so the database stays the size of one batch.
//!
//! `cargo bench -p tokenvisor-bench --bench journal`

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use redb::{Database, Durability, ReadableDatabase as _, TableDefinition};

const TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("workloads");

/// One ≈ 300-byte record: name, refresh token, access token, expiry, status JSON.
struct Rec {
    name: String,
    refresh: String,
    access: String,
    expires_ms: i64,
    status: String,
}

fn records(n: usize, round: u64) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec {
            name: format!("workload-{i:06}"),
            refresh: format!("rt-{round:08}-{i:06}-{}", "r".repeat(28)),
            access: format!("at-{round:08}-{i:06}-{}", "a".repeat(90)),
            expires_ms: 1_800_000_000_000 + round as i64,
            status: format!(
                r#"{{"status":"running","status_context":"","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:{:02}Z","process_id":1}}"#,
                round % 60
            ),
        })
        .collect()
}

fn sqlite(dir: &std::path::Path, synchronous: &str) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("journal.sqlite3")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", synchronous)
        .expect("sync");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS workloads (name TEXT PRIMARY KEY, refresh TEXT, \
         access TEXT, expires INTEGER, status TEXT) WITHOUT ROWID",
    )
    .expect("table");
    conn
}

fn sqlite_commit(conn: &mut rusqlite::Connection, recs: &[Rec]) {
    let tx = conn.transaction().expect("tx");
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO workloads (name, refresh, access, expires, status) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(name) DO UPDATE SET refresh = excluded.refresh, access = excluded.access, \
                 expires = excluded.expires, status = excluded.status",
            )
            .expect("prepare");
        for r in recs {
            stmt.execute(rusqlite::params![
                r.name,
                r.refresh,
                r.access,
                r.expires_ms,
                r.status
            ])
            .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn redb_commit(db: &Database, recs: &[Rec], buf: &mut Vec<u8>) {
    let mut tx = db.begin_write().expect("tx");
    tx.set_durability(Durability::Immediate)
        .expect("durability");
    {
        let mut table = tx.open_table(TABLE).expect("table");
        for r in recs {
            buf.clear();
            buf.extend_from_slice(r.refresh.as_bytes());
            buf.push(0);
            buf.extend_from_slice(r.access.as_bytes());
            buf.push(0);
            buf.extend_from_slice(&r.expires_ms.to_le_bytes());
            buf.extend_from_slice(r.status.as_bytes());
            table
                .insert(r.name.as_str(), buf.as_slice())
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("journal_commit");
    g.sample_size(20);
    for n in [1usize, 64, 1024] {
        g.throughput(Throughput::Elements(n as u64));
        let sets: Vec<Vec<Rec>> = (0..4).map(|round| records(n, round)).collect();
        for sync in ["FULL", "NORMAL"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut conn = sqlite(dir.path(), sync);
            let mut round = 0usize;
            g.bench_function(BenchmarkId::new(format!("sqlite_wal_{sync}"), n), |b| {
                b.iter(|| {
                    round += 1;
                    sqlite_commit(&mut conn, black_box(&sets[round % sets.len()]));
                });
            });
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("journal.redb")).expect("redb");
        let mut buf = Vec::new();
        let mut round = 0usize;
        g.bench_function(BenchmarkId::new("redb_immediate", n), |b| {
            b.iter(|| {
                round += 1;
                redb_commit(&db, black_box(&sets[round % sets.len()]), &mut buf);
            });
        });
        // Both stores read back what they wrote (a sanity check outside the timing).
        let read = db.begin_read().expect("read");
        let table = read.open_table(TABLE).expect("table");
        assert!(table.get("workload-000000").expect("get").is_some());
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
