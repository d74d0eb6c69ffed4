//! `backout demo`: the embedded default. A simulated cluster (the Kubernetes simulator) and a
//! simulated workload whose canary turns bad; the production engine, daemon cycle and actuator
//! catch it and roll it back. The demo doubles as a smoke test: it reports whether the rollback
//! happened as expected.

mod direct;
pub mod exporter;
mod feed;
mod view;
pub mod workload;

pub use direct::DirectSampler;
pub use feed::{PrometheusMode, MAX_REAL_SPEED, SCRAPE_INTERVAL};
pub use view::{MetricRow, Poll, Update};

use crate::actuator::{Actuator, ActuatorConfig};
use crate::audit::{AuditRecord, FileAudit};
use crate::clock::{Clock, ManualClock};
use crate::daemon::{Context, Daemon};
use crate::demo::workload::{Load, Workload};
use crate::policy::Policy;
use crate::sample::{Millis, Track};
use crate::sim::{SimConfig, SimHandle, Simulator};
use crate::telemetry::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The demo policy, embedded so `backout demo` needs no files.
pub const POLICY: &str = include_str!("../../config/demo/shop.toml");

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo policy: {0}")]
    Policy(String),
    #[error("simulator: {0}")]
    Sim(#[from] crate::sim::SimError),
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot prepare a temporary directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot serve the workload's metrics for Prometheus: {0}")]
    Exporter(std::io::Error),
    // Not `#[from]`: that would also make it the `source`, and `anyhow`'s `{:#}` would print the
    // message twice.
    #[error("real Prometheus: {0}")]
    Prometheus(crate::promserver::PromServerError),
    #[error("Prometheus client: {0}")]
    Source(crate::source::SourceError),
    #[error("Kubernetes client: {0}")]
    KubeClient(#[from] crate::kubeclient::KubeClientError),
    #[error("admin server (--admin): {0}")]
    Admin(#[from] crate::telemetry::admin::AdminError),
}

impl From<crate::promserver::PromServerError> for DemoError {
    fn from(e: crate::promserver::PromServerError) -> Self {
        DemoError::Prometheus(e)
    }
}

impl From<crate::source::SourceError> for DemoError {
    fn from(e: crate::source::SourceError) -> Self {
        DemoError::Source(e)
    }
}

pub struct DemoOptions {
    /// 1.0 is real time; 4.0 runs four times faster (simulated time, same decisions).
    pub speed: f64,
    /// Seconds of healthy canary before it turns bad.
    pub healthy_for: Duration,
    /// Give up (and fail) if no rollback happened this long after the canary turned bad.
    pub deadline: Duration,
    pub audit_dir: Option<PathBuf>,
    /// Real Prometheus between the workload and the engine, or the direct feed.
    pub prometheus: PrometheusMode,
    /// Serve the admin routes (status API and page, `/metrics`) here while the demo runs, for
    /// `backout status --addr` and a browser.
    pub admin: Option<std::net::SocketAddr>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            speed: 1.0,
            healthy_for: Duration::from_secs(20),
            deadline: Duration::from_secs(60),
            audit_dir: None,
            prometheus: PrometheusMode::Auto,
            admin: None,
        }
    }
}

/// What the demo observed at the end.
#[derive(Debug)]
pub struct DemoResult {
    pub rolled_back: bool,
    pub canary_weight: Option<i64>,
    pub canary_replicas: Option<i64>,
    pub detection_seconds: Option<f64>,
    pub false_rollback: bool,
    pub timeline: Vec<AuditRecord>,
    pub audit_dir: PathBuf,
    /// Whether the metrics went through a real Prometheus (see [`PrometheusMode`]).
    pub real_prometheus: bool,
}

impl DemoResult {
    pub fn success(&self) -> bool {
        self.rolled_back
            && !self.false_rollback
            && self.canary_weight == Some(0)
            && self.canary_replicas == Some(0)
    }
}

fn load_policy(dir: &std::path::Path) -> Result<Policy, DemoError> {
    let path = dir.join("shop.toml");
    std::fs::write(&path, POLICY)?;
    let mut policies =
        crate::policy::load_path(&path).map_err(|e| DemoError::Policy(e.to_string()))?;
    policies
        .pop()
        .ok_or_else(|| DemoError::Policy("embedded policy is empty".into()))
}

/// The canary's weight in the policy's route, read from the simulator (demo, tests, benches).
pub fn canary_weight(sim: &SimHandle, p: &Policy) -> Option<i64> {
    let vs = sim.object(
        "networking.istio.io",
        "virtualservices",
        &p.namespace,
        &p.traffic.virtual_service,
    )?;
    let routes = vs.pointer("/spec/http")?.as_array()?;
    let route = routes
        .iter()
        .find(|r| r.get("name").and_then(|n| n.as_str()) == Some(p.traffic.route.as_str()))?;
    route.get("route")?.as_array()?.iter().find_map(|d| {
        (d.pointer("/destination/subset").and_then(|s| s.as_str())
            == p.traffic.canary.subset.as_deref())
        .then(|| d.get("weight").and_then(|w| w.as_i64()).unwrap_or(0))
    })
}

