//! The executor's mechanics: retried API calls, the claim on a rollback, progress records, and
//! one step's observe-check-write loop wrapped in its progress records, Event and span.

use super::cluster::{Cluster, Names};
use super::objects::Observed;
use super::progress::{self, Progress, RunState};
use super::report::{RollbackReport, StepOutcome, StepReport};
use super::retry::{self, Failure};
use super::{backup, steps, trace, ActionPlan, Actuator, ActuatorError, Step};
use kube::runtime::events::EventType;
use std::future::Future;

impl Actuator {
    /// One API call within the request deadline, its failure classified for the retry loops.
    async fn within_deadline<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Failure> {
        let deadline = self.config.retry.request_timeout;
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(retry::classify(&e)),
            Err(_) => Err(Failure::Retryable(format!("timed out after {deadline:?}"))),
        }
    }

    /// Run one API call with per-request timeout and bounded backoff.
    pub(super) async fn retrying<T, F, Fut>(
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
            let failure = match self.within_deadline(call()).await {
                Ok(v) => return Ok(v),
                Err(failure) => failure,
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

    pub(super) async fn observe(
        &self,
        c: &Cluster,
        names: &Names,
        backup: &str,
    ) -> Result<Observed, ActuatorError> {
        self.retrying(
            "read stable, canary, ReplicaSets, router and HPAs",
            backup,
            || c.observe(names),
        )
        .await
    }

    /// Create the backup ConfigMap, which claims this canary revision's rollback. If it already
    /// exists (an earlier run, or our own create whose answer was lost), resume from it instead.
    pub(super) async fn claim(
        &self,
        c: &Cluster,
        cm: &serde_json::Value,
        backup_name: &str,
        plan: ActionPlan,
        progress: Progress,
    ) -> Result<(ActionPlan, Progress, bool), ActuatorError> {
        for attempt in 1..=self.config.retry.max_attempts {
            self.fenced(&plan.namespace, &plan.service)?;
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
    pub(super) async fn advance(
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
    pub(super) async fn run_step(
        &self,
        c: &Cluster,
        plan: &ActionPlan,
        step: &Step,
        backup_name: &str,
    ) -> Result<StepReport, ActuatorError> {
        let started_at = self.clock.now_millis();
        let began = tokio::time::Instant::now();
        let names = plan_names(plan);
        let mut tally = Tally::default();
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            let obs = self.observe(c, &names, backup_name).await?;
            let todo = match steps::check(plan, step, &obs)? {
                steps::StepCheck::Done(why) => {
                    return Ok(self.finished(step, tally, why, started_at))
                }
                steps::StepCheck::Todo(todo) => todo,
            };
            if todo.is_empty() {
                if let Some(why) = self.capacity_gave_up(step, began) {
                    return Ok(self.finished(step, tally, why, started_at));
                }
                self.settle(c, plan, &obs, began, backup_name).await?;
                continue;
            }
            if rounds > self.config.retry.max_attempts * 2 {
                return Err(ActuatorError::RetriesExhausted {
                    what: format!("step {}", step.key()),
                    attempts: rounds,
                    last: "writes succeeded but the postcondition does not hold (something reverts them?)".into(),
                    backup: backup_name.into(),
                });
            }
            self.write_missing(c, plan, step, todo, &mut tally, backup_name)
                .await?;
        }
    }

    /// The report of a step whose postcondition holds (or was given up on, see
    /// [`Self::capacity_gave_up`]).
    fn finished(
        &self,
        step: &Step,
        tally: Tally,
        why: String,
        started_at: crate::sample::Millis,
    ) -> StepReport {
        let outcome = if tally.writes.is_empty() {
            StepOutcome::AlreadySatisfied
        } else {
            StepOutcome::Changed
        };
        StepReport {
            step: step.key(),
            outcome,
            detail: why,
            writes: tally.writes,
            diffs: Vec::new(),
            attempts: tally.failures + 1,
            started_at,
            elapsed_ms: self.clock.now_millis() - started_at,
        }
    }

    /// A pre-scale that waits for ready stable replicas (`replicas` mode) stops waiting after
    /// `capacity_wait`: the capacity is there to spare users a dip, but a stable that cannot get
    /// ready must not keep the bad canary serving. The step then ends with this reason.
    fn capacity_gave_up(&self, step: &Step, began: tokio::time::Instant) -> Option<String> {
        match step {
            Step::PreScaleStable {
                replicas,
                ready: true,
                ..
            } if began.elapsed() >= self.config.capacity_wait => Some(format!(
                "scaled the stable to {replicas} but not all were ready after {:?}; going on, since the canary must go",
                self.config.capacity_wait
            )),
            _ => None,
        }
    }

    /// Nothing to write but the postcondition does not hold yet (Verify: the rollout is still
    /// going): wait one poll without holding a place at the gate, or fail past `verify_timeout`.
    async fn settle(
        &self,
        c: &Cluster,
        plan: &ActionPlan,
        obs: &Observed,
        began: tokio::time::Instant,
        backup_name: &str,
    ) -> Result<(), ActuatorError> {
        if began.elapsed() >= self.config.verify_timeout {
            return Err(ActuatorError::VerifyFailed {
                waited: began.elapsed(),
                failures: steps::verify(plan, obs)?,
                backup: backup_name.into(),
            });
        }
        c.pace.release();
        tokio::time::sleep(self.config.verify_poll).await;
        c.pace.hold().await;
        Ok(())
    }

    /// Applies `todo` in order, adding what landed to the tally; the fence is checked before every
    /// write. Stops at the first retryable failure (counted in the tally, after its backoff) so
    /// the caller re-observes: the write may have landed, or the object moved. A fatal failure,
    /// or too many, ends the step.
    async fn write_missing(
        &self,
        c: &Cluster,
        plan: &ActionPlan,
        step: &Step,
        todo: Vec<steps::Mutation>,
        tally: &mut Tally,
        backup_name: &str,
    ) -> Result<(), ActuatorError> {
        let policy = &self.config.retry;
        for m in todo {
            self.fenced(&plan.namespace, &plan.service)?;
            let failure = match self.within_deadline(c.apply(&m, false)).await {
                Ok(()) => {
                    tally.writes.push(m);
                    continue;
                }
                Err(failure) => failure,
            };
            match failure {
                Failure::Fatal(detail) => {
                    return Err(ActuatorError::Api {
                        what: format!("step {}: write {:?}", step.key(), m.target()),
                        detail,
                    })
                }
                Failure::Retryable(last) => {
                    tally.failures += 1;
                    if tally.failures >= policy.max_attempts {
                        return Err(ActuatorError::RetriesExhausted {
                            what: format!("step {}", step.key()),
                            attempts: tally.failures,
                            last,
                            backup: backup_name.into(),
                        });
                    }
                    tokio::time::sleep(policy.delay(tally.failures)).await;
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// What a stored plan observes: its Deployments and its router object.
pub(super) fn plan_names(plan: &ActionPlan) -> Names {
    Names {
        stable: plan.stable.clone(),
        canary: plan.canary.clone(),
        router: super::split::target(&plan.traffic()),
    }
}

/// What one step's writes came to so far.
#[derive(Default)]
struct Tally {
    /// The writes that landed (the step report lists them).
    writes: Vec<steps::Mutation>,
    /// Retryable write failures; the step gives up at `retry.max_attempts`.
    failures: u32,
}

impl Actuator {
    /// One step of a live rollback: its progress records around [`Actuator::run_step`] and its
    /// Event. Runs inside the step's span (see [`trace`]) and records the outcome there.
    pub(super) async fn execute_step(
        &self,
        c: &Cluster,
        plan: &ActionPlan,
        step: &Step,
        backup_name: &str,
        progress: &mut Progress,
        report: &mut RollbackReport,
    ) -> Result<(), ActuatorError> {
        if progress.is_done(step) {
            let done = StepReport {
                step: step.key(),
                outcome: StepOutcome::DoneEarlier,
                detail: "recorded as done by an earlier run".into(),
                writes: Vec::new(),
                diffs: Vec::new(),
                attempts: 0,
                started_at: self.clock.now_millis(),
                elapsed_ms: 0,
            };
            trace::record_step(&done);
            report.steps.push(done);
            return Ok(());
        }
        self.fenced(&plan.namespace, &plan.service)?;
        let next = progress.started(step);
        self.advance(c, backup_name, progress, &next)
            .await
            .inspect_err(|e| trace::record_failure(e))?;
        *progress = next;
        match self.run_step(c, plan, step, backup_name).await {
            Ok(step_report) => {
                trace::record_step(&step_report);
                self.event(report, plan, step, EventType::Normal, &step_report.detail)
                    .await;
                report.steps.push(step_report);
                self.fenced(&plan.namespace, &plan.service)?;
                let next = progress.completed(step);
                self.advance(c, backup_name, progress, &next)
                    .await
                    .inspect_err(|e| trace::record_failure(e))?;
                *progress = next;
                Ok(())
            }
            Err(err) => {
                trace::record_failure(&err);
                let detail = err.to_string();
                self.event(report, plan, step, EventType::Warning, &detail)
                    .await;
                let failed = progress.finished(RunState::Failed);
                // Best effort: the error below is what matters to the caller.
                let _ = self.advance(c, backup_name, progress, &failed).await;
                Err(err)
            }
        }
    }
}
