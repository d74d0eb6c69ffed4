//! A minimal OpenAPI v3 index. kubectl 1.32 downloads it before `create -f`/`apply` to learn
//! whether the server validates fields itself (the `fieldValidation` PATCH parameter); with
//! that answered yes, kubectl skips client-side schema validation, so no schemas are served.

use super::resources::RESOURCES;
use serde_json::{json, Map, Value};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per served group/version.
pub fn root() -> Value {
    let mut paths = Map::new();
    for r in RESOURCES {
        for v in r.versions {
            let p = gv_path(r.group, v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0")}),
            );
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<gv>`: PATCH operations tagged with their kind and the `fieldValidation`
/// parameter; `None` for an unknown group/version.
pub fn group_version(path: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in RESOURCES {
        for v in r.versions.iter().filter(|v| gv_path(r.group, v) == path) {
            let base = if r.namespaced {
                format!("/{path}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
            } else {
                format!("/{path}/{}/{{name}}", r.plural)
            };
            paths.insert(
                base,
                json!({"patch": {
                    "x-kubernetes-group-version-kind": {"group": r.group, "version": v, "kind": r.kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}],
                    "responses": {"200": {"description": "OK"}}
                }}),
            );
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (backout simulator)", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}
