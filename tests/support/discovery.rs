//! Legacy discovery documents for kubectl.

use serde_json::{json, Value};

fn resource(name: &str, kind: &str, short: &[&str], verbs: &[&str]) -> Value {
    json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs, "shortNames": short})
}

/// Legacy discovery documents, enough for kubectl to map deploy/rs/vs/hpa/cm.
pub(super) fn discovery(path: &str) -> Option<Value> {
    let all = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    let gv = |g: &str, v: &str| json!({"groupVersion": format!("{g}/{v}"), "version": v});
    Some(match path {
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
                          "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "apps", "versions": [gv("apps", "v1")], "preferredVersion": gv("apps", "v1")},
            {"name": "autoscaling", "versions": [gv("autoscaling", "v2")], "preferredVersion": gv("autoscaling", "v2")},
            {"name": "networking.istio.io", "versions": [gv("networking.istio.io", "v1")], "preferredVersion": gv("networking.istio.io", "v1")},
            {"name": "events.k8s.io", "versions": [gv("events.k8s.io", "v1")], "preferredVersion": gv("events.k8s.io", "v1")}]}),
        "/api/v1" => json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            resource("configmaps", "ConfigMap", &["cm"], &all)]}),
        "/apis/apps/v1" => {
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
            resource("deployments", "Deployment", &["deploy"], &all),
            {"name": "deployments/scale", "namespaced": true, "kind": "Scale", "group": "autoscaling", "version": "v1", "verbs": ["get", "patch", "update"]},
            resource("replicasets", "ReplicaSet", &["rs"], &all)]})
        }
        "/apis/autoscaling/v2" => {
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "autoscaling/v2", "resources": [
            resource("horizontalpodautoscalers", "HorizontalPodAutoscaler", &["hpa"], &all)]})
        }
        "/apis/networking.istio.io/v1" => {
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "networking.istio.io/v1", "resources": [
            resource("virtualservices", "VirtualService", &["vs"], &all)]})
        }
        "/apis/events.k8s.io/v1" => {
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "events.k8s.io/v1", "resources": [
            resource("events", "Event", &["ev"], &all)]})
        }
        _ => return None,
    })
}
