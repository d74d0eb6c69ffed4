//! The Grafana dashboard (deploy/grafana/backout.json) against what backout really exports: the
//! real daemon on the simulator, real Prometheus scraping it and the workload, one canary rolled
//! back; then every panel's every expression (and the template variables' queries) is evaluated
//! against that Prometheus and must return data.

#[path = "common/prometheus.rs"]
mod prometheus;

#[path = "common/daemon.rs"]
mod daemon;

use prometheus::eventually;
use serde_json::Value;
use std::time::Duration;

/// Grafana's built-in variables as the dashboard's defaults would set them (1 s scrapes here).
fn substitute(expr: &str, metric: &str) -> String {
    expr.replace("$__range", "10m")
        .replace("$__rate_interval", "15s")
        .replace("$service", "shop")
        .replace("$metric", metric)
}

async fn query(prom: &str, expr: &str) -> Result<Vec<Value>, String> {
    let url = reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", expr)])
        .map_err(|e| e.to_string())?;
    let body: Value = reqwest::get(url)
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{expr}: {body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// A result with at least one finite value.
fn has_data(result: &[Value]) -> bool {
    result.iter().any(|r| {
        r["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_of_the_dashboard_returns_data_from_a_real_run() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/backout.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let w = daemon::world(true).await;
    let _d = w.start_daemon();
    w.wait_ready().await;
    w.healthy_for(4).await;
    w.roll_back(0.3).await;
    w.rollback_settled().await;
    let prom = w.prom.url.clone();
    // Prometheus has scraped the daemon after the rollback finished.
    eventually(Duration::from_secs(30), "the rollback scraped", || {
        let prom = prom.clone();
        async move {
            let r = query(&prom, "backout_detection_to_mitigation_seconds_count > 0").await?;
            if has_data(&r) {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        }
    })
    .await;

    let metrics: Vec<String> = w.policy.metrics.iter().map(|m| m.name.clone()).collect();
    // The template variables list the service and its metrics.
    let services = query(&prom, "count by (service) (backout_service_state)")
        .await
        .unwrap();
    assert!(
        services.iter().any(|s| s["metric"]["service"] == "shop"),
        "{services:?}"
    );
    let listed = query(
        &prom,
        "count by (metric) (backout_metric_level{service=\"shop\"})",
    )
    .await
    .unwrap();
    for m in &metrics {
        assert!(
            listed.iter().any(|s| &s["metric"]["metric"] == m),
            "{m} in {listed:?}"
        );
    }

    let panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(panels.len() >= 12, "{} panels", panels.len());
    let mut empty = Vec::new();
    for p in panels {
        let repeat = p["repeat"].as_str() == Some("metric");
        let each: Vec<&str> = if repeat {
            metrics.iter().map(String::as_str).collect()
        } else {
            vec![""]
        };
        for metric in each {
            for t in p["targets"].as_array().unwrap() {
                let expr = substitute(t["expr"].as_str().unwrap(), metric);
                let result = query(&prom, &expr).await.unwrap();
                if !has_data(&result) {
                    empty.push(format!(
                        "{} / {}: {expr} -> {result:?}",
                        p["title"], t["refId"]
                    ));
                }
            }
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
}
