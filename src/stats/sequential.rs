//! Anytime-valid canary-vs-stable test on event counts (errors, or requests slower than a
//! latency threshold taken from histogram `le` buckets).
//!
//! Why counts and not rates: conditional on the total number of events `n`, the canary's events
//! are Binomial(n, theta) with `theta = r*c / (r*c + s)`, where `c`, `s` are the request counts
//! per arm and `r` the canary-to-stable rate ratio. Everything common to both arms (traffic
//! cycles, a shared dependency failing) cancels. The null "the canary is at most `margin` times
//! worse" is `theta <= theta0 = m*c / (m*c + s)`; the one-sided mixture Bayes factor of
//! [`super::mixture`] is an e-process for it, so failing at `BF >= 1/alpha` keeps the false
//! rollback rate at or below `alpha` however often the daemon polls.
//!
//! Passing needs evidence too: enough canary exposure AND an anytime-valid upper bound on the
//! rate ratio below `pass_ratio` (or, when events are too rare for a ratio to mean anything, an
//! upper bound on the canary's own rate below `negligible_rate`). Anything else is
//! `Inconclusive`: hold, neither promote nor roll back.

use super::mixture::{log_bayes_factor, upper_bound, Side};
use super::{check_count, threshold_text, StatsError};
use serde::{Deserialize, Serialize};

/// Cumulative counts of one arm since the analysis started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmCounts {
    /// Bad events (errors, slow requests).
    pub events: f64,
    /// All requests the events are counted from.
    pub total: f64,
}

impl ArmCounts {
    pub fn new(events: f64, total: f64) -> Self {
        Self { events, total }
    }

    fn rate(&self) -> Option<f64> {
        (self.total > 0.0).then(|| self.events / self.total)
    }
}

/// Both arms' cumulative counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub canary: ArmCounts,
    pub stable: ArmCounts,
}

/// The mixture's default Beta prior concentrations: small ones catch large effects fast,
/// large ones small effects.
pub const DEFAULT_CONCENTRATIONS: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];

/// Tuning of the sequential test. Defaults come from the decision-quality benchmark
/// (docs/decision-quality.md); change them only with that benchmark at hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SequentialConfig {
    /// Bound on the false-rollback probability over the whole analysis, however often polled.
    pub alpha: f64,
    /// The canary may be this many times worse than the stable before it counts as a regression;
    /// it absorbs per-pod differences that are real but harmless.
    pub margin: f64,
    /// Beta prior concentrations averaged in the mixture: small ones catch large effects fast,
    /// large ones catch small effects eventually.
    pub concentrations: Vec<f64>,
    /// Canary requests needed before the test may pass.
    pub min_exposure: f64,
    /// The rate ratio's upper bound must be at or below this to pass.
    pub pass_ratio: f64,
    /// A canary whose own event rate is bounded below this passes even when the ratio is
    /// unknowable (e.g. zero errors on both arms).
    pub negligible_rate: f64,
    /// Confidence of the pass bounds (`None`: alpha). Set when alpha is a share of a larger
    /// budget: a pass is a different error from a false rollback, so splitting the rollback
    /// budget (restarts) should not make passing harder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_alpha: Option<f64>,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            margin: 1.2,
            concentrations: DEFAULT_CONCENTRATIONS.to_vec(),
            min_exposure: 1000.0,
            pass_ratio: 1.5,
            negligible_rate: 0.001,
            pass_alpha: None,
        }
    }
}

/// The three answers a rollback decision needs; "no evidence" is never folded into either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

/// The outcome with what it rests on, so `backout explain` can show the statistic, its value and
/// what it needs to reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequentialVerdict {
    pub outcome: Outcome,
    /// Mixture Bayes factor for "canary worse than margin x stable".
    pub bayes_factor: f64,
    /// The Bayes factor that triggers a rollback: 1/alpha.
    pub threshold: f64,
    /// Null canary share of events implied by the traffic split and the margin.
    pub theta0: Option<f64>,
    /// Observed canary/stable rate ratio, when both rates are defined and the stable's is > 0.
    pub ratio_estimate: Option<f64>,
    /// Anytime-valid upper bound on the rate ratio (only computed when a pass is possible).
    pub ratio_upper: Option<f64>,
    /// What the next look should be given as `known` (the tightest bound still usable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<KnownBound>,
    pub explanation: String,
}

/// Evaluates the test on cumulative counts. Pure: same counts, same verdict.
pub fn evaluate(counts: &Counts, cfg: &SequentialConfig) -> Result<SequentialVerdict, StatsError> {
    evaluate_with_bound(counts, cfg, None)
}

