//! A Flagger `Canary` (flagger.app/v1beta1) and its `MetricTemplate`s as a backout policy.
//!
//! - `analysis.interval` -> `[analysis] interval`; `analysis.threshold` (failed checks before a
//!   rollback) -> each metric's `for = (threshold - 1) * interval`.
//! - each `analysis.metrics[]`: the builtin `request-success-rate` (percent, 0-100) and
//!   `request-duration` (P99, ms) with Flagger's own query for the provider (istio, linkerd,
//!   kubernetes / gatewayapi), a `templateRef` to a Prometheus `MetricTemplate`, or an inline
//!   `query`; `thresholdRange.min` -> `critical = { below = min }`, `.max` -> `critical =
//!   { above = max }` (both: two metrics); the metric's `interval` -> `window`.
//! - query placeholders: `{{ namespace }}`, `{{ target }}` (the track's Deployment),
//!   `{{ service }}`, `{{ name }}`, `{{ interval }}` (the window), `{{ variables.x }}`
//!   (`templateVariables`, written in).
//! - the Deployments: Flagger's `<target>-primary` is the stable, `<target>` runs the canary.

use super::draft::{self, Draft, Line, MetricDraft};
use super::{
    for_from_failures, kinds, metric_name, one_line, parse_duration, recommended_sequential,
    substitute, unsupported, Counters, ImportError, ImportOptions, Imported,
};
use serde_json::Value;
use std::time::Duration;

/// Flagger's builtin queries (pkg/metrics/observers), by observer: (success rate, P99 ms).
fn builtin(provider: &str) -> Option<(Counters, &'static str, &'static str)> {
    const ISTIO_OK: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) * 100"#;
    const ISTIO_P99: &str = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))"#;
    const LINKERD_OK: &str = r#"sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",classification!="failure",direction="inbound"}[{{ interval }}])) / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) * 100"#;
    const LINKERD_P99: &str = r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) by (le))"#;
    const HTTP_OK: &str = r#"sum(rate(http_request_duration_seconds_count{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",status!~"5.*"}[{{ interval }}])) / sum(rate(http_request_duration_seconds_count{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) * 100"#;
    // Flagger multiplies this observer's seconds by 1000; so does the query.
    const HTTP_P99: &str = r#"histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{kubernetes_namespace="{{ namespace }}",kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) by (le)) * 1000"#;
    match provider {
        "istio" => Some((Counters::Istio, ISTIO_OK, ISTIO_P99)),
        "linkerd" => Some((Counters::Linkerd, LINKERD_OK, LINKERD_P99)),
        p if p == "kubernetes" || p.starts_with("gatewayapi") => {
            Some((Counters::Http, HTTP_OK, HTTP_P99))
        }
        _ => None,
    }
}

struct Canary<'a> {
    docs: &'a [Value],
    file: &'a str,
    provider: String,
    name: String,
    target: String,
    service: String,
    notes: Vec<String>,
    counters: Option<Counters>,
}