/// `spec.replicas` of a Deployment in the simulator.
pub fn replicas(sim: &SimHandle, ns: &str, name: &str) -> Option<i64> {
    sim.object("apps", "deployments", ns, name)?
        .pointer("/spec/replicas")?
        .as_i64()
}

/// Runs the scenario, printing progress with `say`.
pub async fn run(opts: DemoOptions, say: &mut dyn FnMut(String)) -> Result<DemoResult, DemoError> {
    run_with(opts, &mut |u: Update| say(u.into_line())).await
}

/// Runs the scenario, reporting structured progress (a terminal can redraw each poll in place).
pub async fn run_with(
    opts: DemoOptions,
    report: &mut dyn FnMut(Update),
) -> Result<DemoResult, DemoError> {
    let tmp = tempfile::tempdir()?;
    let mut policy = load_policy(tmp.path())?;
    let clock = ManualClock::new(crate::clock::SystemClock.now_millis());
    let workload = Workload::new(Arc::new(clock.clone()));
    // Before the simulator: in real mode this rewrites the policy's windows the daemon uses.
    let feed = feed::choose(
        opts.prometheus,
        &workload,
        &mut policy,
        opts.speed,
        &mut |l| report(Update::Line(l)),
    )
    .await?;
    let audit_dir = opts
        .audit_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("audit"));
    let sim = start_cluster(&policy, &feed, report).await?;
    let ctx = daemon_context(&sim, &feed, &clock, &audit_dir)?;
    let _admin = match opts.admin {
        Some(addr) => Some(serve_admin(addr, &ctx, report).await?),
        None => None,
    };
    let mut daemon = Daemon::new(ctx, vec![policy.clone()]);
    let world = World {
        sim: &sim,
        workload: &workload,
        feed: &feed,
        policy: &policy,
        clock: &clock,
    };
    let marks = Marks::new(&opts, clock.now_millis());
    report(Update::Line(format!(
        "policy {}/{}: error_rate warn > 1% crit > 5%, p99 warn > 0.5 s crit > 1 s, for 6 s; poll every {}",
        policy.namespace, policy.service, humantime::format_duration(policy.analysis.interval)
    )));
    let progress = drive(&mut daemon, &world, &marks, report).await;
    let timeline = FileAudit::read_trail(&audit_dir.join("audit.jsonl")).unwrap_or_default();
    let result = DemoResult {
        rolled_back: progress.rolled_back_at.is_some(),
        canary_weight: canary_weight(&sim, &policy),
        canary_replicas: replicas(&sim, &policy.namespace, &policy.deployments.canary),
        detection_seconds: progress
            .rolled_back_at
            .map(|t| (t - marks.bad_at) as f64 / 1000.0),
        false_rollback: progress.false_rollback,
        timeline,
        audit_dir: audit_dir.clone(),
        real_prometheus: feed.is_real(),
    };
    drop(feed); // stops Prometheus now rather than after the copy below
    sim.shutdown().await;
    if opts.audit_dir.is_none() {
        // Keep the audit trail and incident report for the user to read.
        let keep = std::env::temp_dir().join(format!("backout-demo-{}", std::process::id()));
        let _ = copy_dir(&audit_dir, &keep);
        return Ok(DemoResult {
            audit_dir: keep,
            ..result
        });
    }
    Ok(result)
}

/// The daemon's admin routes on `addr` until the returned sender is dropped (the demo's end).
async fn serve_admin(
    addr: std::net::SocketAddr,
    ctx: &Context,
    report: &mut dyn FnMut(Update),
) -> Result<tokio::sync::oneshot::Sender<()>, DemoError> {
    let server = crate::telemetry::AdminServer::bind(addr, ctx.metrics.clone(), ctx.health.clone())
        .await?
        .with_routes(crate::status::api::router(ctx.status.clone()));
    report(Update::Line(format!(
        "status: http://{0}/ in a browser, or `backout status --addr {0}`",
        server.addr
    )));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Ok(stop)
}

/// The simulated cluster with the demo service seeded (stable, canary, the 90/10 route).
async fn start_cluster(
    policy: &Policy,
    feed: &feed::Feed,
    report: &mut dyn FnMut(Update),
) -> Result<SimHandle, DemoError> {
    let sim = Simulator::start_with(
        "127.0.0.1:0"
            .parse()
            .map_err(|e| DemoError::Policy(format!("{e}")))?,
        SimConfig {
            rollout_delay: Duration::from_millis(100),
        },
    )
    .await?;
    sim.seed_policy(policy)?;
    report(Update::Line(format!(
        "simulated cluster: Kubernetes API simulator on {} (kubectl works against it)",
        sim.url()
    )));
    report(Update::Line(feed.description.clone()));
    for note in &feed.notes {
        report(Update::Line(note.clone()));
    }
    Ok(sim)
}

