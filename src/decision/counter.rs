//! Cumulative counters read poll by poll, turned into "how many events since the analysis
//! started" for the sequential test.
//!
//! Why not `increase()` in PromQL: the window since the canary started grows every poll, which
//! would make every query unique per service (no batching) and its cost grow with the analysis.
//! Instead the engine is sent the counter's current value (a `sum` over pods) and adds up the
//! increases itself. Prometheus realities, handled conservatively (never inventing events):
//! - a counter that drops (a pod restarted) loses that interval: the increase is not counted,
//!   and counting resumes from the new value;
//! - a counter first seen absent and later present was created meanwhile (error counters appear
//!   with the first error), so its whole value counts;
//! - a counter absent for a while (target down) and back continues from its last value.
//!
//! [`ArmCounters`] pairs a track's events and total counters into the counts the test reads.

use super::rule::Missing;
use crate::sample::{Millis, Observation, Sample, Track};
use crate::stats::sequential::ArmCounts;

/// One counter of one track.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    last: Option<f64>,
    /// A poll found no series before any value did: the counter did not exist yet.
    seen_absent: bool,
    /// Sum of increases since this accumulator was created.
    increase: f64,
    latest: Option<Sample>,
}

/// Why a counter cannot be read at this evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum CounterState<'a> {
    /// Fresh: its increase so far.
    Fresh(f64),
    /// The newest poll found no series.
    Absent,
    Never,
    /// The newest poll is older than the staleness limit, or failed / was not finite.
    Unusable(&'a Sample),
}

impl Counter {
    pub fn push(&mut self, sample: Sample) {
        match sample.obs {
            Observation::Value(v) => {
                match self.last {
                    Some(prev) if v >= prev => self.increase += v - prev,
                    Some(_) => {}
                    None if self.seen_absent => self.increase += v.max(0.0),
                    None => {}
                }
                self.last = Some(v);
            }
            Observation::Absent => {
                if self.last.is_none() {
                    self.seen_absent = true;
                }
            }
            Observation::NotFinite(_) | Observation::Error(_) => {}
        }
        self.latest = Some(sample);
    }

    /// The counter as of `now`, if its newest poll is a value no older than `stale_after`.
    pub fn read(&self, now: Millis, stale_after: Millis) -> CounterState<'_> {
        let Some(latest) = &self.latest else {
            return CounterState::Never;
        };
        if now.saturating_sub(latest.at) > stale_after {
            return CounterState::Unusable(latest);
        }
        match latest.obs {
            Observation::Value(_) => CounterState::Fresh(self.increase),
            Observation::Absent => CounterState::Absent,
            _ => CounterState::Unusable(latest),
        }
    }

    /// The increase so far, regardless of freshness (for marking where counting starts).
    pub fn increase(&self) -> f64 {
        self.increase
    }
}

/// Events and total counters of one track.
pub type ArmCounters = [Counter; 2];
pub const EVENTS: usize = 0;
pub const TOTAL: usize = 1;

fn counter_missing(state: CounterState<'_>) -> Option<Missing> {
    match state {
        CounterState::Fresh(_) => None,
        CounterState::Absent => Some(Missing::Absent),
        CounterState::Never => Some(Missing::NeverSeen),
        CounterState::Unusable(s) => Some(match &s.obs {
            Observation::Error(reason) => Missing::Error {
                reason: reason.clone(),
            },
            Observation::NotFinite(_) => Missing::NotFinite,
            _ => Missing::Stale { last_at: s.at },
        }),
    }
}

/// Increases of both counters of `arm`, or why they cannot be used. An absent event counter
/// on the canary is "no event yet" (error series appear with the first error, and it can only
/// make the canary look better); on the stable it is missing data.
pub fn arm_counts(
    arm: &ArmCounters,
    track: Track,
    now: Millis,
    stale_after: Millis,
) -> Result<ArmCounts, Missing> {
    let total = match arm[TOTAL].read(now, stale_after) {
        CounterState::Fresh(v) => v,
        other => return Err(counter_missing(other).unwrap_or(Missing::Absent)),
    };
    let events = match arm[EVENTS].read(now, stale_after) {
        CounterState::Fresh(v) => v,
        CounterState::Absent if track == Track::Canary => arm[EVENTS].increase(),
        other => return Err(counter_missing(other).unwrap_or(Missing::Absent)),
    };
    Ok(ArmCounts::new(events, total))
}

/// Where the sequential counts start, per track (snapshot of each arm's increases).
pub fn snapshot(counters: &[ArmCounters; 2]) -> [ArmCounts; 2] {
    counters
        .each_ref()
        .map(|a| ArmCounts::new(a[EVENTS].increase(), a[TOTAL].increase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(values: &[Option<f64>]) -> Counter {
        let mut c = Counter::default();
        for (i, v) in values.iter().enumerate() {
            let obs = v.map_or(Observation::Absent, Observation::Value);
            c.push(Sample::new(i as Millis * 1000, obs));
        }
        c
    }

    #[test]
    fn the_first_value_is_the_baseline() {
        assert_eq!(
            fed(&[Some(100.0), Some(110.0), Some(125.0)]).increase(),
            25.0
        );
    }

    #[test]
    fn a_reset_loses_its_interval_and_never_invents_events() {
        // 100 -> 110 (+10), restart to 3 (lost), 3 -> 8 (+5).
        assert_eq!(
            fed(&[Some(100.0), Some(110.0), Some(3.0), Some(8.0)]).increase(),
            15.0
        );
    }

    #[test]
    fn a_counter_created_after_the_first_poll_counts_in_full() {
        assert_eq!(fed(&[None, None, Some(4.0), Some(6.0)]).increase(), 6.0);
    }

    #[test]
    fn a_gap_continues_from_the_last_value() {
        assert_eq!(fed(&[Some(10.0), None, None, Some(30.0)]).increase(), 20.0);
    }

    #[test]
    fn stale_absent_and_failed_polls_are_told_apart() {
        let c = fed(&[Some(1.0), Some(2.0)]);
        assert_eq!(c.read(1000, 2000), CounterState::Fresh(1.0));
        assert!(matches!(c.read(10_000, 2000), CounterState::Unusable(_)));
        assert_eq!(fed(&[None]).read(0, 2000), CounterState::Absent);
        assert_eq!(Counter::default().read(0, 2000), CounterState::Never);
        let mut e = fed(&[Some(1.0)]);
        e.push(Sample::new(1000, Observation::Error("timeout".into())));
        assert!(matches!(e.read(1000, 2000), CounterState::Unusable(_)));
    }
}
