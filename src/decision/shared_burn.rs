//! The shared-cause test's reading of an SLO burn rate (`decision::shared`): whether the canary's
//! own counts show its burn at all, whether the stable burns its budget too, and which of the
//! stable's ratios a burning canary is compared with.
//!
//! Why a module of its own: a burn rate reads several windows per track, and a canary younger
//! than a rule's long window has a `rate()` over it that covers only its life, while the
//! stable's covers the whole window; the comparison must cover the same span on both tracks.

use super::rule::{Breach, Outcome, Reading};
use super::shared::{worse_p_value, Check, Counts, Evidence, SHARED_ALPHA};
use crate::stats::burn_rate::{self, BurnConfig, WindowRatio};
use crate::stats::sequential::Outcome as TestOutcome;
use statrs::function::beta::checked_beta_reg;
use std::time::Duration;

/// What the canary's counts over a burn rule's span say about its burn ([`Burn::shown`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shown {
    pub errors: f64,
    pub requests: f64,
    /// One-sided p-value of "the canary burns at no more than the rule's factor".
    pub p_value: f64,
}

/// What the stable's burn rate says about a canary burn-rate breach.
#[derive(Debug, Clone, PartialEq)]
pub struct Burn {
    /// The long window of the rule the canary fired, or the canary's age if shorter: the span
    /// both ratios and the counts cover ([`Burn::of`]).
    pub long: Duration,
    /// The canary's and the stable's error ratios over it.
    pub ratios: [Option<f64>; 2],
    /// The fired rule's long window and the stable's ratio over it: the more precise
    /// reference while the stable's rate has not changed within it ([`Check::apply_burn`]).
    pub rule_long: Duration,
    pub stable_long: Option<f64>,
    /// The stable spends its error budget (1x or more) over both windows of that rule: the
    /// SLO is lost on both tracks, so the level the stable breaches itself.
    pub stable_burns: bool,
    /// The stable burns itself, or at `margin` times its ratios it would fire a rule too.
    pub within_margin: bool,
    /// The stable fires a rule itself, at its own ratios: the SLO pages on both tracks.
    pub stable_fires: bool,
    /// The error ratio at which the canary fires that rule: its factor times the budget.
    pub firing_ratio: f64,
}

impl Burn {
    /// From each rule window's (canary, stable) error ratios and the canary's age; `None` when
    /// the canary fires no rule.
    ///
    /// The counts compare the two tracks over one span, which must be the same on both: a
    /// canary's `rate()` over a window longer than its life covers only its life, while the
    /// stable's covers the whole window. Compared over the fired rule's long window (6 h for a
    /// canary 20 minutes old), a shared incident of a few minutes is most of the canary's ratio
    /// and a sliver of the stable's, and the canary reads "worse" for sharing the incident. So
    /// for a canary younger than the window, the stable's ratio is taken over the canary's
    /// life ([`ratio_over`]), unless its rate over the rest of the window is the same
    /// ([`Check::apply_burn`]).
    pub fn of(
        cfg: &BurnConfig,
        ratios: &[(Duration, [Option<f64>; 2])],
        margin: f64,
        age: Duration,
    ) -> Option<Burn> {
        let track = |i: usize, k: f64| -> Vec<WindowRatio> {
            ratios
                .iter()
                .map(|(w, r)| WindowRatio {
                    window: *w,
                    error_ratio: r[i].map(|x| x * k),
                })
                .collect()
        };
        let fired = burn_rate::evaluate(cfg, &track(0, 1.0)).fired?;
        let rule = cfg.rules.get(fired)?;
        let stable = burn_rate::evaluate(cfg, &track(1, 1.0));
        let stable_fires = stable.fired.is_some();
        let stable_burns = stable.rules.get(fired).is_some_and(|r| {
            r.long_burn.is_some_and(|b| b >= 1.0) && r.short_burn.is_some_and(|b| b >= 1.0)
        });
        let at_margin = burn_rate::evaluate(cfg, &track(1, margin)).outcome == TestOutcome::Fail;
        let span = rule.long.min(age);
        let canary = ratios
            .iter()
            .find(|r| r.0 == rule.long)
            .and_then(|r| r.1[0]);
        let stable: Vec<(Duration, f64)> =
            ratios.iter().filter_map(|r| Some((r.0, r.1[1]?))).collect();
        Some(Burn {
            long: span,
            ratios: [canary, ratio_over(&stable, span)],
            rule_long: rule.long,
            stable_long: stable.iter().find(|w| w.0 == rule.long).map(|w| w.1),
            stable_burns,
            within_margin: stable_burns || at_margin,
            stable_fires,
            firing_ratio: rule.factor * (1.0 - cfg.objective),
        })
    }
}

