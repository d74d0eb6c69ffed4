//! The last hour of one service's metric values, kept compact: fixed rings of `f32`.
//!
//! Two tiers per series, sharing their timestamps across the service's series (every value of a
//! service arrives at the same evaluation instant):
//! - `fine`: the last [`FINE`] evaluations at poll resolution (5 minutes at a 10 s interval);
//! - `coarse`: one point per minute for the last [`COARSE`] minutes (the last value judged in
//!   that minute).
//!
//! Memory is fixed per series once allocated: `(FINE + COARSE) * 4` bytes (360 B), plus the shared
//! timestamps. A service that is never under analysis allocates nothing (idle services are not
//! sampled), and a history whose newest point is older than an hour is dropped.

use crate::sample::Millis;
use serde::{Deserialize, Serialize};

/// Evaluations kept at poll resolution.
pub const FINE: usize = 30;
/// Minutes kept at one point per minute.
pub const COARSE: usize = 60;
/// Width of a coarse bucket.
pub const MINUTE_MS: Millis = 60_000;
/// A history whose newest point is older than this is dropped (nothing left to plot).
pub const KEEP_MS: Millis = COARSE as Millis * MINUTE_MS;

/// A fixed-capacity ring: pushing past capacity overwrites the oldest element.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    buf: Vec<T>,
    cap: usize,
    /// Index of the oldest element once full.
    head: usize,
}

impl<T: Copy> Ring<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            buf: Vec::with_capacity(cap),
            cap: cap.max(1),
            head: 0,
        }
    }

    pub fn push(&mut self, v: T) {
        if self.buf.len() < self.cap {
            self.buf.push(v);
        } else {
            self.buf[self.head] = v;
            self.head = (self.head + 1) % self.cap;
        }
    }

    pub fn last(&self) -> Option<T> {
        self.iter().last()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Where the newest element sits in the buffer.
    fn last_index(&self) -> Option<usize> {
        match self.buf.len() {
            0 => None,
            n if n < self.cap => Some(n - 1),
            _ => Some((self.head + self.cap - 1) % self.cap),
        }
    }

    /// Buffer positions, oldest first: a parallel buffer written at [`Ring::last_index`] reads
    /// back in the same order.
    fn positions(&self) -> impl Iterator<Item = usize> {
        let split = self.head.min(self.buf.len());
        (split..self.buf.len()).chain(0..split)
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        let (a, b) = self.buf.split_at(self.head.min(self.buf.len()));
        b.iter().chain(a.iter()).copied()
    }

    /// Heap bytes held (the allocation, whether filled or not).
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity() * std::mem::size_of::<T>()
    }
}

/// One service's history: `series` series (the caller numbers them), one shared clock.
///
/// Every series is written at the clock's positions, so one buffer holds them all: the fine
/// points of series 0, 1, ..., then their coarse points. One allocation per service instead of
/// two per series (a fleet of 10,000 services under analysis holds 10,000 of these; issue 10).
#[derive(Debug, Clone)]
pub struct History {
    /// Evaluation instants in seconds since the epoch (`u32` lasts until 2106).
    fine_t: Ring<u32>,
    /// Minute numbers since the epoch.
    coarse_t: Ring<u32>,
    series: usize,
    /// `series * FINE` fine values, then `series * COARSE` coarse values; NaN is a gap.
    values: Box<[f32]>,
}

/// One point of a plotted series: `[unix ms, value]` in JSON.
pub type Point = (Millis, f64);

impl History {
    pub fn new(series: usize) -> Self {
        Self {
            fine_t: Ring::new(FINE),
            coarse_t: Ring::new(COARSE),
            series,
            values: vec![f32::NAN; series * (FINE + COARSE)].into_boxed_slice(),
        }
    }

    fn fine_at(&self, series: usize, pos: usize) -> usize {
        series * FINE + pos
    }

    fn coarse_at(&self, series: usize, pos: usize) -> usize {
        self.series * FINE + series * COARSE + pos
    }

