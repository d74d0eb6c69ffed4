//! An in-process fake of the Kubernetes API for the actuator tests (tower service behind
//! `kube::Client::new`, controller-rs fixtures style), with REST semantics the actuator relies on:
//! resourceVersion bumps, 409 on stale PUT and on create of an existing name, 422 on a failed
//! JSON-patch `test`, 415 for strategic merge on CRDs, the scale subresource, `dryRun=All`, a
//! minimal deployment controller (new ReplicaSet + revision per template, renumbering on undo,
//! `paused` honoured), and fault injection. Used until/alongside the full simulator (src/sim).
#![allow(dead_code)]

mod controller;
mod discovery;
mod faults;
pub mod incident;
pub mod prometheus;
pub use faults::{Fault, FaultKind};
mod http;
pub mod state;

use controller::reconcile;
use discovery::discovery;

use hyper::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Default)]
pub(super) struct State {
    pub(super) objects: BTreeMap<(String, String, String), Value>,
    pub(super) rv: u64,
    faults: Vec<Fault>,
    log: Vec<(String, String)>,
    writes: usize,
    kill_after_writes: Option<usize>,
    /// Deployments whose pods never change (stuck terminating, node gone): status is frozen.
    pub(super) frozen: std::collections::BTreeSet<String>,
}

#[derive(Clone, Default)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
    killed: Arc<Notify>,
}

pub(super) fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn plural_of(obj: &Value) -> &'static str {
    match obj.get("kind").and_then(Value::as_str).unwrap_or_default() {
        "Deployment" => "deployments",
        "ReplicaSet" => "replicasets",
        "VirtualService" => "virtualservices",
        "HorizontalPodAutoscaler" => "horizontalpodautoscalers",
        "ConfigMap" => "configmaps",
        _ => "events",
    }
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "deployments" => "Deployment",
        "replicasets" => "ReplicaSet",
        "virtualservices" => "VirtualService",
        "horizontalpodautoscalers" => "HorizontalPodAutoscaler",
        "configmaps" => "ConfigMap",
        _ => "Event",
    }
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(super) fn strip_hash(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
    }
    t
}

