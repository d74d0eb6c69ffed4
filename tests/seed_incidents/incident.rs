//! Replays a runbook's incident against a shipped example policy, poll by poll, through the real
//! decision engine: a tiny timeline language so each test reads like the runbook.
//!
//! ```ignore
//! let p = policy("devops-agent");
//! let replay = Incident::canary(&p)
//!     .healthy("error_rate", 0.0002) // every metric needs a healthy answer
//!     .healthy("p95_latency", 0.25)
//!     .same_signal("slo_burn_rate", "error_rate")
//!     .healthy_for("10m")
//!     .then("error_rate", 0.08)
//!     .for_("6m")
//!     .run();
//! replay.rolls_back_after("5m").because("error_rate");
//! ```
//!
//! A step ended by `for_(d)` covers the polls in `[start, start + d)`; the first step that changes
//! anything is the onset. `then_absent(metric)` and `then_blind()` make a metric's queries, or
//! every query, answer `Absent` for a step.
//!
//! What every query answers at each poll (every feed of `policy::feeds`, both tracks):
//! - a metric's value (`Input::Value`) is what the script says, as a dashboard panel of that query
//!   would show it: `then(metric, v)` makes the judged track's query answer `v` from the first
//!   poll of the step on, so the step's start is the onset of the breach as the query sees it;
//! - a burn-rate metric's error ratio over window `w` (`Input::Ratio`) is the trailing mean of the
//!   scripted ratio over `w` (a ratio of `rate()`s over `[w]` at steady traffic), with the
//!   healthy value before the timeline starts;
//! - a sequential metric's counters (`Input::Events` / `Input::Total`) are cumulative sums of
//!   requests (traffic x time) and of requests x the scripted error ratio; the stable's counters
//!   have history, the canary's start at zero, and an error counter still at zero answers
//!   `Absent` (Prometheus creates it with the first error);
//! - traffic (`Input::Traffic`) is requests per second per track.
//!
//! The judged track is the canary in `Incident::canary` and the stable in `Incident::bake`
//! (the promoted release); after promotion the canary's queries answer `Absent` (it has no pods).
#![allow(dead_code)]

use backout::decision::{Engine, Phase};
use backout::policy::{feeds, load_path, Input, Policy};
use backout::sample::{Millis, Observation, Sample, Track};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub use crate::replay::Replay;

pub const SEC: Millis = 1_000;
pub const MIN: Millis = 60 * SEC;

/// Loads `config/examples/<name>.toml` as a user would (templates from the same directory).
pub fn policy(name: &str) -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(format!("{name}.toml"));
    let mut policies = load_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(policies.len(), 1, "{}", path.display());
    policies.remove(0)
}

/// A humantime duration (`"5m"`, `"4m30s"`) in milliseconds.
pub fn ms(d: &str) -> Millis {
    let d = humantime::parse_duration(d).unwrap_or_else(|e| panic!("duration {d:?}: {e}"));
    Millis::try_from(d.as_millis()).expect("duration fits")
}

/// Milliseconds as a duration a human reads (`10m30s`).
pub fn show(t: Millis) -> String {
    let sign = if t < 0 { "-" } else { "" };
    let d = Duration::from_millis(t.unsigned_abs());
    format!("{sign}{}", humantime::format_duration(d))
}

/// What one query answers at one poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    Value(f64),
    /// An empty result: the series is missing.
    Absent,
}

const CANARY: usize = 0;
const STABLE: usize = 1;

fn idx(track: Track) -> usize {
    match track {
        Track::Canary => CANARY,
        Track::Stable => STABLE,
    }
}

/// Changes to the healthy state during one step of the timeline.
#[derive(Debug, Clone, Default)]
struct Changes {
    /// (metric, track index) -> answer.
    answers: BTreeMap<(String, usize), Answer>,
    /// Requests per second (canary, stable).
    traffic: Option<[f64; 2]>,
    /// Every query answers `Absent` (Prometheus has nothing for this service).
    blind: bool,
}

#[derive(Debug, Clone)]
struct Step {
    from: Millis,
    to: Millis,
    changes: Changes,
}

/// A timeline of one release, built step by step. See the module documentation.
#[derive(Debug, Clone)]
pub struct Incident {
    policy: Policy,
    phase: Phase,
    interval: Millis,
    /// Healthy answer per metric, per track.
    healthy: BTreeMap<String, [f64; 2]>,
    /// Metrics measured from another metric's signal (follower -> leader).
    links: BTreeMap<String, String>,
    traffic: [f64; 2],
    steps: Vec<Step>,
    open: Option<Changes>,
    onset: Option<Millis>,
}

impl Incident {
    /// A canary started at t = 0; the canary is judged (against the stable where a metric
    /// compares).
    pub fn canary(policy: &Policy) -> Self {
        Self::new(policy, Phase::Canary { started_at: 0 })
    }

    /// A release promoted at t = 0 and in its bake window: the stable is judged alone.
    pub fn bake(policy: &Policy) -> Self {
        Self::new(policy, Phase::Bake { promoted_at: 0 })
    }

