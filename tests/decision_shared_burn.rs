//! Shared-cause verdicts for SLO burn rates: a canary burning the error budget like a stable
//! that burns it too holds; a canary the counts show worse still rolls back.

mod common;

use backout::decision::{Health, Reading, Verdict};
use backout::policy::{Input, MetricSpec, Policy};
use backout::sample::{Sample, Track};
use common::*;

/// The DevOps Agent's SLO rule: a 99.9% objective with the SRE workbook's paging windows.
fn burn_policy() -> Policy {
    Policy::test().with_metric(
        MetricSpec::test("slo")
            .query(
                "sum(rate(errors{track=\"{{track}}\"}[{{window}}])) / \
                 sum(rate(requests{track=\"{{track}}\"}[{{window}}]))",
            )
            .burn_rate(0.999),
    )
}

/// `n` polls from `from_secs` after the canary started, every burn window of each track at the
/// given error ratio, the canary at 1 req/s and the stable at 9.
fn burn_ticks(run: &mut Run, from_secs: i64, n: usize, canary: f64, stable: f64) -> Vec<Verdict> {
    (0..n as i64)
        .map(|k| {
            burn_poll(
                run,
                from_secs + k * INTERVAL / SEC,
                [canary; 4],
                [stable; 4],
            )
        })
        .collect()
}

#[test]
fn a_canary_burning_the_budget_like_a_stable_that_burns_it_too_is_shared() {
    // A 99.9% SLO, both tracks at 2% errors (20x the budget: the 1 h / 5 m page fires on
    // both), the canary 30 minutes old: ~36 errors in 1,800 requests show its burn. The stable
    // loses the SLO as well and the canary is not worse than it: held, not rolled back.
    let mut run = Run::no_warmup(burn_policy());
    let vs = burn_ticks(&mut run, 1800, 3, 0.02, 0.02);
    assert!(vs.iter().all(|v| !v.rollback));
    assert_eq!(vs.last().unwrap().health, Health::Shared);
    // A stable within its budget (0.5x): a canary at 3% (30x) is its own.
    let mut run = Run::no_warmup(burn_policy());
    assert!(burn_ticks(&mut run, 1800, 1, 0.03, 0.0005)[0].rollback);
    // A canary at 20x against the stable's 4.5x is worse: rolled back.
    let mut run = Run::no_warmup(burn_policy());
    assert!(burn_ticks(&mut run, 1800, 1, 0.02, 0.0045)[0].rollback);
}

#[test]
fn a_burn_the_canarys_own_counts_do_not_show_is_inconclusive() {
    // The canary at 0.7% (7x, over the 6 h / 30 m rule's 6x) for its 30 minutes: ~13 errors
    // in 1,800 requests, where a canary at exactly 6x has ~11 (p ~ 0.3). Nothing shows a
    // burn at the rule's rate: inconclusive (neither rolled back nor promoted), and the
    // reading says why. The stable's burn plays no part: within its budget here.
    let mut run = Run::no_warmup(burn_policy());
    let v = &burn_ticks(&mut run, 1800, 1, 0.007, 0.0005)[0];
    assert!(!v.rollback, "{:?}", v.metrics);
    let slo = status(v, "slo");
    assert_eq!(slo.health, Health::Inconclusive);
    let text = slo.reading.to_string();
    assert!(
        text.contains("not shown on the canary's counts: ~13 errors in 1800 requests"),
        "{text}"
    );
    // A minute old, one error in 60 requests reads 16.7x over every window: not shown either.
    let mut run = Run::no_warmup(burn_policy());
    let v = &burn_ticks(&mut run, 60, 1, 1.0 / 60.0, 0.0005)[0];
    assert!(!v.rollback, "{:?}", v.metrics);
    assert_eq!(status(v, "slo").health, Health::Inconclusive);
    // Six hours at 0.7% (151 errors in 21,600 requests) show it: rolled back.
    let mut run = Run::no_warmup(burn_policy());
    assert!(burn_ticks(&mut run, 21_600, 1, 0.007, 0.0005)[0].rollback);
}

/// One poll `at_secs` after the canary started, each burn window (5m, 30m, 1h, 6h) of each
/// track at its own error ratio, the canary at 1 req/s and the stable at 9.
fn burn_poll(run: &mut Run, at_secs: i64, canary: [f64; 4], stable: [f64; 4]) -> Verdict {
    run.traffic = None;
    run.now = at_secs * SEC;
    for (track, rps, ratios) in [(Track::Canary, 1.0, canary), (Track::Stable, 9.0, stable)] {
        run.engine
            .observe_traffic(track, Sample::value(run.now, rps));
        for (w, ratio) in [300, 1800, 3600, 21_600].into_iter().zip(ratios) {
            let input = Input::Ratio {
                metric: "slo".into(),
                window: secs(w),
            };
            let sample = Sample::value(run.now, ratio);
            run.engine.observe_input(&input, track, sample).unwrap();
        }
    }
    run.tick_with(&[])
}

