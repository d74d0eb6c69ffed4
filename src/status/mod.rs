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
pub mod table;

pub use history::{History, SeriesPoints};
pub use model::*;

use crate::decision::{Alert, Health, Reading, Rule, Verdict};
use crate::lifecycle::{Release, ReleaseEvent};
use crate::policy::{Kind, Policy};
use crate::sample::{Millis, Track};
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
    services: BTreeMap<String, Entry>,
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
                _ => Entry::new(p),
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
            .map(Entry::detail)
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

fn record_one(e: &mut Entry, ev: &Evaluation, replica: &str) {
    let s = &mut e.status;
    s.evaluated_at = Some(ev.at);
    s.error = ev.error.map(str::to_string);
    if s.owner.replica != replica {
        replica.clone_into(&mut s.owner.replica);
    }
    s.owner.shard = ev.shard;
    s.owner.acting = ev.acting;
    record_release(e, ev);
    if let Some(v) = ev.verdict {
        record_verdict(e, v);
    }
    record_values(e, ev);
}

fn record_release(e: &mut Entry, ev: &Evaluation) {
    let (phase, since) = match ev.release {
        Release::Idle => (PhaseName::Idle, None),
        Release::Canary { since, .. } => (PhaseName::Canary, Some(*since)),
        Release::Bake { since, .. } => (PhaseName::Bake, Some(*since)),
        Release::RolledBack { .. } => (PhaseName::RolledBack, e.status.phase_since),
    };
    e.status.phase = phase;
    e.status.phase_since = since;
    if let Some(id) = ev.release.canary_id() {
        let same = e
            .status
            .canary
            .as_ref()
            .is_some_and(|c| c.revision == id.revision && c.template_hash == id.template_hash);
        if !same {
            e.status.canary = Some(CanaryStatus {
                revision: id.revision,
                template_hash: id.template_hash.clone(),
                image: String::new(),
            });
        }
    }
    for event in ev.events {
        let (kind, detail) = match event {
            ReleaseEvent::CanaryStarted { id, image } => {
                e.status.canary = Some(CanaryStatus {
                    revision: id.revision,
                    template_hash: id.template_hash.clone(),
                    image: image.clone(),
                });
                e.status.verdict = None;
                (TimelineKind::CanaryStarted, format!("{id} {image}"))
            }
            ReleaseEvent::CanaryStopped { id } => (TimelineKind::CanaryStopped, id.to_string()),
            ReleaseEvent::StableChanged { to, image, .. } => (
                TimelineKind::StableChanged,
                format!("stable revision {to} {image}"),
            ),
            ReleaseEvent::StableKnownGood { revision } => (
                TimelineKind::KnownGood,
                format!("stable revision {revision} known good"),
            ),
        };
        e.mark(ev.at, kind, detail);
    }
}

fn record_verdict(e: &mut Entry, v: &Verdict) {
    let before = e.status.verdict.as_ref();
    let changed = before.map(|b| b.health) != Some(v.health);
    let decided = v.rollback && !before.is_some_and(|b| b.rollback);
    let reasons: Vec<String> = v.reasons.iter().map(ToString::to_string).collect();
    if changed {
        e.mark(v.at, TimelineKind::VerdictChanged, v.health.to_string());
    }
    if decided {
        let at = v.rollback_since.unwrap_or(v.at);
        let detail = reasons.first().cloned().unwrap_or_default();
        e.mark(at, TimelineKind::RollbackDecided, detail.clone());
        e.status.last_rollback = Some(RollbackStatus {
            state: RollbackState::Decided,
            revision: e.status.canary.as_ref().map(|c| c.revision),
            decided_at: at,
            updated_at: at,
            mitigated_at: None,
            detail,
        });
    }
    e.status.verdict = Some(VerdictStatus {
        at: v.at,
        health: v.health,
        stage: v.stage,
        rollback: v.rollback,
        rollback_since: v.rollback_since,
        stuck: v.stuck,
        reasons,
    });
    for m in &v.metrics {
        let Some(slot) = e
            .status
            .metrics
            .iter_mut()
            .find(|s| s.rule.name == m.metric)
        else {
            continue;
        };
        metric_now(slot, m, v.at);
    }
}

