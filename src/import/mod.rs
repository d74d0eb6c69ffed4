//! `backout import flagger|argo`: a Flagger Canary (with its MetricTemplates) or an Argo Rollouts
//! AnalysisTemplate, turned into the equivalent backout policy: thresholds mapped to levels,
//! intervals kept, the failure budget turned into `for`, and the recommended sequential metric
//! added. Every approximation is said in a comment next to the value; a construct backout cannot
//! express is an error naming the field, never silently dropped.
//!
//! Pure: YAML text in, policy text out. The CLI (`src/cli/import.rs`) reads and writes the files
//! and runs `backout validate`'s loader on the result.

pub mod argo;
pub mod draft;
pub mod flagger;

use draft::{Line, MetricDraft};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Why a file cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: not YAML: {detail}")]
    Yaml { file: String, detail: String },
    #[error("{file}: no {wanted} in the file (documents found: {found:?}); pass the file that defines it")]
    NotFound {
        file: String,
        wanted: String,
        found: Vec<String>,
    },
    #[error("{file}: {field}: {message}")]
    Unsupported {
        file: String,
        /// The field, as a path into the document (`spec.analysis.metrics[1].templateRef`).
        field: String,
        message: String,
    },
}

/// What the user may set that the peer's file does not say.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Service name (Argo templates name none); default: the document's.
    pub service: Option<String>,
    pub namespace: Option<String>,
    /// Flagger's provider when the Canary sets none (Flagger's `-mesh-provider`; default istio).
    pub provider: Option<String>,
}

/// The policy text and what the user should look at.
#[derive(Debug, Clone)]
pub struct Imported {
    pub policy: String,
    /// One line per approximation or dropped setting (also in the file as comments).
    pub notes: Vec<String>,
}

/// Every document of a (multi-document) YAML file, as JSON values.
pub fn documents(text: &str, file: &str) -> Result<Vec<Value>, ImportError> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| ImportError::Yaml {
            file: file.into(),
            detail: e.to_string(),
        })?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// `Kind/name` of each document, for "not found" messages.
fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Collapses runs of whitespace outside string literals to one space, so a multi-line PromQL
/// query fits one TOML line without changing what it means.
pub fn one_line(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut space = false;
    for c in query.trim().chars() {
        if let Some(q) = quote {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        if matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
        }
        out.push(c);
    }
    out
}

/// Replaces every `{{ ... }}` in `text` with `map(inner)`; a placeholder `map` does not know is
/// an error naming `field` and the placeholder.
pub fn substitute(
    text: &str,
    file: &str,
    field: &str,
    mut map: impl FnMut(&str) -> Option<String>,
) -> Result<String, ImportError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(unsupported(file, field, "`{{` without `}}`".into()));
        };
        let inner = after[..close].trim();
        let Some(replacement) = map(inner) else {
            return Err(unsupported(
                file,
                field,
                format!("placeholder `{{{{ {inner} }}}}` has no backout equivalent; write the value into the query"),
            ));
        };
        out.push_str(&replacement);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

pub fn unsupported(file: &str, field: &str, message: String) -> ImportError {
    ImportError::Unsupported {
        file: file.into(),
        field: field.into(),
        message,
    }
}

/// A Go/Argo duration (`30s`, `1m`, `1h30m`, `500ms`).
pub fn parse_duration(s: &str, file: &str, field: &str) -> Result<Duration, ImportError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| unsupported(file, field, format!("`{s}` is not a duration: {e}")))
}

/// Request-counter families backout knows the recommended sequential metric for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counters {
    Istio,
    Linkerd,
    /// `http_request_duration_seconds_count` with `status` (Flagger's `kubernetes` /
    /// Gateway API observer).
    Http,
}

