//! One service's engine: owns the sample windows and per-metric state for one canary revision.

use super::counter::{ArmCounters, EVENTS, TOTAL};
use super::rule::{self, millis, Breach, Inputs, Rule, Test};
use super::sequential;
use super::state::{Health, MetricState};
use super::statistic;
use super::verdict::{self, MetricStatus, Phase, Reason, Stage, Verdict};
use super::window::Window;
use super::DecisionError;
use crate::policy::feed::burn_windows;
use crate::policy::{Input, Policy};
use crate::sample::{Millis, Sample, Track};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the engine remembers about one metric.
#[derive(Debug, Clone)]
struct Slot {
    rule: Rule,
    /// Indexed by [`track_index`].
    series: [Window; 2],
    state: MetricState,
    inconclusive_since: Option<Millis>,
    /// Sequential metrics: events and total counters per track.
    counters: [ArmCounters; 2],
    /// Sequential metrics: where counting started.
    marks: sequential::Marks,
    /// Burn-rate metrics: error-ratio polls per rule window, per track.
    ratios: Vec<(Duration, [Window; 2])>,
}

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
    phase: Option<Phase>,
    latch: Option<Latch>,
    inconclusive_since: Option<Millis>,
}

fn track_index(t: Track) -> usize {
    match t {
        Track::Canary => 0,
        Track::Stable => 1,
    }
}

impl Engine {
    /// Builds an engine for `policy` judging canary `revision`. The policy is assumed validated
    /// by the loader; optional fields take the documented defaults.
    pub fn new(policy: &Policy, revision: impl Into<String>) -> Self {
        let interval = millis(policy.analysis.interval).max(1);
        let slots = policy
            .metrics
            .iter()
            .map(|spec| {
                let rule = Rule::from_spec(spec, &policy.analysis);
                // One interval of slack so a window that starts between two polls is full.
                let retain = rule.retention().saturating_add(interval);
                let ratios = match &rule.test {
                    Some(Test::BurnRate(cfg)) => burn_windows(cfg)
                        .into_iter()
                        .map(|w| (w, [Window::new(retain), Window::new(retain)]))
                        .collect(),
                    _ => Vec::new(),
                };
                Slot {
                    series: [Window::new(retain), Window::new(retain)],
                    rule,
                    state: MetricState::default(),
                    inconclusive_since: None,
                    counters: Default::default(),
                    marks: Default::default(),
                    ratios,
                }
            })
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
            phase: None,
            latch: None,
            inconclusive_since: None,
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
            Input::Events { .. } => slot.counters[t][EVENTS].push(sample),
            Input::Total { .. } => slot.counters[t][TOTAL].push(sample),
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
        self.traffic[track_index(track)].push(sample);
    }

    /// A new canary revision: forget everything about the old canary (its samples, every
    /// metric's timers, a sticky rollback). Stable samples are kept: the stable did not change.
    pub fn reset_for_revision(&mut self, revision: impl Into<String>) {
        self.revision = revision.into();
        let canary = track_index(Track::Canary);
        for slot in &mut self.slots {
            slot.series[canary].clear();
            slot.counters[canary] = Default::default();
            for r in &mut slot.ratios {
                r.1[canary].clear();
            }
        }
        self.traffic[canary].clear();
        self.reset_timers();
        self.phase = None;
        self.latch = None;
    }

    fn reset_timers(&mut self) {
        for slot in &mut self.slots {
            slot.state = MetricState::default();
            slot.inconclusive_since = None;
            slot.marks = Default::default();
        }
        self.inconclusive_since = None;
    }

    /// Judges the service at `now`. Call it once per analysis interval; every call is one
    /// "evaluation" in the sense of `for` and `clear_for`.
    pub fn evaluate(&mut self, now: Millis, phase: Phase) -> Verdict {
        self.enter(phase);
        let subject = phase.subject();
        let (warmup_until, stage) = match phase {
            Phase::Canary { started_at } => {
                let until = started_at.saturating_add(self.warmup);
                (
                    until,
                    if now < until {
                        Stage::Warmup
                    } else {
                        Stage::Analysis
                    },
                )
            }
            Phase::Bake { .. } => (Millis::MIN, Stage::Bake),
        };
        let traffic = &self.traffic[track_index(subject)];
        let mut statuses = Vec::with_capacity(self.slots.len());
        let mut breached = Vec::with_capacity(self.slots.len());
        for slot in &mut self.slots {
            let baseline = match phase {
                Phase::Canary { .. } => Some(&slot.series[track_index(Track::Stable)]),
                Phase::Bake { .. } => None,
            };
            let mut fire_from = warmup_until;
            let outcome = match &slot.rule.test {
                None => rule::evaluate(
                    &slot.rule,
                    Inputs {
                        subject,
                        series: &slot.series[track_index(subject)],
                        baseline,
                        traffic,
                    },
                    now,
                ),
                Some(Test::Sequential {
                    config,
                    warmup_alpha,
                    restart_every,
                }) => match phase {
                    Phase::Bake { .. } => rule::ignored(rule::Reading::NoBaseline),
                    Phase::Canary { .. } => {
                        let seq = sequential::Sequential {
                            config,
                            warmup_alpha: *warmup_alpha,
                            warmup_until,
                            restart_every: *restart_every,
                        };
                        let (outcome, from) =
                            seq.evaluate(&slot.rule, &slot.counters, &mut slot.marks, now);
                        fire_from = from;
                        outcome
                    }
                },
                Some(Test::BurnRate(cfg)) => {
                    statistic::burn_rate(&slot.rule, cfg, &slot.ratios, subject, now)
                }
                Some(Test::MannWhitney(cfg)) => {
                    statistic::mann_whitney(&slot.rule, cfg, &slot.series, baseline.is_some(), now)
                }
            };
            slot.state.step(&slot.rule, outcome.breach, now, fire_from);
            slot.inconclusive_since = match outcome.breach {
                Breach::Inconclusive => Some(slot.inconclusive_since.unwrap_or(now)),
                _ => None,
            };
            breached.push(outcome.threshold);
            statuses.push(MetricStatus {
                metric: slot.rule.name.clone(),
                health: slot.state.health(outcome.breach),
                breach: outcome.breach,
                reading: outcome.reading,
                warning: slot.state.warning,
                critical: slot.state.critical,
                inconclusive_since: slot.inconclusive_since,
            });
        }
        let current = statuses
            .iter()
            .map(|s| s.health)
            .fold(Health::Healthy, Health::max);
        // "Stuck" is about data a human must fix. A statistical test that has data but not yet
        // enough evidence to pass (low traffic) is inconclusive too, but waiting is the remedy.
        let data_problem = current == Health::Inconclusive
            && statuses.iter().any(|s| {
                s.health == Health::Inconclusive && !matches!(s.reading, rule::Reading::Test { .. })
            });
        self.inconclusive_since = match data_problem {
            true => Some(self.inconclusive_since.unwrap_or(now)),
            false => None,
        };
        let stuck = self
            .inconclusive_since
            .is_some_and(|since| now.saturating_sub(since) >= self.no_data_deadline);
        let reasons = verdict::reasons(
            statuses
                .iter()
                .zip(&self.slots)
                .zip(breached)
                .map(|((s, slot), b)| (s, &slot.rule, b)),
            subject,
        );
        if current == Health::Critical && self.latch.is_none() {
            self.latch = Some(Latch {
                at: now,
                reasons: reasons.clone(),
            });
        }
        let (health, reasons) = match &self.latch {
            Some(latch) => (Health::Critical, latch.reasons.clone()),
            None => (current, reasons),
        };
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
