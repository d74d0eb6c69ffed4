//! Requests a track has served since the engine began judging it, integrated from the traffic
//! polls (`analysis.traffic_query`, requests per second).
//!
//! Why: the shared-cause test of a burn rate compares the two tracks' errors over the fired
//! rule's long window, which for a young canary is its whole life (`decision::shared_burn`).
//! Its counts were the newest traffic poll times that span, and a canary on a trickle often
//! reads 0 requests per second over the traffic query's short window while its hour holds a
//! few hundred: no counts, so no shared verdict, and the breach stood whatever the stable did.
//! The integral of the polls over the canary's life is the count the ratio was taken over.

use crate::sample::{Millis, Sample};

/// The running integral of one track's requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    requests: f64,
    /// The previous poll with a value (`Millis::MIN`: none yet; 16 bytes in all, kept per
    /// service).
    last: Millis,
}

impl Default for Served {
    fn default() -> Self {
        Self {
            requests: 0.0,
            last: Millis::MIN,
        }
    }
}

impl Served {
    /// Adds the requests since the previous poll at this poll's rate. A gap longer than
    /// `max_gap` (the daemon down, the query failing) counts only `max_gap`: an undercount,
    /// which can only weaken what the counts show.
    pub fn observe(&mut self, sample: &Sample, max_gap: Millis) {
        let Some(rps) = sample.obs.value().filter(|v| v.is_finite() && *v >= 0.0) else {
            return;
        };
        if self.last != Millis::MIN {
            let dt = sample.at.saturating_sub(self.last).clamp(0, max_gap);
            self.requests += rps * dt as f64 / 1000.0;
        }
        self.last = sample.at;
    }

    /// Requests served so far.
    pub fn requests(&self) -> f64 {
        self.requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_integrate_to_the_requests_served_and_gaps_are_capped() {
        let mut s = Served::default();
        // 2 req/s polled every 10 s for a minute: 120 requests after the first poll.
        for k in 0..=6 {
            s.observe(&Sample::value(k * 10_000, 2.0), 30_000);
        }
        assert!((s.requests() - 120.0).abs() < 1e-9, "{}", s.requests());
        // A 5-minute gap then 1 req/s: only the 30 s cap is counted.
        s.observe(&Sample::value(360_000, 1.0), 30_000);
        assert!((s.requests() - 150.0).abs() < 1e-9, "{}", s.requests());
        // Absent or nonsensical polls add nothing.
        s.observe(
            &Sample::new(370_000, crate::sample::Observation::Absent),
            30_000,
        );
        s.observe(&Sample::value(380_000, f64::NAN), 30_000);
        assert!((s.requests() - 150.0).abs() < 1e-9);
    }
}
