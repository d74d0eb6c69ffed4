//! What a replayed timeline did, asserted the way the runbooks put it: rolled back after N
//! minutes, because of metric M, never, stuck at the deadline.

use crate::incident::{ms, show};
use backout::decision::{Health, Phase, Reason, Verdict};
use backout::sample::Millis;

/// The verdicts of one replayed timeline.
#[derive(Debug)]
pub struct Replay {
    pub service: String,
    pub phase: Phase,
    /// Start of the first step that changed anything.
    pub onset: Millis,
    pub interval: Millis,
    pub verdicts: Vec<Verdict>,
}

impl Replay {
    /// The first verdict that said "roll back".
    pub fn rollback(&self) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.rollback)
    }

    /// Asserts the rollback came `after` the onset, and no later than one interval after that
    /// (the first evaluation at which the breach has lasted `after`).
    pub fn rolls_back_after(&self, after: &str) -> Rollback<'_> {
        let lo = ms(after);
        self.rolls_back_between(lo, lo + self.interval)
    }

    /// Asserts the first rollback was at `onset + lo ..= onset + hi`.
    pub fn rolls_back_between(&self, lo: Millis, hi: Millis) -> Rollback<'_> {
        let Some(v) = self.rollback() else {
            panic!(
                "{}: no rollback; wanted one {}..{} after onset\n{}",
                self.service,
                show(lo),
                show(hi),
                self.story()
            );
        };
        let after = v.at - self.onset;
        assert!(
            (lo..=hi).contains(&after),
            "{}: rolled back {} after onset; wanted {}..{}\n{}",
            self.service,
            show(after),
            show(lo),
            show(hi),
            self.story()
        );
        Rollback {
            replay: self,
            verdict: v,
        }
    }

    /// Asserts no evaluation said "roll back".
    pub fn never_rolls_back(&self) -> &Self {
        if let Some(v) = self.rollback() {
            panic!(
                "{}: rolled back {} after onset\n{}",
                self.service,
                show(v.at - self.onset),
                self.story()
            );
        }
        self
    }

    /// The verdict at `onset + after` (exactly one poll).
    pub fn at(&self, after: &str) -> &Verdict {
        let t = self.onset + ms(after);
        self.verdicts
            .iter()
            .find(|v| v.at == t)
            .unwrap_or_else(|| panic!("no poll at {}", show(t)))
    }

    pub fn last(&self) -> &Verdict {
        self.verdicts.last().expect("at least one poll")
    }

    /// The worst health seen from the onset on.
    pub fn worst_after_onset(&self) -> Health {
        self.verdicts
            .iter()
            .filter(|v| v.at >= self.onset)
            .map(|v| v.health)
            .max()
            .unwrap_or(Health::Healthy)
    }

    /// One line per poll at which the service's state changed, for failure messages.
    pub fn story(&self) -> String {
        let mut out = String::new();
        let mut prev = String::new();
        for v in &self.verdicts {
            let metrics: Vec<String> = v
                .metrics
                .iter()
                .filter(|m| {
                    m.health != Health::Healthy || m.breach != backout::decision::Breach::Clear
                })
                .map(|m| format!("{}={:?}/{:?}", m.metric, m.health, m.breach))
                .collect();
            let line = format!(
                "{:?} rollback={} stuck={} [{}]",
                v.health,
                v.rollback,
                v.stuck,
                metrics.join(", ")
            );
            if line != prev {
                let rel = v.at - self.onset;
                let sign = if rel < 0 { "-" } else { "+" };
                out.push_str(&format!(
                    "  onset{sign}{} (t={}): {line}\n",
                    show(rel.abs()),
                    show(v.at)
                ));
                prev = line;
            }
        }
        out
    }
}

/// A rollback verdict, for asserting why it happened.
pub struct Rollback<'a> {
    pub replay: &'a Replay,
    pub verdict: &'a Verdict,
}

impl Rollback<'_> {
    /// Asserts the first reason names `metric`, on the judged track, at Critical.
    pub fn because(&self, metric: &str) -> &Reason {
        let r = self.verdict.reasons.first().unwrap_or_else(|| {
            panic!(
                "{}: rollback without a reason\n{}",
                self.replay.service,
                self.replay.story()
            )
        });
        assert_eq!(
            r.metric,
            metric,
            "{}: first reason\n{}",
            self.replay.service,
            self.replay.story()
        );
        assert_eq!(r.health, Health::Critical);
        assert_eq!(r.track, self.replay.phase.subject(), "track judged");
        r
    }
}
