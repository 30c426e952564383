//! `tokenvisor demo` when stdout is not a terminal: plain lines (no redraws), a story that
//! fits a screen, and five acts that each have a visible effect.

#![cfg(feature = "soak")] // `tokenvisor demo` exists only with the feature

use crate::common::run;

/// The summary's "act N: A left running, B (back) to running" counts.
fn act_effects(stdout: &str) -> Vec<(u32, u32)> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("act "))
        .filter_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let mut nums = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u32>().ok());
            Some((nums.next()??, nums.next()??))
        })
        .collect()
}

#[test]
fn the_plain_demo_fits_a_screen_and_every_act_shows() {
    let r = run(&["demo", "--workloads", "6", "--duration", "20s"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        !r.stdout.contains('\x1b'),
        "no terminal escapes when piped:\n{}",
        r.stdout
    );
    let lines = r.stdout.lines().count();
    assert!(lines <= 60, "{lines} lines:\n{}", r.stdout);
    assert!(
        r.stderr.trim().is_empty(),
        "the story is not interleaved with logs:\n{}",
        r.stderr
    );
    let effects = act_effects(&r.stdout);
    assert_eq!(effects.len(), 5, "five acts in the summary:\n{}", r.stdout);
    for (i, (left, _)) in effects.iter().take(4).enumerate() {
        assert!(
            *left >= 1,
            "act {} moved nobody out of running:\n{}",
            i + 1,
            r.stdout
        );
    }
    assert!(
        effects[4].1 >= 1,
        "act 5 brought nobody back:\n{}",
        r.stdout
    );
}
