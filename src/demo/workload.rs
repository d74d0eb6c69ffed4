//! A simulated request stream per service and track, whose error ratio and latency can be
//! changed while it runs.
//!
//! The demo and the end-to-end tests need a workload whose health they control: Prometheus
//! scrapes it through [`super::exporter`], or the demo reads it directly. Counts accrue
//! deterministically from the clock (requests = rate x elapsed, errors = requests x ratio), so a
//! `rate(errors)/rate(total)` query returns exactly the configured ratio once its window only
//! covers time after the last change: tests can assert values, not just trends.

use crate::clock::Clock;
use crate::sample::{Millis, Track};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Upper bounds (seconds) of the latency histogram buckets, as in the Prometheus client defaults.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What one track of one service is doing right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Requests per second.
    pub rps: f64,
    /// Share of requests answered with HTTP 500, in [0, 1].
    pub error_ratio: f64,
    /// Latency of every request, in seconds (a point mass: histogram_quantile lands in its bucket).
    pub latency: f64,
}

impl Load {
    pub fn healthy(rps: f64) -> Self {
        Self {
            rps,
            error_ratio: 0.0,
            latency: 0.05,
        }
    }

    pub fn with_errors(mut self, ratio: f64) -> Self {
        self.error_ratio = ratio.clamp(0.0, 1.0);
        self
    }

    pub fn with_latency(mut self, seconds: f64) -> Self {
        self.latency = seconds.max(0.0);
        self
    }
}

/// Cumulative counts of one (service, track) at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    pub service: String,
    pub track: Track,
    /// Requests answered 2xx.
    pub ok: f64,
    /// Requests answered 5xx.
    pub errors: f64,
    /// Cumulative bucket counts, aligned with [`BUCKETS`] (the `+Inf` bucket is `ok + errors`).
    pub buckets: Vec<f64>,
    /// Sum of all latencies, seconds.
    pub latency_sum: f64,
}

impl Counters {
    fn new(service: &str, track: Track) -> Self {
        Self {
            service: service.to_string(),
            track,
            ok: 0.0,
            errors: 0.0,
            buckets: vec![0.0; BUCKETS.len()],
            latency_sum: 0.0,
        }
    }

    pub fn total(&self) -> f64 {
        self.ok + self.errors
    }

    fn accrue(&mut self, load: &Load, seconds: f64) {
        let n = load.rps.max(0.0) * seconds;
        let errors = n * load.error_ratio;
        self.errors += errors;
        self.ok += n - errors;
        self.latency_sum += n * load.latency;
        for (count, le) in self.buckets.iter_mut().zip(BUCKETS) {
            if load.latency <= le {
                *count += n;
            }
        }
    }
}

/// What happened to one (service, track) between two snapshots: what `rate()` and
/// `histogram_quantile()` over that window would return, for feeding the engine without
/// Prometheus (the demo's direct mode).
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub service: String,
    pub track: Track,
    pub seconds: f64,
    pub requests: f64,
    pub errors: f64,
    buckets: Vec<f64>,
}

impl Delta {
    /// `later - earlier` for the same stream; `None` when they describe different streams or
    /// time does not move forward.
    pub fn between(earlier: (Millis, &Counters), later: (Millis, &Counters)) -> Option<Self> {
        let ((t0, a), (t1, b)) = (earlier, later);
        if a.service != b.service || a.track != b.track || t1 <= t0 {
            return None;
        }
        Some(Self {
            service: b.service.clone(),
            track: b.track,
            seconds: (t1 - t0) as f64 / 1000.0,
            requests: b.total() - a.total(),
            errors: b.errors - a.errors,
            buckets: b
                .buckets
                .iter()
                .zip(&a.buckets)
                .map(|(x, y)| x - y)
                .collect(),
        })
    }

    pub fn rps(&self) -> f64 {
        self.requests / self.seconds
    }

    /// errors / requests; NaN without traffic, exactly like the PromQL ratio (0/0).
    pub fn error_ratio(&self) -> f64 {
        self.errors / self.requests
    }

    /// `histogram_quantile(q, ...)` semantics: linear interpolation inside the bucket holding the
    /// q-th request; NaN without traffic; the highest finite bound when it falls in `+Inf`.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.requests <= 0.0 || !(0.0..=1.0).contains(&q) {
            return f64::NAN;
        }
        let rank = q * self.requests;
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for (le, count) in BUCKETS.iter().zip(&self.buckets) {
            if *count >= rank && *count > lower_count {
                return lower_bound
                    + (le - lower_bound) * (rank - lower_count) / (count - lower_count);
            }
            lower_bound = *le;
            lower_count = *count;
        }
        BUCKETS[BUCKETS.len() - 1]
    }
}

