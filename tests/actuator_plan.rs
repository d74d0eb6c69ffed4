//! The full rollback plan against the simulator: traffic, replicas, revision, backups, events,
//! idempotence, dry run and restore.

#[path = "common/cluster.rs"]
mod cluster;

use backout::actuator::fixtures::Scenario;
use backout::actuator::{Actuator, ActuatorConfig, Outcome, RollbackRequest, StepOutcome, Trigger};
use backout::clock::ManualClock;
use backout::policy::Policy;
use backout::sim::SimHandle;
use cluster::{get, list};
use kube::runtime::events::Reporter;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

fn actuator(sim: &SimHandle) -> Actuator {
    let config = ActuatorConfig {
        verify_timeout: Duration::from_secs(30),
        verify_poll: Duration::from_millis(200),
        ..ActuatorConfig::default()
    };
    Actuator::new(
        sim.in_process_client(),
        Arc::new(ManualClock::new(1_700_000_000_000)),
        config,
    )
    .with_events(Reporter {
        controller: "backout".into(),
        instance: Some("test".into()),
    })
}

fn request(lkg: Option<i64>) -> RollbackRequest {
    RollbackRequest {
        last_known_good: lkg,
        trigger: Trigger::manual("error_rate critical: 0.071 > 0.05")
            .with_value("error_rate", 0.071),
        dry_run: false,
        gate: None,
    }
}

