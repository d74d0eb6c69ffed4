//! What a metric source hands to the decision engine.
//!
//! The engine must tell "the query returned nothing" apart from "the query returned zero" and from
//! "Prometheus was unreachable": Flagger and Argo Rollouts both conflate these and roll back healthy
//! canaries when data is missing. So every observation carries its kind explicitly.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. The engine never reads a clock: callers pass time in.
pub type Millis = i64;

/// A span of `Millis` as a `Duration` for people (negative spans read as zero).
pub fn duration(ms: Millis) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `ms` as RFC 3339 in UTC (`2024-05-01T10:00:00Z`; milliseconds only when not zero): how
/// every reason, backtest line and `explain` prints a time.
pub fn rfc3339(ms: Millis) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

/// Which side of the traffic split a series belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    Canary,
    Stable,
}

impl Track {
    pub const ALL: [Track; 2] = [Track::Canary, Track::Stable];

    pub fn as_str(self) -> &'static str {
        match self {
            Track::Canary => "canary",
            Track::Stable => "stable",
        }
    }
}

impl std::fmt::Display for Track {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One query result for one series at one poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Observation {
    /// A finite number. Zero is real data (zero errors is good news, not missing news).
    Value(f64),
    /// The query succeeded but returned an empty vector: the series does not exist (yet).
    Absent,
    /// The query returned NaN or +/-Inf (typically 0/0 when there was no traffic).
    NotFinite(f64),
    /// The query failed (timeout, HTTP error, PromQL error). The string is the reason class.
    Error(String),
}

impl Observation {
    /// Classifies a raw float the way the engine wants it.
    pub fn from_f64(v: f64) -> Self {
        if v.is_finite() {
            Observation::Value(v)
        } else {
            Observation::NotFinite(v)
        }
    }

    pub fn value(&self) -> Option<f64> {
        match self {
            Observation::Value(v) => Some(*v),
            _ => None,
        }
    }
}

/// An observation with the time it describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at: Millis,
    pub obs: Observation,
}

impl Sample {
    pub fn new(at: Millis, obs: Observation) -> Self {
        Self { at, obs }
    }

    pub fn value(at: Millis, v: f64) -> Self {
        Self::new(at, Observation::from_f64(v))
    }
}
