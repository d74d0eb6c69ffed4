//! How much more the canary's counts vary than binomial counts would: the overdispersion the
//! shared-cause test (`decision::shared`) allows for.
//!
//! Why: the counts test reads "canary x of n events" as Binomial(n, theta). Real error counts
//! are burstier than that: one pod's error rate moves from scrape to scrape (a slow node, a
//! retry storm, a GC pause), and a canary is one pod where the stable is several, so its share
//! of a window's events varies more than a binomial share. At high counts (a shared incident:
//! both tracks at 5-10% errors) that extra variance dominates, and the plain binomial test calls
//! a canary that is not worse "worse" at several times its nominal level.
//!
//! Model: over a window, the residual `r = (1 - theta) x - theta y` (theta = c / (c + s), the
//! canary's share of requests) has mean zero when both tracks err at the same rate, and variance
//! `v (1 + kappa v)` with `v = n theta (1 - theta)` the binomial variance: gamma-Poisson
//! (negative-binomial) noise, whose extra variance grows with the square of the counts. The
//! quasi-binomial factor is `phi = 1 + kappa v`.
//!
//! Estimate: from consecutive polls of the same sliding window. When the window slides by `L`
//! of its `W`, the residual changes by the part that entered minus the part that left, so
//! `E[(r_t - r_{t-L})^2] = 2 (L / W) Var(r)` if events in disjoint slices are independent.
//! Every poll thus gives `D^2 W / (2 L) - v`, an unbiased estimate of the extra variance
//! `kappa v^2`; `kappa` is their sum over the sum of `v^2` (the moment estimator, dominated by the
//! polls with the most events, where the extra variance shows). Differences cancel whatever the
//! canary's rate is relative to the stable's, so a canary that is steadily worse does not look
//! dispersed: only fluctuations count. The estimate also absorbs the extrapolation of PromQL's
//! `rate()`, whose counts (value x requests x window) overstate the events it saw.
//!
//! Bounds: `kappa` is floored at 0 (never stricter than the binomial), polls with a gap, a
//! window still growing (a canary younger than its window) or no counts are skipped, and a
//! new revision starts from nothing (the binomial).

use crate::sample::Millis;

/// The canary's overdispersion estimate for one threshold metric.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dispersion {
    last: Option<Point>,
    /// Sum over polls of `D^2 W / (2 L) - v`: observed minus binomial variance.
    excess: f64,
    /// Sum over polls of `v^2`.
    weight: f64,
}

/// One poll's residual and binomial variance.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    at: Millis,
    window: Millis,
    residual: f64,
    variance: f64,
}

/// Counts behind one poll of both tracks over a window: canary events `x` of `c` requests,
/// stable `y` of `s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Events {
    pub x: f64,
    pub y: f64,
    pub c: f64,
    pub s: f64,
}

impl Events {
    /// The residual and its binomial variance (module docs), or `None` without requests.
    fn point(&self, at: Millis, window: Millis) -> Option<Point> {
        let theta = self.c / (self.c + self.s);
        let n = self.x + self.y;
        let ok = theta > 0.0 && theta < 1.0 && n.is_finite() && n >= 0.0;
        ok.then_some(Point {
            at,
            window,
            residual: (1.0 - theta) * self.x - theta * self.y,
            variance: n * theta * (1.0 - theta),
        })
    }

    /// The binomial variance of the canary's events given the total.
    pub fn variance(&self) -> f64 {
        let theta = self.c / (self.c + self.s);
        (self.x + self.y) * theta * (1.0 - theta)
    }
}

