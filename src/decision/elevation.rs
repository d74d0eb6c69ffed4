//! Whether the stable's own rate has risen: the evidence of a shared cause that does not depend
//! on where the policy put its level (`decision::shared`).
//!
//! Why: the shared-cause test asks whether the stable's rate can explain a canary's breach of an
//! absolute level. Read on the point estimate alone ("`margin` times the stable breaches the
//! level"), that question has a knife edge exactly where shared incidents put it: an incident
//! that takes both tracks to the level (a 5% level, a dependency failing at 5%) leaves the
//! stable's value a few tenths of a point under `level / margin` for minutes at a time (its
//! noise, and the window still filling at the incident's start), while the canary's noisier
//! value reads over the level, so the breach stands although the counts do not show the canary
//! worse. A stable whose rate has risen significantly above its own rate before the incident is
//! the evidence the point estimate stood for: something both tracks share moved, and the
//! canary's breach is then the canary's own only if the counts show the canary worse than the
//! stable (the same per-poll test, unchanged). A stable steady at its usual rate, however near
//! the level, is no such evidence: a canary breaching over it is judged by the level as written.
//!
//! The test: the stable's events `y` of `s` requests over the window now against its events
//! `y0` of `s0` requests at the reference, one-sided, "now is at most `margin` times the
//! reference", at `SHARED_ALPHA`: the counts test of `decision::shared` with the stable's
//! reference in the stable's place (`worse_p_value(y, y0, s, s0, margin)`), so a rise within the
//! margin, or one the counts cannot show, is not a rise.
//!
//! The reference: the stable's counts at a poll at least one window before, at which the stable
//! had not risen (so its window does not overlap the one it is compared with, and a slow climb
//! cannot drag the reference along a poll at a time), and frozen while the stable has risen (an
//! incident does not become the stable's new normal while it lasts). Until a first poll with
//! counts there is none, and no rise.

use crate::sample::Millis;

/// One poll of the stable's counts over the metric's window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Count {
    pub at: Millis,
    /// Bad events and requests.
    pub events: f64,
    pub requests: f64,
}

/// The stable's reference counts and the next candidate for them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reference {
    base: Option<Count>,
    candidate: Option<Count>,
}

impl Reference {
    /// Records the stable's counts at this poll (window `window` ms) and returns how many times
    /// its reference rate the stable runs at, when that is a significant rise beyond `margin`
    /// (`p_value(now, reference) <= alpha`); `None` otherwise or without counts.
    pub fn observe(
        &mut self,
        now: Option<Count>,
        window: Millis,
        margin: f64,
        alpha: f64,
        p_value: impl Fn(&Count, &Count) -> Option<f64>,
    ) -> Option<f64> {
        let now = now.filter(|c| c.requests > 0.0 && c.events >= 0.0)?;
        let Some(base) = self.base else {
            self.base = Some(now);
            return None;
        };
        let risen = p_value(&now, &base).is_some_and(|p| p <= alpha);
        if risen {
            let rate = |c: &Count| c.events / c.requests;
            return Some(rate(&now) / rate(&base).max(f64::MIN_POSITIVE))
                .filter(|r| r.is_finite() && *r > margin);
        }
        match self.candidate {
            Some(c) if now.at.saturating_sub(c.at) >= window => {
                self.base = Some(c);
                self.candidate = Some(now);
            }
            Some(_) => {}
            None => self.candidate = Some(now),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::shared::worse_p_value;

    fn p(now: &Count, base: &Count) -> Option<f64> {
        worse_p_value(now.events, base.events, now.requests, base.requests, 1.2)
    }

    fn count(at_secs: i64, rate: f64) -> Option<Count> {
        Some(Count {
            at: at_secs * 1000,
            events: rate * 5000.0,
            requests: 5000.0,
        })
    }

    #[test]
    fn a_rise_shows_against_the_rate_before_it_and_stays_frozen_while_it_lasts() {
        let mut r = Reference::default();
        for t in (0..600).step_by(30) {
            assert_eq!(r.observe(count(t, 0.005), 300_000, 1.2, 0.05, p), None);
        }
        // The incident: 0.5% -> 4% (under a 5% level with a 1.2 margin, but 8x its own rate).
        for t in (600..1800).step_by(30) {
            let rise = r.observe(count(t, 0.04), 300_000, 1.2, 0.05, p);
            assert!(
                rise.is_some_and(|x| (x - 8.0).abs() < 1e-9),
                "{t}: {rise:?}"
            );
        }
        // Over: back to its usual rate, no rise.
        assert_eq!(r.observe(count(1800, 0.005), 300_000, 1.2, 0.05, p), None);
    }

    #[test]
    fn a_window_filling_with_an_incident_is_measured_against_the_rate_before_it() {
        // A 5-minute value climbing from 0.5% to 5% over the 10 polls its window takes to
        // fill: neighbouring polls differ little, but the reference is a window old and stays
        // put once the climb shows, so the rise is read against 0.5%, not the climb's start.
        let mut r = Reference::default();
        for t in (0..600).step_by(30) {
            r.observe(count(t, 0.005), 300_000, 1.2, 0.05, p);
        }
        let rises: Vec<_> = (1..=10)
            .map(|i| {
                let rate = 0.005 + 0.0045 * i as f64;
                r.observe(count(600 + 30 * i, rate), 300_000, 1.2, 0.05, p)
            })
            .collect();
        assert!(rises.iter().all(Option::is_some), "{rises:?}");
        assert!((rises[9].unwrap_or(0.0) - 10.0).abs() < 1e-9, "{rises:?}");
    }

    #[test]
    fn a_stable_steady_near_the_level_has_not_risen() {
        let mut r = Reference::default();
        for t in (0..3600).step_by(30) {
            assert_eq!(r.observe(count(t, 0.04), 300_000, 1.2, 0.05, p), None);
        }
    }
}
