//! The exit codes of every command: one table ([`Exit`], [`TABLE`]), printed by `--help`
//! (after the command list) and copied in the README. A code means the same thing whatever
//! the command; a command uses the rows that name it.

use std::fmt::Write as _;

/// What a command's exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Success: the command did what it was asked, and found nothing wrong.
    Ok,
    /// A problem was found or something failed: an invalid configuration, a workload that
    /// needs attention, a failed check, a status that could not be flushed, another
    /// daemon holding a lock, an internal error.
    Problem,
    /// Usage error: bad flags, a file or directory that does not exist, an unknown workload.
    Usage,
    /// `probe`: the attempt failed transiently (tokenvisor would retry).
    ProbeTransient,
    /// `probe`: the attempt failed permanently (the credentials were rejected).
    ProbePermanent,
}

impl Exit {
    /// The process exit code.
    pub(crate) const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Problem => 1,
            Exit::Usage => 2,
            Exit::ProbeTransient => 10,
            Exit::ProbePermanent => 11,
        }
    }
}

/// Every exit code: (code, the commands that use it, what it means).
pub(crate) const TABLE: [(Exit, &str, &str); 5] = [
    (Exit::Ok, "all", "success; nothing needs attention"),
    (
        Exit::Problem,
        "all",
        "a problem: invalid configuration, a workload that needs attention (status), a failed \
         check (demo, soak), a lock held by another daemon or a status not flushed (run), an \
         internal error",
    ),
    (
        Exit::Usage,
        "all",
        "usage: bad or missing flags, no such configuration file or directory, unknown workload",
    ),
    (
        Exit::ProbeTransient,
        "probe",
        "transient failure: tokenvisor would retry",
    ),
    (
        Exit::ProbePermanent,
        "probe",
        "permanent failure: the credentials were rejected",
    ),
];

/// The table as `--help` shows it.
pub(crate) fn help() -> String {
    let mut s = String::from("Exit codes (the same for every command):\n");
    for (exit, commands, meaning) in TABLE {
        let _ = writeln!(s, "  {:>2}  {commands:<5}  {meaning}", exit.code());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_table_once() {
        let all = [
            Exit::Ok,
            Exit::Problem,
            Exit::Usage,
            Exit::ProbeTransient,
            Exit::ProbePermanent,
        ];
        for exit in all {
            // Exhaustive: a new variant must be added to `all` and to the table.
            match exit {
                Exit::Ok
                | Exit::Problem
                | Exit::Usage
                | Exit::ProbeTransient
                | Exit::ProbePermanent => {}
            }
            let rows = TABLE.iter().filter(|(e, _, _)| *e == exit).count();
            assert_eq!(rows, 1, "{exit:?} in the table");
        }
        let mut codes: Vec<u8> = TABLE.iter().map(|(e, _, _)| e.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), TABLE.len(), "codes are distinct and sorted");
    }

    #[test]
    fn the_readme_copies_the_table() {
        let readme = include_str!("../../../README.md");
        for (exit, commands, _) in TABLE {
            let row = format!("| {} | {commands} |", exit.code());
            assert!(
                readme.contains(&row),
                "README lacks the exit-code row {row:?}"
            );
        }
    }
}
