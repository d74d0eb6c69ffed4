//! What the engine tells the shell after each evaluation, and what the audit trail and `explain`
//! print: the service health (worst metric), whether to roll back, and why.

use super::rule::{Breach, Reading, Rule};
use super::state::{Alert, Health};
use crate::policy::Level;
use crate::sample::{Millis, Track};
use serde::{Deserialize, Serialize};

/// Where the service is in its release, as the shell knows it. The engine derives warm-up from
/// `started_at` and the policy, so the shell never has to know warm-up rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// A canary is receiving traffic since `started_at`; it is judged (against the stable when a
    /// metric compares). Rollback means: remove the canary.
    Canary { started_at: Millis },
    /// The new version was promoted at `promoted_at` and now serves as the stable; it is judged
    /// alone. Rollback means: undo the stable.
    Bake { promoted_at: Millis },
}

impl Phase {
    /// The track whose behaviour decides a rollback in this phase.
    pub fn subject(self) -> Track {
        match self {
            Phase::Canary { .. } => Track::Canary,
            Phase::Bake { .. } => Track::Stable,
        }
    }
}

/// The stage an evaluation fell in (derived from [`Phase`] and the policy's warm-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Breaches are recorded and may pend, but Critical cannot fire.
    Warmup,
    Analysis,
    Bake,
}

/// Why a metric is not healthy: enough to write an incident note without opening a dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub metric: String,
    /// The track judged (the canary, or the stable during bake).
    pub track: Track,
    pub health: Health,
    /// The value checked against the level at this evaluation, when there was one.
    pub observed: Option<f64>,
    pub reading: Reading,
    /// The level that fired (or, when nothing fired, the one breached now).
    pub threshold: Option<Level>,
    /// When the breach behind a fired level started, or when the metric became inconclusive.
    pub since: Option<Millis>,
    /// When the level fired.
    pub fired_at: Option<Millis>,
}

/// One metric's status at one evaluation, for display and the daemon's own metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricStatus {
    pub metric: String,
    pub health: Health,
    /// This evaluation's outcome before durations were applied.
    pub breach: Breach,
    pub reading: Reading,
    pub warning: Alert,
    pub critical: Alert,
    /// Start of the current run of inconclusive evaluations.
    pub inconclusive_since: Option<Millis>,
}

/// The engine's answer for one service at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub service: String,
    pub namespace: String,
    /// The canary revision this verdict is about (a rollback sticks to it).
    pub revision: String,
    pub at: Millis,
    pub phase: Phase,
    pub stage: Stage,
    /// The worst metric: Critical > Warning > Inconclusive > Healthy (ignored metrics do not count).
    pub health: Health,
    /// Roll back now. Once true for a revision it stays true until `reset_for_revision`.
    pub rollback: bool,
    /// When the rollback decision was first taken, if it was.
    pub rollback_since: Option<Millis>,
    /// The service has been Inconclusive for at least `analysis.no_data_deadline`: a human must
    /// look (the engine never turns missing data into a rollback on its own).
    pub stuck: bool,
    /// Non-healthy metrics, worst first. After a rollback, the reasons that caused it.
    pub reasons: Vec<Reason>,
    /// Every metric, in policy order.
    pub metrics: Vec<MetricStatus>,
}

/// The one way a health is printed: `healthy`, `warning`, `critical`, `inconclusive`,
/// `ignored` (as in the JSON of verdicts).
impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Ignored => "ignored",
            Health::Healthy => "healthy",
            Health::Inconclusive => "inconclusive",
            Health::Warning => "warning",
            Health::Shared => "shared",
            Health::Critical => "critical",
        })
    }
}

/// One reason as people write it in incident notes, the same in daemon logs, incident reports,
/// backtests and `explain`: `error_rate critical on canary: 0.0712, level > 0.05, since
/// 2024-05-01T10:11:10Z`.
impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} on {}: {}",
            self.metric,
            self.health,
            self.track,
            self.detail()
        )
    }
}

impl Reason {
    /// What the metric read, the level and since when, without the metric's name and health
    /// (for lines that say those their own way).
    pub fn detail(&self) -> impl std::fmt::Display + '_ {
        ReasonDetail(self)
    }
}

struct ReasonDetail<'a>(&'a Reason);

impl std::fmt::Display for ReasonDetail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.0;
        write!(f, "{}", r.reading)?;
        if let Some(level) = r
            .threshold
            .filter(|l| l.above.is_some() || l.below.is_some())
        {
            write!(f, ", level {level}")?;
        }
        if let Some(since) = r.since {
            write!(f, ", since {}", crate::sample::rfc3339(since))?;
        }
        Ok(())
    }
}

impl Verdict {
    /// Healthy with every metric judged: the only state in which the shell may advance a canary.
    pub fn promotable(&self) -> bool {
        self.health == Health::Healthy && !self.rollback
    }
}

/// Reasons for the non-healthy metrics, worst first (stable within a health level). Each item is
/// a metric's status, its rule, and the level breached at this evaluation.
pub(crate) fn reasons<'a>(
    items: impl Iterator<Item = (&'a MetricStatus, &'a Rule, Option<Level>)>,
    track: Track,
) -> Vec<Reason> {
    let mut out: Vec<Reason> = items
        .filter(|(s, _, _)| s.health > Health::Healthy)
        .map(|(s, rule, breached_now)| {
            let fired = match s.health {
                Health::Critical => Some((s.critical, rule.critical)),
                Health::Warning => Some((s.warning, rule.warning)),
                _ => None,
            };
            let (since, fired_at, threshold) = match fired {
                Some((
                    Alert::Firing {
                        since, fired_at, ..
                    },
                    level,
                )) => (Some(since), Some(fired_at), level),
                _ => (s.inconclusive_since, None, breached_now),
            };
            Reason {
                metric: s.metric.clone(),
                track,
                health: s.health,
                observed: match &s.reading {
                    Reading::Value { value, .. } => Some(*value),
                    Reading::Shared(cause) => Some(cause.canary),
                    _ => None,
                },
                reading: s.reading.clone(),
                threshold,
                since,
                fired_at,
            }
        })
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.health));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Missing;

    fn reason(reading: Reading, threshold: Option<Level>) -> Reason {
        Reason {
            metric: "error_rate".into(),
            track: Track::Canary,
            health: Health::Critical,
            observed: None,
            reading,
            threshold,
            since: Some(1_714_557_600_000),
            fired_at: None,
        }
    }

    #[test]
    fn a_reason_reads_the_same_wherever_it_is_printed() {
        let value = Reading::Value {
            value: 0.0712,
            subject: 0.0712,
            baseline: None,
        };
        let r = reason(value, Some(Level::above(0.05)));
        assert_eq!(
            r.to_string(),
            "error_rate critical on canary: 0.0712, level > 0.05, since 2024-05-01T10:00:00Z"
        );
        let missing = Reading::Missing {
            track: Track::Canary,
            why: Missing::Absent,
        };
        assert_eq!(
            reason(missing, None).detail().to_string(),
            "no data on canary (empty result), since 2024-05-01T10:00:00Z"
        );
    }

    #[test]
    fn levels_print_as_symbols_or_in_words() {
        assert_eq!(Level::above(0.05).to_string(), "> 0.05");
        assert_eq!(format!("{:#}", Level::below(0.6)), "below 0.6");
        let none = Level {
            above: None,
            below: None,
        };
        assert_eq!(none.to_string(), "");
    }
}
