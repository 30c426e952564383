//! Problems: [`ConfigError`] (every problem of one file), [`ConfigProblem`] (one
//! `FILE:LINE: KEY: reason`), and the collector both passes report into.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use tokenvisor_core::Secret;
use toml::Spanned;

use crate::schema::List;

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
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<_> = self
            .problems
            .iter()
            .map(|p| p.render(&self.file, ""))
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigProblem {
    /// `FILE:LINE: KEY: {tag}reason` (`LINE` and `KEY` left out when unknown).
    pub(crate) fn render(&self, file: &Path, tag: &str) -> String {
        let line = self.line.map_or(String::new(), |l| format!(":{l}"));
        let key = Some(&self.key).filter(|k| !k.is_empty());
        let key = key.map_or(String::new(), |k| format!(": {k}"));
        format!("{}{line}{key}: {tag}{}", file.display(), self.reason)
    }
}

/// Where a problem is, when known.
pub(crate) type Span = Option<Range<usize>>;

/// The collector of problems and warnings of one pass over a file. Keys are dotted paths;
/// the methods taking a `name` take a key of the section being resolved ([`Cx::path`]).
#[derive(Default)]
pub(crate) struct Cx {
    line_starts: Vec<usize>,
    pub(crate) problems: Vec<ConfigProblem>,
    pub(crate) warnings: Vec<ConfigProblem>,
    /// Keys already reported: later checks that depend on them stay quiet.
    pub(crate) broken: HashSet<String>,
    /// The section being resolved (`service`, `defaults`, `workload[2]`) and its header.
    pub(crate) path: String,
    pub(crate) header: Span,
}

impl Cx {
    pub(crate) fn new(text: &str) -> Self {
        let newlines = text.match_indices('\n').map(|(i, _)| i + 1);
        Cx {
            line_starts: std::iter::once(0).chain(newlines).collect(),
            ..Cx::default()
        }
    }

    pub(crate) fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    fn at(&self, key: String, span: Span, reason: impl Into<String>) -> ConfigProblem {
        let line = span.map(|s| self.line(s.start));
        ConfigProblem {
            key,
            line,
            reason: reason.into(),
        }
    }

    /// A problem at the dotted `key`.
    pub(crate) fn problem(&mut self, key: String, span: Span, reason: impl Into<String>) {
        self.broken.insert(key.clone());
        self.problems.push(self.at(key, span, reason));
    }

    /// `name`'s dotted key in the current section.
    pub(crate) fn key(&self, name: &str) -> String {
        join_key(&self.path, name)
    }

    pub(crate) fn report(&mut self, name: &str, span: Span, reason: impl Into<String>) {
        self.problem(self.key(name), span, reason);
    }

    pub(crate) fn warn(&mut self, name: &str, span: Span, reason: impl Into<String>) {
        self.warnings.push(self.at(self.key(name), span, reason));
    }

    pub(crate) fn broken_here(&self, names: &[&str]) -> bool {
        (names.iter()).any(|name| self.broken.contains(&self.key(name)))
    }

    /// `raw`'s value (if any) through `f`; a failure is reported at `name`, on `raw`'s line.
    pub(crate) fn check<'r, S: 'r, T>(
        &mut self,
        name: &str,
        raw: impl Into<Option<&'r Spanned<S>>>,
        f: impl FnOnce(&S) -> Result<T, String>,
    ) -> Option<T> {
        let raw = raw.into()?;
        f(raw.get_ref())
            .map_err(|why| self.report(name, Some(raw.span()), why))
            .ok()
    }

    /// [`Cx::check`] of a key that must be set: a missing one is reported on the section's
    /// header (unless it was present but already reported).
    pub(crate) fn required<S, T>(
        &mut self,
        name: &str,
        raw: Option<&Spanned<S>>,
        missing: &str,
        f: impl FnOnce(&S) -> Result<T, String>,
    ) -> Option<T> {
        match raw {
            Some(raw) => self.check(name, raw, f),
            None if self.broken_here(&[name]) => None,
            None => {
                self.report(name, self.header.clone(), missing);
                None
            }
        }
    }

    /// Reads a secret file, turning its notes into warnings at `name`.
    pub(crate) fn secret_file(
        &mut self,
        name: &str,
        span: Range<usize>,
        path: &Path,
    ) -> Result<Secret, String> {
        let (secret, notes) =
            crate::secrets::read_secret_file_noted(path).map_err(|e| e.to_string())?;
        for note in notes.warnings(path) {
            self.warn(name, Some(span.clone()), note);
        }
        Ok(secret)
    }

    /// The strings of `list` (at `name`) when each one is `valid`; each that is not is
    /// reported at `name[j]` as "`value` is not `what`".
    pub(crate) fn each_valid(
        &mut self,
        name: &str,
        list: &List,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Option<Vec<String>> {
        let items = list.get_ref().iter().map(|s| (s.get_ref(), s.span()));
        let bad: Vec<_> = (items.enumerate())
            .filter(|(_, (s, _))| !valid(s))
            .collect();
        for (j, (s, at)) in &bad {
            self.report(
                &format!("{name}[{j}]"),
                Some(at.clone()),
                format!("{s:?} is not {what}"),
            );
        }
        bad.is_empty()
            .then(|| list.get_ref().iter().map(|s| s.get_ref().clone()).collect())
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

/// Where an optional value is.
pub(crate) fn span<T>(raw: &Option<Spanned<T>>) -> Span {
    raw.as_ref().map(Spanned::span)
}

/// An optional value of a `Copy` type.
pub(crate) fn value<T: Copy>(raw: &Option<Spanned<T>>) -> Option<T> {
    raw.as_ref().map(|v| *v.get_ref())
}

/// `prefix.key`, or `key` at the top.
pub(crate) fn join_key(prefix: &str, key: &str) -> String {
    match prefix {
        "" => key.to_owned(),
        _ => format!("{prefix}.{key}"),
    }
}
