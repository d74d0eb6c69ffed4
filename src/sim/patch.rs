//! The three patch formats of the apiserver (pure functions over JSON).
//!
//! Strategic merge patch is implemented for what kubectl and controllers send for the built-in
//! types we serve: lists merge by their Kubernetes merge key (containers by `name`, ports by
//! `containerPort`, ...), and the `$patch`, `$setElementOrder/`, `$retainKeys` and
//! `$deleteFromPrimitiveList/` directives are honoured. Custom resources never get here (415).

use serde_json::{Map, Value};

/// Which patch format a request carries (from its Content-Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or_default().trim();
        match ct {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Why a patch could not be applied: malformed (400) or not applicable (422).
#[derive(Debug, Clone, PartialEq)]
pub enum PatchFailure {
    Malformed(String),
    NotApplicable(String),
}

/// Applies `body` (raw request bytes) of kind `kind` to `doc`.
pub fn apply(doc: &Value, kind: PatchKind, body: &[u8]) -> Result<Value, PatchFailure> {
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| PatchFailure::Malformed(e.to_string()))?;
            let mut out = doc.clone();
            json_patch::patch(&mut out, &ops)
                .map_err(|e| PatchFailure::NotApplicable(e.to_string()))?;
            Ok(out)
        }
        PatchKind::Merge => {
            let p: Value = parse(body)?;
            let mut out = doc.clone();
            json_patch::merge(&mut out, &p);
            Ok(out)
        }
        PatchKind::Strategic => {
            let p: Value = parse(body)?;
            if !p.is_object() {
                return Err(PatchFailure::Malformed(
                    "strategic merge patch must be a JSON object".into(),
                ));
            }
            Ok(strategic(doc, &p))
        }
        PatchKind::Apply => Err(PatchFailure::Malformed(
            "server-side apply is not supported by the simulator".into(),
        )),
    }
}

fn parse(body: &[u8]) -> Result<Value, PatchFailure> {
    serde_json::from_slice(body).map_err(|e| PatchFailure::Malformed(e.to_string()))
}

/// The patch merge key of a list field, from the Kubernetes API types we serve.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "hostAliases" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Strategic merge of `patch` into `doc`.
pub fn strategic(doc: &Value, patch: &Value) -> Value {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => Value::Object(merge_map(d, p)),
        _ => patch.clone(),
    }
}

fn merge_map(doc: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut p = patch.clone();
            p.remove("$patch");
            return p;
        }
        Some("delete") => return Map::new(),
        _ => {}
    }
    let mut out = doc.clone();
    for (key, pv) in patch {
        if key.starts_with('$') {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (out.get_mut(field), pv) {
                list.retain(|v| !del.contains(v));
            }
            continue;
        }
        match pv {
            Value::Null => {
                out.remove(key);
            }
            Value::Object(pm) => {
                let merged = match out.get(key) {
                    Some(Value::Object(dm)) => merge_map(dm, pm),
                    _ => merge_map(&Map::new(), pm),
                };
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.remove(key);
                } else {
                    out.insert(key.clone(), Value::Object(merged));
                }
            }
            Value::Array(pl) => {
                let merged = match (merge_key(key), out.get(key)) {
                    (Some(mk), Some(Value::Array(dl))) => merge_list(dl, pl, mk),
                    (Some(mk), _) => merge_list(&[], pl, mk),
                    _ => pl.clone(),
                };
                out.insert(key.clone(), Value::Array(merged));
            }
            other => {
                out.insert(key.clone(), other.clone());
            }
        }
    }
    // Directives that need the merged result.
    for (key, pv) in patch {
        if let (Some(field), Value::Array(order)) = (key.strip_prefix("$setElementOrder/"), pv) {
            if let Some(Value::Array(list)) = out.get_mut(field) {
                reorder(list, order, merge_key(field));
            }
        }
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    out
}

fn merge_list(doc: &[Value], patch: &[Value], key: &str) -> Vec<Value> {
    let mut out: Vec<Value> = doc.to_vec();
    for item in patch {
        let Some(pm) = item.as_object() else {
            out.push(item.clone());
            continue;
        };
        let id = pm.get(key);
        let pos = out.iter().position(|d| d.get(key) == id && id.is_some());
        let delete = pm.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                let merged = match &out[i] {
                    Value::Object(dm) => merge_map(dm, pm),
                    _ => pm.clone(),
                };
                out[i] = Value::Object(merged);
            }
            (None, false) => out.push(Value::Object(merge_map(&Map::new(), pm))),
        }
    }
    out
}

/// `$setElementOrder`: items named in `order` come first in that order; others keep their place after.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let mut sorted = Vec::with_capacity(list.len());
    for o in order {
        let want = id(o);
        if let Some(i) = list.iter().position(|v| id(v) == want) {
            sorted.push(list.remove(i));
        }
    }
    sorted.append(list);
    *list = sorted;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "app", "image": "web:1", "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "proxy:1"}
        ]}}}})
    }

    #[test]
    fn strategic_merges_containers_by_name_like_kubectl_set_image() {
        let p = br#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"app"},{"name":"sidecar"}],"containers":[{"image":"web:2","name":"app"}]}}}}"#;
        let out = apply(&deploy(), PatchKind::Strategic, p).unwrap();
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "web:2");
        assert_eq!(c[0]["ports"][0]["containerPort"], 80);
        assert_eq!(c[1]["image"], "proxy:1");
    }

    #[test]
    fn strategic_delete_directive_removes_a_list_item() {
        let p = br#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#;
        let out = apply(&deploy(), PatchKind::Strategic, p).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn merge_patch_replaces_lists_whole() {
        let p =
            br#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"web:3"}]}}}}"#;
        let out = apply(&deploy(), PatchKind::Merge, p).unwrap();
        let c = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(c.len(), 1);
        assert!(c[0].get("ports").is_none());
    }

    #[test]
    fn json_patch_failed_test_is_not_applicable() {
        let p = br#"[{"op":"test","path":"/spec/replicas","value":3},{"op":"replace","path":"/spec/replicas","value":0}]"#;
        assert!(matches!(
            apply(&deploy(), PatchKind::Json, p),
            Err(PatchFailure::NotApplicable(_))
        ));
        let ok = br#"[{"op":"test","path":"/spec/replicas","value":2},{"op":"replace","path":"/spec/replicas","value":0}]"#;
        assert_eq!(
            apply(&deploy(), PatchKind::Json, ok).unwrap()["spec"]["replicas"],
            0
        );
    }

    #[test]
    fn malformed_patches_are_rejected_as_such() {
        assert!(matches!(
            apply(&deploy(), PatchKind::Json, b"{not json"),
            Err(PatchFailure::Malformed(_))
        ));
    }
}
