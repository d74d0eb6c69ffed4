//! `backout import flagger|argo` on the peers' own documented examples (tests/fixtures/import/,
//! each file naming its source): the written policy passes `backout validate`, thresholds,
//! intervals and failure budgets are mapped, the recommended sequential metric is added, and what
//! backout cannot express is refused naming the field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
        .display()
        .to_string()
}

fn backout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backout"))
        .args(args)
        .output()
        .expect("run backout")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Imports, writes with `-o`, checks `backout validate` accepts the file, returns it parsed.
fn import(dir: &Path, args: &[&str]) -> (toml::Value, String) {
    let out: PathBuf = dir.join(format!("{}.toml", args.len()));
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", out.to_str().unwrap()]);
    let run = backout(&all);
    assert!(run.status.success(), "{args:?}: {}", text(&run));
    let valid = backout(&["validate", out.to_str().unwrap()]);
    assert!(valid.status.success(), "{args:?}: {}", text(&valid));
    let written = std::fs::read_to_string(&out).unwrap();
    (toml::from_str(&written).unwrap(), written)
}

fn metrics(p: &toml::Value) -> Vec<toml::Value> {
    p["metric"].as_array().unwrap().clone()
}

fn named(p: &toml::Value, name: &str) -> toml::Value {
    metrics(p)
        .into_iter()
        .find(|m| m["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no metric {name}: {p:#?}"))
}

#[test]
fn flagger_istio_example_maps_builtins_threshold_and_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (p, written) = import(
        dir.path(),
        &["flagger", &fixture("flagger-istio-canary.yaml")],
    );
    assert_eq!(p["service"].as_str(), Some("podinfo"));
    assert_eq!(p["namespace"].as_str(), Some("test"));
    assert_eq!(p["deployments"]["stable"].as_str(), Some("podinfo-primary"));
    assert_eq!(p["deployments"]["canary"].as_str(), Some("podinfo"));
    assert_eq!(p["traffic"]["virtual_service"].as_str(), Some("podinfo"));
    assert_eq!(p["analysis"]["interval"].as_str(), Some("15s"));
    let ok = named(&p, "request_success_rate");
    assert_eq!(ok["critical"]["below"].as_float(), Some(99.0));
    assert_eq!(ok["window"].as_str(), Some("1m"));
    // threshold 10 failed checks 15s apart: the breach must last 9 intervals.
    assert_eq!(ok["for"].as_str(), Some("2m 15s"));
    assert!(ok["query"]
        .as_str()
        .unwrap()
        .contains("destination_workload=~\"{{deployment}}\""));
    let p99 = named(&p, "request_duration");
    assert_eq!(p99["critical"]["above"].as_float(), Some(500.0));
    assert_eq!(p99["window"].as_str(), Some("30s"));
    let seq = named(&p, "errors_vs_stable");
    assert!(seq["sequential"]["events"]
        .as_str()
        .unwrap()
        .contains("istio_requests_total"));
    assert!(written.contains("# Added by `backout import`: the recommended error rule."));
    assert!(written.contains("NOTE: spec.analysis.webhooks is not imported"));
}

#[test]
fn flagger_metric_templates_and_variables_are_written_into_the_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = import(
        dir.path(),
        &[
            "flagger",
            &fixture("flagger-custom-canary.yaml"),
            "--templates",
            &fixture("flagger-metric-templates.yaml"),
        ],
    );
    let nf = named(&p, "404s_percentage");
    assert_eq!(nf["critical"]["above"].as_float(), Some(5.0));
    assert!(nf["query"]
        .as_str()
        .unwrap()
        .starts_with("100 - sum( rate( istio_requests_total{"));
    // "my metric" has min and max: two metrics, one per side.
    let low = named(&p, "my_metric_min");
    let high = named(&p, "my_metric_max");
    assert_eq!(low["critical"]["below"].as_float(), Some(10.0));
    assert_eq!(high["critical"]["above"].as_float(), Some(1000.0));
    let q = high["query"].as_str().unwrap();
    assert!(
        q.contains("direction=\"inbound\"") && q.contains("[{{window}}]"),
        "{q}"
    );
    // Linkerd provider: the sequential metric reads Linkerd's counters.
    let seq = named(&p, "errors_vs_stable");
    assert!(seq["sequential"]["total"]
        .as_str()
        .unwrap()
        .contains("response_total"));

    // Without the templates file the reference is named.
    let run = backout(&["import", "flagger", &fixture("flagger-custom-canary.yaml")]);
    assert!(!run.status.success());
    assert!(
        text(&run).contains("MetricTemplate \"not-found-percentage\""),
        "{}",
        text(&run)
    );
}

