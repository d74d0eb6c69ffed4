//! What the demo reports while it runs. Each poll is kept structured so the CLI can redraw one
//! block in place on a terminal (values against their levels, alert timers, verdict) and print
//! one line per poll everywhere else (logs, CI, `| tee`).

use crate::daemon::CycleOutcome;
use crate::decision::{Alert, Health, Reading};
use crate::lifecycle::Release;
use crate::policy::{defaults, Level, Policy};

/// One thing the demo has to say.
#[derive(Debug, Clone)]
pub enum Update {
    /// A one-off line (setup, the canary turning bad, a rollback).
    Line(String),
    /// One poll's state.
    Poll(Poll),
}

impl Update {
    /// The plain-text form: the line itself, or the poll's one-line summary.
    pub fn into_line(self) -> String {
        match self {
            Update::Line(l) => l,
            Update::Poll(p) => p.line(),
        }
    }
}

/// One service at one poll.
#[derive(Debug, Clone)]
pub struct Poll {
    pub elapsed_s: i64,
    pub stage: &'static str,
    pub canary_share: f64,
    pub metrics: Vec<MetricRow>,
    /// `None` before the first verdict (e.g. no canary yet).
    pub verdict: Option<Health>,
}

#[derive(Debug, Clone)]
pub struct MetricRow {
    pub name: String,
    /// The judged value, `low-traffic` or `-`.
    pub value: String,
    pub warning: String,
    pub critical: String,
    pub health: Health,
    /// The pending or firing level with how long it has held, e.g. `critical 4s/6s`.
    pub alert: String,
}

/// A level as the policy reads (`> 0.05`, the level's display), `-` when there is none.
fn level(l: Option<&Level>) -> String {
    match l.map(ToString::to_string) {
        Some(text) if !text.is_empty() => text,
        _ => "-".into(),
    }
}

fn verdict_word(h: Health) -> &'static str {
    match h {
        Health::Critical => "CRITICAL",
        Health::Warning => "warning",
        Health::Inconclusive => "inconclusive",
        Health::Shared => "shared",
        Health::Healthy | Health::Ignored => "healthy",
    }
}

impl Poll {
    pub fn new(o: &CycleOutcome, policy: &Policy, elapsed_ms: i64, canary_share: f64) -> Self {
        let stage = match &o.release {
            Release::Idle => "idle",
            Release::Canary { .. } => "canary",
            Release::Bake { .. } => "bake",
            Release::RolledBack { .. } => "rolled-back",
        };
        let metrics = o.verdict.iter().flat_map(|v| {
            v.metrics.iter().map(move |m| {
                let spec = policy.metrics.iter().find(|s| s.name == m.metric);
                let needed = spec
                    .map(|s| defaults::effective(s, policy.analysis.interval).for_)
                    .unwrap_or_default()
                    .as_secs();
                let alert = [("critical", m.critical), ("warning", m.warning)]
                    .into_iter()
                    .find_map(|(name, a)| match a {
                        Alert::Pending { since } => {
                            Some(format!("{name} {}s/{needed}s", (v.at - since) / 1000))
                        }
                        Alert::Firing { .. } => Some(format!("{name} FIRING")),
                        Alert::Inactive => None,
                    })
                    .unwrap_or_else(|| "-".into());
                MetricRow {
                    name: m.metric.clone(),
                    value: match &m.reading {
                        Reading::Value { value, .. } => format!("{value:.3}"),
                        Reading::LowTraffic { .. } => "low-traffic".into(),
                        Reading::Test {
                            statistic,
                            value,
                            fail_at,
                            outcome,
                            ..
                        } => format!(
                            "{}={value:.1}/{fail_at:.0} {}",
                            short_statistic(statistic),
                            outcome_word(*outcome)
                        ),
                        Reading::Counting { .. } => "warm-up".into(),
                        _ => "-".into(),
                    },
                    warning: level(spec.and_then(|s| s.warning.as_ref())),
                    critical: level(spec.and_then(|s| s.critical.as_ref())),
                    health: m.health,
                    alert,
                }
            })
        });
        Self {
            elapsed_s: elapsed_ms / 1000,
            stage,
            canary_share,
            metrics: metrics.collect(),
            verdict: o.verdict.as_ref().map(|v| v.health),
        }
    }

