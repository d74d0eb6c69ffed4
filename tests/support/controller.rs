//! The fake's deployment controller: what kube-controller-manager does to a Deployment's
//! ReplicaSets and status when its template changes, done instantly.

use super::{strip_hash, State};
use backout::actuator::fixtures::template_hash;
use serde_json::{json, Value};

const SKIP: [&str; 5] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
];

/// The deployment controller, done instantly: find or create the ReplicaSet of the current
/// template, give it the next revision if it is not the newest, scale the others to 0.
pub(super) fn reconcile(s: &mut State, ns: &str, name: &str) {
    if s.frozen.contains(name) {
        return;
    }
    let dkey = ("deployments".to_string(), ns.to_string(), name.to_string());
    let Some(mut d) = s.objects.get(&dkey).cloned() else {
        return;
    };
    let generation = d
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let replicas = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        d["status"]["observedGeneration"] = generation;
        s.objects.insert(dkey, d);
        return;
    }
    let uid = d.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let template = strip_hash(d.pointer("/spec/template").unwrap_or(&Value::Null));
    let owned: Vec<(String, Value)> = s
        .objects
        .iter()
        .filter(|((p, n, _), v)| {
            p == "replicasets"
                && n == ns
                && v.pointer("/metadata/ownerReferences/0/uid") == Some(&uid)
        })
        .map(|((_, _, n), v)| (n.clone(), v.clone()))
        .collect();
    let rev = |v: &Value| {
        v.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
            .and_then(Value::as_str)
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let max_rev = owned.iter().map(|(_, v)| rev(v)).max().unwrap_or(0);
    let matching = owned
        .iter()
        .find(|(_, v)| strip_hash(v.pointer("/spec/template").unwrap_or(&Value::Null)) == template);
    let mut annotations: serde_json::Map<String, Value> = d
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.retain(|k, _| !SKIP.contains(&k.as_str()));
    let (new_name, new_rev) = match matching {
        Some((n, v)) if rev(v) == max_rev => (n.clone(), max_rev),
        Some((n, v)) => {
            let mut v = v.clone();
            let mut a = annotations.clone();
            a.insert(
                "deployment.kubernetes.io/revision".into(),
                json!((max_rev + 1).to_string()),
            );
            a.insert(
                "deployment.kubernetes.io/revision-history".into(),
                json!(rev(&v).to_string()),
            );
            v["metadata"]["annotations"] = Value::Object(a);
            s.objects
                .insert(("replicasets".into(), ns.into(), n.clone()), v);
            (n.clone(), max_rev + 1)
        }
        None => {
            let hash = template_hash(&template);
            let n = format!("{name}-{hash}");
            let mut t = template.clone();
            t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut a = annotations.clone();
            a.insert(
                "deployment.kubernetes.io/revision".into(),
                json!((max_rev + 1).to_string()),
            );
            let mut labels = t.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
            labels["pod-template-hash"] = json!(hash);
            s.rv += 1;
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": n, "namespace": ns, "uid": format!("uid-rs-{n}"), "resourceVersion": s.rv.to_string(),
                              "labels": labels, "annotations": a,
                              "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": t},
                "status": {"replicas": 0}
            });
            s.objects
                .insert(("replicasets".into(), ns.into(), n.clone()), rs);
            (n, max_rev + 1)
        }
    };
    let rs_names: Vec<String> = s
        .objects
        .iter()
        .filter(|((p, n, _), v)| {
            p == "replicasets"
                && n == ns
                && v.pointer("/metadata/ownerReferences/0/uid") == Some(&uid)
        })
        .map(|((_, _, n), _)| n.clone())
        .collect();
    for n in rs_names {
        if let Some(rs) = s
            .objects
            .get_mut(&("replicasets".into(), ns.into(), n.clone()))
        {
            let r = if n == new_name { replicas } else { 0 };
            rs["spec"]["replicas"] = json!(r);
            rs["status"]["replicas"] = json!(r);
        }
    }
    d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!(new_rev.to_string());
    d["status"] = json!({"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                         "readyReplicas": replicas, "availableReplicas": replicas});
    s.objects.insert(dkey, d);
}
