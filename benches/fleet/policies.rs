//! The fleet's policies: N files sharing one `templates.toml` of batched templates.
//!
//! Temporary: the simulator branch (`sim-scale`) brings `backout::sim::fleet::write_fleet_policies`
//! with the same shape (names, namespaces, templates); this file goes once that lands, so there
//! is one generator.

use std::path::Path;

/// Services per namespace, as the simulator's fleet generator spreads them.
const SERVICES_PER_NAMESPACE: usize = 100;

/// Batched templates: each query aggregates `by (service, track)` over the exporter's series and
/// names no service, so one query per template per phase serves the whole fleet.
const TEMPLATES: &str = r#"[templates.error_ratio]
query = 'sum by (service, track) (rate(http_requests_total{code=~"5.."}[{{window}}])) / sum by (service, track) (rate(http_requests_total[{{window}}]))'
window = "1m"
warning = { above = 0.01 }
critical = { above = 0.05 }
for = "30s"

[templates.p99_vs_stable]
query = 'histogram_quantile(0.99, sum by (service, track, le) (rate(http_request_duration_seconds_bucket[{{window}}])))'
window = "1m"
compare = "ratio"
warning = { above = 1.2 }
critical = { above = 1.5 }
for = "1m"

[templates.errors_vs_stable.sequential]
events = 'sum by (service, track) (http_requests_total{code=~"5.."})'
total = 'sum by (service, track) (http_requests_total)'

[templates.slo_burn]
query = 'sum by (service, track) (rate(http_requests_total{code=~"5.."}[{{window}}])) / sum by (service, track) (rate(http_requests_total[{{window}}]))'
burn_rate = { objective = 0.999 }
"#;

/// The name of service `i` (zero-padded so files sort in service order).
pub fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

/// The namespace of service `i`.
pub fn namespace_of(i: usize) -> String {
    format!("fleet-{:03}", i / SERVICES_PER_NAMESPACE)
}

fn policy_text(i: usize) -> String {
    let service = service_name(i);
    let namespace = namespace_of(i);
    format!(
        r#"service = "{service}"
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

/// Writes `templates.toml` and `n` policy files into `dir`.
pub fn write_fleet_policies(dir: &Path, n: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("templates.toml"), TEMPLATES)?;
    for i in 0..n {
        std::fs::write(
            dir.join(format!("{}.toml", service_name(i))),
            policy_text(i),
        )?;
    }
    Ok(())
}
