//! The control loop: the imperative shell around the pure engine.
//!
//! Each cycle, for every service: read the stable and canary Deployments, advance the release
//! lifecycle, ask the sampler for every metric per track, feed the engine, publish the verdict,
//! and on a rollback verdict run the actuator's plan, then audit and notify. A rollback is run at
//! most once per canary revision (the engine's verdict is sticky and the actuator refuses a second
//! plan for the same revision).

mod sampler;
pub mod schedule;
mod service;

pub use sampler::{PrometheusSampler, Sampler};
pub use service::{reason_lines, CycleOutcome, ServiceRuntime, TRAFFIC};

use crate::actuator::Actuator;
use crate::audit::AuditSink;
use crate::clock::Clock;
use crate::notify::Notifier;
use crate::policy::Policy;
use crate::telemetry::{Health, Metrics};
use std::sync::Arc;
use std::time::Duration;

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
}

impl Daemon {
    pub fn new(ctx: Context, policies: Vec<Policy>) -> Self {
        let services = policies
            .into_iter()
            .map(ServiceRuntime::new)
            .collect::<Vec<_>>();
        ctx.metrics.policies_loaded.set(services.len() as i64);
        ctx.health.set_policies_loaded(!services.is_empty());
        Self { ctx, services }
    }

    /// Replaces the policies, keeping the runtime state of services whose policy is unchanged.
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
    }

    /// One evaluation of every service (batched: one sampler call for all of them).
    pub async fn cycle(&mut self) -> Vec<CycleOutcome> {
        service::cycle(&self.ctx, &mut self.services).await
    }

    /// Runs cycles every `interval`, aligned to the wall clock (no drift), until `shutdown`.
    /// An in-flight rollback is never interrupted: shutdown is checked between cycles only.
    pub async fn run(
        mut self,
        interval: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
        mut reloads: tokio::sync::mpsc::Receiver<Vec<Policy>>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut shutdown = shutdown;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
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
            let span = tracing::info_span!("cycle", services = self.services.len());
            tracing::Instrument::instrument(self.cycle(), span).await;
        }
        self.ctx.health.set_shutting_down();
        tracing::info!("control loop stopped");
    }
}
