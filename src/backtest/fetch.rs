//! The backtest's only I/O: one range query per distinct rendered query (split in chunks only
//! when the window has more points than Prometheus returns per query).

use super::replay::History;
use super::schedule::Schedule;
use super::BacktestError;
use crate::source::{MetricSource, Range, RangeSeries, SourceError};
use futures::stream::{self, StreamExt};

/// Range queries in flight at once: enough to hide latency, few enough not to load a shared
/// Prometheus with a burst of heavy queries (the source's rate limit applies too).
pub const PARALLEL: usize = 4;

/// One range query's answer: query index, PromQL, range, result.
type Answer<'a> = (usize, &'a str, Range, Result<Vec<RangeSeries>, SourceError>);

/// Fetches every query over every range of `schedule`. The first failure (in query order) fails
/// the backtest: a replay on partial history would report verdicts Prometheus never supported.
pub async fn fetch(
    source: &dyn MetricSource,
    queries: &[String],
    schedule: &Schedule,
    parallel: usize,
) -> Result<History, BacktestError> {
    let ranges = schedule.ranges();
    let jobs: Vec<(usize, &str, Range)> = queries
        .iter()
        .enumerate()
        .flat_map(|(i, q)| ranges.iter().map(move |r| (i, q.as_str(), *r)))
        .collect();
    let mut answers: Vec<Answer<'_>> = stream::iter(jobs)
        .map(|(i, q, r)| async move { (i, q, r, source.range(q, r).await) })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    answers.sort_by_key(|(i, _, r, _)| (*i, r.start));
    let mut history = History::new();
    for (_, promql, _, answer) in answers {
        match answer {
            Ok(series) => history.insert(promql, series),
            Err(error) => {
                return Err(BacktestError::Query {
                    promql: promql.to_string(),
                    reason: error.reason(),
                    error,
                })
            }
        }
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::Mode;
    use crate::policy::{Level, MetricSpec, Policy};
    use crate::sample::{Millis, Sample};
    use crate::source::Series;
    use futures::future::BoxFuture;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Answers range queries with one series holding a point at every step; fails `broken`.
    #[derive(Default)]
    struct Fake {
        asked: Mutex<Vec<(String, Range)>>,
    }

    impl MetricSource for Fake {
        fn instant<'a>(
            &'a self,
            _promql: &'a str,
            _at: Option<Millis>,
        ) -> BoxFuture<'a, Result<Vec<Series>, SourceError>> {
            Box::pin(async { Ok(vec![]) })
        }

        fn range<'a>(
            &'a self,
            promql: &'a str,
            range: Range,
        ) -> BoxFuture<'a, Result<Vec<RangeSeries>, SourceError>> {
            self.asked.lock().unwrap().push((promql.to_string(), range));
            let step = range.step.as_millis() as Millis;
            let out = if promql.contains("broken") {
                Err(SourceError::Promql {
                    kind: "bad_data".into(),
                    message: "parse error".into(),
                })
            } else {
                Ok(vec![RangeSeries {
                    labels: Default::default(),
                    samples: (0..=(range.end - range.start) / step)
                        .map(|k| Sample::value(range.start + k * step, 1.0))
                        .collect(),
                }])
            };
            Box::pin(async move { out })
        }
    }

    fn policy(query: &str) -> Policy {
        Policy::test().with_metric(
            MetricSpec::test("errors")
                .query(query)
                .critical(Level::above(1.0)),
        )
    }

    #[tokio::test]
    async fn one_range_query_per_distinct_query_covering_history_and_window() {
        let p = policy("sum by (service, track) (rate(e[1m]))");
        let s = Schedule::new(&p, 0, 3_600_000, None, Mode::Canary).unwrap();
        let fake = Fake::default();
        let q = crate::backtest::queries(&p);
        let h = fetch(&fake, &q, &s, PARALLEL).await.unwrap();
        let asked = fake.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(asked[0].1.start, s.start());
        assert_eq!(asked[0].1.end, 3_600_000);
        assert_eq!(asked[0].1.step, Duration::from_secs(10));
        assert_eq!(h.get(&q[0]).unwrap()[0].samples.len(), s.instants().count());
    }

    #[tokio::test]
    async fn a_failed_query_fails_the_backtest_naming_it() {
        let p = policy("broken{track=\"{{track}}\"}");
        let s = Schedule::new(&p, 0, 600_000, None, Mode::Canary).unwrap();
        let e = fetch(
            &Fake::default(),
            &crate::backtest::queries(&p),
            &s,
            PARALLEL,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("bad_data") && e.contains("broken{track=\"canary\"}"),
            "{e}"
        );
    }
}
