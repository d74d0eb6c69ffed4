//! The few PromQL evaluations the judges need, over scrape-indexed series, with Prometheus's
//! semantics where they matter for decisions: counter resets, the 5-minute lookback of instant
//! queries, `rate()` needing two samples in its window and extrapolating as Prometheus does, and
//! `sum()` of nothing being an empty result rather than zero.

use super::scenario::SCRAPE_SECS;

/// Instant-query lookback (Prometheus's default staleness).
pub const LOOKBACK_SECS: u64 = 300;

fn index(at: u64) -> usize {
    (at / SCRAPE_SECS) as usize
}

/// Value of the series at `at` as an instant query sees it, or `None` (absent).
pub fn instant(series: &[Option<f64>], at: u64) -> Option<f64> {
    let hi = index(at).min(series.len().checked_sub(1)?);
    let lo = index(at.saturating_sub(LOOKBACK_SECS));
    (lo..=hi).rev().find_map(|i| series[i])
}

/// Reset-aware increase over the present samples at indices `lo..=hi`, starting from `start`.
fn increase_over(series: &[Option<f64>], lo: usize, hi: usize, start: Option<f64>) -> f64 {
    let mut prev = start;
    let mut total = 0.0;
    for v in series[lo..=hi].iter().flatten() {
        total += match prev {
            Some(p) if *v >= p => v - p,
            // A counter that went down restarted from zero.
            Some(_) => *v,
            // A series created inside the range started from zero.
            None => *v,
        };
        prev = Some(*v);
    }
    total
}

/// `rate(x[window])` at `at`, as Prometheus 2.x computes it (`extrapolatedRate`): the
/// reset-aware increase between the first and last sample inside the window, extrapolated
/// towards each edge of the window by the gap to it when that gap is under 1.1 average scrape
/// intervals, else by half an interval, never further back than where the counter would have
/// been zero, then divided by the whole window; `None` with fewer than two samples.
///
/// Why exact: a series born inside the window (a canary's pods, and its error counter, which
/// exists only after the first error) covers a fraction of it, and dividing its increase by
/// that fraction instead would read a young canary's error ratio several times too high.
pub fn rate(series: &[Option<f64>], at: u64, window: u64) -> Option<f64> {
    let hi = index(at).min(series.len().checked_sub(1)?);
    let lo = index(at.saturating_sub(window)) + usize::from(at >= window);
    let present: Vec<usize> = (lo..=hi).filter(|i| series[*i].is_some()).collect();
    let (first, last) = (*present.first()?, *present.last()?);
    if first == last {
        return None;
    }
    let first_value = series[first]?;
    let inc = increase_over(series, first + 1, last, Some(first_value));
    let time = |i: usize| (i as u64 * SCRAPE_SECS) as f64;
    let sampled = time(last) - time(first);
    let average = sampled / (present.len() - 1) as f64;
    let mut to_start = time(first) - (at as f64 - window as f64);
    let to_end = at as f64 - time(last);
    if inc > 0.0 && first_value >= 0.0 {
        to_start = to_start.min(sampled * first_value / inc);
    }
    let threshold = average * 1.1;
    let edge = |gap: f64| if gap < threshold { gap } else { average / 2.0 };
    let extrapolated = sampled + edge(to_start) + edge(to_end);
    Some(inc * extrapolated / sampled / window as f64)
}

/// `sum()` over series: empty (None) when no series contributed, never a made-up zero.
pub fn sum(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    values
        .into_iter()
        .flatten()
        .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_handles_resets_and_needs_two_samples() {
        // Scrapes every 15 s: 0, 15, 30, 45, 60.
        let s = [Some(100.0), Some(115.0), Some(5.0), Some(20.0), Some(35.0)];
        // Window (0, 60]: samples at 15..60: 115 -> 5 (reset, +5) -> 20 -> 35 = 35 over 45 s.
        let r = rate(&s, 60, 60).unwrap();
        assert!((r - 35.0 / 45.0).abs() < 1e-12);
        assert_eq!(rate(&[None, None, Some(1.0)], 30, 15), None);
    }

    #[test]
    fn a_series_born_inside_the_window_extrapolates_as_prometheus_does() {
        // A canary's error counter appears at 60 s with 1, then 2, 3 (scrapes every 15 s);
        // rate(x[5m]) at 90 s: increase 2 over 30 s sampled; the 270 s to the window's start
        // are cut to the 15 s back to where the counter would be zero (30 s * 1/2), which is
        // under 1.1 scrape intervals: 2 * (30 + 15) / 30 / 300 = 0.01 per second. Dividing by
        // the sampled 30 s would read 0.067, 6.7x as high.
        let s = [None, None, None, None, Some(1.0), Some(2.0), Some(3.0)];
        let r = rate(&s, 90, 300).unwrap();
        assert!((r - 0.01).abs() < 1e-12, "{r}");
        // A gap to the start of over 1.1 intervals extrapolates half an interval: a counter at
        // 100 at 60 s (never near zero), 130 at 90 s, in a 5m window: 30 * 37.5 / 30 / 300.
        let s = [
            None,
            None,
            None,
            None,
            Some(100.0),
            Some(115.0),
            Some(130.0),
        ];
        let r = rate(&s, 90, 300).unwrap();
        assert!((r - 0.125).abs() < 1e-12, "{r}");
    }

    #[test]
    fn instant_looks_back_five_minutes_only() {
        let mut s = vec![Some(1.0)];
        s.extend(std::iter::repeat_n(None, 30));
        assert_eq!(instant(&s, 15 * 20), Some(1.0));
        assert_eq!(instant(&s, 15 * 21), None);
    }

    #[test]
    fn sum_of_nothing_is_absent_not_zero() {
        assert_eq!(sum([None, None]), None);
        assert_eq!(sum([None, Some(0.0)]), Some(0.0));
    }
}
