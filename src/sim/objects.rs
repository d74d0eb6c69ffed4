//! Object lifecycle rules of the apiserver, as pure functions: what create fills in (uid,
//! timestamps, generation, API defaults), what update keeps (identity, status vs spec split),
//! when `metadata.generation` moves, and the validation that answers 422.

use super::resources::{ResourceDef, Subresource};
use super::selector::label_selector_matches;
use super::status::ApiError;
use serde_json::{json, Map, Value};

/// Values the shell supplies so this module stays pure.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// RFC 3339 time, seconds precision (`2026-11-23T09:00:00Z`).
    pub now: String,
    pub uid: String,
    /// Suffix for `generateName`.
    pub suffix: String,
}

fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj.as_object_mut()?.insert("metadata".into(), json!({}));
    }
    obj.get_mut("metadata").and_then(Value::as_object_mut)
}

pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Checks `apiVersion`/`kind` of a request body against the URL (filling them when absent).
fn check_type(def: &ResourceDef, version: &str, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let want_av = def.api_version(version);
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != def.kind => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({want_av}) or kind {k} is not {}",
                map.get("apiVersion").and_then(Value::as_str).unwrap_or_default(),
                def.kind
            )))
        }
        _ => {}
    }
    if let Some(av) = map.get("apiVersion").and_then(Value::as_str) {
        let same_group = def.versions.iter().any(|v| def.api_version(v) == av);
        if !same_group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    map.insert("apiVersion".into(), json!(want_av));
    map.insert("kind".into(), json!(def.kind));
    Ok(())
}

/// Drops `null` fields: the apiserver decodes into typed structs (or prunes CRDs), so a client
/// sending `creationTimestamp: null` (kubectl's undo does) stores the same object as one that
/// leaves it out.
pub fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Builds the object a POST stores.
pub fn prepare_create(
    def: &ResourceDef,
    version: &str,
    namespace: &str,
    mut obj: Value,
    stamp: &Stamp,
) -> Result<Value, ApiError> {
    check_type(def, version, &mut obj)?;
    drop_nulls(&mut obj);
    let Some(meta) = meta_mut(&mut obj) else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    if meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty()
    {
        match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => {
                let name = format!("{prefix}{}", stamp.suffix);
                meta.insert("name".into(), json!(name));
            }
            _ => {
                return Err(ApiError::invalid(
                    def,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ))
            }
        }
    }
    if def.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {
                meta.insert("namespace".into(), json!(namespace));
            }
        }
    }
    meta.remove("resourceVersion");
    meta.insert("uid".into(), json!(stamp.uid));
    meta.insert("creationTimestamp".into(), json!(stamp.now));
    if def.generation {
        meta.insert("generation".into(), json!(1));
    }
    apply_defaults(def, &mut obj);
    if def.has(Subresource::Status) && !def.custom {
        // Built-in types start with an empty status; only the status subresource writes it.
        if let Some(map) = obj.as_object_mut() {
            map.insert("status".into(), json!({}));
        }
    }
    validate(def, &obj)?;
    Ok(obj)
}

/// Builds the object a PUT (or a patch, after applying it) stores, from the stored one.
pub fn prepare_update(
    def: &ResourceDef,
    version: &str,
    old: &Value,
    mut new: Value,
    sub: Option<Subresource>,
) -> Result<Value, ApiError> {
    check_type(def, version, &mut new)?;
    drop_nulls(&mut new);
    let name = name_of(old).to_string();
    if name_of(&new) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(&new)
        )));
    }
    let mut out = if sub == Some(Subresource::Status) {
        // The status endpoint changes status only.
        let mut o = old.clone();
        if let (Some(map), Some(st)) = (o.as_object_mut(), new.get("status")) {
            map.insert("status".into(), st.clone());
        }
        o
    } else {
        if def.has(Subresource::Status) {
            if let Some(map) = new.as_object_mut() {
                match old.get("status") {
                    Some(st) => map.insert("status".into(), st.clone()),
                    None => map.remove("status"),
                };
            }
        }
        new
    };
    // Identity fields are immutable.
    if let (Some(meta), Some(old_meta)) = (meta_mut(&mut out), old.get("metadata")) {
        for f in ["uid", "creationTimestamp", "namespace", "generation"] {
            match old_meta.get(f) {
                Some(v) => meta.insert(f.into(), v.clone()),
                None => meta.remove(f),
            };
        }
    }
    apply_defaults(def, &mut out);
    if def.generation && spec_changed(old, &out) {
        let gen = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if let Some(meta) = meta_mut(&mut out) {
            meta.insert("generation".into(), json!(gen + 1));
        }
    }
    validate(def, &out)?;
    Ok(out)
}

