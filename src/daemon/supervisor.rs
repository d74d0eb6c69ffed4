//! The supervisor: runs orders off the evaluation path. Each service has a lane (a queue whose
//! task takes its orders one at a time while it has any, so at most one actuator run per service); a semaphore bounds how
//! many lanes work the API at once (`[actions] max_concurrent`; a rollback waiting for its
//! rollout to settle gives its place up, see `actuator::pace`). A failed order is retried with
//! exponential backoff until it succeeds or a newer canary supersedes it: never forgotten.
//! Every outcome goes back over one channel (see `outcome`), never to the evaluation loop's
//! stack, so a rollback whose Verify waits minutes delays nobody else's evaluation.

use super::deployments::get_deployments;
use super::fleet_guard::{Admission, FleetGuard};
use super::order::{Action, Order};
use super::outcome::{Event, OrderOutcome, Versions};
use super::{Context, DaemonError};
use crate::actuator::{ActuatorError, RollbackRequest};
use crate::lifecycle::CanaryId;
use crate::lifecycle::DeploymentView;
use crate::policy::ActionMode;
use crate::settings::Actions;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Why one attempt of an order failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("cannot read the Deployments before acting: {0}")]
    Read(#[from] DaemonError),
    #[error(transparent)]
    Act(#[from] ActuatorError),
}

impl OrderError {
    /// A superseded rollback is final, and so is one this replica lost the Lease for (the new
    /// holder resumes it); everything else may succeed on a later attempt.
    fn retryable(&self) -> bool {
        !matches!(
            self,
            OrderError::Act(ActuatorError::Superseded { .. } | ActuatorError::Fenced { .. })
        )
    }
}

/// What a successful attempt did.
pub(super) enum Done {
    Rollback {
        report: Box<crate::actuator::RollbackReport>,
        versions: Versions,
    },
    KnownGood,
}

struct Env {
    ctx: Context,
    /// Shared with the actuator, which holds a place only while it works the API.
    permits: Arc<Semaphore>,
    /// Book-keeping orders under way (last-known-good records), at most `max_concurrent`.
    background: Arc<Semaphore>,
    config: Actions,
    outcomes: mpsc::UnboundedSender<OrderOutcome>,
    guard: Option<FleetGuard>,
}

/// How often a held rollback asks the fleet guard again.
const HOLD_RECHECK: Duration = Duration::from_secs(15);

/// One service's lane. Idle lanes hold no task: a lane's task starts with an order and ends when
/// its queue is empty (a task per service would cost ~16 KB each, 160 MB at 10,000 services, for
/// lanes that run an order a day). Queue and `running` change under one lock, so an order queued
/// while the task decides to end is never stranded.
#[derive(Default)]
struct LaneState {
    queue: Mutex<Queue>,
    /// The service's current canary, as evaluation last saw it: retries of an order about an
    /// older canary stop.
    canary: Mutex<Option<CanaryId>>,
}

#[derive(Default)]
struct Queue {
    orders: VecDeque<Queued>,
    running: bool,
}

/// An order in a lane; a book-keeping order brings the background place it was given.
struct Queued {
    order: Order,
    _place: Option<OwnedSemaphorePermit>,
}

impl LaneState {
    fn canary(&self) -> Option<CanaryId> {
        lock(&self.canary).clone()
    }

    /// The next order, or none: then the lane's task ends (`running` cleared under the lock).
    fn next(&self) -> Option<Queued> {
        let mut q = lock(&self.queue);
        let next = q.orders.pop_front();
        q.running = next.is_some();
        if next.is_none() {
            // An idle lane keeps no queue: 10,000 of them after a fleet's first records.
            q.orders = VecDeque::new();
        }
        next
    }
}

/// A poisoned lock only means a lane panicked; the data (a queue, an id) is still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Lane {
    state: Arc<LaneState>,
    /// The task of the lane's current run of orders, if one was started.
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Owned by the daemon; lanes are tasks of their own while they have orders.
pub struct Supervisor {
    env: Arc<Env>,
    lanes: HashMap<String, Lane>,
    /// Book-keeping orders waiting for a background place, oldest first: (policy, revision,
    /// dry run). Kept here, not in lanes, so that (a) a rollback never waits in a lane behind a
    /// last-known-good record, and (b) 10,000 records at start-up cost 24 bytes each instead of
    /// a waiting task each (~1 KB: 10 MB at 10,000 services, issue 10).
    backlog: VecDeque<(Arc<crate::policy::Policy>, u64, bool)>,
    /// After `shutdown`, orders are refused (the next daemon resumes from backups).
    closed: bool,
}

impl Supervisor {
    pub fn new(
        ctx: Context,
        config: Actions,
        outcomes: mpsc::UnboundedSender<OrderOutcome>,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        Self {
            env: Arc::new(Env {
                ctx,
                permits,
                background: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
                config,
                outcomes,
                guard: None,
            }),
            lanes: HashMap::new(),
            backlog: VecDeque::new(),
            closed: false,
        }
    }

    /// Counts and limits automatic rollbacks across the fleet (before any order is submitted).
    pub fn set_fleet_guard(&mut self, guard: FleetGuard) {
        match Arc::get_mut(&mut self.env) {
            Some(env) => env.guard = Some(guard),
            None => tracing::error!("fleet guard set after lanes started; ignored"),
        }
    }

    /// Queues `order` on its service's lane (its task started if idle); returns at once.
    pub fn submit(&mut self, order: Order) {
        if self.closed {
            tracing::warn!(service = %order.service, "order after shutdown dropped");
            return;
        }
        if let Action::RecordKnownGood { revision } = order.action {
            self.backlog
                .push_back((order.policy, revision, order.dry_run));
            self.start_backlog();
            return;
        }
        self.enqueue(order, None);
    }

    /// Starts waiting book-keeping orders while background places are free.
    fn start_backlog(&mut self) {
        while !self.backlog.is_empty() {
            let Ok(place) = self.env.background.clone().try_acquire_owned() else {
                return;
            };
            let Some((policy, revision, dry_run)) = self.backlog.pop_front() else {
                return;
            };
            let order = Order::new(&policy, Action::RecordKnownGood { revision }, dry_run);
            self.enqueue(order, Some(place));
        }
        // Drained: give the memory of a start-up's 10,000 records back.
        self.backlog = VecDeque::new();
    }

    /// Puts `order` in its service's lane, starting the lane's task if it is idle.
    fn enqueue(&mut self, order: Order, place: Option<OwnedSemaphorePermit>) {
        let env = self.env.clone();
        let canary = order.canary().cloned();
        let lane = self
            .lanes
            .entry(order.service.clone())
            .or_insert_with(|| Lane {
                state: Arc::new(LaneState {
                    queue: Mutex::default(),
                    canary: Mutex::new(canary),
                }),
                task: None,
            });
        // A finished task that never cleared `running` panicked mid-order: start a fresh one.
        let died = lane.task.as_ref().is_some_and(|t| t.is_finished());
        let start = {
            let mut q = lock(&lane.state.queue);
            if died {
                q.running = false;
            }
            q.orders.push_back(Queued {
                order,
                _place: place,
            });
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            lane.task = Some(tokio::spawn(run_lane(env, lane.state.clone())));
        }
    }

    /// Lets go of the tasks of lanes that ran out of orders: a finished task's memory lives as
    /// long as its handle, and after a fleet's first last-known-good records that is one per
    /// service (issue 10). A task that finished with `running` still set panicked mid-order;
    /// its handle stays so `submit` sees it and starts a fresh one.
    pub fn reap(&mut self) {
        // An order finished: its background place, if it had one, is free for the next record.
        self.start_backlog();
        // An idle lane is dropped whole (a fleet's start-up records leave one per service,
        // ~250 bytes each); the next order starts a fresh one from its own canary.
        self.lanes.retain(|_, lane| {
            let finished = lane.task.as_ref().is_none_or(|t| t.is_finished());
            let q = lock(&lane.state.queue);
            !(finished && !q.running && q.orders.is_empty())
        });
    }

    /// Publishes an outcome that did not come from a lane (recovery verification) through the
    /// same fan-out, in order with the lanes' outcomes; never waits.
    pub fn report(&self, outcome: OrderOutcome) {
        let _ = self.env.outcomes.send(outcome);
    }

    /// A new canary revision of `service` is running: retries for older canaries stop. Only a
    /// lane with orders needs to know (idle lanes are dropped, and a new lane starts from its
    /// first order's canary); the actuator checks the canary's template again before it acts.
    pub fn canary_changed(&mut self, service: &str, id: &CanaryId) {
        if let Some(lane) = self.lanes.get(service) {
            *lock(&lane.state.canary) = Some(id.clone());
        }
    }

    /// Takes no new orders and gives the running ones (and those queued behind them) up to
    /// `grace` to finish; the rest stop at their next await and are resumed by the next daemon
    /// from their backup ConfigMaps.
    pub async fn shutdown(&mut self, grace: Duration) {
        self.closed = true;
        let tasks: Vec<_> = self
            .lanes
            .values_mut()
            .filter_map(|lane| lane.task.take())
            .filter(|task| !task.is_finished())
            .collect();
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(grace, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!("rollbacks still running at shutdown; the next daemon resumes them");
            aborts.iter().for_each(|a| a.abort());
        }
    }
}

impl Drop for Supervisor {
    /// A dropped daemon leaves no lane acting behind its back (as when the process dies).
    fn drop(&mut self) {
        for task in self.lanes.values().filter_map(|lane| lane.task.as_ref()) {
            task.abort();
        }
    }
}

async fn run_lane(env: Arc<Env>, lane: Arc<LaneState>) {
    // A book-keeping order arrives with its background place (`Supervisor::start_backlog`) and
    // holds it until it is done: at most `max_concurrent` of them are under way, and none waits
    // in a lane, where a rollback of the same service would wait behind it.
    while let Some(Queued { order, _place }) = lane.next() {
        // Boxed: the order's future is large and only lives while it runs.
        Box::pin(run_order(&env, order, &lane)).await;
    }
}

/// An order about an older canary than the one running now.
fn superseded(order: &Order, lane: &LaneState) -> bool {
    match (order.canary(), lane.canary().as_ref()) {
        (Some(ordered), Some(current)) => ordered != current,
        _ => false,
    }
}

/// Runs `order` until it succeeds, is superseded, or fails for good; reports every attempt.
async fn run_order(env: &Env, order: Order, lane: &LaneState) {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if superseded(&order, lane) {
            env.send(&order, attempt, Event::Superseded);
            return;
        }
        if attempt == 1 && !admitted(env, &order, lane).await {
            env.send(&order, attempt, Event::Superseded);
            return;
        }
        let result = execute(env, &order, attempt).await;
        let err = match result {
            Ok(Done::Rollback { report, versions }) => {
                let event = Event::RolledBack { report, versions };
                env.send(&order, attempt, event);
                return;
            }
            Ok(Done::KnownGood) => {
                env.send(&order, attempt, Event::KnownGood);
                return;
            }
            Err(err) => err,
        };
        let retry_in = err.retryable().then(|| env.config.backoff(attempt));
        let error = err.to_string();
        env.send(&order, attempt, Event::Failed { error, retry_in });
        match retry_in {
            Some(delay) => tokio::time::sleep(delay).await,
            None => return,
        }
    }
}

