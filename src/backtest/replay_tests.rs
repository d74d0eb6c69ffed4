use super::*;
use crate::backtest::schedule::Mode;
use crate::decision::{Missing, Reading};
use crate::policy::{Level, MetricSpec, NoData};
use crate::sample::Track;
use std::time::Duration;

const FROM: Millis = 1_714_557_600_000;
const STEP: Millis = 10_000;
const MIN: Millis = 60_000;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A range answer with a point every 10 s from an hour before `FROM` to an hour after, where
/// `f` gives one (`None`: no point).
fn series(pairs: &[(&str, &str)], f: impl Fn(Millis) -> Option<f64>) -> RangeSeries {
    let samples = (0..=720)
        .map(|k| FROM - 60 * MIN + k * STEP)
        .filter_map(|t| f(t).map(|v| Sample::value(t, v)))
        .collect();
    RangeSeries {
        labels: labels(pairs),
        samples,
    }
}

fn threshold_policy() -> Policy {
    Policy::test().with_metric(
        MetricSpec::test("errors")
            .critical(Level::above(0.05))
            .for_(Duration::from_secs(60)),
    )
}

fn schedule(policy: &Policy, mode: Mode) -> Schedule {
    Schedule::new(policy, FROM, FROM + 30 * MIN, None, mode).unwrap()
}

/// Per-track threshold history: the canary's ratio is 0.2 from `onset` on (if any).
fn threshold_history(
    policy: &Policy,
    onset: Option<Millis>,
    gap: Option<(Millis, Millis)>,
) -> History {
    let q = queries(policy);
    assert_eq!(q.len(), 2, "{q:?}");
    let mut h = History::new();
    h.insert(
        &q[0],
        vec![series(&[], |t| {
            if gap.is_some_and(|(a, b)| (a..b).contains(&t)) {
                return None;
            }
            Some(if onset.is_some_and(|o| t >= o) {
                0.2
            } else {
                0.01
            })
        })],
    );
    h.insert(&q[1], vec![series(&[], |_| Some(0.01))]);
    h
}

#[test]
fn a_threshold_breach_fires_after_for_from_its_onset_and_not_before() {
    let p = threshold_policy();
    let onset = FROM + 5 * MIN;
    let r = replay(
        &p,
        &schedule(&p, Mode::Canary),
        &threshold_history(&p, Some(onset), None),
    )
    .unwrap();
    assert_eq!(r.polls, 181);
    let rb = r.rollback.as_ref().expect("a rollback");
    assert_eq!(
        rb.at,
        onset + MIN,
        "critical for 1m from the first bad poll"
    );
    assert_eq!(rb.after_ms, 6 * MIN);
    assert_eq!(rb.reasons[0].metric, "errors");
    let healths: Vec<(u64, Health)> = r
        .changes
        .iter()
        .map(|c| (c.poll, c.verdict.health))
        .collect();
    assert_eq!(healths, [(0, Health::Healthy), (36, Health::Critical)]);
    assert!(r.last.as_ref().is_some_and(|v| v.rollback));
}

#[test]
fn a_healthy_history_never_rolls_back() {
    let p = threshold_policy();
    let r = replay(
        &p,
        &schedule(&p, Mode::Canary),
        &threshold_history(&p, None, None),
    )
    .unwrap();
    assert!(r.rollback.is_none());
    assert_eq!(r.changes.len(), 1);
    assert_eq!(r.changes[0].verdict.health, Health::Healthy);
}

#[test]
fn a_missing_point_is_an_empty_answer_and_holds() {
    let p = threshold_policy();
    // The canary is bad all along. Warm-up ends at +1m, so critical would fire at +2m
    // (`for` = 1m counted from the end of warm-up), but its points are missing from +1m30s to
    // +2m: those polls are inconclusive, which restarts `for`, so it fires at +3m.
    let gap = (FROM + 90_000, FROM + 2 * MIN);
    let h = threshold_history(&p, Some(FROM - 60 * MIN), Some(gap));
    let r = replay(&p, &schedule(&p, Mode::Canary), &h).unwrap();
    assert_eq!(r.rollback.as_ref().map(|r| r.after_ms), Some(3 * MIN));
    let without_gap = threshold_history(&p, Some(FROM - 60 * MIN), None);
    let r = replay(&p, &schedule(&p, Mode::Canary), &without_gap).unwrap();
    assert_eq!(r.rollback.as_ref().map(|r| r.after_ms), Some(2 * MIN));
    // A healthy canary with a gap: inconclusive during the gap, healthy again after it.
    let hold = threshold_policy();
    let late_gap = (FROM + 10 * MIN, FROM + 10 * MIN + 30_000);
    let r = replay(
        &hold,
        &schedule(&hold, Mode::Canary),
        &threshold_history(&hold, None, Some(late_gap)),
    )
    .unwrap();
    let gap_change = r
        .changes
        .iter()
        .find(|c| c.verdict.health == Health::Inconclusive)
        .expect("the gap is inconclusive");
    assert_eq!(gap_change.verdict.at, late_gap.0);
    assert!(matches!(
        gap_change.verdict.metrics[0].reading,
        Reading::Missing {
            track: Track::Canary,
            why: Missing::Absent
        }
    ));
    assert!(r.rollback.is_none());
    assert_eq!(r.last.as_ref().map(|v| v.health), Some(Health::Healthy));
    let fail = Policy::test().with_metric(
        MetricSpec::test("errors")
            .critical(Level::above(0.05))
            .no_data(NoData::Fail),
    );
    let r = replay(
        &fail,
        &schedule(&fail, Mode::Canary),
        &threshold_history(&fail, None, Some(late_gap)),
    )
    .unwrap();
    assert_eq!(r.rollback.map(|r| r.at), Some(late_gap.0));
}

