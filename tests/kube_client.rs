//! The kube client's layers (`backout::kubeclient`): a deadline on the response headers that does
//! not cut a watch, the client-side rate limit, and the request metrics, against a server that
//! never answers, in-process services on paused time, and the simulator.

use backout::actuator::retry::{classify, Failure};
use backout::kubeclient::{self, ClientLimits};
use backout::sim::{seed, FaultAction, FaultRule, SimConfig, SimHandle, Simulator};
use backout::telemetry::Metrics;
use futures::{StreamExt, TryStreamExt};
use hyper::{Request, Response};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::client::{Body, ClientBuilder};
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

fn limits(request_timeout: Duration, qps: f64, burst: u32) -> ClientLimits {
    ClientLimits {
        request_timeout,
        qps,
        burst,
    }
}

/// A layered client over an in-process service (for paused time: no sockets involved).
fn layered<S>(svc: S, limits: &ClientLimits, metrics: &Metrics) -> kube::Client
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = kube::Error>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    kubeclient::layers(ClientBuilder::new(svc, "default"), limits, metrics)
        .unwrap()
        .build()
}

/// The simulator's router in process, as a service the layers can wrap.
fn in_process(
    sim: &SimHandle,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = kube::Error,
    Future = impl Send + 'static,
> + Send
       + 'static {
    let inner = sim.in_process_client();
    tower::service_fn(move |req: Request<Body>| {
        let inner = inner.clone();
        async move { inner.send(req).await }
    })
}

/// A service that answers every request at once with an empty 200.
fn instant_ok() -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = kube::Error,
    Future = impl Send + 'static,
