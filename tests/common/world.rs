//! The daemon on paused tokio time against the in-process simulator, with a scripted Prometheus:
//! shared by the tests of actions (daemon_actions) and of the fleet guard (fleet_guard).
#![allow(dead_code)]

use backout::actuator::{Actuator, ActuatorConfig};
use backout::audit::{AuditKind, FileAudit};
use backout::clock::Clock;
use backout::daemon::{Context, Daemon, PolicyReload, Sampler};
use backout::demo::{canary_weight, replicas};
use backout::notify::{Envelope, Notice, Notifier, NotifyError};
use backout::policy::model::{Level, MetricSpec};
use backout::policy::{Input, Policy, TrafficKind};
use backout::sample::{Millis, Observation, Track};
use backout::sim::{SimConfig, SimHandle, Simulator};
use backout::source::plan::{Key, Request};
use futures::future::BoxFuture;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Wall-clock milliseconds that follow paused tokio time.
pub struct TokioClock(Instant);
impl Clock for TokioClock {
    fn now_millis(&self) -> Millis {
        1_800_000_000_000 + self.0.elapsed().as_millis() as Millis
    }
}

/// Prometheus as the test scripts it: canaries of services in `bad` fail 50% of requests, every
/// other track 0.1%; every call is recorded (virtual ms since `origin`, services asked for).
pub struct Scripted {
    pub origin: Instant,
    bad: Mutex<HashSet<String>>,
    /// Services whose stable fails 50% too (a rollback that does not restore them).
    bad_stable: Mutex<HashSet<String>>,
    /// Services whose stable fails like a bad canary (a dependency both tracks share).
    shared: Mutex<HashSet<String>>,
    calls: Mutex<Vec<(u64, BTreeSet<String>)>>,
}

impl Scripted {
    pub fn new(origin: Instant) -> Self {
        Scripted {
            origin,
            bad: Mutex::new(HashSet::new()),
            bad_stable: Mutex::new(HashSet::new()),
            shared: Mutex::new(HashSet::new()),
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn turn_stable_bad(&self, services: &[&str]) {
        let mut bad = self.bad_stable.lock().unwrap();
        bad.extend(services.iter().map(|s| s.to_string()));
    }

    /// Services evaluated at or after `since_ms` (virtual ms since `origin`).
    pub fn services_since(&self, since_ms: u64) -> BTreeSet<String> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(t, _)| *t >= since_ms)
            .flat_map(|(_, s)| s.iter().cloned())
            .collect()
    }

    pub fn turn_good(&self, services: &[&str]) {
        let mut bad = self.bad.lock().unwrap();
        for s in services {
            bad.remove(*s);
        }
    }

    pub fn turn_bad(&self, services: &[&str]) {
        let mut bad = self.bad.lock().unwrap();
        bad.extend(services.iter().map(|s| s.to_string()));
    }

    /// Both tracks of `services` fail like a bad canary: a shared dependency down.
    pub fn turn_shared_bad(&self, services: &[&str]) {
        self.turn_bad(services);
        let mut shared = self.shared.lock().unwrap();
        shared.extend(services.iter().map(|s| s.to_string()));
    }