fn str_of<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// Imports the first `Canary` among `docs` (the MetricTemplates it references may be among them).
pub fn import(docs: &[Value], file: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == "Canary")
        .ok_or_else(|| ImportError::NotFound {
            file: file.into(),
            wanted: "Flagger Canary (kind: Canary)".into(),
            found: kinds(docs),
        })?;
    let target_kind = str_of(doc, "/spec/targetRef/kind").unwrap_or("Deployment");
    if target_kind != "Deployment" {
        return Err(unsupported(
            file,
            "spec.targetRef.kind",
            format!("{target_kind}: backout acts on Deployments only"),
        ));
    }
    let name = str_of(doc, "/metadata/name")
        .unwrap_or_default()
        .to_string();
    let target = str_of(doc, "/spec/targetRef/name")
        .ok_or_else(|| unsupported(file, "spec.targetRef.name", "missing".into()))?
        .to_string();
    let service = opts
        .service
        .clone()
        .or_else(|| str_of(doc, "/spec/service/name").map(String::from))
        .unwrap_or_else(|| target.clone());
    let mut c = Canary {
        docs,
        file,
        provider: str_of(doc, "/spec/provider")
            .map(String::from)
            .or_else(|| opts.provider.clone())
            .unwrap_or_else(|| "istio".into()),
        name,
        target,
        service,
        notes: Vec::new(),
        counters: None,
    };
    // The provider's own counters first: the mesh is what every workload behind it reports.
    c.counters = builtin(&c.provider).map(|b| b.0);
    if str_of(doc, "/spec/provider").is_none() && opts.provider.is_none() {
        c.notes
            .push("spec.provider is unset: read as Flagger's default mesh provider, istio".into());
    }
    let interval = match str_of(doc, "/spec/analysis/interval") {
        Some(s) => parse_duration(s, file, "spec.analysis.interval")?,
        None => Duration::from_secs(60),
    };
    let threshold = doc
        .pointer("/spec/analysis/threshold")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let mut metrics = Vec::new();
    let list = doc
        .pointer("/spec/analysis/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return Err(unsupported(
            file,
            "spec.analysis.metrics",
            "no metrics: nothing to import".into(),
        ));
    }
    for (i, m) in list.iter().enumerate() {
        metrics.extend(c.metric(i, m, interval, threshold)?);
    }
    for dropped in ["webhooks", "match", "sessionAffinity", "mirror"] {
        if doc.pointer(&format!("/spec/analysis/{dropped}")).is_some() {
            c.notes.push(format!(
                "spec.analysis.{dropped} is not imported (backout judges metrics; it does not run tests or route by header)"
            ));
        }
    }
    metrics.push(recommended_sequential(c.counters));
    let namespace = opts
        .namespace
        .clone()
        .or_else(|| str_of(doc, "/metadata/namespace").map(String::from))
        .unwrap_or_else(|| "default".into());
    let draft = c.draft(namespace, interval, threshold, metrics);
    Ok(Imported {
        policy: draft.render(),
        notes: c.notes,
    })
}

