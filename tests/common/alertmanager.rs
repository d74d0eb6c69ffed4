//! A real Alertmanager for tests: Debian's `prometheus-alertmanager` (or `alertmanager`) on a
//! free loopback port, clustering off, routing every alert to a webhook receiver with
//! `send_resolved`, killed when dropped. Missing binary: the test FAILS naming `just deps`.
//!
//! Use with `#[path = "common/alertmanager.rs"] mod alertmanager;`.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Alertmanager {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    /// Starts one that forwards alerts to `webhook` (group_wait 0s, group_interval 1s).
    pub async fn start(webhook: &str) -> Alertmanager {
        let binary = backout::promserver::find_binary("prometheus-alertmanager")
            .or_else(|| backout::promserver::find_binary("alertmanager"))
            .expect("prometheus-alertmanager not found: run `just deps` (apt-get install prometheus-alertmanager)");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: hook\n  group_by: ['alertname', 'service', 'incident']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: hook\n  webhook_configs:\n  - url: '{webhook}'\n    send_resolved: true\n"
            ),
        )
        .unwrap();
        let port = backout::promserver::free_port().unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let am = Alertmanager {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", am.url)).await {
                if r.status().is_success() {
                    return am;
                }
            }
            assert!(Instant::now() < until, "alertmanager not ready within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The alerts Alertmanager holds as active now.
    pub async fn active(&self) -> Vec<serde_json::Value> {
        let r = reqwest::get(format!("{}/api/v2/alerts?active=true", self.url))
            .await
            .unwrap();
        r.json::<Vec<serde_json::Value>>().await.unwrap()
    }
}
