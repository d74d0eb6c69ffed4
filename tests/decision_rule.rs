//! One rule, one evaluation: the order of checks and the level arithmetic.

use backout::decision::rule::{compared, evaluate, Inputs};
use backout::decision::{Breach, Missing, Reading, Rule, Window};
use backout::policy::{Analysis, Compare, Level, MetricSpec, NoData, Stat};
use backout::sample::{Millis, Observation, Sample, Track};
use std::time::Duration;

const NOW: Millis = 100_000;

fn rule(spec: MetricSpec) -> Rule {
    Rule::from_spec(&spec, &Analysis::default())
}

fn series(points: &[(Millis, Observation)]) -> Window {
    let mut w = Window::new(1_000_000);
    for (at, obs) in points {
        w.push(Sample::new(*at, obs.clone()));
    }
    w
}

fn one(x: f64) -> Window {
    series(&[(NOW, Observation::Value(x))])
}

fn eval(
    rule: &Rule,
    canary: &Window,
    stable: Option<&Window>,
    traffic: &Window,
) -> backout::decision::Outcome {
    let inputs = Inputs {
        subject: Track::Canary,
        series: canary,
        baseline: stable,
        traffic,
    };
    evaluate(rule, inputs, NOW)
}

#[test]
fn defaults_are_resolved_from_the_policy() {
    let r = rule(MetricSpec::test("errors"));
    assert_eq!(r.stat, Stat::Last);
    assert_eq!(r.stat_window, 10_000, "one interval");
    assert_eq!((r.for_, r.clear_for), (0, 0));
    assert_eq!(r.no_data, NoData::Hold);
    assert_eq!(r.compare, None);
    assert_eq!(r.stale_after, 20_000, "two intervals");
}

#[test]
fn critical_outranks_warning_and_levels_are_strict() {
    let r = rule(
        MetricSpec::test("p99")
            .warning(Level::above(0.5))
            .critical(Level::above(1.0)),
    );
    let none = Window::new(0);
    let cases = [
        (0.5, Breach::Clear),
        (0.51, Breach::Warning),
        (1.0, Breach::Warning),
        (1.01, Breach::Critical),
    ];
    for (x, want) in cases {
        let out = eval(&r, &one(x), None, &none);
        assert_eq!(out.breach, want, "value {x}");
    }
    let out = eval(&r, &one(2.0), None, &none);
    assert_eq!(out.threshold, Some(Level::above(1.0)));
}

#[test]
fn the_newest_poll_decides_presence() {
    let r = rule(
        MetricSpec::test("errors")
            .critical(Level::above(0.05))
            .stat(Stat::Max, Duration::from_secs(60)),
    );
    let none = Window::new(0);
    // An old breaching value inside the stat window does not count once the newest poll is absent.
    let w = series(&[
        (NOW - 20_000, Observation::Value(1.0)),
        (NOW, Observation::Absent),
    ]);
    let out = eval(&r, &w, None, &none);
    assert_eq!(out.breach, Breach::Inconclusive);
    assert_eq!(
        out.reading,
        Reading::Missing {
            track: Track::Canary,
            why: Missing::Absent
        }
    );
    // With a value newest, the max over the window includes the older value.
    let w = series(&[
        (NOW - 20_000, Observation::Value(1.0)),
        (NOW, Observation::Value(0.0)),
    ]);
    assert_eq!(eval(&r, &w, None, &none).breach, Breach::Critical);
}

#[test]
fn stale_after_two_intervals() {
    let r = rule(MetricSpec::test("errors").critical(Level::above(0.05)));
    let none = Window::new(0);
    let fresh = series(&[(NOW - 20_000, Observation::Value(1.0))]);
    assert_eq!(eval(&r, &fresh, None, &none).breach, Breach::Critical);
    let stale = series(&[(NOW - 20_001, Observation::Value(1.0))]);
    let out = eval(&r, &stale, None, &none);
    assert_eq!(out.breach, Breach::Inconclusive);
    assert_eq!(
        out.reading,
        Reading::Missing {
            track: Track::Canary,
            why: Missing::Stale {
                last_at: NOW - 20_001
            }
        }
    );
}

#[test]
fn traffic_floor_is_checked_before_data() {
    let r = rule(
        MetricSpec::test("errors")
            .critical(Level::above(0.05))
            .min_traffic(1.0)
            .no_data(NoData::Fail),
    );
    // Under `fail`, missing data with enough traffic is a breach...
    let busy = one(10.0);
    let absent = series(&[(NOW, Observation::Absent)]);
    assert_eq!(eval(&r, &absent, None, &busy).breach, Breach::Critical);
    // ...but with no traffic there is nothing to judge: missing data is expected.
    let idle = one(0.0);
    assert_eq!(eval(&r, &absent, None, &idle).breach, Breach::Inconclusive);
    let stale_traffic = series(&[(NOW - 60_000, Observation::Value(10.0))]);
    let out = eval(&r, &one(1.0), None, &stale_traffic);
    assert_eq!(
        out.reading,
        Reading::LowTraffic {
            traffic: None,
            floor: 1.0
        }
    );
}

#[test]
fn compare_applies_the_stat_to_each_track() {
    let r = rule(
        MetricSpec::test("latency")
            .critical(Level::above(2.0))
            .compare(Compare::Ratio)
            .stat(Stat::Mean, Duration::from_secs(30)),
    );
    let none = Window::new(0);
    let canary = series(&[
        (NOW - 10_000, Observation::Value(1.0)),
        (NOW, Observation::Value(3.0)),
    ]);
    let stable = series(&[
        (NOW - 10_000, Observation::Value(0.5)),
        (NOW, Observation::Value(0.5)),
    ]);
    let out = eval(&r, &canary, Some(&stable), &none);
    assert_eq!(
        out.reading,
        Reading::Value {
            value: 4.0,
            subject: 2.0,
            baseline: Some(0.5)
        }
    );
    assert_eq!(out.breach, Breach::Critical);
}

#[test]
fn ratio_and_difference_arithmetic() {
    assert_eq!(compared(Compare::Ratio, 3.0, 1.5), 2.0);
    assert_eq!(compared(Compare::Ratio, 0.0, 0.0), 1.0);
    assert_eq!(compared(Compare::Ratio, 0.2, 0.0), f64::INFINITY);
    assert_eq!(compared(Compare::Ratio, -0.2, 0.0), f64::NEG_INFINITY);
    assert_eq!(compared(Compare::Difference, 0.7, 0.2), 0.7 - 0.2);
    assert!(Level::above(2.0).breached_by(compared(Compare::Ratio, 1.0, 0.0)));
    assert!(!Level::below(0.5).breached_by(compared(Compare::Ratio, 1.0, 0.0)));
}

#[test]
fn no_baseline_phase_ignores_compare_rules() {
    let r = rule(
        MetricSpec::test("latency")
            .critical(Level::above(2.0))
            .compare(Compare::Ratio),
    );
    let out = eval(&r, &one(100.0), None, &Window::new(0));
    assert_eq!(
        (out.breach, out.reading),
        (Breach::Ignored, Reading::NoBaseline)
    );
}
