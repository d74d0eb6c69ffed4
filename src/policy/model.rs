//! The policy data model: what an SRE writes in `config/policies/*.toml`.
//!
//! These types are the contract between the loader (which fills defaults and validates), the
//! decision engine (which reads levels and durations) and the shell (which renders queries and
//! knows which objects to act on). Unknown keys are rejected so a typo never silently disables a
//! rule.

use super::kinds::{BurnRateSpec, Kind, MannWhitneySpec, SequentialSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One service under canary analysis: where its traffic and Deployments are, and what "bad" means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Service name, rendered as `{{service}}` in queries.
    pub service: String,
    /// Kubernetes namespace of the Deployments and the VirtualService.
    pub namespace: String,
    pub deployments: Deployments,
    pub traffic: Traffic,
    #[serde(default)]
    pub analysis: Analysis,
    /// Extra template variables, rendered as `{{name}}`.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
    #[serde(rename = "metric", default)]
    pub metrics: Vec<MetricSpec>,
    /// Notification channels (names from `[notify.channels]` in backout.toml); unset: the
    /// default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
    /// What a rollback verdict does (`rollback`, `contain`, `notify`; see `response`).
    #[serde(default)]
    pub action: super::response::ActionMode,
    /// Recovery time objective: first bad evidence to recovery verified on the metrics.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub rto: Option<Duration>,
    /// Whole-plan attempts before a failing rollback escalates (unset: 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_attempts: Option<u32>,
    #[serde(default)]
    pub verify: super::response::Verify,
    /// Timed escalation path (runbook 003), started by a failed, worsening or slow recovery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<super::response::EscalationStep>,
    /// File the policy was loaded from; filled by the loader, used in every message.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployments {
    /// The Deployment serving the stable track (rolled back with undo when it changed badly).
    pub stable: String,
    /// The Deployment serving the canary track (scaled to zero on rollback).
    pub canary: String,
}

/// Where the traffic split lives: an Istio VirtualService route (`virtual_service`, `route`), a
/// Gateway API HTTPRoute rule (`http_route`, `rule` or `rule_index`), or, with
/// `kind = "replicas"`, no router at all (the ratio of ready replicas behind one Service). Which
/// keys each kind needs is checked in `validate` (see `super::traffic`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Inferred when absent: `gateway_api` with `http_route`, else `istio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<super::traffic::TrafficKind>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub virtual_service: String,
    /// Name of the `spec.http[]` route that carries the split (Istio).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub route: String,
    /// Name of the Gateway API HTTPRoute carrying the split.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub http_route: String,
    /// `spec.rules[].name` of the HTTPRoute rule carrying the split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Position in `spec.rules` of that rule, for routes whose rules have no names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_index: Option<usize>,
    #[serde(default)]
    pub stable: Destination,
    #[serde(default)]
    pub canary: Destination,
}

/// One track's destination: `host`/`subset` for Istio, `service` (a backendRef's name) for an
/// HTTPRoute.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Service name of the HTTPRoute `backendRefs` entry of this track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// Timing of the analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Analysis {
    /// How often the service is evaluated.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// After a canary starts, breaches are recorded but cannot escalate to rollback until warm-up
    /// is over (start-up spikes are not regressions).
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// After promotion, the stable is watched this long; a breach then rolls the stable back.
    #[serde(with = "humantime_serde")]
    pub bake: Duration,
    /// How long missing data may hold a decision before the verdict escalates to "stuck".
    #[serde(with = "humantime_serde")]
    pub no_data_deadline: Duration,
    /// Query giving requests per second for a track, used for `min_traffic` floors. Template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_query: Option<String>,
    /// Counted by, and held by, the daemon's fleet guard (`[fleet]` in backout.toml). A service
    /// whose rollback must never wait (it is the shared dependency itself) opts out.
    #[serde(default = "yes")]
    pub fleet_guard: bool,
    /// What a shared-cause breach does: a canary threshold breached while the stable breaches
    /// the same level and the canary is not significantly worse (docs/decision.md). Rolling the
    /// canary back does not fix a failing dependency, so by default it holds.
    #[serde(default)]
    pub on_shared: OnShared,
}

/// What a `shared` verdict does (`analysis.on_shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnShared {
    /// No rollback: the breach holds the canary (no promotion) and is reported as shared.
    #[default]
    Hold,
    /// Roll back anyway, as if the stable were fine (the reason still says it was shared).
    Rollback,
}

fn yes() -> bool {
    true
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            warmup: Duration::from_secs(60),
            bake: Duration::from_secs(15 * 60),
            no_data_deadline: Duration::from_secs(10 * 60),
            traffic_query: None,
            fleet_guard: true,
            on_shared: OnShared::Hold,
        }
    }
}

