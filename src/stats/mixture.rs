//! Beta-binomial mixture Bayes factors: the e-values behind the sequential canary test.
//!
//! Conditional on `n` events in total, the canary's share `x` is Binomial(n, theta). Against the
//! point null theta0, the Bayes factor of a Beta(k*theta0, k*(1-theta0)) prior is
//!
//! ```text
//! BF_k = [B(a + x, b + n - x) / B(a, b)] / [theta0^x (1 - theta0)^(n - x)]
//! ```
//!
//! a nonnegative martingale under theta0 with mean 1, so by Ville's inequality
//! `P(sup_t BF >= 1/alpha) <= alpha`: the test may be polled any number of times. Averaging over
//! several concentrations `k` keeps the mean at 1 while covering small and large effects.
//!
//! One-sided versions restrict the prior to one side of theta0 (renormalised). For
//! `theta > theta0` every component likelihood ratio `L(theta)/L(theta0)` is a supermartingale
//! under any `theta' <= theta0` (its one-step mean is linear in `theta'`, equals 1 at theta0 and
//! grows with `theta'`), so the truncated mixture stays valid for the whole composite null
//! `theta <= theta0`. The truncation only rescales by posterior / prior tail mass:
//!
//! ```text
//! BF_k^+ = BF_k * P_post(theta > theta0) / P_prior(theta > theta0)
//! ```
//!
//! Everything is computed in log space with `ln_beta` and the regularised incomplete beta.

use super::{check_count, StatsError};
use serde::{Deserialize, Serialize};
use statrs::function::beta::{checked_beta_reg, checked_ln_beta};

/// Which departures from theta0 count as evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Only theta > theta0 (the canary is worse): a better canary never accumulates evidence.
    Above,
    /// Only theta < theta0.
    Below,
    /// Any departure (the classic two-sided mixture).
    Both,
}

/// Natural log of the concentration-averaged mixture Bayes factor for `x` of `n` events.
///
/// Counts are `f64` because Prometheus `increase()` extrapolates to fractions; the Beta
/// functions accept real arguments, so no rounding is needed.
pub fn log_bayes_factor(
    x: f64,
    n: f64,
    theta0: f64,
    concentrations: &[f64],
    side: Side,
) -> Result<f64, StatsError> {
    let x = check_count("events", x)?;
    let n = check_count("total", n)?;
    if x > n {
        return Err(StatsError::EventsExceedTotal {
            events: x,
            total: n,
        });
    }
    if !(theta0 > 0.0 && theta0 < 1.0) {
        return Err(StatsError::ThetaOutOfRange(theta0));
    }
    let ks: Vec<f64> = concentrations
        .iter()
        .copied()
        .filter(|k| k.is_finite() && *k > 0.0)
        .collect();
    if ks.is_empty() {
        return Err(StatsError::NoConcentration);
    }
    let log_null = x * theta0.ln() + (n - x) * (1.0 - theta0).ln();
    let mut terms = Vec::with_capacity(ks.len());
    for k in &ks {
        let a = k * theta0;
        let b = k * (1.0 - theta0);
        let log_marginal = ln_beta(a + x, b + n - x)? - ln_beta(a, b)?;
        let log_truncation = match side {
            Side::Both => 0.0,
            Side::Above => {
                log_upper_tail(a + x, b + n - x, theta0)? - log_upper_tail(a, b, theta0)?
            }
            Side::Below => {
                log_lower_tail(a + x, b + n - x, theta0)? - log_lower_tail(a, b, theta0)?
            }
        };
        terms.push(log_marginal + log_truncation - log_null);
    }
    Ok(log_mean_exp(&terms))
}

