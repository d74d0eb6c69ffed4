//! The daemon's side of the status board: each cycle's outcomes and each order's outcome, handed
//! over without waiting on anything (one short lock per cycle); and each verdict's gauges on
//! `/metrics`, which dashboards read next to the board.

use super::order::Action;
use super::outcome::{Event, OrderOutcome};
use super::service::{audit, reason_lines, ServiceRuntime};
use super::Context;
use super::CycleOutcome;
use crate::actuator::report::Outcome as ActOutcome;
use crate::audit::AuditKind;
use crate::decision::{Health, Verdict};
use crate::ha::Ownership;
use crate::lifecycle::Release;
use crate::status::{Evaluation, RollbackProgress, StatusBoard};
use crate::telemetry::{state_code, Bound, Metrics, Valued};
use std::sync::Arc;

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

/// Publishes each metric's levels next to its value (`backout_metric_threshold`): the policy's
/// warning and critical levels, or a statistical test's failing value.
pub(super) fn publish_levels(metrics: &Metrics, s: &ServiceRuntime, v: &Verdict) {
    let policy = &s.policy;
    metrics.judged.update(&s.labels.service(), |row| {
        for m in &v.metrics {
            let name = s.labels.metric(&m.metric);
            if let crate::decision::Reading::Test { fail_at, .. } = &m.reading {
                row.metric(&name)
                    .set_threshold(Bound::CriticalAbove, *fail_at);
                continue;
            }
            let Some(spec) = policy.metrics.iter().find(|s| s.name == m.metric) else {
                continue;
            };
            let levels = [
                (spec.warning, Bound::WarningAbove, Bound::WarningBelow),
                (spec.critical, Bound::CriticalAbove, Bound::CriticalBelow),
            ];
            for (l, above, below) in levels {
                let Some(l) = l else { continue };
                if let Some(a) = l.above {
                    row.metric(&name).set_threshold(above, a);
                }
                if let Some(b) = l.below {
                    row.metric(&name).set_threshold(below, b);
                }
            }
        }
    });
}

/// The state gauge of a service that is not under analysis: healthy, or rolled back.
pub(super) fn publish_idle(ctx: &Context, s: &ServiceRuntime) {
    let code = if matches!(s.lifecycle.stage(), Release::RolledBack { .. }) {
        state_code::ROLLED_BACK
    } else {
        state_code::HEALTHY
    };
    ctx.metrics
        .judged
        .update(&s.labels.service(), |row| row.set_state(code));
}

/// The gauge code of a health (`telemetry::state_code`).
fn level_code(h: Health) -> i64 {
    match h {
        Health::Healthy | Health::Ignored => 0,
        Health::Warning => 1,
        Health::Critical => 2,
        Health::Inconclusive => 3,
        Health::Shared => state_code::SHARED,
    }
}

/// A verdict on `/metrics` (evaluations, state, levels) and, when the health changed, in the
/// log and the audit trail.
pub(super) fn publish(ctx: &Context, s: &ServiceRuntime, v: &Verdict) {
    let svc = &s.policy.service;
    ctx.metrics.judged.update(&s.labels.service(), |row| {
        row.evaluated();
        row.set_state(level_code(v.health));
        for m in &v.metrics {
            let metric = row.metric(&s.labels.metric(&m.metric));
            if let crate::decision::Reading::Test { value, .. } = &m.reading {
                metric.set_value(Valued::Statistic, *value);
            }
            metric.set_level(level_code(m.health));
        }
    });
    let changed = s.last_health != Some(v.health);
    if changed {
        let reasons = reason_lines(v);
        tracing::info!(service = %svc, health = ?v.health, reasons = ?reasons, "verdict changed");
        audit(
            ctx,
            &s.policy,
            AuditKind::VerdictChanged,
            format!("verdict {:?}", v.health),
            serde_json::to_value(v).unwrap_or_default(),
        );
    }
}

/// The names in a service's per-service series, shared: every label set on `/metrics` points
/// at these instead of holding copies of its own (10,000 services, about 20 series each).
#[derive(Debug, Clone)]
pub struct Labels {
    service: Arc<str>,
    metrics: Vec<Arc<str>>,
}

impl Labels {
    pub fn new(policy: &crate::policy::Policy) -> Self {
        Self {
            service: policy.service.as_str().into(),
            metrics: policy
                .metrics
                .iter()
                .map(|m| m.name.as_str().into())
                .collect(),
        }
    }

    pub fn service(&self) -> Arc<str> {
        self.service.clone()
    }

    /// The policy's metric names, in its order.
    pub fn metrics(&self) -> &[Arc<str>] {
        &self.metrics
    }

    /// The shared name of the policy's metric `name` (a copy for a name it does not have).
    pub fn metric(&self, name: &str) -> Arc<str> {
        self.metrics
            .iter()
            .find(|m| &***m == name)
            .cloned()
            .unwrap_or_else(|| name.into())
    }
}
