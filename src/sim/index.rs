//! Secondary indexes over the store, kept in step with every put and delete so the lookups the
//! apiserver and the controllers make often cost O(1) or O(result) instead of a scan of every
//! object: which namespaces hold objects, which object has a uid, and which objects name an owner
//! in their `ownerReferences` (what the garbage collector and the deployment controller follow).
//!
//! Lists by resource and namespace need no index of their own: the store's map is ordered by
//! (group, plural, namespace, name), so they are range scans.

use super::store::ObjKey;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Default)]
pub struct Indexes {
    /// Live objects per namespace (cluster-scoped objects, namespace "", are not counted).
    namespaces: BTreeMap<String, usize>,
    by_uid: HashMap<String, ObjKey>,
    /// Owner uid -> the objects with an `ownerReference` to it.
    owned: HashMap<String, BTreeSet<ObjKey>>,
}

fn uid_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/uid").and_then(Value::as_str)
}

/// The uids of every `ownerReference` of the object.
fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid")?.as_str())
}

fn owner_refs(obj: &Value) -> Option<&Value> {
    obj.pointer("/metadata/ownerReferences")
}

/// The uid in the object's controller `ownerReference`, if it has one.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?
        .get("uid")?
        .as_str()
}

impl Indexes {
    /// Records `new` under `key`, replacing what `old` (the previous version, if any) recorded.
    pub fn update(&mut self, key: &ObjKey, old: Option<&Value>, new: &Value) {
        match old {
            Some(old) => {
                if uid_of(old) != uid_of(new) {
                    self.unlink_uid(key, old);
                    self.link_uid(key, new);
                }
                if owner_refs(old) != owner_refs(new) {
                    self.unlink_owner(key, old);
                    self.link_owner(key, new);
                }
            }
            None => {
                if !key.namespace.is_empty() {
                    *self.namespaces.entry(key.namespace.clone()).or_default() += 1;
                }
                self.link_uid(key, new);
                self.link_owner(key, new);
            }
        }
    }

    /// Forgets the object `old` stored under `key`.
    pub fn remove(&mut self, key: &ObjKey, old: &Value) {
        if let Some(n) = self.namespaces.get_mut(&key.namespace) {
            *n -= 1;
            if *n == 0 {
                self.namespaces.remove(&key.namespace);
            }
        }
        self.unlink_uid(key, old);
        self.unlink_owner(key, old);
    }

    fn link_uid(&mut self, key: &ObjKey, obj: &Value) {
        if let Some(uid) = uid_of(obj).filter(|u| !u.is_empty()) {
            self.by_uid.insert(uid.to_string(), key.clone());
        }
    }

    fn unlink_uid(&mut self, key: &ObjKey, obj: &Value) {
        if let Some(uid) = uid_of(obj) {
            // Only if it still points here: a raw put may have reused the uid elsewhere.
            if self.by_uid.get(uid) == Some(key) {
                self.by_uid.remove(uid);
            }
        }
    }

    fn link_owner(&mut self, key: &ObjKey, obj: &Value) {
        for owner in owner_uids(obj) {
            self.owned
                .entry(owner.to_string())
                .or_default()
                .insert(key.clone());
        }
    }

    fn unlink_owner(&mut self, key: &ObjKey, obj: &Value) {
        for owner in owner_uids(obj) {
            if let Some(set) = self.owned.get_mut(owner) {
                set.remove(key);
                if set.is_empty() {
                    self.owned.remove(owner);
                }
            }
        }
    }