/// A track's error ratio over the last `span`, from its ratios over the rule windows: exact for a
/// rule window; between two, its events interpolated linearly between theirs (the rate between
/// the two windows' ends taken as steady: traffic too); under the shortest, the shortest's.
pub fn ratio_over(windows: &[(Duration, f64)], span: Duration) -> Option<f64> {
    let below = windows.iter().filter(|w| w.0 <= span).max_by_key(|w| w.0);
    let above = windows.iter().filter(|w| w.0 >= span).min_by_key(|w| w.0);
    match (below, above) {
        (Some(lo), Some(hi)) if hi.0 > lo.0 => {
            let (a, b, t) = (lo.0.as_secs_f64(), hi.0.as_secs_f64(), span.as_secs_f64());
            let events = lo.1 * a + (hi.1 * b - lo.1 * a) * (t - a) / (b - a);
            Some((events / t).max(0.0))
        }
        (Some(w), _) | (None, Some(w)) => Some(w.1),
        (None, None) => None,
    }
}

impl Burn {
    /// Whether the canary's own counts show it burning at the fired rule's factor: the one-sided
    /// p-value of its errors over the span, `requests` of them at its ratio, under a canary at
    /// exactly [`Burn::firing_ratio`] (`P(X >= x)`, `X ~ Binomial(requests, firing_ratio)`).
    ///
    /// Why: a rule's windows are meant to hold enough events for a burn to mean something
    /// (14.4x over an hour of a service's traffic). A canary younger than the window has a
    /// `rate()` over its life only: a minute old, one error in 145 requests reads 6.9x "over
    /// 6 h", which the counts (p = 0.58 at 6x) do not show. `None` without counts.
    pub fn shown(&self, requests: f64) -> Option<Shown> {
        let canary = self.ratios[0]?;
        let p0 = self.firing_ratio;
        let ok = requests.is_finite() && requests > 0.0 && canary.is_finite() && p0 > 0.0;
        if !ok || p0 >= 1.0 {
            return None;
        }
        let errors = (canary * requests).clamp(0.0, requests);
        let p_value = if errors <= 0.0 {
            1.0
        } else {
            checked_beta_reg(errors, requests - errors + 1.0, p0).ok()?
        };
        Some(Shown {
            errors,
            requests,
            p_value,
        })
    }

    /// The stable's ratio to compare a burning canary with, the stable at `rps` requests per
    /// second: over the canary's life (`span`, the ratio in [`Burn::ratios`]) when the stable's
    /// rate there differs significantly (two-sided, `SHARED_ALPHA`) from its rate over the rest
    /// of the rule's long window (a shared incident, or an old one, within it); otherwise over
    /// the whole long window: the same rate with many times the events, whose smaller noise
    /// keeps a canary's own noise from reading worse against a noisy reference.
    pub fn reference(&self, span: f64, rps: f64) -> f64 {
        let Some(long) = self.stable_long.filter(|_| self.long < self.rule_long) else {
            return span;
        };
        let (t, l) = (self.long.as_secs_f64(), self.rule_long.as_secs_f64());
        let (c, s) = (rps * t, rps * (l - t));
        let (x, y) = (span * c, (long * rps * l - span * c).max(0.0));
        let differs = |p: Option<f64>| p.is_some_and(|p| p <= SHARED_ALPHA / 2.0);
        let changed =
            differs(worse_p_value(x, y, c, s, 1.0)) || differs(worse_p_value(y, x, s, c, 1.0));
        if changed {
            span
        } else {
            long
        }
    }
}

