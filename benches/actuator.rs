//! Latency of the full rollback plan (backup, pre-scale, route, HPA, canary scale, undo, verify,
//! with every progress record and Event) against the simulator: the fixture loaded as is,
//! in-process (the actuator's own cost) and over loopback HTTP (adds real request handling), and
//! a history made by the simulator's own controller. Harness, not criterion, to report p50/p99.
//! Run: `cargo bench --bench actuator` (ITERATIONS env to change the count).

use backout::actuator::fixtures::Scenario;
use backout::actuator::{Actuator, ActuatorConfig, Outcome, RollbackRequest, Trigger};
use backout::clock::SystemClock;
use backout::policy::Policy;
use kube::runtime::events::Reporter;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn request() -> RollbackRequest {
    RollbackRequest {
        last_known_good: Some(2),
        trigger: Trigger::manual("bench").with_value("error_rate", 0.08),
        dry_run: false,
        gate: None,
    }
}

fn actuator(client: kube::Client) -> Actuator {
    Actuator::new(client, Arc::new(SystemClock), fast_verify()).with_events(Reporter {
        controller: "backout".into(),
        instance: None,
    })
}

/// A simulator with a 1 ms rollout delay, so Verify waits for a real rollout of the undone stable.
async fn start_sim() -> backout::sim::SimHandle {
    use backout::sim::{SimConfig, Simulator};
    let config = SimConfig {
        rollout_delay: Duration::from_millis(1),
    };
    Simulator::start_with("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("sim")
}

/// The fixture (stable caught mid-rollout, HPAs) loaded as is, the controller idle.
async fn loaded_cluster() -> backout::sim::SimHandle {
    let sim = start_sim().await;
    sim.stall_rollout("default", "web");
    sim.load(Scenario::default().with_hpas(10).progressing().objects())
        .expect("load");
    let idle = sim
        .wait_controller_idle(Duration::from_millis(1), Duration::from_secs(10))
        .await;
    assert!(idle, "controller idle");
    sim
}

fn fast_verify() -> ActuatorConfig {
    ActuatorConfig {
        verify_poll: Duration::from_millis(5),
        ..ActuatorConfig::default()
    }
}

/// Stable with revisions 1..3 made by the simulator's controller, canary, VirtualService, HPAs.
async fn sim_cluster() -> backout::sim::SimHandle {
    use backout::sim::seed;
    use kube::api::{Api, Patch, PatchParams};
    let sim = start_sim().await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(sim.kube_client().expect("client"), "default");
    sim.seed(seed::deployment(
        "default", "web", "web", "stable", "web:1.0", 3,
    ))
    .expect("seed");
    for (i, image) in ["web:1.1", "web:1.2"].iter().enumerate() {
        // Wait for the previous revision before the next template change.
        loop {
            let d = deployments.get("web").await.expect("get");
            let rev = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned());
            if rev == Some((i + 1).to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let p = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
        deployments
            .patch("web", &PatchParams::default(), &Patch::Strategic(p))
            .await
            .expect("patch");
    }
    loop {
        let d = serde_json::to_value(deployments.get("web").await.expect("get")).expect("json");
        if d.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
            == Some(&serde_json::json!("3"))
            && backout::actuator::objects::rollout_complete(&d)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sim.seed(seed::deployment(
        "default",
        "web-canary",
        "web",
        "canary",
        "web:2.0",
        2,
    ))
    .expect("seed");
    let mut vs = Scenario::default().virtual_service();
    if let Some(m) = vs["metadata"].as_object_mut() {
        m.retain(|k, _| k == "name" || k == "namespace");
    }
    sim.seed(vs).expect("seed");
    sim.seed(seed::hpa("default", "web", "web", 1, 10))
        .expect("seed");
    sim.seed(seed::hpa("default", "web-canary", "web-canary", 1, 5))
        .expect("seed");
    sim
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name:<40} n={:<5} p50={:>8.2?} p90={:>8.2?} p99={:>8.2?} max={:>8.2?}",
        samples.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        samples[samples.len() - 1]
    );
}

fn main() {
    let iterations: usize = std::env::var("ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let policy = Policy::test();
    rt.block_on(async {
        for (name, http) in [
            ("full plan, simulator in process", false),
            ("full plan, simulator over loopback HTTP", true),
        ] {
            let mut samples = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let sim = loaded_cluster().await;
                let client = if http {
                    sim.kube_client().expect("client")
                } else {
                    sim.in_process_client()
                };
                let act = actuator(client);
                let t0 = Instant::now();
                let r = act.rollback(&policy, request()).await.expect("rollback");
                samples.push(t0.elapsed());
                assert_eq!(r.outcome, Outcome::Completed);
                sim.shutdown().await;
            }
            report(name, samples);
        }
        // The project's simulator: HTTP, its own deployment controller (1 ms rollout delay, so
        // Verify waits for a real rollout of the undone stable), verify polled every 5 ms.
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let sim = sim_cluster().await;
            let act = Actuator::new(
                sim.kube_client().expect("client"),
                Arc::new(SystemClock),
                fast_verify(),
            );
            let t0 = Instant::now();
            let r = act.rollback(&policy, request()).await.expect("rollback");
            samples.push(t0.elapsed());
            assert_eq!(r.outcome, Outcome::Completed);
            sim.shutdown().await;
        }
        report("full plan, simulator-made history", samples);
    });
}
