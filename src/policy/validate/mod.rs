//! Semantic checks of a loaded policy: the mistakes that parse fine but would make backout act
//! wrongly (a warning that fires after critical, a floor with no traffic query, ...).
//!
//! Pure: takes the typed policy (templates already applied) and the file's key lines.

mod kinds;

use super::kinds::Kind;
use super::model::{Compare, Level, MetricSpec, Policy, Unit};
use super::template::{self, SyntaxError, BUILTIN_VARS};
use crate::diagnostic::spans::SpanMap;
use crate::diagnostic::Problem;
use std::collections::BTreeMap;
use std::time::Duration;

/// Every semantic problem in `policy`. `spans` gives lines; an empty map gives none.
pub fn validate(policy: &Policy, spans: &SpanMap) -> Vec<Problem> {
    let mut v = Validator {
        policy,
        spans,
        out: Vec::new(),
        template: None,
    };
    v.names();
    v.analysis();
    v.vars();
    v.metrics();
    let at = |key: &str, message: String, hint: &str| {
        Problem::new(&policy.source, key, message)
            .at(spans.line_of(key))
            .hint(hint)
    };
    v.out.extend(super::response::check(policy, &at));
    v.out
}

struct Validator<'a> {
    policy: &'a Policy,
    spans: &'a SpanMap,
    out: Vec<Problem>,
    /// Template of the metric being checked, to say where an unwritten (inherited) value came from.
    template: Option<&'a str>,
}

fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Validator<'_> {
    fn push(&mut self, key: &str, mut message: String, hint: impl Into<String>) {
        if let Some(t) = self.template.filter(|_| !self.spans.has(key)) {
            message.push_str(&format!(" (inherited from template `{t}`)"));
        }
        let p = Problem::new(&self.policy.source, key, message)
            .at(self.spans.line_of(key))
            .hint(hint);
        self.out.push(p);
    }

    fn names(&mut self) {
        let p = self.policy;
        let required = [
            ("service", &p.service),
            ("namespace", &p.namespace),
            ("deployments.stable", &p.deployments.stable),
            ("deployments.canary", &p.deployments.canary),
        ];
        for (key, value) in required {
            if value.trim().is_empty() {
                self.push(
                    key,
                    "must not be empty".into(),
                    format!("set `{key}` to the Kubernetes object's name"),
                );
            }
        }
        for (key, message, hint) in crate::policy::traffic::problems(&p.traffic) {
            self.push(&key, message, hint);
        }
        if !p.deployments.stable.is_empty() && p.deployments.stable == p.deployments.canary {
            self.push(
                "deployments.canary",
                format!("canary and stable are the same Deployment `{}`", p.deployments.canary),
                "name the canary Deployment (it is scaled to zero on rollback, so it must differ from the stable)",
            );
        }
    }

    fn analysis(&mut self) {
        let a = &self.policy.analysis;
        if a.interval.is_zero() {
            self.push(
                "analysis.interval",
                "interval is zero".into(),
                "set an evaluation interval such as \"10s\"",
            );
        }
        if a.no_data_deadline < a.interval {
            self.push(
                "analysis.no_data_deadline",
                format!(
                    "no_data_deadline ({}) is shorter than the interval ({})",
                    fmt_d(a.no_data_deadline),
                    fmt_d(a.interval)
                ),
                "make it several intervals long, e.g. \"10m\"",
            );
        }
        if let Some(q) = &a.traffic_query {
            self.query("analysis.traffic_query", q);
        }
    }

    fn vars(&mut self) {
        for name in self.policy.vars.keys() {
            if BUILTIN_VARS.contains(&name.as_str()) {
                let key = format!("vars.{name}");
                self.push(
                    &key,
                    format!("`{name}` is a built-in placeholder and cannot be redefined"),
                    "rename the variable",
                );
            }
        }
    }

    /// Checks a query's placeholders.
    fn query(&mut self, key: &str, query: &str) {
        if query.trim().is_empty() {
            self.push(key, "query is empty".to_string(), "write a PromQL query");
            return;
        }
        let known = || {
            let mut all: Vec<String> = BUILTIN_VARS
                .iter()
                .map(|s| format!("{{{{{s}}}}}"))
                .collect();
            all.extend(self.policy.vars.keys().map(|s| format!("{{{{{s}}}}}")));
            all.join(", ")
        };
        match template::unknown_vars(query, &self.policy.vars) {
            Ok(unknown) => {
                for var in unknown {
                    let hint = format!("use one of {} or define it under [vars]", known());
                    self.push(
                        key,
                        format!("unknown template variable `{{{{{var}}}}}`"),
                        hint,
                    );
                }
            }
            Err(SyntaxError::Unclosed) => self.push(
                key,
                "`{{` without a closing `}}`".to_string(),
                "close the placeholder: {{name}}",
            ),
            Err(SyntaxError::BadName(n)) => self.push(
                key,
                format!("`{{{{{n}}}}}` is not a placeholder name"),
                "placeholders are names like {{service}} (letters, digits, _)",
            ),
        }
    }

    fn metrics(&mut self) {
        let metrics = &self.policy.metrics;
        if metrics.is_empty() {
            self.push(
                "metric",
                "policy has no metrics, so it can never roll back".into(),
                "add at least one [[metric]] with a critical level",
            );
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, m) in metrics.iter().enumerate() {
            let at = format!("metric[{i}]");
            if m.name.trim().is_empty() {
                self.push(
                    &format!("{at}.name"),
                    "metric name is empty".into(),
                    "give the metric a short unique name, e.g. \"error_rate\"",
                );
            } else if let Some(first) = seen.get(m.name.as_str()) {
                let line = self.spans.line_of(&format!("metric[{first}].name"));
                let where_ = line.map(|l| format!(" at line {l}")).unwrap_or_default();
                self.push(
                    &format!("{at}.name"),
                    format!(
                        "duplicate metric name `{}` (first used by metric[{first}]{where_})",
                        m.name
                    ),
                    "metric names must be unique within a policy; rename one",
                );
            } else {
                seen.insert(&m.name, i);
            }
            self.template = m.template.as_deref();
            self.metric(&at, m);
            self.template = None;
        }
    }

    fn metric(&mut self, at: &str, m: &MetricSpec) {
        let interval = self.policy.analysis.interval;
        let kind = m.kind();
        match &m.query {
            Some(q) => self.query(&format!("{at}.query"), q),
            None if kind == Kind::Sequential => {}
            None => self.push(
                &format!("{at}.query"),
                format!("metric `{}` has no query", m.name),
                "add `query = \"...\"` or `template = \"<name>\"` naming a template from templates.toml",
            ),
        }
        for (key, d) in [("window", m.window), ("stat_window", m.stat_window)] {
            if d.is_some_and(|d| d.is_zero()) {
                self.push(
                    &format!("{at}.{key}"),
                    format!("{key} is zero"),
                    "use a positive duration such as \"1m\"",
                );
            }
        }
        if let Some(sw) = m.stat_window.filter(|d| !d.is_zero() && *d < interval) {
            self.push(
                &format!("{at}.stat_window"),
                format!("stat_window ({}) is shorter than analysis.interval ({}) and holds at most one sample", fmt_d(sw), fmt_d(interval)),
                format!("use at least {} or drop stat_window", fmt_d(interval)),
            );
        }
        for (key, d) in [("for", m.for_), ("clear_for", m.clear_for)] {
            if let Some(d) = d.filter(|d| !d.is_zero() && *d < interval) {
                self.push(
                    &format!("{at}.{key}"),
                    format!(
                        "`{key}` ({}) is shorter than analysis.interval ({}), so it acts like {}",
                        fmt_d(d),
                        fmt_d(interval),
                        fmt_d(interval)
                    ),
                    format!("use \"0s\" (no hold) or at least {}", fmt_d(interval)),
                );
            }
        }
        if let Some(floor) = m.min_traffic {
            if floor < 0.0 {
                self.push(
                    &format!("{at}.min_traffic"),
                    format!("min_traffic is negative ({floor})"),
                    "use requests per second >= 0",
                );
            }
            if self.policy.analysis.traffic_query.is_none() {
                self.push(
                    &format!("{at}.min_traffic"),
                    "min_traffic needs analysis.traffic_query to know the traffic".into(),
                    "add `traffic_query = 'sum(rate(requests_total{track=\"{{track}}\"}[{{window}}]))'` under [analysis], or remove min_traffic",
                );
            }
        }
        match kind {
            Kind::Threshold => self.levels(at, m),
            _ => self.kind(at, m, kind),
        }
        self.unit(at, m, kind);
    }

    /// `unit` says how the shared-cause test reads a value as counts: a level the unit cannot
    /// reach, or a percent query with no unit (its counts read 100x too large), is a mistake.
    fn unit(&mut self, at: &str, m: &MetricSpec, kind: Kind) {
        let key = format!("{at}.unit");
        if kind != Kind::Threshold {
            if m.unit.is_some() {
                self.push(
                    &key,
                    format!(
                        "`unit` applies to threshold metrics, not to a {} metric",
                        kind.as_str()
                    ),
                    "remove `unit` (a statistical test reads its own counts)",
                );
            }
            return;
        }
        let top = match m.unit.and_then(Unit::share_scale) {
            Some(scale) => 1.0 / scale,
            None if m.unit.is_some() => return,
            None => {
                let counted = self.policy.analysis.traffic_query.is_some();
                if counted && m.query.as_deref().is_some_and(looks_percent) {
                    self.push(
                        &format!("{at}.query"),
                        "the query multiplies by 100 (a percent of requests?) and the metric states \
                         no `unit`: the shared-cause test would read its counts 100x too large and \
                         roll a canary back for an incident the stable shares"
                            .into(),
                        "add `unit = \"percent\"` (levels stay in percent: 5 = 5%), or \
                         `unit = \"other\"` if the value is not a share of requests",
                    );
                }
                return;
            }
        };
        if m.compare == Some(Compare::Ratio) {
            return;
        }
        let unit = if top > 1.0 { "percent" } else { "ratio" };
        for (name, level) in [("warning", &m.warning), ("critical", &m.critical)] {
            let Some(level) = level else { continue };
            for (dir, v) in [("above", level.above), ("below", level.below)] {
                let Some(v) = v.filter(|v| v.abs() > top) else {
                    continue;
                };
                let hint = match unit {
                    "ratio" if v <= 100.0 => format!(
                        "write {} for {v}%, or set `unit = \"percent\"` if the query gives percent",
                        v / 100.0
                    ),
                    _ => format!("a {unit} lies between 0 and {top}: fix the level or the unit"),
                };
                self.push(
                    &format!("{at}.{name}.{dir}"),
                    format!("{v} is out of range for `unit = \"{unit}\"` (0 to {top})"),
                    hint,
                );
            }
        }
    }

    fn levels(&mut self, at: &str, m: &MetricSpec) {
        if m.warning.is_none() && m.critical.is_none() {
            self.push(
                at,
                format!(
                    "metric `{}` has neither warning nor critical, so it can never fire",
                    m.name
                ),
                "add a [metric.critical] table with `above` or `below`",
            );
            return;
        }
        let mut ok = true;
        for (name, level) in [("warning", &m.warning), ("critical", &m.critical)] {
            let Some(level) = level else { continue };
            let key = format!("{at}.{name}");
            match (level.above, level.below) {
                (Some(_), Some(_)) => {
                    ok = false;
                    self.push(&key, "sets both `above` and `below`".into(), "keep one: a level breaches in one direction (write two metrics for a band)");
                }
                (None, None) => {
                    ok = false;
                    self.push(
                        &key,
                        "sets neither `above` nor `below`".into(),
                        "add `above = <threshold>` or `below = <threshold>`",
                    );
                }
                _ => {}
            }
            if m.compare == Some(Compare::Ratio) && threshold(level).is_some_and(|t| t <= 0.0) {
                let dir = if level.above.is_some() {
                    "above"
                } else {
                    "below"
                };
                self.push(
                    &format!("{key}.{dir}"),
                    "a ratio threshold must be positive (canary / stable)".into(),
                    "e.g. above = 1.5 means 50% worse than the stable",
                );
            }
        }
        let (Some(w), Some(c)) = (m.warning, m.critical) else {
            return;
        };
        if !ok {
            return;
        }
        match (w.above, w.below, c.above, c.below) {
            (Some(wa), None, Some(ca), None) if wa > ca => self.push(
                &format!("{at}.warning.above"),
                format!(
                    "warning ({wa}) is looser than critical ({ca}): it would fire after critical"
                ),
                format!("for `above`, set warning <= {ca}"),
            ),
            (None, Some(wb), None, Some(cb)) if wb < cb => self.push(
                &format!("{at}.warning.below"),
                format!(
                    "warning ({wb}) is looser than critical ({cb}): it would fire after critical"
                ),
                format!("for `below`, set warning >= {cb}"),
            ),
            (Some(_), None, None, Some(_)) | (None, Some(_), Some(_), None) => self.push(
                &format!("{at}.warning"),
                "warning and critical point in different directions (one `above`, one `below`)"
                    .into(),
                "use `above` for both (higher is worse) or `below` for both (lower is worse)",
            ),
            _ => {}
        }
    }
}

