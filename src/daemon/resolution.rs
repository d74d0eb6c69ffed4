//! How an incident ends: recovery verified on the metrics (the RESOLVED notice, the RTO), or a
//! human paged on the policy's escalation path (runbook 003). Driven by the outcome fan-out,
//! which owns the [`Responder`]: it keeps each rollback's incident report (completed and written
//! again when recovery settles) and each open escalation.
//!
//! Escalation steps are timed by a task of their own (one per open escalation), so the fan-out
//! never sleeps; a recovery aborts the task and sends the resolution to every channel that was
//! paged as well (PagerDuty resolves the dedup key, Alertmanager ends the alert).

use super::outcome::{send, OrderOutcome, Versions};
use super::recovery::{Progress, Recovery};
use super::service::audit;
use super::Context;
use crate::audit::{AuditKind, IncidentReport};
use crate::notify::{Envelope, Notice};
use crate::policy::Policy;
use crate::sample::Millis;
use crate::telemetry::{ReasonLabels, RecoveryLabels, ServiceLabels};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What recovery verification settled, with where it came from.
#[derive(Clone, Copy)]
pub struct Note<'a> {
    pub o: &'a OrderOutcome,
    pub progress: &'a Progress,
    pub state: &'a Recovery,
    pub incident: &'a str,
}

/// Why an escalation starts: the `reason` label, a summary for people and the evidence.
#[derive(Clone, Copy)]
pub struct Why<'a> {
    pub reason: &'a str,
    pub summary: &'a str,
    pub detail: &'a str,
}

/// An escalation under way for a service.
struct Open {
    steps: tokio::task::AbortHandle,
    /// Channels paged so far (they get the resolution too).
    paged: Arc<Mutex<Vec<String>>>,
}

/// Incident reports and open escalations, by `namespace/service`.
#[derive(Default)]
pub struct Responder {
    reports: HashMap<String, (IncidentReport, Versions)>,
    open: HashMap<String, Open>,
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

impl Responder {
    /// A finished plan's report, completed when recovery settles.
    pub fn rolled_back(&mut self, o: &OrderOutcome, report: IncidentReport, v: &Versions) {
        self.reports
            .insert(o.order.service.clone(), (report, v.clone()));
    }

    /// Publishes what recovery verification settled.
    pub async fn recovery(&mut self, ctx: &Context, n: Note<'_>) {
        let p = &n.o.order.policy;
        let (recovery, rto, event) = match n.progress {
            Progress::Recovered { at, rto_ms } => {
                let (recovery, rto) = recovered(ctx, p, n.state, *at, *rto_ms);
                (
                    recovery,
                    Some(rto),
                    (*at, "recovery verified on the metrics".to_string()),
                )
            }
            Progress::NotRecovered { at, why } => {
                count_recovery(ctx, p, "not_recovered");
                let w = Why {
                    reason: "not_recovered",
                    summary: "the service is not restored",
                    detail: why,
                };
                self.escalate(ctx, n.o, n.incident, w).await;
                (
                    format!("not recovered: {why}"),
                    None,
                    (*at, "not recovered: escalated".to_string()),
                )
            }
            Progress::Worse { at, why } => {
                let w = Why {
                    reason: "worse_after_rollback",
                    summary: "worse after the rollback than before",
                    detail: why,
                };
                self.escalate(ctx, n.o, n.incident, w).await;
                let keep = self
                    .reports
                    .get(&n.o.order.service)
                    .and_then(|(r, _)| r.recovery.clone())
                    .unwrap_or_else(|| "being verified on the metrics".into());
                (
                    keep,
                    None,
                    (*at, format!("worse after the rollback: {why}")),
                )
            }
        };
        self.rewrite_report(
            ctx,
            &n.o.order.service,
            recovery.clone(),
            rto.clone(),
            event,
        );
        if let Progress::Recovered { at, .. } = n.progress {
            self.resolved(ctx, n, *at, recovery, rto.unwrap_or_default())
                .await;
        }
    }

    fn rewrite_report(
        &mut self,
        ctx: &Context,
        service: &str,
        recovery: String,
        rto: Option<String>,
        event: (Millis, String),
    ) {
        let Some((report, _)) = self.reports.get_mut(service) else {
            return;
        };
        report.recovery = Some(recovery);
        if rto.is_some() {
            report.rto = rto;
        }
        report.timeline.push(event);
        if let Err(err) = ctx.audit.incident(report) {
            tracing::error!(error = %err, "cannot rewrite the incident report");
        }
    }