#[test]
fn a_batched_query_is_fetched_once_and_split_like_the_daemon_does() {
    let p = Policy::test().with_metric(
        MetricSpec::test("errors")
            .query("sum by (service, track) (rate(errors_total[1m]))")
            .critical(Level::above(0.05)),
    );
    let q = queries(&p);
    assert_eq!(q.len(), 1, "both tracks share one query: {q:?}");
    let onset = FROM + 4 * MIN;
    let mut h = History::new();
    h.insert(
        &q[0],
        vec![
            series(&[("service", "web"), ("track", "canary")], |t| {
                Some(if t >= onset { 0.3 } else { 0.0 })
            }),
            series(&[("service", "web"), ("track", "stable")], |_| Some(0.0)),
            // Another service sharing the query is bad all along: it must not leak into `web`.
            series(&[("service", "api"), ("track", "canary")], |_| Some(0.9)),
        ],
    );
    let r = replay(&p, &schedule(&p, Mode::Canary), &h).unwrap();
    assert_eq!(r.rollback.map(|r| r.at), Some(onset));
    assert_eq!(r.changes[0].verdict.health, Health::Healthy);
}

#[test]
fn a_query_without_history_reads_as_absent() {
    let p = threshold_policy();
    let r = replay(&p, &schedule(&p, Mode::Canary), &History::new()).unwrap();
    assert!(r.rollback.is_none());
    assert_eq!(r.changes.len(), 2);
    let v = &r.changes[0].verdict;
    assert_eq!(v.health, Health::Inconclusive);
    assert!(matches!(
        v.metrics[0].reading,
        Reading::Missing {
            why: Missing::Absent,
            ..
        }
    ));
    // Inconclusive for no_data_deadline (10 m) makes the service stuck: that is a change too.
    let stuck = &r.changes[1].verdict;
    assert!(stuck.stuck && stuck.health == Health::Inconclusive);
    assert_eq!(stuck.at, FROM + 10 * MIN);
}

#[test]
fn bake_judges_the_stable_alone() {
    let p = threshold_policy();
    let q = queries(&p);
    let onset = FROM + 3 * MIN;
    let mut h = History::new();
    h.insert(&q[0], vec![series(&[], |_| Some(0.01))]);
    h.insert(
        &q[1],
        vec![series(&[], |t| Some(if t >= onset { 0.2 } else { 0.01 }))],
    );
    let canary = replay(&p, &schedule(&p, Mode::Canary), &h).unwrap();
    assert!(canary.rollback.is_none());
    let bake = replay(&p, &schedule(&p, Mode::Bake), &h).unwrap();
    assert_eq!(bake.rollback.map(|r| r.at), Some(onset + MIN));
}

/// Cumulative counters: `rps` requests per second, `ratio` of them errors, the canary's ratio
/// jumping to `bad` at `onset`.
fn counter_history(policy: &Policy, onset: Option<Millis>) -> History {
    let q = queries(policy);
    assert_eq!(q.len(), 4, "{q:?}");
    let counter = |rps: f64, ratio: f64, bad: f64, errors: bool| {
        move |t: Millis| {
            let secs = (t - (FROM - 60 * MIN)) as f64 / 1000.0;
            let (before, after) = match onset {
                Some(o) if t > o => (
                    (o - (FROM - 60 * MIN)) as f64 / 1000.0,
                    (t - o) as f64 / 1000.0,
                ),
                _ => (secs, 0.0),
            };
            Some(if errors {
                rps * (before * ratio + after * bad)
            } else {
                rps * secs
            })
        }
    };
    let mut h = History::new();
    h.insert(&q[0], vec![series(&[], counter(10.0, 0.005, 0.2, true))]);
    h.insert(&q[1], vec![series(&[], counter(10.0, 0.005, 0.2, false))]);
    h.insert(&q[2], vec![series(&[], counter(90.0, 0.005, 0.005, true))]);
    h.insert(&q[3], vec![series(&[], counter(90.0, 0.005, 0.005, false))]);
    h
}

#[test]
fn a_sequential_test_on_counters_fires_soon_after_the_onset() {
    let p = Policy::test().with_metric(MetricSpec::test("errors").sequential(
        "errors_total{service=\"{{service}}\",track=\"{{track}}\"}",
        "requests_total{service=\"{{service}}\",track=\"{{track}}\"}",
    ));
    let healthy = replay(&p, &schedule(&p, Mode::Canary), &counter_history(&p, None)).unwrap();
    assert!(healthy.rollback.is_none(), "{:?}", healthy.rollback);
    assert_eq!(healthy.last.map(|v| v.health), Some(Health::Healthy));

    let onset = FROM + 10 * MIN;
    let r = replay(
        &p,
        &schedule(&p, Mode::Canary),
        &counter_history(&p, Some(onset)),
    )
    .unwrap();
    let at = r.rollback.as_ref().map(|r| r.at).expect("a rollback");
    assert!(
        at > onset && at <= onset + 2 * MIN,
        "fired {} s after the onset",
        (at - onset) / 1000
    );
    assert!(r
        .changes
        .iter()
        .filter(|c| c.verdict.at <= onset)
        .all(|c| c.verdict.health < Health::Warning));
}

#[test]
fn chunks_of_one_answer_merge_in_time_order() {
    let mut h = History::new();
    let a = series(&[("track", "canary")], |t| (t >= FROM).then_some(1.0));
    let b = series(&[("track", "canary")], |t| (t < FROM).then_some(2.0));
    h.insert("q", vec![a]);
    h.insert("q", vec![b]);
    let got = h.get("q").unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples.len(), 721);
    assert!(got[0].samples.windows(2).all(|w| w[0].at < w[1].at));
}
