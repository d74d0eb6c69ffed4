//! The real kubectl (v1.32 on the machine image) against the simulator: the acceptance check
//! that the simulator is faithful enough for rollouts, undo, scale and patch.

use backout::sim::{SimConfig, Simulator};
use std::path::Path;
use std::time::Duration;

const KUBECTL: &str = "/usr/bin/kubectl";

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: web:1
"#;

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (success, text) = kubectl(kubeconfig, args).await;
    assert!(success, "kubectl {args:?} failed: {text}");
    text
}

/// Polls until the rollout has settled (the controller's delay has passed).
async fn settled(kc: &Path) {
    let out = ok(kc, &["rollout", "status", "deploy/web", "--timeout=20s"]).await;
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_rolls_out_undoes_scales_and_patches() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("SKIPPED: {KUBECTL} is not installed; this test needs the real kubectl");
        return;
    }
    let config = SimConfig {
        rollout_delay: Duration::from_millis(50),
    };
    let sim = Simulator::start_with("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc, "default").unwrap();
    let manifest = dir.path().join("web.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();

    ok(&kc, &["create", "-f", manifest.to_str().unwrap()]).await;
    settled(&kc).await;
    ok(&kc, &["set", "image", "deploy/web", "app=web:2"]).await;
    settled(&kc).await;
    ok(&kc, &["set", "image", "deploy/web", "app=web:3"]).await;
    settled(&kc).await;

    let history = ok(&kc, &["rollout", "history", "deploy/web"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, vec!["1", "2", "3"], "{history}");

    ok(&kc, &["rollout", "undo", "deploy/web", "--to-revision=1"]).await;
    settled(&kc).await;
    let image = ok(
        &kc,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    )
    .await;
    assert_eq!(image, "web:1");
    // The real controller reuses revision 1's ReplicaSet as revision 4.
    let history = ok(&kc, &["rollout", "history", "deploy/web"]).await;
    assert!(
        history.contains("\n4 ") && !history.contains("\n1 "),
        "{history}"
    );
    let rs = ok(&kc, &["get", "rs", "-l", "app=web", "-o", "name"]).await;
    assert_eq!(
        rs.lines().count(),
        3,
        "undo must not create a ReplicaSet: {rs}"
    );

    sim.seed(backout::sim::seed::virtual_service(
        "default",
        "web",
        "web",
        "primary",
        &backout::policy::model::Destination {
            host: "web-stable".into(),
            subset: None,
            service: None,
        },
        &backout::policy::model::Destination {
            host: "web-canary".into(),
            subset: None,
            service: None,
        },
        90,
    ))
    .unwrap();
    let table = ok(&kc, &["get", "deploy,rs,vs"]).await;
    for want in [
        "deployment.apps/web",
        "replicaset.apps/web-",
        "virtualservice.networking.istio.io/web",
        "2/2",
    ] {
        assert!(table.contains(want), "missing {want}: {table}");
    }

    ok(&kc, &["scale", "deploy/web", "--replicas=4"]).await;
    settled(&kc).await;
    let ready = ok(
        &kc,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
    )
    .await;
    assert_eq!(ready, "4");

    ok(
        &kc,
        &["patch", "deploy", "web", "--type=json", "-p",
          r#"[{"op":"test","path":"/spec/replicas","value":4},{"op":"replace","path":"/spec/replicas","value":3}]"#],
    )
    .await;
    let (stale_ok, stale) = kubectl(
        &kc,
        &["patch", "deploy", "web", "--type=json", "-p",
          r#"[{"op":"test","path":"/spec/replicas","value":4},{"op":"replace","path":"/spec/replicas","value":1}]"#],
    )
    .await;
    assert!(
        !stale_ok && stale.contains("invalid"),
        "failed test op must be rejected: {stale}"
    );
    ok(
        &kc,
        &[
            "patch",
            "deploy",
            "web",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"tier":"web"}}}"#,
        ],
    )
    .await;
    ok(
        &kc,
        &[
            "patch",
            "vs",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"hosts":["web","web.example"]}}"#,
        ],
    )
    .await;
    let (smp_ok, smp) = kubectl(
        &kc,
        &["patch", "vs", "web", "-p", r#"{"spec":{"hosts":["x"]}}"#],
    )
    .await;
    assert!(
        !smp_ok && smp.contains("unknown format"),
        "SMP on a CRD must be refused: {smp}"
    );
    let out = ok(&kc, &["get", "deploy", "web", "-o", "json"]).await;
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["labels"]["tier"], "web");
    let hosts = ok(&kc, &["get", "vs", "web", "-o", "jsonpath={.spec.hosts}"]).await;
    assert!(hosts.contains("web.example"), "{hosts}");
    sim.shutdown().await;
}