/// The smallest rate-ratio upper bound earlier looks at the same counts (same origin) reached,
/// and the canary's share of requests when it was reached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KnownBound {
    pub ratio_upper: f64,
    pub canary_share: f64,
}

/// Relative change of the canary's share of requests past which an earlier bound is dropped.
/// The bound maps the canary's share of events to a rate ratio through the traffic split; once
/// the split has moved (weight steps) the old bound speaks of a different mixture.
pub const SHARE_TOLERANCE: f64 = 0.2;

/// [`evaluate`], given the tightest bound an earlier look reached.
///
/// Why: each look's bound belongs to one anytime-valid confidence sequence, so while the rate
/// ratio and the traffic split stay the same, the running intersection (the smallest bound so
/// far) is just as valid, and a canary that has passed stays passed instead of flipping back to
/// inconclusive when noise widens one look's bound. The earlier bound is dropped when the split
/// has moved by more than [`SHARE_TOLERANCE`]; the caller drops it when it restarts (so a pass
/// is re-earned every restart period on a long canary). A canary that turns bad still fails:
/// the Bayes factor is checked first and ignores the bound. The `negligible_rate` pass has no
/// memory.
pub fn evaluate_with_bound(
    counts: &Counts,
    cfg: &SequentialConfig,
    known: Option<KnownBound>,
) -> Result<SequentialVerdict, StatsError> {
    check_inputs(counts, cfg)?;
    let (c, s) = (counts.canary, counts.stable);
    let threshold = 1.0 / cfg.alpha;
    let mut verdict = SequentialVerdict {
        outcome: Outcome::Inconclusive,
        bayes_factor: 1.0,
        threshold,
        theta0: None,
        ratio_estimate: match (c.rate(), s.rate()) {
            (Some(rc), Some(rs)) if rs > 0.0 => Some(rc / rs),
            _ => None,
        },
        ratio_upper: None,
        bound: known,
        explanation: String::new(),
    };
    if c.total <= 0.0 || s.total <= 0.0 {
        let arm = if c.total <= 0.0 { "canary" } else { "stable" };
        verdict.explanation = format!("no {arm} requests yet: nothing to compare, holding");
        return Ok(verdict);
    }
    let theta0 = cfg.margin * c.total / (cfg.margin * c.total + s.total);
    verdict.theta0 = Some(theta0);
    let n = c.events + s.events;
    let log_bf = log_bayes_factor(c.events, n, theta0, &cfg.concentrations, Side::Above)?;
    verdict.bayes_factor = log_bf.exp();
    let rates = rates_text(counts);
    // Failing comes first and ignores any earlier bound: a canary that turns bad still fails.
    if log_bf >= threshold.ln() {
        verdict.outcome = Outcome::Fail;
        verdict.explanation = format!(
            "{rates}: Bayes factor {:.3e} >= {} that the canary is more than {}x worse",
            verdict.bayes_factor,
            threshold_text(threshold),
            cfg.margin
        );
        return Ok(verdict);
    }
    if c.total < cfg.min_exposure {
        verdict.explanation = format!(
            "{rates}: Bayes factor {:.3} < {}; needs {} canary requests before it may pass, \
             has {}",
            verdict.bayes_factor,
            threshold_text(threshold),
            cfg.min_exposure,
            c.total
        );
        return Ok(verdict);
    }
    pass_or_hold(&mut verdict, counts, cfg, known, &rates)?;
    Ok(verdict)
}

/// Rejects what no count can be: alpha outside (0, 1), negative or non-finite counts, more
/// events than requests. The test's guarantee rests on the counts being counts.
fn check_inputs(counts: &Counts, cfg: &SequentialConfig) -> Result<(), StatsError> {
    if !(cfg.alpha > 0.0 && cfg.alpha < 1.0) {
        return Err(StatsError::AlphaOutOfRange(cfg.alpha));
    }
    let (c, s) = (counts.canary, counts.stable);
    for (what, v) in [
        ("canary events", c.events),
        ("canary total", c.total),
        ("stable events", s.events),
        ("stable total", s.total),
    ] {
        check_count(what, v)?;
    }
    for arm in [c, s] {
        if arm.events > arm.total {
            return Err(StatsError::EventsExceedTotal {
                events: arm.events,
                total: arm.total,
            });
        }
    }
    Ok(())
}

/// Both arms' counts and rates, the start of every explanation (both totals are positive).
fn rates_text(counts: &Counts) -> String {
    let (c, s) = (counts.canary, counts.stable);
    format!(
        "canary {:.0} of {:.0} ({:.4}%), stable {:.0} of {:.0} ({:.4}%)",
        c.events,
        c.total,
        100.0 * c.events / c.total,
        s.events,
        s.total,
        100.0 * s.events / s.total
    )
}