/// Waits until the fleet guard admits `order` (rollbacks only, not dry runs, not opted out).
/// False when a newer canary superseded it meanwhile.
async fn admitted(env: &Env, order: &Order, lane: &LaneState) -> bool {
    let Some(guard) = &env.guard else { return true };
    let counted = matches!(order.action, Action::Rollback(_))
        && !order.dry_run
        && order.policy.analysis.fleet_guard;
    if !counted {
        return true;
    }
    let mut reported = false;
    loop {
        let now = env.ctx.clock.now_millis();
        match guard.admit(&order.service, now).await {
            Ok(Admission::Go) => return true,
            Ok(Admission::Held { in_window }) => {
                if !reported {
                    reported = true;
                    hold_noted(env, order, guard, in_window).await;
                }
            }
            Err(err) => {
                // Fail open: the guard protects against mass rollbacks; it must not keep a
                // bad canary serving when it cannot be read.
                tracing::warn!(service = %order.service, error = %err, "fleet guard unreadable; rolling back");
                return true;
            }
        }
        tokio::time::sleep(HOLD_RECHECK).await;
        if superseded(order, lane) {
            return false;
        }
    }
}

async fn hold_noted(env: &Env, order: &Order, guard: &FleetGuard, in_window: usize) {
    let p = &order.policy;
    let note = format!(
        "rollback held by the fleet guard: {in_window} services rolled back in the last {} (max {}); likely a shared cause. Roll back by hand with `backout rollback` if this one is really bad",
        humantime::format_duration(guard.per),
        guard.max
    );
    if let Err(err) = env
        .ctx
        .actuator
        .note(&p.namespace, &p.deployments.canary, "RollbackHeld", note)
        .await
    {
        tracing::warn!(service = %order.service, error = %err, "cannot post the held Event");
    }
    let event = Event::Held {
        in_window,
        max: guard.max,
        per: guard.per,
    };
    env.send(order, 1, event);
}

