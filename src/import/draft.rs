//! The policy an import writes, as a draft with comments, and its rendering to TOML.
//!
//! Written by hand rather than serialised from `policy::Policy`, because what matters to the user
//! is the comments: where each value came from, what was approximated, what to check.

use std::fmt::Write as _;
use std::time::Duration;

/// One `key = value` line with an optional trailing comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub key: String,
    /// Already TOML (use [`string`], [`duration`], [`number`]).
    pub value: String,
    pub comment: Option<String>,
}

impl Line {
    pub fn new(key: &str, value: String) -> Self {
        Self {
            key: key.into(),
            value,
            comment: None,
        }
    }

    pub fn note(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

/// A `[[metric]]` entry: comments above, its lines, and an optional sub-table
/// (`[metric.sequential]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricDraft {
    pub comments: Vec<String>,
    pub lines: Vec<Line>,
    pub table: Option<(String, Vec<Line>)>,
}

/// The whole policy file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Draft {
    /// The header: where it came from, what to check.
    pub header: Vec<String>,
    pub service: String,
    pub namespace: String,
    pub stable: Line,
    pub canary: Line,
    pub traffic_comments: Vec<String>,
    pub traffic: Vec<Line>,
    pub analysis: Vec<Line>,
    /// `[verify]`, when the defaults do not fit the poll ([`verify_for`]).
    pub verify: Vec<Line>,
    pub metrics: Vec<MetricDraft>,
}

impl Default for Line {
    fn default() -> Self {
        Line::new("", String::new())
    }
}

/// A TOML string: single-quoted (literal, so PromQL's quotes and backslashes stay as written)
/// when it can be, else basic with escapes.
pub fn string(s: &str) -> String {
    if !s.contains('\'') && !s.contains('\n') && !s.chars().any(char::is_control) {
        format!("'{s}'")
    } else {
        toml::Value::String(s.to_string()).to_string()
    }
}

/// A humantime duration string (`"1m"`, `"15s"`, `"1m 30s"`).
pub fn duration(d: Duration) -> String {
    format!("\"{}\"", humantime::format_duration(d))
}

/// A TOML float (always with a decimal point or exponent, so it reads back as a float).
pub fn number(x: f64) -> String {
    toml::Value::Float(x).to_string()
}

fn line(out: &mut String, l: &Line) {
    let _ = write!(out, "{} = {}", l.key, l.value);
    if let Some(c) = &l.comment {
        let _ = write!(out, "  # {c}");
    }
    out.push('\n');
}

fn comments(out: &mut String, cs: &[String]) {
    for c in cs {
        let _ = writeln!(out, "# {c}");
    }
}

/// `[verify]` for a policy polled every `interval` whose fastest metric has no `for` (every
/// import adds the sequential tests): nothing when the defaults fit. At a long poll (Argo's
/// 5m) the default `restore_within` cannot be met even by a rollback that works at once
/// (verify window + one poll), and validation refuses it, so the draft sets one that leaves a
/// poll of room for the rollback itself, marked to check against the service's RTO.
pub fn verify_for(interval: Duration) -> Vec<Line> {
    let defaults = crate::policy::Verify::default();
    let floor = defaults.window + interval;
    if floor < defaults.restore_within {
        return Vec::new();
    }
    vec![Line::new("restore_within", duration(floor + interval)).note(format!(
        "CHECK against the RTO: the default {} cannot be met at a {} poll (verify.window {} + one poll)",
        humantime::format_duration(defaults.restore_within),
        humantime::format_duration(interval),
        humantime::format_duration(defaults.window),
    ))]
}

impl Draft {
    pub fn render(&self) -> String {
        let mut out = String::new();
        comments(&mut out, &self.header);
        out.push('\n');
        line(&mut out, &Line::new("service", string(&self.service)));
        line(&mut out, &Line::new("namespace", string(&self.namespace)));
        out.push_str("\n[deployments]\n");
        line(&mut out, &self.stable);
        line(&mut out, &self.canary);
        out.push_str("\n[traffic]\n");
        comments(&mut out, &self.traffic_comments);
        self.traffic.iter().for_each(|l| line(&mut out, l));
        if !self.analysis.is_empty() {
            out.push_str("\n[analysis]\n");
            self.analysis.iter().for_each(|l| line(&mut out, l));
        }
        if !self.verify.is_empty() {
            out.push_str("\n[verify]\n");
            self.verify.iter().for_each(|l| line(&mut out, l));
        }
        for m in &self.metrics {
            out.push('\n');
            comments(&mut out, &m.comments);
            out.push_str("[[metric]]\n");
            m.lines.iter().for_each(|l| line(&mut out, l));
            if let Some((name, lines)) = &m.table {
                let _ = writeln!(out, "[metric.{name}]");
                lines.iter().for_each(|l| line(&mut out, l));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_stay_literal_unless_they_cannot() {
        assert_eq!(string(r#"sum(x{a="b"})"#), r#"'sum(x{a="b"})'"#);
        assert_eq!(string("it's"), r#""it's""#);
        assert_eq!(number(99.0), "99.0");
        assert_eq!(duration(Duration::from_secs(90)), "\"1m 30s\"");
    }

    #[test]
    fn a_long_poll_gets_a_restore_deadline_it_can_meet() {
        assert!(verify_for(Duration::from_secs(60)).is_empty());
        let lines = verify_for(Duration::from_secs(300));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].key, "restore_within");
        assert_eq!(lines[0].value, "\"20m\"");
    }
}
