//! Anytime-valid change detection for regressions that start late in a long canary: a mixture
//! Shiryaev-Roberts e-detector (Shin, Ramdas & Rinaldo, "E-detectors: a nonparametric framework
//! for sequential change detection", 2023) on the same conditional-binomial likelihood ratios
//! as the sequential test.
//!
//! **Why.** The sequential test counts from the end of warm-up; on a canary that has been
//! healthy for hours, that evidence points the other way and a regression must first outweigh
//! it (measured: x5 at 2 canary req/s caught 270 s after an onset at the start, 510 s twenty
//! minutes in, 630 s three hours in with hourly restarts). A change detector's delay does not
//! depend on how long the canary was healthy.
//!
//! **Statistic.** Each poll brings new counts: `x` canary and `y` stable events among `c` and
//! `s` new requests. For a rate ratio `r` the canary's share of the new events is
//! `theta(r) = r c / (r c + s)`, and the poll's likelihood ratio of `r` against the margin `m` is
//!
//! ```text
//! lambda_r = (theta(r) / theta(m))^x * ((1 - theta(r)) / (1 - theta(m)))^y
//! ```
//!
//! For `r > m` its mean is at most 1 under every rate ratio `<= m` (the argument of
//! docs/statistics.md, section 1), so it is an e-value for the poll. The detector starts a new
//! product of them once per [`BLOCK_MS`] (at the first poll of each minute) and keeps, per
//! alternative, the Shiryaev-Roberts sum of all products so far:
//! `R_n = (R_{n-1} + start_n) * lambda_n`. The statistic is the average of `R` over a finite grid
//! of alternatives ([`ALTERNATIVES`]): O(grid) work and memory per poll, whatever the length.
//!
//! **Guarantee.** Let `S_N` be the number of starts up to poll `N`. Under any rate ratio `<= m`,
//! `G_n = R_n + (S_N - S_n)` is a nonnegative supermartingale for `n <= N` starting at `S_N`
//! (`E[R_n | past] <= R_{n-1} + start_n`), so by Ville's inequality
//!
//! ```text
//! P(R_n >= A for some n <= N) <= S_N / A.
//! ```
//!
//! With `A = S_H / alpha_d` (`S_H` the starts in a horizon `H`, one per minute), false alarms
//! within `H` are at most `alpha_d` however often the daemon polls (starts are per minute, not
//! per poll); after `H` the bound grows linearly (`alpha_d * t / H`), and the average run length
//! to a false alarm is at least `A` minutes (optional stopping on `R_n - S_n`). Mixtures over the
//! grid keep both properties. A mixture CUSUM (max instead of sum over starts) has the same
//! guarantee and is never faster, so the sum it is.

use serde::{Deserialize, Serialize};

/// A new start of the detector once a minute: poll-rate independent, and a regression is never
/// more than a minute of healthy data away from a start.
pub const BLOCK_MS: i64 = 60_000;

/// Rate ratios (canary over stable) the mixture is made of; those at or below the margin are
/// dropped. Log-spaced from a moderate to a hard regression: a poll's evidence for the wrong
/// one is still evidence, and the average costs at most ln(6) = 1.8 nats against the best.
pub const ALTERNATIVES: [f64; 6] = [1.5, 2.0, 3.0, 5.0, 10.0, 30.0];

/// One poll's new counts on both tracks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Increment {
    pub canary_events: f64,
    pub canary_total: f64,
    pub stable_events: f64,
    pub stable_total: f64,
}

/// The e-detector's state: ln of the Shiryaev-Roberts statistic per alternative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    margin: f64,
    ratios: Vec<f64>,
    log_sr: Vec<f64>,
    starts: u64,
}

impl Detector {
    /// A detector against "the canary is at most `margin` times worse".
    pub fn new(margin: f64) -> Self {
        let mut ratios: Vec<f64> = ALTERNATIVES.into_iter().filter(|r| *r > margin).collect();
        if ratios.is_empty() {
            ratios.push(2.0 * margin);
        }
        let n = ratios.len();
        Detector {
            margin,
            ratios,
            log_sr: vec![f64::NEG_INFINITY; n],
            starts: 0,
        }
    }

