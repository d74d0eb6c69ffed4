//! Bad versions (issue 14): a completed rollback records the canary's template and images in
//! one ConfigMap; the same image rolled out again is rolled back at once, without evidence; a new
//! image is judged normally. Paused time, the in-process simulator, scripted Prometheus.

#[path = "common/world.rs"]
mod world;

use backout::audit::AuditKind;
use backout::daemon::bad_versions::{BadVersions, CONFIG_MAP};
use backout::daemon::Daemon;
use backout::demo::{canary_weight, replicas};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;
use std::time::Duration;
use world::{policy, start, World};

/// What a CI pipeline does to start a canary: a new pod template with `image`, one replica and
/// 10% of the traffic.
async fn deploy_canary(w: &World, p: &backout::policy::Policy, image: &str, build: &str) {
    let client = w.sim.in_process_client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &p.namespace);
    let patch = json!({"spec": {"replicas": 1, "template": {
        "metadata": {"annotations": {"ci/build": build}},
        "spec": {"containers": [{"name": "app", "image": image}]}}}});
    deployments
        .patch(
            &p.deployments.canary,
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rolled_back_image_is_remembered_and_rolled_back_at_once_when_redeployed() {
    let web = policy("web");
    let w = World::new(std::slice::from_ref(&web), Duration::from_secs(1)).await;
    let (stop, task) = start(Daemon::new(w.context(), vec![web.clone()]));
    w.sampler.turn_bad(&["web"]);
    assert!(w
        .mitigated_at(&web, Duration::from_secs(120))
        .await
        .is_some());
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Recorded: one ConfigMap in backout's namespace, the canary's image in it.
    let client = w.sim.in_process_client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "backout");
    let cm = cms.get(CONFIG_MAP).await.unwrap();
    let data = cm.data.unwrap();
    assert_eq!(data.len(), 1, "{data:?}");
    let entry: serde_json::Value = serde_json::from_str(data.values().next().unwrap()).unwrap();
    assert_eq!(entry["images"], json!(["web:1.1.0"]));
    assert_eq!(entry["service"], "prod/web");
    assert_eq!(w.audit_of(AuditKind::BadVersion).len(), 1);

    // The canary is healthy now, as far as metrics go: the same image redeployed (a new build of
    // the template) is rolled back at once, on the record alone.
    w.sampler.turn_good(&["web"]);
    deploy_canary(&w, &web, "web:1.1.0", "2").await;
    let redeployed = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        replicas(&w.sim, "prod", "web-canary"),
        Some(1),
        "the redeploy is running"
    );
    let back = w.mitigated_at(&web, Duration::from_secs(60)).await;
    assert!(back.is_some(), "the known bad version was not rolled back");
    assert!(
        redeployed.elapsed() <= Duration::from_secs(25),
        "{:?}",
        redeployed.elapsed()
    );
    let started = w.audit_of(AuditKind::RollbackStarted);
    assert_eq!(started.len(), 2, "{started:?}");
    let notices = w.notices.0.lock().unwrap().clone();
    let text = notices
        .iter()
        .filter(|n| n.event() == "started")
        .nth(1)
        .unwrap()
        .text();
    assert!(
        text.contains("Reason: known_bad_version: web:1.1.0 was rolled back from prod/web"),
        "{text}"
    );

    // A redeploy with a new image is judged normally: healthy, left alone.
    deploy_canary(&w, &web, "web:1.2.0", "3").await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(replicas(&w.sim, "prod", "web-canary"), Some(1));
    assert_eq!(w.audit_of(AuditKind::RollbackStarted).len(), 2);

    // `backout bad-versions forget` (the same store): gone from the ConfigMap.
    let store = BadVersions::new(client, "backout");
    assert_eq!(store.forget("web:1.1.0").await.unwrap(), 1);
    assert!(store.refresh().await.unwrap().is_empty());
    let _ = canary_weight(&w.sim, &web);
    stop.send(true).unwrap();
    task.await.unwrap();
    w.sim.shutdown().await;
}

/// `backout bad-versions list | forget IMAGE` against the cluster, as an operator runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_forgets_bad_versions() {
    let sim = backout::sim::Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "backout").unwrap();
    let store = BadVersions::new(sim.in_process_client(), "backout");
    let bad = |image: &str| backout::daemon::bad_versions::BadVersion {
        service: "prod/web".into(),
        images: vec![image.into()],
        reason: "errors critical on canary".into(),
        at: 1_800_000_000_000,
        incident: "118eb5638591f590".into(),
    };
    store
        .record("3f1c9a0d2b7e4c55", bad("web:1.1.0"))
        .await
        .unwrap();
    store
        .record("9a9a9a9a9a9a9a9a", bad("web:1.3.0"))
        .await
        .unwrap();
    let run = |args: &[&str]| {
        let kc = kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_backout"))
                    .arg("bad-versions")
                    .args(&args)
                    .arg("--namespace")
                    .arg("backout")
                    .arg("--kubeconfig")
                    .arg(&kc)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run(&["list"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3f1c9a0d2b7e4c55  web:1.1.0  prod/web  2027-01-15 08:00:00.000 UTC  incident 118eb5638591f590"), "{text}");
    assert!(text.contains("web:1.3.0"), "{text}");
    let out = run(&["forget", "web:1.1.0"]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("forgot 1 bad version(s) with web:1.1.0"));
    let left = store.refresh().await.unwrap();
    assert_eq!(left.keys().collect::<Vec<_>>(), ["9a9a9a9a9a9a9a9a"]);
    let out = run(&["forget", "web:9.9.9"]).await;
    assert_eq!(out.status.code(), Some(1), "nothing to forget is an error");
    sim.shutdown().await;
}
