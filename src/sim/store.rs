//! The object store: every object as JSON, one global resourceVersion counter (like etcd's
//! revision), a bounded change log so watches can resume from a resourceVersion, and a broadcast
//! of every change for live watchers and the deployment controller.

use super::changelog::{self, ChangeLog};
use super::index::Indexes;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc};

pub use super::changelog::LOG_MIN_CAPACITY;

/// Live watchers share one broadcast ring; one that falls this far behind ends and resumes from
/// the change log (as a real watch would after a dropped connection).
const BROADCAST_CAPACITY: usize = 16_384;

/// Identity of a stored object: resource (group + plural), namespace ("" if cluster-scoped), name.
///
/// The field order is the store's sort order, which makes "one resource" and "one resource in
/// one namespace" contiguous ranges of the map.
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
    /// Objects are shared with the change log and the events that carry them, so a write
    /// allocates its object once instead of copying it for each of them.
    objects: BTreeMap<ObjKey, Arc<Value>>,
    index: Indexes,
    log: ChangeLog,
    /// Subscribers that must see every change (controllers): unbounded, so they never lag.
    feeds: Vec<mpsc::UnboundedSender<Change>>,
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

/// The first key of a resource (in a namespace): "" sorts before every other string.
fn range_start(group: &'static str, plural: &'static str, namespace: Option<&str>) -> ObjKey {
    ObjKey {
        group,
        plural,
        namespace: namespace.unwrap_or_default().to_string(),
        name: String::new(),
    }
}

impl Txn<'_> {
    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.state.objects.get(key).map(Arc::as_ref)
    }

    /// Objects of one resource, optionally in one namespace, in (namespace, name) order, without
    /// copying them: O(log n + result).
    pub fn iter<'s>(
        &'s self,
        group: &'static str,
        plural: &'static str,
        namespace: Option<&'s str>,
    ) -> impl Iterator<Item = (&'s ObjKey, &'s Value)> + 's {
        let start = range_start(group, plural, namespace);
        self.state
            .objects
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(move |(k, _)| {
                k.group == group
                    && k.plural == plural
                    && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(k, v)| (k, v.as_ref()))
    }

    /// Objects of one resource, optionally in one namespace, in name order.
    pub fn list(
        &self,
        group: &'static str,
        plural: &'static str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        self.iter(group, plural, namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Namespaces that hold at least one object, in name order.
    pub fn namespaces(&self) -> Vec<String> {
        self.state.index.namespaces().map(str::to_string).collect()
    }

    /// The object with this `metadata.uid`, if any.
    pub fn key_of_uid(&self, uid: &str) -> Option<&ObjKey> {
        self.state.index.key_of_uid(uid)
    }

    /// Objects of one resource with an `ownerReference` to this uid, in name order.
    pub fn owned_by(&self, owner_uid: &str, group: &str, plural: &str) -> Vec<(ObjKey, Value)> {
        self.state
            .index
            .owned_by(owner_uid)
            .filter(|k| k.group == group && k.plural == plural)
            .filter_map(|k| Some((k.clone(), self.get(k)?.clone())))
            .collect()
    }

    pub fn current_rv(&self) -> u64 {
        self.state.rv
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.state.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.objects.is_empty()
    }

    /// Stores `obj` under `key` with a fresh resourceVersion; a write that changes nothing keeps
    /// the old resourceVersion and emits no event, as the apiserver does for no-op updates.
    pub fn put(&mut self, key: ObjKey, mut obj: Value) -> Value {
        let existing = self.state.objects.get(&key).cloned();
        if let Some(old) = &existing {
            // Compare with the old resourceVersion in place instead of copying the object.
            set_rv(&mut obj, rv_of(old));
            if &obj == old.as_ref() {
                return obj;
            }
        }
        self.state.rv += 1;
        let rv = self.state.rv;
        set_rv(&mut obj, rv.to_string());
        let stored = Arc::new(obj);
        let state = &mut *self.state;
        state
            .index
            .update(&key, existing.as_deref(), stored.as_ref());
        state.objects.insert(key.clone(), stored.clone());
        let kind = if existing.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(Change {
            rv,
            kind,
            key,
            object: stored.clone(),
        });
        Value::clone(&stored)
    }

    /// Removes the object; the DELETED event carries a fresh resourceVersion.
    pub fn delete(&mut self, key: &ObjKey) -> Option<Value> {
        let old = self.state.objects.remove(key)?;
        self.state.index.remove(key, &old);
        self.state.rv += 1;
        let rv = self.state.rv;
        let mut obj = Arc::unwrap_or_clone(old);
        set_rv(&mut obj, rv.to_string());
        let object = Arc::new(obj);
        self.record(Change {
            rv,
            kind: ChangeKind::Deleted,
            key: key.clone(),
            object: object.clone(),
        });
        Some(Value::clone(&object))
    }

    fn record(&mut self, change: Change) {
        let objects = self.state.objects.len();
        self.state.log.push(&change, objects);
        self.pending.push(change);
    }
}

