//! The control loop: the imperative shell around the pure engine.
//!
//! Each service is evaluated at its own `analysis.interval`, at a fixed phase within it
//! (`schedule`); services due at the same instant are evaluated together. An evaluation reads the
//! stable and canary Deployments (from a per-namespace watch, `deployments`), advances the release
//! lifecycle, asks the sampler for every metric per track (one call for the whole batch), feeds the
//! engine, publishes the verdict, and on a rollback verdict runs the actuator's plan, then audits
//! and notifies (`rollback`). A rollback is run at most once per canary revision (the engine's
//! verdict is sticky and the actuator refuses a second plan for the same revision).

mod deployments;
mod rollback;
mod sampler;
pub mod schedule;
mod service;

pub use deployments::{DeploymentWatches, WatchState};
pub use sampler::{PrometheusSampler, Sampler};
pub use service::{reason_lines, CycleOutcome, ServiceRuntime, TRAFFIC};

use crate::actuator::Actuator;
use crate::audit::AuditSink;
use crate::clock::Clock;
use crate::notify::Notifier;
use crate::policy::Policy;
use crate::telemetry::{Health, Metrics};
use schedule::{service_key, Schedule};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// Why a service's Deployments could not be read this cycle.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot read Deployment {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "the stable Deployment {namespace}/{name} does not exist; check `deployments.stable` in the policy"
    )]
    StableMissing { namespace: String, name: String },
}

/// Everything a cycle needs from the outside world.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub sampler: Arc<dyn Sampler>,
    pub actuator: Arc<Actuator>,
    pub audit: Arc<dyn AuditSink>,
    pub notifier: Arc<dyn Notifier>,
    pub metrics: Metrics,
    pub health: Health,
    pub clock: Arc<dyn Clock>,
    pub dry_run: bool,
}

/// All services under watch.
pub struct Daemon {
    pub ctx: Context,
    pub services: Vec<ServiceRuntime>,
    schedule: Schedule,
    watches: DeploymentWatches,
    /// The schedule's time zero: due times are fixed offsets from it, so they never drift.
    origin: Instant,
}

impl Daemon {
    pub fn new(ctx: Context, policies: Vec<Policy>) -> Self {
        let services = policies
            .into_iter()
            .map(ServiceRuntime::new)
            .collect::<Vec<_>>();
        ctx.metrics.policies_loaded.set(services.len() as i64);
        ctx.health.set_policies_loaded(!services.is_empty());
        let watches = DeploymentWatches::new(ctx.metrics.clone());
        let mut daemon = Self {
            ctx,
            services,
            schedule: Schedule::new(),
            watches,
            origin: Instant::now(),
        };
        daemon.follow_policies(0);
        daemon
    }

    /// Replaces the policies, keeping the runtime state of services whose policy is unchanged.
    /// The schedule and the Deployment watches follow (new namespaces get a watch, unused ones
    /// lose theirs).
    pub fn reload(&mut self, policies: Vec<Policy>) {
        let mut old = std::mem::take(&mut self.services);
        for p in policies {
            match old.iter().position(|s| s.policy == p) {
                Some(i) => self.services.push(old.swap_remove(i)),
                None => self.services.push(ServiceRuntime::new(p)),
            }
        }
        self.ctx
            .metrics
            .policies_loaded
            .set(self.services.len() as i64);
        self.follow_policies(self.since_origin(Instant::now()));
    }

    fn follow_policies(&mut self, now_ms: schedule::Ms) {
        self.schedule.sync(
            self.services
                .iter()
                .map(|s| (service_key(&s.policy), s.policy.analysis.interval)),
            now_ms,
        );
        self.watches
            .follow(self.services.iter().map(|s| s.policy.namespace.clone()));
    }

    fn since_origin(&self, t: Instant) -> schedule::Ms {
        u64::try_from(t.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// One evaluation of every service now, whatever the schedule says (batched: one sampler call
    /// for all of them). The demo and tests drive the daemon with it.
    pub async fn cycle(&mut self) -> Vec<CycleOutcome> {
        self.watches.start(&self.ctx.client);
        let mut all: Vec<&mut ServiceRuntime> = self.services.iter_mut().collect();
        let span = tracing::info_span!("cycle", services = all.len());
        let outcomes = service::cycle(&self.ctx, &self.watches, &mut all)
            .instrument(span)
            .await;
        self.publish_kubernetes_readiness();
        outcomes
    }

    /// Evaluates the services due at `now` (one sampler call for all of them) and moves each to
    /// its next slot; nothing when none is due.
    pub async fn cycle_due(&mut self, now: Instant) -> Vec<CycleOutcome> {
        let due: HashSet<String> = self
            .schedule
            .due(self.since_origin(now))
            .into_iter()
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        self.watches.start(&self.ctx.client);
        let mut batch: Vec<&mut ServiceRuntime> = self
            .services
            .iter_mut()
            .filter(|s| due.contains(&service_key(&s.policy)))
            .collect();
        let span = tracing::info_span!("cycle", services = batch.len());
        let outcomes = service::cycle(&self.ctx, &self.watches, &mut batch)
            .instrument(span)
            .await;
        self.publish_kubernetes_readiness();
        outcomes
    }

    /// Kubernetes counts as reachable when some service's Deployments were read and no service's
    /// last read failed (services not evaluated yet do not count either way).
    fn publish_kubernetes_readiness(&self) {
        let reads = self.services.iter().filter_map(|s| s.deployments_read);
        let (mut any_ok, mut any_failed) = (false, false);
        for ok in reads {
            any_ok |= ok;
            any_failed |= !ok;
        }
        self.ctx
            .health
            .set_kubernetes_reachable(any_ok && !any_failed);
    }

    /// When the next service falls due (`None` without services).
    pub fn next_due(&self) -> Option<Instant> {
        self.schedule
            .next_wake()
            .map(|ms| self.origin + Duration::from_millis(ms))
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The per-namespace Deployment watches (tests and diagnostics read their state).
    pub fn watches(&self) -> &DeploymentWatches {
        &self.watches
    }

    /// Starts the Deployment watches now instead of at the first cycle (tests use it to wait for
    /// the stores to sync).
    pub fn start_watches(&mut self) {
        self.watches.start(&self.ctx.client);
    }

    /// Evaluates each service when it falls due, until `shutdown`. Wake-ups follow the schedule's
    /// fixed slots, so a slow cycle delays only itself, never the slots after it.
    /// An in-flight rollback is never interrupted: shutdown is checked between cycles only.
    pub async fn run(
        mut self,
        shutdown: tokio::sync::watch::Receiver<bool>,
        mut reloads: tokio::sync::mpsc::Receiver<Vec<Policy>>,
    ) {
        let mut shutdown = shutdown;
        self.watches.start(&self.ctx.client);
        loop {
            let wake = self.next_due();
            tokio::select! {
                _ = sleep_until(wake) => {}
                _ = shutdown.changed() => break,
                Some(policies) = reloads.recv() => {
                    tracing::info!(services = policies.len(), "policies reloaded");
                    self.reload(policies);
                    continue;
                }
            }
            if *shutdown.borrow() {
                break;
            }
            self.cycle_due(Instant::now()).await;
        }
        self.ctx.health.set_shutting_down();
        tracing::info!("control loop stopped");
    }
}

/// Sleeps until `at`, or forever without a next slot (no services: wait for a reload).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
