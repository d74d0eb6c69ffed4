//! The full plan against the project's simulator (src/sim: real HTTP, real deployment controller
//! with rollout delay, its own fault injection), as opposed to the in-process fake.

use backout::actuator::fixtures::Scenario;
use backout::actuator::{Actuator, ActuatorConfig, Outcome, RollbackRequest, Trigger};
use backout::clock::SystemClock;
use backout::policy::Policy;
use backout::sim::{seed, FaultAction, FaultRule, SimConfig, SimHandle, Simulator};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

async fn wait_rollout(api: &Api<Deployment>, name: &str, revision: &str) {
    for _ in 0..400 {
        let d = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
        let rev = d
            .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
            .and_then(Value::as_str);
        let done = backout::actuator::objects::rollout_complete(&d);
        if rev == Some(revision) && done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} never reached revision {revision}");
}

/// Stable `web` with revisions 1..3 (web:1.0, 1.1, 1.2) made by the simulator's controller,
/// canary `web-canary`, the fixture VirtualService and HPAs on both.
async fn start() -> SimHandle {
    start_with(true).await
}

async fn start_with(hpas: bool) -> SimHandle {
    let sim = Simulator::start_with(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            rollout_delay: Duration::from_millis(30),
        },
    )
    .await
    .unwrap();
    let client = sim.kube_client().unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    sim.seed(seed::deployment(
        "default", "web", "web", "stable", "web:1.0", 3,
    ))
    .unwrap();
    wait_rollout(&deployments, "web", "1").await;
    for (i, image) in ["web:1.1", "web:1.2"].iter().enumerate() {
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
        deployments
            .patch("web", &PatchParams::default(), &Patch::Strategic(p))
            .await
            .unwrap();
        wait_rollout(&deployments, "web", &(i + 2).to_string()).await;
    }
    sim.seed(seed::deployment(
        "default",
        "web-canary",
        "web",
        "canary",
        "web:2.0",
        2,
    ))
    .unwrap();
    let mut vs = Scenario::default().virtual_service();
    vs["metadata"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k == "name" || k == "namespace");
    sim.seed(vs).unwrap();
    if hpas {
        sim.seed(seed::hpa("default", "web", "web", 1, 10)).unwrap();
        sim.seed(seed::hpa("default", "web-canary", "web-canary", 1, 5))
            .unwrap();
    }
    sim
}

