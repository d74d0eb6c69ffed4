//! Where a cycle's observations come from: real Prometheus (batched plan), or the demo's
//! simulated workload read directly when no Prometheus is available.

use crate::sample::{Millis, Observation};
use crate::source::plan::{Key, QueryPlan, Request};
use crate::source::MetricSource;
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
            let queries: Vec<String> = plan.queries().map(String::from).collect();
            let mut results = Vec::with_capacity(queries.len());
            // Bounded concurrency; the source's own rate limit still applies. Evaluated at
            // Prometheus's "now": our clock may drift from the server's.
            for chunk in queries.chunks(self.parallel.max(1)) {
                let answers =
                    futures::future::join_all(chunk.iter().map(|q| self.source.instant(q, None)))
                        .await;
                results.extend(answers);
            }
            plan.split(&results)
        })
    }
}
