//! One runbook's daemon, assembled as `backout run` assembles it: its config/examples policy
//! (loaded with templates.toml, as a user would), the simulator seeded with its objects, a real
//! Prometheus serving the incident's history, the notification channels a test writes, and a
//! manual clock stepped one poll interval per cycle. Shared by the runbooks 000, 002 and 004
//! tests so each states only its incident, its texts and its expectations.

use crate::istio::History;
use crate::prometheus::Prometheus;
use crate::{audited, audited_now, PromAt};
use backout::actuator::{Actuator, ActuatorConfig};
use backout::audit::{AuditKind, FileAudit};
use backout::clock::{Clock, ManualClock};
use backout::daemon::{Action, Context, Daemon};
use backout::demo::replicas;
use backout::notify::dispatch::Recorders;
use backout::notify::{Dispatcher, NotifyConfig};
use backout::policy::{load_with, LoadOptions, Policy};
use backout::sim::{SimConfig, SimHandle, Simulator};
use backout::source::{PrometheusConfig, PrometheusSource};
use backout::telemetry::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::Api;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MIN: i64 = 60_000;

/// The start of a history ending `minutes` from now, on a 10 s boundary.
pub fn history_start(minutes: i64) -> i64 {
    let wall = backout::clock::SystemClock.now_millis();
    wall - wall % 10_000 - minutes * MIN
}

/// Writes `url` to a secret file in `dir` and returns the `url_file = ...` line for it.
pub fn url_file(dir: &Path, name: &str, url: &str) -> String {
    let f = dir.join(format!("{name}-url"));
    std::fs::write(&f, url).unwrap();
    format!("url_file = {:?}\n", f.display().to_string())
}

pub struct Seed {
    /// config/examples file name.
    pub example: &'static str,
    pub history: History,
    /// Where the daemon's clock starts.
    pub clock_at: i64,
}

pub struct Run {
    pub dir: tempfile::TempDir,
    pub policy: Policy,
    pub sim: SimHandle,
    pub clock: Arc<ManualClock>,
    pub daemon: Daemon,
    pub trail: PathBuf,
    pub metrics: Metrics,
    pub client: kube::Client,
    _prom: Prometheus,
}

impl Run {
    /// Starts everything; `notify` writes backout.toml's `[notify]` table given a directory for
    /// secret files. Every channel the policy routes or escalates to must exist in it.
    pub async fn start(seed: Seed, notify: impl FnOnce(&Path) -> String) -> Run {
        let prom = Prometheus::builder()
            .backfill(seed.history.openmetrics())
            .start()
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        for f in [seed.example, "templates.toml"] {
            std::fs::copy(Path::new("config/examples").join(f), policies.join(f)).unwrap();
        }
        let opts = LoadOptions {
            default_interval: Duration::from_secs(10),
        };
        let policy = load_with(&[policies], &opts).unwrap().remove(0);
        let cfg: NotifyConfig = toml::from_str(&notify(dir.path())).unwrap();
        assert!(cfg.issues().is_empty(), "{:?}", cfg.issues());
        let routes = cfg.check_routes(std::slice::from_ref(&policy));
        assert!(routes.is_empty(), "{routes:?}");

        let sim = Simulator::start_with(
            "127.0.0.1:0".parse().unwrap(),
            SimConfig {
                rollout_delay: Duration::from_millis(100),
            },
        )
        .await
        .unwrap();
        sim.seed_policy(&policy).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;

        let clock = Arc::new(ManualClock::new(seed.clock_at));
        let client = sim.in_process_client();
        let source = PrometheusSource::new(&PrometheusConfig {
            url: prom.url.clone(),
            ..Default::default()
        })
        .unwrap();
        let actuator = Actuator::new(client.clone(), clock.clone(), ActuatorConfig::default());
        let audit = Arc::new(FileAudit::new(dir.path().join("audit")).unwrap());
        let metrics = Metrics::new();
        let recorders = Recorders {
            audit: audit.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
        };
        let dispatcher = Dispatcher::start(cfg, recorders).unwrap();
        let ctx = Context::builder(
            client.clone(),
            Arc::new(PromAt { source }),
            Arc::new(actuator),
            audit.clone(),
        )
        .notifier(Arc::new(dispatcher))
        .metrics(metrics.clone())
        .clock(clock.clone())
        .bad_versions("backout")
        .build();
        let daemon = Daemon::new(ctx, vec![policy.clone()]);
        Run {
            trail: audit.trail_path(),
            dir,
            policy,
            sim,
            clock,
            daemon,
            metrics,
            client,
            _prom: prom,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Polls until recovery is verified (at most `polls`), waiting (real time) for the plan to
    /// complete when the rollback is ordered. Returns when the rollback was ordered.
    pub async fn until_recovered(&mut self, polls: usize) -> i64 {
        let mut rolled_back_at = None;
        for _ in 0..polls {
            let outs = self.daemon.cycle().await;
            let rollback = outs
                .iter()
                .flat_map(|o| &o.orders)
                .any(|o| matches!(o.action, Action::Rollback(_)));
            if rollback && rolled_back_at.is_none() {
                assert!(
                    audited(&self.trail, AuditKind::RollbackCompleted, 1).await,
                    "no rollback completed"
                );
                rolled_back_at = Some(self.now());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            if audited_now(&self.trail, AuditKind::RecoveryVerified) {
                break;
            }
            self.clock.advance(self.policy.analysis.interval);
        }
        assert!(
            audited_now(&self.trail, AuditKind::RecoveryVerified),
            "recovery never verified; audit trail:\n{}",
            std::fs::read_to_string(&self.trail).unwrap_or_default()
        );
        rolled_back_at.expect("the bad canary was never rolled back")
    }

    /// The one incident report, with the timeline, recovery and RTO parts every runbook asks for.
    pub fn report(&self) -> String {
        let reports: Vec<_> = std::fs::read_dir(self.dir.path().join("audit/incidents"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(reports.len(), 1, "{reports:?}");
        let report = std::fs::read_to_string(&reports[0]).unwrap();
        for part in [
            "### Timeline",
            "| first breaching evaluation |",
            "| rollback decided |",
            "recovery verified on the metrics",
            "- **Recovery**: recovered at +",
            "- **RTO**: ",
        ] {
            assert!(report.contains(part), "missing {part:?} in\n{report}");
        }
        report
    }

    /// "Tag the image as broken": waits for the bad-versions record, redeploys the same image
    /// (a new template, as CI does) and expects it rolled back on the very next poll, reason
    /// `known_bad_version`, canary back at zero.
    pub async fn redeploy_is_rolled_back_at_once(&mut self) {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), "backout");
        let until = Instant::now() + Duration::from_secs(10);
        while cms.get_opt("backout-bad-versions").await.unwrap().is_none() {
            assert!(Instant::now() < until, "bad version not recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ns = self.policy.namespace.clone();
        let canary = self.policy.deployments.canary.clone();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let patch = serde_json::json!({"spec": {"replicas": 1, "template": {"metadata": {"annotations": {"ci/build": "2"}}}}});
        deployments
            .patch(&canary, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.clock.advance(self.policy.analysis.interval);
        let outs = self.daemon.cycle().await;
        let order = outs
            .iter()
            .flat_map(|o| &o.orders)
            .next()
            .expect("no order for the redeploy");
        let Action::Rollback(r) = &order.action else {
            panic!("{order:?}")
        };
        assert_eq!(r.first_metric, "known_bad_version");
        assert!(audited(&self.trail, AuditKind::RollbackCompleted, 2).await);
        assert_eq!(replicas(&self.sim, &ns, &canary), Some(0));
    }
}
