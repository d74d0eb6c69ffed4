//! Where a cycle's observations come from: real Prometheus (batched plan), or the demo's
//! simulated workload read directly when no Prometheus is available.

use crate::sample::{Millis, Observation};
use crate::source::instrumented::{QueryKind, QueryObserver};
use crate::source::plan::{Key, QueryPlan, Request};
use crate::source::{MetricSource, SourceError};
use crate::telemetry::{Health, Metrics, ReasonLabels};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;

/// Answers every request of one cycle. Missing keys are treated as `Absent` by the caller.
pub trait Sampler: Send + Sync {
    fn sample<'a>(
        &'a self,
        requests: Vec<Request>,
        now: Millis,
    ) -> BoxFuture<'a, HashMap<Key, Observation>>;
}

/// Step 2 of a cycle: one sampler call for every request of the batch (none without requests).
/// Prometheus counts as reachable unless every query failed. The run loop spawns it as its own
/// task (`pipeline`), `Daemon::cycle` awaits it; it borrows nothing of the daemon's.
pub(super) async fn fetch(
    sampler: &dyn Sampler,
    health: &Health,
    requests: Vec<Request>,
    now: Millis,
) -> HashMap<Key, Observation> {
    if requests.is_empty() {
        return HashMap::new();
    }
    let n = requests.len();
    let obs = sampler.sample(requests, now).await;
    let errors = obs
        .values()
        .filter(|o| matches!(o, Observation::Error(_)))
        .count();
    health.set_prometheus_reachable(errors < n);
    obs
}

/// Sends one cycle's requests as a batched [`QueryPlan`]: queries shared by many services go once.
pub struct PrometheusSampler {
    pub source: Arc<dyn MetricSource>,
    pub parallel: usize,
}

impl Sampler for PrometheusSampler {
    fn sample<'a>(
        &'a self,
        requests: Vec<Request>,
        _now: Millis,
    ) -> BoxFuture<'a, HashMap<Key, Observation>> {
        Box::pin(async move {
            let plan = QueryPlan::build(requests);
            let mut results = Vec::with_capacity(plan.len());
            // Bounded concurrency; the source's own rate limit still applies. Evaluated at
            // Prometheus's "now": our clock may drift from the server's. Batched queries come
            // back already split (`source::ask`), without their other labels.
            let indexes: Vec<usize> = (0..plan.len()).collect();
            for chunk in indexes.chunks(self.parallel.max(1)) {
                let source = &*self.source;
                let answers = futures::future::join_all(
                    chunk
                        .iter()
                        .map(|&i| crate::source::ask(source, &plan, i, None)),
                )
                .await;
                results.extend(answers);
            }
            plan.split_answers(&results)
        })
    }
}

/// Queries sent, their latency and their errors by reason, on `/metrics`. The wiring lives here,
/// in the shell that knows both sides, so `telemetry` does not depend on `source`.
impl QueryObserver for Metrics {
    fn observe(
        &self,
        _kind: QueryKind,
        elapsed: std::time::Duration,
        outcome: Result<usize, &SourceError>,
    ) {
        self.queries.inc();
        self.query_duration.observe(elapsed.as_secs_f64());
        if let Err(err) = outcome {
            self.query_errors
                .get_or_create(&ReasonLabels {
                    reason: err.reason().to_string(),
                })
                .inc();
        }
    }
}