/// The canary-phase burn-rate path of the shared-cause check.
impl Check<'_> {
    /// A burn-rate breach of the canary (`outcome`) judged with what the stable's burn says
    /// ([`Burn`]): the counts are the two tracks' error ratios over `self.window`.
    pub fn apply_burn(self, outcome: Outcome, burn: &Burn) -> Outcome {
        if outcome.breach != Breach::Critical {
            return outcome;
        }
        let outcome = self.burn_shown(outcome, burn);
        if outcome.breach != Breach::Critical || !burn.within_margin {
            return outcome;
        }
        let [Some(canary), Some(span)] = burn.ratios else {
            return outcome;
        };
        let stable = self.stable_reference(burn, span);
        // When the stable fires a rule itself, the SLO pages on both tracks whatever the canary
        // does, and a canary's reading on a handful of requests (3 errors in 67: 4.5% against
        // the stable's 1.4%) is no evidence of its own until the counts show it worse: so no
        // bound on how far the canary's point estimate may read over the stable's.
        let look_alike = !burn.stable_fires;
        let result = match self.counts_test(canary, stable, 1.0, look_alike, Evidence::Anytime) {
            Counts::NotWorse(cause) => self.shared(outcome, cause),
            Counts::Underpowered(cause) if burn.stable_burns => self.shared(outcome, cause),
            Counts::Leaning { p_value, e_value } => not_yet_shown(outcome, p_value, e_value),
            Counts::Underpowered(_) | Counts::Worse | Counts::Unknown => outcome,
        };
        self.remember(result)
    }

    /// A canary burn-rate breach its own counts over the span do not show (`Burn::shown`, at
    /// `SHARED_ALPHA`): inconclusive, the reading saying why; otherwise unchanged. Without
    /// counts (no traffic data) the breach stands, as before.
    fn burn_shown(&self, outcome: Outcome, burn: &Burn) -> Outcome {
        let shown = self
            .canary_requests_over_window()
            .and_then(|n| burn.shown(n));
        let Some(shown) = shown.filter(|s| s.p_value > SHARED_ALPHA) else {
            return outcome;
        };
        inconclusive(
            outcome,
            &format!(
                "not shown on the canary's counts: ~{:.0} errors in {:.0} requests \
                 (p = {:.2} at the rule's factor)",
                shown.errors, shown.requests, shown.p_value
            ),
        )
    }

    /// The stable's ratio to compare a burning canary with (`decision::shared_burn`).
    fn stable_reference(&self, burn: &Burn, span: f64) -> f64 {
        match self.requests_per_second(1) {
            Some(rps) => burn.reference(span, rps),
            None => span,
        }
    }
}

/// A burning canary that reads worse than a burning stable at this poll but whose counts have
/// not shown it (`Counts::Leaning`): inconclusive, not rolled back and not called shared, the
/// reading saying how far the evidence has come.
///
/// Why not a rollback: while both tracks burn, the test runs at every poll of a canary that may
/// live a day, and a fresh 0.05 test at each poll finds a canary no worse than the stable
/// "worse" sooner or later (2.6% of healthy one-hour canaries of the devops-agent policy, whose
/// service burns its budget on both tracks). The mixture e-value over the canary's counts keeps
/// that chance at 0.05 whenever it is polled, and a canary that is worse keeps adding to it.
fn not_yet_shown(outcome: Outcome, p_value: f64, e_value: f64) -> Outcome {
    inconclusive(
        outcome,
        &format!(
            "both tracks burn and the canary reads worse at this poll (p = {p_value:.3}) but \
             its counts have not shown it yet (e-value {e_value:.1} of the {:.0} that would)",
            1.0 / SHARED_ALPHA
        ),
    )
}

/// A burn-rate breach made inconclusive, `why` appended to its test's explanation.
fn inconclusive(mut outcome: Outcome, why: &str) -> Outcome {
    if let Reading::Test { explanation, .. } = &mut outcome.reading {
        explanation.push_str("; ");
        explanation.push_str(why);
    }
    Outcome {
        breach: Breach::Inconclusive,
        threshold: None,
        ..outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_over_a_span_between_two_windows_interpolates_their_events() {
        let m = |x: u64| Duration::from_secs(60 * x);
        let w = [(m(5), 0.032), (m(30), 0.0095), (m(360), 0.0054)];
        // 20 minutes: the 5m window's 9.6 event-seconds per request-second, plus 15 of the 25
        // minutes between it and the 30m window's 17.1 (7.5 in all): 14.1 over 20 minutes.
        let r = ratio_over(&w, m(20)).unwrap();
        assert!((r - 0.01175).abs() < 1e-12, "{r}");
        assert_eq!(ratio_over(&w, m(30)), Some(0.0095));
        // Under the shortest window: the shortest's; nothing to read: none.
        assert_eq!(ratio_over(&w, m(2)), Some(0.032));
        assert_eq!(ratio_over(&[], m(2)), None);
    }
}
