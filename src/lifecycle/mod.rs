//! Where a service is in its release: idle, canary under analysis, stable in its bake window.
//!
//! Pure: it is fed what the Deployments look like now (from a watch) and the time, and says which
//! analysis phase applies and which release events happened. The daemon persists nothing of this
//! itself: the last known good stable revision lives as an annotation on the stable Deployment, and
//! a rollback's progress lives on the objects (see `actuator`), so a restart rebuilds this state.

use crate::sample::Millis;
use serde::{Deserialize, Serialize};

mod view;
pub use view::stable_hash;

/// Annotation on the stable Deployment recording the revision that passed its bake window.
pub const LAST_KNOWN_GOOD_ANNOTATION: &str = "backout.dev/last-known-good-revision";
/// Annotation the Deployment controller maintains with the current revision number.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// The parts of a Deployment the lifecycle depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentView {
    pub name: String,
    /// `deployment.kubernetes.io/revision`, absent until the controller has seen the object.
    pub revision: Option<u64>,
    /// A hash of `spec.template`: identifies what is deployed independently of revision numbers.
    pub template_hash: String,
    /// First container image, for humans.
    pub image: String,
    pub replicas: i32,
    /// `backout.dev/last-known-good-revision`, only meaningful on the stable.
    pub last_known_good: Option<u64>,
}

/// Identity of one canary release: rollback verdicts are sticky per identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CanaryId {
    pub revision: u64,
    pub template_hash: String,
}

impl std::fmt::Display for CanaryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "revision {} ({})", self.revision, self.template_hash)
    }
}

impl Release {
    /// The canary under analysis or rolled back, if any.
    pub fn canary_id(&self) -> Option<&CanaryId> {
        match self {
            Release::Canary { id, .. } | Release::RolledBack { id } => Some(id),
            _ => None,
        }
    }
}

/// Which analysis applies now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Release {
    /// No canary running and no bake window open: nothing to judge.
    Idle,
    /// A canary is receiving traffic since `since` (the engine applies the warm-up from there).
    Canary { id: CanaryId, since: Millis },
    /// The stable changed (a promotion or a direct rollout); it is judged until `until`.
    Bake {
        stable_revision: u64,
        since: Millis,
        until: Millis,
    },
    /// This canary was rolled back; it stays that way until a new canary revision appears.
    RolledBack { id: CanaryId },
}

/// What changed, for the audit trail and the daemon's actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ReleaseEvent {
    CanaryStarted {
        id: CanaryId,
        image: String,
    },
    CanaryStopped {
        id: CanaryId,
    },
    StableChanged {
        from: Option<u64>,
        to: u64,
        image: String,
    },
    /// The stable passed its bake window: the daemon records it on the Deployment.
    StableKnownGood {
        revision: u64,
    },
}

/// The lifecycle of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    stage: Release,
    last_stable_revision: Option<u64>,
    bake_ms: i64,
}

impl Lifecycle {
    pub fn new(bake: std::time::Duration) -> Self {
        Self {
            stage: Release::Idle,
            last_stable_revision: None,
            bake_ms: bake.as_millis() as i64,
        }
    }

    pub fn stage(&self) -> &Release {
        &self.stage
    }

    /// Marks the current canary as rolled back (sticky until a new canary revision).
    pub fn rolled_back(&mut self, id: CanaryId) {
        self.stage = Release::RolledBack { id };
    }

    fn start_canary(&self, id: CanaryId, now: Millis) -> Release {
        Release::Canary { id, since: now }
    }

    /// Feeds the current view of both Deployments. Returns the events since the last call.
    pub fn observe(
        &mut self,
        stable: &DeploymentView,
        canary: Option<&DeploymentView>,
        now: Millis,
    ) -> Vec<ReleaseEvent> {
        let mut events = Vec::new();
        self.observe_stable(stable, now, &mut events);
        let stage = std::mem::replace(&mut self.stage, Release::Idle);
        self.stage = self.next_stage(stage, running_canary(canary), now, &mut events);
        events
    }

    /// The stable side: a new revision opens a bake window, unless this is the first sight of a
    /// stable that already carries a known-good mark for exactly this revision.
    fn observe_stable(
        &mut self,
        stable: &DeploymentView,
        now: Millis,
        events: &mut Vec<ReleaseEvent>,
    ) {
        let Some(rev) = stable.revision else {
            return;
        };
        match self.last_stable_revision {
            None => {
                self.last_stable_revision = Some(rev);
                if stable.last_known_good.is_none() {
                    // First deployment backout ever sees: nothing to compare it with; trust
                    // it as the baseline rather than blocking on a bake nobody asked for.
                    events.push(ReleaseEvent::StableKnownGood { revision: rev });
                }
            }
            Some(prev) if prev != rev => {
                self.last_stable_revision = Some(rev);
                events.push(ReleaseEvent::StableChanged {
                    from: Some(prev),
                    to: rev,
                    image: stable.image.clone(),
                });
                if stable.last_known_good != Some(rev) {
                    self.stage = Release::Bake {
                        stable_revision: rev,
                        since: now,
                        until: now + self.bake_ms,
                    };
                }
            }
            Some(_) => {}
        }
    }

    /// The canary side: where `stage` goes given the canary running now (if any). A rollback
    /// stays until a different canary appears; a bake ends as known good when its window passed
    /// with no canary.
    fn next_stage(
        &self,
        stage: Release,
        running: Option<(CanaryId, String)>,
        now: Millis,
        events: &mut Vec<ReleaseEvent>,
    ) -> Release {
        match (stage, running) {
            (Release::RolledBack { id }, Some((cid, image))) if id != cid => {
                events.push(ReleaseEvent::CanaryStarted {
                    id: cid.clone(),
                    image,
                });
                self.start_canary(cid, now)
            }
            (rolled_back @ Release::RolledBack { .. }, _) => rolled_back,
            (canary @ Release::Canary { .. }, Some((cid, _)))
                if canary.canary_id() == Some(&cid) =>
            {
                canary
            }
            (Release::Canary { id, .. }, None) => {
                events.push(ReleaseEvent::CanaryStopped { id });
                Release::Idle
            }
            (Release::Canary { id, .. }, Some((cid, image))) => {
                events.push(ReleaseEvent::CanaryStopped { id });
                events.push(ReleaseEvent::CanaryStarted {
                    id: cid.clone(),
                    image,
                });
                self.start_canary(cid, now)
            }
            (Release::Idle | Release::Bake { .. }, Some((cid, image))) => {
                events.push(ReleaseEvent::CanaryStarted {
                    id: cid.clone(),
                    image,
                });
                self.start_canary(cid, now)
            }
            (
                Release::Bake {
                    stable_revision,
                    until,
                    ..
                },
                None,
            ) if now >= until => {
                events.push(ReleaseEvent::StableKnownGood {
                    revision: stable_revision,
                });
                Release::Idle
            }
            (other, None) => other,
        }
    }
}

/// The canary that counts as running: scaled up and with a revision (the controller has seen
/// it), with its image for the events.
fn running_canary(canary: Option<&DeploymentView>) -> Option<(CanaryId, String)> {
    canary.filter(|c| c.replicas > 0).and_then(|c| {
        c.revision.map(|revision| {
            (
                CanaryId {
                    revision,
                    template_hash: c.template_hash.clone(),
                },
                c.image.clone(),
            )
        })
    })
}

#[cfg(test)]
mod tests;
