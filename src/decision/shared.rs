//! Shared-cause awareness: a canary level breach that the stable shares.
//!
//! When a dependency both tracks call fails, the canary's absolute error-rate level fires
//! exactly as the stable's would: rolling the canary back fixes nothing, misattributes the
//! incident, and across a fleet rolls back every canary at once. A breach is **shared** when
//! 1. the metric is a threshold with an `above` critical level (absolute, or a `compare` with
//!    the stable), or an SLO burn rate,
//! 2. the stable's rate can explain the level: for an absolute level, the stable breaches it
//!    within the margin (`margin * stable` breaches it: a stable at 4.9% under a 5% level
//!    explains a canary at 5.1% as much as a stable at 5.1% does; and for the rule's `for`, or
//!    its window if longer, after the stable last did so or the last shared poll, so a stable
//!    that dips under the level for a poll does not end a shared incident: the incident is the
//!    stable's to show, whatever the canary read at the time, and overlapping values of one
//!    window dipping for less than a window are its noise); or, for an absolute level, the
//!    stable's rate has risen significantly beyond the margin over its own earlier rate
//!    (`decision::elevation`: an incident at the level leaves the stable's value just under
//!    `level / margin` for minutes, and the window filling at its start does the same, while
//!    the rise shows that something both tracks share moved); for a `difference` level,
//!    always (its noise grows with the rate both tracks share: at 10% on both a 1-point level
//!    is within the canary's noise, while at 0.5% a 1-point excess is 3x, which the test below
//!    shows worse); for a `ratio` level, only one below the margin; for a burn rate, the stable
//!    burning its error budget (1x or more) over both windows of the rule the canary fired, or
//!    firing a rule at `margin` times its ratios, and
//! 3. a one-sided test on the counts behind the two values does NOT show the canary worse than
//!    the stable by more than the policy's margin.
//!
//! The counts: a threshold metric's value over its PromQL `window` of `w` seconds, times the
//! track's requests per second (`analysis.traffic_query`) times `w`, is the number of bad events
//! in that window when the value is a share of requests (`unit = "ratio"`, the default; a
//! `unit = "percent"` value is divided by 100 first; `unit = "other"` has no counts and is
//! never shared). Conditional on the total `n`, the canary's events are Binomial(n, theta)
//! with `theta0 = m c / (m c + s)` under "the canary is at most m times worse" (the same model
//! as the sequential test, docs/statistics.md); the canary is worse when
//! `P(X' >= x' | n', theta0) <= SHARED_ALPHA` on the counts divided by the canary's
//! overdispersion `phi` (below). A value on another scale with no `unit` (seconds)
//! is read as if it were a share: its counts are as large as the number, which for values
//! above 1 makes the test more ready to call the canary worse (the old rollback, never a
//! hidden regression). A percent must say so: validation rejects a `* 100` query without it.
//!
//! A metric whose query is not split by track (no `track` label or `{{track}}` /
//! `{{deployment}}` in it: a release-wide count such as user complaints reads the same on both
//! tracks) cannot say where a cause lies: no shared verdict.
//!
//! Overdispersion: error counts are burstier than binomial ones (one pod's rate moves from
//! scrape to scrape), and a canary is often a single pod where the stable is several, so at the
//! high counts of an incident the binomial test calls a canary that is not worse "worse" several
//! times as often as `SHARED_ALPHA` says. The test is quasi-binomial: the counts are divided by
//! `phi = 1 + kappa v` (`v` the binomial variance of the canary's events), with `kappa`, the
//! canary's extra relative variance, estimated from how the residual between the tracks moves
//! from poll to poll of the sliding window (`decision::dispersion`, 1 until polls show more).
//! Only fluctuations count, so a canary steadily worse than the stable is not "dispersed".
//!
//! Power: "not worse" must mean the counts could have shown worse (a canary at twice the margin
//! over the stable would be significant, with the same `phi`). Without that power (a canary
//! seconds old, the first polls of an incident, a trickle of traffic, counts too dispersed to
//! tell) an absolute level is **held pending power** when the stable explains it (point 2: it
//! breaches the level within the margin, or did within `for`): the stable's breach is evidence
//! of a shared cause and the canary has shown none of its own. The bounds: only a canary that reads at most twice
//! the margin over the stable is held (the effect the power is judged at; beyond it the breach
//! stands as before); the test still runs at every poll, so a canary worse than the stable
//! breaches as a plain critical as soon as its counts show it; and the hold ends when the stable
//! no longer explains the level. A `compare` level without power is held only while the
//! stable has risen significantly over its own earlier rate (`decision::elevation`: the stable
//! cannot breach a comparison, and the rise is what shows a shared cause there); a burn rate
//! whose stable fires a rule itself is held whatever the canary reads (the SLO pages on both
//! tracks). Other levels without power stand, as before.
//!
//! Why a lenient level (0.05 per poll) and a fresh test at every poll: the two mistakes are not
//! alike. Calling a shared breach "worse" rolls back as before; calling a worse canary "shared"
//! hides a regression, so the test is run at every poll and any one poll that shows the canary
//! worse breaches as a plain critical. A shared poll resets a pending `for` (it is not a breach
//! of the canary's own), so a level with `for` fires only after `for` of polls that all show
//! the canary worse. Without traffic data there are no counts: no shared verdict (the breach
//! stands, as before). A burn rate is the exception ([`Evidence::Anytime`]): its counts grow
//! with the canary's life and it has no `for`, so at every poll of a day-long canary a fresh
//! 0.05 test would call one no worse "worse" sooner or later; there the canary is worse when
//! the counts' mixture e-value reaches `1 / SHARED_ALPHA`, which holds however often it is
//! polled, and a poll that only reads worse is inconclusive.

