//! Watch semantics kube-runtime's watcher relies on, against the simulator: list then watch from
//! the list's resourceVersion, periodic bookmarks, resuming from a bookmark, and a re-list after a
//! 410 from a compacted version.

use backout::sim::{SimConfig, SimHandle, Simulator};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

async fn sim() -> SimHandle {
    let config = SimConfig {
        rollout_delay: Duration::from_millis(20),
    };
    Simulator::start_with("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

/// On paused time (the in-process client keeps the clock from jumping during requests): a watch
/// with `allowWatchBookmarks` gets a bookmark every minute and one 2 s before its timeout, each
/// carrying the newest version the server has passed, even when only other resources changed.
#[tokio::test(start_paused = true)]
async fn bookmarks_come_every_minute_and_before_the_timeout_with_the_newest_version() {
    let sim = sim().await;
    sim.seed_deployment("prod", "web", "web:1", 3).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // the rollout settles
    let client = sim.in_process_client();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "prod");
    let rv = deploys
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let t0 = Instant::now();
    let mut events = deploys
        .watch(&WatchParams::default().timeout(150), &rv)
        .await
        .unwrap()
        .boxed();
    // Churn elsewhere moves the global resourceVersion on.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    let mut newest = String::new();
    for i in 0..3 {
        let cm = cms
            .create(&PostParams::default(), &config_map(&format!("c{i}")))
            .await
            .unwrap();
        newest = cm.metadata.resource_version.unwrap();
    }
    let mut marks = Vec::new();
    while let Some(ev) = events.try_next().await.unwrap() {
        match ev {
            WatchEvent::Bookmark(b) => {
                marks.push((t0.elapsed().as_secs(), b.metadata.resource_version));
            }
            other => panic!("only bookmarks expected on a quiet namespace, got {other:?}"),
        }
    }
    let ended = t0.elapsed().as_secs();
    assert_eq!(
        marks,
        vec![
            (60, newest.clone()),
            (120, newest.clone()),
            (148, newest.clone())
        ]
    );
    assert_eq!(ended, 150, "the watch ends at its timeout");

    // Resuming from the bookmark replays nothing old and delivers what happens next.
    let mut resumed = deploys
        .watch(&WatchParams::default().timeout(30), &newest)
        .await
        .unwrap()
        .boxed();
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    match resumed.try_next().await.unwrap() {
        Some(WatchEvent::Modified(d)) => {
            assert_eq!(d.metadata.labels.unwrap()["touched"], "yes");
        }
        other => panic!("expected the live modification, got {other:?}"),
    }

    // Without allowWatchBookmarks there are none: the stream just ends at its timeout.
    let t1 = Instant::now();
    let quiet = deploys
        .watch(
            &WatchParams::default().timeout(70).disable_bookmarks(),
            &newest,
        )
        .await
        .unwrap()
        .boxed();
    let rest: Vec<_> = quiet.try_collect().await.unwrap();
    assert!(
        rest.iter().all(|e| matches!(e, WatchEvent::Modified(_))),
        "{rest:?}"
    );
    assert_eq!(t1.elapsed().as_secs(), 70);
    sim.shutdown().await;
}

/// Reads watcher events until one starts with `want`.
async fn until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    want: &str,
    seen: &mut Vec<String>,
) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {want:?}; saw {seen:?}"))
            .unwrap();
        let hit = ev.starts_with(want);
        seen.push(ev);
        if hit {
            return;
        }
    }
}

/// kube-runtime's watcher and a reflector store: the initial list, live changes, and, when the
/// version it resumes from has been compacted away, the 410 followed by a fresh list.
#[tokio::test]
async fn kube_runtime_reflector_relists_after_410() {
    let sim = sim().await;
    sim.seed_deployment("prod", "web", "web:1", 3).unwrap();
    // Every watch call fails until cleared: the list succeeds, the watch after it cannot start.
    sim.faults()
        .server_errors(Some("GET"), "watch=true", 500, u32::MAX);
    let api: Api<Deployment> = Api::namespaced(sim.kube_client().unwrap(), "prod");
    let (store, mut writer) = reflector::store::<Deployment>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default().timeout(5)).boxed();
        while let Some(item) = events.next().await {
            let label = match &item {
                Ok(ev) => {
                    writer.apply_watcher_event(ev);
                    match ev {
                        watcher::Event::Init => "init".to_string(),
                        watcher::Event::InitDone => "init_done".to_string(),
                        watcher::Event::InitApply(_) => "init_apply".to_string(),
                        watcher::Event::Apply(_) => "apply".to_string(),
                        watcher::Event::Delete(_) => "delete".to_string(),
                    }
                }
                Err(watcher::Error::WatchError(s)) => format!("error {}", s.code),
                Err(e) => format!("failed {e}"),
            };
            if tx.send(label).is_err() {
                return;
            }
            if item.is_err() {
                // The watcher retries on the next poll; pace it like a backoff would.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let mut seen = Vec::new();
    until(&mut rx, "init_done", &mut seen).await;
    let web = ObjectRef::<Deployment>::new("web").within("prod");
    assert!(store.get(&web).is_some(), "listed into the store");
    until(&mut rx, "failed", &mut seen).await;

    // While the watch is down, push its version out of the change log and add a Deployment.
    // The log keeps at least LOG_MIN_CAPACITY changes (more with many objects): churn one.
    let key = backout::sim::store::ObjKey {
        group: "",
        plural: "configmaps",
        namespace: "other".into(),
        name: "churn".into(),
    };
    sim.store().write(|t| {
        for i in 0..backout::sim::store::LOG_MIN_CAPACITY + 50 {
            let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "churn", "namespace": "other"}, "data": {"i": i.to_string()}});
            t.put(key.clone(), obj);
        }
    });
    sim.seed_deployment("prod", "api", "api:1", 2).unwrap();
    sim.faults().clear();
    until(&mut rx, "error 410", &mut seen).await;
    until(&mut rx, "init_done", &mut seen).await;
    let api = ObjectRef::<Deployment>::new("api").within("prod");
    assert!(store.get(&api).is_some(), "the re-list found it: {seen:?}");
    task.abort();
}
