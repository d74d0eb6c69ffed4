//! Orders: what evaluation asks the actuator to do, as plain values. A cycle turns a rollback
//! verdict (or a stable that passed its bake) into an order and goes on; the supervisor runs it.
//! Building an order does no I/O: what needs a fresh look at the cluster (the undo target, the
//! versions for the notice) is read by the worker that runs it.

use super::schedule::service_key;
use super::service::reason_lines;
use crate::actuator::Trigger;
use crate::decision::Verdict;
use crate::lifecycle::{CanaryId, Release};
use crate::policy::{ActionMode, Policy};
use crate::sample::Millis;
use std::sync::Arc;

/// One thing for the actuator to do for one service.
#[derive(Debug, Clone)]
pub struct Order {
    pub service: String,
    pub policy: Arc<Policy>,
    pub action: Action,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Roll back after a verdict.
    Rollback(RollbackOrder),
    /// Drive a rollback found under way at start-up (its backup ConfigMap).
    Resume { backup: String },
    /// Write the stable's last known good revision on its Deployment.
    RecordKnownGood { revision: u64 },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Rollback(_) => "rollback",
            Action::Resume { .. } => "resume",
            Action::RecordKnownGood { .. } => "record_known_good",
        }
    }
}

/// A rollback verdict, summarised for the actuator, the audit trail and the notices.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackOrder {
    /// The canary it is about; `None` in the bake window (the stable alone is judged).
    pub canary: Option<CanaryId>,
    /// In the bake window the stable returns to its last known good revision.
    pub in_bake: bool,
    pub trigger: Trigger,
    pub reasons: Vec<String>,
    /// The first reason's metric: the `reason` label of `backout_rollbacks_total`.
    pub first_metric: String,
    /// The first breaching evaluation among the reasons (detection time).
    pub detected_at: Millis,
    pub decided_at: Millis,
}

impl RollbackOrder {
    /// The order for a rollback verdict taken while the service is at `release`.
    pub fn from_verdict(v: &Verdict, release: &Release) -> Self {
        let reasons = reason_lines(v);
        let values = v
            .reasons
            .iter()
            .filter_map(|r| r.observed.map(|x| (r.metric.clone(), x)))
            .collect();
        Self {
            canary: match release {
                Release::Canary { id, .. } => Some(id.clone()),
                _ => None,
            },
            in_bake: matches!(release, Release::Bake { .. }),
            trigger: Trigger {
                summary: reasons.join("; "),
                values,
            },
            first_metric: v
                .reasons
                .first()
                .map(|r| r.metric.clone())
                .unwrap_or_else(|| "unknown".into()),
            detected_at: v
                .reasons
                .iter()
                .filter_map(|r| r.since)
                .min()
                .unwrap_or(v.at),
            decided_at: v.at,
            reasons,
        }
    }
}

impl Order {
    /// An order; a policy in shadow mode (`action = "notify"`) makes every order of it a dry
    /// run: decided, reported and notified, nothing changed.
    pub fn new(policy: &Arc<Policy>, action: Action, dry_run: bool) -> Self {
        Self {
            service: service_key(policy),
            policy: policy.clone(),
            action,
            dry_run: dry_run || policy.action == ActionMode::Notify,
        }
    }

    /// The canary this order is about, when it is about one: a newer canary supersedes it.
    pub fn canary(&self) -> Option<&CanaryId> {
        match &self.action {
            Action::Rollback(r) => r.canary.as_ref(),
            _ => None,
        }
    }
}