pub use super::cause::SharedCause;
use super::dispersion::{Dispersion, Events};
use super::elevation::{Count, Reference};
use super::rule::{self, Breach, Outcome, Reading, Rule};
pub use super::shared_burn::{ratio_over, Burn};
use super::window::Window;
pub(super) use super::worse::Evidence;
pub use super::worse::{worse_e_value, worse_p_value};
use crate::policy::{Compare, OnShared, Stat};
use crate::sample::Millis;

/// Level of the per-poll test that the canary is worse than the stable (see the module docs:
/// lenient on purpose, so a worse canary is not hidden).
pub const SHARED_ALPHA: f64 = 0.05;

/// What a metric's shared-cause checks remember between polls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// When the stable last breached the level within the margin, or the metric's breach was
    /// last found shared ([`Check::memory`]).
    pub since: Option<Millis>,
    /// The canary's overdispersion, from every poll of the metric's counts.
    pub dispersion: Dispersion,
    /// The stable's own earlier rate, against which a rise shows (`decision::elevation`).
    pub reference: Reference,
}

/// The inputs of one shared-cause check besides the canary's own outcome.
pub struct Check<'a> {
    pub rule: &'a Rule,
    pub stable: &'a Window,
    /// Requests per second, canary then stable.
    pub traffic: [&'a Window; 2],
    /// The metric's PromQL window (what one value summarises).
    pub window: Millis,
    /// The canary's requests over `window` when known (a burn rate's span that is the canary's
    /// whole life: what it served, `decision::served`); otherwise its newest requests per
    /// second times `window`.
    pub canary_requests: Option<f64>,
    pub margin: f64,
    pub on_shared: OnShared,
    /// Whether the metric's query tells the tracks apart ([`per_track`]).
    pub per_track: bool,
    /// `since`: when this metric's breach was last found shared, or the stable last breached
    /// an absolute level within the margin (whatever the canary read then: the incident is the
    /// stable's to show). Within the rule's `for` (or its window if longer) of it, a stable that dips under the level
    /// (margin included) for a poll still explains the canary's breach: an incident both tracks
    /// share does not end because the stable's noise crossed the level for one poll, and with
    /// the level near the shared rate the stable crosses it every few polls. The counts must
    /// still show the canary not worse, with power. `dispersion`: updated at every poll.
    pub memory: &'a mut Memory,
    pub now: Millis,
}