impl Counters {
    /// The family a query reads, if it is one of the known ones.
    pub fn of_query(query: &str) -> Option<Counters> {
        if query.contains("istio_request") {
            Some(Counters::Istio)
        } else if query.contains("response_total") || query.contains("response_latency_ms") {
            Some(Counters::Linkerd)
        } else if query.contains("http_request_duration_seconds") {
            Some(Counters::Http)
        } else {
            None
        }
    }

    fn selectors(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Counters::Istio => (
                "istio_requests_total",
                r#"reporter="destination",destination_workload_namespace="{{namespace}}",destination_workload="{{deployment}}""#,
                r#"response_code=~"5..""#,
            ),
            Counters::Linkerd => (
                "response_total",
                r#"namespace="{{namespace}}",deployment="{{deployment}}",direction="inbound""#,
                r#"classification="failure""#,
            ),
            Counters::Http => (
                "http_request_duration_seconds_count",
                r#"kubernetes_namespace="{{namespace}}",kubernetes_pod_name=~"{{deployment}}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)""#,
                r#"status=~"5.*""#,
            ),
        }
    }
}

/// The metric backout recommends next to any imported threshold: canary vs stable on error
/// counts, anytime-valid. `None` counters: a generic one the user must point at their counters.
pub fn recommended_sequential(counters: Option<Counters>) -> MetricDraft {
    let (metric, sel, bad) = counters.map(Counters::selectors).unwrap_or((
        "http_requests_total",
        r#"namespace="{{namespace}}",deployment="{{deployment}}""#,
        r#"code=~"5..""#,
    ));
    let mut comments = vec![
        "Added by `backout import`: the recommended error rule. Canary vs stable on error counts,".into(),
        "anytime-valid: polling more often never adds false rollbacks, and it does not roll back a".into(),
        "healthy canary on noise the way a fixed threshold on a few requests can (docs/statistics.md).".into(),
    ];
    if counters.is_none() {
        comments.push(
            "CHECK: the imported queries use no counters backout recognises; point `events` and `total` at yours."
                .into(),
        );
    }
    MetricDraft {
        comments,
        lines: vec![Line::new("name", draft::string("errors_vs_stable"))],
        table: Some((
            "sequential".into(),
            vec![
                Line::new(
                    "events",
                    draft::string(&format!("sum({metric}{{{sel},{bad}}})")),
                ),
                Line::new("total", draft::string(&format!("sum({metric}{{{sel}}})"))),
            ],
        )),
    }
}

/// `for` from a failure budget: the peer acted after `failures` failed checks `interval` apart,
/// so the breach must last `(failures - 1) * interval`.
pub fn for_from_failures(failures: u64, interval: Duration) -> Option<Duration> {
    (failures > 1).then(|| interval * u32::try_from(failures - 1).unwrap_or(u32::MAX))
}

/// A metric name backout accepts and a user recognises (`request-success-rate` ->
/// `request_success_rate`).
pub fn metric_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() {
        "metric".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_collapses_whitespace_but_not_inside_strings() {
        let q = "sum(\n  rate(x{a=\"b  c\"}[1m])\n)\n/\n  2";
        assert_eq!(one_line(q), "sum( rate(x{a=\"b  c\"}[1m]) ) / 2");
    }

    #[test]
    fn substitute_names_the_field_and_placeholder_it_does_not_know() {
        let f = |k: &str| (k == "target").then(|| "{{deployment}}".to_string());
        assert_eq!(
            substitute("x{d=\"{{ target }}\"}", "c.yaml", "q", f).unwrap(),
            "x{d=\"{{deployment}}\"}"
        );
        let err = substitute("{{ ingress }}", "c.yaml", "spec.query", f)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.yaml: spec.query") && err.contains("ingress"),
            "{err}"
        );
    }

    #[test]
    fn failure_budgets_become_for() {
        let m = Duration::from_secs(60);
        assert_eq!(for_from_failures(3, m), Some(Duration::from_secs(120)));
        assert_eq!(for_from_failures(1, m), None);
        assert_eq!(metric_name("404s percentage"), "404s_percentage");
    }
}
