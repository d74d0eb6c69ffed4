//! Each step's postcondition and the writes that establish it, computed from a fresh snapshot.
//! Pure: the executor re-reads the cluster before every attempt and asks this module what is left
//! to do, which is what makes a retried or resumed step never act twice.

use super::objects::{self, Observed};
use super::plan::{ActionPlan, PlanError, Step};
use super::split::{self, Split};
use super::undo::{self, UndoTarget};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The object a write goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Target {
    Deployment(String),
    VirtualService(String),
    /// A Gateway API HTTPRoute.
    HttpRoute(String),
    Hpa(String),
}

/// One write the executor performs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "write", rename_all = "snake_case")]
pub enum Mutation {
    /// JSON patch (RFC 6902), `test` ops included.
    Patch {
        target: Target,
        patch: Value,
    },
    /// `spec.replicas` through the scale subresource (what `kubectl scale` and HPAs use).
    Scale {
        target: Target,
        replicas: i32,
    },
    Delete {
        target: Target,
    },
}

impl Mutation {
    pub fn target(&self) -> &Target {
        match self {
            Mutation::Patch { target, .. }
            | Mutation::Scale { target, .. }
            | Mutation::Delete { target } => target,
        }
    }
}

/// What a step still needs.
#[derive(Debug, Clone, PartialEq)]
pub enum StepCheck {
    /// The postcondition holds; the text says why (shown in the report).
    Done(String),
    /// These writes, in order, establish the postcondition.
    Todo(Vec<Mutation>),
}

fn find_hpa<'a>(obs: &'a Observed, name: &str) -> Option<&'a Value> {
    obs.hpas.iter().find(|h| objects::name(h) == name)
}

/// Postcondition check and remaining writes for one step. `Verify` is answered by [`verify`].
///
/// Each step is checked against what is observed now, never against what an earlier attempt
/// wrote: that is what makes a retried or resumed step never act twice.
pub fn check(plan: &ActionPlan, step: &Step, obs: &Observed) -> Result<StepCheck, PlanError> {
    let stable = Target::Deployment(plan.stable.clone());
    let canary = Target::Deployment(plan.canary.clone());
    Ok(match step {
        Step::PauseStable => pause_stable(stable, obs, true),
        Step::ResumeStable => pause_stable(stable, obs, false),
        Step::PreScaleStable {
            hpa,
            replicas,
            ready,
        } => pre_scale_stable(stable, obs, hpa.as_deref(), *replicas, *ready),
        Step::RouteAllToStable => route_all_to_stable(plan, obs)?,
        Step::NeutraliseCanaryHpa { hpa } => match find_hpa(obs, hpa) {
            None => StepCheck::Done(format!("HPA {hpa:?} is gone (kept in the backup)")),
            Some(_) => StepCheck::Todo(vec![Mutation::Delete {
                target: Target::Hpa(hpa.clone()),
            }]),
        },
        Step::ScaleCanaryToZero => {
            if objects::i64_at(&obs.canary, "/spec/replicas") == Some(0) {
                StepCheck::Done("canary has 0 replicas".into())
            } else {
                StepCheck::Todo(vec![Mutation::Scale {
                    target: canary,
                    replicas: 0,
                }])
            }
        }
        Step::UndoStable(target) => undo_stable(stable, obs, target),
        Step::Verify => {
            let failures = verify(plan, obs)?;
            if failures.is_empty() {
                StepCheck::Done("traffic 100/0, canary at 0, stable rollout complete".into())
            } else {
                StepCheck::Todo(Vec::new())
            }
        }
    })
}

/// `PauseStable` (`paused`) and `ResumeStable` (`!paused`): the stable's `spec.paused`.
fn pause_stable(stable: Target, obs: &Observed, paused: bool) -> StepCheck {
    match (objects::is_paused(&obs.stable), paused) {
        (true, true) => StepCheck::Done("stable is paused".into()),
        (false, false) => StepCheck::Done("stable is not paused".into()),
        _ => StepCheck::Todo(vec![Mutation::Patch {
            target: stable,
            patch: json!([{"op": "add", "path": "/spec/paused", "value": paused}]),
        }]),
    }
}

