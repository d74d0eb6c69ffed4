//! The ceiling judges: what no valid sequential test on these data can beat, because they are
//! told what a real rule cannot know.
//!
//! Why three: the SPRT told the run's true error multiplier needs the fewest events of any test
//! with the same error bound (Wald), so its row bounds every rule. A rule that must catch a x1.5
//! step and a x20 one pays for not knowing which it faces; the mixture of SPRTs told the
//! benchmark's four steps, equally likely, but not which one, measures what such a rule pays
//! when it favours none of them; and the minimax mixture over their range, at the alpha
//! backout's test has beside the change detector, the least any rule that covers the range and
//! keeps the late-onset guarantee can pay at its worst (`quality::frontier`).

use super::frontier::{minimax_over, range_grid, Geometry};
use super::judges::{Judge, DEFAULT_POLL_SECS, DEFAULT_WARMUP_SECS};
use super::promql::{instant, sum};
use super::scenario::{catalogue, Counter, Effect, Run, CANARY_SHARE, DAY_SECS};
use crate::decision::main_alpha;
use crate::sample::{Millis, Track};
use crate::stats::detector::BLOCK_MS;
use crate::stats::mixture::log_weighted_mean_exp;
use crate::stats::sequential::SequentialConfig;

/// The error steps of the benchmark's scenarios (`scenario::catalogue`), each once, smallest
/// first.
pub fn error_steps() -> Vec<f64> {
    let mut steps: Vec<f64> = catalogue()
        .iter()
        .filter_map(|s| match s.effect {
            Effect::ErrorStep(f) => Some(f),
            _ => None,
        })
        .collect();
    steps.sort_by(f64::total_cmp);
    steps.dedup();
    steps
}

/// What a ceiling judge is told about the canary's error step.
#[derive(Debug, Clone, PartialEq)]
pub enum Told {
    /// The run's true multiplier: Wald's SPRT.
    Effect,
    /// Only that it is one of these multipliers, equally likely: the test is the mean of their
    /// SPRTs' likelihood ratios (a mixture, valid at the same alpha by Ville's inequality).
    Set(Vec<f64>),
    /// Only the range of the multipliers: the mixture of SPRTs over `(effect, weight)` points
    /// that `quality::frontier::minimax` finds least costly at its worst over the range.
    Range {
        lo: f64,
        hi: f64,
        points: Vec<(f64, f64)>,
    },
}

impl Told {
    /// Told only the range of `steps`: the minimax mixture over effects 10% apart from the least
    /// to the largest, for the benchmark's traffic split, `margin` and `alpha`.
    pub fn range(steps: &[f64], margin: f64, alpha: f64) -> Told {
        let lo = steps.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = steps.iter().copied().fold(0.0, f64::max);
        let g = Geometry {
            share: CANARY_SHARE,
            margin,
            alpha,
        };
        // Points never fail to price; were they to, the uniform grid is still a valid mixture.
        let points = minimax_over(&g, lo, hi)
            .unwrap_or_else(|_| range_grid(lo, hi).iter().map(|e| (*e, 1.0)).collect());
        Told::Range { lo, hi, points }
    }

    /// The effects above `margin` the test mixes, with their log weights (summing to 1).
    fn mixture(&self, effect: f64, margin: f64) -> Vec<(f64, f64)> {
        let points: Vec<(f64, f64)> = match self {
            Told::Effect => vec![(effect, 1.0)],
            Told::Set(set) => set.iter().map(|e| (*e, 1.0)).collect(),
            Told::Range { points, .. } => points.clone(),
        };
        let points: Vec<(f64, f64)> = points
            .into_iter()
            .filter(|(e, w)| *e > margin && *w > 0.0)
            .collect();
        let total: f64 = points.iter().map(|p| p.1).sum();
        points
            .into_iter()
            .map(|(e, w)| (e, (w / total).ln()))
            .collect()
    }
}

/// One poll's new events: canary errors and requests, stable errors and requests.
type Increment = [f64; 4];

