//! Service-level behaviour of the decision engine: what an SRE sees in verdicts over time.

mod common;

use backout::decision::{
    Alert, Breach, DecisionError, Engine, Health, Missing, Phase, Reading, Stage,
};
use backout::policy::{Compare, Level, MetricSpec, NoData, Policy, Stat};
use backout::sample::{Observation, Sample, Track};
use common::*;

fn errors_policy() -> Policy {
    Policy::test().with_metric(
        MetricSpec::test("errors")
            .critical(Level::above(0.05))
            .for_(secs(60)),
    )
}

#[test]
fn sustained_breach_fires_critical_only_after_for() {
    let mut run = Run::no_warmup(errors_policy());
    let vs = run.ticks(8, val(0.2));
    // Breaching at t = 0, 10, ..., 50: pending; t = 60 is 60 s of breach: critical.
    for v in &vs[..6] {
        assert!(!v.rollback, "at {}", v.at);
        assert_eq!(v.health, Health::Healthy);
        assert_eq!(status(v, "errors").critical, Alert::Pending { since: 0 });
    }
    let fired = &vs[6];
    assert_eq!(fired.at, 60 * SEC);
    assert!(fired.rollback);
    assert_eq!(fired.health, Health::Critical);
    let reason = &fired.reasons[0];
    assert_eq!(reason.metric, "errors");
    assert_eq!(reason.track, Track::Canary);
    assert_eq!(reason.observed, Some(0.2));
    assert_eq!(reason.threshold, Some(Level::above(0.05)));
    assert_eq!((reason.since, reason.fired_at), (Some(0), Some(60 * SEC)));
}

#[test]
fn a_single_spike_does_not_fire() {
    let mut run = Run::no_warmup(errors_policy());
    let mut vs = run.ticks(3, val(0.0));
    vs.push(run.tick(val(0.9)));
    vs.extend(run.ticks(20, val(0.01)));
    assert!(vs
        .iter()
        .all(|v| !v.rollback && v.health == Health::Healthy));
}

#[test]
fn a_spike_fires_at_once_when_for_is_zero() {
    let policy =
        Policy::test().with_metric(MetricSpec::test("errors").critical(Level::above(0.05)));
    let mut run = Run::no_warmup(policy);
    assert!(!run.tick(val(0.0)).rollback);
    assert!(run.tick(val(0.06)).rollback);
}

#[test]
fn recovery_needs_clear_for() {
    let policy = Policy::test().with_metric(
        MetricSpec::test("errors")
            .warning(Level::above(0.01))
            .critical(Level::above(0.05))
            .clear_for(secs(30)),
    );
    let mut run = Run::no_warmup(policy);
    assert_eq!(run.tick(val(0.02)).health, Health::Warning);
    // Clear at t = 10, 20, 30: still Warning; 30 s of clear at t = 40: Healthy.
    let vs = run.ticks(4, val(0.0));
    assert_eq!(
        healths(&vs),
        vec![
            Health::Warning,
            Health::Warning,
            Health::Warning,
            Health::Healthy
        ]
    );
    // A breach during the clear streak restarts it.
    run.tick(val(0.02));
    run.ticks(2, val(0.0));
    run.tick(val(0.02));
    assert_eq!(healths(&run.ticks(3, val(0.0))), vec![Health::Warning; 3]);
    assert_eq!(run.tick(val(0.0)).health, Health::Healthy);
}

#[test]
fn no_data_is_inconclusive_never_critical() {
    let policy =
        Policy::test().with_metric(MetricSpec::test("errors").critical(Level::above(0.05)));
    for obs in [
        Observation::Absent,
        Observation::NotFinite(f64::NAN),
        Observation::Error("timeout".into()),
    ] {
        let mut run = Run::no_warmup(policy.clone());
        let vs = run.ticks(30, obs.clone());
        assert!(
            vs.iter()
                .all(|v| v.health == Health::Inconclusive && !v.rollback),
            "{obs:?}"
        );
        assert!(!vs[0].promotable());
        assert_eq!(
            vs[29].reasons[0].since,
            Some(0),
            "inconclusive since the first poll"
        );
    }
    // Never seen at all.
    let mut run = Run::no_warmup(policy);
    let v = run.tick_with(&[]);
    assert_eq!(v.health, Health::Inconclusive);
    assert!(matches!(
        status(&v, "errors").reading,
        Reading::Missing {
            why: Missing::NeverSeen,
            ..
        }
    ));
}

