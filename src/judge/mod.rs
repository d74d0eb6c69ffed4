//! backout as the judge for Argo Rollouts and Flagger: the daemon's latest verdict for a service
//! (read from the [`StatusBoard`]) said as pass / fail / inconclusive with the reasons, for
//! Argo's `web` metric provider (`GET /api/v1/analysis/{namespace}/{service}`) and Flagger's
//! webhooks (`POST /api/v1/flagger/{gate}`), see [`api`].
//!
//! The mapping keeps backout's meaning of each health: `critical` (or a rollback decided) is a
//! failure; a `warning`, missing data, a stuck analysis or a canary this replica has not evaluated
//! yet is inconclusive (blocks promotion, never causes a rollback); `healthy` passes. So a peer
//! using backout as its judge does not roll back a healthy canary on noise or on missing data.

pub mod api;
#[cfg(test)]
mod tests;

use crate::decision::Health;
use crate::sample::Millis;
use crate::status::{PhaseName, ServiceStatus, StatusBoard};
use serde::{Deserialize, Serialize};

/// The judgement in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

/// One metric in the answer: enough for a condition on a single metric and for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricJudgement {
    pub name: String,
    pub health: Health,
    /// The value checked against the levels, if there is one.
    pub value: Option<f64>,
    pub canary: Option<f64>,
    pub stable: Option<f64>,
}

/// The answer of `GET /api/v1/analysis/{namespace}/{service}`. `pass`, `fail` and
/// `inconclusive` repeat `result` as booleans, so an Argo condition can be `result.fail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub namespace: String,
    pub service: String,
    pub result: Outcome,
    pub pass: bool,
    pub fail: bool,
    pub inconclusive: bool,
    /// Why it is not a pass, worst first (the verdict's reasons, or what is missing).
    pub reasons: Vec<String>,
    pub phase: PhaseName,
    /// The canary revision judged, when this replica saw it.
    pub canary_revision: Option<u64>,
    /// When the verdict was made (unix ms); `None` before the first evaluation.
    pub evaluated_at: Option<Millis>,
    pub metrics: Vec<MetricJudgement>,
    /// The replica that answered.
    pub replica: String,
}

/// Pure: the judgement of a service's status.
pub fn judge(s: &ServiceStatus) -> Judgement {
    let (result, reasons) = outcome(s);
    Judgement {
        namespace: s.namespace.clone(),
        service: s.service.clone(),
        result,
        pass: result == Outcome::Pass,
        fail: result == Outcome::Fail,
        inconclusive: result == Outcome::Inconclusive,
        reasons,
        phase: s.phase,
        canary_revision: s.canary.as_ref().map(|c| c.revision),
        evaluated_at: s.verdict.as_ref().map(|v| v.at),
        metrics: s
            .metrics
            .iter()
            .map(|m| MetricJudgement {
                name: m.rule.name.clone(),
                health: m.health,
                value: m.value,
                canary: m.canary,
                stable: m.stable,
            })
            .collect(),
        replica: s.owner.replica.clone(),
    }
}

fn outcome(s: &ServiceStatus) -> (Outcome, Vec<String>) {
    use Outcome::*;
    if let Some(e) = &s.error {
        return (
            Inconclusive,
            vec![format!("the cluster could not be read: {e}")],
        );
    }
    let Some(v) = &s.verdict else {
        return (
            Inconclusive,
            vec![
                "not evaluated yet by this replica (no canary seen, or the daemon just started)"
                    .into(),
            ],
        );
    };
    if v.rollback || s.phase == PhaseName::RolledBack {
        let mut reasons = v.reasons.clone();
        if reasons.is_empty() {
            reasons.push("backout decided to roll this canary back".into());
        }
        return (Fail, reasons);
    }
    match v.health {
        Health::Critical => (Fail, v.reasons.clone()),
        Health::Healthy | Health::Ignored if !v.stuck => (Pass, Vec::new()),
        _ => {
            let mut reasons = v.reasons.clone();
            if v.stuck {
                reasons.insert(
                    0,
                    "stuck: no data past the policy's no_data_deadline; a human must look".into(),
                );
            }
            if reasons.is_empty() {
                reasons.push(format!("{:?}", v.health).to_lowercase());
            }
            (Inconclusive, reasons)
        }
    }
}

/// Where the judge reads statuses from: the daemon's [`StatusBoard`] (a trait so the routes can
/// be tested, and served by another process, without a daemon).
pub trait AnalysisSource: Send + Sync + 'static {
    /// The service's latest status, `None` if no policy on this replica names it.
    fn status(&self, namespace: &str, service: &str) -> Option<ServiceStatus>;
}

impl AnalysisSource for StatusBoard {
    fn status(&self, namespace: &str, service: &str) -> Option<ServiceStatus> {
        self.detail(namespace, service).map(|d| d.status)
    }
}