    /// The alternatives (rate ratios) in the mixture.
    pub fn ratios(&self) -> &[f64] {
        &self.ratios
    }

    /// How many products have been started.
    pub fn starts(&self) -> u64 {
        self.starts
    }

    /// Folds in one poll; `start` begins a new product with this poll (the first of a block).
    /// Increments without requests on either track carry no evidence and only count the start.
    pub fn update(&mut self, inc: Increment, start: bool) {
        if start {
            self.starts += 1;
        }
        let usable = [
            inc.canary_events,
            inc.canary_total,
            inc.stable_events,
            inc.stable_total,
        ]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0)
            && inc.canary_total > 0.0
            && inc.stable_total > 0.0;
        for (log_r, ratio) in self.log_sr.iter_mut().zip(&self.ratios) {
            let prior = if start {
                log_add_exp(*log_r, 0.0)
            } else {
                *log_r
            };
            let step = if usable {
                log_likelihood_ratio(inc, *ratio, self.margin)
            } else {
                0.0
            };
            *log_r = prior + step;
        }
    }

    /// ln of the statistic: the grid average of the Shiryaev-Roberts sums.
    pub fn log_statistic(&self) -> f64 {
        let max = self
            .log_sr
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return f64::NEG_INFINITY;
        }
        let sum: f64 = self.log_sr.iter().map(|l| (l - max).exp()).sum();
        max + sum.ln() - (self.log_sr.len() as f64).ln()
    }
}

/// The alarm threshold `A` for false alarms at most `alpha` within `horizon_ms`: the starts in
/// the horizon (one per block, plus the first) over alpha.
pub fn threshold(horizon_ms: i64, alpha: f64) -> f64 {
    let starts = (horizon_ms.max(0) as f64 / BLOCK_MS as f64).ceil() + 1.0;
    starts / alpha
}