#[test]
fn zero_is_data_not_missing() {
    let policy =
        Policy::test().with_metric(MetricSpec::test("errors").critical(Level::above(0.05)));
    let mut run = Run::no_warmup(policy);
    let v = run.tick(val(0.0));
    assert_eq!(v.health, Health::Healthy);
    assert!(v.promotable());
}

#[test]
fn no_data_fail_is_a_critical_breach_subject_to_for() {
    let policy = Policy::test().with_metric(
        MetricSpec::test("heartbeat")
            .critical(Level::below(1.0))
            .for_(secs(20))
            .no_data(NoData::Fail),
    );
    let mut run = Run::no_warmup(policy);
    let tick = |run: &mut Run| run.tick_with(&[("heartbeat", Track::Canary, Observation::Absent)]);
    assert!(!tick(&mut run).rollback);
    assert!(!tick(&mut run).rollback);
    let v = tick(&mut run);
    assert!(v.rollback);
    assert!(matches!(
        v.reasons[0].reading,
        Reading::Missing {
            why: Missing::Absent,
            ..
        }
    ));
}

#[test]
fn no_data_ignore_drops_the_metric() {
    let policy = Policy::test()
        .with_metric(MetricSpec::test("errors").critical(Level::above(0.05)))
        .with_metric(
            MetricSpec::test("quality")
                .critical(Level::below(0.6))
                .no_data(NoData::Ignore),
        );
    let mut run = Run::no_warmup(policy);
    let v = run.tick_with(&[
        ("errors", Track::Canary, val(0.0)),
        ("quality", Track::Canary, Observation::Absent),
    ]);
    assert_eq!(v.health, Health::Healthy);
    assert_eq!(status(&v, "quality").health, Health::Ignored);
    let v = run.tick_with(&[
        ("errors", Track::Canary, val(0.0)),
        ("quality", Track::Canary, val(0.5)),
    ]);
    assert!(v.rollback, "ignored only while missing");
}

#[test]
fn below_traffic_floor_is_inconclusive() {
    let policy = Policy::test().with_metric(
        MetricSpec::test("errors")
            .critical(Level::above(0.05))
            .min_traffic(5.0),
    );
    let mut run = Run::no_warmup(policy.clone());
    run.traffic = Some(4.9);
    let vs = run.ticks(10, val(1.0));
    assert!(vs
        .iter()
        .all(|v| v.health == Health::Inconclusive && !v.rollback));
    assert!(matches!(
        status(&vs[0], "errors").reading,
        Reading::LowTraffic { traffic: Some(t), floor: 5.0 } if t == 4.9
    ));
    // Exactly at the floor is enough traffic to judge.
    run.traffic = Some(5.0);
    assert!(run.tick(val(1.0)).rollback);
    // No traffic samples at all: the floor cannot be checked.
    let mut run = Run::no_warmup(policy);
    run.traffic = None;
    assert_eq!(run.tick(val(1.0)).health, Health::Inconclusive);
}

#[test]
fn flapping_exactly_at_the_threshold_never_breaches() {
    let mut run = Run::no_warmup(errors_policy());
    for i in 0..41 {
        let x = if i % 2 == 0 { 0.05 } else { 0.0500001 };
        let v = run.tick(val(x));
        assert!(!v.rollback, "t={}", v.at);
        if i % 2 == 0 {
            assert_eq!(
                status(&v, "errors").breach,
                Breach::Clear,
                "equal is not above"
            );
        }
    }
    // Strictly above, sustained (the last flap above was clear): fires after `for`.
    let vs = run.ticks(7, val(0.0500001));
    assert!(vs[6].rollback && !vs[5].rollback);
}

#[test]
fn below_levels_are_strict_too() {
    let policy =
        Policy::test().with_metric(MetricSpec::test("availability").critical(Level::below(0.99)));
    let mut run = Run::no_warmup(policy);
    assert!(
        !run.tick_with(&[("availability", Track::Canary, val(0.99))])
            .rollback
    );
    assert!(
        run.tick_with(&[("availability", Track::Canary, val(0.9899))])
            .rollback
    );
}