/// `PreScaleStable`: raise the stable HPA's floor (so it cannot shrink the stable while it takes
/// all the traffic) and the stable's replicas to `replicas`; never lowers either. With `ready`,
/// done only once that many stable replicas are ready (nothing to write meanwhile: the executor
/// polls, bounded by the verify timeout).
fn pre_scale_stable(
    stable: Target,
    obs: &Observed,
    hpa: Option<&str>,
    replicas: i32,
    ready: bool,
) -> StepCheck {
    let want = i64::from(replicas);
    let mut todo = Vec::new();
    if let Some((hpa, h)) = hpa.and_then(|n| find_hpa(obs, n).map(|h| (n, h))) {
        match objects::i64_at(h, "/spec/minReplicas") {
            Some(min) if min >= want => {}
            // `test` makes the write fail instead of overwriting a floor someone changed since.
            Some(min) => todo.push(Mutation::Patch {
                target: Target::Hpa(hpa.to_string()),
                patch: json!([
                    {"op": "test", "path": "/spec/minReplicas", "value": min},
                    {"op": "replace", "path": "/spec/minReplicas", "value": replicas},
                ]),
            }),
            None => todo.push(Mutation::Patch {
                target: Target::Hpa(hpa.to_string()),
                patch: json!([{"op": "add", "path": "/spec/minReplicas", "value": replicas}]),
            }),
        }
    }
    if objects::i64_at(&obs.stable, "/spec/replicas").unwrap_or(1) < want {
        todo.push(Mutation::Scale {
            target: stable,
            replicas,
        });
    }
    let ready_now = objects::i64_at(&obs.stable, "/status/readyReplicas").unwrap_or(0);
    if todo.is_empty() && ready && ready_now < want {
        // Scaled, not yet ready: wait (an empty list means "poll again").
        return StepCheck::Todo(Vec::new());
    }
    if todo.is_empty() {
        let what = if ready { "ready " } else { "" };
        StepCheck::Done(format!("stable has at least {replicas} {what}replicas"))
    } else {
        StepCheck::Todo(todo)
    }
}

/// `RouteAllToStable`: the plan's route (VirtualService) or rule (HTTPRoute) sends everything to
/// the stable.
fn route_all_to_stable(plan: &ActionPlan, obs: &Observed) -> Result<StepCheck, PlanError> {
    let traffic = plan.traffic();
    let (Some(split), Some(target)) = (
        Split::locate(&traffic, &obs.router, "(stored plan)")?,
        split::target(&traffic),
    ) else {
        return Ok(StepCheck::Done(
            "no router: traffic follows the ready replicas".into(),
        ));
    };
    Ok(if split.all_to_stable() {
        StepCheck::Done(format!("{} sends 100% to stable", traffic.split_name()))
    } else {
        StepCheck::Todo(vec![Mutation::Patch {
            target,
            patch: split.patch(&traffic),
        }])
    })
}

/// `UndoStable`: the stable's pod template is the recorded known-good revision's (the
/// `pod-template-hash` label aside, which the controller sets).
fn undo_stable(stable: Target, obs: &Observed, target: &UndoTarget) -> StepCheck {
    if undo::equal_ignore_hash(obs.stable.pointer("/spec/template"), Some(&target.template)) {
        StepCheck::Done(format!(
            "stable template is revision {}'s (ReplicaSet {})",
            target.revision, target.replica_set
        ))
    } else {
        StepCheck::Todo(vec![Mutation::Patch {
            target: stable,
            patch: undo::undo_patch(&obs.stable, target),
        }])
    }
}

/// Everything still wrong after the plan ran; empty means the rollback is done.
pub fn verify(plan: &ActionPlan, obs: &Observed) -> Result<Vec<String>, PlanError> {
    let mut failures = Vec::new();
    let traffic = plan.traffic();
    if let Some(split) = Split::locate(&traffic, &obs.router, "(stored plan)")? {
        if !split.all_to_stable() {
            failures.push(format!(
                "{} weights are {}, not 100% stable",
                traffic.split_name(),
                split.weights()
            ));
        }
    }
    let canary_spec = objects::i64_at(&obs.canary, "/spec/replicas").unwrap_or(1);
    let canary_running = objects::i64_at(&obs.canary, "/status/replicas").unwrap_or(0);
    if canary_spec != 0 || canary_running != 0 {
        failures.push(format!(
            "canary {:?} has {canary_spec} desired / {canary_running} running replicas",
            plan.canary
        ));
    }
    if objects::is_paused(&obs.stable) && plan.steps.contains(&Step::ResumeStable) {
        failures.push(format!("stable {:?} is still paused", plan.stable));
    }
    if !objects::is_paused(&obs.stable) && !objects::rollout_complete(&obs.stable) {
        failures.push(format!("stable {:?} rollout is not complete", plan.stable));
    }
    for step in &plan.steps {
        if let Step::UndoStable(t) = step {
            if !undo::equal_ignore_hash(obs.stable.pointer("/spec/template"), Some(&t.template)) {
                failures.push(format!(
                    "stable {:?} is not on revision {}'s template",
                    plan.stable, t.revision
                ));
            }
        }
    }
    Ok(failures)
}
