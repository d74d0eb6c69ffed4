//! After the plan: recovery verified on the stable's metrics, the RTO, and escalation when the
//! service is not restored (issue 14). Paused tokio time against the in-process simulator with a
//! scripted Prometheus (tests/common/world.rs).

#[path = "common/world.rs"]
mod world;

use backout::audit::AuditKind;
use backout::daemon::Daemon;
use backout::notify::Notice;
use std::time::Duration;
use world::{policy, start, World};

fn incident_report(w: &World) -> String {
    let mut reports: Vec<String> = std::fs::read_dir(w.audit_dir.join("incidents"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

#[tokio::test(start_paused = true)]
async fn recovery_is_verified_on_the_stable_and_the_rto_reported() {
    let mut web = policy("web");
    web.verify.window = Duration::from_secs(60);
    web.rto = Some(Duration::from_secs(300));
    let w = World::new(std::slice::from_ref(&web), Duration::from_secs(1)).await;
    let ctx = w.context();
    let metrics = ctx.metrics.clone();
    // A minute of healthy stable readings: the pre-incident baseline.
    let (stop, task) = start(Daemon::new(ctx, vec![web.clone()]));
    tokio::time::sleep(Duration::from_secs(60)).await;
    w.sampler.turn_bad(&["web"]);
    tokio::time::sleep(Duration::from_secs(180)).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    let notices = w.notices.0.lock().unwrap().clone();
    let events: Vec<&str> = notices.iter().map(|n| n.event()).collect();
    assert_eq!(events, ["started", "completed", "resolved"], "{notices:#?}");
    let Notice::RollbackResolved {
        started,
        resolved,
        recovery,
        rto,
        ..
    } = &notices[2]
    else {
        unreachable!()
    };
    assert!(recovery.starts_with("recovered at +"), "{recovery}");
    // Recovered at the first clean poll after the plan (within one 10 s interval of it), so
    // RTO = detection -> that poll; well inside the 5m target.
    let rto_s = (resolved - started) as f64 / 1000.0;
    assert!((0.0..=40.0).contains(&rto_s), "rto {rto_s}");
    assert!(rto.ends_with("(target 5m: met)"), "{rto}");
    let text = notices[2].text();
    assert!(text.contains("Recovery: recovered at +"), "{text}");
    assert!(text.contains("RTO: "), "{text}");
    // The resolution came a whole verify window after the plan completed.
    let completed = w.audit_of(AuditKind::RollbackCompleted)[0].1;
    let verified = w.audit_of(AuditKind::RecoveryVerified)[0].1;
    assert!(verified - completed >= 60_000, "{completed} -> {verified}");

    let report = incident_report(&w);
    assert!(
        report.contains("- **Recovery**: recovered at +"),
        "{report}"
    );
    assert!(report.contains("- **RTO**: "), "{report}");
    assert!(
        report.contains("recovery verified on the metrics"),
        "{report}"
    );
    let m = metrics.encode();
    assert!(
        m.contains("backout_recoveries_total{service=\"web\",outcome=\"recovered\"} 1"),
        "{m}"
    );
    assert!(m.contains("backout_rto_seconds{service=\"web\"}"), "{m}");
    assert!(
        m.contains("backout_rto_target_seconds{service=\"web\"} 300"),
        "{m}"
    );
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rollback_that_does_not_restore_the_service_escalates() {
    let mut web = policy("web");
    web.verify.window = Duration::from_secs(60);
    web.verify.restore_within = Duration::from_secs(120);
    let w = World::new(std::slice::from_ref(&web), Duration::from_secs(1)).await;
    let ctx = w.context();
    let metrics = ctx.metrics.clone();
    let (stop, task) = start(Daemon::new(ctx, vec![web.clone()]));
    tokio::time::sleep(Duration::from_secs(30)).await;
    // A shared dependency broke: the canary and then the stable fail.
    w.sampler.turn_bad(&["web"]);
    w.sampler.turn_stable_bad(&["web"]);
    tokio::time::sleep(Duration::from_secs(240)).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    let notices = w.notices.0.lock().unwrap().clone();
    let events: Vec<&str> = notices.iter().map(|n| n.event()).collect();
    assert_eq!(
        events,
        ["started", "completed", "escalation"],
        "{notices:#?}"
    );
    let text = notices[2].text();
    assert!(
        text.starts_with("🔥 ESCALATION: prod/web needs a human now"),
        "{text}"
    );
    assert!(
        text.contains("Reason: the service is not restored"),
        "{text}"
    );
    assert!(text.contains("errors = 0.5"), "{text}");
    assert_eq!(w.audit_of(AuditKind::Escalated).len(), 1);
    let report = incident_report(&w);
    assert!(report.contains("- **Recovery**: not recovered"), "{report}");
    let m = metrics.encode();
    assert!(
        m.contains("backout_escalations_total{reason=\"not_recovered\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("backout_recoveries_total{service=\"web\",outcome=\"not_recovered\"} 1"),
        "{m}"
    );
    w.sim.shutdown().await;
}

/// Runbook 003: "escalate immediately if the rollback fails after 2 attempts", on a timed path;
/// the recovery that follows calls the rest of the path off and resolves it where it paged.
#[tokio::test(start_paused = true)]
async fn a_rollback_failing_twice_escalates_on_the_timed_path_and_recovery_resolves_it() {
    let mut web = policy("web");
    web.verify.window = Duration::from_secs(60);
    web.notify = Some(vec!["oncall".into()]);
    web.escalation = vec![
        step("0s", &["devops-lead"]),
        step("1m", &["pagerduty"]),
        step("10m", &["cto"]),
    ];
    let w = World::new(std::slice::from_ref(&web), Duration::from_secs(1)).await;
    // Each attempt tries the route patch 8 times: attempts 1 and 2 fail, attempt 3 lands.
    w.sim
        .faults()
        .server_errors(Some("PATCH"), "/virtualservices/web", 503, 20);
    let actions = backout::settings::Actions {
        retry_initial: Duration::from_secs(20),
        ..Default::default()
    };
    let ctx = w.context();
    let metrics = ctx.metrics.clone();
    let (stop, task) = start(Daemon::with_actions(ctx, vec![web.clone()], actions));
    tokio::time::sleep(Duration::from_secs(30)).await;
    w.sampler.turn_bad(&["web"]);
    tokio::time::sleep(Duration::from_secs(900)).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    let sent = w.notices.1.lock().unwrap().clone();
    let log: Vec<(&str, Vec<String>)> = sent
        .iter()
        .map(|e| {
            let mut to = e.route.clone().unwrap_or_default();
            to.extend(e.also.clone());
            (e.notice.event(), to)
        })
        .collect();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        log,
        vec![
            ("started", names(&["oncall"])),
            ("failed", names(&["oncall"])),
            ("escalation", names(&["devops-lead"])),
            ("completed", names(&["oncall"])),
            ("escalation", names(&["pagerduty"])),
            ("resolved", names(&["oncall", "devops-lead", "pagerduty"])),
        ],
        "{sent:#?}"
    );
    // The steps fired at their offsets from the escalation's start.
    let at = |i: usize| sent[i].notice.at();
    assert_eq!(at(4) - at(2), 60_000);
    assert!(sent[4]
        .notice
        .text()
        .contains("[escalation step 2 of 3, +1m]"));
    // Every notice of the incident carries the rollback id (PagerDuty's dedup key).
    let id = &sent[0].incident;
    assert_eq!(id.len(), 16, "{id}");
    assert!(sent.iter().all(|e| &e.incident == id), "{sent:#?}");
    let m = metrics.encode();
    assert!(
        m.contains("backout_escalations_total{reason=\"rollback_failed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("backout_recoveries_total{service=\"web\",outcome=\"recovered\"} 1"),
        "{m}"
    );
    w.sim.shutdown().await;
}

fn step(after: &str, channels: &[&str]) -> backout::policy::EscalationStep {
    backout::policy::EscalationStep {
        after: humantime::parse_duration(after).unwrap(),
        channels: channels.iter().map(|s| s.to_string()).collect(),
    }
}
