//! One service's engine: owns the sample windows and per-metric state for one canary revision.

use super::counter::{EVENTS, TOTAL};
use super::rule::{self, millis, Rule};
use super::served::Served;
use super::slot::{track_index, Counting, Judging, Slot};
use super::state::{Health, MetricState};
use super::verdict::{self, MetricStatus, Phase, Reason, Stage, Verdict};
use super::window::Window;
use super::DecisionError;
use crate::policy::{Input, OnShared, Policy};
use crate::sample::{Millis, Sample, Track};
use std::path::PathBuf;

/// A sticky rollback decision.
#[derive(Debug, Clone)]
struct Latch {
    at: Millis,
    reasons: Vec<Reason>,
}

/// The decision engine for one service. Feed it samples with `observe*`, ask with `evaluate`.
/// Same samples and the same `now` values in the same order give the same verdicts.
#[derive(Debug, Clone)]
pub struct Engine {
    service: String,
    namespace: String,
    source: PathBuf,
    revision: String,
    warmup: Millis,
    no_data_deadline: Millis,
    slots: Vec<Slot>,
    traffic: [Window; 2],
    /// Requests the canary served since its revision started (16 bytes a service; the
    /// longest gap between polls it counts is the traffic window's retention).
    canary_served: Served,
    phase: Option<Phase>,
    latch: Option<Latch>,
    inconclusive_since: Option<Millis>,
    on_shared: OnShared,
    /// The margin of the shared-cause test: the policy's first sequential metric's, else the
    /// sequential default (1.2).
    shared_margin: f64,
}

