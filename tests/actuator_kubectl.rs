//! backout's undo against the real `kubectl rollout undo --to-revision`, and the `backout
//! rollback` binary end to end, both over HTTP against the simulator.

#[path = "common/cluster.rs"]
mod cluster;

use backout::actuator::fixtures::Scenario;
use backout::sim::SimHandle;
use cluster::get;
use serde_json::Value;
use std::path::Path;

fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {server}\nusers:\n- name: sim\n  user: {{}}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n    namespace: default\ncurrent-context: sim\n"
        ),
    )
    .unwrap();
    path
}

fn kubectl_present() -> bool {
    std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn policy_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("web.toml");
    std::fs::write(
        &path,
        r#"service = "web"
namespace = "default"

[deployments]
stable = "web"
canary = "web-canary"

[traffic]
virtual_service = "web"
route = "primary"
stable = { host = "web", subset = "stable" }
canary = { host = "web", subset = "canary" }
"#,
    )
    .unwrap();
    path
}

fn stable_spec_and_annotations(sim: &SimHandle) -> (Value, Value) {
    let d = get(sim, "deployments", "web").unwrap();
    (d["spec"].clone(), d["metadata"]["annotations"].clone())
}

async fn backout(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_backout"))
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backout_undo_leaves_the_same_deployment_as_kubectl_rollout_undo() {
    if !kubectl_present() {
        eprintln!(
            "SKIPPED: kubectl is not on PATH; this test compares backout's undo with kubectl's"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    let by_kubectl = cluster::start(&Scenario::default()).await;
    let kc = kubeconfig(dir.path(), &by_kubectl.url());
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

    let by_backout = cluster::start(&Scenario::default()).await;
    let kc2 = dir.path().join("b");
    std::fs::create_dir(&kc2).unwrap();
    let kc2 = kubeconfig(&kc2, &by_backout.url());
    let policy = policy_file(dir.path());
    let out = backout(&[
        "rollback",
        "--policy",
        policy.to_str().unwrap(),
        "--kubeconfig",
        kc2.to_str().unwrap(),
        "--to-revision",
        "2",
    ])
    .await;
    assert!(
        out.status.success(),
        "backout: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // kubectl returns before the controller has renumbered the revision; backout waited.
    cluster::settle(&by_kubectl).await;
    cluster::settle(&by_backout).await;
    let (k_spec, k_ann) = stable_spec_and_annotations(&by_kubectl);
    let (b_spec, b_ann) = stable_spec_and_annotations(&by_backout);
    assert_eq!(k_spec, b_spec);
    assert_eq!(k_ann, b_ann);
    assert_eq!(
        k_spec["template"]["spec"]["containers"][0]["image"],
        "web:1.1"
    );
    // kubectl patched with the same JSON patch shape (template and annotations).
    assert!(by_kubectl
        .traffic()
        .log()
        .iter()
        .any(|(m, p)| m == "PATCH"
            && p.starts_with("/apis/apps/v1/namespaces/default/deployments/web?")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_command_dry_run_changes_nothing_then_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let sim = cluster::start(&Scenario::default()).await;
    let kc = kubeconfig(dir.path(), &sim.url());
    let policy = policy_file(dir.path());
    let base = [
        "rollback",
        "--policy",
        policy.to_str().unwrap(),
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--to-revision",
        "1",
    ];

    let out = backout(&[&base[..], &["--dry-run"]].concat()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "dry_run");
    assert_eq!(sim.traffic().writes(), 0);

    let audit = dir.path().join("audit");
    let out = backout(&[&base[..], &["--audit-dir", audit.to_str().unwrap()]].concat()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "completed");
    let files: Vec<_> = std::fs::read_dir(&audit).unwrap().collect();
    assert_eq!(files.len(), 1, "one audit record per run");
    let saved: Value =
        serde_json::from_slice(&std::fs::read(files[0].as_ref().unwrap().path()).unwrap()).unwrap();
    assert_eq!(saved, report);
    let stable = get(&sim, "deployments", "web").unwrap();
    assert_eq!(
        stable["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1.0"
    );
    assert_eq!(
        get(&sim, "deployments", "web-canary").unwrap()["spec"]["replicas"],
        0
    );

    // Restore from the backup it names.
    let backup = report["backup"].as_str().unwrap();
    let out = backout(&[
        "rollback",
        "--policy",
        policy.to_str().unwrap(),
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--restore",
        backup,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        get(&sim, "deployments", "web-canary").unwrap()["spec"]["replicas"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_route_in_the_policy_fails_with_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let sim = cluster::start(&Scenario::default()).await;
    let kc = kubeconfig(dir.path(), &sim.url());
    let policy = policy_file(dir.path());
    let text = std::fs::read_to_string(&policy)
        .unwrap()
        .replace("route = \"primary\"", "route = \"main\"");
    std::fs::write(&policy, text).unwrap();
    let out = backout(&[
        "rollback",
        "--policy",
        policy.to_str().unwrap(),
        "--kubeconfig",
        kc.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("web.toml") && err.contains("traffic.route") && err.contains("primary"),
        "{err}"
    );
    assert_eq!(sim.traffic().writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_command_on_a_gateway_api_policy_moves_the_http_route_rule() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::default().with_router(backout::policy::TrafficKind::GatewayApi);
    let sim = cluster::start(&scenario).await;
    let kc = kubeconfig(dir.path(), &sim.url());
    let policy = dir.path().join("web.toml");
    std::fs::write(
        &policy,
        r#"service = "web"
namespace = "default"

[deployments]
stable = "web"
canary = "web-canary"

[traffic]
http_route = "web"
rule = "split"
stable = { service = "web" }
canary = { service = "web-canary" }
"#,
    )
    .unwrap();
    let out = backout(&[
        "rollback",
        "--policy",
        policy.to_str().unwrap(),
        "--kubeconfig",
        kc.to_str().unwrap(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "completed");
    let route = get(&sim, "httproutes", "web").unwrap();
    let weights: Vec<i64> = route["spec"]["rules"][1]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_i64().unwrap())
        .collect();
    assert_eq!(weights, [100, 0]);
    if kubectl_present() {
        let seen = std::process::Command::new("kubectl")
            .args([
                "--kubeconfig",
                kc.to_str().unwrap(),
                "get",
                "httproute",
                "web",
                "-o",
            ])
            .arg("jsonpath={.spec.rules[?(@.name==\"split\")].backendRefs[*].weight}")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&seen.stdout), "100 0");
    }
}
