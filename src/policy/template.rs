//! Query templates: `{{name}}` placeholders in PromQL, and shared metric templates.
//!
//! One query text serves both tracks, so the canary and the stable are always measured the same
//! way; only the placeholders differ. Pure: no I/O.

use super::model::{MetricSpec, Policy, Template};
use crate::sample::Track;
use std::collections::BTreeMap;
use std::time::Duration;

/// Placeholders every query may use, besides the policy's `vars`.
pub const BUILTIN_VARS: &[&str] = &[
    "service",
    "namespace",
    "track",
    "deployment",
    "window",
    "services",
];

/// `{{window}}` when a metric does not set `window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Shared templates by name (from `templates.toml`).
pub type Templates = BTreeMap<String, Template>;

/// A piece of a query template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Why a query template cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxError {
    /// `{{` without a closing `}}`.
    Unclosed,
    /// `{{...}}` whose inside is not a name.
    BadName(String),
}

/// `{{services}}` as the rendered query keeps it: identical for every service, so requests still
/// batch; the query plan replaces it with the batch's services as a regex alternation.
pub const SERVICES_PLACEHOLDER: &str = "{{services}}";

/// Splits a query into text and `{{name}}` placeholders (whitespace inside braces is allowed).
pub fn parse(query: &str) -> Result<Vec<Piece<'_>>, SyntaxError> {
    let mut pieces = Vec::new();
    let mut rest = query;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(SyntaxError::Unclosed)?;
        let name = after[..close].trim();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(SyntaxError::BadName(after[..close].to_string()));
        }
        pieces.push(Piece::Var(name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Placeholders in `query` that are neither built in nor in `vars`.
pub fn unknown_vars<'a>(
    query: &'a str,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<&'a str>, SyntaxError> {
    Ok(parse(query)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(v) if !BUILTIN_VARS.contains(&v) && !vars.contains_key(v) => Some(v),
            _ => None,
        })
        .collect())
}

/// A duration as PromQL writes it (`1m`, `30s`, `1h30m`, `250ms`).
pub fn promql_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Renders `query` for one track. Unknown or malformed placeholders are left as written
/// (validation rejects them before a policy is ever used).
pub fn render(policy: &Policy, query: &str, window: Duration, track: Track) -> String {
    let Ok(pieces) = parse(query) else {
        return query.to_string();
    };
    let mut out = String::with_capacity(query.len() + 32);
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(v) => match v {
                "service" => out.push_str(&policy.service),
                "namespace" => out.push_str(&policy.namespace),
                "track" => out.push_str(track.as_str()),
                "deployment" => out.push_str(match track {
                    Track::Canary => &policy.deployments.canary,
                    Track::Stable => &policy.deployments.stable,
                }),
                "window" => out.push_str(&promql_duration(window)),
                // Left for the query plan, which knows the batch (`source::plan`).
                "services" => out.push_str(SERVICES_PLACEHOLDER),
                other => match policy.vars.get(other) {
                    Some(value) => out.push_str(value),
                    None => {
                        out.push_str("{{");
                        out.push_str(other);
                        out.push_str("}}");
                    }
                },
            },
        }
    }
    out
}

/// The PromQL the daemon sends for `metric` on `track` (empty if the metric has no query).
pub fn render_query(policy: &Policy, metric: &MetricSpec, track: Track) -> String {
    let query = metric.query.as_deref().unwrap_or_default();
    render(
        policy,
        query,
        metric.window.unwrap_or(DEFAULT_WINDOW),
        track,
    )
}

/// The traffic (requests/s) query for `track`, if the policy has one; `{{window}}` is the
/// default window.
pub fn render_traffic_query(policy: &Policy, track: Track) -> Option<String> {
    let q = policy.analysis.traffic_query.as_deref()?;
    Some(render(policy, q, DEFAULT_WINDOW, track))
}

