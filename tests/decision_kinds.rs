//! The statistical metric kinds as the engine runs them: counters polled like Prometheus
//! returns them, through `Engine::observe_input`, with warm-up, resets and missing data.

mod common;

use backout::decision::{Engine, Health, Phase, Reading, Verdict};
use backout::policy::{Input, MetricSpec, Policy};
use backout::sample::{Millis, Observation, Sample, Track};
use backout::stats::sequential::Outcome;
use common::{secs, SEC};

const POLL: Millis = 10 * SEC;

fn input(kind: &str) -> Input {
    let metric = "errors".to_string();
    match kind {
        "events" => Input::Events { metric },
        _ => Input::Total { metric },
    }
}

/// A canary and a stable serving `rps` in total (10% canary) with the given error ratios per
/// poll; counters as cumulative sums, like `sum(http_requests_total{...})`.
struct Counters {
    engine: Engine,
    now: Millis,
    phase: Phase,
    totals: [f64; 2],
    events: [f64; 2],
    /// Fractional events carried to the next poll so counts stay whole.
    carry: [f64; 2],
}

impl Counters {
    fn new(policy: &Policy) -> Self {
        Counters {
            engine: Engine::new(policy, "rev-2"),
            now: 0,
            phase: Phase::Canary { started_at: 0 },
            // The stable has history; the canary starts from zero.
            totals: [0.0, 5_000_000.0],
            events: [0.0, 25_000.0],
            carry: [0.0; 2],
        }
    }

    fn poll(&mut self, rps: f64, ratio: [f64; 2]) -> Verdict {
        let obs = [
            Some((self.events[0], self.totals[0])),
            Some((self.events[1], self.totals[1])),
        ];
        self.poll_raw(obs, rps, ratio)
    }

    /// `obs[track]` is what Prometheus returns this poll (None: empty result for both
    /// counters); counters advance afterwards.
    fn poll_raw(&mut self, obs: [Option<(f64, f64)>; 2], rps: f64, ratio: [f64; 2]) -> Verdict {
        for (i, track) in [Track::Canary, Track::Stable].into_iter().enumerate() {
            let (e, t) = match obs[i] {
                Some((e, t)) => (Observation::Value(e), Observation::Value(t)),
                None => (Observation::Absent, Observation::Absent),
            };
            // Error series appear with the first error, as in Prometheus.
            let e = if matches!(e, Observation::Value(v) if v == 0.0) {
                Observation::Absent
            } else {
                e
            };
            self.engine
                .observe_input(&input("events"), track, Sample::new(self.now, e))
                .expect("in policy");
            self.engine
                .observe_input(&input("total"), track, Sample::new(self.now, t))
                .expect("in policy");
        }
        let v = self.engine.evaluate(self.now, self.phase);
        let share = [0.1, 0.9];
        for i in 0..2 {
            let reqs = rps * share[i] * (POLL / SEC) as f64;
            self.totals[i] += reqs;
            let e = reqs * ratio[i] + self.carry[i];
            self.events[i] += e.floor();
            self.carry[i] = e - e.floor();
        }
        self.now += POLL;
        v
    }
}

fn sequential_policy(warmup: u64) -> Policy {
    Policy::test()
        .with_interval(secs(10))
        .with_warmup(secs(warmup))
        .with_metric(MetricSpec::test("errors").sequential(
            "sum(errors_total{track=\"{{track}}\"})",
            "sum(requests_total{track=\"{{track}}\"})",
        ))
}

fn bayes_factor(v: &Verdict) -> (f64, Outcome) {
    match &v.metrics[0].reading {
        Reading::Test {
            statistic,
            value,
            outcome,
            ..
        } => {
            assert_eq!(statistic, "bayes_factor");
            (*value, *outcome)
        }
        other => panic!("expected a test reading, got {other:?}"),
    }
}

#[test]
fn a_canary_as_good_as_the_stable_is_never_rolled_back_and_eventually_passes() {
    let mut run = Counters::new(&sequential_policy(60));
    let mut last = None;
    for _ in 0..360 {
        let v = run.poll(50.0, [0.005, 0.005]);
        assert!(!v.rollback, "rolled back a healthy canary at {}", v.at);
        last = Some(v);
    }
    let (bf, outcome) = bayes_factor(&last.expect("polled"));
    assert!(bf < 1.0, "bayes factor {bf}");
    assert_eq!(outcome, Outcome::Pass);
}

