//! Pipelined phases (issue 10): the run loop never waits for Prometheus. On paused tokio time
//! against the in-process simulator, with a Prometheus that answers late: every phase is still
//! judged once per interval, a phase whose fetch outlives the interval is skipped and counted, a
//! rollback in one phase is ordered while another phase's fetch hangs, a reload mid-fetch drops
//! the answers of services it removed or changed, and shutdown does not wait for a hung fetch.

#[path = "common/world.rs"]
mod world;

use backout::daemon::schedule::Slot;
use backout::daemon::{Daemon, FETCH_GRACE};
use backout::policy::model::{Level, MetricSpec};
use backout::policy::Policy;
use backout::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use world::{policy, start, start_reloadable, Slow, World};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The phase (offset in ms) of `prod/<service>` at a 10 s interval.
fn offset(service: &str) -> u64 {
    Slot::new(&format!("prod/{service}"), secs(10)).offset
}

/// `n` service names whose 10 s phase is `phase_ms`.
fn in_phase(phase_ms: u64, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("svc-{i}"))
        .filter(|s| offset(s) == phase_ms)
        .take(n)
        .collect()
}

/// One service in each of the ten phases of a 10 s interval, the phase at 0 s first.
fn one_per_phase() -> Vec<Policy> {
    (0..10)
        .map(|k| policy(&in_phase(k * 1_000, 1)[0]))
        .collect()
}

