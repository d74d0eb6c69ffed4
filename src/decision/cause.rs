//! What the shared-cause test saw at one poll (`decision::shared`): kept in the reading so the
//! reason, `explain`, backtests, the notice and the audit record all say why a breach held.

use serde::{Deserialize, Serialize};

/// What the shared-cause test saw: shown in reasons, `explain` and backtests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedCause {
    /// The canary's and the stable's values of the metric.
    pub canary: f64,
    pub stable: f64,
    /// Bad events and requests behind each value over the metric's window.
    pub canary_events: f64,
    pub canary_requests: f64,
    pub stable_events: f64,
    pub stable_requests: f64,
    /// One-sided p-value of "the canary is at most `margin` times worse", on the counts
    /// divided by `dispersion`.
    pub p_value: f64,
    pub margin: f64,
    /// The quasi-binomial factor: how many times the binomial variance the canary's counts
    /// have shown (`decision::dispersion`; 1: binomial).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub dispersion: f64,
    /// The requests so far cannot yet show a canary twice the margin worse: held while the
    /// stable breaches the level, until the counts can tell the tracks apart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_power: bool,
    /// The stable is under the level at this poll, but the metric was shared within its `for`:
    /// the incident is carried through the stable's dip (`shared::Memory::since`). A carried
    /// poll does not extend the hold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carried: bool,
    /// The stable is under the level (margin included) but its rate has risen this many times
    /// over its own earlier rate, significantly (`decision::elevation`): the evidence of a
    /// shared cause that does not hang on where the level sits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_rise: Option<f64>,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

impl std::fmt::Display for SharedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match self.pending_power {
            false => "the canary is not worse",
            true => "too few requests yet to tell whether the canary is worse",
        };
        match (self.carried, self.stable_rise) {
            (_, Some(rise)) => write!(
                f,
                "the stable's rate rose {rise:.1}x over its own earlier rate"
            )?,
            (false, None) => f.write_str("both tracks breach")?,
            (true, None) => f.write_str(
                "both tracks breached within the level's `for` (the stable dipped under it)",
            )?,
        }
        write!(
            f,
            "; {verdict}: canary {:.4} vs stable {:.4} \
             (~{:.0} of {:.0} vs ~{:.0} of {:.0} events; p = {:.3} that it is more than {}x worse",
            self.canary,
            self.stable,
            self.canary_events,
            self.canary_requests,
            self.stable_events,
            self.stable_requests,
            self.p_value,
            self.margin
        )?;
        match self.dispersion > 1.0 {
            true => write!(
                f,
                ", counts {:.1}x as variable as binomial)",
                self.dispersion
            ),
            false => f.write_str(")"),
        }
    }
}
