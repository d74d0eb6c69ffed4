//! Checks of the statistical metric kinds: one kind per metric, no threshold fields that the
//! statistic would silently ignore, parameters in the range where the maths holds.

use super::{fmt_d, Validator};
use crate::policy::kinds::Kind;
use crate::policy::model::MetricSpec;
use std::time::Duration;

/// Shortest change-detector `horizon` accepted (also at least 30 analysis intervals): its bound
/// is per horizon and grows linearly past it, so a horizon shorter than the canary only moves
/// false rollbacks past the stated alpha.
const MIN_HORIZON: Duration = Duration::from_secs(600);

impl Validator<'_> {
    pub(super) fn kind(&mut self, at: &str, m: &MetricSpec, kind: Kind) {
        let tables = [
            ("sequential", m.sequential.is_some()),
            ("burn_rate", m.burn_rate.is_some()),
            ("mann_whitney", m.mann_whitney.is_some()),
        ];
        let set: Vec<&str> = tables.iter().filter(|t| t.1).map(|t| t.0).collect();
        if set.len() > 1 {
            self.push(
                at,
                format!(
                    "metric `{}` has more than one kind: [{}]",
                    m.name,
                    set.join("], [")
                ),
                "a metric makes one judgement; write one [[metric]] per kind",
            );
            return;
        }
        let unused = [
            ("warning", m.warning.is_some()),
            ("critical", m.critical.is_some()),
            ("compare", m.compare.is_some()),
        ];
        for (key, present) in unused {
            if present {
                self.push(
                    &format!("{at}.{key}"),
                    format!(
                        "`{key}` is not used by a {} metric: {}",
                        kind.as_str(),
                        fires_when(kind)
                    ),
                    format!("remove `{key}`, or drop [metric.{}]", kind.as_str()),
                );
            }
        }
        match kind {
            Kind::Sequential => self.sequential(at, m),
            Kind::BurnRate => self.burn_rate(at, m),
            Kind::MannWhitney => self.mann_whitney(at, m),
            Kind::Threshold => {}
        }
    }

    fn sequential(&mut self, at: &str, m: &MetricSpec) {
        let Some(s) = &m.sequential else { return };
        let key = format!("{at}.sequential");
        if m.query.is_some() && m.template.is_none() {
            self.push(
                &format!("{at}.query"),
                "`query` is not used by a sequential metric: it reads the `events` and `total` counters".into(),
                "remove `query`",
            );
        }
        self.query(&format!("{key}.events"), &s.events);
        self.query(&format!("{key}.total"), &s.total);
        if s.alpha.is_some_and(|a| !(a > 0.0 && a <= 0.5)) {
            self.push(
                &format!("{key}.alpha"),
                format!(
                    "alpha must be in (0, 0.5], got {}",
                    s.alpha.unwrap_or_default()
                ),
                "alpha is the false-rollback probability bound; 0.01 is the default",
            );
        }
        if s.margin.is_some_and(|x| x < 1.0) {
            self.push(
                &format!("{key}.margin"),
                format!("margin must be >= 1, got {}", s.margin.unwrap_or_default()),
                "1.2 means \"more than 20% worse than the stable\"; 1.0 tests any difference",
            );
        }
        let margin = s.margin.unwrap_or(1.2);
        if s.pass_ratio.is_some_and(|p| p <= margin) {
            self.push(
                &format!("{key}.pass_ratio"),
                format!(
                    "pass_ratio ({}) must be greater than margin ({margin})",
                    s.pass_ratio.unwrap_or_default()
                ),
                "a pass needs the ratio's upper bound below pass_ratio; 1.5 is the default",
            );
        }
        if s.min_exposure.is_some_and(|x| x < 0.0) {
            self.push(
                &format!("{key}.min_exposure"),
                "min_exposure is negative".into(),
                "it is a number of canary requests, e.g. 1000",
            );
        }
        let interval = self.policy.analysis.interval;
        if let Some(horizon) = s.horizon.filter(|e| !e.is_zero()) {
            let shortest = interval
                .checked_mul(30)
                .unwrap_or(Duration::MAX)
                .max(MIN_HORIZON);
            if horizon < shortest {
                self.push(
                    &format!("{key}.horizon"),
                    format!(
                        "horizon {} is shorter than {}: the change detector's false-rollback \
                         bound holds for canaries up to the horizon and grows past it",
                        fmt_d(horizon),
                        fmt_d(shortest)
                    ),
                    format!(
                        "set it to your longest canary, at least {} (30 analysis intervals, at \
                         least 10m); the default is 24h; 0s turns the detector off",
                        fmt_d(shortest)
                    ),
                );
            }
        }
    }

    fn burn_rate(&mut self, at: &str, m: &MetricSpec) {
        let Some(b) = &m.burn_rate else { return };
        let key = format!("{at}.burn_rate");
        if !(b.objective > 0.0 && b.objective < 1.0) {
            self.push(
                &format!("{key}.objective"),
                format!("objective must be between 0 and 1, got {}", b.objective),
                "write the SLO as a fraction, e.g. 0.999 for 99.9%",
            );
        }
        if m.query
            .as_deref()
            .is_some_and(|q| !q.contains("{{window}}"))
        {
            self.push(
                &format!("{at}.query"),
                "a burn_rate query must use {{window}}: it is sent once per rule window".into(),
                "write the error ratio over the window, e.g. sum(rate(errors[{{window}}])) / sum(rate(requests[{{window}}]))",
            );
        }
        for (i, r) in b.rules.iter().flatten().enumerate() {
            let rk = format!("{key}.rule[{i}]");
            if r.short.is_zero() || r.short >= r.long {
                self.push(
                    &rk,
                    format!(
                        "short window ({}) must be non-zero and shorter than the long one ({})",
                        fmt_d(r.short),
                        fmt_d(r.long)
                    ),
                    "the workbook uses short = long / 12, e.g. long = \"1h\", short = \"5m\"",
                );
            }
            if r.factor.is_nan() || r.factor <= 0.0 {
                self.push(
                    &format!("{rk}.factor"),
                    "factor must be positive".into(),
                    "e.g. 14.4 (2% of a 30-day budget in 1 h)",
                );
            }
        }
        if b.rules.as_ref().is_some_and(|r| r.is_empty()) {
            self.push(
                &format!("{key}.rule"),
                "no rules, so the metric can never fire".into(),
                "remove the empty list to get the default rules, or add [[metric.burn_rate.rule]]",
            );
        }
    }

    fn mann_whitney(&mut self, at: &str, m: &MetricSpec) {
        let Some(mw) = &m.mann_whitney else { return };
        let key = format!("{at}.mann_whitney");
        let cfg = mw.config();
        if !(cfg.confidence > 0.5 && cfg.confidence < 1.0) {
            self.push(
                &format!("{key}.confidence"),
                format!("confidence must be in (0.5, 1), got {}", cfg.confidence),
                "0.98 is the default",
            );
        }
        if cfg.tolerance.is_nan() || cfg.tolerance < 0.0 {
            self.push(
                &format!("{key}.tolerance"),
                "tolerance is negative".into(),
                "0.25 means the canary may be 25% higher than the stable",
            );
        }
        let interval = self.policy.analysis.interval;
        let over = m.stat_window.unwrap_or(interval);
        let held = if interval.is_zero() {
            0
        } else {
            (over.as_millis() / interval.as_millis()) as usize
        };
        if held < cfg.min_samples {
            self.push(
                &format!("{at}.stat_window"),
                format!(
                    "stat_window ({}) holds {held} samples at interval {}, fewer than min_samples ({})",
                    fmt_d(over),
                    fmt_d(interval),
                    cfg.min_samples
                ),
                format!(
                    "set stat_window to at least {}",
                    fmt_d(interval * cfg.min_samples as u32)
                ),
            );
        }
    }
}

