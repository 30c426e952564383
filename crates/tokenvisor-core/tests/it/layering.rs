//! The core's modules form layers: no module uses another that uses it back, directly or
//! through others. (`machine` and `status` once imported each other; `projection` is the one
//! module that knows both.) This test reads the crate's sources (test modules excluded) and
//! fails naming the cycle.

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
fn only_the_projection_knows_both_the_machine_and_the_record() {
    let g = graph();
    let machine = &g["machine"];
    let status = &g["status"];
    assert!(!machine.contains("status"), "machine uses status");
    assert!(!status.contains("machine"), "status uses machine");
    assert!(g["projection"].contains("machine") && g["projection"].contains("status"));
}
