//! Where observations come from: the Prometheus adapter, batched query planning, and a synthetic
//! exporter for the demo and the tests.
//!
//! The rest of the daemon depends only on [`MetricSource`], so the engine can be fed from real
//! Prometheus, from a fake in tests, or directly from the simulated workload in the demo. Every
//! outcome the engine must treat differently stays distinct: a finite value, NaN/±Inf, an empty
//! result and a failure never collapse into a zero.

pub mod auth;
pub mod config;
pub mod exporter;
pub mod mapping;
pub mod plan;
pub mod prometheus;
pub mod workload;

use crate::sample::{Millis, Sample};
use futures::future::BoxFuture;
use std::collections::BTreeMap;

pub use config::{AuthConfig, PrometheusConfig};
pub use plan::{Key, QueryPlan, Request, SplitLabels};
pub use prometheus::PrometheusSource;

/// Labels of one result series (without the metric name handling: `__name__` is kept if present).
pub type Labels = BTreeMap<String, String>;

/// One series of an instant query result. `value` may be NaN/±Inf: the caller decides what that
/// means (see [`mapping::observation`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub value: f64,
}

/// One series of a range query result, for backtests: samples are already classified
/// (`Value` / `NotFinite`) so a replay sees exactly what a live poll would have seen.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// A range query: `[start, end]` evaluated every `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: Millis,
    pub end: Millis,
    pub step: std::time::Duration,
}

/// Why a query failed. Each variant has a short [`SourceError::reason`] so failures can be
/// counted by class (`backout_query_errors_total{reason}`) and carried in
/// `Observation::Error` without dragging the whole message around.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// No complete answer within the configured HTTP timeout (or Prometheus's own query timeout).
    #[error("query timed out: {detail}")]
    Timeout { detail: String },
    /// Prometheus could not be reached (refused, DNS, TLS handshake).
    #[error("cannot connect to Prometheus: {detail}")]
    Connect { detail: String },
    /// A non-JSON HTTP error, typically from a proxy in front of Prometheus.
    #[error("Prometheus (or a proxy in front of it) answered HTTP {status}: {detail}")]
    HttpStatus { status: u16, detail: String },
    /// Prometheus rejected or failed the query; `kind` is its `errorType` (`bad_data`,
    /// `execution`, ...). `bad_data` is nearly always a PromQL mistake in a policy.
    #[error("Prometheus query error ({kind}): {message}")]
    Promql { kind: String, message: String },
    /// The answer was not a Prometheus API response we understand.
    #[error("cannot parse the Prometheus response: {detail}")]
    Parse { detail: String },
    /// Credentials could not be read (token or password file).
    #[error("{detail}")]
    Auth { detail: String },
    /// The source configuration is unusable (bad URL, unreadable CA file, ...).
    #[error("{detail}")]
    Config { detail: String },
}

impl SourceError {
    /// A short, bounded label for metrics and `Observation::Error`.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Timeout { .. } => "timeout",
            SourceError::Connect { .. } => "connect",
            SourceError::HttpStatus { .. } => "http_status",
            SourceError::Promql { kind, .. } => match kind.as_str() {
                "bad_data" => "bad_data",
                "timeout" => "timeout",
                "execution" => "execution",
                "canceled" => "canceled",
                "unavailable" => "unavailable",
                _ => "promql",
            },
            SourceError::Parse { .. } => "parse",
            SourceError::Auth { .. } => "auth",
            SourceError::Config { .. } => "config",
        }
    }
}

/// Something that answers PromQL. Object safe (boxed futures) so the daemon can hold an
/// `Arc<dyn MetricSource>` and swap real Prometheus for a fake or the simulated workload.
pub trait MetricSource: Send + Sync {
    /// Instant query, evaluated at `at` (or "now" on the server when `None`).
    fn instant<'a>(
        &'a self,
        promql: &'a str,
        at: Option<Millis>,
    ) -> BoxFuture<'a, Result<Vec<Series>, SourceError>>;

    /// Range query, for backtests over recorded history.
    fn range<'a>(
        &'a self,
        promql: &'a str,
        range: Range,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, SourceError>>;
}

/// Runs every query of a plan (concurrently, at most `parallel` in flight; the source's own rate
/// limit still applies) and splits the answers back to per-(service, metric, track) observations.
pub async fn run_plan(
    source: &dyn MetricSource,
    plan: &QueryPlan,
    at: Option<Millis>,
    parallel: usize,
) -> std::collections::HashMap<Key, crate::sample::Observation> {
    use futures::stream::{self, StreamExt};
    let mut results: Vec<Option<Result<Vec<Series>, SourceError>>> = vec![None; plan.len()];
    let answers: Vec<(usize, Result<Vec<Series>, SourceError>)> =
        stream::iter(plan.queries().enumerate())
            .map(|(i, q)| async move { (i, source.instant(q, at).await) })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
    for (i, r) in answers {
        results[i] = Some(r);
    }
    let results: Vec<Result<Vec<Series>, SourceError>> = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(SourceError::Parse {
                    detail: "query result missing".into(),
                })
            })
        })
        .collect();
    plan.split(&results)
}
