//! Rollback rules applied to the same runs: backout's default and the peers' documented rules.
//!
//! Each judge polls on its own schedule and returns when it would have rolled back (seconds
//! after the canary started), or `None` if it never did within the run.

use super::ceiling::{ceiling, Told};
use super::policies::{self, window_ratio};
use super::promql::{instant, sum};
use super::scenario::{Counter, Effect, Run, Scenario, RUN_SECS};
use crate::decision::{Engine, Phase};
use crate::policy::{Input, MetricSpec, Policy};
use crate::sample::{Millis, Observation, Sample, Track};
use crate::stats::mann_whitney::hodges_lehmann;
use crate::stats::sequential::SequentialConfig;
use std::time::Duration;

/// backout's defaults: the daemon's default `analysis.interval` and `analysis.warmup`.
pub const DEFAULT_POLL_SECS: u64 = 10;
pub const DEFAULT_WARMUP_SECS: u64 = 60;

/// The rules compared by the benchmark.
#[derive(Debug, Clone, PartialEq)]
pub enum Judge {
    /// A policy as users write it, run by the real engine on what the scenario can answer
    /// (`quality::policies`): the examples and the recommended policy.
    Policy { name: String, policy: Box<Policy> },
    /// backout: the sequential test on error and slow-request counts, polled every `poll_secs`;
    /// no data holds.
    Backout {
        config: SequentialConfig,
        poll_secs: u64,
        /// Counts start this long after the canary started (0 = judge the warm-up too).
        warmup_secs: u64,
        /// Alpha of the warm-up test on counts since the start (`None`: the policy default).
        warmup_alpha: Option<f64>,
    },
    /// Flagger: success rate (rate over 1m) >= 99 every 1m; 5 cumulative failed checks roll
    /// back; no data is a failed check.
    Flagger,
    /// Argo Rollouts: `result >= 0.95` every 1m, failureLimit 3; empty/NaN is an error and more
    /// than 4 consecutive errors abort.
    Argo,
    /// Kayenta: Mann-Whitney/Hodges-Lehmann at 98% with tolerance 0.25 on per-minute ratios
    /// since the start, judged every 5 min; score below 75 (marginal) fails.
    Kayenta,
    /// Not a rule anyone can run (`quality::ceiling`): Wald's SPRT told the true error
    /// multiplier ([`Told::Effect`]), or the mixture of SPRTs told the benchmark's steps but
    /// not which ([`Told::Set`]) or only their range ([`Told::Range`]), on backout's own error
    /// counts (same poll, warm-up, alpha and
    /// margin). For a simple alternative the SPRT needs the fewest events of any test with the
    /// same error bound, so its row is the ceiling for every valid sequential test on these
    /// data. It runs only on error steps above the margin, where there is an effect to be told.
    Ceiling {
        config: SequentialConfig,
        poll_secs: u64,
        warmup_secs: u64,
        warmup_alpha: Option<f64>,
        told: Told,
    },
}

impl Judge {
    pub fn backout_default() -> Self {
        Judge::Backout {
            config: SequentialConfig::default(),
            poll_secs: DEFAULT_POLL_SECS,
            warmup_secs: DEFAULT_WARMUP_SECS,
            warmup_alpha: None,
        }
    }

    pub fn all() -> Vec<Judge> {
        vec![
            Judge::backout_default(),
            Judge::Flagger,
            Judge::Argo,
            Judge::Kayenta,
            Judge::ceiling_default(),
            Judge::ceiling_told_the_set(),
            Judge::ceiling_told_the_range(),
        ]
    }

    /// The judges plus the recommended policy and `examples` (name, policy).
    pub fn with_policies(examples: Vec<(String, Policy)>) -> Vec<Judge> {
        let mut all = Judge::all();
        let mut users = vec![Judge::Policy {
            name: "recommended (levels + sequential)".into(),
            policy: Box::new(policies::recommended()),
        }];
        users.extend(examples.into_iter().map(|(name, p)| Judge::Policy {
            name: format!("example: {name}"),
            policy: Box::new(p),
        }));
        all.splice(1..1, users);
        all
    }

