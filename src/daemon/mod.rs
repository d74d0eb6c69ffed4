//! The control loop: the imperative shell around the pure engine.
//!
//! Each service is evaluated at its own `analysis.interval`, at a fixed phase within it
//! (`schedule`); services due at the same instant are evaluated together. An evaluation reads the
//! stable and canary Deployments (from a per-namespace watch, `deployments`), advances the release
//! lifecycle, asks the sampler for every metric per track (one call for the whole batch), feeds the
//! engine and publishes the verdict. The run loop never waits for the sampler: each phase's fetch
//! is a task and its answer is judged when it comes back (`pipeline`). A rollback verdict becomes
//! an order (`order`), run by the supervisor off the evaluation path (`supervisor`); outcomes are
//! published in one place (`outcome`) and come back to the loop only to update the service's
//! state. A rollback is ordered at most once per canary revision (the engine's verdict is sticky
//! and the actuator refuses a second plan for the same revision).

pub mod bad_versions;
mod board;
mod context;
mod deployments;
pub mod fleet_guard;
pub mod order;
pub mod outcome;
mod pipeline;
pub mod recovery;
mod resolution;
mod sampler;
pub mod schedule;
mod service;
mod supervisor;

pub use context::{Context, ContextBuilder};
pub use deployments::{DeploymentWatches, WatchState};
pub use order::{Action, Order, RollbackOrder};
pub use outcome::{Event, OrderOutcome};
pub use pipeline::{FETCH_DEADLINE_INTERVALS, FETCH_GRACE};
pub use sampler::{PrometheusSampler, Sampler};
pub use service::{reason_lines, CycleOutcome, ServiceRuntime};
pub use supervisor::{OrderError, Supervisor};

use crate::ha::Ownership;
use crate::policy::Policy;
use crate::settings::Actions;
use schedule::{service_key, Schedule};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
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

/// How long shutdown waits for running orders: inside Kubernetes' default 30 s termination grace
/// period, with room to spare. What is cut short is resumed by the next daemon.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A new set of policies for the loop, and when its reload began (for the reload-time gauge).
pub struct PolicyReload {
    /// Shared with the loader's cache: a reload that changed one file hands the loop the same
    /// `Arc`s for the others, and the loop keeps their runtimes without comparing field by field.
    pub policies: Vec<Arc<Policy>>,
    pub requested: Instant,
}

impl From<Vec<Policy>> for PolicyReload {
    fn from(policies: Vec<Policy>) -> Self {
        Self {
            policies: policies.into_iter().map(Arc::new).collect(),
            requested: Instant::now(),
        }
    }
}

/// All services under watch.
pub struct Daemon {
    pub ctx: Context,
    /// Boxed: a reload moves every runtime from the old vector to the new one, and with the
    /// runtimes inline both vectors (10,000 x 720 bytes each) were alive at once.
    pub services: Vec<Box<ServiceRuntime>>,
    /// `namespace/service` -> position in `services`.
    index: HashMap<String, usize>,
    schedule: Schedule,
    watches: DeploymentWatches,
    /// The schedule's time zero: due times are fixed offsets from it, so they never drift.
    origin: Instant,
    supervisor: Supervisor,
    /// Outcomes of orders, after they were published (audit, notices, metrics).
    settled: mpsc::UnboundedReceiver<OrderOutcome>,
    /// Which services this replica evaluates and acts for (HA); everything without HA.
    ownership: Ownership,
    /// Backup ConfigMaps already handed to the supervisor for resuming.
    resumed: HashSet<String>,
    /// The run loop's fetches in flight.
    pipeline: pipeline::Pipeline,
    /// The last generation given to a runtime (each runtime a reload builds gets the next).
    generation: u64,
}

impl Daemon {
    /// A daemon with the default `[actions]` settings.
    pub fn new<P: Into<Arc<Policy>>>(ctx: Context, policies: Vec<P>) -> Self {
        Self::with_actions(ctx, policies, Actions::default())
    }