/// The Gateway API HTTPRoute as kubectl sees it: discovery (`kubectl get httproutes`, the
/// server-side table), and the JSON patch backout sends, `test` ops and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_gets_and_json_patches_gateway_api_http_routes() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("SKIPPED: {KUBECTL} is not installed; this test needs the real kubectl");
        return;
    }
    let sim = Simulator::start_with("127.0.0.1:0".parse().unwrap(), SimConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc, "default").unwrap();
    sim.seed(backout::sim::seed::http_route(
        "default",
        "web",
        "web.example.com",
        "split",
        "web",
        "web-canary",
        90,
    ))
    .unwrap();

    let table = ok(&kc, &["get", "httproutes"]).await;
    assert!(
        table.contains("HOSTNAMES") && table.contains("[web.example.com]"),
        "{table}"
    );
    let full = ok(
        &kc,
        &[
            "get",
            "httproutes.gateway.networking.k8s.io",
            "web",
            "-o",
            "name",
        ],
    )
    .await;
    assert_eq!(full.trim(), "httproute.gateway.networking.k8s.io/web");
    let weights = "jsonpath={.spec.rules[1].backendRefs[*].weight}";
    assert_eq!(
        ok(&kc, &["get", "httproute", "web", "-o", weights]).await,
        "90 10"
    );

    // What backout sends: tests on the rule's name, backend names and weights, then the weights.
    let patch = r#"[{"op":"test","path":"/spec/rules/1/name","value":"split"},
        {"op":"test","path":"/spec/rules/1/backendRefs/0/name","value":"web"},
        {"op":"test","path":"/spec/rules/1/backendRefs/0/weight","value":90},
        {"op":"replace","path":"/spec/rules/1/backendRefs/0/weight","value":100},
        {"op":"test","path":"/spec/rules/1/backendRefs/1/name","value":"web-canary"},
        {"op":"test","path":"/spec/rules/1/backendRefs/1/weight","value":10},
        {"op":"replace","path":"/spec/rules/1/backendRefs/1/weight","value":0}]"#;
    ok(
        &kc,
        &["patch", "httproute", "web", "--type=json", "-p", patch],
    )
    .await;
    assert_eq!(
        ok(&kc, &["get", "httproute", "web", "-o", weights]).await,
        "100 0"
    );
    // The same patch again: its tests no longer hold, so it is refused and nothing changes.
    let (again_ok, again) = kubectl(
        &kc,
        &["patch", "httproute", "web", "--type=json", "-p", patch],
    )
    .await;
    assert!(!again_ok && again.contains("invalid"), "{again}");
    let (neg_ok, neg) = kubectl(
        &kc,
        &[
            "patch",
            "httproute",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/rules/1/backendRefs/1/weight","value":-1}]"#,
        ],
    )
    .await;
    assert!(!neg_ok && neg.contains("backendRefs[1].weight"), "{neg}");
    let (smp_ok, smp) = kubectl(
        &kc,
        &[
            "patch",
            "httproute",
            "web",
            "-p",
            r#"{"spec":{"hostnames":["x"]}}"#,
        ],
    )
    .await;
    assert!(
        !smp_ok && smp.contains("unknown format"),
        "SMP on a CRD must be refused: {smp}"
    );
    let health = ok(
        &kc,
        &[
            "get",
            "httproute",
            "web",
            "-o",
            "jsonpath={.spec.rules[0].name}",
        ],
    )
    .await;
    assert_eq!(health, "health");
    sim.shutdown().await;
}
