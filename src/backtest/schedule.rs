//! When a backtest polls: every `step` from `--from` to `--to`, plus enough history before
//! `--from` for the engine's windows, and the range queries that cover those instants.

use super::time::{human, millis, rfc3339};
use super::BacktestError;
use crate::decision::{Engine, Phase};
use crate::policy::Policy;
use crate::sample::Millis;
use crate::source::Range;
use serde::Serialize;
use std::time::Duration;

/// Polls a backtest replays at most (a week at 1 s is 604 800): beyond that the answer would take
/// minutes and gigabytes, and a coarser step answers the same question.
pub const MAX_POLLS: u64 = 1_000_000;

/// Points per series Prometheus returns from one range query at most is 11 000; longer
/// windows are split into queries of this many points.
pub const MAX_POINTS_PER_QUERY: u64 = 10_000;

/// Which phase the whole window is judged in (lifecycle events are not replayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A canary started at `--from`: warm-up applies from there, the canary is judged.
    Canary,
    /// The new version was promoted at `--from`: the stable is judged alone.
    Bake,
}

/// The poll instants of one backtest. Built by [`Schedule::new`], which checks the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// First judged poll (whole seconds: Prometheus range queries start on whole seconds, and
    /// every poll must fall exactly on a point of the range answer).
    pub from: Millis,
    /// Last judged poll (`--to` rounded down to the step grid).
    pub to: Millis,
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// Polls observed before `from` without being judged, so windowed statistics are full at
    /// `from` as if backout had been polling all along.
    pub history_polls: u64,
    pub mode: Mode,
}

impl Schedule {
    /// Polls every `step` (default: the policy's `analysis.interval`) from `from` to `to`.
    pub fn new(
        policy: &Policy,
        from: Millis,
        to: Millis,
        step: Option<Duration>,
        mode: Mode,
    ) -> Result<Self, BacktestError> {
        let from = from - from.rem_euclid(1000);
        let step = step.unwrap_or(policy.analysis.interval);
        let bad_step = |why: &str| BacktestError::Step {
            step: human(step),
            why: why.to_string(),
        };
        if step < Duration::from_secs(1) || step.subsec_nanos() != 0 {
            return Err(bad_step(
                "must be a whole number of seconds, at least 1s (Prometheus range queries \
                 start on whole seconds); pass e.g. --step 10s",
            ));
        }
        if to <= from {
            return Err(BacktestError::EmptyWindow {
                from: rfc3339(from),
                to: rfc3339(to),
            });
        }
        let step_ms = millis(step);
        let polls = u64::try_from((to - from) / step_ms).unwrap_or(u64::MAX) + 1;
        if polls > MAX_POLLS {
            return Err(BacktestError::TooManyPolls {
                polls,
                step: human(step),
                max: MAX_POLLS,
            });
        }
        let span = i64::try_from(polls - 1).unwrap_or(0) * step_ms;
        Ok(Schedule {
            from,
            to: from + span,
            step,
            history_polls: u64::try_from(lookback(policy))
                .unwrap_or(0)
                .div_ceil(step.as_secs().max(1) * 1000),
            mode,
        })
    }

    pub fn step_ms(&self) -> Millis {
        millis(self.step).max(1)
    }

    /// Judged polls, `from` and `to` included.
    pub fn polls(&self) -> u64 {
        u64::try_from((self.to - self.from) / self.step_ms()).unwrap_or(0) + 1
    }

    /// The first instant fetched (and observed): `from` minus the history the engine keeps.
    pub fn start(&self) -> Millis {
        self.from - i64::try_from(self.history_polls).unwrap_or(0) * self.step_ms()
    }

    /// Every instant fetched, history first.
    pub fn instants(&self) -> impl Iterator<Item = Millis> {
        let (start, step, to) = (self.start(), self.step_ms(), self.to);
        (0..)
            .map(move |k: i64| start + k * step)
            .take_while(move |t| *t <= to)
    }