/// Whether a query scales its value to percent: `... * 100` or `100 * ...` at the top level.
fn looks_percent(query: &str) -> bool {
    let q: String = query.chars().filter(|c| !c.is_whitespace()).collect();
    q.ends_with("*100") || q.starts_with("100*")
}

fn threshold(level: &Level) -> Option<f64> {
    level.above.or(level.below)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Unit;

    fn problems(metric: MetricSpec) -> Vec<Problem> {
        let mut p = Policy::test().with_metric(metric);
        p.analysis.traffic_query = Some("sum(rate(requests{track=\"{{track}}\"}[1m]))".into());
        validate(&p, &SpanMap::default())
    }

    const PERCENT: &str = "sum(rate(errors{track=\"{{track}}\"}[5m])) / \
                           sum(rate(requests{track=\"{{track}}\"}[5m])) * 100";

    #[test]
    fn a_percent_query_must_state_its_unit() {
        let m = || {
            MetricSpec::test("errors")
                .query(PERCENT)
                .critical(Level::above(5.0))
        };
        let found = problems(m());
        let p = found
            .iter()
            .find(|p| p.key == "metric[0].query")
            .unwrap_or_else(|| panic!("{found:?}"));
        assert!(p.message.contains("100x"), "{p}");
        assert!(p.hint.contains("unit = \"percent\""), "{p}");
        assert!(problems(m().unit(Unit::Percent)).is_empty());
        assert!(problems(m().unit(Unit::Other)).is_empty());
    }

    #[test]
    fn a_level_the_unit_cannot_reach_names_the_level_and_the_fix() {
        let found = problems(
            MetricSpec::test("errors")
                .critical(Level::above(5.0))
                .unit(Unit::Ratio),
        );
        let p = found
            .iter()
            .find(|p| p.key == "metric[0].critical.above")
            .unwrap_or_else(|| panic!("{found:?}"));
        assert!(p.hint.contains("0.05"), "{p}");
        let found = problems(
            MetricSpec::test("errors")
                .critical(Level::above(150.0))
                .unit(Unit::Percent),
        );
        assert!(found.iter().any(|p| p.key == "metric[0].critical.above"));
        // A ratio comparison's level is canary / stable, whatever the unit.
        let mut m = MetricSpec::test("errors")
            .critical(Level::above(2.0))
            .unit(Unit::Ratio);
        m.compare = Some(Compare::Ratio);
        assert!(problems(m).is_empty());
    }

    #[test]
    fn unit_is_for_threshold_metrics_only() {
        let m = MetricSpec::test("errors")
            .sequential("sum(errors_total)", "sum(requests_total)")
            .unit(Unit::Ratio);
        let found = problems(m);
        assert!(found.iter().any(|p| p.key == "metric[0].unit"), "{found:?}");
    }
}
