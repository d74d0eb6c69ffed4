//! Cluster objects for tests, benches and the demo: a stable Deployment with revision history, a
//! canary, a VirtualService with the split route between other routes, and HPAs. Lives in the
//! library (like `Policy::test()`) so integration tests and benches share it. Matches
//! `Policy::test()`: stable `web`, canary `web-canary`, VirtualService `web`, route `primary`;
//! with `with_router(GatewayApi)` it matches `Policy::test_gateway()` (HTTPRoute `web`, rule
//! `split`), and with `with_router(Replicas)` `Policy::test_replicas()` (no router object).

use crate::policy::TrafficKind;

use serde_json::{json, Value};

/// Builder for the objects of one canary rollout in flight.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub namespace: String,
    /// Images of the stable's revisions 1..=n; the last one is current.
    pub stable_images: Vec<String>,
    pub stable_replicas: i64,
    pub canary_replicas: i64,
    pub weights: (i64, i64),
    pub stable_hpa_max: Option<i64>,
    pub canary_hpa: bool,
    /// Stable mid-rollout (status lags spec): the plan must pause it.
    pub stable_progressing: bool,
    /// Which router object [`Scenario::objects`] holds.
    pub router: TrafficKind,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            stable_images: vec!["web:1.0".into(), "web:1.1".into(), "web:1.2".into()],
            stable_replicas: 3,
            canary_replicas: 2,
            weights: (80, 20),
            stable_hpa_max: None,
            canary_hpa: false,
            stable_progressing: false,
            router: TrafficKind::Istio,
        }
    }
}

fn template(app: &str, track: &str, image: &str, hash: Option<&str>) -> Value {
    let mut labels = json!({"app": app, "track": track});
    if let Some(h) = hash {
        labels["pod-template-hash"] = json!(h);
    }
    json!({
        "metadata": {"labels": labels},
        "spec": {"containers": [{
            "name": app,
            "image": image,
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m"}}
        }]}
    })
}

/// Short stable hash used as `pod-template-hash` by fixtures and test servers.
pub fn template_hash(template: &Value) -> String {
    let h = crate::hash::fnv1a(template.to_string().as_bytes());
    format!("{:010x}", h & 0xff_ffff_ffff)
}

impl Scenario {
    pub fn with_hpas(mut self, stable_max: i64) -> Self {
        self.stable_hpa_max = Some(stable_max);
        self.canary_hpa = true;
        self
    }

    pub fn with_router(mut self, router: TrafficKind) -> Self {
        self.router = router;
        self
    }

    pub fn progressing(mut self) -> Self {
        self.stable_progressing = true;
        self
    }

