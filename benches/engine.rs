//! Throughput of the decision engine: metric evaluations per second on one core.
//!
//! A realistic policy: 5 metrics mixing the statistics the rules use (last value, 5 min mean,
//! 1 h p99, 10 min max, a 1 h median ratio against the stable), each series pre-filled with 1 h
//! of 10 s samples on both tracks (360 samples per series). One `evaluate` call is 5 metric
//! evaluations; criterion reports elements/s = metric evaluations/s.
//!
//! `sequential_*`: one sequential count metric after 2.5 h of polls, with the change detector
//! (24 h horizon, the default) and without; one element = one evaluation of the metric, pass
//! bound included (skipped once a kept bound passes).

use backout::decision::{Engine, Phase};
use backout::policy::{Compare, Input, Level, MetricSpec, Policy, Stat};
use backout::sample::{Millis, Sample, Track};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::Duration;

const STEP: Millis = 10_000;
const HOUR: Millis = 3_600_000;
const METRICS: [&str; 5] = [
    "errors",
    "latency_mean",
    "latency_p99",
    "saturation",
    "latency_ratio",
];

fn policy() -> Policy {
    let min = |m: u64| Duration::from_secs(60 * m);
    Policy::test()
        .with_interval(Duration::from_secs(10))
        .with_warmup(Duration::ZERO)
        .with_metric(
            MetricSpec::test("errors")
                .warning(Level::above(0.01))
                .critical(Level::above(0.05))
                .for_(min(5))
                .clear_for(min(2))
                .min_traffic(1.0),
        )
        .with_metric(
            MetricSpec::test("latency_mean")
                .critical(Level::above(0.8))
                .stat(Stat::Mean, min(5)),
        )
        .with_metric(
            MetricSpec::test("latency_p99")
                .warning(Level::above(0.5))
                .critical(Level::above(1.0))
                .stat(Stat::P99, min(60))
                .for_(min(5)),
        )
        .with_metric(
            MetricSpec::test("saturation")
                .critical(Level::above(0.95))
                .stat(Stat::Max, min(10)),
        )
        .with_metric(
            MetricSpec::test("latency_ratio")
                .critical(Level::above(2.0))
                .compare(Compare::Ratio)
                .stat(Stat::Median, min(60)),
        )
}

/// Deterministic, varied values below every level (the common, healthy case).
fn value(metric: usize, track: usize, i: i64) -> f64 {
    let wobble = ((i * 7919 + metric as i64 * 104_729 + track as i64 * 13) % 1000) as f64 / 1000.0;
    0.001 + 0.3 * wobble
}

fn observe_all(engine: &mut Engine, i: i64) {
    let at = i * STEP;
    for (m, name) in METRICS.iter().enumerate() {
        for (t, track) in Track::ALL.into_iter().enumerate() {
            let _ = engine.observe(name, track, Sample::value(at, value(m, t, i)));
        }
    }
    for track in Track::ALL {
        engine.observe_traffic(track, Sample::value(at, 50.0));
    }
}

/// An engine holding one hour of samples; returns it with the index of the next tick.
fn warmed() -> (Engine, i64) {
    let mut engine = Engine::new(&policy(), "rev-1");
    let ticks = HOUR / STEP;
    for i in 0..=ticks {
        observe_all(&mut engine, i);
    }
    (engine, ticks + 1)
}

fn sequential_policy(horizon: Duration) -> Policy {
    let mut m = MetricSpec::test("errors").sequential(
        "sum(errors_total{track=\"{{track}}\"})",
        "sum(requests_total{track=\"{{track}}\"})",
    );
    if let Some(s) = m.sequential.as_mut() {
        s.horizon = Some(horizon);
    }
    Policy::test()
        .with_interval(Duration::from_secs(10))
        .with_warmup(Duration::from_secs(60))
        .with_metric(m)
}

/// Healthy counters at 50 rps (10% canary, 0.5% errors) polled every 10 s.
fn observe_counters(engine: &mut Engine, i: i64) {
    let at = i * STEP;
    for (track, share) in [(Track::Canary, 0.1), (Track::Stable, 0.9)] {
        let total = 50.0 * share * (i * STEP / 1000) as f64;
        let errors = (total * 0.005).floor();
        for (input, v) in [
            (
                Input::Events {
                    metric: "errors".into(),
                },
                errors,
            ),
            (
                Input::Total {
                    metric: "errors".into(),
                },
                total,
            ),
        ] {
            let _ = engine.observe_input(&input, track, Sample::value(at, v));
        }
    }
}

fn sequential_after(horizon: Duration) -> (Engine, i64) {
    let phase = Phase::Canary { started_at: 0 };
    let mut engine = Engine::new(&sequential_policy(horizon), "rev-1");
    let ticks = 5 * HOUR / 2 / STEP;
    for i in 0..=ticks {
        observe_counters(&mut engine, i);
        let _ = engine.evaluate(i * STEP, phase);
    }
    (engine, ticks + 1)
}

fn bench(c: &mut Criterion) {
    let phase = Phase::Canary { started_at: 0 };
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(METRICS.len() as u64));

    // Steady state of the daemon: one poll of every series, then one evaluation.
    group.bench_function("observe_and_evaluate_5_metrics_1h", |b| {
        let (mut engine, mut i) = warmed();
        b.iter(|| {
            observe_all(&mut engine, i);
            let v = engine.evaluate(i * STEP, phase);
            i += 1;
            black_box(v)
        })
    });

    // Evaluation alone over a full hour of samples.
    group.bench_function("evaluate_5_metrics_1h", |b| {
        b.iter_batched_ref(
            warmed,
            |(engine, i)| black_box(engine.evaluate((*i - 1) * STEP, phase)),
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    for (name, every) in [
        ("sequential_poll_detector_24h", Duration::from_secs(86_400)),
        ("sequential_poll_no_detector", Duration::ZERO),
    ] {
        group.bench_function(name, |b| {
            let (mut engine, mut i) = sequential_after(every);
            b.iter(|| {
                observe_counters(&mut engine, i);
                let v = engine.evaluate(i * STEP, phase);
                i += 1;
                black_box(v)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
