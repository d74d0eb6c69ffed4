//! The policies users write, judged on the benchmark's runs: every `config/examples` policy and
//! the recommended one (thresholds plus the sequential tests), run by the real engine.
//!
//! The scenarios have request, error and slow-request counters, so a policy's metrics are kept
//! when the scenario can answer their queries: error ratios (a query dividing a `5..` rate by
//! the request rate, scaled when it multiplies by 100), SLO burn rates on them, sequential
//! counters (errors, or slow requests when the events are not 5xx) and the traffic query. Other
//! metrics (latency quantiles, readiness, restarts, memory, retrieval quality, complaints)
//! have no counterpart in the data and are left out; the doc lists them.

use super::promql::{instant, rate, sum};
use super::scenario::{Counter, Run};
use crate::decision::{Engine, Phase};
use crate::policy::{defaults, feeds, Input, Level, MetricSpec, Policy};
use crate::sample::{Millis, Observation, Sample, Track};
use std::path::Path;
use std::time::Duration;

/// How the scenario answers one metric's query.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// Errors over requests in the query's window, times `scale` (100 for a percent).
    ErrorRatio { scale: f64 },
    /// The current sum of a counter (sequential `events` / `total`).
    Counters { events: Counter },
}

fn answer(m: &MetricSpec) -> Option<Answer> {
    if let Some(s) = &m.sequential {
        let events = if is_errors(&s.events) {
            Counter::Errors
        } else {
            Counter::Slow
        };
        return Some(Answer::Counters { events });
    }
    let q = m.query.as_deref()?;
    let ratio = q.contains("rate(") && q.contains(") / ") && is_errors(q);
    ratio.then(|| Answer::ErrorRatio {
        scale: if q.trim_end().ends_with("* 100") {
            100.0
        } else {
            1.0
        },
    })
}

fn is_errors(q: &str) -> bool {
    q.contains("5..") || q.contains("errors_total")
}

/// `policy` with only the metrics the scenarios can answer (see the module docs), and the names
/// of those left out.
pub fn answerable(mut policy: Policy) -> (Policy, Vec<String>) {
    let (kept, dropped): (Vec<_>, Vec<_>) = policy
        .metrics
        .into_iter()
        .partition(|m| answer(m).is_some());
    policy.metrics = kept;
    (policy, dropped.into_iter().map(|m| m.name).collect())
}