struct Stream {
    load: Load,
    counters: Counters,
}

struct State {
    streams: BTreeMap<(String, Track), Stream>,
    last: Millis,
}

/// Shared handle to the simulated workload; clones control the same streams.
#[derive(Clone)]
pub struct Workload {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload").finish_non_exhaustive()
    }
}

impl Workload {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let last = clock.now_millis();
        Self {
            state: Arc::new(Mutex::new(State {
                streams: BTreeMap::new(),
                last,
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave counters half-updated in a harmful way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes what a track is doing from now on (the past keeps its old load).
    pub fn set(&self, service: &str, track: Track, load: Load) {
        let mut st = self.lock();
        self.accrue(&mut st);
        st.streams
            .entry((service.to_string(), track))
            .or_insert_with(|| Stream {
                load,
                counters: Counters::new(service, track),
            })
            .load = load;
    }

    /// The load currently set for a track, if any.
    pub fn load(&self, service: &str, track: Track) -> Option<Load> {
        self.lock()
            .streams
            .get(&(service.to_string(), track))
            .map(|s| s.load)
    }

    /// Cumulative counters of every stream, accrued up to the clock's now.
    pub fn snapshot(&self) -> (Millis, Vec<Counters>) {
        let mut st = self.lock();
        self.accrue(&mut st);
        let counters = st.streams.values().map(|s| s.counters.clone()).collect();
        (st.last, counters)
    }

    fn accrue(&self, st: &mut State) {
        let now = self.clock.now_millis();
        if now > st.last {
            let secs = (now - st.last) as f64 / 1000.0;
            for s in st.streams.values_mut() {
                let load = s.load;
                s.counters.accrue(&load, secs);
            }
            st.last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    #[test]
    fn counts_follow_rate_and_ratio_and_changes_apply_from_now_on() {
        let clock = ManualClock::new(0);
        let w = Workload::new(Arc::new(clock.clone()));
        w.set("shop", Track::Canary, Load::healthy(10.0).with_errors(0.1));
        clock.advance(Duration::from_secs(10));
        w.set("shop", Track::Canary, Load::healthy(10.0).with_errors(0.5));
        clock.advance(Duration::from_secs(10));
        let (at, c) = w.snapshot();
        assert_eq!(at, 20_000);
        assert_eq!(c[0].total(), 200.0);
        assert!((c[0].errors - (10.0 + 50.0)).abs() < 1e-9);
    }

    #[test]
    fn delta_gives_rate_ratio_and_quantile_like_promql() {
        let clock = ManualClock::new(0);
        let w = Workload::new(Arc::new(clock.clone()));
        w.set(
            "a",
            Track::Canary,
            Load::healthy(10.0).with_errors(0.1).with_latency(0.3),
        );
        w.set("idle", Track::Canary, Load::healthy(0.0));
        clock.advance(Duration::from_secs(60));
        let (t0, before) = w.snapshot();
        w.set(
            "a",
            Track::Canary,
            Load::healthy(20.0).with_errors(0.5).with_latency(0.3),
        );
        clock.advance(Duration::from_secs(10));
        let (t1, after) = w.snapshot();
        let d = Delta::between((t0, &before[0]), (t1, &after[0])).unwrap();
        assert_eq!(d.rps(), 20.0);
        assert_eq!(d.error_ratio(), 0.5);
        // All requests at 0.3 s sit in (0.25, 0.5]: p99 interpolates to 0.25 + 0.99 * 0.25.
        assert!((d.quantile(0.99) - 0.4975).abs() < 1e-9);
        let idle = Delta::between((t0, &before[1]), (t1, &after[1])).unwrap();
        assert!(idle.error_ratio().is_nan());
        assert!(idle.quantile(0.99).is_nan());
        assert!(Delta::between((t0, &before[0]), (t1, &after[1])).is_none());
    }

    #[test]
    fn histogram_buckets_are_cumulative_around_the_latency() {
        let clock = ManualClock::new(0);
        let w = Workload::new(Arc::new(clock.clone()));
        w.set("shop", Track::Stable, Load::healthy(1.0).with_latency(0.3));
        clock.advance(Duration::from_secs(4));
        let (_, c) = w.snapshot();
        let le = |b: f64| c[0].buckets[BUCKETS.iter().position(|x| *x == b).unwrap()];
        assert_eq!(le(0.25), 0.0);
        assert_eq!(le(0.5), 4.0);
        assert_eq!(le(10.0), 4.0);
        assert!((c[0].latency_sum - 1.2).abs() < 1e-9);
    }
}
