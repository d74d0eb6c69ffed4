//! `backout status` as text: a kubectl-style table of every service, or one service in the shape
//! of `kubectl argo rollouts get rollout` (a header, then one row per metric against its levels).
//! Colours only when asked (a terminal); plain text otherwise, so logs and pipes stay clean.

use super::{
    MetricStatus, PhaseName, RollbackState, RollbackStatus, ServiceDetail, ServiceList,
    ServiceStatus,
};
use crate::decision::Health;
use crate::sample::Millis;
use std::fmt::Write as _;

/// Colours on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Color,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        match self {
            Style::Plain => text.to_string(),
            Style::Color => format!("\x1b[{code}m{text}\x1b[0m"),
        }
    }

    fn health(self, h: Health, text: &str) -> String {
        let code = match h {
            Health::Critical => "31",
            Health::Warning | Health::Inconclusive | Health::Shared => "33",
            Health::Healthy => "32",
            Health::Ignored => "2",
        };
        self.paint(code, text)
    }
}

/// `12s`, `4m10s`, `2h3m`: ages as kubectl prints them.
pub fn age(ms: Millis) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn icon(phase: PhaseName, health: Option<Health>) -> &'static str {
    match (phase, health) {
        (PhaseName::RolledBack, _) => "✖",
        (_, Some(Health::Critical)) => "✖",
        (_, Some(Health::Warning | Health::Inconclusive)) => "⚠",
        (PhaseName::Canary | PhaseName::Bake, _) => "◌",
        (PhaseName::Pending, _) => "…",
        _ => "✔",
    }
}

fn rollback_word(r: Option<&RollbackStatus>) -> String {
    r.map_or_else(|| "-".into(), |r| r.state.as_str().to_string())
}

fn canary_word(s: &ServiceStatus) -> String {
    match &s.canary {
        Some(c) if !c.image.is_empty() => format!("rev {} {}", c.revision, c.image),
        Some(c) => format!("rev {}", c.revision),
        None => "-".into(),
    }
}

/// Pads `cells` to `widths` (ANSI codes do not count towards the width).
fn row(cells: &[String], widths: &[usize]) -> String {
    let mut out = String::new();
    for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
        let visible = visible_len(c);
        out.push_str(c);
        if i + 1 < cells.len() {
            out.push_str(&" ".repeat(w.saturating_sub(visible) + 2));
        }
    }
    out
}

fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_code = false;
    for ch in s.chars() {
        match (in_code, ch) {
            (false, '\x1b') => in_code = true,
            (true, 'm') => in_code = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

fn table(head: &[&str], rows: Vec<Vec<String>>, style: Style) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(visible_len(c));
        }
    }
    let head: Vec<String> = head.iter().map(|h| style.paint("1", h)).collect();
    let mut out = row(&head, &widths);
    for r in rows {
        out.push('\n');
        out.push_str(&row(&r, &widths));
    }
    out.push('\n');
    out
}

