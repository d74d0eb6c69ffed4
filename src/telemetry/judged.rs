//! The judge's per-service series on `/metrics` (`backout_service_state`, `_evaluations_total`,
//! `_metric_value`, `_metric_level`, `_metric_threshold`), held as one compact row per service
//! and written out at scrape time.
//!
//! Why not `prometheus-client` families: a family keeps a label set and an `Arc`'d atomic in a
//! hash map per series, about 20 series per service, ~1.9 KB per service all told; at 10,000
//! services that was 19 MB of a 256 MB budget (issue 10). A row is ~0.4 KB. Rows also follow the
//! loaded policies ([`Judged::retain`]): a service or metric removed from the policies stops
//! being exported, where a family kept its series until restart.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};

/// Which value of a metric: the tracks' last polls or a statistical test's statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Valued {
    Canary,
    Stable,
    Statistic,
}

impl Valued {
    const ALL: [Valued; 3] = [Valued::Canary, Valued::Stable, Valued::Statistic];

    fn label(self) -> &'static str {
        match self {
            Valued::Canary => "canary",
            Valued::Stable => "stable",
            Valued::Statistic => "statistic",
        }
    }
}

/// One of a metric's levels: `warning` or `critical`, bound `above` or `below`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    WarningAbove,
    WarningBelow,
    CriticalAbove,
    CriticalBelow,
}

impl Bound {
    const ALL: [Bound; 4] = [
        Bound::WarningAbove,
        Bound::WarningBelow,
        Bound::CriticalAbove,
        Bound::CriticalBelow,
    ];

    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Bound::WarningAbove => ("warning", "above"),
            Bound::WarningBelow => ("warning", "below"),
            Bound::CriticalAbove => ("critical", "above"),
            Bound::CriticalBelow => ("critical", "below"),
        }
    }
}

/// One metric of a service: what has been set so far (a series appears once it is set).
#[derive(Debug, Clone)]
pub struct MetricRow {
    name: Arc<str>,
    values: [f64; 3],
    thresholds: [f64; 4],
    level: i64,
    /// Bits 0-2: `values` set; 3-6: `thresholds` set; 7: `level` set.
    set: u8,
}

impl MetricRow {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            values: [0.0; 3],
            thresholds: [0.0; 4],
            level: 0,
            set: 0,
        }
    }

    pub fn set_value(&mut self, which: Valued, v: f64) {
        let i = which as usize;
        self.values[i] = v;
        self.set |= 1 << i;
    }

    pub fn set_threshold(&mut self, which: Bound, v: f64) {
        let i = which as usize;
        self.thresholds[i] = v;
        self.set |= 1 << (3 + i);
    }

    pub fn set_level(&mut self, code: i64) {
        self.level = code;
        self.set |= 1 << 7;
    }

    fn value(&self, which: Valued) -> Option<f64> {
        let i = which as usize;
        (self.set & (1 << i) != 0).then_some(self.values[i])
    }

    fn threshold(&self, which: Bound) -> Option<f64> {
        let i = which as usize;
        (self.set & (1 << (3 + i)) != 0).then_some(self.thresholds[i])
    }

    fn level(&self) -> Option<i64> {
        (self.set & (1 << 7) != 0).then_some(self.level)
    }
}

/// One service's series.
#[derive(Debug, Clone, Default)]
pub struct Row {
    state: Option<i64>,
    evaluations: u64,
    metrics: Vec<MetricRow>,
}

impl Row {
    pub fn set_state(&mut self, code: i64) {
        self.state = Some(code);
    }

    pub fn evaluated(&mut self) {
        self.evaluations += 1;
    }

    /// The row of `name` (added at its first use; `name` is the policy's shared string).
    pub fn metric(&mut self, name: &Arc<str>) -> &mut MetricRow {
        let i = match self.metrics.iter().position(|m| m.name == *name) {
            Some(i) => i,
            None => {
                self.metrics.push(MetricRow::new(name.clone()));
                self.metrics.len() - 1
            }
        };
        &mut self.metrics[i]
    }
}

/// Every service's row, in service order (the exposition is sorted by service).
#[derive(Debug, Default)]
pub struct Judged {
    rows: RwLock<BTreeMap<Arc<str>, Row>>,
}

impl Judged {
    /// Changes `service`'s row under one short lock (created at its first update).
    pub fn update<R>(&self, service: &Arc<str>, f: impl FnOnce(&mut Row) -> R) -> R {
        // A writer that panicked left plain numbers behind: still fit to export.
        let mut rows = self
            .rows
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(row) = rows.get_mut(&**service) {
            return f(row);
        }
        f(rows.entry(service.clone()).or_default())
    }

