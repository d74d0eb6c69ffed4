//! A [`MetricSource`] wrapper that reports every query's latency and outcome.
//!
//! The telemetry wants a query latency histogram and errors by reason, counted per query sent
//! (not per service that shared a batched query). Wrapping the source keeps the adapter free of
//! metrics code and works for any source, fakes included.

use super::{MetricSource, Range, RangeSeries, Series, SourceError, SplitLabels, SplitSeries};
use crate::sample::Millis;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which API a query used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    Instant,
    Range,
}

/// Receives one call per finished query. `elapsed` includes any wait for the rate limiter: it
/// is the latency the control loop experiences. `outcome` is the number of series or the error.
pub trait QueryObserver: Send + Sync {
    fn observe(&self, kind: QueryKind, elapsed: Duration, outcome: Result<usize, &SourceError>);
}

/// `inner`, reporting to `observer`.
pub struct Instrumented<S> {
    inner: S,
    observer: Arc<dyn QueryObserver>,
}

impl<S: MetricSource> Instrumented<S> {
    pub fn new(inner: S, observer: Arc<dyn QueryObserver>) -> Self {
        Self { inner, observer }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: MetricSource> Instrumented<S> {
    /// Runs `query`, reporting its latency and outcome (series count or error) as `kind`.
    async fn timed<T>(
        &self,
        kind: QueryKind,
        query: impl std::future::Future<Output = Result<Vec<T>, SourceError>>,
    ) -> Result<Vec<T>, SourceError> {
        let start = Instant::now();
        let r = query.await;
        self.observer
            .observe(kind, start.elapsed(), r.as_ref().map(Vec::len));
        r
    }
}

impl<S: MetricSource> MetricSource for Instrumented<S> {
    fn instant<'a>(
        &'a self,
        promql: &'a str,
        at: Option<Millis>,
    ) -> BoxFuture<'a, Result<Vec<Series>, SourceError>> {
        self.timed(QueryKind::Instant, self.inner.instant(promql, at))
            .boxed()
    }

    fn range<'a>(
        &'a self,
        promql: &'a str,
        range: Range,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, SourceError>> {
        self.timed(QueryKind::Range, self.inner.range(promql, range))
            .boxed()
    }

    fn instant_split<'a>(
        &'a self,
        promql: &'a str,
        at: Option<Millis>,
        by: &'a SplitLabels,
    ) -> BoxFuture<'a, Result<Vec<SplitSeries>, SourceError>> {
        self.timed(QueryKind::Instant, self.inner.instant_split(promql, at, by))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Track;
    use crate::source::{run_plan, Key, QueryPlan, Request};
    use std::sync::Mutex;

    struct Failing;

    impl MetricSource for Failing {
        fn instant<'a>(
            &'a self,
            _promql: &'a str,
            _at: Option<Millis>,
        ) -> BoxFuture<'a, Result<Vec<Series>, SourceError>> {
            async {
                Err(SourceError::Connect {
                    detail: "refused".into(),
                })
            }
            .boxed()
        }

        fn range<'a>(
            &'a self,
            _promql: &'a str,
            _range: Range,
        ) -> BoxFuture<'a, Result<Vec<RangeSeries>, SourceError>> {
            async { Ok(vec![]) }.boxed()
        }
    }

    #[derive(Default)]
    struct Record(Mutex<Vec<(QueryKind, Result<usize, &'static str>)>>);

    impl QueryObserver for Record {
        fn observe(&self, kind: QueryKind, _: Duration, outcome: Result<usize, &SourceError>) {
            self.0
                .lock()
                .unwrap()
                .push((kind, outcome.map_err(SourceError::reason)));
        }
    }

    #[tokio::test]
    async fn errors_are_counted_per_query_sent_not_per_service() {
        let record = Arc::new(Record::default());
        let source = Instrumented::new(Failing, record.clone());
        let plan = QueryPlan::build((0..50).flat_map(|i| {
            Track::ALL.map(|t| {
                Request::new(
                    Key::new(format!("s{i}"), "errors", t),
                    "sum by (service, track) (x)",
                )
            })
        }));
        let obs = run_plan(&source, &plan, None, 4).await;
        assert_eq!(obs.len(), 100);
        let range = Range {
            start: 0,
            end: 60_000,
            step: Duration::from_secs(15),
        };
        source.range("x", range).await.unwrap();
        let seen = record.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (QueryKind::Instant, Err("connect")),
                (QueryKind::Range, Ok(0))
            ]
        );
    }
}
