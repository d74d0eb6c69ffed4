//! Bad versions: what a completed rollback took out, remembered so the same release is not
//! rolled out again (runbooks 003 and 004: "tag the image as broken to prevent future
//! deployments"). A new canary, or a stable rollout, whose pod-template hash or first image is
//! recorded is rolled back at once with reason `known_bad_version`, without waiting for evidence.
//!
//! The record is one ConfigMap in backout's namespace (`backout-bad-versions`), one key per
//! pod-template hash holding JSON (images, reason, time, incident). Writes carry the
//! resourceVersion they read (two replicas cannot lose each other's entries) and a deadline.
//! The daemon keeps a copy in memory for the evaluation loop (read without waiting) and
//! refreshes it from the ConfigMap, so `backout bad-versions forget` reaches every replica.

use super::order::{Action, Order, RollbackOrder};
use super::outcome::{OrderOutcome, Versions};
use super::service::audit;
use super::Context;
use crate::actuator::RollbackReport;
use crate::audit::AuditKind;
use crate::lifecycle::{DeploymentView, ReleaseEvent};
use crate::policy::Policy;
use crate::sample::Millis;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The ConfigMap's name.
pub const CONFIG_MAP: &str = crate::kubeclient::rbac::BAD_VERSIONS_CONFIGMAP;
/// Deadline of each read or write.
const DEADLINE: Duration = Duration::from_secs(10);
/// Conflicting writes retried before giving up.
const CONFLICT_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum BadVersionError {
    #[error("bad-versions ConfigMap {namespace}/{CONFIG_MAP}: {source} (RBAC: backout needs get, create and update on configmaps in its namespace)")]
    Api {
        namespace: String,
        source: kube::Error,
    },
    #[error("bad-versions ConfigMap {namespace}/{CONFIG_MAP}: no answer within {DEADLINE:?}")]
    Timeout { namespace: String },
    #[error("bad-versions ConfigMap {namespace}/{CONFIG_MAP} kept changing under us; try again")]
    Contended { namespace: String },
}

/// One bad version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadVersion {
    /// `namespace/service` it was rolled back from.
    pub service: String,
    pub images: Vec<String>,
    pub reason: String,
    pub at: Millis,
    /// The rollback id (the incident report's name).
    pub incident: String,
}

/// Pod-template hash -> bad version.
pub type Entries = BTreeMap<String, BadVersion>;

/// The record (ConfigMap) and the daemon's copy of it.
#[derive(Clone)]
pub struct BadVersions {
    api: Api<ConfigMap>,
    namespace: String,
    known: Arc<RwLock<Entries>>,
}

impl BadVersions {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            known: Arc::default(),
        }
    }

    /// The recorded version matching a template hash or an image, if any (no I/O).
    pub fn lookup(&self, template_hash: &str, image: &str) -> Option<(String, BadVersion)> {
        let known = self.known.read().ok()?;
        if let Some(v) = known.get(template_hash) {
            return Some((template_hash.to_string(), v.clone()));
        }
        known
            .iter()
            .find(|(_, v)| !image.is_empty() && v.images.iter().any(|i| i == image))
            .map(|(k, v)| (k.clone(), v.clone()))
    }

    fn failed(&self, source: kube::Error) -> BadVersionError {
        BadVersionError::Api {
            namespace: self.namespace.clone(),
            source,
        }
    }

    async fn get(&self) -> Result<Option<ConfigMap>, BadVersionError> {
        match tokio::time::timeout(DEADLINE, self.api.get_opt(CONFIG_MAP)).await {
            Ok(r) => r.map_err(|e| self.failed(e)),
            Err(_) => Err(BadVersionError::Timeout {
                namespace: self.namespace.clone(),
            }),
        }
    }

    /// Reads the ConfigMap into the daemon's copy; returns the entries.
    pub async fn refresh(&self) -> Result<Entries, BadVersionError> {
        let entries = self
            .get()
            .await?
            .map(|cm| entries_of(&cm))
            .unwrap_or_default();
        if let Ok(mut known) = self.known.write() {
            *known = entries.clone();
        }
        Ok(entries)
    }

    /// Applies `change` to the entries and writes them back with the resourceVersion read
    /// (retried on conflict). Returns the entries written.
    async fn update(&self, change: impl Fn(&mut Entries)) -> Result<Entries, BadVersionError> {
        for _ in 0..CONFLICT_RETRIES {
            let current = self.get().await?;
            let mut entries = current.as_ref().map(entries_of).unwrap_or_default();
            change(&mut entries);
            let data: BTreeMap<String, String> = entries
                .iter()
                .filter_map(|(k, v)| serde_json::to_string(v).ok().map(|j| (k.clone(), j)))
                .collect();
            let pp = PostParams::default();
            let write = match current {
                Some(mut cm) => {
                    cm.data = Some(data);
                    tokio::time::timeout(DEADLINE, self.api.replace(CONFIG_MAP, &pp, &cm)).await
                }
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(CONFIG_MAP.into()),
                            labels: Some(BTreeMap::from([(
                                "app.kubernetes.io/managed-by".to_string(),
                                "backout".to_string(),
                            )])),
                            ..Default::default()
                        },
                        data: Some(data),
                        ..Default::default()
                    };
                    tokio::time::timeout(DEADLINE, self.api.create(&pp, &cm)).await
                }
            };
            match write {
                Ok(Ok(_)) => {
                    if let Ok(mut known) = self.known.write() {
                        *known = entries.clone();
                    }
                    return Ok(entries);
                }
                Ok(Err(kube::Error::Api(s))) if s.code == 409 => continue,
                Ok(Err(e)) => return Err(self.failed(e)),
                Err(_) => {
                    return Err(BadVersionError::Timeout {
                        namespace: self.namespace.clone(),
                    })
                }
            }
        }
        Err(BadVersionError::Contended {
            namespace: self.namespace.clone(),
        })
    }

    /// Records a bad version under its pod-template hash.
    pub async fn record(&self, template_hash: &str, v: BadVersion) -> Result<(), BadVersionError> {
        self.update(|e| {
            e.insert(template_hash.to_string(), v.clone());
        })
        .await
        .map(|_| ())
    }

    /// Forgets every version with `image` (or whose template hash is `image`); returns how many.
    pub async fn forget(&self, image: &str) -> Result<usize, BadVersionError> {
        let before = self.refresh().await?.len();
        let after = self
            .update(|e| e.retain(|k, v| k != image && !v.images.iter().any(|i| i == image)))
            .await?
            .len();
        Ok(before.saturating_sub(after))
    }
}

