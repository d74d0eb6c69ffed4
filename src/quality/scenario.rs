//! Synthetic canary runs, stored the way Prometheus would store them: cumulative counters per
//! pod, one sample per scrape, with gaps, absent series and counter resets.
//!
//! Why synthetic: decision quality needs ground truth (was the canary actually bad, and since
//! when?) and thousands of runs, which no recorded incident provides. The noise is made to be
//! realistic where rules break: Poisson traffic with a daily cycle, gamma-Poisson
//! (overdispersed) errors with a component shared by both tracks and one per pod, fixed per-pod
//! differences, error series that only appear with the first error, and restarts.

use super::draw::{gamma_mean_one, poisson};
use crate::sample::Track;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seconds between scrapes.
pub const SCRAPE_SECS: u64 = 15;
/// Length of a run after the canary starts, unless the scenario is longer (late onsets, day-long
/// canaries), and the window after the onset a detection must fall in.
pub const RUN_SECS: u64 = 3600;
/// A day: the long A/A scenario's length and the change detector's default horizon.
pub const DAY_SECS: u64 = 86_400;
/// Share of traffic the canary receives.
pub const CANARY_SHARE: f64 = 0.1;
const CANARY_PODS: usize = 1;
const STABLE_PODS: usize = 4;
const SLOW_BASELINE: f64 = 0.01;

/// One pod's counters, index `i` being the scrape at `i * SCRAPE_SECS` after the canary started.
/// `None` is a sample Prometheus does not have (scrape gap, series not yet created, target down).
#[derive(Debug, Clone)]
pub struct PodSeries {
    pub track: Track,
    pub requests: Vec<Option<f64>>,
    pub errors: Vec<Option<f64>>,
    /// Requests slower than the latency threshold (`_count - _bucket{le=T}`).
    pub slow: Vec<Option<f64>>,
}

/// Which counter of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Requests,
    Errors,
    Slow,
}

impl PodSeries {
    pub fn counter(&self, c: Counter) -> &[Option<f64>] {
        match c {
            Counter::Requests => &self.requests,
            Counter::Errors => &self.errors,
            Counter::Slow => &self.slow,
        }
    }
}

/// One generated run.
#[derive(Debug, Clone)]
pub struct Run {
    pub pods: Vec<PodSeries>,
    /// When the canary became bad (seconds after start); meaningless for healthy scenarios.
    pub onset_secs: u64,
    /// Seconds after the canary started that the run covers.
    pub run_secs: u64,
    /// The true canary error multiplier of an error-step scenario: only the ceiling judge,
    /// which exists to show what no real rule can beat, is told it.
    pub error_step: Option<f64>,
}

impl Run {
    pub fn series(&self, track: Track, c: Counter) -> impl Iterator<Item = &[Option<f64>]> {
        self.pods
            .iter()
            .filter(move |p| p.track == track)
            .map(move |p| p.counter(c))
    }
}

/// Total traffic (both tracks), requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Traffic {
    Fixed(f64),
    /// Drawn per run, log-uniformly.
    LogUniform(f64, f64),
}

/// What happens to the canary (or to both tracks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// Nothing happens.
    Nothing,
    /// Canary error rate multiplied from `onset_secs` on.
    ErrorStep(f64),
    /// Canary slow-request rate grows linearly from 1x to `to` x over the run.
    LatencyDrift { to: f64 },
    /// Canary error rate alternates between 1x and `high` x every `period_secs`.
    Flapping { high: f64, period_secs: u64 },
    /// Canary errors and slow requests multiplied for the first `secs` only.
    WarmupSpike { errors: f64, slow: f64, secs: u64 },
    /// BOTH tracks' error rates multiplied between `from` and `to` (a dependency failing).
    SharedIncident { factor: f64, from: u64, to: u64 },
}

