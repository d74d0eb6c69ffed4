//! Every query a policy needs per poll, as one list: the daemon, the demo and `backtest` all
//! sample exactly these, so what the engine sees cannot differ between them.

use super::defaults;
use super::kinds::Kind;
use super::model::Policy;
use super::template::render;
use crate::sample::Track;
use serde::Serialize;
use std::time::Duration;

/// What one query's answer is for the engine. It travels with the answer from the query plan to
/// [`crate::decision::Engine::observe_input`] (in [`crate::source::plan::Key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// The value a threshold or Mann-Whitney metric judges.
    Value { metric: String },
    /// A sequential metric's cumulative bad-event counter.
    Events { metric: String },
    /// A sequential metric's cumulative request counter.
    Total { metric: String },
    /// A burn-rate metric's error ratio over one rule window.
    Ratio {
        metric: String,
        #[serde(with = "humantime_serde")]
        window: Duration,
    },
    /// `analysis.traffic_query`: requests per second, for `min_traffic` floors.
    Traffic,
}

/// Reserved name of the traffic query in [`Input::key`].
pub const TRAFFIC_KEY: &str = "__traffic";

/// A metric name stands for that metric's value (tests and ad-hoc plans name keys this way).
impl From<&str> for Input {
    fn from(metric: &str) -> Self {
        Input::Value {
            metric: metric.to_string(),
        }
    }
}

impl From<String> for Input {
    fn from(metric: String) -> Self {
        Input::Value { metric }
    }
}

impl Input {
    /// A name unique within one policy, for messages (answers are matched by the typed input).
    pub fn key(&self) -> String {
        match self {
            Input::Value { metric } => metric.clone(),
            Input::Events { metric } => format!("{metric}#events"),
            Input::Total { metric } => format!("{metric}#total"),
            Input::Ratio { metric, window } => {
                format!(
                    "{metric}#ratio@{}",
                    super::template::promql_duration(*window)
                )
            }
            Input::Traffic => TRAFFIC_KEY.to_string(),
        }
    }

    /// The metric this input belongs to (`None` for traffic).
    pub fn metric(&self) -> Option<&str> {
        match self {
            Input::Value { metric }
            | Input::Events { metric }
            | Input::Total { metric }
            | Input::Ratio { metric, .. } => Some(metric),
            Input::Traffic => None,
        }
    }
}

/// One query to send for one track at every poll.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feed {
    pub input: Input,
    pub track: Track,
    pub promql: String,
}

/// The queries `policy` needs per poll, both tracks, in policy order. Burn-rate metrics need
/// one query per distinct rule window; sequential metrics two counters.
pub fn feeds(policy: &Policy) -> Vec<Feed> {
    let mut out = Vec::new();
    for track in Track::ALL {
        for m in &policy.metrics {
            let window = defaults::effective(m, policy.analysis.interval).window;
            let query = m.query.as_deref().unwrap_or_default();
            let mut push = |input: Input, q: &str, w: Duration| {
                out.push(Feed {
                    input,
                    track,
                    promql: render(policy, q, w, track),
                });
            };
            let metric = m.name.clone();
            match m.kind() {
                Kind::Threshold | Kind::MannWhitney => {
                    push(Input::Value { metric }, query, window);
                }
                Kind::Sequential => {
                    if let Some(s) = &m.sequential {
                        push(
                            Input::Events {
                                metric: metric.clone(),
                            },
                            &s.events,
                            window,
                        );
                        push(Input::Total { metric }, &s.total, window);
                    }
                }
                Kind::BurnRate => {
                    if let Some(b) = &m.burn_rate {
                        for w in burn_windows(&b.config()) {
                            push(
                                Input::Ratio {
                                    metric: metric.clone(),
                                    window: w,
                                },
                                query,
                                w,
                            );
                        }
                    }
                }
            }
        }
        if let Some(q) = &policy.analysis.traffic_query {
            let window = policy
                .metrics
                .iter()
                .filter_map(|m| m.window)
                .max()
                .unwrap_or(policy.analysis.interval);
            out.push(Feed {
                input: Input::Traffic,
                track,
                promql: render(policy, q, window, track),
            });
        }
    }
    out
}

/// Distinct windows of a burn-rate configuration, sorted (each is queried once).
pub fn burn_windows(cfg: &crate::stats::burn_rate::BurnConfig) -> Vec<Duration> {
    let mut w: Vec<Duration> = cfg.rules.iter().flat_map(|r| [r.long, r.short]).collect();
    w.sort();
    w.dedup();
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Level, MetricSpec};

    #[test]
    fn each_kind_asks_for_what_its_statistic_needs() {
        let p = Policy::test()
            .with_metric(MetricSpec::test("latency").critical(Level::above(1.0)))
            .with_metric(MetricSpec::test("errors").sequential(
                "sum(errors_total{track=\"{{track}}\"})",
                "sum(requests_total{track=\"{{track}}\"})",
            ))
            .with_metric(
                MetricSpec::test("slo")
                    .query("sum(rate(e{track=\"{{track}}\"}[{{window}}]))")
                    .burn_rate(0.999),
            );
        let f = feeds(&p);
        let canary: Vec<_> = f.iter().filter(|f| f.track == Track::Canary).collect();
        let keys: Vec<String> = canary.iter().map(|f| f.input.key()).collect();
        assert_eq!(
            keys,
            [
                "latency",
                "errors#events",
                "errors#total",
                "slo#ratio@5m",
                "slo#ratio@30m",
                "slo#ratio@1h",
                "slo#ratio@6h"
            ]
        );
        assert_eq!(canary[1].promql, "sum(errors_total{track=\"canary\"})");
        assert_eq!(canary[6].promql, "sum(rate(e{track=\"canary\"}[6h]))");
        assert_eq!(f.len(), 2 * keys.len());
    }
}
