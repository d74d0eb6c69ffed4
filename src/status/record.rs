//! How an evaluation or a rollback's progress changes a service's entry: release and timeline,
//! verdict and each metric's breach timer, the values for the history.

use super::*;
use crate::decision::{Alert, Reading};

pub(super) fn record_one(e: &mut Entry, ev: &Evaluation, replica: &str) {
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
    // Without polls (not under analysis) the last values stay: what the canary read before it
    // was rolled back is what a reader wants to see.
    if !ev.polls.is_empty() {
        for m in &mut e.status.metrics {
            m.canary = None;
            m.stable = None;
        }
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

pub(super) fn record_rollback(e: &mut Entry, at: Millis, progress: RollbackProgress) {
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
