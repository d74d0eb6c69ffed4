//! Seeding: the objects a canary setup consists of (stable and canary Deployments, a
//! VirtualService splitting one named route, an HPA), written straight into the store so a test
//! or `backout sim` starts from a realistic cluster.

use super::api::{self, Target, WriteOpts};
use super::objects::Stamp;
use super::resources::{by_plural, ResourceDef};
use super::{SimError, SimHandle};
use crate::policy::model::{Destination, Policy};
use crate::policy::TrafficKind;
use serde_json::{json, Value};

/// A Deployment manifest: labels `app=<app>`, `track=<track>`, one container `app`.
pub fn deployment(
    namespace: &str,
    name: &str,
    app: &str,
    track: &str,
    image: &str,
    replicas: i64,
) -> Value {
    let labels = json!({"app": app, "track": track});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]}
            }
        }
    })
}

fn destination(d: &Destination, weight: i64) -> Value {
    let mut dest = json!({"host": d.host});
    if let Some(s) = &d.subset {
        dest["subset"] = json!(s);
    }
    json!({"destination": dest, "weight": weight})
}

/// A VirtualService whose route `route` splits `stable_weight`/`100 - stable_weight`, plus an
/// unrelated `/healthz` route first (rollbacks must leave it untouched).
pub fn virtual_service(
    namespace: &str,
    name: &str,
    host: &str,
    route: &str,
    stable: &Destination,
    canary: &Destination,
    stable_weight: i64,
) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [host],
            "http": [
                {"name": "health", "match": [{"uri": {"exact": "/healthz"}}],
                 "route": [{"destination": {"host": stable.host.clone()}}]},
                {"name": route, "route": [destination(stable, stable_weight), destination(canary, 100 - stable_weight)]}
            ]
        }
    })
}

/// A Gateway API HTTPRoute whose rule `rule` splits `stable_weight`/`100 - stable_weight` between
/// the Services `stable` and `canary`, plus an unrelated `/healthz` rule first (rollbacks must
/// leave it untouched).
pub fn http_route(
    namespace: &str,
    name: &str,
    hostname: &str,
    rule: &str,
    stable: &str,
    canary: &str,
    stable_weight: i64,
) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "hostnames": [hostname],
            "rules": [
                {"name": "health", "matches": [{"path": {"type": "Exact", "value": "/healthz"}}],
                 "backendRefs": [{"name": stable, "port": 8080}]},
                {"name": rule, "backendRefs": [
                    {"name": stable, "port": 8080, "weight": stable_weight},
                    {"name": canary, "port": 8080, "weight": 100 - stable_weight}
                ]}
            ]
        }
    })
}

/// An autoscaling/v2 HPA on a Deployment, CPU target 70%.
pub fn hpa(namespace: &str, name: &str, deployment: &str, min: i64, max: i64) -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": min,
            "maxReplicas": max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
        }
    })
}

