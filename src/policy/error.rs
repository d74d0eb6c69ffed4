//! The policy module's error: every problem found, never just the first.

use crate::diagnostic::{render, Problem};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// One or more files are unreadable or invalid; each problem names file, key, line and fix.
    #[error("{} problem(s) in policy files:\n{}", problems.len(), render(problems))]
    Invalid { problems: Vec<Problem> },
}

impl PolicyError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            PolicyError::Invalid { problems } => problems,
        }
    }
}
