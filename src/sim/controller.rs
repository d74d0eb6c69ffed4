//! The simulated deployment controller: a tokio task that reacts to Deployment and ReplicaSet
//! changes like kube-controller-manager does, with pods "becoming ready" after a delay.

use super::index::controller_uid;
use super::rollout::{self, Fresh, Write};
use super::store::{Change, ObjKey, Store, Txn};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Changes taken from the feed per round; Deployments named twice in a round are reconciled once.
const FEED_BATCH: usize = 1024;

/// A fresh uid in the apiserver's UUID shape.
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Wall-clock time as the apiserver renders it (the shell's job; rollout.rs stays pure).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Deployments whose rollout is stuck (pods that never become ready, never terminate: a node
/// gone, an image that cannot be pulled). The controller leaves such a Deployment and its
/// ReplicaSets exactly as they are until its pod template changes, which starts a fresh rollout.
/// Tests use it for a stable caught mid-rollout and for canary pods that never go away.
#[derive(Debug, Clone, Default)]
pub struct Stalls {
    /// The template the rollout is stuck on; `None` until the controller first sees it.
    held: Arc<Mutex<HashMap<ObjKey, Option<Value>>>>,
}

impl Stalls {
    pub fn stall(&self, key: ObjKey) {
        self.held().insert(key, None);
    }

    /// Whether the controller must leave `d` alone; a changed template lifts the stall.
    fn holds(&self, key: &ObjKey, d: &Value) -> bool {
        let mut held = self.held();
        let Some(stuck) = held.get_mut(key) else {
            return false;
        };
        let template = d.pointer("/spec/template").cloned().unwrap_or(Value::Null);
        match stuck {
            None => {
                *stuck = Some(template);
                true
            }
            Some(t) if *t == template => true,
            Some(_) => {
                held.remove(key);
                false
            }
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<ObjKey, Option<Value>>> {
        // Plain keys and templates: a panic elsewhere cannot leave the map inconsistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs one pass for one Deployment; returns whether a settle pass is still due.
///
/// It reads only the Deployment and the ReplicaSets it controls (the owner index), so a pass
/// costs the same in a cluster of ten Deployments or twenty thousand.
fn reconcile(store: &Store, stalls: &Stalls, key: &ObjKey, settle: bool) -> bool {
    store.write(|txn| {
        let Some(d) = txn.get(key).cloned() else {
            return false;
        };
        if stalls.holds(key, &d) {
            return false;
        }
        let uid = d
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let owned = |txn: &Txn<'_>| -> Vec<Value> {
            txn.owned_by(&uid, "apps", "replicasets")
                .into_iter()
                .filter(|(k, _)| k.namespace == key.namespace)
                .map(|(_, v)| v)
                .collect()
        };
        let all_rs = owned(txn);
        let fresh = Fresh {
            now: now_rfc3339(),
            uid: new_uid(),
        };
        for w in rollout::sync(&d, &all_rs, settle, &fresh) {
            match w {
                Write::Put(k, v) => {
                    txn.put(k, v);
                }
                Write::Delete(k) => {
                    txn.delete(&k);
                }
            }
        }
        let d = txn.get(key).cloned().unwrap_or(Value::Null);
        !rollout::settled(&d, &owned(txn))
    })
}

/// The Deployment a change makes due: itself, or the controller owner of a ReplicaSet.
fn due(store: &Store, c: &Change) -> Option<ObjKey> {
    if c.key.group != "apps" {
        return None;
    }
    match c.key.plural {
        "deployments" => Some(c.key.clone()),
        "replicasets" => {
            let uid = controller_uid(&c.object)?;
            store.read(|txn| {
                txn.key_of_uid(uid)
                    .filter(|k| k.group == "apps" && k.plural == "deployments")
                    .filter(|k| k.namespace == c.key.namespace)
                    .cloned()
            })
        }
        _ => None,
    }
}

/// What the controller has left to do, shared with [`super::SimHandle`] so start-up and
/// benchmarks can wait for it in O(1) instead of inspecting every Deployment.
#[derive(Debug, Default)]
pub struct Progress {
    /// The newest resourceVersion whose change the controller has handled.
    handled_rv: AtomicU64,
    /// Settle passes scheduled and not finished.
    settles_pending: AtomicUsize,
    /// Deployments with a settle timer: one each is enough, because the settle pass settles
    /// everything the Deployment has pending, whenever its changes came.
    settling: Mutex<HashSet<ObjKey>>,
    /// Rollouts the controller must leave alone.
    pub stalls: Stalls,
}

impl Progress {
    /// Nothing queued and no settle pass due: every change up to `current_rv` is handled.
    pub fn idle(&self, current_rv: u64) -> bool {
        self.settles_pending.load(Ordering::SeqCst) == 0
            && self.handled_rv.load(Ordering::SeqCst) >= current_rv
    }

    fn settling(&self) -> std::sync::MutexGuard<'_, HashSet<ObjKey>> {
        // The set holds plain keys; a panic elsewhere cannot leave it inconsistent.
        self.settling.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn kick(store: &Store, progress: &Arc<Progress>, key: ObjKey, delay: Duration) {
    if reconcile(store, &progress.stalls, &key, false) && progress.settling().insert(key.clone()) {
        progress.settles_pending.fetch_add(1, Ordering::SeqCst);
        let store = store.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            progress.settling().remove(&key);
            reconcile(&store, &progress.stalls, &key, true);
            // After the pass: its writes are already past `handled_rv`, so the controller never
            // looks idle between the timer and the events it causes.
            progress.settles_pending.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn all_deployments(store: &Store) -> Vec<ObjKey> {
    store.read(|txn| {
        txn.iter("apps", "deployments", None)
            .map(|(k, _)| k.clone())
            .collect()
    })
}

/// Starts the controller; it stops when `shutdown` flips.
///
/// It reconciles what the change events name, like a workqueue: the changes already waiting
/// are drained first and each Deployment they make due is reconciled once, so a burst (seeding
/// thousands of services) costs one pass per Deployment touched, never a pass over the store.
pub fn spawn(
    store: Store,
    delay: Duration,
    mut shutdown: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> JoinHandle<()> {
    let mut feed = store.feed();
    tokio::spawn(async move {
        for key in all_deployments(&store) {
            kick(&store, &progress, key, delay);
        }
        let mut batch: Vec<Change> = Vec::new();
        loop {
            tokio::select! {
                n = feed.recv_many(&mut batch, FEED_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let newest = batch.iter().map(|c| c.rv).max().unwrap_or(0);
                    let mut queued = HashSet::new();
                    for key in batch.drain(..).filter_map(|c| due(&store, &c)) {
                        if queued.insert(key.clone()) {
                            kick(&store, &progress, key, delay);
                        }
                    }
                    progress.handled_rv.fetch_max(newest, Ordering::SeqCst);
                }
                _ = shutdown.changed() => break,
            }
        }
    })
}