/// One metric's status from the verdict: value, breach timer, statistic.
fn metric_now(slot: &mut MetricStatus, m: &crate::decision::MetricStatus, now: Millis) {
    slot.health = m.health;
    slot.value = None;
    slot.statistic = None;
    match &m.reading {
        Reading::Value { value, .. } => slot.value = Some(*value).filter(|v| v.is_finite()),
        Reading::Test {
            statistic,
            value,
            fail_at,
            outcome,
            ..
        } => {
            slot.statistic = Some(StatisticStatus {
                name: statistic.clone(),
                value: *value,
                fail_at: *fail_at,
                outcome: *outcome,
            });
        }
        _ => {}
    }
    slot.reading = match &m.reading {
        Reading::Value { .. } => String::new(),
        other => other.to_string(),
    };
    slot.breach = [("critical", m.critical), ("warning", m.warning)]
        .into_iter()
        .find_map(|(level, a)| {
            let (since, firing) = match a {
                Alert::Inactive => return None,
                Alert::Pending { since } => (since, false),
                Alert::Firing { since, .. } => (since, true),
            };
            Some(BreachStatus {
                level: level.into(),
                since,
                held_ms: now.saturating_sub(since),
                for_ms: slot.rule.for_ms,
                firing,
            })
        });
}

fn record_values(e: &mut Entry, ev: &Evaluation) {
    for m in &mut e.status.metrics {
        m.canary = None;
        m.stable = None;
    }
    for (metric, track, value) in ev.polls {
        if let Some(m) = e.status.metrics.iter_mut().find(|m| &m.rule.name == metric) {
            match track {
                Track::Canary => m.canary = Some(*value),
                Track::Stable => m.stable = Some(*value),
            }
        }
    }
    let analysed = matches!(e.status.phase, PhaseName::Canary | PhaseName::Bake);
    let stale = e
        .history
        .as_ref()
        .and_then(History::newest)
        .is_some_and(|t| ev.at - t > history::KEEP_MS);
    if stale {
        e.history = None;
    }
    if !analysed {
        return;
    }
    let values: Vec<Option<f64>> = e
        .layout
        .iter()
        .map(|(i, what)| {
            let m = &e.status.metrics[*i];
            match what {
                Plotted::Canary => m.canary,
                Plotted::Stable => m.stable,
                Plotted::Judged => m.value.or(m.statistic.as_ref().map(|s| s.value)),
            }
        })
        .collect();
    e.history
        .get_or_insert_with(|| History::new(e.layout.len()))
        .push(ev.at, &values);
}

fn record_rollback(e: &mut Entry, at: Millis, progress: RollbackProgress) {
    let revision = e.status.canary.as_ref().map(|c| c.revision);
    let r = e
        .status
        .last_rollback
        .get_or_insert_with(|| RollbackStatus {
            state: RollbackState::Decided,
            revision,
            decided_at: at,
            updated_at: at,
            mitigated_at: None,
            detail: String::new(),
        });
    r.updated_at = at;
    let (kind, detail) = match progress {
        RollbackProgress::Started => {
            r.state = RollbackState::InProgress;
            (TimelineKind::RollbackStarted, String::new())
        }
        RollbackProgress::Finished {
            mitigated_at,
            dry_run,
        } => {
            r.state = if dry_run {
                RollbackState::DryRun
            } else {
                RollbackState::Succeeded
            };
            r.mitigated_at = Some(mitigated_at);
            let took = (mitigated_at - r.decided_at).max(0) as f64 / 1000.0;
            (
                TimelineKind::RolledBack,
                format!("mitigated {took:.1}s after the decision"),
            )
        }
        RollbackProgress::Failed { error, retrying } => {
            r.state = if retrying {
                RollbackState::Retrying
            } else {
                RollbackState::Failed
            };
            r.detail.clone_from(&error);
            (TimelineKind::RollbackFailed, error)
        }
        RollbackProgress::Held { detail } => {
            r.state = RollbackState::Held;
            (TimelineKind::RollbackHeld, detail)
        }
        RollbackProgress::Superseded => {
            r.state = RollbackState::Superseded;
            (TimelineKind::Superseded, String::new())
        }
    };
    e.mark(at, kind, detail);
}

#[cfg(test)]
mod tests;
