//! One metric rule evaluated once: read the series, apply the statistic and the baseline
//! comparison, and say which level (if any) the value breaches, or why no judgement is possible.
//!
//! This step has no memory; durations (`for`, `clear_for`) live in `state`.

use super::window::Window;
use crate::policy::defaults;
use crate::policy::{Analysis, Compare, Kind, Level, MetricSpec, NoData, Stat, Unit};
use crate::sample::{rfc3339, Millis, Observation, Track};
use crate::stats::burn_rate::BurnConfig;
use crate::stats::mann_whitney::MannWhitneyConfig;
use crate::stats::sequential::{Counts, Outcome as TestOutcome, SequentialConfig};
use serde::{Deserialize, Serialize};

/// A `MetricSpec` with every default resolved and durations in milliseconds, so evaluation never
/// has to re-interpret optional fields (and `explain` can print exactly what the engine uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub stat: Stat,
    /// Look-back of `stat`, in ms.
    pub stat_window: Millis,
    pub warning: Option<Level>,
    pub critical: Option<Level>,
    /// `for`, in ms (0 = fire on the first breaching evaluation).
    pub for_: Millis,
    /// `clear_for`, in ms (0 = resolve on the first clear evaluation).
    pub clear_for: Millis,
    pub compare: Option<Compare>,
    /// What the value measures (`unit`; unset: a share of requests), for shared-cause counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
    pub min_traffic: Option<f64>,
    pub no_data: NoData,
    /// A newest sample older than this is stale: the source stopped reporting (2 intervals).
    pub stale_after: Millis,
    /// A statistical test instead of levels (`None`: a threshold metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Boxed: a test is 104 bytes, and half a fleet's rules are thresholds without one
    /// (40,000 rules at 10,000 services; issue 10).
    pub test: Option<Box<Test>>,
}

/// The statistical kinds, with every parameter resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Test {
    /// Canary vs stable on counts since counting started (the end of warm-up); during warm-up
    /// only a Bayes factor of `1 / warmup_alpha` on counts since the start fires (0: never).
    /// With a `horizon`, a change detector also runs so a late regression is not diluted by
    /// the healthy hours before it (alpha is shared, see `decision::sequential`).
    Sequential {
        config: SequentialConfig,
        warmup_alpha: f64,
        horizon: Option<Millis>,
    },
    /// The judged track's error ratio against its SLO over several windows.
    BurnRate(BurnConfig),
    /// Canary vs stable values over `stat_window` (fixed-horizon).
    MannWhitney(MannWhitneyConfig),
}

/// A test's outcome as the breach the state machine steps on.
pub(super) fn breach_of(o: TestOutcome) -> Breach {
    match o {
        TestOutcome::Fail => Breach::Critical,
        TestOutcome::Pass => Breach::Clear,
        TestOutcome::Inconclusive => Breach::Inconclusive,
    }
}

/// How many analysis intervals old the newest sample may be before the series counts as missing.
/// Two, so one late or skipped poll does not make a metric inconclusive.
pub const STALE_INTERVALS: i64 = 2;

pub(crate) fn millis(d: std::time::Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

impl Rule {
    /// The rule for `spec`, unset fields at the policy defaults ([`defaults::effective`]: the
    /// loader fills the same values in, but policies built in code arrive unfilled).
    pub fn from_spec(spec: &MetricSpec, analysis: &Analysis) -> Self {
        let interval = analysis.interval.max(std::time::Duration::from_millis(1));
        let d = defaults::effective(spec, interval);
        Rule {
            name: spec.name.clone(),
            stat: d.stat,
            stat_window: millis(d.stat_window),
            warning: spec.warning,
            critical: spec.critical,
            for_: millis(d.for_),
            clear_for: millis(d.clear_for),
            compare: spec.compare,
            unit: spec.unit,
            min_traffic: spec.min_traffic,
            no_data: d.no_data,
            stale_after: millis(interval).saturating_mul(STALE_INTERVALS),
            test: match spec.kind() {
                Kind::Threshold => None,
                Kind::Sequential => spec.sequential.as_ref().map(|s| Test::Sequential {
                    config: s.config(),
                    warmup_alpha: s.warmup_alpha(),
                    horizon: Some(millis(s.horizon())).filter(|ms| *ms > 0),
                }),
                Kind::BurnRate => spec.burn_rate.as_ref().map(|b| Test::BurnRate(b.config())),
                Kind::MannWhitney => spec
                    .mann_whitney
                    .as_ref()
                    .map(|m| Test::MannWhitney(m.config())),
            }
            .map(Box::new),
        }
    }

    /// The factor that turns this metric's value into a share of requests (`unit`; unset reads
    /// as a share from 0 to 1); `None`: not a share, so no counts behind it.
    pub fn share_scale(&self) -> Option<f64> {
        self.unit.map_or(Some(1.0), Unit::share_scale)
    }

    /// The longest look-back this rule needs on its series, for sizing the window buffer.
    pub fn retention(&self) -> Millis {
        self.stat_window.max(self.stale_after)
    }
}

/// Why a series gave no usable value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Missing {
    /// No sample has arrived yet.
    NeverSeen,
    /// The newest poll returned an empty vector.
    Absent,
    /// The newest poll returned NaN or an infinity.
    NotFinite,
    /// The newest poll failed.
    Error { reason: String },
    /// The newest sample is older than `stale_after`.
    Stale { last_at: Millis },
}

