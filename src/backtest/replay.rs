//! The pure replay: range answers + policy + schedule -> every verdict change. No I/O and no
//! clock, so it is tested without Prometheus and the same history always gives the same answer.

use super::schedule::Schedule;
use super::BacktestError;
use crate::decision::{Engine, Health, Reason, Verdict};
use crate::policy::Policy;
use crate::sample::{Millis, Observation, Sample};
use crate::source::plan::{QueryPlan, Request};
use crate::source::{Labels, RangeSeries, Series, SourceError};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;

/// The requests the daemon sends for `policy` at every poll (same keys, same PromQL, same
/// batching), so a backtest splits answers exactly as the daemon does.
pub fn requests(policy: &Policy) -> Vec<Request> {
    crate::source::plan::policy_requests(policy)
}

/// The distinct rendered queries of `policy`, in plan order: each is fetched once.
pub fn queries(policy: &Policy) -> Vec<String> {
    QueryPlan::build(requests(policy))
        .queries()
        .map(String::from)
        .collect()
}

/// Range answers by rendered PromQL. Samples of one series are kept in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    by_query: HashMap<String, Vec<RangeSeries>>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (part of) the answer to `promql`; series with the same labels are merged, so a
    /// window fetched in several chunks reads as one answer.
    pub fn insert(&mut self, promql: &str, series: Vec<RangeSeries>) {
        let known = self.by_query.entry(promql.to_string()).or_default();
        for s in series {
            match known.iter_mut().find(|k| k.labels == s.labels) {
                Some(k) => k.samples.extend(s.samples),
                None => known.push(s),
            }
        }
        for k in known.iter_mut() {
            k.samples.sort_by_key(|p| p.at);
            k.samples.dedup_by_key(|p| p.at);
        }
    }

    pub fn get(&self, promql: &str) -> Option<&[RangeSeries]> {
        self.by_query.get(promql).map(Vec::as_slice)
    }
}

/// One verdict that differs from the previous poll's (health, rollback, stuck, or any metric's
/// health); the first judged poll is always one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// 0 for `--from`.
    pub poll: u64,
    pub verdict: Verdict,
}

/// When the rollback would have fired and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollback {
    pub at: Millis,
    /// Milliseconds after `--from` (the canary's start, or the promotion in bake mode).
    pub after_ms: Millis,
    pub reasons: Vec<Reason>,
}

/// Everything a backtest found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub service: String,
    pub namespace: String,
    pub policy_file: PathBuf,
    pub schedule: Schedule,
    pub polls: u64,
    pub changes: Vec<Change>,
    pub rollback: Option<Rollback>,
    /// The verdict at the last poll.
    pub last: Option<Verdict>,
}

/// What makes two consecutive verdicts "the same" for the change list.
#[derive(PartialEq)]
struct Shape {
    health: Health,
    rollback: bool,
    stuck: bool,
    metrics: Vec<Health>,
}

impl Shape {
    fn of(v: &Verdict) -> Self {
        Shape {
            health: v.health,
            rollback: v.rollback,
            stuck: v.stuck,
            metrics: v.metrics.iter().map(|m| m.health).collect(),
        }
    }
}

/// One query's range answer, read poll by poll.
struct Replayed<'a> {
    series: Vec<(&'a Labels, &'a [Sample])>,
    /// Per series: index of the first sample not yet passed.
    next: Vec<usize>,
}

impl<'a> Replayed<'a> {
    /// Keeps only the series the policy's service can use, so a fleet-wide batched query does not
    /// cost a label clone per service per poll. `split` is the query's split labels (if batched).
    fn new(
        series: &'a [RangeSeries],
        split: Option<&crate::source::SplitLabels>,
        service: &str,
    ) -> Self {
        let series: Vec<(&Labels, &[Sample])> = series
            .iter()
            .filter(|s| {
                split.is_none_or(|l| s.labels.get(&*l.service).map(String::as_str) == Some(service))
            })
            .map(|s| (&s.labels, s.samples.as_slice()))
            .collect();
        let next = vec![0; series.len()];
        Self { series, next }
    }

    /// The instant-query answer at `t`: every series with a point at exactly `t`. Calls must
    /// come in increasing `t`.
    fn at(&mut self, t: Millis) -> Vec<Series> {
        let mut out = Vec::new();
        for ((labels, samples), next) in self.series.iter().zip(self.next.iter_mut()) {
            while samples.get(*next).is_some_and(|s| s.at < t) {
                *next += 1;
            }
            let value = match samples.get(*next) {
                Some(s) if s.at == t => match s.obs {
                    Observation::Value(v) | Observation::NotFinite(v) => Some(v),
                    Observation::Absent | Observation::Error(_) => None,
                },
                _ => None,
            };
            if let Some(value) = value {
                out.push(Series {
                    labels: (*labels).clone(),
                    value,
                });
            }
        }
        out
    }
}

/// Replays `policy` over `history` at every instant of `schedule`: the engine observes every
/// instant (history before `from` included) and is judged from `from` on.
///
/// A query missing from `history` reads as an empty answer at every poll (the engine then sees
/// `Absent`, as it would for a series that does not exist).
pub fn replay(
    policy: &Policy,
    schedule: &Schedule,
    history: &History,
) -> Result<Replay, BacktestError> {
    let reqs = requests(policy);
    let plan = QueryPlan::build(reqs.iter().cloned());
    let mut readers: Vec<Replayed<'_>> = plan
        .queries()
        .enumerate()
        .map(|(i, q)| {
            let split = plan.split_of(i);
            Replayed::new(history.get(q).unwrap_or_default(), split, &policy.service)
        })
        .collect();
    let phase = schedule.phase();
    let mut engine = Engine::new(policy, "backtest");
    let mut changes = Vec::new();
    let mut previous: Option<Shape> = None;
    let mut rollback = None;
    let mut last = None;
    let mut poll = 0u64;
    for t in schedule.instants() {
        let results: Vec<Result<Vec<Series>, SourceError>> =
            readers.iter_mut().map(|r| Ok(r.at(t))).collect();
        let mut observations = plan.split(&results);
        for r in &reqs {
            let obs = observations.remove(&r.key).unwrap_or(Observation::Absent);
            engine
                .observe_input(&r.key.input, r.key.track, Sample::new(t, obs))
                .map_err(BacktestError::Engine)?;
        }
        if t < schedule.from {
            continue;
        }
        let verdict = engine.evaluate(t, phase);
        if rollback.is_none() && verdict.rollback {
            rollback = Some(Rollback {
                at: verdict.rollback_since.unwrap_or(t),
                after_ms: verdict.rollback_since.unwrap_or(t) - schedule.from,
                reasons: verdict.reasons.clone(),
            });
        }
        let shape = Shape::of(&verdict);
        if previous.as_ref() != Some(&shape) {
            changes.push(Change {
                poll,
                verdict: verdict.clone(),
            });
            previous = Some(shape);
        }
        last = Some(verdict);
        poll += 1;
    }
    Ok(Replay {
        service: policy.service.clone(),
        namespace: policy.namespace.clone(),
        policy_file: policy.source.clone(),
        schedule: *schedule,
        polls: poll,
        changes,
        rollback,
        last,
    })
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