/// A scenario: the conditions and whether a rollback is the right answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: &'static str,
    /// True when the canary is fine and any rollback is a false rollback.
    pub healthy: bool,
    pub traffic: Traffic,
    /// Baseline error ratio; `None` draws one of 0.1%, 0.5%, 2% per run.
    pub baseline_error: Option<f64>,
    pub effect: Effect,
    /// Scrape gaps, a canary target down for 10 minutes, and restarts (counter resets).
    pub missing_data: bool,
    pub onset_secs: u64,
    /// Length of the run (`RUN_SECS`, or onset + `RUN_SECS` for late onsets, or a day).
    pub run_secs: u64,
}

impl Scenario {
    fn new(name: &'static str, healthy: bool, traffic: Traffic, effect: Effect) -> Self {
        Self {
            name,
            healthy,
            traffic,
            baseline_error: Some(0.005),
            effect,
            missing_data: false,
            onset_secs: 0,
            run_secs: RUN_SECS,
        }
    }

    /// When a shared incident starts (seconds after the canary started): a false rollback before
    /// it is the policy's own false alarm, one after it may be the incident's.
    pub fn incident_from(&self) -> Option<u64> {
        match self.effect {
            Effect::SharedIncident { from, .. } => Some(from),
            _ => None,
        }
    }

    /// The same scenario with its effect starting `onset` seconds in, watched for `RUN_SECS`
    /// after it.
    fn late(self, name: &'static str, onset: u64) -> Self {
        Self {
            name,
            onset_secs: onset,
            run_secs: onset + RUN_SECS,
            ..self
        }
    }
}

/// The benchmark's scenarios. Rates are total traffic; the canary gets `CANARY_SHARE` of it.
pub fn catalogue() -> Vec<Scenario> {
    use Effect::*;
    use Traffic::*;
    vec![
        Scenario {
            baseline_error: None,
            ..Scenario::new("healthy A/A", true, LogUniform(0.5, 100.0), Nothing)
        },
        Scenario {
            baseline_error: None,
            ..Scenario::new("low traffic 0.05 rps", true, Fixed(0.05), Nothing)
        },
        Scenario {
            missing_data: true,
            ..Scenario::new("missing data", true, LogUniform(1.0, 100.0), Nothing)
        },
        Scenario {
            baseline_error: Some(0.008),
            ..Scenario::new(
                "flapping below margin (1.15x)",
                true,
                Fixed(20.0),
                Flapping {
                    high: 1.15,
                    period_secs: 300,
                },
            )
        },
        Scenario::new(
            "warm-up spike (60 s)",
            true,
            Fixed(20.0),
            WarmupSpike {
                errors: 5.0,
                slow: 5.0,
                secs: 60,
            },
        ),
        Scenario {
            baseline_error: None,
            run_secs: DAY_SECS,
            ..Scenario::new("healthy A/A, 24 h", true, LogUniform(0.5, 100.0), Nothing)
        },
        Scenario::new(
            "shared-dependency incident",
            true,
            Fixed(20.0),
            SharedIncident {
                factor: 10.0,
                from: 1200,
                to: 1800,
            },
        ),
        // Both tracks at 10% errors for 10 minutes: every runbook's 5% level is crossed on
        // the canary AND the stable.
        Scenario::new(
            "shared incident, levels crossed (x20)",
            true,
            Fixed(20.0),
            SharedIncident {
                factor: 20.0,
                from: 1200,
                to: 1800,
            },
        ),
        Scenario::new("errors x1.5, 20 rps", false, Fixed(20.0), ErrorStep(1.5)),
        Scenario::new("errors x2, 20 rps", false, Fixed(20.0), ErrorStep(2.0)),
        Scenario::new("errors x2, 60 rps", false, Fixed(60.0), ErrorStep(2.0)),
        Scenario::new("errors x5, 20 rps", false, Fixed(20.0), ErrorStep(5.0)),
        Scenario::new("", false, Fixed(20.0), ErrorStep(5.0))
            .late("errors x5, 20 rps, onset +20 min", 1200),
        Scenario::new("", false, Fixed(20.0), ErrorStep(5.0))
            .late("errors x5, 20 rps, onset +3 h", 3 * 3600),
        Scenario::new("", false, Fixed(20.0), ErrorStep(5.0))
            .late("errors x5, 20 rps, onset +20 h", 20 * 3600),
        Scenario::new("errors x20, 10 rps", false, Fixed(10.0), ErrorStep(20.0)),
        Scenario::new("errors x20, 100 rps", false, Fixed(100.0), ErrorStep(20.0)),
        Scenario::new(
            "latency drift to 4x",
            false,
            Fixed(20.0),
            LatencyDrift { to: 4.0 },
        ),
        // The shared incidents' control: the same service (20 rps, 0.5% errors) for the same
        // hour, without the incident. A policy's rollbacks here are its own false alarms on
        // that service, so the shared scenarios' rollbacks beyond them are the incident's.
        // Last, so that every other scenario keeps its seeds (`bench::seed`).
        Scenario::new(
            "shared incidents' control: no incident",
            true,
            Fixed(20.0),
            Nothing,
        ),
    ]
}

