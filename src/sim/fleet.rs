//! A synthetic fleet: N policy files sharing one `templates.toml`, for staging thousands of
//! services in the simulator (`backout sim --fleet N`, `benches/sim_seed.rs`) and for the fleet
//! benchmark, which reuses the same files against a real Prometheus.
//!
//! Every template is *batched*: its PromQL aggregates `by (service, track)` over the synthetic
//! exporter's series (`http_requests_total{service,track,code}`,
//! `http_request_duration_seconds{service,track}`) and never names a service, so Prometheus sees
//! one query per template per cycle however large the fleet is (docs/prometheus.md). Each policy
//! has the four metric kinds a fleet mixes: an error-ratio threshold, p99 latency as a ratio to
//! the stable, a sequential test on error counts and an SLO burn rate.

use std::io;
use std::path::{Path, PathBuf};

/// How many services share one namespace (real fleets spread over many namespaces, and the
/// simulator's per-namespace indexes are exercised with more than one).
pub const SERVICES_PER_NAMESPACE: usize = 100;

/// The shared templates. Queries mention neither `{{service}}` nor `{{track}}`: the answer
/// vector is split by those labels, one query serving every service due in the same phase.
/// `{{services}}` narrows each query to those services, so each of the interval's phases asks
/// Prometheus for its tenth of the fleet rather than all of it.
pub const TEMPLATES: &str = r#"# Batched templates for a synthetic fleet (backout::sim::fleet). One query per template per
# cycle serves every service: the answer is split by the `service` and `track` labels.
# `{{services}}` is replaced by the services due in that cycle (a regex alternation).

[templates.error_ratio]
query = 'sum by (service, track) (rate(http_requests_total{service=~"{{services}}",code=~"5.."}[{{window}}])) / sum by (service, track) (rate(http_requests_total{service=~"{{services}}"}[{{window}}]))'
window = "1m"
warning = { above = 0.01 }
critical = { above = 0.05 }
for = "30s"

[templates.p99_vs_stable]
query = 'histogram_quantile(0.99, sum by (service, track, le) (rate(http_request_duration_seconds_bucket{service=~"{{services}}"}[{{window}}])))'
window = "1m"
compare = "ratio"
warning = { above = 1.2 }
critical = { above = 1.5 }
for = "1m"

[templates.errors_vs_stable.sequential]
events = 'sum by (service, track) (http_requests_total{service=~"{{services}}",code=~"5.."})'
total = 'sum by (service, track) (http_requests_total{service=~"{{services}}"})'

[templates.slo_burn]
query = 'sum by (service, track) (rate(http_requests_total{service=~"{{services}}",code=~"5.."}[{{window}}])) / sum by (service, track) (rate(http_requests_total{service=~"{{services}}"}[{{window}}]))'
burn_rate = { objective = 0.999 }
"#;

/// The files written by [`write_fleet_policies`].
#[derive(Debug, Clone)]
pub struct FleetFiles {
    /// The directory holding everything (pass it to `--seed-policies` or `backout validate`).
    pub dir: PathBuf,
    pub templates: PathBuf,
    /// One per service, in service order.
    pub policies: Vec<PathBuf>,
}

/// The name of service `i` (zero-padded so files sort in service order).
pub fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

/// The namespace of service `i`.
pub fn namespace_of(i: usize) -> String {
    format!("fleet-{:03}", i / SERVICES_PER_NAMESPACE)
}

/// The policy text of service `i`.
pub fn policy_text(i: usize) -> String {
    let service = service_name(i);
    let namespace = namespace_of(i);
    format!(
        r#"# Synthetic fleet service {i} (backout::sim::fleet).
service = "{service}"
namespace = "{namespace}"

[deployments]
stable = "{service}"
canary = "{service}-canary"

[traffic]
virtual_service = "{service}"
route = "primary"
stable = {{ host = "{service}", subset = "stable" }}
canary = {{ host = "{service}", subset = "canary" }}

[analysis]
interval = "10s"
warmup = "1m"
bake = "15m"
no_data_deadline = "10m"

[[metric]]
name = "error_ratio"
template = "error_ratio"

[[metric]]
name = "p99_vs_stable"
template = "p99_vs_stable"

[[metric]]
name = "errors_vs_stable"
template = "errors_vs_stable"

[[metric]]
name = "slo_burn"
template = "slo_burn"
"#
    )
}

/// Writes `templates.toml` and `n` policy files (`svc-00000.toml` ...) into `dir`, creating it;
/// files already there with other names are left alone, so point it at a fresh directory.
pub fn write_fleet_policies(dir: &Path, n: usize) -> io::Result<FleetFiles> {
    std::fs::create_dir_all(dir)?;
    let templates = dir.join("templates.toml");
    std::fs::write(&templates, TEMPLATES)?;
    let mut policies = Vec::with_capacity(n);
    for i in 0..n {
        let path = dir.join(format!("{}.toml", service_name(i)));
        std::fs::write(&path, policy_text(i))?;
        policies.push(path);
    }
    Ok(FleetFiles {
        dir: dir.to_path_buf(),
        templates,
        policies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_fleet_loads_and_validates_with_four_batched_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_fleet_policies(dir.path(), 150).unwrap();
        assert_eq!(files.policies.len(), 150);
        let policies = crate::policy::load::load_path(dir.path()).unwrap();
        assert_eq!(policies.len(), 150);
        let p = &policies[120];
        assert_eq!(p.service, "svc-00120");
        assert_eq!(p.namespace, "fleet-001");
        assert_eq!(p.metrics.len(), 4);
    }

    #[tokio::test]
    async fn a_seeded_fleet_settles_with_one_replica_set_per_deployment() {
        let dir = tempfile::tempdir().unwrap();
        write_fleet_policies(dir.path(), 250).unwrap();
        let policies = crate::policy::load::load_path(dir.path()).unwrap();
        let config = crate::sim::SimConfig {
            rollout_delay: std::time::Duration::from_millis(5),
        };
        let sim = crate::sim::Simulator::start_with("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        for p in &policies {
            sim.seed_policy(p).unwrap();
        }
        let every = std::time::Duration::from_millis(5);
        assert!(
            sim.wait_controller_idle(every, std::time::Duration::from_secs(60))
                .await
        );
        assert_eq!(sim.unsettled_rollouts(), 0);
        sim.store().read(|t| {
            assert_eq!(t.list("apps", "deployments", None).len(), 500);
            assert_eq!(t.list("apps", "replicasets", None).len(), 500);
            assert_eq!(t.list("apps", "replicasets", Some("fleet-002")).len(), 100);
            assert_eq!(
                t.list("networking.istio.io", "virtualservices", None).len(),
                250
            );
            assert_eq!(t.namespaces(), ["fleet-000", "fleet-001", "fleet-002"]);
            let web = t
                .get(&crate::sim::store::ObjKey {
                    group: "apps",
                    plural: "deployments",
                    namespace: "fleet-001".into(),
                    name: "svc-00123-canary".into(),
                })
                .unwrap();
            assert_eq!(web["status"]["availableReplicas"], 1);
        });
        sim.shutdown().await;
    }
}
