//! The object store: every object as JSON, one global resourceVersion counter (like etcd's
//! revision), a bounded change log so watches can resume from a resourceVersion, and a broadcast
//! of every change for live watchers and the deployment controller.

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// How many changes are kept for watch resumption; older resourceVersions get 410 Gone.
const LOG_CAPACITY: usize = 10_000;

/// Identity of a stored object: resource (group + plural), namespace ("" if cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub group: &'static str,
    pub plural: &'static str,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change, as a watcher sees it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub kind: ChangeKind,
    pub key: ObjKey,
    pub object: Arc<Value>,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<ObjKey, Value>,
    log: VecDeque<Change>,
}

/// Shared store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    state: Arc<Mutex<State>>,
    tx: broadcast::Sender<Change>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// A read-modify-write section: everything inside happens atomically with respect to other
/// writers, so a resourceVersion check and the write that follows it cannot interleave.
pub struct Txn<'a> {
    state: MutexGuard<'a, State>,
    pending: Vec<Change>,
}

impl Txn<'_> {
    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.state.objects.get(key)
    }

    /// Objects of one resource, optionally in one namespace, in name order.
    pub fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        self.state
            .objects
            .iter()
            .filter(|(k, _)| k.group == group && k.plural == plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Namespaces that hold at least one object.
    pub fn namespaces(&self) -> Vec<String> {
        let mut ns: Vec<String> = self
            .state
            .objects
            .keys()
            .map(|k| k.namespace.clone())
            .filter(|n| !n.is_empty())
            .collect();
        ns.dedup();
        ns.sort();
        ns.dedup();
        ns
    }

    pub fn current_rv(&self) -> u64 {
        self.state.rv
    }

    /// Stores `obj` under `key` with a fresh resourceVersion; a write that changes nothing keeps
    /// the old resourceVersion and emits no event, as the apiserver does for no-op updates.
    pub fn put(&mut self, key: ObjKey, mut obj: Value) -> Value {
        let existing = self.state.objects.get(&key).cloned();
        if let Some(old) = &existing {
            let mut cmp = obj.clone();
            set_rv(&mut cmp, rv_of(old));
            if &cmp == old {
                return old.clone();
            }
        }
        self.state.rv += 1;
        let rv = self.state.rv;
        set_rv(&mut obj, rv.to_string());
        self.state.objects.insert(key.clone(), obj.clone());
        let kind = if existing.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(Change {
            rv,
            kind,
            key,
            object: Arc::new(obj.clone()),
        });
        obj
    }

    /// Removes the object; the DELETED event carries a fresh resourceVersion.
    pub fn delete(&mut self, key: &ObjKey) -> Option<Value> {
        let mut obj = self.state.objects.remove(key)?;
        self.state.rv += 1;
        let rv = self.state.rv;
        set_rv(&mut obj, rv.to_string());
        self.record(Change {
            rv,
            kind: ChangeKind::Deleted,
            key: key.clone(),
            object: Arc::new(obj.clone()),
        });
        Some(obj)
    }

    fn record(&mut self, change: Change) {
        if self.state.log.len() >= LOG_CAPACITY {
            self.state.log.pop_front();
        }
        self.state.log.push_back(change.clone());
        self.pending.push(change);
    }
}

/// What a watch starting at a resourceVersion receives before live changes.
pub enum Replay {
    /// Changes after the requested version, then live ones from the receiver.
    From(Vec<Change>, broadcast::Receiver<Change>),
    /// The requested version was compacted away: 410 Gone.
    Expired { oldest: u64 },
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(LOG_CAPACITY);
        Self {
            state: Arc::new(Mutex::new(State::default())),
            tx,
        }
    }

    /// Runs `f` atomically; changes are broadcast once `f` returns.
    pub fn write<R>(&self, f: impl FnOnce(&mut Txn<'_>) -> R) -> R {
        let guard = match self.state.lock() {
            Ok(g) => g,
            // A panic in another writer cannot leave a half-written object (puts are single
            // inserts), so the data is still consistent.
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut txn = Txn {
            state: guard,
            pending: Vec::new(),
        };
        let out = f(&mut txn);
        let pending = std::mem::take(&mut txn.pending);
        for c in pending {
            let _ = self.tx.send(c);
        }
        drop(txn);
        out
    }

    /// Read-only access (same lock).
    pub fn read<R>(&self, f: impl FnOnce(&Txn<'_>) -> R) -> R {
        self.write(|t| f(t))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }

    /// Changes after `rv` plus a live receiver, taken under one lock so none is lost or doubled.
    pub fn replay_from(&self, rv: u64) -> Replay {
        self.write(|t| {
            let oldest = t.state.log.front().map(|c| c.rv).unwrap_or(t.state.rv + 1);
            if rv + 1 < oldest && rv < t.state.rv {
                return Replay::Expired { oldest };
            }
            let changes = t.state.log.iter().filter(|c| c.rv > rv).cloned().collect();
            Replay::From(changes, self.tx.subscribe())
        })
    }
}

fn rv_of(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn set_rv(obj: &mut Value, rv: String) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjKey {
        ObjKey {
            group: "",
            plural: "configmaps",
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn every_change_gets_a_higher_resource_version_and_noops_get_none() {
        let s = Store::new();
        let a = s.write(|t| {
            t.put(
                key("a"),
                json!({"metadata": {"name": "a"}, "data": {"x": "1"}}),
            )
        });
        let b = s.write(|t| {
            t.put(
                key("a"),
                json!({"metadata": {"name": "a"}, "data": {"x": "2"}}),
            )
        });
        let c = s.write(|t| {
            t.put(
                key("a"),
                json!({"metadata": {"name": "a"}, "data": {"x": "2"}}),
            )
        });
        let rv = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert!(rv(&b) > rv(&a));
        assert_eq!(rv(&c), rv(&b));
    }

    #[test]
    fn replay_returns_only_later_changes() {
        let s = Store::new();
        let a = s.write(|t| t.put(key("a"), json!({"metadata": {"name": "a"}})));
        s.write(|t| t.put(key("b"), json!({"metadata": {"name": "b"}})));
        let rv: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        match s.replay_from(rv) {
            Replay::From(changes, _) => {
                assert_eq!(changes.len(), 1);
                assert_eq!(changes[0].key.name, "b");
            }
            Replay::Expired { .. } => panic!("not expired"),
        }
    }
}