struct Pod {
    track: Track,
    error_bias: f64,
    slow_bias: f64,
    requests: f64,
    errors: f64,
    slow: f64,
    series: PodSeries,
}

/// Generates one run. Same scenario and seed, same run.
pub fn generate(s: &Scenario, seed: u64) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let rps = match s.traffic {
        Traffic::Fixed(r) => r,
        Traffic::LogUniform(lo, hi) => (lo.ln() + rng.random::<f64>() * (hi / lo).ln()).exp(),
    };
    let base = s
        .baseline_error
        .unwrap_or_else(|| [0.001, 0.005, 0.02][rng.random_range(0..3)]);
    let phase = rng.random::<f64>() * 86400.0;
    let steps = (s.run_secs / SCRAPE_SECS) as usize;
    let mut pods: Vec<Pod> = Vec::new();
    for (track, count) in [(Track::Canary, CANARY_PODS), (Track::Stable, STABLE_PODS)] {
        for _ in 0..count {
            // Stable pods have run for three days; canary counters start at zero.
            let history = if track == Track::Stable {
                poisson(
                    &mut rng,
                    rps * (1.0 - CANARY_SHARE) / STABLE_PODS as f64 * 3.0 * 86400.0,
                )
            } else {
                0.0
            };
            let errors = poisson(&mut rng, history * base);
            let slow = poisson(&mut rng, history * SLOW_BASELINE);
            let mut series = PodSeries {
                track,
                requests: Vec::with_capacity(steps + 1),
                errors: Vec::with_capacity(steps + 1),
                slow: Vec::with_capacity(steps + 1),
            };
            series.requests.push(Some(history));
            series.errors.push((errors > 0.0).then_some(errors));
            series.slow.push(Some(slow));
            pods.push(Pod {
                track,
                // Real per-pod differences (node, cache warmth): about 5% either way.
                error_bias: gamma_mean_one(&mut rng, 400.0),
                slow_bias: gamma_mean_one(&mut rng, 400.0),
                requests: history,
                errors,
                slow,
                series,
            });
        }
    }
    let dt = SCRAPE_SECS as f64;
    for i in 1..=steps {
        let t = i as u64 * SCRAPE_SECS;
        let mid = t as f64 - dt / 2.0;
        let cycle = 1.0 + 0.3 * (std::f64::consts::TAU * (mid + phase) / 86400.0).sin();
        let shared_noise = gamma_mean_one(&mut rng, 4.0);
        let down = s.missing_data && (600..1200).contains(&t);
        for (p_idx, pod) in pods.iter_mut().enumerate() {
            let (share, n) = match pod.track {
                Track::Canary => (CANARY_SHARE, CANARY_PODS),
                Track::Stable => (1.0 - CANARY_SHARE, STABLE_PODS),
            };
            let (err_fx, slow_fx) = effect_at(s, pod.track, t - SCRAPE_SECS / 2);
            let req = poisson(&mut rng, rps * cycle * share / n as f64 * dt);
            let err_p =
                (base * pod.error_bias * shared_noise * gamma_mean_one(&mut rng, 8.0) * err_fx)
                    .min(1.0);
            let slow_p =
                (SLOW_BASELINE * pod.slow_bias * gamma_mean_one(&mut rng, 8.0) * slow_fx).min(1.0);
            let restart = s.missing_data
                && ((pod.track == Track::Canary && t == 1800)
                    || (p_idx == CANARY_PODS && t == 2400));
            if restart {
                pod.requests = 0.0;
                pod.errors = 0.0;
                pod.slow = 0.0;
            }
            pod.requests += req;
            pod.errors += poisson(&mut rng, req * err_p).min(req);
            pod.slow += poisson(&mut rng, req * slow_p).min(req);
            let gap = s.missing_data
                && (rng.random::<f64>() < 0.1 || (down && pod.track == Track::Canary));
            let ser = &mut pod.series;
            if gap {
                ser.requests.push(None);
                ser.errors.push(None);
                ser.slow.push(None);
            } else {
                ser.requests.push(Some(pod.requests));
                // An error counter only exists once it has been incremented (per process).
                ser.errors.push((pod.errors > 0.0).then_some(pod.errors));
                ser.slow.push(Some(pod.slow));
            }
        }
    }
    Run {
        pods: pods.into_iter().map(|p| p.series).collect(),
        onset_secs: s.onset_secs,
        run_secs: s.run_secs,
        error_step: match s.effect {
            Effect::ErrorStep(f) => Some(f),
            _ => None,
        },
    }
}

