//! An Argo Rollouts `AnalysisTemplate` (or `ClusterAnalysisTemplate`) as a backout policy.
//!
//! - each `metrics[]` with a `prometheus` provider: its `query` (`{{args.x}}` written in from the
//!   arg's `value`, else a `[vars]` entry to fill), `interval` (the smallest becomes
//!   `[analysis] interval`), `initialDelay` -> `warmup`.
//! - `failureCondition: result[0] >= 10` -> `critical = { above = 10 }`; `successCondition:
//!   result[0] >= 0.95` -> the failing side, `below = 0.95`: `critical` alone, or `warning` when a
//!   failureCondition gives the critical level (between the two, Argo is inconclusive).
//!   Conditions backout reads: `result`, `result[0]`, `default(result, x)`, `all(result, # op n)`
//!   and `isNaN(result[0]) || ...` compared with a number.
//! - `failureLimit` (failed measurements allowed) -> `for = failureLimit * interval`.

use super::draft::{self, Draft, Line, MetricDraft};
use super::{
    kinds, metric_name, one_line, parse_duration, recommended_sequential, substitute, unsupported,
    Counters, ImportError, ImportOptions, Imported,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// `result OP number`, with the comparison as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub op: Op,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    /// Where values go that make the condition true: `(above?, bound)`.
    fn true_side(self) -> (bool, f64) {
        (matches!(self.op, Op::Gt | Op::Ge), self.value)
    }
}

/// Reads a condition of the forms in the module doc; `None` for anything else.
pub fn parse_condition(expr: &str) -> Option<Comparison> {
    let mut e = expr.trim().to_string();
    // `isNaN(result[0]) || result[0] >= 0.95`: NaN is missing data, which backout holds on.
    if let Some((first, rest)) = e.split_once("||") {
        if first.trim().starts_with("isNaN(") {
            e = rest.trim().to_string();
        }
    }
    if let Some(inner) = e
        .strip_prefix("all(result,")
        .and_then(|r| r.strip_suffix(')'))
    {
        e = inner.trim().replacen('#', "result", 1);
    }
    let ops = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)];
    let (at, token, op) = ops
        .iter()
        .find_map(|(t, op)| e.find(t).map(|i| (i, *t, *op)))?;
    let (lhs, rhs) = (e[..at].trim(), e[at + token.len()..].trim());
    let subject = lhs == "result"
        || lhs == "result[0]"
        || (lhs.starts_with("default(result") && lhs.ends_with(')'));
    let value: f64 = rhs.parse().ok()?;
    (subject && value.is_finite()).then_some(Comparison { op, value })
}

fn str_of<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

struct Template<'a> {
    file: &'a str,
    args: BTreeMap<String, Option<String>>,
    vars: BTreeMap<String, String>,
    notes: Vec<String>,
    counters: Option<Counters>,
}