    /// Whether this judge has a row for the scenario: the ceiling needs a known effect; Kayenta
    /// re-ranks every minute since the start at each judgement (quadratic in the run's length)
    /// and the example policies re-read hours-long windows, so neither runs on runs longer than
    /// `RUN_SECS`.
    pub fn applies(&self, s: &Scenario) -> bool {
        match self {
            Judge::Ceiling { config, told, .. } => {
                // The mixture of CUSUMs is not built: the set's row is for onsets at the start.
                let late = !matches!(told, Told::Effect) && s.onset_secs > 0;
                !s.missing_data
                    && !late
                    && matches!(s.effect, Effect::ErrorStep(f) if f > config.margin)
            }
            Judge::Kayenta => s.run_secs <= RUN_SECS,
            // The examples' burn-rate windows (up to 6 h) re-read hours of scrapes at every
            // poll; their targets are about 60-minute scenarios (shared incidents).
            Judge::Policy { name, .. } if name.starts_with("example") => s.run_secs <= RUN_SECS,
            _ => true,
        }
    }

    pub fn name(&self) -> String {
        let name = match self {
            Judge::Policy { name, .. } => return name.clone(),
            Judge::Backout { .. } if *self == Judge::backout_default() => "backout",
            Judge::Backout { .. } => "backout (variant)",
            Judge::Flagger => "Flagger",
            Judge::Argo => "Argo Rollouts",
            Judge::Kayenta => "Kayenta",
            Judge::Ceiling { .. } if *self == Judge::ceiling_default() => {
                "ceiling: SPRT told the effect"
            }
            Judge::Ceiling {
                told: Told::Set(steps),
                ..
            } if *self == Judge::ceiling_told_the_set() => {
                let steps: Vec<String> = steps.iter().map(|f| format!("x{f}")).collect();
                let (last, rest) = steps.split_last().map_or(("", &[][..]), |(l, r)| (l, r));
                return format!("ceiling told {} or {last}, not which", rest.join(", "));
            }
            Judge::Ceiling {
                config,
                told: Told::Range { lo, hi, .. },
                ..
            } => {
                return format!(
                    "ceiling told x{lo}..x{hi}, not the effect (minimax, alpha {})",
                    config.alpha
                )
            }
            Judge::Ceiling { .. } => "ceiling (variant)",
        };
        name.into()
    }

    /// When this judge would have rolled the run back.
    pub fn first_rollback(&self, run: &Run) -> Option<u64> {
        match self {
            Judge::Policy { policy, .. } => policies::first_rollback(policy, run),
            Judge::Backout {
                config,
                poll_secs,
                warmup_secs,
                warmup_alpha,
            } => backout(
                run,
                &backout_policy(config, *poll_secs, *warmup_secs, *warmup_alpha),
            ),
            Judge::Flagger => flagger(run),
            Judge::Argo => argo(run),
            Judge::Kayenta => kayenta(run),
            Judge::Ceiling {
                config,
                poll_secs,
                warmup_secs,
                warmup_alpha,
                told,
            } => ceiling(run, config, *poll_secs, *warmup_secs, *warmup_alpha, told),
        }
    }
}

fn polls(every: u64, run_secs: u64) -> impl Iterator<Item = u64> {
    (1..=run_secs / every).map(move |i| i * every)
}

/// The policy the benchmark runs for backout: what a user writes for errors and slow
/// requests, with the scenario's counters as the queries' answers.
pub fn backout_policy(
    cfg: &SequentialConfig,
    poll_secs: u64,
    warmup_secs: u64,
    warmup_alpha: Option<f64>,
) -> Policy {
    let metric = |name: &str| {
        let mut m = MetricSpec::test(name).sequential(
            &format!("sum({name}_total{{track=\"{{{{track}}}}\"}})"),
            "sum(requests_total{track=\"{{track}}\"})",
        );
        if let Some(s) = m.sequential.as_mut() {
            s.alpha = Some(cfg.alpha);
            s.margin = Some(cfg.margin);
            s.min_exposure = Some(cfg.min_exposure);
            s.pass_ratio = Some(cfg.pass_ratio);
            // Start-up latency is expected (cold caches, JIT): only errors may fire in warm-up.
            s.warmup_alpha = if name == "slow" {
                Some(0.0)
            } else {
                warmup_alpha
            };
        }
        m
    };
    Policy::test()
        .with_interval(Duration::from_secs(poll_secs))
        .with_warmup(Duration::from_secs(warmup_secs))
        .with_metric(metric("errors"))
        .with_metric(metric("slow"))
}

