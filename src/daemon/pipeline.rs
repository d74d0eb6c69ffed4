//! Pipelined phases: the run loop never waits for Prometheus.
//!
//! A cycle has three steps (`service`): observe the releases (the Deployment watch stores), ask
//! Prometheus (one sampler call for the batch), judge. The run loop used to await all three for a
//! phase before it could start the next one; at 10,000 services a phase's queries took 4.7 s
//! under load, ten phases 1 s apart ran back to back, missed slots were skipped, and each service
//! was judged about every 47 s instead of every 10 s (docs/performance.md).
//!
//! Now the loop does step 1 and builds the requests when a phase falls due ([`Daemon::begin`]),
//! spawns the fetch as a task with a deadline ([`Pipeline::launch`]) and goes back to its
//! `select!`; the answer comes back over a channel and the loop judges those services, records
//! the board, hands orders to the supervisor and observes the evaluation lag
//! ([`Daemon::conclude`]). A slow Prometheus delays the phases it answers for, not the others,
//! and a rollback verdict in one phase is ordered while another phase's fetch still hangs.
//!
//! - **At most one fetch in flight per service.** A service due while its previous fetch runs
//!   is skipped to its next slot and counted (`backout_evaluations_skipped_total`), never queued
//!   twice. So at most one plan and one answer per phase are in memory, whatever the backlog, and
//!   a service's samples reach its engine in time order.
//! - **Stale answers are dropped.** A reload or an ownership change may land while a fetch is in
//!   flight. An answer is judged only for a service that is still loaded, still evaluated by this
//!   replica, and whose runtime is the one the fetch was asked for (same generation). A changed
//!   policy has a new runtime: the old answer was asked with the old policy's requests and would
//!   feed a fresh engine the old policy's inputs, so it is dropped, not adapted; the new runtime
//!   is judged at its next slot.
//! - **A deadline per fetch** of [`FETCH_DEADLINE_INTERVALS`] intervals: a slow Prometheus still
//!   answers (the slots in between are skipped), a hung one leaves the phase judged with every
//!   query failed (`timeout`) instead of dark for ever.
//! - **Shutdown** waits [`FETCH_GRACE`] at most for fetches in flight (their verdicts still count)
//!   and cancels the rest; rollbacks stay with the supervisor as before.

use super::service::{self, CycleOutcome};
use super::{board, sampler, Daemon, Sampler};
use crate::notify::Notice;
use crate::sample::{Millis, Observation};
use crate::source::plan::{Key, Request};
use crate::telemetry::Health;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

/// A phase's fetch is given up after this many of its (shortest) interval: long enough for a
/// Prometheus that is slow under load to answer, short enough that a hung one costs three
/// intervals of judging "no data", not an unbounded silence.
pub const FETCH_DEADLINE_INTERVALS: u32 = 3;

/// How long shutdown waits for fetches in flight before cancelling them (their services are
/// judged again by the next daemon; rollbacks are not affected).
pub const FETCH_GRACE: Duration = Duration::from_secs(2);

/// Answers to a phase's requests: `None` when the fetch outlived its deadline.
type Observations = Option<HashMap<Key, Observation>>;

/// One batch of services between step 1 and step 3.
pub(super) struct Batch {
    /// The cycle's time: the releases were observed and the samples are stamped at it.
    pub(super) now: Millis,
    /// The slot the batch was due at (the run loop's wake-up), for the evaluation lag.
    slot: Option<Instant>,
    /// Step 1's outcome per service, with the generation of the runtime it was made for.
    services: Vec<(u64, CycleOutcome)>,
    /// The shortest interval among the batch's services.
    interval: Duration,
    /// How long its fetch took (zero until it answered): the lag minus this is the daemon's own.
    fetch_took: Duration,
    pub(super) span: tracing::Span,
}

/// What a fetch task sends back.
pub(super) struct Answer {
    id: u64,
    observations: Observations,
    took: Duration,
}

struct InFlight {
    batch: Batch,
    task: JoinHandle<()>,
}

/// The fetches in flight and the channel their answers come back on.
pub(super) struct Pipeline {
    next_id: u64,
    in_flight: HashMap<u64, InFlight>,
    /// Keys of the services with a fetch in flight.
    busy: HashSet<String>,
    tx: mpsc::UnboundedSender<Answer>,
    /// Unbounded, yet holds at most one answer per fetch in flight.
    pub(super) answers: mpsc::UnboundedReceiver<Answer>,
}

