//! End to end: the real `backout run` binary against real Prometheus (scraping the synthetic
//! workload every second) and the Kubernetes simulator. Traffic follows the VirtualService, so a
//! rollback really takes the canary out of the request stream.

#[path = "common/prometheus.rs"]
mod prometheus;
#[path = "common/receiver.rs"]
mod receiver;

use backout::clock::SystemClock;
use backout::demo::exporter;
use backout::demo::workload::{Load, Workload};
use backout::demo::{canary_weight, replicas};
use backout::policy::load_path;
use backout::sample::Track;
use backout::sim::{SimHandle, Simulator};
use prometheus::{eventually, free_port, Prometheus};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const TOTAL_RPS: f64 = 200.0;

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct World {
    policy: backout::policy::Policy,
    sim: SimHandle,
    workload: Workload,
    prom: Prometheus,
    dir: tempfile::TempDir,
    admin: String,
    /// The on-call Slack channel of `[notify]` (a local receiver).
    slack: receiver::Receiver,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    // The demo policy with an RTO and a short recovery verification (the runbooks' 10 minutes
    // would outlast the test).
    let policy_text = format!(
        "rto = \"5m\"\n{}\n[verify]\nwindow = \"5s\"\n",
        backout::demo::POLICY
    );
    std::fs::write(policies.join("shop.toml"), policy_text).unwrap();
    let policy = load_path(&policies.join("shop.toml")).unwrap().remove(0);
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    sim.seed_policy(&policy).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "demo").unwrap();

    let workload = Workload::new(Arc::new(SystemClock));
    workload.set(
        "shop",
        Track::Stable,
        Load::healthy(TOTAL_RPS * 0.9).with_errors(0.002),
    );
    workload.set(
        "shop",
        Track::Canary,
        Load::healthy(TOTAL_RPS * 0.1).with_errors(0.002),
    );
    let (exp, _) = exporter::spawn(workload.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let prom = Prometheus::scraping(&[exp]).await.unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let slack = receiver::Receiver::start().await;
    let slack_url = dir.path().join("slack-url");
    std::fs::write(&slack_url, slack.url("services/T0/B0/secret")).unwrap();
    std::fs::write(
        dir.path().join("backout.toml"),
        format!(
            "policy_dir = {:?}\naudit_dir = {:?}\n[prometheus]\nurl = {:?}\n[admin]\nlisten = {:?}\n[kubernetes]\nkubeconfig = {:?}\n[reload]\nwatch = true\n[notify]\ndefault = [\"oncall-slack\"]\n[notify.channels.oncall-slack]\nkind = \"slack\"\nurl_file = {:?}\n",
            policies,
            dir.path().join("audit"),
            prom.url,
            admin,
            kubeconfig,
            slack_url
        ),
    )
    .unwrap();
    World {
        policy,
        sim,
        workload,
        prom,
        dir,
        admin,
        slack,
    }
}