#[test]
fn gaps_in_data() {
    let mut run = Run::no_warmup(errors_policy());
    run.ticks(3, val(0.2)); // t = 0, 10, 20: pending since 0
                            // One skipped poll (t = 30): the t = 20 sample is 10 s old, still fresh, still breaching.
    let v30 = run.tick_with(&[]);
    assert_eq!(status(&v30, "errors").critical, Alert::Pending { since: 0 });
    // Skipped again at t = 40 and 50: 30 s old > 2 intervals: stale, pending resets.
    run.tick_with(&[]);
    let v50 = run.tick_with(&[]);
    assert_eq!(v50.health, Health::Inconclusive);
    assert!(matches!(
        status(&v50, "errors").reading,
        Reading::Missing {
            why: Missing::Stale { last_at: 20_000 },
            ..
        }
    ));
    assert_eq!(status(&v50, "errors").critical, Alert::Inactive);
    // Data back at t = 60: `for` counts from 60 again, fires at 120, not at 60.
    let vs = run.ticks(7, val(0.2));
    assert!(!vs[5].rollback && vs[6].rollback);
    assert_eq!(vs[6].at, 120 * SEC);
}

#[test]
fn warmup_observes_breaches_but_cannot_fire_critical() {
    let policy = Policy::test().with_warmup(secs(60)).with_metric(
        MetricSpec::test("errors")
            .warning(Level::above(0.01))
            .critical(Level::above(0.05))
            .for_(secs(30)),
    );
    let mut run = Run::new(policy);
    let vs = run.ticks(6, val(0.5)); // t = 0..50, warm-up until 60
    for v in &vs {
        assert_eq!(v.stage, Stage::Warmup);
        assert!(!v.rollback);
        assert_eq!(status(v, "errors").critical, Alert::Pending { since: 0 });
    }
    assert_eq!(
        vs[5].health,
        Health::Warning,
        "warning may fire during warm-up"
    );
    // After warm-up, `for` counts from the end of warm-up: fires at 60 + 30 = 90.
    let vs = run.ticks(4, val(0.5));
    assert_eq!(vs[0].stage, Stage::Analysis);
    assert_eq!(
        vs.iter().map(|v| v.rollback).collect::<Vec<_>>(),
        vec![false, false, false, true]
    );
    assert_eq!(vs[3].at, 90 * SEC);
    assert_eq!(
        vs[3].reasons[0].since,
        Some(0),
        "the breach started during warm-up"
    );
}

#[test]
fn ratio_against_zero_baseline() {
    let policy = Policy::test().with_metric(
        MetricSpec::test("errors")
            .critical(Level::above(2.0))
            .compare(Compare::Ratio),
    );
    let tick = |run: &mut Run, canary: f64, stable: Observation| {
        run.tick_with(&[
            ("errors", Track::Canary, val(canary)),
            ("errors", Track::Stable, stable),
        ])
    };
    let mut run = Run::no_warmup(policy.clone());
    let v = tick(&mut run, 0.0, val(0.0));
    assert_eq!(v.health, Health::Healthy, "0/0 is the same as baseline");
    assert!(matches!(status(&v, "errors").reading, Reading::Value { value, .. } if value == 1.0));
    let v = tick(&mut run, 0.001, val(0.0));
    assert!(v.rollback, "errors against an error-free baseline");
    assert_eq!(v.reasons[0].observed, Some(f64::INFINITY));
    // The JSON audit trail keeps the raw numbers even though infinity prints as null.
    let json = serde_json::to_value(&v.reasons[0]).unwrap();
    assert_eq!(json["reading"]["subject"], 0.001);
    assert_eq!(json["reading"]["baseline"], 0.0);

    let mut run = Run::no_warmup(policy);
    let v = tick(&mut run, 0.3, val(0.1));
    assert!(v.rollback, "3x baseline");
}

#[test]
fn missing_baseline_is_inconclusive_even_under_fail() {
    let policy = Policy::test().with_metric(
        MetricSpec::test("latency")
            .critical(Level::above(0.5))
            .compare(Compare::Difference)
            .no_data(NoData::Fail),
    );
    let mut run = Run::no_warmup(policy);
    let v = run.tick_with(&[
        ("latency", Track::Canary, val(9.0)),
        ("latency", Track::Stable, Observation::Error("503".into())),
    ]);
    assert_eq!(v.health, Health::Inconclusive);
    assert!(matches!(
        status(&v, "latency").reading,
        Reading::Missing {
            track: Track::Stable,
            ..
        }
    ));
    let v = run.tick_with(&[
        ("latency", Track::Canary, val(0.7)),
        ("latency", Track::Stable, val(0.1)),
    ]);
    assert!(v.rollback, "0.6 s slower than stable");
}

#[test]
fn stat_over_a_window_smooths_a_spike() {
    let policy = Policy::test().with_metric(
        MetricSpec::test("errors")
            .critical(Level::above(0.05))
            .stat(Stat::Mean, secs(60)),
    );
    let mut run = Run::no_warmup(policy);
    run.ticks(5, val(0.0));
    assert!(!run.tick(val(0.2)).rollback, "mean of 6 polls = 0.033");
    assert!(run.tick(val(0.2)).rollback, "mean of 7 polls = 0.057");
}

