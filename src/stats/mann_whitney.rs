//! Mann-Whitney U test with tie correction and a Hodges-Lehmann shift interval, for metrics that
//! are not counts (per-interval latency quantiles, CPU, queue depth).
//!
//! FIXED HORIZON: the p-value and the interval are valid for ONE look at a sample size chosen in
//! advance. Re-running them every interval over "the samples so far" (what Kayenta does) inflates
//! the false-failure rate with every look. Prefer the count-based sequential test whenever the
//! metric can be expressed as counts (e.g. slow requests from histogram buckets); use this for a
//! single end-of-bake judgement or with a deliberately small `1 - confidence`.
//!
//! Ties and all-zero series: the variance uses the tie correction, an all-tied pooled sample has
//! no evidence (p = 1), and the practical-effect check compares means, so sparse errors against
//! an all-zero baseline fail (Kayenta compares the interval with a fraction of the Hodges-Lehmann
//! estimate, which is 0 there, so it passes them).

use super::sequential::Outcome;
use super::StatsError;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// Pairwise differences are materialised; this caps the memory at 32 MB.
const MAX_PAIRS: usize = 4_000_000;

/// Tuning of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MannWhitneyConfig {
    /// Confidence of the one-sided test and of the two-sided shift interval.
    pub confidence: f64,
    /// Relative increase of the canary's mean over the stable's that matters (0.25 = 25%).
    pub tolerance: f64,
    /// Samples per arm needed before any verdict other than Inconclusive.
    pub min_samples: usize,
}

impl Default for MannWhitneyConfig {
    fn default() -> Self {
        Self {
            confidence: 0.98,
            tolerance: 0.25,
            min_samples: 5,
        }
    }
}

/// The rank-sum statistic and its normal-approximation p-values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UTest {
    /// U of the canary: pairs where the canary value is larger, ties counting one half.
    pub u: f64,
    /// Continuity-corrected z score for "canary larger" (0 when all values tie).
    pub z: f64,
    /// One-sided p-value for "the canary tends to be larger".
    pub p_greater: f64,
    pub p_two_sided: f64,
}

/// Hodges-Lehmann estimate of the shift (canary - stable) with its distribution-free interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shift {
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub outcome: Outcome,
    pub test: UTest,
    pub shift: Shift,
    pub canary_mean: f64,
    pub stable_mean: f64,
    pub explanation: String,
}

fn finite(values: &[f64], what: &'static str) -> Result<(), StatsError> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(StatsError::NegativeOrNotFinite { what, value: *v }),
        None => Ok(()),
    }
}

fn std_normal() -> Result<Normal, StatsError> {
    Normal::new(0.0, 1.0).map_err(|e| StatsError::Numeric(e.to_string()))
}