    /// Starts the supervisor and the outcome fan-out (tasks on the current runtime).
    pub fn with_actions<P: Into<Arc<Policy>>>(
        ctx: Context,
        policies: Vec<P>,
        actions: Actions,
    ) -> Self {
        let (outcomes, raw) = mpsc::unbounded_channel();
        let (to_daemon, settled) = mpsc::unbounded_channel();
        tokio::spawn(outcome::fan_out(ctx.clone(), raw, to_daemon));
        let supervisor = Supervisor::new(ctx.clone(), actions, outcomes);
        let watches = DeploymentWatches::new(ctx.metrics.clone());
        let mut daemon = Self {
            ctx,
            services: Vec::new(),
            index: HashMap::new(),
            schedule: Schedule::new(),
            watches,
            origin: Instant::now(),
            supervisor,
            settled,
            ownership: Ownership::standalone(),
            resumed: HashSet::new(),
            pipeline: pipeline::Pipeline::new(),
            generation: 0,
        };
        daemon.reload(policies);
        daemon
            .ctx
            .health
            .set_policies_loaded(!daemon.services.is_empty());
        daemon
    }

    /// Counts automatic rollbacks across the fleet and holds those beyond its limit.
    pub fn with_fleet_guard(mut self, guard: fleet_guard::FleetGuard) -> Self {
        self.supervisor.set_fleet_guard(guard);
        self
    }