/// The pass side, once the test has not failed and the canary has its exposure: pass on a small
/// enough rate-ratio bound, else on a negligible canary rate, else hold (inconclusive).
fn pass_or_hold(
    verdict: &mut SequentialVerdict,
    counts: &Counts,
    cfg: &SequentialConfig,
    known: Option<KnownBound>,
    rates: &str,
) -> Result<(), StatsError> {
    let c = counts.canary;
    let pass_alpha = cfg.pass_alpha.unwrap_or(cfg.alpha);
    let (bound, ratio_upper) = ratio_bound(counts, cfg, pass_alpha, known)?;
    verdict.bound = Some(bound);
    verdict.ratio_upper = Some(ratio_upper);
    if ratio_upper <= cfg.pass_ratio {
        verdict.outcome = Outcome::Pass;
        verdict.explanation = format!(
            "{rates}: rate ratio is at most {ratio_upper:.3} (bound for pass {})",
            cfg.pass_ratio
        );
        return Ok(());
    }
    let rate_upper = upper_bound(c.events, c.total, pass_alpha, &cfg.concentrations)?;
    if rate_upper <= cfg.negligible_rate {
        verdict.outcome = Outcome::Pass;
        verdict.explanation = format!(
            "{rates}: canary rate is at most {:.4}% (negligible below {:.4}%)",
            100.0 * rate_upper,
            100.0 * cfg.negligible_rate
        );
        return Ok(());
    }
    verdict.explanation = format!(
        "{rates}: Bayes factor {:.3} < {} to fail; rate ratio upper bound {ratio_upper:.3} > {} \
         to pass",
        verdict.bayes_factor,
        threshold_text(verdict.threshold),
        cfg.pass_ratio
    );
    Ok(())
}

