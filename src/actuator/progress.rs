//! Crash safety: which steps of a rollback have happened, recorded on the cluster so a restarted
//! daemon resumes instead of starting over.
//!
//! Where: annotations on the rollback's backup ConfigMap (`backout-backup-<service>-<id>`), not
//! on the canary Deployment. The ConfigMap also holds the plan (the undo target's template is too
//! large for an annotation and must survive the renumbering of revisions), its creation is atomic
//! (a second daemon gets 409 AlreadyExists for the same canary revision, so there is never a second
//! rollback of it), and GitOps tools that rewrite the canary do not erase it.
//!
//! Protocol per step: write `step-started`, act, write `steps` += step. Every write is a JSON
//! patch that `test`s the previous values, so two writers cannot both advance. A step found
//! "started" but not "done" after a crash is re-run through its postcondition check, which skips
//! the write if it already landed: no step ever acts twice (an undo repeated would toggle back).

use super::objects::pointer_token;
use super::plan::{ActionPlan, Step};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const ROLLBACK_ID: &str = "backout.dev/rollback-id";
/// Comma-separated keys of completed steps, in plan order.
pub const STEPS_DONE: &str = "backout.dev/rollback-steps";
/// Key of the step being executed (empty when between steps).
pub const STEP_STARTED: &str = "backout.dev/rollback-step-started";
pub const STATE: &str = "backout.dev/rollback-state";
/// Written by the daemon on the stable Deployment when it passed its bake: the revision a
/// rollback returns to. `backout rollback` reads it when `--to-revision` is not given.
pub const LAST_KNOWN_GOOD: &str = "backout.dev/last-known-good-revision";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Completed,
    /// Verification failed or a step ran out of retries: a human must look (escalate).
    Failed,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "completed" => RunState::Completed,
            "failed" => RunState::Failed,
            _ => RunState::Running,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub id: String,
    pub done: Vec<String>,
    pub started: Option<String>,
    pub state: RunState,
}

impl Progress {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.into(),
            done: Vec::new(),
            started: None,
            state: RunState::Running,
        }
    }

    pub fn from_annotations(a: &BTreeMap<String, String>) -> Option<Self> {
        let id = a.get(ROLLBACK_ID)?.clone();
        let done = a
            .get(STEPS_DONE)
            .map(|s| {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let started = a.get(STEP_STARTED).filter(|s| !s.is_empty()).cloned();
        let state = a
            .get(STATE)
            .map(|s| RunState::parse(s))
            .unwrap_or(RunState::Running);
        Some(Self {
            id,
            done,
            started,
            state,
        })
    }

    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ROLLBACK_ID.into(), self.id.clone()),
            (STEPS_DONE.into(), self.done.join(",")),
            (
                STEP_STARTED.into(),
                self.started.clone().unwrap_or_default(),
            ),
            (STATE.into(), self.state.as_str().into()),
        ])
    }

    pub fn is_done(&self, step: &Step) -> bool {
        self.done.contains(&step.key())
    }

    /// The first step of the plan not yet recorded as done.
    pub fn next<'a>(&self, plan: &'a ActionPlan) -> Option<&'a Step> {
        plan.steps.iter().find(|s| !self.is_done(s))
    }

    pub fn started(&self, step: &Step) -> Self {
        let mut next = self.clone();
        next.started = Some(step.key());
        next
    }

    pub fn completed(&self, step: &Step) -> Self {
        let mut next = self.clone();
        if !next.is_done(step) {
            next.done.push(step.key());
        }
        next.started = None;
        next
    }

    pub fn finished(&self, state: RunState) -> Self {
        let mut next = self.clone();
        next.state = state;
        next.started = None;
        next
    }
}

/// The JSON patch moving the recorded progress from `old` to `new`: `test` every old value (the
/// ConfigMap was created with all four keys), then replace.
pub fn transition_patch(old: &Progress, new: &Progress) -> Value {
    let old_a = old.to_annotations();
    let new_a = new.to_annotations();
    let mut ops = Vec::new();
    for (k, v) in &old_a {
        ops.push(json!({"op": "test", "path": format!("/metadata/annotations/{}", pointer_token(k)), "value": v}));
    }
    for (k, v) in &new_a {
        if old_a.get(k) != Some(v) {
            ops.push(json!({"op": "replace", "path": format!("/metadata/annotations/{}", pointer_token(k)), "value": v}));
        }
    }
    Value::Array(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(doc: &Value, patch: &Value) -> Result<Value, json_patch::PatchError> {
        let mut d = doc.clone();
        let p: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
        json_patch::patch(&mut d, &p).map(|_| d)
    }

    #[test]
    fn progress_round_trips_through_annotations_and_guards_against_a_second_writer() {
        let p0 = Progress::new("abc");
        let p1 = p0.started(&Step::RouteAllToStable);
        let p2 = p1.completed(&Step::RouteAllToStable);
        let p3 = p2
            .completed(&Step::ScaleCanaryToZero)
            .finished(RunState::Completed);
        let back = Progress::from_annotations(&p3.to_annotations()).unwrap();
        assert_eq!(back, p3);
        assert_eq!(back.done, ["route_all_to_stable", "scale_canary_to_zero"]);

        let cm = json!({"metadata": {"annotations": p0.to_annotations()}});
        let cm1 = apply(&cm, &transition_patch(&p0, &p1)).unwrap();
        let read = |v: &Value| {
            let a: BTreeMap<String, String> =
                serde_json::from_value(v["metadata"]["annotations"].clone()).unwrap();
            Progress::from_annotations(&a).unwrap()
        };
        assert_eq!(read(&cm1), p1);
        // A writer holding the stale record cannot overwrite the newer one.
        assert!(apply(&cm1, &transition_patch(&p0, &p1.completed(&Step::Verify))).is_err());
    }

    #[test]
    fn completing_a_step_twice_records_it_once() {
        let p = Progress::new("x")
            .completed(&Step::PauseStable)
            .completed(&Step::PauseStable);
        assert_eq!(p.done, ["pause_stable"]);
    }
}
