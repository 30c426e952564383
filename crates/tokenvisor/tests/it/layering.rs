//! The runtime's modules form layers: no module uses another that uses it back, directly or
//! through others. (`token` and `timers` once imported each other, and so did `locks` and
//! `status_store`: the token actor's messages now live in `msg`, and the daemon's start-up
//! locks, which join `locks` and `status_store`, in `startup`.) This test reads the crate's
//! sources (test modules excluded) and fails naming the cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tokenvisor_test_support::layering::assert_layered;

/// The crate's module graph, checked for cycles.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    assert_layered(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), 5)
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    graph();
}

#[test]
fn the_timer_service_and_the_store_sit_below_their_users() {
    let g = graph();
    assert!(!g["timers"].contains("token"), "timers uses token");
    assert!(g["token"].contains("timers") && g["token"].contains("msg"));
    assert!(
        !g["locks"].contains("status_store"),
        "locks uses status_store"
    );
    assert!(g["startup"].contains("locks") && g["startup"].contains("status_store"));
}
