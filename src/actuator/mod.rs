//! The rollback actuator: executes an [`plan::ActionPlan`] against Kubernetes, step by step, each
//! step re-reading the cluster and checking its postcondition before writing, with bounded
//! retries, crash-safe progress (see [`progress`]), backups before the first change, Kubernetes
//! Events per step, and a dry-run mode that writes nothing.

pub mod backup;
mod cluster;
pub mod fixtures;
pub mod objects;
pub mod plan;
pub mod progress;
pub mod report;
pub mod retry;
pub mod routes;
mod simulate;
pub mod steps;
pub mod undo;

pub use cluster::virtual_service_resource;
pub use plan::{ActionPlan, Step, Trigger};
pub use report::{Outcome, RollbackReport, StepOutcome, StepReport};
pub use retry::RetryPolicy;

use crate::clock::Clock;
use crate::policy::Policy;
use cluster::Cluster;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use objects::Observed;
use progress::{Progress, RunState};
use report::ObjectDiff;
use retry::Failure;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
    #[error("verification failed after {waited:?}: {failures:?}. Escalate: look at the stable rollout and the VirtualService; backups are in ConfigMap {backup:?}")]
    VerifyFailed {
        waited: Duration,
        failures: Vec<String>,
        backup: String,
    },
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
    /// `v1` (Istio >= 1.22) or `v1beta1`.
    pub istio_version: String,
}

impl Default for ActuatorConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            verify_timeout: Duration::from_secs(300),
            verify_poll: Duration::from_secs(2),
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
}

pub struct Actuator {
    client: Client,
    clock: Arc<dyn Clock>,
    config: ActuatorConfig,
    recorder: Option<Recorder>,
}

impl Actuator {
    pub fn new(client: Client, clock: Arc<dyn Clock>, config: ActuatorConfig) -> Self {
        Self {
            client,
            clock,
            config,
            recorder: None,
        }
    }

    /// Post a Kubernetes Event on the Deployment for every step (RBAC: create events.k8s.io).
    pub fn with_events(mut self, reporter: Reporter) -> Self {
        self.recorder = Some(Recorder::new(self.client.clone(), reporter));
        self
    }

    fn cluster(&self, namespace: &str) -> Cluster {
        Cluster {
            client: self.client.clone(),
            namespace: namespace.into(),
            vs_resource: virtual_service_resource(&self.config.istio_version),
        }
    }