    /// Namespaces holding at least one object, in name order.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    pub fn key_of_uid(&self, uid: &str) -> Option<&ObjKey> {
        self.by_uid.get(uid)
    }

    /// Keys of the objects with an `ownerReference` to this uid, in key order.
    pub fn owned_by(&self, owner_uid: &str) -> impl Iterator<Item = &ObjKey> {
        self.owned.get(owner_uid).into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use crate::sim::changelog::{capacity, LOG_MIN_CAPACITY};
    use crate::sim::store::{ObjKey, Replay, Store};
    use serde_json::{json, Value};

    fn key(group: &'static str, plural: &'static str, ns: &str, name: &str) -> ObjKey {
        ObjKey {
            group,
            plural,
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn obj(name: &str, uid: &str, owner: Option<&str>) -> Value {
        let mut v = json!({"metadata": {"name": name, "uid": uid}});
        if let Some(o) = owner {
            v["metadata"]["ownerReferences"] = json!([{"uid": o, "controller": true}]);
        }
        v
    }

    fn names(list: &[Value]) -> Vec<&str> {
        list.iter()
            .map(|v| v["metadata"]["name"].as_str().unwrap())
            .collect()
    }

    /// Neighbours in sort order on every side: other namespaces that share a prefix, other
    /// resources of the same group, the same plural in another group.
    fn crowded() -> Store {
        let s = Store::new();
        s.write(|t| {
            for (g, p, ns, n) in [
                ("", "configmaps", "a", "x"),
                ("", "configmaps", "ab", "y"),
                ("", "configmaps", "a", "z"),
                ("", "configmaps", "b", "w"),
                ("", "secrets", "a", "s"),
                ("apps", "configmaps", "a", "q"),
                ("", "namespaces", "", "a"),
            ] {
                t.put(key(g, p, ns, n), obj(n, &format!("u-{n}"), None));
            }
        });
        s
    }

    #[test]
    fn a_namespace_list_returns_exactly_that_namespaces_objects_in_name_order() {
        let s = crowded();
        s.read(|t| {
            assert_eq!(names(&t.list("", "configmaps", Some("a"))), ["x", "z"]);
            assert_eq!(names(&t.list("", "configmaps", Some("ab"))), ["y"]);
            assert_eq!(
                names(&t.list("", "configmaps", Some("c"))),
                Vec::<&str>::new()
            );
            assert_eq!(
                names(&t.list("", "configmaps", None)),
                ["x", "z", "y", "w"],
                "all namespaces, in (namespace, name) order"
            );
            assert_eq!(names(&t.list("apps", "configmaps", None)), ["q"]);
            assert_eq!(names(&t.list("", "secrets", Some("a"))), ["s"]);
            assert_eq!(names(&t.list("", "namespaces", None)), ["a"]);
            assert_eq!(
                t.namespaces(),
                ["a", "ab", "b"],
                "cluster-scoped objects count for none"
            );
        });
    }

    #[test]
    fn deletes_leave_lists_namespaces_and_uids_consistent() {
        let s = crowded();
        s.write(|t| {
            t.delete(&key("", "configmaps", "b", "w")).unwrap();
            t.delete(&key("", "configmaps", "a", "x")).unwrap();
        });
        s.read(|t| {
            assert_eq!(names(&t.list("", "configmaps", None)), ["z", "y"]);
            assert_eq!(t.namespaces(), ["a", "ab"], "b held only w");
            assert_eq!(t.key_of_uid("u-x"), None);
            assert_eq!(t.key_of_uid("u-z"), Some(&key("", "configmaps", "a", "z")));
            assert_eq!(t.len(), 5);
        });
        assert!(s
            .write(|t| t.delete(&key("", "configmaps", "b", "w")))
            .is_none());
    }

    #[test]
    fn owner_index_follows_puts_reowning_and_deletes() {
        let s = Store::new();
        let rs = |n: &str| key("apps", "replicasets", "prod", n);
        s.write(|t| {
            t.put(
                key("apps", "deployments", "prod", "web"),
                obj("web", "d1", None),
            );
            t.put(rs("web-1"), obj("web-1", "r1", Some("d1")));
            t.put(rs("web-2"), obj("web-2", "r2", Some("d1")));
            t.put(rs("api-1"), obj("api-1", "r3", Some("d2")));
            t.put(
                key("", "pods", "prod", "web-1-p"),
                obj("web-1-p", "p1", Some("d1")),
            );
        });
        let owned = |owner: &str| -> Vec<String> {
            s.read(|t| {
                t.owned_by(owner, "apps", "replicasets")
                    .into_iter()
                    .map(|(k, _)| k.name)
                    .collect()
            })
        };
        assert_eq!(owned("d1"), ["web-1", "web-2"], "only the asked resource");
        // A rewrite that keeps the owner keeps the entry; one that changes it moves it.
        s.write(|t| {
            let mut v = obj("web-1", "r1", Some("d1"));
            v["spec"] = json!({"replicas": 2});
            t.put(rs("web-1"), v);
            t.put(rs("web-2"), obj("web-2", "r2", Some("d2")));
        });
        assert_eq!(owned("d1"), ["web-1"]);
        assert_eq!(owned("d2"), ["api-1", "web-2"]);
        s.write(|t| {
            t.delete(&rs("web-1"));
            t.put(rs("api-1"), obj("api-1", "r3", None));
        });
        assert!(owned("d1").is_empty());
        assert_eq!(owned("d2"), ["web-2"]);
    }

    #[test]
    fn the_change_log_grows_with_the_cluster_so_a_seeded_fleet_can_still_be_watched() {
        assert_eq!(capacity(0), LOG_MIN_CAPACITY);
        let s = Store::new();
        let n = LOG_MIN_CAPACITY + 2_000;
        let k = |i: usize| key("apps", "deployments", "fleet", &format!("d{i}"));
        s.write(|t| {
            for i in 0..n {
                t.put(k(i), obj(&format!("d{i}"), &format!("u{i}"), None));
            }
        });
        // A client lists here; then the controller writes status to every object twice.
        let listed = s.read(|t| t.current_rv());
        for round in 1..=2 {
            s.write(|t| {
                for i in 0..n {
                    let mut v = t.get(&k(i)).unwrap().clone();
                    v["status"] = json!({"round": round});
                    t.put(k(i), v);
                }
            });
        }
        match s.replay_from(listed) {
            Replay::From { changes, .. } => assert_eq!(changes.len(), 2 * n),
            Replay::Expired { .. } => panic!("a list taken after seeding must stay watchable"),
        }
        assert!(s.log_len() <= s.log_capacity());
    }

    #[test]
    fn churn_beyond_the_capacity_still_expires_old_versions() {
        let s = Store::new();
        let k = key("", "configmaps", "prod", "c");
        let first = s.write(|t| t.put(k.clone(), obj("c", "u", None)));
        let rv: u64 = first["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        s.write(|t| {
            for i in 0..LOG_MIN_CAPACITY + 5 {
                let mut v = t.get(&k).unwrap().clone();
                v["data"] = json!({"i": i.to_string()});
                t.put(k.clone(), v);
            }
        });
        assert!(matches!(s.replay_from(rv), Replay::Expired { .. }));
        assert_eq!(s.log_len(), LOG_MIN_CAPACITY);
    }

    #[test]
    fn a_feed_sees_every_change_however_far_behind_it_is() {
        let s = Store::new();
        let mut feed = s.feed();
        s.write(|t| {
            for i in 0..20_000 {
                t.put(
                    key("", "configmaps", "x", &format!("c{i}")),
                    obj("c", "", None),
                );
            }
        });
        let mut seen = 0;
        while feed.try_recv().is_ok() {
            seen += 1;
        }
        assert_eq!(seen, 20_000, "more than the broadcast ring holds");
    }
}