/// ln of one poll's likelihood ratio of rate ratio `ratio` against `margin`.
fn log_likelihood_ratio(inc: Increment, ratio: f64, margin: f64) -> f64 {
    let share = |r: f64| r * inc.canary_total / (r * inc.canary_total + inc.stable_total);
    let (t1, t0) = (share(ratio), share(margin));
    let canary = if inc.canary_events > 0.0 {
        inc.canary_events * (t1 / t0).ln()
    } else {
        0.0
    };
    let stable = if inc.stable_events > 0.0 {
        inc.stable_events * ((1.0 - t1) / (1.0 - t0)).ln()
    } else {
        0.0
    };
    canary + stable
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Poisson by multiplication (Knuth): the means here are a few events.
    fn poisson(rng: &mut StdRng, lambda: f64) -> f64 {
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0.0, rng.random::<f64>());
        while p > limit {
            k += 1.0;
            p *= rng.random::<f64>();
        }
        k
    }

    /// One minute at 120 canary and 1080 stable requests, stable errors 0.5%, the canary's
    /// `factor` times that, drawn from `rng`.
    fn a_minute(rng: &mut StdRng, factor: f64) -> Increment {
        Increment {
            canary_events: poisson(rng, 120.0 * 0.005 * factor),
            canary_total: 120.0,
            stable_events: poisson(rng, 1080.0 * 0.005),
            stable_total: 1080.0,
        }
    }

    fn inc(canary_events: f64, stable_events: f64) -> Increment {
        Increment {
            canary_events,
            canary_total: 100.0,
            stable_events,
            stable_total: 100.0,
        }
    }

    #[test]
    fn the_recurrence_matches_values_computed_by_hand() {
        // Margin 1 and equal traffic: theta0 = 1/2. Alternative 3: theta1 = 3/4, so one canary
        // event multiplies by 3/2 and one stable event by 1/2.
        let mut d = Detector {
            margin: 1.0,
            ratios: vec![3.0],
            log_sr: vec![f64::NEG_INFINITY],
            starts: 0,
        };
        d.update(inc(2.0, 0.0), true); // R = (0 + 1) * 9/4
        assert!((d.log_statistic().exp() - 2.25).abs() < 1e-12);
        d.update(inc(0.0, 1.0), false); // R = 2.25 * 1/2
        assert!((d.log_statistic().exp() - 1.125).abs() < 1e-12);
        d.update(inc(1.0, 0.0), true); // R = (1.125 + 1) * 3/2
        assert!((d.log_statistic().exp() - 3.1875).abs() < 1e-12);
        assert_eq!(d.starts(), 2);
        // No requests on a track: no evidence, the start still counts.
        d.update(Increment::default(), true);
        assert!((d.log_statistic().exp() - 4.1875).abs() < 1e-12);
    }

    #[test]
    fn the_grid_is_averaged_and_keeps_only_alternatives_above_the_margin() {
        let d = Detector::new(1.2);
        assert_eq!(d.ratios(), &ALTERNATIVES);
        assert_eq!(Detector::new(40.0).ratios(), &[80.0]);
        let mut two = Detector {
            margin: 1.0,
            ratios: vec![3.0, 1.0 / 0.5 * 1.5],
            log_sr: vec![f64::NEG_INFINITY; 2],
            starts: 0,
        };
        // Alternatives 3 (x 3/2 per canary event) and 3 again: the average is the same.
        two.update(inc(1.0, 0.0), true);
        assert!((two.log_statistic().exp() - 1.5).abs() < 1e-12);
        assert_eq!(threshold(24 * 3_600_000, 0.005), 1441.0 / 0.005);
    }

    /// Under the null (rate ratio exactly at the margin), the average run length to a false
    /// alarm at threshold A is at least A starts, and the share of false alarms within N
    /// starts is at most N / A. Fixed seed; counts as a 10% canary at 2 req/s would see them,
    /// one poll per start.
    #[test]
    fn false_alarms_stay_within_the_horizon_bound_at_the_worst_null() {
        let margin = 1.2;
        let (starts, a) = (200_u64, 2000.0_f64);
        let mut rng = StdRng::seed_from_u64(11);
        let runs = 400;
        let mut alarms = 0;
        let mut run_lengths = Vec::new();
        for _ in 0..runs {
            let mut d = Detector::new(margin);
            let mut fired = None;
            for n in 1..=starts * 20 {
                // The canary's errors exactly `margin` times the stable's.
                let step = a_minute(&mut rng, margin);
                d.update(step, true);
                if d.log_statistic() >= a.ln() {
                    fired = Some(n);
                    break;
                }
            }
            if fired.is_some_and(|n| n <= starts) {
                alarms += 1;
            }
            run_lengths.push(fired.unwrap_or(starts * 20) as f64);
        }
        let rate = f64::from(alarms) / f64::from(runs);
        assert!(rate <= starts as f64 / a, "false alarms {rate}");
        // Censored at 20 A / 10 = 4000 starts, the mean run length is still above A.
        let arl = run_lengths.iter().sum::<f64>() / run_lengths.len() as f64;
        assert!(arl >= a, "average run length {arl} < {a}");
    }

    #[test]
    fn delay_does_not_grow_with_the_healthy_time_before_the_change() {
        // A x5 step at 2 canary req/s and 0.5% errors, after 10 or 1000 healthy minutes.
        let delay = |healthy_minutes: u64, seed: u64| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut d = Detector::new(1.2);
            let a = threshold(24 * 3_600_000, 0.005).ln();
            for minute in 0.. {
                let factor = if minute < healthy_minutes { 1.0 } else { 5.0 };
                let step = a_minute(&mut rng, factor);
                d.update(step, true);
                if minute >= healthy_minutes && d.log_statistic() >= a {
                    return minute - healthy_minutes + 1;
                }
            }
            unreachable!()
        };
        let median = |healthy| {
            let mut v: Vec<u64> = (0..41).map(|s| delay(healthy, s)).collect();
            v.sort_unstable();
            v[20]
        };
        let (early, late) = (median(10), median(1000));
        assert!(late <= early + 1, "{early} min vs {late} min");
        assert!(late <= 15, "{late} min");
    }
}
