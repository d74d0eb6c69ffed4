//! A bounded, time-ordered buffer of samples for one (metric, track) series, and the statistics
//! the rules need over a trailing time window.
//!
//! Why a buffer of our own instead of asking Prometheus for `avg_over_time`: the engine must see
//! *what it was told at each poll* (including Absent and Error polls) to decide whether data is
//! missing, and it must give the same answer when replayed from the audit trail.

use crate::policy::Stat;
use crate::sample::{Millis, Sample};
use std::collections::VecDeque;

/// Hard cap on samples per series, whatever the retention says: a misconfigured
/// `stat_window = "30d"` with a 1 s interval must not grow memory without bound.
pub const HARD_CAP: usize = 8_192;

/// Samples of one series, oldest first, pruned by age relative to the newest sample.
#[derive(Debug, Clone)]
pub struct Window {
    samples: VecDeque<Sample>,
    /// Samples older than `newest.at - retain` are dropped.
    retain: Millis,
    cap: usize,
    /// The ring's capacity at the first sample (0: grow by doubling).
    first: usize,
}

impl Window {
    /// How far back samples are kept (what [`Window::new`] was given).
    pub fn retention(&self) -> Millis {
        self.retain
    }

    /// `retain` is the longest look-back any rule needs on this series.
    pub fn new(retain: Millis) -> Self {
        Self::with_cap(retain, HARD_CAP)
    }

    /// A window for a series polled every `interval` ms, its ring allocated at the first
    /// sample for the samples `retain` keeps (plus the one a push adds before pruning). Grown
    /// by doubling from empty, a ring held up to twice that: about 3 KB per service in a fleet
    /// (issue 10). Not before the first sample: some series are never fed (a sequential
    /// metric reads counters, not values). Late or irregular polls still fit: the ring grows
    /// past the estimate when needed.
    pub fn for_polls(retain: Millis, interval: Millis) -> Self {
        let mut w = Self::new(retain);
        let polls = usize::try_from(w.retain / interval.max(1)).unwrap_or(HARD_CAP);
        w.first = polls.saturating_add(2).min(HARD_CAP);
        w
    }

    pub fn with_cap(retain: Millis, cap: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            retain: retain.max(0),
            cap: cap.max(1),
            first: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Forgets samples before `t` (e.g. the stable's samples from before a promotion, which
    /// describe the previous version).
    pub fn drop_before(&mut self, t: Millis) {
        while self.samples.front().is_some_and(|s| s.at < t) {
            self.samples.pop_front();
        }
    }

    /// Adds a sample. Late samples are inserted in time order and a sample at an existing
    /// timestamp replaces the old one, so replays and retried polls give the same window.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.capacity() == 0 {
            self.samples.reserve_exact(self.first);
        }
        match self.samples.back() {
            None => self.samples.push_back(sample),
            Some(last) if sample.at > last.at => self.samples.push_back(sample),
            Some(_) => {
                let pos = self.samples.partition_point(|s| s.at < sample.at);
                match self.samples.get_mut(pos) {
                    Some(existing) if existing.at == sample.at => *existing = sample,
                    _ => self.samples.insert(pos, sample),
                }
            }
        }
        self.prune();
    }

    fn prune(&mut self) {
        let Some(newest) = self.samples.back().map(|s| s.at) else {
            return;
        };
        let horizon = newest.saturating_sub(self.retain);
        while self.samples.front().is_some_and(|s| s.at < horizon) {
            self.samples.pop_front();
        }
        while self.samples.len() > self.cap {
            self.samples.pop_front();
        }
    }

    /// The newest sample not after `now` (samples stamped in the future are not seen yet).
    pub fn latest(&self, now: Millis) -> Option<&Sample> {
        let end = self.end(now);
        end.checked_sub(1).and_then(|i| self.samples.get(i))
    }

    /// Index one past the last sample with `at <= now`.
    fn end(&self, now: Millis) -> usize {
        match self.samples.back() {
            Some(last) if last.at <= now => self.samples.len(),
            _ => self.samples.partition_point(|s| s.at <= now),
        }
    }

