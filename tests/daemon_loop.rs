//! The daemon's control loop on paused tokio time against the simulator (in process, so requests
//! do not let the clock jump): per-service scheduling without drift or bursts, batching of
//! services due together, and Deployments read from per-namespace watches with a GET fallback.

use backout::actuator::{Actuator, ActuatorConfig};
use backout::audit::FileAudit;
use backout::clock::Clock;
use backout::daemon::{Context, Daemon, Sampler, WatchState};
use backout::lifecycle::Release;
use backout::policy::model::MetricSpec;
use backout::policy::Policy;
use backout::sample::{Millis, Observation};
use backout::sim::{SimConfig, SimHandle, Simulator};
use backout::source::plan::{Key, Request};
use backout::telemetry::{Health, Metrics};
use futures::future::BoxFuture;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Wall-clock milliseconds that follow paused tokio time, so the engine sees time pass too.
struct TokioClock(Instant);
impl Clock for TokioClock {
    fn now_millis(&self) -> Millis {
        1_800_000_000_000 + self.0.elapsed().as_millis() as Millis
    }
}

/// One sampler call: when (ms since `origin`) and for which services.
type Call = (u64, BTreeSet<String>);

/// Records every call and takes `cost` (or `slow_call`'s cost on that call) of virtual time, like
/// a Prometheus answering slowly.
struct Recorder {
    origin: Instant,
    cost: Duration,
    slow_call: Option<(usize, Duration)>,
    calls: Mutex<Vec<Call>>,
}

impl Sampler for Recorder {
    fn sample<'a>(
        &'a self,
        requests: Vec<Request>,
        _now: Millis,
    ) -> BoxFuture<'a, HashMap<Key, Observation>> {
        Box::pin(async move {
            let at = self.origin.elapsed().as_millis() as u64;
            let services = requests.iter().map(|r| r.key.service.to_string()).collect();
            let n = {
                let mut calls = self.calls.lock().unwrap();
                calls.push((at, services));
                calls.len()
            };
            let cost = match self.slow_call {
                Some((k, d)) if k == n => d,
                _ => self.cost,
            };
            tokio::time::sleep(cost).await;
            HashMap::new()
        })
    }
}

fn policy(service: &str, namespace: &str, interval: u64) -> Policy {
    let mut p = Policy::test()
        .with_service(service, namespace)
        .with_interval(Duration::from_secs(interval))
        .with_warmup(Duration::ZERO)
        .with_metric(MetricSpec::test("errors"));
    p.deployments.stable = service.into();
    p.deployments.canary = format!("{service}-canary");
    p.traffic.virtual_service = service.into();
    p
}

struct World {
    sim: SimHandle,
    recorder: Arc<Recorder>,
    health: Health,
    metrics: Metrics,
    _dir: tempfile::TempDir,
}

/// A simulator with every policy's objects, rolled out, and a daemon's context on it. The
/// daemon's schedule origin is "now" when this returns (paused time stands still in between).
async fn world(policies: &[Policy], slow_call: Option<(usize, Duration)>) -> (World, Context) {
    let sim = Simulator::start_with(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            rollout_delay: Duration::from_millis(20),
        },
    )
    .await
    .unwrap();
    for p in policies {
        sim.seed_policy(p).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // revisions assigned, rollouts done
    let client = sim.in_process_client();
    let clock = Arc::new(TokioClock(Instant::now()));
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder {
        origin: Instant::now(),
        cost: Duration::from_millis(700),
        slow_call,
        calls: Mutex::new(Vec::new()),
    });
    let health = Health::default();
    let metrics = Metrics::new();
    let actuator = Actuator::new(client.clone(), clock.clone(), ActuatorConfig::default());
    let audit = Arc::new(FileAudit::new(dir.path()).unwrap());
    let ctx = Context::builder(client, recorder.clone(), Arc::new(actuator), audit)
        .metrics(metrics.clone())
        .health(health.clone())
        .clock(clock)
        .build();
    let w = World {
        sim,
        recorder,
        health,
        metrics,
        _dir: dir,
    };
    (w, ctx)
}

/// Runs the daemon's own loop for `secs` of virtual time and returns the sampler calls.
async fn run_for(daemon: Daemon, w: &World, secs: f64) -> Vec<Call> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(daemon.run(stop_rx, reload_rx));
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    w.recorder.calls.lock().unwrap().clone()
}

