//! The audit record of one rollback (or dry run): what each step found, did, and how long it took.
//! Serialised to JSON by the CLI and the daemon's audit trail.

use super::plan::Trigger;
use super::steps::{Mutation, Target};
use crate::sample::Millis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    /// This canary revision was already rolled back (by us or a previous daemon): nothing done.
    AlreadyCompleted,
    /// Nothing was executed; the steps say what would change.
    DryRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// This run wrote to the cluster and the postcondition then held.
    Changed,
    /// The postcondition already held: nothing written (e.g. a resumed step whose write landed).
    AlreadySatisfied,
    /// Recorded as done by an earlier run of the same rollback; not looked at again.
    DoneEarlier,
    /// Dry run: these writes would be made.
    WouldChange,
    Failed,
}

impl StepOutcome {
    /// The snake_case name, as in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Changed => "changed",
            StepOutcome::AlreadySatisfied => "already_satisfied",
            StepOutcome::DoneEarlier => "done_earlier",
            StepOutcome::WouldChange => "would_change",
            StepOutcome::Failed => "failed",
        }
    }
}

impl Outcome {
    /// The snake_case name, as in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::AlreadyCompleted => "already_completed",
            Outcome::DryRun => "dry_run",
        }
    }
}

/// What one object would look like after a write, as a JSON patch from its current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectDiff {
    pub target: Target,
    pub patch: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub step: String,
    pub outcome: StepOutcome,
    pub detail: String,
    /// Writes made (or, in a dry run, that would be made).
    pub writes: Vec<Mutation>,
    /// Dry run only: per-object diffs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diffs: Vec<ObjectDiff>,
    pub attempts: u32,
    pub started_at: Millis,
    pub elapsed_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackReport {
    pub rollback_id: String,
    pub namespace: String,
    pub service: String,
    pub trigger: Trigger,
    pub outcome: Outcome,
    /// True when this run continued a rollback an earlier (crashed) run had started.
    pub resumed: bool,
    /// ConfigMap holding the plan, progress and backups (`backout rollback --restore` reads it).
    pub backup: String,
    pub steps: Vec<StepReport>,
    pub notes: Vec<String>,
    pub started_at: Millis,
    pub finished_at: Millis,
    /// Events that could not be posted (the rollback does not fail for them).
    #[serde(default)]
    pub event_errors: Vec<String>,
}
