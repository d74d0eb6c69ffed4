//! The rollback actuator: executes an [`plan::ActionPlan`] against Kubernetes, step by step, each
//! step re-reading the cluster and checking its postcondition before writing, with bounded
//! retries, crash-safe progress (see [`progress`]), backups before the first change, Kubernetes
//! Events per step, and a dry-run mode that writes nothing.

pub mod backup;
mod cluster;
mod dry_run;
mod events;
mod execute;
#[cfg(any(test, feature = "testkit"))]
pub mod fixtures;
pub mod http_routes;
mod known_good;
pub mod objects;
pub mod pace;
pub mod plan;
pub mod progress;
pub mod report;
mod resume;
pub mod retry;
pub mod routes;
mod simulate;
pub mod split;
pub mod steps;
mod trace;
pub mod undo;

pub use cluster::{http_route_resource, virtual_service_resource};
pub use plan::{ActionPlan, Step, Trigger};
pub use report::{Outcome, RollbackReport, StepOutcome, StepReport};
pub use resume::InFlight;
pub use retry::RetryPolicy;

use crate::clock::Clock;
use crate::policy::Policy;
use cluster::Cluster;
use kube::runtime::events::Reporter;
use kube::Client;
use progress::{Progress, RunState};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Backup(#[from] backup::BackupError),
    #[error("{what}: {detail}")]
    Api { what: String, detail: String },
    #[error("{what}: gave up after {attempts} attempts; last error: {last}. The rollback is recorded in ConfigMap {backup:?}; re-running `backout rollback` resumes it")]
    RetriesExhausted {
        what: String,
        attempts: u32,
        last: String,
        backup: String,
    },
    #[error("verification failed after {waited:?}: {failures:?}. Escalate: look at the stable rollout and the traffic router; backups are in ConfigMap {backup:?}")]
    VerifyFailed {
        waited: Duration,
        failures: Vec<String>,
        backup: String,
    },
    #[error("rollback {id} (ConfigMap {backup:?}) was made for a canary that no longer runs (now {current}); not resumed. Delete the ConfigMap once you have checked the service")]
    Superseded {
        id: String,
        current: String,
        backup: String,
    },
    #[error(
        "cannot record revision {revision} as last known good on Deployment {deployment}: {detail}"
    )]
    KnownGood {
        deployment: String,
        revision: u64,
        detail: String,
    },
    #[error("this replica no longer holds the lease for {namespace}/{service}; the holder resumes the rollback from its backup ConfigMap")]
    Fenced { namespace: String, service: String },
    #[error("another actuator advanced rollback {id} concurrently (ConfigMap {backup:?}); leaving it to that one")]
    Concurrent { id: String, backup: String },
}

/// Knobs of the executor; defaults suit a real cluster.
#[derive(Debug, Clone)]
pub struct ActuatorConfig {
    pub retry: RetryPolicy,
    /// How long Verify waits for the rollout and the canary's pods to settle.
    pub verify_timeout: Duration,
    pub verify_poll: Duration,
    /// How long a `replicas`-mode pre-scale waits for the stable's new replicas to be ready
    /// before the canary is scaled down anyway.
    pub capacity_wait: Duration,
    /// `v1` (Istio >= 1.22) or `v1beta1`.
    pub istio_version: String,
}

impl Default for ActuatorConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            verify_timeout: Duration::from_secs(300),
            verify_poll: Duration::from_secs(2),
            capacity_wait: Duration::from_secs(120),
            istio_version: "v1".into(),
        }
    }
}

/// What to roll back to and why.
#[derive(Debug, Clone, Default)]
pub struct RollbackRequest {
    /// The stable's recorded last known good revision; `None` leaves the stable template alone.
    pub last_known_good: Option<i64>,
    pub trigger: Trigger,
    pub dry_run: bool,
    /// Shared by the rollbacks of one daemon: bounds how many work the API at once.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

/// Whether this daemon may still write for a service: with several replicas only the holder of
/// the service's Lease may (see `ha::Ownership`). Checked before every write.
pub trait Fence: Send + Sync {
    fn may_write(&self, namespace: &str, service: &str) -> bool;
}

/// How a plan is being driven (see `Actuator::drive`).
struct Run<'a> {
    backup: &'a str,
    resumed: bool,
    started_at: crate::sample::Millis,
    dry_run: bool,
}

pub struct Actuator {
    client: Client,
    clock: Arc<dyn Clock>,
    config: ActuatorConfig,
    events: Option<events::EventSink>,
    fence: Option<Arc<dyn Fence>>,
}

impl Actuator {
    pub fn new(client: Client, clock: Arc<dyn Clock>, config: ActuatorConfig) -> Self {
        Self {
            client,
            clock,
            config,
            events: None,
            fence: None,
        }
    }

