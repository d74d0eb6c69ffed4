//! The price of not knowing the effect, computed on the expected path.
//!
//! Why: the ceiling row is an SPRT told the run's multiplier; a rule that must catch x1.5 and
//! x20 alike pays for not knowing which it faces. On the expected path of a step (the canary's
//! share of the errors at its true value theta, the total `n` growing), a likelihood-ratio
//! mixture's log evidence is exact arithmetic, so the errors it needs before it crosses
//! `ln(1/alpha)` can be solved for. Divided by the told SPRT's, that ratio depends only on the
//! effect, the canary's traffic share, the margin and alpha: not on the traffic rate or the
//! baseline, which only scale time. That gives a frontier the benchmark's medians cannot: the
//! least worst-case ratio any mixture over a range of effects can reach (the minimax prior,
//! found here by multiplicative weights), and what a mixture that reaches a lower ratio at one
//! effect pays at the others.
//!
//! On the expected path the observed share is the maximum-likelihood share, so no component
//! out-gains the told SPRT: every ratio is at least 1, and 1 only for a point prior at the
//! truth. The medians of noisy runs sit a little below these paths for mixtures (a convex
//! average of noisy likelihood ratios crosses sooner than the average path), so the benchmark's
//! measured rows, not these ratios, are what targets are judged on.

mod report;

pub use report::{for_scenario, report};

use crate::stats::mixture::{log_bayes_factor, log_weighted_mean_exp, Side};
use crate::stats::StatsError;

/// Where the test looks: the canary's share of traffic, the margin the null allows and alpha.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub share: f64,
    pub margin: f64,
    pub alpha: f64,
}

impl Geometry {
    /// The canary's share of all errors when its error rate is `effect` times the stable's.
    pub fn theta(&self, effect: f64) -> f64 {
        effect * self.share / (effect * self.share + 1.0 - self.share)
    }

    fn threshold(&self) -> f64 {
        (1.0 / self.alpha).ln()
    }
}

/// What a test believes about the effect before it sees any errors.
#[derive(Debug, Clone, PartialEq)]
pub enum Prior {
    /// Point alternatives `(effect, weight)`: the mean of their SPRTs' likelihood ratios
    /// against the margin (weights are normalised).
    Points(Vec<(f64, f64)>),
    /// backout's one-sided Beta-binomial mixture over the canary's share, averaged over these
    /// concentrations (`stats::mixture`).
    Beta(Vec<f64>),
}

/// Kullback-Leibler divergence of Bernoulli(q) from Bernoulli(p).
fn kl(p: f64, q: f64) -> f64 {
    let term = |a: f64, b: f64| if a > 0.0 { a * (a / b).ln() } else { 0.0 };
    term(p, q) + term(1.0 - p, 1.0 - q)
}

/// Log evidence per error, on the expected path of `effect`, of the SPRT told `alt`: its log
/// likelihood ratio against the margin grows by `KL(t||t0) - KL(t||t_alt)` per error.
fn drift(g: &Geometry, effect: f64, alt: f64) -> f64 {
    let (t, t0) = (g.theta(effect), g.theta(g.margin));
    kl(t, t0) - kl(t, g.theta(alt))
}

impl Prior {
    /// The mixture's log evidence after `n` errors on the expected path of `effect`.
    pub fn log_evidence(&self, g: &Geometry, effect: f64, n: f64) -> Result<f64, StatsError> {
        match self {
            Prior::Points(points) => {
                let total: f64 = points.iter().map(|p| p.1).sum();
                if total <= 0.0 {
                    return Err(StatsError::NoConcentration);
                }
                let (log_weights, terms): (Vec<f64>, Vec<f64>) = points
                    .iter()
                    .filter(|(_, w)| *w > 0.0)
                    .map(|(alt, w)| ((w / total).ln(), n * drift(g, effect, *alt)))
                    .unzip();
                Ok(log_weighted_mean_exp(&log_weights, &terms))
            }
            Prior::Beta(concentrations) => log_bayes_factor(
                g.theta(effect) * n,
                n,
                g.theta(g.margin),
                concentrations,
                Side::Above,
            ),
        }
    }
}