#[test]
fn a_shared_incident_is_compared_over_the_same_span_on_both_tracks() {
    // A canary 20 minutes old, a 99.9% SLO, both tracks at 0.5% until a dependency fails at 5%
    // three minutes ago. The canary's 30m, 1h and 6h ratios cover only its 20 minutes of life
    // (1.175%: 11.75x, firing the 6 h / 30 m rule), the stable's cover the whole windows
    // (0.95%, 0.725%, 0.54%); over the last 5 minutes both read 3.2%. Compared over the fired
    // rule's 6 h, the canary looks twice the stable for sharing the incident; compared over the
    // same span on both tracks (its 20 minutes: the stable's events between its 5m and 30m
    // windows, 1.175%), it is not worse: held.
    let mut run = Run::no_warmup(burn_policy());
    let v = burn_poll(
        &mut run,
        1200,
        [0.032, 0.01175, 0.01175, 0.01175],
        [0.032, 0.0095, 0.00725, 0.0054],
    );
    assert!(!v.rollback);
    let Reading::Shared(cause) = &status(&v, "slo").reading else {
        panic!("{:?}", v.metrics);
    };
    assert_eq!(cause.canary, 0.01175);
    assert!((cause.stable - 0.01175).abs() < 1e-9, "{cause:?}");
    // A canary twice the stable over the same span reads worse at this poll (28 errors against
    // the 17 a canary at the margin would have, p ~ 0.01), but one 0.05 test at every poll of a
    // day-long canary would find a canary no worse "worse" sooner or later: until its counts show
    // it anytime-valid (e-value 20), inconclusive, neither rolled back nor called shared.
    let canary = [0.064, 0.0235, 0.0235, 0.0235];
    let stable = [0.032, 0.0095, 0.00725, 0.0054];
    let mut run = Run::no_warmup(burn_policy());
    let v = burn_poll(&mut run, 1200, canary, stable);
    assert!(!v.rollback, "{:?}", v.metrics);
    let slo = status(&v, "slo");
    assert_eq!(slo.health, Health::Inconclusive);
    let text = slo.reading.to_string();
    assert!(
        text.contains("the canary reads worse at this poll"),
        "{text}"
    );
    assert!(text.contains("not shown it yet (e-value"), "{text}");
    // Twenty minutes more at twice the stable's rate show it: rolled back.
    let mut run = Run::no_warmup(burn_policy());
    assert!(burn_poll(&mut run, 2400, canary, stable).rollback);
}

#[test]
fn a_stable_paging_on_its_own_explains_a_young_canarys_burn_on_a_handful_of_requests() {
    // A canary a minute old (60 requests) at 6% against a stable at 2%: both fire the 1 h /
    // 5 m page (20x and 60x the budget of a 99.9% SLO). Three times the stable reads worse,
    // but on ~4 errors the counts cannot show it (p ~ 0.2): the SLO pages on both tracks
    // whatever the canary does, so the breach is held pending power, not rolled back.
    let mut run = Run::no_warmup(burn_policy());
    let v = burn_poll(&mut run, 60, [0.06; 4], [0.02; 4]);
    assert!(!v.rollback, "{:?}", v.metrics);
    let Reading::Shared(cause) = &status(&v, "slo").reading else {
        panic!("{:?}", v.metrics);
    };
    assert!(cause.pending_power, "{cause:?}");
    // Against a stable within its budget the same canary is rolled back at once.
    let mut run = Run::no_warmup(burn_policy());
    assert!(burn_poll(&mut run, 60, [0.06; 4], [0.0005; 4]).rollback);
    // And a canary at 20% against the paging stable's 2% is worse on the same minute's counts.
    let mut run = Run::no_warmup(burn_policy());
    assert!(burn_poll(&mut run, 60, [0.20; 4], [0.02; 4]).rollback);
}

#[test]
fn a_canary_at_the_margin_polled_for_hours_reads_worse_anytime_valid_at_most_alpha() {
    use backout::decision::shared::{worse_e_value, worse_p_value, SHARED_ALPHA};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    // 300 canaries exactly at the margin (1.2 times a stable at 2% errors), 1 req/s against
    // the stable's 9, their counts since the start compared at every one-minute poll for six
    // hours. The e-value reads "worse" in at most SHARED_ALPHA of them (Ville's inequality:
    // the guarantee behind rolling back on it); a fresh 0.05 test at every poll would find
    // several times as many "worse" canaries, and more the longer they run.
    let (margin, stable_rate, runs, polls) = (1.2, 0.02, 300, 360);
    let mut rng = StdRng::seed_from_u64(7);
    let mut bernoulli = |n: u32, p: f64| (0..n).filter(|_| rng.random::<f64>() < p).count();
    let (mut anytime, mut per_poll) = (0, 0);
    for _ in 0..runs {
        let (mut x, mut y, mut c, mut s) = (0.0, 0.0, 0.0, 0.0);
        let (mut e_crossed, mut p_crossed) = (false, false);
        for _ in 0..polls {
            x += bernoulli(60, margin * stable_rate) as f64;
            y += bernoulli(540, stable_rate) as f64;
            c += 60.0;
            s += 540.0;
            e_crossed |= worse_e_value(x, y, c, s, margin) >= 1.0 / SHARED_ALPHA;
            p_crossed |= worse_p_value(x, y, c, s, margin).is_some_and(|p| p <= SHARED_ALPHA);
        }
        anytime += usize::from(e_crossed);
        per_poll += usize::from(p_crossed);
    }
    let share = |k: usize| k as f64 / runs as f64;
    assert!(share(anytime) <= SHARED_ALPHA, "{anytime} of {runs}");
    assert!(
        share(per_poll) >= 4.0 * SHARED_ALPHA,
        "{per_poll} of {runs}"
    );
}