/// Imports the first AnalysisTemplate or ClusterAnalysisTemplate among `docs`.
pub fn import(docs: &[Value], file: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == "AnalysisTemplate" || d["kind"] == "ClusterAnalysisTemplate")
        .ok_or_else(|| ImportError::NotFound {
            file: file.into(),
            wanted: "Argo Rollouts AnalysisTemplate".into(),
            found: kinds(docs),
        })?;
    if doc.pointer("/spec/templates").is_some() {
        return Err(unsupported(
            file,
            "spec.templates",
            "a template made of other templates: import each referenced AnalysisTemplate".into(),
        ));
    }
    let name = str_of(doc, "/metadata/name").unwrap_or("service");
    let service = opts.service.clone().unwrap_or_else(|| name.to_string());
    let namespace = opts
        .namespace
        .clone()
        .or_else(|| str_of(doc, "/metadata/namespace").map(String::from))
        .unwrap_or_else(|| "default".into());
    let mut t = Template {
        file,
        args: doc
            .pointer("/spec/args")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let n = a.get("name")?.as_str()?.to_string();
                Some((n, a.get("value").and_then(Value::as_str).map(String::from)))
            })
            .collect(),
        vars: BTreeMap::new(),
        notes: Vec::new(),
        counters: None,
    };
    let list = doc
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return Err(unsupported(
            file,
            "spec.metrics",
            "no metrics: nothing to import".into(),
        ));
    }
    let mut metrics = Vec::new();
    let mut intervals = Vec::new();
    let mut warmup = None;
    for (i, m) in list.iter().enumerate() {
        let (draft, interval, delay) = t.metric(i, m, &service)?;
        metrics.push(draft);
        intervals.push(interval);
        warmup = warmup.max(delay);
    }
    metrics.push(recommended_sequential(t.counters));
    let interval = intervals
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(60));
    let mut analysis = vec![Line::new("interval", draft::duration(interval))
        .note("the smallest spec.metrics[].interval")];
    if let Some(w) = warmup {
        analysis.push(Line::new("warmup", draft::duration(w)).note("spec.metrics[].initialDelay"));
    }
    let mut header = vec![format!(
        "Imported by `backout import argo` from {file} ({} {name}).",
        doc["kind"].as_str().unwrap_or_default()
    ),
    "CHECK: an AnalysisTemplate names no Deployments or router: set [deployments] and [traffic].".into()];
    header.extend(t.notes.iter().map(|n| format!("NOTE: {n}")));
    let mut out = Draft {
        header,
        service: service.clone(),
        namespace,
        stable: Line::new("stable", draft::string(&service)).note("CHECK"),
        canary: Line::new("canary", draft::string(&format!("{service}-canary"))).note("CHECK"),
        traffic_comments: vec![
            "CHECK: no router is known; `replicas` judges a canary Deployment behind the stable's Service.".into(),
            "For Istio or the Gateway API see docs/policy.md (Routers).".into(),
        ],
        traffic: vec![Line::new("kind", draft::string("replicas"))],
        analysis,
        verify: draft::verify_for(interval),
        metrics,
    }
    .render();
    if !t.vars.is_empty() {
        out.push_str("\n# Arguments the Rollout passed to the template (spec.args without a value).\n[vars]\n");
        for (k, v) in &t.vars {
            out.push_str(&format!("{k} = {}  # CHECK\n", draft::string(v)));
        }
    }
    Ok(Imported {
        policy: out,
        notes: t.notes,
    })
}

