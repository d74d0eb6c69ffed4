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
/// problems, recovering lines from `spans` when the error came from that file, and naming the
/// environment variable (`{env_prefix}A__B`) when it came from the environment.
pub fn from_figment(
    err: figment::Error,
    default_file: &Path,
    spans: Option<&spans::SpanMap>,
    env_prefix: &str,
) -> Vec<Problem> {
    err.into_iter()
        .map(|e| {
            let key = spans::normalize_path(&e.path.join("."));
            let file = match e.metadata.as_ref().and_then(|md| md.source.as_ref()) {
                Some(figment::Source::File(p)) => Some(p.clone()),
                Some(_) => None,
                None if e.metadata.is_none() => Some(default_file.to_path_buf()),
                None => None,
            };
            match file {
                Some(file) => Problem::new(&file, key.clone(), e.kind.to_string())
                    .at(spans.and_then(|s| s.line_of(&key)))
                    .hint("see docs/policy.md for the allowed keys and value types"),
                None => {
                    let var = env_var(env_prefix, &e.path);
                    Problem::new(Path::new("environment"), key, e.kind.to_string())
                        .hint(format!("fix or unset the environment variable {var}"))
                }
            }
        })
        .collect()
}

/// The environment variable that sets `path` (`BACKOUT_` + `PROMETHEUS__URL`).
pub fn env_var(prefix: &str, path: &[String]) -> String {
    format!("{prefix}{}", path.join("__").to_uppercase())
}