/// The log likelihood ratio of "errors multiplied by `effect`" against "by `margin`", on the
/// binomial split of one poll's new errors given the traffic split.
fn log_ratio(d: &Increment, effect: f64, margin: f64) -> f64 {
    let [canary_errors, canary_total, stable_errors, stable_total] = *d;
    if canary_total <= 0.0 || stable_total <= 0.0 {
        return 0.0;
    }
    let share = |m: f64| m * canary_total / (m * canary_total + stable_total);
    let (t0, t1) = (share(margin), share(effect));
    canary_errors * (t1 / t0).ln() + stable_errors * ((1.0 - t1) / (1.0 - t0)).ln()
}

/// The SPRT (or the mixture of SPRTs, [`Told::Set`]) of "errors multiplied by the step"
/// against "by the margin". Like backout it has a warm-up test (counts since the start, at
/// `warmup_alpha`, by default alpha/1000 as in a policy) and then counts from the end of warm-up
/// at alpha. It is not told the onset: on a late onset it is the CUSUM told the effect, with the
/// change detector's guarantee (a start per minute, false alarms at most alpha within a day) but
/// the whole alpha.
pub fn ceiling(
    run: &Run,
    cfg: &SequentialConfig,
    poll_secs: u64,
    warmup_secs: u64,
    warmup_alpha: Option<f64>,
    told: &Told,
) -> Option<u64> {
    let warmup_threshold = match warmup_alpha.unwrap_or(cfg.alpha / 1000.0) {
        a if a > 0.0 => (1.0 / a).ln(),
        _ => f64::INFINITY,
    };
    let effect = run.error_step.filter(|f| *f > cfg.margin)?;
    let (effects, log_weights): (Vec<f64>, Vec<f64>) =
        told.mixture(effect, cfg.margin).into_iter().unzip();
    let count = |track, c, at| sum(run.series(track, c).map(|s| instant(s, at))).unwrap_or(0.0);
    let every = poll_secs.max(1);
    let mut previous: Option<Increment> = None;
    let (mut warmup_llr, mut llr) = (vec![0.0; effects.len()], vec![0.0; effects.len()]);
    // A late onset: the CUSUM told the effect, restarted at most once a minute, at the change
    // detector's threshold for a day with the whole alpha.
    let late = run.onset_secs > 0;
    let cusum_threshold = crate::stats::detector::threshold(
        Millis::try_from(DAY_SECS * 1000).unwrap_or(Millis::MAX),
        cfg.alpha,
    )
    .ln();
    let mut block = None;
    (0..=run.run_secs / every).map(|i| i * every).find(|&at| {
        let now = [
            count(Track::Canary, Counter::Errors, at),
            count(Track::Canary, Counter::Requests, at),
            count(Track::Stable, Counter::Errors, at),
            count(Track::Stable, Counter::Requests, at),
        ];
        let d: Option<Increment> =
            previous.map(|before| std::array::from_fn(|k| (now[k] - before[k]).max(0.0)));
        let steps: Vec<f64> = effects
            .iter()
            .map(|e| d.map_or(0.0, |d| log_ratio(&d, *e, cfg.margin)))
            .collect();
        previous = Some(now);
        let add = |acc: &mut Vec<f64>| acc.iter_mut().zip(&steps).for_each(|(a, s)| *a += s);
        if late {
            let minute = Millis::try_from(at * 1000).unwrap_or(Millis::MAX) / BLOCK_MS;
            if block.is_none_or(|b| minute > b) {
                block = Some(minute);
                llr.iter_mut().for_each(|l| *l = f64::max(*l, 0.0));
            }
            add(&mut llr);
            return at > warmup_secs
                && log_weighted_mean_exp(&log_weights, &llr) >= cusum_threshold;
        }
        if at < warmup_secs {
            add(&mut warmup_llr);
            log_weighted_mean_exp(&log_weights, &warmup_llr) >= warmup_threshold
        } else if at == warmup_secs {
            // backout starts counting at this poll; the interval before it is warm-up's.
            false
        } else {
            add(&mut llr);
            log_weighted_mean_exp(&log_weights, &llr) >= (1.0 / cfg.alpha).ln()
        }
    })
}

/// The ceiling judges' rows: told the effect, the set, or the range.
impl Judge {
    pub fn ceiling_default() -> Self {
        Judge::Ceiling {
            config: SequentialConfig::default(),
            poll_secs: DEFAULT_POLL_SECS,
            warmup_secs: DEFAULT_WARMUP_SECS,
            warmup_alpha: None,
            told: Told::Effect,
        }
    }

