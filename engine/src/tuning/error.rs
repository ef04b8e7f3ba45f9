//! Typed tuning errors: every one names the file, the key (a path such as
//! `host.cores.applier` or `hosts[1].idle`) and the reason, with `line:col` when the key
//! appears in the file.

use std::fmt;

/// A position in a tuning file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a tuning key is rejected.
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(#[source] std::io::Error),
    /// The file is not valid TOML.
    #[error("TOML syntax error: {0}")]
    Syntax(String),
    /// A key the schema does not have (typo, or a key of the other file kind).
    #[error("unknown key, expected {expected}")]
    UnknownKey { expected: String },
    /// A required key is absent.
    #[error("missing required key")]
    MissingKey,
    /// The value has the wrong type or cannot be parsed (e.g. a bad socket address).
    #[error("bad value: {0}")]
    BadValue(String),
    /// A number outside what the engine can use.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A ring or pool size that must be a power of two is not.
    #[error("{0} is not a power of two")]
    NotPowerOfTwo(u64),
    /// A node id that is not in `members`.
    #[error("node {0} is not a cluster member")]
    UnknownNode(u64),
    /// A value that must be unique appears twice.
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// Two settings that must agree do not (e.g. shard count vs. shard cores).
    #[error("mismatch: {0}")]
    Mismatch(String),
    /// A core that this machine does not have.
    #[error("core {core} does not exist (online cores: {online})")]
    NoSuchCore { core: usize, online: String },
    /// Two busy threads on one core.
    #[error("core conflict: {0}")]
    CoreConflict(String),
    /// The file is neither a cluster, a host nor a local-cluster file, or the set of files
    /// does not describe exactly one cluster.
    #[error("{0}")]
    FileSet(String),
}

/// One rejected key.
#[derive(Debug, thiserror::Error)]
pub struct TuningError {
    /// The file as given (path or name of the embedded file).
    pub file: String,
    /// Where the key is in the file, when it appears there.
    pub location: Option<Location>,
    /// Path of the key, prefixed by the file kind for a single-kind file (`cluster.`,
    /// `host.`); empty for errors about the whole file. A syntax error on a key's line
    /// names the key as written in the file (the file's kind is not known then).
    pub key: String,
    /// What is wrong.
    #[source]
    pub reason: Reason,
}

impl fmt::Display for TuningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(location) = self.location {
            write!(f, ":{location}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Every problem found in a set of tuning files (never empty). Validation reports all
/// problems at once so an operator fixes a file in one round.
#[derive(Debug, thiserror::Error)]
pub struct TuningErrors {
    pub errors: Vec<TuningError>,
}

impl TuningErrors {
    /// Wraps a non-empty list.
    ///
    /// # Panics
    /// If `errors` is empty: "failed with no reason" is a bug.
    pub fn new(errors: Vec<TuningError>) -> Self {
        assert!(
            !errors.is_empty(),
            "a tuning failure needs at least one error"
        );
        Self { errors }
    }

    /// The first problem.
    pub fn first(&self) -> &TuningError {
        &self.errors[0]
    }

    /// The problem reported for `key`, if any.
    pub fn find(&self, key: &str) -> Option<&TuningError> {
        self.errors.iter().find(|error| error.key == key)
    }
}

impl From<TuningError> for TuningErrors {
    fn from(error: TuningError) -> Self {
        Self::new(vec![error])
    }
}

impl fmt::Display for TuningErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A problem found by validation, keyed by its path inside the document (before the file
/// kind prefix is added and the location looked up).
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) path: String,
    pub(crate) reason: Reason,
}

/// Collects problems during validation.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub(crate) list: Vec<Problem>,
}

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, reason: Reason) {
        self.list.push(Problem {
            path: path.into(),
            reason,
        });
    }

    /// Records `reason` at `path` unless `ok`.
    pub(crate) fn check(
        &mut self,
        ok: bool,
        path: impl Into<String>,
        reason: impl FnOnce() -> Reason,
    ) {
        if !ok {
            self.push(path, reason());
        }
    }

    /// `value` must be at least `min`.
    pub(crate) fn at_least(&mut self, value: u64, min: u64, path: impl Into<String>) {
        self.check(value >= min, path, || {
            Reason::OutOfRange(format!("{value} is below the minimum {min}"))
        });
    }

    /// `value` must be at most `max`.
    pub(crate) fn at_most(&mut self, value: u64, max: u64, path: impl Into<String>) {
        self.check(value <= max, path, || {
            Reason::OutOfRange(format!("{value} is above the maximum {max}"))
        });
    }

    /// `value` must be a power of two in `1..=max`.
    pub(crate) fn ring_size(&mut self, value: u64, max: u64, path: &str) {
        if !value.is_power_of_two() {
            self.push(path, Reason::NotPowerOfTwo(value));
        } else {
            self.at_most(value, max, path);
        }
    }
}
