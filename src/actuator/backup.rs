//! Backups: every object a rollback may change, captured before the first change, in one
//! ConfigMap `backout-backup-<service>-<id>` that also carries the plan and the progress. Creating
//! that ConfigMap is the first write of every rollback, so nothing changes before it is safe.
//! Pure: building and reading the ConfigMap; the shell restores (`Actuator::restore`).

use super::objects::{self, Observed};
use super::plan::ActionPlan;
use super::progress::Progress;
use super::steps::Target;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const PLAN_KEY: &str = "plan.json";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup ConfigMap {name:?} has no {key:?}: it was not written by backout or was edited; restore the objects by hand from the other keys")]
    Missing { name: String, key: String },
    #[error("backup ConfigMap {name:?}, key {key:?}: {source}")]
    Json {
        name: String,
        key: String,
        source: serde_json::Error,
    },
}

/// Kind of a backed-up object (the data key prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Deployment,
    VirtualService,
    HttpRoute,
    Hpa,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::VirtualService => "virtualservice",
            Kind::HttpRoute => "httproute",
            Kind::Hpa => "hpa",
        }
    }
}

/// An object as it was before the rollback.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub kind: Kind,
    pub name: String,
    pub object: Value,
}

/// DNS-1123 name (<= 253 chars, lowercase) for a rollback's backup ConfigMap.
pub fn backup_name(service: &str, id: &str) -> String {
    let svc: String = service
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(200)
        .collect();
    format!("backout-backup-{svc}-{id}")
}

/// The objects the plan may touch, as observed before anything changed.
pub fn objects_to_save(plan: &ActionPlan, obs: &Observed) -> Vec<Saved> {
    let mut out = vec![
        Saved {
            kind: Kind::Deployment,
            name: plan.stable.clone(),
            object: objects::for_backup(&obs.stable),
        },
        Saved {
            kind: Kind::Deployment,
            name: plan.canary.clone(),
            object: objects::for_backup(&obs.canary),
        },
    ];
    match super::split::target(&plan.traffic()) {
        Some(Target::VirtualService(name)) => out.push(Saved {
            kind: Kind::VirtualService,
            name,
            object: objects::for_backup(&obs.router),
        }),
        Some(Target::HttpRoute(name)) => out.push(Saved {
            kind: Kind::HttpRoute,
            name,
            object: objects::for_backup(&obs.router),
        }),
        _ => {}
    }
    for hpa in &obs.hpas {
        if objects::hpa_targets(hpa, &plan.stable) || objects::hpa_targets(hpa, &plan.canary) {
            out.push(Saved {
                kind: Kind::Hpa,
                name: objects::name(hpa),
                object: objects::for_backup(hpa),
            });
        }
    }
    out
}

/// The ConfigMap (as JSON) holding plan, progress and backups.
pub fn config_map(plan: &ActionPlan, saved: &[Saved], progress: &Progress) -> Value {
    let mut data = BTreeMap::new();
    data.insert(
        PLAN_KEY.to_string(),
        serde_json::to_string_pretty(plan).unwrap_or_default(),
    );
    for s in saved {
        data.insert(
            format!("{}.{}.json", s.kind.prefix(), s.name),
            serde_json::to_string_pretty(&s.object).unwrap_or_default(),
        );
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": backup_name(&plan.service, &plan.id),
            "namespace": plan.namespace,
            "labels": {
                MANAGED_BY: "backout",
                "backout.dev/service": plan.service.chars().take(63).collect::<String>(),
            },
            "annotations": progress.to_annotations(),
        },
        "data": data,
    })
}

fn data_of(cm: &Value) -> BTreeMap<String, String> {
    cm.get("data")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn annotations_of(cm: &Value) -> BTreeMap<String, String> {
    cm.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn read_plan(cm: &Value) -> Result<ActionPlan, BackupError> {
    let name = objects::name(cm);
    let data = data_of(cm);
    let raw = data.get(PLAN_KEY).ok_or_else(|| BackupError::Missing {
        name: name.clone(),
        key: PLAN_KEY.into(),
    })?;
    serde_json::from_str(raw).map_err(|source| BackupError::Json {
        name,
        key: PLAN_KEY.into(),
        source,
    })
}

pub fn read_saved(cm: &Value) -> Result<Vec<Saved>, BackupError> {
    let name = objects::name(cm);
    let mut out = Vec::new();
    for (key, raw) in data_of(cm) {
        let Some((prefix, rest)) = key.split_once('.') else {
            continue;
        };
        let kind = match prefix {
            "deployment" => Kind::Deployment,
            "virtualservice" => Kind::VirtualService,
            "httproute" => Kind::HttpRoute,
            "hpa" => Kind::Hpa,
            _ => continue,
        };
        let object: Value = serde_json::from_str(&raw).map_err(|source| BackupError::Json {
            name: name.clone(),
            key: key.clone(),
            source,
        })?;
        out.push(Saved {
            kind,
            name: rest.trim_end_matches(".json").to_string(),
            object,
        });
    }
    Ok(out)
}
