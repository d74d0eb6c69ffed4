//! Dry run's local model: apply a step's writes to the snapshot so later steps see earlier ones
//! (a dry-run undo after a dry-run pause must see the pause) and each write yields a diff.
//! Pure. The shell additionally sends each write with `dryRun=All` where the API supports it.

use super::objects::Observed;
use super::report::ObjectDiff;
use super::steps::{Mutation, Target};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("dry run: {what} on {target:?} would fail: {detail}")]
pub struct SimulateError {
    pub target: Target,
    pub what: &'static str,
    pub detail: String,
}

fn object_mut<'a>(obs: &'a mut Observed, target: &Target) -> Option<&'a mut Value> {
    match target {
        Target::Deployment(n) => {
            if super::objects::name(&obs.stable) == *n {
                Some(&mut obs.stable)
            } else if super::objects::name(&obs.canary) == *n {
                Some(&mut obs.canary)
            } else {
                None
            }
        }
        Target::VirtualService(_) | Target::HttpRoute(_) => Some(&mut obs.router),
        Target::Hpa(n) => obs.hpas.iter_mut().find(|h| super::objects::name(h) == *n),
    }
}

/// Apply one write to the snapshot; returns the object's diff.
pub fn apply(obs: &mut Observed, m: &Mutation) -> Result<ObjectDiff, SimulateError> {
    let target = m.target().clone();
    if let Mutation::Delete {
        target: Target::Hpa(n),
    } = m
    {
        let before = obs.hpas.len();
        obs.hpas.retain(|h| super::objects::name(h) != *n);
        return Ok(ObjectDiff {
            target,
            patch: serde_json::json!([{"op": "remove", "path": "", "deleted": before != obs.hpas.len()}]),
        });
    }
    let obj = object_mut(obs, &target).ok_or_else(|| SimulateError {
        target: target.clone(),
        what: "write",
        detail: "object not in the snapshot".into(),
    })?;
    let before = obj.clone();
    match m {
        Mutation::Patch { patch, .. } => {
            let p: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|e| SimulateError {
                    target: target.clone(),
                    what: "JSON patch",
                    detail: e.to_string(),
                })?;
            json_patch::patch(obj, &p).map_err(|e| SimulateError {
                target: target.clone(),
                what: "JSON patch",
                detail: e.to_string(),
            })?;
        }
        Mutation::Scale { replicas, .. } => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("replicas".into(), Value::from(*replicas));
            }
        }
        Mutation::Delete { .. } => {}
    }
    let diff = json_patch::diff(&before, obj);
    Ok(ObjectDiff {
        target,
        patch: serde_json::to_value(diff).unwrap_or(Value::Null),
    })
}