impl Canary<'_> {
    fn draft(
        &self,
        namespace: String,
        interval: Duration,
        threshold: u64,
        metrics: Vec<MetricDraft>,
    ) -> Draft {
        let mut header = vec![
            format!(
                "Imported by `backout import flagger` from {} (Canary {namespace}/{}, provider {}).",
                self.file, self.name, self.provider
            ),
            format!(
                "Flagger rolled back after {threshold} failed checks {} apart; here each metric's `for` says how long a breach must last.",
                humantime::format_duration(interval)
            ),
        ];
        header.extend(self.notes.iter().map(|n| format!("NOTE: {n}")));
        let (traffic_comments, traffic) = self.traffic();
        Draft {
            header,
            service: self.service.clone(),
            namespace,
            stable: Line::new("stable", draft::string(&format!("{}-primary", self.target)))
                .note("Flagger's primary: serves the stable traffic"),
            canary: Line::new("canary", draft::string(&self.target))
                .note("Flagger's target: runs the canary during the analysis"),
            traffic_comments,
            traffic,
            analysis: vec![
                Line::new("interval", draft::duration(interval)).note("spec.analysis.interval")
            ],
            verify: draft::verify_for(interval),
            metrics,
        }
    }

    /// The router Flagger drives for this provider, as backout names it.
    fn traffic(&self) -> (Vec<String>, Vec<Line>) {
        let svc = &self.service;
        let s = |x: String| draft::string(&x);
        if self.provider.starts_with("gatewayapi") {
            return (
                vec![
                    "Flagger's HTTPRoute (named after the service; its one rule is unnamed)."
                        .into(),
                ],
                vec![
                    Line::new("http_route", s(svc.clone())),
                    Line::new("rule_index", "0".into()),
                    Line::new(
                        "stable",
                        format!("{{ service = {} }}", s(format!("{svc}-primary"))),
                    ),
                    Line::new(
                        "canary",
                        format!("{{ service = {} }}", s(format!("{svc}-canary"))),
                    ),
                ],
            );
        }
        if self.provider == "istio" {
            return (
                vec![
                    "Flagger's VirtualService. CHECK: its route has no name and backout acts on a named".into(),
                    "route; name the route (or leave rollbacks to Flagger and use backout as the judge).".into(),
                ],
                vec![
                    Line::new("virtual_service", s(svc.clone())),
                    Line::new("route", s("primary".into())),
                    Line::new("stable", format!("{{ host = {} }}", s(format!("{svc}-primary")))),
                    Line::new("canary", format!("{{ host = {} }}", s(format!("{svc}-canary")))),
                ],
            );
        }
        (
            vec![format!(
                "CHECK: Flagger's provider {} routes with objects backout does not drive; set the router backout should use (docs/policy.md).",
                self.provider
            )],
            vec![Line::new("kind", s("replicas".into()))],
        )
    }

    fn metric(
        &mut self,
        i: usize,
        m: &Value,
        interval: Duration,
        threshold: u64,
    ) -> Result<Vec<MetricDraft>, ImportError> {
        let at = format!("spec.analysis.metrics[{i}]");
        let name = str_of(m, "/name").unwrap_or_default();
        let window = match str_of(m, "/interval") {
            Some(s) => parse_duration(s, self.file, &format!("{at}.interval"))?,
            None => Duration::from_secs(60),
        };
        let (query, source) = self.query(&at, name, m)?;
        let query = self.placeholders(&query, &at, m)?;
        let (min, max) = (
            m.pointer("/thresholdRange/min").and_then(Value::as_f64),
            m.pointer("/thresholdRange/max").and_then(Value::as_f64),
        );
        if min.is_none() && max.is_none() {
            return Err(unsupported(
                self.file,
                &format!("{at}.thresholdRange"),
                "no `min` or `max`: nothing says when the metric fails".into(),
            ));
        }
        let base = metric_name(name);
        let both = min.is_some() && max.is_some();
        let mut out = Vec::new();
        for (bound, key, suffix) in [(min, "below", "min"), (max, "above", "max")] {
            let Some(v) = bound else { continue };
            let mut lines = vec![
                Line::new(
                    "name",
                    draft::string(&if both {
                        format!("{base}_{suffix}")
                    } else {
                        base.clone()
                    }),
                ),
                Line::new("query", draft::string(&query)),
                Line::new("window", draft::duration(window)).note(format!("{at}.interval")),
                Line::new("critical", format!("{{ {key} = {} }}", draft::number(v)))
                    .note(format!("{at}.thresholdRange.{suffix}")),
            ];
            if let Some(f) = for_from_failures(threshold, interval) {
                lines.push(
                    Line::new("for", draft::duration(f))
                        .note("spec.analysis.threshold failed checks"),
                );
            }
            out.push(MetricDraft {
                comments: vec![format!("{at} `{name}`: {source}")],
                lines,
                table: None,
            });
        }
        Ok(out)
    }

    /// The metric's query and where it came from.
    fn query(&mut self, at: &str, name: &str, m: &Value) -> Result<(String, String), ImportError> {
        if let Some(t) = str_of(m, "/templateRef/name") {
            let tpl = self
                .docs
                .iter()
                .find(|d| d["kind"] == "MetricTemplate" && d["metadata"]["name"] == t)
                .ok_or_else(|| ImportError::NotFound {
                    file: self.file.into(),
                    wanted: format!(
                        "MetricTemplate {t:?} ({at}.templateRef); pass its file with --templates"
                    ),
                    found: kinds(self.docs),
                })?;
            let kind = str_of(tpl, "/spec/provider/type").unwrap_or("prometheus");
            if kind != "prometheus" {
                return Err(unsupported(
                    self.file,
                    &format!("MetricTemplate {t}: spec.provider.type"),
                    format!("{kind}: backout queries Prometheus only"),
                ));
            }
            let q = str_of(tpl, "/spec/query").unwrap_or_default();
            self.counters = self.counters.or(Counters::of_query(q));
            return Ok((one_line(q), format!("MetricTemplate {t}")));
        }
        if let Some(q) = str_of(m, "/query") {
            self.counters = self.counters.or(Counters::of_query(q));
            return Ok((one_line(q), "inline query".into()));
        }
        let Some((counters, ok, p99)) = builtin(&self.provider) else {
            return Err(unsupported(
                self.file,
                &format!("{at}.name"),
                format!("`{name}` is neither a builtin backout knows for provider {} nor a templateRef; reference a MetricTemplate", self.provider),
            ));
        };
        self.counters = self.counters.or(Some(counters));
        match name {
            "request-success-rate" => Ok((ok.into(), format!("Flagger's builtin for {} (percent of non-5xx)", self.provider))),
            "request-duration" => Ok((p99.into(), format!("Flagger's builtin for {} (P99 in ms)", self.provider))),
            other => Err(unsupported(
                self.file,
                &format!("{at}.name"),
                format!("`{other}` is not a Flagger builtin (request-success-rate, request-duration) and has no templateRef or query"),
            )),
        }
    }

    fn placeholders(&self, query: &str, at: &str, m: &Value) -> Result<String, ImportError> {
        let vars = m.get("templateVariables").cloned().unwrap_or(Value::Null);
        let field = format!("{at} query");
        substitute(query, self.file, &field, |p| match p {
            "namespace" => Some("{{namespace}}".into()),
            "target" => Some("{{deployment}}".into()),
            "service" => Some("{{service}}".into()),
            "name" => Some(self.name.clone()),
            "interval" => Some("{{window}}".into()),
            v => v
                .strip_prefix("variables.")
                .and_then(|k| vars.get(k))
                .and_then(Value::as_str)
                .map(String::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  provider: istio
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {name: podinfo, port: 80}
  analysis:
    interval: 15s
    threshold: 10
    metrics:
    - name: request-success-rate
      thresholdRange: {min: 99}
      interval: 1m
    - name: latency
      templateRef: {name: latency, namespace: flagger}
      templateVariables: {direction: inbound}
      thresholdRange: {min: 1, max: 500}
      interval: 30s
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: latency}
spec:
  provider: {type: prometheus, address: http://prom:9090}
  query: |
    histogram_quantile(0.99,
      sum(rate(lat_bucket{ns="{{ namespace }}", d=~"{{ target }}", dir="{{ variables.direction }}"}[{{ interval }}])) by (le))
"#;

    fn run(text: &str) -> Result<Imported, ImportError> {
        let docs = super::super::documents(text, "c.yaml")?;
        import(&docs, "c.yaml", &ImportOptions::default())
    }

    #[test]
    fn builtins_templates_and_ranges_are_mapped() {
        let out = run(CANARY).unwrap();
        let p: toml::Value = toml::from_str(&out.policy).unwrap();
        let m = p["metric"].as_array().unwrap();
        assert_eq!(m.len(), 4, "{}", out.policy);
        assert_eq!(m[0]["critical"]["below"].as_float(), Some(99.0));
        assert_eq!(m[0]["for"].as_str(), Some("2m 15s"));
        assert!(m[0]["query"]
            .as_str()
            .unwrap()
            .contains("destination_workload=~\"{{deployment}}\""));
        assert_eq!(m[1]["name"].as_str(), Some("latency_min"));
        assert_eq!(m[2]["critical"]["above"].as_float(), Some(500.0));
        let q = m[2]["query"].as_str().unwrap();
        assert!(
            q.contains("dir=\"inbound\"") && q.contains("[{{window}}]"),
            "{q}"
        );
        assert!(m[3].get("sequential").is_some());
        assert_eq!(p["deployments"]["stable"].as_str(), Some("podinfo-primary"));
        assert_eq!(p["analysis"]["interval"].as_str(), Some("15s"));
    }

    #[test]
    fn unsupported_constructs_name_the_field() {
        let missing = CANARY.replace(
            "templateRef: {name: latency, namespace: flagger}",
            "templateRef: {name: nope}",
        );
        assert!(run(&missing)
            .unwrap_err()
            .to_string()
            .contains("MetricTemplate \"nope\""));
        let datadog = CANARY.replace("type: prometheus", "type: datadog");
        let e = run(&datadog).unwrap_err().to_string();
        assert!(
            e.contains("spec.provider.type") && e.contains("datadog"),
            "{e}"
        );
        let ingress = CANARY.replace("{{ target }}", "{{ ingress }}");
        let e = run(&ingress).unwrap_err().to_string();
        assert!(
            e.contains("spec.analysis.metrics[1] query") && e.contains("ingress"),
            "{e}"
        );
        let ds = CANARY.replace(
            "kind: Deployment, name: podinfo",
            "kind: DaemonSet, name: podinfo",
        );
        assert!(run(&ds)
            .unwrap_err()
            .to_string()
            .contains("spec.targetRef.kind"));
    }
}
