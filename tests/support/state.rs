//! Comparable end state of a fake cluster: what a user would check after a rollback.

use super::FakeKube;
use serde_json::{json, Value};

/// Specs and the annotations that matter, without resourceVersions and uids.
pub fn end_state(fake: &FakeKube) -> Value {
    let deployments: Vec<Value> = fake
        .list("deployments")
        .iter()
        .map(|d| json!({"name": d["metadata"]["name"], "annotations": d["metadata"]["annotations"], "spec": d["spec"]}))
        .collect();
    let replica_sets: Vec<Value> = fake
        .list("replicasets")
        .iter()
        .map(|r| json!({"name": r["metadata"]["name"], "annotations": r["metadata"]["annotations"], "replicas": r["spec"]["replicas"]}))
        .collect();
    let hpas: Vec<Value> = fake
        .list("horizontalpodautoscalers")
        .iter()
        .map(|h| json!({"name": h["metadata"]["name"], "spec": h["spec"]}))
        .collect();
    let backups: Vec<Value> = fake
        .list("configmaps")
        .iter()
        .map(|c| json!({"name": c["metadata"]["name"], "annotations": c["metadata"]["annotations"], "data": c["data"]}))
        .collect();
    json!({
        "deployments": deployments,
        "replica_sets": replica_sets,
        "hpas": hpas,
        "virtual_service": fake.get("virtualservices", "web").map(|v| v["spec"].clone()),
        "backups": backups,
    })
}

/// Highest revision among the stable's ReplicaSets: one undo makes it 4 in the default scenario;
/// a repeated undo would make it 5 (and toggle the template back).
pub fn max_stable_revision(fake: &FakeKube) -> i64 {
    fake.list("replicasets")
        .iter()
        .filter(|rs| rs["metadata"]["ownerReferences"][0]["name"] == "web")
        .filter_map(|rs| {
            rs.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                .and_then(Value::as_str)
                .and_then(|r| r.parse().ok())
        })
        .max()
        .unwrap_or(0)
}