    /// Writes only while `fence` says this daemon may (HA: it still holds the service's Lease).
    pub fn with_fence(mut self, fence: Arc<dyn Fence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// `Err(Fenced)` when this daemon may no longer write for the service.
    pub(crate) fn fenced(&self, namespace: &str, service: &str) -> Result<(), ActuatorError> {
        match &self.fence {
            Some(f) if !f.may_write(namespace, service) => Err(ActuatorError::Fenced {
                namespace: namespace.into(),
                service: service.into(),
            }),
            _ => Ok(()),
        }
    }

    /// Post a Kubernetes Event on the Deployment for every step (RBAC: create events.k8s.io).
    pub fn with_events(mut self, reporter: Reporter) -> Self {
        self.events = Some(events::EventSink::new(self.client.clone(), reporter));
        self
    }

    fn cluster(&self, namespace: &str) -> Cluster {
        Cluster {
            client: self.client.clone(),
            pace: pace::Pace::default(),
            namespace: namespace.into(),
            vs_resource: virtual_service_resource(&self.config.istio_version),
        }
    }

    /// Roll the service back (or, with `dry_run`, report what a rollback would change), inside a
    /// `rollback` span with one `action_step` span per step (see [`trace`]).
    pub async fn rollback(
        &self,
        policy: &Policy,
        request: RollbackRequest,
    ) -> Result<RollbackReport, ActuatorError> {
        let span = trace::rollback_span(&policy.service, &policy.namespace, request.dry_run);
        let result = self
            .run_rollback(policy, request)
            .instrument(span.clone())
            .await;
        trace::record_rollback(&span, &result);
        result
    }

    async fn run_rollback(
        &self,
        policy: &Policy,
        request: RollbackRequest,
    ) -> Result<RollbackReport, ActuatorError> {
        let started_at = self.clock.now_millis();
        let mut c = self.cluster(&policy.namespace);
        c.pace = pace::Pace::new(request.gate.clone());
        c.pace.hold().await;
        let names = cluster::Names {
            stable: policy.deployments.stable.clone(),
            canary: policy.deployments.canary.clone(),
            router: split::target(&policy.traffic),
        };
        let obs = self.observe(&c, &names, "(none yet)").await?;
        let id = plan::rollback_id(policy, &obs.canary);
        let backup_name = backup::backup_name(&policy.service, &id);
        let existing = self
            .retrying("read backup ConfigMap", &backup_name, || {
                c.get_backup(&backup_name)
            })
            .await?;

        let (plan, progress, resumed) = match existing {
            Some(cm) => (
                backup::read_plan(&cm)?,
                Progress::from_annotations(&backup::annotations_of(&cm))
                    .unwrap_or_else(|| Progress::new(&id)),
                true,
            ),
            None => {
                let plan = plan::build_plan(
                    policy,
                    &obs,
                    request.last_known_good,
                    request.trigger.clone(),
                    started_at,
                )?;
                if request.dry_run {
                    return self.dry_run(&c, plan, obs, &backup_name, started_at).await;
                }
                let progress = Progress::new(&plan.id);
                let cm =
                    backup::config_map(&plan, &backup::objects_to_save(&plan, &obs), &progress);
                self.claim(&c, &cm, &backup_name, plan, progress).await?
            }
        };

        let run = Run {
            backup: &backup_name,
            resumed,
            started_at,
            dry_run: request.dry_run,
        };
        self.drive(&c, plan, progress, run).await
    }

    /// Runs the steps of `plan` not yet recorded as done in `progress`, records completion, and
    /// reports. Shared by a fresh rollback, one found under way, and a resume at start-up.
    async fn drive(
        &self,
        c: &Cluster,
        plan: ActionPlan,
        mut progress: Progress,
        run: Run<'_>,
    ) -> Result<RollbackReport, ActuatorError> {
        let Run {
            backup: backup_name,
            resumed,
            started_at,
            dry_run,
        } = run;
        let mut report = RollbackReport {
            rollback_id: plan.id.clone(),
            namespace: plan.namespace.clone(),
            service: plan.service.clone(),
            trigger: plan.trigger.clone(),
            outcome: Outcome::Completed,
            resumed,
            backup: backup_name.to_string(),
            steps: Vec::new(),
            notes: plan.notes.clone(),
            started_at,
            finished_at: started_at,
            event_errors: Vec::new(),
        };
        if progress.state == RunState::Completed || dry_run {
            report.outcome = if progress.state == RunState::Completed {
                Outcome::AlreadyCompleted
            } else {
                Outcome::DryRun
            };
            report.notes.push(format!(
                "rollback {} of this canary revision was started earlier ({:?}); steps done: {:?}",
                plan.id, progress.state, progress.done
            ));
            report.finished_at = self.clock.now_millis();
            return Ok(report);
        }
        for step in &plan.steps {
            let span = trace::step_span(&plan, step, false);
            self.execute_step(c, &plan, step, backup_name, &mut progress, &mut report)
                .instrument(span)
                .await?;
        }
        self.fenced(&plan.namespace, &plan.service)?;
        let done = progress.finished(RunState::Completed);
        self.advance(c, backup_name, &progress, &done).await?;
        report.finished_at = self.clock.now_millis();
        Ok(report)
    }

    /// Put every object of a rollback back as it was before it (from its backup ConfigMap).
    /// Returns what was restored. The backup itself is kept.
    pub async fn restore(
        &self,
        namespace: &str,
        backup_name: &str,
    ) -> Result<Vec<String>, ActuatorError> {
        let c = self.cluster(namespace);
        let cm = self
            .retrying("read backup ConfigMap", backup_name, || c.get_backup(backup_name))
            .await?
            .ok_or_else(|| ActuatorError::Api {
                what: format!("restore from ConfigMap {backup_name:?} in {namespace:?}"),
                detail: "not found; list backups with `kubectl get cm -l app.kubernetes.io/managed-by=backout`".into(),
            })?;
        let mut restored = Vec::new();
        for saved in backup::read_saved(&cm)? {
            let what = format!("restore {:?} {}", saved.kind, saved.name);
            self.retrying(&what, backup_name, || {
                c.restore_object(saved.kind, &saved.object)
            })
            .await?;
            restored.push(format!("{:?}/{}", saved.kind, saved.name));
        }
        Ok(restored)
    }
}
