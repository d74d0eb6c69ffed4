//! The daemon's side of the status board: each cycle's outcomes and each order's outcome, handed
//! over without waiting on anything (one short lock per cycle).

use super::order::Action;
use super::outcome::{Event, OrderOutcome};
use super::CycleOutcome;
use crate::actuator::report::Outcome as ActOutcome;
use crate::ha::Ownership;
use crate::status::{Evaluation, RollbackProgress, StatusBoard};

/// Records one cycle's evaluations.
pub(super) fn record_cycle(
    board: &StatusBoard,
    ownership: &Ownership,
    now: crate::sample::Millis,
    outcomes: &[CycleOutcome],
) {
    board.set_role(&ownership.role());
    board.record(outcomes.iter().map(|o| {
        let ev = Evaluation {
            at: o.verdict.as_ref().map_or(now, |v| v.at),
            release: &o.release,
            events: &o.events,
            verdict: o.verdict.as_ref(),
            polls: &o.polls,
            error: o.error.as_deref(),
            shard: ownership.shard_of(&o.key),
            acting: ownership.may_act(&o.key),
        };
        (o.key.as_str(), ev)
    }));
}

/// Records what became of a rollback order (known-good records are not rollbacks).
pub(super) fn record_order(board: &StatusBoard, now: crate::sample::Millis, o: &OrderOutcome) {
    if let Action::RecordKnownGood { .. } = o.order.action {
        return;
    }
    let progress = match &o.event {
        Event::Started { .. } => RollbackProgress::Started,
        Event::RolledBack { report, .. } => RollbackProgress::Finished {
            mitigated_at: report.finished_at,
            dry_run: report.outcome == ActOutcome::DryRun,
        },
        Event::Failed { error, retry_in } => RollbackProgress::Failed {
            error: error.clone(),
            retrying: retry_in.is_some(),
        },
        Event::Held {
            in_window,
            max,
            per,
        } => RollbackProgress::Held {
            detail: format!(
                "{in_window} rollbacks in the last {} (max {max})",
                humantime::format_duration(*per)
            ),
        },
        Event::Superseded => RollbackProgress::Superseded,
        // Anything else (known-good records) is not a rollback's progress.
        #[allow(unreachable_patterns)]
        _ => return,
    };
    board.rollback(&o.order.service, now, progress);
}