impl Env {
    fn send(&self, order: &Order, attempt: u32, event: Event) {
        let _ = self.outcomes.send(OrderOutcome {
            order: order.clone(),
            attempt,
            event,
        });
    }
}

/// One attempt.
async fn execute(env: &Env, order: &Order, attempt: u32) -> Result<Done, OrderError> {
    let ctx = &env.ctx;
    let p = &order.policy;
    match &order.action {
        Action::Rollback(r) => {
            // Fresh GETs, not the watch store: the undo target must not come from a lagging cache.
            let (stable_obj, canary_obj) = get_deployments(&ctx.client, p).await?;
            let stable = DeploymentView::from_deployment(&stable_obj);
            let canary = canary_obj.as_ref().map(DeploymentView::from_deployment);
            let lkg = undo_target(r.in_bake, p.action, stable.last_known_good);
            let mut versions = Versions::of(&stable, canary.as_ref(), lkg);
            // The actuator's id for this canary revision: the incident's key in every notice
            // (PagerDuty's dedup key), known before the first step runs.
            versions.canary_images = canary_obj
                .as_ref()
                .map(super::bad_versions::images_of)
                .unwrap_or_default();
            versions.incident = canary_obj
                .as_ref()
                .and_then(|c| serde_json::to_value(c).ok())
                .map(|c| crate::actuator::plan::rollback_id(p, &c))
                .unwrap_or_default();
            if attempt == 1 {
                let started = Event::Started {
                    versions: versions.clone(),
                };
                env.send(order, attempt, started);
            }
            let request = RollbackRequest {
                last_known_good: lkg,
                trigger: r.trigger.clone(),
                dry_run: order.dry_run,
                gate: Some(env.permits.clone()),
            };
            let report = Box::new(ctx.actuator.rollback(p, request).await?);
            Ok(Done::Rollback { report, versions })
        }
        Action::Resume { backup } => {
            let versions = Versions::resumed(backup);
            if attempt == 1 {
                let started = Event::Started {
                    versions: versions.clone(),
                };
                env.send(order, attempt, started);
            }
            let gate = Some(env.permits.clone());
            let report = Box::new(ctx.actuator.resume(p, backup, gate).await?);
            Ok(Done::Rollback { report, versions })
        }
        Action::RecordKnownGood { revision } => {
            // No place at the rollbacks' gate: a record is bounded by its background place
            // (`Supervisor::start_backlog`), and a rollback must never queue behind 10,000 of
            // them at a fleet's start-up.
            if !order.dry_run {
                ctx.actuator.record_known_good(p, *revision).await?;
            }
            Ok(Done::KnownGood)
        }
    }
}

/// The stable revision a rollback returns the stable to: its last known good one, and only in
/// the bake window (a canary's rollback leaves the stable alone). `contain` never undoes the
/// stable: its plan only routes to it and scales the canary to zero.
fn undo_target(in_bake: bool, mode: ActionMode, last_known_good: Option<u64>) -> Option<i64> {
    if in_bake && mode != ActionMode::Contain {
        last_known_good.map(|rev| rev as i64)
    } else {
        None
    }
}

impl Actions {
    /// The wait before attempt `attempt + 1`: doubling from `retry_initial`, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.retry_initial
            .saturating_mul(factor)
            .min(self.retry_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_rollback_in_bake_undoes_the_stable_and_contain_never_does() {
        assert_eq!(undo_target(true, ActionMode::Rollback, Some(3)), Some(3));
        assert_eq!(undo_target(false, ActionMode::Rollback, Some(3)), None);
        assert_eq!(undo_target(true, ActionMode::Contain, Some(3)), None);
        assert_eq!(undo_target(true, ActionMode::Notify, Some(3)), Some(3));
    }
}
