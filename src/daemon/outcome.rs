//! Outcomes of orders, fanned out in one place: audit trail, incident report, notices and
//! metrics. The supervisor's lanes send them over a channel; one task publishes them in order and
//! forwards them to the evaluation loop, which only updates its per-service state.

use super::order::{Action, Order, RollbackOrder};
use super::recovery::{Progress, Recovery};
use super::resolution::{self, Responder};
use super::service::audit;
use super::Context;
use crate::actuator::report::Outcome as ActOutcome;
use crate::actuator::RollbackReport;
use crate::audit::{AuditKind, Check, IncidentReport};
use crate::lifecycle::DeploymentView;
use crate::notify::{Envelope, Notice};
use crate::policy::response::DEFAULT_ATTEMPTS;
use crate::policy::Policy;
use crate::telemetry::{Outcome, RollbackLabels, StepLabels};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// What an attempt of an order led to.
#[derive(Debug, Clone)]
pub struct OrderOutcome {
    pub order: Order,
    pub attempt: u32,
    pub event: Event,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// A rollback's first attempt read the cluster and is about to act.
    Started {
        versions: Versions,
    },
    RolledBack {
        report: Box<RollbackReport>,
        versions: Versions,
    },
    KnownGood,
    /// This attempt failed; `retry_in` is when the next starts (`None`: given up for good).
    Failed {
        error: String,
        retry_in: Option<Duration>,
    },
    /// A newer canary runs now; the order was dropped.
    Superseded,
    /// The fleet guard holds the rollback: `in_window` rollbacks in the last `per` (max `max`).
    Held {
        in_window: usize,
        max: u32,
        per: Duration,
    },
    /// Recovery verification (by the evaluation loop) settled something.
    Recovery {
        progress: Progress,
        state: Box<Recovery>,
    },
}

/// From what to what a rollback goes, as people write it in the incident channel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Versions {
    pub from: String,
    pub to: String,
    /// The rollback id (the incident's key in notices); empty until known.
    pub incident: String,
    /// The canary's pod-template hash and images: what a completed rollback records as bad.
    pub canary_hash: String,
    pub canary_images: Vec<String>,
}

impl Versions {
    pub fn of(stable: &DeploymentView, canary: Option<&DeploymentView>, lkg: Option<i64>) -> Self {
        Self {
            from: canary
                .map(|c| format!("canary {} (revision {})", c.image, revision(c.revision)))
                .unwrap_or_default(),
            to: format!(
                "stable {} (revision {})",
                stable.image,
                revision(lkg.map(|r| r as u64).or(stable.revision))
            ),
            incident: String::new(),
            canary_hash: canary.map(|c| c.template_hash.clone()).unwrap_or_default(),
            canary_images: Vec::new(),
        }
    }

    pub fn resumed(backup: &str) -> Self {
        Self {
            from: format!("the rollback recorded in ConfigMap {backup}"),
            to: "its planned end state".into(),
            ..Default::default()
        }
    }
}

/// A revision number as people write it; `?` before the controller has set one.
fn revision(r: Option<u64>) -> String {
    r.map(|r| r.to_string()).unwrap_or_else(|| "?".into())
}