/// Runs the real engine on the run, polled like the daemon polls Prometheus: an instant
/// `sum()` of each counter per track every `every` seconds.
fn backout(run: &Run, policy: &Policy) -> Option<u64> {
    let every = policy.analysis.interval.as_secs().max(1);
    let mut engine = Engine::new(policy, "canary");
    let phase = Phase::Canary { started_at: 0 };
    let ms = |secs: u64| Millis::try_from(secs * 1000).unwrap_or(Millis::MAX);
    (0..=run.run_secs / every).map(|i| i * every).find(|&at| {
        for track in Track::ALL {
            let total = sum(run.series(track, Counter::Requests).map(|s| instant(s, at)));
            for (name, c) in [("errors", Counter::Errors), ("slow", Counter::Slow)] {
                let events = sum(run.series(track, c).map(|s| instant(s, at)));
                for (input, v) in [
                    (
                        Input::Events {
                            metric: name.into(),
                        },
                        events,
                    ),
                    (
                        Input::Total {
                            metric: name.into(),
                        },
                        total,
                    ),
                ] {
                    let obs = v.map_or(Observation::Absent, Observation::Value);
                    let _ = engine.observe_input(&input, track, Sample::new(ms(at), obs));
                }
            }
        }
        engine.evaluate(ms(at), phase).rollback
    })
}

/// Share of events among requests over the last minute, as `sum(rate(..[1m]))` ratios give it.
/// `None` is an empty or NaN result.
fn minute_ratio(run: &Run, track: Track, metric: Counter, at: u64) -> Option<f64> {
    window_ratio(run, track, metric, at, 60)
}

fn flagger(run: &Run) -> Option<u64> {
    let mut failed = 0;
    polls(60, run.run_secs).find(|&at| {
        let ok = minute_ratio(run, Track::Canary, Counter::Errors, at)
            .is_some_and(|r| 100.0 * (1.0 - r) >= 99.0);
        if !ok {
            failed += 1;
        }
        failed >= 5
    })
}

fn argo(run: &Run) -> Option<u64> {
    let (mut failures, mut consecutive_errors) = (0, 0);
    polls(60, run.run_secs).find(|&at| {
        match minute_ratio(run, Track::Canary, Counter::Errors, at) {
            None => {
                consecutive_errors += 1;
                consecutive_errors > 4
            }
            Some(r) => {
                consecutive_errors = 0;
                if 1.0 - r < 0.95 {
                    failures += 1;
                }
                failures > 3
            }
        }
    })
}

enum Class {
    Pass,
    High,
    NoData,
}

/// Kayenta's MannWhitneyClassifier: High when the interval's lower end exceeds a fraction of
/// the Hodges-Lehmann estimate itself.
fn kayenta_classify(canary: &[f64], stable: &[f64]) -> Class {
    if canary.is_empty() || stable.is_empty() {
        return Class::NoData;
    }
    let (mut c, mut s) = (canary.to_vec(), stable.to_vec());
    c.sort_by(f64::total_cmp);
    s.sort_by(f64::total_cmp);
    if c == s || c.iter().chain(&s).all(|v| *v == c[0]) {
        return Class::Pass;
    }
    match hodges_lehmann(canary, stable, 0.98) {
        Ok(shift) if shift.lower > 0.25 * shift.estimate.abs() => Class::High,
        Ok(_) => Class::Pass,
        Err(_) => Class::NoData,
    }
}