    /// The ceiling told only that the step is one of the benchmark's error steps above the
    /// margin, not which ([`Told::Set`]).
    pub fn ceiling_told_the_set() -> Self {
        Judge::Ceiling {
            config: SequentialConfig::default(),
            poll_secs: DEFAULT_POLL_SECS,
            warmup_secs: DEFAULT_WARMUP_SECS,
            warmup_alpha: None,
            told: Told::Set(error_steps()),
        }
    }

    /// The ceiling told only the range of the benchmark's error steps, not which: the minimax
    /// mixture over it (`quality::frontier`), at the alpha backout's test from warm-up has (the
    /// change detector takes the rest) and backout's warm-up alpha. What no test that keeps the
    /// late-onset guarantee and favours no effect of the range can beat by much.
    pub fn ceiling_told_the_range() -> Self {
        let default = SequentialConfig::default();
        let config = SequentialConfig {
            alpha: main_alpha(default.alpha, Some(1)),
            ..default.clone()
        };
        // The minimax takes a few hundred milliseconds; the judges are built more than once.
        static TOLD: std::sync::OnceLock<Told> = std::sync::OnceLock::new();
        let told = TOLD
            .get_or_init(|| Told::range(&error_steps(), config.margin, config.alpha))
            .clone();
        Judge::Ceiling {
            config,
            poll_secs: DEFAULT_POLL_SECS,
            warmup_secs: DEFAULT_WARMUP_SECS,
            warmup_alpha: Some(default.alpha / 1000.0),
            told,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::mixture::log_mean_exp;

    #[test]
    fn the_set_is_the_benchmarks_error_steps() {
        assert_eq!(error_steps(), [1.5, 2.0, 5.0, 20.0]);
    }

    #[test]
    fn the_mixtures_log_ratio_is_the_log_of_the_mean_ratio() {
        assert!((log_mean_exp(&[3.0_f64.ln()]) - 3.0_f64.ln()).abs() < 1e-12);
        // Likelihood ratios 1 and 3: the mixture's is 2.
        let l = log_mean_exp(&[0.0, 3.0_f64.ln()]);
        assert!((l - 2.0_f64.ln()).abs() < 1e-12, "{l}");
        // Far apart, no overflow: ~ the larger minus ln 2.
        let l = log_mean_exp(&[0.0, 1000.0]);
        assert!((l - (1000.0 - 2.0_f64.ln())).abs() < 1e-9, "{l}");
    }

    #[test]
    fn told_the_range_mixes_only_effects_of_the_range_above_the_margin() {
        let Told::Range { lo, hi, points } = Told::range(&error_steps(), 1.2, 0.0075) else {
            panic!("a range");
        };
        assert_eq!((lo, hi), (1.5, 20.0));
        assert!(points
            .iter()
            .all(|(e, w)| (1.5..=20.0001).contains(e) && *w >= 0.0));
        // The set's effects are told apart from the range's: x1.5 is in both, x1.3 in neither.
        let mix = Told::Range { lo, hi, points }.mixture(1.3, 1.2);
        let total: f64 = mix.iter().map(|(_, w)| w.exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert!(mix.iter().all(|(e, _)| *e >= 1.5));
    }

    #[test]
    fn one_polls_log_ratio_matches_the_binomial_split_by_hand() {
        // 10 canary and 90 stable requests; margin 1.2 gives the canary's share of errors
        // 12/102, x5 gives 50/140. Two canary errors and three stable ones:
        // 2 ln((50/140)/(12/102)) + 3 ln((90/140)/(90/102)).
        let d = [2.0, 10.0, 3.0, 90.0];
        let (t0, t1): (f64, f64) = (12.0 / 102.0, 50.0 / 140.0);
        let want = 2.0 * (t1 / t0).ln() + 3.0 * ((1.0 - t1) / (1.0 - t0)).ln();
        assert!((log_ratio(&d, 5.0, 1.2) - want).abs() < 1e-12);
        assert_eq!(log_ratio(&[1.0, 0.0, 1.0, 90.0], 5.0, 1.2), 0.0);
    }
}
