//! Whether a canary's counts show it worse than the stable's by more than a margin: the test
//! behind the shared-cause check (`decision::shared`), per poll or anytime-valid.
//!
//! Why a module of its own: the same conditional binomial (`docs/statistics.md`) is read two
//! ways, a p-value for counts over a sliding window tested afresh at every poll, and a mixture
//! e-value for counts that accumulate over the canary's life, and the stable's rise
//! (`decision::elevation`) and the burn path (`decision::shared_burn`) use it too.

use crate::stats::mixture::{self, Side};
use crate::stats::sequential::DEFAULT_CONCENTRATIONS;
use statrs::function::beta::checked_beta_reg;

/// What shows the canary worse than the stable in `Check::counts_test` (`decision::shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Evidence {
    /// The counts' one-sided p-value at this poll, at most
    /// [`SHARED_ALPHA`](super::shared::SHARED_ALPHA): counts over a sliding window, each poll a
    /// fresh test (module docs).
    PerPoll,
    /// The one-sided mixture e-value of the counts, at least `1 / SHARED_ALPHA`: counts that
    /// accumulate over the canary's life, so polled at every poll the chance that a canary no
    /// worse than the margin ever reads worse stays at most `SHARED_ALPHA` (Ville's inequality,
    /// `stats::mixture`), where a fresh 0.05 test at each of a day's polls would find it
    /// "worse" sooner or later.
    Anytime,
}

/// The one-sided mixture e-value against "the canary's event rate is at most `margin` times the
/// stable's" on these counts (the sequential test's prior: `stats::mixture`, concentrations 1
/// to 1000); 0 when it cannot be computed (no evidence).
pub fn worse_e_value(x: f64, y: f64, c: f64, s: f64, margin: f64) -> f64 {
    let theta0 = margin * c / (margin * c + s);
    let ok = x.is_finite() && y.is_finite() && x > 0.0 && y >= 0.0;
    match ok {
        true => mixture::log_bayes_factor(x, x + y, theta0, &DEFAULT_CONCENTRATIONS, Side::Above)
            .map_or(0.0, f64::exp),
        false => 0.0,
    }
}

/// One-sided p-value of "the canary's event rate is at most `margin` times the stable's":
/// `P(X >= x)` for `X ~ Binomial(x + y, theta0)`, `theta0 = m c / (m c + s)`, through the
/// regularised incomplete beta `I_theta0(x, n - x + 1)` (real-valued counts interpolate).
pub fn worse_p_value(x: f64, y: f64, c: f64, s: f64, margin: f64) -> Option<f64> {
    if !(x.is_finite() && y.is_finite() && x >= 0.0 && y >= 0.0) {
        return None;
    }
    if x <= 0.0 {
        return Some(1.0);
    }
    let theta0 = margin * c / (margin * c + s);
    if !(theta0 > 0.0 && theta0 < 1.0) {
        return None;
    }
    checked_beta_reg(x, y + 1.0, theta0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::shared::SHARED_ALPHA;

    #[test]
    fn the_p_value_matches_binomial_tails_computed_by_hand() {
        // theta0 = 0.5 (margin 1, equal traffic), n = 4: P(X >= 3) = (4 + 1) / 16.
        let p = worse_p_value(3.0, 1.0, 100.0, 100.0, 1.0).unwrap();
        assert!((p - 5.0 / 16.0).abs() < 1e-12, "{p}");
        // P(X >= 4) = 1/16; no canary events: 1.
        let p = worse_p_value(4.0, 0.0, 100.0, 100.0, 1.0).unwrap();
        assert!((p - 1.0 / 16.0).abs() < 1e-12, "{p}");
        assert_eq!(worse_p_value(0.0, 9.0, 1.0, 9.0, 1.2), Some(1.0));
        // theta0 = 0.2 (canary a fifth of margin-weighted traffic), n = 2: P(X >= 2) = 0.04.
        let p = worse_p_value(2.0, 0.0, 1.0, 4.0, 1.0).unwrap();
        assert!((p - 0.04).abs() < 1e-12, "{p}");
    }

    #[test]
    fn ten_percent_against_two_percent_is_worse_and_equal_rates_are_not() {
        // One minute at 1 and 9 req/s: 6 of 60 canary errors against 10.8 of 540.
        let p = worse_p_value(6.0, 10.8, 60.0, 540.0, 1.2).unwrap();
        assert!(p < SHARED_ALPHA, "{p}");
        // Both at 10%: nowhere near.
        let p = worse_p_value(6.0, 54.0, 60.0, 540.0, 1.2).unwrap();
        assert!(p > 0.5, "{p}");
    }
}
