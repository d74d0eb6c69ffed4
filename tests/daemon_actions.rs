//! Rollbacks run off the evaluation path (issue 10): on paused tokio time against the in-process
//! simulator, whose rollouts take as long as the test says. A rollback waiting on a slow rollout
//! delays no other service's evaluation; services going bad together are mitigated together; a
//! daemon killed mid-rollback is followed by one that resumes it and finishes it exactly once.

#[path = "common/world.rs"]
mod world;

use backout::audit::{AuditKind, FileAudit};
use backout::daemon::Daemon;
use backout::demo::canary_weight;
use backout::policy::Policy;
use backout::settings::Actions;
use backout::sim::SimHandle;
use backout::telemetry::Metrics;
use std::time::Duration;
use tokio::time::Instant;
use world::{policy, start, World};

#[tokio::test(start_paused = true)]
async fn a_rollback_waiting_60s_on_its_rollout_delays_no_other_evaluation() {
    let (web, api) = (policy("web"), policy("api"));
    let w = World::new(&[web.clone(), api.clone()], Duration::from_secs(60)).await;
    w.sampler.turn_bad(&["web"]);
    let daemon = Daemon::new(w.context(), vec![web.clone(), api.clone()]);
    let off = daemon.schedule().slot("prod/api").unwrap().offset;
    let (stop, task) = start(daemon);

    let done = w.mitigated_at(&web, Duration::from_secs(200)).await;
    let until = Instant::now() + Duration::from_secs(200);
    while w.audit_of(AuditKind::RollbackCompleted).is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();

    let started = w.audit_of(AuditKind::RollbackStarted);
    let completed = w.audit_of(AuditKind::RollbackCompleted);
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(completed.len(), 1, "{completed:?}");
    let (t0, t1) = (started[0].1 as u64, completed[0].1 as u64);
    assert!(done.is_some(), "web was not mitigated");
    assert!(
        t1 - t0 >= 60_000,
        "the rollback waited on a 60 s rollout: {t0}..{t1}"
    );
    // api was judged at each of its slots throughout, on time to the millisecond.
    let api_times = w.sampler.times_of("api");
    for (k, t) in api_times.iter().enumerate() {
        assert_eq!(
            *t,
            off + k as u64 * 10_000,
            "api evaluation #{k}: {api_times:?}"
        );
    }
    let during = api_times.iter().filter(|t| (t0..t1).contains(t)).count();
    assert!(
        during >= 6,
        "api evaluations while web rolled back: {during}"
    );
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn services_going_bad_together_are_mitigated_within_one_poll_of_each_other() {
    let names = ["a", "b", "c", "d"];
    let policies: Vec<Policy> = names.iter().map(|n| policy(n)).collect();
    let w = World::new(&policies, Duration::from_secs(30)).await;
    // Fewer places at the gate than services: rollbacks waiting on their rollouts give theirs
    // up, so four are mitigated together although only two may work the API at once.
    let actions = Actions {
        max_concurrent: 2,
        ..Actions::default()
    };
    let daemon = Daemon::with_actions(w.context(), policies.clone(), actions);
    let (stop, task) = start(daemon);
    tokio::time::sleep(Duration::from_secs(25)).await;
    w.sampler.turn_bad(&names);
    let bad_at = w.sampler.origin.elapsed().as_millis() as u64;

    let watch = policies
        .iter()
        .map(|p| w.mitigated_at(p, Duration::from_secs(120)));
    let at = futures::future::join_all(watch).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let at: Vec<u64> = at.into_iter().map(|t| t.expect("mitigated")).collect();
    let (first, last) = (*at.iter().min().unwrap(), *at.iter().max().unwrap());
    assert!(last - first <= 10_000, "mitigated at {at:?}");
    // Detection takes one poll (<= 10 s); then each pre-scales its stable and waits the 30 s
    // rollout before moving traffic, all of them at once.
    assert!(
        last - bad_at <= 10_000 + 30_000 + 5_000,
        "{at:?} vs {bad_at}"
    );
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_daemon_killed_mid_rollback_is_resumed_at_start_up_and_finishes_once() {
    let web = policy("web");
    let w = World::new(std::slice::from_ref(&web), Duration::from_secs(60)).await;
    w.sampler.turn_bad(&["web"]);
    let (_stop, first) = start(Daemon::new(w.context(), vec![web.clone()]));
    // The rollback starts within a poll and then waits on the 60 s rollout: kill it there.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(w.audit_of(AuditKind::RollbackStarted).len(), 1);
    assert!(w.audit_of(AuditKind::RollbackCompleted).is_empty());
    first.abort();
    let _ = first.await;
    let backups = w
        .sim
        .store()
        .read(|t| t.list("", "configmaps", Some("prod")));
    let state = |cm: &serde_json::Value| {
        cm.pointer("/metadata/annotations/backout.dev~1rollback-state")
            .and_then(|s| s.as_str())
            .map(String::from)
    };
    assert_eq!(backups.len(), 1);
    assert_eq!(state(&backups[0]).as_deref(), Some("running"));

    // A new daemon (the next pod) finds it and finishes it; the canary is judged afresh too,
    // and its own rollback verdict meets a rollback that is already done.
    let (stop, second) = start(Daemon::new(w.context(), vec![web.clone()]));
    tokio::time::sleep(Duration::from_secs(120)).await;
    stop.send(true).unwrap();
    second.await.unwrap();

    assert!(w.mitigated(&web));
    let started = w.audit_of(AuditKind::RollbackStarted);
    assert_eq!(started.len(), 2, "{started:?}");
    let trail = FileAudit::read_trail(&w.audit_dir.join("audit.jsonl")).unwrap();
    assert!(
        trail.iter().any(|r| r
            .message
            .starts_with("resuming the rollback left under way")),
        "the second daemon resumed it at start-up"
    );
    let backups = w
        .sim
        .store()
        .read(|t| t.list("", "configmaps", Some("prod")));
    assert_eq!(backups.len(), 1, "one rollback, one backup");
    assert_eq!(state(&backups[0]).as_deref(), Some("completed"));
    let completed: Vec<_> = trail
        .iter()
        .filter(|r| r.kind == AuditKind::RollbackCompleted)
        .collect();
    assert_eq!(completed.len(), 1, "finished exactly once: {completed:?}");
    assert_eq!(completed[0].detail["resumed"], true);
    assert_eq!(completed[0].detail["outcome"], "completed");
    w.sim.shutdown().await;
}

/// The simulator's router in process behind the daemon's own client layers (deadline, rate
/// limit, metrics), so paused time applies to the deadline too.
fn layered_client(sim: &SimHandle, deadline: Duration, metrics: &Metrics) -> kube::Client {
    let inner = sim.in_process_client();
    let svc = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
        let inner = inner.clone();
        async move { inner.send(req).await }
    });
    let limits = backout::kubeclient::ClientLimits {
        request_timeout: deadline,
        qps: 100.0,
        burst: 200,
    };
    let builder = kube::client::ClientBuilder::new(svc, "default");
    backout::kubeclient::layers(builder, &limits, metrics)
        .unwrap()
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_hanging_kubernetes_call_fails_at_its_deadline_and_the_cycle_goes_on() {
    let web = policy("web");
    let mut stuck = policy("stuck");
    stuck.namespace = "limbo".into();
    let w = World::new(&[web.clone(), stuck.clone()], Duration::from_secs(1)).await;
    // Every Deployment read in `limbo` hangs for an hour: the watch cannot sync, GETs hang.
    w.sim.faults().latency(
        Some("GET"),
        "/namespaces/limbo/deployments",
        Duration::from_secs(3600),
    );
    let mut ctx = w.context();
    ctx.client = layered_client(&w.sim, Duration::from_secs(2), &ctx.metrics);
    let metrics = ctx.metrics.clone();
    let mut daemon = Daemon::new(ctx, vec![web.clone(), stuck.clone()]);

    let began = Instant::now();
    let out = daemon.cycle().await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "one cycle took {took:?}: the hung read must end at its 2 s deadline"
    );
    let of = |name: &str| out.iter().find(|o| o.service == name).unwrap();
    let err = of("stuck").error.clone().expect("the hung read failed");
    assert!(err.contains("limbo/stuck"), "{err}");
    assert!(of("web").error.is_none());
    assert!(
        of("web").verdict.is_some(),
        "web was judged in the same cycle"
    );
    let text = metrics.encode();
    assert!(
        text.lines()
            .any(|l| l.starts_with("backout_kubernetes_requests_total{")
                && l.contains("verb=\"get\"")
                && l.contains("outcome=\"timeout\"")),
        "{text}"
    );
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_rollback_is_retried_with_backoff_until_it_lands() {
    let web = policy("web");
    let w = World::new(std::slice::from_ref(&web), Duration::from_secs(1)).await;
    // The route patch fails 12 times: the first attempt gives up after its 8 tries.
    w.sim
        .faults()
        .server_errors(Some("PATCH"), "/virtualservices/web", 503, 12);
    w.sampler.turn_bad(&["web"]);
    let actions = Actions {
        retry_initial: Duration::from_secs(20),
        ..Actions::default()
    };
    let (stop, task) = start(Daemon::with_actions(
        w.context(),
        vec![web.clone()],
        actions,
    ));
    let done = w.mitigated_at(&web, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    assert!(done.is_some(), "mitigated on a later attempt");
    let trail = FileAudit::read_trail(&w.audit_dir.join("audit.jsonl")).unwrap();
    let failed: Vec<_> = trail
        .iter()
        .filter(|r| r.kind == AuditKind::RollbackFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]
            .message
            .contains("attempt 1 failed (retrying in 20s)"),
        "{}",
        failed[0].message
    );
    let completed = w.audit_of(AuditKind::RollbackCompleted);
    assert_eq!(completed.len(), 1);
    assert!(
        completed[0].1 - failed[0].at + 1_800_000_000_000 >= 20_000,
        "the retry waited its backoff"
    );
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_daemon_rolls_back_services_on_every_router_alike() {
    use backout::policy::TrafficKind;
    let policies = vec![
        world::policy_on("mesh", TrafficKind::Istio),
        world::policy_on("gateway", TrafficKind::GatewayApi),
        world::policy_on("plain", TrafficKind::Replicas),
    ];
    let w = World::new(&policies, Duration::from_secs(5)).await;
    let daemon = Daemon::new(w.context(), policies.clone());
    let (stop, task) = start(daemon);
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        policies.iter().all(|p| !w.mitigated(p)),
        "nothing is bad yet"
    );
    w.sampler.turn_bad(&["mesh", "gateway", "plain"]);
    let watch = policies
        .iter()
        .map(|p| w.mitigated_at(p, Duration::from_secs(120)));
    let at = futures::future::join_all(watch).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert!(at.iter().all(Option::is_some), "mitigated at {at:?}");
    // The HTTPRoute's other rule is untouched; the plain service's stable took the canary's
    // replica before the canary went (3 + 1).
    let route = w
        .sim
        .object("gateway.networking.k8s.io", "httproutes", "prod", "gateway")
        .unwrap();
    assert_eq!(route["spec"]["rules"][0]["name"], "health");
    assert_eq!(route["spec"]["rules"][1]["backendRefs"][0]["weight"], 100);
    assert_eq!(
        backout::demo::replicas(&w.sim, "prod", "plain"),
        Some(4),
        "pre-scaled"
    );
    let rolled: Vec<String> = w
        .audit_of(AuditKind::RollbackCompleted)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(rolled.len(), 3, "{rolled:?}");
    w.sim.shutdown().await;
}

/// `action = "notify"` (shadow mode): the bad canary is decided on, reported and notified,
/// and nothing in the cluster changes.
#[tokio::test(start_paused = true)]
async fn shadow_mode_decides_reports_and_notifies_but_changes_nothing() {
    let mut web = policy("web");
    web.action = backout::policy::ActionMode::Notify;
    let w = World::new(std::slice::from_ref(&web), Duration::from_secs(1)).await;
    w.sampler.turn_bad(&["web"]);
    let (stop, task) = start(Daemon::new(w.context(), vec![web.clone()]));
    // Long enough for a rollback to have been decided and (were it real) completed.
    tokio::time::sleep(Duration::from_secs(120)).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    assert!(!w.mitigated(&web), "shadow mode changed the cluster");
    assert_eq!(backout::demo::canary_weight(&w.sim, &web), Some(10));
    let trail = FileAudit::read_trail(&w.audit_dir.join("audit.jsonl")).unwrap();
    let completed: Vec<_> = trail
        .iter()
        .filter(|r| r.kind == AuditKind::RollbackCompleted)
        .collect();
    assert_eq!(completed.len(), 1, "decided once");
    assert_eq!(completed[0].message, "DryRun");
    let reports: Vec<_> = std::fs::read_dir(w.audit_dir.join("incidents"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].contains("dry run: nothing was changed"),
        "{}",
        reports[0]
    );
    let notices = w.notices.0.lock().unwrap().clone();
    let texts: Vec<String> = notices.iter().map(|n| n.text()).collect();
    assert!(
        texts[0].contains("[shadow mode: nothing changed] would roll back from canary"),
        "{texts:#?}"
    );
    w.sim.shutdown().await;
}

/// Promotes `web` (a new stable template, the canary scaled to zero, the route left at 90/10),
/// turns the stable bad inside its bake window and returns the stable's template annotations
/// once the rollback completed, with the notices' texts.
async fn bad_promotion(
    mode: backout::policy::ActionMode,
) -> (World, Policy, serde_json::Value, Vec<String>) {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let mut web = policy("web");
    web.action = mode;
    let w = World::new(std::slice::from_ref(&web), Duration::from_secs(1)).await;
    let (stop, task) = start(Daemon::new(w.context(), vec![web.clone()]));
    // First sight: the stable is recorded as the last known good revision.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let deployments: kube::Api<Deployment> =
        kube::Api::namespaced(w.sim.in_process_client(), "prod");
    let promote =
        serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"ci/build": "2"}}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(promote))
        .await
        .unwrap();
    let scale = serde_json::json!({"spec": {"replicas": 0}});
    deployments
        .patch(
            "web-canary",
            &PatchParams::default(),
            &Patch::Strategic(scale),
        )
        .await
        .unwrap();
    // The new stable revision is seen: its 15-minute bake window opens.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(
        canary_weight(&w.sim, &web),
        Some(10),
        "route left as it was"
    );
    w.sampler.turn_stable_bad(&["web"]);
    let until = Instant::now() + Duration::from_secs(120);
    while w.audit_of(AuditKind::RollbackCompleted).is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(w.audit_of(AuditKind::RollbackCompleted).len(), 1);
    let stable = w.sim.object("apps", "deployments", "prod", "web").unwrap();
    let annotations = stable["spec"]["template"]["metadata"]["annotations"].clone();
    let texts = w
        .notices
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|n| n.text())
        .collect();
    (w, web, annotations, texts)
}