/// The policies in `config/examples`, loaded like the daemon loads them, reduced to what the
/// scenarios answer, with their file stems; errors name the file.
pub fn examples(dir: &Path) -> Result<Vec<(String, Policy)>, crate::policy::PolicyError> {
    let mut out: Vec<(String, Policy)> = crate::policy::load::load_path(dir)?
        .into_iter()
        .map(|p| {
            let stem = p
                .source
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.service.clone());
            (stem, answerable(p).0)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The recommended policy: the runbooks' absolute error-rate level (5% over 5 minutes, held 2
/// minutes, with the templates' traffic floor of 0.5 req/s: a 1-minute window at 1 canary req/s
/// and 2% errors crosses 5% by chance within a day) next to the sequential tests on errors and
/// slow requests, a traffic query, defaults elsewhere (`interval = 10s`, `warmup = 1m`).
pub fn recommended() -> Policy {
    let mut errors = MetricSpec::test("error_rate")
        .query(
            "sum(rate(errors_total{track=\"{{track}}\"}[{{window}}])) / \
             sum(rate(requests_total{track=\"{{track}}\"}[{{window}}]))",
        )
        .critical(Level::above(0.05))
        .for_(Duration::from_secs(120))
        .min_traffic(0.5);
    errors.window = Some(Duration::from_secs(300));
    let seq = |name: &str, counter: &str| {
        let mut m = MetricSpec::test(name).sequential(
            &format!("sum({counter}_total{{track=\"{{{{track}}}}\"}})"),
            "sum(requests_total{track=\"{{track}}\"})",
        );
        if let (Some(s), "slow") = (m.sequential.as_mut(), counter) {
            // Start-up latency is expected (cold caches, JIT): only errors fire in warm-up.
            s.warmup_alpha = Some(0.0);
        }
        m
    };
    let mut p = Policy::test()
        .with_interval(Duration::from_secs(10))
        .with_warmup(Duration::from_secs(60))
        .with_metric(errors)
        .with_metric(seq("errors_vs_stable", "errors"))
        .with_metric(seq("slow_vs_stable", "slow"));
    p.analysis.traffic_query =
        Some("sum(rate(requests_total{track=\"{{track}}\"}[{{window}}]))".into());
    p
}

/// Errors (or `c`) over requests of `track` over `window` seconds ending at `at`, as
/// `sum(rate(..)) / sum(rate(..))` gives it; `None` is an empty or NaN result.
pub fn window_ratio(run: &Run, track: Track, c: Counter, at: u64, window: u64) -> Option<f64> {
    let req = sum(run
        .series(track, Counter::Requests)
        .map(|s| rate(s, at, window)))?;
    // A not-yet-created error series is simply no errors in a ratio of sums.
    let events = sum(run.series(track, c).map(|s| rate(s, at, window))).unwrap_or(0.0);
    let ratio = events / req;
    ratio.is_finite().then_some(ratio.min(1.0))
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// The value the scenario gives one feed of `policy` at `at`.
fn observe(policy: &Policy, run: &Run, input: &Input, track: Track, at: u64) -> Option<f64> {
    let spec = |name: &str| policy.metrics.iter().find(|m| m.name == name);
    let counter_sum = |c| sum(run.series(track, c).map(|s| instant(s, at)));
    match input {
        Input::Traffic => {
            let w = policy
                .metrics
                .iter()
                .filter_map(|m| m.window)
                .max()
                .unwrap_or(policy.analysis.interval);
            sum(run
                .series(track, Counter::Requests)
                .map(|s| rate(s, at, secs(w))))
        }
        Input::Value { metric } => {
            let m = spec(metric)?;
            let Some(Answer::ErrorRatio { scale }) = answer(m) else {
                return None;
            };
            let w = defaults::effective(m, policy.analysis.interval).window;
            window_ratio(run, track, Counter::Errors, at, secs(w)).map(|r| r * scale)
        }
        Input::Ratio { window, .. } => window_ratio(run, track, Counter::Errors, at, secs(*window)),
        Input::Events { metric } => match answer(spec(metric)?)? {
            Answer::Counters { events } => counter_sum(events),
            Answer::ErrorRatio { .. } => None,
        },
        Input::Total { .. } => counter_sum(Counter::Requests),
    }
}

/// When the engine running `policy` on `run` would have rolled back (seconds after the canary
/// started), polled every `analysis.interval` like the daemon.
pub fn first_rollback(policy: &Policy, run: &Run) -> Option<u64> {
    first_rollback_traced(policy, run, |_| {})
}

/// [`first_rollback`], handing every verdict to `trace` (for studying why a policy rolls back).
pub fn first_rollback_traced(
    policy: &Policy,
    run: &Run,
    mut trace: impl FnMut(&crate::decision::Verdict),
) -> Option<u64> {
    let every = secs(policy.analysis.interval);
    let feeds = feeds(policy);
    let mut engine = Engine::new(policy, "canary");
    let phase = Phase::Canary { started_at: 0 };
    let ms = |s: u64| Millis::try_from(s * 1000).unwrap_or(Millis::MAX);
    (0..=run.run_secs / every).map(|i| i * every).find(|&at| {
        for f in &feeds {
            let obs = observe(policy, run, &f.input, f.track, at)
                .map_or(Observation::Absent, Observation::Value);
            let _ = engine.observe_input(&f.input, f.track, Sample::new(ms(at), obs));
        }
        let verdict = engine.evaluate(ms(at), phase);
        trace(&verdict);
        verdict.rollback
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_loads_and_keeps_its_error_metrics() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        let examples = examples(&dir).expect("the examples load");
        assert_eq!(examples.len(), 5);
        for (name, p) in &examples {
            assert!(
                p.metrics.iter().any(|m| m.name.contains("error")),
                "{name}: {:?}",
                p.metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
            );
        }
        let llm = &examples
            .iter()
            .find(|e| e.0 == "llm-orchestrator")
            .unwrap()
            .1;
        let m = llm.metrics.iter().find(|m| m.name == "error_rate_percent");
        assert_eq!(
            m.and_then(answer),
            Some(Answer::ErrorRatio { scale: 100.0 })
        );
        let (_, dropped) = answerable(recommended());
        assert!(dropped.is_empty(), "{dropped:?}");
    }
}
