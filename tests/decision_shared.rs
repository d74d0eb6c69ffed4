//! Shared-cause verdicts: a canary threshold breach the stable shares, the canary not worse,
//! holds instead of rolling back; a canary that is worse still rolls back.

mod common;

use backout::decision::{Breach, Health, Phase, Reading, Verdict};
use backout::policy::{Compare, Level, MetricSpec, OnShared, Policy, Unit};
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
    ticks_at(run, n, canary, stable, 1.0)
}

/// [`ticks`] with the canary at `rps` and the stable at nine times that.
fn ticks_at(run: &mut Run, n: usize, canary: f64, stable: f64, rps: f64) -> Vec<Verdict> {
    run.traffic = None;
    (0..n)
        .map(|_| {
            for (track, rps) in [(Track::Canary, rps), (Track::Stable, 9.0 * rps)] {
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
fn early_polls_with_too_few_requests_hold_while_the_stable_breaches() {
    // Both tracks at 10% from the first poll: 10 canary requests cannot show even a canary
    // twice the margin worse, but the stable breaches the level itself, so the canary's breach
    // is held pending power (not a rollback), until the window holds enough requests to test.
    let mut run = Run::no_warmup(threshold_policy());
    let vs = ticks(&mut run, 12, 0.10, 0.10);
    assert!(vs.iter().all(|v| !v.rollback));
    assert!(
        vs.iter().all(|v| v.health == Health::Shared),
        "{:?}",
        healths(&vs)
    );
    let pending = |v: &Verdict| match &status(v, "errors").reading {
        Reading::Shared(cause) => cause.pending_power,
        other => panic!("{other:?}"),
    };
    assert!(pending(&vs[1]));
    let text = vs[1].reasons[0].to_string();
    assert!(text.contains("too few requests yet"), "{text}");
    assert!(!pending(vs.last().unwrap()));
}

#[test]
fn a_worse_canary_is_rolled_back_as_soon_as_early_counts_show_it() {
    // 14% against a stable at 6% (under twice the margin) at 10 and 90 req/s: the first poll
    // has no requests behind it and holds; the second has 100 canary requests, which show the
    // canary worse, and `for` runs from there: one poll later than without the stable's breach.
    let mut run = Run::no_warmup(threshold_policy());
    let vs = ticks_at(&mut run, 9, 0.14, 0.06, 10.0);
    assert_eq!(status(&vs[0], "errors").breach, Breach::Shared);
    assert_eq!(status(&vs[1], "errors").breach, Breach::Critical);
    let fired = vs.iter().find(|v| v.rollback).expect("a rollback");
    assert_eq!(fired.at, 70 * SEC);
    // A canary far beyond twice the margin is never held, even on no requests at all.
    let mut run = Run::no_warmup(threshold_policy());
    let vs = ticks_at(&mut run, 7, 0.50, 0.06, 10.0);
    assert!(vs.iter().all(|v| v.health != Health::Shared));
    assert_eq!(vs.iter().find(|v| v.rollback).map(|v| v.at), Some(60 * SEC));
}

/// Kailash Kaizen's rule: one percentage point more errors than the stable, for 1 minute.
fn difference_policy() -> Policy {
    let mut m = MetricSpec::test("errors")
        .critical(Level::above(0.01))
        .for_(secs(60));
    m.compare = Some(Compare::Difference);
    Policy::test().with_metric(m)
}

#[test]
fn a_difference_level_both_tracks_run_far_above_is_shared_when_the_canary_is_not_worse() {
    // Both tracks near 10%: the canary's noise puts it 1.5 points over the stable, which the
    // margin (1.2 x 10% = 2 points) calls not worse, and the counts agree.
    let mut run = Run::no_warmup(difference_policy());
    let vs = ticks(&mut run, 12, 0.115, 0.10);
    assert!(vs.iter().all(|v| !v.rollback));
    assert_eq!(vs.last().unwrap().health, Health::Shared);
    // At a 0.5% stable the point is judged as written: 2% against 0.5% rolls back.
    let mut run = Run::no_warmup(difference_policy());
    let vs = ticks(&mut run, 8, 0.02, 0.005);
    assert_eq!(vs.iter().find(|v| v.rollback).map(|v| v.at), Some(60 * SEC));
    // And a canary clearly worse than a stable at 10% still rolls back.
    let mut run = Run::no_warmup(difference_policy());
    let vs = ticks(&mut run, 12, 0.25, 0.10);
    assert!(vs.iter().any(|v| v.rollback));
}

fn percent_policy(unit: Option<Unit>) -> Policy {
    let mut m = MetricSpec::test("errors")
        .critical(Level::above(5.0))
        .for_(secs(60));
    m.unit = unit;
    Policy::test().with_metric(m)
}

#[test]
fn a_percent_level_reads_its_counts_in_percent() {
    // Both tracks in an incident, in percent: canary 13 against stable 10 (1.3x, within the
    // noise of 8 canary errors a minute). Read as percent, not worse: shared. Read as a share,
    // the counts are 100x too large and the same noise is "significant": a rollback.
    let mut run = Run::no_warmup(percent_policy(Some(Unit::Percent)));
    let vs = ticks(&mut run, 12, 13.0, 10.0);
    assert!(vs.iter().all(|v| !v.rollback));
    assert_eq!(vs.last().unwrap().health, Health::Shared);
    let mut run = Run::no_warmup(percent_policy(None));
    let vs = ticks(&mut run, 12, 13.0, 10.0);
    assert!(vs.iter().any(|v| v.rollback));
    // A value that is not a share of requests has no counts: the breach stands.
    let mut run = Run::no_warmup(percent_policy(Some(Unit::Other)));
    let vs = ticks(&mut run, 12, 10.0, 10.0);
    assert!(vs.iter().any(|v| v.rollback));
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

#[test]
fn a_stable_dipping_under_the_level_does_not_end_a_shared_incident_for_a_for() {
    // Both tracks at 10% (10 and 90 req/s): shared. Then the shared rate settles near the
    // level and the stable's noise takes it under (4% with the margin: 4.8% < 5%) while the
    // canary reads 5.5%, not significantly worse than the stable: the incident goes on for the
    // rule's `for` (60 s) after the last shared poll, so a minute of this is held, not fired.
    let mut run = Run::no_warmup(threshold_policy());
    let shared = ticks_at(&mut run, 6, 0.10, 0.10, 10.0);
    assert_eq!(shared.last().unwrap().health, Health::Shared);
    let dip = ticks_at(&mut run, 6, 0.055, 0.04, 10.0);
    assert!(dip.iter().all(|v| !v.rollback), "{:?}", healths(&dip));
    assert!(
        dip.iter().all(|v| v.health == Health::Shared),
        "{:?}",
        healths(&dip)
    );
    let text = dip[0].reasons[0].to_string();
    assert!(text.contains("the stable dipped under it"), "{text}");
    // Held only that long: a canary over the level alone for a further `for` is rolled back.
    let alone = ticks_at(&mut run, 8, 0.055, 0.04, 10.0);
    assert!(alone.last().unwrap().rollback, "{:?}", healths(&alone));
    // A canary clearly worse during the dip is not held at all.
    let mut run = Run::no_warmup(threshold_policy());
    ticks_at(&mut run, 6, 0.10, 0.10, 10.0);
    let worse = ticks_at(&mut run, 8, 0.15, 0.04, 10.0);
    assert_eq!(status(&worse[0], "errors").breach, Breach::Critical);
    assert!(worse.last().unwrap().rollback);
}

/// Per-10 s factors of one pod's error rate, mean 1 and spread like a gamma of shape 2 (a
/// coefficient of variation of 0.7: retries, a slow node, GC pauses), from a fixed xorshift so
/// the test is deterministic.
fn bursts(n: usize) -> Vec<f64> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| (0..2).map(|_| -(1.0 - uniform()).ln()).sum::<f64>() / 2.0)
        .collect()
}

/// Polls of the policy's 1-minute window sliding by 10 s over a canary whose error ratio is
/// `canary` times each slice's factor, against a stable steady at `stable` (10 and 90 req/s).
fn bursty_ticks(run: &mut Run, canary: f64, stable: f64, factors: &[f64]) -> Vec<Verdict> {
    (0..factors.len())
        .map(|i| {
            let window = &factors[i.saturating_sub(5)..=i];
            let mean = window.iter().sum::<f64>() / window.len() as f64;
            ticks_at(run, 1, (canary * mean).min(1.0), stable, 10.0).remove(0)
        })
        .collect()
}

#[test]
fn an_overdispersed_shared_incident_on_a_single_pod_canary_is_held() {
    // Both tracks around 10% for an hour (the canary 1.1x, within the margin); the canary is
    // one pod whose rate moves from slice to slice, so its minute's counts vary several times
    // as much as binomial counts. Read as binomial, dozens of polls show the canary "worse"
    // than the stable (p <= 0.05); read with the dispersion the polls so far show, none does,
    // and nothing is rolled back.
    let mut run = Run::no_warmup(threshold_policy());
    let vs = bursty_ticks(&mut run, 0.11, 0.10, &bursts(360));
    assert!(vs.iter().all(|v| !v.rollback), "{:?}", healths(&vs));
    let causes: Vec<_> = vs
        .iter()
        .filter_map(|v| match &status(v, "errors").reading {
            Reading::Shared(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let binomial_worse = causes.iter().filter(|c| {
        let p = backout::decision::shared::worse_p_value(
            c.canary_events,
            c.stable_events,
            c.canary_requests,
            c.stable_requests,
            c.margin,
        );
        c.dispersion > 1.5 && !c.pending_power && p.is_some_and(|p| p <= 0.05)
    });
    assert!(binomial_worse.count() >= 10, "{causes:?}");
    let text = vs.last().unwrap().reasons[0].to_string();
    assert!(text.contains("as variable as binomial"), "{text}");
}

#[test]
fn a_canary_three_times_worse_with_the_same_overdispersion_is_still_rolled_back() {
    // The same bursts, the canary at 30% against the stable's 10%: the dispersion widens the
    // test, not enough to hide a canary three times worse.
    let mut run = Run::no_warmup(threshold_policy());
    let vs = bursty_ticks(&mut run, 0.30, 0.10, &bursts(120));
    let fired = vs.iter().position(|v| v.rollback).expect("a rollback");
    assert!(fired <= 12, "fired at poll {fired}: {:?}", healths(&vs));
}

/// Six healthy minutes at 0.5% on both tracks (the stable's earlier rate, which a rise is
/// measured against), then `n` polls at the given error ratios: [`ticks_at`] throughout.
fn after_healthy_minutes(
    policy: Policy,
    n: usize,
    canary: f64,
    stable: f64,
    rps: f64,
) -> Vec<Verdict> {
    let mut run = Run::no_warmup(policy);
    ticks_at(&mut run, 36, 0.005, 0.005, rps);
    ticks_at(&mut run, n, canary, stable, rps)
}

#[test]
fn a_stable_risen_far_above_its_own_rate_explains_a_breach_it_does_not_reach() {
    // Six healthy minutes at 0.5% on both tracks, then a dependency fails at the level: both
    // tracks' true rate near 5%, the stable's value 4% (4.8% with the margin, under the level)
    // and the canary's noisier one 5.5%, for ten minutes. The stable's rate is 8x its own: a
    // shared cause, and the counts do not show the canary worse than it: held, never rolled
    // back, and the reason says why.
    let incident = after_healthy_minutes(threshold_policy(), 60, 0.055, 0.04, 10.0);
    assert!(
        incident.iter().all(|v| !v.rollback),
        "{:?}",
        healths(&incident)
    );
    assert!(
        incident.iter().all(|v| v.health == Health::Shared),
        "{:?}",
        healths(&incident)
    );
    let Reading::Shared(cause) = &status(&incident[59], "errors").reading else {
        panic!("{:?}", incident[59].metrics);
    };
    assert!(cause.stable_rise.is_some_and(|r| r > 7.0), "{cause:?}");
    let text = incident[59].reasons[0].to_string();
    assert!(
        text.contains("rose 8.0x over its own earlier rate"),
        "{text}"
    );
    // The same rise with a canary clearly worse than the stable (15% against 4%): rolled back
    // after `for`, as before.
    let worse = after_healthy_minutes(threshold_policy(), 8, 0.15, 0.04, 10.0);
    assert_eq!(status(&worse[0], "errors").breach, Breach::Critical);
    assert_eq!(worse.iter().position(|v| v.rollback), Some(6));
}

#[test]
fn a_stable_steady_near_the_level_is_no_shared_cause() {
    // The same values with no rise behind them: the stable's usual rate is 4% and the canary
    // reads 5.5%, over the level. Nothing both tracks share moved, so the level is judged as
    // written: rolled back after `for`.
    let mut run = Run::no_warmup(threshold_policy());
    let vs = ticks_at(&mut run, 36, 0.055, 0.04, 10.0);
    assert!(
        vs.iter().all(|v| v.health != Health::Shared),
        "{:?}",
        healths(&vs)
    );
    assert_eq!(vs.iter().position(|v| v.rollback), Some(6));
}

#[test]
fn a_difference_level_without_power_is_held_while_the_stable_has_risen() {
    // A trickle (0.2 and 1.8 req/s) and Kailash Kaizen's 1-point rule. Six healthy minutes at
    // 0.5%, then a dependency fails: the stable at 10% (20x its own rate), the canary 1.5
    // points over it. A minute of 12 canary requests cannot show a canary even twice the
    // margin worse, and the stable's rise is a shared cause's evidence: held pending power.
    let incident = after_healthy_minutes(difference_policy(), 12, 0.115, 0.10, 0.2);
    assert!(
        incident.iter().all(|v| !v.rollback),
        "{:?}",
        healths(&incident)
    );
    let Reading::Shared(cause) = &status(&incident[11], "errors").reading else {
        panic!("{:?}", incident[11].metrics);
    };
    assert!(cause.pending_power, "{cause:?}");
    assert!(cause.stable_rise.is_some_and(|r| r > 10.0), "{cause:?}");
    // The same readings with no rise behind them (both tracks at 10% from the start): the
    // counts prove nothing either way and nothing shared moved, so the level stands.
    let mut run = Run::no_warmup(difference_policy());
    let steady = ticks_at(&mut run, 12, 0.115, 0.10, 0.2);
    assert!(steady.iter().any(|v| v.rollback), "{:?}", healths(&steady));
    // During the rise, a canary far worse than the stable (40% against 10%) is rolled back.
    let worse = after_healthy_minutes(difference_policy(), 12, 0.40, 0.10, 0.2);
    assert!(worse.iter().any(|v| v.rollback), "{:?}", healths(&worse));
}
