//! One service's engine: owns the sample windows and per-metric state for one canary revision.

use super::counter::{ArmCounters, EVENTS, TOTAL};
use super::rule::{self, millis, Breach, Inputs, Outcome, Rule, Test};
use super::sequential;
use super::shared;
use super::state::{Health, MetricState};
use super::statistic;
use super::verdict::{self, MetricStatus, Phase, Reason, Stage, Verdict};
use super::window::Window;
use super::DecisionError;
use crate::policy::feed::burn_windows;
use crate::policy::{Input, Level, OnShared, Policy};
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
    /// The metric's PromQL window in ms: what one value summarises (shared-cause counts).
    query_window: Millis,
    /// Whether its query tells the tracks apart (`shared::per_track`).
    per_track: bool,
    /// When the incident was last seen and how dispersed the canary's counts are
    /// (`shared::Check::memory`).
    shared: shared::Memory,
}

/// A sticky rollback decision.
#[derive(Debug, Clone)]
struct Latch {
    at: Millis,
    reasons: Vec<Reason>,
}

/// What every metric is judged against at one evaluation.
struct Judging<'a> {
    phase: Phase,
    /// The judged track: the canary in analysis, the stable in bake.
    subject: Track,
    /// Breaches before this do not fire (the canary's warm-up).
    warmup_until: Millis,
    /// The subject's requests per second (traffic floors).
    traffic: &'a Window,
    /// Both tracks' requests per second (canary, stable): shared-cause counts.
    both_traffic: [&'a Window; 2],
    /// What a shared-cause breach does, and the margin its test allows.
    on_shared: OnShared,
    margin: f64,
    now: Millis,
}

impl Slot {
    /// One evaluation of this metric: its outcome moves its state machine and inconclusive
    /// timer; returns its status and the level it breached (for the reasons).
    fn judge(&mut self, at: &Judging) -> (MetricStatus, Option<Level>) {
        let (outcome, fire_from) = self.outcome(at);
        self.state
            .step(&self.rule, outcome.breach, at.now, fire_from);
        self.inconclusive_since = match outcome.breach {
            Breach::Inconclusive => Some(self.inconclusive_since.unwrap_or(at.now)),
            _ => None,
        };
        let status = MetricStatus {
            metric: self.rule.name.clone(),
            health: self.state.health(outcome.breach),
            breach: outcome.breach,
            reading: outcome.reading,
            warning: self.state.warning,
            critical: self.state.critical,
            inconclusive_since: self.inconclusive_since,
        };
        (status, outcome.threshold)
    }

    /// The metric's reading and breach at this evaluation, by its kind, and from when a breach
    /// may fire: the warm-up's end, or later for a sequential test whose counting restarted.
    fn outcome(&mut self, at: &Judging) -> (Outcome, Millis) {
        // The stable is the baseline only while a canary is judged; in bake it is the subject.
        let baseline = match at.phase {
            Phase::Canary { .. } => Some(&self.series[track_index(Track::Stable)]),
            Phase::Bake { .. } => None,
        };
        let outcome = match &self.rule.test {
            None => {
                let own = rule::evaluate(
                    &self.rule,
                    Inputs {
                        subject: at.subject,
                        series: &self.series[track_index(at.subject)],
                        baseline,
                        traffic: at.traffic,
                    },
                    at.now,
                );
                // Only a judged canary has a stable to share a cause with; bake is unchanged.
                match baseline {
                    Some(stable) => shared::Check {
                        rule: &self.rule,
                        stable,
                        traffic: at.both_traffic,
                        window: counted(self.query_window, at),
                        margin: at.margin,
                        on_shared: at.on_shared,
                        per_track: self.per_track,
                        memory: &mut self.shared,
                        now: at.now,
                    }
                    .apply(own),
                    None => own,
                }
            }
            Some(Test::Sequential {
                config,
                warmup_alpha,
                horizon,
            }) => match at.phase {
                Phase::Bake { .. } => rule::ignored(rule::Reading::NoBaseline),
                Phase::Canary { .. } => {
                    let seq = sequential::Sequential {
                        config,
                        warmup_alpha: *warmup_alpha,
                        warmup_until: at.warmup_until,
                        horizon: *horizon,
                    };
                    return seq.evaluate(&self.rule, &self.counters, &mut self.marks, at.now);
                }
            },
            Some(Test::BurnRate(cfg)) => {
                let own = statistic::burn_rate(&self.rule, cfg, &self.ratios, at.subject, at.now);
                match at.phase {
                    // The burn config is the rule's, which `shared_burn` borrows mutably.
                    Phase::Canary { .. } => self.shared_burn(&cfg.clone(), own, at),
                    Phase::Bake { .. } => own,
                }
            }
            Some(Test::MannWhitney(cfg)) => {
                statistic::mann_whitney(&self.rule, cfg, &self.series, baseline.is_some(), at.now)
            }
        };
        (outcome, at.warmup_until)
    }

    /// A canary burn-rate breach the stable's burn shares (`decision::shared`), judged on the
    /// error ratios over the long window of the rule the canary fired.
    fn shared_burn(
        &mut self,
        cfg: &crate::stats::burn_rate::BurnConfig,
        own: Outcome,
        at: &Judging,
    ) -> Outcome {
        if own.breach != Breach::Critical {
            return own;
        }
        let read = |w: &Window| {
            rule::read(
                w,
                crate::policy::Stat::Last,
                0,
                self.rule.stale_after,
                at.now,
            )
            .ok()
        };
        let ratios: Vec<_> = self
            .ratios
            .iter()
            .map(|(w, series)| (*w, [read(&series[0]), read(&series[1])]))
            .collect();
        let Some(burn) = shared::Burn::of(cfg, &ratios, at.margin) else {
            return own;
        };
        shared::Check {
            rule: &self.rule,
            stable: &self.series[track_index(Track::Stable)],
            traffic: at.both_traffic,
            window: counted(millis(burn.long), at),
            margin: at.margin,
            on_shared: at.on_shared,
            per_track: self.per_track,
            memory: &mut self.shared,
            now: at.now,
        }
        .apply_burn(own, &burn)
    }
}

/// The part of a query window the canary has existed for: a `rate()` over an hour of a canary
/// five minutes old summarises five minutes of requests (shared-cause counts).
fn counted(window: Millis, at: &Judging) -> Millis {
    match at.phase {
        Phase::Canary { started_at } => window.min(at.now.saturating_sub(started_at).max(1)),
        Phase::Bake { .. } => window,
    }
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
    on_shared: OnShared,
    /// The margin of the shared-cause test: the policy's first sequential metric's, else the
    /// sequential default (1.2).
    shared_margin: f64,
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
                let query_window = millis(
                    crate::policy::defaults::effective(spec, policy.analysis.interval).window,
                );
                Slot {
                    query_window,
                    per_track: shared::per_track(spec.query.as_deref()),
                    shared: Default::default(),
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