    fn head(&self) -> String {
        format!(
            "t=+{:>3}s  {:<11} canary traffic {:>3.0}%",
            self.elapsed_s,
            self.stage,
            self.canary_share * 100.0
        )
    }

    /// One line per poll, for logs. A metric whose level is pending or firing shows that level
    /// and its timer (`p99_latency=2.425 [critical 4s/6s]`), not the health it keeps until its
    /// `for` has elapsed.
    pub fn line(&self) -> String {
        let mut s = self.head();
        for m in &self.metrics {
            let state = match m.alert.as_str() {
                "-" => m.health.to_string(),
                alert => alert.to_string(),
            };
            s.push_str(&format!("  {}={} [{state}]", m.name, m.value));
        }
        if let Some(h) = self.verdict {
            s.push_str(&format!("  => {}", verdict_word(h)));
        }
        s
    }

    /// A block to redraw in place: the head with the verdict, column titles, one row per metric.
    pub fn block(&self) -> Vec<String> {
        let verdict = self.verdict.map_or("-", verdict_word);
        let mut out = vec![
            format!("{}  verdict: {verdict}", self.head()),
            format!(
                "  {:<14} {:>11}  {:<9} {:<9} {:<13} {}",
                "metric", "value", "warning", "critical", "health", "alert (held/for)"
            ),
        ];
        for m in &self.metrics {
            out.push(format!(
                "  {:<14} {:>11}  {:<9} {:<9} {:<13} {}",
                m.name,
                m.value,
                m.warning,
                m.critical,
                m.health.to_string(),
                m.alert
            ));
        }
        out
    }
}

fn short_statistic(s: &str) -> &str {
    match s {
        "bayes_factor" => "BF",
        "burn_rate" => "burn",
        "confidence_higher" => "conf",
        other => other,
    }
}

fn outcome_word(o: crate::stats::sequential::Outcome) -> &'static str {
    match o {
        crate::stats::sequential::Outcome::Pass => "pass",
        crate::stats::sequential::Outcome::Fail => "FAIL",
        crate::stats::sequential::Outcome::Inconclusive => "gathering",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_read_like_the_policy() {
        assert_eq!(level(Some(&Level::above(0.05))), "> 0.05");
        assert_eq!(level(None), "-");
    }

    #[test]
    fn a_breach_prints_its_level_and_timer_not_healthy() {
        use crate::decision::{Engine, Phase};
        use crate::policy::MetricSpec;
        use crate::sample::{Sample, Track};
        use std::time::Duration;
        let policy = Policy::test()
            .with_interval(Duration::from_secs(2))
            .with_warmup(Duration::ZERO)
            .with_metric(
                MetricSpec::test("p99_latency")
                    .warning(Level::above(0.5))
                    .critical(Level::above(1.0))
                    .for_(Duration::from_secs(6)),
            );
        let mut engine = Engine::new(&policy, "2");
        let mut lines = Vec::new();
        for t in [0, 2_000, 4_000, 6_000] {
            engine
                .observe("p99_latency", Track::Canary, Sample::value(t, 2.425))
                .unwrap();
            let v = engine.evaluate(t, Phase::Canary { started_at: 0 });
            let o = CycleOutcome {
                service: "web".into(),
                key: "default/web".into(),
                release: Release::Idle,
                verdict: Some(v),
                events: Vec::new(),
                orders: Vec::new(),
                rollback: None,
                error: None,
                polls: Vec::new(),
                recovery: Vec::new(),
            };
            lines.push(Poll::new(&o, &policy, t, 0.1).line());
        }
        assert!(
            lines[2].contains("p99_latency=2.425 [critical 4s/6s]"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("p99_latency=2.425 [critical FIRING]"),
            "{}",
            lines[3]
        );
        assert!(lines.iter().all(|l| !l.contains("[healthy]")), "{lines:?}");
    }

    #[test]
    fn the_block_keeps_its_height_without_a_verdict() {
        let p = Poll {
            elapsed_s: 4,
            stage: "idle",
            canary_share: 0.1,
            metrics: Vec::new(),
            verdict: None,
        };
        assert_eq!(p.block().len(), 2);
        assert!(p.line().starts_with("t=+  4s  idle"), "{}", p.line());
    }
}
