//! The deployment controller's decisions, as pure functions: which ReplicaSet is "new" for the
//! current pod template, which revision it gets, how replicas move, and what the Deployment's
//! status says. The shell (controller.rs) runs them and writes the results.

use super::store::ObjKey;
use serde_json::{json, Map, Value};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const HASH_LABEL: &str = "pod-template-hash";

/// Annotations the controller never copies from a Deployment to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    REVISION,
    REVISION_HISTORY,
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// Fresh identity values for objects the controller creates.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub now: String,
    pub uid: String,
}

/// One write the controller wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Put(ObjKey, Value),
    Delete(ObjKey),
}

/// Sorted-key JSON text, so the hash does not depend on field order.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[*k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The pod template without the controller's own label (what "same template" compares).
pub fn bare_template(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    t
}

/// `pod-template-hash`: FNV-1a of the template, encoded with the apiserver's safe alphabet.
pub fn template_hash(template: &Value) -> String {
    let mut text = String::new();
    canonical(&bare_template(template), &mut text);
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char)
        .collect()
}

pub fn revision_of(obj: &Value) -> i64 {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn int_at(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// Whether `rs` is controlled by the Deployment with this uid.
pub fn owned_by(rs: &Value, uid: &str) -> bool {
    rs.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == uid && r["controller"] == true)
        })
}

fn rs_key(ns: &str, name: &str) -> ObjKey {
    ObjKey {
        group: "apps",
        plural: "replicasets",
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

fn copied_annotations(d: &Value) -> Map<String, Value> {
    d.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn new_replica_set(d: &Value, hash: &str, revision: i64, fresh: &Fresh) -> Value {
    let name = format!("{}-{hash}", str_at(d, "/metadata/name"));
    let mut template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut annotations = copied_annotations(d);
    annotations.insert(REVISION.into(), json!(revision.to_string()));
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": str_at(d, "/metadata/namespace"),
            "uid": fresh.uid,
            "creationTimestamp": fresh.now,
            "generation": 1,
            "labels": template["metadata"]["labels"],
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment",
                "name": str_at(d, "/metadata/name"), "uid": str_at(d, "/metadata/uid"),
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {"replicas": 0, "selector": selector, "template": template},
        "status": {"replicas": 0, "observedGeneration": 1}
    })
}

/// Sets `spec.replicas` (bumping generation) and optionally the "pods are up" status.
fn scaled(rs: &Value, replicas: i64, settle: bool) -> Value {
    let mut rs = rs.clone();
    if int_at(&rs, "/spec/replicas") != replicas {
        rs["spec"]["replicas"] = json!(replicas);
        rs["metadata"]["generation"] = json!(int_at(&rs, "/metadata/generation") + 1);
    }
    if settle {
        let gen = int_at(&rs, "/metadata/generation");
        let mut st = json!({"replicas": replicas, "observedGeneration": gen});
        if replicas > 0 {
            for f in ["fullyLabeledReplicas", "readyReplicas", "availableReplicas"] {
                st[f] = json!(replicas);
            }
        }
        rs["status"] = st;
    }
    rs
}

fn condition(
    old: &Value,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) -> Value {
    let prev = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind));
    if let Some(p) = prev {
        if p["status"] == status && p["reason"] == reason && p["message"] == message {
            return p.clone();
        }
    }
    let transition = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    json!({"type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": transition, "reason": reason, "message": message})
}