fn entries_of(cm: &ConfigMap) -> Entries {
    cm.data
        .iter()
        .flatten()
        .filter_map(|(k, v)| serde_json::from_str(v).ok().map(|b| (k.clone(), b)))
        .collect()
}

/// Every container image of a Deployment's pod template, in order.
pub fn images_of(d: &k8s_openapi::api::apps::v1::Deployment) -> Vec<String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| {
            p.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

// ---- the daemon's side: recording after a rollback, refusing a redeploy ----

/// Records the rolled-back canary as a bad version, in a task of its own (a slow API server
/// delays no notice).
pub(super) fn remember(ctx: &Context, o: &OrderOutcome, report: &RollbackReport, v: &Versions) {
    let Some(store) = ctx.bad_versions.clone() else {
        return;
    };
    if v.canary_hash.is_empty() {
        return; // a bake rollback: the stable went back, no canary to remember
    }
    let p = o.order.policy.clone();
    let (hash, entry) = (
        v.canary_hash.clone(),
        BadVersion {
            service: o.order.service.clone(),
            images: v.canary_images.clone(),
            reason: report.trigger.summary.clone(),
            at: report.finished_at,
            incident: report.rollback_id.clone(),
        },
    );
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let images = entry.images.join(", ");
        match store.record(&hash, entry).await {
            Ok(()) => audit(
                &ctx,
                &p,
                AuditKind::BadVersion,
                format!("recorded as a bad version: template {hash} ({images})"),
                serde_json::json!({"bad_version": hash, "images": images}),
            ),
            Err(err) => {
                tracing::error!(service = %p.service, error = %err, "cannot record the bad version")
            }
        }
    });
}

/// A release rolling out a recorded bad version (the canary's, or the stable's own template or
/// image): the rollback order, at once, reason `known_bad_version`. A redeploy with a new image
/// and template is judged normally.
pub(super) fn known_bad(
    ctx: &Context,
    policy: &std::sync::Arc<Policy>,
    ev: &ReleaseEvent,
    stable: &DeploymentView,
    now: Millis,
) -> Option<Order> {
    let store = ctx.bad_versions.as_ref()?;
    let (canary, hash, image) = match ev {
        ReleaseEvent::CanaryStarted { id, image } => {
            (Some(id.clone()), id.template_hash.as_str(), image.as_str())
        }
        ReleaseEvent::StableChanged { .. } => {
            (None, stable.template_hash.as_str(), stable.image.as_str())
        }
        _ => return None,
    };
    let (recorded, bad) = store.lookup(hash, image)?;
    let summary = format!(
        "known_bad_version: {} was rolled back from {} at {} (incident {}: {}); template {recorded}",
        if image.is_empty() { hash } else { image },
        bad.service,
        crate::audit::format_time(bad.at),
        bad.incident,
        bad.reason
    );
    tracing::error!(service = %policy.service, "{summary}");
    audit(
        ctx,
        policy,
        AuditKind::BadVersion,
        summary.clone(),
        serde_json::json!({"template": recorded, "incident": bad.incident}),
    );
    let order = RollbackOrder {
        in_bake: canary.is_none(),
        canary,
        trigger: crate::actuator::Trigger {
            summary: summary.clone(),
            values: Default::default(),
        },
        reasons: vec![summary],
        first_metric: "known_bad_version".into(),
        detected_at: now,
        decided_at: now,
    };
    Some(Order::new(policy, Action::Rollback(order), ctx.dry_run))
}