impl FakeKube {
    pub fn new(objects: Vec<Value>) -> Self {
        let fake = Self::default();
        {
            let mut s = fake.state.lock().unwrap();
            for mut o in objects {
                s.rv += 1;
                o["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                let ns = o
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string();
                s.objects.insert((plural_of(&o).into(), ns, name_of(&o)), o);
            }
        }
        fake
    }

    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let fake = fake.clone();
            async move { fake.handle(req).await }
        });
        kube::Client::new(svc, "default")
    }

    pub fn inject(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    /// After `n` more successful writes, hang every request and notify [`Self::killed`].
    pub fn kill_after_writes(&self, n: usize) {
        let mut s = self.state.lock().unwrap();
        s.kill_after_writes = Some(s.writes + n);
    }

    /// From now on the controller leaves this Deployment's status alone.
    pub fn freeze_status(&self, name: &str) {
        self.state.lock().unwrap().frozen.insert(name.into());
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// Injected faults not yet triggered.
    pub fn faults_left(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .faults
            .iter()
            .map(|f| f.times)
            .sum()
    }

    pub fn revive(&self) {
        self.state.lock().unwrap().kill_after_writes = None;
    }

    pub async fn killed(&self) {
        self.killed.notified().await
    }

    pub fn get(&self, plural: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(plural.into(), "default".into(), name.into()))
            .cloned()
    }

    pub fn list(&self, plural: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .iter()
            .filter(|((p, _, _), _)| p == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn log(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn writes(&self) -> usize {
        self.state.lock().unwrap().writes
    }

    async fn handle(&self, req: Request<Body>) -> Result<Response<Body>, tower::BoxError> {
        let method = req.method().to_string();
        let uri = req.uri().clone();
        let ctype = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = req.into_body().collect_bytes().await?.to_vec();
        let out = self
            .handle_parts(
                method,
                uri.path().to_string(),
                uri.query().unwrap_or_default().to_string(),
                ctype,
                body,
            )
            .await?;
        Ok(respond(out))
    }

    pub(super) async fn handle_parts(
        &self,
        method: String,
        path: String,
        query: String,
        ctype: String,
        body: Vec<u8>,
    ) -> Result<(u16, Value), tower::BoxError> {
        if let Some(doc) = discovery(&path) {
            return Ok((200, doc));
        }
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)?
        };

        let fault = {
            let mut s = self.state.lock().unwrap();
            s.log.push((method.clone(), format!("{path}?{query}")));
            if s.kill_after_writes.is_some_and(|k| s.writes >= k) {
                Some(FaultKind::Hang)
            } else {
                let idx = s.faults.iter().position(|f| {
                    f.times > 0
                        && f.method.as_ref().is_none_or(|m| *m == method)
                        && path.ends_with(&f.path_contains)
                });
                idx.map(|i| {
                    s.faults[i].times -= 1;
                    s.faults[i].kind.clone()
                })
            }
        };
        match fault {
            Some(FaultKind::Status(code)) => return Ok(status(code, "Injected", "injected fault")),
            Some(FaultKind::Hang) => std::future::pending::<()>().await,
            Some(FaultKind::Drop) => return Err("connection reset by peer (injected)".into()),
            _ => {}
        }
        // kube sends DeleteOptions (with dryRun) in the body, the other verbs' dryRun in the query.
        let dry =
            query.contains("dryRun=All") || (method == "DELETE" && body.get("dryRun").is_some());
        let (code, out) = self.serve(&method, &path, dry, &query, &ctype, body);
        let is_write =
            method != "GET" && !path.contains("/events") && (200..300).contains(&code) && !dry;
        let kill_now = is_write && {
            let mut s = self.state.lock().unwrap();
            s.writes += 1;
            s.kill_after_writes.is_some_and(|k| s.writes >= k)
        };
        if kill_now {
            self.killed.notify_one();
            std::future::pending::<()>().await;
        }
        if fault == Some(FaultKind::ApplyThenHang) {
            std::future::pending::<()>().await;
        }
        Ok((code, out))
    }

    fn serve(
        &self,
        method: &str,
        path: &str,
        dry: bool,
        query: &str,
        ctype: &str,
        body: Value,
    ) -> (u16, Value) {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (api_version, rest) = match segs.as_slice() {
            ["api", "v1", "namespaces", rest @ ..] => ("v1".to_string(), rest),
            ["apis", g, v, "namespaces", rest @ ..] => (format!("{g}/{v}"), rest),
            _ => return status(404, "NotFound", &format!("no route {path}")),
        };
        let (ns, plural, name, sub) = match rest {
            [ns, plural] => (*ns, *plural, None, None),
            [ns, plural, name] => (*ns, *plural, Some(*name), None),
            [ns, plural, name, sub] => (*ns, *plural, Some(*name), Some(*sub)),
            _ => return status(404, "NotFound", path),
        };
        let mut s = self.state.lock().unwrap();
        let key = |n: &str| (plural.to_string(), ns.to_string(), n.to_string());
        match (method, name, sub) {
            ("GET", None, _) => {
                let selector: Vec<(String, String)> = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("labelSelector="))
                    .map(|sel| {
                        let sel = sel.replace("%3D", "=").replace("%2C", ",");
                        sel.split(',')
                            .filter_map(|p| {
                                p.split_once('=')
                                    .map(|(a, b)| (a.to_string(), b.to_string()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|((p, n, _), _)| p == plural && n == ns)
                    .map(|(_, v)| v.clone())
                    .filter(|v| {
                        selector.iter().all(|(k, val)| {
                            v.pointer("/metadata/labels")
                                .and_then(|l| l.get(k))
                                .and_then(Value::as_str)
                                == Some(val)
                        })
                    })
                    .collect();
                (
                    200,
                    json!({"apiVersion": api_version, "kind": format!("{}List", kind_of(plural)), "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
                )
            }
            ("GET", Some(n), None) => match s.objects.get(&key(n)) {
                Some(o) => (200, o.clone()),
                None => status(404, "NotFound", &format!("{plural} \"{n}\" not found")),
            },
            ("GET", Some(n), Some("scale")) => match s.objects.get(&key(n)) {
                Some(o) => (200, scale_of(o)),
                None => status(404, "NotFound", &format!("{plural} \"{n}\" not found")),
            },
            ("POST", None, _) => {
                let mut o = body;
                let n = if plural == "events" && name_of(&o).is_empty() {
                    format!("ev{}", s.rv)
                } else {
                    name_of(&o)
                };
                if s.objects.contains_key(&key(&n)) {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("{plural} \"{n}\" already exists"),
                    );
                }
                if dry {
                    return (201, o);
                }
                s.rv += 1;
                o["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                o["metadata"]["uid"] = json!(format!("uid-{plural}-{n}-{}", s.rv));
                o["metadata"]["namespace"] = json!(ns);
                o["metadata"]["generation"] = json!(1);
                s.objects.insert(key(&n), o.clone());
                (201, o)
            }
            ("DELETE", Some(n), None) => {
                if dry {
                    return match s.objects.get(&key(n)) {
                        Some(o) => (200, o.clone()),
                        None => status(404, "NotFound", n),
                    };
                }
                match s.objects.remove(&key(n)) {
                    Some(o) => (200, o),
                    None => status(404, "NotFound", &format!("{plural} \"{n}\" not found")),
                }
            }
            ("PUT" | "PATCH", Some(n), sub) => {
                let Some(current) = s.objects.get(&key(n)).cloned() else {
                    return status(404, "NotFound", &format!("{plural} \"{n}\" not found"));
                };
                let base = if sub == Some("scale") {
                    scale_of(&current)
                } else {
                    current.clone()
                };
                let mut new = if method == "PUT" {
                    let rv = body
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str);
                    if rv.is_some_and(|rv| {
                        Some(rv)
                            != base
                                .pointer("/metadata/resourceVersion")
                                .and_then(Value::as_str)
                    }) {
                        return status(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again");
                    }
                    body
                } else if ctype.contains("json-patch") {
                    let Ok(p) = serde_json::from_value::<json_patch::Patch>(body) else {
                        return status(400, "BadRequest", "malformed JSON patch");
                    };
                    let mut doc = base.clone();
                    if let Err(e) = json_patch::patch(&mut doc, &p) {
                        return status(422, "Invalid", &format!("the server rejected our request due to an error in our request: {e}"));
                    }
                    doc
                } else if ctype.contains("strategic-merge") && plural == "virtualservices" {
                    return status(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml");
                } else {
                    let mut doc = base.clone();
                    json_patch::merge(&mut doc, &body);
                    doc
                };
                let mut updated = if sub == Some("scale") {
                    let mut d = current.clone();
                    d["spec"]["replicas"] =
                        new.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
                    d
                } else {
                    // Status is not writable through the main resource.
                    if let Some(st) = current.get("status") {
                        new["status"] = st.clone();
                    }
                    new
                };
                // A real apiserver decodes into typed objects: explicit nulls (kubectl's
                // `creationTimestamp: null`) do not survive.
                drop_nulls(&mut updated);
                if dry {
                    return (
                        200,
                        if sub == Some("scale") {
                            scale_of(&updated)
                        } else {
                            updated
                        },
                    );
                }
                if updated.get("spec") != current.get("spec") {
                    let g = current
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    updated["metadata"]["generation"] = json!(g + 1);
                }
                s.rv += 1;
                updated["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                s.objects.insert(key(n), updated.clone());
                if plural == "deployments" {
                    reconcile(&mut s, ns, n);
                    updated = s.objects.get(&key(n)).cloned().unwrap_or(updated);
                }
                if sub == Some("scale") {
                    (200, scale_of(&updated))
                } else {
                    (200, updated)
                }
            }
            _ => status(405, "MethodNotAllowed", method),
        }
    }
}

fn scale_of(d: &Value) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": name_of(d), "namespace": d.pointer("/metadata/namespace"), "resourceVersion": d.pointer("/metadata/resourceVersion")},
        "spec": {"replicas": d.pointer("/spec/replicas")},
        "status": {"replicas": d.pointer("/status/replicas").cloned().unwrap_or(json!(0))}
    })
}

fn respond((code, body): (u16, Value)) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
        .unwrap()
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}
