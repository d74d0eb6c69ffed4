//! The kube client against the simulator: the API semantics the actuator relies on.

use backout::policy::model::Destination;
use backout::sim::{seed, SimConfig, SimHandle, Simulator};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use std::time::Duration;

async fn sim() -> SimHandle {
    let config = SimConfig {
        rollout_delay: Duration::from_millis(20),
    };
    Simulator::start_with("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn vs_api(client: kube::Client, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("networking.istio.io", version, "VirtualService");
    Api::namespaced_with(client, "prod", &ApiResource::from_gvk(&gvk))
}

fn dest(host: &str) -> Destination {
    Destination {
        host: host.into(),
        subset: None,
        service: None,
    }
}

fn status_code(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("expected an API status, got {other:?}"),
    }
}

/// Waits (bounded) until the Deployment reports a finished rollout of its current generation.
async fn rolled_out(api: &Api<Deployment>, name: &str) -> Deployment {
    for _ in 0..200 {
        let d = api.get(name).await.unwrap();
        let st = d.status.clone().unwrap_or_default();
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if st.observed_generation == d.metadata.generation
            && st.updated_replicas.unwrap_or(0) == want
            && st.available_replicas.unwrap_or(0) == want
            && st.replicas.unwrap_or(0) == want
        {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("deployment {name} never finished rolling out");
}

#[tokio::test]
async fn crud_conflicts_and_status_bodies() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.kube_client().unwrap(), "prod");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "backup"}, "data": {"a": "1"}}))
            .unwrap();
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    let (code, reason) = status_code(api.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let mut fresh = created.clone();
    fresh.data = Some([("a".to_string(), "2".to_string())].into());
    let updated = api
        .replace("backup", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    // Replacing with the old resourceVersion is a stale write.
    let (code, reason) = status_code(
        api.replace("backup", &PostParams::default(), &fresh)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    let (code, reason) = status_code(api.get("nope").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    api.delete("backup", &DeleteParams::default())
        .await
        .unwrap();
    assert!(api.get_opt("backup").await.unwrap().is_none());
}

#[tokio::test]
async fn template_changes_make_revisions_and_selectors_filter_lists() {
    let sim = sim().await;
    sim.seed_deployment("prod", "web", "web:1", 3).unwrap();
    sim.seed(seed::deployment("prod", "api", "api", "stable", "api:1", 1))
        .unwrap();
    let client = sim.kube_client().unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "prod");
    rolled_out(&deploys, "web").await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}});
    let d = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    let d = rolled_out(&deploys, "web").await;
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );

    let rs: Api<ReplicaSet> = Api::namespaced(client, "prod");
    let web = rs
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 2);
    let live: Vec<i32> = web
        .items
        .iter()
        .map(|r| r.spec.as_ref().unwrap().replicas.unwrap())
        .collect();
    assert!(live.contains(&3) && live.contains(&0), "{live:?}");
    let named = deploys
        .list(&ListParams::default().fields("metadata.name=api"))
        .await
        .unwrap();
    assert_eq!(named.items.len(), 1);
}

#[tokio::test]
async fn scale_subresource_and_paused_rollouts() {
    let sim = sim().await;
    sim.seed_deployment("prod", "web", "web:1", 3).unwrap();
    let deploys: Api<Deployment> = Api::namespaced(sim.kube_client().unwrap(), "prod");
    rolled_out(&deploys, "web").await;
    let scale = deploys.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let d = rolled_out(&deploys, "web").await;
    assert_eq!(d.status.unwrap().replicas.unwrap_or(0), 0);

    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    // Once the controller has observed the new generation, it has decided: no new revision.
    let d = rolled_out(&deploys, "web").await;
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "1",
        "paused: no new revision"
    );
}

