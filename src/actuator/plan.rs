//! The rollback action plan: which steps a rollback of one service needs, decided from the policy
//! and the observed cluster state. Pure: no I/O, no clock (the caller passes `now`).
//!
//! The plan is computed once, when a rollback starts, and stored with the backups. A resumed
//! rollback executes the stored plan, never a re-computed one: after the stable has been undone the
//! "recorded revision" has been renumbered by the deployment controller and the traffic already
//! moved, so re-planning would plan something different (or a second undo).

use super::objects::{self, Observed};
use super::undo::{self, UndoTarget};
use crate::policy::{Destination, Policy, Traffic, TrafficKind};
use crate::sample::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why the rollback happens: the verdict's reasons, carried into Events, the backup and the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// One line a human reads in `kubectl describe` (e.g. "error_rate critical: 0.071 > 0.05").
    pub summary: String,
    /// The metric values that triggered the rollback, by metric name.
    #[serde(default)]
    pub values: BTreeMap<String, f64>,
}

impl Trigger {
    pub fn manual(summary: &str) -> Self {
        Self {
            summary: summary.into(),
            values: BTreeMap::new(),
        }
    }

    pub fn with_value(mut self, metric: &str, value: f64) -> Self {
        self.values.insert(metric.into(), value);
        self
    }

    /// Summary plus values, short enough for an Event note (1 kB limit).
    pub fn message(&self) -> String {
        let mut out = self.summary.clone();
        if !self.values.is_empty() {
            let vals: Vec<String> = self
                .values
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push_str(" [");
            out.push_str(&vals.join(", "));
            out.push(']');
        }
        out.chars().take(900).collect()
    }
}

/// One step of the plan. Each is idempotent: executing it checks its postcondition first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Freeze a stable rollout that is still progressing, so it stops creating bad pods.
    PauseStable,
    /// Give the stable the capacity for all traffic before traffic snaps back (Flagger 869/1694).
    PreScaleStable {
        /// The stable's HPA, whose floor is raised too (none in `replicas` mode without one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hpa: Option<String>,
        replicas: i32,
        /// Done only once that many stable replicas are ready (`replicas` mode: scaling the canary
        /// down is what moves the traffic, so the capacity must be there first).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ready: bool,
    },
    /// Named route: stable 100, every other destination 0.
    RouteAllToStable,
    /// Delete (after backup) an HPA that targets the canary so it cannot scale it back up.
    NeutraliseCanaryHpa {
        hpa: String,
    },
    ScaleCanaryToZero,
    /// `kubectl rollout undo --to-revision` semantics to the recorded last known good revision.
    UndoStable(UndoTarget),
    /// Only present when the plan paused the stable itself.
    ResumeStable,
    /// Traffic 100/0, canary at 0 replicas, stable rollout complete on the target template.
    Verify,
}

impl Step {
    /// Stable name recorded in the progress annotation; unique within a plan.
    pub fn key(&self) -> String {
        match self {
            Step::PauseStable => "pause_stable".into(),
            Step::PreScaleStable { .. } => "pre_scale_stable".into(),
            Step::RouteAllToStable => "route_all_to_stable".into(),
            Step::NeutraliseCanaryHpa { hpa } => format!("neutralise_canary_hpa.{hpa}"),
            Step::ScaleCanaryToZero => "scale_canary_to_zero".into(),
            Step::UndoStable(_) => "undo_stable".into(),
            Step::ResumeStable => "resume_stable".into(),
            Step::Verify => "verify".into(),
        }
    }

    /// PascalCase reason for the Kubernetes Event of this step.
    pub fn event_reason(&self) -> &'static str {
        match self {
            Step::PauseStable => "RollbackPauseStable",
            Step::PreScaleStable { .. } => "RollbackPreScaleStable",
            Step::RouteAllToStable => "RollbackRouteAllToStable",
            Step::NeutraliseCanaryHpa { .. } => "RollbackNeutraliseCanaryHpa",
            Step::ScaleCanaryToZero => "RollbackScaleCanaryToZero",
            Step::UndoStable(_) => "RollbackUndoStable",
            Step::ResumeStable => "RollbackResumeStable",
            Step::Verify => "RollbackVerified",
        }
    }

    /// Whether the step acts on the canary Deployment (for the Event's object).
    pub fn concerns_canary(&self) -> bool {
        matches!(
            self,
            Step::RouteAllToStable | Step::NeutraliseCanaryHpa { .. } | Step::ScaleCanaryToZero
        )
    }
}

