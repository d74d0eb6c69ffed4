//! Decision statistics: pure functions that turn counts and samples into evidence.
//!
//! Each test here answers one question a rollback decision needs, with its error rate stated:
//! `sequential` (is the canary's event rate worse than the stable's, anytime-valid),
//! `burn_rate` (is the error budget burning too fast), and `mann_whitney` (is a continuous metric
//! shifted, fixed-horizon). `mixture` holds the Bayes-factor arithmetic they share.

pub mod burn_rate;
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

pub(crate) fn check_count(what: &'static str, value: f64) -> Result<f64, StatsError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(StatsError::NegativeOrNotFinite { what, value })
    }
}
