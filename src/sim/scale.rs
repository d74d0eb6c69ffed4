//! The `scale` subresource: an `autoscaling/v1` Scale view over `spec.replicas`, which is what
//! `kubectl scale` and HPAs read and write.

use super::api::{Reply, Target, WriteOpts};
use super::objects::prepare_update;
use super::patch::{self, PatchFailure, PatchKind};
use super::selector::match_labels_string;
use super::status::ApiError;
use super::store::Store;
use serde_json::{json, Value};

/// The Scale object for a Deployment or ReplicaSet.
pub fn view(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": match_labels_string(obj.pointer("/spec/selector").unwrap_or(&Value::Null)),
        }
    })
}

fn name(t: &Target) -> &str {
    t.name.as_deref().unwrap_or_default()
}

pub fn get(store: &Store, t: &Target) -> Reply {
    store.read(|txn| {
        let obj = txn
            .get(&t.key(name(t)))
            .ok_or_else(|| ApiError::not_found(t.def, name(t)))?;
        Ok((200, view(obj)))
    })
}

/// PUT (`patch == None`, `body` is a Scale) or PATCH of the Scale.
pub fn write(
    store: &Store,
    t: &Target,
    patch_kind: Option<PatchKind>,
    body: &[u8],
    opts: WriteOpts,
) -> Reply {
    store.write(|txn| {
        let key = t.key(name(t));
        let old = txn
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(t.def, name(t)))?;
        let current = view(&old);
        let scale: Value = match patch_kind {
            None => {
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?
            }
            Some(kind) => patch::apply(&current, kind, body).map_err(|f| match f {
                PatchFailure::Malformed(m) => ApiError::bad_request(m),
                PatchFailure::NotApplicable(m) => ApiError::unprocessable(m),
            })?,
        };
        let sent = scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !sent.is_empty()
            && Some(sent)
                != current
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(t.def, name(t)));
        }
        let Some(replicas) = scale.pointer("/spec/replicas").and_then(Value::as_i64) else {
            return Err(ApiError::invalid(
                t.def,
                name(t),
                "spec.replicas",
                "Required value",
            ));
        };
        if replicas < 0 {
            return Err(ApiError::invalid(
                t.def,
                name(t),
                "spec.replicas",
                &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        let main = Target {
            sub: None,
            ..t.clone()
        };
        let next = prepare_update(main.def, &main.version, &old, new, None)?;
        let stored = if opts.dry_run {
            next
        } else {
            txn.put(key, next)
        };
        Ok((200, view(&stored)))
    })
}