impl SimHandle {
    /// Creates any object (its `apiVersion`/`kind` pick the resource) as a client POST would.
    pub fn seed(&self, obj: Value) -> Result<Value, SimError> {
        let what = format!(
            "{} {}",
            obj["kind"].as_str().unwrap_or("object"),
            obj["metadata"]["name"].as_str().unwrap_or_default()
        );
        let err = |message: String| SimError::Seed {
            what: what.clone(),
            message,
        };
        let av = obj["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = av.rsplit_once('/').unwrap_or(("", av));
        let def = super::resources::RESOURCES
            .iter()
            .find(|r| r.group == group && r.kind == obj["kind"] && r.versions.contains(&version))
            .ok_or_else(|| {
                err(format!(
                    "apiVersion {av:?} kind {} is not served",
                    obj["kind"]
                ))
            })?;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let target = Target {
            def,
            version: version.to_string(),
            namespace: def.namespaced.then_some(ns),
            name: None,
            sub: None,
        };
        let stamp = Stamp {
            now: super::controller::now_rfc3339(),
            uid: super::controller::new_uid(),
            suffix: "seed0".into(),
        };
        api::create(&self.store, &target, obj, &stamp, WriteOpts::default())
            .map(|(_, v)| v)
            .map_err(|e| err(e.message))
    }

    /// Writes objects into the store as given, uids, owner references, annotations and status
    /// included (each gets a fresh resourceVersion and the API defaults, as anything the
    /// apiserver decodes), as restoring a cluster from a backup does. For fixtures a POST
    /// cannot make: ReplicaSets with a revision history owned by a Deployment of a known uid, a
    /// status caught mid-rollout.
    pub fn load(&self, objects: Vec<Value>) -> Result<(), SimError> {
        let keyed = objects
            .into_iter()
            .map(|mut o| {
                let (def, key) = key_of(&o)?;
                super::objects::apply_defaults(def, &mut o);
                Ok((key, o))
            })
            .collect::<Result<Vec<_>, SimError>>()?;
        self.store.write(|txn| {
            for (key, obj) in keyed {
                txn.put(key, obj);
            }
        });
        Ok(())
    }

    pub fn seed_deployment(
        &self,
        namespace: &str,
        name: &str,
        image: &str,
        replicas: i64,
    ) -> Result<Value, SimError> {
        self.seed(deployment(namespace, name, name, "stable", image, replicas))
    }

    /// Everything a policy points at: stable and canary Deployments (`app=<service>`,
    /// `track=stable|canary`) and the router (VirtualService or HTTPRoute) with its split 90/10;
    /// no router in `replicas` mode.
    pub fn seed_policy(&self, policy: &Policy) -> Result<(), SimError> {
        let ns = &policy.namespace;
        let d = &policy.deployments;
        self.seed(deployment(
            ns,
            &d.stable,
            &policy.service,
            "stable",
            &format!("{}:1.0.0", policy.service),
            3,
        ))?;
        self.seed(deployment(
            ns,
            &d.canary,
            &policy.service,
            "canary",
            &format!("{}:1.1.0", policy.service),
            1,
        ))?;
        let t = &policy.traffic;
        match t.router() {
            TrafficKind::Istio => self.seed(virtual_service(
                ns,
                &t.virtual_service,
                &policy.service,
                &t.route,
                &t.stable,
                &t.canary,
                90,
            ))?,
            TrafficKind::GatewayApi => self.seed(http_route(
                ns,
                &t.http_route,
                &policy.service,
                t.rule.as_deref().unwrap_or("split"),
                t.stable.service.as_deref().unwrap_or_default(),
                t.canary.service.as_deref().unwrap_or_default(),
                90,
            ))?,
            TrafficKind::Replicas => Value::Null,
        };
        Ok(())
    }

    /// How many Deployments the deployment controller has not yet brought to their settled
    /// state (ReplicaSet created, pods "ready", old ReplicaSets drained, status written). Costs
    /// a pass over every Deployment: a check for tests, not something to poll.
    pub fn unsettled_rollouts(&self) -> usize {
        self.store.read(|txn| {
            txn.iter("apps", "deployments", None)
                .filter(|(_, d)| {
                    let uid = d
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let owned: Vec<Value> = txn
                        .owned_by(uid, "apps", "replicasets")
                        .into_iter()
                        .map(|(_, rs)| rs)
                        .collect();
                    !super::rollout::settled(d, &owned)
                })
                .count()
        })
    }

    /// Whether the deployment controller has handled every change so far and has no settle
    /// pass due. O(1), so it can be polled while seeding tens of thousands of objects.
    pub fn controller_idle(&self) -> bool {
        let rv = self.store.read(|t| t.current_rv());
        self.progress.idle(rv)
    }

    /// Waits until [`Self::controller_idle`], polling every `every`; `false` if `timeout`
    /// passed first. After seeding, idle means every rollout has settled (see
    /// [`Self::unsettled_rollouts`]) unless a Deployment is paused.
    pub async fn wait_controller_idle(
        &self,
        every: std::time::Duration,
        timeout: std::time::Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.controller_idle() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Reads an object straight from the store (`group` "" for core).
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let def = by_plural(group, plural)?;
        self.store.read(|t| {
            t.get(&super::store::ObjKey {
                group: def.group,
                plural: def.plural,
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
            .cloned()
        })
    }
}

/// The resource and store key of a manifest, from its `apiVersion`, `kind` and metadata.
fn key_of(obj: &Value) -> Result<(&'static ResourceDef, super::store::ObjKey), SimError> {
    let av = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = av.rsplit_once('/').unwrap_or(("", av));
    let def = super::resources::RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == obj["kind"] && r.versions.contains(&version))
        .ok_or_else(|| SimError::Seed {
            what: format!("{} {}", obj["kind"], obj["metadata"]["name"]),
            message: format!("apiVersion {av:?} is not served"),
        })?;
    let namespace = match def.namespaced {
        true => obj["metadata"]["namespace"].as_str().unwrap_or("default"),
        false => "",
    };
    let key = super::store::ObjKey {
        group: def.group,
        plural: def.plural,
        namespace: namespace.to_string(),
        name: obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    Ok((def, key))
}