#[test]
fn rollback_is_sticky_for_the_revision() {
    let policy =
        Policy::test().with_metric(MetricSpec::test("errors").critical(Level::above(0.05)));
    let mut run = Run::no_warmup(policy);
    let fired = run.tick(val(0.5));
    assert!(fired.rollback);
    let later = run.ticks(10, val(0.0));
    for v in &later {
        assert!(v.rollback && v.health == Health::Critical);
        assert_eq!(v.rollback_since, Some(0));
        assert_eq!(
            v.reasons, fired.reasons,
            "the reasons that caused the rollback"
        );
        assert_eq!(
            status(v, "errors").health,
            Health::Healthy,
            "current status still shown"
        );
    }
    run.engine.reset_for_revision("rev-2");
    run.phase = Phase::Canary {
        started_at: run.now,
    };
    let v = run.tick(val(0.0));
    assert!(!v.rollback && v.health == Health::Healthy);
    assert_eq!(v.revision, "rev-2");
}

#[test]
fn bake_judges_the_promoted_stable_alone() {
    let policy = Policy::test()
        .with_metric(MetricSpec::test("errors").critical(Level::above(0.05)))
        .with_metric(
            MetricSpec::test("latency")
                .critical(Level::above(2.0))
                .compare(Compare::Ratio),
        );
    let mut run = Run::no_warmup(policy);
    // The old stable was bad; the canary fine.
    run.tick_with(&[
        ("errors", Track::Stable, val(0.5)),
        ("errors", Track::Canary, val(0.0)),
    ]);
    run.phase = Phase::Bake {
        promoted_at: run.now,
    };
    let v = run.tick_with(&[]);
    assert_eq!(v.stage, Stage::Bake);
    assert_eq!(
        v.health,
        Health::Inconclusive,
        "pre-promotion stable samples are dropped"
    );
    assert_eq!(
        status(&v, "latency").health,
        Health::Ignored,
        "no baseline in bake"
    );
    let v = run.tick_with(&[("errors", Track::Stable, val(0.9))]);
    assert!(v.rollback);
    assert_eq!(v.reasons[0].track, Track::Stable);
}

#[test]
fn long_inconclusive_is_reported_as_stuck() {
    let mut policy =
        Policy::test().with_metric(MetricSpec::test("errors").critical(Level::above(0.05)));
    policy.analysis.no_data_deadline = secs(60);
    let mut run = Run::no_warmup(policy);
    let vs = run.ticks(7, Observation::Absent);
    assert!(!vs[5].stuck && vs[6].stuck);
    assert!(!vs[6].rollback);
    assert!(!run.tick(val(0.0)).stuck);
}

#[test]
fn verdict_precedence_is_worst_metric() {
    let policy = Policy::test()
        .with_metric(MetricSpec::test("a").warning(Level::above(1.0)))
        .with_metric(MetricSpec::test("b").critical(Level::above(1.0)))
        .with_metric(MetricSpec::test("c").critical(Level::above(1.0)));
    let mut run = Run::no_warmup(policy);
    let v = run.tick_with(&[
        ("a", Track::Canary, val(2.0)),
        ("b", Track::Canary, Observation::Absent),
        ("c", Track::Canary, val(0.0)),
    ]);
    assert_eq!(v.health, Health::Warning, "warning outranks inconclusive");
    let names: Vec<_> = v.reasons.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let v = run.tick_with(&[
        ("a", Track::Canary, val(2.0)),
        ("b", Track::Canary, val(5.0)),
    ]);
    assert_eq!(v.health, Health::Critical);
    assert_eq!(v.reasons[0].metric, "b", "worst first");
}

#[test]
fn unknown_metric_names_the_policy_file() {
    let mut engine = Engine::new(&errors_policy(), "rev");
    let err = engine
        .observe("eror", Track::Canary, Sample::value(0, 1.0))
        .unwrap_err();
    assert!(matches!(err, DecisionError::UnknownMetric { .. }));
    let msg = err.to_string();
    assert!(msg.contains("test.toml") && msg.contains("eror"), "{msg}");
}

#[test]
fn verdicts_round_trip_through_json() {
    let mut run = Run::no_warmup(errors_policy());
    let vs = run.ticks(8, val(0.2));
    for v in vs {
        let json = serde_json::to_string(&v).unwrap();
        let back: backout::decision::Verdict = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }
}