    /// Run one API call with per-request timeout and bounded backoff.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        backup: &str,
        mut call: F,
    ) -> Result<T, ActuatorError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let policy = &self.config.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match tokio::time::timeout(policy.request_timeout, call()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => retry::classify(&e),
                Err(_) => {
                    Failure::Retryable(format!("timed out after {:?}", policy.request_timeout))
                }
            };
            match failure {
                Failure::Fatal(detail) => {
                    return Err(ActuatorError::Api {
                        what: what.into(),
                        detail,
                    })
                }
                Failure::Retryable(last) if attempt >= policy.max_attempts => {
                    return Err(ActuatorError::RetriesExhausted {
                        what: what.into(),
                        attempts: attempt,
                        last,
                        backup: backup.into(),
                    })
                }
                Failure::Retryable(last) => {
                    tracing::debug!(what, attempt, %last, "retrying");
                    tokio::time::sleep(policy.delay(attempt)).await;
                }
            }
        }
    }

    async fn observe(
        &self,
        c: &Cluster,
        policy_or_plan: (&str, &str, &str),
        backup: &str,
    ) -> Result<Observed, ActuatorError> {
        let (s, k, v) = policy_or_plan;
        self.retrying(
            "read stable, canary, ReplicaSets, VirtualService and HPAs",
            backup,
            || c.observe(s, k, v),
        )
        .await
    }

    /// Roll the service back (or, with `dry_run`, report what a rollback would change).
    pub async fn rollback(
        &self,
        policy: &Policy,
        request: RollbackRequest,
    ) -> Result<RollbackReport, ActuatorError> {
        let started_at = self.clock.now_millis();
        let c = self.cluster(&policy.namespace);
        let names = (
            policy.deployments.stable.as_str(),
            policy.deployments.canary.as_str(),
            policy.traffic.virtual_service.as_str(),
        );
        let obs = self.observe(&c, names, "(none yet)").await?;
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

        let mut report = RollbackReport {
            rollback_id: plan.id.clone(),
            namespace: plan.namespace.clone(),
            service: plan.service.clone(),
            trigger: plan.trigger.clone(),
            outcome: Outcome::Completed,
            resumed,
            backup: backup_name.clone(),
            steps: Vec::new(),
            notes: plan.notes.clone(),
            started_at,
            finished_at: started_at,
            event_errors: Vec::new(),
        };
        if progress.state == RunState::Completed || request.dry_run {
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

        let mut progress = progress;
        for step in &plan.steps {
            if progress.is_done(step) {
                report.steps.push(StepReport {
                    step: step.key(),
                    outcome: StepOutcome::DoneEarlier,
                    detail: "recorded as done by an earlier run".into(),
                    writes: Vec::new(),
                    diffs: Vec::new(),
                    attempts: 0,
                    started_at: self.clock.now_millis(),
                    elapsed_ms: 0,
                });
                continue;
            }
            let next = progress.started(step);
            self.advance(&c, &backup_name, &progress, &next).await?;
            progress = next;
            match self.run_step(&c, &plan, step, &backup_name).await {
                Ok(step_report) => {
                    self.event(
                        &mut report,
                        &plan,
                        step,
                        EventType::Normal,
                        &step_report.detail,
                    )
                    .await;
                    report.steps.push(step_report);
                    let next = progress.completed(step);
                    self.advance(&c, &backup_name, &progress, &next).await?;
                    progress = next;
                }
                Err(err) => {
                    let detail = err.to_string();
                    self.event(&mut report, &plan, step, EventType::Warning, &detail)
                        .await;
                    let failed = progress.finished(RunState::Failed);
                    // Best effort: the error below is what matters to the caller.
                    let _ = self.advance(&c, &backup_name, &progress, &failed).await;
                    return Err(err);
                }
            }
        }
        let done = progress.finished(RunState::Completed);
        self.advance(&c, &backup_name, &progress, &done).await?;
        report.finished_at = self.clock.now_millis();
        Ok(report)
    }

    /// Create the backup ConfigMap, which claims this canary revision's rollback. If it already
    /// exists (an earlier run, or our own create whose answer was lost), resume from it instead.
    async fn claim(
        &self,
        c: &Cluster,
        cm: &serde_json::Value,
        backup_name: &str,
        plan: ActionPlan,
        progress: Progress,
    ) -> Result<(ActionPlan, Progress, bool), ActuatorError> {
        for attempt in 1..=self.config.retry.max_attempts {
            let created = self
                .retrying("create backup ConfigMap", backup_name, || {
                    c.create_backup(cm)
                })
                .await?;
            if created {
                return Ok((plan, progress, false));
            }
            let existing = self
                .retrying("read backup ConfigMap", backup_name, || {
                    c.get_backup(backup_name)
                })
                .await?;
            if let Some(existing) = existing {
                let stored = backup::read_plan(&existing)?;
                let recorded = Progress::from_annotations(&backup::annotations_of(&existing))
                    .unwrap_or_else(|| Progress::new(&stored.id));
                return Ok((stored, recorded, true));
            }
            // 409 but gone: deleted meanwhile, or a spurious conflict. Try again.
            tokio::time::sleep(self.config.retry.delay(attempt)).await;
        }
        Err(ActuatorError::Concurrent {
            id: plan.id.clone(),
            backup: backup_name.into(),
        })
    }

    /// Record progress `old -> new`, idempotently: after an ambiguous failure (timeout) the
    /// ConfigMap is re-read and the write counts as done if `new` is already recorded.
    async fn advance(
        &self,
        c: &Cluster,
        backup_name: &str,
        old: &Progress,
        new: &Progress,
    ) -> Result<(), ActuatorError> {
        let patch = progress::transition_patch(old, new);
        let policy = &self.config.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result =
                tokio::time::timeout(policy.request_timeout, c.patch_backup(backup_name, &patch))
                    .await;
            let last = match result {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => match retry::classify(&e) {
                    Failure::Fatal(d) => {
                        return Err(ActuatorError::Api {
                            what: format!("record progress in ConfigMap {backup_name}"),
                            detail: d,
                        })
                    }
                    Failure::Retryable(d) => d,
                },
                Err(_) => "timed out".to_string(),
            };
            // Did the write land after all, or did someone else move the record?
            if let Ok(Ok(Some(cm))) =
                tokio::time::timeout(policy.request_timeout, c.get_backup(backup_name)).await
            {
                let current = Progress::from_annotations(&backup::annotations_of(&cm));
                if current.as_ref() == Some(new) {
                    return Ok(());
                }
                if current.as_ref() != Some(old) {
                    return Err(ActuatorError::Concurrent {
                        id: new.id.clone(),
                        backup: backup_name.into(),
                    });
                }
            }
            if attempt >= policy.max_attempts {
                return Err(ActuatorError::RetriesExhausted {
                    what: format!("record progress in ConfigMap {backup_name}"),
                    attempts: attempt,
                    last,
                    backup: backup_name.into(),
                });
            }
            tokio::time::sleep(policy.delay(attempt)).await;
        }
    }

    /// One step: observe, check the postcondition, write what is missing, repeat until it holds.
    async fn run_step(
        &self,
        c: &Cluster,
        plan: &ActionPlan,
        step: &Step,
        backup_name: &str,
    ) -> Result<StepReport, ActuatorError> {
        let started_at = self.clock.now_millis();
        let began = tokio::time::Instant::now();
        let policy = &self.config.retry;
        let names = (
            plan.stable.as_str(),
            plan.canary.as_str(),
            plan.virtual_service.as_str(),
        );
        let mut writes = Vec::new();
        let mut failures = 0u32;
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            let obs = self.observe(c, names, backup_name).await?;
            let todo = match steps::check(plan, step, &obs)? {
                steps::StepCheck::Done(why) => {
                    return Ok(StepReport {
                        step: step.key(),
                        outcome: if writes.is_empty() {
                            StepOutcome::AlreadySatisfied
                        } else {
                            StepOutcome::Changed
                        },
                        detail: why,
                        writes,
                        diffs: Vec::new(),
                        attempts: failures + 1,
                        started_at,
                        elapsed_ms: self.clock.now_millis() - started_at,
                    })
                }
                steps::StepCheck::Todo(todo) => todo,
            };
            if todo.is_empty() {
                // Verify: nothing to write, wait for the cluster to settle.
                if began.elapsed() >= self.config.verify_timeout {
                    return Err(ActuatorError::VerifyFailed {
                        waited: began.elapsed(),
                        failures: steps::verify(plan, &obs)?,
                        backup: backup_name.into(),
                    });
                }
                tokio::time::sleep(self.config.verify_poll).await;
                continue;
            }
            if rounds > policy.max_attempts * 2 {
                return Err(ActuatorError::RetriesExhausted {
                    what: format!("step {}", step.key()),
                    attempts: rounds,
                    last: "writes succeeded but the postcondition does not hold (something reverts them?)".into(),
                    backup: backup_name.into(),
                });
            }
            for m in todo {
                let result = tokio::time::timeout(policy.request_timeout, c.apply(&m, false)).await;
                let failure = match result {
                    Ok(Ok(())) => {
                        writes.push(m);
                        continue;
                    }
                    Ok(Err(e)) => retry::classify(&e),
                    Err(_) => {
                        Failure::Retryable(format!("timed out after {:?}", policy.request_timeout))
                    }
                };
                match failure {
                    Failure::Fatal(detail) => {
                        return Err(ActuatorError::Api {
                            what: format!("step {}: write {:?}", step.key(), m.target()),
                            detail,
                        })
                    }
                    Failure::Retryable(last) => {
                        failures += 1;
                        if failures >= policy.max_attempts {
                            return Err(ActuatorError::RetriesExhausted {
                                what: format!("step {}", step.key()),
                                attempts: failures,
                                last,
                                backup: backup_name.into(),
                            });
                        }
                        tokio::time::sleep(policy.delay(failures)).await;
                        break; // re-observe: the write may have landed, or the object moved
                    }
                }
            }
        }
    }

    async fn dry_run(
        &self,
        c: &Cluster,
        plan: ActionPlan,
        mut obs: Observed,
        backup_name: &str,
        started_at: crate::sample::Millis,
    ) -> Result<RollbackReport, ActuatorError> {
        let mut steps_out = Vec::new();
        for step in &plan.steps {
            let t0 = self.clock.now_millis();
            if *step == Step::Verify {
                steps_out.push(StepReport {
                    step: step.key(),
                    outcome: StepOutcome::WouldChange,
                    detail: "would wait for traffic 100/0, canary at 0 and the stable rollout"
                        .into(),
                    writes: Vec::new(),
                    diffs: Vec::new(),
                    attempts: 0,
                    started_at: t0,
                    elapsed_ms: 0,
                });
                continue;
            }
            let (outcome, detail, writes, diffs) = match steps::check(&plan, step, &obs)? {
                steps::StepCheck::Done(why) => {
                    (StepOutcome::AlreadySatisfied, why, Vec::new(), Vec::new())
                }
                steps::StepCheck::Todo(todo) => {
                    let mut diffs: Vec<ObjectDiff> = Vec::new();
                    let mut problems = Vec::new();
                    for m in &todo {
                        // Server-side validation first, against the real (unchanged) object.
                        if let Err(e) = self
                            .retrying("server-side dry run", backup_name, || c.apply(m, true))
                            .await
                        {
                            problems.push(e.to_string());
                        }
                        match simulate::apply(&mut obs, m) {
                            Ok(d) => diffs.push(d),
                            Err(e) => problems.push(e.to_string()),
                        }
                    }
                    if problems.is_empty() {
                        (
                            StepOutcome::WouldChange,
                            "would write".to_string(),
                            todo,
                            diffs,
                        )
                    } else {
                        (StepOutcome::Failed, problems.join("; "), todo, diffs)
                    }
                }
            };
            steps_out.push(StepReport {
                step: step.key(),
                outcome,
                detail,
                writes,
                diffs,
                attempts: 1,
                started_at: t0,
                elapsed_ms: self.clock.now_millis() - t0,
            });
        }
        Ok(RollbackReport {
            rollback_id: plan.id.clone(),
            namespace: plan.namespace.clone(),
            service: plan.service.clone(),
            trigger: plan.trigger.clone(),
            outcome: Outcome::DryRun,
            resumed: false,
            backup: backup_name.into(),
            steps: steps_out,
            notes: plan.notes.clone(),
            started_at,
            finished_at: self.clock.now_millis(),
            event_errors: Vec::new(),
        })
    }

    async fn event(
        &self,
        report: &mut RollbackReport,
        plan: &ActionPlan,
        step: &Step,
        type_: EventType,
        detail: &str,
    ) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let name = if step.concerns_canary() {
            &plan.canary
        } else {
            &plan.stable
        };
        let reference = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(name.clone()),
            namespace: Some(plan.namespace.clone()),
            ..Default::default()
        };
        let note: String = format!(
            "{detail}. Rollback {} of {}: {}",
            plan.id,
            plan.service,
            plan.trigger.message()
        )
        .chars()
        .take(1000)
        .collect();
        let ev = Event {
            type_,
            reason: step.event_reason().into(),
            note: Some(note),
            action: "Rollback".into(),
            secondary: None,
        };
        let publish = recorder.publish(&ev, &reference);
        match tokio::time::timeout(self.config.retry.request_timeout, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => report.event_errors.push(format!("{}: {e}", step.key())),
            Err(_) => report
                .event_errors
                .push(format!("{}: timed out", step.key())),
        }
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
