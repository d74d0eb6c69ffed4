//! Dry run: the plan's writes are validated by the server (`dryRun=All`) and applied to a local
//! copy of the snapshot, so the report shows each step's diff while nothing is persisted.

use super::cluster::Cluster;
use super::objects::Observed;
use super::report::{ObjectDiff, Outcome, RollbackReport, StepOutcome, StepReport};
use super::{simulate, steps, trace, ActionPlan, Actuator, ActuatorError, Step};
use tracing::Instrument;

impl Actuator {
    pub(super) async fn dry_run(
        &self,
        c: &Cluster,
        plan: ActionPlan,
        mut obs: Observed,
        backup_name: &str,
        started_at: crate::sample::Millis,
    ) -> Result<RollbackReport, ActuatorError> {
        let mut steps_out = Vec::new();
        for step in &plan.steps {
            let span = trace::step_span(&plan, step, true);
            let report = self
                .dry_run_step(c, &plan, step, &mut obs, backup_name)
                .instrument(span.clone())
                .await
                .inspect_err(|e| span.in_scope(|| trace::record_failure(e)))?;
            steps_out.push(report);
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

    /// One step of a dry run: what it would write, applied to the local snapshot `obs` so later
    /// steps see it. Runs inside the step's span and records the outcome there.
    async fn dry_run_step(
        &self,
        c: &Cluster,
        plan: &ActionPlan,
        step: &Step,
        obs: &mut Observed,
        backup_name: &str,
    ) -> Result<StepReport, ActuatorError> {
        let t0 = self.clock.now_millis();
        if *step == Step::Verify {
            let report = StepReport {
                step: step.key(),
                outcome: StepOutcome::WouldChange,
                detail: "would wait for traffic 100/0, canary at 0 and the stable rollout".into(),
                writes: Vec::new(),
                diffs: Vec::new(),
                attempts: 0,
                started_at: t0,
                elapsed_ms: 0,
            };
            trace::record_step(&report);
            return Ok(report);
        }
        let (outcome, detail, writes, diffs) = match steps::check(plan, step, obs)? {
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
                    match simulate::apply(obs, m) {
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
        let report = StepReport {
            step: step.key(),
            outcome,
            detail,
            writes,
            diffs,
            attempts: 1,
            started_at: t0,
            elapsed_ms: self.clock.now_millis() - t0,
        };
        trace::record_step(&report);
        Ok(report)
    }
}