fn image(d: &Value) -> String {
    d.pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

fn revision(o: &Value) -> i64 {
    o.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
        .and_then(Value::as_str)
        .unwrap()
        .parse()
        .unwrap()
}

fn weights(vs: &Value) -> Vec<i64> {
    vs.pointer("/spec/http/1/route")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["weight"].as_i64().unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn full_plan_moves_traffic_scales_canary_undoes_stable_and_backs_up() {
    let sim = cluster::start(&Scenario::default().with_hpas(10)).await;
    let vs_before = get(&sim, "virtualservices", "web").unwrap();

    let report = actuator(&sim)
        .rollback(&Policy::test(), request(Some(2)))
        .await
        .unwrap();

    assert_eq!(report.outcome, Outcome::Completed);
    let keys: Vec<&str> = report.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        keys,
        [
            "pre_scale_stable",
            "route_all_to_stable",
            "neutralise_canary_hpa.web-canary",
            "scale_canary_to_zero",
            "undo_stable",
            "verify"
        ]
    );
    assert!(
        report.steps[..5]
            .iter()
            .all(|s| s.outcome == StepOutcome::Changed),
        "{report:#?}"
    );

    // Traffic: 100/0 on the named route; every other route and field byte-for-byte unchanged.
    let vs = get(&sim, "virtualservices", "web").unwrap();
    assert_eq!(weights(&vs), [100, 0]);
    for i in [0, 2] {
        assert_eq!(
            vs["spec"]["http"][i].to_string(),
            vs_before["spec"]["http"][i].to_string()
        );
    }
    let mut primary_before = vs_before["spec"]["http"][1].clone();
    primary_before["route"][0]["weight"] = 100.into();
    primary_before["route"][1]["weight"] = 0.into();
    assert_eq!(
        vs["spec"]["http"][1].to_string(),
        primary_before.to_string()
    );
    assert_eq!(vs["spec"]["hosts"], vs_before["spec"]["hosts"]);
    assert_eq!(vs["spec"]["gateways"], vs_before["spec"]["gateways"]);

    // Replicas: canary at 0 and its HPA gone; stable pre-scaled to stable + canary (3 + 2).
    let canary = get(&sim, "deployments", "web-canary").unwrap();
    assert_eq!(canary["spec"]["replicas"], 0);
    assert!(get(&sim, "horizontalpodautoscalers", "web-canary").is_none());
    let stable = get(&sim, "deployments", "web").unwrap();
    assert_eq!(stable["spec"]["replicas"], 5);
    assert_eq!(
        get(&sim, "horizontalpodautoscalers", "web").unwrap()["spec"]["minReplicas"],
        5
    );

    // Revision: the template of revision 2, which the controller renumbers to 4.
    assert_eq!(image(&stable), "web:1.1");
    assert_eq!(revision(&stable), 4);
    assert_eq!(
        stable
            .pointer("/metadata/annotations/team")
            .and_then(Value::as_str),
        Some("payments")
    );

    // Backups: every touched object as it was before, plus the plan and the progress.
    let cm = get(&sim, "configmaps", &report.backup).unwrap();
    let data = cm["data"].as_object().unwrap();
    let saved_stable: Value =
        serde_json::from_str(data["deployment.web.json"].as_str().unwrap()).unwrap();
    assert_eq!(image(&saved_stable), "web:1.2");
    let saved_vs: Value =
        serde_json::from_str(data["virtualservice.web.json"].as_str().unwrap()).unwrap();
    assert_eq!(weights(&saved_vs), [80, 20]);
    assert!(data.contains_key("hpa.web-canary.json") && data.contains_key("plan.json"));
    let ann = cm["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(ann["backout.dev/rollback-state"], "completed");
    assert_eq!(
        ann["backout.dev/rollback-steps"]
            .as_str()
            .unwrap()
            .split(',')
            .count(),
        6
    );

    // Events: one per step, carrying the trigger's metric values.
    let events = list(&sim, "events");
    assert_eq!(events.len(), 6, "{events:#?}");
    assert!(events
        .iter()
        .all(|e| e["note"].as_str().unwrap().contains("error_rate=0.071")));
    assert!(events
        .iter()
        .any(|e| e["reason"] == "RollbackUndoStable" && e["regarding"]["name"] == "web"));
}

#[tokio::test(start_paused = true)]
async fn the_same_canary_revision_is_never_rolled_back_twice() {
    let sim = cluster::start(&Scenario::default()).await;
    actuator(&sim)
        .rollback(&Policy::test(), request(Some(2)))
        .await
        .unwrap();
    let writes = sim.traffic().writes();
    let again = actuator(&sim)
        .rollback(&Policy::test(), request(Some(2)))
        .await
        .unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyCompleted);
    assert_eq!(
        sim.traffic().writes(),
        writes,
        "a second run must not write anything"
    );
    assert_eq!(revision(&get(&sim, "deployments", "web").unwrap()), 4);
}

#[tokio::test(start_paused = true)]
async fn dry_run_writes_nothing_and_reports_every_change() {
    let sim = cluster::start(&Scenario::default().with_hpas(10).progressing()).await;
    let before: Vec<Value> = [
        "deployments",
        "virtualservices",
        "horizontalpodautoscalers",
        "replicasets",
    ]
    .iter()
    .flat_map(|p| list(&sim, p))
    .collect();
    let mut req = request(Some(1));
    req.dry_run = true;
    let report = actuator(&sim).rollback(&Policy::test(), req).await.unwrap();
    assert_eq!(report.outcome, Outcome::DryRun);
    let after: Vec<Value> = [
        "deployments",
        "virtualservices",
        "horizontalpodautoscalers",
        "replicasets",
    ]
    .iter()
    .flat_map(|p| list(&sim, p))
    .collect();
    assert_eq!(before, after);
    assert_eq!(sim.traffic().writes(), 0);
    assert!(list(&sim, "configmaps").is_empty());
    // The server was asked to validate each write with dryRun=All.
    assert!(sim.traffic().log().iter().any(|(m, p)| m == "PATCH"
        && p.contains("virtualservices/web")
        && p.contains("dryRun=All")));

    let step = |k: &str| {
        report
            .steps
            .iter()
            .find(|s| s.step == k)
            .unwrap_or_else(|| panic!("{k}: {report:#?}"))
    };
    assert!(
        report
            .steps
            .iter()
            .all(|s| s.outcome == StepOutcome::WouldChange),
        "{report:#?}"
    );
    let route = serde_json::to_string(&step("route_all_to_stable").diffs).unwrap();
    assert!(
        route.contains("/spec/http/1/route/0/weight") && route.contains("100"),
        "{route}"
    );
    let undo = serde_json::to_string(&step("undo_stable").diffs).unwrap();
    assert!(undo.contains("web:1.0"), "{undo}");
    // Resume sees the simulated pause and would un-pause.
    let resume = serde_json::to_string(&step("resume_stable").diffs).unwrap();
    assert!(resume.contains("/spec/paused"), "{resume}");
}

#[tokio::test(start_paused = true)]
async fn restore_puts_every_object_back() {
    let sim = cluster::start(&Scenario::default().with_hpas(10)).await;
    let report = actuator(&sim)
        .rollback(&Policy::test(), request(Some(2)))
        .await
        .unwrap();
    let restored = actuator(&sim)
        .restore("default", &report.backup)
        .await
        .unwrap();
    assert_eq!(restored.len(), 5, "{restored:?}");
    assert_eq!(
        weights(&get(&sim, "virtualservices", "web").unwrap()),
        [80, 20]
    );
    assert_eq!(
        get(&sim, "deployments", "web-canary").unwrap()["spec"]["replicas"],
        2
    );
    assert_eq!(
        get(&sim, "horizontalpodautoscalers", "web-canary").unwrap()["spec"]["maxReplicas"],
        5
    );
    assert_eq!(
        get(&sim, "horizontalpodautoscalers", "web").unwrap()["spec"]["minReplicas"],
        1
    );
    let stable = get(&sim, "deployments", "web").unwrap();
    assert_eq!(image(&stable), "web:1.2");
    assert_eq!(stable["spec"]["replicas"], 3);
}

#[tokio::test(start_paused = true)]
async fn progressing_stable_is_paused_first_and_resumed_after_undo() {
    let sim = cluster::start(&Scenario::default().progressing()).await;
    let report = actuator(&sim)
        .rollback(&Policy::test(), request(Some(2)))
        .await
        .unwrap();
    let keys: Vec<&str> = report.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(keys.first(), Some(&"pause_stable"));
    assert_eq!(&keys[keys.len() - 2..], ["resume_stable", "verify"]);
    let stable = get(&sim, "deployments", "web").unwrap();
    assert_eq!(stable["spec"]["paused"], false);
    assert_eq!(image(&stable), "web:1.1");
    // Undone exactly once, while paused; the controller rolled it out on resume as revision 4.
    assert_eq!(revision(&stable), 4);
    let revisions: Vec<i64> = list(&sim, "replicasets")
        .iter()
        .filter(|rs| rs["metadata"]["ownerReferences"][0]["name"] == "web")
        .map(revision)
        .collect();
    assert_eq!(revisions.iter().max(), Some(&4));
}

#[tokio::test(start_paused = true)]
async fn undo_is_skipped_when_the_stable_already_runs_the_recorded_revision() {
    let sim = cluster::start(&Scenario::default()).await;
    let report = actuator(&sim)
        .rollback(&Policy::test(), request(Some(3)))
        .await
        .unwrap();
    assert!(report.steps.iter().all(|s| s.step != "undo_stable"));
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("already runs revision 3")),
        "{:?}",
        report.notes
    );
    let stable = get(&sim, "deployments", "web").unwrap();
    assert_eq!((image(&stable), revision(&stable)), ("web:1.2".into(), 3));
}