/// The anytime-valid upper bound on the rate ratio at this look, tightened by the earlier
/// `known` bound while the traffic split has not moved past [`SHARE_TOLERANCE`] (see
/// [`evaluate_with_bound`]); with the bound the next look should be given.
fn ratio_bound(
    counts: &Counts,
    cfg: &SequentialConfig,
    pass_alpha: f64,
    known: Option<KnownBound>,
) -> Result<(KnownBound, f64), StatsError> {
    let (c, s) = (counts.canary, counts.stable);
    let share = c.total / (c.total + s.total);
    let same_split = |k: &KnownBound| (share / k.canary_share - 1.0).abs() <= SHARE_TOLERANCE;
    // A kept bound that already passes decides the outcome: a fresh one could only be tighter,
    // so the bisection (the costliest step of a poll) is skipped on a canary that has passed.
    if let Some(k) = known.filter(|k| k.ratio_upper <= cfg.pass_ratio && same_split(k)) {
        return Ok((k, k.ratio_upper));
    }
    let theta_upper = upper_bound(
        c.events,
        c.events + s.events,
        pass_alpha,
        &cfg.concentrations,
    )?;
    let ratio_upper = if theta_upper >= 1.0 {
        f64::INFINITY
    } else {
        theta_upper / (1.0 - theta_upper) * s.total / c.total
    };
    let fresh = KnownBound {
        ratio_upper,
        canary_share: share,
    };
    let kept = known.filter(|k| k.ratio_upper < ratio_upper && same_split(k));
    Ok((
        kept.unwrap_or(fresh),
        kept.map_or(ratio_upper, |k| k.ratio_upper),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn counts(ce: f64, ct: f64, se: f64, st: f64) -> Counts {
        Counts {
            canary: ArmCounts::new(ce, ct),
            stable: ArmCounts::new(se, st),
        }
    }

    #[test]
    fn a_hard_failing_canary_fails_on_first_look() {
        // 10% canary traffic, 5% vs 0.5% errors after 200 canary requests.
        let v = evaluate(
            &counts(10.0, 200.0, 9.0, 1800.0),
            &SequentialConfig::default(),
        )
        .unwrap();
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.explanation);
        assert!(v.bayes_factor >= v.threshold);
        assert_eq!(v.threshold, 100.0);
    }

    #[test]
    fn a_better_canary_never_fails_and_passes_with_exposure() {
        let v = evaluate(
            &counts(2.0, 5000.0, 200.0, 45000.0),
            &SequentialConfig::default(),
        )
        .unwrap();
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation);
        assert!(v.bayes_factor < 1.0);
        assert!(v.ratio_upper.unwrap() <= 1.5);
    }

    #[test]
    fn too_little_exposure_holds_instead_of_passing() {
        let v = evaluate(&counts(0.0, 50.0, 1.0, 450.0), &SequentialConfig::default()).unwrap();
        assert_eq!(v.outcome, Outcome::Inconclusive);
        assert!(v.explanation.contains("needs 1000 canary requests"));
    }

    #[test]
    fn zero_errors_everywhere_passes_on_negligible_rate() {
        let v = evaluate(
            &counts(0.0, 20000.0, 0.0, 180000.0),
            &SequentialConfig::default(),
        )
        .unwrap();
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation);
        assert!(v.explanation.contains("negligible"));
    }

    #[test]
    fn no_traffic_is_inconclusive_not_a_failure() {
        let v = evaluate(&counts(0.0, 0.0, 5.0, 1000.0), &SequentialConfig::default()).unwrap();
        assert_eq!(v.outcome, Outcome::Inconclusive);
        assert!(v.explanation.contains("no canary requests"));
    }

    #[test]
    fn the_margin_tolerates_a_small_real_difference() {
        // Canary exactly 1.1x worse with lots of data: below a 1.2 margin, must not fail.
        let v = evaluate(
            &counts(1100.0, 100000.0, 9000.0, 900000.0),
            &SequentialConfig::default(),
        )
        .unwrap();
        assert_ne!(v.outcome, Outcome::Fail, "{}", v.explanation);
        let strict = SequentialConfig {
            margin: 1.0,
            ..SequentialConfig::default()
        };
        let v = evaluate(&counts(11000.0, 1e6, 90000.0, 9e6), &strict).unwrap();
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.explanation);
    }

    #[test]
    fn an_earlier_tighter_bound_keeps_a_pass_and_never_blocks_a_fail() {
        let cfg = SequentialConfig::default();
        // A noisy look: the bound alone is too wide to pass.
        let noisy = counts(14.0, 2000.0, 90.0, 18000.0);
        let alone = evaluate(&noisy, &cfg).unwrap();
        assert_eq!(
            alone.outcome,
            Outcome::Inconclusive,
            "{}",
            alone.explanation
        );
        let at = |ratio_upper, canary_share| {
            Some(KnownBound {
                ratio_upper,
                canary_share,
            })
        };
        let kept = evaluate_with_bound(&noisy, &cfg, at(1.3, 0.1)).unwrap();
        assert_eq!(kept.outcome, Outcome::Pass, "{}", kept.explanation);
        assert_eq!(kept.ratio_upper, Some(1.3));
        assert_eq!(kept.bound, at(1.3, 0.1));
        // A looser earlier bound changes nothing, and the fresh one is carried forward.
        let loose = evaluate_with_bound(&noisy, &cfg, at(50.0, 0.1)).unwrap();
        assert_eq!(loose.ratio_upper, alone.ratio_upper);
        assert_eq!(loose.bound.map(|b| b.ratio_upper), alone.ratio_upper);
        // A bound from another traffic split (canary at 20% then, 10% now) is dropped.
        let moved = evaluate_with_bound(&noisy, &cfg, at(1.3, 0.2)).unwrap();
        assert_eq!(
            moved.outcome,
            Outcome::Inconclusive,
            "{}",
            moved.explanation
        );
        // Evidence of a regression wins over any earlier bound.
        let bad = counts(60.0, 2000.0, 90.0, 18000.0);
        let v = evaluate_with_bound(&bad, &cfg, at(1.1, 0.1)).unwrap();
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.explanation);
    }

    #[test]
    fn inconsistent_counts_are_rejected() {
        assert!(evaluate(&counts(5.0, 3.0, 0.0, 10.0), &SequentialConfig::default()).is_err());
        let bad = SequentialConfig {
            alpha: 0.0,
            ..SequentialConfig::default()
        };
        assert!(evaluate(&counts(0.0, 3.0, 0.0, 10.0), &bad).is_err());
    }

    /// A/A: identical arms, polled 60 times per run; the share of runs that ever fail must stay
    /// at or below alpha.
    #[test]
    fn repeated_polling_of_identical_arms_keeps_false_fails_below_alpha() {
        let cfg = SequentialConfig {
            alpha: 0.05,
            margin: 1.0,
            ..SequentialConfig::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        let runs = 1000;
        let mut false_fails = 0;
        for _ in 0..runs {
            let mut n = counts(0.0, 0.0, 0.0, 0.0);
            for _poll in 0..60 {
                for _ in 0..20 {
                    n.canary.total += 1.0;
                    n.canary.events += f64::from(u8::from(rng.random_bool(0.05)));
                }
                for _ in 0..80 {
                    n.stable.total += 1.0;
                    n.stable.events += f64::from(u8::from(rng.random_bool(0.05)));
                }
                if evaluate(&n, &cfg).unwrap().outcome == Outcome::Fail {
                    false_fails += 1;
                    break;
                }
            }
        }
        let rate = false_fails as f64 / runs as f64;
        assert!(rate <= cfg.alpha, "false fail rate {rate}");
    }
}
