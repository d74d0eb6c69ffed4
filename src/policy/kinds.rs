//! Statistical metric kinds: what a metric may be besides a value checked against levels.
//!
//! A `[[metric]]` with none of these tables is a threshold metric (levels on a value). One of
//! the tables makes it a statistical test instead:
//!
//! - `[metric.sequential]`: canary vs stable on event counts (errors, requests slower than a
//!   histogram bucket), anytime-valid, so polling more often never adds false rollbacks.
//! - `[metric.burn_rate]`: multi-window, multi-burn-rate SLO rules on the judged track's own
//!   error ratio; works in the bake window and for services without a baseline.
//! - `[metric.mann_whitney]`: canary vs stable on a continuous metric (the polled values over
//!   `stat_window`), robust to outliers, ties and all-zero baselines.
//!
//! Unset fields take the defaults the decision-quality benchmark chose (docs/decision-quality.md).

use crate::stats::burn_rate::{BurnConfig, BurnRule};
use crate::stats::mann_whitney::MannWhitneyConfig;
use crate::stats::sequential::SequentialConfig;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// `[metric.sequential]`: the two counters the test reads per track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequentialSpec {
    /// Cumulative bad events of a track (a counter, or a sum of counters), e.g.
    /// `sum(http_requests_total{code=~"5..",track="{{track}}"})`. Template.
    pub events: Arc<str>,
    /// Cumulative requests the events are counted from. Template.
    pub total: Arc<str>,
    /// Bound on the false-rollback probability of this metric over the whole analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// How many times worse than the stable the canary may be before it is a regression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// Canary requests needed before the test can pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_exposure: Option<f64>,
    /// During warm-up only overwhelming evidence (a Bayes factor of 1/warmup_alpha on counts
    /// since the canary started) rolls back; default alpha / 1000, 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_alpha: Option<f64>,
    /// The rate ratio's upper bound must reach this to pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_ratio: Option<f64>,
    /// The change detector (`stats::detector`) catches a regression hours into a long canary
    /// as fast as one at its start; it gets a quarter of alpha for canaries up to this long (beyond,
    /// its bound grows linearly). Default 24h; `0s` turns it off (then the whole alpha goes to
    /// the test from warm-up).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub horizon: Option<Duration>,
}

/// Default `horizon`: a day covers canaries that are left running overnight.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(24 * 3600);

impl SequentialSpec {
    pub fn horizon(&self) -> Duration {
        self.horizon.unwrap_or(DEFAULT_HORIZON)
    }

    pub fn warmup_alpha(&self) -> f64 {
        self.warmup_alpha
            .unwrap_or(self.alpha.unwrap_or(SequentialConfig::default().alpha) / 1000.0)
    }

    /// The test's configuration with unset fields at their defaults.
    pub fn config(&self) -> SequentialConfig {
        let d = SequentialConfig::default();
        SequentialConfig {
            alpha: self.alpha.unwrap_or(d.alpha),
            margin: self.margin.unwrap_or(d.margin),
            concentrations: d.concentrations,
            min_exposure: self.min_exposure.unwrap_or(d.min_exposure),
            pass_ratio: self.pass_ratio.unwrap_or(d.pass_ratio),
            negligible_rate: d.negligible_rate,
            pass_alpha: None,
        }
    }
}

/// `[metric.burn_rate]`: the metric's `query` is an error ratio over `{{window}}`, sent once per
/// distinct window of the rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnRateSpec {
    /// Share of good events promised, e.g. 0.999.
    pub objective: f64,
    /// `[[metric.burn_rate.rule]]` tables; default: 14.4x over 1h and 5m, 6x over 6h and 30m.
    #[serde(rename = "rule", default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<BurnRule>>,
}

impl BurnRateSpec {
    pub fn config(&self) -> BurnConfig {
        BurnConfig {
            objective: self.objective,
            rules: self
                .rules
                .clone()
                .unwrap_or_else(|| BurnConfig::default().rules),
        }
    }
}

/// `[metric.mann_whitney]`: compares the canary's and the stable's polled values over
/// `stat_window`. A fixed-horizon test: its alpha holds for one look, so the engine requires a
/// full `stat_window` of samples and a significant difference at every evaluation in `for`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MannWhitneySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Relative increase of the canary's mean over the stable's that matters (0.25 = 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<usize>,
}

impl MannWhitneySpec {
    pub fn config(&self) -> MannWhitneyConfig {
        let d = MannWhitneyConfig::default();
        MannWhitneyConfig {
            confidence: self.confidence.unwrap_or(d.confidence),
            tolerance: self.tolerance.unwrap_or(d.tolerance),
            min_samples: self.min_samples.unwrap_or(d.min_samples),
        }
    }
}

/// Which judgement a metric makes, derived from which table it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Threshold,
    Sequential,
    BurnRate,
    MannWhitney,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Threshold => "threshold",
            Kind::Sequential => "sequential",
            Kind::BurnRate => "burn_rate",
            Kind::MannWhitney => "mann_whitney",
        }
    }
}
