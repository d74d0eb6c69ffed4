//! Shared-cause awareness: a canary threshold breach that the stable shares.
//!
//! When a dependency both tracks call fails, the canary's absolute error-rate level fires
//! exactly as the stable's would: rolling the canary back fixes nothing, misattributes the
//! incident, and across a fleet rolls back every canary at once. A breach is **shared** when
//! 1. the metric is a threshold with an `above` critical level and no `compare` (a comparison
//!    with the stable already cancels what both tracks share), or an SLO burn rate,
//! 2. the stable's value, read the same way over the same window, breaches the same level
//!    within the margin (`margin * stable` breaches it: a stable at 4.9% under a 5% level
//!    explains a canary at 5.1% as much as a stable at 5.1% does), and
//! 3. a one-sided test on the counts behind the two values does NOT show the canary worse than
//!    the stable by more than the policy's margin.
//!
//! The counts: a threshold metric's value over its PromQL `window` of `w` seconds, times the
//! track's requests per second (`analysis.traffic_query`) times `w`, is the number of bad events
//! in that window when the value is a share of requests (an error ratio). Conditional on the
//! total `n`, the canary's events are Binomial(n, theta) with `theta0 = m c / (m c + s)` under
//! "the canary is at most m times worse" (the same model as the sequential test,
//! docs/statistics.md); the canary is worse when `P(X >= x | n, theta0) <= SHARED_ALPHA`.
//! For values on another scale (a percent, milliseconds) the counts are scaled up with it, which
//! makes the test more ready to call the canary worse, never less: the error it can make there
//! is the old rollback, not a hidden regression.
//!
//! A metric whose query is not split by track (no `track` label or `{{track}}` /
//! `{{deployment}}` in it: a release-wide count such as user complaints reads the same on both
//! tracks) cannot say where a cause lies: no shared verdict. Only counts with power count: if a canary at twice the margin over the stable would not be
//! significant with these requests (a canary seconds old, a trickle of traffic), there is no
//! shared verdict and the breach stands.
//!
//! Why a lenient level (0.05 per poll) and a fresh test at every poll: the two mistakes are not
//! alike. Calling a shared breach "worse" rolls back as before; calling a worse canary "shared"
//! hides a regression, so the test is run at every poll and any one poll that shows the canary
//! worse breaches as a plain critical. A shared poll resets a pending `for` (it is not a breach
//! of the canary's own), so a level with `for` fires only after `for` of polls that all show
//! the canary worse. Without traffic data there are no counts: no shared verdict (the breach
//! stands, as before).

use super::rule::{self, Breach, Outcome, Reading, Rule};
use super::window::Window;
use crate::policy::{OnShared, Stat};
use crate::sample::Millis;
use serde::{Deserialize, Serialize};
use statrs::function::beta::checked_beta_reg;

/// Level of the per-poll test that the canary is worse than the stable (see the module docs:
/// lenient on purpose, so a worse canary is not hidden).
pub const SHARED_ALPHA: f64 = 0.05;

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
    /// One-sided p-value of "the canary is at most `margin` times worse".
    pub p_value: f64,
    pub margin: f64,
}

/// The inputs of one shared-cause check besides the canary's own outcome.
pub struct Check<'a> {
    pub rule: &'a Rule,
    pub stable: &'a Window,
    /// Requests per second, canary then stable.
    pub traffic: [&'a Window; 2],
    /// The metric's PromQL window (what one value summarises).
    pub window: Millis,
    pub margin: f64,
    pub on_shared: OnShared,
    /// Whether the metric's query tells the tracks apart ([`per_track`]).
    pub per_track: bool,
    pub now: Millis,
}

/// Whether a query is split by track: it names the `track` label (a `{{track}}` matcher, or a
/// batched `by (service, track)`) or the track's `{{deployment}}`.
pub fn per_track(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.contains("track") || q.contains("{{deployment}}"))
}

