//! Fault tests: conflicts, server errors, timeouts, dropped connections and "the write landed but
//! the answer was lost" on every step's requests; and a daemon killed after each write and
//! restarted. Every run must end with the same cluster state as an undisturbed run, every step
//! recorded once, and the stable undone exactly once. Each test runs once per router (Istio
//! VirtualService, Gateway API HTTPRoute, replica ratio): the guarantees are the actuator's, not
//! one router's.

#[path = "common/cluster.rs"]
mod cluster;

use backout::actuator::backup::backup_name;
use backout::actuator::fixtures::Scenario;
use backout::actuator::plan::rollback_id;
use backout::actuator::{Actuator, ActuatorConfig, Outcome, RollbackRequest, Trigger};
use backout::clock::ManualClock;
use backout::policy::TrafficKind;
use backout::sim::{FaultAction, FaultRule, SimHandle};
use cluster::{end_state, get, list, max_stable_revision, policy_for, router_path, ROUTERS};
use std::sync::Arc;
use std::time::Duration;

/// HPAs on both tracks and, with a router, a stable caught mid-rollout (pause, undo, resume).
/// Without a router the stable is settled, so the pre-scale's wait for ready capacity is met
/// (a stable that never gets ready is `actuator_plan`'s `replicas_mode_*` test).
fn scenario(router: TrafficKind) -> Scenario {
    let s = Scenario::default().with_hpas(10).with_router(router);
    match router {
        TrafficKind::Replicas => s,
        _ => s.progressing(),
    }
}

fn actuator(sim: &SimHandle) -> Actuator {
    let config = ActuatorConfig {
        verify_timeout: Duration::from_secs(60),
        verify_poll: Duration::from_millis(500),
        ..ActuatorConfig::default()
    };
    Actuator::new(
        sim.in_process_client(),
        Arc::new(ManualClock::new(0)),
        config,
    )
}

fn request() -> RollbackRequest {
    RollbackRequest {
        last_known_good: Some(2),
        trigger: Trigger::manual("p99 latency critical").with_value("latency_p99", 1.4),
        dry_run: false,
        gate: None,
    }
}

async fn undisturbed(router: TrafficKind) -> (serde_json::Value, usize) {
    let sim = cluster::start(&scenario(router)).await;
    let report = actuator(&sim)
        .rollback(&policy_for(router), request())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    (end_state(&sim).await, sim.traffic().writes())
}

