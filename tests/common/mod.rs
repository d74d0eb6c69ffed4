//! A scenario driver for decision-engine tests: one poll and one evaluation per `tick`.
#![allow(dead_code)]

use backout::decision::{Engine, Health, MetricStatus, Phase, Verdict};
use backout::policy::Policy;
use backout::sample::{Millis, Observation, Sample, Track};
use std::time::Duration;

pub const SEC: Millis = 1_000;
pub const INTERVAL: Millis = 10 * SEC;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn val(x: f64) -> Observation {
    Observation::Value(x)
}

/// Drives an engine at a fixed 10 s interval starting at t = 0 with a canary started at 0.
pub struct Run {
    pub engine: Engine,
    pub now: Millis,
    pub phase: Phase,
    /// Requests/s reported for both tracks at every tick (None: no traffic samples).
    pub traffic: Option<f64>,
}

impl Run {
    /// `policy` should set its own warm-up; `Policy::test()` defaults to 60 s.
    pub fn new(policy: Policy) -> Self {
        let policy = policy.with_interval(secs(10));
        Run {
            engine: Engine::new(&policy, "rev-1"),
            now: 0,
            phase: Phase::Canary { started_at: 0 },
            traffic: Some(100.0),
        }
    }

    /// Without warm-up, the common case for rule tests.
    pub fn no_warmup(policy: Policy) -> Self {
        Self::new(policy.with_warmup(secs(0)))
    }

    /// Records `obs` for each (metric, track), traffic, evaluates at `now`, then advances.
    pub fn tick_with(&mut self, polls: &[(&str, Track, Observation)]) -> Verdict {
        for (metric, track, obs) in polls {
            self.engine
                .observe(metric, *track, Sample::new(self.now, obs.clone()))
                .expect("metric is in the policy");
        }
        if let Some(rps) = self.traffic {
            for t in Track::ALL {
                self.engine.observe_traffic(t, Sample::value(self.now, rps));
            }
        }
        let verdict = self.engine.evaluate(self.now, self.phase);
        self.now += INTERVAL;
        verdict
    }

    /// One canary poll of metric `errors`.
    pub fn tick(&mut self, obs: Observation) -> Verdict {
        self.tick_with(&[("errors", Track::Canary, obs)])
    }

    /// Runs `n` ticks of the same canary observation, returning every verdict.
    pub fn ticks(&mut self, n: usize, obs: Observation) -> Vec<Verdict> {
        (0..n).map(|_| self.tick(obs.clone())).collect()
    }
}

pub fn status<'a>(v: &'a Verdict, metric: &str) -> &'a MetricStatus {
    v.metrics
        .iter()
        .find(|m| m.metric == metric)
        .expect("metric in verdict")
}

pub fn healths(vs: &[Verdict]) -> Vec<Health> {
    vs.iter().map(|v| v.health).collect()
}
