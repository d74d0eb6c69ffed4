//! Recovery verified on the metrics: after the plan completed, the stable alone is judged for
//! `verify.window` (runbook 001: "error rate and latency returning to baseline").
//!
//! Pure state advanced by the evaluation loop with the stable readings it samples anyway:
//! nothing here waits. A reading is *clean* when every value metric of the policy is under its
//! warning level (critical when it has no warning; metrics compared with the canary have no
//! absolute level on the stable) and not worse than the stable's own readings before the
//! incident (the median of its samples before the first bad evidence, with a tolerance of 20% of
//! it or 10% of the level, whichever is larger); missing data is not clean unless the metric says
//! `no_data = "ignore"`. The service has recovered at the start of the
//! first clean streak that lasts `window`; RTO is first bad evidence -> that instant.

use crate::policy::{Kind, Level, MetricSpec, Policy};
use crate::sample::Millis;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Stable samples kept per metric for the pre-incident baseline.
const HISTORY: usize = 64;

/// What a cycle's readings led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Clean for the whole window since `at`: recovered at `at`.
    Recovered { at: Millis, rto_ms: i64 },
    /// `restore_within` passed after the first bad evidence without a recovery (verification
    /// goes on: a later recovery still resolves the incident).
    NotRecovered { at: Millis, why: String },
    /// After the plan, the stable reads worse than the triggering reading before it.
    Worse { at: Millis, why: String },
}

/// One metric as the stable alone is judged on it.
#[derive(Debug, Clone)]
struct Gate {
    metric: String,
    level: Option<Level>,
    baseline: Option<f64>,
    /// The reading that triggered the rollback, when this metric was among the reasons.
    before: Option<f64>,
    /// `no_data = "ignore"`: a poll without this metric's data can still be clean.
    optional: bool,
}

/// The stable's recent readings per value metric (for baselines): the last [`HISTORY`] polls,
/// as (seconds since the epoch, value). Compact because every service keeps one for as long as
/// it runs (a fleet of 10,000 held 20 MB of `(i64, f64)` pairs; issue 10): an `f32` is ample
/// for a median that levels are compared against, and polls are at least a second apart.
#[derive(Debug, Clone, Default)]
pub struct StableHistory(Vec<(String, VecDeque<(u32, f32)>)>);

impl StableHistory {
    pub fn record(&mut self, metric: &str, at: Millis, value: f64) {
        let at = u32::try_from(at.div_euclid(1000).max(0)).unwrap_or(u32::MAX);
        let i = match self.0.iter().position(|(m, _)| m == metric) {
            Some(i) => i,
            None => {
                self.0
                    .push((metric.to_string(), VecDeque::with_capacity(HISTORY)));
                self.0.len() - 1
            }
        };
        let q = &mut self.0[i].1;
        if q.len() == HISTORY {
            q.pop_front();
        }
        q.push_back((at, value as f32));
    }

    /// Median of the readings before `t` (those of earlier seconds: the poll at `t` itself is
    /// not its own baseline).
    fn median_before(&self, metric: &str, t: Millis) -> Option<f64> {
        let before = t.div_euclid(1000);
        let (_, q) = self.0.iter().find(|(m, _)| m == metric)?;
        let mut v: Vec<f32> = q
            .iter()
            .filter(|(at, _)| i64::from(*at) < before)
            .map(|(_, x)| *x)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f32::total_cmp);
        Some(f64::from(v[v.len() / 2]))
    }
}

