//! Defaults for unset metric fields, written into the loaded policy so that what `explain`
//! prints is exactly what the engine runs.

use super::kinds::Kind;
use super::model::{MetricSpec, NoData, Policy, Stat};
use super::template::DEFAULT_WINDOW;
use std::time::Duration;

/// A metric's fields with their defaults applied. The one place the defaults are written: the
/// loader writes them into the policy ([`fill`]) and the engine's rules read them from here for
/// policies built in code, so the two cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    /// `{{window}}` in the metric's queries.
    pub window: Duration,
    pub stat: Stat,
    /// One interval holds the last sample: `last` over it is the latest value.
    pub stat_window: Duration,
    pub for_: Duration,
    pub clear_for: Duration,
    /// Missing data holds the verdict, never rolls back.
    pub no_data: NoData,
}

/// `metric`'s fields, unset ones at their defaults, for a policy polled every `interval`.
pub fn effective(metric: &MetricSpec, interval: Duration) -> Effective {
    Effective {
        window: metric.window.unwrap_or(DEFAULT_WINDOW),
        stat: metric.stat.unwrap_or(Stat::Last),
        stat_window: metric.stat_window.unwrap_or(interval),
        for_: metric.for_.unwrap_or(Duration::ZERO),
        clear_for: metric.clear_for.unwrap_or(Duration::ZERO),
        no_data: metric.no_data.unwrap_or(NoData::Hold),
    }
}

/// Fills every unset metric field that has a default. Idempotent.
pub fn fill(policy: &mut Policy) {
    let interval = policy.analysis.interval;
    for m in &mut policy.metrics {
        let e = effective(m, interval);
        // Counters (sequential) and per-rule windows (burn rate) have no `{{window}}` of their own.
        if matches!(m.kind(), Kind::Threshold | Kind::MannWhitney) {
            m.window = Some(e.window);
        }
        m.stat = Some(e.stat);
        m.stat_window = Some(e.stat_window);
        m.for_ = Some(e.for_);
        m.clear_for = Some(e.clear_for);
        m.no_data = Some(e.no_data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::MetricSpec;

    #[test]
    fn unset_fields_get_documented_defaults_and_set_ones_stay() {
        let mut p = Policy::test()
            .with_interval(Duration::from_secs(15))
            .with_metric(MetricSpec::test("a"))
            .with_metric(MetricSpec::test("b").no_data(NoData::Fail));
        fill(&mut p);
        let a = &p.metrics[0];
        assert_eq!(a.window, Some(Duration::from_secs(60)));
        assert_eq!(a.stat, Some(Stat::Last));
        assert_eq!(a.stat_window, Some(Duration::from_secs(15)));
        assert_eq!(a.for_, Some(Duration::ZERO));
        assert_eq!(a.no_data, Some(NoData::Hold));
        assert_eq!(p.metrics[1].no_data, Some(NoData::Fail));
    }
}
