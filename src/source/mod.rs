//! Where observations come from: the Prometheus adapter and batched query planning.
//!
//! The rest of the daemon depends only on [`MetricSource`], so the engine can be fed from real
//! Prometheus or from a fake in tests; the demo without Prometheus reads the simulated workload's
//! counters directly (`demo::workload::Delta`, behind the `demo` feature). Every
//! outcome the engine must treat differently stays distinct: a finite value, NaN/±Inf, an empty
//! result and a failure never collapse into a zero.

pub mod answer;
pub mod auth;
pub mod config;
pub mod instrumented;
pub mod mapping;
pub mod plan;
pub mod prometheus;

use crate::sample::{Millis, Sample, Track};
use futures::future::BoxFuture;
use std::collections::BTreeMap;

pub use config::PrometheusConfig;
pub use plan::{Answer, Key, QueryPlan, Request, SplitLabels};
pub use prometheus::PrometheusSource;

/// Labels of one result series; sorted so results compare and print deterministically.
/// `__name__` is included when Prometheus returns it.
pub type Labels = BTreeMap<String, String>;

/// One series of an instant query result. `value` may be NaN/±Inf: the caller decides what that
/// means (see [`mapping::observation`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub value: f64,
}

/// One series of a batched instant answer, reduced to what a plan splits it by: the service
/// label's value and the track (see [`MetricSource::instant_split`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSeries {
    pub service: Box<str>,
    pub track: Track,
    pub value: f64,
}

impl SplitSeries {
    /// `series` reduced to `by`'s labels; series lacking either (or whose track label is not a
    /// track name) are left out, as no key can ask for them.
    pub fn from_series(series: Vec<Series>, by: &SplitLabels) -> Vec<SplitSeries> {
        series
            .into_iter()
            .filter_map(|mut s| {
                let track = plan::track_named(s.labels.get(&*by.track)?)?;
                let service = s.labels.remove(&*by.service)?.into_boxed_str();
                Some(SplitSeries {
                    service,
                    track,
                    value: s.value,
                })
            })
            .collect()
    }
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
    /// Every value [`SourceError::reason`] can return, plus the planner's own
    /// (`multiple_series`, `missing_result`): lets telemetry pre-register its label set.
    pub const REASONS: [&'static str; 13] = [
        "timeout",
        "connect",
        "http_status",
        "bad_data",
        "execution",
        "canceled",
        "unavailable",
        "promql",
        "parse",
        "auth",
        "config",
        mapping::MULTIPLE_SERIES,
        plan::MISSING_RESULT,
    ];

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

    /// Instant query whose answer is only wanted split by `by`'s two labels (a batched query).
    /// The default asks [`MetricSource::instant`] and reduces; the Prometheus adapter reads the
    /// response straight into this, never holding the other labels (the batched answers were
    /// the daemon's largest heap item at 10,000 services).
    fn instant_split<'a>(
        &'a self,
        promql: &'a str,
        at: Option<Millis>,
        by: &'a SplitLabels,
    ) -> BoxFuture<'a, Result<Vec<SplitSeries>, SourceError>> {
        Box::pin(async move {
            let series = self.instant(promql, at).await?;
            Ok(SplitSeries::from_series(series, by))
        })
    }
}

/// Lets a shared source (`Arc<dyn MetricSource>`) be wrapped, e.g. by
/// [`instrumented::Instrumented`], and handed to several tasks.
impl<T: MetricSource + ?Sized> MetricSource for std::sync::Arc<T> {
    fn instant<'a>(
        &'a self,
        promql: &'a str,
        at: Option<Millis>,
    ) -> BoxFuture<'a, Result<Vec<Series>, SourceError>> {
        (**self).instant(promql, at)
    }

    fn range<'a>(
        &'a self,
        promql: &'a str,
        range: Range,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, SourceError>> {
        (**self).range(promql, range)
    }

    fn instant_split<'a>(
        &'a self,
        promql: &'a str,
        at: Option<Millis>,
        by: &'a SplitLabels,
    ) -> BoxFuture<'a, Result<Vec<SplitSeries>, SourceError>> {
        (**self).instant_split(promql, at, by)
    }
}

