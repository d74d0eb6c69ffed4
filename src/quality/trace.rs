//! Why a policy rolled a run back: the polls before each rollback (after the incident started,
//! on a shared incident), with what the shared-cause counts test saw (`quality --trace`).
//!
//! The table says how often; this says which rule fired, when (relative to the incident), and
//! whether the canary's counts looked worse than the stable's, so a cause can be told from noise.

use super::bench::seed;
use super::judges::Judge;
use super::policies::{first_rollback_traced, window_ratio};
use super::promql::{rate, sum};
use super::scenario::{generate, Counter, Run, Scenario};
use crate::decision::shared::worse_p_value;
use crate::decision::Verdict;
use crate::policy::{defaults, Kind, Policy};
use crate::sample::Track;
use std::collections::VecDeque;
use std::fmt::Write;

/// Polls kept before a rollback (enough for the longest `for` of the judged policies).
const KEPT: usize = 24;

/// The trace of every run of `s` (number `idx` in the run's list) that `judge` (a policy) rolled
/// back at or after the incident started, or at all when `s` has no incident.
pub fn rollbacks(idx: usize, s: &Scenario, judge: &Judge, runs: usize) -> String {
    let Judge::Policy { policy, .. } = judge else {
        return String::new();
    };
    let from = s.incident_from().unwrap_or(0);
    let mut out = String::new();
    for r in 0..runs {
        let run = generate(s, seed(idx, r));
        let mut kept: VecDeque<Verdict> = VecDeque::new();
        let at = first_rollback_traced(policy, &run, |v| {
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(v.clone());
        });
        let Some(at) = at.filter(|t| *t >= from) else {
            continue;
        };
        let _ = writeln!(
            out,
            "\n{} | {} | run {r}: rollback at {at} s ({:+} s from the incident's start)",
            s.name,
            judge.name(),
            at as i64 - from as i64
        );
        let fired: Vec<String> = kept
            .back()
            .map(|v| v.reasons.iter().map(|r| r.metric.clone()).collect())
            .unwrap_or_default();
        for v in &kept {
            for m in v.metrics.iter().filter(|m| fired.contains(&m.metric)) {
                let secs = v.at / 1000;
                let counts = counts(policy, &run, &m.metric, secs.max(0) as u64);
                let _ = writeln!(
                    out,
                    "  {:>5} s {:<12} {:<10?} {}{counts}",
                    secs, m.metric, m.breach, m.reading
                );
            }
        }
    }
    out
}

/// What the run's own counters say over the metric's window at `at`: both tracks' ratios, the
/// events and requests, and the p-value of "canary at most 1.2x worse" on those true counts.
fn counts(policy: &Policy, run: &Run, metric: &str, at: u64) -> String {
    let Some(m) = policy.metrics.iter().find(|m| m.name == metric) else {
        return String::new();
    };
    if m.kind() == Kind::BurnRate {
        return burn_counts(run, at);
    }
    if m.kind() != Kind::Threshold {
        return String::new();
    }
    let w = defaults::effective(m, policy.analysis.interval)
        .window
        .as_secs()
        .max(1);
    let inc = |t, c| sum(run.series(t, c).map(|s| rate(s, at, w))).unwrap_or(0.0) * w as f64;
    let (ce, cr, se, sr) = (
        inc(Track::Canary, Counter::Errors),
        inc(Track::Canary, Counter::Requests),
        inc(Track::Stable, Counter::Errors),
        inc(Track::Stable, Counter::Requests),
    );
    let ratio = |t| window_ratio(run, t, Counter::Errors, at, w).unwrap_or(f64::NAN);
    let p = worse_p_value(ce, se, cr, sr, 1.2).unwrap_or(f64::NAN);
    format!(
        " || true {:.4} vs {:.4}: {ce:.0}/{cr:.0} vs {se:.0}/{sr:.0}, p {p:.3}",
        ratio(Track::Canary),
        ratio(Track::Stable)
    )
}

/// For a burn rate: both tracks' true error ratios over 5 minutes and over the canary's life
/// (at most an hour), with the events and requests of the latter.
fn burn_counts(run: &Run, at: u64) -> String {
    let life = at.clamp(1, 3600);
    let inc =
        |t, c, w: u64| sum(run.series(t, c).map(|s| rate(s, at, w))).unwrap_or(0.0) * w as f64;
    let mut out = String::from(" ||");
    for w in [300, life] {
        let (ce, cr, se, sr) = (
            inc(Track::Canary, Counter::Errors, w),
            inc(Track::Canary, Counter::Requests, w),
            inc(Track::Stable, Counter::Errors, w),
            inc(Track::Stable, Counter::Requests, w),
        );
        let p = worse_p_value(ce, se, cr, sr, 1.2).unwrap_or(f64::NAN);
        let _ = write!(out, " {w}s: {ce:.0}/{cr:.0} vs {se:.0}/{sr:.0} p {p:.3};");
    }
    out
}
