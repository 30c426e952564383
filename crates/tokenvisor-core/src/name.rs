//! Workload names: the key of everything, and a file name on disk.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest accepted name, in bytes (ToolHive's limit).
pub const MAX_NAME_LEN: usize = 100;

/// Why a workload name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("workload name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("workload name is {len} bytes long; at most {MAX_NAME_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `[A-Za-z0-9._-]` (path separators among them).
    #[error(
        "workload name contains {found:?} at byte {at}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
    )]
    BadCharacter {
        /// The first offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
    /// The name starts with a dot (hidden files, `.` and `..`).
    #[error("workload name may not start with '.'")]
    LeadingDot,
}

/// A validated workload name: `[A-Za-z0-9._-]`, 1–100 bytes, not starting with a dot, so it
/// is always a safe single path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadName(Arc<str>);

impl WorkloadName {
    /// Validates a name.
    pub fn new(s: &str) -> Result<Self, NameError> {
        validate(s)?;
        Ok(WorkloadName(s.into()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: s.len() });
    }
    if let Some((at, found)) = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadCharacter { found, at });
    }
    if s.starts_with('.') {
        return Err(NameError::LeadingDot);
    }
    Ok(())
}

impl std::str::FromStr for WorkloadName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkloadName::new(s)
    }
}

impl fmt::Debug for WorkloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for WorkloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for WorkloadName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for WorkloadName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WorkloadName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WorkloadName::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "github-mcp", "A.b_c-9", &"x".repeat(100)] {
            assert!(WorkloadName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_separators_traversal_and_oddities() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("../etc", NameError::BadCharacter { found: '/', at: 2 }),
            ("..", NameError::LeadingDot),
            (".", NameError::LeadingDot),
            (".hidden", NameError::LeadingDot),
            ("a/b", NameError::BadCharacter { found: '/', at: 1 }),
            ("a\\b", NameError::BadCharacter { found: '\\', at: 1 }),
            ("a b", NameError::BadCharacter { found: ' ', at: 1 }),
            ("a\0b", NameError::BadCharacter { found: '\0', at: 1 }),
            ("é", NameError::BadCharacter { found: 'é', at: 0 }),
        ];
        for (input, want) in cases {
            assert_eq!(WorkloadName::new(input).unwrap_err(), *want, "{input:?}");
        }
        assert_eq!(
            WorkloadName::new(&"x".repeat(101)).unwrap_err(),
            NameError::TooLong { len: 101 }
        );
    }

    #[test]
    fn errors_explain_themselves() {
        let e = WorkloadName::new("a/b").unwrap_err().to_string();
        assert!(e.contains("'/'") && e.contains("allowed"), "{e}");
    }
}
