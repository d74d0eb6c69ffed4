//! The fleet guard: at most `max_rollbacks` automatic rollbacks per `per` window across all
//! replicas. Many canaries going bad at once is more often a shared cause (a Prometheus glitch, a
//! dependency down) than many bad releases, and rolling back fifty of them in a minute is an
//! incident of its own (flagger#1069). Beyond the limit, rollbacks wait (held) until the window
//! has room; `backout rollback` by hand is never held.
//!
//! The count lives in one ConfigMap written with the resourceVersion it was read at, so replicas
//! agree without any coordination of their own: two admissions cannot both take the last place.

use crate::sample::Millis;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

const KEY: &str = "rollbacks.json";

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("fleet guard ConfigMap {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("fleet guard ConfigMap {namespace}/{name} kept changing under us; try again")]
    Contended { namespace: String, name: String },
}

/// One admitted rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    pub service: String,
    pub at: Millis,
}

/// The pure rule: the window's admissions after pruning, and whether `service` gets a place.
/// A service already admitted in the window (a retry of the same rollback) keeps its place.
pub fn admit(
    mut window: Vec<Admitted>,
    service: &str,
    now: Millis,
    max: u32,
    per: Duration,
) -> (bool, Vec<Admitted>) {
    let since = now - per.as_millis() as Millis;
    window.retain(|a| a.at > since);
    if window.iter().any(|a| a.service == service) {
        return (true, window);
    }
    if window.len() < max as usize {
        window.push(Admitted {
            service: service.to_string(),
            at: now,
        });
        return (true, window);
    }
    (false, window)
}

/// Where the count lives and the limit.
#[derive(Debug, Clone)]
pub struct FleetGuard {
    pub api: Api<ConfigMap>,
    pub namespace: String,
    pub name: String,
    pub max: u32,
    pub per: Duration,
}

/// Whether a rollback may go now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// Held; `in_window` services were rolled back in the window.
    Held {
        in_window: usize,
    },
}

impl FleetGuard {
    pub fn new(client: kube::Client, namespace: &str, max: u32, per: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: "backout-fleet-guard".into(),
            max,
            per,
        }
    }

    fn failed(&self, source: kube::Error) -> GuardError {
        GuardError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// Takes a place for `service` in the window, or says it is held.
    pub async fn admit(&self, service: &str, now: Millis) -> Result<Admission, GuardError> {
        for _ in 0..8 {
            let current = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| self.failed(e))?;
            let window: Vec<Admitted> = current
                .as_ref()
                .and_then(|cm| cm.data.as_ref())
                .and_then(|d| d.get(KEY))
                .and_then(|raw| serde_json::from_str(raw).ok())
                .unwrap_or_default();
            let (go, window) = admit(window, service, now, self.max, self.per);
            if !go {
                return Ok(Admission::Held {
                    in_window: window.len(),
                });
            }
            let raw = serde_json::to_string(&window).unwrap_or_else(|_| "[]".into());
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    resource_version: current
                        .as_ref()
                        .and_then(|c| c.metadata.resource_version.clone()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        "backout".to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(KEY.to_string(), raw)])),
                ..Default::default()
            };
            let pp = PostParams::default();
            let written = match current {
                Some(_) => self.api.replace(&self.name, &pp, &cm).await.map(|_| ()),
                None => self.api.create(&pp, &cm).await.map(|_| ()),
            };
            match written {
                Ok(()) => return Ok(Admission::Go),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.failed(e)),
            }
        }
        Err(GuardError::Contended {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    #[test]
    fn five_per_ten_minutes_then_held_until_the_oldest_leaves_the_window() {
        let per = Duration::from_secs(600);
        let mut w = Vec::new();
        for i in 0..5 {
            let (go, next) = admit(w, &format!("s{i}"), i * MIN, 5, per);
            assert!(go);
            w = next;
        }
        let (go, w) = admit(w, "s5", 5 * MIN, 5, per);
        assert!(!go, "the sixth in ten minutes is held");
        let (go, w) = admit(w, "s0", 6 * MIN, 5, per);
        assert!(go, "a retry of an admitted rollback keeps its place");
        let (go, w) = admit(w, "s5", 10 * MIN + 1, 5, per);
        assert!(go, "s0 left the window");
        assert_eq!(w.len(), 5);
    }
}
