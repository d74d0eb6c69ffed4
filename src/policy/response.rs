//! What a policy does once its verdict is "roll back": the action, who is told, how recovery is
//! verified on the metrics and when people are paged (runbooks 000, 001 and 003).
//!
//! Kept apart from the analysis keys in `model.rs`: these are about the response, not about
//! judging the canary.

use crate::diagnostic::schema::{Field, Shape};
use crate::diagnostic::Problem;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `action`: what a rollback verdict does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionMode {
    /// Route to the stable, scale the canary to zero, undo a changed stable (the full plan).
    #[default]
    Rollback,
    /// Route to the stable and scale the canary to zero, never touch the stable's template: for
    /// releases that cannot be undone (a one-way migration, flagger#1186).
    Contain,
    /// Shadow mode: decide, write the dry-run report of what would change, notify; change
    /// nothing.
    Notify,
}

impl ActionMode {
    pub fn name(self) -> &'static str {
        match self {
            ActionMode::Rollback => "rollback",
            ActionMode::Contain => "contain",
            ActionMode::Notify => "notify",
        }
    }
}

/// `[verify]`: judging the stable alone after the plan completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    /// How long the stable alone must stay under warning and not worse than before the
    /// incident for the service to count as recovered.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Not recovered this long after the first bad evidence: escalate (runbook 003: "unable to
    /// restore service after 15 minutes").
    #[serde(with = "humantime_serde")]
    pub restore_within: Duration,
}

impl Default for Verify {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10 * 60),
            restore_within: Duration::from_secs(15 * 60),
        }
    }
}

/// One `[[escalation]]` step: `after` the escalation starts, notify `channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    pub channels: Vec<String>,
}

pub(super) const ACTIONS: &[&str] = &["rollback", "contain", "notify"];

pub(super) const VERIFY: &[Field] = &[
    Field::opt("window", Shape::Duration),
    Field::opt("restore_within", Shape::Duration),
];

pub(super) const ESCALATION: &[Field] = &[
    Field::req("after", Shape::Duration),
    Field::req("channels", Shape::StrList),
];

/// Whole-plan attempts before a failing rollback escalates (runbook 003: "fails after 2
/// attempts"), the default of `rollback_attempts`.
pub const DEFAULT_ATTEMPTS: u32 = 2;

/// `restore_within` counts from the first bad evidence; recovery is confirmed only after the
/// stable alone stayed clean for `verify.window`. When even the fastest detection (one poll plus
/// the shortest `for` of any metric) and that window do not fit, every rollback that works
/// escalates anyway and pages people for nothing.
fn recovery_fits(p: &super::Policy, at: &dyn Fn(&str, String, &str) -> Problem) -> Option<Problem> {
    let (window, limit) = (p.verify.window, p.verify.restore_within);
    if window.is_zero() || limit.is_zero() {
        return None; // reported above
    }
    let fastest = p
        .metrics
        .iter()
        .map(|m| m.for_.unwrap_or_default())
        .min()
        .unwrap_or_default();
    let floor = window + p.analysis.interval + fastest;
    (floor >= limit).then(|| {
        at(
            "verify.restore_within",
            format!(
                "{} cannot be met: recovery is confirmed at the earliest {} after the first bad \
                 evidence (verify.window {} + one poll {} + the shortest `for` {}), so every \
                 rollback would escalate",
                humantime::format_duration(limit),
                humantime::format_duration(floor),
                humantime::format_duration(window),
                humantime::format_duration(p.analysis.interval),
                humantime::format_duration(fastest),
            ),
            "raise restore_within above that (with room for the rollback itself) or shorten verify.window",
        )
    })
}

/// Semantic checks of the response keys; `at` turns a key into a located problem.
pub(super) fn check(p: &super::Policy, at: &dyn Fn(&str, String, &str) -> Problem) -> Vec<Problem> {
    let mut out = Vec::new();
    if p.verify.window.is_zero() {
        out.push(at(
            "verify.window",
            "must be longer than zero".into(),
            "use e.g. \"10m\": the stable alone is judged this long after the rollback",
        ));
    }
    if p.verify.restore_within.is_zero() {
        out.push(at(
            "verify.restore_within",
            "must be longer than zero".into(),
            "use e.g. \"15m\" (runbook 003)",
        ));
    }
    if let Some(problem) = recovery_fits(p, at) {
        out.push(problem);
    }
    if p.rollback_attempts == Some(0) {
        out.push(at(
            "rollback_attempts",
            "must be at least 1".into(),
            "use e.g. 2: a rollback failing this many times escalates",
        ));
    }
    if p.rto.is_some_and(|d| d.is_zero()) {
        out.push(at(
            "rto",
            "must be longer than zero".into(),
            "use e.g. \"5m\" (runbook 000: P0 in 5 minutes)",
        ));
    }
    let mut last = Duration::ZERO;
    for (i, step) in p.escalation.iter().enumerate() {
        if step.channels.is_empty() {
            out.push(at(
                &format!("escalation[{i}].channels"),
                "names no channel".into(),
                "list channels from [notify.channels] in backout.toml",
            ));
        }
        if step.after < last {
            out.push(at(
                &format!("escalation[{i}].after"),
                format!(
                    "{} comes before the previous step's {}",
                    humantime::format_duration(step.after),
                    humantime::format_duration(last)
                ),
                "list the steps in the order they fire",
            ));
        }
        last = step.after;
    }
    out
}