/// Publishes every outcome, then hands it to the evaluation loop (`to_daemon`).
pub async fn fan_out(
    ctx: Context,
    mut outcomes: mpsc::UnboundedReceiver<OrderOutcome>,
    to_daemon: mpsc::UnboundedSender<OrderOutcome>,
) {
    let mut fleet = FleetNotice::default();
    let mut incidents: HashMap<String, String> = HashMap::new();
    let mut responder = Responder::default();
    while let Some(o) = outcomes.recv().await {
        if let Event::Held { max, per, .. } = &o.event {
            fleet.held(&ctx, &o, *max, *per).await;
        }
        let incident = incident_of_outcome(&mut incidents, &o);
        match &o.event {
            Event::Recovery { progress, state } => {
                let note = resolution::Note {
                    o: &o,
                    progress,
                    state,
                    incident: &incident,
                };
                responder.recovery(&ctx, note).await;
            }
            Event::RolledBack { report, versions }
                if report.outcome != ActOutcome::AlreadyCompleted =>
            {
                let record = rolled_back(&ctx, &o, report, versions, &incident).await;
                if report.outcome == ActOutcome::Completed && !o.order.dry_run {
                    super::bad_versions::remember(&ctx, &o, report, versions);
                }
                responder.rolled_back(&o, record, versions);
            }
            Event::Failed { error, retry_in } => {
                if let Some(detail) = failed(&ctx, &o, error, *retry_in, &incident).await {
                    let why = resolution::Why {
                        reason: "rollback_failed",
                        summary: "the rollback failed",
                        detail: &detail,
                    };
                    responder.escalate(&ctx, &o, &incident, why).await;
                }
            }
            _ => publish(&ctx, &o, &incident).await,
        }
        let _ = to_daemon.send(o);
    }
}

/// The incident key of a service's notices: the rollback id, learnt from the first attempt
/// (or, for a resumed rollback, from its report) and kept for the failures that follow.
fn incident_of_outcome(incidents: &mut HashMap<String, String>, o: &OrderOutcome) -> String {
    let known = match &o.event {
        Event::Started { versions } => Some(versions.incident.clone()),
        Event::RolledBack { report, .. } => Some(report.rollback_id.clone()),
        _ => None,
    };
    if let Some(id) = known.filter(|id| !id.is_empty()) {
        incidents.insert(o.order.service.clone(), id);
    }
    incidents.get(&o.order.service).cloned().unwrap_or_default()
}

/// One notice per fleet-wide hold, not one per held service.
#[derive(Default)]
struct FleetNotice {
    /// When the last notice went out, and the services held since.
    last: Option<crate::sample::Millis>,
    held: Vec<String>,
}

impl FleetNotice {
    async fn held(&mut self, ctx: &Context, o: &OrderOutcome, max: u32, per: Duration) {
        let now = ctx.clock.now_millis();
        let fresh = self
            .last
            .is_none_or(|at| now - at >= per.as_millis() as crate::sample::Millis);
        if fresh {
            self.held.clear();
        }
        self.held.push(o.order.service.clone());
        if !fresh {
            return;
        }
        self.last = Some(now);
        let notice = Notice::FleetHeld {
            at: now,
            services: self.held.clone(),
            max,
            per_s: per.as_secs(),
        };
        send(ctx, None, notice, "").await;
    }
}

/// The rollback's own record, or one made up for a resumed rollback from its report.
fn rollback_of(o: &OrderOutcome, report: Option<&RollbackReport>) -> RollbackOrder {
    if let Action::Rollback(r) = &o.order.action {
        return r.clone();
    }
    let at = report.map(|r| r.started_at).unwrap_or_default();
    let summary = match (&o.order.action, report) {
        (_, Some(r)) => r.trigger.summary.clone(),
        (Action::Resume { backup }, None) => {
            format!("resuming the rollback left under way in ConfigMap {backup}")
        }
        _ => String::new(),
    };
    RollbackOrder {
        canary: None,
        in_bake: false,
        trigger: crate::actuator::Trigger {
            summary: summary.clone(),
            values: report.map(|r| r.trigger.values.clone()).unwrap_or_default(),
        },
        reasons: vec![summary],
        first_metric: "resumed".into(),
        detected_at: at,
        decided_at: at,
    }
}

