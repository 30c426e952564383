//! # tokenvisor-bench
//!
//! Benchmarks. `benches/core.rs`: classify, machine step, backoff, status serialisation.
//! `benches/runtime.rs`: `TokenHandle` reads, status-file batch writes. Whole-system figures
//! (scale, refresh storms, persistence bursts, timer lateness, recovery) come from
//! `tokenvisor soak`; see `docs/BENCHMARKS.md`.