fn start_daemon(config: &Path) -> Daemon {
    Daemon(
        Command::new(env!("CARGO_BIN_EXE_backout"))
            .args(["run", "--config"])
            .arg(config)
            .env("BACKOUT_LOG__FORMAT", "pretty")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Keeps each track's request rate in line with the VirtualService weights.
fn follow_traffic(w: &World, canary_errors: f64) {
    let share = canary_weight(&w.sim, &w.policy).unwrap_or(0) as f64 / 100.0;
    let canary = Load::healthy(TOTAL_RPS * share).with_errors(canary_errors);
    w.workload.set("shop", Track::Canary, canary);
    w.workload.set(
        "shop",
        Track::Stable,
        Load::healthy(TOTAL_RPS * (1.0 - share)).with_errors(0.002),
    );
}

async fn wait_ready(w: &World) {
    let admin = w.admin.clone();
    eventually(Duration::from_secs(30), "daemon ready", || {
        let admin = admin.clone();
        async move {
            let (code, body) = get(format!("http://{admin}/readyz")).await;
            if code == 200 {
                Ok(())
            } else {
                Err(body)
            }
        }
    })
    .await;
}

/// Drives traffic with the canary at `canary_errors` until it is rolled back (or 60 s pass).
async fn rolled_back_within_a_minute(w: &World, canary_errors: f64) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        follow_traffic(w, canary_errors);
        if canary_weight(&w.sim, &w.policy) == Some(0)
            && replicas(&w.sim, "demo", "shop-canary") == Some(0)
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

async fn get(url: String) -> (u16, String) {
    match reqwest::get(&url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_left_alone_and_an_error_spike_is_rolled_back() {
    let w = world().await;
    let _d = start_daemon(&w.dir.path().join("backout.toml"));
    wait_ready(&w).await;
    // A healthy canary over 20 s of traffic and ten evaluations: never touched.
    for _ in 0..40 {
        follow_traffic(&w, 0.002);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        canary_weight(&w.sim, &w.policy),
        Some(10),
        "healthy canary must keep its traffic"
    );
    assert_eq!(replicas(&w.sim, "demo", "shop-canary"), Some(1));

    // The canary starts failing 30% of its requests.
    let took = rolled_back_within_a_minute(&w, 0.30).await;
    let took = took
        .unwrap_or_else(|| panic!("no rollback within 60 s; prometheus log:\n{}", w.prom.log()));
    eprintln!(
        "error spike rolled back {:.1} s after it started",
        took.as_secs_f64()
    );

    let admin = w.admin.clone();
    let metrics = eventually(
        Duration::from_secs(30),
        "rollback recorded in /metrics",
        || {
            let admin = admin.clone();
            async move {
                let (_, m) = get(format!("http://{admin}/metrics")).await;
                // The state turns "rolled back" when the order is taken; the rollback's own
                // series once the supervisor has finished it (Verify included).
                let finished = m.lines().any(|l| {
                    l.starts_with("backout_rollbacks_total{service=\"shop\"")
                        && l.ends_with("outcome=\"success\"} 1")
                });
                if m.contains("backout_service_state{service=\"shop\"} 4") && finished {
                    Ok(m)
                } else {
                    Err(m)
                }
            }
        },
    )
    .await;
    // The sequential test usually fires first (on the first poll with the spike's counts); the
    // error-rate threshold needs its `for`. Either way the reason is an error metric.
    let reason = ["errors_vs_stable", "error_rate"]
        .into_iter()
        .find(|r| {
            metrics.contains(&format!(
                "backout_rollbacks_total{{service=\"shop\",reason=\"{r}\",outcome=\"success\"}} 1"
            ))
        })
        .unwrap_or_else(|| panic!("no successful rollback by an error metric in\n{metrics}"));
    assert!(
        metrics.contains(&format!(
            "backout_metric_level{{service=\"shop\",metric=\"{reason}\"}} 2"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "backout_metric_value{service=\"shop\",metric=\"errors_vs_stable\",track=\"statistic\"}"
        ),
        "the sequential test's statistic is exported:\n{metrics}"
    );
    for series in [
        "backout_service_state{service=\"shop\"} 4",
        "backout_policies_loaded 1",
        "backout_detection_to_mitigation_seconds_count 1",
        "backout_query_duration_seconds_count",
        "backout_action_step_duration_seconds_count{step=\"route_all_to_stable\"} 1",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
    // The status API tells the same story: the rollback, its reason and the plotted history.
    let (code, body) = get(format!("http://{}/api/v1/services/demo/shop", w.admin)).await;
    assert_eq!(code, 200, "{body}");
    let shop: backout::status::ServiceDetail = serde_json::from_str(&body).unwrap();
    let rollback = shop.status.last_rollback.as_ref().expect("last rollback");
    assert_eq!(
        rollback.state,
        backout::status::RollbackState::Succeeded,
        "{body}"
    );
    assert!(rollback.detail.contains(reason), "{body}");
    assert_eq!(shop.status.phase, backout::status::PhaseName::RolledBack);
    assert!(
        shop.history
            .iter()
            .any(|s| s.track == "canary" && s.points.len() > 5),
        "{body}"
    );
    let audit = std::fs::read_to_string(w.dir.path().join("audit/audit.jsonl")).unwrap();
    assert_eq!(
        audit.matches("\"kind\":\"rollback_completed\"").count(),
        1,
        "{audit}"
    );
    // The on-call channel got runbook 001's start and resolution notices, in order.
    // The on-call channel got runbook 001's start, an update once the plan completed, and the
    // resolution once the stable alone stayed healthy for `verify.window`, with the RTO.
    let slack = w
        .slack
        .wait_for("services/T0/B0/secret", 3, Duration::from_secs(30))
        .await;
    let texts: Vec<&str> = slack.iter().map(|b| b["text"].as_str().unwrap()).collect();
    assert!(
        texts[0].starts_with("🚨 INCIDENT: Production Rollback Initiated"),
        "{texts:?}"
    );
    assert!(texts[0].contains("Service: shop"), "{texts:?}");
    assert!(
        texts[1].starts_with("UPDATE: Rollback Complete, Verifying Recovery"),
        "{texts:?}"
    );
    assert!(
        texts[2].starts_with("✅ RESOLVED: Production Rollback Complete"),
        "{texts:?}"
    );
    assert!(texts[2].contains("Recovery: recovered at +"), "{texts:?}");
    assert!(texts[2].contains("(target 5m: met)"), "{texts:?}");
    eprintln!(
        "notifications received by the Slack stand-in:\n{}",
        texts.join("\n---\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_outage_causes_no_rollback_and_readyz_fails() {
    let mut w = world().await;
    let _d = start_daemon(&w.dir.path().join("backout.toml"));
    wait_ready(&w).await;
    w.prom.stop();
    let admin = w.admin.clone();
    eventually(Duration::from_secs(20), "readyz turns not-ready", || {
        let admin = admin.clone();
        async move {
            let (code, body) = get(format!("http://{admin}/readyz")).await;
            if code == 503 && body.contains("\"prometheus_reachable\":false") {
                Ok(())
            } else {
                Err((code, body))
            }
        }
    })
    .await;
    // Meanwhile the canary turns bad, but nobody can see it: hold, never roll back blind.
    for _ in 0..30 {
        follow_traffic(&w, 0.30);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(canary_weight(&w.sim, &w.policy), Some(10));
    assert_eq!(replicas(&w.sim, "demo", "shop-canary"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_hot_reload_takes_effect_and_a_broken_file_is_rejected() {
    let w = world().await;
    let _d = start_daemon(&w.dir.path().join("backout.toml"));
    wait_ready(&w).await;
    let file = w.dir.path().join("policies/shop.toml");
    // A broken edit is rejected; the running policy goes on (the canary keeps its traffic).
    std::fs::write(&file, "service = \n").unwrap();
    for _ in 0..10 {
        follow_traffic(&w, 0.02);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(canary_weight(&w.sim, &w.policy), Some(10));
    let (_, metrics) = get(format!("http://{}/metrics", w.admin)).await;
    assert!(
        metrics.contains("backout_policy_reloads_total{result=\"failure\"}"),
        "{metrics}"
    );
    // The canary runs at 2% errors: fine under the 5% critical level, but a tightened policy
    // (critical above 1%) hot-reloaded mid-run must catch it.
    let tightened = backout::demo::POLICY
        .replace(
            "critical = { above = 0.05 }",
            "critical = { above = 0.015 }",
        )
        .replace("warning = { above = 0.01 }", "warning = { above = 0.005 }");
    std::fs::write(&file, tightened).unwrap();
    assert!(
        rolled_back_within_a_minute(&w, 0.02).await.is_some(),
        "the reloaded policy did not take effect"
    );
}
