//! The sequential count test as the engine runs it over a canary phase: where its counts
//! start (the end of warm-up, and periodic restarts), the stricter warm-up test before that,
//! and the tightest pass bound reached so far.
//!
//! Restarts: counts since the end of warm-up dilute a regression that starts hours into a long
//! canary (the healthy hours before it are evidence the other way). Every `restart_every` a
//! fresh test starts on counts from then on. To keep the whole family's false-rollback bound at
//! `alpha` (a union bound, valid at every poll), the test from the end of warm-up gets
//! `alpha * (1 - RESTART_SHARE)` and restart `j` (j = 1, 2, ...) gets
//! `alpha * RESTART_SHARE / (j * (j + 1))`, which sum to `RESTART_SHARE * alpha`. Only the two
//! newest restarts are evaluated: not looking at a test can only remove false rollbacks.
//! The warm-up test is one more member: the whole bound is `alpha + warmup_alpha`.

use super::counter::{arm_counts, snapshot, ArmCounters};
use super::rule::{breach_of, ignored, inconclusive, missing, Breach, Outcome, Reading, Rule};
use crate::sample::{duration, Millis, Track};
use crate::stats::sequential::{
    self, ArmCounts, Counts, KnownBound, Outcome as TestOutcome, SequentialConfig,
};

/// Share of alpha spent on restarts when they are on. Small, so the main test, which decides
/// every canary of ordinary length, loses almost nothing (0.01 nat of evidence at 1%; at 10% the
/// 0.1 nat moved the x5 benchmark's median by two polls). Restarts pay instead (restart 1 fires at
/// 2e4 for alpha 0.01), which costs seconds on a regression that is hours late, where dilution
/// cost minutes.
pub const RESTART_SHARE: f64 = 0.01;

/// How many of the newest restarts are evaluated.
const LIVE_RESTARTS: usize = 2;

/// Alpha of the test from the end of warm-up: all of `alpha` unless restarts share it
/// (`restart_every` is `None` when they are off; `Rule::from_spec` maps 0 to `None`).
pub fn main_alpha(alpha: f64, restart_every: Option<Millis>) -> f64 {
    if restart_every.is_some() {
        alpha * (1.0 - RESTART_SHARE)
    } else {
        alpha
    }
}

/// Alpha of restart `j` (1-based) of a test with `alpha`.
pub fn restart_alpha(alpha: f64, j: u32) -> f64 {
    debug_assert!(
        j >= 1,
        "restart indices start at 1; 0 is the test from warm-up"
    );
    let j = f64::from(j.max(1));
    alpha * RESTART_SHARE / (j * (j + 1.0))
}

/// A test started `index` restart periods after counting began, on counts from `origin`.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    pub index: u32,
    pub origin: [ArmCounts; 2],
}

/// Where the sequential counts start, per canary phase, and what the phase has established.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// At the first evaluation of the canary (for the warm-up test).
    pub start: Option<[ArmCounts; 2]>,
    /// At the first evaluation after warm-up (for the test proper), and when.
    pub counting: Option<([ArmCounts; 2], Millis)>,
    /// The newest restarts, oldest first.
    pub restarts: Vec<Restart>,
    /// The tightest pass bound the test proper has reached since counting or the last restart.
    pub bound: Option<KnownBound>,
}

