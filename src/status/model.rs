//! The JSON of the status API (`/api/v1/services`), public so clients (`backout status`, the web
//! page, analysis endpoints for Argo Rollouts and Flagger) read the same types the daemon writes.
//! Times are unix milliseconds; durations are milliseconds.

use super::history::SeriesPoints;
use crate::decision::{Health, Stage};
use crate::policy::{Compare, Kind, Level, Stat};
use crate::sample::Millis;
use serde::{Deserialize, Serialize};

/// Where a service is in its release (the lifecycle's stage, by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PhaseName {
    /// Not evaluated yet by this replica.
    #[default]
    Pending,
    Idle,
    Canary,
    Bake,
    RolledBack,
}

impl PhaseName {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Pending => "pending",
            PhaseName::Idle => "idle",
            PhaseName::Canary => "canary",
            PhaseName::Bake => "bake",
            PhaseName::RolledBack => "rolled-back",
        }
    }
}

/// The canary under analysis (or the one rolled back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryStatus {
    /// `deployment.kubernetes.io/revision` of the canary Deployment.
    pub revision: u64,
    /// Hash of its pod template (identifies what is deployed).
    pub template_hash: String,
    /// First container image; empty when this replica did not see the canary start.
    pub image: String,
}

/// The engine's latest verdict in short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictStatus {
    pub at: Millis,
    pub health: Health,
    pub stage: Stage,
    /// A rollback was decided for this canary (sticky).
    pub rollback: bool,
    pub rollback_since: Option<Millis>,
    /// Inconclusive for lack of data past `no_data_deadline`: a human must look.
    pub stuck: bool,
    /// Why it is not healthy, one line each, worst first.
    pub reasons: Vec<String>,
}

/// A level that is pending or firing, with how long its breach has held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreachStatus {
    /// `warning` or `critical`.
    pub level: String,
    /// When the breach started.
    pub since: Millis,
    /// How long it has held at the last evaluation.
    pub held_ms: Millis,
    /// How long it must hold to fire (the metric's `for`).
    pub for_ms: Millis,
    pub firing: bool,
}

/// A statistical metric's test: the statistic, its value and what it needs to fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticStatus {
    /// `bayes_factor`, `burn_rate` or `confidence_higher`.
    pub name: String,
    pub value: f64,
    /// The metric fails when `value` reaches this.
    pub fail_at: f64,
    /// `pass`, `fail` or `inconclusive`.
    pub outcome: crate::stats::sequential::Outcome,
}

/// What a metric is judged against (from the policy, defaults resolved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRule {
    pub name: String,
    pub kind: Kind,
    pub stat: Stat,
    pub warning: Option<Level>,
    pub critical: Option<Level>,
    pub for_ms: Millis,
    pub clear_for_ms: Millis,
    pub compare: Option<Compare>,
}

/// One metric now: its value against its levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricStatus {
    #[serde(flatten)]
    pub rule: MetricRule,
    pub health: Health,
    /// The value checked against the levels (the statistic, or its ratio / difference to the
    /// stable). `None` without one (no data, low traffic, a statistical test).
    pub value: Option<f64>,
    /// The last poll of each track.
    pub canary: Option<f64>,
    pub stable: Option<f64>,
    /// The worst level pending or firing.
    pub breach: Option<BreachStatus>,
    pub statistic: Option<StatisticStatus>,
    /// What the engine read, in words (`no data on canary (empty result)`, ...).
    pub reading: String,
}

/// How the last rollback of the service went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackState {
    /// Decided; waiting for the supervisor (or for this replica's turn to act).
    Decided,
    InProgress,
    Succeeded,
    DryRun,
    /// An attempt failed; another follows.
    Retrying,
    /// Given up: a human must take over.
    Failed,
    /// Held by the fleet guard (too many rollbacks at once: likely a shared cause).
    Held,
    /// A newer canary replaced the one being rolled back.
    Superseded,
}

impl RollbackState {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackState::Decided => "decided",
            RollbackState::InProgress => "in-progress",
            RollbackState::Succeeded => "succeeded",
            RollbackState::DryRun => "dry-run",
            RollbackState::Retrying => "retrying",
            RollbackState::Failed => "failed",
            RollbackState::Held => "held",
            RollbackState::Superseded => "superseded",
        }
    }
}

/// The last rollback of a service (kept after the canary is gone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackStatus {
    pub state: RollbackState,
    /// The canary revision rolled back.
    pub revision: Option<u64>,
    pub decided_at: Millis,
    /// When the last change of `state` happened.
    pub updated_at: Millis,
    /// Traffic fully on stable and the canary at zero.
    pub mitigated_at: Option<Millis>,
    /// The reason (first line of the verdict's reasons), or the error of a failed attempt.
    pub detail: String,
}

/// Which replica answers for the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OwnerStatus {
    /// This replica's name (`POD_NAME`, or the host name).
    pub replica: String,
    /// The Lease shard the service hashes to (0 without sharding).
    pub shard: u32,
    /// Whether this replica holds the service's Lease and acts for it; a standby evaluates warm
    /// but leaves the actions to the holder.
    pub acting: bool,
}

/// A service at a glance: one row of `GET /api/v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub namespace: String,
    pub service: String,
    pub phase: PhaseName,
    /// Since when the phase holds (canary start, promotion).
    pub phase_since: Option<Millis>,
    pub canary: Option<CanaryStatus>,
    pub verdict: Option<VerdictStatus>,
    pub metrics: Vec<MetricStatus>,
    pub last_rollback: Option<RollbackStatus>,
    pub owner: OwnerStatus,
    /// The last evaluation by this replica.
    pub evaluated_at: Option<Millis>,
    /// Why the last evaluation could not read the cluster, if it could not.
    pub error: Option<String>,
}

/// What happened, for the timeline marks on plots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    CanaryStarted,
    CanaryStopped,
    StableChanged,
    KnownGood,
    VerdictChanged,
    RollbackDecided,
    RollbackStarted,
    RolledBack,
    RollbackFailed,
    RollbackHeld,
    Superseded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub at: Millis,
    pub kind: TimelineKind,
    pub detail: String,
}

/// `GET /api/v1/services/{namespace}/{service}`: the row plus the last hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDetail {
    #[serde(flatten)]
    pub status: ServiceStatus,
    /// Per metric: `canary`, `stable` and, where it differs from both, `judged`.
    pub history: Vec<SeriesPoints>,
    /// Oldest first, at most [`super::TIMELINE`] events.
    pub timeline: Vec<TimelineEvent>,
}

/// `GET /api/v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    /// The replica that answered.
    pub replica: String,
    /// `standalone`, `leader`, `standby` or `shards:N/S`.
    pub role: String,
    pub services: Vec<ServiceStatus>,
}