/// One pass of the controller for Deployment `d` with the cluster's ReplicaSets `all_rs`.
/// `settle` = the configured delay has passed: pods are "ready" and old ReplicaSets drained.
pub fn sync(d: &Value, all_rs: &[Value], settle: bool, fresh: &Fresh) -> Vec<Write> {
    let ns = str_at(d, "/metadata/namespace");
    let uid = str_at(d, "/metadata/uid");
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let desired = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let paused = d
        .pointer("/spec/paused")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut owned: Vec<Value> = all_rs
        .iter()
        .filter(|rs| owned_by(rs, uid))
        .cloned()
        .collect();
    let max_rev = owned.iter().map(revision_of).max().unwrap_or(0);
    let bare = bare_template(&template);
    let mut new_idx = owned
        .iter()
        .position(|rs| rs.pointer("/spec/template").map(bare_template).as_ref() == Some(&bare));
    if new_idx.is_none() && !paused {
        let hash = template_hash(&template);
        owned.push(new_replica_set(d, &hash, max_rev + 1, fresh));
        new_idx = Some(owned.len() - 1);
    }
    if let Some(i) = new_idx.filter(|_| !paused) {
        let rs = &mut owned[i];
        let rev = revision_of(rs);
        if rev < max_rev {
            // Rolling back to an old template reuses its ReplicaSet with the next revision.
            let mut history: Vec<String> = str_at(
                rs,
                &format!(
                    "/metadata/annotations/{}",
                    REVISION_HISTORY.replace('/', "~1")
                ),
            )
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
            history.push(rev.to_string());
            let mut ann = copied_annotations(d);
            ann.insert(REVISION.into(), json!((max_rev + 1).to_string()));
            ann.insert(REVISION_HISTORY.into(), json!(history.join(",")));
            rs["metadata"]["annotations"] = Value::Object(ann);
        }
    }
    // Replicas: the new ReplicaSet is asked for everything at once; old ones drain on settle.
    let new_name = new_idx.map(|i| str_at(&owned[i], "/metadata/name").to_string());
    for (i, rs) in owned.iter_mut().enumerate() {
        if Some(i) == new_idx {
            if !paused || settle {
                *rs = scaled(rs, desired, settle);
            }
        } else if settle && !paused {
            *rs = scaled(rs, 0, true);
        }
    }
    let mut writes: Vec<Write> = owned
        .iter()
        .filter(|rs| !all_rs.contains(rs))
        .map(|rs| Write::Put(rs_key(ns, str_at(rs, "/metadata/name")), rs.clone()))
        .collect();
    // Old, empty ReplicaSets beyond revisionHistoryLimit are deleted, oldest first.
    let limit = int_at(d, "/spec/revisionHistoryLimit").max(0) as usize;
    let mut old: Vec<&Value> = owned
        .iter()
        .filter(|rs| Some(str_at(rs, "/metadata/name")) != new_name.as_deref())
        .filter(|rs| int_at(rs, "/spec/replicas") == 0 && int_at(rs, "/status/replicas") == 0)
        .collect();
    old.sort_by_key(|rs| revision_of(rs));
    if d.pointer("/spec/revisionHistoryLimit").is_some() && old.len() > limit {
        for rs in &old[..old.len() - limit] {
            writes.push(Write::Delete(rs_key(ns, str_at(rs, "/metadata/name"))));
        }
    }
    writes.push(Write::Put(
        ObjKey {
            group: "apps",
            plural: "deployments",
            namespace: ns.to_string(),
            name: str_at(d, "/metadata/name").to_string(),
        },
        with_status(d, &owned, new_idx, desired, paused, &fresh.now),
    ));
    writes
}

fn with_status(
    d: &Value,
    owned: &[Value],
    new_idx: Option<usize>,
    desired: i64,
    paused: bool,
    now: &str,
) -> Value {
    let sum = |f: &str| {
        owned
            .iter()
            .map(|rs| int_at(rs, &format!("/status/{f}")))
            .sum::<i64>()
    };
    let (replicas, ready, available) = (
        sum("replicas"),
        sum("readyReplicas"),
        sum("availableReplicas"),
    );
    let new_rs = new_idx.map(|i| &owned[i]);
    let updated = new_rs.map(|rs| int_at(rs, "/status/replicas")).unwrap_or(0);
    let new_name = new_rs
        .map(|rs| str_at(rs, "/metadata/name"))
        .unwrap_or_default();
    let mut out = d.clone();
    if let Some(rs) = new_rs.filter(|_| !paused) {
        out["metadata"]["annotations"][REVISION] = json!(revision_of(rs).to_string());
    }
    let available_cond = if available >= desired || available > 0 {
        condition(
            d,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        )
    } else {
        condition(
            d,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
        )
    };
    let progressing = if paused {
        condition(
            d,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            now,
        )
    } else if updated == desired && replicas == desired && available == desired {
        condition(
            d,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            now,
        )
    } else {
        condition(
            d,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{new_name}\" is progressing."),
            now,
        )
    };
    let mut status = json!({
        "observedGeneration": int_at(d, "/metadata/generation"),
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "conditions": [available_cond, progressing],
    });
    if desired - available > 0 {
        status["unavailableReplicas"] = json!(desired - available);
    }
    for f in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        if status[f] == 0 {
            if let Some(m) = status.as_object_mut() {
                m.remove(f);
            }
        }
    }
    out["status"] = status;
    out
}

/// Whether nothing is left for the settle pass to do.
pub fn settled(d: &Value, all_rs: &[Value]) -> bool {
    let fresh = Fresh {
        now: String::new(),
        uid: String::new(),
    };
    let now_pass = sync(d, all_rs, false, &fresh);
    let settle_pass = sync(d, all_rs, true, &fresh);
    // Conditions carry timestamps; compare what matters.
    let strip = |ws: Vec<Write>| -> Vec<Write> {
        ws.into_iter()
            .map(|w| match w {
                Write::Put(k, mut v) => {
                    if let Some(st) = v.get_mut("status").and_then(Value::as_object_mut) {
                        st.remove("conditions");
                    }
                    Write::Put(k, v)
                }
                other => other,
            })
            .collect()
    };
    strip(now_pass) == strip(settle_pass)
}