/// Everything needed to execute, resume, audit and restore one rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionPlan {
    /// Hash of namespace, service, canary name and canary pod template: one rollback per canary
    /// revision, whatever happens to the daemon.
    pub id: String,
    pub namespace: String,
    pub service: String,
    pub stable: String,
    pub canary: String,
    /// Which router carries the split (plans recorded before there was a choice are Istio's).
    #[serde(default)]
    pub router: TrafficKind,
    /// Istio: the VirtualService and its route (empty for other routers).
    pub virtual_service: String,
    pub route: String,
    /// Gateway API: the HTTPRoute and its rule, by name or position.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub http_route: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_index: Option<usize>,
    pub stable_destination: Destination,
    pub canary_destination: Destination,
    pub trigger: Trigger,
    pub created_at: Millis,
    pub steps: Vec<Step>,
    /// Why a step was left out (e.g. "stable already on revision 3"); shown in the report.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{file}: traffic.virtual_service = {vs:?}: route {route:?} (key traffic.route) is not in spec.http; routes there: {found:?}. Fix traffic.route or name the route in the VirtualService")]
    RouteNotFound {
        file: String,
        vs: String,
        route: String,
        found: Vec<String>,
    },
    #[error("{file}: route {route:?} of VirtualService {vs:?} has no destination matching traffic.{track} ({wanted}); fix traffic.{track}")]
    DestinationNotFound {
        file: String,
        vs: String,
        route: String,
        track: &'static str,
        /// "host X, subset Y" as the policy names it.
        wanted: String,
    },
    #[error("{file}: traffic.http_route = {route:?}: {rule} (key traffic.rule / traffic.rule_index) is not in spec.rules; rules there: {found:?}. Fix the key or name the rule (`rules[].name`) in the HTTPRoute")]
    RuleNotFound {
        file: String,
        route: String,
        rule: String,
        found: Vec<String>,
    },
    #[error("{file}: {at} has no Service backendRef named {wanted:?} (key traffic.{track}.service); its backendRefs: {found:?}. Fix traffic.{track}.service")]
    BackendNotFound {
        file: String,
        /// `rule "split" of HTTPRoute "web"`.
        at: String,
        track: &'static str,
        wanted: String,
        found: Vec<String>,
    },
    #[error("Deployment {deployment:?} has no ReplicaSet with revision {revision}; revisions kept: {available:?}. Pass --to-revision with one of them (raise revisionHistoryLimit to keep more)")]
    RevisionNotFound {
        deployment: String,
        revision: i64,
        available: Vec<i64>,
    },
    #[error("{what} of {object:?} is malformed: {detail}")]
    Malformed {
        object: String,
        what: &'static str,
        detail: String,
    },
}

/// The rollback id of the canary's current revision (FNV-1a 64, stable across builds and hosts).
pub fn rollback_id(policy: &Policy, canary: &serde_json::Value) -> String {
    let template = canary
        .pointer("/spec/template")
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut hash = crate::hash::Fnv1a::new();
    for part in [
        policy.namespace.as_str(),
        policy.service.as_str(),
        policy.deployments.canary.as_str(),
        template.as_str(),
    ] {
        // Each part ends with a NUL, so ("ab", "c") and ("a", "bc") differ.
        hash.write(part.as_bytes()).write(&[0]);
    }
    format!("{:016x}", hash.finish())
}

/// Build the plan. `last_known_good` is the stable revision recorded when it last passed its bake
/// (or given by hand); `None` leaves the stable's template alone: never "the previous revision".
pub fn build_plan(
    policy: &Policy,
    observed: &Observed,
    last_known_good: Option<i64>,
    trigger: Trigger,
    now: Millis,
) -> Result<ActionPlan, PlanError> {
    let file = policy.source.display().to_string();
    let mut steps = Vec::new();
    let mut notes = Vec::new();

    // Validate the route now, so a wrong policy fails before anything changes.
    let split = super::split::Split::locate(&policy.traffic, &observed.router, &file)?;

    let stable = &observed.stable;
    let paused_by_us = !objects::is_paused(stable) && !objects::rollout_complete(stable);
    if paused_by_us {
        steps.push(Step::PauseStable);
    }

    pre_scale_stable(policy, observed, &mut steps, &mut notes);

    if split.is_some() {
        steps.push(Step::RouteAllToStable);
    }
    for hpa in objects::hpas_targeting(&observed.hpas, &policy.deployments.canary) {
        steps.push(Step::NeutraliseCanaryHpa {
            hpa: objects::name(hpa),
        });
    }
    steps.push(Step::ScaleCanaryToZero);

    undo_stable(policy, observed, last_known_good, &mut steps, &mut notes)?;

    if paused_by_us {
        steps.push(Step::ResumeStable);
    }
    steps.push(Step::Verify);

    Ok(ActionPlan {
        id: rollback_id(policy, &observed.canary),
        namespace: policy.namespace.clone(),
        service: policy.service.clone(),
        stable: policy.deployments.stable.clone(),
        canary: policy.deployments.canary.clone(),
        router: policy.traffic.router(),
        virtual_service: policy.traffic.virtual_service.clone(),
        route: policy.traffic.route.clone(),
        http_route: policy.traffic.http_route.clone(),
        rule: policy.traffic.rule.clone(),
        rule_index: policy.traffic.rule_index,
        stable_destination: policy.traffic.stable.clone(),
        canary_destination: policy.traffic.canary.clone(),
        trigger,
        created_at: now,
        steps,
        notes,
    })
}