/// `action = "contain"` (a one-way migration): a promoted release going bad in its bake window
/// is contained (all traffic to the stable, canary at zero) and the stable is NOT undone; the
/// same incident under `action = "rollback"` undoes it, so the scenario is a real bake rollback.
#[tokio::test(start_paused = true)]
async fn contain_in_the_bake_window_routes_to_stable_and_never_undoes_it() {
    use backout::policy::ActionMode;
    let (w, web, kept, texts) = bad_promotion(ActionMode::Contain).await;
    assert_eq!(canary_weight(&w.sim, &web), Some(0));
    assert_eq!(
        backout::demo::replicas(&w.sim, "prod", "web-canary"),
        Some(0)
    );
    assert_eq!(kept["ci/build"], "2", "the stable was undone: {kept}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Action: Containing: all traffic to stable")
                && t.contains("(the stable is not undone)")),
        "{texts:#?}"
    );
    w.sim.shutdown().await;

    let (w, web, undone, _) = bad_promotion(ActionMode::Rollback).await;
    assert_eq!(canary_weight(&w.sim, &web), Some(0));
    assert!(
        undone.get("ci/build").is_none(),
        "action = rollback returns the stable to its last known good template: {undone}"
    );
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rollback_never_waits_behind_the_start_ups_known_good_records() {
    let names = ["a", "b", "c", "d", "e", "f"];
    let policies: Vec<Policy> = names.iter().map(|n| policy(n)).collect();
    let w = World::new(&policies, Duration::from_secs(1)).await;
    // The first sight of each stable is recorded as its last known good revision; here those
    // writes take 20 s each for a..e, and only one book-keeping write runs at a time, so the
    // start-up's records take 100 s. f is bad from the start.
    for n in &names[..5] {
        w.sim.faults().latency(
            Some("PATCH"),
            &format!("/deployments/{n}"),
            Duration::from_secs(20),
        );
    }
    w.sampler.turn_bad(&["f"]);
    let actions = Actions {
        max_concurrent: 1,
        ..Actions::default()
    };
    let daemon = Daemon::with_actions(w.context(), policies.clone(), actions);
    let (stop, task) = start(daemon);
    let at = w.mitigated_at(&policies[5], Duration::from_secs(90)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let at = at.expect("f was not mitigated within 90 s");
    // One poll to decide, the rollback's own steps and the 1 s rollout: not the 100 s of
    // records queued before it.
    assert!(at <= 30_000, "f mitigated {at} ms after the start");
    w.sim.shutdown().await;
}
