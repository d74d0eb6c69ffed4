//! The rollback plan on the routers besides Istio, against the simulator: a Gateway API HTTPRoute
//! (only the split rule's weights change, every other rule and filter stays byte-identical;
//! backup, restore and resume as for a VirtualService) and no router at all (`kind = "replicas"`:
//! the stable is pre-scaled and ready before the canary goes to zero).

#[path = "common/cluster.rs"]
mod cluster;

use backout::actuator::fixtures::Scenario;
use backout::actuator::{Actuator, ActuatorConfig, Outcome, RollbackRequest, StepOutcome, Trigger};
use backout::clock::ManualClock;
use backout::policy::{Policy, TrafficKind};
use backout::sim::SimHandle;
use cluster::{get, list, policy_for};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

fn actuator(sim: &SimHandle) -> Actuator {
    let config = ActuatorConfig {
        verify_timeout: Duration::from_secs(30),
        verify_poll: Duration::from_millis(200),
        capacity_wait: Duration::from_secs(20),
        ..ActuatorConfig::default()
    };
    Actuator::new(
        sim.in_process_client(),
        Arc::new(ManualClock::new(1_700_000_000_000)),
        config,
    )
}

fn request(lkg: Option<i64>) -> RollbackRequest {
    RollbackRequest {
        last_known_good: lkg,
        trigger: Trigger::manual("error_rate critical").with_value("error_rate", 0.07),
        dry_run: false,
        gate: None,
    }
}

fn keys(report: &backout::actuator::RollbackReport) -> Vec<&str> {
    report.steps.iter().map(|s| s.step.as_str()).collect()
}

fn split_weights(route: &Value) -> Vec<i64> {
    route["spec"]["rules"][1]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_i64().unwrap())
        .collect()
}

