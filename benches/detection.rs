//! Detection-to-mitigation latency against real Prometheus (1 s scrape) and the simulator, with
//! the daemon's own loop at a 10 s poll interval. A hard failure (100% errors on the canary) is
//! injected at a random phase of the poll cycle; we time from the first scrape that contains an
//! error to traffic 100% stable and the canary at 0 replicas.
//!
//! `cargo bench --bench detection` (RUNS=N to change the number of runs, default 10). Under
//! `cargo test` it only checks that it builds.

use backout::actuator::{Actuator, ActuatorConfig};
use backout::audit::FileAudit;
use backout::clock::SystemClock;
use backout::daemon::{Context, Daemon, PrometheusSampler};
use backout::demo::exporter;
use backout::demo::workload::{Load, Workload};
use backout::policy::load_path;
use backout::promserver::PromServer;
use backout::sample::Track;
use backout::sim::Simulator;
use backout::source::config::PrometheusConfig;
use backout::source::prometheus::PrometheusSource;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn one_run(seed: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let policy_text = backout::demo::POLICY
        .replace("interval = \"2s\"", "interval = \"10s\"")
        .replace("for = \"6s\"", "for = \"10s\"")
        .replace("clear_for = \"4s\"", "clear_for = \"10s\"");
    let path = dir.path().join("shop.toml");
    std::fs::write(&path, policy_text).unwrap();
    let policy = load_path(&path).unwrap().remove(0);
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    sim.seed_policy(&policy).unwrap();
    let workload = Workload::new(Arc::new(SystemClock));
    workload.set(
        "shop",
        Track::Stable,
        Load::healthy(180.0).with_errors(0.002),
    );
    workload.set(
        "shop",
        Track::Canary,
        Load::healthy(20.0).with_errors(0.002),
    );
    let (exp, _) = exporter::spawn(workload.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let prom = PromServer::scraping(&[exp]).await.unwrap();
    let client = sim.kube_client().unwrap();
    let clock = Arc::new(SystemClock);
    let sampler = Arc::new(PrometheusSampler {
        source: Arc::new(PrometheusSource::new(&PrometheusConfig::for_url(&prom.url)).unwrap()),
        parallel: 8,
    });
    let config = ActuatorConfig {
        verify_poll: Duration::from_millis(100),
        ..Default::default()
    };
    let actuator = Arc::new(Actuator::new(client.clone(), clock, config));
    let audit = Arc::new(FileAudit::new(dir.path().join("audit")).unwrap());
    let ctx = Context::builder(client, sampler, actuator, audit).build();
    let daemon = Daemon::new(ctx, vec![policy.clone()]);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(daemon.run(stop_rx, reload_rx));
    // Let the analysis warm up past the warm-up and rate windows, then fail at a random phase.
    tokio::time::sleep(Duration::from_millis(15_000 + (seed * 7919) % 10_000)).await;
    workload.set("shop", Track::Canary, Load::healthy(20.0).with_errors(1.0));
    let http = reqwest::Client::new();
    let q = format!("{}/api/v1/query?query=sum(http_requests_total{{service=%22shop%22,track=%22canary%22,code=~%225..%22}})", prom.url);
    let baseline = value(&http, &q).await;
    let first_scrape = loop {
        if value(&http, &q).await > baseline + 1.0 {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    loop {
        let weight = backout::demo::canary_weight(&sim, &policy);
        let replicas = backout::demo::replicas(&sim, "demo", "shop-canary");
        if weight == Some(0) && replicas == Some(0) {
            return first_scrape.elapsed().as_secs_f64();
        }
        if first_scrape.elapsed() > Duration::from_secs(120) {
            panic!("no mitigation within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn value(http: &reqwest::Client, url: &str) -> f64 {
    let Ok(resp) = http.get(url).send().await else {
        return 0.0;
    };
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    v.pointer("/data/result/0/value/1")
        .and_then(|s| s.as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("detection: skipped (run with `cargo bench --bench detection`)");
        return;
    }
    let runs: u64 = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut secs: Vec<f64> = (0..runs)
        .map(|i| {
            let s = rt.block_on(one_run(i));
            println!("run {i}: {s:.2} s from the first failing scrape to 100% stable / canary 0");
            s
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    let pct = |p: f64| secs[((secs.len() as f64 - 1.0) * p).round() as usize];
    println!("detection-to-mitigation over {runs} runs (10 s poll, 1 s scrape, demo policy: thresholds with `for = 10s` and the sequential errors-vs-stable test): median {:.1} s, p90 {:.1} s, min {:.1} s, max {:.1} s",
        pct(0.5), pct(0.9), secs[0], secs[secs.len() - 1]);
}