impl Check<'_> {
    /// `outcome` (the canary's) turned into a shared breach when the stable shares it and the
    /// canary is not worse; otherwise unchanged.
    pub fn apply(&self, outcome: Outcome) -> Outcome {
        match self.cause(&outcome) {
            Some(cause) => self.shared(outcome, cause),
            None => outcome,
        }
    }

    /// A burn-rate breach of the canary (`outcome`) when the stable's burn rate fires too
    /// (`stable_fires`): the counts are the two tracks' error ratios over `self.window` (the
    /// first rule's long window), `ratios` (canary, stable).
    pub fn apply_burn(
        &self,
        outcome: Outcome,
        stable_fires: bool,
        ratios: [Option<f64>; 2],
    ) -> Outcome {
        if outcome.breach != Breach::Critical || !stable_fires {
            return outcome;
        }
        let [Some(canary), Some(stable)] = ratios else {
            return outcome;
        };
        match self.counts_test(canary, stable) {
            Some(cause) => self.shared(outcome, cause),
            None => outcome,
        }
    }

    fn shared(&self, outcome: Outcome, cause: SharedCause) -> Outcome {
        Outcome {
            breach: match self.on_shared {
                OnShared::Hold => Breach::Shared,
                OnShared::Rollback => Breach::Critical,
            },
            reading: Reading::Shared(Box::new(cause)),
            threshold: outcome.threshold,
        }
    }

    fn cause(&self, outcome: &Outcome) -> Option<SharedCause> {
        let rule = self.rule;
        if outcome.breach != Breach::Critical || rule.compare.is_some() {
            return None;
        }
        let level = outcome.threshold.filter(|l| l.above.is_some())?;
        let Reading::Value {
            subject: canary, ..
        } = outcome.reading
        else {
            return None;
        };
        let read = |w: &Window, stat, over| rule::read(w, stat, over, rule.stale_after, self.now);
        let stable = read(self.stable, rule.stat, rule.stat_window).ok()?;
        // The stable breaches the level within the margin: the policy calls a canary up to
        // `margin` times the stable "not worse", so a canary breach the stable's own rate
        // explains (a stable at 4.9% under a 5% level, noise around it) is shared too.
        if !level.breached_by(stable * self.margin) {
            return None;
        }
        self.counts_test(canary, stable)
    }

    /// The test on the counts behind `canary` and `stable` (module docs): the cause when the
    /// canary is not worse, `None` when it is or when there are no counts.
    fn counts_test(&self, canary: f64, stable: f64) -> Option<SharedCause> {
        if !self.per_track {
            return None;
        }
        let read = |w: &Window| rule::read(w, Stat::Last, 0, self.rule.stale_after, self.now);
        let [c_rps, s_rps] = self.traffic.map(|w| read(w).ok());
        let secs = self.window as f64 / 1000.0;
        let (c_req, s_req) = (c_rps? * secs, s_rps? * secs);
        if !(c_req > 0.0 && s_req > 0.0 && canary >= 0.0 && stable >= 0.0) {
            return None;
        }
        let (c_ev, s_ev) = (canary * c_req, stable * s_req);
        // "Not worse" must mean the counts could have shown worse: a canary at twice the
        // margin over the stable must be significant with these requests, else the breach
        // stands (a canary seconds old, or a trickle of traffic, proves nothing either way).
        let power = worse_p_value(
            2.0 * self.margin * stable * c_req,
            s_ev,
            c_req,
            s_req,
            self.margin,
        )?;
        if power > SHARED_ALPHA {
            return None;
        }
        let p_value = worse_p_value(c_ev, s_ev, c_req, s_req, self.margin)?;
        (p_value > SHARED_ALPHA).then_some(SharedCause {
            canary,
            stable,
            canary_events: c_ev,
            canary_requests: c_req,
            stable_events: s_ev,
            stable_requests: s_req,
            p_value,
            margin: self.margin,
        })
    }
}

/// One-sided p-value of "the canary's event rate is at most `margin` times the stable's":
/// `P(X >= x)` for `X ~ Binomial(x + y, theta0)`, `theta0 = m c / (m c + s)`, through the
/// regularised incomplete beta `I_theta0(x, n - x + 1)` (real-valued counts interpolate).
pub fn worse_p_value(x: f64, y: f64, c: f64, s: f64, margin: f64) -> Option<f64> {
    if !(x.is_finite() && y.is_finite() && x >= 0.0 && y >= 0.0) {
        return None;
    }
    if x <= 0.0 {
        return Some(1.0);
    }
    let theta0 = margin * c / (margin * c + s);
    if !(theta0 > 0.0 && theta0 < 1.0) {
        return None;
    }
    checked_beta_reg(x, y + 1.0, theta0).ok()
}

impl std::fmt::Display for SharedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "both tracks breach; the canary is not worse: canary {:.4} vs stable {:.4} \
             (~{:.0} of {:.0} vs ~{:.0} of {:.0} events; p = {:.3} that it is more than {}x worse)",
            self.canary,
            self.stable,
            self.canary_events,
            self.canary_requests,
            self.stable_events,
            self.stable_requests,
            self.p_value,
            self.margin
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p_value_matches_binomial_tails_computed_by_hand() {
        // theta0 = 0.5 (margin 1, equal traffic), n = 4: P(X >= 3) = (4 + 1) / 16.
        let p = worse_p_value(3.0, 1.0, 100.0, 100.0, 1.0).unwrap();
        assert!((p - 5.0 / 16.0).abs() < 1e-12, "{p}");
        // P(X >= 4) = 1/16; no canary events: 1.
        let p = worse_p_value(4.0, 0.0, 100.0, 100.0, 1.0).unwrap();
        assert!((p - 1.0 / 16.0).abs() < 1e-12, "{p}");
        assert_eq!(worse_p_value(0.0, 9.0, 1.0, 9.0, 1.2), Some(1.0));
        // theta0 = 0.2 (canary a fifth of margin-weighted traffic), n = 2: P(X >= 2) = 0.04.
        let p = worse_p_value(2.0, 0.0, 1.0, 4.0, 1.0).unwrap();
        assert!((p - 0.04).abs() < 1e-12, "{p}");
    }

    #[test]
    fn ten_percent_against_two_percent_is_worse_and_equal_rates_are_not() {
        // One minute at 1 and 9 req/s: 6 of 60 canary errors against 10.8 of 540.
        let p = worse_p_value(6.0, 10.8, 60.0, 540.0, 1.2).unwrap();
        assert!(p < SHARED_ALPHA, "{p}");
        // Both at 10%: nowhere near.
        let p = worse_p_value(6.0, 54.0, 60.0, 540.0, 1.2).unwrap();
        assert!(p > 0.5, "{p}");
    }
}
