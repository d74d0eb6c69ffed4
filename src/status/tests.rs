use super::*;
use crate::decision::{Engine, Phase};
use crate::lifecycle::CanaryId;
use crate::policy::{Compare, Level, MetricSpec};
use crate::sample::Sample;
use std::time::Duration;

const T0: Millis = 1_700_000_000_000;

fn policy() -> Policy {
    Policy::test()
        .with_service("shop", "demo")
        .with_interval(Duration::from_secs(10))
        .with_warmup(Duration::ZERO)
        .with_metric(
            MetricSpec::test("p99_latency")
                .warning(Level::above(0.5))
                .critical(Level::above(1.0))
                .for_(Duration::from_secs(60)),
        )
        .with_metric(
            MetricSpec::test("p99_vs_stable")
                .compare(Compare::Ratio)
                .critical(Level::above(1.5)),
        )
}

fn canary() -> Release {
    Release::Canary {
        id: CanaryId {
            revision: 7,
            template_hash: "abc".into(),
        },
        since: T0,
    }
}

/// Drives an engine and the board together: one evaluation every 10 s with the canary's p99 at
/// `canary_p99` (the stable at 0.2).
struct Run {
    engine: Engine,
    board: StatusBoard,
    now: Millis,
}

impl Run {
    fn new() -> Self {
        let p = policy();
        let board = StatusBoard::new("backout-0");
        board.sync([(&p, false)]);
        Self {
            engine: Engine::new(&p, "7"),
            board,
            now: T0,
        }
    }

    fn tick(&mut self, canary_p99: f64, events: &[ReleaseEvent]) -> Verdict {
        let polls = vec![
            ("p99_latency".to_string(), Track::Canary, canary_p99),
            ("p99_latency".to_string(), Track::Stable, 0.2),
            ("p99_vs_stable".to_string(), Track::Canary, canary_p99),
            ("p99_vs_stable".to_string(), Track::Stable, 0.2),
        ];
        for (m, t, v) in &polls {
            self.engine
                .observe(m, *t, Sample::value(self.now, *v))
                .unwrap();
        }
        let v = self
            .engine
            .evaluate(self.now, Phase::Canary { started_at: T0 });
        let release = canary();
        self.board.record([(
            "demo/shop",
            Evaluation {
                at: self.now,
                release: &release,
                events,
                verdict: Some(&v),
                polls: &polls,
                error: None,
                shard: 0,
                acting: true,
            },
        )]);
        self.now += 10_000;
        v
    }

    fn shop(&self) -> ServiceDetail {
        self.board.detail("demo", "shop").unwrap()
    }
}

#[test]
fn a_breach_shows_its_value_levels_and_how_long_it_has_held() {
    let mut run = Run::new();
    let started = [ReleaseEvent::CanaryStarted {
        id: CanaryId {
            revision: 7,
            template_hash: "abc".into(),
        },
        image: "shop:2.0".into(),
    }];
    run.tick(0.2, &started);
    run.tick(0.21, &[]);
    // 0.9 breaches the warning level (0.5) only; 20 s into its 60 s `for`.
    for _ in 0..3 {
        run.tick(0.9, &[]);
    }
    let s = run.shop();
    assert_eq!(s.status.phase, PhaseName::Canary);
    let c = s.status.canary.as_ref().unwrap();
    assert_eq!((c.revision, c.image.as_str()), (7, "shop:2.0"));
    let p99 = &s.status.metrics[0];
    assert_eq!(p99.rule.name, "p99_latency");
    assert_eq!(
        (p99.canary, p99.stable, p99.value),
        (Some(0.9), Some(0.2), Some(0.9))
    );
    assert_eq!(p99.rule.warning, Some(Level::above(0.5)));
    let b = p99.breach.as_ref().unwrap();
    assert_eq!(
        (b.level.as_str(), b.held_ms, b.for_ms, b.firing),
        ("warning", 20_000, 60_000, false)
    );
    // The ratio metric fires at once (no `for`): the judged ratio is 4.5.
    let ratio = &s.status.metrics[1];
    assert_eq!(ratio.health, Health::Critical);
    assert!((ratio.value.unwrap() - 4.5).abs() < 1e-9);
    let v = s.status.verdict.as_ref().unwrap();
    assert!(v.rollback);
    assert!(
        v.reasons[0].starts_with("p99_vs_stable critical on canary"),
        "{:?}",
        v.reasons
    );
    let r = s.status.last_rollback.as_ref().unwrap();
    assert_eq!((r.state, r.revision), (RollbackState::Decided, Some(7)));
    let kinds: Vec<TimelineKind> = s.timeline.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            TimelineKind::CanaryStarted,
            TimelineKind::VerdictChanged,
            TimelineKind::VerdictChanged,
            TimelineKind::RollbackDecided
        ]
    );
}