fn rules(route: &Value) -> Vec<String> {
    route["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn http_route_rollback_moves_only_the_split_rule_and_keeps_its_total() {
    let scenario = Scenario::default()
        .with_hpas(10)
        .with_router(TrafficKind::GatewayApi);
    let sim = cluster::start(&scenario).await;
    let before = get(&sim, "httproutes", "web").unwrap();

    let report = actuator(&sim)
        .rollback(&Policy::test_gateway(), request(Some(2)))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(
        keys(&report),
        [
            "pre_scale_stable",
            "route_all_to_stable",
            "neutralise_canary_hpa.web-canary",
            "scale_canary_to_zero",
            "undo_stable",
            "verify"
        ]
    );
    assert_eq!(report.steps[1].outcome, StepOutcome::Changed);

    let after = get(&sim, "httproutes", "web").unwrap();
    // The split rule: stable carries the former total (80 + 20), the canary nothing.
    assert_eq!(split_weights(&after), [100, 0]);
    // Every other rule byte-identical; the split rule identical but for the two weights.
    let (old, new) = (rules(&before), rules(&after));
    assert_eq!((&old[0], &old[2]), (&new[0], &new[2]));
    let mut split_before = before["spec"]["rules"][1].clone();
    split_before["backendRefs"][0]["weight"] = 100.into();
    split_before["backendRefs"][1]["weight"] = 0.into();
    assert_eq!(new[1], split_before.to_string());
    for key in ["parentRefs", "hostnames"] {
        assert_eq!(after["spec"][key], before["spec"][key], "{key}");
    }
    // The write was one JSON patch with `test` ops on that rule only.
    let writes = &report.steps[1].writes;
    let patch = serde_json::to_value(writes).unwrap()[0]["patch"].clone();
    let ops = patch.as_array().unwrap();
    assert!(ops
        .iter()
        .all(|op| op["path"].as_str().unwrap().starts_with("/spec/rules/1/")));
    assert!(ops
        .iter()
        .any(|op| op["op"] == "test" && op["value"] == "split"));
    assert_eq!(
        get(&sim, "deployments", "web-canary").unwrap()["spec"]["replicas"],
        0
    );

    // Backup: the route as it was; restore puts the weights back.
    let cm = get(&sim, "configmaps", &report.backup).unwrap();
    let saved: Value =
        serde_json::from_str(cm["data"]["httproute.web.json"].as_str().unwrap()).unwrap();
    assert_eq!(split_weights(&saved), [80, 20]);
    let restored = actuator(&sim)
        .restore("default", &report.backup)
        .await
        .unwrap();
    assert!(
        restored.contains(&"HttpRoute/web".to_string()),
        "{restored:?}"
    );
    let back = get(&sim, "httproutes", "web").unwrap();
    assert_eq!(split_weights(&back), [80, 20]);
    assert_eq!(rules(&back), old);
}

#[tokio::test(start_paused = true)]
async fn http_route_rollback_found_under_way_is_resumed_from_its_backup() {
    let scenario = Scenario::default().with_router(TrafficKind::GatewayApi);
    let sim = cluster::start(&scenario).await;
    let policy = Policy::test_gateway();
    // The first daemon dies right after its first write (the backup ConfigMap).
    sim.traffic().kill_after_writes(2);
    let first = actuator(&sim);
    tokio::select! {
        r = first.rollback(&policy, request(None)) => panic!("first run returned {r:?}"),
        _ = sim.traffic().killed() => {}
    }
    drop(first);
    sim.traffic().revive();
    let next = actuator(&sim);
    let in_flight = next.in_flight("default").await.unwrap();
    assert_eq!(in_flight.len(), 1, "{in_flight:?}");
    let report = next
        .resume(&policy, &in_flight[0].backup, None)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(report.resumed);
    assert_eq!(
        split_weights(&get(&sim, "httproutes", "web").unwrap()),
        [100, 0]
    );
}

#[tokio::test(start_paused = true)]
async fn a_wrong_rule_or_backend_fails_before_any_write_naming_the_key() {
    let sim = cluster::start(&Scenario::default().with_router(TrafficKind::GatewayApi)).await;
    let mut policy = Policy::test_gateway();
    policy.traffic.rule = Some("main".into());
    let msg = actuator(&sim)
        .rollback(&policy, request(None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("traffic.rule") && msg.contains("split") && msg.contains("test.toml"),
        "{msg}"
    );
    let mut policy = Policy::test_gateway();
    policy.traffic.stable.service = Some("web-primary".into());
    let msg = actuator(&sim)
        .rollback(&policy, request(None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("traffic.stable.service") && msg.contains("web-primary"),
        "{msg}"
    );
    assert_eq!(sim.traffic().writes(), 0);
}

#[tokio::test(start_paused = true)]
async fn replicas_mode_pre_scales_the_stable_until_ready_then_scales_the_canary_to_zero() {
    let sim = cluster::start(&Scenario::default().with_router(TrafficKind::Replicas)).await;
    let report = actuator(&sim)
        .rollback(&policy_for(TrafficKind::Replicas), request(Some(2)))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(
        keys(&report),
        [
            "pre_scale_stable",
            "scale_canary_to_zero",
            "undo_stable",
            "verify"
        ]
    );
    assert!(
        report.steps[0].detail.contains("5 ready replicas"),
        "{:?}",
        report.steps[0]
    );
    // The pre-scale step only ends once 5 stable replicas are ready, and the canary's step
    // comes after it: the capacity was there before the canary was touched.
    let stable = get(&sim, "deployments", "web").unwrap();
    assert_eq!(stable["spec"]["replicas"], 5);
    assert_eq!(
        get(&sim, "deployments", "web-canary").unwrap()["spec"]["replicas"],
        0
    );
    assert!(list(&sim, "virtualservices").is_empty() && list(&sim, "httproutes").is_empty());
    let cm = get(&sim, "configmaps", &report.backup).unwrap();
    let data = cm["data"].as_object().unwrap();
    assert!(data
        .keys()
        .all(|k| !k.starts_with("virtualservice.") && !k.starts_with("httproute.")));
}

#[tokio::test(start_paused = true)]
async fn replicas_mode_stops_waiting_for_a_stable_that_never_gets_ready() {
    let sim = cluster::start(&Scenario::default().with_router(TrafficKind::Replicas)).await;
    // The stable's new pods never come up (no capacity on the nodes).
    sim.stall_rollout("default", "web");
    let err = actuator(&sim)
        .rollback(&policy_for(TrafficKind::Replicas), request(None))
        .await
        .unwrap_err()
        .to_string();
    // The bad canary is gone all the same; verification then says what is still wrong.
    assert_eq!(
        get(&sim, "deployments", "web-canary").unwrap()["spec"]["replicas"],
        0
    );
    assert!(
        err.contains("verification failed") && err.contains("rollout is not complete"),
        "{err}"
    );
    let cm = &list(&sim, "configmaps")[0];
    let steps = cm["metadata"]["annotations"]["backout.dev/rollback-steps"]
        .as_str()
        .unwrap();
    assert!(
        steps.contains("pre_scale_stable") && steps.contains("scale_canary_to_zero"),
        "{steps}"
    );
}

#[tokio::test(start_paused = true)]
async fn http_route_dry_run_writes_nothing_and_shows_the_rule_diff() {
    let sim = cluster::start(&Scenario::default().with_router(TrafficKind::GatewayApi)).await;
    let before = get(&sim, "httproutes", "web").unwrap();
    let mut req = request(None);
    req.dry_run = true;
    let report = actuator(&sim)
        .rollback(&Policy::test_gateway(), req)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::DryRun);
    assert_eq!(get(&sim, "httproutes", "web").unwrap(), before);
    assert_eq!(sim.traffic().writes(), 0);
    // The server validated the patch with dryRun=All, and the report shows the change.
    assert!(sim
        .traffic()
        .log()
        .iter()
        .any(|(m, p)| m == "PATCH" && p.contains("httproutes/web") && p.contains("dryRun=All")));
    let route = report
        .steps
        .iter()
        .find(|s| s.step == "route_all_to_stable")
        .unwrap();
    let diff = serde_json::to_string(&route.diffs).unwrap();
    assert!(
        diff.contains("/spec/rules/1/backendRefs/0/weight") && diff.contains("100"),
        "{diff}"
    );
}