    /// Keeps the rows of the loaded policies' services and metrics only (after a reload).
    pub fn retain<'a>(&self, loaded: impl IntoIterator<Item = (&'a str, &'a [Arc<str>])>) {
        let loaded: BTreeMap<&str, HashSet<&str>> = loaded
            .into_iter()
            .map(|(s, ms)| (s, ms.iter().map(|m| &**m).collect()))
            .collect();
        let mut rows = self
            .rows
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rows.retain(|service, row| match loaded.get(&**service) {
            Some(metrics) => {
                row.metrics.retain(|m| metrics.contains(&*m.name));
                true
            }
            None => false,
        });
    }

    /// How many services have a row.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Arc<str>, Row>> {
        self.rows
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where a chunked exposition of the rows stands: the family being written and the last
/// service written in it.
#[derive(Debug, Default)]
pub struct Cursor {
    family: usize,
    after: Option<Arc<str>>,
    done: bool,
}

impl Cursor {
    pub fn done(&self) -> bool {
        self.done
    }
}

impl Judged {
    /// Appends the next part of the five families to `out`, until `out` holds `budget` bytes or
    /// all is written (then `cursor` says done). The read lock is held for one part only, so a
    /// scrape of 10,000 services is written piece by piece as the client reads it, never as one
    /// 20 MB text (issue 10), and the daemon's updates wait for one part at most.
    pub fn write_text(&self, cursor: &mut Cursor, out: &mut String, budget: usize) {
        let rows = self.read();
        while !cursor.done && out.len() < budget {
            let Some(&(name, help, kind)) = FAMILIES.get(cursor.family) else {
                cursor.done = true;
                break;
            };
            let range = match &cursor.after {
                None => {
                    if !rows.values().any(|r| has(cursor.family, r)) {
                        cursor.family += 1;
                        continue;
                    }
                    header(out, name, help, kind);
                    rows.range::<str, _>(..)
                }
                Some(last) => rows.range::<str, _>((
                    std::ops::Bound::Excluded(&**last),
                    std::ops::Bound::Unbounded,
                )),
            };
            let mut finished = true;
            for (service, row) in range {
                write_row(out, cursor.family, name, service, row);
                if out.len() >= budget {
                    cursor.after = Some(service.clone());
                    finished = false;
                    break;
                }
            }
            if finished {
                cursor.family += 1;
                cursor.after = None;
            }
        }
    }
}

