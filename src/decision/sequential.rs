//! The sequential count test as the engine runs it over a canary phase: where its counts
//! start (the end of warm-up), the stricter warm-up test before that, the change detector that
//! catches late regressions, and the tightest pass bound reached so far.
//!
//! Late regressions: counts since the end of warm-up dilute a regression that starts hours into
//! a long canary (the healthy hours before it are evidence the other way). The change detector
//! (`stats::detector`, a mixture Shiryaev-Roberts e-detector with a start every minute) sees
//! the same counts poll by poll and its delay does not grow with the healthy time before the
//! change. Alpha is shared by a union bound: the test from warm-up gets
//! `alpha * (1 - DETECTOR_SHARE)` (valid however long the canary runs) and the detector
//! `alpha * DETECTOR_SHARE` for canaries up to `horizon` (past it, its bound grows linearly).
//! The warm-up test is one more member: the whole bound is `alpha + warmup_alpha`.

use super::counter::{arm_counts, snapshot, ArmCounters};
use super::rule::{breach_of, ignored, inconclusive, missing, Breach, Outcome, Reading, Rule};
use crate::sample::{Millis, Track};
use crate::stats::detector::{self, Detector, Increment, BLOCK_MS};
use crate::stats::sequential::{
    self, ArmCounts, Counts, KnownBound, Outcome as TestOutcome, SequentialConfig,
};
use crate::stats::threshold_text;

/// Share of alpha the change detector gets when it is on. A quarter: the test from warm-up, which
/// decides every canary of ordinary length, loses ln(4/3) = 0.29 nats (threshold 133 instead of
/// 100 at alpha 0.01); the detector's threshold already pays for a day of starts
/// (ln(1441 / 0.0025) = 13.3 nats), where a larger share would buy back little (half: 12.6).
pub const DETECTOR_SHARE: f64 = 0.25;

/// Alpha of the test from the end of warm-up: all of `alpha` unless the detector shares it
/// (`horizon` is `None` when it is off; `Rule::from_spec` maps 0 to `None`).
pub fn main_alpha(alpha: f64, horizon: Option<Millis>) -> f64 {
    if horizon.is_some() {
        alpha * (1.0 - DETECTOR_SHARE)
    } else {
        alpha
    }
}

/// Alpha of the change detector over its horizon.
pub fn detector_alpha(alpha: f64) -> f64 {
    alpha * DETECTOR_SHARE
}

/// The change detector of one metric and where its last poll left the counts.
#[derive(Debug, Clone)]
pub struct Watch {
    pub detector: Detector,
    /// Both tracks' counts at the previous poll it folded in.
    pub previous: [ArmCounts; 2],
    /// The block (minutes since counting started) of its newest start.
    pub block: Option<i64>,
}

/// Where the sequential counts start, per canary phase, and what the phase has established.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// At the first evaluation of the canary (for the warm-up test).
    pub start: Option<[ArmCounts; 2]>,
    /// At the first evaluation after warm-up (for the test proper), and when.
    pub counting: Option<([ArmCounts; 2], Millis)>,
    /// The change detector, from the first evaluation after warm-up.
    pub watch: Option<Watch>,
    /// The tightest pass bound the test proper has reached since counting started.
    pub bound: Option<KnownBound>,
}