impl Template<'_> {
    fn metric(
        &mut self,
        i: usize,
        m: &Value,
        service: &str,
    ) -> Result<(MetricDraft, Duration, Option<Duration>), ImportError> {
        let at = format!("spec.metrics[{i}]");
        let name = str_of(m, "/name").unwrap_or_default();
        if let Some(other) = m
            .get("provider")
            .and_then(Value::as_object)
            .and_then(|p| p.keys().find(|k| *k != "prometheus"))
        {
            return Err(unsupported(
                self.file,
                &format!("{at}.provider.{other}"),
                "backout queries Prometheus only".into(),
            ));
        }
        let prom = m.pointer("/provider/prometheus").ok_or_else(|| {
            unsupported(
                self.file,
                &format!("{at}.provider"),
                "no prometheus provider".into(),
            )
        })?;
        if prom.get("rangeQuery").is_some() {
            return Err(unsupported(
                self.file,
                &format!("{at}.provider.prometheus.rangeQuery"),
                "backout polls instant queries; use `stat` and `stat_window` over the polls instead".into(),
            ));
        }
        let raw = str_of(prom, "/query").ok_or_else(|| {
            unsupported(
                self.file,
                &format!("{at}.provider.prometheus.query"),
                "missing".into(),
            )
        })?;
        self.counters = self.counters.or(Counters::of_query(raw));
        let query = self.args_in(
            &one_line(raw),
            &format!("{at}.provider.prometheus.query"),
            service,
        )?;
        let interval = match str_of(m, "/interval") {
            Some(s) => parse_duration(s, self.file, &format!("{at}.interval"))?,
            None => Duration::from_secs(60),
        };
        let delay = str_of(m, "/initialDelay")
            .map(|s| parse_duration(s, self.file, &format!("{at}.initialDelay")))
            .transpose()?;
        let mut lines = vec![
            Line::new("name", draft::string(&metric_name(name))),
            Line::new("query", draft::string(&query)),
        ];
        lines.extend(self.levels(&at, m, service)?);
        let limit = m.get("failureLimit").and_then(Value::as_u64).unwrap_or(0);
        if limit > 0 {
            let f = interval * u32::try_from(limit).unwrap_or(u32::MAX);
            lines.push(Line::new("for", draft::duration(f)).note(format!(
                "failureLimit {limit}: Argo failed on failed measurement {} ({} apart); here the breach must last",
                limit + 1,
                humantime::format_duration(interval)
            )));
        }
        for (key, why) in [
            ("count", "backout judges for as long as the canary runs"),
            (
                "consecutiveErrorLimit",
                "a failing query is missing data, held for analysis.no_data_deadline",
            ),
            (
                "inconclusiveLimit",
                "backout holds on inconclusive data until no_data_deadline",
            ),
            ("consecutiveSuccessLimit", "backout passes on its own rules"),
        ] {
            if m.get(key).is_some() {
                self.notes.push(format!("{at}.{key} not imported: {why}"));
            }
        }
        let comments = vec![format!(
            "{at} `{name}` (interval {})",
            humantime::format_duration(interval)
        )];
        Ok((
            MetricDraft {
                comments,
                lines,
                table: None,
            },
            interval,
            delay,
        ))
    }

    fn condition(
        &mut self,
        at: &str,
        key: &str,
        m: &Value,
        service: &str,
    ) -> Result<Option<Comparison>, ImportError> {
        let Some(raw) = str_of(m, &format!("/{key}")) else {
            return Ok(None);
        };
        let field = format!("{at}.{key}");
        let expr = self.args_in(raw, &field, service)?;
        parse_condition(&expr).map(Some).ok_or_else(|| {
            unsupported(
                self.file,
                &field,
                format!("`{raw}` is not a comparison of the result with a number (e.g. `result[0] >= 0.95`); write the levels by hand"),
            )
        })
    }

    /// `critical` from the failure condition (or the success condition's failing side) and
    /// `warning` from the success condition when both are given and agree in direction.
    fn levels(&mut self, at: &str, m: &Value, service: &str) -> Result<Vec<Line>, ImportError> {
        let success = self.condition(at, "successCondition", m, service)?;
        let failure = self.condition(at, "failureCondition", m, service)?;
        let level = |above: bool, v: f64| {
            format!(
                "{{ {} = {} }}",
                if above { "above" } else { "below" },
                draft::number(v)
            )
        };
        let mut out = Vec::new();
        match (success, failure) {
            (None, None) => {
                return Err(unsupported(
                    self.file,
                    at,
                    "neither successCondition nor failureCondition: nothing says when it fails"
                        .into(),
                ))
            }
            (Some(s), None) => {
                let (above, v) = s.true_side();
                out.push(Line::new("critical", level(!above, v)).note(format!(
                    "fails when successCondition does not hold (`{}`)",
                    str_of(m, "/successCondition").unwrap_or_default()
                )));
            }
            (s, Some(f)) => {
                let (above, v) = f.true_side();
                out.push(Line::new("critical", level(above, v)).note("failureCondition"));
                if let Some(s) = s {
                    let (s_above, sv) = s.true_side();
                    if s_above != above {
                        out.insert(
                            0,
                            Line::new("warning", level(above, sv))
                                .note("successCondition: Argo was inconclusive between the two"),
                        );
                    } else {
                        self.notes.push(format!("{at}: successCondition and failureCondition point the same way; only the failureCondition is imported"));
                    }
                }
            }
        }
        Ok(out)
    }

    /// `{{args.x}}` -> the arg's value, or a `[vars]` placeholder when it has none.
    fn args_in(&mut self, text: &str, field: &str, service: &str) -> Result<String, ImportError> {
        let mut new_vars = Vec::new();
        let out = substitute(text, self.file, field, |p| {
            let arg = p.strip_prefix("args.")?;
            match self.args.get(arg) {
                Some(Some(v)) => Some(v.clone()),
                Some(None) => {
                    let var = metric_name(arg);
                    new_vars.push((var.clone(), arg.to_string()));
                    Some(format!("{{{{{var}}}}}"))
                }
                None => None,
            }
        })?;
        for (var, arg) in new_vars {
            let value = if arg.contains("service") {
                service.to_string()
            } else {
                String::new()
            };
            self.vars.entry(var).or_insert(value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conditions_argo_documents_are_read() {
        let c = |e: &str| parse_condition(e).map(|c| (c.op, c.value));
        assert_eq!(c("result[0] >= 0.95"), Some((Op::Ge, 0.95)));
        assert_eq!(c("result[0] <= 0.95"), Some((Op::Le, 0.95)));
        assert_eq!(c("result < 1"), Some((Op::Lt, 1.0)));
        assert_eq!(c("default(result, 0) > 4"), Some((Op::Gt, 4.0)));
        assert_eq!(c("all(result, # < 1000)"), Some((Op::Lt, 1000.0)));
        assert_eq!(
            c("isNaN(result[0]) || result[0] >= 0.9"),
            Some((Op::Ge, 0.9))
        );
        assert_eq!(c("result.successRate > 0.9"), None);
        assert_eq!(c("result[0] >= 0.9 && result[0] < 2"), None);
    }
}
