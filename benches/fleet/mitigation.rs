//! When is a bad canary mitigated: read straight from the simulator (not through the counting
//! proxy, so the harness's reads are not counted as the daemon's).
//!
//! Mitigated = the VirtualService's route sends 100% to the stable and the canary Deployment's
//! `spec.replicas` is 0: what the "traffic 100% stable, canary 0" means, and what a user
//! would check with kubectl.

use serde_json::Value;
use std::time::{Duration, Instant};

/// One service turned bad.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub service: String,
}

/// How often pending services are read; the mitigation times are this coarse.
const POLL: Duration = Duration::from_millis(500);

async fn get_json(http: &reqwest::Client, url: String) -> Option<Value> {
    let r = http.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// True when route `primary` carries no canary weight and the stable has 100.
fn route_all_stable(vs: &Value, service: &str) -> bool {
    let Some(routes) = vs.pointer("/spec/http").and_then(Value::as_array) else {
        return false;
    };
    let Some(primary) = routes
        .iter()
        .find(|r| r.get("name").and_then(Value::as_str) == Some("primary"))
    else {
        return false;
    };
    let Some(dests) = primary.get("route").and_then(Value::as_array) else {
        return false;
    };
    let weight_of = |subset: &str| -> i64 {
        dests
            .iter()
            .filter(|d| d.pointer("/destination/subset").and_then(Value::as_str) == Some(subset))
            .filter(|d| d.pointer("/destination/host").and_then(Value::as_str) == Some(service))
            .map(|d| d.get("weight").and_then(Value::as_i64).unwrap_or(100))
            .sum()
    };
    weight_of("stable") == 100 && weight_of("canary") == 0
}

async fn is_mitigated(http: &reqwest::Client, sim: &str, t: &Target) -> bool {
    let (ns, svc) = (&t.namespace, &t.service);
    let deploy = get_json(
        http,
        format!("{sim}/apis/apps/v1/namespaces/{ns}/deployments/{svc}-canary"),
    );
    let vs = get_json(
        http,
        format!("{sim}/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices/{svc}"),
    );
    let (deploy, vs) = tokio::join!(deploy, vs);
    let scaled_to_zero = deploy
        .and_then(|d| d.pointer("/spec/replicas").and_then(Value::as_i64))
        .is_some_and(|r| r == 0);
    scaled_to_zero && vs.is_some_and(|v| route_all_stable(&v, svc))
}

/// Waits until every target is mitigated or `limit` has passed since `since`; each entry is the
/// time from `since` to that target's mitigation, `None` if it never was.
pub async fn wait_all(
    http: &reqwest::Client,
    sim: &str,
    targets: &[Target],
    since: Instant,
    limit: Duration,
) -> Vec<Option<Duration>> {
    let mut done: Vec<Option<Duration>> = vec![None; targets.len()];
    while since.elapsed() < limit && done.iter().any(Option::is_none) {
        let pending: Vec<usize> = (0..targets.len()).filter(|i| done[*i].is_none()).collect();
        let checks = pending
            .iter()
            .map(|&i| is_mitigated(http, sim, &targets[i]));
        let results = futures::future::join_all(checks).await;
        let now = since.elapsed();
        for (i, ok) in pending.into_iter().zip(results) {
            if ok {
                done[i] = Some(now);
            }
        }
        tokio::time::sleep(POLL).await;
    }
    done
}