#[test]
fn a_hard_failure_is_rolled_back_on_the_first_polls_after_warm_up() {
    let mut run = Counters::new(&sequential_policy(30));
    let fired = (0..60)
        .map(|_| run.poll(20.0, [0.10, 0.005]))
        .find(|v| v.rollback)
        .expect("rolled back");
    assert!(
        fired.at > 30 * SEC && fired.at <= 60 * SEC,
        "at {}",
        fired.at
    );
    let (bf, _) = bayes_factor(&fired);
    assert!(bf >= 100.0);
    assert_eq!(fired.reasons[0].metric, "errors");
}

#[test]
fn a_start_up_spike_inside_warm_up_is_not_counted() {
    let mut run = Counters::new(&sequential_policy(60));
    for _ in 0..6 {
        // 5x worse for the first minute, at 2 canary requests/s.
        let v = run.poll(20.0, [0.025, 0.005]);
        // Not judged yet: ignored, so the service is not held up either.
        assert_eq!(v.metrics[0].health, Health::Ignored, "{v:?}");
        assert!(matches!(v.metrics[0].reading, Reading::Test { .. }));
    }
    for _ in 0..300 {
        assert!(!run.poll(20.0, [0.005, 0.005]).rollback);
    }
}

#[test]
fn a_canary_failing_hard_from_its_first_second_is_not_served_for_the_whole_warm_up() {
    let mut run = Counters::new(&sequential_policy(60));
    let fired = (0..12)
        .map(|_| run.poll(100.0, [0.10, 0.005]))
        .find(|v| v.rollback)
        .expect("rolled back");
    assert!(fired.at < 60 * SEC, "only after warm-up, at {}", fired.at);
    let (bf, _) = bayes_factor(&fired);
    assert!(
        bf >= 10_000.0,
        "during warm-up only overwhelming evidence counts: {bf}"
    );
}

#[test]
fn a_stable_restart_loses_an_interval_but_invents_nothing() {
    let mut run = Counters::new(&sequential_policy(0));
    for i in 0..200 {
        if i == 100 {
            // Every stable pod restarted: the sums fall to almost nothing.
            run.totals[1] = 50.0;
            run.events[1] = 0.0;
        }
        assert!(!run.poll(50.0, [0.005, 0.005]).rollback, "poll {i}");
    }
}

#[test]
fn an_absent_stable_error_series_holds_instead_of_reading_as_zero() {
    let mut run = Counters::new(&sequential_policy(0));
    run.events[1] = 0.0;
    for _ in 0..60 {
        // The stable never errs, so its error series never exists; the canary errs a lot.
        let v = run.poll(50.0, [0.05, 0.0]);
        assert!(!v.rollback);
        assert_eq!(v.metrics[0].health, Health::Inconclusive);
    }
}

#[test]
fn an_absent_canary_error_series_is_zero_errors() {
    let mut run = Counters::new(&sequential_policy(0));
    let mut last = None;
    for _ in 0..360 {
        last = Some(run.poll(50.0, [0.0, 0.005]));
    }
    let v = last.expect("polled");
    assert_eq!(bayes_factor(&v).1, Outcome::Pass, "{:?}", v.metrics[0]);
}

#[test]
fn a_canary_target_down_holds_and_resumes_without_a_rollback() {
    let mut run = Counters::new(&sequential_policy(0));
    for i in 0..120 {
        let down = (30..60).contains(&i);
        let obs = [
            (!down).then_some((run.events[0], run.totals[0])),
            Some((run.events[1], run.totals[1])),
        ];
        let v = run.poll_raw(obs, 50.0, [0.005, 0.005]);
        assert!(!v.rollback);
        if down && i > 32 {
            assert_eq!(v.metrics[0].health, Health::Inconclusive, "poll {i}");
        }
    }
}

