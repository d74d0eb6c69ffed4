//! Defaults for unset metric fields, written into the loaded policy so that what `explain`
//! prints is exactly what the engine runs.

use super::kinds::Kind;
use super::model::{NoData, Policy, Stat};
use super::template::DEFAULT_WINDOW;
use std::time::Duration;

/// Fills every unset metric field that has a default. Idempotent.
pub fn fill(policy: &mut Policy) {
    let interval = policy.analysis.interval;
    for m in &mut policy.metrics {
        // Counters (sequential) and per-rule windows (burn rate) have no `{{window}}` of their own.
        if matches!(m.kind(), Kind::Threshold | Kind::MannWhitney) {
            m.window.get_or_insert(DEFAULT_WINDOW);
        }
        m.stat.get_or_insert(Stat::Last);
        // One interval holds the last sample: `last` over it is the latest value.
        m.stat_window.get_or_insert(interval);
        m.for_.get_or_insert(Duration::ZERO);
        m.clear_for.get_or_insert(Duration::ZERO);
        m.no_data.get_or_insert(NoData::Hold);
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
