//! The judge's per-service series on `/metrics` (`backout_service_state`, `_evaluations_total`,
//! `_metric_value`, `_metric_level`, `_metric_threshold`), held as one compact row per service
//! and written out at scrape time.
//!
//! Why not `prometheus-client` families: a family keeps a label set and an `Arc`'d atomic in a
//! hash map per series, about 20 series per service, ~1.9 KB per service all told; at 10,000
//! services that was 19 MB of a 256 MB budget (issue 10). A row is ~0.4 KB. Rows also follow the
//! loaded policies ([`Judged::retain`]): a service or metric removed from the policies stops
//! being exported, where a family kept its series until restart.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
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

type Rows = BTreeMap<Arc<str>, Row>;

/// Writes one family: its descriptor, then each series `each` yields; nothing when no row
/// `has` a series in it (as the registry leaves out an empty family).
fn family<'r>(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    rows: &'r Rows,
    has: impl Fn(&Row) -> bool,
    mut each: impl FnMut(
        &'r str,
        &'r Row,
        &mut dyn FnMut(&dyn Series) -> Result<(), std::fmt::Error>,
    ) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    if !rows.values().any(has) {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (service, row) in rows {
        each(service, row, &mut |s| s.write(&mut metric))?;
    }
    Ok(())
}

/// One series: a label set and its value.
trait Series {
    fn write(
        &self,
        to: &mut prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error>;
}

impl<L: EncodeLabelSet> Series for (L, ConstGauge<f64>) {
    fn write(
        &self,
        to: &mut prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.1.encode(to.encode_family(&self.0)?)
    }
}

impl<L: EncodeLabelSet> Series for (L, ConstGauge<i64>) {
    fn write(
        &self,
        to: &mut prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.1.encode(to.encode_family(&self.0)?)
    }
}

impl<L: EncodeLabelSet> Series for (L, ConstCounter<u64>) {
    fn write(
        &self,
        to: &mut prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.1.encode(to.encode_family(&self.0)?)
    }
}

impl Collector for Judged {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.read();
        let state = |r: &Row| r.state.is_some();
        family(
            &mut encoder,
            STATE,
            &rows,
            state,
            |service, row, out| match row.state {
                Some(s) => out(&([("service", service)], ConstGauge::new(s))),
                None => Ok(()),
            },
        )?;
        let counted = |r: &Row| r.evaluations > 0;
        family(
            &mut encoder,
            EVALUATIONS,
            &rows,
            counted,
            |service, row, out| {
                if row.evaluations == 0 {
                    return Ok(());
                }
                out(&([("service", service)], ConstCounter::new(row.evaluations)))
            },
        )?;
        let valued = |r: &Row| r.metrics.iter().any(|m| m.set & 0b111 != 0);
        family(&mut encoder, VALUE, &rows, valued, |service, row, out| {
            for m in &row.metrics {
                for which in Valued::ALL {
                    if let Some(v) = m.value(which) {
                        let track = which.label();
                        let metric = &*m.name;
                        let labels = [("service", service), ("metric", metric), ("track", track)];
                        out(&(labels, ConstGauge::new(v)))?;
                    }
                }
            }
            Ok(())
        })?;
        let leveled = |r: &Row| r.metrics.iter().any(|m| m.level().is_some());
        family(&mut encoder, LEVEL, &rows, leveled, |service, row, out| {
            for m in &row.metrics {
                if let Some(l) = m.level() {
                    let labels = [("service", service), ("metric", &*m.name)];
                    out(&(labels, ConstGauge::new(l)))?;
                }
            }
            Ok(())
        })?;
        let bounded = |r: &Row| r.metrics.iter().any(|m| m.set & 0b111_1000 != 0);
        family(
            &mut encoder,
            THRESHOLD,
            &rows,
            bounded,
            |service, row, out| {
                for m in &row.metrics {
                    for which in Bound::ALL {
                        if let Some(v) = m.threshold(which) {
                            let (level, bound) = which.labels();
                            let metric = &*m.name;
                            let labels = [
                                ("service", service),
                                ("metric", metric),
                                ("level", level),
                                ("bound", bound),
                            ];
                            out(&(labels, ConstGauge::new(v)))?;
                        }
                    }
                }
                Ok(())
            },
        )
    }
}

const STATE: (&str, &str, MetricType) = (
    "service_state",
    "Verdict per service: 0 healthy, 1 warning, 2 critical, 3 inconclusive, 4 rolled back, 5 shared cause",
    MetricType::Gauge,
);
const EVALUATIONS: (&str, &str, MetricType) = (
    "evaluations",
    "Service evaluations performed",
    MetricType::Counter,
);
const VALUE: (&str, &str, MetricType) = (
    "metric_value",
    "Last value the engine judged per metric and track (canary, stable; `statistic` for a statistical metric's test statistic)",
    MetricType::Gauge,
);
const LEVEL: (&str, &str, MetricType) = (
    "metric_level",
    "Level per metric: 0 ok, 1 warning, 2 critical, 3 inconclusive, 5 shared cause",
    MetricType::Gauge,
);
const THRESHOLD: (&str, &str, MetricType) = (
    "metric_threshold",
    "Warning and critical level per metric (bound above or below); for a statistical metric, the value its statistic fails at",
    MetricType::Gauge,
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
