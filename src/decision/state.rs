//! Per-metric state over time: a breach must last `for` before a level fires, and a fired level
//! must be clear for `clear_for` before it resolves. The same semantics as Prometheus alerting
//! rules (`for:` / `keep_firing_for:`), which SREs already know how to read.
//!
//! Each level (warning, critical) is one [`Alert`]. At every evaluation an alert gets one
//! [`Signal`]:
//! - `Breach`: Inactive -> Pending(since now); Pending fires once `now - since >= for`;
//!   Firing stays firing and any clear streak is forgotten.
//! - `Clear`: Pending -> Inactive (a single good evaluation resets the `for` timer); Firing starts
//!   (or continues) a clear streak and resolves once `now - clear_since >= clear_for`.
//! - `Unknown` (inconclusive or ignored data): it is not a breach, so Pending -> Inactive (a gap
//!   in the data restarts `for`: the level must be *seen* to hold at every evaluation); and it is
//!   not evidence of recovery, so Firing stays firing and its clear streak restarts.

use super::rule::{Breach, Rule};
use crate::policy::Level;
use crate::sample::Millis;
use serde::{Deserialize, Serialize};

/// What one evaluation says about one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Breach,
    Clear,
    Unknown,
}

/// The lifecycle of one level of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Alert {
    Inactive,
    /// Breaching at every evaluation since `since`, not for long enough yet.
    Pending {
        since: Millis,
    },
    /// Fired at `fired_at` after breaching since `since`; `clear_since` starts a clear streak.
    Firing {
        since: Millis,
        fired_at: Millis,
        clear_since: Option<Millis>,
    },
}

/// Durations of one level and when it may fire.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub for_: Millis,
    pub clear_for: Millis,
    /// Before this instant the level may be pending but not fire; breaching time before it does
    /// not count towards `for` (warm-up: start-up spikes are not regressions).
    pub fire_from: Millis,
}

impl Alert {
    pub fn step(self, signal: Signal, now: Millis, t: Timing) -> Alert {
        match (self, signal) {
            (Alert::Inactive, Signal::Breach) => Alert::Pending { since: now }.step_pending(now, t),
            (Alert::Inactive, _) => Alert::Inactive,
            (Alert::Pending { .. }, Signal::Breach) => self.step_pending(now, t),
            (Alert::Pending { .. }, _) => Alert::Inactive,
            (
                Alert::Firing {
                    since, fired_at, ..
                },
                Signal::Breach | Signal::Unknown,
            ) => Alert::Firing {
                since,
                fired_at,
                clear_since: None,
            },
            (
                Alert::Firing {
                    since,
                    fired_at,
                    clear_since,
                },
                Signal::Clear,
            ) => {
                let clear_since = clear_since.unwrap_or(now);
                if now.saturating_sub(clear_since) >= t.clear_for {
                    Alert::Inactive
                } else {
                    Alert::Firing {
                        since,
                        fired_at,
                        clear_since: Some(clear_since),
                    }
                }
            }
        }
    }

    fn step_pending(self, now: Millis, t: Timing) -> Alert {
        let Alert::Pending { since } = self else {
            return self;
        };
        let counted_from = since.max(t.fire_from);
        if now >= t.fire_from && now.saturating_sub(counted_from) >= t.for_ {
            Alert::Firing {
                since,
                fired_at: now,
                clear_since: None,
            }
        } else {
            self
        }
    }

    pub fn is_firing(&self) -> bool {
        matches!(self, Alert::Firing { .. })
    }

    /// When the breach behind this alert started, if it is pending or firing.
    pub fn since(&self) -> Option<Millis> {
        match self {
            Alert::Inactive => None,
            Alert::Pending { since } | Alert::Firing { since, .. } => Some(*since),
        }
    }
}

/// The health of a metric (and, as the worst metric, of a service).
/// Ordered by precedence: a verdict is the maximum over its metrics.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Left out of the verdict (`no_data = "ignore"` while missing, no baseline in bake).
    Ignored,
    #[default]
    Healthy,
    /// No judgement possible: blocks promotion, never causes a rollback.
    Inconclusive,
    /// A warning level has fired: blocks promotion, never causes a rollback.
    Warning,
    /// A critical level is breached on both tracks and the canary is not worse (a shared
    /// cause): blocks promotion, never causes a rollback (`on_shared = "hold"`).
    Shared,
    /// A critical level has fired: rollback.
    Critical,
}

/// The memory of one metric between evaluations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricState {
    pub warning: Alert,
    pub critical: Alert,
}

impl Default for MetricState {
    fn default() -> Self {
        Self {
            warning: Alert::Inactive,
            critical: Alert::Inactive,
        }
    }
}