    /// Samples with `now - over < at <= now`.
    pub fn range(&self, now: Millis, over: Millis) -> impl Iterator<Item = &Sample> + '_ {
        let end = self.end(now);
        let from = now.saturating_sub(over);
        let start = self.samples.partition_point(|s| s.at <= from);
        self.samples.range(start.min(end)..end)
    }

    /// Finite values in the window, oldest first.
    pub fn values(&self, now: Millis, over: Millis) -> impl Iterator<Item = f64> + '_ {
        self.range(now, over).filter_map(|s| s.obs.value())
    }

    /// Number of finite values in the window (Absent/Error polls are not data).
    pub fn count(&self, now: Millis, over: Millis) -> usize {
        self.values(now, over).count()
    }

    pub fn mean(&self, now: Millis, over: Millis) -> Option<f64> {
        let (n, sum) = self
            .values(now, over)
            .fold((0usize, 0.0f64), |(n, s), v| (n + 1, s + v));
        (n > 0).then(|| sum / n as f64)
    }

    pub fn min(&self, now: Millis, over: Millis) -> Option<f64> {
        self.values(now, over).reduce(f64::min)
    }

    pub fn max(&self, now: Millis, over: Millis) -> Option<f64> {
        self.values(now, over).reduce(f64::max)
    }

    /// Quantile `q` in [0, 1] with linear interpolation between closest ranks (the "type 7"
    /// estimator of R and numpy), so p50 of [1, 2] is 1.5 and small windows are not jumpy.
    pub fn quantile(&self, now: Millis, over: Millis, q: f64) -> Option<f64> {
        let mut v: Vec<f64> = self.values(now, over).collect();
        quantile_of(&mut v, q)
    }

    /// Per-second rate of increase of a monotonically increasing counter over the window. A drop
    /// is a counter reset (process restart): the new value counts as the increase since the reset,
    /// like PromQL `rate()`. Needs two finite samples at different times.
    pub fn rate(&self, now: Millis, over: Millis) -> Option<f64> {
        let mut first: Option<Millis> = None;
        let mut prev: Option<(Millis, f64)> = None;
        let mut increase = 0.0;
        for s in self.range(now, over) {
            let Some(v) = s.obs.value() else { continue };
            if let Some((_, p)) = prev {
                increase += if v >= p { v - p } else { v };
            } else {
                first = Some(s.at);
            }
            prev = Some((s.at, v));
        }
        let (first, (last, _)) = (first?, prev?);
        let secs = (last - first) as f64 / 1000.0;
        (secs > 0.0).then(|| increase / secs)
    }

    /// The statistic a rule asks for. `Last` is the newest sample if it is a finite value.
    pub fn stat(&self, stat: Stat, now: Millis, over: Millis) -> Option<f64> {
        match stat {
            Stat::Last => self.latest(now).and_then(|s| s.obs.value()),
            Stat::Mean => self.mean(now, over),
            Stat::Min => self.min(now, over),
            Stat::Max => self.max(now, over),
            Stat::Median => self.quantile(now, over, 0.5),
            Stat::P90 => self.quantile(now, over, 0.9),
            Stat::P95 => self.quantile(now, over, 0.95),
            Stat::P99 => self.quantile(now, over, 0.99),
        }
    }
}

