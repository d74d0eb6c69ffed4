//! The cluster objects a rollback reads, as plain JSON, and the few facts the plan needs from them.
//!
//! JSON rather than typed structs because the steps are JSON patches: the paths the plan checks are
//! exactly the paths it patches, and VirtualServices and HTTPRoutes (CRDs) have no typed model anyway.

use serde_json::Value;

/// A snapshot of everything one rollback looks at. Re-read before every step attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub stable: Value,
    pub canary: Value,
    /// ReplicaSets controlled by the stable Deployment.
    pub stable_replica_sets: Vec<Value>,
    /// The object carrying the traffic split (VirtualService or HTTPRoute); `Null` in `replicas`
    /// mode, which has none.
    pub router: Value,
    /// HPAs in the namespace (the plan picks those targeting the stable or the canary).
    pub hpas: Vec<Value>,
}

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

pub fn name(obj: &Value) -> String {
    str_at(obj, "/metadata/name")
        .unwrap_or_default()
        .to_string()
}

pub fn str_at<'a>(obj: &'a Value, ptr: &str) -> Option<&'a str> {
    obj.pointer(ptr).and_then(Value::as_str)
}

pub fn i64_at(obj: &Value, ptr: &str) -> Option<i64> {
    obj.pointer(ptr).and_then(Value::as_i64)
}

pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// Revision number recorded by the deployment controller on a Deployment or ReplicaSet.
pub fn revision(obj: &Value) -> Option<i64> {
    annotation(obj, REVISION).and_then(|r| r.parse().ok())
}

pub fn is_paused(deploy: &Value) -> bool {
    obj_bool(deploy, "/spec/paused")
}

fn obj_bool(obj: &Value, ptr: &str) -> bool {
    obj.pointer(ptr).and_then(Value::as_bool).unwrap_or(false)
}

/// `kubectl rollout status` semantics: the controller saw the latest spec, every replica runs the
/// new template, no old replica is left, and the new ones are available.
pub fn rollout_complete(deploy: &Value) -> bool {
    let generation = i64_at(deploy, "/metadata/generation").unwrap_or(0);
    let observed = i64_at(deploy, "/status/observedGeneration").unwrap_or(0);
    let want = i64_at(deploy, "/spec/replicas").unwrap_or(1);
    let updated = i64_at(deploy, "/status/updatedReplicas").unwrap_or(0);
    let total = i64_at(deploy, "/status/replicas").unwrap_or(0);
    let available = i64_at(deploy, "/status/availableReplicas").unwrap_or(0);
    observed >= generation && updated >= want && total <= updated && available >= updated
}

/// The canary's share of the traffic when both tracks sit behind one Service without a router
/// (`kind = "replicas"`): its share of the ready replicas. `None` when neither has a ready one.
pub fn replica_share(stable: &Value, canary: &Value) -> Option<f64> {
    let ready = |d: &Value| i64_at(d, "/status/readyReplicas").unwrap_or(0).max(0) as f64;
    let (s, c) = (ready(stable), ready(canary));
    (s + c > 0.0).then(|| c / (s + c))
}

/// Whether an HPA scales the named Deployment.
pub fn hpa_targets(hpa: &Value, deployment: &str) -> bool {
    str_at(hpa, "/spec/scaleTargetRef/kind") == Some("Deployment")
        && str_at(hpa, "/spec/scaleTargetRef/name") == Some(deployment)
}

pub fn hpa_targeting<'a>(hpas: &'a [Value], deployment: &str) -> Option<&'a Value> {
    hpas.iter().find(|h| hpa_targets(h, deployment))
}

pub fn hpas_targeting<'a>(hpas: &'a [Value], deployment: &str) -> Vec<&'a Value> {
    hpas.iter().filter(|h| hpa_targets(h, deployment)).collect()
}

/// Whether `rs` is controlled by `deploy` (controller ownerReference with the Deployment's uid).
pub fn controlled_by(rs: &Value, deploy: &Value) -> bool {
    let uid = str_at(deploy, "/metadata/uid");
    let name = str_at(deploy, "/metadata/name");
    rs.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("controller").and_then(Value::as_bool) == Some(true)
                    && r.get("kind").and_then(Value::as_str) == Some("Deployment")
                    && r.get("name").and_then(Value::as_str) == name
                    && (uid.is_none() || r.get("uid").and_then(Value::as_str) == uid)
            })
        })
}

/// JSON pointer token escaping (RFC 6901) for annotation keys such as `backout.dev/rollback-id`.
pub fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A copy fit for a backup: no managedFields (noise, and rejected on re-create).
pub fn for_backup(obj: &Value) -> Value {
    let mut copy = obj.clone();
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    copy
}