impl Pipeline {
    pub(super) fn new() -> Self {
        let (tx, answers) = mpsc::unbounded_channel();
        Self {
            next_id: 0,
            in_flight: HashMap::new(),
            busy: HashSet::new(),
            tx,
            answers,
        }
    }

    fn busy(&self, key: &str) -> bool {
        self.busy.contains(key)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Spawns the batch's fetch with its deadline; its answer comes back on `answers`.
    fn launch(
        &mut self,
        batch: Batch,
        requests: Vec<Request>,
        sampler: Arc<dyn Sampler>,
        health: Health,
    ) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let deadline = batch.interval.saturating_mul(FETCH_DEADLINE_INTERVALS);
        let (now, tx) = (batch.now, self.tx.clone());
        let fetch = async move {
            let started = Instant::now();
            let fetched = sampler::fetch(&*sampler, &health, requests, now);
            let observations = tokio::time::timeout(deadline, fetched).await.ok();
            if observations.is_none() {
                health.set_prometheus_reachable(false);
                tracing::warn!(deadline = ?deadline, "a phase's queries outlived their deadline; its services are judged without data");
            }
            // After shutdown nobody waits for the answer: dropping it is right then.
            let took = started.elapsed();
            let _ = tx.send(Answer {
                id,
                observations,
                took,
            });
        };
        let task = tokio::spawn(fetch.instrument(batch.span.clone()));
        self.busy
            .extend(batch.services.iter().map(|(_, o)| o.key.clone()));
        self.in_flight.insert(id, InFlight { batch, task });
    }

    /// The batch an answer belongs to; its services are free for their next slot.
    fn land(&mut self, answer: Answer) -> Option<(Batch, Observations)> {
        let mut done = self.in_flight.remove(&answer.id)?;
        for (_, out) in &done.batch.services {
            self.busy.remove(&out.key);
        }
        done.batch.fetch_took = answer.took;
        Some((done.batch, answer.observations))
    }

    /// Cancels every fetch in flight; returns how many there were.
    fn abort_all(&mut self) -> usize {
        let n = self.in_flight.len();
        for (_, f) in self.in_flight.drain() {
            f.task.abort();
        }
        self.busy.clear();
        n
    }
}

impl Daemon {
    /// Step 1 for the services in `keys`, and the requests of step 2: reads only the watch
    /// stores (Deployment GETs, each with its deadline, only for a namespace whose watch is not
    /// synced).
    pub(super) async fn begin(
        &mut self,
        keys: &HashSet<String>,
        slot: Option<Instant>,
    ) -> (Batch, Vec<Request>) {
        self.settle();
        self.watches.start(&self.ctx.client);
        let now = self.ctx.clock.now_millis();
        let mut batch: Vec<&mut service::ServiceRuntime> = self
            .services
            .iter_mut()
            .filter(|s| keys.contains(&super::service_key(&s.policy)))
            .map(|s| &mut **s)
            .collect();
        let span = tracing::info_span!("cycle", services = batch.len());
        let outcomes = service::observe_releases(&self.ctx, &self.watches, &mut batch, now)
            .instrument(span.clone())
            .await;
        let requests = service::poll_requests(&batch);
        let interval = batch
            .iter()
            .map(|s| s.policy.analysis.interval)
            .min()
            .unwrap_or(Duration::from_secs(10));
        let services = batch.iter().map(|s| s.generation).zip(outcomes).collect();
        self.publish_kubernetes_readiness();
        let batch = Batch {
            now,
            slot,
            services,
            interval,
            fetch_took: Duration::ZERO,
            span,
        };
        (batch, requests)
    }

