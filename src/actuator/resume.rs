//! Rollbacks found under way. A daemon that died (or lost its lease) in the middle of a rollback
//! left its backup ConfigMap in state `running`; the next daemon lists those at start-up and
//! drives each to its end from the recorded progress, so a rollback finishes exactly once.

use super::progress::{Progress, RunState};
use super::{backup, plan, Actuator, ActuatorError, Run};
use crate::actuator::RollbackReport;
use crate::policy::Policy;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// A backup ConfigMap whose rollback has not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub namespace: String,
    pub service: String,
    /// The backup ConfigMap's name: what [`Actuator::resume`] takes.
    pub backup: String,
    pub rollback_id: String,
    pub state: RunState,
}

fn in_flight_of(cm: &Value) -> Option<InFlight> {
    let progress = Progress::from_annotations(&backup::annotations_of(cm))?;
    let plan = backup::read_plan(cm).ok()?;
    (progress.state != RunState::Completed).then(|| InFlight {
        namespace: plan.namespace,
        service: plan.service,
        backup: super::objects::name(cm),
        rollback_id: plan.id,
        state: progress.state,
    })
}

impl Actuator {
    /// Backup ConfigMaps in `namespace` whose rollback is `running` or `failed` (not completed).
    pub async fn in_flight(&self, namespace: &str) -> Result<Vec<InFlight>, ActuatorError> {
        let c = self.cluster(namespace);
        let all = self
            .retrying("list backup ConfigMaps", "(listing)", || c.list_backups())
            .await?;
        Ok(all.iter().filter_map(in_flight_of).collect())
    }

    /// Drives the rollback recorded in `backup_name` to its end (paced by `gate`, as a rollback). Refuses (`Superseded`) when the
    /// canary's template changed since: the plan was made for a canary that no longer runs, and
    /// replaying it would take down the new one.
    pub async fn resume(
        &self,
        policy: &Policy,
        backup_name: &str,
        gate: Option<Arc<Semaphore>>,
    ) -> Result<RollbackReport, ActuatorError> {
        let started_at = self.clock.now_millis();
        let mut c = self.cluster(&policy.namespace);
        c.pace = super::pace::Pace::new(gate);
        c.pace.hold().await;
        let cm = self
            .retrying("read backup ConfigMap", backup_name, || {
                c.get_backup(backup_name)
            })
            .await?
            .ok_or_else(|| ActuatorError::Api {
                what: format!("resume from ConfigMap {backup_name:?}"),
                detail: "it was deleted; nothing to resume".into(),
            })?;
        let stored = backup::read_plan(&cm)?;
        let progress = Progress::from_annotations(&backup::annotations_of(&cm))
            .unwrap_or_else(|| Progress::new(&stored.id));
        let names = super::execute::plan_names(&stored);
        let obs = self.observe(&c, &names, backup_name).await?;
        let current = plan::rollback_id(policy, &obs.canary);
        if current != stored.id {
            return Err(ActuatorError::Superseded {
                id: stored.id,
                current,
                backup: backup_name.into(),
            });
        }
        let run = Run {
            backup: backup_name,
            resumed: true,
            started_at,
            dry_run: false,
        };
        self.drive(&c, stored, progress, run).await
    }
}
