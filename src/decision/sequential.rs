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

use super::counter::{Counter, CounterState};
use super::rule::{ignored, inconclusive, missing, Breach, Missing, Outcome, Reading, Rule};
use super::statistic::breach_of;
use crate::sample::{Millis, Track};
use crate::stats::sequential::{self, ArmCounts, Counts, Outcome as TestOutcome, SequentialConfig};

/// Share of alpha spent on restarts when they are on. Small, so the main test, which decides
/// every canary of ordinary length, loses almost nothing (0.01 nat of evidence at 1%; at 10% the
/// 0.1 nat moved the x5 benchmark's median by a poll). Restarts pay instead (restart 1 fires at
/// 2e4 for alpha 0.01), which costs seconds on a regression that is hours late, where dilution
/// cost minutes.
pub const RESTART_SHARE: f64 = 0.01;

/// How many of the newest restarts are evaluated.
const LIVE_RESTARTS: usize = 2;

/// Alpha of the test from the end of warm-up: all of `alpha` unless restarts share it.
pub fn main_alpha(alpha: f64, restart_every: Option<Millis>) -> f64 {
    if restart_every.is_some_and(|e| e > 0) {
        alpha * (1.0 - RESTART_SHARE)
    } else {
        alpha
    }
}

/// Alpha of restart `j` (1-based) of a test with `alpha`.
pub fn restart_alpha(alpha: f64, j: u32) -> f64 {
    let j = f64::from(j.max(1));
    alpha * RESTART_SHARE / (j * (j + 1.0))
}

/// Events and total counters of one track.
pub type ArmCounters = [Counter; 2];
pub const EVENTS: usize = 0;
pub const TOTAL: usize = 1;

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
    /// The smallest rate-ratio upper bound the test proper has reached.
    pub ratio_upper: Option<f64>,
}

/// The sequential test of one metric in the canary phase.
pub struct Sequential<'a> {
    pub config: &'a SequentialConfig,
    pub warmup_alpha: f64,
    pub warmup_until: Millis,
    /// `None`: no restarts.
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
        let Some(every) = self.restart_every.filter(|e| *e > 0) else {
            let (o, bound) = sequential(
                rule,
                self.config,
                counters,
                Some(&origin),
                self.warmup_until,
                now,
                marks.ratio_upper,
            );
            marks.ratio_upper = bound;
            return o;
        };
        let due = u32::try_from(now.saturating_sub(since).max(0) / every).unwrap_or(u32::MAX);
        if due >= 1 && marks.restarts.last().is_none_or(|r| r.index < due) {
            marks.restarts.push(Restart {
                index: due,
                origin: snapshot(counters),
            });
            if marks.restarts.len() > LIVE_RESTARTS {
                marks.restarts.remove(0);
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
            marks.ratio_upper,
        );
        marks.ratio_upper = bound;
        if o.breach == Breach::Critical || matches!(o.reading, Reading::Missing { .. }) {
            return o;
        }
        for r in &marks.restarts {
            let cfg = SequentialConfig {
                alpha: restart_alpha(self.config.alpha, r.index),
                ..self.config.clone()
            };
            let (mut fresh, _) =
                sequential(rule, &cfg, counters, Some(&r.origin), since, now, None);
            if fresh.breach == Breach::Critical {
                if let Reading::Test { explanation, .. } = &mut fresh.reading {
                    explanation.push_str(&format!(
                        " (restart {} on counts from {} after warm-up)",
                        r.index,
                        humantime::format_duration(std::time::Duration::from_millis(
                            u64::try_from(every.saturating_mul(i64::from(r.index))).unwrap_or(0)
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
    known_upper: Option<f64>,
) -> (Outcome, Option<f64>) {
    let Some(origin) = origin else {
        return (ignored(Reading::Counting { from: count_from }), known_upper);
    };
    let mut arms = [ArmCounts::default(); 2];
    for (i, track) in [Track::Canary, Track::Stable].into_iter().enumerate() {
        match arm(&counters[i], track, now, rule.stale_after) {
            Ok(now_counts) => {
                let total = (now_counts.total - origin[i].total).max(0.0);
                let events = (now_counts.events - origin[i].events).clamp(0.0, total);
                arms[i] = ArmCounts::new(events, total);
            }
            Err(why) => return (missing(rule, Track::Canary, track, why), known_upper),
        }
    }
    let counts = Counts {
        canary: arms[0],
        stable: arms[1],
    };
    match sequential::evaluate_with_bound(&counts, cfg, known_upper) {
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
            v.ratio_upper.or(known_upper),
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
            known_upper,
        ),
    }
}
