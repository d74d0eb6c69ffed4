//! HTTP front: turns a request into a discovery answer or a verb on a resource, with faults
//! applied first. One fallback handler parses the path itself, because apiserver URLs
//! (`/api/v1/...` vs `/apis/<group>/<version>/...`, optional namespace, subresources) are
//! easier to get exactly right by hand than with a route table.

use super::api::{self, Reply, Target, WriteOpts};
use super::discovery;
use super::objects::Stamp;
use super::openapi;
use super::resources::{self, Subresource};
use super::scale;
use super::selector::Selector;
use super::status::ApiError;
use super::table;
use super::watch::{self, WatchRequest};
use super::Shared;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(super::intake::handle)
        .with_state(shared)
}

pub(super) fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn reply(r: Reply) -> Response {
    match r {
        Ok((code, body)) => json_response(code, &body),
        Err(e) => json_response(e.code, &e.body()),
    }
}

/// A response whose body fails at once: hyper aborts the connection, the client sees it cut.
pub(super) fn dropped() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other(
            "connection dropped by fault injection",
        ))
    });
    Response::new(Body::from_stream(failing))
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

enum Route {
    Json(Value),
    Resource(Target),
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let nf = || ApiError::no_route(&format!("/{}", rest.join("/")));
    let target = |plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        let def = resources::lookup(group, version, plural).ok_or_else(nf)?;
        if def.namespaced != ns.is_some() && name.is_some() {
            return Err(nf());
        }
        let sub = match sub {
            None => None,
            Some("scale") if def.has(Subresource::Scale) => Some(Subresource::Scale),
            Some("status") if def.has(Subresource::Status) => Some(Subresource::Status),
            Some(_) => return Err(nf()),
        };
        Ok(Route::Resource(Target {
            def,
            version: version.to_string(),
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
            sub,
        }))
    };
    match rest {
        ["namespaces", ns, plural, more @ ..] => match more {
            [] => target(plural, Some(ns), None, None),
            [name] => target(plural, Some(ns), Some(name), None),
            [name, sub] => target(plural, Some(ns), Some(name), Some(sub)),
            _ => Err(nf()),
        },
        [plural] => target(plural, None, None, None),
        [plural, name] => target(plural, None, Some(name), None),
        [plural, name, sub] => target(plural, None, Some(name), Some(sub)),
        _ => Err(nf()),
    }
}

fn route(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let nf = || ApiError::no_route(path);
    match segs.as_slice() {
        ["version"] => Ok(Route::Json(discovery::version())),
        ["api"] => Ok(Route::Json(discovery::core_versions())),
        ["api", v] => discovery::resource_list("", v)
            .map(Route::Json)
            .ok_or_else(nf),
        ["apis"] => Ok(Route::Json(discovery::group_list())),
        ["apis", g] => discovery::group(g).map(Route::Json).ok_or_else(nf),
        ["apis", g, v] => discovery::resource_list(g, v)
            .map(Route::Json)
            .ok_or_else(nf),
        ["openapi", "v3"] => Ok(Route::Json(openapi::root())),
        ["openapi", "v3", rest @ ..] => openapi::group_version(&rest.join("/"))
            .map(Route::Json)
            .ok_or_else(nf),
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Err(nf()),
    }
}

fn selectors(q: &HashMap<String, String>) -> Result<(Selector, Selector), ApiError> {
    let parse = |k: &str| {
        Selector::parse(q.get(k).map(String::as_str).unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))
    };
    Ok((parse("labelSelector")?, parse("fieldSelector")?))
}

fn stamp() -> Stamp {
    let uid = super::controller::new_uid();
    let suffix: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    Stamp {
        now: super::controller::now_rfc3339(),
        uid,
        suffix,
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid JSON (YAML is not accepted by the simulator): {e}"
        ))
    })
}

/// A list, or a watch stream when `watch=1` (selectors apply to both).
fn list_or_watch(
    shared: &Shared,
    target: Target,
    q: &HashMap<String, String>,
    accept: &str,
) -> Response {
    let store = &shared.store;
    let (labels, fields) = match selectors(q) {
        Ok(s) => s,
        Err(e) => return reply(Err(e)),
    };
    let watching = q.get("watch").is_some_and(|v| v == "1" || v == "true");
    if watching {
        let req = WatchRequest {
            target,
            labels,
            fields,
            resource_version: q.get("resourceVersion").and_then(|v| v.parse().ok()),
            send_initial_events: q.get("sendInitialEvents").is_some_and(|v| v == "true"),
            allow_bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
            timeout: Duration::from_secs(
                q.get("timeoutSeconds")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1800),
            ),
        };
        let s = watch::stream(store, req, shared.shutdown.clone());
        return (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(s),
        )
            .into_response();
    }
    let listed = api::list(store, &target, &labels, &fields);
    match listed {
        Ok((code, list)) if table::wanted(accept) => {
            json_response(code, &table::from_list(target.def, &list))
        }
        other => reply(other),
    }
}

