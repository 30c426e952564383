//! `tokenvisor soak`: short runs of the built binary. Only the outcome of the checks and the
//! shape of the JSON are asserted, never a speed.

use crate::common::{Run, has_token_like, run};
use serde_json::Value;

/// The last line of stdout, parsed (the `--json` contract).
fn last_json(r: &Run) -> Value {
    let line = r
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no output: {r:#?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {r:#?}"))
}

/// Asserts exit 0, no secret in the output, and that `keys` are in the JSON; returns it.
fn ok_with(r: &Run, scenario: &str, keys: &[&str]) -> Value {
    assert_eq!(r.code, Some(0), "{r:#?}");
    for prefix in ["rt_", "at_"] {
        assert!(!has_token_like(&r.all(), prefix), "a token leaked: {r:#?}");
    }
    assert!(
        !r.all().contains("-secret-"),
        "a client secret leaked: {r:#?}"
    );
    let json = last_json(r);
    assert_eq!(json["scenario"], scenario, "{json}");
    assert_eq!(json["checks_ok"], true, "{json}");
    for key in keys {
        assert!(json.get(*key).is_some(), "missing {key}: {json}");
    }
    json
}

fn number(json: &Value, key: &str) -> f64 {
    json[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {json}"))
}

#[test]
fn soak_with_chaos_holds_its_invariants() {
    let r = run(&["soak", "--workloads", "500", "--duration", "30s", "--json"]);
    let json = ok_with(
        &r,
        "soak",
        &[
            "workloads",
            "duration_secs",
            "refreshes",
            "rss_bytes_per_workload",
            "invariants_ok",
            "spawn_secs",
            "all_healthy_secs",
            "status_writes",
            "status_write_failures",
            "timer_lateness_p99_ms",
            "unauthenticated_revoked",
            "max_pending",
        ],
    );
    assert_eq!(json["invariants_ok"], true, "{json}");
    assert_eq!(json["workloads"], 500);
    assert!(number(&json, "refreshes") > 0.0, "{json}");
    assert!(number(&json, "refreshes_during_window") > 0.0, "{json}");
    assert!(number(&json, "faults") > 0.0, "chaos was on: {json}");
    assert!(number(&json, "status_writes") >= 500.0, "{json}");
    // Once per place a record waits (uncommitted, file queued, file to retry): ≤ 3 each.
    assert!(number(&json, "max_pending") <= 3.0 * 500.0, "{json}");
    assert_eq!(json["unauthenticated_unexpected"], 0);
    // The human summary comes first.
    assert!(r.stdout.contains("soak summary"), "{}", r.stdout);
}

#[test]
fn storm_with_baseline_reports_both_rates() {
    let r = run(&[
        "soak",
        "--scenario",
        "storm",
        "--workloads",
        "500",
        "--baseline",
        "--json",
    ]);
    let json = ok_with(
        &r,
        "storm",
        &[
            "tokenvisor_per_sec",
            "baseline_per_sec",
            "ratio",
            "workloads",
            "concurrency",
        ],
    );
    assert_eq!(json["workloads"], 500);
    assert_eq!(json["concurrency"], 64);
    assert!(number(&json, "tokenvisor_per_sec") > 0.0, "{json}");
    assert!(number(&json, "baseline_per_sec") > 0.0, "{json}");
    assert!(number(&json, "ratio") > 0.0, "{json}");
    assert_eq!(json["baseline_failed"], 0);
}

#[test]
fn burst_reports_writes_and_bare_loops() {
    let r = run(&[
        "soak",
        "--scenario",
        "burst",
        "--workloads",
        "300",
        "--json",
    ]);
    let json = ok_with(
        &r,
        "burst",
        &[
            "burst_secs",
            "status_changes",
            "writes_issued",
            "max_pending",
            "bare_sequential_per_sec",
            "bare_parallel_best_per_sec",
            "bare_parallel_best_threads",
            "ratio_to_sequential",
            "ratio_to_parallel",
        ],
    );
    assert_eq!(json["files_verified_ok"], 300);
    assert!(number(&json, "writes_issued") >= 300.0, "{json}");
    assert!(number(&json, "writes_issued") <= number(&json, "status_changes"));
    assert!(number(&json, "max_pending") <= 3.0 * 300.0, "{json}");
    assert_eq!(json["bare_files"], 300);
    for k in ["2", "4", "8", "16"] {
        assert!(json["bare_parallel_per_sec"][k].is_number(), "{json}");
    }
}

#[test]
fn scale_timers_and_recovery_run_small() {
    let scale = run(&[
        "soak",
        "--scenario",
        "scale",
        "--workloads",
        "200",
        "--json",
    ]);
    let json = ok_with(
        &scale,
        "scale",
        &["spawn_secs", "all_healthy_secs", "rss_bytes_per_workload"],
    );
    assert_eq!(json["refreshes"], 200);

    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/soak-calm.toml");
    let timers = run(&[
        "soak",
        "--scenario",
        "timers",
        "--workloads",
        "100",
        "--duration",
        "4s",
        "--lifetime",
        "2s",
        "--profile",
        profile,
        "--json",
    ]);
    let json = ok_with(
        &timers,
        "timers",
        &["timer_lateness_p99_ms", "timer_fires", "ratio_to_target"],
    );
    assert!(number(&json, "timer_fires") > 0.0, "{json}");

    let recovery = run(&[
        "soak",
        "--scenario",
        "recovery",
        "--workloads",
        "250",
        "--json",
    ]);
    let json = ok_with(&recovery, "recovery", &["steady_secs", "start_secs"]);
    assert_eq!(json["recovered"], 250);
    assert_eq!(json["unauthenticated"], 3);
    assert_eq!(json["auth_retrying"], 2);
    assert_eq!(json["states_recovered"], true);
}

#[test]
fn usage_errors_exit_2() {
    let r = run(&["soak", "--scenario", "scale", "--baseline"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    let r = run(&["soak", "--profile", "/nonexistent/soak.toml"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    let r = run(&["soak", "--workloads", "0"]);
    assert_eq!(r.code, Some(2), "{r:#?}");
    let dir = tempfile::tempdir().unwrap();
    let r = run(&[
        "soak",
        "--status-dir",
        dir.path().parent().unwrap().to_str().unwrap(),
    ]);
    assert_eq!(
        r.code,
        Some(2),
        "a non-empty status directory is refused: {r:#?}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[chaos]\nhtml_403 = 2.0\n").unwrap();
    let r = run(&["soak", "--profile", bad.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r:#?}");
    assert!(r.stderr.contains("html_403"), "{r:#?}");
}