/// `PreScaleStable` when the stable has fewer replicas than stable and canary ran together and
/// an HPA scales it (the stable must carry all traffic before the route moves, and the HPA must
/// not shrink it back), or always in `replicas` mode (there, scaling the canary down is what
/// moves the traffic, so the stable must have the capacity ready first). Otherwise a note says
/// why the step is not needed.
fn pre_scale_stable(
    policy: &Policy,
    observed: &Observed,
    steps: &mut Vec<Step>,
    notes: &mut Vec<String>,
) {
    let by_replicas = policy.traffic.router() == TrafficKind::Replicas;
    if let Some(share) = by_replicas
        .then(|| objects::replica_share(&observed.stable, &observed.canary))
        .flatten()
    {
        notes.push(format!(
            "no router: the canary serves {:.0}% of the traffic (its share of the ready replicas)",
            share * 100.0
        ));
    }
    let hpa = objects::hpa_targeting(&observed.hpas, &policy.deployments.stable);
    if hpa.is_none() && !by_replicas {
        return;
    }
    let max = hpa
        .and_then(|h| objects::i64_at(h, "/spec/maxReplicas"))
        .unwrap_or(i64::MAX);
    let current = objects::i64_at(&observed.stable, "/spec/replicas").unwrap_or(1);
    let canary = objects::i64_at(&observed.canary, "/spec/replicas").unwrap_or(0);
    let needed = pre_scale_target(current, canary, max);
    if needed > current {
        steps.push(Step::PreScaleStable {
            hpa: hpa.map(objects::name),
            replicas: needed.min(i64::from(i32::MAX)) as i32,
            ready: by_replicas,
        });
    } else {
        notes.push(format!(
            "stable has {current} replicas, enough for all traffic (canary {canary}, HPA max {})",
            if max == i64::MAX {
                "none".to_string()
            } else {
                max.to_string()
            }
        ));
    }
}

/// `UndoStable` to the `last_known_good` revision's template, unless the stable already runs it.
/// Without a recorded revision the stable is left alone (never "the previous revision"), and a
/// note says so.
fn undo_stable(
    policy: &Policy,
    observed: &Observed,
    last_known_good: Option<i64>,
    steps: &mut Vec<Step>,
    notes: &mut Vec<String>,
) -> Result<(), PlanError> {
    let Some(revision) = last_known_good else {
        notes.push(
            "no last known good revision recorded for the stable; its template is left as is"
                .into(),
        );
        return Ok(());
    };
    let stable = &observed.stable;
    let target = undo::target_for_revision(
        &policy.deployments.stable,
        stable,
        &observed.stable_replica_sets,
        revision,
    )?;
    if undo::equal_ignore_hash(stable.pointer("/spec/template"), Some(&target.template)) {
        notes.push(format!(
            "stable {:?} already runs revision {revision}'s template; undo skipped",
            policy.deployments.stable
        ));
    } else {
        steps.push(Step::UndoStable(target));
    }
    Ok(())
}

impl ActionPlan {
    /// The policy's `[traffic]` table as recorded in the plan (steps and verification re-locate
    /// the split with it on every observation).
    pub fn traffic(&self) -> Traffic {
        Traffic {
            kind: Some(self.router),
            virtual_service: self.virtual_service.clone(),
            route: self.route.clone(),
            http_route: self.http_route.clone(),
            rule: self.rule.clone(),
            rule_index: self.rule_index,
            stable: self.stable_destination.clone(),
            canary: self.canary_destination.clone(),
        }
    }
}

/// Replicas the stable needs before it takes all traffic: what stable and canary ran together
/// (they served all traffic between them), never less than now, capped at the HPA's maximum.
pub fn pre_scale_target(stable: i64, canary: i64, hpa_max: i64) -> i64 {
    stable.max(stable + canary.max(0)).min(hpa_max).max(stable)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