/// What a watch starting at a resourceVersion receives before live changes.
pub enum Replay {
    /// Changes after the requested version, then live ones from the receiver.
    From {
        changes: Vec<Change>,
        /// The store's resourceVersion at the replay: every change up to it has been passed,
        /// whether or not it was selected.
        newest: u64,
        rx: broadcast::Receiver<Change>,
    },
    /// The requested version was compacted away: 410 Gone.
    Expired { oldest: u64 },
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
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
        if !pending.is_empty() {
            // Sent under the lock, so every subscriber sees changes in resourceVersion order.
            txn.state
                .feeds
                .retain(|feed| pending.iter().all(|c| feed.send(c.clone()).is_ok()));
            for c in pending {
                let _ = self.tx.send(c);
            }
        }
        drop(txn);
        out
    }

    /// Read-only access (same lock).
    pub fn read<R>(&self, f: impl FnOnce(&Txn<'_>) -> R) -> R {
        self.write(|t| f(t))
    }

    /// Live changes for watchers; a receiver that falls behind the ring gets `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }

    /// Every change from now on, never dropped (for controllers, which must not miss the change
    /// that names the object to reconcile). Dropping the receiver unsubscribes.
    pub fn feed(&self) -> mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.write(|t| t.state.feeds.push(tx));
        rx
    }

    /// Changes after `rv` plus a live receiver, taken under one lock so none is lost or doubled.
    pub fn replay_from(&self, rv: u64) -> Replay {
        self.replay_matching(rv, |_| true)
    }

    /// [`Self::replay_from`] keeping only changes whose key `wants`; the others are never
    /// decoded, so a watch on one resource resumes in time proportional to its own changes.
    pub fn replay_matching(&self, rv: u64, wants: impl Fn(&ObjKey) -> bool) -> Replay {
        self.write(|t| {
            let oldest = t.state.log.oldest().unwrap_or(t.state.rv + 1);
            if rv + 1 < oldest && rv < t.state.rv {
                return Replay::Expired { oldest };
            }
            let changes = t
                .state
                .log
                .after(rv)
                .filter(|l| wants(&l.key))
                .filter_map(|l| l.change())
                .collect();
            Replay::From {
                changes,
                newest: t.state.rv,
                rx: self.tx.subscribe(),
            }
        })
    }

    /// How many changes the log keeps now (for tests and diagnostics).
    pub fn log_len(&self) -> usize {
        self.read(|t| t.state.log.len())
    }

    /// How many changes the log may hold with the current number of objects.
    pub fn log_capacity(&self) -> usize {
        self.read(|t| changelog::capacity(t.state.objects.len()))
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
            Replay::From { changes, .. } => {
                assert_eq!(changes.len(), 1);
                assert_eq!(changes[0].key.name, "b");
            }
            Replay::Expired { .. } => panic!("not expired"),
        }
    }
}
