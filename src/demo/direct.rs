//! The demo's sampler when no Prometheus is available: it reads the simulated workload directly
//! and computes what the demo policy's PromQL would return (error ratio, p99, request rate over
//! the metric's window). It is keyed by the demo policy's metric names, and says so.

use crate::daemon::Sampler;
use crate::demo::workload::{Counters, Delta, Workload};
use crate::policy::Input;
use crate::sample::{Millis, Observation};
use crate::source::plan::{Key, Request};
use futures::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

pub struct DirectSampler {
    workload: Workload,
    window_ms: i64,
    history: Mutex<VecDeque<(Millis, Vec<Counters>)>>,
}

impl DirectSampler {
    pub fn new(workload: Workload, window: std::time::Duration) -> Self {
        Self {
            workload,
            window_ms: window.as_millis() as i64,
            history: Mutex::new(VecDeque::new()),
        }
    }

    /// Records the workload's counters; call once per tick so windows have history.
    pub fn record(&self) {
        let snap = self.workload.snapshot();
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.push_back(snap);
        while h.len() > 2 && h[1].0 <= h.back().map(|b| b.0).unwrap_or(0) - self.window_ms {
            h.pop_front();
        }
    }

    /// The newest cumulative counters of the key's track: what `sum(counter)` returns.
    fn latest(&self, key: &Key) -> Option<Counters> {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let (_, last) = h.back()?;
        last.iter()
            .find(|c| *c.service == *key.service && c.track == key.track)
            .cloned()
    }

    fn delta(&self, key: &Key) -> Option<Delta> {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let (t1, last) = h.back()?;
        let (t0, first) = h.iter().find(|(t, _)| *t >= t1 - self.window_ms)?;
        let pick = |cs: &Vec<Counters>| {
            cs.iter()
                .find(|c| *c.service == *key.service && c.track == key.track)
                .cloned()
        };
        Delta::between((*t0, &pick(first)?), (*t1, &pick(last)?))
    }
}

impl Sampler for DirectSampler {
    fn sample<'a>(
        &'a self,
        requests: Vec<Request>,
        _now: Millis,
    ) -> BoxFuture<'a, HashMap<Key, Observation>> {
        let out = requests
            .into_iter()
            .map(|r| {
                let obs = match &*r.key.input {
                    // A sequential metric's counters, as `sum(http_requests_total{..})` gives
                    // them; the error series exists only once there was an error.
                    Input::Total { .. } => self.latest(&r.key).map_or(Observation::Absent, |c| {
                        Observation::from_f64(c.ok + c.errors)
                    }),
                    Input::Events { .. } => match self.latest(&r.key) {
                        Some(c) if c.errors > 0.0 => Observation::from_f64(c.errors),
                        _ => Observation::Absent,
                    },
                    input => match self.delta(&r.key) {
                        None => Observation::Absent,
                        Some(d) => match input.metric() {
                            None => Observation::from_f64(d.rps()),
                            Some(m) if m.contains("latency") => {
                                Observation::from_f64(d.quantile(0.99))
                            }
                            Some(_) => Observation::from_f64(d.error_ratio()),
                        },
                    },
                };
                (r.key, obs)
            })
            .collect();
        Box::pin(async move { out })
    }
}
