//! Decision statistics: pure functions that turn counts and samples into evidence.
//!
//! Each test here answers one question a rollback decision needs, with its error rate stated:
//! `sequential` (is the canary's event rate worse than the stable's, anytime-valid),
//! `burn_rate` (is the error budget burning too fast), and `mann_whitney` (is a continuous metric
//! shifted, fixed-horizon). `mixture` holds the Bayes-factor arithmetic they share.

pub mod burn_rate;
pub mod detector;
pub mod mann_whitney;
pub mod mixture;
pub mod sequential;

/// Why a statistic could not be computed. The caller usually maps this to `Inconclusive`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("{what} must be a finite number >= 0, got {value}")]
    NegativeOrNotFinite { what: &'static str, value: f64 },
    #[error("events ({events}) exceed the total ({total}) they are counted from")]
    EventsExceedTotal { events: f64, total: f64 },
    #[error("the null proportion theta0 must lie strictly between 0 and 1, got {0}")]
    ThetaOutOfRange(f64),
    #[error("alpha must lie strictly between 0 and 1, got {0}; fix the policy's `alpha`")]
    AlphaOutOfRange(f64),
    #[error("the prior needs at least one concentration > 0; fix the policy's `concentrations`")]
    NoConcentration,
    #[error("{0}")]
    Numeric(String),
}

/// A test's threshold for people: `1/alpha` is rarely a round float (1/0.0099 is
/// 101.01010101010101), and explanations, logs, backtest lines and `explain` should not print
/// the noise. Two decimals from 1 up, so a shown threshold is never off by more than 0.005.
pub fn threshold_text(v: f64) -> String {
    let text = if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

pub(crate) fn check_count(what: &'static str, value: f64) -> Result<f64, StatsError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(StatsError::NegativeOrNotFinite { what, value })
    }
}

#[cfg(test)]
mod tests {
    use super::threshold_text;

    #[test]
    fn thresholds_print_without_float_noise() {
        assert_eq!(threshold_text(1.0 / 0.0099), "101.01");
        assert_eq!(threshold_text(1.0 / 0.00001), "100000");
        assert_eq!(threshold_text(100.0), "100");
        assert_eq!(threshold_text(14.4), "14.4");
        assert_eq!(threshold_text(0.98), "0.98");
    }
}
