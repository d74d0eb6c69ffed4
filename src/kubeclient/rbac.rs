//! Every Kubernetes permission backout needs, in one list: deploy/base/rbac.yaml grants exactly
//! these (tests/deploy.rs renders the kustomize overlays and compares), and every request the
//! daemon, its actuator and its HA code make against the simulator in tests/deploy.rs must be
//! covered by one of them, while every grant must be used. A new call to the API server adds its
//! grant here, then to the manifests.

/// Where a grant applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every namespace with policies (a ClusterRole; per-namespace Roles work too).
    Cluster,
    /// backout's own namespace only (a Role): Leases, the fleet guard's ConfigMap.
    OwnNamespace,
}

/// One rule: verbs on a resource (`plural` or `plural/subresource`) of an API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub scope: Scope,
    /// `""` for the core group.
    pub group: &'static str,
    pub resource: &'static str,
    /// Empty: any object of the resource.
    pub names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub why: &'static str,
}

/// The fleet guard's counting ConfigMap in backout's namespace.
pub const FLEET_GUARD_CONFIGMAP: &str = "backout-fleet-guard";

/// The versions completed rollbacks took out, in backout's namespace.
pub const BAD_VERSIONS_CONFIGMAP: &str = "backout-bad-versions";

pub const GRANTS: &[Grant] = &[
    Grant {
        scope: Scope::Cluster,
        group: "apps",
        resource: "deployments",
        names: &[],
        verbs: &["get", "list", "watch", "patch"],
        why: "read stable and canary (one watch per namespace with policies, GET while it is not synced); pause, undo (JSON patch of the template), annotate the last known good",
    },
    Grant {
        scope: Scope::Cluster,
        group: "apps",
        resource: "deployments/scale",
        names: &[],
        verbs: &["patch"],
        why: "scale the canary to zero and pre-scale the stable",
    },
    Grant {
        scope: Scope::Cluster,
        group: "apps",
        resource: "replicasets",
        names: &[],
        verbs: &["list"],
        why: "find the ReplicaSet of the last known good revision (undo is client-side)",
    },
    Grant {
        scope: Scope::Cluster,
        group: "networking.istio.io",
        resource: "virtualservices",
        names: &[],
        verbs: &["get", "patch"],
        why: "route all traffic to the stable",
    },
    Grant {
        scope: Scope::Cluster,
        group: "gateway.networking.k8s.io",
        resource: "httproutes",
        names: &[],
        verbs: &["get", "patch"],
        why: "route all traffic to the stable on a Gateway API route (one rule, JSON patch with test ops)",
    },
    Grant {
        scope: Scope::Cluster,
        group: "autoscaling",
        resource: "horizontalpodautoscalers",
        names: &[],
        verbs: &["get", "list", "patch", "delete", "create"],
        why: "remove the canary's HPA (backed up first), raise the stable HPA's minReplicas, re-create on restore",
    },
    Grant {
        scope: Scope::Cluster,
        group: "",
        resource: "configmaps",
        names: &[],
        verbs: &["get", "list", "create", "patch"],
        why: "backups of every object before it changes; listed at start-up and on takeover to resume rollbacks left under way",
    },
    Grant {
        scope: Scope::Cluster,
        group: "events.k8s.io",
        resource: "events",
        names: &[],
        verbs: &["create"],
        why: "one Event per action step (created, never patched: no repeat counting)",
    },
    Grant {
        scope: Scope::OwnNamespace,
        group: "coordination.k8s.io",
        resource: "leases",
        names: &[],
        verbs: &["list", "create", "update"],
        why: "leader election and shards: one LIST per round, create the first time, update to renew, take over or release",
    },
    Grant {
        scope: Scope::OwnNamespace,
        group: "",
        resource: "configmaps",
        names: &[FLEET_GUARD_CONFIGMAP, BAD_VERSIONS_CONFIGMAP],
        verbs: &["get", "update"],
        why: "the fleet guard's rollback count, and the bad versions completed rollbacks recorded",
    },
    Grant {
        scope: Scope::OwnNamespace,
        group: "",
        resource: "configmaps",
        names: &[],
        verbs: &["create"],
        why: "the fleet guard's ConfigMap, the first time (create cannot be limited by name)",
    },
];

/// One request as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    pub verb: String,
    pub group: String,
    /// `plural` or `plural/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        if let Some(n) = &self.name {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

impl Access {
    /// The access of `method` on `path?query` (`None` for discovery and other non-resource
    /// paths, which every authenticated client may read).
    pub fn parse(method: &str, path_and_query: &str) -> Option<Self> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segs.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            rest => (None, rest),
        };
        let (resource, name) = match rest {
            [res] => (res.to_string(), None),
            [res, name] => (res.to_string(), Some(name.to_string())),
            [res, name, sub] => (format!("{res}/{sub}"), Some(name.to_string())),
            _ => return None,
        };
        let watch = query
            .split('&')
            .any(|kv| matches!(kv, "watch=true" | "watch=1"));
        let verb = match (method, name.is_some()) {
            ("GET", _) if watch => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return None,
        };
        Some(Access {
            verb: verb.into(),
            group: group.into(),
            resource,
            namespace,
            name,
        })
    }

    /// The grant that allows this access, for a daemon running in `own_namespace`.
    pub fn granted_by(&self, own_namespace: &str) -> Option<&'static Grant> {
        GRANTS.iter().find(|g| {
            let in_scope = match g.scope {
                Scope::Cluster => true,
                Scope::OwnNamespace => self.namespace.as_deref() == Some(own_namespace),
            };
            let named =
                g.names.is_empty() || self.name.as_deref().is_some_and(|n| g.names.contains(&n));
            in_scope
                && named
                && g.group == self.group
                && g.resource == self.resource
                && g.verbs.contains(&self.verb.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_rbac_reads_them() {
        let a = Access::parse(
            "PATCH",
            "/apis/apps/v1/namespaces/demo/deployments/shop-canary/scale?fieldManager=backout",
        )
        .unwrap();
        assert_eq!(
            a.to_string(),
            "patch apps/deployments/scale in demo (shop-canary)"
        );
        assert!(a.granted_by("backout-system").is_some());
        let w = Access::parse(
            "GET",
            "/apis/apps/v1/namespaces/demo/deployments?watch=true&timeoutSeconds=290",
        )
        .unwrap();
        assert_eq!((w.verb.as_str(), w.name), ("watch", None));
        let lease = Access::parse(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/backout-system/leases?",
        )
        .unwrap();
        assert!(lease.granted_by("backout-system").is_some());
        assert!(
            lease.granted_by("other").is_none(),
            "leases only in backout's namespace"
        );
        let guard = Access::parse(
            "PUT",
            "/api/v1/namespaces/backout-system/configmaps/backout-fleet-guard",
        )
        .unwrap();
        assert!(guard.granted_by("backout-system").is_some());
        let other = Access::parse("PUT", "/api/v1/namespaces/backout-system/configmaps/x").unwrap();
        assert!(other.granted_by("backout-system").is_none());
        assert!(Access::parse("GET", "/apis").is_none());
        assert!(Access::parse("GET", "/version").is_none());
    }
}