/// A rollback's recovery being verified.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub rollback_id: String,
    pub first_bad: Millis,
    pub completed_at: Millis,
    window_ms: i64,
    restore_within_ms: i64,
    gates: Vec<Gate>,
    clean_since: Option<Millis>,
    /// The last readings, for the report: `metric = value`.
    pub last: Vec<(String, f64)>,
    not_recovered: bool,
    worse: bool,
    pub done: Option<Millis>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Recovery {
    /// Starts verifying after a plan that completed at `completed_at`; `trigger` holds the
    /// readings that triggered it (metric, value).
    pub fn start(
        policy: &Policy,
        history: &StableHistory,
        rollback_id: String,
        first_bad: Millis,
        completed_at: Millis,
        trigger: &[(String, f64)],
    ) -> Self {
        let gates = policy
            .metrics
            .iter()
            // Sequential tests count canary against stable; a burn rate is read over hours-long
            // windows (still full of the incident long after a recovery) and is not a single
            // value on the stable: neither says whether the stable alone is healthy now.
            .filter(|m| !matches!(m.kind(), Kind::Sequential | Kind::BurnRate))
            .map(|m| Gate {
                metric: m.name.clone(),
                level: absolute_level(m),
                baseline: history.median_before(&m.name, first_bad),
                before: trigger.iter().find(|(k, _)| *k == m.name).map(|(_, v)| *v),
                optional: m.no_data == Some(crate::policy::NoData::Ignore),
            })
            .collect();
        Self {
            rollback_id,
            first_bad,
            completed_at,
            window_ms: ms(policy.verify.window),
            restore_within_ms: ms(policy.verify.restore_within),
            gates,
            clean_since: None,
            last: Vec::new(),
            not_recovered: false,
            worse: false,
            done: None,
        }
    }

    /// The value metrics to sample on the stable.
    pub fn metrics(&self) -> impl Iterator<Item = &str> {
        self.gates.iter().map(|g| g.metric.as_str())
    }

    /// One poll's stable readings (`None`: no data). Returns what they settle, if anything.
    pub fn observe(&mut self, now: Millis, readings: &HashMap<String, f64>) -> Vec<Progress> {
        let mut out = Vec::new();
        if self.done.is_some() || now < self.completed_at {
            return out;
        }
        self.last = self
            .gates
            .iter()
            .filter_map(|g| readings.get(&g.metric).map(|v| (g.metric.clone(), *v)))
            .collect();
        if !self.worse {
            if let Some(why) = self.worse_than_before(readings) {
                self.worse = true;
                out.push(Progress::Worse { at: now, why });
            }
        }
        let clean = self.gates.iter().all(|g| match readings.get(&g.metric) {
            Some(v) => g.clean(*v),
            None => g.optional,
        });
        self.clean_since = if clean {
            self.clean_since.or(Some(now))
        } else {
            None
        };
        if let Some(since) = self.clean_since {
            if now - since >= self.window_ms {
                self.done = Some(since);
                out.push(Progress::Recovered {
                    at: since,
                    rto_ms: since - self.first_bad,
                });
                return out;
            }
        }
        if !self.not_recovered && now - self.first_bad >= self.restore_within_ms {
            self.not_recovered = true;
            out.push(Progress::NotRecovered {
                at: now,
                why: format!(
                    "not recovered {} after the first bad evidence (restore_within); last readings: {}",
                    humantime::format_duration(Duration::from_millis((now - self.first_bad).max(0) as u64)),
                    self.readings_text()
                ),
            });
        }
        out
    }

    /// A metric over its critical level and beyond the reading that triggered the rollback.
    fn worse_than_before(&self, readings: &HashMap<String, f64>) -> Option<String> {
        self.gates.iter().find_map(|g| {
            let (v, before, level) = (readings.get(&g.metric)?, g.before?, g.level?);
            let worse = if level.above.is_some() {
                *v > before
            } else {
                *v < before
            };
            (worse && level.breached_by(*v)).then(|| {
                format!(
                    "{} reads {v} on the stable after the rollback, worse than {before} before it",
                    g.metric
                )
            })
        })
    }

    pub fn readings_text(&self) -> String {
        if self.last.is_empty() {
            return "no data".into();
        }
        self.last
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether it is over (recovered); verification after a "not recovered" goes on.
    pub fn finished(&self) -> bool {
        self.done.is_some()
    }
}

/// The level the stable alone is held to: warning, else critical; none for a metric compared
/// with the canary (its levels are about the ratio or difference).
fn absolute_level(m: &MetricSpec) -> Option<Level> {
    if m.compare.is_some() {
        return None;
    }
    m.warning.or(m.critical)
}

impl Gate {
    fn clean(&self, v: f64) -> bool {
        let under = self.level.is_none_or(|l| !l.breached_by(v));
        let not_worse = match (self.baseline, self.level) {
            (Some(b), level) => {
                let bound = level.and_then(|l| l.above.or(l.below)).unwrap_or(0.0);
                let slack = (0.2 * b.abs()).max(0.1 * bound.abs());
                let lower_is_better = level.is_none_or(|l| l.above.is_some());
                if lower_is_better {
                    v <= b + slack
                } else {
                    v >= b - slack
                }
            }
            (None, _) => true,
        };
        under && not_worse
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::MetricSpec;

    fn policy() -> Policy {
        let mut p = Policy::test().with_metric(
            MetricSpec::test("errors")
                .warning(Level::above(0.01))
                .critical(Level::above(0.05)),
        );
        p.verify.window = Duration::from_secs(60);
        p.verify.restore_within = Duration::from_secs(300);
        p
    }

    fn reading(v: f64) -> HashMap<String, f64> {
        HashMap::from([("errors".to_string(), v)])
    }

    fn history(v: f64) -> StableHistory {
        let mut h = StableHistory::default();
        for t in 0..10 {
            h.record("errors", t * 10_000, v);
        }
        h
    }

    #[test]
    fn recovered_at_the_start_of_a_clean_window_with_its_rto() {
        let mut r = Recovery::start(
            &policy(),
            &history(0.002),
            "id".into(),
            100_000,
            130_000,
            &[],
        );
        assert!(
            r.observe(140_000, &reading(0.03)).is_empty(),
            "over warning"
        );
        assert!(r.observe(150_000, &reading(0.002)).is_empty());
        assert!(r.observe(200_000, &reading(0.0021)).is_empty());
        let p = r.observe(210_000, &reading(0.002));
        assert_eq!(
            p,
            vec![Progress::Recovered {
                at: 150_000,
                rto_ms: 50_000
            }]
        );
        assert!(r.finished());
    }

    #[test]
    fn a_burn_rate_metric_does_not_hold_recovery_back() {
        // Its stable reading never arrives as a value (devops-agent.toml's slo_burn_rate).
        let mut spec = MetricSpec::test("slo_burn");
        spec.burn_rate = Some(crate::policy::BurnRateSpec {
            objective: 0.999,
            rules: None,
        });
        let p = policy().with_metric(spec);
        let mut r = Recovery::start(&p, &history(0.002), "id".into(), 0, 0, &[]);
        assert_eq!(r.metrics().collect::<Vec<_>>(), ["errors"]);
        assert!(r.observe(10_000, &reading(0.002)).is_empty());
        let p = r.observe(70_000, &reading(0.002));
        assert!(
            matches!(p[..], [Progress::Recovered { at: 10_000, .. }]),
            "{p:?}"
        );
    }

    #[test]
    fn under_warning_but_worse_than_its_own_baseline_is_not_recovered() {
        let mut r = Recovery::start(
            &policy(),
            &history(0.001),
            "id".into(),
            100_000,
            100_000,
            &[],
        );
        for t in 0..40 {
            let p = r.observe(100_000 + t * 10_000, &reading(0.008));
            assert!(
                !p.iter().any(|p| matches!(p, Progress::Recovered { .. })),
                "{p:?}"
            );
        }
        assert!(!r.finished());
    }

    #[test]
    fn no_recovery_within_restore_within_is_reported_once_and_worse_is_seen() {
        let trigger = vec![("errors".to_string(), 0.08)];
        let mut r = Recovery::start(&policy(), &history(0.002), "id".into(), 0, 10_000, &trigger);
        let p = r.observe(20_000, &reading(0.2));
        assert!(matches!(p[0], Progress::Worse { .. }), "{p:?}");
        let p = r.observe(300_000, &reading(0.2));
        assert!(matches!(p[0], Progress::NotRecovered { .. }), "{p:?}");
        assert!(r.observe(310_000, &reading(0.2)).is_empty(), "once");
        // Missing data is never clean.
        assert!(r.observe(320_000, &HashMap::new()).is_empty());
    }
}