fn progress_steps(sim: &SimHandle) -> Vec<String> {
    let cm = &list(sim, "configmaps")[0];
    cm["metadata"]["annotations"]["backout.dev/rollback-steps"]
        .as_str()
        .unwrap()
        .split(',')
        .map(String::from)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn faults_on_every_step_end_in_the_same_completed_rollback() {
    for router in ROUTERS {
        faults_on_every_step(router).await;
    }
}

async fn faults_on_every_step(router: TrafficKind) {
    let (expected, _) = undisturbed(router).await;
    let policy = policy_for(router);
    let canary = get(
        &cluster::start(&scenario(router)).await,
        "deployments",
        "web-canary",
    )
    .unwrap();
    let cm_path = format!(
        "configmaps/{}",
        backup_name("web", &rollback_id(&policy, &canary))
    );
    let mut targets: Vec<(&str, String)> = vec![
        ("PATCH", "deployments/web".into()), // pause, undo, resume
        ("PATCH", "horizontalpodautoscalers/web".into()), // pre-scale (HPA min)
        ("PATCH", "deployments/web/scale".into()), // pre-scale (replicas)
        ("DELETE", "horizontalpodautoscalers/web-canary".into()),
        ("PATCH", "deployments/web-canary/scale".into()),
        ("PATCH", cm_path.clone()), // progress records
        ("POST", "namespaces/default/configmaps".into()), // backup creation
        ("GET", "deployments/web".into()), // every observation
    ];
    if let Some(path) = router_path(router) {
        targets.push(("PATCH", path.into())); // route
        targets.push(("GET", path.into()));
    }
    let kinds = [
        (FaultAction::Conflict, 3),
        (FaultAction::ServerError(500), 3),
        (FaultAction::ServerError(503), 2),
        (FaultAction::Hang, 2),
        (FaultAction::Drop, 2),
        (FaultAction::AnswerLost, 1),
    ];
    for (method, path) in &targets {
        for (kind, times) in &kinds {
            let sim = cluster::start(&scenario(router)).await;
            let rule = FaultRule::new(Some(method), path, *kind).times(*times);
            sim.faults().add(rule.at_path_end());
            let report = actuator(&sim)
                .rollback(&policy, request())
                .await
                .unwrap_or_else(|e| panic!("{router:?} {method} {path} {kind:?}: {e}"));
            let what = format!("{router:?} {method} {path} {kind:?} x{times}");
            assert!(
                matches!(report.outcome, Outcome::Completed),
                "{what}: {report:?}"
            );
            assert_eq!(end_state(&sim).await, expected, "{what}");
            assert_eq!(
                max_stable_revision(&sim),
                4,
                "{what}: undo repeated or missing"
            );
            let steps = progress_steps(&sim);
            let mut unique = steps.clone();
            unique.dedup();
            assert_eq!(steps, unique, "{what}: a step recorded twice");
            // The fault really happened, as many times as injected.
            assert_eq!(sim.faults().fired(), *times, "{what}: fault never hit");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_daemon_killed_after_any_write_is_finished_by_the_next_one_exactly_once() {
    for router in ROUTERS {
        killed_after_any_write(router).await;
    }
}

async fn killed_after_any_write(router: TrafficKind) {
    let (expected, total_writes) = undisturbed(router).await;
    assert!(
        total_writes >= 14,
        "{router:?}: the plan has at least 14 writes, got {total_writes}"
    );
    let policy = policy_for(router);
    for k in 1..=total_writes {
        let sim = cluster::start(&scenario(router)).await;
        sim.traffic().kill_after_writes(k);
        let first = actuator(&sim);
        tokio::select! {
            r = first.rollback(&policy, request()) => panic!("{router:?} kill after write {k}: first run returned {r:?}"),
            _ = sim.traffic().killed() => {}
        }
        drop(first);
        sim.traffic().revive();
        let report = actuator(&sim)
            .rollback(&policy, request())
            .await
            .unwrap_or_else(|e| panic!("{router:?} restart after write {k}: {e}"));
        let what = format!("{router:?} restart after write {k}");
        let want = if k == total_writes {
            Outcome::AlreadyCompleted
        } else {
            Outcome::Completed
        };
        assert_eq!(report.outcome, want, "{what}");
        assert!(
            k == 1 || report.resumed || k == total_writes,
            "{what}: did not resume"
        );
        assert_eq!(end_state(&sim).await, expected, "{what}");
        assert_eq!(max_stable_revision(&sim), 4, "{what}: undo repeated");
        // A third daemon finds nothing to do.
        let writes = sim.traffic().writes();
        let third = actuator(&sim).rollback(&policy, request()).await.unwrap();
        assert_eq!(third.outcome, Outcome::AlreadyCompleted);
        assert_eq!(sim.traffic().writes(), writes);
    }
}

#[tokio::test(start_paused = true)]
async fn an_endless_conflict_storm_gives_up_records_failed_and_a_later_run_finishes() {
    for (router, group) in [
        (TrafficKind::Istio, "networking.istio.io"),
        (TrafficKind::GatewayApi, "gateway.networking.k8s.io"),
    ] {
        conflict_storm_on_the_router(router, group).await;
    }
}

async fn conflict_storm_on_the_router(router: TrafficKind, group: &str) {
    let (expected, _) = undisturbed(router).await;
    let policy = policy_for(router);
    let path = router_path(router).unwrap();
    let sim = cluster::start(&scenario(router)).await;
    sim.faults().add(
        FaultRule::new(Some("PATCH"), path, FaultAction::Conflict)
            .times(1000)
            .at_path_end(),
    );
    let err = actuator(&sim)
        .rollback(&policy, request())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("route_all_to_stable")
            && msg.contains("8 attempts")
            && msg.contains("resumes"),
        "{router:?}: {msg}"
    );
    let cm = &list(&sim, "configmaps")[0];
    assert_eq!(
        cm["metadata"]["annotations"]["backout.dev/rollback-state"],
        "failed"
    );
    // Bounded: 8 attempts, not 1000.
    let prefix = format!("/apis/{group}/v1/namespaces/default/{path}");
    let tries = sim
        .traffic()
        .log()
        .iter()
        .filter(|(m, p)| m == "PATCH" && p.starts_with(&prefix))
        .count();
    assert_eq!(tries, 8, "{router:?}");

    // The storm passes; the next run resumes the same rollback and completes it.
    sim.faults().clear();
    let report = actuator(&sim).rollback(&policy, request()).await.unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(report.resumed);
    assert_eq!(end_state(&sim).await, expected, "{router:?}");
    assert_eq!(max_stable_revision(&sim), 4);
}

#[tokio::test(start_paused = true)]
async fn canary_pods_that_never_go_away_fail_verification_instead_of_reporting_success() {
    // The canary's pods never go away (a node gone): its rollout stalls from the start.
    let sim = cluster::start(&scenario(TrafficKind::Istio)).await;
    sim.stall_rollout("default", "web-canary");
    let err = actuator(&sim)
        .rollback(&policy_for(TrafficKind::Istio), request())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("verification failed")
            && msg.contains("web-canary")
            && msg.contains("2 running"),
        "{msg}"
    );
    let cm = &list(&sim, "configmaps")[0];
    assert_eq!(
        cm["metadata"]["annotations"]["backout.dev/rollback-state"],
        "failed"
    );
    assert!(!progress_steps(&sim).contains(&"verify".to_string()));
}
