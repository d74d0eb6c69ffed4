//! Rollbacks run off the evaluation path (issue 10): on paused tokio time against the in-process
//! simulator, whose rollouts take as long as the test says. A rollback waiting on a slow rollout
//! delays no other service's evaluation; services going bad together are mitigated together; a
//! daemon killed mid-rollback is followed by one that resumes it and finishes it exactly once.

use backout::actuator::{Actuator, ActuatorConfig};
use backout::audit::{AuditKind, FileAudit};
use backout::clock::Clock;
use backout::daemon::{Context, Daemon, Sampler};
use backout::demo::{canary_weight, replicas};
use backout::policy::model::{Level, MetricSpec};
use backout::policy::{Input, Policy};
use backout::sample::{Millis, Observation, Track};
use backout::settings::Actions;
use backout::sim::{SimConfig, SimHandle, Simulator};
use backout::source::plan::{Key, Request};
use backout::telemetry::Metrics;
use futures::future::BoxFuture;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Wall-clock milliseconds that follow paused tokio time.
struct TokioClock(Instant);
impl Clock for TokioClock {
    fn now_millis(&self) -> Millis {
        1_800_000_000_000 + self.0.elapsed().as_millis() as Millis
    }
}

/// Prometheus as the test scripts it: canaries of services in `bad` fail 50% of requests, every
/// other track 0.1%; every call is recorded (virtual ms since `origin`, services asked for).
struct Scripted {
    origin: Instant,
    bad: Mutex<HashSet<String>>,
    calls: Mutex<Vec<(u64, BTreeSet<String>)>>,
}

impl Scripted {
    fn turn_bad(&self, services: &[&str]) {
        let mut bad = self.bad.lock().unwrap();
        bad.extend(services.iter().map(|s| s.to_string()));
    }

    /// Virtual ms (since `origin`) of each evaluation of `service`.
    fn times_of(&self, service: &str) -> Vec<u64> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(_, s)| s.contains(service))
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Sampler for Scripted {
    fn sample<'a>(
        &'a self,
        requests: Vec<Request>,
        _now: Millis,
    ) -> BoxFuture<'a, HashMap<Key, Observation>> {
        Box::pin(async move {
            let at = self.origin.elapsed().as_millis() as u64;
            let bad = self.bad.lock().unwrap().clone();
            let services = requests.iter().map(|r| r.key.service.clone()).collect();
            self.calls.lock().unwrap().push((at, services));
            requests
                .into_iter()
                .map(|r| {
                    let v = if r.key.input == Input::Traffic {
                        50.0
                    } else if r.key.track == Track::Canary && bad.contains(&r.key.service) {
                        0.5
                    } else {
                        0.001
                    };
                    (r.key, Observation::Value(v))
                })
                .collect()
        })
    }
}

fn policy(service: &str) -> Policy {
    let mut p = Policy::test()
        .with_service(service, "prod")
        .with_interval(Duration::from_secs(10))
        .with_warmup(Duration::ZERO)
        .with_metric(MetricSpec::test("errors").critical(Level::above(0.1)));
    p.deployments.stable = service.into();
    p.deployments.canary = format!("{service}-canary");
    p.traffic.virtual_service = service.into();
    p
}