    /// The range queries covering [`Schedule::instants`]: one, unless the window has more points
    /// than Prometheus returns per query. Every chunk starts on the grid.
    pub fn ranges(&self) -> Vec<Range> {
        let step = self.step_ms();
        let chunk = i64::try_from(MAX_POINTS_PER_QUERY).unwrap_or(i64::MAX) * step;
        let mut out = Vec::new();
        let mut start = self.start();
        while start <= self.to {
            let end = (start + chunk - step).min(self.to);
            out.push(Range {
                start,
                end,
                step: self.step,
            });
            start = end + step;
        }
        out
    }

    /// The phase every evaluation is made in.
    pub fn phase(&self) -> Phase {
        match self.mode {
            Mode::Canary => Phase::Canary {
                started_at: self.from,
            },
            Mode::Bake => Phase::Bake {
                promoted_at: self.from,
            },
        }
    }
}

/// How far back the engine remembers (its longest window plus one interval of slack), so the
/// history fetched before `--from` gives the first judged poll what a running daemon would have.
fn lookback(policy: &Policy) -> Millis {
    let interval = millis(policy.analysis.interval).max(1);
    let engine = Engine::new(policy, "");
    let longest = engine.rules().map(|r| r.retention()).max().unwrap_or(0);
    longest.max(interval * 2) + interval
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Level, MetricSpec, Stat};

    fn policy() -> Policy {
        Policy::test().with_metric(
            MetricSpec::test("errors")
                .critical(Level::above(0.05))
                .stat(Stat::Mean, Duration::from_secs(60)),
        )
    }

    #[test]
    fn polls_fall_on_the_step_grid_from_a_whole_second() {
        let s = Schedule::new(&policy(), 100_500, 160_000, None, Mode::Canary).unwrap();
        assert_eq!((s.from, s.to, s.polls()), (100_000, 160_000, 7));
        // 60 s window + 10 s slack at a 10 s step: 7 polls of history (t - 70 s .. t - 10 s).
        assert_eq!(s.history_polls, 7);
        assert_eq!(s.start(), 30_000);
        let instants: Vec<Millis> = s.instants().collect();
        assert_eq!(instants.len(), 14);
        assert_eq!(instants.last(), Some(&160_000));
        assert_eq!(s.ranges().len(), 1);
        let r = s.ranges()[0];
        assert_eq!((r.start, r.end), (30_000, 160_000));
        assert_eq!(
            s.phase(),
            Phase::Canary {
                started_at: 100_000
            }
        );
    }

    #[test]
    fn a_long_window_is_split_on_the_grid() {
        let day = 86_400_000;
        let s = Schedule::new(
            &policy(),
            0,
            3 * day,
            Some(Duration::from_secs(10)),
            Mode::Bake,
        )
        .unwrap();
        let ranges = s.ranges();
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[0].start, s.start());
        for w in ranges.windows(2) {
            assert_eq!(w[1].start, w[0].end + 10_000);
            assert_eq!((w[1].start - s.start()) % 10_000, 0);
        }
        assert_eq!(ranges[2].end, 3 * day);
        let points: i64 = ranges.iter().map(|r| (r.end - r.start) / 10_000 + 1).sum();
        assert_eq!(points, s.instants().count() as i64);
    }

    #[test]
    fn bad_flags_are_named() {
        let p = policy();
        let e = Schedule::new(&p, 10_000, 10_000, None, Mode::Canary).unwrap_err();
        assert!(e.to_string().contains("--from"), "{e}");
        let e = Schedule::new(
            &p,
            0,
            10_000,
            Some(Duration::from_millis(1500)),
            Mode::Canary,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("--step 1s 500ms"), "{e}");
        let e = Schedule::new(
            &p,
            0,
            i64::MAX / 2,
            Some(Duration::from_secs(1)),
            Mode::Canary,
        )
        .unwrap_err();
        assert!(e.to_string().contains("larger --step"), "{e}");
    }
}