/// What the rule saw at this evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reading {
    /// `value` is what the levels were checked against: the subject's statistic, or its ratio /
    /// difference to the baseline. A ratio against a zero baseline is +/-infinity, which JSON
    /// prints as `null`; `subject` and `baseline` keep the raw numbers for the audit trail.
    Value {
        value: f64,
        subject: f64,
        baseline: Option<f64>,
    },
    Missing {
        track: Track,
        why: Missing,
    },
    /// The subject track's request rate is below `min_traffic` (or unknown).
    LowTraffic {
        traffic: Option<f64>,
        floor: f64,
    },
    /// A baseline comparison with no baseline (the stable bake has no other track).
    NoBaseline,
    /// A statistical test's state: the metric fails when `value` reaches `fail_at`.
    Test {
        /// What `value` is: `bayes_factor`, `burn_rate` or `confidence_higher`.
        statistic: String,
        value: f64,
        fail_at: f64,
        outcome: TestOutcome,
        /// Counts the sequential test used (since counting started).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        counts: Option<Counts>,
        explanation: String,
    },
    /// Sequential counts start at the end of warm-up: start-up behaviour is not judged.
    Counting {
        from: Millis,
    },
    /// The canary breached a level the stable breaches too, and is not significantly worse
    /// than it (`decision::shared`): a shared cause, not the canary's regression.
    Shared(Box<super::shared::SharedCause>),
}

/// What a metric read at one evaluation, in a few words: the text of reasons, backtests and
/// `explain --since`.
impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reading::Value {
                value,
                subject,
                baseline,
            } => match baseline {
                Some(b) => write!(f, "{value:.4} (canary {subject:.4} vs stable {b:.4})"),
                None => write!(f, "{value:.4}"),
            },
            Reading::Missing { track, why } => write!(f, "no data on {track} ({why})"),
            Reading::LowTraffic { traffic, floor } => match traffic {
                Some(t) => write!(f, "traffic {t:.3} req/s below min_traffic {floor}"),
                None => write!(f, "no traffic sample (min_traffic {floor})"),
            },
            Reading::NoBaseline => f.write_str("no baseline in this phase"),
            Reading::Test {
                statistic,
                value,
                fail_at,
                explanation,
                ..
            } => write!(
                f,
                "{statistic} {value:.4} (fails at {}): {explanation}",
                crate::stats::threshold_text(*fail_at)
            ),
            Reading::Counting { from } => {
                write!(f, "counting starts at {} (end of warm-up)", rfc3339(*from))
            }
            Reading::Shared(cause) => write!(f, "{cause}"),
        }
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::NeverSeen => f.write_str("no sample yet"),
            Missing::Absent => f.write_str("empty result"),
            Missing::NotFinite => f.write_str("NaN or infinite (0/0?)"),
            Missing::Error { reason } => write!(f, "query failed: {reason}"),
            Missing::Stale { last_at } => write!(f, "stale since {}", rfc3339(*last_at)),
        }
    }
}

/// What one evaluation says, before durations are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Breach {
    Clear,
    Warning,
    Critical,
    /// No judgement possible (missing data under `no_data = "hold"`, low traffic, bad baseline).
    Inconclusive,
    /// The metric is left out of this verdict (`no_data = "ignore"`, or no baseline in bake).
    Ignored,
    /// A critical breach the stable shares, the canary not worse (`on_shared = "hold"`): no
    /// rollback, no promotion.
    Shared,
}

/// Result of one rule evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub reading: Reading,
    pub breach: Breach,
    /// The level that was breached (for `Warning`/`Critical`).
    pub threshold: Option<Level>,
}

/// The series a rule reads at one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The track being judged (the canary during analysis, the stable during bake).
    pub subject: Track,
    pub series: &'a Window,
    /// The other track's series, when a baseline exists in this phase.
    pub baseline: Option<&'a Window>,
    /// Requests per second of the subject track.
    pub traffic: &'a Window,
}