#[tokio::test(start_paused = true)]
async fn no_recorded_revision_leaves_the_stable_template_alone() {
    let sim = cluster::start(&Scenario::default()).await;
    let report = actuator(&sim)
        .rollback(&Policy::test(), request(None))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    let stable = get(&sim, "deployments", "web").unwrap();
    assert_eq!((image(&stable), revision(&stable)), ("web:1.2".into(), 3));
    assert_eq!(
        weights(&get(&sim, "virtualservices", "web").unwrap()),
        [100, 0]
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_revision_fails_before_any_write_and_names_the_kept_revisions() {
    let sim = cluster::start(&Scenario::default()).await;
    let err = actuator(&sim)
        .rollback(&Policy::test(), request(Some(9)))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("revision 9") && msg.contains("[1, 2, 3]"),
        "{msg}"
    );
    assert_eq!(sim.traffic().writes(), 0);
}

#[tokio::test(start_paused = true)]
async fn wrong_route_name_names_the_policy_key() {
    let sim = cluster::start(&Scenario::default()).await;
    let mut policy = Policy::test();
    policy.traffic.route = "main".into();
    let err = actuator(&sim)
        .rollback(&policy, request(None))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("traffic.route") && msg.contains("primary") && msg.contains("test.toml"),
        "{msg}"
    );
    assert_eq!(sim.traffic().writes(), 0);
}