impl MetricState {
    /// Advances both levels by one evaluation. `warmup_until` holds the critical level back.
    pub fn step(&mut self, rule: &Rule, breach: Breach, now: Millis, warmup_until: Millis) {
        let timing = |fire_from| Timing {
            for_: rule.for_,
            clear_for: rule.clear_for,
            fire_from,
        };
        let (warn, crit) = signals(breach);
        // A rule without a warning level never shows Warning, even while critical is pending.
        if has_level(rule.warning) {
            self.warning = self.warning.step(warn, now, timing(Millis::MIN));
        }
        self.critical = self.critical.step(crit, now, timing(warmup_until));
    }

    /// Health given the fired levels and this evaluation's outcome. A fired level outranks
    /// missing data: losing the data does not un-fire an alert.
    pub fn health(&self, breach: Breach) -> Health {
        if self.critical.is_firing() {
            Health::Critical
        } else if self.warning.is_firing() {
            Health::Warning
        } else {
            match breach {
                Breach::Inconclusive => Health::Inconclusive,
                Breach::Ignored => Health::Ignored,
                Breach::Shared => Health::Shared,
                Breach::Clear | Breach::Warning | Breach::Critical => Health::Healthy,
            }
        }
    }
}

fn has_level(l: Option<Level>) -> bool {
    l.is_some_and(|l| l.above.is_some() || l.below.is_some())
}

/// Signals for (warning, critical). A critical breach also breaches warning.
fn signals(b: Breach) -> (Signal, Signal) {
    match b {
        Breach::Clear => (Signal::Clear, Signal::Clear),
        Breach::Warning => (Signal::Breach, Signal::Clear),
        Breach::Critical => (Signal::Breach, Signal::Breach),
        // A shared breach is not the canary's own: it does not count towards `for` (a pending
        // level restarts) and is no evidence of recovery either.
        Breach::Inconclusive | Breach::Ignored | Breach::Shared => {
            (Signal::Unknown, Signal::Unknown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        for_: 30,
        clear_for: 20,
        fire_from: Millis::MIN,
    };

    fn run(signals: &[(Millis, Signal)], t: Timing) -> Alert {
        signals
            .iter()
            .fold(Alert::Inactive, |a, &(now, s)| a.step(s, now, t))
    }

    #[test]
    fn fires_only_after_for_of_breaching_evaluations() {
        use Signal::*;
        assert_eq!(
            run(&[(0, Breach), (10, Breach), (20, Breach)], T),
            Alert::Pending { since: 0 }
        );
        assert!(run(&[(0, Breach), (10, Breach), (20, Breach), (30, Breach)], T).is_firing());
    }

    #[test]
    fn one_clear_or_unknown_evaluation_resets_pending() {
        use Signal::*;
        for gap in [Clear, Unknown] {
            let a = run(&[(0, Breach), (10, Breach), (20, gap), (30, Breach)], T);
            assert_eq!(a, Alert::Pending { since: 30 }, "{gap:?}");
        }
    }

    #[test]
    fn zero_for_fires_on_first_breach() {
        let t = Timing { for_: 0, ..T };
        assert!(Alert::Inactive.step(Signal::Breach, 5, t).is_firing());
    }

    #[test]
    fn firing_resolves_only_after_clear_for_and_unknown_restarts_the_streak() {
        use Signal::*;
        let fired = run(&[(0, Breach), (30, Breach)], T);
        assert!(fired.step(Clear, 40, T).step(Clear, 50, T).is_firing());
        assert_eq!(fired.step(Clear, 40, T).step(Clear, 60, T), Alert::Inactive);
        let interrupted = fired
            .step(Clear, 40, T)
            .step(Unknown, 50, T)
            .step(Clear, 60, T);
        assert!(interrupted.is_firing(), "unknown is not recovery");
        assert!(fired
            .step(Clear, 40, T)
            .step(Breach, 50, T)
            .step(Clear, 60, T)
            .is_firing());
    }

    #[test]
    fn warmup_holds_firing_and_does_not_count_towards_for() {
        use Signal::*;
        let t = Timing {
            fire_from: 100,
            ..T
        };
        let a = run(&[(0, Breach), (50, Breach), (100, Breach)], t);
        assert_eq!(a, Alert::Pending { since: 0 });
        assert!(!a.step(Breach, 120, t).is_firing());
        assert!(a.step(Breach, 130, t).is_firing());
    }

    #[test]
    fn health_precedence() {
        assert!(Health::Critical > Health::Shared);
        assert!(Health::Shared > Health::Warning);
        assert!(Health::Warning > Health::Inconclusive);
        assert!(Health::Inconclusive > Health::Healthy);
        assert!(Health::Healthy > Health::Ignored);
    }
}
