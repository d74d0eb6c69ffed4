//! The fleet guard on paused time: many canaries going bad in the same minute is likely a shared
//! cause; only `max_rollbacks` are rolled back, the rest are held with an Event each and one
//! notice, and a policy that opts out is never held.

#[path = "common/world.rs"]
mod world;

use backout::audit::AuditKind;
use backout::daemon::fleet_guard::FleetGuard;
use backout::daemon::Daemon;
use backout::notify::Notice;
use backout::policy::Policy;
use std::time::Duration;
use world::{policy, start, World};

#[tokio::test(start_paused = true)]
async fn thirty_canaries_bad_in_the_same_minute_five_rolled_back_the_rest_held_one_notice() {
    let names: Vec<String> = (0..30).map(|i| format!("svc{i}")).collect();
    let mut policies: Vec<Policy> = names.iter().map(|n| policy(n)).collect();
    policies[29].analysis.fleet_guard = false; // the shared dependency itself: never held
    let w = World::new(&policies, Duration::from_secs(1)).await;
    let ctx = w.context();
    let guard = FleetGuard::new(
        ctx.client.clone(),
        "backout-system",
        5,
        Duration::from_secs(600),
    );
    let daemon = Daemon::new(ctx, policies.clone()).with_fleet_guard(guard);
    let (stop, task) = start(daemon);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    w.sampler.turn_bad(&refs);
    tokio::time::sleep(Duration::from_secs(120)).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    let mitigated: Vec<&Policy> = policies.iter().filter(|p| w.mitigated(p)).collect();
    assert_eq!(mitigated.len(), 6, "5 admitted + the one that opted out");
    assert!(mitigated.iter().any(|p| p.service == "svc29"));
    let held = w.audit_of(AuditKind::RollbackHeld);
    assert_eq!(held.len(), 24, "{held:?}");
    let fleet: Vec<Notice> = w
        .notices
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|n| matches!(n, Notice::FleetHeld { .. }))
        .cloned()
        .collect();
    assert_eq!(fleet.len(), 1, "one fleet notice: {fleet:?}");
    assert!(fleet[0].text().contains("likely a shared cause; held"));
    // Each held service says why on its canary Deployment.
    let events = w
        .sim
        .store()
        .read(|t| t.list("events.k8s.io", "events", Some("prod")));
    let held_events = events
        .iter()
        .filter(|e| e["reason"] == "RollbackHeld")
        .count();
    assert_eq!(held_events, 24, "{events:?}");
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_shared_dependency_down_is_held_with_one_notice_an_audit_record_and_a_count() {
    // Both tracks of `web` fail half their requests; `api`'s canary alone does.
    let mut policies = vec![policy("web"), policy("api")];
    for p in &mut policies {
        p.analysis.traffic_query = Some("sum(rate(requests_total[{{window}}]))".into());
    }
    let w = World::new(&policies, Duration::from_secs(1)).await;
    let ctx = w.context();
    let metrics = ctx.metrics.clone();
    let (stop, task) = start(Daemon::new(ctx, policies.clone()));
    tokio::time::sleep(Duration::from_secs(90)).await;
    w.sampler.turn_shared_bad(&["web"]);
    w.sampler.turn_bad(&["api"]);
    tokio::time::sleep(Duration::from_secs(120)).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    assert!(!w.mitigated(&policies[0]), "a shared cause was rolled back");
    assert!(
        w.mitigated(&policies[1]),
        "a bad canary was not rolled back"
    );
    let shared: Vec<Notice> = w
        .notices
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|n| matches!(n, Notice::SharedCause { .. }))
        .cloned()
        .collect();
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert!(
        shared[0]
            .text()
            .contains("both tracks breach; the canary is not worse"),
        "{}",
        shared[0].text()
    );
    let audited = w.audit_of(AuditKind::SharedCause);
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].0, "web");
    let text = metrics.encode();
    assert!(
        text.contains("backout_shared_total{service=\"web\"} 1"),
        "{text}"
    );
}
