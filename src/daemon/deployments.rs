//! The stable and canary Deployments of every policy, read from one watch per namespace.
//!
//! Two GETs per service per evaluation grow with fleet size times frequency (500 services every
//! 10 s is 100 GETs a second against the API server); a watch costs one list per namespace and then
//! only the changes. The watch is per namespace rather than cluster-wide so that list/watch can be
//! granted namespace by namespace (a RoleBinding per namespace with policies), and so the store
//! holds only the Deployments of namespaces backout judges, not every Deployment in the cluster.
//!
//! Trust rule: a namespace's store is read only while its watch is synced, that is a full list has
//! completed (`InitDone`) and no error came since. After any error the watch starts over with a
//! fresh list (after a pause), and until that list completes, cycles read the two Deployments with
//! GETs as before the watch existed. Readiness then follows whether those GETs work: a failing
//! watch alone costs API load, not correctness. kube-runtime's watcher would resume after an error
//! silently, with nothing to tell a quiet namespace's recovered watch from a still broken one;
//! the fresh list makes recovery observable.
//!
//! A rollback still reads its Deployments with GETs (see `rollback.rs`): an action on the cluster
//! should not rest on a cache that may be milliseconds behind.

use super::{Context, DaemonError};
use crate::lifecycle::DeploymentView;
use crate::policy::Policy;
use crate::telemetry::{Metrics, NamespaceLabels};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::watcher::{self, watcher};
use kube::Api;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

/// First pause before a failed watch lists again; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// The stable and (if it exists) the canary of one policy.
pub type Views = (DeploymentView, Option<DeploymentView>);

/// Where one namespace's watch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchState {
    /// The first list has not completed yet: cycles use GETs.
    Starting,
    /// Listed and watching without error: cycles read the store.
    Synced,
    /// The watch failed (the error) and a fresh list has not completed since: cycles use GETs.
    Failing(String),
}

/// One namespace's Deployments as the daemon reads them: the views, computed once per change.
///
/// Not kube-runtime's reflector store: that keeps every Deployment whole (pod template, managed
/// fields, status; 4-5 KB each), 90 MB for the 20,000 Deployments of 10,000 services, to read five
/// fields from. A view is ~150 bytes, and its template hash is computed when the object changes
/// instead of at every evaluation.
#[derive(Clone, Default)]
struct ViewStore(Arc<RwLock<HashMap<String, Arc<DeploymentView>>>>);

impl ViewStore {
    fn get(&self, name: &str) -> Option<Arc<DeploymentView>> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(name).cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<DeploymentView>>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Applies watch events to a [`ViewStore`] with the reflector's semantics: a relist (`Init` ..
/// `InitDone`) is buffered and replaces the store at once, so deletions missed while the watch
/// was down disappear and readers never see a half-listed namespace.
struct ViewWriter {
    store: ViewStore,
    relist: Option<HashMap<String, Arc<DeploymentView>>>,
}

impl ViewWriter {
    fn apply(&mut self, event: &watcher::Event<Deployment>) {
        let entry = |d: &Deployment| {
            let view = DeploymentView::from_deployment(d);
            (view.name.clone(), Arc::new(view))
        };
        match event {
            watcher::Event::Apply(d) => {
                let (name, view) = entry(d);
                self.store.write().insert(name, view);
            }
            watcher::Event::Delete(d) => {
                let name = d.metadata.name.as_deref().unwrap_or_default();
                self.store.write().remove(name);
            }
            watcher::Event::Init => self.relist = Some(HashMap::new()),
            watcher::Event::InitApply(d) => {
                let (name, view) = entry(d);
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(name, view);
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.relist.take() {
                    *self.store.write() = listed;
                }
            }
        }
    }
}

struct NamespaceWatch {
    store: ViewStore,
    state: signal::Receiver<WatchState>,
    task: JoinHandle<()>,
}

/// One Deployment watch per namespace the policies use; follows policy reloads.
pub struct DeploymentWatches {
    metrics: Metrics,
    wanted: BTreeSet<String>,
    running: BTreeMap<String, NamespaceWatch>,
}

impl DeploymentWatches {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            wanted: BTreeSet::new(),
            running: BTreeMap::new(),
        }
    }

    /// Sets the namespaces to watch. Watches of namespaces no policy uses any more stop now; new
    /// ones start at the next [`Self::start`] (it needs the async runtime, this does not).
    pub fn follow(&mut self, namespaces: impl IntoIterator<Item = String>) {
        self.wanted = namespaces.into_iter().collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|ns| !self.wanted.contains(*ns))
            .cloned()
            .collect();
        for ns in gone {
            if let Some(w) = self.running.remove(&ns) {
                w.task.abort();
            }
            self.metrics
                .deployment_watch_synced
                .remove(&NamespaceLabels {
                    namespace: ns.clone(),
                });
            tracing::info!(namespace = %ns, "Deployment watch stopped: no policy uses the namespace");
        }
    }

    /// Starts the watches of followed namespaces that have none yet. Outside a tokio runtime it
    /// does nothing (the next call from the loop starts them): it must not panic the daemon.
    pub fn start(&mut self, client: &kube::Client) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for ns in &self.wanted {
            if self.running.contains_key(ns) {
                continue;
            }
            let writer_store = ViewStore::default();
            let writer = ViewWriter {
                store: writer_store.clone(),
                relist: None,
            };
            let (tx, rx) = signal::channel(WatchState::Starting);
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let task = runtime.spawn(follow_namespace(
                api,
                writer,
                tx,
                self.metrics.clone(),
                ns.clone(),
            ));
            tracing::info!(namespace = %ns, "Deployment watch started");
            self.running.insert(
                ns.clone(),
                NamespaceWatch {
                    store: writer_store,
                    state: rx,
                    task,
                },
            );
        }
    }

    /// Namespaces with a running watch.
    pub fn namespaces(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    pub fn state(&self, namespace: &str) -> Option<WatchState> {
        self.running
            .get(namespace)
            .map(|w| w.state.borrow().clone())
    }

    /// The namespace's store, only while its watch is synced.
    fn synced_store(&self, namespace: &str) -> Option<&ViewStore> {
        self.running
            .get(namespace)
            .filter(|w| *w.state.borrow() == WatchState::Synced)
            .map(|w| &w.store)
    }
}