/// The Mann-Whitney U test (normal approximation, tie and continuity corrected, as scipy's
/// `mannwhitneyu(method="asymptotic")`).
pub fn u_test(canary: &[f64], stable: &[f64]) -> Result<UTest, StatsError> {
    finite(canary, "canary sample")?;
    finite(stable, "stable sample")?;
    let (n1, n2) = (canary.len() as f64, stable.len() as f64);
    if canary.is_empty() || stable.is_empty() {
        return Err(StatsError::Numeric("both samples need values".into()));
    }
    let mut pooled: Vec<(f64, bool)> = canary
        .iter()
        .map(|v| (*v, true))
        .chain(stable.iter().map(|v| (*v, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = pooled.len();
    let mut rank_sum = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid_rank * pooled[i..=j].iter().filter(|p| p.1).count() as f64;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let big_n = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((big_n + 1.0) - tie_term / (big_n * (big_n - 1.0)));
    if variance <= 0.0 {
        return Ok(UTest {
            u,
            z: 0.0,
            p_greater: 1.0,
            p_two_sided: 1.0,
        });
    }
    let sd = variance.sqrt();
    let normal = std_normal()?;
    let z = (u - mean - 0.5) / sd;
    let p_greater = normal.sf(z);
    let z_abs = ((u - mean).abs() - 0.5).max(0.0) / sd;
    let p_two_sided = (2.0 * normal.sf(z_abs)).min(1.0);
    Ok(UTest {
        u,
        z,
        p_greater,
        p_two_sided,
    })
}

/// Hodges-Lehmann shift: median of all pairwise differences, with the order-statistic interval
/// `[D_(C), D_(mn+1-C)]`, `C = floor(mn/2 - z_{(1+conf)/2} sqrt(mn(m+n+1)/12))`.
pub fn hodges_lehmann(
    canary: &[f64],
    stable: &[f64],
    confidence: f64,
) -> Result<Shift, StatsError> {
    finite(canary, "canary sample")?;
    finite(stable, "stable sample")?;
    if canary.is_empty() || stable.is_empty() {
        return Err(StatsError::Numeric("both samples need values".into()));
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(StatsError::AlphaOutOfRange(1.0 - confidence));
    }
    if canary.len().saturating_mul(stable.len()) > MAX_PAIRS {
        return Err(StatsError::Numeric(format!(
            "{} x {} samples is more pairs than the Hodges-Lehmann interval is computed for \
             ({MAX_PAIRS}); use a coarser step or the count-based sequential test",
            canary.len(),
            stable.len()
        )));
    }
    let mut diffs: Vec<f64> = canary
        .iter()
        .flat_map(|c| stable.iter().map(move |s| c - s))
        .collect();
    diffs.sort_by(f64::total_cmp);
    let len = diffs.len();
    let estimate = if len % 2 == 1 {
        diffs[len / 2]
    } else {
        0.5 * (diffs[len / 2 - 1] + diffs[len / 2])
    };
    let (m, n) = (canary.len() as f64, stable.len() as f64);
    let z = std_normal()?.inverse_cdf(0.5 + confidence / 2.0);
    let c = (m * n / 2.0 - z * (m * n * (m + n + 1.0) / 12.0).sqrt()).floor();
    // With too few pairs for the requested confidence the interval is the full range.
    let c = c.max(1.0) as usize;
    let lower = diffs[c - 1];
    let upper = diffs[len - c];
    Ok(Shift {
        estimate,
        lower,
        upper,
    })
}

/// Judges "the canary's metric is higher than the stable's by more than the tolerance".
///
/// Fail: the one-sided test is significant AND the canary's mean exceeds the stable's by more
/// than `tolerance` (any positive mean against an all-zero stable). Pass: the shift interval's
/// upper end is within the tolerance of the stable's mean. Otherwise Inconclusive.
pub fn compare(
    canary: &[f64],
    stable: &[f64],
    cfg: &MannWhitneyConfig,
) -> Result<Comparison, StatsError> {
    let test = u_test(canary, stable)?;
    let shift = hodges_lehmann(canary, stable, cfg.confidence)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (canary_mean, stable_mean) = (mean(canary), mean(stable));
    let allowed = cfg.tolerance * stable_mean.abs();
    let practically_worse = canary_mean - stable_mean > allowed;
    let alpha = 1.0 - cfg.confidence;
    let enough = canary.len() >= cfg.min_samples && stable.len() >= cfg.min_samples;
    let (outcome, explanation) = if !enough {
        (
            Outcome::Inconclusive,
            format!(
                "{} canary and {} stable samples; needs {} each",
                canary.len(),
                stable.len(),
                cfg.min_samples
            ),
        )
    } else if test.p_greater < alpha && practically_worse {
        (
            Outcome::Fail,
            format!(
                "canary higher: p = {:.4} < {alpha:.4} and mean {canary_mean:.4} exceeds stable \
                 {stable_mean:.4} by more than {}%",
                test.p_greater,
                cfg.tolerance * 100.0
            ),
        )
    } else if shift.upper <= allowed {
        (
            Outcome::Pass,
            format!(
                "shift interval [{:.4}, {:.4}] within the allowed {allowed:.4}",
                shift.lower, shift.upper
            ),
        )
    } else {
        (
            Outcome::Inconclusive,
            format!(
                "p = {:.4} (needs < {alpha:.4}), shift interval [{:.4}, {:.4}] (needs upper <= \
                 {allowed:.4} to pass)",
                test.p_greater, shift.lower, shift.upper
            ),
        )
    };
    Ok(Comparison {
        outcome,
        test,
        shift,
        canary_mean,
        stable_mean,
        explanation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scipy_asymptotic_reference() {
        // scipy.stats.mannwhitneyu(x, y, method="asymptotic") documentation example:
        // statistic 17.0, pvalue 0.11134688653314041.
        let x = [19.0, 22.0, 16.0, 29.0, 24.0];
        let y = [20.0, 11.0, 17.0, 12.0];
        let t = u_test(&x, &y).unwrap();
        assert_eq!(t.u, 17.0);
        assert!(
            (t.p_two_sided - 0.111_346_886_533_140_41).abs() < 1e-9,
            "{}",
            t.p_two_sided
        );
    }

    #[test]
    fn tie_correction_matches_hand_computation() {
        // x=[1,2,2,3], y=[2,3,3,4]. Pooled ranks: 1->1, 2->3 (x3), 3->6 (x3), 4->8.
        // R_x = 1+3+3+6 = 13, U = 13-10 = 3, mean 8.
        // Ties: t=3 twice -> sum(t^3-t) = 48; var = 16/12 * (9 - 48/56) = 10.857142...
        // z two-sided = (5 - 0.5)/sqrt(var) = 1.36568..., p = 2*sf(z) = 0.172...
        let t = u_test(&[1.0, 2.0, 2.0, 3.0], &[2.0, 3.0, 3.0, 4.0]).unwrap();
        assert_eq!(t.u, 3.0);
        let var: f64 = 16.0 / 12.0 * (9.0 - 48.0 / 56.0);
        let z = 4.5 / var.sqrt();
        let p = 2.0 * Normal::new(0.0, 1.0).unwrap().sf(z);
        assert!((t.p_two_sided - p).abs() < 1e-12);
        assert!((t.p_two_sided - 0.1720).abs() < 1e-3, "{}", t.p_two_sided);
    }

    #[test]
    fn all_tied_values_carry_no_evidence() {
        let t = u_test(&[0.0; 30], &[0.0; 30]).unwrap();
        assert_eq!(t.p_greater, 1.0);
        let c = compare(&[0.0; 30], &[0.0; 30], &MannWhitneyConfig::default()).unwrap();
        assert_eq!(c.outcome, Outcome::Pass, "{}", c.explanation);
    }

    #[test]
    fn sparse_errors_against_an_all_zero_baseline_fail() {
        let mut canary = vec![0.0; 50];
        canary.extend([0.01, 0.02, 0.01, 0.03, 0.01, 0.02, 0.01, 0.01, 0.05, 0.01]);
        let stable = vec![0.0; 60];
        let c = compare(&canary, &stable, &MannWhitneyConfig::default()).unwrap();
        assert_eq!(c.outcome, Outcome::Fail, "{}", c.explanation);
        // The Hodges-Lehmann estimate is 0 here: an interval test against a fraction of it
        // (Kayenta's rule) cannot see the difference.
        assert_eq!(c.shift.estimate, 0.0);
    }

    #[test]
    fn hodges_lehmann_recovers_a_pure_shift() {
        let stable: Vec<f64> = (0..40).map(|i| f64::from(i) * 1.7 % 13.0).collect();
        let canary: Vec<f64> = stable.iter().map(|v| v + 10.0).collect();
        let s = hodges_lehmann(&canary, &stable, 0.98).unwrap();
        assert_eq!(s.estimate, 10.0);
        assert!(s.lower <= 10.0 && s.upper >= 10.0 && s.lower > 5.0);
        let c = compare(&canary, &stable, &MannWhitneyConfig::default()).unwrap();
        assert_eq!(c.outcome, Outcome::Fail, "{}", c.explanation);
    }

    #[test]
    fn a_faster_canary_never_fails() {
        let stable: Vec<f64> = (0..40).map(|i| 100.0 + f64::from(i % 7)).collect();
        let canary: Vec<f64> = stable.iter().map(|v| v - 30.0).collect();
        let c = compare(&canary, &stable, &MannWhitneyConfig::default()).unwrap();
        assert_eq!(c.outcome, Outcome::Pass, "{}", c.explanation);
    }

    #[test]
    fn too_few_samples_hold() {
        let c = compare(&[5.0, 6.0], &[1.0, 2.0], &MannWhitneyConfig::default()).unwrap();
        assert_eq!(c.outcome, Outcome::Inconclusive);
    }

    #[test]
    fn empty_huge_or_non_finite_samples_are_errors() {
        assert!(hodges_lehmann(&vec![1.0; 3000], &vec![0.0; 3000], 0.98).is_err());
        assert!(u_test(&[], &[1.0]).is_err());
        assert!(u_test(&[f64::NAN], &[1.0]).is_err());
    }
}