> + Send
       + 'static {
    tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, kube::Error>(Response::new(Body::empty()))
    })
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// The value of one series line of the exposition (`name{labels} value`).
fn series(metrics: &Metrics, name_and_labels: &str) -> Option<f64> {
    let text = metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

fn requests(metrics: &Metrics, verb: &str, resource: &str, outcome: &str) -> f64 {
    let key = format!(
        "backout_kubernetes_requests_total{{verb=\"{verb}\",resource=\"{resource}\",outcome=\"{outcome}\"}}"
    );
    series(metrics, &key).unwrap_or(0.0)
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_fails_at_the_deadline_retryably() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accept, read the request, never answer; keep the sockets open until the test ends.
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let metrics = Metrics::new();
    let deadline = Duration::from_millis(300);
    let client = kubeclient::for_url(&url, &limits(deadline, 100.0, 10), &metrics).unwrap();
    let api: Api<Deployment> = Api::namespaced(client, "prod");
    let started = std::time::Instant::now();
    let err = api.get("web").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= deadline && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(err.to_string().contains("request_timeout"), "{err}");
    assert!(
        matches!(classify(&err), Failure::Retryable(_)),
        "{err:?} must be retryable"
    );
    assert_eq!(requests(&metrics, "get", "deployments", "timeout"), 1.0);
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn the_default_deadline_is_ten_seconds_of_waiting_for_headers() {
    let hang = tower::service_fn(|_req: Request<Body>| {
        futures::future::pending::<Result<Response<Body>, kube::Error>>()
    });
    let metrics = Metrics::new();
    let client = layered(hang, &ClientLimits::default(), &metrics);
    let started = Instant::now();
    let err = client
        .send(get("/api/v1/namespaces/prod/configmaps/x"))
        .await;
    assert!(matches!(err, Err(kube::Error::Service(_))), "{err:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(requests(&metrics, "get", "configmaps", "timeout"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_watch_whose_headers_came_in_time_is_not_cut_at_the_deadline() {
    let sim = sim().await;
    let metrics = Metrics::new();
    let deadline = Duration::from_secs(1);
    let client = layered(in_process(&sim), &limits(deadline, 100.0, 10), &metrics);
    let api: Api<ConfigMap> = Api::namespaced(client, "prod");
    let mut events = api
        .watch(&WatchParams::default().timeout(290), "0")
        .await
        .unwrap()
        .boxed();
    // A minute of quiet, sixty times the deadline, then a change the stream must still carry.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .expect("the watch still delivers")
        .unwrap();
    match event {
        Some(WatchEvent::Added(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("late")),
        other => panic!("expected the added ConfigMap, got {other:?}"),
    }
    assert_eq!(requests(&metrics, "watch", "configmaps", "success"), 1.0);
    assert_eq!(requests(&metrics, "watch", "configmaps", "timeout"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_burst_plus_kth_request_waits_k_over_qps_and_watches_do_not_wait() {
    let metrics = Metrics::new();
    let (qps, burst) = (10.0, 3);
    let client = layered(
        instant_ok(),
        &limits(Duration::from_secs(10), qps, burst),
        &metrics,
    );
    let started = Instant::now();
    let sends = (0..7).map(|i| {
        let client = client.clone();
        async move {
            let path = format!("/api/v1/namespaces/prod/configmaps/c{i}");
            client.send(get(&path)).await.unwrap();
            started.elapsed()
        }
    });
    // A watch sent while six GETs queue behind the burst.
    let watch = async {
        tokio::task::yield_now().await;
        let path = "/api/v1/namespaces/prod/configmaps?watch=true";
        client.send(get(path)).await.unwrap();
        started.elapsed()
    };
    let (mut done, watch_done) = tokio::join!(futures::future::join_all(sends), watch);
    done.sort();
    let ms: Vec<u128> = done.iter().map(Duration::as_millis).collect();
    // Three at once, then one every 100 ms: the (3+k)-th at k/qps.
    assert_eq!(ms, [0, 0, 0, 100, 200, 300, 400], "{done:?}");
    assert_eq!(watch_done, Duration::ZERO, "watches skip the limiter");
    assert_eq!(requests(&metrics, "get", "configmaps", "success"), 7.0);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_that_is_abandoned_takes_no_slot() {
    let metrics = Metrics::new();
    let client = layered(
        instant_ok(),
        &limits(Duration::from_secs(10), 1.0, 1),
        &metrics,
    );
    client
        .send(get("/api/v1/namespaces/p/configmaps/a"))
        .await
        .unwrap();
    // The next slot is 1 s away; give up after 100 ms.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        client.send(get("/api/v1/namespaces/p/configmaps/b")),
    )
    .await;
    assert!(gave_up.is_err());
    let started = Instant::now();
    client
        .send(get("/api/v1/namespaces/p/configmaps/c"))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(900));
    assert_eq!(requests(&metrics, "get", "configmaps", "success"), 2.0);
}

#[tokio::test]
async fn metrics_count_verb_resource_and_outcome_against_the_simulator() {
    let sim = sim().await;
    sim.seed_deployment("prod", "web", "web:1", 1).unwrap();
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
    let metrics = Metrics::new();
    let client = kubeclient::for_url(&sim.url(), &ClientLimits::default(), &metrics).unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "prod");

    deploys.get("web").await.unwrap();
    deploys.get("web").await.unwrap();
    assert!(deploys.get_opt("nope").await.unwrap().is_none());
    deploys.list(&Default::default()).await.unwrap();
    let mut watch = deploys
        .watch(&WatchParams::default().timeout(10), "0")
        .await
        .unwrap()
        .boxed();
    let patch = json!({"spec": {"replicas": 2}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    watch.try_next().await.unwrap();
    let vs = vs_api(client.clone());
    vs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .unwrap();
    sim.faults().add(
        FaultRule::new(
            Some("GET"),
            "/configmaps/broken",
            FaultAction::ServerError(500),
        )
        .times(1),
    );
    let cms: Api<ConfigMap> = Api::namespaced(client, "prod");
    assert!(cms.get("broken").await.is_err());

    let count = |verb, resource, outcome| requests(&metrics, verb, resource, outcome);
    assert_eq!(count("get", "deployments", "success"), 2.0);
    assert_eq!(count("get", "deployments", "client_error"), 1.0);
    assert_eq!(count("list", "deployments", "success"), 1.0);
    assert_eq!(count("watch", "deployments", "success"), 1.0);
    assert_eq!(count("patch", "deployments", "success"), 1.0);
    assert_eq!(count("patch", "virtualservices", "success"), 1.0);
    assert_eq!(
        count("get", "configmaps", "server_error"),
        1.0,
        "kube's retry is off"
    );
    let hist =
        "backout_kubernetes_request_duration_seconds_count{verb=\"get\",resource=\"deployments\"}";
    assert_eq!(series(&metrics, hist), Some(3.0));
    let text = metrics.encode();
    assert!(
        !text.contains("\"web\""),
        "no object names in labels:\n{text}"
    );
    assert!(
        !text.contains("\"prod\""),
        "no namespaces in labels:\n{text}"
    );
}

fn dest(host: &str) -> backout::policy::model::Destination {
    backout::policy::model::Destination {
        host: host.into(),
        subset: None,
        service: None,
    }
}

fn vs_api(client: kube::Client) -> Api<kube::api::DynamicObject> {
    let gvk = kube::core::GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    Api::namespaced_with(client, "prod", &kube::core::ApiResource::from_gvk(&gvk))
}

#[test]
fn bad_limits_are_refused_when_building() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let metrics = Metrics::new();
        for bad in [
            limits(Duration::ZERO, 1.0, 1),
            limits(Duration::from_secs(1), 0.0, 1),
            limits(Duration::from_secs(1), f64::NAN, 1),
            limits(Duration::from_secs(1), 1.0, 0),
        ] {
            let Err(err) = kubeclient::for_url("http://127.0.0.1:1", &bad, &metrics) else {
                panic!("{bad:?} was accepted");
            };
            assert!(
                matches!(err, kubeclient::KubeClientError::Settings { .. }),
                "{err}"
            );
        }
    });
}