async fn publish(ctx: &Context, o: &OrderOutcome, incident: &str) {
    let p = &o.order.policy;
    match &o.event {
        Event::Started { versions } => {
            let r = rollback_of(o, None);
            tracing::error!(service = %p.service, reasons = ?r.reasons, dry_run = o.order.dry_run, "rolling back");
            audit(
                ctx,
                p,
                AuditKind::RollbackStarted,
                r.trigger.summary.clone(),
                serde_json::Value::Null,
            );
            let notice = Notice::RollbackStarted {
                service: p.service.clone(),
                namespace: p.namespace.clone(),
                at: ctx.clock.now_millis(),
                reasons: r.reasons,
                from_version: versions.from.clone(),
                to_version: versions.to.clone(),
                dry_run: o.order.dry_run,
                mode: p.action.name().to_string(),
            };
            send(ctx, Some(p), notice, incident).await;
        }
        Event::RolledBack { report, .. } if report.outcome == ActOutcome::AlreadyCompleted => {
            // Finished earlier (by us before a restart, or another replica): recorded then.
            tracing::info!(service = %p.service, rollback = %report.rollback_id, "already rolled back");
        }
        Event::RolledBack { .. } | Event::Recovery { .. } => {
            // Published by `fan_out` itself (they keep the incident report for what follows).
        }
        Event::KnownGood => {
            tracing::debug!(service = %p.service, "last known good revision recorded");
        }
        Event::Failed { .. } => {
            // Published by `fan_out` itself (it may start an escalation).
        }
        Event::Held {
            in_window,
            max,
            per,
        } => {
            let msg = format!(
                "rollback held by the fleet guard: {in_window} rollbacks in the last {} (max {max}); likely a shared cause",
                humantime::format_duration(*per)
            );
            tracing::warn!(service = %p.service, "{msg}");
            ctx.metrics
                .rollbacks_held
                .get_or_create(&crate::telemetry::ServiceLabels {
                    service: p.service.as_str().into(),
                })
                .inc();
            audit(
                ctx,
                p,
                AuditKind::RollbackHeld,
                msg,
                serde_json::Value::Null,
            );
        }
        Event::Superseded => {
            let msg = format!(
                "{} order dropped after {} attempt(s): a newer canary runs now",
                o.order.action.name(),
                o.attempt - 1
            );
            tracing::warn!(service = %p.service, "{msg}");
            audit(
                ctx,
                p,
                AuditKind::RollbackFailed,
                msg,
                serde_json::Value::Null,
            );
        }
    }
}

fn observe_rollback(ctx: &Context, o: &OrderOutcome, r: &RollbackOrder, outcome: Outcome) {
    ctx.metrics
        .rollbacks
        .get_or_create(&RollbackLabels {
            service: o.order.policy.service.clone(),
            reason: r.first_metric.clone(),
            outcome,
        })
        .inc();
}

/// Publishes a finished plan; returns its incident report, which recovery verification
/// completes later.
async fn rolled_back(
    ctx: &Context,
    o: &OrderOutcome,
    report: &RollbackReport,
    v: &Versions,
    incident: &str,
) -> IncidentReport {
    let p = &o.order.policy;
    let r = rollback_of(o, Some(report));
    for step in &report.steps {
        ctx.metrics
            .step_duration
            .get_or_create(&StepLabels {
                step: step.step.clone(),
            })
            .observe(step.elapsed_ms as f64 / 1000.0);
    }
    let outcome = match report.outcome {
        ActOutcome::DryRun => Outcome::dry_run,
        _ => Outcome::success,
    };
    observe_rollback(ctx, o, &r, outcome);
    if outcome == Outcome::success {
        ctx.metrics
            .detection_to_mitigation
            .observe((report.finished_at - r.detected_at).max(0) as f64 / 1000.0);
    }
    let record = incident_of(o, report, &r, v);
    if let Err(err) = ctx.audit.incident(&record) {
        tracing::error!(error = %err, "cannot write the incident report");
    }
    audit(
        ctx,
        p,
        AuditKind::RollbackCompleted,
        format!("{:?}", report.outcome),
        serde_json::to_value(report).unwrap_or_default(),
    );
    let notice = Notice::RollbackCompleted {
        service: p.service.clone(),
        namespace: p.namespace.clone(),
        at: report.finished_at,
        from_version: v.from.clone(),
        to_version: v.to.clone(),
        mode: p.action.name().to_string(),
        dry_run: o.order.dry_run,
        window_s: p.verify.window.as_secs(),
    };
    send(ctx, Some(p), notice, incident).await;
    record
}