fn actuator(sim: &SimHandle) -> Actuator {
    let config = ActuatorConfig {
        verify_timeout: Duration::from_secs(20),
        verify_poll: Duration::from_millis(50),
        retry: backout::actuator::RetryPolicy {
            base_delay: Duration::from_millis(10),
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        ..ActuatorConfig::default()
    };
    Actuator::new(sim.kube_client().unwrap(), Arc::new(SystemClock), config)
}

fn request() -> RollbackRequest {
    RollbackRequest {
        last_known_good: Some(2),
        trigger: Trigger::manual("error_rate critical").with_value("error_rate", 0.09),
        dry_run: false,
        gate: None,
    }
}

fn check_end_state(sim: &SimHandle, vs_before: &Value) {
    let vs = sim
        .object("networking.istio.io", "virtualservices", "default", "web")
        .unwrap();
    let http = &vs["spec"]["http"];
    assert_eq!(
        (
            http[1]["route"][0]["weight"].as_i64(),
            http[1]["route"][1]["weight"].as_i64()
        ),
        (Some(100), Some(0))
    );
    assert_eq!(
        http[0].to_string(),
        vs_before["spec"]["http"][0].to_string()
    );
    assert_eq!(
        http[2].to_string(),
        vs_before["spec"]["http"][2].to_string()
    );
    let canary = sim
        .object("apps", "deployments", "default", "web-canary")
        .unwrap();
    assert_eq!(canary["spec"]["replicas"], 0);
    assert_eq!(canary["status"]["replicas"].as_i64().unwrap_or(0), 0);
    let stable = sim.object("apps", "deployments", "default", "web").unwrap();
    assert_eq!(
        stable["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1.1"
    );
    assert_eq!(
        stable["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "4",
        "undone exactly once"
    );
    assert_eq!(
        stable["spec"]["replicas"], 5,
        "pre-scaled to stable + canary"
    );
    assert!(sim
        .object(
            "autoscaling",
            "horizontalpodautoscalers",
            "default",
            "web-canary"
        )
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_plan_against_the_simulator() {
    let sim = start().await;
    let vs_before = sim
        .object("networking.istio.io", "virtualservices", "default", "web")
        .unwrap();
    let report = actuator(&sim)
        .rollback(&Policy::test(), request())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed, "{report:#?}");
    check_end_state(&sim, &vs_before);
    let backup = sim
        .object("", "configmaps", "default", &report.backup)
        .unwrap();
    assert!(backup["data"]["deployment.web.json"]
        .as_str()
        .unwrap()
        .contains("web:1.2"));
    let again = actuator(&sim)
        .rollback(&Policy::test(), request())
        .await
        .unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyCompleted);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_fault_storms_on_every_step_still_complete_once() {
    let sim = start().await;
    let vs_before = sim
        .object("networking.istio.io", "virtualservices", "default", "web")
        .unwrap();
    let f = sim.faults();
    f.add(FaultRule::new(Some("PATCH"), "/virtualservices/web", FaultAction::Conflict).times(4));
    f.add(
        FaultRule::new(
            Some("PATCH"),
            "/deployments/web?",
            FaultAction::ServerError(503),
        )
        .times(3),
    );
    f.add(FaultRule::new(Some("PATCH"), "/deployments/web/scale", FaultAction::Drop).times(2));
    f.add(
        FaultRule::new(
            Some("PATCH"),
            "/deployments/web-canary/scale",
            FaultAction::ServerError(500),
        )
        .times(3),
    );
    f.add(
        FaultRule::new(
            Some("DELETE"),
            "/horizontalpodautoscalers/web-canary",
            FaultAction::ServerError(504),
        )
        .times(2),
    );
    f.add(FaultRule::new(Some("PATCH"), "/configmaps/", FaultAction::Conflict).times(3));
    f.add(FaultRule::new(Some("GET"), "/deployments/web", FaultAction::Drop).times(2));
    let report = actuator(&sim)
        .rollback(&Policy::test(), request())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(f.fired() >= 19, "faults fired: {}", f.fired());
    check_end_state(&sim, &vs_before);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backout_undo_matches_kubectl_rollout_undo_on_the_simulator() {
    let present = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        eprintln!(
            "SKIPPED: kubectl is not on PATH; this test compares backout's undo with kubectl's"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let by_kubectl = start_with(false).await;
    let kc = dir.path().join("kubeconfig");
    by_kubectl.write_kubeconfig(&kc, "default").unwrap();
    let out = tokio::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            kc.to_str().unwrap(),
            "rollout",
            "undo",
            "deployment/web",
            "--to-revision=2",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let by_backout = start_with(false).await;
    let report = actuator(&by_backout)
        .rollback(&Policy::test(), request())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);

    let a = by_kubectl
        .object("apps", "deployments", "default", "web")
        .unwrap();
    let b = by_backout
        .object("apps", "deployments", "default", "web")
        .unwrap();
    // kubectl sends the template's `creationTimestamp: null`; a real apiserver answers it for
    // every template anyway (zero metav1.Time), the simulator stores it as sent: compare without.
    assert_eq!(without_nulls(&a["spec"]), without_nulls(&b["spec"]));
    let strip = |v: &Value| {
        let mut m = v["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        m.remove("deployment.kubernetes.io/revision"); // assigned by the controller asynchronously
        m
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(
        b["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1.1"
    );
    by_kubectl.shutdown().await;
    by_backout.shutdown().await;
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// A tracing layer that records every span's name, parent and fields (including fields recorded
/// after creation), so tests can assert what an OTLP exporter would receive.
mod spans {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::Subscriber;
    use tracing_subscriber::layer::Context;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    #[derive(Debug, Clone)]
    pub struct Recorded {
        pub name: &'static str,
        pub parent: Option<&'static str>,
        pub fields: BTreeMap<String, String>,
    }

    #[derive(Clone, Default)]
    pub struct Recorder(pub Arc<Mutex<Vec<(Id, Recorded)>>>);

    struct Fields<'a>(&'a mut BTreeMap<String, String>);
    impl Visit for Fields<'_> {
        fn record_str(&mut self, f: &Field, v: &str) {
            self.0.insert(f.name().into(), v.into());
        }
        fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
            self.0.insert(f.name().into(), format!("{v:?}"));
        }
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let mut fields = BTreeMap::new();
            attrs.record(&mut Fields(&mut fields));
            let parent = ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.metadata().name());
            let rec = Recorded {
                name: attrs.metadata().name(),
                parent,
                fields,
            };
            self.0.lock().unwrap().push((id.clone(), rec));
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
            let mut all = self.0.lock().unwrap();
            if let Some((_, rec)) = all.iter_mut().rev().find(|(i, _)| i == id) {
                values.record(&mut Fields(&mut rec.fields));
            }
        }
    }

    impl Recorder {
        pub fn spans(&self) -> Vec<Recorded> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|(_, r)| r.clone())
                .collect()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_executed_step_gets_a_span_under_the_rollback_span() {
    use tracing::instrument::WithSubscriber;
    use tracing_subscriber::layer::SubscriberExt;

    let sim = start().await;
    let recorder = spans::Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    // Only this future's spans go to the recorder, whichever worker thread polls it.
    let report = actuator(&sim)
        .rollback(&Policy::test(), request())
        .with_subscriber(subscriber)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed, "{report:#?}");

    let spans = recorder.spans();
    let rollback: Vec<_> = spans.iter().filter(|s| s.name == "rollback").collect();
    assert_eq!(rollback.len(), 1, "{spans:#?}");
    assert_eq!(rollback[0].fields["outcome"], "completed");
    assert_eq!(rollback[0].fields["rollback_id"], report.rollback_id);
    let steps: Vec<_> = spans.iter().filter(|s| s.name == "action_step").collect();
    let names: Vec<&str> = steps.iter().map(|s| s.fields["step"].as_str()).collect();
    let executed: Vec<&str> = report.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(names, executed, "one span per executed step, in order");
    // The stable is not mid-rollout here, so the plan has no pause/resume.
    assert_eq!(
        names,
        [
            "pre_scale_stable",
            "route_all_to_stable",
            "neutralise_canary_hpa.web-canary",
            "scale_canary_to_zero",
            "undo_stable",
            "verify"
        ]
    );
    for (span, step) in steps.iter().zip(&report.steps) {
        assert_eq!(span.parent, Some("rollback"), "{span:?}");
        assert_eq!(span.fields["outcome"], step.outcome.as_str(), "{span:?}");
        assert_eq!(span.fields["attempts"], step.attempts.to_string());
        assert_eq!(span.fields["service"], "web");
        assert_eq!(span.fields["namespace"], "default");
        assert_eq!(span.fields["dry_run"], "false");
    }
    assert!(
        steps.iter().any(|s| s.fields["outcome"] == "changed"),
        "{steps:#?}"
    );
    sim.shutdown().await;
}
