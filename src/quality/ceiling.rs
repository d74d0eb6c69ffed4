//! The ceiling judges: what no valid sequential test on these data can beat, because they are
//! told what a real rule cannot know.
//!
//! Why two: the SPRT told the run's true error multiplier needs the fewest events of any test
//! with the same error bound (Wald), so its row bounds every rule. A rule that must catch a x1.5
//! step and a x20 one pays for not knowing which it faces; the mixture of SPRTs told the
//! benchmark's four steps, equally likely, but not which one, measures the least such a rule
//! pays when it favours none of them.

use super::promql::{instant, sum};
use super::scenario::{catalogue, Counter, Effect, Run, DAY_SECS};
use crate::sample::{Millis, Track};
use crate::stats::detector::BLOCK_MS;
use crate::stats::mixture::log_mean_exp;
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
    let effects: Vec<f64> = match told {
        Told::Effect => vec![effect],
        Told::Set(set) => set.iter().copied().filter(|f| *f > cfg.margin).collect(),
    };
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
            return at > warmup_secs && log_mean_exp(&llr) >= cusum_threshold;
        }
        if at < warmup_secs {
            add(&mut warmup_llr);
            log_mean_exp(&warmup_llr) >= warmup_threshold
        } else if at == warmup_secs {
            // backout starts counting at this poll; the interval before it is warm-up's.
            false
        } else {
            add(&mut llr);
            log_mean_exp(&llr) >= (1.0 / cfg.alpha).ln()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