    fn deployment(
        &self,
        name: &str,
        track: &str,
        image: &str,
        replicas: i64,
        revision: usize,
        uid: &str,
    ) -> Value {
        let complete = !(track == "stable" && self.stable_progressing);
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name, "namespace": self.namespace, "uid": uid,
                "generation": revision, "resourceVersion": "1",
                "labels": {"app": "web", "track": track},
                "annotations": {"deployment.kubernetes.io/revision": revision.to_string(), "team": "payments"}
            },
            "spec": {
                "replicas": replicas,
                "revisionHistoryLimit": 10,
                "selector": {"matchLabels": {"app": "web", "track": track}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": template("web", track, image, None)
            },
            "status": {
                "observedGeneration": revision,
                "replicas": replicas,
                "updatedReplicas": if complete { replicas } else { 1 },
                "readyReplicas": replicas,
                "availableReplicas": if complete { replicas } else { replicas - 1 }
            }
        })
    }

    fn replica_set(
        &self,
        deploy: &str,
        uid: &str,
        track: &str,
        image: &str,
        revision: usize,
        replicas: i64,
    ) -> Value {
        let plain = template("web", track, image, None);
        let hash = template_hash(&plain);
        json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{deploy}-{hash}"), "namespace": self.namespace,
                "uid": format!("{uid}-rs{revision}"), "resourceVersion": "1",
                "labels": {"app": "web", "track": track, "pod-template-hash": hash},
                "annotations": {"deployment.kubernetes.io/revision": revision.to_string(), "team": "payments"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deploy, "uid": uid, "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web", "track": track, "pod-template-hash": hash}},
                "template": template("web", track, image, Some(&hash))
            },
            "status": {"replicas": replicas}
        })
    }

    /// The VirtualService: the split route between two routes that must stay untouched.
    pub fn virtual_service(&self) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": self.namespace, "resourceVersion": "1", "generation": 1},
            "spec": {
                "hosts": ["web", "web.example.com"],
                "gateways": ["mesh", "public-gw"],
                "http": [
                    {"name": "debug-header",
                     "match": [{"headers": {"x-debug": {"exact": "1"}}}],
                     "route": [{"destination": {"host": "web", "subset": "canary"}}],
                     "timeout": "5s"},
                    {"name": "primary",
                     "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,reset"},
                     "route": [
                        {"destination": {"host": "web", "subset": "stable", "port": {"number": 8080}}, "weight": self.weights.0,
                         "headers": {"response": {"set": {"x-track": "stable"}}}},
                        {"destination": {"host": "web", "subset": "canary", "port": {"number": 8080}}, "weight": self.weights.1}
                     ]},
                    {"name": "legacy",
                     "match": [{"uri": {"prefix": "/v0/"}}],
                     "rewrite": {"uri": "/"},
                     "route": [{"destination": {"host": "web-legacy"}, "weight": 100}]}
                ]
            }
        })
    }

    /// The HTTPRoute: rule `split` (weights 80/20 by default, a header filter) between a
    /// header-matched rule with a mirror filter and a rewritten legacy rule, all of which a
    /// rollback must leave byte-identical.
    pub fn http_route(&self) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": self.namespace, "resourceVersion": "1", "generation": 1},
            "spec": {
                "parentRefs": [{"name": "public-gw", "namespace": "gateways", "sectionName": "https"}],
                "hostnames": ["web.example.com"],
                "rules": [
                    {"name": "debug-header",
                     "matches": [{"headers": [{"name": "x-debug", "value": "1"}]}],
                     "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "web-shadow", "port": 8080}}}],
                     "backendRefs": [{"name": "web-canary", "port": 8080}],
                     "timeouts": {"request": "5s"}},
                    {"name": "split",
                     "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                     "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-route", "value": "split"}]}}],
                     "backendRefs": [
                        {"name": "web", "port": 8080, "weight": self.weights.0,
                         "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-track", "value": "stable"}]}}]},
                        {"name": "web-canary", "port": 8080, "weight": self.weights.1}
                     ]},
                    {"name": "legacy",
                     "matches": [{"path": {"type": "PathPrefix", "value": "/v0/"}}],
                     "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
                     "backendRefs": [{"name": "web-legacy", "port": 8080, "weight": 100}]}
                ]
            }
        })
    }

    /// The router object of [`Scenario::router`], if it has one.
    pub fn router_object(&self) -> Option<Value> {
        match self.router {
            TrafficKind::Istio => Some(self.virtual_service()),
            TrafficKind::GatewayApi => Some(self.http_route()),
            TrafficKind::Replicas => None,
        }
    }

    fn hpa(&self, name: &str, target: &str, min: i64, max: i64) -> Value {
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": self.namespace, "uid": format!("uid-hpa-{name}"), "resourceVersion": "1"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                "minReplicas": min, "maxReplicas": max,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
            }
        })
    }

    /// Every object, ready to seed a test API server.
    pub fn objects(&self) -> Vec<Value> {
        let n = self.stable_images.len();
        let mut out = Vec::new();
        let current = self.stable_images.last().cloned().unwrap_or_default();
        out.push(self.deployment(
            "web",
            "stable",
            &current,
            self.stable_replicas,
            n,
            "uid-web",
        ));
        for (i, image) in self.stable_images.iter().enumerate() {
            let replicas = if i + 1 == n { self.stable_replicas } else { 0 };
            out.push(self.replica_set("web", "uid-web", "stable", image, i + 1, replicas));
        }
        out.push(self.deployment(
            "web-canary",
            "canary",
            "web:2.0",
            self.canary_replicas,
            1,
            "uid-web-canary",
        ));
        out.push(self.replica_set(
            "web-canary",
            "uid-web-canary",
            "canary",
            "web:2.0",
            1,
            self.canary_replicas,
        ));
        out.extend(self.router_object());
        if let Some(max) = self.stable_hpa_max {
            out.push(self.hpa("web", "web", 1, max));
        }
        if self.canary_hpa {
            out.push(self.hpa("web-canary", "web-canary", 1, 5));
        }
        out
    }
}

impl Scenario {
    /// The snapshot the actuator would read from a cluster seeded with [`Scenario::objects`].
    pub fn observed(&self) -> super::objects::Observed {
        let objs = self.objects();
        let find = |kind: &str, name: &str| {
            objs.iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .cloned()
                .unwrap_or(Value::Null)
        };
        super::objects::Observed {
            stable: find("Deployment", "web"),
            canary: find("Deployment", "web-canary"),
            stable_replica_sets: objs
                .iter()
                .filter(|o| {
                    o["kind"] == "ReplicaSet"
                        && o["metadata"]["ownerReferences"][0]["name"] == "web"
                })
                .cloned()
                .collect(),
            router: self.router_object().unwrap_or(Value::Null),
            hpas: objs
                .iter()
                .filter(|o| o["kind"] == "HorizontalPodAutoscaler")
                .cloned()
                .collect(),
        }
    }
}