#[test]
fn flagger_gateway_api_tutorial_gets_the_http_route_router() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = import(
        dir.path(),
        &[
            "flagger",
            &fixture("flagger-gatewayapi-canary.yaml"),
            "--templates",
            &fixture("flagger-gatewayapi-templates.yaml"),
            "--provider",
            "gatewayapi:v1",
        ],
    );
    let t = &p["traffic"];
    assert_eq!(t["http_route"].as_str(), Some("podinfo"));
    assert_eq!(t["rule_index"].as_integer(), Some(0));
    assert_eq!(t["canary"]["service"].as_str(), Some("podinfo-canary"));
    assert_eq!(
        named(&p, "latency")["critical"]["above"].as_float(),
        Some(0.5)
    );
    assert_eq!(named(&p, "error_rate")["for"].as_str(), Some("4m"));
}

#[test]
fn argo_success_and_failure_conditions_become_levels_and_failure_limit_for() {
    let dir = tempfile::tempdir().unwrap();
    let (p, written) = import(
        dir.path(),
        &[
            "argo",
            &fixture("argo-success-rate.yaml"),
            "--service",
            "guestbook",
        ],
    );
    let m = named(&p, "success_rate");
    // successCondition result[0] >= 0.95: it fails below 0.95.
    assert_eq!(m["critical"]["below"].as_float(), Some(0.95));
    // failureLimit 3 at 5m: Argo failed on the 4th failed measurement.
    assert_eq!(m["for"].as_str(), Some("15m"));
    assert_eq!(p["analysis"]["interval"].as_str(), Some("5m"));
    // At a 5m poll the default 15m restore deadline cannot be met (10m verify window + a poll):
    // the draft sets one a working rollback can meet, and the policy validates.
    assert_eq!(p["verify"]["restore_within"].as_str(), Some("20m"));
    assert!(m["query"]
        .as_str()
        .unwrap()
        .contains("destination_service=~\"{{service_name}}\""));
    assert_eq!(p["vars"]["service_name"].as_str(), Some("guestbook"));
    assert!(written.contains("[metric.sequential]"));

    let (p, _) = import(dir.path(), &["argo", &fixture("argo-error-rate.yaml")]);
    assert_eq!(
        named(&p, "error_rate")["critical"]["above"].as_float(),
        Some(0.95)
    );
    let (p, _) = import(dir.path(), &["argo", &fixture("argo-total-errors.yaml")]);
    let m = named(&p, "total_errors");
    assert_eq!(m["critical"]["above"].as_float(), Some(10.0));
    assert_eq!(m["for"].as_str(), Some("15m"));
}

#[test]
fn what_backout_cannot_express_is_refused_naming_the_field() {
    for (file, field) in [
        (
            "argo-range-query.yaml",
            "spec.metrics[0].provider.prometheus.rangeQuery",
        ),
        ("argo-job.yaml", "spec.metrics[0].provider.job"),
    ] {
        let run = backout(&["import", "argo", &fixture(file)]);
        assert!(!run.status.success(), "{file}");
        assert!(text(&run).contains(field), "{file}: {}", text(&run));
    }
    let run = backout(&["import", "argo", &fixture("flagger-istio-canary.yaml")]);
    assert!(!run.status.success());
    assert!(
        text(&run).contains("no Argo Rollouts AnalysisTemplate"),
        "{}",
        text(&run)
    );
}
