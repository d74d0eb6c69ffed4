//! The actuator fixture (`Scenario`) loaded into the simulator, and the end state a user would
//! check after a rollback. Shared by the actuator tests (plan, faults, kubectl).
#![allow(dead_code)]

use backout::actuator::fixtures::Scenario;
use backout::policy::{Policy, TrafficKind};
use backout::sim::{SimConfig, SimHandle, Simulator};
use serde_json::{json, Value};
use std::time::Duration;

/// A simulator holding `scenario`'s objects as given (revision history, uids, status), the
/// deployment controller idle. A progressing stable stays caught mid-rollout until its template
/// changes, as on a cluster whose new pods are slow to come up.
pub async fn start(scenario: &Scenario) -> SimHandle {
    let sim = Simulator::start_with(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            rollout_delay: Duration::from_millis(200),
        },
    )
    .await
    .unwrap();
    if scenario.stable_progressing {
        sim.stall_rollout(&scenario.namespace, "web");
    }
    sim.load(scenario.objects()).unwrap();
    settle(&sim).await;
    sim
}

/// Waits until the deployment controller has nothing left to do.
pub async fn settle(sim: &SimHandle) {
    let idle = sim
        .wait_controller_idle(Duration::from_millis(10), Duration::from_secs(60))
        .await;
    assert!(
        idle,
        "the simulator's deployment controller never went idle"
    );
}

fn group_of(plural: &str) -> &'static str {
    match plural {
        "deployments" | "replicasets" => "apps",
        "virtualservices" => "networking.istio.io",
        "httproutes" => "gateway.networking.k8s.io",
        "horizontalpodautoscalers" => "autoscaling",
        _ => "",
    }
}

/// One object of the `default` namespace, read straight from the store.
pub fn get(sim: &SimHandle, plural: &str, name: &str) -> Option<Value> {
    sim.object(group_of(plural), plural, "default", name)
}

/// Every object of a resource (Events of both APIs), read straight from the store.
pub fn list(sim: &SimHandle, plural: &'static str) -> Vec<Value> {
    let groups: &[&'static str] = match plural {
        "events" => &["events.k8s.io", ""],
        p => &[group_of(p)],
    };
    sim.store().read(|t| {
        groups
            .iter()
            .flat_map(|g| t.list(g, plural, None))
            .collect()
    })
}

/// Wall-clock stamps (conditions, creation) differ between runs; what a user checks does not.
fn without_timestamps(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in ["lastUpdateTime", "lastTransitionTime", "creationTimestamp"] {
                m.remove(k);
            }
            m.values_mut().for_each(without_timestamps);
        }
        Value::Array(a) => a.iter_mut().for_each(without_timestamps),
        _ => {}
    }
}

/// A backup's data with each saved object parsed and its wall-clock stamps removed.
fn backup_data(cm: &Value) -> Value {
    let mut data = cm["data"].clone();
    if let Some(m) = data.as_object_mut() {
        for v in m.values_mut() {
            if let Some(mut parsed) = v.as_str().and_then(|s| serde_json::from_str(s).ok()) {
                without_timestamps(&mut parsed);
                *v = parsed;
            }
        }
    }
    data
}

/// Specs and the annotations that matter, without resourceVersions, uids and timestamps.
pub async fn end_state(sim: &SimHandle) -> Value {
    settle(sim).await;
    let deployments: Vec<Value> = list(sim, "deployments")
        .iter()
        .map(|d| json!({"name": d["metadata"]["name"], "annotations": d["metadata"]["annotations"], "spec": d["spec"]}))
        .collect();
    let replica_sets: Vec<Value> = list(sim, "replicasets")
        .iter()
        .map(|r| json!({"name": r["metadata"]["name"], "annotations": r["metadata"]["annotations"], "replicas": r["spec"]["replicas"]}))
        .collect();
    let hpas: Vec<Value> = list(sim, "horizontalpodautoscalers")
        .iter()
        .map(|h| json!({"name": h["metadata"]["name"], "spec": h["spec"]}))
        .collect();
    let backups: Vec<Value> = list(sim, "configmaps")
        .iter()
        .map(|c| json!({"name": c["metadata"]["name"], "annotations": c["metadata"]["annotations"], "data": backup_data(c)}))
        .collect();
    json!({
        "deployments": deployments,
        "replica_sets": replica_sets,
        "hpas": hpas,
        "virtual_service": get(sim, "virtualservices", "web").map(|v| v["spec"].clone()),
        "http_route": get(sim, "httproutes", "web").map(|v| v["spec"].clone()),
        "backups": backups,
    })
}

/// The policy matching a `Scenario` with this router (see `Scenario::with_router`).
pub fn policy_for(router: TrafficKind) -> Policy {
    match router {
        TrafficKind::Istio => Policy::test(),
        TrafficKind::GatewayApi => Policy::test_gateway(),
        TrafficKind::Replicas => Policy::test_replicas(),
    }
}

/// The router object's path under the API (what fault rules and logs match), if it has one.
pub fn router_path(router: TrafficKind) -> Option<&'static str> {
    match router {
        TrafficKind::Istio => Some("virtualservices/web"),
        TrafficKind::GatewayApi => Some("httproutes/web"),
        TrafficKind::Replicas => None,
    }
}

/// Every router the actuator drives; tests of the actuator's guarantees run once per router.
pub const ROUTERS: [TrafficKind; 3] = [
    TrafficKind::Istio,
    TrafficKind::GatewayApi,
    TrafficKind::Replicas,
];

/// Highest revision among the stable's ReplicaSets: one undo makes it 4 in the default scenario;
/// a repeated undo would make it 5 (and toggle the template back).
pub fn max_stable_revision(sim: &SimHandle) -> i64 {
    list(sim, "replicasets")
        .iter()
        .filter(|rs| rs["metadata"]["ownerReferences"][0]["name"] == "web")
        .filter_map(|rs| {
            rs.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                .and_then(Value::as_str)
                .and_then(|r| r.parse().ok())
        })
        .max()
        .unwrap_or(0)
}