/// `dryRun=All` in the query, or in the DeleteOptions body kube sends with a DELETE.
pub(super) fn is_dry_run(uri: &Uri, body: &Bytes) -> bool {
    let all = |v: &Value| v == "All" || v.as_array().is_some_and(|a| a.iter().any(|x| x == "All"));
    query(uri).get("dryRun").is_some_and(|v| v == "All")
        || (!body.is_empty() && parse_body(body).is_ok_and(|b| all(&b["dryRun"])))
}

/// The 409 a Conflict fault answers: named after the object when the path is one.
pub(super) fn injected_conflict(path: &str) -> ApiError {
    match route(path) {
        Ok(Route::Resource(t)) => ApiError::conflict(t.def, t.name.as_deref().unwrap_or_default()),
        _ => ApiError {
            code: 409,
            reason: "Conflict",
            message: "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again".into(),
            details: None,
        },
    }
}

/// Serves one request as the apiserver would (faults are applied before, in `intake`).
pub(super) fn serve(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let routed = route(uri.path());
    let target = match routed {
        Ok(Route::Json(v)) if method == Method::GET => return json_response(200, &v),
        Ok(Route::Json(_)) => return reply(Err(ApiError::method_not_allowed())),
        Ok(Route::Resource(t)) => t,
        Err(e) => return reply(Err(e)),
    };
    let q = query(uri);
    let opts = WriteOpts {
        dry_run: is_dry_run(uri, body),
    };
    if target.def.is("", "namespaces") {
        return reply(super::namespaces::serve(
            &shared.store,
            method,
            &target,
            body,
            &stamp(),
        ));
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let store = &shared.store;
    let has_name = target.name.is_some();
    match (method, has_name, target.sub) {
        (&Method::GET, false, _) => list_or_watch(shared, target, &q, accept),
        (&Method::GET, true, Some(Subresource::Scale)) => reply(scale::get(store, &target)),
        (&Method::GET, true, _) => match api::get(store, &target) {
            Ok((code, obj)) if table::wanted(accept) && target.sub.is_none() => {
                let list = json!({"items": [obj], "metadata": {}});
                json_response(code, &table::from_list(target.def, &list))
            }
            other => reply(other),
        },
        (&Method::POST, false, None) => match parse_body(body) {
            Ok(v) => reply(api::create(store, &target, v, &stamp(), opts)),
            Err(e) => reply(Err(e)),
        },
        (&Method::PUT, true, Some(Subresource::Scale)) => {
            reply(scale::write(store, &target, None, body, opts))
        }
        (&Method::PUT, true, _) => match parse_body(body) {
            Ok(v) => reply(api::replace(store, &target, v, opts)),
            Err(e) => reply(Err(e)),
        },
        (&Method::PATCH, true, sub) => match api::patch_kind(target.def, content_type) {
            Ok(kind) if sub == Some(Subresource::Scale) => {
                reply(scale::write(store, &target, Some(kind), body, opts))
            }
            Ok(kind) => reply(api::patch(store, &target, kind, body, opts)),
            Err(e) => reply(Err(e)),
        },
        (&Method::DELETE, true, None) => {
            let orphan = q.get("propagationPolicy").is_some_and(|p| p == "Orphan")
                || parse_body(body).is_ok_and(|b| b["propagationPolicy"] == "Orphan");
            reply(api::delete(store, &target, opts, !orphan))
        }
        _ => reply(Err(ApiError::method_not_allowed())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_like_the_apiserver() {
        let r = |p: &str| match route(p) {
            Ok(Route::Resource(t)) => Some((t.def.plural, t.namespace, t.name, t.sub)),
            _ => None,
        };
        assert_eq!(
            r("/apis/apps/v1/namespaces/prod/deployments/web/scale"),
            Some((
                "deployments",
                Some("prod".into()),
                Some("web".into()),
                Some(Subresource::Scale)
            ))
        );
        assert_eq!(
            r("/apis/apps/v1/deployments"),
            Some(("deployments", None, None, None))
        );
        assert_eq!(
            r("/apis/networking.istio.io/v1beta1/namespaces/a/virtualservices/vs").map(|x| x.0),
            Some("virtualservices")
        );
        assert_eq!(
            r("/api/v1/namespaces/prod").map(|x| x.2),
            Some(Some("prod".into()))
        );
        assert!(r("/apis/apps/v2/namespaces/a/deployments").is_none());
        assert!(r("/apis/apps/v1/namespaces/a/deployments/web/exec").is_none());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = query(
            &"/x?labelSelector=app%3Dweb%2Ctrack+in+(a)&watch=1"
                .parse()
                .unwrap(),
        );
        assert_eq!(q["labelSelector"], "app=web,track in (a)");
        assert_eq!(q["watch"], "1");
    }
}