struct World {
    sim: SimHandle,
    sampler: Arc<Scripted>,
    audit_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    /// A simulator whose rollouts take `rollout` with every policy's objects, rolled out.
    async fn new(policies: &[Policy], rollout: Duration) -> Self {
        let config = SimConfig {
            rollout_delay: rollout,
        };
        let sim = Simulator::start_with("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        for p in policies {
            sim.seed_policy(p).unwrap();
        }
        tokio::time::sleep(rollout + Duration::from_secs(1)).await;
        let dir = tempfile::tempdir().unwrap();
        World {
            sim,
            sampler: Arc::new(Scripted {
                origin: Instant::now(),
                bad: Mutex::new(HashSet::new()),
                calls: Mutex::new(Vec::new()),
            }),
            audit_dir: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    fn context(&self) -> Context {
        let client = self.sim.in_process_client();
        let clock = Arc::new(TokioClock(self.sampler.origin));
        let config = ActuatorConfig {
            verify_timeout: Duration::from_secs(300),
            ..Default::default()
        };
        let actuator = Arc::new(Actuator::new(client.clone(), clock.clone(), config));
        let audit = Arc::new(FileAudit::new(&self.audit_dir).unwrap());
        Context::builder(client, self.sampler.clone(), actuator, audit)
            .clock(clock)
            .build()
    }

    /// Traffic all on stable and the canary scaled to zero.
    fn mitigated(&self, p: &Policy) -> bool {
        canary_weight(&self.sim, p) == Some(0)
            && replicas(&self.sim, &p.namespace, &p.deployments.canary) == Some(0)
    }

    /// Polls every 500 ms of virtual time until `p` is mitigated; virtual ms since `origin`.
    async fn mitigated_at(&self, p: &Policy, within: Duration) -> Option<u64> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.mitigated(p) {
                return Some(self.sampler.origin.elapsed().as_millis() as u64);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    fn audit_of(&self, kind: AuditKind) -> Vec<(String, Millis)> {
        let trail = FileAudit::read_trail(&self.audit_dir.join("audit.jsonl")).unwrap();
        trail
            .into_iter()
            .filter(|r| r.kind == kind)
            .map(|r| (r.service, r.at - 1_800_000_000_000))
            .collect()
    }
}

/// Starts the daemon's own loop; stop it with the returned sender.
fn start(
    daemon: Daemon,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(async move {
        let _keep = reload_tx;
        daemon.run(stop_rx, reload_rx).await
    });
    (stop_tx, task)
}

#[tokio::test(start_paused = true)]
async fn a_rollback_waiting_60s_on_its_rollout_delays_no_other_evaluation() {
    let (web, api) = (policy("web"), policy("api"));
    let w = World::new(&[web.clone(), api.clone()], Duration::from_secs(60)).await;
    w.sampler.turn_bad(&["web"]);
    let daemon = Daemon::new(w.context(), vec![web.clone(), api.clone()]);
    let off = daemon.schedule().slot("prod/api").unwrap().offset;
    let (stop, task) = start(daemon);

    let done = w.mitigated_at(&web, Duration::from_secs(200)).await;
    let until = Instant::now() + Duration::from_secs(200);
    while w.audit_of(AuditKind::RollbackCompleted).is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();

    let started = w.audit_of(AuditKind::RollbackStarted);
    let completed = w.audit_of(AuditKind::RollbackCompleted);
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(completed.len(), 1, "{completed:?}");
    let (t0, t1) = (started[0].1 as u64, completed[0].1 as u64);
    assert!(done.is_some(), "web was not mitigated");
    assert!(
        t1 - t0 >= 60_000,
        "the rollback waited on a 60 s rollout: {t0}..{t1}"
    );
    // api was judged at each of its slots throughout, on time to the millisecond.
    let api_times = w.sampler.times_of("api");
    for (k, t) in api_times.iter().enumerate() {
        assert_eq!(
            *t,
            off + k as u64 * 10_000,
            "api evaluation #{k}: {api_times:?}"
        );
    }
    let during = api_times.iter().filter(|t| (t0..t1).contains(t)).count();
    assert!(
        during >= 6,
        "api evaluations while web rolled back: {during}"
    );
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn services_going_bad_together_are_mitigated_within_one_poll_of_each_other() {
    let names = ["a", "b", "c", "d"];
    let policies: Vec<Policy> = names.iter().map(|n| policy(n)).collect();
    let w = World::new(&policies, Duration::from_secs(30)).await;
    // Fewer places at the gate than services: rollbacks waiting on their rollouts give theirs
    // up, so four are mitigated together although only two may work the API at once.
    let actions = Actions {
        max_concurrent: 2,
        ..Actions::default()
    };
    let daemon = Daemon::with_actions(w.context(), policies.clone(), actions);
    let (stop, task) = start(daemon);
    tokio::time::sleep(Duration::from_secs(25)).await;
    w.sampler.turn_bad(&names);
    let bad_at = w.sampler.origin.elapsed().as_millis() as u64;

    let watch = policies
        .iter()
        .map(|p| w.mitigated_at(p, Duration::from_secs(120)));
    let at = futures::future::join_all(watch).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let at: Vec<u64> = at.into_iter().map(|t| t.expect("mitigated")).collect();
    let (first, last) = (*at.iter().min().unwrap(), *at.iter().max().unwrap());
    assert!(last - first <= 10_000, "mitigated at {at:?}");
    // Detection takes one poll (<= 10 s); then each pre-scales its stable and waits the 30 s
    // rollout before moving traffic, all of them at once.
    assert!(
        last - bad_at <= 10_000 + 30_000 + 5_000,
        "{at:?} vs {bad_at}"
    );
    w.sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_daemon_killed_mid_rollback_is_resumed_at_start_up_and_finishes_once() {
    let web = policy("web");
    let w = World::new(std::slice::from_ref(&web), Duration::from_secs(60)).await;
    w.sampler.turn_bad(&["web"]);
    let (_stop, first) = start(Daemon::new(w.context(), vec![web.clone()]));
    // The rollback starts within a poll and then waits on the 60 s rollout: kill it there.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(w.audit_of(AuditKind::RollbackStarted).len(), 1);
    assert!(w.audit_of(AuditKind::RollbackCompleted).is_empty());
    first.abort();
    let _ = first.await;
    let backups = w
        .sim
        .store()
        .read(|t| t.list("", "configmaps", Some("prod")));
    let state = |cm: &serde_json::Value| {
        cm.pointer("/metadata/annotations/backout.dev~1rollback-state")
            .and_then(|s| s.as_str())
            .map(String::from)
    };
    assert_eq!(backups.len(), 1);
    assert_eq!(state(&backups[0]).as_deref(), Some("running"));

    // A new daemon (the next pod) finds it and finishes it; the canary is judged afresh too,
    // and its own rollback verdict meets a rollback that is already done.
    let (stop, second) = start(Daemon::new(w.context(), vec![web.clone()]));
    tokio::time::sleep(Duration::from_secs(120)).await;
    stop.send(true).unwrap();
    second.await.unwrap();

    assert!(w.mitigated(&web));
    let started = w.audit_of(AuditKind::RollbackStarted);
    assert_eq!(started.len(), 2, "{started:?}");
    let trail = FileAudit::read_trail(&w.audit_dir.join("audit.jsonl")).unwrap();
    assert!(
        trail.iter().any(|r| r
            .message
            .starts_with("resuming the rollback left under way")),
        "the second daemon resumed it at start-up"
    );
    let backups = w
        .sim
        .store()
        .read(|t| t.list("", "configmaps", Some("prod")));
    assert_eq!(backups.len(), 1, "one rollback, one backup");
    assert_eq!(state(&backups[0]).as_deref(), Some("completed"));
    let completed: Vec<_> = trail
        .iter()
        .filter(|r| r.kind == AuditKind::RollbackCompleted)
        .collect();
    assert_eq!(completed.len(), 1, "finished exactly once: {completed:?}");
    assert_eq!(completed[0].detail["resumed"], true);
    assert_eq!(completed[0].detail["outcome"], "completed");
    w.sim.shutdown().await;
}

/// The simulator's router in process behind the daemon's own client layers (deadline, rate
/// limit, metrics), so paused time applies to the deadline too.
fn layered_client(sim: &SimHandle, deadline: Duration, metrics: &Metrics) -> kube::Client {
    let inner = sim.in_process_client();
    let svc = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
        let inner = inner.clone();
        async move { inner.send(req).await }
    });
    let limits = backout::kubeclient::ClientLimits {
        request_timeout: deadline,
        qps: 100.0,
        burst: 200,
    };
    let builder = kube::client::ClientBuilder::new(svc, "default");
    backout::kubeclient::layers(builder, &limits, metrics)
        .unwrap()
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_hanging_kubernetes_call_fails_at_its_deadline_and_the_cycle_goes_on() {
    let web = policy("web");
    let mut stuck = policy("stuck");
    stuck.namespace = "limbo".into();
    let w = World::new(&[web.clone(), stuck.clone()], Duration::from_secs(1)).await;
    // Every Deployment read in `limbo` hangs for an hour: the watch cannot sync, GETs hang.
    w.sim.faults().latency(
        Some("GET"),
        "/namespaces/limbo/deployments",
        Duration::from_secs(3600),
    );
    let mut ctx = w.context();
    ctx.client = layered_client(&w.sim, Duration::from_secs(2), &ctx.metrics);
    let metrics = ctx.metrics.clone();
    let mut daemon = Daemon::new(ctx, vec![web.clone(), stuck.clone()]);

    let began = Instant::now();
    let out = daemon.cycle().await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "one cycle took {took:?}: the hung read must end at its 2 s deadline"
    );
    let of = |name: &str| out.iter().find(|o| o.service == name).unwrap();
    let err = of("stuck").error.clone().expect("the hung read failed");
    assert!(err.contains("limbo/stuck"), "{err}");
    assert!(of("web").error.is_none());
    assert!(
        of("web").verdict.is_some(),
        "web was judged in the same cycle"
    );
    let text = metrics.encode();
    assert!(
        text.lines()
            .any(|l| l.starts_with("backout_kubernetes_requests_total{")
                && l.contains("verb=\"get\"")
                && l.contains("outcome=\"timeout\"")),
        "{text}"
    );
    w.sim.shutdown().await;
}