/// Anything but metadata and status counts as spec (CRD rule; for built-ins this is spec).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            for k in ["metadata", "status", "apiVersion", "kind"] {
                m.remove(k);
            }
        }
        v
    };
    strip(old) != strip(new)
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.into(), value);
    }
}

/// The API defaults kubectl shows back for the kinds whose defaults matter to rollouts.
pub fn apply_defaults(def: &ResourceDef, obj: &mut Value) {
    if !(def.is("apps", "deployments") || def.is("apps", "replicasets")) {
        return;
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    if def.is("apps", "deployments") {
        set_default(
            spec,
            "strategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        );
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
    }
    let Some(pod) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    set_default(pod, "restartPolicy", json!("Always"));
    set_default(pod, "terminationGracePeriodSeconds", json!(30));
    set_default(pod, "dnsPolicy", json!("ClusterFirst"));
    set_default(pod, "securityContext", json!({}));
    set_default(pod, "schedulerName", json!("default-scheduler"));
    if let Some(containers) = pod.get_mut("containers").and_then(Value::as_array_mut) {
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let last = image.rsplit('/').next().unwrap_or_default();
            let pull = if !last.contains(':') || last.ends_with(":latest") {
                "Always"
            } else {
                "IfNotPresent"
            };
            set_default(c, "imagePullPolicy", json!(pull));
            set_default(c, "resources", json!({}));
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
        }
    }
}

/// The validation subset that catches the mistakes clients make.
fn validate(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let name = name_of(obj);
    if def.is("apps", "deployments") || def.is("apps", "replicasets") {
        let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        let Some(selector) = spec.get("selector").filter(|s| s.is_object()) else {
            return Err(ApiError::invalid(
                def,
                name,
                "spec.selector",
                "Required value",
            ));
        };
        let labels = spec
            .pointer("/template/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        if !label_selector_matches(selector, &labels) {
            return Err(ApiError::invalid(
                def,
                name,
                "spec.template.metadata.labels",
                &format!("Invalid value: {labels}: `selector` does not match template `labels`"),
            ));
        }
        if spec.get("replicas").and_then(Value::as_i64).unwrap_or(0) < 0 {
            return Err(ApiError::invalid(
                def,
                name,
                "spec.replicas",
                "Invalid value: must be greater than or equal to 0",
            ));
        }
        let containers = spec
            .pointer("/template/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if containers.is_empty() {
            return Err(ApiError::invalid(
                def,
                name,
                "spec.template.spec.containers",
                "Required value",
            ));
        }
        for (i, c) in containers.iter().enumerate() {
            for f in ["name", "image"] {
                if c.get(f)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
                {
                    return Err(ApiError::invalid(
                        def,
                        name,
                        &format!("spec.template.spec.containers[{i}].{f}"),
                        "Required value",
                    ));
                }
            }
        }
    }
    if def.is("autoscaling", "horizontalpodautoscalers") {
        let max = obj.pointer("/spec/maxReplicas").and_then(Value::as_i64);
        if max.is_none_or(|m| m < 1) {
            return Err(ApiError::invalid(
                def,
                name,
                "spec.maxReplicas",
                "Invalid value: must be greater than or equal to 1",
            ));
        }
        if obj.pointer("/spec/scaleTargetRef/name").is_none() {
            return Err(ApiError::invalid(
                def,
                name,
                "spec.scaleTargetRef.name",
                "Required value",
            ));
        }
    }
    if def.is("gateway.networking.k8s.io", "httproutes") {
        http_route_weights(def, name, obj)?;
    }
    if def.is("networking.istio.io", "virtualservices") {
        let routes = obj.pointer("/spec/http").and_then(Value::as_array);
        for (i, r) in routes.into_iter().flatten().enumerate() {
            for (j, d) in r
                .get("route")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(w) = d.get("weight") {
                    if !w.as_i64().is_some_and(|w| (0..=100).contains(&w)) {
                        return Err(ApiError::invalid(
                            def,
                            name,
                            &format!("spec.http[{i}].route[{j}].weight"),
                            "Invalid value: must be an integer between 0 and 100",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The HTTPRoute CRD's schema on weights: `backendRefs[].weight` is an integer in
/// 0..=1,000,000 (a string or a negative weight is rejected with the field named).
fn http_route_weights(def: &ResourceDef, name: &str, obj: &Value) -> Result<(), ApiError> {
    let rules = obj.pointer("/spec/rules").and_then(Value::as_array);
    for (i, r) in rules.into_iter().flatten().enumerate() {
        let refs = r.get("backendRefs").and_then(Value::as_array);
        for (j, b) in refs.into_iter().flatten().enumerate() {
            if let Some(w) = b.get("weight") {
                if !w.as_i64().is_some_and(|w| (0..=1_000_000).contains(&w)) {
                    return Err(ApiError::invalid(
                        def,
                        name,
                        &format!("spec.rules[{i}].backendRefs[{j}].weight"),
                        "Invalid value: must be an integer between 0 and 1000000",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Relabels a stored object for the version the client asked for (VirtualService v1/v1beta1).
pub fn as_version(def: &ResourceDef, version: &str, mut obj: Value) -> Value {
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!(def.api_version(version)));
        map.insert("kind".into(), json!(def.kind));
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::resources::by_plural;

    fn stamp() -> Stamp {
        Stamp {
            now: "2026-11-23T09:00:00Z".into(),
            uid: "u-1".into(),
            suffix: "abcde".into(),
        }
    }

    fn deploy(image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": image}]}}}})
    }

    #[test]
    fn create_fills_identity_defaults_and_generation() {
        let def = by_plural("apps", "deployments").unwrap();
        let d = prepare_create(def, "v1", "prod", deploy("web:1"), &stamp()).unwrap();
        assert_eq!(d["metadata"]["namespace"], "prod");
        assert_eq!(d["metadata"]["uid"], "u-1");
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
    }

    #[test]
    fn spec_changes_bump_generation_but_metadata_and_status_do_not() {
        let def = by_plural("apps", "deployments").unwrap();
        let d = prepare_create(def, "v1", "prod", deploy("web:1"), &stamp()).unwrap();
        let mut labelled = d.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        labelled["status"] = json!({"replicas": 9});
        let same = prepare_update(def, "v1", &d, labelled, None).unwrap();
        assert_eq!(same["metadata"]["generation"], 1);
        assert_eq!(
            same["status"],
            json!({}),
            "status is ignored on the main endpoint"
        );
        let mut changed = d.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        assert_eq!(
            prepare_update(def, "v1", &d, changed, None).unwrap()["metadata"]["generation"],
            2
        );
    }

    #[test]
    fn selector_mismatch_is_invalid_with_the_field_named() {
        let def = by_plural("apps", "deployments").unwrap();
        let mut d = deploy("web:1");
        d["spec"]["selector"]["matchLabels"]["app"] = json!("api");
        let err = prepare_create(def, "v1", "prod", d, &stamp()).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("spec.template.metadata.labels"),
            "{}",
            err.message
        );
    }
}
