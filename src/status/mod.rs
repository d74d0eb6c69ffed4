//! What every service looks like now, and over the last hour: the snapshot behind the status API
//! (`GET /api/v1/services`), `backout status`, the web page at `/` and the analysis endpoints.
//!
//! The daemon loop writes the [`StatusBoard`] after each evaluation (one short lock per cycle,
//! no I/O, no await); readers take a read lock and copy what they serve. Memory per service is
//! bounded: a fixed history ring per plotted series ([`history`]), at most [`TIMELINE`] events,
//! the latest value of each metric. `docs/telemetry.md` gives the bytes per service.

pub mod api;
pub mod history;
mod model;
pub mod page;
mod record;
pub mod table;

pub use history::{History, SeriesPoints};
pub use model::*;

use crate::decision::{Health, Rule, Verdict};
use crate::lifecycle::{Release, ReleaseEvent};
use crate::policy::{Kind, Policy};
use crate::sample::{Millis, Track};
use record::{record_one, record_rollback};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock};

/// Timeline events kept per service.
pub const TIMELINE: usize = 32;

/// One evaluation of one service, as the daemon hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation<'a> {
    pub at: Millis,
    pub release: &'a Release,
    pub events: &'a [ReleaseEvent],
    pub verdict: Option<&'a Verdict>,
    /// This evaluation's raw polls of value metrics: `(metric, track, value)`.
    pub polls: &'a [(String, Track, f64)],
    /// Why the cluster could not be read, if it could not.
    pub error: Option<&'a str>,
    pub shard: u32,
    pub acting: bool,
}

/// What the supervisor reported about a rollback.
#[derive(Debug, Clone, PartialEq)]
pub enum RollbackProgress {
    Started,
    Finished { mitigated_at: Millis, dry_run: bool },
    Failed { error: String, retrying: bool },
    Held { detail: String },
    Superseded,
}

/// Which values of a metric are plotted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plotted {
    Canary,
    Stable,
    /// The value checked against the levels, when it is not a track's own value.
    Judged,
}

impl Plotted {
    fn as_str(self) -> &'static str {
        match self {
            Plotted::Canary => "canary",
            Plotted::Stable => "stable",
            Plotted::Judged => "judged",
        }
    }
}

/// The series of a metric: raw polls per track for value metrics; the judged value when it is a
/// ratio / difference or a test's statistic.
fn plotted(rule: &MetricRule) -> &'static [Plotted] {
    match (rule.kind, rule.compare.is_some()) {
        (Kind::Threshold, false) => &[Plotted::Canary, Plotted::Stable],
        (Kind::Threshold | Kind::MannWhitney, _) => {
            &[Plotted::Canary, Plotted::Stable, Plotted::Judged]
        }
        (Kind::Sequential | Kind::BurnRate, _) => &[Plotted::Judged],
    }
}

struct Entry {
    status: ServiceStatus,
    /// `(metric index, what)` per history series.
    layout: Vec<(usize, Plotted)>,
    /// Allocated at the first evaluation with values; dropped an hour after the last.
    history: Option<History>,
    timeline: VecDeque<TimelineEvent>,
}

impl Entry {
    fn new(p: &Policy) -> Self {
        let metrics: Vec<MetricStatus> = p
            .metrics
            .iter()
            .map(|m| MetricStatus {
                rule: rule_of(&Rule::from_spec(m, &p.analysis), m.kind()),
                health: Health::Healthy,
                value: None,
                canary: None,
                stable: None,
                breach: None,
                statistic: None,
                reading: String::new(),
            })
            .collect();
        let layout = metrics
            .iter()
            .enumerate()
            .flat_map(|(i, m)| plotted(&m.rule).iter().map(move |w| (i, *w)))
            .collect();
        Self {
            status: ServiceStatus {
                namespace: p.namespace.clone(),
                service: p.service.clone(),
                phase: PhaseName::Pending,
                phase_since: None,
                canary: None,
                verdict: None,
                metrics,
                last_rollback: None,
                owner: OwnerStatus::default(),
                evaluated_at: None,
                error: None,
            },
            layout,
            history: None,
            timeline: VecDeque::new(),
        }
    }

    fn mark(&mut self, at: Millis, kind: TimelineKind, detail: String) {
        if self.timeline.len() == TIMELINE {
            self.timeline.pop_front();
        }
        self.timeline.push_back(TimelineEvent { at, kind, detail });
    }

    fn detail(&self) -> ServiceDetail {
        let history = self
            .layout
            .iter()
            .enumerate()
            .map(|(s, (m, what))| SeriesPoints {
                metric: self.status.metrics[*m].rule.name.clone(),
                track: what.as_str().into(),
                points: self
                    .history
                    .as_ref()
                    .map(|h| h.points(s))
                    .unwrap_or_default(),
            })
            .collect();
        ServiceDetail {
            status: self.status.clone(),
            history,
            timeline: self.timeline.iter().cloned().collect(),
        }
    }

