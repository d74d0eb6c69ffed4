//! Multi-window, multi-burn-rate SLO alerting (Google SRE workbook, ch. 5 "Alerting on SLOs").
//!
//! Why: a service without a baseline to compare against (or the stable during its bake window)
//! can still be judged against its own error budget. Burn rate = error ratio / (1 - objective);
//! a rule fires only when BOTH its long window (enough evidence) and its short window (still
//! happening now) burn faster than its factor, so alerts are both significant and quick to clear.

use super::sequential::Outcome;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One rule: `factor` x budget burn over `long` AND over `short`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnRule {
    #[serde(with = "humantime_serde")]
    pub long: Duration,
    #[serde(with = "humantime_serde")]
    pub short: Duration,
    pub factor: f64,
}

impl BurnRule {
    pub fn new(long: Duration, short: Duration, factor: f64) -> Self {
        Self {
            long,
            short,
            factor,
        }
    }
}

/// The objective and the rules that guard it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BurnConfig {
    /// Share of good events promised, e.g. 0.999.
    pub objective: f64,
    pub rules: Vec<BurnRule>,
}

impl Default for BurnConfig {
    /// The workbook's paging rules for a 30-day budget: 2% of it in 1 h, 5% in 6 h.
    fn default() -> Self {
        const MIN: u64 = 60;
        const HOUR: u64 = 3600;
        Self {
            objective: 0.999,
            rules: vec![
                BurnRule::new(
                    Duration::from_secs(HOUR),
                    Duration::from_secs(5 * MIN),
                    14.4,
                ),
                BurnRule::new(
                    Duration::from_secs(6 * HOUR),
                    Duration::from_secs(30 * MIN),
                    6.0,
                ),
            ],
        }
    }
}

/// The burn factor that spends `budget_fraction` of the budget of `period` within `window`:
/// e.g. 2% of 30 days in 1 h is 14.4. Lets users state rules in budget terms.
pub fn factor_for_budget_fraction(budget_fraction: f64, window: Duration, period: Duration) -> f64 {
    budget_fraction * period.as_secs_f64() / window.as_secs_f64()
}

/// The error ratio observed over one window; `None` when the window had no data (no traffic or
/// an absent series), which is never read as zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowRatio {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub error_ratio: Option<f64>,
}

/// How one rule fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleEvaluation {
    pub rule: BurnRule,
    pub long_burn: Option<f64>,
    pub short_burn: Option<f64>,
    pub fires: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnVerdict {
    /// Fail when a rule fires; Inconclusive when none fires but one lacked data; else Pass.
    pub outcome: Outcome,
    /// Index into `BurnConfig::rules` of the first rule that fired.
    pub fired: Option<usize>,
    pub rules: Vec<RuleEvaluation>,
    pub explanation: String,
}