    /// Evaluates and acts only as `ownership` allows (HA: leader election or shards).
    pub fn with_ownership(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Replaces the policies, keeping the runtime state of services whose policy is unchanged
    /// (matched by `namespace/service` in a map: linear in the number of policies); a changed
    /// policy gets a new runtime of a new generation (a fetch in flight for the old one is not
    /// judged by it).
    /// The schedule and the Deployment watches follow (new namespaces get a watch, unused ones
    /// lose theirs).
    pub fn reload<P: Into<Arc<Policy>>>(&mut self, policies: Vec<P>) {
        // The old runtimes stay where they are, found through the old index: moving 10,000
        // runtimes into a map of their own doubled the reload's peak memory (issue 10).
        let old_index = std::mem::take(&mut self.index);
        let mut old: Vec<Option<Box<ServiceRuntime>>> = std::mem::take(&mut self.services)
            .into_iter()
            .map(Some)
            .collect();
        self.services.reserve_exact(policies.len());
        self.index.reserve(policies.len());
        let mut texts = HashSet::new();
        let mut unchanged = Vec::with_capacity(policies.len());
        for p in policies {
            let p: Arc<Policy> = p.into();
            let key = service_key(&p);
            let previous = old_index
                .get(&key)
                .and_then(|&i| old.get_mut(i))
                .and_then(Option::take);
            let (runtime, kept) = match previous {
                Some(s) if Arc::ptr_eq(&s.policy, &p) || *s.policy == *p => (s, true),
                _ => {
                    self.generation += 1;
                    let mut runtime = ServiceRuntime::with_texts(p, &mut texts);
                    runtime.generation = self.generation;
                    (Box::new(runtime), false)
                }
            };
            unchanged.push(kept);
            self.index.insert(key, self.services.len());
            self.services.push(runtime);
        }
        self.ctx.status.sync(
            self.services
                .iter()
                .zip(unchanged)
                .map(|(s, kept)| (&*s.policy, kept)),
        );
        self.ctx
            .metrics
            .policies_loaded
            .set(self.services.len() as i64);
        // A service or metric no longer in the policies stops being exported.
        self.ctx.metrics.judged.retain(
            self.services
                .iter()
                .map(|s| (&*s.policy.service, s.labels.metrics())),
        );
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
        let all: HashSet<String> = self
            .index
            .keys()
            .filter(|k| self.ownership.evaluates(k))
            .cloned()
            .collect();
        self.evaluate(&all).await
    }

    /// Evaluates the services due at `now` (one sampler call for all of them) and moves each to
    /// its next slot; nothing when none is due.
    pub async fn cycle_due(&mut self, now: Instant) -> Vec<CycleOutcome> {
        let due: HashSet<String> = self
            .schedule
            .due(self.since_origin(now))
            .into_iter()
            .filter(|k| self.ownership.evaluates(k))
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        self.evaluate(&due).await
    }

    /// Settles what the supervisor finished, evaluates the services in `keys` (the three steps,
    /// the fetch awaited here), and hands their orders to the supervisor without waiting for any
    /// of them.
    async fn evaluate(&mut self, keys: &HashSet<String>) -> Vec<CycleOutcome> {
        let (batch, requests) = self.begin(keys, None).await;
        let (source, health) = (self.ctx.sampler.clone(), self.ctx.health.clone());
        let observations = sampler::fetch(&*source, &health, requests, batch.now)
            .instrument(batch.span.clone())
            .await;
        let (outcomes, notices) = self.conclude(batch, Some(observations));
        for notice in notices {
            if let Err(err) = self.ctx.notifier.send(&notice).await {
                tracing::warn!(error = %err, "notification failed");
            }
        }
        outcomes
    }

    /// Applies every outcome that has come back so far (never waits).
    pub fn settle(&mut self) {
        let mut any = false;
        while let Ok(o) = self.settled.try_recv() {
            self.apply(o);
            any = true;
        }
        if any {
            // A lane's task ends just after its last outcome: those of earlier settles are
            // done by now.
            self.supervisor.reap();
        }
    }

    fn apply(&mut self, o: OrderOutcome) {
        board::record_order(&self.ctx.status, self.ctx.clock.now_millis(), &o);
        let Some(&i) = self.index.get(&o.order.service) else {
            return;
        };
        if let Some(s) = self.services.get_mut(i) {
            s.settle(o);
        }
    }

    /// Orders the rollbacks a previous daemon left under way (backup ConfigMaps not completed)
    /// for the services it watches; the supervisor drives each to its end. Returns how many.
    pub async fn resume_in_flight(&mut self) -> usize {
        let mut namespaces: Vec<String> = self
            .services
            .iter()
            .map(|s| s.policy.namespace.clone())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        let mut resumed = 0;
        for ns in namespaces {
            let found = match self.ctx.actuator.in_flight(&ns).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::error!(namespace = %ns, error = %err, "cannot list rollbacks under way; they resume when their service is judged bad again");
                    continue;
                }
            };
            for f in found {
                let key = format!("{}/{}", f.namespace, f.service);
                if !self.ownership.may_act(&key) || self.resumed.contains(&f.backup) {
                    continue;
                }
                let Some(s) = self.index.get(&key).and_then(|&i| self.services.get_mut(i)) else {
                    tracing::warn!(backup = %f.backup, service = %key, "rollback under way for a service without a policy; left alone");
                    continue;
                };
                tracing::warn!(backup = %f.backup, service = %key, state = ?f.state, "resuming a rollback left under way");
                let order = Order::new(
                    &s.policy,
                    Action::Resume { backup: f.backup },
                    self.ctx.dry_run,
                );
                s.ordered = true;
                self.supervisor.submit(order);
                resumed += 1;
            }
        }
        resumed
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
    /// fixed slots, and the loop never waits for Prometheus: a phase's fetch runs as a task and
    /// its services are judged when the answer comes back (`pipeline`), so a slow fetch delays
    /// only its own phase. Rollbacks run in the supervisor's lanes: shutting down leaves them to
    /// finish or to be resumed by the next daemon from their backup ConfigMaps; fetches in
    /// flight get [`FETCH_GRACE`].
    pub async fn run(
        mut self,
        shutdown: tokio::sync::watch::Receiver<bool>,
        mut reloads: mpsc::Receiver<PolicyReload>,
    ) {
        let mut shutdown = shutdown;
        self.watches.start(&self.ctx.client);
        let mut taken = self.ownership.taken();
        taken.mark_changed();
        loop {
            let wake = self.next_due();
            tokio::select! {
                _ = sleep_until(wake) => {}
                _ = shutdown.changed() => break,
                Ok(()) = taken.changed() => {
                    // Started, or took a Lease over: finish what the previous holder left.
                    let resumed = self.resume_in_flight().await;
                    if resumed > 0 {
                        tracing::warn!(resumed, "rollbacks left under way are being resumed");
                    }
                    continue;
                }
                Some(o) = self.settled.recv() => {
                    self.apply(o);
                    continue;
                }
                Some(answer) = self.pipeline.answers.recv() => {
                    self.answered(answer);
                    continue;
                }
                Some(r) = reloads.recv() => {
                    tracing::info!(services = r.policies.len(), "policies reloaded");
                    self.reload(r.policies);
                    let took = Instant::now().saturating_duration_since(r.requested);
                    self.ctx.metrics.policy_reload_duration.set(took.as_secs_f64());
                    continue;
                }
            }
            if *shutdown.borrow() {
                break;
            }
            self.start_due(wake).await;
        }
        self.ctx.health.set_shutting_down();
        self.drain_fetches(FETCH_GRACE).await;
        tracing::info!("control loop stopped; waiting for running rollbacks");
        self.supervisor.shutdown(SHUTDOWN_GRACE).await;
    }
}

/// Sleeps until `at`, or forever without a next slot (no services: wait for a reload).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