#[tokio::test]
async fn virtual_services_take_json_and_merge_patches_but_refuse_strategic() {
    let sim = sim().await;
    sim.seed(seed::virtual_service(
        "prod",
        "web",
        "web",
        "primary",
        &dest("web-stable"),
        &dest("web-canary"),
        90,
    ))
    .unwrap();
    let v1 = vs_api(sim.kube_client().unwrap(), "v1");
    let v1beta1 = vs_api(sim.kube_client().unwrap(), "v1beta1");
    let ops = json!([
        {"op": "test", "path": "/spec/http/1/name", "value": "primary"},
        {"op": "test", "path": "/spec/http/1/route/0/weight", "value": 90},
        {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 100},
        {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": 0}
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops.clone()).unwrap();
    let after = v1
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::<()>::Json(patch.clone()),
        )
        .await
        .unwrap();
    assert_eq!(after.data["spec"]["http"][1]["route"][0]["weight"], 100);
    // The same test ops now fail: the weights moved.
    let (code, _) = status_code(
        v1.patch("web", &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    let seen = v1beta1.get("web").await.unwrap();
    assert_eq!(
        seen.types.unwrap().api_version,
        "networking.istio.io/v1beta1"
    );
    let (code, reason) = status_code(
        v1.patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"hosts": ["x"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));
    let merged = v1
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data["spec"]["http"][0]["name"], "health",
        "other routes untouched"
    );
}

#[tokio::test]
async fn dry_run_validates_and_stores_nothing() {
    let sim = sim().await;
    sim.seed_deployment("prod", "web", "web:1", 3).unwrap();
    let deploys: Api<Deployment> = Api::namespaced(sim.kube_client().unwrap(), "prod");
    let before = deploys.get("web").await.unwrap();
    let pp = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let preview = deploys
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 7}})))
        .await
        .unwrap();
    assert_eq!(preview.spec.unwrap().replicas, Some(7));
    let after = deploys.get("web").await.unwrap();
    assert_eq!(after.spec.unwrap().replicas, Some(3));
    assert_eq!(after.metadata.generation, before.metadata.generation);
    let (code, _) = status_code(
        deploys
            .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": -1}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.kube_client().unwrap(), "prod");
    let cm = |v: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"v": v}})).unwrap()
    };
    let first = api.create(&PostParams::default(), &cm("1")).await.unwrap();
    api.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    let rv = first.metadata.resource_version.unwrap();
    let mut events = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Modified(c)) => assert_eq!(c.data.unwrap()["v"], "2"),
        other => panic!("expected the missed modification, got {other:?}"),
    }
    api.delete("c", &DeleteParams::default()).await.unwrap();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Deleted(c)) => assert_eq!(c.metadata.name.as_deref(), Some("c")),
        other => panic!("expected a live deletion, got {other:?}"),
    }
}

#[tokio::test]
async fn injected_faults_reach_the_client_then_clear() {
    let sim = sim().await;
    sim.seed_deployment("prod", "web", "web:1", 3).unwrap();
    let deploys: Api<Deployment> = Api::namespaced(sim.kube_client().unwrap(), "prod");
    sim.faults().conflicts(Some("PATCH"), "/deployments/web", 2);
    // 500, not 503: kube's client retries 503/504/429 on its own.
    sim.faults()
        .server_errors(Some("GET"), "/deployments/web", 500, 1);
    sim.faults().drop_nth(Some("PUT"), "/deployments/web", 1);
    let p = Patch::Merge(json!({"spec": {"replicas": 2}}));
    for _ in 0..2 {
        let (code, reason) = status_code(
            deploys
                .patch("web", &PatchParams::default(), &p)
                .await
                .unwrap_err(),
        );
        assert_eq!((code, reason.as_str()), (409, "Conflict"));
    }
    deploys
        .patch("web", &PatchParams::default(), &p)
        .await
        .unwrap();
    let (code, _) = status_code(deploys.get("web").await.unwrap_err());
    assert_eq!(code, 500);
    let d = deploys.get("web").await.unwrap();
    let dropped = deploys.replace("web", &PostParams::default(), &d).await;
    assert!(
        matches!(dropped, Err(ref e) if !matches!(e, kube::Error::Api(_))),
        "{dropped:?}"
    );
    deploys
        .replace("web", &PostParams::default(), &d)
        .await
        .unwrap();
    assert_eq!(sim.faults().fired(), 4);
}

