//! Tracing spans for a rollback and each of its steps.
//!
//! An operator reading a trace after an incident wants to see which step took the time, retried
//! or failed, not just that "a cycle" was slow: so every step the actuator looks at gets its own
//! `action_step` span under the `rollback` span (itself under the daemon's `cycle` span), and the
//! OTLP layer in `telemetry` exports them. Fields that are only known at the end (outcome,
//! attempts, error) are declared empty and recorded when the step finishes.

use super::plan::{ActionPlan, Step};
use super::report::{StepOutcome, StepReport};
use tracing::field::Empty;
use tracing::Span;

/// The span around one whole rollback (or dry run) of `service`.
pub(super) fn rollback_span(service: &str, namespace: &str, dry_run: bool) -> Span {
    tracing::info_span!(
        "rollback",
        service,
        namespace,
        dry_run,
        rollback_id = Empty,
        outcome = Empty,
        error = Empty,
    )
}

/// The span around one step; enter it (or instrument the step's future with it) while the step
/// runs, then call [`record_step`] or [`record_failure`] from inside.
pub(super) fn step_span(plan: &ActionPlan, step: &Step, dry_run: bool) -> Span {
    tracing::info_span!(
        "action_step",
        service = plan.service.as_str(),
        namespace = plan.namespace.as_str(),
        rollback_id = plan.id.as_str(),
        step = step.key().as_str(),
        dry_run,
        attempts = Empty,
        outcome = Empty,
        error = Empty,
    )
}

/// Records how the current step span ended.
pub(super) fn record_step(report: &StepReport) {
    let span = Span::current();
    span.record("attempts", report.attempts);
    span.record("outcome", report.outcome.as_str());
}

/// Records that the current step span failed, and why.
pub(super) fn record_failure(error: &dyn std::fmt::Display) {
    let span = Span::current();
    span.record("outcome", StepOutcome::Failed.as_str());
    span.record("error", tracing::field::display(error));
}

/// Records the rollback's identity and result on its span (`span` is the one from
/// [`rollback_span`], still open).
pub(super) fn record_rollback(
    span: &Span,
    result: &Result<super::RollbackReport, super::ActuatorError>,
) {
    match result {
        Ok(report) => {
            span.record("rollback_id", report.rollback_id.as_str());
            span.record("outcome", report.outcome.as_str());
        }
        Err(err) => {
            span.record("outcome", "failed");
            span.record("error", tracing::field::display(err));
        }
    }
}
