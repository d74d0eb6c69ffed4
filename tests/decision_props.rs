//! Properties of the engine over arbitrary poll sequences.

mod common;

use backout::decision::{Alert, Breach, Health, Verdict};
use backout::policy::{Level, MetricSpec, NoData, Policy};
use backout::sample::{Observation, Track};
use common::*;
use proptest::prelude::*;

/// One poll of the canary: a value, a kind of missing data, or no poll at all.
fn poll() -> impl Strategy<Value = Option<Observation>> {
    prop_oneof![
        6 => (0.0f64..0.1).prop_map(|x| Some(Observation::Value(x))),
        2 => Just(Some(Observation::Value(0.05))),
        1 => Just(Some(Observation::Absent)),
        1 => Just(Some(Observation::Error("timeout".into()))),
        1 => Just(Some(Observation::NotFinite(f64::NAN))),
        1 => Just(None),
    ]
}

fn missing_poll() -> impl Strategy<Value = Option<Observation>> {
    prop_oneof![
        Just(Some(Observation::Absent)),
        Just(Some(Observation::Error("connection refused".into()))),
        Just(Some(Observation::NotFinite(f64::INFINITY))),
        Just(None),
    ]
}

fn policy(for_s: u64, clear_s: u64, warmup_s: u64, no_data: NoData) -> Policy {
    Policy::test().with_warmup(secs(warmup_s)).with_metric(
        MetricSpec::test("errors")
            .warning(Level::above(0.02))
            .critical(Level::above(0.05))
            .for_(secs(for_s))
            .clear_for(secs(clear_s))
            .no_data(no_data),
    )
}

fn drive(policy: Policy, polls: &[Option<Observation>]) -> Vec<Verdict> {
    let mut run = Run::new(policy);
    polls
        .iter()
        .map(|p| match p {
            Some(obs) => run.tick(obs.clone()),
            None => run.tick_with(&[]),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Critical fires only after `for` worth of consecutive critical evaluations, and never
    /// during warm-up.
    #[test]
    fn never_critical_without_for_of_consecutive_breaches(
        polls in prop::collection::vec(poll(), 1..80),
        for_i in 0u64..6,
        warmup_i in 0u64..4,
    ) {
        let for_ms = (for_i * 10) as i64 * SEC;
        let warmup_ms = (warmup_i * 10) as i64 * SEC;
        let vs = drive(policy(for_i * 10, 0, warmup_i * 10, NoData::Hold), &polls);
        for v in &vs {
            let s = status(v, "errors");
            if let Alert::Firing { fired_at, .. } = s.critical {
                prop_assert!(fired_at >= warmup_ms, "fired in warm-up at {fired_at}");
                let window_start = fired_at - for_ms;
                for earlier in vs.iter().filter(|e| e.at >= window_start && e.at <= fired_at) {
                    prop_assert_eq!(status(earlier, "errors").breach, Breach::Critical, "at {}", earlier.at);
                }
            }
        }
        // Rollback happens iff critical fired at some evaluation.
        let fired = vs.iter().any(|v| status(v, "errors").critical.is_firing());
        prop_assert_eq!(vs.last().map(|v| v.rollback).unwrap_or(false), fired);
    }

    /// A fired warning resolves only after `clear_for` of consecutive clear evaluations.
    #[test]
    fn warning_resolves_only_after_clear_for(
        polls in prop::collection::vec(poll(), 1..80),
        clear_i in 0u64..5,
    ) {
        let clear_ms = (clear_i * 10) as i64 * SEC;
        // Warning only: a critical level would latch a rollback and hide the warning's life.
        let p = Policy::test().with_warmup(secs(0)).with_metric(
            MetricSpec::test("errors").warning(Level::above(0.02)).clear_for(secs(clear_i * 10)),
        );
        let vs = drive(p, &polls);
        for pair in vs.windows(2) {
            let (before, after) = (status(&pair[0], "errors"), status(&pair[1], "errors"));
            if before.warning.is_firing() && after.warning == Alert::Inactive {
                let resolved_at = pair[1].at;
                for e in vs.iter().filter(|e| e.at >= resolved_at - clear_ms && e.at <= resolved_at) {
                    prop_assert_eq!(status(e, "errors").breach, Breach::Clear, "at {}", e.at);
                }
            }
        }
    }

    /// Same inputs, same verdicts.
    #[test]
    fn deterministic(
        polls in prop::collection::vec(poll(), 1..60),
        for_i in 0u64..4,
        clear_i in 0u64..4,
    ) {
        let p = policy(for_i * 10, clear_i * 10, 20, NoData::Hold);
        prop_assert_eq!(drive(p.clone(), &polls), drive(p, &polls));
    }

    /// Missing data alone never rolls back and never looks like a regression under `hold`.
    #[test]
    fn missing_data_never_rolls_back_under_hold(
        polls in prop::collection::vec(missing_poll(), 1..80),
        for_i in 0u64..3,
    ) {
        for v in drive(policy(for_i * 10, 0, 0, NoData::Hold), &polls) {
            prop_assert!(!v.rollback);
            prop_assert_eq!(v.health, Health::Inconclusive);
        }
    }

    /// With no metric comparing, stable polls never cause a rollback the canary's alone would
    /// not; they can only hold one as a shared cause (the stable breaching the level too).
    #[test]
    fn stable_polls_never_cause_a_rollback_of_absolute_rules(
        polls in prop::collection::vec(poll(), 1..40),
        stable in prop::collection::vec(0.0f64..10.0, 40),
    ) {
        let p = policy(20, 0, 0, NoData::Hold);
        let plain = drive(p.clone(), &polls);
        let mut run = Run::new(p);
        let with_stable: Vec<Verdict> = polls.iter().zip(&stable).map(|(c, s)| {
            let mut batch = vec![("errors", Track::Stable, Observation::Value(*s))];
            if let Some(obs) = c {
                batch.push(("errors", Track::Canary, obs.clone()));
            }
            run.tick_with(&batch)
        }).collect();
        for (p, w) in plain.iter().zip(&with_stable) {
            prop_assert!(!w.rollback || p.rollback, "at {}: a rollback caused by stable polls", w.at);
        }
        // A stable clear of the critical level (with the 1.2 margin) changes nothing.
        if stable.iter().all(|s| s * 1.2 <= 0.05) {
            let healths = |vs: &[Verdict]| vs.iter().map(|v| (v.health, v.rollback)).collect::<Vec<_>>();
            prop_assert_eq!(healths(&plain), healths(&with_stable));
        }
    }
}