impl Drop for DeploymentWatches {
    fn drop(&mut self) {
        for w in self.running.values() {
            w.task.abort();
        }
    }
}

/// One namespace's watch, for as long as the daemon wants it.
async fn follow_namespace(
    api: Api<Deployment>,
    mut writer: ViewWriter,
    state: signal::Sender<WatchState>,
    metrics: Metrics,
    namespace: String,
) {
    let gauge = metrics
        .deployment_watch_synced
        .get_or_create_owned(&NamespaceLabels {
            namespace: namespace.clone(),
        });
    gauge.set(0);
    let mut pause = RETRY_MIN;
    loop {
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        let failure = loop {
            match events.next().await {
                Some(Ok(ev)) => {
                    writer.apply(&ev);
                    if matches!(ev, watcher::Event::InitDone) {
                        pause = RETRY_MIN;
                        gauge.set(1);
                        state.send_replace(WatchState::Synced);
                        tracing::info!(namespace = %namespace, "Deployment watch synced");
                    }
                }
                Some(Err(err)) => break err.to_string(),
                None => break "the watch stream ended".to_string(),
            }
        };
        gauge.set(0);
        tracing::warn!(namespace = %namespace, error = %failure, retry_in = ?pause,
            "Deployment watch failed; reading Deployments with GETs until a fresh list completes");
        state.send_replace(WatchState::Failing(failure));
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// A policy's two Deployments: from the synced watch store, else with GETs.
pub(super) async fn read_views(
    ctx: &Context,
    watches: &DeploymentWatches,
    p: &Policy,
) -> Result<Views, DaemonError> {
    let Some(store) = watches.synced_store(&p.namespace) else {
        return get_views(&ctx.client, p).await;
    };
    let stable = store
        .get(&p.deployments.stable)
        .ok_or_else(|| DaemonError::StableMissing {
            namespace: p.namespace.clone(),
            name: p.deployments.stable.clone(),
        })?;
    let canary = store.get(&p.deployments.canary);
    Ok((DeploymentView::clone(&stable), canary.as_deref().cloned()))
}

/// A policy's two Deployments, read with GETs now.
pub(super) async fn get_views(client: &kube::Client, p: &Policy) -> Result<Views, DaemonError> {
    let (stable, canary) = get_deployments(client, p).await?;
    Ok((
        DeploymentView::from_deployment(&stable),
        canary.as_ref().map(DeploymentView::from_deployment),
    ))
}

/// The stable and (if it exists) the canary Deployment objects, with fresh GETs.
pub(super) async fn get_deployments(
    client: &kube::Client,
    p: &Policy,
) -> Result<(Deployment, Option<Deployment>), DaemonError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &p.namespace);
    let failed = |name: &str, source| DaemonError::Kube {
        namespace: p.namespace.clone(),
        name: name.to_string(),
        source,
    };
    let stable = match api.get(&p.deployments.stable).await {
        Ok(d) => d,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(DaemonError::StableMissing {
                namespace: p.namespace.clone(),
                name: p.deployments.stable.clone(),
            })
        }
        Err(e) => return Err(failed(&p.deployments.stable, e)),
    };
    let canary = api
        .get_opt(&p.deployments.canary)
        .await
        .map_err(|e| failed(&p.deployments.canary, e))?;
    Ok((stable, canary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(name: &str, image: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}
        }))
        .unwrap_or_default()
    }

    fn writer() -> ViewWriter {
        ViewWriter {
            store: ViewStore::default(),
            relist: None,
        }
    }

    #[test]
    fn changes_update_the_views_readers_see() {
        let mut w = writer();
        w.apply(&watcher::Event::Apply(deployment("web", "web:1")));
        w.apply(&watcher::Event::Apply(deployment("web", "web:2")));
        let view = w.store.get("web").map(|v| (v.image.clone(), v.revision));
        assert_eq!(view, Some(("web:2".to_string(), Some(3))));
        w.apply(&watcher::Event::Delete(deployment("web", "web:2")));
        assert!(w.store.get("web").is_none());
    }

    #[test]
    fn a_relist_replaces_the_store_only_when_complete() {
        let mut w = writer();
        w.apply(&watcher::Event::Apply(deployment("gone", "a:1")));
        w.apply(&watcher::Event::Init);
        w.apply(&watcher::Event::InitApply(deployment("web", "web:1")));
        // Mid-relist, readers still see the last complete list.
        assert!(w.store.get("gone").is_some() && w.store.get("web").is_none());
        w.apply(&watcher::Event::InitDone);
        // Deleted while the watch was down: gone with the relist.
        assert!(w.store.get("gone").is_none());
        assert_eq!(
            w.store.get("web").map(|v| v.image.clone()),
            Some("web:1".into())
        );
    }
}