    fn new(policy: &Policy, phase: Phase) -> Self {
        let interval = Millis::try_from(policy.analysis.interval.as_millis()).expect("interval");
        assert!(interval > 0);
        Incident {
            policy: policy.clone(),
            phase,
            interval,
            healthy: BTreeMap::new(),
            links: BTreeMap::new(),
            traffic: [5.0, 45.0],
            steps: Vec::new(),
            open: None,
            onset: None,
        }
    }

    fn subject(&self) -> usize {
        idx(self.phase.subject())
    }

    fn known(&self, metric: &str) {
        assert!(
            self.policy.metrics.iter().any(|m| m.name == metric),
            "{}: no metric `{metric}` (has: {})",
            self.policy.source.display(),
            self.policy
                .metrics
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    /// What `metric`'s query answers on both tracks while all is well.
    pub fn healthy(mut self, metric: &str, value: f64) -> Self {
        self.known(metric);
        self.healthy.insert(metric.into(), [value; 2]);
        self
    }

    /// Requests per second on each track (default 5 canary, 45 stable).
    pub fn traffic(mut self, canary: f64, stable: f64) -> Self {
        self.traffic = [canary, stable];
        self
    }

    /// `follower` measures the same thing as `leader` (e.g. a burn-rate rule on the same 5xx
    /// ratio): it answers whatever `leader` answers, healthy or not, unless set itself.
    pub fn same_signal(mut self, follower: &str, leader: &str) -> Self {
        self.known(follower);
        self.known(leader);
        self.links.insert(follower.into(), leader.into());
        self
    }

    fn push(&mut self, len: Millis, changes: Changes) {
        assert!(len > 0, "a step needs a duration");
        let from = self.steps.last().map_or(0, |s| s.to);
        let incident = !changes.answers.is_empty() || changes.traffic.is_some() || changes.blind;
        if incident && self.onset.is_none() {
            self.onset = Some(from);
        }
        self.steps.push(Step {
            from,
            to: from + len,
            changes,
        });
    }

    /// All metrics healthy for `d`.
    pub fn healthy_for(mut self, d: &str) -> Self {
        assert!(self.open.is_none(), "end the previous step with for_(...)");
        self.push(ms(d), Changes::default());
        self
    }

    fn set(mut self, metric: &str, tracks: &[usize], answer: Answer) -> Self {
        self.known(metric);
        let open = self
            .open
            .as_mut()
            .expect("start a step with then(...) first");
        for &t in tracks {
            open.answers.insert((metric.into(), t), answer);
        }
        self
    }

    fn start(mut self) -> Self {
        assert!(self.open.is_none(), "end the previous step with for_(...)");
        self.open = Some(Changes::default());
        self
    }

    /// A new step: the judged track's `metric` answers `value` (everything else healthy).
    pub fn then(self, metric: &str, value: f64) -> Self {
        let s = self.subject();
        self.start().set(metric, &[s], Answer::Value(value))
    }

    /// A new step in which both tracks' `metric` answer `value` (a shared dependency, or a
    /// metric that is not per track).
    pub fn then_both(self, metric: &str, value: f64) -> Self {
        self.start()
            .set(metric, &[CANARY, STABLE], Answer::Value(value))
    }

    /// A new step in which every query of `metric` (both tracks) answers `Absent`.
    pub fn then_absent(self, metric: &str) -> Self {
        self.start().set(metric, &[CANARY, STABLE], Answer::Absent)
    }

    /// A new step in which every query of the policy, traffic included, answers `Absent`.
    pub fn then_blind(mut self) -> Self {
        self = self.start();
        self.open.as_mut().expect("started").blind = true;
        self
    }

    /// In the same step, the judged track's `metric` answers `value` too.
    pub fn and(self, metric: &str, value: f64) -> Self {
        let s = self.subject();
        self.set(metric, &[s], Answer::Value(value))
    }

    /// In the same step, both tracks' `metric` answer `value`.
    pub fn and_both(self, metric: &str, value: f64) -> Self {
        self.set(metric, &[CANARY, STABLE], Answer::Value(value))
    }

    /// In the same step, every query of `metric` answers `Absent`.
    pub fn and_absent(self, metric: &str) -> Self {
        self.set(metric, &[CANARY, STABLE], Answer::Absent)
    }

    /// Ends the current step after `d`.
    pub fn for_(mut self, d: &str) -> Self {
        let changes = self.open.take().expect("start a step with then(...) first");
        self.push(ms(d), changes);
        self
    }

    fn step_at(&self, t: Millis) -> Option<&Step> {
        self.steps.iter().find(|s| s.from <= t && t < s.to)
    }

    fn leader<'a>(&'a self, metric: &'a str) -> &'a str {
        self.links.get(metric).map_or(metric, String::as_str)
    }

    /// The scripted answer of `metric` on track `t` at time `at` (before the timeline: healthy).
    fn signal(&self, metric: &str, t: usize, at: Millis) -> Answer {
        let leader = self.leader(metric);
        if let Some(step) = self.step_at(at) {
            if step.changes.blind {
                return Answer::Absent;
            }
            for m in [metric, leader] {
                if let Some(a) = step.changes.answers.get(&(m.to_string(), t)) {
                    return *a;
                }
            }
        }
        Answer::Value(self.healthy_value(metric, t))
    }

    fn healthy_value(&self, metric: &str, t: usize) -> f64 {
        let leader = self.leader(metric);
        self.healthy
            .get(metric)
            .or_else(|| self.healthy.get(leader))
            .unwrap_or_else(|| panic!("no healthy value for `{metric}`"))[t]
    }

    fn rps(&self, t: usize, at: Millis) -> f64 {
        self.step_at(at)
            .and_then(|s| s.changes.traffic)
            .unwrap_or(self.traffic)[t]
    }

    /// Piece boundaries of the timeline within `(from, to]`, as (start, end) pieces on which
    /// every scripted answer is constant.
    fn pieces(&self, from: Millis, to: Millis) -> Vec<(Millis, Millis)> {
        let mut cuts: Vec<Millis> = vec![from, to];
        cuts.extend(
            self.steps
                .iter()
                .flat_map(|s| [s.from, s.to])
                .filter(|&c| c > from && c < to),
        );
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// Trailing mean of `metric` over `(at - window, at]`, skipping absent stretches.
    fn trailing_mean(&self, metric: &str, t: usize, at: Millis, window: Millis) -> Answer {
        if self.signal(metric, t, at) == Answer::Absent {
            return Answer::Absent;
        }
        let (mut sum, mut len) = (0.0, 0.0);
        for (a, b) in self.pieces(at - window, at) {
            if let Answer::Value(v) = self.signal(metric, t, a) {
                sum += v * (b - a) as f64;
                len += (b - a) as f64;
            }
        }
        Answer::Value(sum / len)
    }

    /// Cumulative (requests, bad events) of track `t` at `at` since t = 0, plus history.
    fn counters(&self, metric: &str, t: usize, at: Millis) -> (f64, f64) {
        let history = if t == STABLE { 86_400.0 } else { 0.0 };
        let mut total = self.traffic[t] * history;
        let mut events = total * self.healthy_value(metric, t);
        for (a, b) in self.pieces(0, at) {
            let reqs = self.rps(t, a) * (b - a) as f64 / 1000.0;
            let ratio = match self.signal(metric, t, a) {
                Answer::Value(v) => v,
                // The service keeps serving while its telemetry is missing.
                Answer::Absent => self.healthy_value(metric, t),
            };
            total += reqs;
            events += reqs * ratio;
        }
        (total.floor(), events.floor())
    }

    /// What `input`'s query answers for `track` at `at`.
    pub fn answer(&self, input: &Input, track: Track, at: Millis) -> Observation {
        let t = idx(track);
        if matches!(self.phase, Phase::Bake { .. }) && t == CANARY {
            return Observation::Absent;
        }
        let obs = |a: Answer| match a {
            Answer::Value(v) => Observation::Value(v),
            Answer::Absent => Observation::Absent,
        };
        let blind = self.step_at(at).is_some_and(|s| s.changes.blind);
        match input {
            Input::Traffic if blind => Observation::Absent,
            Input::Traffic => Observation::Value(self.rps(t, at)),
            Input::Value { metric } => obs(self.signal(metric, t, at)),
            Input::Ratio { metric, window } => {
                let w = Millis::try_from(window.as_millis()).expect("window");
                obs(self.trailing_mean(metric, t, at, w))
            }
            Input::Events { metric } | Input::Total { metric } => {
                if self.signal(metric, t, at) == Answer::Absent {
                    return Observation::Absent;
                }
                let (total, events) = self.counters(metric, t, at);
                match input {
                    Input::Total { .. } => Observation::Value(total),
                    _ if events == 0.0 => Observation::Absent,
                    _ => Observation::Value(events),
                }
            }
        }
    }

    /// Polls every feed of the policy at every `analysis.interval` from t = 0 to the end of the
    /// timeline and evaluates after each poll.
    pub fn run(self) -> Replay {
        assert!(self.open.is_none(), "end the last step with for_(...)");
        let unset: Vec<&str> = self
            .policy
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .filter(|m| !self.healthy.contains_key(*m) && !self.links.contains_key(*m))
            .collect();
        assert!(
            unset.is_empty(),
            "give a healthy value for every metric; missing: {unset:?}"
        );
        let end = self.steps.last().map_or(0, |s| s.to);
        let mut engine = Engine::new(&self.policy, "release");
        let feeds = feeds(&self.policy);
        let mut verdicts = Vec::new();
        let mut at = 0;
        while at < end {
            for f in &feeds {
                let obs = self.answer(&f.input, f.track, at);
                engine
                    .observe_input(&f.input, f.track, Sample::new(at, obs))
                    .expect("every feed belongs to the policy");
            }
            verdicts.push(engine.evaluate(at, self.phase));
            at += self.interval;
        }
        Replay {
            service: self.policy.service.clone(),
            phase: self.phase,
            onset: self.onset.unwrap_or(end),
            interval: self.interval,
            verdicts,
        }
    }
}