    /// Step 3 for a batch whose answer came (`None`: its fetch outlived the deadline, every
    /// request counts as failed): judges each service that is still loaded, ours and of the
    /// same generation, records the board, hands orders to the supervisor and observes the
    /// lag. Returns the judged outcomes and the notices to send.
    pub(super) fn conclude(
        &mut self,
        batch: Batch,
        observations: Observations,
    ) -> (Vec<CycleOutcome>, Vec<Notice>) {
        let _span = batch.span.enter();
        let missing = match observations {
            Some(_) => Observation::Absent,
            None => Observation::Error("timeout".into()),
        };
        let observations = observations.unwrap_or_default();
        let mut judged = Vec::with_capacity(batch.services.len());
        let mut notices = Vec::new();
        for (generation, mut out) in batch.services {
            let Some(s) = self
                .index
                .get(&out.key)
                .and_then(|&i| self.services.get_mut(i))
            else {
                continue; // removed by a reload while its fetch was in flight
            };
            if s.generation != generation || !self.ownership.evaluates(&out.key) {
                continue; // its policy changed, or another replica evaluates it now
            }
            let now = batch.now;
            notices.extend(service::judge(
                &self.ctx,
                s,
                &mut out,
                &observations,
                &missing,
                now,
            ));
            judged.push(out);
        }
        self.ctx.health.set_role(&self.ownership.role());
        let now = self.ctx.clock.now_millis();
        board::record_cycle(&self.ctx.status, &self.ownership, now, &judged);
        self.hand_over(&judged);
        if let Some(slot) = batch.slot {
            // How late these evaluations finished against the slot they were due at.
            let late = Instant::now().saturating_duration_since(slot);
            let own = late.saturating_sub(batch.fetch_took).as_secs_f64();
            for _ in &judged {
                self.ctx.metrics.evaluation_lag.observe(late.as_secs_f64());
                self.ctx.metrics.evaluation_lag_own.observe(own);
            }
        }
        (judged, notices)
    }

    /// Hands what the cycle decided to the supervisor without waiting for any of it: recovery
    /// progress, new canaries (older orders are superseded) and orders this replica may act on.
    fn hand_over(&mut self, outcomes: &[CycleOutcome]) {
        for out in outcomes {
            for o in &out.recovery {
                self.supervisor.report(o.clone());
            }
            for ev in &out.events {
                if let crate::lifecycle::ReleaseEvent::CanaryStarted { id, .. } = ev {
                    self.supervisor.canary_changed(&out.key, id);
                }
            }
            for order in &out.orders {
                if !self.ownership.may_act(&order.service) {
                    continue; // a standby: the holder of the service's Lease acts
                }
                if let Some(s) = self
                    .index
                    .get(&out.key)
                    .and_then(|&i| self.services.get_mut(i))
                {
                    s.submitted(order);
                }
                self.supervisor.submit(order.clone());
            }
        }
    }

    /// The run loop's turn at a slot: starts the services due now whose previous fetch has
    /// answered, skips (and counts) the others, and returns without waiting for Prometheus.
    pub(super) async fn start_due(&mut self, slot: Option<Instant>) {
        let now = self.since_origin(Instant::now());
        let mut due = HashSet::new();
        let mut skipped = 0u64;
        for key in self.schedule.due(now) {
            if !self.ownership.evaluates(&key) {
                continue;
            }
            if self.pipeline.busy(&key) {
                skipped += 1;
            } else {
                due.insert(key);
            }
        }
        if skipped > 0 {
            self.ctx.metrics.evaluations_skipped.inc_by(skipped);
            tracing::warn!(
                skipped,
                "evaluations skipped: their previous Prometheus fetch is still running"
            );
        }
        if due.is_empty() {
            return;
        }
        let (batch, requests) = self.begin(&due, slot).await;
        if requests.is_empty() {
            // No service of the batch under analysis: nothing to wait for.
            let (_, notices) = self.conclude(batch, Some(HashMap::new()));
            self.notify(notices);
            return;
        }
        let (sampler, health) = (self.ctx.sampler.clone(), self.ctx.health.clone());
        self.pipeline.launch(batch, requests, sampler, health);
    }

    /// A fetch answered: step 3 for its batch.
    pub(super) fn answered(&mut self, answer: Answer) {
        if let Some((batch, observations)) = self.pipeline.land(answer) {
            let (_, notices) = self.conclude(batch, observations);
            self.notify(notices);
        }
    }

    /// Sends notices from their own task: the loop does not wait on a receiver either.
    fn notify(&self, notices: Vec<Notice>) {
        if notices.is_empty() {
            return;
        }
        let notifier = self.ctx.notifier.clone();
        tokio::spawn(async move {
            for notice in notices {
                if let Err(err) = notifier.send(&notice).await {
                    tracing::warn!(error = %err, "notification failed");
                }
            }
        });
    }

    /// At shutdown: judges what answers within `grace`, cancels the other fetches.
    pub(super) async fn drain_fetches(&mut self, grace: Duration) {
        let until = Instant::now() + grace;
        while !self.pipeline.is_empty() {
            match tokio::time::timeout_at(until, self.pipeline.answers.recv()).await {
                Ok(Some(answer)) => self.answered(answer),
                Ok(None) | Err(_) => break,
            }
        }
        let cancelled = self.pipeline.abort_all();
        if cancelled > 0 {
            tracing::warn!(
                phases = cancelled,
                "shutting down: Prometheus fetches still running were cancelled"
            );
        }
    }
}