/// The sequential test of one metric in the canary phase.
pub struct Sequential<'a> {
    pub config: &'a SequentialConfig,
    pub warmup_alpha: f64,
    pub warmup_until: Millis,
    /// The change detector's horizon; `None`: no detector (never `Some(0)`).
    pub horizon: Option<Millis>,
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

    /// After warm-up: the change detector folds in this poll, then the test proper speaks; a
    /// detector alarm wins when the test proper has not failed (only the test proper may pass:
    /// it has the most data).
    fn counting(
        &self,
        rule: &Rule,
        counters: &[ArmCounters; 2],
        marks: &mut Marks,
        origin: [ArmCounts; 2],
        since: Millis,
        now: Millis,
    ) -> Outcome {
        let alarm = self
            .horizon
            .and_then(|h| self.watch(rule, counters, marks, origin, since, now, h));
        let main = SequentialConfig {
            alpha: main_alpha(self.config.alpha, self.horizon),
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
        let Some((value, fail_at)) = alarm else {
            return o;
        };
        let Reading::Test {
            counts,
            explanation,
            ..
        } = o.reading
        else {
            return o;
        };
        Outcome {
            breach: Breach::Critical,
            threshold: None,
            reading: Reading::Test {
                statistic: "change_detector".into(),
                value,
                fail_at,
                outcome: TestOutcome::Fail,
                counts,
                explanation: format!(
                    "change detector {value:.3e} >= {}: the canary turned more than {}x worse \
                     than the stable within the last minutes (since warm-up: {explanation})",
                    threshold_text(fail_at),
                    self.config.margin
                ),
            },
        }
    }

    /// Folds this poll's new counts into the change detector; its statistic and threshold
    /// when it alarms. A poll without fresh counts is skipped (the next one carries them).
    #[allow(clippy::too_many_arguments)]
    fn watch(
        &self,
        rule: &Rule,
        counters: &[ArmCounters; 2],
        marks: &mut Marks,
        origin: [ArmCounts; 2],
        since: Millis,
        now: Millis,
        horizon: Millis,
    ) -> Option<(f64, f64)> {
        let mut current = [ArmCounts::default(); 2];
        for (i, track) in [Track::Canary, Track::Stable].into_iter().enumerate() {
            current[i] = arm_counts(&counters[i], track, now, rule.stale_after).ok()?;
        }
        let watch = marks.watch.get_or_insert_with(|| Watch {
            detector: Detector::new(self.config.margin),
            previous: origin,
            block: None,
        });
        let delta = |i: usize| {
            let total = (current[i].total - watch.previous[i].total).max(0.0);
            let events = (current[i].events - watch.previous[i].events).clamp(0.0, total);
            (events, total)
        };
        let ((canary_events, canary_total), (stable_events, stable_total)) = (delta(0), delta(1));
        let block = now.saturating_sub(since).max(0) / BLOCK_MS;
        let start = watch.block.is_none_or(|b| block > b);
        if start {
            watch.block = Some(block);
        }
        watch.detector.update(
            Increment {
                canary_events,
                canary_total,
                stable_events,
                stable_total,
            },
            start,
        );
        watch.previous = current;
        let fail_at = detector::threshold(horizon, detector_alpha(self.config.alpha));
        let log_stat = watch.detector.log_statistic();
        (log_stat >= fail_at.ln()).then(|| (log_stat.exp(), fail_at))
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
    fn the_main_test_and_the_detector_share_alpha_exactly() {
        let alpha = 0.01;
        let total = main_alpha(alpha, Some(86_400_000)) + detector_alpha(alpha);
        assert!((total - alpha).abs() < 1e-15, "{total}");
        assert_eq!(main_alpha(alpha, None), alpha);
    }

    #[test]
    fn the_detector_starts_once_a_minute_and_sees_every_poll_once() {
        let policy = Policy::test().with_metric(MetricSpec::test("e").sequential("a", "b"));
        let rule = Rule::from_spec(&policy.metrics[0], &policy.analysis);
        let cfg = SequentialConfig::default();
        let seq = Sequential {
            config: &cfg,
            warmup_alpha: 0.0,
            warmup_until: 0,
            horizon: Some(86_400_000),
        };
        let mut counters: [ArmCounters; 2] = Default::default();
        let mut marks = Marks::default();
        // A poll every 10 s for 10 minutes; counting starts at the first poll.
        for k in 0..=60_i64 {
            let now = k * 10_000;
            for (i, arm) in counters.iter_mut().enumerate() {
                let total = k as f64 * if i == 0 { 10.0 } else { 90.0 };
                arm[TOTAL].push(Sample::new(now, Observation::Value(total)));
                arm[EVENTS].push(Sample::new(now, Observation::Value(total * 0.005)));
            }
            let (o, _) = seq.evaluate(&rule, &counters, &mut marks, now);
            assert_ne!(o.breach, Breach::Critical, "at {now}");
        }
        let watch = marks.watch.as_ref().unwrap();
        // Minutes 0..=10: eleven starts; the last poll's counts are the previous ones.
        assert_eq!(watch.detector.starts(), 11);
        assert_eq!(watch.previous[0].total, 600.0);
        assert_eq!(watch.previous[1].events, 5400.0 * 0.005);
    }
}
