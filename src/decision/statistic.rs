//! One evaluation of a statistical metric (sequential count test, burn rate, Mann-Whitney):
//! gather what the test needs from the engine's memory, run it, and turn its Pass / Fail /
//! Inconclusive into the same [`Outcome`] threshold rules give, so durations, warm-up and the
//! sticky rollback work identically for every kind.

use super::counter::{Counter, CounterState};
use super::rule::{ignored, inconclusive, missing, read, Breach, Missing, Outcome, Reading, Rule};
use super::window::Window;
use crate::policy::Stat;
use crate::sample::{Millis, Track};
use crate::stats::burn_rate::{self, BurnConfig, WindowRatio};
use crate::stats::mann_whitney::{self, MannWhitneyConfig};
use crate::stats::sequential::{self, ArmCounts, Counts, Outcome as TestOutcome, SequentialConfig};
use std::time::Duration;

/// Events and total counters of one track.
pub type ArmCounters = [Counter; 2];
pub const EVENTS: usize = 0;
pub const TOTAL: usize = 1;

fn breach_of(o: TestOutcome) -> Breach {
    match o {
        TestOutcome::Fail => Breach::Critical,
        TestOutcome::Pass => Breach::Clear,
        TestOutcome::Inconclusive => Breach::Inconclusive,
    }
}

fn counter_missing(state: CounterState<'_>) -> Option<Missing> {
    match state {
        CounterState::Fresh(_) => None,
        CounterState::Absent => Some(Missing::Absent),
        CounterState::Never => Some(Missing::NeverSeen),
        CounterState::Unusable(s) => Some(match &s.obs {
            crate::sample::Observation::Error(reason) => Missing::Error {
                reason: reason.clone(),
            },
            crate::sample::Observation::NotFinite(_) => Missing::NotFinite,
            _ => Missing::Stale { last_at: s.at },
        }),
    }
}

/// Increases of both counters of `arm`, or why they cannot be used. An absent event counter
/// on the canary is "no event yet" (error series appear with the first error, and it can only
/// make the canary look better); on the stable it is missing data.
fn arm(
    arm: &ArmCounters,
    track: Track,
    now: Millis,
    stale_after: Millis,
) -> Result<ArmCounts, Missing> {
    let total = match arm[TOTAL].read(now, stale_after) {
        CounterState::Fresh(v) => v,
        other => return Err(counter_missing(other).unwrap_or(Missing::Absent)),
    };
    let events = match arm[EVENTS].read(now, stale_after) {
        CounterState::Fresh(v) => v,
        CounterState::Absent if track == Track::Canary => arm[EVENTS].increase(),
        other => return Err(counter_missing(other).unwrap_or(Missing::Absent)),
    };
    Ok(ArmCounts::new(events, total))
}

/// Where the sequential counts start, per track (snapshot of each arm's increases).
pub fn snapshot(counters: &[ArmCounters; 2]) -> [ArmCounts; 2] {
    counters
        .each_ref()
        .map(|a| ArmCounts::new(a[EVENTS].increase(), a[TOTAL].increase()))
}

/// Where the sequential counts start, per canary phase.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// At the first evaluation of the canary (for the warm-up test).
    pub start: Option<[ArmCounts; 2]>,
    /// At the first evaluation after warm-up (for the test proper).
    pub counting: Option<[ArmCounts; 2]>,
}

/// The sequential test of one metric in the canary phase.
pub struct Sequential<'a> {
    pub config: &'a SequentialConfig,
    pub warmup_alpha: f64,
    pub warmup_until: Millis,
}

impl Sequential<'_> {
    /// The outcome, and from when a Critical may fire: after warm-up normally; at once for
    /// the warm-up test's overwhelming evidence (a canary that is down from its first minute
    /// should not be served for the whole warm-up).
    pub fn evaluate(
        &self,
        rule: &Rule,
        counters: &[ArmCounters; 2],
        marks: &mut Marks,
        now: Millis,
    ) -> (Outcome, Millis) {
        let start = *marks.start.get_or_insert_with(|| snapshot(counters));
        if marks.counting.is_none() && now >= self.warmup_until {
            marks.counting = Some(snapshot(counters));
        }
        if marks.counting.is_some() || self.warmup_alpha <= 0.0 {
            let o = sequential(
                rule,
                self.config,
                counters,
                marks.counting.as_ref(),
                self.warmup_until,
                now,
            );
            return (o, self.warmup_until);
        }
        let strict = SequentialConfig {
            alpha: self.warmup_alpha,
            ..self.config.clone()
        };
        let mut o = sequential(
            rule,
            &strict,
            counters,
            Some(&start),
            self.warmup_until,
            now,
        );
        match o.breach {
            Breach::Critical => {
                if let Reading::Test { explanation, .. } = &mut o.reading {
                    explanation.push_str(" (during warm-up: overwhelming evidence only)");
                }
                (o, Millis::MIN)
            }
            // Data problems hold as usual; anything short of overwhelming is not judged yet.
            Breach::Inconclusive if matches!(o.reading, Reading::Missing { .. }) => {
                (o, self.warmup_until)
            }
            _ => {
                o.breach = Breach::Ignored;
                (o, self.warmup_until)
            }
        }
    }
}

/// The sequential test. `counters` and `origin` are indexed by track (canary, stable);
/// `origin` is `None` until counting starts at `count_from`.
pub fn sequential(
    rule: &Rule,
    cfg: &SequentialConfig,
    counters: &[ArmCounters; 2],
    origin: Option<&[ArmCounts; 2]>,
    count_from: Millis,
    now: Millis,
) -> Outcome {
    let Some(origin) = origin else {
        return ignored(Reading::Counting { from: count_from });
    };
    let mut arms = [ArmCounts::default(); 2];
    for (i, track) in [Track::Canary, Track::Stable].into_iter().enumerate() {
        match arm(&counters[i], track, now, rule.stale_after) {
            Ok(now_counts) => {
                let total = (now_counts.total - origin[i].total).max(0.0);
                let events = (now_counts.events - origin[i].events).clamp(0.0, total);
                arms[i] = ArmCounts::new(events, total);
            }
            Err(why) => return missing(rule, Track::Canary, track, why),
        }
    }
    let counts = Counts {
        canary: arms[0],
        stable: arms[1],
    };
    match sequential::evaluate(&counts, cfg) {
        Ok(v) => Outcome {
            breach: breach_of(v.outcome),
            threshold: None,
            reading: Reading::Test {
                statistic: "bayes_factor".into(),
                value: v.bayes_factor,
                fail_at: v.threshold,
                outcome: v.outcome,
                counts: Some(counts),
                explanation: v.explanation,
            },
        },
        Err(e) => inconclusive(Reading::Test {
            statistic: "bayes_factor".into(),
            value: 1.0,
            fail_at: 1.0 / cfg.alpha,
            outcome: TestOutcome::Inconclusive,
            counts: Some(counts),
            explanation: e.to_string(),
        }),
    }
}

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