/// (error multiplier, slow multiplier) for a track at second `t`.
fn effect_at(s: &Scenario, track: Track, t: u64) -> (f64, f64) {
    let canary = track == Track::Canary;
    match s.effect {
        Effect::Nothing => (1.0, 1.0),
        Effect::ErrorStep(f) if canary && t >= s.onset_secs => (f, 1.0),
        Effect::LatencyDrift { to } if canary => {
            (1.0, 1.0 + (to - 1.0) * t as f64 / RUN_SECS as f64)
        }
        Effect::Flapping { high, period_secs } if canary && (t / period_secs) % 2 == 1 => {
            (high, 1.0)
        }
        Effect::WarmupSpike { errors, slow, secs } if canary && t < secs => (errors, slow),
        Effect::SharedIncident { factor, from, to } if (from..to).contains(&t) => (factor, 1.0),
        _ => (1.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(series: &[Option<f64>]) -> f64 {
        series.iter().rev().find_map(|v| *v).unwrap_or(0.0)
    }

    #[test]
    fn same_seed_same_run() {
        let s = &catalogue()[0];
        let (a, b) = (generate(s, 9), generate(s, 9));
        assert_eq!(a.pods[0].requests, b.pods[0].requests);
        assert_ne!(generate(s, 10).pods[0].requests, a.pods[0].requests);
    }

    #[test]
    fn canary_gets_its_share_and_an_error_step_shows() {
        let s = Scenario::new("t", false, Traffic::Fixed(100.0), Effect::ErrorStep(5.0));
        let run = generate(&s, 3);
        let canary_req = last(&run.pods[0].requests);
        assert!(
            (canary_req / (100.0 * 0.1 * 3600.0) - 1.0).abs() < 0.35,
            "{canary_req}"
        );
        let canary_ratio = last(&run.pods[0].errors) / canary_req;
        assert!(canary_ratio > 0.015, "{canary_ratio}");
    }

    #[test]
    fn missing_data_has_gaps_resets_and_a_down_target() {
        let s = catalogue().into_iter().find(|s| s.missing_data).unwrap();
        let run = generate(&s, 5);
        let canary = &run.pods[0].requests;
        assert!(
            canary[(600 / SCRAPE_SECS) as usize..(1200 / SCRAPE_SECS) as usize]
                .iter()
                .all(Option::is_none)
        );
        let present: Vec<f64> = canary.iter().flatten().copied().collect();
        assert!(present.windows(2).any(|w| w[1] < w[0]), "no counter reset");
    }

    #[test]
    fn a_new_error_counter_is_absent_until_the_first_error() {
        let s = Scenario::new("t", true, Traffic::Fixed(0.05), Effect::Nothing);
        let run = generate(&s, 1);
        assert_eq!(run.pods[0].errors[0], None);
        assert_eq!(run.pods[0].requests[0], Some(0.0));
    }
}