#[test]
fn the_sequential_test_sits_out_the_bake_window() {
    let mut run = Counters::new(&sequential_policy(0));
    run.phase = Phase::Bake { promoted_at: 0 };
    let v = run.poll(50.0, [0.5, 0.5]);
    assert_eq!(v.metrics[0].health, Health::Ignored);
    assert!(!v.rollback);
}

fn burn_policy() -> Policy {
    Policy::test()
        .with_interval(secs(10))
        .with_warmup(secs(0))
        .with_metric(
            MetricSpec::test("slo")
                .query("sum(rate(errors[{{window}}])) / sum(rate(requests[{{window}}]))")
                .burn_rate(0.999),
        )
}

fn ratio(metric: &str, w: u64) -> Input {
    Input::Ratio {
        metric: metric.into(),
        window: secs(w),
    }
}

fn burn_poll(engine: &mut Engine, now: Millis, ratios: &[(u64, Option<f64>)]) -> Verdict {
    for (w, r) in ratios {
        let obs = r.map_or(Observation::Absent, Observation::Value);
        engine
            .observe_input(&ratio("slo", *w), Track::Stable, Sample::new(now, obs))
            .expect("window in policy");
    }
    engine.evaluate(now, Phase::Bake { promoted_at: 0 })
}

#[test]
fn burn_rate_rolls_back_the_stable_only_when_long_and_short_windows_both_burn() {
    let mut engine = Engine::new(&burn_policy(), "rev-2");
    // 2% errors = 20x budget over 5 minutes, but only 0.5% (5x) over the hour: no page.
    let v = burn_poll(
        &mut engine,
        0,
        &[
            (300, Some(0.02)),
            (1800, Some(0.005)),
            (3600, Some(0.005)),
            (21600, Some(0.001)),
        ],
    );
    assert!(!v.rollback);
    assert_eq!(v.metrics[0].health, Health::Healthy);
    // Both 1 h and 5 m above 14.4x: fire.
    let v = burn_poll(
        &mut engine,
        POLL,
        &[
            (300, Some(0.02)),
            (1800, Some(0.005)),
            (3600, Some(0.016)),
            (21600, Some(0.003)),
        ],
    );
    assert!(v.rollback, "{:?}", v.metrics[0]);
    match &v.reasons[0].reading {
        Reading::Test {
            statistic,
            value,
            fail_at,
            ..
        } => {
            assert_eq!(statistic, "burn_rate");
            assert!((*value - 16.0).abs() < 1e-6, "{value}");
            assert_eq!(*fail_at, 14.4);
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn burn_rate_with_no_data_holds() {
    let mut engine = Engine::new(&burn_policy(), "rev-2");
    let v = burn_poll(
        &mut engine,
        0,
        &[(300, None), (1800, None), (3600, None), (21600, None)],
    );
    assert_eq!(v.metrics[0].health, Health::Inconclusive);
    assert!(!v.rollback);
}

fn mw_policy() -> Policy {
    Policy::test()
        .with_interval(secs(10))
        .with_warmup(secs(0))
        .with_metric(MetricSpec::test("p99").mann_whitney(secs(300)))
}

fn mw_run(canary: impl Fn(usize) -> f64, stable: impl Fn(usize) -> f64, polls: usize) -> Verdict {
    let mut engine = Engine::new(&mw_policy(), "rev-2");
    let mut last = None;
    for i in 0..polls {
        let now = i as Millis * POLL;
        for (track, v) in [(Track::Canary, canary(i)), (Track::Stable, stable(i))] {
            engine
                .observe_input(
                    &Input::Value {
                        metric: "p99".into(),
                    },
                    track,
                    Sample::value(now, v),
                )
                .expect("in policy");
        }
        last = Some(engine.evaluate(now, Phase::Canary { started_at: 0 }));
    }
    last.expect("polled")
}

/// Deterministic jitter in [0, 1).
fn jitter(i: usize) -> f64 {
    ((i * 7919) % 101) as f64 / 101.0
}

#[test]
fn mann_whitney_rolls_back_a_clearly_slower_canary() {
    let v = mw_run(
        |i| 0.40 + 0.05 * jitter(i),
        |i| 0.20 + 0.05 * jitter(i + 3),
        30,
    );
    assert!(v.rollback, "{:?}", v.metrics[0]);
}

#[test]
fn mann_whitney_leaves_an_equal_canary_alone() {
    let v = mw_run(
        |i| 0.20 + 0.05 * jitter(i),
        |i| 0.20 + 0.05 * jitter(i + 3),
        60,
    );
    assert!(!v.rollback, "{:?}", v.metrics[0]);
}

#[test]
fn mann_whitney_fails_sparse_errors_against_an_all_zero_stable() {
    // What Kayenta passes: a canary that errs now and then, a stable that never does.
    let v = mw_run(|i| if i % 3 == 0 { 0.05 } else { 0.0 }, |_| 0.0, 30);
    assert!(v.rollback, "{:?}", v.metrics[0]);
}

#[test]
fn waiting_for_evidence_at_low_traffic_is_not_stuck() {
    let mut run = Counters::new(&sequential_policy(0));
    let mut last = None;
    // 1 req/s in total: 0.1 canary req/s, far from the 1000 requests a pass needs.
    for _ in 0..120 {
        last = Some(run.poll(1.0, [0.005, 0.005]));
    }
    let v = last.expect("polled");
    assert_eq!(v.health, Health::Inconclusive);
    assert!(!v.stuck, "20 minutes of low traffic flagged as stuck");
}

fn detecting_policy(horizon: u64) -> Policy {
    let mut m = MetricSpec::test("errors").sequential(
        "sum(errors_total{track=\"{{track}}\"})",
        "sum(requests_total{track=\"{{track}}\"})",
    );
    if let Some(s) = m.sequential.as_mut() {
        s.horizon = Some(secs(horizon));
    }
    Policy::test()
        .with_interval(secs(10))
        .with_warmup(secs(60))
        .with_metric(m)
}

/// Seconds from the onset to the rollback of a canary that is healthy for `healthy_polls` polls
/// and then serves 5% errors against the stable's 0.5%.
fn late_regression_delay(policy: &Policy, healthy_polls: usize) -> Option<i64> {
    let mut run = Counters::new(policy);
    for _ in 0..healthy_polls {
        let v = run.poll(20.0, [0.005, 0.005]);
        assert!(!v.rollback, "rolled back while healthy at {}", v.at);
    }
    let onset = run.now;
    (0..360)
        .map(|_| run.poll(20.0, [0.05, 0.005]))
        .find(|v| v.rollback)
        .map(|v| (v.at - onset) / SEC)
}

#[test]
fn a_regression_hours_into_a_long_canary_is_caught_as_fast_as_one_at_its_start() {
    let day = 86_400;
    let six_hours = 6 * 360;
    let detected =
        late_regression_delay(&detecting_policy(day), six_hours).expect("caught by the detector");
    let diluted =
        late_regression_delay(&detecting_policy(0), six_hours).expect("caught without detector");
    let fresh = late_regression_delay(&detecting_policy(day), 30).expect("caught early");
    let twenty_hours =
        late_regression_delay(&detecting_policy(day), 20 * 360).expect("caught 20 h in");
    eprintln!("start {fresh} s, 6 h {detected} s, 20 h {twenty_hours} s, undetected {diluted} s");
    assert!(
        detected <= 2 * fresh + 60 && twenty_hours <= detected + 30,
        "detector {detected} s / {twenty_hours} s after the onset, {fresh} s at the start"
    );
    assert!(
        diluted > 2 * detected,
        "the detector should beat dilution: {detected} s vs {diluted} s without"
    );
}

#[test]
fn a_passed_canary_stays_passed() {
    let mut run = Counters::new(&sequential_policy(60));
    let mut passed_at = None;
    for _ in 0..1080 {
        let v = run.poll(50.0, [0.005, 0.005]);
        let (_, outcome) = bayes_factor(&v);
        match (passed_at, outcome) {
            (None, Outcome::Pass) => passed_at = Some(v.at),
            (Some(at), o) => assert_eq!(o, Outcome::Pass, "passed at {at}, {o:?} at {}", v.at),
            _ => {}
        }
    }
    assert!(passed_at.is_some(), "never passed");
}
