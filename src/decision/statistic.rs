//! One evaluation of a statistical metric (sequential count test, burn rate, Mann-Whitney):
//! gather what the test needs from the engine's memory, run it, and turn its Pass / Fail /
//! Inconclusive into the same [`Outcome`] threshold rules give, so durations, warm-up and the
//! sticky rollback work identically for every kind.

use super::rule::{
    breach_of, ignored, inconclusive, missing, read, Missing, Outcome, Reading, Rule,
};
use super::window::Window;
use crate::policy::Stat;
use crate::sample::{Millis, Track};
use crate::stats::burn_rate::{self, BurnConfig, WindowRatio};
use crate::stats::mann_whitney::{self, MannWhitneyConfig};
use crate::stats::sequential::Outcome as TestOutcome;
use std::time::Duration;

/// Burn rate of the judged track. `ratios` holds one window of error-ratio polls per rule
/// window, indexed by track.
pub fn burn_rate(
    rule: &Rule,
    cfg: &BurnConfig,
    ratios: &[(Duration, [Window; 2])],
    subject: Track,
    now: Millis,
) -> Outcome {
    let ti = usize::from(subject == Track::Stable);
    let mut first_missing = None;
    let windows: Vec<WindowRatio> = ratios
        .iter()
        .map(|(w, series)| {
            let r = read(&series[ti], Stat::Last, 0, rule.stale_after, now);
            if let Err(why) = &r {
                first_missing.get_or_insert(why.clone());
            }
            WindowRatio {
                window: *w,
                error_ratio: r.ok(),
            }
        })
        .collect();
    if windows.iter().all(|w| w.error_ratio.is_none()) {
        return missing(
            rule,
            subject,
            subject,
            first_missing.unwrap_or(Missing::NeverSeen),
        );
    }
    let v = burn_rate::evaluate(cfg, &windows);
    // The rule closest to firing: its weaker window's burn against its factor.
    let closest = v
        .rules
        .iter()
        .filter_map(|r| {
            let burn = r.long_burn?.min(r.short_burn?);
            Some((burn, r.rule.factor))
        })
        .max_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
    let (value, fail_at) = closest.unwrap_or((0.0, cfg.rules.first().map_or(1.0, |r| r.factor)));
    Outcome {
        breach: breach_of(v.outcome),
        threshold: None,
        reading: Reading::Test {
            statistic: "burn_rate".into(),
            value,
            fail_at,
            outcome: v.outcome,
            counts: None,
            explanation: v.explanation,
        },
    }
}

/// Mann-Whitney comparison of the canary's and the stable's values over `stat_window`.
pub fn mann_whitney(
    rule: &Rule,
    cfg: &MannWhitneyConfig,
    series: &[Window; 2],
    baseline: bool,
    now: Millis,
) -> Outcome {
    if !baseline {
        return ignored(Reading::NoBaseline);
    }
    for (i, track) in [Track::Canary, Track::Stable].into_iter().enumerate() {
        if let Err(why) = read(&series[i], Stat::Last, 0, rule.stale_after, now) {
            return missing(rule, Track::Canary, track, why);
        }
    }
    let values = |i: usize| -> Vec<f64> { series[i].values(now, rule.stat_window).collect() };
    let (canary, stable) = (values(0), values(1));
    let not_enough = |explanation: String| {
        inconclusive(Reading::Test {
            statistic: "confidence_higher".into(),
            value: 0.0,
            fail_at: cfg.confidence,
            outcome: TestOutcome::Inconclusive,
            counts: None,
            explanation,
        })
    };
    match mann_whitney::compare(&canary, &stable, cfg) {
        Ok(c) => Outcome {
            breach: breach_of(c.outcome),
            threshold: None,
            reading: Reading::Test {
                statistic: "confidence_higher".into(),
                value: 1.0 - c.test.p_greater,
                fail_at: cfg.confidence,
                outcome: c.outcome,
                counts: None,
                explanation: format!(
                    "{} (fixed-horizon test over the last {} polls)",
                    c.explanation,
                    canary.len().min(stable.len())
                ),
            },
        },
        Err(e) => not_enough(e.to_string()),
    }
}
