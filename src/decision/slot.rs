//! One metric's memory inside a service's engine, and how it is judged at one evaluation.
//!
//! Split from `engine` (which owns the slots, the phase and the latch) so each stays readable.

use super::counter::ArmCounters;
use super::rule::{self, millis, Breach, Inputs, Outcome, Rule, Test};
use super::sequential;
use super::shared;
use super::state::MetricState;
use super::statistic;
use super::verdict::{MetricStatus, Phase};
use super::window::Window;
use crate::policy::feed::burn_windows;
use crate::policy::{Analysis, Level, MetricSpec, OnShared};
use crate::sample::{Millis, Track};
use std::time::Duration;

/// Everything the engine remembers about one metric.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) rule: Rule,
    /// Indexed by [`track_index`].
    pub(super) series: [Window; 2],
    pub(super) state: MetricState,
    pub(super) inconclusive_since: Option<Millis>,
    /// Sequential metrics only: boxed, because it is most of a slot's size (about 500 of
    /// 960 bytes) and most metrics are not sequential; a fleet holds 40,000 slots (issue 10).
    pub(super) counting: Option<Box<Counting>>,
    /// Burn-rate metrics: error-ratio polls per rule window, per track.
    pub(super) ratios: Vec<(Duration, [Window; 2])>,
    /// The metric's PromQL window in ms: what one value summarises (shared-cause counts).
    query_window: Millis,
    /// Whether its query tells the tracks apart (`shared::per_track`).
    per_track: bool,
    /// When the incident was last seen and how dispersed the canary's counts are
    /// (`shared::Check::memory`).
    pub(super) shared: shared::Memory,
}

/// What a sequential metric counts.
#[derive(Debug, Clone, Default)]
pub(super) struct Counting {
    /// Events and total counters per track.
    pub(super) counters: [ArmCounters; 2],
    /// Where counting started.
    pub(super) marks: sequential::Marks,
}

impl Slot {
    /// The slot of `spec`, its sample rings sized for the polls they keep (`interval` in ms).
    pub(super) fn new(spec: &MetricSpec, analysis: &Analysis, interval: Millis) -> Self {
        let rule = Rule::from_spec(spec, analysis);
        // One interval of slack so a window that starts between two polls is full.
        let retain = rule.retention().saturating_add(interval);
        let ring = || Window::for_polls(retain, interval);
        let ratios = match rule.test.as_deref() {
            Some(Test::BurnRate(cfg)) => burn_windows(cfg)
                .into_iter()
                .map(|w| (w, [ring(), ring()]))
                .collect(),
            _ => Vec::new(),
        };
        let counting = matches!(rule.test.as_deref(), Some(Test::Sequential { .. }))
            .then(|| Box::new(Counting::default()));
        Slot {
            query_window: millis(
                crate::policy::defaults::effective(spec, analysis.interval).window,
            ),
            per_track: shared::per_track(spec.query.as_deref()),
            shared: Default::default(),
            series: [ring(), ring()],
            rule,
            state: MetricState::default(),
            inconclusive_since: None,
            counting,
            ratios,
        }
    }
}

/// What every metric is judged against at one evaluation.
pub(super) struct Judging<'a> {
    pub(super) phase: Phase,
    /// The judged track: the canary in analysis, the stable in bake.
    pub(super) subject: Track,
    /// Breaches before this do not fire (the canary's warm-up).
    pub(super) warmup_until: Millis,
    /// The subject's requests per second (traffic floors).
    pub(super) traffic: &'a Window,
    /// Both tracks' requests per second (canary, stable): shared-cause counts.
    pub(super) both_traffic: [&'a Window; 2],
    /// Requests the canary has served since its revision started (`decision::served`).
    pub(super) canary_served: f64,
    /// What a shared-cause breach does, and the margin its test allows.
    pub(super) on_shared: OnShared,
    pub(super) margin: f64,
    pub(super) now: Millis,
}

impl Slot {
    /// One evaluation of this metric: its outcome moves its state machine and inconclusive
    /// timer; returns its status and the level it breached (for the reasons).
    pub(super) fn judge(&mut self, at: &Judging) -> (MetricStatus, Option<Level>) {
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
        let outcome = match self.rule.test.as_deref() {
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
                        canary_requests: None,
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
                    let c = self.counting.get_or_insert_with(Box::default);
                    return seq.evaluate(&self.rule, &c.counters, &mut c.marks, at.now);
                }
            },
            Some(Test::BurnRate(cfg)) => {
                let own = statistic::burn_rate(&self.rule, cfg, &self.ratios, at.subject, at.now);
                match at.phase {
                    Phase::Canary { .. } => self.shared_burn(own, at),
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
    fn shared_burn(&mut self, own: Outcome, at: &Judging) -> Outcome {
        let Some(Test::BurnRate(cfg)) = self.rule.test.as_deref() else {
            return own;
        };
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
        let age = match at.phase {
            Phase::Canary { started_at } => at.now.saturating_sub(started_at),
            Phase::Bake { .. } => Millis::MAX,
        };
        let age = Duration::from_millis(u64::try_from(age).unwrap_or(0));
        let Some(burn) = shared::Burn::of(cfg, &ratios, at.margin, age) else {
            return own;
        };
        shared::Check {
            rule: &self.rule,
            stable: &self.series[track_index(Track::Stable)],
            traffic: at.both_traffic,
            window: counted(millis(burn.long), at),
            // The span is the canary's whole life: its requests are what it served.
            canary_requests: (burn.long == age).then_some(at.canary_served),
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

pub(super) fn track_index(t: Track) -> usize {
    match t {
        Track::Canary => 0,
        Track::Stable => 1,
    }
}