/// One metric rule: a query per track, levels, and how long a breach must last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub name: String,
    /// Name of a shared template (from `templates.toml`) to take defaults and the query from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// PromQL template; `{{service}}`, `{{namespace}}`, `{{track}}`, `{{window}}`,
    /// `{{deployment}}` and `vars` are substituted. Required unless the template gives one.
    /// Shared with the template it came from: 10,000 policies of one template hold one copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Arc<str>>,
    /// Range rendered as `{{window}}` (the PromQL rate window).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    /// Statistic over the samples the engine has seen (default `last`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<Stat>,
    /// Engine-side window for `stat` (default: one interval, i.e. the last sample).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub stat_window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<Level>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<Level>,
    /// A level must hold at every evaluation for this long before it fires (Prometheus `for:`).
    #[serde(
        rename = "for",
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub for_: Option<Duration>,
    /// A fired level must be clear this long before it resolves (Prometheus `keep_firing_for:`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub clear_for: Option<Duration>,
    /// Compare the canary with the stable instead of judging the canary's absolute value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    /// What the value measures (`ratio`, `percent`, `other`), for the shared-cause counts.
    /// Unset: read as a share of requests from 0 to 1 (docs/decision.md, "Shared causes").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
    /// Minimum requests per second on the canary (from `analysis.traffic_query`) for a verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_traffic: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoData>,
    /// `[metric.sequential]`: make this a canary-vs-stable count test (see `kinds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialSpec>,
    /// `[metric.burn_rate]`: make this an SLO burn-rate rule on the judged track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_rate: Option<BurnRateSpec>,
    /// `[metric.mann_whitney]`: compare canary and stable value distributions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mann_whitney: Option<MannWhitneySpec>,
}

impl MetricSpec {
    /// The judgement this metric makes (validation ensures at most one kind table is set).
    pub fn kind(&self) -> Kind {
        if self.sequential.is_some() {
            Kind::Sequential
        } else if self.burn_rate.is_some() {
            Kind::BurnRate
        } else if self.mann_whitney.is_some() {
            Kind::MannWhitney
        } else {
            Kind::Threshold
        }
    }
}

/// A threshold: exactly one of `above` / `below`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
}

impl Level {
    pub fn above(v: f64) -> Self {
        Self {
            above: Some(v),
            below: None,
        }
    }
    pub fn below(v: f64) -> Self {
        Self {
            above: None,
            below: Some(v),
        }
    }
    /// Whether `x` breaches this level.
    pub fn breached_by(&self, x: f64) -> bool {
        self.above.is_some_and(|a| x > a) || self.below.is_some_and(|b| x < b)
    }
}

/// The one way a level is printed (daemon reasons, backtests, the demo, `explain`): `> 0.05`,
/// `< 0.6`; with `{:#}`, in words for sentences: `above 0.05`, `below 0.6`. Both bounds (which
/// validation rejects) are joined with `or`; a level with neither prints nothing.
impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (above, below) = if f.alternate() {
            ("above", "below")
        } else {
            (">", "<")
        };
        let mut sep = "";
        if let Some(a) = self.above {
            write!(f, "{above} {a}")?;
            sep = " or ";
        }
        if let Some(b) = self.below {
            write!(f, "{sep}{below} {b}")?;
        }
        Ok(())
    }
}

/// How a canary value is set against the stable value before levels apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compare {
    /// canary / stable (levels like `above = 2.0` mean "twice the baseline").
    Ratio,
    /// canary - stable.
    Difference,
}

/// What a threshold metric's value measures (`unit`): the shared-cause test reads a share of
/// requests as counts (value x requests = bad events), so it must know the scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// A share of requests from 0 to 1 (an error ratio: 0.05 = 5%).
    Ratio,
    /// A share of requests in percent, 0 to 100 (a query ending in `* 100`; levels in percent).
    Percent,
    /// Anything else (seconds, bytes, a count of restarts): never read as counts, so never a
    /// shared cause.
    Other,
}

impl Unit {
    /// The factor that turns a value into a share of requests; `None`: not a share.
    pub fn share_scale(self) -> Option<f64> {
        match self {
            Unit::Ratio => Some(1.0),
            Unit::Percent => Some(0.01),
            Unit::Other => None,
        }
    }
}

/// Statistic over the engine-side window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    Last,
    Mean,
    Min,
    Max,
    Median,
    P90,
    P95,
    P99,
}

/// What missing data means for this metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    /// Inconclusive: neither promote nor roll back (default).
    #[default]
    Hold,
    /// Treat as a critical breach (for metrics that must always exist, e.g. a heartbeat).
    Fail,
    /// Drop the metric from the verdict while it has no data.
    Ignore,
}

/// A shared metric template (`templates.toml` in a policy directory): metric fields minus the name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Required unless the template is `sequential` (which has its own counter queries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Arc<str>>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<Stat>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub stat_window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<Level>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<Level>,
    #[serde(
        rename = "for",
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub for_: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub clear_for: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_traffic: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoData>,
    /// `[metric.sequential]`: make this a canary-vs-stable count test (see `kinds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialSpec>,
    /// `[metric.burn_rate]`: make this an SLO burn-rate rule on the judged track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_rate: Option<BurnRateSpec>,
    /// `[metric.mann_whitney]`: compare canary and stable value distributions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mann_whitney: Option<MannWhitneySpec>,
}