/// Anytime-valid upper confidence bound on theta from the two-sided mixture's confidence
/// sequence `{theta1 : BF(theta1) < 1/alpha}`.
///
/// Why this bound: the pass decision is polled as often as the fail decision, so a fixed-horizon
/// (Clopper-Pearson) bound would be optimistic after many looks; this one is not. With no events
/// at all it returns 1 (no information), never a made-up bound.
pub fn upper_bound(x: f64, n: f64, alpha: f64, concentrations: &[f64]) -> Result<f64, StatsError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(StatsError::AlphaOutOfRange(alpha));
    }
    let x = check_count("events", x)?;
    let n = check_count("total", n)?;
    if n <= 0.0 {
        return Ok(1.0);
    }
    let threshold = (1.0 / alpha).ln();
    let rejects = |theta: f64| -> Result<bool, StatsError> {
        Ok(log_bayes_factor(x, n, theta, concentrations, Side::Both)? >= threshold)
    };
    let mut lo = (x / n).clamp(1e-12, 1.0 - 1e-12);
    let mut hi = 1.0 - 1e-12;
    if !rejects(hi)? {
        return Ok(1.0);
    }
    // The likelihood ratio grows as theta1 moves away from the estimate, so the boundary is the
    // unique crossing on [x/n, 1); 60 halvings reach f64 resolution.
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if rejects(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

fn ln_beta(a: f64, b: f64) -> Result<f64, StatsError> {
    checked_ln_beta(a, b).map_err(|e| StatsError::Numeric(format!("ln_beta({a}, {b}): {e}")))
}

/// ln P(Theta > t) for Theta ~ Beta(a, b), via the symmetry I_{1-t}(b, a) = 1 - I_t(a, b)
/// so that small upper tails keep their precision.
fn log_upper_tail(a: f64, b: f64, t: f64) -> Result<f64, StatsError> {
    checked_beta_reg(b, a, 1.0 - t)
        .map(f64::ln)
        .map_err(|e| StatsError::Numeric(format!("beta_reg({b}, {a}, {}): {e}", 1.0 - t)))
}

fn log_lower_tail(a: f64, b: f64, t: f64) -> Result<f64, StatsError> {
    checked_beta_reg(a, b, t)
        .map(f64::ln)
        .map_err(|e| StatsError::Numeric(format!("beta_reg({a}, {b}, {t}): {e}")))
}

/// `ln(mean(exp(t)))` without overflow: the log of a mixture's average likelihood ratio.
pub fn log_mean_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY || terms.is_empty() {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    max + sum.ln() - (terms.len() as f64).ln()
}

/// `ln(sum(exp(log_weight + term)))`: the log of a weighted mixture's likelihood ratio, from
/// the log weights (summing to 1) and each component's log likelihood ratio.
pub fn log_weighted_mean_exp(log_weights: &[f64], terms: &[f64]) -> f64 {
    let shifted: Vec<f64> = terms.iter().zip(log_weights).map(|(t, w)| t + w).collect();
    log_mean_exp(&shifted) + (shifted.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf(x: f64, n: f64, theta0: f64, ks: &[f64], side: Side) -> f64 {
        log_bayes_factor(x, n, theta0, ks, side).unwrap().exp()
    }

    #[test]
    fn a_weighted_mixtures_log_ratio_is_the_log_of_the_weighted_mean_ratio() {
        // Likelihood ratios 1 and 3 weighted 1/4 and 3/4: 0.25 + 2.25 = 2.5.
        let l = log_weighted_mean_exp(&[0.25_f64.ln(), 0.75_f64.ln()], &[0.0, 3.0_f64.ln()]);
        assert!((l - 2.5_f64.ln()).abs() < 1e-12, "{l}");
    }

    #[test]
    fn two_sided_single_event_is_neutral_because_the_prior_mean_is_theta0() {
        // B(a+1, b)/B(a, b) = a/(a+b) = theta0, so one event carries no evidence either way.
        for theta0 in [0.05, 0.3, 0.5, 0.9] {
            assert!((bf(1.0, 1.0, theta0, &[1.0, 10.0, 100.0], Side::Both) - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn one_sided_matches_hand_computed_uniform_prior_values() {
        // theta0 = 0.5, k = 2: prior Beta(1,1) truncated to (0.5, 1), density 2.
        // x=1,n=1: E[theta]/0.5 = 0.75/0.5 = 1.5
        assert!((bf(1.0, 1.0, 0.5, &[2.0], Side::Above) - 1.5).abs() < 1e-9);
        // x=0,n=1: E[1-theta]/0.5 = 0.25/0.5 = 0.5
        assert!((bf(0.0, 1.0, 0.5, &[2.0], Side::Above) - 0.5).abs() < 1e-9);
        // x=2,n=2: E[theta^2]/0.25 = (2 * 7/24)/0.25 = 7/3
        assert!((bf(2.0, 2.0, 0.5, &[2.0], Side::Above) - 7.0 / 3.0).abs() < 1e-9);
        // Two-sided, x=2,n=2: B(3,1)/B(1,1)/0.25 = (1/3)/0.25 = 4/3.
        assert!((bf(2.0, 2.0, 0.5, &[2.0], Side::Both) - 4.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn upper_and_lower_sides_mirror_each_other() {
        let ks = [1.0, 10.0, 100.0, 1000.0];
        for (x, n, t) in [(3.0, 10.0, 0.2), (40.0, 100.0, 0.1), (0.0, 7.0, 0.6)] {
            let up = bf(x, n, t, &ks, Side::Above);
            let down = bf(n - x, n, 1.0 - t, &ks, Side::Below);
            assert!((up.ln() - down.ln()).abs() < 1e-7, "{up} vs {down}");
            let both = bf(x, n, t, &ks, Side::Both);
            let both_mirror = bf(n - x, n, 1.0 - t, &ks, Side::Both);
            assert!((both.ln() - both_mirror.ln()).abs() < 1e-7);
        }
    }

    #[test]
    fn evidence_grows_with_canary_events_and_a_better_canary_gives_none() {
        let ks = [1.0, 10.0, 100.0, 1000.0];
        let mut last = 0.0;
        for x in 0..=60 {
            let v = bf(x as f64, 60.0, 0.1, &ks, Side::Above);
            assert!(v >= last, "x={x}: {v} < {last}");
            last = v;
        }
        assert!(bf(0.0, 60.0, 0.1, &ks, Side::Above) < 0.5);
        assert!(bf(30.0, 60.0, 0.1, &ks, Side::Above) > 1e6);
    }

    #[test]
    fn no_events_means_no_evidence() {
        assert!((bf(0.0, 0.0, 0.1, &[1.0, 100.0], Side::Above) - 1.0).abs() < 1e-12);
        assert_eq!(upper_bound(0.0, 0.0, 0.01, &[1.0]).unwrap(), 1.0);
    }

    #[test]
    fn upper_bound_covers_the_estimate_and_tightens_with_data() {
        let ks = [1.0, 10.0, 100.0, 1000.0];
        let small = upper_bound(10.0, 100.0, 0.05, &ks).unwrap();
        let large = upper_bound(1000.0, 10000.0, 0.05, &ks).unwrap();
        assert!(small > 0.1 && large > 0.1);
        assert!(large < small, "{large} !< {small}");
        assert!(large < 0.13);
    }

    #[test]
    fn invalid_inputs_are_errors_not_panics() {
        assert!(log_bayes_factor(5.0, 3.0, 0.1, &[1.0], Side::Above).is_err());
        assert!(log_bayes_factor(1.0, 3.0, 0.0, &[1.0], Side::Above).is_err());
        assert!(log_bayes_factor(1.0, 3.0, 0.1, &[], Side::Above).is_err());
        assert!(log_bayes_factor(f64::NAN, 3.0, 0.1, &[1.0], Side::Above).is_err());
    }
}