    /// The RESOLVED notice, to the policy's route and every channel an escalation paged; the
    /// escalation's remaining steps are called off.
    async fn resolved(
        &mut self,
        ctx: &Context,
        n: Note<'_>,
        at: Millis,
        recovery: String,
        rto: String,
    ) {
        let p = &n.o.order.policy;
        let versions = self
            .reports
            .get(&n.o.order.service)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let notice = Notice::RollbackResolved {
            service: p.service.clone(),
            namespace: p.namespace.clone(),
            started: n.state.first_bad,
            resolved: at,
            from_version: versions.from,
            to_version: versions.to,
            verified: true,
            mode: p.action.name().to_string(),
            recovery,
            rto,
        };
        let Some(open) = self.open.remove(&n.o.order.service) else {
            send(ctx, Some(p), notice, n.incident).await;
            return;
        };
        open.steps.abort();
        let paged = open.paged.lock().map(|g| g.clone()).unwrap_or_default();
        deliver(ctx, notice, p.notify.clone(), paged, n.incident).await;
    }

    /// Starts an escalation (once per incident; a second reason is counted and audited only).
    pub async fn escalate(
        &mut self,
        ctx: &Context,
        o: &OrderOutcome,
        incident: &str,
        why: Why<'_>,
    ) {
        let p = &o.order.policy;
        ctx.metrics
            .escalations
            .get_or_create(&ReasonLabels {
                reason: why.reason.into(),
            })
            .inc();
        tracing::error!(service = %p.service, reason = why.reason, detail = why.detail, "ESCALATION: a human must take over");
        audit(
            ctx,
            p,
            AuditKind::Escalated,
            format!("{}: {}", why.summary, why.detail),
            serde_json::json!({"reason": why.reason, "steps": p.escalation.len()}),
        );
        if self.open.contains_key(&o.order.service) {
            return;
        }
        let notice = Notice::Escalation {
            service: p.service.clone(),
            namespace: p.namespace.clone(),
            at: ctx.clock.now_millis(),
            reason: why.summary.to_string(),
            detail: why.detail.to_string(),
        };
        if p.escalation.is_empty() {
            send(ctx, Some(p), notice, incident).await;
            return;
        }
        let paged = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(run_steps(
            ctx.clone(),
            o.order.policy.clone(),
            notice,
            incident.to_string(),
            paged.clone(),
        ));
        self.open.insert(
            o.order.service.clone(),
            Open {
                steps: task.abort_handle(),
                paged,
            },
        );
    }
}

async fn deliver(
    ctx: &Context,
    notice: Notice,
    route: Option<Vec<String>>,
    also: Vec<String>,
    incident: &str,
) {
    let envelope = Envelope {
        notice,
        route,
        also,
        incident: incident.to_string(),
    };
    if let Err(err) = ctx.notifier.deliver(envelope).await {
        tracing::warn!(error = %err, "notification failed");
    }
}

/// Sends the escalation to each step's channels at its time after the start, until aborted.
async fn run_steps(
    ctx: Context,
    p: Arc<Policy>,
    notice: Notice,
    incident: String,
    paged: Arc<Mutex<Vec<String>>>,
) {
    let start = tokio::time::Instant::now();
    let total = p.escalation.len();
    for (i, step) in p.escalation.iter().enumerate() {
        tokio::time::sleep_until(start + step.after).await;
        let mut n = notice.clone();
        if let Notice::Escalation { at, detail, .. } = &mut n {
            *at = ctx.clock.now_millis();
            detail.push_str(&format!(
                " [escalation step {} of {total}, +{}]",
                i + 1,
                humantime::format_duration(step.after)
            ));
        }
        if let Ok(mut g) = paged.lock() {
            g.extend(step.channels.iter().cloned());
        }
        audit(
            &ctx,
            &p,
            AuditKind::Escalated,
            format!(
                "escalation step {} of {total}: {}",
                i + 1,
                step.channels.join(", ")
            ),
            serde_json::json!({"step": i + 1, "channels": step.channels}),
        );
        deliver(&ctx, n, Some(step.channels.clone()), Vec::new(), &incident).await;
    }
}

/// Publishes a verified recovery; returns its outcome and RTO texts.
fn recovered(
    ctx: &Context,
    p: &Policy,
    state: &Recovery,
    at: Millis,
    rto_ms: Millis,
) -> (String, String) {
    let labels = ServiceLabels {
        service: p.service.as_str().into(),
    };
    let recovery = format!(
        "recovered at +{:.1} s after the rollback completed (stable alone healthy for {})",
        (at - state.completed_at) as f64 / 1000.0,
        humantime::format_duration(p.verify.window)
    );
    let rto = rto_text(rto_ms, p.rto);
    ctx.metrics
        .rto_seconds
        .get_or_create(&labels)
        .set(rto_ms as f64 / 1000.0);
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
        serde_json::json!({"rto_s": rto_ms as f64 / 1000.0}),
    );
    (recovery, rto)
}

fn count_recovery(ctx: &Context, p: &Policy, outcome: &str) {
    ctx.metrics
        .recoveries
        .get_or_create(&RecoveryLabels {
            service: p.service.clone(),
            outcome: outcome.into(),
        })
        .inc();
}
