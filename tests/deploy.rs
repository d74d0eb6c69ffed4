//! The install path, checked the way a cluster would take it: every kustomize overlay rendered
//! with `kubectl kustomize`, its RBAC against the one list of grants in the code
//! (`backout::kubeclient::rbac::GRANTS`) and that list against every request a real daemon run
//! makes, its probes against the admin server, its ConfigMaps through `backout validate`, and
//! the alert rules through `promtool`.

#[path = "common/prometheus.rs"]
mod prometheus;

#[path = "common/daemon.rs"]
mod daemon;

use backout::kubeclient::rbac::{Access, Scope, GRANTS};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The image the Dockerfile builds and every manifest and doc names.
const IMAGE: &str = "ghcr.io/backout/backout:0.1.0";
const NAMESPACE: &str = "backout-system";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every object `kubectl kustomize DIR` renders (DIR relative to the repository).
fn render(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(root())
        .output()
        .expect("kubectl not found (it renders the kustomize overlays)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

/// The overlays as a user applies them; the last adds the opt-in monitoring component to one
/// (a throwaway overlay under target/, as a user's own would be).
fn overlays() -> Vec<(String, Vec<Value>)> {
    let mut out: Vec<(String, Vec<Value>)> =
        ["deploy", "deploy/overlays/single", "deploy/overlays/ha"]
            .into_iter()
            .map(|d| (d.to_string(), render(d)))
            .collect();
    let dir = root().join("target/deploy-test-monitoring");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources: [../../deploy/overlays/ha]\ncomponents: [../../deploy/components/monitoring]\n",
    )
    .unwrap();
    out.push((
        "ha + monitoring".into(),
        render("target/deploy-test-monitoring"),
    ));
    out
}

fn one<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container(objects: &[Value]) -> &Value {
    &one(objects, "StatefulSet", "backout")["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn every_overlay_renders_the_image_the_dockerfile_builds_with_persistent_audit() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(IMAGE), "the Dockerfile names {IMAGE}");
    assert!(dockerfile.contains("--no-default-features"));
    let ops = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    assert!(ops.contains(IMAGE), "docs/operations.md names {IMAGE}");
    for (name, objects) in overlays() {
        let sts = one(&objects, "StatefulSet", "backout");
        assert_eq!(container(&objects)["image"], IMAGE, "{name}");
        assert_eq!(sts["metadata"]["namespace"], NAMESPACE, "{name}");
        let claims = &sts["spec"]["volumeClaimTemplates"];
        assert_eq!(
            claims[0]["metadata"]["name"], "audit",
            "{name}: audit on a PVC"
        );
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{name}");
        let replicas = sts["spec"]["replicas"].as_u64().unwrap();
        let env: Vec<&Value> = container(&objects)["env"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        let ha = env
            .iter()
            .any(|e| e["name"] == "BACKOUT_HA__ENABLED" && e["value"] == "true");
        let pdb = objects.iter().any(|o| o["kind"] == "PodDisruptionBudget");
        if name.contains("single") {
            assert_eq!((replicas, ha, pdb), (1, false, false), "{name}");
        } else {
            assert_eq!(
                (replicas, ha, pdb),
                (2, true, true),
                "{name}: leader election"
            );
        }
    }
}

/// `(scope, group, resource, name, verb)` of every grant.
type Rule = (Scope, String, String, String, String);

fn declared() -> BTreeSet<Rule> {
    let mut out = BTreeSet::new();
    for g in GRANTS {
        let names: Vec<&str> = if g.names.is_empty() {
            vec![""]
        } else {
            g.names.to_vec()
        };
        for n in names {
            for v in g.verbs {
                out.insert((
                    g.scope,
                    g.group.into(),
                    g.resource.into(),
                    n.into(),
                    v.to_string(),
                ));
            }
        }
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn rendered_rules(objects: &[Value]) -> BTreeSet<Rule> {
    let mut out = BTreeSet::new();
    for (kind, scope) in [
        ("ClusterRole", Scope::Cluster),
        ("Role", Scope::OwnNamespace),
    ] {
        for role in objects.iter().filter(|o| o["kind"] == kind) {
            if scope == Scope::OwnNamespace {
                assert_eq!(role["metadata"]["namespace"], NAMESPACE);
            }
            for rule in role["rules"].as_array().unwrap() {
                let mut names = strings(&rule["resourceNames"]);
                if names.is_empty() {
                    names.push(String::new());
                }
                for g in strings(&rule["apiGroups"]) {
                    for r in strings(&rule["resources"]) {
                        for n in &names {
                            for v in strings(&rule["verbs"]) {
                                out.insert((scope, g.clone(), r.clone(), n.clone(), v));
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_rendered_rbac_grants_exactly_the_declared_list() {
    for (name, objects) in overlays() {
        let rendered = rendered_rules(&objects);
        let declared = declared();
        let extra: Vec<_> = rendered.difference(&declared).collect();
        let missing: Vec<_> = declared.difference(&rendered).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{name}: granted but not declared in src/kubeclient/rbac.rs: {extra:?}; declared but not granted: {missing:?}"
        );
        for binding in ["ClusterRoleBinding", "RoleBinding"] {
            let b = objects.iter().find(|o| o["kind"] == binding).unwrap();
            assert_eq!(b["subjects"][0]["name"], "backout");
            assert_eq!(b["subjects"][0]["namespace"], NAMESPACE, "{name}");
        }
    }
}

#[tokio::test]
async fn the_probes_hit_admin_paths_on_the_admin_port() {
    use backout::status::{api, StatusBoard};
    use backout::telemetry::{AdminServer, Health, Metrics};
    let objects = render("deploy");
    let c = container(&objects);
    let port = c["ports"][0]["containerPort"].as_u64().unwrap();
    let settings = config_files(&objects).0;
    assert!(
        settings.contains(&format!("listen = \"0.0.0.0:{port}\"")),
        "[admin] listen is the container port {port}:\n{settings}"
    );
    let server = AdminServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Metrics::new(),
        Health::default(),
    )
    .await
    .unwrap()
    .with_routes(api::router(StatusBoard::default()));
    let addr = server.addr;
    tokio::spawn(server.serve(std::future::pending()));
    for (probe, ok) in [("livenessProbe", 200), ("readinessProbe", 503)] {
        let get = &c[probe]["httpGet"];
        assert_eq!(
            get["port"], c["ports"][0]["name"],
            "{probe} uses the admin port"
        );
        let path = get["path"].as_str().unwrap();
        let code = reqwest::get(format!("http://{addr}{path}"))
            .await
            .unwrap()
            .status();
        assert_eq!(code.as_u16(), ok, "{probe} {path} (not ready yet: 503)");
    }
}

/// `backout.toml` and the policy files of the rendered ConfigMaps.
fn config_files(objects: &[Value]) -> (String, Vec<(String, String)>) {
    let settings = one(objects, "ConfigMap", "backout-config")["data"]["backout.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let policies = one(objects, "ConfigMap", "backout-policies")["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (settings, policies)
}

#[test]
fn the_configmaps_pass_backout_validate_with_the_pods_environment() {
    for (name, objects) in overlays() {
        let (settings, policies) = config_files(&objects);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("backout.toml"), settings).unwrap();
        let pdir = dir.path().join("policies");
        std::fs::create_dir(&pdir).unwrap();
        for (file, text) in policies {
            std::fs::write(pdir.join(file), text).unwrap();
        }
        let env: Vec<(String, String)> = container(&objects)["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"].as_str().unwrap().starts_with("BACKOUT_"))
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_backout"))
            .arg("validate")
            .arg("--settings")
            .arg(dir.path().join("backout.toml"))
            .arg(&pdir)
            .envs(env)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.starts_with("ok: 1 policies"), "{name}: {text}");
    }
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .expect("promtool not found: run `just deps` (Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    assert!(promtool(&["check", "rules", "backout-rules.yaml"]).contains("SUCCESS: 8 rules found"));
    assert!(promtool(&["test", "rules", "backout-rules.test.yaml"]).contains("SUCCESS"));
    // The Prometheus Operator copy is the same rules.
    let file: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/backout-rules.yaml")).unwrap(),
    )
    .unwrap();
    let component: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/components/monitoring/prometheusrule.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        component["spec"]["groups"], file["groups"],
        "prometheusrule.yaml drifted from backout-rules.yaml"
    );
    // Every series the rules read is one backout registers (or the escalation counter, which
    // the notification work adds).
    let registered = registered_series();
    let rules =
        std::fs::read_to_string(root().join("deploy/prometheus/backout-rules.yaml")).unwrap();
    for name in series_names(&rules) {
        let known = registered.contains(&name) || name == "backout_escalations_total";
        assert!(
            known,
            "the rules read {name}, which backout does not export"
        );
    }
}

/// Every series name backout can expose: `backout_<name>` as registered in
/// src/telemetry/metrics.rs, and the per-service families written by src/telemetry/judged.rs
/// (`const NAME: (&str, &str, &str) = ("name", ...)`), with `_total` for counters and the
/// histogram suffixes.
fn registered_series() -> BTreeSet<String> {
    let read = |f: &str| std::fs::read_to_string(root().join(f)).unwrap();
    let (metrics, judged) = (
        read("src/telemetry/metrics.rs"),
        read("src/telemetry/judged.rs"),
    );
    let registered = metrics.split("registry.register(").skip(1);
    let written = judged.split(": (&str, &str, &str) = (").skip(1);
    let mut out = BTreeSet::new();
    for chunk in registered.chain(written) {
        let name = chunk.split('"').nth(1).unwrap_or_default();
        for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
            out.insert(format!("backout_{name}{suffix}"));
        }
    }
    out
}

/// `backout_*` and `up` series names in a text.
fn series_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("backout_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // Label values and prose (`backout_query_errors_total` in a description) count too.
        out.insert(name);
    }
    out.retain(|n| n != "backout_" && !n.starts_with("backout_rules"));
    out
}

/// Each distinct access in the simulator's request log, with the requests' own order.
fn accesses(log: &[(String, String)]) -> BTreeSet<Access> {
    log.iter()
        .filter_map(|(m, p)| Access::parse(m, p))
        .collect()
}

/// Every request a real daemon makes is granted, and every grant is used: leader election, the
/// fleet guard, the Deployment watches, a rollback that removes the canary's HPA and raises the
/// stable's (backups, Events), `backout rollback --restore` (re-creating the HPA), and a second
/// canary rolled back (the fleet guard's count updated, repeated Events patched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_granted_and_every_grant_is_used() {
    use backout::sim::seed;
    let w = daemon::world(false).await;
    w.sim
        .seed(seed::hpa("demo", "shop", "shop", 1, 10))
        .unwrap();
    w.sim
        .seed(seed::hpa("demo", "shop-canary", "shop-canary", 1, 5))
        .unwrap();
    let _d = w.start_daemon_with(&[
        ("BACKOUT_HA__ENABLED", "true"),
        ("POD_NAMESPACE", NAMESPACE),
    ]);
    w.wait_ready().await;
    w.healthy_for(4).await;
    w.roll_back(0.3).await;
    w.rollback_settled().await;
    restore_and_start_a_new_canary(&w).await;
    w.healthy_for(4).await;
    w.roll_back(0.3).await;
    roll_back_a_gateway_api_service(&w);
    let mut used = accesses(&w.sim.traffic().log());
    let mut unused = declared();
    for a in &used {
        assert!(
            a.granted_by(NAMESPACE).is_some(),
            "{a} is not granted: add it to src/kubeclient/rbac.rs and deploy/base/rbac.yaml"
        );
        // Every grant that covers the access counts as used (the Role's fleet-guard rules
        // overlap the ClusterRole's, for installs that replace it with per-namespace Roles).
        unused.retain(|(scope, group, res, name, verb)| {
            let in_scope = *scope == Scope::Cluster || a.namespace.as_deref() == Some(NAMESPACE);
            !(in_scope
                && *group == a.group
                && *res == a.resource
                && (name.is_empty() || a.name.as_deref() == Some(name.as_str()))
                && *verb == a.verb)
        });
    }
    used.retain(|a| a.verb != "get");
    assert!(
        unused.is_empty(),
        "granted but never used: {unused:?}\nused (but get): {used:#?}"
    );
}

/// `backout rollback --restore` from the first rollback's backup (the HPA re-created, traffic
/// back on the canary), then a new canary revision.
/// A service routed by a Gateway API HTTPRoute, rolled back with `backout rollback`: the
/// HTTPRoute grant is exercised by the same actuator the daemon runs.
fn roll_back_a_gateway_api_service(w: &daemon::World) {
    use backout::sim::seed;
    w.sim
        .seed(seed::deployment("demo", "web", "web", "stable", "web:1", 2))
        .unwrap();
    w.sim
        .seed(seed::deployment(
            "demo",
            "web-canary",
            "web",
            "canary",
            "web:2",
            1,
        ))
        .unwrap();
    w.sim
        .seed(seed::http_route(
            "demo",
            "web",
            "web.demo",
            "split",
            "web",
            "web-canary",
            90,
        ))
        .unwrap();
    let policy = w.dir.path().join("web-gateway.toml");
    let text = "service = \"web\"\nnamespace = \"demo\"\n\n[deployments]\nstable = \"web\"\ncanary = \"web-canary\"\n\n[traffic]\nhttp_route = \"web\"\nrule = \"split\"\nstable = { service = \"web\" }\ncanary = { service = \"web-canary\" }\n";
    std::fs::write(&policy, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backout"))
        .args(["rollback", "--policy"])
        .arg(&policy)
        .arg("--kubeconfig")
        .arg(w.dir.path().join("kubeconfig"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backout rollback (Gateway API): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn restore_and_start_a_new_canary(w: &daemon::World) {
    let backup = w
        .sim
        .store()
        .read(|t| t.list("", "configmaps", Some("demo")))
        .into_iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(String::from))
        .find(|n| n.starts_with("backout-backup-shop"))
        .expect("the first rollback's backup ConfigMap");
    let kubeconfig = w.dir.path().join("kubeconfig");
    let policy = w.dir.path().join("policies/shop.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_backout"))
        .args(["rollback", "--restore", &backup, "--policy"])
        .arg(&policy)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backout rollback --restore: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(w.sim.kube_client().unwrap(), "demo");
    let image = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "shop:1.2.0"}]}}}});
    deployments
        .patch(
            "shop-canary",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(image),
        )
        .await
        .unwrap();
}