/// The incident report of a finished rollback: timeline, verification, versions.
fn incident_of(
    o: &OrderOutcome,
    report: &RollbackReport,
    r: &RollbackOrder,
    v: &Versions,
) -> IncidentReport {
    let p = &o.order.policy;
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
        (r.detected_at, "first breaching evaluation".to_string()),
        (r.decided_at, "rollback decided".to_string()),
    ];
    if o.attempt > 1 {
        timeline.push((
            report.started_at,
            format!("attempt {} after earlier failures", o.attempt),
        ));
    }
    timeline.extend(report.steps.iter().map(|st| {
        (
            st.started_at + st.elapsed_ms,
            format!("{} {:?}", st.step, st.outcome),
        )
    }));
    IncidentReport {
        id: report.rollback_id.clone(),
        service: p.service.clone(),
        namespace: p.namespace.clone(),
        detected_at: r.detected_at,
        mitigated_at: Some(report.finished_at),
        from_version: v.from.clone(),
        to_version: v.to.clone(),
        reasons: r.reasons.clone(),
        timeline,
        verification,
        dry_run: o.order.dry_run,
        outcome: format!("{:?}", report.outcome),
        recovery: o
            .order
            .dry_run
            .then(|| "not verified: nothing was changed (dry run)".to_string()),
        rto: None,
    }
}

/// Publishes a failed attempt; returns the escalation detail once the policy's
/// `rollback_attempts` attempts have failed.
async fn failed(
    ctx: &Context,
    o: &OrderOutcome,
    error: &str,
    retry_in: Option<Duration>,
    incident: &str,
) -> Option<String> {
    let p = &o.order.policy;
    let next = match retry_in {
        Some(d) => format!("retrying in {}", humantime::format_duration(d)),
        None => "not retried".into(),
    };
    let msg = format!(
        "{} attempt {} failed ({next}): {error}",
        o.order.action.name(),
        o.attempt
    );
    if let Action::RecordKnownGood { .. } = o.order.action {
        tracing::error!(service = %p.service, "{msg}");
        return None;
    }
    observe_rollback(ctx, o, &rollback_of(o, None), Outcome::failure);
    tracing::error!(service = %p.service, attempt = o.attempt, "rollback FAILED: a human must take over; {msg}");
    audit(
        ctx,
        p,
        AuditKind::RollbackFailed,
        msg.clone(),
        serde_json::json!({"attempt": o.attempt, "retry_in_s": retry_in.map(|d| d.as_secs())}),
    );
    // Chat hears of the first failure; a human is paged (escalation) when the rollback has
    // failed `rollback_attempts` whole-plan attempts (runbook 003: "fails after 2 attempts").
    if o.attempt == 1 {
        let notice = Notice::RollbackFailed {
            service: p.service.clone(),
            namespace: p.namespace.clone(),
            at: ctx.clock.now_millis(),
            error: msg.clone(),
        };
        send(ctx, Some(p), notice, incident).await;
    }
    let attempts = p.rollback_attempts.unwrap_or(DEFAULT_ATTEMPTS);
    (o.attempt == attempts).then_some(msg)
}

/// Hands `notice` to the notifier, routed by the policy's `notify` (else the default route).
/// The dispatcher only queues it: a notice never waits on a receiver.
pub(super) async fn send(ctx: &Context, policy: Option<&Policy>, notice: Notice, incident: &str) {
    let envelope = Envelope {
        notice,
        route: policy.and_then(|p| p.notify.clone()),
        also: Vec::new(),
        incident: incident.to_string(),
    };
    if let Err(err) = ctx.notifier.deliver(envelope).await {
        tracing::warn!(error = %err, "notification failed");
    }
}