    /// Virtual ms (since `origin`) of each evaluation of `service`.
    pub fn times_of(&self, service: &str) -> Vec<u64> {
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
            let bad_stable = self.bad_stable.lock().unwrap().clone();
            let shared = self.shared.lock().unwrap().clone();
            let services = requests.iter().map(|r| r.key.service.to_string()).collect();
            self.calls.lock().unwrap().push((at, services));
            requests
                .into_iter()
                .map(|r| {
                    let v = if *r.key.input == Input::Traffic {
                        50.0
                    } else if (r.key.track == Track::Canary || shared.contains(&*r.key.service))
                        && bad.contains(&*r.key.service)
                        || (r.key.track == Track::Stable && bad_stable.contains(&*r.key.service))
                    {
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

/// [`Scripted`] answering late, like a Prometheus under load: every call takes `delay`, and a call
/// that asks for a service given to [`Slow::hang`] takes that service's time instead. The call is
/// recorded, and its answer computed, when it starts.
pub struct Slow {
    pub scripted: Arc<Scripted>,
    delay: Duration,
    hang: Mutex<HashMap<String, Duration>>,
}

impl Slow {
    pub fn new(scripted: Arc<Scripted>, delay: Duration) -> Self {
        Slow {
            scripted,
            delay,
            hang: Mutex::new(HashMap::new()),
        }
    }

    /// Calls asking for `service` take `time`.
    pub fn hang(&self, service: &str, time: Duration) {
        self.hang.lock().unwrap().insert(service.to_string(), time);
    }
}

impl Sampler for Slow {
    fn sample<'a>(
        &'a self,
        requests: Vec<Request>,
        now: Millis,
    ) -> BoxFuture<'a, HashMap<Key, Observation>> {
        Box::pin(async move {
            let wait = {
                let hang = self.hang.lock().unwrap();
                let times = requests.iter().filter_map(|r| hang.get(&*r.key.service));
                times.max().copied().unwrap_or(self.delay)
            };
            let answer = self.scripted.sample(requests, now).await;
            tokio::time::sleep(wait).await;
            answer
        })
    }
}

pub fn policy(service: &str) -> Policy {
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

/// [`policy`] on another router: a Gateway API HTTPRoute `<service>` (rule `split`, backends
/// `<service>` and `<service>-canary`), or none (`replicas`).
pub fn policy_on(service: &str, router: TrafficKind) -> Policy {
    let mut p = policy(service);
    match router {
        TrafficKind::Istio => {}
        TrafficKind::GatewayApi => {
            p.traffic = Policy::test_gateway().traffic;
            p.traffic.http_route = service.into();
            p.traffic.stable.service = Some(service.into());
            p.traffic.canary.service = Some(format!("{service}-canary"));
        }
        TrafficKind::Replicas => p.traffic = Policy::test_replicas().traffic,
    }
    p
}

/// The canary's weight in the policy's HTTPRoute rule.
fn http_route_canary_weight(sim: &SimHandle, p: &Policy) -> Option<i64> {
    let t = &p.traffic;
    let route = sim.object(
        "gateway.networking.k8s.io",
        "httproutes",
        &p.namespace,
        &t.http_route,
    )?;
    let rule = route["spec"]["rules"]
        .as_array()?
        .iter()
        .find(|r| r["name"].as_str() == t.rule.as_deref())?
        .clone();
    rule["backendRefs"].as_array()?.iter().find_map(|b| {
        (b["name"].as_str() == t.canary.service.as_deref())
            .then(|| b["weight"].as_i64().unwrap_or(1))
    })
}

pub struct World {
    pub sim: SimHandle,
    pub sampler: Arc<Scripted>,
    pub audit_dir: PathBuf,
    pub notices: Arc<Recorded>,
    _dir: tempfile::TempDir,
}

impl World {
    /// A simulator whose rollouts take `rollout` with every policy's objects, rolled out.
    pub async fn new(policies: &[Policy], rollout: Duration) -> Self {
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
            sampler: Arc::new(Scripted::new(Instant::now())),
            audit_dir: dir.path().to_path_buf(),
            notices: Arc::new(Recorded::default()),
            _dir: dir,
        }
    }

    pub fn context(&self) -> Context {
        self.context_with(self.sampler.clone())
    }

    /// [`World::context`] with another sampler (one wrapping [`World::sampler`], say).
    pub fn context_with(&self, sampler: Arc<dyn Sampler>) -> Context {
        let client = self.sim.in_process_client();
        let clock = Arc::new(TokioClock(self.sampler.origin));
        let config = ActuatorConfig {
            verify_timeout: Duration::from_secs(300),
            ..Default::default()
        };
        let actuator = Arc::new(
            Actuator::new(client.clone(), clock.clone(), config).with_events(
                kube::runtime::events::Reporter {
                    controller: "backout".into(),
                    instance: None,
                },
            ),
        );
        let audit = Arc::new(FileAudit::new(&self.audit_dir).unwrap());
        Context::builder(client, sampler, actuator, audit)
            .notifier(self.notices.clone())
            .clock(clock)
            .bad_versions("backout")
            .build()
    }

    /// Traffic all on stable (whichever router splits it) and the canary scaled to zero.
    pub fn mitigated(&self, p: &Policy) -> bool {
        let routed_away = match p.traffic.router() {
            TrafficKind::Istio => canary_weight(&self.sim, p) == Some(0),
            TrafficKind::GatewayApi => http_route_canary_weight(&self.sim, p) == Some(0),
            TrafficKind::Replicas => true,
        };
        routed_away && replicas(&self.sim, &p.namespace, &p.deployments.canary) == Some(0)
    }

    /// Polls every 500 ms of virtual time until `p` is mitigated; virtual ms since `origin`.
    pub async fn mitigated_at(&self, p: &Policy, within: Duration) -> Option<u64> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.mitigated(p) {
                return Some(self.sampler.origin.elapsed().as_millis() as u64);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    pub fn audit_of(&self, kind: AuditKind) -> Vec<(String, Millis)> {
        let trail = FileAudit::read_trail(&self.audit_dir.join("audit.jsonl")).unwrap();
        trail
            .into_iter()
            .filter(|r| r.kind == kind)
            .map(|r| (r.service, r.at - 1_800_000_000_000))
            .collect()
    }
}

/// Starts the daemon's own loop; stop it with the returned sender.
pub fn start(
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

/// [`start`], keeping the sender of policy reloads for the test.
pub fn start_reloadable(
    daemon: Daemon,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::sync::mpsc::Sender<PolicyReload>,
    tokio::task::JoinHandle<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(daemon.run(stop_rx, reload_rx));
    (stop_tx, reload_tx, task)
}

/// Every notice sent, in order; and every routed one with its route (`1`).
#[derive(Default)]
pub struct Recorded(pub Mutex<Vec<Notice>>, pub Mutex<Vec<Envelope>>);

impl Notifier for Recorded {
    fn send(&self, notice: &Notice) -> BoxFuture<'_, Result<(), NotifyError>> {
        self.0.lock().unwrap().push(notice.clone());
        Box::pin(async { Ok(()) })
    }

    fn deliver(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), NotifyError>> {
        self.0.lock().unwrap().push(envelope.notice.clone());
        self.1.lock().unwrap().push(envelope);
        Box::pin(async { Ok(()) })
    }
}
