//! What a backtest prints: a summary for people, or JSON lines for scripts (one object per
//! verdict change, then one summary object). Pure string building, so it is tested directly.

use super::replay::{Change, Replay};
use super::schedule::Mode;
use super::time::{human, rfc3339};
use crate::decision::{Health, Reason, Stage, Verdict};
use crate::sample::Millis;
use serde::Serialize;
use std::fmt::Write as _;

/// The metrics whose health differs from `before` (at the first change: every unhealthy one),
/// with what they read. After a rollback the verdict's reasons stay those that caused it, so
/// this is how later changes (a recovery, another metric failing) become visible.
fn metric_changes(v: &Verdict, before: &[Health]) -> Vec<String> {
    v.metrics
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let was = before.get(i).copied();
            let changed = match was {
                Some(h) => h != m.health,
                None => m.health > Health::Healthy,
            };
            if !changed {
                return None;
            }
            let detail = v
                .reasons
                .iter()
                .find(|r| r.metric == m.metric && r.health == m.health)
                .map_or_else(|| m.reading.to_string(), |r| r.detail().to_string());
            let was = was.map_or(String::new(), |h| format!(" (was {h})"));
            Some(format!("{} {}{was}: {detail}", m.metric, m.health))
        })
        .collect()
}

fn offset(at: Millis, from: Millis) -> String {
    let s = (at - from) / 1000;
    format!("+{s}s")
}

/// The summary for a terminal or an incident note.
pub fn human_summary(r: &Replay) -> String {
    let s = &r.schedule;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backtest of `{}` in `{}` (policy {})",
        r.service,
        r.namespace,
        r.policy_file.display()
    );
    let _ = writeln!(
        out,
        "window {} .. {} every {}: {} polls (and {} polls of history before --from)",
        rfc3339(s.from),
        rfc3339(s.to),
        human(s.step),
        r.polls,
        s.history_polls
    );
    let _ = writeln!(
        out,
        "{}",
        match s.mode {
            Mode::Canary => "phase: a canary started at --from (warm-up counts from there)",
            Mode::Bake => "phase: bake, the stable promoted at --from and judged alone",
        }
    );
    let _ = writeln!(out, "{} verdict change(s):", r.changes.len());
    let mut before: Vec<Health> = Vec::new();
    for c in &r.changes {
        let v = &c.verdict;
        let mut head = format!(
            "  {}  {:>7}  {}",
            rfc3339(v.at),
            offset(v.at, s.from),
            v.health
        );
        if v.rollback {
            head.push_str(", ROLLBACK");
        }
        if v.stuck {
            head.push_str(", stuck (inconclusive for no_data_deadline)");
        }
        if v.stage == Stage::Warmup {
            head.push_str(" (warm-up)");
        }
        let _ = writeln!(out, "{head}");
        for line in metric_changes(v, &before) {
            let _ = writeln!(out, "      {line}");
        }
        before = v.metrics.iter().map(|m| m.health).collect();
    }
    match &r.rollback {
        Some(rb) => {
            let _ = writeln!(
                out,
                "rollback would have fired at {} ({} s after start):",
                rfc3339(rb.at),
                rb.after_ms / 1000
            );
            for reason in &rb.reasons {
                let _ = writeln!(out, "  - {reason}");
            }
        }
        None => {
            let last = r
                .last
                .as_ref()
                .map_or_else(|| "no verdict".to_string(), |v| v.health.to_string());
            let _ = writeln!(out, "no rollback (health at the last poll: {last})");
        }
    }
    out
}

#[derive(Serialize)]
struct ChangeLine<'a> {
    event: &'static str,
    time: String,
    poll: u64,
    after_s: f64,
    #[serde(flatten)]
    verdict: &'a crate::decision::Verdict,
}

#[derive(Serialize)]
struct RollbackLine<'a> {
    time: String,
    at: Millis,
    after_s: f64,
    reasons: &'a [Reason],
}

#[derive(Serialize)]
struct SummaryLine<'a> {
    event: &'static str,
    service: &'a str,
    namespace: &'a str,
    policy: &'a std::path::Path,
    from: String,
    to: String,
    #[serde(with = "humantime_serde")]
    step: std::time::Duration,
    mode: Mode,
    polls: u64,
    history_polls: u64,
    changes: usize,
    rollback: Option<RollbackLine<'a>>,
    final_health: Option<Health>,
}

fn change_line(c: &Change, from: Millis) -> serde_json::Result<String> {
    serde_json::to_string(&ChangeLine {
        event: "change",
        time: rfc3339(c.verdict.at),
        poll: c.poll,
        after_s: (c.verdict.at - from) as f64 / 1000.0,
        verdict: &c.verdict,
    })
}

/// JSON lines: `{"event":"change",...}` per verdict change (the [`crate::decision::Verdict`]
/// fields plus `time`, `poll` and `after_s`), then one `{"event":"summary",...}`.
pub fn json_lines(r: &Replay) -> serde_json::Result<String> {
    let s = &r.schedule;
    let mut out = String::new();
    for c in &r.changes {
        out.push_str(&change_line(c, s.from)?);
        out.push('\n');
    }
    let summary = SummaryLine {
        event: "summary",
        service: &r.service,
        namespace: &r.namespace,
        policy: &r.policy_file,
        from: rfc3339(s.from),
        to: rfc3339(s.to),
        step: s.step,
        mode: s.mode,
        polls: r.polls,
        history_polls: s.history_polls,
        changes: r.changes.len(),
        rollback: r.rollback.as_ref().map(|rb| RollbackLine {
            time: rfc3339(rb.at),
            at: rb.at,
            after_s: rb.after_ms as f64 / 1000.0,
            reasons: &rb.reasons,
        }),
        final_health: r.last.as_ref().map(|v| v.health),
    };
    out.push_str(&serde_json::to_string(&summary)?);
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::{replay, History, Schedule};
    use crate::policy::{Level, MetricSpec, Policy};

    fn no_data_replay() -> Replay {
        let p = Policy::test().with_metric(MetricSpec::test("errors").critical(Level::above(0.05)));
        let s = Schedule::new(&p, 0, 120_000, None, Mode::Canary).unwrap();
        replay(&p, &s, &History::new()).unwrap()
    }

    #[test]
    fn the_summary_names_the_window_each_change_and_the_outcome() {
        let text = human_summary(&no_data_replay());
        assert!(text.contains("backtest of `web` in `default`"), "{text}");
        assert!(
            text.contains(
                "window 1970-01-01T00:00:00Z .. 1970-01-01T00:02:00Z every 10s: 13 polls"
            ),
            "{text}"
        );
        assert!(text.contains("inconclusive (warm-up)"), "{text}");
        assert!(
            text.contains("errors inconclusive: no data on canary (empty result)"),
            "{text}"
        );
        assert!(
            text.ends_with("no rollback (health at the last poll: inconclusive)\n"),
            "{text}"
        );
    }

    #[test]
    fn json_lines_are_changes_then_one_summary() {
        let text = json_lines(&no_data_replay()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "change");
        assert_eq!(lines[0]["time"], "1970-01-01T00:00:00Z");
        assert_eq!(lines[0]["health"], "inconclusive");
        assert_eq!(lines[0]["rollback"], false);
        assert_eq!(lines[0]["metrics"][0]["metric"], "errors");
        assert_eq!(lines[1]["event"], "summary");
        assert_eq!(lines[1]["polls"], 13);
        assert_eq!(lines[1]["step"], "10s");
        assert!(lines[1]["rollback"].is_null());
    }
}