fn kayenta(run: &Run) -> Option<u64> {
    polls(300, run.run_secs).find(|&at| {
        let mut classified = 0;
        let mut passed = 0;
        for metric in [Counter::Errors, Counter::Slow] {
            let samples = |track| -> Vec<f64> {
                polls(60, run.run_secs)
                    .take_while(|m| *m <= at)
                    .filter_map(|m| minute_ratio(run, track, metric, m))
                    .collect()
            };
            match kayenta_classify(&samples(Track::Canary), &samples(Track::Stable)) {
                Class::NoData => {}
                Class::Pass => {
                    classified += 1;
                    passed += 1;
                }
                Class::High => classified += 1,
            }
        }
        classified > 0 && 100.0 * f64::from(passed) / f64::from(classified) < 75.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::scenario::{generate, Effect, Scenario, Traffic};

    fn scenario(traffic: f64, effect: Effect, healthy: bool) -> Scenario {
        Scenario {
            name: "test",
            healthy,
            traffic: Traffic::Fixed(traffic),
            baseline_error: Some(0.005),
            effect,
            missing_data: false,
            onset_secs: 0,
            run_secs: RUN_SECS,
        }
    }

    #[test]
    fn every_judge_catches_a_hard_failure_at_high_traffic() {
        let run = generate(&scenario(100.0, Effect::ErrorStep(20.0), false), 1);
        for judge in Judge::all() {
            let t = judge.first_rollback(&run);
            assert!(t.is_some_and(|t| t <= 600), "{} at {t:?}", judge.name());
        }
    }

    #[test]
    fn the_ceiling_is_at_least_as_fast_as_backout_and_needs_an_effect() {
        let median = |judge: &Judge, effect| {
            let mut t: Vec<u64> = (0..15)
                .map(|seed| {
                    let run = generate(&scenario(20.0, effect, false), seed);
                    judge.first_rollback(&run).unwrap_or(u64::MAX)
                })
                .collect();
            t.sort_unstable();
            t[7]
        };
        let step = Effect::ErrorStep(5.0);
        let (ceiling, backout) = (
            median(&Judge::ceiling_default(), step),
            median(&Judge::backout_default(), step),
        );
        assert!(
            ceiling <= backout,
            "ceiling {ceiling} s, backout {backout} s"
        );
        // Told only that the step is one of four, the mixture needs more events than the SPRT.
        let set = median(&Judge::ceiling_told_the_set(), step);
        assert!(
            ceiling <= set,
            "told the effect {ceiling} s, the set {set} s"
        );
        assert!(
            ceiling >= DEFAULT_WARMUP_SECS,
            "counts before warm-up: {ceiling}"
        );
        // Told a x5 step that is not there, the SPRT still must not fire on healthy runs.
        for seed in 0..10 {
            let mut healthy = generate(&scenario(20.0, Effect::Nothing, true), seed);
            healthy.error_step = Some(5.0);
            assert_eq!(Judge::ceiling_default().first_rollback(&healthy), None);
            assert_eq!(Judge::ceiling_told_the_set().first_rollback(&healthy), None);
        }
    }

    #[test]
    fn no_traffic_rolls_back_flagger_but_not_backout() {
        let run = generate(&scenario(0.05, Effect::Nothing, true), 2);
        assert_eq!(Judge::backout_default().first_rollback(&run), None);
        assert!(Judge::Flagger.first_rollback(&run).is_some());
    }

    #[test]
    fn a_shared_dependency_incident_is_not_blamed_on_the_canary() {
        let effect = Effect::SharedIncident {
            factor: 10.0,
            from: 1200,
            to: 1800,
        };
        for seed in 0..5 {
            let run = generate(&scenario(20.0, effect, true), seed);
            assert_eq!(Judge::backout_default().first_rollback(&run), None);
            // An absolute success-rate rule cannot tell the two apart.
            assert!(Judge::Flagger.first_rollback(&run).is_some());
        }
    }

    #[test]
    fn shared_incidents_crossing_the_levels_do_not_roll_back_the_recommended_policy() {
        let effect = Effect::SharedIncident {
            factor: 20.0,
            from: 1200,
            to: 1800,
        };
        let recommended = Judge::with_policies(Vec::new())
            .into_iter()
            .find(|j| j.name().starts_with("recommended"))
            .unwrap();
        for seed in 0..5 {
            let run = generate(&scenario(20.0, effect, true), seed);
            assert_eq!(recommended.first_rollback(&run), None, "seed {seed}");
            assert!(Judge::Flagger.first_rollback(&run).is_some());
        }
    }

    #[test]
    fn gaps_resets_and_a_down_target_do_not_roll_back_backout() {
        let s = crate::quality::scenario::catalogue()
            .into_iter()
            .find(|s| s.missing_data)
            .unwrap();
        for seed in 0..5 {
            let run = generate(&s, seed);
            assert_eq!(Judge::backout_default().first_rollback(&run), None);
            assert!(Judge::Argo.first_rollback(&run).is_some());
        }
    }

    #[test]
    fn kayenta_passes_sparse_errors_against_a_zero_baseline() {
        let mut canary = vec![0.0; 20];
        canary.extend([0.05, 0.1, 0.05, 0.02, 0.04]);
        assert!(matches!(kayenta_classify(&canary, &[0.0; 25]), Class::Pass));
    }
}
