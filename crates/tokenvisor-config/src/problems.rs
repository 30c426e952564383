//! Problems: [`ConfigError`] (every problem of one file), [`ConfigProblem`] (one
//! `FILE:LINE: KEY: reason`), and the collector both passes report into.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use humantime::format_duration;

use tokenvisor_core::Secret;
use toml::Spanned;

use crate::schema::{Count, HumanDuration};

/// Everything wrong with one configuration (never empty). `Display` prints one problem per
/// line as `FILE:LINE: KEY: reason` (`LINE` and `KEY` are left out when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    problems: Vec<ConfigProblem>,
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The dotted key, e.g. `workload[2].client_secret_file` or `defaults.refresh_at`; empty
    /// when the problem concerns the whole file.
    pub key: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// Why it is wrong. Never contains a secret.
    pub reason: String,
}

impl ConfigError {
    /// The file the problems are in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The problems, in file order.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    pub(crate) fn single(file: &Path, reason: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problems: vec![ConfigProblem {
                key: String::new(),
                line: None,
                reason,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            p.write_line(f, &self.file, "")?;
        }
        Ok(())
    }
}

impl ConfigProblem {
    /// Writes `FILE:LINE: KEY: {tag}reason` (`LINE` and `KEY` left out when unknown).
    pub(crate) fn write_line(
        &self,
        f: &mut impl fmt::Write,
        file: &Path,
        tag: &str,
    ) -> fmt::Result {
        write!(f, "{}", file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {tag}{}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The collector of problems and warnings of one pass over a file.
pub(crate) struct Cx {
    line_starts: Vec<usize>,
    pub(crate) problems: Vec<ConfigProblem>,
    pub(crate) warnings: Vec<ConfigProblem>,
    /// Keys already reported: later checks that depend on them stay quiet.
    pub(crate) broken: HashSet<String>,
}

impl Cx {
    pub(crate) fn new(text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Cx {
            line_starts,
            problems: Vec::new(),
            warnings: Vec::new(),
            broken: HashSet::new(),
        }
    }

    pub(crate) fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    fn at(&self, key: String, span: Option<Range<usize>>, reason: String) -> ConfigProblem {
        let line = span.map(|s| self.line(s.start));
        ConfigProblem { key, line, reason }
    }

    pub(crate) fn problem(
        &mut self,
        key: String,
        span: Option<Range<usize>>,
        reason: impl Into<String>,
    ) {
        self.broken.insert(key.clone());
        let problem = self.at(key, span, reason.into());
        self.problems.push(problem);
    }

    pub(crate) fn warning(
        &mut self,
        key: String,
        span: Option<Range<usize>>,
        reason: impl Into<String>,
    ) {
        let warning = self.at(key, span, reason.into());
        self.warnings.push(warning);
    }

    /// Reads a secret file, turning its notes into warnings at `key`.
    pub(crate) fn secret_file(
        &mut self,
        key: &str,
        span: Range<usize>,
        path: &Path,
    ) -> Result<Secret, String> {
        let (secret, notes) =
            crate::secrets::read_secret_file_noted(path).map_err(|e| e.to_string())?;
        for note in notes.warnings(path) {
            self.warning(key.to_owned(), Some(span.clone()), note);
        }
        Ok(secret)
    }

    /// The duration at `key` when it is longer than 0s (if `positive`) and at most `max`
    /// (`why`: the reason of the limit, for the message).
    pub(crate) fn duration(
        &mut self,
        key: String,
        raw: &Spanned<HumanDuration>,
        positive: bool,
        (max, why): (Duration, &str),
    ) -> Option<Duration> {
        let d = raw.get_ref().0;
        let reason = if positive && d.is_zero() {
            "must be longer than 0s".to_owned()
        } else if d > max {
            let (d, max) = (format_duration(d), format_duration(max));
            format!("is {d}; it must be at most {max} ({why})")
        } else {
            return Some(d);
        };
        self.problem(key, Some(raw.span()), reason);
        None
    }

    /// The whole number at `key` when it is between 1 and `max`; else reported as
    /// "is N; `rule`".
    pub(crate) fn count(
        &mut self,
        key: String,
        raw: &Spanned<Count>,
        max: usize,
        rule: &str,
    ) -> Option<usize> {
        match usize::try_from(*raw.get_ref()) {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            Ok(_) | Err(_) => {
                let reason = format!("is {}; {rule}", raw.get_ref());
                self.problem(key, Some(raw.span()), reason);
                None
            }
        }
    }

    /// The strings of `list` (at `key`) when each one is `valid`; each that is not is
    /// reported at `key[j]` as "`value` is not `what`".
    pub(crate) fn each_valid(
        &mut self,
        key: &str,
        list: &Spanned<Vec<Spanned<String>>>,
        valid: impl Fn(&str) -> bool,
        what: &str,
    ) -> Option<Vec<String>> {
        let mut ok = true;
        for (j, s) in list.get_ref().iter().enumerate() {
            if !valid(s.get_ref()) {
                ok = false;
                let reason = format!("{:?} is not {what}", s.get_ref());
                self.problem(format!("{key}[{j}]"), Some(s.span()), reason);
            }
        }
        ok.then(|| list.get_ref().iter().map(|s| s.get_ref().clone()).collect())
    }

    pub(crate) fn is_broken(&self, key: &str) -> bool {
        self.broken.contains(key)
    }

    pub(crate) fn into_error(mut self, file: &Path) -> ConfigError {
        // Stable: problems without a line (whole-file ones) first, then in file order.
        self.problems.sort_by_key(|p| p.line);
        ConfigError {
            file: file.to_path_buf(),
            problems: self.problems,
        }
    }
}
