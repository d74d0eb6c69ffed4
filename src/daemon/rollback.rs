//! A rollback verdict turned into action: the actuator's plan, then metrics, audit trail,
//! incident report and notices.

use super::deployments::get_views;
use super::service::{audit, reason_lines, ServiceRuntime};
use super::Context;
use crate::actuator::report::Outcome as ActOutcome;
use crate::actuator::{RollbackReport, RollbackRequest, Trigger};
use crate::audit::{AuditKind, Check, IncidentReport};
use crate::decision::Verdict;
use crate::lifecycle::Release;
use crate::notify::Notice;
use crate::telemetry::{Outcome, RollbackLabels};

pub(super) async fn execute_rollback(
    ctx: &Context,
    s: &mut ServiceRuntime,
    v: &Verdict,
) -> Option<RollbackReport> {
    let p = s.policy.clone();
    let reasons = reason_lines(v);
    let first_metric = v
        .reasons
        .first()
        .map(|r| r.metric.clone())
        .unwrap_or_else(|| "unknown".into());
    let detected_at = v
        .reasons
        .iter()
        .filter_map(|r| r.since)
        .min()
        .unwrap_or(v.at);
    let values = v
        .reasons
        .iter()
        .filter_map(|r| r.observed.map(|x| (r.metric.clone(), x)))
        .collect();
    let trigger = Trigger {
        summary: reasons.join("; "),
        values,
    };
    // Fresh GETs, not the watch store: the undo target must not come from a lagging cache.
    let (stable, canary) = get_views(&ctx.client, &p).await.ok()?;
    let from = canary
        .as_ref()
        .map(|c| format!("canary {} revision {:?}", c.image, c.revision))
        .unwrap_or_default();
    let lkg = match s.lifecycle.stage() {
        Release::Bake { .. } => stable.last_known_good.map(|r| r as i64),
        _ => None,
    };
    let to = format!(
        "stable {} (revision {:?})",
        stable.image,
        lkg.map(|r| r as u64).or(stable.revision)
    );
    tracing::error!(service = %p.service, reasons = ?reasons, dry_run = ctx.dry_run, "rolling back");
    audit(
        ctx,
        &p,
        AuditKind::RollbackStarted,
        trigger.summary.clone(),
        serde_json::Value::Null,
    );
    send(
        ctx,
        Notice::RollbackStarted {
            service: p.service.clone(),
            namespace: p.namespace.clone(),
            at: ctx.clock.now_millis(),
            reasons: reasons.clone(),
            from_version: from.clone(),
            to_version: to.clone(),
            dry_run: ctx.dry_run,
        },
    )
    .await;
    let request = RollbackRequest {
        last_known_good: lkg,
        trigger,
        dry_run: ctx.dry_run,
    };
    let result = ctx.actuator.rollback(&p, request).await;
    let now = ctx.clock.now_millis();
    if let Some(id) = s.lifecycle.stage().canary_id().cloned() {
        s.lifecycle.rolled_back(id);
    }
    match result {
        Ok(report) => {
            for step in &report.steps {
                ctx.metrics
                    .step_duration
                    .get_or_create(&crate::telemetry::StepLabels {
                        step: step.step.clone(),
                    })
                    .observe(step.elapsed_ms as f64 / 1000.0);
            }
            let outcome = match report.outcome {
                ActOutcome::DryRun => Outcome::dry_run,
                _ => Outcome::success,
            };
            ctx.metrics
                .rollbacks
                .get_or_create(&RollbackLabels {
                    service: p.service.clone(),
                    reason: first_metric,
                    outcome,
                })
                .inc();
            if outcome == Outcome::success {
                ctx.metrics
                    .detection_to_mitigation
                    .observe((now - detected_at).max(0) as f64 / 1000.0);
            }
            let verification: Vec<Check> = report
                .steps
                .iter()
                .map(|st| Check {
                    name: st.step.clone(),
                    ok: true,
                    detail: format!("{:?}: {}", st.outcome, st.detail),
                })
                .collect();
            let mut timeline = vec![
                (detected_at, "first breaching evaluation".to_string()),
                (v.at, "rollback decided".to_string()),
            ];
            timeline.extend(report.steps.iter().map(|st| {
                (
                    st.started_at + st.elapsed_ms,
                    format!("{} {:?}", st.step, st.outcome),
                )
            }));
            let incident = IncidentReport {
                id: report.rollback_id.clone(),
                service: p.service.clone(),
                namespace: p.namespace.clone(),
                detected_at,
                mitigated_at: Some(report.finished_at),
                from_version: from.clone(),
                to_version: to.clone(),
                reasons: reasons.clone(),
                timeline,
                verification,
                dry_run: ctx.dry_run,
                outcome: format!("{:?}", report.outcome),
            };
            if let Err(err) = ctx.audit.incident(&incident) {
                tracing::error!(error = %err, "cannot write the incident report");
            }
            audit(
                ctx,
                &p,
                AuditKind::RollbackCompleted,
                format!("{:?}", report.outcome),
                serde_json::to_value(&report).unwrap_or_default(),
            );
            send(
                ctx,
                Notice::RollbackResolved {
                    service: p.service.clone(),
                    namespace: p.namespace.clone(),
                    started: detected_at,
                    resolved: report.finished_at,
                    from_version: from,
                    to_version: to,
                    verified: true,
                },
            )
            .await;
            Some(report)
        }
        Err(err) => {
            ctx.metrics
                .rollbacks
                .get_or_create(&RollbackLabels {
                    service: p.service.clone(),
                    reason: first_metric,
                    outcome: Outcome::failure,
                })
                .inc();
            tracing::error!(service = %p.service, error = %err, "rollback FAILED: a human must take over");
            audit(
                ctx,
                &p,
                AuditKind::RollbackFailed,
                err.to_string(),
                serde_json::Value::Null,
            );
            send(
                ctx,
                Notice::RollbackFailed {
                    service: p.service.clone(),
                    namespace: p.namespace.clone(),
                    at: now,
                    error: err.to_string(),
                },
            )
            .await;
            None
        }
    }
}

async fn send(ctx: &Context, notice: Notice) {
    if let Err(err) = ctx.notifier.send(&notice).await {
        tracing::warn!(error = %err, "notification failed");
    }
}