/// Fills the metric's unset fields from `template` (the metric's own fields win).
pub fn apply(metric: &mut MetricSpec, template: &Template) {
    let t = template.clone();
    metric.query = metric.query.take().or(t.query);
    metric.window = metric.window.or(t.window);
    metric.stat = metric.stat.or(t.stat);
    metric.stat_window = metric.stat_window.or(t.stat_window);
    metric.warning = metric.warning.or(t.warning);
    metric.critical = metric.critical.or(t.critical);
    metric.for_ = metric.for_.or(t.for_);
    metric.clear_for = metric.clear_for.or(t.clear_for);
    metric.compare = metric.compare.or(t.compare);
    metric.unit = metric.unit.or(t.unit);
    metric.min_traffic = metric.min_traffic.or(t.min_traffic);
    metric.no_data = metric.no_data.or(t.no_data);
    metric.sequential = metric.sequential.take().or(t.sequential);
    metric.burn_rate = metric.burn_rate.take().or(t.burn_rate);
    metric.mann_whitney = metric.mann_whitney.take().or(t.mann_whitney);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Level;

    #[test]
    fn renders_every_builtin_and_vars_per_track() {
        let mut policy = Policy::test().with_service("api", "prod");
        policy.vars.insert("job".into(), "api-http".into());
        let metric = MetricSpec::test("errors")
            .query("rate(x{job=\"{{job}}\",ns=\"{{ namespace }}\",svc=\"{{service}}\",t=\"{{track}}\",d=\"{{deployment}}\"}[{{window}}])");
        let mut metric = metric;
        metric.window = Some(Duration::from_secs(90));
        assert_eq!(
            render_query(&policy, &metric, Track::Canary),
            "rate(x{job=\"api-http\",ns=\"prod\",svc=\"api\",t=\"canary\",d=\"web-canary\"}[1m30s])"
        );
        assert_eq!(
            render_query(&policy, &metric, Track::Stable),
            "rate(x{job=\"api-http\",ns=\"prod\",svc=\"api\",t=\"stable\",d=\"web\"}[1m30s])"
        );
    }

    #[test]
    fn default_window_is_one_minute() {
        let m = MetricSpec::test("m").query("rate(x[{{window}}])");
        assert_eq!(
            render_query(&Policy::test(), &m, Track::Canary),
            "rate(x[1m])"
        );
    }

    #[test]
    fn promql_durations() {
        assert_eq!(promql_duration(Duration::from_secs(30)), "30s");
        assert_eq!(promql_duration(Duration::from_secs(3600 + 1800)), "1h30m");
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(promql_duration(Duration::from_secs(86_400)), "1d");
    }

    #[test]
    fn unknown_and_malformed_placeholders_are_found() {
        let vars = BTreeMap::from([("job".to_string(), "x".to_string())]);
        assert_eq!(
            unknown_vars("{{job}} {{foo}} {{track}}", &vars),
            Ok(vec!["foo"])
        );
        assert_eq!(
            unknown_vars("x{{service", &vars),
            Err(SyntaxError::Unclosed)
        );
        assert!(matches!(
            unknown_vars("{{ a b }}", &vars),
            Err(SyntaxError::BadName(_))
        ));
    }

    #[test]
    fn metric_fields_override_template_fields() {
        let template = Template {
            query: Some("tq".into()),
            window: Some(Duration::from_secs(300)),
            stat: None,
            stat_window: None,
            warning: Some(Level::above(1.0)),
            critical: Some(Level::above(5.0)),
            for_: Some(Duration::from_secs(60)),
            clear_for: None,
            compare: None,
            unit: None,
            min_traffic: None,
            no_data: None,
            sequential: None,
            burn_rate: None,
            mann_whitney: None,
        };
        let mut m = MetricSpec::test("m").critical(Level::above(9.0));
        m.query = None;
        apply(&mut m, &template);
        assert_eq!(m.query.as_deref(), Some("tq"));
        assert_eq!(m.critical, Some(Level::above(9.0)));
        assert_eq!(m.warning, Some(Level::above(1.0)));
        assert_eq!(m.for_, Some(Duration::from_secs(60)));
    }
}