#[test]
fn history_has_both_tracks_and_the_judged_ratio_and_rollbacks_are_marked() {
    let mut run = Run::new();
    for i in 0..12 {
        run.tick(0.2 + f64::from(i) * 0.01, &[]);
    }
    let done = run.now;
    run.board
        .rollback("demo/shop", done, RollbackProgress::Started);
    run.board.rollback(
        "demo/shop",
        done + 5_000,
        RollbackProgress::Finished {
            mitigated_at: done + 5_000,
            dry_run: false,
        },
    );
    let s = run.shop();
    let series: Vec<(&str, &str, usize)> = s
        .history
        .iter()
        .map(|h| (h.metric.as_str(), h.track.as_str(), h.points.len()))
        .collect();
    assert_eq!(
        series,
        [
            ("p99_latency", "canary", 12),
            ("p99_latency", "stable", 12),
            ("p99_vs_stable", "canary", 12),
            ("p99_vs_stable", "stable", 12),
            ("p99_vs_stable", "judged", 12),
        ]
    );
    let canary = &s.history[0].points;
    assert_eq!(canary[0], (T0, 0.2f32 as f64));
    assert_eq!(canary[11].0, T0 + 110_000);
    let r = s.status.last_rollback.unwrap();
    assert_eq!(r.state, RollbackState::Succeeded);
    assert_eq!(r.mitigated_at, Some(done + 5_000));
    assert_eq!(s.timeline.last().unwrap().kind, TimelineKind::RolledBack);
}

#[test]
fn the_list_is_sorted_and_a_reload_keeps_unchanged_services() {
    let a = policy();
    let b = policy().with_service("api", "demo");
    let board = StatusBoard::new("r");
    board.sync([(&a, false), (&b, false)]);
    let names: Vec<String> = board
        .list()
        .services
        .iter()
        .map(|s| s.service.clone())
        .collect();
    assert_eq!(names, ["api", "shop"]);
    board.rollback("demo/shop", T0, RollbackProgress::Started);
    board.sync([(&a, true)]);
    let list = board.list();
    assert_eq!(list.services.len(), 1);
    assert!(
        list.services[0].last_rollback.is_some(),
        "kept across an unchanged reload"
    );
    board.sync([(&a, false)]);
    assert!(
        board.list().services[0].last_rollback.is_none(),
        "a changed policy starts over"
    );
    assert!(board.detail("demo", "api").is_none());
}

#[test]
fn the_timeline_is_bounded() {
    let board = StatusBoard::new("r");
    board.sync([(&policy(), false)]);
    for i in 0..100 {
        board.rollback("demo/shop", T0 + i, RollbackProgress::Superseded);
    }
    let t = board.detail("demo", "shop").unwrap().timeline;
    assert_eq!(t.len(), TIMELINE);
    assert_eq!(t.last().unwrap().at, T0 + 99);
}

/// The figure docs/telemetry.md quotes: a service under analysis for over an hour with three
/// metrics (two tracks each, one judged ratio) and a full timeline.
#[test]
fn bytes_per_service_stay_small() {
    let p = policy().with_metric(MetricSpec::test("error_rate").critical(Level::above(0.05)));
    let board = StatusBoard::new("backout-0");
    board.sync([(&p, false)]);
    let idle = board.bytes().1;
    let release = canary();
    let polls: Vec<(String, Track, f64)> = p
        .metrics
        .iter()
        .flat_map(|m| Track::ALL.map(|t| (m.name.clone(), t, 0.3)))
        .collect();
    let mut engine = Engine::new(&p, "7");
    for i in 0..400 {
        let at = T0 + i * 10_000;
        for (m, t, v) in &polls {
            engine.observe(m, *t, Sample::value(at, *v)).unwrap();
        }
        let v = engine.evaluate(at, Phase::Canary { started_at: T0 });
        board.record([(
            "demo/shop",
            Evaluation {
                at,
                release: &release,
                events: &[],
                verdict: Some(&v),
                polls: &polls,
                error: None,
                shard: 0,
                acting: true,
            },
        )]);
    }
    for i in 0..TIMELINE as i64 {
        board.rollback("demo/shop", T0 + i, RollbackProgress::Superseded);
    }
    let (n, busy) = board.bytes();
    assert_eq!(n, 1);
    eprintln!("status board: idle service {idle} B, under analysis {busy} B");
    assert!(idle < 2_000, "{idle}");
    assert!(busy < 8_000, "{busy}");
}