/// The daemon's context against the simulator: the production client stack (deadline, rate
/// limit, request metrics) and actuator, on the demo's simulated clock.
fn daemon_context(
    sim: &SimHandle,
    feed: &feed::Feed,
    clock: &ManualClock,
    audit_dir: &std::path::Path,
) -> Result<Context, DemoError> {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let metrics = Metrics::new();
    let limits = crate::kubeclient::ClientLimits::default();
    let client = crate::kubeclient::for_url(&sim.url(), &limits, &metrics)?;
    let config = ActuatorConfig {
        verify_timeout: Duration::from_secs(30),
        verify_poll: Duration::from_millis(100),
        ..Default::default()
    };
    let actuator = Actuator::new(client.clone(), clock.clone(), config).with_events(
        kube::runtime::events::Reporter {
            controller: "backout".into(),
            instance: None,
        },
    );
    let audit = Arc::new(FileAudit::new(audit_dir)?);
    Ok(
        Context::builder(client, feed.sampler.clone(), Arc::new(actuator), audit)
            .metrics(metrics)
            .clock(clock)
            .status(crate::status::StatusBoard::new("demo"))
            .build(),
    )
}

/// What the scenario drives: borrowed for the run.
struct World<'a> {
    sim: &'a SimHandle,
    workload: &'a Workload,
    feed: &'a feed::Feed,
    policy: &'a Policy,
    clock: &'a ManualClock,
}

/// The scenario's instants, in simulated ms.
struct Marks {
    t0: Millis,
    /// The canary turns bad.
    bad_at: Millis,
    /// No rollback by then: the demo failed.
    give_up: Millis,
}

impl Marks {
    fn new(opts: &DemoOptions, t0: Millis) -> Self {
        let bad_at = t0 + opts.healthy_for.as_millis() as i64;
        Self {
            t0,
            bad_at,
            give_up: bad_at + opts.deadline.as_millis() as i64,
        }
    }
}

/// What the run has seen so far.
#[derive(Debug, Default)]
struct Progress {
    bad: bool,
    rolled_back_at: Option<Millis>,
    false_rollback: bool,
}

/// Polls until three intervals after the rollback, or until the deadline: each tick sets the
/// workload from the route, runs one daemon cycle and reports it, then advances the clock.
async fn drive(
    daemon: &mut Daemon,
    w: &World<'_>,
    marks: &Marks,
    report: &mut dyn FnMut(Update),
) -> Progress {
    let interval = w.policy.analysis.interval;
    let mut progress = Progress::default();
    loop {
        let now = w.clock.now_millis();
        // Traffic follows the VirtualService the actuator edits: after the rollback the canary
        // really receives nothing.
        let cw = canary_weight(w.sim, w.policy).unwrap_or(0) as f64 / 100.0;
        if !progress.bad && now >= marks.bad_at {
            progress.bad = true;
            report(Update::Line(format!(
                "t=+{:>3}s  >>> the canary turns bad: 20% errors, p99 1.5 s",
                (now - marks.t0) / 1000
            )));
        }
        set_load(w, cw, progress.bad);
        w.feed.record();
        let cycle_started = std::time::Instant::now();
        let outcomes = daemon.cycle().await;
        let cycle_ms = cycle_started.elapsed().as_millis();
        for o in &outcomes {
            report(Update::Poll(Poll::new(o, w.policy, now - marks.t0, cw)));
            if let Some(r) = &o.rollback {
                progress.false_rollback |= !progress.bad;
                progress.rolled_back_at.get_or_insert(now);
                report(Update::Line(rollback_line(r, cycle_ms)));
            }
        }
        if let Some(at) = progress.rolled_back_at {
            if now >= at + 3 * interval.as_millis() as i64 {
                break;
            }
        }
        if now >= marks.give_up {
            report(Update::Line("deadline reached without a rollback".into()));
            break;
        }
        tokio::time::sleep(interval.div_f64(w.feed.speed.max(0.01))).await;
        w.clock.advance(interval);
    }
    progress
}

/// 200 req/s split by the route's canary share; the canary fails 20% at 1.5 s p99 once bad.
fn set_load(w: &World<'_>, canary_share: f64, bad: bool) {
    const TOTAL_RPS: f64 = 200.0;
    let canary = Load::healthy(TOTAL_RPS * canary_share);
    let canary = if bad {
        canary.with_errors(0.20).with_latency(1.5)
    } else {
        canary.with_errors(0.002)
    };
    let stable = Load::healthy(TOTAL_RPS * (1.0 - canary_share)).with_errors(0.002);
    w.workload.set(&w.policy.service, Track::Stable, stable);
    w.workload.set(&w.policy.service, Track::Canary, canary);
}

fn rollback_line(r: &crate::actuator::RollbackReport, cycle_ms: u128) -> String {
    format!(
        "          rollback {:?} (cycle incl. actions took {cycle_ms} ms wall time): {}",
        r.outcome,
        r.steps
            .iter()
            .map(|s| format!("{} {:?}", s.step, s.outcome))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}