/// The value of the series `name` (with its labels, exactly as exported), 0 when absent.
fn value(metrics: &Metrics, name: &str) -> f64 {
    let text = metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Whether the service was judged at all: its state gauge is set even when it is not under
/// analysis (a runtime fresh from a reload has not seen its canary yet).
fn judged(metrics: &Metrics, service: &str) -> bool {
    let series = format!("backout_service_state{{service=\"{service}\"}} ");
    metrics.encode().lines().any(|l| l.starts_with(&series))
}

fn evaluations(metrics: &Metrics, service: &str) -> f64 {
    value(
        metrics,
        &format!("backout_evaluations_total{{service=\"{service}\"}}"),
    )
}

/// (count, sum) of the evaluation lag histogram.
fn lag(metrics: &Metrics) -> (f64, f64) {
    (
        value(metrics, "backout_evaluation_lag_seconds_count"),
        value(metrics, "backout_evaluation_lag_seconds_sum"),
    )
}

#[tokio::test(start_paused = true)]
async fn with_prometheus_taking_5s_per_phase_every_service_is_judged_once_per_interval() {
    let policies = one_per_phase();
    let w = World::new(&policies, secs(1)).await;
    let ctx = w.context_with(Arc::new(Slow::new(w.sampler.clone(), secs(5))));
    let metrics = ctx.metrics.clone();
    let (stop, task) = start(Daemon::new(ctx, policies.clone()));

    // Ten phases 1 s apart, each fetch 5 s: five fetches are always in flight. Awaiting each
    // phase would run them back to back, one service judged every 50 s, the lag growing.
    tokio::time::sleep(Duration::from_millis(30_500)).await;
    let first = lag(&metrics);
    tokio::time::sleep(secs(29)).await;
    let second = lag(&metrics);
    stop.send(true).unwrap();
    task.await.unwrap();

    for p in &policies {
        let off = offset(&p.service);
        let want: Vec<u64> = (0..6).map(|k| off + k * 10_000).collect();
        assert_eq!(w.sampler.times_of(&p.service), want, "{}", p.service);
        let judged = evaluations(&metrics, &p.service);
        assert!(
            (5.0..=6.0).contains(&judged),
            "{} judged {judged} times in 60 s",
            p.service
        );
    }
    // The lag is the fetch's 5 s, in the first half minute and in the second alike.
    for (count, sum) in [first, (second.0 - first.0, second.1 - first.1)] {
        assert!(count >= 25.0, "{count} evaluations in 30 s");
        let mean = sum / count;
        assert!((5.0..5.5).contains(&mean), "mean lag {mean} s");
    }
    // All of it is Prometheus's: the daemon's own share of the lag stays under 0.5 s.
    let own = value(&metrics, "backout_evaluation_lag_own_seconds_sum")
        / value(&metrics, "backout_evaluation_lag_own_seconds_count");
    assert!(own < 0.5, "the daemon's own lag {own} s");
    let skipped = value(&metrics, "backout_evaluations_skipped_total");
    assert_eq!(skipped, 0.0);
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_phase_whose_fetch_outlives_the_interval_is_skipped_and_counted() {
    let policies = one_per_phase();
    let (stuck, fine) = (policies[0].clone(), policies[5].clone());
    let w = World::new(&[stuck.clone(), fine.clone()], secs(1)).await;
    let slow = Arc::new(Slow::new(w.sampler.clone(), Duration::ZERO));
    slow.hang(&stuck.service, secs(15));
    let ctx = w.context_with(slow);
    let metrics = ctx.metrics.clone();
    let (stop, task) = start(Daemon::new(ctx, vec![stuck.clone(), fine.clone()]));
    tokio::time::sleep(secs(58)).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    // stuck (phase 0 s) answers after 15 s: its slots at 10, 30 and 50 s fall while a fetch of
    // its runs, and are skipped, not queued behind it.
    assert_eq!(w.sampler.times_of(&stuck.service), vec![0, 20_000, 40_000]);
    assert_eq!(
        value(&metrics, "backout_evaluations_skipped_total"),
        3.0,
        "{}",
        metrics.encode()
    );
    assert_eq!(evaluations(&metrics, &stuck.service), 3.0);
    // fine (phase 5 s) is judged at every slot regardless.
    let want: Vec<u64> = (0..6).map(|k| 5_000 + k * 10_000).collect();
    assert_eq!(w.sampler.times_of(&fine.service), want);
    assert_eq!(evaluations(&metrics, &fine.service), 6.0);
    // stuck's three answers came 15 s after their slots, fine's at once.
    let within_10s = value(
        &metrics,
        "backout_evaluation_lag_seconds_bucket{le=\"10.0\"}",
    );
    let (count, _) = lag(&metrics);
    assert_eq!((count, within_10s), (9.0, 6.0));
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rollback_in_one_phase_is_ordered_while_another_phase_fetch_hangs() {
    let policies = one_per_phase();
    let (stuck, bad) = (policies[0].clone(), policies[5].clone());
    let w = World::new(&[stuck.clone(), bad.clone()], secs(1)).await;
    let slow = Arc::new(Slow::new(w.sampler.clone(), Duration::ZERO));
    slow.hang(&stuck.service, secs(3_600));
    w.sampler.turn_bad(&[&bad.service]);
    let ctx = w.context_with(slow);
    let metrics = ctx.metrics.clone();
    let (stop, task) = start(Daemon::new(ctx, vec![stuck.clone(), bad.clone()]));

    // stuck's fetch (phase 0 s) hangs until its deadline at 30 s; bad (phase 5 s) is judged,
    // ordered and mitigated meanwhile.
    let mitigated = w.mitigated_at(&bad, secs(29)).await;
    let at = mitigated.expect("bad mitigated while stuck's fetch hangs");
    assert!(at < 30_000, "mitigated at {at} ms");
    assert_eq!(
        w.sampler.times_of(&stuck.service),
        vec![0],
        "still in flight"
    );
    assert_eq!(evaluations(&metrics, &stuck.service), 0.0);

    // The hung fetch gives up at its deadline (3 intervals): stuck is judged without data once,
    // and asked again at its next free slot.
    tokio::time::sleep_until(w.sampler.origin + Duration::from_millis(35_500)).await;
    assert_eq!(evaluations(&metrics, &stuck.service), 1.0);
    tokio::time::sleep(secs(10)).await;
    assert_eq!(w.sampler.times_of(&stuck.service).len(), 2);
    stop.send(true).unwrap();
    task.await.unwrap();
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_mid_fetch_drops_the_answers_of_removed_and_changed_services() {
    // Three services of one phase, so one fetch asks for all three.
    let names = in_phase(3_000, 3);
    let (kept, removed, changed) = (policy(&names[0]), policy(&names[1]), policy(&names[2]));
    let all = [kept.clone(), removed.clone(), changed.clone()];
    let w = World::new(&all, secs(1)).await;
    let ctx = w.context_with(Arc::new(Slow::new(w.sampler.clone(), secs(5))));
    let metrics = ctx.metrics.clone();
    let (stop, reload, task) = start_reloadable(Daemon::new(ctx, all.to_vec()));

    // The phase's fetch starts at 3 s and answers at 8 s; the reload lands at 4 s.
    tokio::time::sleep(secs(4)).await;
    assert_eq!(w.sampler.times_of(&removed.service), vec![3_000]);
    let mut edited = changed.clone();
    edited.metrics = vec![MetricSpec::test("errors").critical(Level::above(0.2))];
    reload
        .send(vec![kept.clone(), edited].into())
        .await
        .unwrap();
    tokio::time::sleep(secs(5)).await;
    assert_eq!(evaluations(&metrics, &kept.service), 1.0, "kept: judged");
    assert!(!judged(&metrics, &removed.service), "removed: dropped");
    assert!(!judged(&metrics, &changed.service), "changed: dropped");

    // The next slot (13 s, answered at 18 s) judges the new set.
    tokio::time::sleep(secs(10)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(evaluations(&metrics, &kept.service), 2.0);
    assert_eq!(evaluations(&metrics, &changed.service), 1.0);
    assert_eq!(evaluations(&metrics, &removed.service), 0.0);
    assert_eq!(w.sampler.times_of(&removed.service), vec![3_000]);
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_a_hung_fetch_only_a_short_grace() {
    let p = policy(&in_phase(0, 1)[0]);
    let w = World::new(std::slice::from_ref(&p), secs(1)).await;
    let slow = Arc::new(Slow::new(w.sampler.clone(), Duration::ZERO));
    slow.hang(&p.service, secs(3_600));
    let (stop, task) = start(Daemon::new(w.context_with(slow), vec![p.clone()]));
    tokio::time::sleep(secs(1)).await;
    assert_eq!(
        w.sampler.times_of(&p.service),
        vec![0],
        "the fetch is in flight"
    );
    let asked = Instant::now();
    stop.send(true).unwrap();
    task.await.unwrap();
    let took = asked.elapsed();
    assert!(
        took >= FETCH_GRACE && took <= FETCH_GRACE + secs(1),
        "shutdown took {took:?}"
    );
    w.sim.shutdown().await;
}