fn times_of(calls: &[Call], service: &str) -> Vec<u64> {
    calls
        .iter()
        .filter(|(_, s)| s.contains(service))
        .map(|(t, _)| *t)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn services_run_at_their_own_interval_three_to_one_without_drift() {
    let policies = [policy("fast", "prod", 10), policy("slow", "prod", 30)];
    let (w, ctx) = world(&policies, None).await;
    let daemon = Daemon::new(ctx, policies.to_vec());
    let fast = daemon.schedule().slot("prod/fast").unwrap();
    let slow = daemon.schedule().slot("prod/slow").unwrap();
    // Every sampler call costs 700 ms: sleeping one interval after each cycle would drift 12.6 s
    // over three minutes; fixed slots do not move at all.
    let calls = run_for(daemon, &w, 179.5).await;
    let (f, s) = (times_of(&calls, "fast"), times_of(&calls, "slow"));
    assert_eq!((f.len(), s.len()), (18, 6), "3:1 over 3 minutes: {calls:?}");
    for (k, t) in f.iter().enumerate() {
        assert_eq!(*t, fast.offset + k as u64 * 10_000, "fast #{k}: {calls:?}");
    }
    for (k, t) in s.iter().enumerate() {
        assert_eq!(*t, slow.offset + k as u64 * 30_000, "slow #{k}: {calls:?}");
    }
    // Due together => sampled together: one call per instant, never two at the same time.
    let instants: BTreeSet<u64> = calls.iter().map(|(t, _)| *t).collect();
    assert_eq!(instants.len(), calls.len(), "{calls:?}");
    if fast.offset % 10_000 == slow.offset % 10_000 {
        assert!(calls.iter().any(|(_, s)| s.len() == 2), "{calls:?}");
    }
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_fetch_skips_the_slots_it_outlived_instead_of_bursting() {
    let policies = [policy("web", "prod", 10)];
    // The second evaluation (at +10 s) waits 25 s for Prometheus: the slots at +20 s and +30 s
    // fall while its fetch runs. They are skipped and counted, not queued behind it or replayed
    // when it answers (+35 s), and the service is back on its own slots (+40 s, +50 s): no
    // burst, no shifted phase.
    let (w, ctx) = world(&policies, Some((2, Duration::from_secs(25)))).await;
    let daemon = Daemon::new(ctx, policies.to_vec());
    let off = daemon.schedule().slot("prod/web").unwrap().offset;
    let calls = run_for(daemon, &w, off as f64 / 1000.0 + 55.0).await;
    let t: Vec<u64> = times_of(&calls, "web").iter().map(|t| t - off).collect();
    assert_eq!(t, vec![0, 10_000, 40_000, 50_000], "{calls:?}");
    assert!(w
        .metrics
        .encode()
        .contains("backout_evaluations_skipped_total 2"));
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn offsets_spread_100_services_and_each_phase_is_one_sampler_call() {
    let policies: Vec<Policy> = (0..100)
        .map(|i| policy(&format!("svc-{i}"), &format!("team-{}", i % 4), 10))
        .collect();
    let (w, ctx) = world(&policies, None).await;
    let daemon = Daemon::new(ctx, policies.clone());
    let calls = run_for(daemon, &w, 9.9).await;
    let per_call: Vec<(u64, usize)> = calls.iter().map(|(t, s)| (*t, s.len())).collect();
    eprintln!("sampler calls (ms after origin, services): {per_call:?}");
    let sampled: usize = calls.iter().map(|(_, s)| s.len()).sum();
    assert_eq!(sampled, 100, "every service once in the first interval");
    assert!(
        calls.len() >= 8,
        "spread over (nearly) all 10 phases: {calls:?}"
    );
    for (t, s) in &calls {
        assert_eq!(t % 1_000, 0, "phases are whole seconds");
        assert!(s.len() <= 25, "no phase carries a herd: {} at {t}", s.len());
    }
    w.sim.shutdown().await;
}

/// Polls (in virtual time) until the namespace's watch is in `want`.
async fn until_state(daemon: &Daemon, ns: &str, want: fn(&WatchState) -> bool) {
    for _ in 0..600 {
        if daemon.watches().state(ns).as_ref().is_some_and(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "watch of {ns} never reached the state; now {:?}",
        daemon.watches().state(ns)
    );
}

fn synced(s: &WatchState) -> bool {
    *s == WatchState::Synced
}

fn failing(s: &WatchState) -> bool {
    matches!(s, WatchState::Failing(_))
}

#[tokio::test(start_paused = true)]
async fn deployments_come_from_the_watch_and_gets_cover_a_failing_watch() {
    let policies = [policy("web", "prod", 10)];
    let (w, ctx) = world(&policies, None).await;
    let faults = w.sim.faults();
    // The watch cannot list at first: cycles read with GETs and work.
    faults.server_errors(Some("GET"), "/deployments?", 500, u32::MAX);
    let mut daemon = Daemon::new(ctx, policies.to_vec());
    daemon.start_watches();
    until_state(&daemon, "prod", failing).await;
    let out = daemon.cycle().await;
    assert_eq!(out[0].error, None);
    assert!(matches!(out[0].release, Release::Canary { .. }));
    assert!(w.health.readiness().kubernetes_reachable);
    // GETs failing too: the cycle reports it and readiness drops.
    faults.server_errors(Some("GET"), "/deployments/web", 500, u32::MAX);
    let out = daemon.cycle().await;
    assert!(out[0].error.as_deref().unwrap_or_default().contains("web"));
    assert!(!w.health.readiness().kubernetes_reachable);

    // The watch recovers with a fresh list: now the store answers while name GETs still fail.
    faults.clear();
    faults.server_errors(Some("GET"), "/deployments/web", 500, u32::MAX);
    until_state(&daemon, "prod", synced).await;
    let out = daemon.cycle().await;
    assert_eq!(out[0].error, None, "read from the store");
    assert!(w.health.readiness().kubernetes_reachable);
    assert!(w
        .metrics
        .encode()
        .contains("backout_deployment_watch_synced{namespace=\"prod\"} 1"));

    // The store follows the cluster: the canary scaled to zero stops the canary phase.
    w.sim.store().write(|t| {
        let key = backout::sim::store::ObjKey {
            group: "apps",
            plural: "deployments",
            namespace: "prod".into(),
            name: "web-canary".into(),
        };
        let mut d = t.get(&key).cloned().unwrap();
        d["spec"]["replicas"] = 0.into();
        t.put(key, d);
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = daemon.cycle().await;
    assert_eq!(out[0].error, None);
    assert_eq!(out[0].release, Release::Idle, "{:?}", out[0]);

    // A watch that breaks after syncing (its 290 s call ends, the re-watch fails) is no longer
    // trusted: cycles go back to GETs until a fresh list completes.
    faults.clear();
    faults.server_errors(Some("GET"), "watch=true", 500, u32::MAX);
    tokio::time::sleep(Duration::from_secs(300)).await;
    until_state(&daemon, "prod", failing).await;
    assert!(w
        .metrics
        .encode()
        .contains("backout_deployment_watch_synced{namespace=\"prod\"} 0"));
    let out = daemon.cycle().await;
    assert_eq!(out[0].error, None, "GET fallback");
    faults.clear();
    until_state(&daemon, "prod", synced).await;
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn hot_reload_moves_the_watches_to_the_new_namespaces() {
    let a = policy("web", "team-a", 10);
    let b = policy("api", "team-b", 10);
    let (w, ctx) = world(&[a.clone(), b.clone()], None).await;
    let mut daemon = Daemon::new(ctx, vec![a.clone()]);
    daemon.cycle().await;
    assert_eq!(daemon.watches().namespaces(), vec!["team-a".to_string()]);
    until_state(&daemon, "team-a", synced).await;

    daemon.reload(vec![b.clone()]);
    assert!(daemon.watches().namespaces().is_empty(), "team-a stopped");
    let out = daemon.cycle().await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].service, "api");
    assert_eq!(daemon.watches().namespaces(), vec!["team-b".to_string()]);
    until_state(&daemon, "team-b", synced).await;
    assert_eq!(daemon.schedule().len(), 1);
    assert!(daemon.schedule().slot("team-b/api").is_some());

    daemon.reload(vec![a, b]);
    daemon.start_watches();
    assert_eq!(
        daemon.watches().namespaces(),
        vec!["team-a".to_string(), "team-b".to_string()]
    );
    until_state(&daemon, "team-a", synced).await;
    let metrics = w.metrics.encode();
    assert!(metrics.contains("backout_deployment_watch_synced{namespace=\"team-a\"} 1"));
    assert!(metrics.contains("backout_deployment_watch_synced{namespace=\"team-b\"} 1"));
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn readiness_holds_across_batches_while_one_namespace_cannot_be_read() {
    use backout::daemon::schedule::Slot;
    let web = policy("web", "team-a", 10);
    let phase = |ns: &str, s: &str| Slot::new(&format!("{ns}/{s}"), Duration::from_secs(10)).offset;
    // A service in another phase than web's, so the two are never in the same batch.
    let other = (0..50)
        .map(|i| format!("api-{i}"))
        .find(|s| phase("team-b", s) != phase("team-a", "web"))
        .unwrap();
    let api = policy(&other, "team-b", 10);
    let (w, ctx) = world(&[web.clone(), api.clone()], None).await;
    w.sim
        .faults()
        .server_errors(Some("GET"), "/namespaces/team-b/", 500, u32::MAX);
    let mut daemon = Daemon::new(ctx, vec![web, api]);
    let mut api_failed = false;
    for _ in 0..6 {
        let at = daemon.next_due().unwrap();
        tokio::time::sleep_until(at).await;
        let out = daemon.cycle_due(at).await;
        assert_eq!(out.len(), 1, "one service per batch: {out:?}");
        api_failed |= out[0].error.is_some();
        if api_failed {
            assert!(
                !w.health.readiness().kubernetes_reachable,
                "a batch of healthy team-a must not flip readiness back: {out:?}"
            );
        }
    }
    assert!(api_failed);
    w.sim.shutdown().await;
}