/// Whether a query is split by track: it names the `track` label (a `{{track}}` matcher, or a
/// batched `by (service, track)`) or the track's `{{deployment}}`.
pub fn per_track(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.contains("track") || q.contains("{{deployment}}"))
}

/// What the counts behind the two values say.
pub(super) enum Counts {
    /// The canary is significantly worse than `margin` times the stable: the breach stands.
    Worse,
    /// Not worse, and the counts could have shown it.
    NotWorse(SharedCause),
    /// Not worse, but too few requests yet for the test to have power.
    Underpowered(SharedCause),
    /// Worse at this poll's level (`p_value` at most [`SHARED_ALPHA`]) but not on the counts'
    /// anytime-valid evidence (`e_value` under `1 / SHARED_ALPHA`): only with
    /// [`Evidence::Anytime`].
    Leaning { p_value: f64, e_value: f64 },
    /// No counts (no traffic data, not a share of requests, not split by track).
    Unknown,
}

impl Check<'_> {
    /// `outcome` (the canary's) turned into a shared breach when the stable shares it and the
    /// canary is not worse; otherwise unchanged.
    pub fn apply(mut self, outcome: Outcome) -> Outcome {
        let stable = self.stable_value(&outcome);
        self.observe(&outcome, stable);
        let rise = self.rise(stable);
        let level = self.rule.critical.filter(|l| l.above.is_some());
        let stable_breaches = self.rule.compare.is_none()
            && stable.is_some_and(|s| level.is_some_and(|l| l.breached_by(self.margin * s)));
        if stable_breaches {
            self.memory.since = Some(self.now);
        }
        let result = match self.cause(&outcome, stable, rise) {
            Some(cause) => self.shared(outcome, cause),
            None => outcome,
        };
        self.remember(result)
    }

    /// `outcome`, noting when it is a shared (not carried) breach ([`Memory::since`]).
    pub(super) fn remember(self, outcome: Outcome) -> Outcome {
        if matches!(&outcome.reading, Reading::Shared(c) if !c.carried) {
            self.memory.since = Some(self.now);
        }
        outcome
    }

    /// The stable's value at this poll, read as the rule reads the canary's.
    fn stable_value(&self, outcome: &Outcome) -> Option<f64> {
        match (self.rule.compare, &outcome.reading) {
            (None, _) => rule::read(
                self.stable,
                self.rule.stat,
                self.rule.stat_window,
                self.rule.stale_after,
                self.now,
            )
            .ok(),
            (Some(_), Reading::Value { baseline, .. }) => *baseline,
            (Some(_), _) => None,
        }
    }

    /// Feeds this poll's counts (if any) to the dispersion estimate.
    fn observe(&mut self, outcome: &Outcome, stable: Option<f64>) {
        let events = match (&outcome.reading, stable, self.rule.share_scale()) {
            (Reading::Value { subject, .. }, Some(stable), Some(scale)) => {
                self.events(*subject, stable, scale)
            }
            _ => None,
        };
        self.memory
            .dispersion
            .observe(self.now, self.window, events);
    }

    /// Feeds the stable's counts at this poll to its reference and returns how many times its
    /// earlier rate the stable runs at, when that is a significant rise (`decision::elevation`).
    /// A `compare` level's stable is its baseline value: the same counts.
    fn rise(&mut self, stable: Option<f64>) -> Option<f64> {
        let scale = self.rule.share_scale()?;
        if !self.per_track {
            return None;
        }
        let requests = self.stable_requests_over_window()?;
        let count = stable.filter(|s| *s >= 0.0).map(|s| Count {
            at: self.now,
            events: s * scale * requests,
            requests,
        });
        let margin = self.margin;
        self.memory
            .reference
            .observe(count, self.window, margin, SHARED_ALPHA, |now, base| {
                worse_p_value(now.events, base.events, now.requests, base.requests, margin)
            })
    }

    /// The canary's requests over the counted window: what it served when the window is its
    /// whole life, or the newest rate times the window, whichever is larger (the rate can read
    /// 0 for a trickle whose span holds hundreds; what it served undercounts after a restart).
    pub(super) fn canary_requests_over_window(&self) -> Option<f64> {
        let rps = self.requests_per_second(0);
        let secs = self.window as f64 / 1000.0;
        match (rps, self.canary_requests) {
            (rps, Some(served)) => Some(served.max(rps.unwrap_or(0.0) * secs)),
            (rps, None) => rps.map(|r| r * secs),
        }
    }

    /// The stable's requests over the counted window: its newest rate times the window (its
    /// traffic is large and steady).
    fn stable_requests_over_window(&self) -> Option<f64> {
        Some(self.requests_per_second(1)? * self.window as f64 / 1000.0)
    }

    /// The newest traffic poll of track `i` (0 canary, 1 stable), unless stale.
    pub(super) fn requests_per_second(&self, i: usize) -> Option<f64> {
        rule::read(
            self.traffic[i],
            Stat::Last,
            0,
            self.rule.stale_after,
            self.now,
        )
        .ok()
    }

    pub(super) fn shared(&self, outcome: Outcome, cause: SharedCause) -> Outcome {
        Outcome {
            breach: match self.on_shared {
                OnShared::Hold => Breach::Shared,
                OnShared::Rollback => Breach::Critical,
            },
            reading: Reading::Shared(Box::new(cause)),
            threshold: outcome.threshold,
        }
    }

    fn cause(
        &self,
        outcome: &Outcome,
        stable: Option<f64>,
        rise: Option<f64>,
    ) -> Option<SharedCause> {
        let rule = self.rule;
        if outcome.breach != Breach::Critical {
            return None;
        }
        let level = outcome.threshold.filter(|l| l.above.is_some())?;
        let Reading::Value {
            subject: canary, ..
        } = outcome.reading
        else {
            return None;
        };
        let stable = stable?;
        // The level must be one the stable's rate can explain. An absolute level: the stable
        // breaches it within the margin (a stable at 4.9% under a 5% level explains a canary
        // at 5.1% as much as a stable at 5.1% does). A `ratio` level: only one below the margin
        // (its noise does not grow with a shared rate). A `difference` level: any, the counts
        // decide, because its noise grows with the rate both tracks share (at 10% on both, a
        // 1-point level is within the canary's noise; at 0.5% a 1-point excess is 3x, which
        // the powered test shows worse, so such a breach stands as written).
        // The incident goes on for `for`, or a whole window if longer: values of one window
        // polled within it overlap, so a stable dipping under the level for less than a window
        // is that window's noise, not news that the incident ended (which takes a window to
        // show, as its events leave the value).
        let carry = rule.for_.max(self.window);
        let ongoing = self
            .memory
            .since
            .is_some_and(|t| self.now.saturating_sub(t) <= carry);
        // A stable under the level (margin included) whose rate rose significantly above its
        // own earlier rate explains the breach too (`decision::elevation`): a shared cause moved
        // it, and the counts below decide whether the canary is worse.
        let under = rule.compare.is_none() && !level.breached_by(self.margin * stable);
        let stable_rise = rise.filter(|_| under);
        let carried = under && stable_rise.is_none();
        // A `compare` level cannot be breached by the stable: what shows a shared cause there is
        // the stable's own rise (below: it holds a breach pending power).
        let compare_rise = rise.filter(|_| rule.compare.is_some());
        let explained = match rule.compare {
            None => !carried || ongoing,
            Some(Compare::Ratio) => level.breached_by(self.margin),
            Some(Compare::Difference) => true,
        };
        if !explained {
            return None;
        }
        match self.counts_test(canary, stable, rule.share_scale()?, true, Evidence::PerPoll) {
            Counts::NotWorse(cause) => Some(SharedCause {
                carried,
                stable_rise,
                ..cause
            }),
            // Too few requests (or counts too dispersed) to tell the tracks apart while the
            // stable explains an absolute level (it breaches it within the margin, or did within
            // `for`): the stable's breach is evidence of a shared cause and the canary's is none
            // of its own yet. Held pending power; every poll still tests, so a canary the counts
            // show worse breaches as before.
            Counts::Underpowered(cause) if rule.compare.is_none() => Some(SharedCause {
                carried,
                stable_rise,
                ..cause
            }),
            // A `compare` level (the canary against the stable) without power: held only while
            // the stable has risen significantly over its own earlier rate. At an incident's
            // start the rate both tracks share climbs within the window, the counts swing with
            // it (dispersion several times binomial), and a 1-point difference is within the
            // canary's noise; the rise is the shared cause's evidence, and the canary has
            // shown none of its own. Without a rise such a breach stands, as before.
            Counts::Underpowered(cause) if compare_rise.is_some() => Some(SharedCause {
                stable_rise: compare_rise,
                ..cause
            }),
            Counts::Underpowered(_) | Counts::Worse | Counts::Leaning { .. } | Counts::Unknown => {
                None
            }
        }
    }

    /// The test on the counts behind `canary` and `stable`, values that are shares of
    /// requests once multiplied by `scale` (module docs). `look_alike`: without power, only a
    /// canary reading at most twice the margin over the stable is [`Counts::Underpowered`].
    /// `evidence`: what shows the canary worse ([`Evidence`]).
    pub(super) fn counts_test(
        &self,
        canary: f64,
        stable: f64,
        scale: f64,
        look_alike: bool,
        evidence: Evidence,
    ) -> Counts {
        let Some(ev) = self.events(canary, stable, scale) else {
            return Counts::Unknown;
        };
        // Quasi-binomial: counts as variable as `phi` times binomial ones carry the evidence of
        // counts `phi` times smaller (decision::dispersion).
        let phi = self.memory.dispersion.factor(ev.variance());
        let Some(p_value) = worse_p_value(ev.x / phi, ev.y / phi, ev.c, ev.s, self.margin) else {
            return Counts::Unknown;
        };
        match evidence {
            Evidence::PerPoll if p_value <= SHARED_ALPHA => return Counts::Worse,
            Evidence::PerPoll => {}
            Evidence::Anytime => {
                let e_value = worse_e_value(ev.x / phi, ev.y / phi, ev.c, ev.s, self.margin);
                if e_value >= 1.0 / SHARED_ALPHA {
                    return Counts::Worse;
                }
                if p_value <= SHARED_ALPHA {
                    return Counts::Leaning { p_value, e_value };
                }
            }
        }
        // "Not worse" must mean the counts could have shown worse: a canary at twice the
        // margin over the stable must be significant with these requests. If not (a canary
        // seconds old, a trickle of traffic), the counts prove nothing either way.
        let at_twice = 2.0 * self.margin * stable * scale * ev.c;
        let powered = worse_p_value(at_twice / phi, ev.y / phi, ev.c, ev.s, self.margin)
            .is_some_and(|p| p <= SHARED_ALPHA);
        let cause = SharedCause {
            canary,
            stable,
            canary_events: ev.x,
            canary_requests: ev.c,
            stable_events: ev.y,
            stable_requests: ev.s,
            p_value,
            margin: self.margin,
            dispersion: phi,
            pending_power: !powered,
            carried: false,
            stable_rise: None,
        };
        match powered {
            true => Counts::NotWorse(cause),
            // The hold pending power is for a canary that reads like the stable: one that
            // reads beyond the effect the power is judged at is no shared cause's look-alike.
            false if !look_alike || canary <= 2.0 * self.margin * stable => {
                Counts::Underpowered(cause)
            }
            false => Counts::Unknown,
        }
    }

    /// The events and requests behind `canary` and `stable` over the metric's window, values
    /// that are shares of requests once multiplied by `scale` (module docs); `None` without
    /// per-track values or traffic.
    fn events(&self, canary: f64, stable: f64, scale: f64) -> Option<Events> {
        if !self.per_track {
            return None;
        }
        let c = self.canary_requests_over_window()?;
        let s = self.stable_requests_over_window()?;
        let ok = c > 0.0 && s > 0.0 && canary >= 0.0 && stable >= 0.0;
        ok.then_some(Events {
            x: canary * scale * c,
            y: stable * scale * s,
            c,
            s,
        })
    }
}
