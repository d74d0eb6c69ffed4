//! Fault tests: conflicts, server errors, timeouts, dropped connections and "the write landed but
//! the answer was lost" on every step's requests; and a daemon killed after each write and
//! restarted. Every run must end with the same cluster state as an undisturbed run, every step
//! recorded once, and the stable undone exactly once.

#[path = "common/cluster.rs"]
mod cluster;

use backout::actuator::backup::backup_name;
use backout::actuator::fixtures::Scenario;
use backout::actuator::plan::rollback_id;
use backout::actuator::{Actuator, ActuatorConfig, Outcome, RollbackRequest, Trigger};
use backout::clock::ManualClock;
use backout::policy::Policy;
use backout::sim::{FaultAction, FaultRule, SimHandle};
use cluster::{end_state, get, list, max_stable_revision};
use std::sync::Arc;
use std::time::Duration;

fn scenario() -> Scenario {
    Scenario::default().with_hpas(10).progressing()
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

async fn undisturbed() -> (serde_json::Value, usize) {
    let sim = cluster::start(&scenario()).await;
    let report = actuator(&sim)
        .rollback(&Policy::test(), request())
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
    let (expected, _) = undisturbed().await;
    let canary = get(
        &cluster::start(&scenario()).await,
        "deployments",
        "web-canary",
    )
    .unwrap();
    let cm_path = format!(
        "configmaps/{}",
        backup_name("web", &rollback_id(&Policy::test(), &canary))
    );
    let targets: Vec<(&str, String)> = vec![
        ("PATCH", "deployments/web".into()), // pause, undo, resume
        ("PATCH", "horizontalpodautoscalers/web".into()), // pre-scale (HPA min)
        ("PATCH", "deployments/web/scale".into()), // pre-scale (replicas)
        ("PATCH", "virtualservices/web".into()), // route
        ("DELETE", "horizontalpodautoscalers/web-canary".into()),
        ("PATCH", "deployments/web-canary/scale".into()),
        ("PATCH", cm_path.clone()), // progress records
        ("POST", "namespaces/default/configmaps".into()), // backup creation
        ("GET", "deployments/web".into()), // every observation
        ("GET", "virtualservices/web".into()),
    ];
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
            let sim = cluster::start(&scenario()).await;
            let rule = FaultRule::new(Some(method), path, *kind).times(*times);
            sim.faults().add(rule.at_path_end());
            let report = actuator(&sim)
                .rollback(&Policy::test(), request())
                .await
                .unwrap_or_else(|e| panic!("{method} {path} {kind:?}: {e}"));
            let what = format!("{method} {path} {kind:?} x{times}");
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
    let (expected, total_writes) = undisturbed().await;
    assert!(
        total_writes >= 15,
        "the plan has at least 15 writes, got {total_writes}"
    );
    for k in 1..=total_writes {
        let sim = cluster::start(&scenario()).await;
        sim.traffic().kill_after_writes(k);
        let first = actuator(&sim);
        let policy = Policy::test();
        tokio::select! {
            r = first.rollback(&policy, request()) => panic!("kill after write {k}: first run returned {r:?}"),
            _ = sim.traffic().killed() => {}
        }
        drop(first);
        sim.traffic().revive();
        let report = actuator(&sim)
            .rollback(&Policy::test(), request())
            .await
            .unwrap_or_else(|e| panic!("restart after write {k}: {e}"));
        let want = if k == total_writes {
            Outcome::AlreadyCompleted
        } else {
            Outcome::Completed
        };
        assert_eq!(report.outcome, want, "restart after write {k}");
        assert!(
            k == 1 || report.resumed || k == total_writes,
            "restart after write {k} did not resume"
        );
        assert_eq!(end_state(&sim).await, expected, "restart after write {k}");
        assert_eq!(
            max_stable_revision(&sim),
            4,
            "restart after write {k}: undo repeated"
        );
        // A third daemon finds nothing to do.
        let writes = sim.traffic().writes();
        let third = actuator(&sim)
            .rollback(&Policy::test(), request())
            .await
            .unwrap();
        assert_eq!(third.outcome, Outcome::AlreadyCompleted);
        assert_eq!(sim.traffic().writes(), writes);
    }
}

#[tokio::test(start_paused = true)]
async fn an_endless_conflict_storm_gives_up_records_failed_and_a_later_run_finishes() {
    let (expected, _) = undisturbed().await;
    let sim = cluster::start(&scenario()).await;
    sim.faults().add(
        FaultRule::new(Some("PATCH"), "virtualservices/web", FaultAction::Conflict)
            .times(1000)
            .at_path_end(),
    );
    let err = actuator(&sim)
        .rollback(&Policy::test(), request())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("route_all_to_stable")
            && msg.contains("8 attempts")
            && msg.contains("resumes"),
        "{msg}"
    );
    let cm = &list(&sim, "configmaps")[0];
    assert_eq!(
        cm["metadata"]["annotations"]["backout.dev/rollback-state"],
        "failed"
    );
    // Bounded: 8 attempts, not 1000.
    let tries = sim
        .traffic()
        .log()
        .iter()
        .filter(|(m, p)| {
            m == "PATCH"
                && p.starts_with(
                    "/apis/networking.istio.io/v1/namespaces/default/virtualservices/web",
                )
        })
        .count();
    assert_eq!(tries, 8);

    // The storm passes; the next run resumes the same rollback and completes it.
    sim.faults().clear();
    let report = actuator(&sim)
        .rollback(&Policy::test(), request())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(report.resumed);
    assert_eq!(end_state(&sim).await, expected);
    assert_eq!(max_stable_revision(&sim), 4);
}

#[tokio::test(start_paused = true)]
async fn canary_pods_that_never_go_away_fail_verification_instead_of_reporting_success() {
    // The canary's pods never go away (a node gone): its rollout stalls from the start.
    let sim = cluster::start(&scenario()).await;
    sim.stall_rollout("default", "web-canary");
    let err = actuator(&sim)
        .rollback(&Policy::test(), request())
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