fn fires_when(kind: Kind) -> &'static str {
    match kind {
        Kind::Sequential => "it fires when its Bayes factor reaches 1/alpha",
        Kind::BurnRate => "it fires when a rule's long and short windows both burn faster than its factor",
        Kind::MannWhitney => "it fires when the canary is significantly higher than the stable by more than the tolerance",
        Kind::Threshold => "",
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use crate::diagnostic::spans::SpanMap;
    use crate::policy::{Level, MetricSpec, Policy};
    use std::time::Duration;

    fn keys(m: MetricSpec) -> Vec<(String, String)> {
        validate(&Policy::test().with_metric(m), &SpanMap::default())
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    }

    #[test]
    fn a_default_statistical_metric_is_valid() {
        assert_eq!(keys(MetricSpec::test("e").sequential("a", "b")), []);
        let burn = MetricSpec::test("slo")
            .query("sum(rate(e[{{window}}]))")
            .burn_rate(0.999);
        assert_eq!(keys(burn), []);
        assert_eq!(
            keys(MetricSpec::test("p").mann_whitney(Duration::from_secs(300))),
            []
        );
    }

    #[test]
    fn levels_a_statistic_would_ignore_are_rejected() {
        let k = keys(
            MetricSpec::test("e")
                .sequential("a", "b")
                .critical(Level::above(0.05)),
        );
        assert!(k
            .iter()
            .any(|(key, m)| key == "metric[0].critical"
                && m.contains("Bayes factor reaches 1/alpha")));
    }

    #[test]
    fn two_kinds_on_one_metric_are_rejected() {
        let k = keys(MetricSpec::test("e").sequential("a", "b").burn_rate(0.999));
        assert!(
            k.iter().any(|(_, m)| m.contains("more than one kind")),
            "{k:?}"
        );
    }

    #[test]
    fn a_burn_rate_query_without_a_window_and_bad_parameters_are_named() {
        let mut m = MetricSpec::test("slo").burn_rate(1.5);
        if let Some(s) = m.sequential.as_mut() {
            s.alpha = Some(2.0);
        }
        let k = keys(m);
        assert!(k.iter().any(|(key, _)| key == "metric[0].query"), "{k:?}");
        assert!(
            k.iter()
                .any(|(key, _)| key == "metric[0].burn_rate.objective"),
            "{k:?}"
        );
        let mut s = MetricSpec::test("e").sequential("a", "b");
        if let Some(x) = s.sequential.as_mut() {
            x.alpha = Some(0.9);
            x.margin = Some(0.5);
        }
        let k = keys(s);
        assert!(
            k.iter().any(|(key, _)| key == "metric[0].sequential.alpha"),
            "{k:?}"
        );
        assert!(
            k.iter()
                .any(|(key, _)| key == "metric[0].sequential.margin"),
            "{k:?}"
        );
    }

    #[test]
    fn a_horizon_too_short_is_named_and_zero_turns_the_detector_off() {
        let with = |every: u64| {
            let mut m = MetricSpec::test("e").sequential("a", "b");
            if let Some(s) = m.sequential.as_mut() {
                s.horizon = Some(Duration::from_secs(every));
            }
            keys(m)
        };
        let k = with(120);
        assert!(
            k.iter()
                .any(|(key, m)| key == "metric[0].sequential.horizon"
                    && m.contains("shorter than 10m")),
            "{k:?}"
        );
        assert_eq!(with(0), []);
        assert_eq!(with(1800), []);
    }

    #[test]
    fn a_mann_whitney_window_too_short_for_its_samples_is_named() {
        let k = keys(MetricSpec::test("p").mann_whitney(Duration::from_secs(20)));
        assert!(
            k.iter().any(|(key, _)| key == "metric[0].stat_window"),
            "{k:?}"
        );
    }
}
