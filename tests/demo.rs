//! The embedded demo is also the smoke test: a healthy canary is left alone, the bad one is rolled
//! back, traffic and replicas end on the stable. Once with the direct feed, once through a real
//! Prometheus when one is on PATH.

use backout::demo::{run, DemoOptions, DemoResult, PrometheusMode};
use std::time::Duration;

/// Runs the demo and checks what every mode must get right; returns the result and its output.
async fn run_demo(opts: DemoOptions, detection: std::ops::RangeInclusive<f64>) -> DemoResult {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        audit_dir: Some(dir.path().to_path_buf()),
        ..opts
    };
    let mut lines = Vec::new();
    let result = run(opts, &mut |l| lines.push(l)).await.unwrap();
    let output = lines.join("\n");
    assert!(result.rolled_back, "{output}");
    assert!(
        !result.false_rollback,
        "rolled back while healthy:\n{output}"
    );
    assert_eq!(result.canary_weight, Some(0), "{output}");
    assert_eq!(result.canary_replicas, Some(0), "{output}");
    let seconds = result.detection_seconds.unwrap();
    assert!(
        detection.contains(&seconds),
        "detection took {seconds} s, expected {detection:?}:\n{output}"
    );
    let incidents: Vec<_> = std::fs::read_dir(dir.path().join("incidents"))
        .unwrap()
        .collect();
    assert_eq!(incidents.len(), 1, "exactly one incident report");
    let kinds: Vec<String> = result
        .timeline
        .iter()
        .map(|r| format!("{:?}", r.kind))
        .collect();
    assert!(
        kinds.contains(&"RollbackCompleted".to_string()),
        "{kinds:?}"
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_rolls_back_the_bad_canary_and_only_it() {
    let opts = DemoOptions {
        speed: 20.0,
        healthy_for: Duration::from_secs(30),
        deadline: Duration::from_secs(60),
        prometheus: PrometheusMode::Off,
        ..Default::default()
    };
    // Detected within a few polls of turning bad: the sequential test on the first poll after
    // (20% errors against 0.2% is overwhelming), the thresholds after their 6 s `for`.
    let result = run_demo(opts, 1.0..=20.0).await;
    assert!(!result.real_prometheus);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_through_real_prometheus_rolls_back_the_bad_canary() {
    if backout::promserver::find_binary("prometheus").is_none() {
        eprintln!("SKIPPED: `prometheus` is not on PATH (run `just deps`); the direct-feed demo test still ran");
        return;
    }
    let opts = DemoOptions {
        // The highest speed real mode allows; about 15 s of wall time.
        speed: backout::demo::MAX_REAL_SPEED,
        healthy_for: Duration::from_secs(20),
        deadline: Duration::from_secs(60),
        prometheus: PrometheusMode::On,
        ..Default::default()
    };
    // Plus up to one scrape (1 s real = 4 s simulated) and one poll of lag behind the direct feed.
    let result = run_demo(opts, 1.0..=30.0).await;
    assert!(result.real_prometheus);
}
