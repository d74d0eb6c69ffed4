//! Shared-cause verdicts: a canary threshold breach the stable shares, the canary not worse,
//! holds instead of rolling back; a canary that is worse still rolls back.

mod common;

use backout::decision::{Breach, Health, Phase, Reading, Verdict};
use backout::policy::{Level, MetricSpec, OnShared, Policy};
use backout::sample::{Sample, Track};
use common::*;

/// The runbooks' rule: error ratio over 1 minute above 5% for 1 minute.
fn threshold_policy() -> Policy {
    Policy::test().with_metric(
        MetricSpec::test("errors")
            .critical(Level::above(0.05))
            .for_(secs(60)),
    )
}

/// A canary at 1 req/s and a stable at 9 req/s, both polled every 10 s for `n` ticks with the
/// given error ratios.
fn ticks(run: &mut Run, n: usize, canary: f64, stable: f64) -> Vec<Verdict> {
    run.traffic = None;
    (0..n)
        .map(|_| {
            for (track, rps) in [(Track::Canary, 1.0), (Track::Stable, 9.0)] {
                run.engine
                    .observe_traffic(track, Sample::value(run.now, rps));
            }
            run.tick_with(&[
                ("errors", Track::Canary, val(canary)),
                ("errors", Track::Stable, val(stable)),
            ])
        })
        .collect()
}

#[test]
fn both_tracks_breaching_with_the_canary_not_worse_is_shared_and_holds() {
    let mut run = Run::no_warmup(threshold_policy());
    let healthy = ticks(&mut run, 12, 0.005, 0.005);
    assert!(healthy.iter().all(|v| v.health == Health::Healthy));
    // A dependency fails for 10 minutes: both tracks at 10% errors.
    let incident = ticks(&mut run, 60, 0.10, 0.10);
    for v in &incident {
        assert!(!v.rollback, "rolled back at {}", v.at);
        assert_eq!(v.health, Health::Shared, "at {}", v.at);
        assert!(!v.promotable());
    }
    let reason = &incident[0].reasons[0];
    assert_eq!(reason.health, Health::Shared);
    assert_eq!(reason.observed, Some(0.10));
    let text = reason.to_string();
    assert!(
        text.starts_with("errors shared on canary: both tracks breach; the canary is not worse"),
        "{text}"
    );
    let Reading::Shared(cause) = &reason.reading else {
        panic!("{:?}", reason.reading);
    };
    assert_eq!((cause.canary, cause.stable), (0.10, 0.10));
    assert!(cause.p_value > 0.5, "{cause:?}");
    // Recovered: healthy again, never a rollback.
    let after = ticks(&mut run, 3, 0.005, 0.005);
    assert_eq!(after.last().unwrap().health, Health::Healthy);
}

#[test]
fn a_worse_canary_still_rolls_back_while_the_stable_breaches_too() {
    // Canary 10% against a stable at 2%: the stable does not breach 5%, a plain rollback.
    let mut run = Run::no_warmup(threshold_policy());
    let vs = ticks(&mut run, 8, 0.10, 0.02);
    assert!(vs.last().unwrap().rollback);
    // Canary 30% against a stable at 6%: both breach, but the canary is clearly worse.
    let mut run = Run::no_warmup(threshold_policy());
    let vs = ticks(&mut run, 8, 0.30, 0.06);
    assert!(vs.iter().all(|v| v.health != Health::Shared));
    let fired = vs.iter().find(|v| v.rollback).expect("a rollback");
    assert_eq!(fired.at, 60 * SEC);
    assert!(matches!(fired.reasons[0].reading, Reading::Value { .. }));
}

#[test]
fn a_canary_seconds_old_has_no_counts_to_be_shared_with() {
    // Both tracks at 10% from the first poll: 30 canary requests cannot show a canary twice
    // the margin worse, so the first polls are plain breaches (pending under `for`); once the
    // window holds a minute of requests the breach is shared.
    let mut run = Run::no_warmup(threshold_policy());
    let vs = ticks(&mut run, 12, 0.10, 0.10);
    assert_eq!(status(&vs[0], "errors").breach, Breach::Critical);
    assert_eq!(vs.last().unwrap().health, Health::Shared);
    assert!(vs.iter().all(|v| !v.rollback));
}

#[test]
fn on_shared_rollback_rolls_back_and_says_the_breach_was_shared() {
    let mut run = Run::no_warmup(threshold_policy().with_on_shared(OnShared::Rollback));
    let vs = ticks(&mut run, 8, 0.10, 0.10);
    let fired = vs.iter().find(|v| v.rollback).expect("a rollback");
    assert_eq!(fired.at, 60 * SEC);
    assert!(
        matches!(fired.reasons[0].reading, Reading::Shared(_)),
        "{}",
        fired.reasons[0]
    );
}

#[test]
fn the_bake_window_judges_the_stable_alone_as_before() {
    let mut run = Run::no_warmup(threshold_policy());
    run.phase = Phase::Bake { promoted_at: 0 };
    run.traffic = Some(9.0);
    let vs: Vec<Verdict> = (0..8)
        .map(|_| run.tick_with(&[("errors", Track::Stable, val(0.10))]))
        .collect();
    assert!(vs.last().unwrap().rollback);
    assert!(vs.iter().all(|v| v.health != Health::Shared));
}

#[test]
fn without_traffic_there_are_no_counts_and_the_breach_stands() {
    let mut run = Run::no_warmup(threshold_policy());
    run.traffic = None;
    let vs: Vec<Verdict> = (0..8)
        .map(|_| {
            run.tick_with(&[
                ("errors", Track::Canary, val(0.10)),
                ("errors", Track::Stable, val(0.10)),
            ])
        })
        .collect();
    assert!(vs.last().unwrap().rollback);
}

#[test]
fn a_shared_poll_restarts_a_pending_for() {
    // Canary worse for 40 s, then shared, then worse again: `for` counts from the new breach.
    let mut run = Run::no_warmup(threshold_policy());
    let mut vs = ticks(&mut run, 5, 0.30, 0.06);
    vs.extend(ticks(&mut run, 1, 0.10, 0.10));
    assert_eq!(status(vs.last().unwrap(), "errors").breach, Breach::Shared);
    vs.extend(ticks(&mut run, 6, 0.30, 0.06));
    assert!(!vs.last().unwrap().rollback);
    vs.extend(ticks(&mut run, 1, 0.30, 0.06));
    assert!(vs.last().unwrap().rollback);
}