/// Sends query `i` of `plan`: split at the source when every target of it is split by the same
/// labels ([`QueryPlan::split_only`]), whole otherwise.
pub async fn ask(
    source: &dyn MetricSource,
    plan: &QueryPlan,
    i: usize,
    at: Option<Millis>,
) -> Result<Answer, SourceError> {
    let Some(promql) = plan.query(i) else {
        return Err(SourceError::Config {
            detail: format!("query {i} is not in the plan"),
        });
    };
    match plan.split_only(i) {
        Some(by) => source
            .instant_split(promql, at, by)
            .await
            .map(Answer::Split),
        None => source.instant(promql, at).await.map(Answer::Series),
    }
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
    let mut answers: Vec<(usize, Result<Answer, SourceError>)> = stream::iter(0..plan.len())
        .map(|i| async move { (i, ask(source, plan, i, at).await) })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    // Every index appears exactly once; restore plan order for `split_answers`.
    answers.sort_by_key(|(i, _)| *i);
    let results: Vec<Result<Answer, SourceError>> = answers.into_iter().map(|(_, r)| r).collect();
    plan.split_answers(&results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Observation, Track};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers every query with one series per (service, track) for `services`; counts queries.
    struct Fake {
        services: usize,
        sent: AtomicUsize,
    }

    impl MetricSource for Fake {
        fn instant<'a>(
            &'a self,
            promql: &'a str,
            _at: Option<Millis>,
        ) -> BoxFuture<'a, Result<Vec<Series>, SourceError>> {
            self.sent.fetch_add(1, Ordering::SeqCst);
            let out = if promql.contains("broken") {
                Err(SourceError::Promql {
                    kind: "bad_data".into(),
                    message: "parse error".into(),
                })
            } else {
                Ok((0..self.services)
                    .flat_map(|i| {
                        Track::ALL.map(|t| Series {
                            labels: [("service", format!("s{i}")), ("track", t.to_string())]
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v))
                                .collect(),
                            value: i as f64,
                        })
                    })
                    .collect())
            };
            Box::pin(async move { out })
        }

        fn range<'a>(
            &'a self,
            _promql: &'a str,
            _range: Range,
        ) -> BoxFuture<'a, Result<Vec<RangeSeries>, SourceError>> {
            Box::pin(async { Ok(vec![]) })
        }
    }

    #[tokio::test]
    async fn a_cycle_for_500_services_sends_one_query_per_batched_template() {
        let fake = Fake {
            services: 500,
            sent: AtomicUsize::new(0),
        };
        let templates = [
            ("errors", "sum by (service, track) (rate(e[1m]))"),
            ("latency", "max by (service, track) (l)"),
            ("bad", "sum by (service, track) (broken"),
        ];
        let requests = (0..500).flat_map(|i| {
            templates.iter().flat_map(move |(m, q)| {
                Track::ALL.map(|t| Request::new(Key::new(format!("s{i}"), *m, t), *q))
            })
        });
        let plan = QueryPlan::build(requests);
        let obs = run_plan(&fake, &plan, Some(0), 8).await;
        assert_eq!(fake.sent.load(Ordering::SeqCst), 3);
        assert_eq!(obs.len(), 500 * 3 * 2);
        assert_eq!(
            obs[&Key::new("s42", "latency", Track::Canary)],
            Observation::Value(42.0)
        );
        assert_eq!(
            obs[&Key::new("s7", "bad", Track::Stable)],
            Observation::Error("bad_data".into())
        );
    }

    #[tokio::test]
    async fn a_shared_trait_object_source_can_be_instrumented() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<PrometheusSource>();
        let src: std::sync::Arc<dyn MetricSource> = std::sync::Arc::new(Fake {
            services: 3,
            sent: AtomicUsize::new(0),
        });
        let seen = std::sync::Arc::new(CountingObserver::default());
        let wrapped = instrumented::Instrumented::new(src.clone(), seen.clone());
        let series = wrapped.instant("q", None).await.unwrap();
        assert_eq!(series.len(), 6);
        assert_eq!(seen.0.load(Ordering::SeqCst), 6);
    }

    /// Sums the series counts it is told about.
    #[derive(Default)]
    struct CountingObserver(AtomicUsize);

    impl instrumented::QueryObserver for CountingObserver {
        fn observe(
            &self,
            _: instrumented::QueryKind,
            _: std::time::Duration,
            outcome: Result<usize, &SourceError>,
        ) {
            self.0.fetch_add(outcome.unwrap_or(0), Ordering::SeqCst);
        }
    }

    #[test]
    fn every_error_reason_is_listed() {
        let all = [
            SourceError::Timeout {
                detail: String::new(),
            },
            SourceError::Connect {
                detail: String::new(),
            },
            SourceError::HttpStatus {
                status: 502,
                detail: String::new(),
            },
            SourceError::Parse {
                detail: String::new(),
            },
            SourceError::Auth {
                detail: String::new(),
            },
            SourceError::Config {
                detail: String::new(),
            },
        ];
        for e in all {
            assert!(SourceError::REASONS.contains(&e.reason()), "{}", e.reason());
        }
    }
}
