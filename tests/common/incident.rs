//! Deterministic incidents as OpenMetrics request counters, for backfilling a real Prometheus
//! (`Prometheus::builder().backfill(..)`) and replaying them with `backout backtest`.
//!
//! Counts are the exact expected values (no randomness), so the instant an error ratio crosses
//! a level is known in advance and a test can assert when the rollback must fire.

#![allow(dead_code)]

use backout::demo::exporter::render_openmetrics;
use backout::demo::workload::{Counters, BUCKETS};
use backout::sample::{Millis, Track};

/// One track's traffic: requests per second and the share of them that fail.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub rps: f64,
    pub error_ratio: f64,
}

/// One service's canary and stable, from `start` for `points` samples every `every_ms`; the
/// canary's error ratio becomes `bad_ratio` at `onset` (if any).
#[derive(Debug, Clone)]
pub struct Incident {
    pub service: String,
    pub start_ms: i64,
    pub every_ms: i64,
    pub points: i64,
    pub canary: Load,
    pub stable: Load,
    pub onset_ms: Option<i64>,
    pub bad_ratio: f64,
    /// The stable fails like the canary from the onset (a shared dependency failing).
    pub shared: bool,
}

impl Incident {
    /// A healthy service: canary 10 req/s and stable 90 req/s, both failing 0.5%.
    pub fn healthy(service: &str, start_ms: i64, minutes: i64) -> Self {
        Incident {
            service: service.into(),
            start_ms,
            every_ms: 10_000,
            points: minutes * 6 + 1,
            canary: Load {
                rps: 10.0,
                error_ratio: 0.005,
            },
            stable: Load {
                rps: 90.0,
                error_ratio: 0.005,
            },
            onset_ms: None,
            bad_ratio: 0.0,
            shared: false,
        }
    }

    /// From `onset_ms` on, BOTH tracks fail `ratio` of their requests: a dependency they share.
    pub fn both_fail_from(mut self, onset_ms: i64, ratio: f64) -> Self {
        self.onset_ms = Some(onset_ms);
        self.bad_ratio = ratio;
        self.shared = true;
        self
    }

    /// From `onset_ms` on, the canary fails `ratio` of its requests.
    pub fn canary_fails_from(mut self, onset_ms: i64, ratio: f64) -> Self {
        self.onset_ms = Some(onset_ms);
        self.bad_ratio = ratio;
        self
    }

    /// Cumulative (requests, errors) of a track at `t`.
    fn counts(&self, canary: bool, t: i64) -> (f64, f64) {
        let load = if canary { self.canary } else { self.stable };
        let secs = |ms: i64| ms.max(0) as f64 / 1000.0;
        let elapsed = secs(t - self.start_ms);
        let requests = load.rps * elapsed;
        let errors = match self.onset_ms {
            Some(onset) if (canary || self.shared) && t > onset => {
                let before = secs(onset - self.start_ms);
                load.rps * (before * load.error_ratio + (elapsed - before) * self.bad_ratio)
            }
            _ => requests * load.error_ratio,
        };
        (requests, errors)
    }

    /// Both tracks' counters at `t`: every request in the fastest latency bucket (backtests
    /// read the request counters only).
    fn counters(&self, t: i64) -> [Counters; 2] {
        [(Track::Canary, true), (Track::Stable, false)].map(|(track, canary)| {
            let (requests, errors) = self.counts(canary, t);
            Counters {
                service: self.service.clone(),
                track,
                ok: requests - errors,
                errors,
                buckets: vec![requests; BUCKETS.len()],
                latency_sum: 0.0,
            }
        })
    }
}

/// One OpenMetrics document (ending in `# EOF`) holding every incident's counters, written by
/// the demo exporter's writer (`http_requests_total{service,track,code}` and the latency
/// histogram). Incidents must share `start_ms`, `every_ms` and `points`.
pub fn openmetrics(incidents: &[Incident]) -> String {
    let Some(first) = incidents.first() else {
        return render_openmetrics(&[]);
    };
    let snapshots: Vec<(Millis, Vec<Counters>)> = (0..first.points)
        .map(|k| {
            let t = first.start_ms + k * first.every_ms;
            (t, incidents.iter().flat_map(|i| i.counters(t)).collect())
        })
        .collect();
    render_openmetrics(&snapshots)
}
