//! High availability with real processes: two `backout run` replicas with `[ha]` on, one
//! simulator, real Prometheus scraping the synthetic workload. The leader is SIGKILLed in the
//! middle of a rollback; the standby takes the Lease over, resumes the rollback from its backup
//! ConfigMap and finishes it: one route change and one scale to zero, counted by the simulator.

#[path = "common/prometheus.rs"]
mod prometheus;

use backout::clock::SystemClock;
use backout::demo::exporter;
use backout::demo::workload::{Load, Workload};
use backout::demo::{canary_weight, replicas};
use backout::policy::load_path;
use backout::sample::Track;
use backout::sim::store::ChangeKind;
use backout::sim::{SimConfig, SimHandle, Simulator};
use prometheus::{free_port, Prometheus};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOTAL_RPS: f64 = 200.0;

struct Replica {
    child: Child,
    admin: String,
    dir: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(identity: &str, root: &Path, prom: &str, kubeconfig: &Path) -> Replica {
    let dir = root.join(identity);
    std::fs::create_dir_all(&dir).unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "policy_dir = {:?}\naudit_dir = {:?}\n[prometheus]\nurl = {prom:?}\n[admin]\nlisten = {admin:?}\n[kubernetes]\nkubeconfig = {kubeconfig:?}\n[reload]\nwatch = false\n[ha]\nenabled = true\nnamespace = \"backout-system\"\nidentity = {identity:?}\nlease_duration = \"3s\"\nrenew_deadline = \"2s\"\nretry_period = \"500ms\"\n",
        root.join("policies"),
        dir.join("audit"),
    );
    std::fs::write(dir.join("backout.toml"), config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_backout"))
        .args(["run", "--config"])
        .arg(dir.join("backout.toml"))
        .env("BACKOUT_LOG__FORMAT", "pretty")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Replica { child, admin, dir }
}

async fn role(r: &Replica) -> String {
    let body = match reqwest::get(format!("http://{}/readyz", r.admin)).await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => return String::new(),
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["role"].as_str().map(String::from))
        .unwrap_or_default()
}

async fn wait_role(r: &Replica, want: &str, within: Duration) {
    let started = Instant::now();
    while role(r).await != want {
        assert!(
            started.elapsed() < within,
            "{} never became {want}",
            r.admin
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn follow_traffic(sim: &SimHandle, p: &backout::policy::Policy, w: &Workload, errors: f64) {
    let share = canary_weight(sim, p).unwrap_or(0) as f64 / 100.0;
    w.set(
        "shop",
        Track::Canary,
        Load::healthy(TOTAL_RPS * share).with_errors(errors),
    );
    w.set(
        "shop",
        Track::Stable,
        Load::healthy(TOTAL_RPS * (1.0 - share)).with_errors(0.002),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_sigkilled_mid_rollback_is_replaced_and_the_rollback_lands_once() {
    let root = tempfile::tempdir().unwrap();
    let policies = root.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("shop.toml"), backout::demo::POLICY).unwrap();
    let policy = load_path(&policies.join("shop.toml")).unwrap().remove(0);
    // Rollouts take 8 s: the rollback's pre-scale waits on them, so there is a "middle".
    let sim_config = SimConfig {
        rollout_delay: Duration::from_secs(8),
    };
    let sim = Simulator::start_with("127.0.0.1:0".parse().unwrap(), sim_config)
        .await
        .unwrap();
    sim.seed_policy(&policy).unwrap();
    let kubeconfig = root.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "demo").unwrap();
    let workload = Workload::new(Arc::new(SystemClock));
    follow_traffic(&sim, &policy, &workload, 0.002);
    let (exp, _) = exporter::spawn(workload.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let prom = Prometheus::scraping(&[exp]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await; // seeded rollouts done
    let mut feed = sim.store().feed();

    let mut first = start("r1", root.path(), &prom.url, &kubeconfig);
    wait_role(&first, "leader", Duration::from_secs(30)).await;
    let second = start("r2", root.path(), &prom.url, &kubeconfig);
    wait_role(&second, "standby", Duration::from_secs(30)).await;

    // The canary fails 30% of requests; once its rollback has started, kill the leader.
    let started = Instant::now();
    loop {
        follow_traffic(&sim, &policy, &workload, 0.30);
        let backups = sim.store().read(|t| t.list("", "configmaps", Some("demo")));
        if !backups.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no rollback started"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    wait_role(&second, "leader", Duration::from_secs(15)).await;
    let takeover = killed.elapsed();

    let mitigated = |sim: &SimHandle| {
        canary_weight(sim, &policy) == Some(0) && replicas(sim, "demo", "shop-canary") == Some(0)
    };
    while !mitigated(&sim) {
        follow_traffic(&sim, &policy, &workload, 0.30);
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "not mitigated after the takeover"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let state = || {
        sim.store().read(|t| t.list("", "configmaps", Some("demo")))[0]
            .pointer("/metadata/annotations/backout.dev~1rollback-state")
            .and_then(|s| s.as_str().map(String::from))
    };
    while state().as_deref() != Some("completed") {
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "rollback never completed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "takeover {:.1} s after SIGKILL; mitigated {:.1} s after",
        takeover.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );

    let mut canary_to_zero = 0;
    let mut route_to_zero = 0;
    let (mut last_replicas, mut last_weight) = (None, None);
    while let Ok(c) = feed.try_recv() {
        if c.kind == ChangeKind::Deleted {
            continue;
        }
        if c.key.plural == "deployments" && c.key.name == "shop-canary" {
            let r = c.object.pointer("/spec/replicas").and_then(|v| v.as_i64());
            canary_to_zero += usize::from(r == Some(0) && last_replicas != Some(0));
            last_replicas = r;
        }
        if c.key.plural == "virtualservices" && c.key.name == "shop" {
            let w = canary_weight_of(&c.object);
            route_to_zero += usize::from(w == Some(0) && last_weight != Some(0));
            last_weight = w;
        }
    }
    assert_eq!(canary_to_zero, 1, "one scale to zero");
    assert_eq!(route_to_zero, 1, "one route change to stable");
    let trail = std::fs::read_to_string(second.dir.join("audit/audit.jsonl")).unwrap();
    assert!(trail.contains("\"kind\":\"rollback_completed\""), "{trail}");
    sim.shutdown().await;
}

/// The canary destination's weight in the VirtualService's split route.
fn canary_weight_of(vs: &serde_json::Value) -> Option<i64> {
    let routes = vs.pointer("/spec/http")?.as_array()?;
    routes.iter().find_map(|r| {
        r.get("route")?.as_array()?.iter().find_map(|d| {
            (d.pointer("/destination/subset")?.as_str()? == "canary")
                .then(|| d.get("weight").and_then(|w| w.as_i64()).unwrap_or(0))
        })
    })
}