/// Whether `row` has a series in family `f` (an empty family is left out, as the registry does).
fn has(f: usize, r: &Row) -> bool {
    match f {
        0 => r.state.is_some(),
        1 => r.evaluations > 0,
        2 => r.metrics.iter().any(|m| m.set & 0b111 != 0),
        3 => r.metrics.iter().any(|m| m.level().is_some()),
        _ => r.metrics.iter().any(|m| m.set & 0b111_1000 != 0),
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str("# HELP backout_");
    out.push_str(name);
    out.push(' ');
    out.push_str(help);
    out.push_str(".\n# TYPE backout_");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// A row's series in family `f`, in the OpenMetrics text format `prometheus-client` writes.
fn write_row(out: &mut String, f: usize, name: &str, service: &str, row: &Row) {
    let svc = [("service", service)];
    match f {
        0 => {
            if let Some(s) = row.state {
                sample(out, (name, ""), &svc, itoa::Buffer::new().format(s));
            }
        }
        1 if row.evaluations > 0 => {
            let mut v = itoa::Buffer::new();
            sample(out, (name, "_total"), &svc, v.format(row.evaluations));
        }
        2 => {
            for m in &row.metrics {
                for which in Valued::ALL {
                    if let Some(v) = m.value(which) {
                        let labels = [
                            ("service", service),
                            ("metric", &m.name),
                            ("track", which.label()),
                        ];
                        sample(out, (name, ""), &labels, dtoa::Buffer::new().format(v));
                    }
                }
            }
        }
        3 => {
            for m in &row.metrics {
                if let Some(l) = m.level() {
                    let labels = [("service", service), ("metric", &*m.name)];
                    sample(out, (name, ""), &labels, itoa::Buffer::new().format(l));
                }
            }
        }
        4 => {
            for m in &row.metrics {
                for which in Bound::ALL {
                    if let Some(v) = m.threshold(which) {
                        let (level, bound) = which.labels();
                        let labels = [
                            ("service", service),
                            ("metric", &*m.name),
                            ("level", level),
                            ("bound", bound),
                        ];
                        sample(out, (name, ""), &labels, dtoa::Buffer::new().format(v));
                    }
                }
            }
        }
        _ => {}
    }
}

/// One sample line; `name` is the family's name and its suffix (`_total` for a counter).
fn sample(out: &mut String, name: (&str, &str), labels: &[(&str, &str)], value: &str) {
    out.push_str("backout_");
    out.push_str(name.0);
    out.push_str(name.1);
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape(out, v);
        out.push('"');
    }
    out.push_str("} ");
    out.push_str(value);
    out.push('\n');
}

/// A label value as OpenMetrics escapes it: `\\`, `\"` and `\n`.
fn escape(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The families in exposition order: name (after `backout_`), help, type.
const FAMILIES: [(&str, &str, &str); 5] = [STATE, EVALUATIONS, VALUE, LEVEL, THRESHOLD];

const STATE: (&str, &str, &str) = (
    "service_state",
    "Verdict per service: 0 healthy, 1 warning, 2 critical, 3 inconclusive, 4 rolled back, 5 shared cause",
    "gauge",
);
const EVALUATIONS: (&str, &str, &str) = ("evaluations", "Service evaluations performed", "counter");
const VALUE: (&str, &str, &str) = (
    "metric_value",
    "Last value the engine judged per metric and track (canary, stable; `statistic` for a statistical metric's test statistic)",
    "gauge",
);
const LEVEL: (&str, &str, &str) = (
    "metric_level",
    "Level per metric: 0 ok, 1 warning, 2 critical, 3 inconclusive, 5 shared cause",
    "gauge",
);
const THRESHOLD: (&str, &str, &str) = (
    "metric_threshold",
    "Warning and critical level per metric (bound above or below); for a statistical metric, the value its statistic fails at",
    "gauge",
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    fn judged_web(m: &Metrics) {
        let errors: Arc<str> = "errors".into();
        m.judged.update(&"web".into(), |row| {
            row.evaluated();
            row.evaluated();
            row.set_state(2);
            let e = row.metric(&errors);
            e.set_value(Valued::Canary, 0.25);
            e.set_value(Valued::Stable, 0.01);
            e.set_level(2);
            e.set_threshold(Bound::WarningAbove, 0.02);
            e.set_threshold(Bound::CriticalAbove, 0.05);
        });
    }

    #[test]
    fn a_services_series_read_as_before() {
        let m = Metrics::new();
        judged_web(&m);
        let text = m.encode();
        for line in [
            "# TYPE backout_service_state gauge",
            "backout_service_state{service=\"web\"} 2",
            "backout_evaluations_total{service=\"web\"} 2",
            "backout_metric_value{service=\"web\",metric=\"errors\",track=\"canary\"} 0.25",
            "backout_metric_value{service=\"web\",metric=\"errors\",track=\"stable\"} 0.01",
            "backout_metric_level{service=\"web\",metric=\"errors\"} 2",
            "backout_metric_threshold{service=\"web\",metric=\"errors\",level=\"warning\",bound=\"above\"} 0.02",
            "backout_metric_threshold{service=\"web\",metric=\"errors\",level=\"critical\",bound=\"above\"} 0.05",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // Nothing that was never set: no statistic, no `below` bound.
        assert!(!text.contains("track=\"statistic\""), "{text}");
        assert!(!text.contains("bound=\"below\""), "{text}");
    }

    #[test]
    fn a_family_without_series_is_left_out() {
        let m = Metrics::new();
        m.judged.update(&"web".into(), |row| row.set_state(0));
        let text = m.encode();
        assert!(text.contains("backout_service_state{service=\"web\"} 0"));
        assert!(!text.contains("backout_metric_value"), "{text}");
        assert!(!text.contains("backout_evaluations_total"), "{text}");
    }

    #[test]
    fn services_and_metrics_dropped_from_the_policies_stop_being_exported() {
        let m = Metrics::new();
        judged_web(&m);
        let latency: Arc<str> = "latency".into();
        m.judged.update(&"web".into(), |row| {
            row.metric(&latency).set_value(Valued::Canary, 0.3)
        });
        m.judged.update(&"shop".into(), |row| row.set_state(0));
        let kept = [latency.clone()];
        m.judged.retain([("web", &kept[..])]);
        let text = m.encode();
        assert_eq!(m.judged.len(), 1);
        assert!(!text.contains("service=\"shop\""), "{text}");
        assert!(!text.contains("metric=\"errors\""), "{text}");
        assert!(
            text.contains(
                "backout_metric_value{service=\"web\",metric=\"latency\",track=\"canary\"} 0.3"
            ),
            "{text}"
        );
        // The service's own counter goes on from where it was.
        assert!(
            text.contains("backout_evaluations_total{service=\"web\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn rows_are_written_in_service_order() {
        let m = Metrics::new();
        for s in ["c", "a", "b"] {
            m.judged.update(&s.into(), |row| row.set_state(0));
        }
        let text = m.encode();
        let order: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("backout_service_state{"))
            .collect();
        assert_eq!(
            order,
            [
                "backout_service_state{service=\"a\"} 0",
                "backout_service_state{service=\"b\"} 0",
                "backout_service_state{service=\"c\"} 0"
            ]
        );
    }
}
