//! One service's runtime state and its part of a cycle.

use super::deployments::{read_views, DeploymentWatches, Views};
use super::order::{Action, Order, RollbackOrder};
use super::outcome::{Event, OrderOutcome};
use super::recovery::{Recovery, StableHistory};
use super::schedule::service_key;
use super::Context;
use crate::actuator::RollbackReport;
use crate::audit::{AuditKind, AuditRecord};
use crate::decision::{Engine, Health, Phase, Verdict};
use crate::lifecycle::{Lifecycle, Release, ReleaseEvent};
use crate::notify::Notice;
use crate::policy::{Input, Policy};
use crate::sample::{Millis, Observation, Sample, Track};
use crate::source::plan::{policy_requests, Key, Request};
use crate::telemetry::{ServiceLabels, Valued};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Deployment reads in flight at once in a cycle (watch-store reads are instant; this bounds the
/// GET fallback).
const READ_CONCURRENCY: usize = 16;

pub struct ServiceRuntime {
    /// Read-only once the runtime exists: [`ServiceRuntime::requests`] was rendered from it (a
    /// reload builds a new runtime for a changed policy).
    /// Shared with the orders made for it (a rollback order used to clone the whole policy).
    pub policy: Arc<Policy>,
    /// Every query the policy needs per poll, rendered once per policy instead of per cycle.
    requests: Vec<Request>,
    pub engine: Engine,
    pub lifecycle: Lifecycle,
    /// The health of the last verdict (what a new verdict is compared with: a change is
    /// audited and logged, a shared episode noticed once). Not the whole verdict: its readings
    /// are 1.6 KB per service and nothing reads them again (issue 10).
    pub last_health: Option<Health>,
    /// A rollback was ordered for the current canary (or bake window): no second order.
    pub ordered: bool,
    /// The report of the current canary's rollback, once the supervisor finished it. Boxed,
    /// like the other rarely-set fields: a runtime per service, 10,000 of them in a fleet.
    pub rollback: Option<Box<RollbackReport>>,
    /// A report settled since the last cycle, handed to the next [`CycleOutcome`].
    fresh_report: Option<Box<RollbackReport>>,
    /// Whether the last read of its Deployments worked (`None` before the first). Readiness is
    /// judged over every service's last read, not over one batch: with services evaluated in
    /// phases, a per-batch flag would flap whenever one namespace or policy cannot be read.
    pub deployments_read: Option<bool>,
    /// The names its per-service series on `/metrics` share.
    pub(super) labels: super::board::Labels,
    /// The stable's recent readings (the pre-incident baseline of recovery verification).
    history: StableHistory,
    /// The last rollback's recovery, verified each cycle until it is recovered.
    pub recovery: Option<Box<(Recovery, Order)>>,
    /// Which load of its policy this runtime belongs to (the daemon numbers each runtime a
    /// reload builds). A phase's answer is judged only by the runtime it was asked for: a
    /// changed policy gets a new runtime and a new number (see `pipeline`).
    pub(super) generation: u64,
}

/// What a cycle did for one service (the demo and tests read it; the daemon logs it).
#[derive(Debug, Clone)]
pub struct CycleOutcome {
    pub service: String,
    /// `namespace/service`.
    pub key: String,
    pub release: Release,
    pub verdict: Option<Verdict>,
    pub events: Vec<ReleaseEvent>,
    /// Handed to the supervisor at the end of the cycle; nothing here waits for them.
    pub orders: Vec<Order>,
    /// A rollback of this service that finished since its previous cycle.
    pub rollback: Option<RollbackReport>,
    /// What recovery verification settled this cycle, for the outcome fan-out.
    pub recovery: Vec<OrderOutcome>,
    pub error: Option<String>,
    /// This evaluation's raw polls of value metrics, `(metric, track, value)` (the status board
    /// plots them).
    pub polls: Vec<(String, crate::sample::Track, f64)>,
}

impl ServiceRuntime {
    pub fn new(policy: impl Into<Arc<Policy>>) -> Self {
        Self::with_texts(policy, &mut HashSet::new())
    }

    /// A runtime whose query texts are shared with equal ones in `texts` (batched templates
    /// render the same PromQL for every service).
    pub fn with_texts(policy: impl Into<Arc<Policy>>, texts: &mut HashSet<Arc<str>>) -> Self {
        let policy: Arc<Policy> = policy.into();
        Self {
            requests: policy_requests(&policy)
                .into_iter()
                .map(|r| r.interned(texts))
                .collect(),
            engine: Engine::new(&policy, ""),
            labels: super::board::Labels::new(&policy),
            lifecycle: Lifecycle::new(policy.analysis.bake),
            policy,
            last_health: None,
            ordered: false,
            rollback: None,
            fresh_report: None,
            deployments_read: None,
            history: StableHistory::default(),
            recovery: None,
            generation: 0,
        }
    }

    /// `order` went to the supervisor: no second rollback order for this canary, and the
    /// canary is judged no further (the supervisor owns its rollback from here).
    pub(super) fn submitted(&mut self, order: &Order) {
        if let Action::Rollback(_) = order.action {
            self.ordered = true;
            if let Some(id) = self.lifecycle.stage().canary_id().cloned() {
                self.lifecycle.rolled_back(id);
            }
        }
    }

    /// Takes in what the supervisor reports about this service's orders.
    pub(super) fn settle(&mut self, o: OrderOutcome) {
        if let Event::RolledBack { report, .. } = o.event {
            if report.outcome == crate::actuator::report::Outcome::Completed && !o.order.dry_run {
                self.verify_recovery(&o.order, &report);
            }
            self.rollback = Some(report.clone());
            self.fresh_report = Some(report);
        }
    }

    /// Starts judging the stable alone after a completed plan (see `recovery`).
    fn verify_recovery(&mut self, order: &Order, report: &RollbackReport) {
        let first_bad = match &order.action {
            Action::Rollback(r) => r.detected_at,
            _ => report.started_at,
        };
        let trigger: Vec<(String, f64)> = report
            .trigger
            .values
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let recovery = Recovery::start(
            &self.policy,
            &self.history,
            report.rollback_id.clone(),
            first_bad,
            report.finished_at,
            &trigger,
        );
        self.recovery = Some(Box::new((recovery, order.clone())));
    }

    /// Advances recovery verification with this poll's stable readings.
    fn advance_recovery(
        &mut self,
        observations: &HashMap<Key, Observation>,
        now: Millis,
    ) -> Vec<OrderOutcome> {
        let Some((recovery, order)) = self.recovery.as_deref_mut() else {
            return Vec::new();
        };
        let readings: HashMap<String, f64> = self
            .requests
            .iter()
            .filter(|r| r.key.track == Track::Stable)
            .filter_map(|r| match (&*r.key.input, observations.get(&r.key)) {
                (Input::Value { metric }, Some(Observation::Value(v))) => {
                    Some((metric.clone(), *v))
                }
                _ => None,
            })
            .collect();
        let progress = recovery.observe(now, &readings);
        let out = progress
            .into_iter()
            .map(|progress| OrderOutcome {
                order: order.clone(),
                attempt: 0,
                event: Event::Recovery {
                    progress,
                    state: Box::new(recovery.clone()),
                },
            })
            .collect();
        if recovery.finished() {
            self.recovery = None;
        }
        out
    }

    /// Whether this cycle must sample the stable for recovery verification.
    fn verifying(&self) -> bool {
        self.recovery.is_some()
    }

    /// The requests this service makes per poll, each keyed by the engine input it feeds.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }
}

fn phase_of(release: &Release) -> Option<Phase> {
    match release {
        Release::Canary { since, .. } => Some(Phase::Canary { started_at: *since }),
        Release::Bake { since, .. } => Some(Phase::Bake {
            promoted_at: *since,
        }),
        Release::Idle | Release::RolledBack { .. } => None,
    }
}

pub(super) fn audit(
    ctx: &Context,
    p: &Policy,
    kind: AuditKind,
    message: String,
    detail: serde_json::Value,
) {
    let rec = AuditRecord {
        at: ctx.clock.now_millis(),
        service: p.service.clone(),
        namespace: p.namespace.clone(),
        kind,
        message,
        detail,
    };
    if let Err(err) = ctx.audit.record(&rec) {
        tracing::error!(error = %err, "audit trail write failed");
    }
}

/// Step 1: every service's release from the cluster. Reads go out together (bounded): a
/// namespace whose GETs hang until their deadline costs one deadline per batch, not one per
/// service.
pub(super) async fn observe_releases(
    ctx: &Context,
    watches: &DeploymentWatches,
    services: &mut [&mut ServiceRuntime],
    now: Millis,
) -> Vec<CycleOutcome> {
    let policies: Vec<&Policy> = services.iter().map(|s| &*s.policy).collect();
    let mut reads = Vec::with_capacity(policies.len());
    for chunk in policies.chunks(READ_CONCURRENCY) {
        let batch = chunk.iter().map(|p| read_views(ctx, watches, p));
        reads.extend(futures::future::join_all(batch).await);
    }
    services
        .iter_mut()
        .zip(reads)
        .map(|(s, read)| advance_release(ctx, s, read, now))
        .collect()
}

/// Moves one service's lifecycle on from its Deployments (or records why they could not be read).
fn advance_release(
    ctx: &Context,
    s: &mut ServiceRuntime,
    read: Result<Views, super::DaemonError>,
    now: Millis,
) -> CycleOutcome {
    let mut out = CycleOutcome {
        service: s.policy.service.clone(),
        key: service_key(&s.policy),
        release: s.lifecycle.stage().clone(),
        verdict: None,
        events: Vec::new(),
        orders: Vec::new(),
        rollback: s.fresh_report.take().map(|r| *r),
        recovery: Vec::new(),
        error: None,
        polls: Vec::new(),
    };
    match read {
        Ok((stable, canary)) => {
            s.deployments_read = Some(true);
            out.events = s.lifecycle.observe(&stable, canary.as_ref(), now);
            for ev in &out.events {
                if let Some(order) = handle_release_event(ctx, s, ev) {
                    out.orders.push(order);
                }
                if let Some(order) =
                    super::bad_versions::known_bad(ctx, &s.policy, ev, &stable, now)
                {
                    out.orders.push(order);
                }
            }
        }
        Err(err) => {
            s.deployments_read = Some(false);
            out.error = Some(err.to_string());
            tracing::warn!(service = %s.policy.service, error = %err, "cannot read Deployments");
        }
    }
    out.release = s.lifecycle.stage().clone();
    out
}

/// Step 2's input: what every service asks Prometheus this cycle, with the requests each
/// rendered when its policy was loaded. A service under analysis asks everything, a rolled-back
/// one whose recovery is being verified only its stable values, the others nothing.
pub(super) fn poll_requests(services: &[&mut ServiceRuntime]) -> Vec<Request> {
    let mut requests: Vec<Request> = Vec::new();
    for s in services {
        if phase_of(s.lifecycle.stage()).is_some() {
            requests.extend(s.requests.iter().cloned());
        } else if s.verifying() {
            requests.extend(
                s.requests
                    .iter()
                    .filter(|r| {
                        r.key.track == Track::Stable && matches!(*r.key.input, Input::Value { .. })
                    })
                    .cloned(),
            );
        }
    }
    requests
}

/// Step 3: engine, verdict, order for one service; the notice of a shared cause that starts
/// now. A service not under analysis only publishes its state. A request without an answer in
/// `observations` counts as `missing` (`Absent`; an error when the whole fetch failed).
pub(super) fn judge(
    ctx: &Context,
    s: &mut ServiceRuntime,
    out: &mut CycleOutcome,
    observations: &HashMap<Key, Observation>,
    missing: &Observation,
    now: Millis,
) -> Option<Notice> {
    out.recovery = s.advance_recovery(observations, now);
    let Some(phase) = phase_of(s.lifecycle.stage()) else {
        super::board::publish_idle(ctx, s);
        return None;
    };
    out.polls = feed_engine(ctx, s, observations, missing, now);
    let verdict = s.engine.evaluate(now, phase);
    super::board::publish(ctx, s, &verdict);
    super::board::publish_levels(&ctx.metrics, s, &verdict);
    let notice = shared_cause(ctx, s, &verdict);
    if verdict.rollback && !s.ordered {
        out.orders.push(order_rollback(ctx, s, &verdict));
    }
    s.last_health = Some(verdict.health);
    out.verdict = Some(verdict);
    out.release = s.lifecycle.stage().clone();
    notice
}

/// A shared-cause episode starting at this verdict (the previous one was not shared): counted,
/// audited, and one notice; rolling the canary back would not fix a dependency both tracks use.
fn shared_cause(ctx: &Context, s: &ServiceRuntime, v: &Verdict) -> Option<Notice> {
    let was_shared = s.last_health == Some(Health::Shared);
    if v.health != Health::Shared || was_shared {
        return None;
    }
    let p = &s.policy;
    ctx.metrics
        .shared
        .get_or_create(&ServiceLabels {
            service: s.labels.service(),
        })
        .inc();
    let reasons = reason_lines(v);
    let msg =
        "both tracks breach; the canary is not worse: no rollback, promotion held".to_string();
    tracing::warn!(service = %p.service, reasons = ?reasons, "{msg}");
    audit(
        ctx,
        p,
        AuditKind::SharedCause,
        msg,
        serde_json::to_value(&v.reasons).unwrap_or_default(),
    );
    Some(Notice::SharedCause {
        service: p.service.clone(),
        namespace: p.namespace.clone(),
        at: v.at,
        reasons,
    })
}

/// Hands the engine this poll's answer to each of the service's requests (`missing` when there
/// is none), by the typed key it was asked under. An answer the engine rejects is a bug between
/// the policy's feeds and its rules: counted and logged, and the cycle goes on. Returns the
/// values polled for value metrics.
fn feed_engine(
    ctx: &Context,
    s: &mut ServiceRuntime,
    observations: &HashMap<Key, Observation>,
    missing: &Observation,
    now: Millis,
) -> Vec<(String, crate::sample::Track, f64)> {
    let svc = &s.policy.service;
    let mut polls = Vec::new();
    for r in &s.requests {
        let Key { input, track, .. } = &r.key;
        let obs = observations
            .get(&r.key)
            .cloned()
            .unwrap_or_else(|| missing.clone());
        if let (Input::Value { metric }, Observation::Value(v)) = (&**input, &obs) {
            if *track == Track::Stable {
                s.history.record(metric, now, *v);
            }
            let which = match track {
                Track::Canary => Valued::Canary,
                Track::Stable => Valued::Stable,
            };
            let name = s.labels.metric(metric);
            ctx.metrics.judged.update(&s.labels.service(), |row| {
                row.metric(&name).set_value(which, *v)
            });
            polls.push((metric.clone(), *track, *v));
        }
        if let Err(err) = s.engine.observe_input(input, *track, Sample::new(now, obs)) {
            ctx.metrics
                .engine_errors
                .get_or_create(&ServiceLabels {
                    service: s.labels.service(),
                })
                .inc();
            tracing::error!(service = %svc, input = %input.key(), %track, error = %err, "the engine rejected an observation");
        }
    }
    polls
}

/// The rollback order for a rollback verdict. The daemon hands it to the supervisor if this
/// replica may act for the service (then `ServiceRuntime::submitted` marks it); a standby asks
/// again at its next evaluation.
fn order_rollback(ctx: &Context, s: &ServiceRuntime, verdict: &Verdict) -> Order {
    let order = RollbackOrder::from_verdict(verdict, s.lifecycle.stage());
    Order::new(&s.policy, Action::Rollback(order), ctx.dry_run)
}

/// Audits a release event; returns the order it calls for, if any.
fn handle_release_event(ctx: &Context, s: &mut ServiceRuntime, ev: &ReleaseEvent) -> Option<Order> {
    let p = &s.policy;
    let mut order = None;
    let (kind, msg) = match ev {
        ReleaseEvent::CanaryStarted { id, image } => {
            s.engine.reset_for_revision(id.to_string());
            s.ordered = false;
            s.rollback = None;
            (
                AuditKind::CanaryStarted,
                format!("canary {id} started ({image})"),
            )
        }
        ReleaseEvent::CanaryStopped { id } => (
            AuditKind::CanaryPromoted,
            format!("canary {id} stopped receiving replicas"),
        ),
        ReleaseEvent::StableChanged { from, to, image } => (
            AuditKind::CanaryPromoted,
            format!("stable changed from revision {from:?} to {to} ({image}); bake window open"),
        ),
        ReleaseEvent::StableKnownGood { revision } => {
            let action = Action::RecordKnownGood {
                revision: *revision,
            };
            order = Some(Order::new(p, action, ctx.dry_run));
            (
                AuditKind::StableKnownGood,
                format!("stable revision {revision} recorded as last known good"),
            )
        }
    };
    tracing::info!(service = %p.service, "{msg}");
    audit(
        ctx,
        p,
        kind,
        msg,
        serde_json::to_value(ev).unwrap_or_default(),
    );
    order
}

/// One line per reason, as people write them in incident notes (the [`crate::decision::Reason`]
/// display, the same text backtests and `explain` print).
pub fn reason_lines(v: &Verdict) -> Vec<String> {
    v.reasons.iter().map(ToString::to_string).collect()
}