/// Evaluates every rule against the windows supplied. A window the caller did not supply counts
/// as missing data for the rules that need it.
pub fn evaluate(cfg: &BurnConfig, windows: &[WindowRatio]) -> BurnVerdict {
    let budget = 1.0 - cfg.objective;
    let burn_over = |w: Duration| -> Option<f64> {
        windows
            .iter()
            .find(|r| r.window == w)
            .and_then(|r| r.error_ratio)
            .filter(|r| r.is_finite() && *r >= 0.0)
            .map(|r| {
                if budget > 0.0 {
                    r / budget
                } else {
                    f64::INFINITY
                }
            })
    };
    let rules: Vec<RuleEvaluation> = cfg
        .rules
        .iter()
        .map(|rule| {
            let long_burn = burn_over(rule.long);
            let short_burn = burn_over(rule.short);
            let fires = matches!((long_burn, short_burn),
                (Some(l), Some(s)) if l >= rule.factor && s >= rule.factor);
            RuleEvaluation {
                rule: rule.clone(),
                long_burn,
                short_burn,
                fires,
            }
        })
        .collect();
    let fired = rules.iter().position(|r| r.fires);
    let missing = rules
        .iter()
        .any(|r| r.long_burn.is_none() || r.short_burn.is_none());
    let describe = |r: &RuleEvaluation| {
        let show = |b: Option<f64>| b.map_or("no data".to_string(), |b| format!("{b:.2}x"));
        format!(
            "burn {} over {} and {} over {} (needs {}x on both)",
            show(r.long_burn),
            humantime::format_duration(r.rule.long),
            show(r.short_burn),
            humantime::format_duration(r.rule.short),
            r.rule.factor
        )
    };
    let (outcome, explanation) = match fired {
        Some(i) => (
            Outcome::Fail,
            format!("error budget burning: {}", describe(&rules[i])),
        ),
        None if missing => (
            Outcome::Inconclusive,
            format!(
                "no rule fired but some windows lack data: {}",
                rules.iter().map(describe).collect::<Vec<_>>().join("; ")
            ),
        ),
        None => (
            Outcome::Pass,
            format!(
                "within budget: {}",
                rules.iter().map(describe).collect::<Vec<_>>().join("; ")
            ),
        ),
    };
    BurnVerdict {
        outcome,
        fired,
        rules,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;
    const HOUR: u64 = 3600;

    fn w(secs: u64, ratio: Option<f64>) -> WindowRatio {
        WindowRatio {
            window: Duration::from_secs(secs),
            error_ratio: ratio,
        }
    }

    #[test]
    fn workbook_factors_follow_from_budget_fractions() {
        let month = Duration::from_secs(30 * 24 * HOUR);
        let f1 = factor_for_budget_fraction(0.02, Duration::from_secs(HOUR), month);
        let f6 = factor_for_budget_fraction(0.05, Duration::from_secs(6 * HOUR), month);
        let f3d = factor_for_budget_fraction(0.10, Duration::from_secs(72 * HOUR), month);
        assert!((f1 - 14.4).abs() < 1e-9);
        assert!((f6 - 6.0).abs() < 1e-9);
        assert!((f3d - 1.0).abs() < 1e-9);
    }

    #[test]
    fn fast_burn_fires_the_one_hour_rule() {
        // 99.9% SLO: 1.5% errors is a 15x burn, above 14.4 on both windows.
        let v = evaluate(
            &BurnConfig::default(),
            &[
                w(HOUR, Some(0.015)),
                w(5 * MIN, Some(0.02)),
                w(6 * HOUR, Some(0.003)),
                w(30 * MIN, Some(0.01)),
            ],
        );
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.explanation);
        assert_eq!(v.fired, Some(0));
        assert!((v.rules[0].long_burn.unwrap() - 15.0).abs() < 1e-9);
    }

    #[test]
    fn a_burst_that_has_stopped_does_not_fire() {
        // The long window still shows the burst, the short one shows it is over.
        let v = evaluate(
            &BurnConfig::default(),
            &[
                w(HOUR, Some(0.02)),
                w(5 * MIN, Some(0.0005)),
                w(6 * HOUR, Some(0.004)),
                w(30 * MIN, Some(0.002)),
            ],
        );
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation);
        assert_eq!(v.fired, None);
    }

    #[test]
    fn slow_burn_fires_the_six_hour_rule() {
        // 0.7% errors = 7x: below 14.4, above 6.
        let v = evaluate(
            &BurnConfig::default(),
            &[
                w(HOUR, Some(0.007)),
                w(5 * MIN, Some(0.007)),
                w(6 * HOUR, Some(0.007)),
                w(30 * MIN, Some(0.007)),
            ],
        );
        assert_eq!(v.fired, Some(1), "{}", v.explanation);
    }

    #[test]
    fn missing_windows_hold_rather_than_pass_or_fail() {
        let v = evaluate(
            &BurnConfig::default(),
            &[w(HOUR, Some(0.0001)), w(5 * MIN, None)],
        );
        assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.explanation);
        assert!(v.explanation.contains("no data"));
    }

    #[test]
    fn rules_deserialize_from_policy_text() {
        let cfg: BurnConfig = toml::from_str(
            "objective = 0.99\n[[rules]]\nlong = \"1h\"\nshort = \"5m\"\nfactor = 14.4\n",
        )
        .unwrap();
        assert_eq!(cfg.rules[0].short, Duration::from_secs(300));
        assert_eq!(cfg.objective, 0.99);
    }
}
