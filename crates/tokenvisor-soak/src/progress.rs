//! Progress of the long phases of a run (adding N workloads, waiting for N to settle): a bar
//! (indicatif) when stderr is a terminal, otherwise a plain line every
//! [`LINE_EVERY`] while the phase lasts (a phase shorter than that prints nothing). Both go
//! to stderr, so stdout keeps the report (and `--json`'s last line).

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How often a plain progress line is printed.
pub(crate) const LINE_EVERY: Duration = Duration::from_secs(5);

/// One phase's progress: `done` of `total`.
pub(crate) struct Progress {
    out: Out,
    what: String,
    total: u64,
    done: AtomicU64,
    started: Instant,
    last_line: Mutex<Instant>,
}

enum Out {
    Bar(indicatif::ProgressBar),
    Lines,
}

impl Progress {
    /// A phase called `what` of `total` steps.
    pub(crate) fn new(what: &str, total: u64) -> Progress {
        let out = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr_with_hz(4),
            );
            let style = indicatif::ProgressStyle::with_template(
                "{msg:>24} [{bar:30}] {pos}/{len} ({elapsed}, about {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.set_message(what.to_owned());
            Out::Bar(bar)
        } else {
            Out::Lines
        };
        let now = Instant::now();
        Progress {
            out,
            what: what.to_owned(),
            total,
            done: AtomicU64::new(0),
            started: now,
            last_line: Mutex::new(now),
        }
    }

    /// One more step done.
    pub(crate) fn inc(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.show(done);
    }

    /// `done` steps done in all.
    pub(crate) fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.show(done);
    }

    fn show(&self, done: u64) {
        match &self.out {
            Out::Bar(bar) => bar.set_position(done),
            Out::Lines => {
                let Ok(mut last) = self.last_line.try_lock() else {
                    return;
                };
                if last.elapsed() >= LINE_EVERY {
                    *last = Instant::now();
                    eprintln!("{}", self.line(done));
                }
            }
        }
    }

    /// The plain line: `what: done/total (elapsed)`.
    fn line(&self, done: u64) -> String {
        format!(
            "{}: {done}/{} ({:.0}s)",
            self.what,
            self.total,
            self.started.elapsed().as_secs_f64()
        )
    }

    /// The phase is over: the bar is cleared; a plain line is printed only when the phase
    /// printed lines before.
    pub(crate) fn finish(&self) {
        match &self.out {
            Out::Bar(bar) => bar.finish_and_clear(),
            Out::Lines => {
                let last = *self
                    .last_line
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if last != self.started {
                    eprintln!("{} done", self.line(self.done.load(Ordering::Relaxed)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_names_the_phase_and_counts() {
        let p = Progress::new("adding workloads", 100_000);
        p.set(42_000);
        assert!(
            p.line(42_000)
                .starts_with("adding workloads: 42000/100000 (")
        );
        p.finish();
    }
}