/// The sequential test of one metric in the canary phase.
pub struct Sequential<'a> {
    pub config: &'a SequentialConfig,
    pub warmup_alpha: f64,
    pub warmup_until: Millis,
    /// `None`: no restarts (never `Some(0)`).
    pub restart_every: Option<Millis>,
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
            marks.counting = Some((snapshot(counters), now));
        }
        if let Some((origin, since)) = marks.counting {
            return (
                self.counting(rule, counters, marks, origin, since, now),
                self.warmup_until,
            );
        }
        if self.warmup_alpha <= 0.0 {
            let (o, _) = sequential(
                rule,
                self.config,
                counters,
                None,
                self.warmup_until,
                now,
                None,
            );
            return (o, self.warmup_until);
        }
        let strict = SequentialConfig {
            alpha: self.warmup_alpha,
            ..self.config.clone()
        };
        let (mut o, _) = sequential(
            rule,
            &strict,
            counters,
            Some(&start),
            self.warmup_until,
            now,
            None,
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

    /// After warm-up: the test proper, then the live restarts; the first failure wins,
    /// otherwise the test proper speaks (only it may pass: it has the most data).
    fn counting(
        &self,
        rule: &Rule,
        counters: &[ArmCounters; 2],
        marks: &mut Marks,
        origin: [ArmCounts; 2],
        since: Millis,
        now: Millis,
    ) -> Outcome {
        if let Some(every) = self.restart_every {
            let due =
                u32::try_from(now.saturating_sub(since).max(0) / every.max(1)).unwrap_or(u32::MAX);
            if due >= 1 && marks.restarts.last().is_none_or(|r| r.index < due) {
                marks.restarts.push(Restart {
                    index: due,
                    origin: snapshot(counters),
                });
                if marks.restarts.len() > LIVE_RESTARTS {
                    marks.restarts.remove(0);
                }
                // A pass is re-earned every period: the canary may have changed since it passed.
                marks.bound = None;
            }
        }
        let main = SequentialConfig {
            alpha: main_alpha(self.config.alpha, self.restart_every),
            pass_alpha: Some(self.config.alpha),
            ..self.config.clone()
        };
        let (o, bound) = sequential(
            rule,
            &main,
            counters,
            Some(&origin),
            self.warmup_until,
            now,
            marks.bound,
        );
        marks.bound = bound;
        if o.breach == Breach::Critical || matches!(o.reading, Reading::Missing { .. }) {
            return o;
        }
        let every = self.restart_every.unwrap_or(0);
        for r in &marks.restarts {
            let cfg = SequentialConfig {
                alpha: restart_alpha(self.config.alpha, r.index),
                // Restarts only ever fail; infinite exposure skips the pass bounds' bisection.
                min_exposure: f64::INFINITY,
                ..self.config.clone()
            };
            let (mut fresh, _) =
                sequential(rule, &cfg, counters, Some(&r.origin), since, now, None);
            if fresh.breach == Breach::Critical {
                if let Reading::Test { explanation, .. } = &mut fresh.reading {
                    explanation.push_str(&format!(
                        " (restart {} on counts from {} after warm-up)",
                        r.index,
                        humantime::format_duration(duration(
                            every.saturating_mul(i64::from(r.index))
                        ))
                    ));
                }
                return fresh;
            }
        }
        o
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
    known: Option<KnownBound>,
) -> (Outcome, Option<KnownBound>) {
    let Some(origin) = origin else {
        return (ignored(Reading::Counting { from: count_from }), known);
    };
    let mut arms = [ArmCounts::default(); 2];
    for (i, track) in [Track::Canary, Track::Stable].into_iter().enumerate() {
        match arm_counts(&counters[i], track, now, rule.stale_after) {
            Ok(now_counts) => {
                let total = (now_counts.total - origin[i].total).max(0.0);
                let events = (now_counts.events - origin[i].events).clamp(0.0, total);
                arms[i] = ArmCounts::new(events, total);
            }
            Err(why) => return (missing(rule, Track::Canary, track, why), known),
        }
    }
    let counts = Counts {
        canary: arms[0],
        stable: arms[1],
    };
    match sequential::evaluate_with_bound(&counts, cfg, known) {
        Ok(v) => (
            Outcome {
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
            v.bound,
        ),
        Err(e) => (
            inconclusive(Reading::Test {
                statistic: "bayes_factor".into(),
                value: 1.0,
                fail_at: 1.0 / cfg.alpha,
                outcome: TestOutcome::Inconclusive,
                counts: Some(counts),
                explanation: e.to_string(),
            }),
            known,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::counter::{EVENTS, TOTAL};
    use crate::policy::{MetricSpec, Policy};
    use crate::sample::{Observation, Sample};

    #[test]
    fn the_main_test_and_the_restarts_share_alpha_exactly() {
        let alpha = 0.01;
        let restarts: f64 = (1..100_000).map(|j| restart_alpha(alpha, j)).sum();
        let total = main_alpha(alpha, Some(3_600_000)) + restarts;
        assert!(total <= alpha && total > alpha * 0.999_999, "{total}");
        assert_eq!(main_alpha(alpha, None), alpha);
    }

    #[test]
    fn restarts_begin_on_the_period_and_only_the_newest_two_live() {
        let policy = Policy::test().with_metric(MetricSpec::test("e").sequential("a", "b"));
        let rule = Rule::from_spec(&policy.metrics[0], &policy.analysis);
        let cfg = SequentialConfig::default();
        let seq = Sequential {
            config: &cfg,
            warmup_alpha: 0.0,
            warmup_until: 0,
            restart_every: Some(600_000),
        };
        let mut counters: [ArmCounters; 2] = Default::default();
        let mut marks = Marks::default();
        let mut live = Vec::new();
        // A poll a minute for 40 minutes; counting starts at the first poll.
        for k in 0..=40_i64 {
            let now = k * 60_000;
            for (i, arm) in counters.iter_mut().enumerate() {
                let total = k as f64 * if i == 0 { 100.0 } else { 900.0 };
                arm[TOTAL].push(Sample::new(now, Observation::Value(total)));
                arm[EVENTS].push(Sample::new(now, Observation::Value(total * 0.005)));
            }
            seq.evaluate(&rule, &counters, &mut marks, now);
            live.push(marks.restarts.iter().map(|r| r.index).collect::<Vec<_>>());
        }
        assert!(live[9].is_empty(), "{:?}", live[9]);
        assert_eq!(live[10], [1]);
        assert_eq!(live[20], [1, 2]);
        assert_eq!(live[30], [2, 3]);
        assert_eq!(live[40], [3, 4]);
        // Restart 1 counts from minute 10: its origin is the counters then.
        assert_eq!(marks.restarts[0].origin[0].total, 3000.0);
    }
}
