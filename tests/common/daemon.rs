//! The real `backout run` binary against real Prometheus (scraping the synthetic workload, and
//! optionally the daemon's own `/metrics`) and the Kubernetes simulator, for end-to-end tests of
//! what the daemon serves (status API and page, dashboards). Traffic follows the VirtualService,
//! so a rollback really takes the canary out of the request stream.
//!
//! Use with `#[path = "common/prometheus.rs"] mod prometheus;` and
//! `#[path = "common/daemon.rs"] mod daemon;`.

#![allow(dead_code)]

use super::prometheus::{eventually, free_port, Prometheus};
use backout::clock::SystemClock;
use backout::demo::exporter;
use backout::demo::workload::{Load, Workload};
use backout::demo::{canary_weight, replicas};
use backout::policy::load_path;
use backout::sample::Track;
use backout::sim::{SimHandle, Simulator};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const TOTAL_RPS: f64 = 200.0;

/// A running daemon, killed when dropped.
pub struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct World {
    pub policy: backout::policy::Policy,
    pub sim: SimHandle,
    pub workload: Workload,
    pub prom: Prometheus,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:port` of the daemon's admin server.
    pub admin: String,
    pub config: PathBuf,
}

/// The demo's `shop` service in the simulator, its workload exporter, Prometheus scraping it
/// (and the daemon's admin address when `scrape_daemon`), and a `backout.toml` for the daemon.
pub async fn world(scrape_daemon: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("shop.toml"), backout::demo::POLICY).unwrap();
    let policy = load_path(&policies.join("shop.toml")).unwrap().remove(0);
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    sim.seed_policy(&policy).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "demo").unwrap();
    let workload = Workload::new(Arc::new(SystemClock));
    let (exp, _) = exporter::spawn(workload.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let targets: Vec<SocketAddr> = if scrape_daemon {
        vec![exp, admin]
    } else {
        vec![exp]
    };
    let prom = Prometheus::scraping(&targets).await.unwrap();
    let config = dir.path().join("backout.toml");
    std::fs::write(
        &config,
        format!(
            "policy_dir = {:?}\naudit_dir = {:?}\n[prometheus]\nurl = {:?}\n[admin]\nlisten = {:?}\n[kubernetes]\nkubeconfig = {:?}\n",
            policies,
            dir.path().join("audit"),
            prom.url,
            admin.to_string(),
            kubeconfig
        ),
    )
    .unwrap();
    let w = World {
        policy,
        sim,
        workload,
        prom,
        dir,
        admin: admin.to_string(),
        config,
    };
    w.follow_traffic(0.002);
    w
}

impl World {
    pub fn start_daemon(&self) -> Daemon {
        self.start_daemon_with(&[])
    }

    /// The daemon with extra environment (`BACKOUT_*` settings, `POD_NAMESPACE`).
    pub fn start_daemon_with(&self, env: &[(&str, &str)]) -> Daemon {
        Daemon(
            Command::new(env!("CARGO_BIN_EXE_backout"))
                .args(["run", "--config"])
                .arg(&self.config)
                .envs(env.iter().copied())
                .env("BACKOUT_LOG__FORMAT", "pretty")
                .env("POD_NAME", "backout-test-0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Keeps each track's request rate in line with the VirtualService weights.
    pub fn follow_traffic(&self, canary_errors: f64) {
        let share = canary_weight(&self.sim, &self.policy).unwrap_or(0) as f64 / 100.0;
        let canary = Load::healthy(TOTAL_RPS * share).with_errors(canary_errors);
        self.workload.set("shop", Track::Canary, canary);
        self.workload.set(
            "shop",
            Track::Stable,
            Load::healthy(TOTAL_RPS * (1.0 - share)).with_errors(0.002),
        );
    }

    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.admin);
        eventually(Duration::from_secs(30), "daemon ready", || {
            let url = url.clone();
            async move {
                match get(&url).await {
                    (200, _) => Ok(()),
                    other => Err(other),
                }
            }
        })
        .await;
    }

    /// Healthy traffic for `secs` seconds.
    pub async fn healthy_for(&self, secs: u64) {
        for _ in 0..secs * 4 {
            self.follow_traffic(0.002);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Drives traffic with the canary at `canary_errors` until it is rolled back; panics after 60 s.
    pub async fn roll_back(&self, canary_errors: f64) {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            self.follow_traffic(canary_errors);
            if canary_weight(&self.sim, &self.policy) == Some(0)
                && replicas(&self.sim, "demo", "shop-canary") == Some(0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "no rollback within 60 s; prometheus log:\n{}",
            self.prom.log()
        );
    }

    /// Waits until the status API shows the rollback finished; returns the service's JSON.
    pub async fn rollback_settled(&self) -> serde_json::Value {
        let url = format!("http://{}/api/v1/services/demo/shop", self.admin);
        eventually(
            Duration::from_secs(30),
            "rollback succeeded in the status API",
            || {
                let url = url.clone();
                async move {
                    let (_, body) = get(&url).await;
                    let v: serde_json::Value =
                        serde_json::from_str(&body).map_err(|_| body.clone())?;
                    if v["last_rollback"]["state"] == "succeeded" {
                        Ok(v)
                    } else {
                        Err(body)
                    }
                }
            },
        )
        .await
    }
}

pub async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}