    /// Approximate heap and inline bytes of this entry.
    fn bytes(&self) -> usize {
        let s = &self.status;
        let strings = s.namespace.capacity()
            + s.service.capacity()
            + s.error.as_ref().map_or(0, String::capacity)
            + s.canary
                .as_ref()
                .map_or(0, |c| c.image.capacity() + c.template_hash.capacity())
            + s.verdict.as_ref().map_or(0, |v| {
                v.reasons.iter().map(String::capacity).sum::<usize>()
                    + v.reasons.capacity() * std::mem::size_of::<String>()
            })
            + s.last_rollback.as_ref().map_or(0, |r| r.detail.capacity());
        let metrics = s.metrics.capacity() * std::mem::size_of::<MetricStatus>()
            + s.metrics
                .iter()
                .map(|m| {
                    m.rule.name.capacity()
                        + m.reading.capacity()
                        + m.breach.as_ref().map_or(0, |b| b.level.capacity())
                        + m.statistic.as_ref().map_or(0, |t| t.name.capacity())
                })
                .sum::<usize>();
        let timeline = self.timeline.capacity() * std::mem::size_of::<TimelineEvent>()
            + self
                .timeline
                .iter()
                .map(|e| e.detail.capacity())
                .sum::<usize>();
        std::mem::size_of::<Entry>()
            + strings
            + metrics
            + timeline
            + self.layout.capacity() * std::mem::size_of::<(usize, Plotted)>()
            + self.history.as_ref().map_or(0, History::heap_bytes)
    }
}

fn rule_of(r: &Rule, kind: Kind) -> MetricRule {
    MetricRule {
        name: r.name.clone(),
        kind,
        stat: r.stat,
        warning: r.warning,
        critical: r.critical,
        for_ms: r.for_,
        clear_for_ms: r.clear_for,
        compare: r.compare,
    }
}

#[derive(Default)]
struct Board {
    /// `namespace/service` -> entry, sorted for stable listings.
    /// Boxed: a sync moves every entry from the old tree to a new one, and inline entries
    /// (about 500 bytes) made both trees' nodes large at once.
    services: BTreeMap<String, Box<Entry>>,
    replica: String,
    role: String,
}

/// The shared snapshot: cheap to clone, written by the daemon loop, read by the admin server.
#[derive(Clone, Default)]
pub struct StatusBoard(Arc<RwLock<Board>>);

impl StatusBoard {
    pub fn new(replica: impl Into<String>) -> Self {
        let board = Board {
            replica: replica.into(),
            ..Board::default()
        };
        Self(Arc::new(RwLock::new(board)))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Board> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Board> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// This replica's role (`standalone`, `leader`, `standby`, `shards:N/S`).
    pub fn set_role(&self, role: &str) {
        let mut b = self.write();
        if b.role != role {
            role.clone_into(&mut b.role);
        }
    }

    /// Follows a (re)load: services whose policy is unchanged keep their status and history;
    /// changed ones start over; removed ones go.
    pub fn sync<'a>(&self, policies: impl IntoIterator<Item = (&'a Policy, bool)>) {
        let mut b = self.write();
        let mut old = std::mem::take(&mut b.services);
        for (p, unchanged) in policies {
            let key = format!("{}/{}", p.namespace, p.service);
            let entry = match old.remove(&key) {
                Some(e) if unchanged => e,
                _ => Box::new(Entry::new(p)),
            };
            b.services.insert(key, entry);
        }
    }

    /// Records one evaluation of the services in `evaluations` (`namespace/service` keys), under
    /// one lock.
    pub fn record<'a>(&self, evaluations: impl IntoIterator<Item = (&'a str, Evaluation<'a>)>) {
        let mut b = self.write();
        let replica = b.replica.clone();
        for (key, ev) in evaluations {
            if let Some(e) = b.services.get_mut(key) {
                record_one(e, &ev, &replica);
            }
        }
    }

    /// Records what the supervisor reported about the rollback of `key`.
    pub fn rollback(&self, key: &str, at: Millis, progress: RollbackProgress) {
        let mut b = self.write();
        if let Some(e) = b.services.get_mut(key) {
            record_rollback(e, at, progress);
        }
    }

    /// Every service, sorted by namespace and name.
    pub fn list(&self) -> ServiceList {
        let b = self.read();
        ServiceList {
            replica: b.replica.clone(),
            role: b.role.clone(),
            services: b.services.values().map(|e| e.status.clone()).collect(),
        }
    }

    /// One service with its last hour.
    pub fn detail(&self, namespace: &str, service: &str) -> Option<ServiceDetail> {
        let b = self.read();
        b.services
            .get(&format!("{namespace}/{service}"))
            .map(|e| e.detail())
    }

    /// Approximate bytes the board holds: `(services, total bytes)`.
    pub fn bytes(&self) -> (usize, usize) {
        let b = self.read();
        let total = b
            .services
            .iter()
            .map(|(k, e)| k.capacity() + e.bytes())
            .sum();
        (b.services.len(), total)
    }
}

#[cfg(test)]
mod tests;