/// Errors the SPRT told `effect` needs on its expected path: `ln(1/alpha) / KL(t||t0)`.
pub fn told_errors(g: &Geometry, effect: f64) -> f64 {
    g.threshold() / drift(g, effect, effect)
}

/// Ratios above this are reported as never (the prior misses the effect).
pub const MAX_RATIO: f64 = 50.0;

/// Errors the prior's test needs before its evidence first reaches `ln(1/alpha)`, as a
/// multiple of the told SPRT's; `None` beyond [`MAX_RATIO`]. A geometric scan from 1 (no
/// test crosses sooner, above) finds the first crossing, bisection refines it.
pub fn ratio(prior: &Prior, g: &Geometry, effect: f64) -> Result<Option<f64>, StatsError> {
    let told = told_errors(g, effect);
    let crossed = |r: f64| -> Result<bool, StatsError> {
        Ok(prior.log_evidence(g, effect, r * told)? >= g.threshold() - 1e-9)
    };
    let (mut below, mut above) = (1.0, 1.0);
    while !crossed(above)? {
        below = above;
        above *= 1.01;
        if above > MAX_RATIO {
            return Ok(None);
        }
    }
    if above == 1.0 {
        return Ok(Some(1.0));
    }
    for _ in 0..40 {
        let mid = 0.5 * (below + above);
        if crossed(mid)? {
            above = mid;
        } else {
            below = mid;
        }
    }
    Ok(Some(above))
}

/// `points` effects log-spaced from `lo` to `hi`, both included.
pub fn log_grid(lo: f64, hi: f64, points: usize) -> Vec<f64> {
    let steps = points.saturating_sub(1).max(1) as f64;
    (0..points.max(2))
        .map(|i| lo * (hi / lo).powf(i as f64 / steps))
        .collect()
}

/// The grid the minimax mixtures are computed on: effects 10% apart from `lo` to `hi`, close
/// enough that no effect between two points is served much worse than the points.
pub fn range_grid(lo: f64, hi: f64) -> Vec<f64> {
    let points = ((hi / lo).ln() / 1.1_f64.ln()).ceil() as usize + 1;
    log_grid(lo, hi, points)
}

/// A mixture over a grid of effects and its worst ratio over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimax {
    /// `(effect, weight)`: the point prior ([`Prior::Points`]).
    pub points: Vec<(f64, f64)>,
    /// The largest of `ratio / goal` over the grid.
    pub worst: f64,
    /// The smallest of `ratio / goal` over the grid: near `worst` when the prior equalises.
    pub least: f64,
}

/// The point mixture over `grid` whose worst `ratio / goal` over the grid is least, where
/// `goal[j]` is what effect `j` is asked for (all 1: the plain minimax). Multiplicative weights
/// on the game "the test picks a prior, the world picks the effect": weight moves towards the
/// effects the current prior serves worst; the best prior seen is kept.
pub fn minimax(
    g: &Geometry,
    grid: &[f64],
    goal: &[f64],
    rounds: usize,
) -> Result<Minimax, StatsError> {
    let mut weights = vec![1.0 / grid.len() as f64; grid.len()];
    let mut best: Option<Minimax> = None;
    for round in 0..rounds.max(1) {
        let points: Vec<(f64, f64)> = grid.iter().copied().zip(weights.clone()).collect();
        let prior = Prior::Points(points.clone());
        let scores = grid
            .iter()
            .zip(goal)
            .map(|(e, goal)| Ok(ratio(&prior, g, *e)?.unwrap_or(MAX_RATIO) / goal))
            .collect::<Result<Vec<f64>, StatsError>>()?;
        let worst = scores.iter().copied().fold(0.0, f64::max);
        let least = scores.iter().copied().fold(f64::INFINITY, f64::min);
        if best.as_ref().is_none_or(|b| worst < b.worst) {
            best = Some(Minimax {
                points,
                worst,
                least,
            });
        }
        // A step that shrinks with the rounds settles the weights instead of cycling.
        let eta = 8.0 / (1.0 + round as f64).sqrt();
        weights
            .iter_mut()
            .zip(&scores)
            .for_each(|(w, s)| *w *= (eta * (s / worst - 1.0)).exp());
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
    }
    best.ok_or(StatsError::NoConcentration)
}

