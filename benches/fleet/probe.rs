//! Prometheus alone: how long the fleet's own Prometheus takes to answer one phase's batched
//! queries, measured before the daemon starts. It is the floor under the daemon's evaluation lag:
//! a phase cannot be judged before its queries are answered.

use backout::sim::fleet::TEMPLATES;
use std::time::{Duration, Instant};

/// One phase's share of the fleet, as the daemon's schedule spreads it (10 phases).
const PHASES: usize = 10;
const RUNS: usize = 3;

/// Median seconds of each distinct template query for one phase's services, in template order.
pub async fn phase_queries(prom: &str, services: &[String]) -> anyhow::Result<Vec<f64>> {
    let batch: Vec<&str> = services
        .iter()
        .step_by(PHASES)
        .map(String::as_str)
        .collect();
    let regex = batch.join("|");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut out = Vec::new();
    for q in distinct_queries()? {
        let promql = q
            .replace("{{window}}", "1m")
            .replace("{{services}}", &regex);
        let mut runs = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let started = Instant::now();
            let resp = http
                .post(format!("{prom}/api/v1/query"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("query={}", encode(&promql)))
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "{}: {}", resp.status(), promql);
            resp.bytes().await?;
            runs.push(started.elapsed().as_secs_f64());
        }
        runs.sort_by(f64::total_cmp);
        out.push(runs[RUNS / 2]);
    }
    Ok(out)
}

/// The fleet templates' distinct queries (`query`, `events`, `total`), as the daemon batches them.
fn distinct_queries() -> anyhow::Result<Vec<String>> {
    let doc: toml::Value = toml::from_str(TEMPLATES)?;
    let mut out: Vec<String> = Vec::new();
    let templates = doc
        .get("templates")
        .and_then(toml::Value::as_table)
        .ok_or_else(|| anyhow::anyhow!("no [templates] in the fleet templates"))?;
    for t in templates.values() {
        let seq = t.get("sequential");
        let texts = [
            t.get("query"),
            seq.and_then(|s| s.get("events")),
            seq.and_then(|s| s.get("total")),
        ];
        for text in texts.into_iter().flatten().filter_map(toml::Value::as_str) {
            if !out.iter().any(|q| q == text) {
                out.push(text.to_string());
            }
        }
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` value encoding.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