/// Evaluates `rule` at `now`. Order: baseline exists, traffic floor, subject data, baseline
/// data, levels.
pub fn evaluate(rule: &Rule, inputs: Inputs<'_>, now: Millis) -> Outcome {
    if rule.compare.is_some() && inputs.baseline.is_none() {
        return ignored(Reading::NoBaseline);
    }
    if let Some(floor) = rule.min_traffic {
        let traffic = read(inputs.traffic, Stat::Last, 0, rule.stale_after, now).ok();
        if traffic.is_none_or(|t| t < floor) {
            return inconclusive(Reading::LowTraffic { traffic, floor });
        }
    }
    let subject = match read(
        inputs.series,
        rule.stat,
        rule.stat_window,
        rule.stale_after,
        now,
    ) {
        Ok(v) => v,
        Err(why) => return missing(rule, inputs.subject, inputs.subject, why),
    };
    let (value, baseline) = match rule.compare {
        None => (subject, None),
        Some(compare) => {
            let Some(series) = inputs.baseline else {
                return ignored(Reading::NoBaseline);
            };
            match read(series, rule.stat, rule.stat_window, rule.stale_after, now) {
                Ok(base) => (compared(compare, subject, base), Some(base)),
                Err(why) => {
                    let other = match inputs.subject {
                        Track::Canary => Track::Stable,
                        Track::Stable => Track::Canary,
                    };
                    return missing(rule, inputs.subject, other, why);
                }
            }
        }
    };
    let (breach, threshold) = classify(rule, value);
    Outcome {
        reading: Reading::Value {
            value,
            subject,
            baseline,
        },
        breach,
        threshold,
    }
}

/// Levels are strict: a value exactly at a threshold does not breach it.
fn classify(rule: &Rule, value: f64) -> (Breach, Option<Level>) {
    if let Some(l) = rule.critical.filter(|l| l.breached_by(value)) {
        (Breach::Critical, Some(l))
    } else if let Some(l) = rule.warning.filter(|l| l.breached_by(value)) {
        (Breach::Warning, Some(l))
    } else {
        (Breach::Clear, None)
    }
}

/// Ratio against a zero baseline: 0/0 is "same as baseline" (1.0); anything else is infinitely
/// worse in its direction, so a canary erroring against an error-free stable breaches any
/// `above` ratio (Kayenta passes these, see field notes).
pub fn compared(compare: Compare, subject: f64, baseline: f64) -> f64 {
    match compare {
        Compare::Difference => subject - baseline,
        Compare::Ratio if baseline != 0.0 => subject / baseline,
        Compare::Ratio if subject == 0.0 => 1.0,
        Compare::Ratio => subject.signum() * f64::INFINITY,
    }
}

/// The statistic of a series, or why there is none. The newest sample decides presence: if the
/// last poll was Absent/Error or is stale, the series is missing even if older values exist.
pub(super) fn read(
    w: &Window,
    stat: Stat,
    over: Millis,
    stale_after: Millis,
    now: Millis,
) -> Result<f64, Missing> {
    let latest = w.latest(now).ok_or(Missing::NeverSeen)?;
    match &latest.obs {
        Observation::Value(_) => {}
        Observation::Absent => return Err(Missing::Absent),
        Observation::NotFinite(_) => return Err(Missing::NotFinite),
        Observation::Error(reason) => {
            return Err(Missing::Error {
                reason: reason.clone(),
            })
        }
    }
    if now.saturating_sub(latest.at) > stale_after {
        return Err(Missing::Stale { last_at: latest.at });
    }
    w.stat(stat, now, over).ok_or(Missing::Absent)
}

/// Missing data of `track` as `no_data` says: the judged track's may fail (`"fail"`); the
/// baseline's is never a breach, even under `"fail"` (it is not the subject's fault).
pub(super) fn missing(rule: &Rule, subject: Track, track: Track, why: Missing) -> Outcome {
    let reading = Reading::Missing { track, why };
    match rule.no_data {
        NoData::Ignore => ignored(reading),
        NoData::Fail if track == subject => Outcome {
            reading,
            breach: Breach::Critical,
            threshold: rule.critical,
        },
        NoData::Hold | NoData::Fail => inconclusive(reading),
    }
}

pub(super) fn inconclusive(reading: Reading) -> Outcome {
    Outcome {
        reading,
        breach: Breach::Inconclusive,
        threshold: None,
    }
}

pub(super) fn ignored(reading: Reading) -> Outcome {
    Outcome {
        reading,
        breach: Breach::Ignored,
        threshold: None,
    }
}
