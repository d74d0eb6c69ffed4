//! The simulated deployment controller: a tokio task that reacts to Deployment and ReplicaSet
//! changes like kube-controller-manager does, with pods "becoming ready" after a delay.

use super::rollout::{self, owned_by, Fresh, Write};
use super::store::{ObjKey, Store};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

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

fn deployment_key(ns: &str, name: &str) -> ObjKey {
    ObjKey {
        group: "apps",
        plural: "deployments",
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

/// Runs one pass for one Deployment; returns whether a settle pass is still due.
fn reconcile(store: &Store, key: &ObjKey, settle: bool) -> bool {
    store.write(|txn| {
        let Some(d) = txn.get(key).cloned() else {
            return false;
        };
        let all_rs = txn.list("apps", "replicasets", Some(&key.namespace));
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
        let all_rs = txn.list("apps", "replicasets", Some(&key.namespace));
        !rollout::settled(&d, &all_rs)
    })
}

fn owner_of(store: &Store, rs: &Value) -> Option<ObjKey> {
    let ns = rs.pointer("/metadata/namespace")?.as_str()?;
    let uid = rs
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true && r["kind"] == "Deployment")?
        .get("uid")?
        .as_str()?
        .to_string();
    store.read(|txn| {
        txn.list("apps", "deployments", Some(ns))
            .into_iter()
            .find(|d| d.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid.as_str()))
            .and_then(|d| {
                let name = d.pointer("/metadata/name")?.as_str()?;
                debug_assert!(owned_by(rs, &uid));
                Some(deployment_key(ns, name))
            })
    })
}

fn kick(store: &Store, key: ObjKey, delay: Duration) {
    if reconcile(store, &key, false) {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            reconcile(&store, &key, true);
        });
    }
}

fn all_deployments(store: &Store) -> Vec<ObjKey> {
    store.read(|txn| {
        txn.list("apps", "deployments", None)
            .iter()
            .filter_map(|d| {
                Some(deployment_key(
                    d.pointer("/metadata/namespace")?.as_str()?,
                    d.pointer("/metadata/name")?.as_str()?,
                ))
            })
            .collect()
    })
}

/// Starts the controller; it stops when `shutdown` flips.
pub fn spawn(store: Store, delay: Duration, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    let mut rx = store.subscribe();
    tokio::spawn(async move {
        for key in all_deployments(&store) {
            kick(&store, key, delay);
        }
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(c) if c.key.group == "apps" && c.key.plural == "deployments" => {
                        kick(&store, c.key.clone(), delay);
                    }
                    Ok(c) if c.key.group == "apps" && c.key.plural == "replicasets" => {
                        if let Some(k) = owner_of(&store, &c.object) {
                            kick(&store, k, delay);
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for key in all_deployments(&store) {
                            kick(&store, key, delay);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = shutdown.changed() => break,
            }
        }
    })
}