#[tokio::test]
async fn recorder_events_hpas_leases_and_policy_seeding() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    use kube::Resource;

    let sim = sim().await;
    let policy = backout::policy::model::Policy::test().with_service("shop", "prod");
    sim.seed_policy(&policy).unwrap();
    sim.seed(seed::hpa("prod", "web", "web-canary", 1, 5))
        .unwrap();
    let client = sim.kube_client().unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "prod");
    let stable = rolled_out(&deploys, &policy.deployments.stable).await;
    rolled_out(&deploys, &policy.deployments.canary).await;
    let vs = vs_api(client.clone(), "v1")
        .get(&policy.traffic.virtual_service)
        .await
        .unwrap();
    assert_eq!(vs.data["spec"]["http"][1]["route"][1]["weight"], 10);

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "backout".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Warning,
        reason: "CanaryRolledBack".into(),
        note: Some("error_rate 0.09 > 0.05".into()),
        action: "Rollback".into(),
        secondary: None,
    };
    let reference = stable.object_ref(&());
    recorder.publish(&ev, &reference).await.unwrap();
    // The second identical event becomes a merge patch of the series, which must also work.
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), "prod");
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].series.as_ref().map(|s| s.count), Some(2));

    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "prod");
    hpas.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minReplicas": 0, "maxReplicas": 1}})),
    )
    .await
    .unwrap();
    assert_eq!(hpas.get("web").await.unwrap().spec.unwrap().max_replicas, 1);

    let leases: Api<Lease> = Api::namespaced(client, "prod");
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "backout"}, "spec": {"holderIdentity": "a"}}),
    )
    .unwrap();
    let held = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut taken = held.clone();
    taken.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("backout", &PostParams::default(), &taken)
        .await
        .unwrap();
    // A second contender holding the old version loses.
    let (code, _) = status_code(
        leases
            .replace("backout", &PostParams::default(), &held)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
}

#[tokio::test]
async fn watching_from_a_compacted_version_gets_410_expired() {
    let sim = sim().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.kube_client().unwrap(), "prod");
    // More changes than the change log keeps (it keeps at least LOG_MIN_CAPACITY, more when
    // there are many objects, so churn one object), written straight into the store for speed.
    churn(&sim, "prod", backout::sim::store::LOG_MIN_CAPACITY + 50);
    let mut events = api
        .watch(&WatchParams::default().timeout(5), "1")
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}

/// Rewrites one ConfigMap `times` times (each write a new resourceVersion).
fn churn(sim: &SimHandle, namespace: &str, times: usize) {
    let key = backout::sim::store::ObjKey {
        group: "",
        plural: "configmaps",
        namespace: namespace.into(),
        name: "churn".into(),
    };
    sim.store().write(|t| {
        for i in 0..times {
            let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "churn", "namespace": namespace}, "data": {"i": i.to_string()}});
            t.put(key.clone(), obj);
        }
    });
}

#[tokio::test]
async fn protobuf_is_refused_with_the_apiservers_media_type_errors() {
    let sim = sim().await;
    sim.seed_deployment("prod", "web", "web:1", 1).unwrap();
    let client = sim.kube_client().unwrap();
    let path = "/apis/apps/v1/namespaces/prod/deployments/web";
    let request = |method: &str, header: (&str, &str)| {
        axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header.0, header.1)
            .body(b"\x0a\x02pb".to_vec())
            .unwrap()
    };
    let body = request(
        "PUT",
        ("content-type", "application/vnd.kubernetes.protobuf"),
    );
    let (code, reason) = status_code(client.request_text(body).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));
    let accept = request("GET", ("accept", "application/vnd.kubernetes.protobuf"));
    let (code, reason) = status_code(client.request_text(accept).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (406, "NotAcceptable"));
    // JSON among the accepted types is served as before.
    let either = request(
        "GET",
        (
            "accept",
            "application/vnd.kubernetes.protobuf, application/json",
        ),
    );
    assert!(client.request_text(either).await.unwrap().contains("web:1"));
}