/// The plain minimax over `lo..hi` (effects 10% apart, every effect asked the same): the
/// `(effect, weight)` points of the least worst-case mixture.
pub fn minimax_over(g: &Geometry, lo: f64, hi: f64) -> Result<Vec<(f64, f64)>, StatsError> {
    let grid = range_grid(lo, hi);
    Ok(minimax(g, &grid, &vec![1.0; grid.len()], ROUNDS)?.points)
}

/// Rounds of multiplicative weights: the worst ratio has settled to 0.01 well before.
const ROUNDS: usize = 150;

/// The point mixture over `range` whose test needs at most `errors` at effect `at` and, within
/// that, the fewest errors (relative to the told SPRT) at its worst other effect: the least a
/// test pays elsewhere for favouring `at`. Bisection on what the others are asked for.
pub fn favouring(
    g: &Geometry,
    range: (f64, f64),
    at: f64,
    errors: f64,
) -> Result<Prior, StatsError> {
    let mut grid = range_grid(range.0, range.1);
    grid.push(at);
    grid.sort_by(f64::total_cmp);
    grid.dedup();
    let goal_at = errors / told_errors(g, at);
    let solve = |others: f64| -> Result<Minimax, StatsError> {
        let goal: Vec<f64> = grid
            .iter()
            .map(|e| if *e == at { goal_at } else { others })
            .collect();
        minimax(g, &grid, &goal, ROUNDS)
    };
    let (mut below, mut above) = (1.0, MAX_RATIO);
    let mut found = solve(above)?;
    for _ in 0..20 {
        let mid = (below * above).sqrt();
        let m = solve(mid)?;
        if m.worst <= 1.0 {
            (above, found) = (mid, m);
        } else {
            below = mid;
        }
    }
    Ok(Prior::Points(found.points))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(alpha: f64) -> Geometry {
        Geometry {
            share: 0.1,
            margin: 1.2,
            alpha,
        }
    }

    #[test]
    fn the_told_sprt_needs_ln_one_over_alpha_over_the_divergence_by_hand() {
        // Share 0.1, margin 1.2: t0 = 0.12 / 1.02; x5: t = 0.5 / 1.4.
        let (t0, t): (f64, f64) = (0.12 / 1.02, 0.5 / 1.4);
        let kl = t * (t / t0).ln() + (1.0 - t) * ((1.0 - t) / (1.0 - t0)).ln();
        let want = 100.0_f64.ln() / kl;
        assert!((told_errors(&geometry(0.01), 5.0) - want).abs() < 1e-9);
        assert!((want - 23.86).abs() < 0.01, "{want}");
    }

    #[test]
    fn a_point_prior_at_the_truth_is_the_told_sprt() {
        let g = geometry(0.01);
        for effect in [1.5, 5.0, 20.0] {
            let r = ratio(&Prior::Points(vec![(effect, 1.0)]), &g, effect).unwrap();
            assert_eq!(r, Some(1.0), "x{effect}");
        }
    }

    #[test]
    fn no_prior_crosses_before_the_told_sprt() {
        let g = geometry(0.0075);
        let priors = [
            Prior::Beta(vec![1.0, 10.0, 100.0, 1000.0]),
            Prior::Points(vec![(1.5, 1.0), (2.0, 1.0), (5.0, 1.0), (20.0, 1.0)]),
        ];
        for prior in &priors {
            for effect in [1.3, 2.0, 3.0, 5.0, 50.0] {
                let r = ratio(prior, &g, effect).unwrap();
                assert!(r.is_none_or(|r| r > 1.0), "{prior:?} x{effect}: {r:?}");
            }
        }
        // backout's prior covers every effect above the margin; the set's misses x1.3: none
        // of its four alternatives gains on x1.3's path.
        assert!(ratio(&priors[0], &g, 1.3).unwrap().is_some());
        assert_eq!(ratio(&priors[1], &g, 1.3).unwrap(), None);
    }

    #[test]
    fn two_equal_points_cross_where_the_mean_of_their_ratios_reaches_one_over_alpha() {
        // At the crossing n, (exp(n a) + exp(n b)) / 2 = 1 / alpha, a and b the two drifts.
        let g = geometry(0.01);
        let prior = Prior::Points(vec![(2.0, 1.0), (20.0, 1.0)]);
        let r = ratio(&prior, &g, 5.0).unwrap().unwrap();
        let n = r * told_errors(&g, 5.0);
        let (a, b) = (drift(&g, 5.0, 2.0), drift(&g, 5.0, 20.0));
        let mean = 0.5 * ((n * a).exp() + (n * b).exp());
        assert!((mean - 100.0).abs() < 1e-6, "{mean}");
    }

    #[test]
    fn a_smaller_alpha_amortises_the_price_of_the_prior() {
        // The prior's cost is a fixed number of nats; the threshold grows with ln(1/alpha).
        let beta = Prior::Beta(vec![1.0, 10.0, 100.0, 1000.0]);
        let at = |alpha| ratio(&beta, &geometry(alpha), 5.0).unwrap().unwrap();
        assert!(at(0.001) < at(0.01));
    }

    #[test]
    fn the_minimax_equalises_and_beats_the_uniform_prior_at_its_worst() {
        let g = geometry(0.01);
        let grid = log_grid(1.5, 20.0, 7);
        let goal = vec![1.0; grid.len()];
        let m = minimax(&g, &grid, &goal, 60).unwrap();
        let uniform = Prior::Points(grid.iter().map(|e| (*e, 1.0)).collect());
        let uniform_worst = grid
            .iter()
            .map(|e| ratio(&uniform, &g, *e).unwrap().unwrap())
            .fold(0.0, f64::max);
        assert!(m.worst <= uniform_worst, "{} {uniform_worst}", m.worst);
        assert!(m.worst - m.least < 0.05, "{} {}", m.worst, m.least);
    }

    #[test]
    fn asking_less_at_one_effect_costs_more_at_the_others() {
        let g = geometry(0.01);
        let grid = log_grid(1.5, 20.0, 7);
        let plain = minimax(&g, &grid, &vec![1.0; grid.len()], 60).unwrap();
        let x5 = grid.iter().position(|e| (e - 5.0).abs() < 1.0).unwrap();
        let mut goal = vec![1.0; grid.len()];
        goal[x5] = 0.9;
        let favoured = minimax(&g, &grid, &goal, 60).unwrap();
        let others = |m: &Minimax| {
            grid.iter()
                .enumerate()
                .filter(|(j, _)| *j != x5)
                .map(|(_, e)| {
                    ratio(&Prior::Points(m.points.clone()), &g, *e)
                        .unwrap()
                        .unwrap()
                })
                .fold(0.0, f64::max)
        };
        let at_x5 = ratio(&Prior::Points(favoured.points.clone()), &g, grid[x5])
            .unwrap()
            .unwrap();
        assert!(
            at_x5
                < ratio(&Prior::Points(plain.points.clone()), &g, grid[x5])
                    .unwrap()
                    .unwrap()
        );
        assert!(others(&favoured) > others(&plain));
    }
}
