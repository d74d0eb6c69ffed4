//! Namespaces: every namespace exists (the simulator accepts objects in any namespace), so
//! reads synthesise an `Active` Namespace; explicit creates are stored like any object.

use super::api::{self, Reply, Target, WriteOpts};
use super::objects::Stamp;
use super::selector::Selector;
use super::status::ApiError;
use axum::http::Method;
use serde_json::{json, Value};
use std::collections::HashSet;

fn synthetic(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

pub fn serve(
    store: &super::store::Store,
    method: &Method,
    t: &Target,
    body: &[u8],
    stamp: &Stamp,
) -> Reply {
    let all = Selector::default();
    match (method, &t.name) {
        (&Method::GET, Some(name)) => match api::get(store, t) {
            Ok(found) => Ok(found),
            Err(_) => Ok((200, synthetic(name))),
        },
        (&Method::GET, None) => {
            let (stored, rv) = api::select(store, t, &all, &all);
            let mut names: Vec<String> = store.read(|txn| txn.namespaces());
            names.push("default".into());
            let mut have: HashSet<String> = stored
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            let mut items = stored;
            for n in names {
                if have.insert(n.clone()) {
                    items.push(synthetic(&n));
                }
            }
            Ok((
                200,
                json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
            ))
        }
        (&Method::POST, None) => {
            let v: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut created = api::create(store, t, v, stamp, WriteOpts::default())?;
            created.1["status"] = json!({"phase": "Active"});
            Ok(created)
        }
        (&Method::DELETE, Some(_)) => api::delete(store, t, WriteOpts::default(), false),
        _ => Err(ApiError::method_not_allowed()),
    }
}
