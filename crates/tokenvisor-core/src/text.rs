//! Plain text for a terminal: aligned tables, compact and relative durations, RFC 3339
//! instants. Pure (time is an argument); every cell goes through the one sanitiser
//! ([`crate::scrub::clean`]), so text read from a file edited by hand cannot move the
//! cursor or recolour the terminal.

use std::fmt::Write as _;
use std::time::Duration;

use crate::Timestamp;

pub use crate::scrub::truncate_chars;

/// A plain-text table: a header row and left-aligned columns separated by two spaces. The
/// last column is not padded (no trailing spaces).
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    #[must_use]
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (cells are made safe for a terminal first).
    pub fn row(&mut self, cells: &[String]) {
        self.rows.push(cells.iter().map(|c| safe_text(c)).collect());
    }

    /// The rendered table, one line per row, each ending in a newline.
    #[must_use]
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    let _ = write!(line, "{cell}{:pad$}  ", "");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Text made safe for one terminal line: control and invisible formatting characters dropped,
/// whitespace folded to single spaces ([`crate::scrub::clean`]).
#[must_use]
pub fn safe_text(s: &str) -> String {
    crate::scrub::clean(s)
}

/// A compact duration: the two largest non-zero units of d/h/m/s (`3d 4h`, `1h 5m`, `42s`).
#[must_use]
pub fn compact_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (name, size) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n}{name}"));
        }
        if parts.len() == 2 || (!parts.is_empty() && n == 0) {
            break;
        }
    }
    parts.join(" ")
}

/// An instant relative to `now`: `in 5m 3s` or `5m 3s ago`.
#[must_use]
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    if at >= now {
        format!("in {}", compact_duration(at.since(now)))
    } else {
        format!("{} ago", compact_duration(now.since(at)))
    }
}

/// RFC 3339 in UTC, whole seconds.
#[must_use]
pub fn absolute(at: Timestamp) -> String {
    humantime::format_rfc3339_seconds(at.to_system_time()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_durations() {
        let table = [
            (0, "0s"),
            (42, "42s"),
            (3900, "1h 5m"),
            (3600, "1h"),
            (3601, "1h"),
            (3 * 86_400 + 4 * 3600, "3d 4h"),
        ];
        for (secs, want) in table {
            assert_eq!(compact_duration(Duration::from_secs(secs)), want, "{secs}");
        }
    }

    #[test]
    fn relative_times() {
        let now = Timestamp::from_millis(1_000_000);
        assert_eq!(
            relative(Timestamp::from_millis(1_090_000), now),
            "in 1m 30s"
        );
        assert_eq!(relative(Timestamp::from_millis(940_000), now), "1m ago");
    }

    #[test]
    fn tables_align_and_are_safe() {
        let mut t = Table::new(&["NAME", "STATUS", "ERROR"]);
        t.row(&["a".into(), "running".into(), String::new()]);
        t.row(&[
            "longer-name".into(),
            "x\u{1b}[31m\u{202E}".into(),
            "e\n  f".into(),
        ]);
        let s = t.render();
        assert_eq!(
            s,
            "NAME         STATUS   ERROR\na            running\nlonger-name  x[31m    e f\n"
        );
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abc", 4), "abc");
        assert_eq!(truncate_chars("ééééé", 3), "éé…");
    }
}
