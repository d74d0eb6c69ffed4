//! The few PromQL evaluations the judges need, over scrape-indexed series, with Prometheus's
//! semantics where they matter for decisions: counter resets, the 5-minute lookback of instant
//! queries, `rate()` needing two samples in its window, and `sum()` of nothing being an empty
//! result rather than zero. Extrapolation is simplified to scaling by window / sampled span.

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

/// `rate(x[window])` at `at`: per-second increase between the first and last sample inside the
/// window, scaled up to the whole window; `None` with fewer than two samples.
pub fn rate(series: &[Option<f64>], at: u64, window: u64) -> Option<f64> {
    let hi = index(at).min(series.len().checked_sub(1)?);
    let lo = index(at.saturating_sub(window)) + usize::from(at >= window);
    let present: Vec<usize> = (lo..=hi).filter(|i| series[*i].is_some()).collect();
    let (first, last) = (*present.first()?, *present.last()?);
    if first == last {
        return None;
    }
    let inc = increase_over(series, first + 1, last, series[first]);
    let span = ((last - first) as u64 * SCRAPE_SECS) as f64;
    Some(inc / span)
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
