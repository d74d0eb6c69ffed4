//! How an incident ends: recovery verified on the metrics (the RESOLVED notice, the RTO), or
//! not (an escalation). Published by the outcome fan-out, which keeps each rollback's incident
//! report so it can be completed and written again.

use super::outcome::{send, OrderOutcome, Versions};
use super::recovery::{Progress, Recovery};
use super::service::audit;
use super::Context;
use crate::audit::{AuditKind, IncidentReport};
use crate::notify::Notice;
use crate::sample::Millis;
use crate::telemetry::{ReasonLabels, RecoveryLabels, ServiceLabels};
use std::collections::HashMap;
use std::time::Duration;

/// The incident report and versions of each service's last rollback, by `namespace/service`.
pub type Reports = HashMap<String, (IncidentReport, Versions)>;

/// What recovery verification settled, with where it came from.
#[derive(Clone, Copy)]
pub struct Note<'a> {
    pub o: &'a OrderOutcome,
    pub progress: &'a Progress,
    pub state: &'a Recovery,
    pub incident: &'a str,
}

fn secs(ms: Millis) -> String {
    humantime::format_duration(Duration::from_secs((ms.max(0) as u64).div_ceil(1000))).to_string()
}

/// `1m 30s (target 5m: met)`.
pub fn rto_text(rto_ms: Millis, target: Option<Duration>) -> String {
    match target {
        Some(t) => {
            let met = rto_ms <= i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
            format!(
                "{} (target {}: {})",
                secs(rto_ms),
                humantime::format_duration(t),
                if met { "met" } else { "MISSED" }
            )
        }
        None => format!("{} (no rto target in the policy)", secs(rto_ms)),
    }
}

pub async fn publish(ctx: &Context, n: Note<'_>, reports: &mut Reports) {
    let p = &n.o.order.policy;
    let labels = ServiceLabels {
        service: p.service.clone(),
    };
    let (recovery, rto, event) = match n.progress {
        Progress::Recovered { at, rto_ms } => {
            let recovery = format!(
                "recovered at +{:.1} s after the rollback completed (stable alone healthy for {})",
                (at - n.state.completed_at) as f64 / 1000.0,
                humantime::format_duration(p.verify.window)
            );
            let rto = rto_text(*rto_ms, p.rto);
            ctx.metrics
                .rto_seconds
                .get_or_create(&labels)
                .set(*rto_ms as f64 / 1000.0);
            if let Some(t) = p.rto {
                ctx.metrics
                    .rto_target_seconds
                    .get_or_create(&labels)
                    .set(t.as_secs_f64());
            }
            count_recovery(ctx, p, "recovered");
            audit(
                ctx,
                p,
                AuditKind::RecoveryVerified,
                format!("{recovery}; RTO {rto}"),
                serde_json::json!({"rto_s": *rto_ms as f64 / 1000.0}),
            );
            (
                recovery,
                Some(rto),
                (*at, "recovery verified on the metrics".to_string()),
            )
        }
        Progress::NotRecovered { at, why } => {
            count_recovery(ctx, p, "not_recovered");
            escalated(ctx, n, "not_recovered", "the service is not restored", why).await;
            (
                format!("not recovered: {why}"),
                None,
                (*at, "not recovered: escalated".to_string()),
            )
        }
        Progress::Worse { at, why } => {
            escalated(
                ctx,
                n,
                "worse_after_rollback",
                "worse after the rollback than before",
                why,
            )
            .await;
            let keep = reports
                .get(&n.o.order.service)
                .and_then(|(r, _)| r.recovery.clone())
                .unwrap_or_else(|| format!("worse after the rollback: {why}"));
            (
                keep,
                None,
                (*at, format!("worse after the rollback: {why}")),
            )
        }
    };
    let Some((report, versions)) = reports.get_mut(&n.o.order.service) else {
        return;
    };
    report.recovery = Some(recovery.clone());
    if rto.is_some() {
        report.rto = rto.clone();
    }
    report.timeline.push(event);
    if let Err(err) = ctx.audit.incident(report) {
        tracing::error!(error = %err, "cannot rewrite the incident report");
    }
    if let Progress::Recovered { at, .. } = n.progress {
        let notice = Notice::RollbackResolved {
            service: p.service.clone(),
            namespace: p.namespace.clone(),
            started: n.state.first_bad,
            resolved: *at,
            from_version: versions.from.clone(),
            to_version: versions.to.clone(),
            verified: true,
            mode: p.action.name().to_string(),
            recovery,
            rto: rto.unwrap_or_default(),
        };
        send(ctx, Some(p), notice, n.incident).await;
    }
}

fn count_recovery(ctx: &Context, p: &crate::policy::Policy, outcome: &str) {
    ctx.metrics
        .recoveries
        .get_or_create(&RecoveryLabels {
            service: p.service.clone(),
            outcome: outcome.into(),
        })
        .inc();
}

/// Starts an escalation: counted, audited, notified.
pub async fn escalated(ctx: &Context, n: Note<'_>, reason: &str, summary: &str, detail: &str) {
    let p = &n.o.order.policy;
    ctx.metrics
        .escalations
        .get_or_create(&ReasonLabels {
            reason: reason.into(),
        })
        .inc();
    tracing::error!(service = %p.service, reason, detail, "ESCALATION: a human must take over");
    audit(
        ctx,
        p,
        AuditKind::Escalated,
        format!("{summary}: {detail}"),
        serde_json::json!({"reason": reason}),
    );
    let notice = Notice::Escalation {
        service: p.service.clone(),
        namespace: p.namespace.clone(),
        at: ctx.clock.now_millis(),
        reason: summary.to_string(),
        detail: detail.to_string(),
    };
    send(ctx, Some(p), notice, n.incident).await;
}