/// Every service, one row each.
pub fn services(list: &ServiceList, now: Millis, style: Style) -> String {
    let rows = list
        .services
        .iter()
        .map(|s| {
            let health = s.verdict.as_ref().map(|v| v.health);
            let verdict = health.map_or("-".to_string(), |h| h.to_string());
            vec![
                s.namespace.clone(),
                s.service.clone(),
                format!("{} {}", icon(s.phase, health), s.phase.as_str()),
                canary_word(s),
                health.map_or(verdict.clone(), |h| style.health(h, &verdict)),
                rollback_word(s.last_rollback.as_ref()),
                s.phase_since.map_or("-".into(), |t| age(now - t)),
                if s.owner.acting {
                    s.owner.replica.clone()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let head = [
        "NAMESPACE",
        "SERVICE",
        "PHASE",
        "CANARY",
        "VERDICT",
        "ROLLBACK",
        "AGE",
        "ACTING",
    ];
    if list.services.is_empty() {
        return "No services (no policy loaded on this replica).\n".into();
    }
    table(&head, rows, style)
}

/// A metric's value column: the judged value, or the statistic against what it needs.
fn value_cell(m: &MetricStatus) -> String {
    if let Some(t) = &m.statistic {
        return format!(
            "{}={:.2}/{}",
            t.name,
            t.value,
            crate::stats::threshold_text(t.fail_at)
        );
    }
    match m.value {
        Some(v) => format!("{v:.4}"),
        None if m.reading.is_empty() => "-".into(),
        None => "no value".into(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.4}"))
}

/// The breach column: `critical 4s/6s`, `critical FIRING 10s`, or `-`.
pub fn breach_cell(m: &MetricStatus) -> String {
    match &m.breach {
        Some(b) if b.firing => format!("{} FIRING {}", b.level, age(b.held_ms)),
        Some(b) => format!("{} {}/{}", b.level, age(b.held_ms), age(b.for_ms)),
        None => "-".into(),
    }
}

fn level(l: Option<crate::policy::Level>) -> String {
    l.map(|l| l.to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "-".into())
}

fn header(s: &ServiceStatus, now: Millis, style: Style) -> String {
    let health = s.verdict.as_ref().map(|v| v.health);
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{:<15}{v}", format!("{k}:"));
    };
    line("Name", s.service.clone());
    line("Namespace", s.namespace.clone());
    let since = s
        .phase_since
        .map_or(String::new(), |t| format!(" (for {})", age(now - t)));
    line(
        "Phase",
        format!("{} {}{since}", icon(s.phase, health), s.phase.as_str()),
    );
    line("Canary", canary_word(s));
    if let Some(v) = &s.verdict {
        let mut text = style.health(v.health, &v.health.to_string());
        if v.rollback {
            text.push_str(", rollback decided");
        }
        if v.stuck {
            text.push_str(", STUCK: no data past no_data_deadline");
        }
        line("Verdict", text);
        for r in &v.reasons {
            line("  Reason", r.clone());
        }
    }
    if let Some(r) = &s.last_rollback {
        let mut text = r.state.as_str().to_string();
        if let Some(m) = r.mitigated_at {
            let _ = write!(
                text,
                ", mitigated {} after the decision",
                age(m - r.decided_at)
            );
        }
        if r.state == RollbackState::Failed || r.state == RollbackState::Retrying {
            let _ = write!(text, ": {}", r.detail);
        }
        line("Last rollback", text);
    }
    let acting = if s.owner.acting {
        "acting"
    } else {
        "standby for it"
    };
    line(
        "Owner",
        format!("{} (shard {}, {acting})", s.owner.replica, s.owner.shard),
    );
    if let Some(e) = &s.error {
        line("Error", style.paint("31", e));
    }
    out
}

/// One service: the header, then its metrics against their levels, then the timeline.
pub fn service(d: &ServiceDetail, now: Millis, style: Style) -> String {
    let s = &d.status;
    let mut out = header(s, now, style);
    out.push('\n');
    let rows = s
        .metrics
        .iter()
        .map(|m| {
            vec![
                m.rule.name.clone(),
                value_cell(m),
                opt(m.canary),
                opt(m.stable),
                level(m.rule.warning),
                level(m.rule.critical),
                style.health(m.health, &m.health.to_string()),
                breach_cell(m),
            ]
        })
        .collect();
    let head = [
        "METRIC",
        "VALUE",
        "CANARY",
        "STABLE",
        "WARNING",
        "CRITICAL",
        "HEALTH",
        "BREACH (held/for)",
    ];
    out.push_str(&table(&head, rows, style));
    if !d.timeline.is_empty() {
        out.push_str("\nTimeline:\n");
        for e in d.timeline.iter().rev().take(8).rev() {
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(out, "  {:>8} ago  {kind:<17} {}", age(now - e.at), e.detail);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{MetricRule, OwnerStatus};

    fn shop() -> ServiceStatus {
        ServiceStatus {
            namespace: "demo".into(),
            service: "shop".into(),
            phase: PhaseName::Canary,
            phase_since: Some(0),
            canary: Some(crate::status::CanaryStatus {
                revision: 2,
                template_hash: "abc".into(),
                image: "shop:1.1.0".into(),
            }),
            verdict: None,
            metrics: vec![MetricStatus {
                rule: MetricRule {
                    name: "p99_latency".into(),
                    kind: crate::policy::Kind::Threshold,
                    stat: crate::policy::Stat::Last,
                    warning: Some(crate::policy::Level::above(0.5)),
                    critical: Some(crate::policy::Level::above(1.0)),
                    for_ms: 60_000,
                    clear_for_ms: 0,
                    compare: None,
                },
                health: Health::Healthy,
                value: Some(2.425),
                canary: Some(2.425),
                stable: Some(0.2),
                breach: Some(crate::status::BreachStatus {
                    level: "critical".into(),
                    since: 0,
                    held_ms: 20_000,
                    for_ms: 60_000,
                    firing: false,
                }),
                statistic: None,
                reading: String::new(),
            }],
            last_rollback: None,
            owner: OwnerStatus {
                replica: "backout-0".into(),
                shard: 0,
                acting: true,
            },
            evaluated_at: Some(30_000),
            error: None,
        }
    }

    #[test]
    fn the_list_is_aligned_and_plain_without_a_terminal() {
        let list = ServiceList {
            replica: "backout-0".into(),
            role: "standalone".into(),
            services: vec![shop()],
        };
        let text = services(&list, 95_000, Style::Plain);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE  SERVICE  PHASE"), "{text}");
        assert!(
            lines[1].contains("shop     ◌ canary  rev 2 shop:1.1.0"),
            "{text}"
        );
        assert!(lines[1].contains("95s"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(services(&list, 0, Style::Color).contains("\x1b[1m"));
    }

    #[test]
    fn a_pending_breach_shows_its_timer() {
        let d = ServiceDetail {
            status: shop(),
            history: Vec::new(),
            timeline: Vec::new(),
        };
        let text = service(&d, 30_000, Style::Plain);
        assert!(text.contains("Name:          shop"), "{text}");
        assert!(text.contains("critical 20s/60s"), "{text}");
        assert!(text.contains("> 0.5"), "{text}");
        assert!(text.contains("backout-0 (shard 0, acting)"), "{text}");
    }
}
