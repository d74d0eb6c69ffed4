//! Diagnostics for hand-written TOML (policies and daemon settings).
//!
//! An SRE fixing a config at 3am needs the file, the key, the line and what to write instead, and
//! needs all of the mistakes at once rather than one per run. `Problem` carries exactly that;
//! `spans` recovers line numbers the typed deserializers lose; `schema` finds every structural
//! mistake (unknown keys, wrong types, bad durations, missing keys) in one pass.

pub mod schema;
pub mod spans;

use std::fmt;
use std::path::{Path, PathBuf};

/// One mistake a user can fix: where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// Dotted key path, e.g. `metric[2].critical.above`; empty for whole-file problems.
    pub key: String,
    /// 1-based line, when the parser told us.
    pub line: Option<usize>,
    pub message: String,
    pub hint: String,
}

impl Problem {
    pub fn new(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            file: file.to_path_buf(),
            key: key.into(),
            line: None,
            message: message.into(),
            hint: String::new(),
        }
    }

    pub fn at(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n    fix: {}", self.hint)?;
        }
        Ok(())
    }
}

/// Renders a list of problems one per paragraph, for error messages and the CLI.
pub fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Converts a figment extraction error (which names the key and source but not the line) into
/// problems, recovering lines from `spans` when the error came from that file.
pub fn from_figment(
    err: figment::Error,
    default_file: &Path,
    spans: Option<&spans::SpanMap>,
) -> Vec<Problem> {
    err.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let (file, from_env) = match &e.metadata {
                Some(md) => match &md.source {
                    Some(figment::Source::File(p)) => (p.clone(), false),
                    Some(other) => (PathBuf::from(other.to_string()), true),
                    None => (PathBuf::from(md.name.to_string()), true),
                },
                None => (default_file.to_path_buf(), false),
            };
            let line = if from_env {
                None
            } else {
                spans.and_then(|s| s.line_of(&key))
            };
            let hint = if from_env {
                "check the BACKOUT_* environment variable for this key".to_string()
            } else {
                "see docs/policy.md for the allowed keys and value types".to_string()
            };
            Problem::new(&file, key, e.kind.to_string())
                .at(line)
                .hint(hint)
        })
        .collect()
}
