//! Runbooks end to end (issue 14): the in-process daemon with the runbook's config/examples
//! policy, the simulator, a REAL Prometheus serving the incident (backfilled history, queried at
//! the daemon's clock), real notification channels (a local Slack stand-in and Debian's real
//! Alertmanager). Asserts the rollback the runbook asks for, its notification texts, recovery
//! verified on the metrics, the incident report with timeline and RTO, the bad version recorded
//! and a redeploy of it rolled back at once.
//!
//! The daemon is driven cycle by cycle on a manual clock (`Daemon::cycle`), one poll interval
//! per step, so 30 minutes of incident take seconds; the actuator and the deliveries run for
//! real in between.

#[path = "../common/alertmanager.rs"]
mod alertmanager;
#[path = "../common/prometheus.rs"]
mod prometheus;
#[path = "../common/receiver.rs"]
mod receiver;

mod devops_agent;
mod function_gemma;
mod harness;
mod istio;
mod kailash_kaizen;
mod llm_orchestrator;
mod rag_api;

use backout::audit::{AuditKind, FileAudit};
use backout::source::{MetricSource, QueryPlan, Request};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Prometheus queried at the daemon's clock (the incident is history).
pub struct PromAt {
    pub source: backout::source::PrometheusSource,
}

impl backout::daemon::Sampler for PromAt {
    fn sample<'a>(
        &'a self,
        requests: Vec<Request>,
        now: backout::sample::Millis,
    ) -> BoxFuture<'a, HashMap<backout::source::Key, backout::sample::Observation>> {
        Box::pin(async move {
            let plan = QueryPlan::build(requests);
            let queries: Vec<String> = plan.queries().map(String::from).collect();
            let answers = futures::future::join_all(
                queries.iter().map(|q| self.source.instant(q, Some(now))),
            )
            .await;
            plan.split(&answers)
        })
    }
}

pub fn shared<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

/// Waits (real time) until the audit trail has `n` records of `kind`.
pub async fn audited(trail: &Path, kind: AuditKind, n: usize) -> bool {
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        let count = FileAudit::read_trail(trail)
            .unwrap_or_default()
            .iter()
            .filter(|r| r.kind == kind)
            .count();
        if count >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

pub fn audited_now(trail: &Path, kind: AuditKind) -> bool {
    FileAudit::read_trail(trail)
        .unwrap_or_default()
        .iter()
        .any(|r| r.kind == kind)
}
