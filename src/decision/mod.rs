//! The decision engine: from timestamped samples to a verdict, with no I/O and no clock.
//!
//! Flow per service: `window` (samples per metric and track) -> `rule` (one evaluation of one
//! metric: statistic, baseline comparison, levels, missing data, traffic floor) -> `state`
//! (`for` / `clear_for` per level, warm-up) -> `verdict` (worst metric, reasons, sticky
//! rollback). [`Engine`] ties them together for one service and one canary revision.
//! Semantics are documented for users in docs/decision.md.

mod cause;
mod counter;
pub mod dispersion;
mod elevation;
mod engine;
pub mod rule;
mod sequential;
mod served;
pub mod shared;
mod shared_burn;
mod slot;
pub mod state;
mod statistic;
pub mod verdict;
pub mod window;
mod worse;

pub use crate::stats::threshold_text;
pub use engine::Engine;
pub use rule::{Breach, Missing, Outcome, Reading, Rule, Test};
pub use sequential::{detector_alpha, main_alpha, DETECTOR_SHARE};
pub use state::{Alert, Health, MetricState};
pub use verdict::{MetricStatus, Phase, Reason, Stage, Verdict};
pub use window::Window;

use std::path::PathBuf;

/// Errors the engine reports to its caller (the shell); each is a wiring mistake the message
/// explains how to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecisionError {
    #[error(
        "{file}: service `{service}` has no metric named `{metric}`; observe only metrics listed \
         under [[metric]] in that policy (check the name for typos, or reload the policy)"
    )]
    UnknownMetric {
        file: PathBuf,
        service: String,
        metric: String,
    },
}
