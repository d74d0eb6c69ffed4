//! Plan tests: step order per router, the pre-scale rule, the rollback id, old plans.
use super::*;
use crate::actuator::fixtures::Scenario;

fn keys(plan: &ActionPlan) -> Vec<String> {
    plan.steps.iter().map(Step::key).collect()
}

#[test]
fn pre_scale_restores_what_both_tracks_ran_capped_at_the_hpa_max() {
    assert_eq!(pre_scale_target(5, 5, 20), 10);
    assert_eq!(pre_scale_target(5, 5, 8), 8);
    assert_eq!(
        pre_scale_target(12, 3, 10),
        12,
        "never scales the stable down"
    );
    assert_eq!(pre_scale_target(4, 0, 10), 4);
}

#[test]
fn plan_for_a_shrunk_progressing_stable_with_hpas_has_every_step_in_order() {
    let s = Scenario::default().with_hpas(10).progressing();
    let plan = build_plan(
        &Policy::test(),
        &s.observed(),
        Some(1),
        Trigger::default(),
        7,
    )
    .unwrap();
    assert_eq!(
        keys(&plan),
        [
            "pause_stable",
            "pre_scale_stable",
            "route_all_to_stable",
            "neutralise_canary_hpa.web-canary",
            "scale_canary_to_zero",
            "undo_stable",
            "resume_stable",
            "verify"
        ]
    );
    assert!(matches!(
        plan.steps[1],
        Step::PreScaleStable { replicas: 5, .. }
    ));
    let Step::UndoStable(t) = &plan.steps[5] else {
        panic!()
    };
    assert_eq!(t.template["spec"]["containers"][0]["image"], "web:1.0");
    assert!(t.template["metadata"]["labels"]
        .get("pod-template-hash")
        .is_none());
}

#[test]
fn a_quiet_stable_without_hpa_and_without_recorded_revision_gets_only_the_canary_steps() {
    let plan = build_plan(
        &Policy::test(),
        &Scenario::default().observed(),
        None,
        Trigger::default(),
        0,
    )
    .unwrap();
    assert_eq!(
        keys(&plan),
        ["route_all_to_stable", "scale_canary_to_zero", "verify"]
    );
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("no last known good revision")));
}

#[test]
fn without_a_router_the_stable_is_pre_scaled_until_ready_and_no_route_step_is_planned() {
    let s = Scenario::default().with_router(TrafficKind::Replicas);
    let plan = build_plan(
        &Policy::test_replicas(),
        &s.observed(),
        None,
        Trigger::default(),
        0,
    )
    .unwrap();
    assert_eq!(
        keys(&plan),
        ["pre_scale_stable", "scale_canary_to_zero", "verify"]
    );
    assert_eq!(
        plan.steps[0],
        Step::PreScaleStable {
            hpa: None,
            replicas: 5,
            ready: true
        }
    );
    let s = Scenario::default().with_router(TrafficKind::GatewayApi);
    let plan = build_plan(
        &Policy::test_gateway(),
        &s.observed(),
        None,
        Trigger::default(),
        0,
    )
    .unwrap();
    assert_eq!(
        keys(&plan),
        ["route_all_to_stable", "scale_canary_to_zero", "verify"]
    );
    assert_eq!(
        (plan.router, plan.rule.as_deref()),
        (TrafficKind::GatewayApi, Some("split"))
    );
}

#[test]
fn a_plan_recorded_before_routers_were_a_choice_still_reads_as_istio() {
    let plan = build_plan(
        &Policy::test(),
        &Scenario::default().with_hpas(10).observed(),
        None,
        Trigger::default(),
        0,
    )
    .unwrap();
    let mut old = serde_json::to_value(&plan).unwrap();
    old.as_object_mut().unwrap().remove("router");
    // An older build wrote `hpa` as a plain string and knew no `ready`.
    assert_eq!(
        old["steps"][0],
        serde_json::json!({"step": "pre_scale_stable", "hpa": "web", "replicas": 5})
    );
    let read: ActionPlan = serde_json::from_value(old).unwrap();
    assert_eq!(read, plan);
    assert_eq!(read.traffic().router(), TrafficKind::Istio);
}

#[test]
fn rollback_id_follows_the_canary_template_only() {
    let obs = Scenario::default().observed();
    let id = rollback_id(&Policy::test(), &obs.canary);
    let mut scaled = obs.canary.clone();
    scaled["spec"]["replicas"] = 0.into();
    scaled["metadata"]["resourceVersion"] = "99".into();
    assert_eq!(
        rollback_id(&Policy::test(), &scaled),
        id,
        "scaling must not change the id"
    );
    let mut new_image = obs.canary.clone();
    new_image["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2.1".into();
    assert_ne!(
        rollback_id(&Policy::test(), &new_image),
        id,
        "a new canary revision is a new rollback"
    );
    assert_eq!(id.len(), 16);
}

#[test]
fn trigger_message_carries_values_and_fits_an_event() {
    let t = Trigger::manual("error_rate critical").with_value("error_rate", 0.07);
    assert_eq!(t.message(), "error_rate critical [error_rate=0.07]");
    let long = Trigger::manual(&"x".repeat(5000));
    assert!(long.message().len() <= 900);
}
