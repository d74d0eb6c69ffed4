//! `backout explain --since`: where each metric's statistic stands now and what it needs to
//! reach to warn or roll back, from a replay up to now. Answers "how close is this canary to a
//! rollback, and why not yet?" without reading the engine's code.

use super::time::{human, rfc3339};
use crate::decision::{threshold_text, Alert, Health, MetricStatus, Reading, Rule, Verdict};
use crate::policy::{Compare, Kind, Level, Policy};
use crate::sample::Millis;
use serde::Serialize;
use std::time::Duration;

/// One metric's position at the last poll.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub metric: String,
    pub kind: Kind,
    pub health: Health,
    /// What `value` is (`last`, `mean over 5m`, `ratio of ...`, `bayes_factor`, ...).
    pub statistic: String,
    pub value: Option<f64>,
    /// What has to happen for it to warn or fail, in words.
    pub needs: String,
}

fn ms(d: Millis) -> String {
    human(Duration::from_millis(u64::try_from(d).unwrap_or(0)))
}

fn statistic(rule: &Rule) -> String {
    let stat = serde_json::to_value(rule.stat)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "last".into());
    let base = if stat == "last" {
        stat
    } else {
        format!("{stat} over {}", ms(rule.stat_window))
    };
    match rule.compare {
        Some(Compare::Ratio) => format!("canary/stable ratio of the {base}"),
        Some(Compare::Difference) => format!("canary-stable difference of the {base}"),
        None => base,
    }
}

/// "critical above 0.05 (+0.0377 to go)" for one level.
fn level_text(name: &str, level: Option<Level>, value: f64) -> Option<String> {
    let l = level?;
    let bound = l.above.or(l.below)?;
    let gap = if l.breached_by(value) {
        "breached now".to_string()
    } else {
        format!("{:+.4} to go", bound - value)
    };
    Some(format!("{name} {l:#} ({gap})"))
}

fn alert_text(name: &str, a: Alert, for_: Millis) -> Option<String> {
    match a {
        Alert::Inactive => None,
        Alert::Pending { since } => Some(format!(
            "{name} pending since {}, fires at {} if it holds (for {})",
            rfc3339(since),
            rfc3339(since + for_),
            ms(for_)
        )),
        Alert::Firing { fired_at, .. } => {
            Some(format!("{name} firing since {}", rfc3339(fired_at)))
        }
    }
}

/// What a statistical kind's value is, when the reading does not say (no data yet).
fn kind_statistic(kind: Kind, rule: &Rule) -> String {
    match kind {
        Kind::Threshold => statistic(rule),
        Kind::Sequential => "bayes_factor".into(),
        Kind::BurnRate => "burn_rate".into(),
        Kind::MannWhitney => "confidence_higher".into(),
    }
}

fn standing(policy: &Policy, rule: &Rule, status: &MetricStatus) -> Standing {
    let kind = policy
        .metrics
        .iter()
        .find(|m| m.name == rule.name)
        .map_or(Kind::Threshold, |m| m.kind());
    let mut parts: Vec<String> = Vec::new();
    let value = match &status.reading {
        Reading::Value { value, .. } => {
            parts.extend(level_text("critical", rule.critical, *value));
            parts.extend(level_text("warning", rule.warning, *value));
            if rule.for_ > 0 {
                parts.push(format!("held at every poll for {}", ms(rule.for_)));
            }
            Some(*value)
        }
        Reading::Test {
            value,
            fail_at,
            explanation,
            ..
        } => {
            let gap = if value >= fail_at {
                "reached".to_string()
            } else if *value > 0.0 {
                format!("x{:.1} to go", fail_at / value)
            } else {
                "not started".to_string()
            };
            parts.push(format!(
                "fails at {} ({gap}); {explanation}",
                threshold_text(*fail_at)
            ));
            Some(*value)
        }
        other => {
            parts.push(other.to_string());
            None
        }
    };
    parts.extend(alert_text("critical", status.critical, rule.for_));
    parts.extend(alert_text("warning", status.warning, rule.for_));
    let statistic = match &status.reading {
        Reading::Test { statistic, .. } => statistic.clone(),
        _ => kind_statistic(kind, rule),
    };
    Standing {
        metric: rule.name.clone(),
        kind,
        health: status.health,
        statistic,
        value,
        needs: parts.join("; "),
    }
}

/// Every metric's standing in `verdict` (the last poll of a replay of `policy`).
pub fn standings(policy: &Policy, verdict: &Verdict) -> Vec<Standing> {
    policy
        .metrics
        .iter()
        .map(|spec| Rule::from_spec(spec, &policy.analysis))
        .filter_map(|rule| {
            let status = verdict.metrics.iter().find(|m| m.metric == rule.name)?;
            Some(standing(policy, &rule, status))
        })
        .collect()
}

/// The standings as comment lines (`explain` prints TOML, so everything else is a comment).
pub fn render(standings: &[Standing]) -> String {
    let mut out = String::new();
    for s in standings {
        let value = s
            .value
            .map_or("no value".to_string(), |v| format!("{v:.4}"));
        out.push_str(&format!(
            "# metric `{}` ({}): {}, {} = {}; {}\n",
            s.metric,
            s.kind.as_str(),
            s.health,
            s.statistic,
            value,
            s.needs
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::{replay, History, Mode, Schedule};
    use crate::policy::MetricSpec;
    use crate::sample::Sample;
    use crate::source::RangeSeries;

    #[test]
    fn a_threshold_metric_says_how_far_it_is_from_each_level() {
        let p = Policy::test().with_metric(
            MetricSpec::test("errors")
                .warning(Level::above(0.01))
                .critical(Level::above(0.05))
                .for_(Duration::from_secs(60)),
        );
        let q = crate::backtest::queries(&p);
        let s = Schedule::new(&p, 0, 300_000, None, Mode::Canary).unwrap();
        let mut h = History::new();
        for (query, v) in q.iter().zip([0.02, 0.01]) {
            h.insert(
                query,
                vec![RangeSeries {
                    labels: Default::default(),
                    samples: s.instants().map(|t| Sample::value(t, v)).collect(),
                }],
            );
        }
        let r = replay(&p, &s, &h).unwrap();
        let st = standings(&p, r.last.as_ref().unwrap());
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].value, Some(0.02));
        assert_eq!(st[0].health, Health::Warning);
        assert!(
            st[0].needs.contains("critical above 0.05 (+0.0300 to go)"),
            "{}",
            st[0].needs
        );
        assert!(
            st[0].needs.contains("warning above 0.01 (breached now)"),
            "{}",
            st[0].needs
        );
        assert!(
            st[0].needs.contains("warning firing since"),
            "{}",
            st[0].needs
        );
        let text = render(&st);
        assert!(
            text.starts_with("# metric `errors` (threshold): warning, last = 0.0200;"),
            "{text}"
        );
    }
}
