//! `kubectl rollout undo --to-revision=N`, reimplemented: kubectl does it client-side, so there is
//! no API to call. Semantics copied from kubectl's `DeploymentRollbacker` (polymorphichelpers):
//! find the ReplicaSet with that revision, skip when the Deployment's template already matches it
//! (ignoring `pod-template-hash`), otherwise JSON-patch `/spec/template` with the ReplicaSet's
//! template minus the hash label and `/metadata/annotations` with the ReplicaSet's annotations
//! (minus the controller's bookkeeping ones, which are kept from the Deployment).

use super::objects::{self, POD_TEMPLATE_HASH};
use super::plan::PlanError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// kubectl's `annotationsToSkip`: never copied from the ReplicaSet, kept from the Deployment.
pub const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// The template to return to, captured at plan time: after the undo the controller renumbers this
/// ReplicaSet's revision, so a resumed rollback must not look the revision up again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndoTarget {
    pub revision: i64,
    pub replica_set: String,
    /// The ReplicaSet's pod template without the `pod-template-hash` label.
    pub template: Value,
    /// The ReplicaSet's annotations (kubectl copies them onto the Deployment).
    pub annotations: BTreeMap<String, String>,
}

/// Find the stable's ReplicaSet with `revision` (as kubectl's `deploymentRevision`).
pub fn target_for_revision(
    deployment: &str,
    deploy: &Value,
    replica_sets: &[Value],
    revision: i64,
) -> Result<UndoTarget, PlanError> {
    let owned: Vec<&Value> = replica_sets
        .iter()
        .filter(|rs| objects::controlled_by(rs, deploy))
        .collect();
    let Some(rs) = owned
        .iter()
        .find(|rs| objects::revision(rs) == Some(revision))
    else {
        let mut available: Vec<i64> = owned
            .iter()
            .filter_map(|rs| objects::revision(rs))
            .collect();
        available.sort_unstable();
        return Err(PlanError::RevisionNotFound {
            deployment: deployment.into(),
            revision,
            available,
        });
    };
    let mut template =
        rs.pointer("/spec/template")
            .cloned()
            .ok_or_else(|| PlanError::Malformed {
                object: objects::name(rs),
                what: "spec.template",
                detail: "missing".into(),
            })?;
    strip_hash(&mut template);
    let annotations = rs
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(UndoTarget {
        revision,
        replica_set: objects::name(rs),
        template,
        annotations,
    })
}

fn strip_hash(template: &mut Value) {
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
}

/// kubectl's `EqualIgnoreHash`.
pub fn equal_ignore_hash(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            strip_hash(&mut a);
            strip_hash(&mut b);
            normalise_empty_labels(&mut a);
            normalise_empty_labels(&mut b);
            a == b
        }
        (None, None) => true,
        _ => false,
    }
}

fn normalise_empty_labels(t: &mut Value) {
    let empty = t
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty);
    if empty {
        if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("labels");
        }
    }
}

/// The Deployment annotations after the undo: the bookkeeping keys from the Deployment, every
/// other key from the ReplicaSet (kubectl replaces the whole map).
pub fn annotations_after_undo(deploy: &Value, target: &UndoTarget) -> Map<String, Value> {
    let mut out = Map::new();
    for key in ANNOTATIONS_TO_SKIP {
        if let Some(v) = objects::annotation(deploy, key) {
            out.insert(key.into(), Value::String(v.into()));
        }
    }
    for (k, v) in &target.annotations {
        if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
            out.insert(k.clone(), Value::String(v.clone()));
        }
    }
    out
}

/// kubectl's patch, plus a `test` of the resourceVersion we checked, so a concurrent change makes
/// the patch fail (and the step re-read) instead of undoing on stale facts.
pub fn undo_patch(deploy: &Value, target: &UndoTarget) -> Value {
    let rv = objects::str_at(deploy, "/metadata/resourceVersion").unwrap_or_default();
    json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/spec/template", "value": target.template},
        {"op": "add", "path": "/metadata/annotations", "value": annotations_after_undo(deploy, target)},
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::fixtures::Scenario;

    #[test]
    fn annotations_come_from_the_replica_set_except_the_controllers_bookkeeping() {
        let obs = Scenario::default().observed();
        let mut target =
            target_for_revision("web", &obs.stable, &obs.stable_replica_sets, 1).unwrap();
        target.annotations.insert("note".into(), "from-rs".into());
        let mut deploy = obs.stable.clone();
        deploy["metadata"]["annotations"]["only-on-deploy"] = "x".into();
        let a = annotations_after_undo(&deploy, &target);
        assert_eq!(
            a["deployment.kubernetes.io/revision"], "3",
            "kept from the Deployment"
        );
        assert_eq!(a["note"], "from-rs");
        assert!(
            !a.contains_key("only-on-deploy"),
            "kubectl replaces the whole map"
        );
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let obs = Scenario::default().observed();
        let rs3 = obs
            .stable_replica_sets
            .iter()
            .find(|r| objects::revision(r) == Some(3))
            .unwrap();
        assert!(equal_ignore_hash(
            obs.stable.pointer("/spec/template"),
            rs3.pointer("/spec/template")
        ));
        let rs2 = obs
            .stable_replica_sets
            .iter()
            .find(|r| objects::revision(r) == Some(2))
            .unwrap();
        assert!(!equal_ignore_hash(
            obs.stable.pointer("/spec/template"),
            rs2.pointer("/spec/template")
        ));
    }

    #[test]
    fn replica_sets_of_other_deployments_are_not_candidates() {
        let obs = Scenario::default().observed();
        let mut foreign = obs.stable_replica_sets[0].clone();
        foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else".into();
        foreign["metadata"]["annotations"][objects::REVISION] = "7".into();
        let err = target_for_revision("web", &obs.stable, &[foreign], 7).unwrap_err();
        assert!(err.to_string().contains("revision 7"));
    }
}