    /// Records one evaluation at `at`: `values[i]` for series `i` (`None`: no value, kept as a
    /// gap). Values beyond the series count are ignored.
    pub fn push(&mut self, at: Millis, values: &[Option<f64>]) {
        let secs = u32::try_from(at.div_euclid(1000)).unwrap_or(u32::MAX);
        let minute = u32::try_from(at.div_euclid(MINUTE_MS)).unwrap_or(u32::MAX);
        let same_minute = self.coarse_t.last() == Some(minute);
        self.fine_t.push(secs);
        if !same_minute {
            self.coarse_t.push(minute);
        }
        let (Some(fine), Some(coarse)) = (self.fine_t.last_index(), self.coarse_t.last_index())
        else {
            return;
        };
        for i in 0..self.series {
            let v = values
                .get(i)
                .copied()
                .flatten()
                .map_or(f32::NAN, |v| v as f32);
            let f = self.fine_at(i, fine);
            self.values[f] = v;
            // The coarse point is the minute's last value judged; a gap does not erase it.
            let c = self.coarse_at(i, coarse);
            if !same_minute || !v.is_nan() {
                self.values[c] = v;
            }
        }
    }

    /// When the newest evaluation was recorded.
    pub fn newest(&self) -> Option<Millis> {
        self.fine_t.last().map(|s| Millis::from(s) * 1000)
    }

    /// Series `i` over the last hour, oldest first: the minute points older than the fine tier,
    /// then every fine point. Gaps (no value) are left out.
    pub fn points(&self, i: usize) -> Vec<Point> {
        if i >= self.series {
            return Vec::new();
        }
        let fine_from = self
            .fine_t
            .iter()
            .next()
            .map_or(Millis::MAX, |s| Millis::from(s) * 1000);
        let coarse = self
            .coarse_t
            .positions()
            .map(|p| {
                let at = Millis::from(self.coarse_t.buf[p]) * MINUTE_MS;
                (at, self.values[self.coarse_at(i, p)])
            })
            .filter(|(t, _)| *t + MINUTE_MS <= fine_from);
        let fine = self.fine_t.positions().map(|p| {
            let at = Millis::from(self.fine_t.buf[p]) * 1000;
            (at, self.values[self.fine_at(i, p)])
        });
        coarse
            .chain(fine)
            .filter(|(_, v)| !v.is_nan())
            .map(|(t, v)| (t, f64::from(v)))
            .collect()
    }

    /// Heap bytes held by the rings.
    pub fn heap_bytes(&self) -> usize {
        self.fine_t.heap_bytes()
            + self.coarse_t.heap_bytes()
            + std::mem::size_of_val::<[f32]>(&self.values)
    }
}

/// Serialized series of a history (what the API returns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoints {
    pub metric: String,
    /// `canary`, `stable`, or `judged` (the value the levels are checked against, when it is not
    /// a track's own value: a ratio or difference to the stable, or a test's statistic).
    pub track: String,
    pub points: Vec<Point>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_the_newest_in_order() {
        let mut r = Ring::new(3);
        for i in 0..5 {
            r.push(i);
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(r.heap_bytes(), 3 * std::mem::size_of::<i32>());
    }

    #[test]
    fn an_hour_at_a_10s_poll_is_60_minutes_then_the_last_30_polls() {
        let mut h = History::new(2);
        let start = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;
        // Two hours of polls every 10 s: series 0 counts polls, series 1 has a gap at the end.
        let polls = 2 * 360;
        for i in 0..polls {
            let gap = i == polls - 1;
            h.push(start + i * 10_000, &[Some(i as f64), (!gap).then_some(1.0)]);
        }
        let p = h.points(0);
        let last = start + (polls - 1) * 10_000;
        assert_eq!(p.last(), Some(&(last, (polls - 1) as f64)));
        // 30 fine points cover the last 5 minutes; minute points before that.
        let fine: Vec<_> = p.iter().filter(|(t, _)| *t > last - 300_000).collect();
        assert_eq!(fine.len(), FINE);
        assert!(p.len() <= FINE + COARSE, "{}", p.len());
        assert!(p.first().unwrap().0 >= last - KEEP_MS, "only the last hour");
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
        // A minute point holds the minute's last value.
        let minute = p.iter().find(|(t, _)| *t < last - 600_000).unwrap();
        assert_eq!(minute.1 as i64 * 10_000 + start, minute.0 + 50_000);
        assert_eq!(h.points(1).len(), p.len() - 1, "the gap is left out");
        assert_eq!(h.newest(), Some(last));
    }

    #[test]
    fn bytes_are_fixed_per_series() {
        let mut h = History::new(4);
        for i in 0..10_000 {
            h.push(i * 1000, &[Some(1.0); 4]);
        }
        let per_series = (FINE + COARSE) * 4;
        let bytes = h.heap_bytes();
        assert!(bytes <= 5 * per_series, "{bytes}");
    }
}