/// Quantile of an unsorted slice (reordered in place); `None` when empty. Uses selection, not a
/// full sort: this runs at every evaluation over up to an hour of samples.
pub fn quantile_of(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let (_, &mut low, above) = v.select_nth_unstable_by(lo, f64::total_cmp);
    if frac == 0.0 {
        return Some(low);
    }
    // The next order statistic is the smallest value above the selected one.
    let high = above.iter().copied().reduce(f64::min).unwrap_or(low);
    Some(low + (high - low) * frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Observation;

    fn filled(values: &[(Millis, f64)]) -> Window {
        let mut w = Window::new(1_000_000);
        for &(at, v) in values {
            w.push(Sample::value(at, v));
        }
        w
    }

    #[test]
    fn a_ring_sized_from_its_polls_never_grows_in_steady_polling() {
        // 70 s kept at a 10 s poll: 8 samples after pruning, 9 in the ring for a moment.
        let mut w = Window::for_polls(70_000, 10_000);
        assert_eq!(
            w.samples.capacity(),
            0,
            "nothing held before the first sample"
        );
        w.push(Sample::value(0, 1.0));
        let cap = w.samples.capacity();
        for i in 1..500 {
            w.push(Sample::value(i * 10_000, 1.0));
        }
        assert_eq!(w.len(), 8);
        assert_eq!(w.samples.capacity(), cap, "the ring was reallocated");
        assert!(cap < 16, "sized for its polls, not doubled: {cap}");
    }

    #[test]
    fn statistics_only_see_the_trailing_window() {
        let w = filled(&[(1_000, 100.0), (2_000, 1.0), (3_000, 2.0), (4_000, 3.0)]);
        // (1000, 4000]: the 100 at t=1000 is outside.
        assert_eq!(w.mean(4_000, 3_000), Some(2.0));
        assert_eq!(w.max(4_000, 3_000), Some(3.0));
        assert_eq!(w.min(4_000, 3_000), Some(1.0));
        assert_eq!(w.count(4_000, 3_000), 3);
        assert_eq!(w.max(4_000, 3_001), Some(100.0));
    }

    #[test]
    fn samples_after_now_are_not_seen() {
        let w = filled(&[(1_000, 1.0), (2_000, 50.0)]);
        assert_eq!(w.stat(Stat::Last, 1_500, 10_000), Some(1.0));
        assert_eq!(w.max(1_500, 10_000), Some(1.0));
        assert!(w.latest(500).is_none());
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let w = filled(&(1..=100).map(|i| (i * 10, i as f64)).collect::<Vec<_>>());
        assert_eq!(w.quantile(1_000, 10_000, 0.5), Some(50.5));
        assert!((w.stat(Stat::P99, 1_000, 10_000).unwrap() - 99.01).abs() < 1e-9);
        assert!((w.stat(Stat::P90, 1_000, 10_000).unwrap() - 90.1).abs() < 1e-9);
        assert_eq!(quantile_of(&mut [], 0.5), None);
        assert_eq!(quantile_of(&mut [7.0], 0.99), Some(7.0));
    }

    #[test]
    fn absent_and_error_polls_are_not_values_but_are_the_latest_sample() {
        let mut w = filled(&[(1_000, 4.0)]);
        w.push(Sample::new(2_000, Observation::Absent));
        w.push(Sample::new(3_000, Observation::Error("timeout".into())));
        assert_eq!(w.count(3_000, 10_000), 1);
        assert_eq!(w.mean(3_000, 10_000), Some(4.0));
        assert_eq!(w.stat(Stat::Last, 3_000, 10_000), None);
        assert!(w.latest(3_000).unwrap().obs.value().is_none());
    }

    #[test]
    fn retention_and_hard_cap_bound_memory() {
        let mut w = Window::new(10_000);
        for i in 0..100 {
            w.push(Sample::value(i * 1_000, i as f64));
        }
        assert_eq!(w.len(), 11, "keeps (newest - 10s ..= newest]");
        let mut capped = Window::with_cap(i64::MAX, 5);
        for i in 0..100 {
            capped.push(Sample::value(i, 0.0));
        }
        assert_eq!(capped.len(), 5);
        assert_eq!(capped.latest(1_000).unwrap().at, 99);
    }

    #[test]
    fn late_samples_are_ordered_and_duplicates_replace() {
        let mut w = filled(&[(1_000, 1.0), (3_000, 3.0)]);
        w.push(Sample::value(2_000, 2.0));
        w.push(Sample::value(3_000, 30.0));
        let got: Vec<f64> = w.values(3_000, 10_000).collect();
        assert_eq!(got, vec![1.0, 2.0, 30.0]);
    }

    #[test]
    fn counter_rate_handles_resets() {
        // 0 -> 100 over 10 s, reset to 5, then 25: increase = 100 + 5 + 20 = 125 over 30 s.
        let w = filled(&[(0, 0.0), (10_000, 100.0), (20_000, 5.0), (30_000, 25.0)]);
        let r = w.rate(30_000, 60_000).unwrap();
        assert!((r - 125.0 / 30.0).abs() < 1e-12, "{r}");
        assert_eq!(filled(&[(0, 1.0)]).rate(0, 60_000), None);
    }

    proptest::proptest! {
        /// Selection gives the same answer as interpolating over a fully sorted copy.
        #[test]
        fn quantile_matches_sorted_reference(
            mut v in proptest::collection::vec(-1e6f64..1e6, 1..200),
            q in 0.0f64..=1.0,
        ) {
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let pos = q * (sorted.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            let want = sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64);
            let got = quantile_of(&mut v, q).unwrap();
            proptest::prop_assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{got} vs {want}");
        }
    }
}