impl Dispersion {
    /// Records one poll of the counts over a window of `window` ms at `at`; `None` (no counts at
    /// this poll) breaks the chain of consecutive polls.
    pub fn observe(&mut self, at: Millis, window: Millis, counts: Option<Events>) {
        let point = counts.and_then(|c| c.point(at, window));
        if let (Some(p), Some(last)) = (point, self.last) {
            let step = p.at.saturating_sub(last.at);
            // A window that slid (not grew, not jumped past its own length) since the last poll.
            if p.window == last.window && step > 0 && step <= p.window {
                let d = p.residual - last.residual;
                let v = 0.5 * (p.variance + last.variance);
                let excess = d * d * p.window as f64 / (2.0 * step as f64) - v;
                if excess.is_finite() && v.is_finite() {
                    self.excess += excess;
                    self.weight += v * v;
                }
            }
        }
        self.last = point;
    }

    /// `kappa`: the extra relative variance (module docs), 0 until polls show any.
    pub fn kappa(&self) -> f64 {
        match self.weight > 0.0 {
            true => (self.excess / self.weight).max(0.0),
            false => 0.0,
        }
    }

    /// The quasi-binomial factor for counts of binomial variance `variance`: divide the counts
    /// by it to test them as binomial.
    pub fn factor(&self, variance: f64) -> f64 {
        1.0 + self.kappa() * variance.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 60 s window of 6 slices of 10 s sliding over `slices`: canary events per slice, the
    /// stable steady at 9 times the canary's mean over 9 times the requests.
    fn slide(slices: &[f64], per_slice_requests: f64) -> Dispersion {
        let mut d = Dispersion::default();
        let mean = slices.iter().sum::<f64>() / slices.len() as f64;
        for i in 5..slices.len() {
            let x: f64 = slices[i - 5..=i].iter().sum();
            let events = Events {
                x,
                y: 54.0 * mean,
                c: 6.0 * per_slice_requests,
                s: 54.0 * per_slice_requests,
            };
            d.observe(i as Millis * 10_000, 60_000, Some(events));
        }
        d
    }

    #[test]
    fn steady_counts_are_not_dispersed_and_the_factor_is_one() {
        let d = slide(&[10.0; 40], 100.0);
        assert_eq!(d.kappa(), 0.0);
        assert_eq!(d.factor(50.0), 1.0);
        // Nothing observed: the binomial.
        assert_eq!(Dispersion::default().factor(1e6), 1.0);
    }

    #[test]
    fn bursts_of_one_pod_show_as_extra_variance_in_proportion_to_the_counts() {
        // Slices of 4 or 16 canary events at random (mean 10, variance 36 where Poisson noise
        // would be 10): a window's residual varies by 0.9^2 * 6 * 36 = 175, over three times
        // the binomial v = n theta (1 - theta) = 600 * 0.1 * 0.9 = 54.
        let mut bits: u64 = 0x2545_F491_4F6C_DD1D;
        let slices: Vec<f64> = (0..400)
            .map(|_| {
                bits ^= bits << 13;
                bits ^= bits >> 7;
                bits ^= bits << 17;
                if bits & 1 == 1 {
                    16.0
                } else {
                    4.0
                }
            })
            .collect();
        let d = slide(&slices, 100.0);
        let v = 600.0 * 0.1 * 0.9;
        let phi = d.factor(v);
        assert!((phi - 175.0 / v).abs() < 0.15 * 175.0 / v, "{phi}");
        // The extra variance grows with the square of the counts: phi - 1 with v.
        assert!((d.factor(2.0 * v) - 1.0 - 2.0 * (phi - 1.0)).abs() < 1e-9);
    }

    #[test]
    fn a_gap_or_a_growing_window_is_not_a_step() {
        let mut d = Dispersion::default();
        let e = |x: f64| {
            Some(Events {
                x,
                y: 90.0,
                c: 100.0,
                s: 900.0,
            })
        };
        d.observe(0, 10_000, e(0.0));
        d.observe(10_000, 20_000, e(30.0)); // the window grew: skipped
        d.observe(20_000, 20_000, None); // no counts: the chain breaks
        d.observe(30_000, 20_000, e(0.0));
        d.observe(90_000, 20_000, e(30.0)); // further apart than the window: skipped
        assert_eq!(d.kappa(), 0.0);
    }
}