impl Engine {
    /// Builds an engine for `policy` judging canary `revision`. The policy is assumed validated
    /// by the loader; optional fields take the documented defaults.
    pub fn new(policy: &Policy, revision: impl Into<String>) -> Self {
        let interval = millis(policy.analysis.interval).max(1);
        let slots = policy
            .metrics
            .iter()
            .map(|spec| Slot::new(spec, &policy.analysis, interval))
            .collect();
        let traffic_retain = interval.saturating_mul(rule::STALE_INTERVALS + 1);
        Engine {
            service: policy.service.clone(),
            namespace: policy.namespace.clone(),
            source: policy.source.clone(),
            revision: revision.into(),
            warmup: millis(policy.analysis.warmup),
            no_data_deadline: millis(policy.analysis.no_data_deadline),
            slots,
            traffic: [Window::new(traffic_retain), Window::new(traffic_retain)],
            canary_served: Served::default(),
            phase: None,
            latch: None,
            inconclusive_since: None,
            on_shared: policy.analysis.on_shared,
            shared_margin: policy
                .metrics
                .iter()
                .find_map(|m| m.sequential.as_ref().map(|s| s.config().margin))
                .unwrap_or_else(|| crate::stats::sequential::SequentialConfig::default().margin),
        }
    }

    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The rules with defaults resolved, in policy order (what `explain` shows).
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.slots.iter().map(|s| &s.rule)
    }

    /// Records one poll of `metric` for `track`.
    pub fn observe(
        &mut self,
        metric: &str,
        track: Track,
        sample: Sample,
    ) -> Result<(), DecisionError> {
        let Some(i) = self.slots.iter().position(|s| s.rule.name == metric) else {
            return Err(self.unknown(metric));
        };
        self.slots[i].series[track_index(track)].push(sample);
        Ok(())
    }

    /// Records one poll of any query the policy's [`crate::policy::feeds`] list: the one entry
    /// point the daemon, the demo and backtests use.
    pub fn observe_input(
        &mut self,
        input: &Input,
        track: Track,
        sample: Sample,
    ) -> Result<(), DecisionError> {
        let metric = match input {
            Input::Traffic => {
                self.observe_traffic(track, sample);
                return Ok(());
            }
            Input::Value { metric } => return self.observe(metric, track, sample),
            Input::Events { metric } | Input::Total { metric } | Input::Ratio { metric, .. } => {
                metric
            }
        };
        let Some(slot) = self.slots.iter_mut().find(|s| &s.rule.name == metric) else {
            return Err(self.unknown(metric));
        };
        let t = track_index(track);
        match input {
            Input::Events { .. } => counting(slot).counters[t][EVENTS].push(sample),
            Input::Total { .. } => counting(slot).counters[t][TOTAL].push(sample),
            Input::Ratio { window, .. } => match slot.ratios.iter_mut().find(|r| r.0 == *window) {
                Some(r) => r.1[t].push(sample),
                None => return Err(self.unknown(&input.key())),
            },
            Input::Value { .. } | Input::Traffic => {}
        }
        Ok(())
    }

    fn unknown(&self, metric: &str) -> DecisionError {
        DecisionError::UnknownMetric {
            file: self.source.clone(),
            service: self.service.clone(),
            metric: metric.to_string(),
        }
    }

    /// Records one poll of `analysis.traffic_query` (requests per second) for `track`.
    pub fn observe_traffic(&mut self, track: Track, sample: Sample) {
        if track == Track::Canary {
            let gap = self.traffic[track_index(track)].retention();
            self.canary_served.observe(&sample, gap);
        }
        self.traffic[track_index(track)].push(sample);
    }

    /// A new canary revision: forget everything about the old canary (its samples, every
    /// metric's timers, a sticky rollback). Stable samples are kept: the stable did not change.
    pub fn reset_for_revision(&mut self, revision: impl Into<String>) {
        self.revision = revision.into();
        let canary = track_index(Track::Canary);
        for slot in &mut self.slots {
            slot.series[canary].clear();
            if let Some(c) = slot.counting.as_deref_mut() {
                c.counters[canary] = Default::default();
            }
            for r in &mut slot.ratios {
                r.1[canary].clear();
            }
        }
        self.traffic[canary].clear();
        self.canary_served = Served::default();
        self.reset_timers();
        self.phase = None;
        self.latch = None;
    }

    fn reset_timers(&mut self) {
        for slot in &mut self.slots {
            slot.state = MetricState::default();
            slot.inconclusive_since = None;
            if let Some(c) = slot.counting.as_deref_mut() {
                c.marks = Default::default();
            }
            slot.shared = Default::default();
        }
        self.inconclusive_since = None;
    }

    /// Judges the service at `now`. Call it once per analysis interval; every call is one
    /// "evaluation" in the sense of `for` and `clear_for`.
    pub fn evaluate(&mut self, now: Millis, phase: Phase) -> Verdict {
        self.enter(phase);
        let (warmup_until, stage) = self.stage(phase, now);
        let subject = phase.subject();
        let judging = Judging {
            phase,
            subject,
            warmup_until,
            traffic: &self.traffic[track_index(subject)],
            both_traffic: [&self.traffic[0], &self.traffic[1]],
            canary_served: self.canary_served.requests(),
            on_shared: self.on_shared,
            margin: self.shared_margin,
            now,
        };
        let (statuses, breached): (Vec<_>, Vec<_>) = self
            .slots
            .iter_mut()
            .map(|slot| slot.judge(&judging))
            .unzip();
        let current = statuses
            .iter()
            .map(|s| s.health)
            .fold(Health::Healthy, Health::max);
        let stuck = self.stuck(current, &statuses, now);
        let reasons = verdict::reasons(
            statuses
                .iter()
                .zip(&self.slots)
                .zip(breached)
                .map(|((s, slot), b)| (s, &slot.rule, b)),
            subject,
        );
        let (health, reasons) = self.latch(current, reasons, now);
        Verdict {
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            revision: self.revision.clone(),
            at: now,
            phase,
            stage,
            health,
            rollback: self.latch.is_some(),
            rollback_since: self.latch.as_ref().map(|l| l.at),
            stuck,
            reasons,
            metrics: statuses,
        }
    }

    /// Until when breaches may not fire (the canary's warm-up; no warm-up in bake, the stable has
    /// served all along) and the stage that makes `now`.
    fn stage(&self, phase: Phase, now: Millis) -> (Millis, Stage) {
        match phase {
            Phase::Canary { started_at } => {
                let until = started_at.saturating_add(self.warmup);
                let stage = if now < until {
                    Stage::Warmup
                } else {
                    Stage::Analysis
                };
                (until, stage)
            }
            Phase::Bake { .. } => (Millis::MIN, Stage::Bake),
        }
    }

    /// Whether the service has been inconclusive for lack of data past `no_data_deadline`.
    ///
    /// "Stuck" is about data a human must fix. A statistical test that has data but not yet
    /// enough evidence to pass (low traffic) is inconclusive too, but waiting is the remedy, so it
    /// neither starts nor keeps the clock running.
    fn stuck(&mut self, current: Health, statuses: &[MetricStatus], now: Millis) -> bool {
        let data_problem = current == Health::Inconclusive
            && statuses.iter().any(|s| {
                s.health == Health::Inconclusive && !matches!(s.reading, rule::Reading::Test { .. })
            });
        self.inconclusive_since = match data_problem {
            true => Some(self.inconclusive_since.unwrap_or(now)),
            false => None,
        };
        self.inconclusive_since
            .is_some_and(|since| now.saturating_sub(since) >= self.no_data_deadline)
    }

    /// The verdict's health and reasons after the sticky rollback: the first critical evaluation
    /// latches its reasons, and from then on the verdict stays critical with those reasons (a
    /// canary that recovers after being rolled back is still the canary that was rolled back).
    fn latch(
        &mut self,
        current: Health,
        reasons: Vec<Reason>,
        now: Millis,
    ) -> (Health, Vec<Reason>) {
        if current == Health::Critical && self.latch.is_none() {
            self.latch = Some(Latch {
                at: now,
                reasons: reasons.clone(),
            });
        }
        match &self.latch {
            Some(latch) => (Health::Critical, latch.reasons.clone()),
            None => (current, reasons),
        }
    }

    /// A phase change (canary -> bake, or a canary restarted at another time) changes the judged track: timers restart, and the
    /// stable's samples from before the promotion (the old version) are dropped.
    fn enter(&mut self, phase: Phase) {
        let changed = self.phase.is_some_and(|p| p != phase);
        if changed {
            self.reset_timers();
        }
        if let Phase::Bake { promoted_at } = phase {
            if self.phase != Some(phase) {
                let stable = track_index(Track::Stable);
                for slot in &mut self.slots {
                    slot.series[stable].drop_before(promoted_at);
                    for r in &mut slot.ratios {
                        r.1[stable].drop_before(promoted_at);
                    }
                }
                self.traffic[stable].drop_before(promoted_at);
            }
        }
        self.phase = Some(phase);
    }
}

/// A slot's sequential counters, made on first use (a slot of a sequential metric has them
/// from the start; other metrics are never sent counters by the feed).
fn counting(slot: &mut Slot) -> &mut Counting {
    slot.counting.get_or_insert_with(Box::default)
}
