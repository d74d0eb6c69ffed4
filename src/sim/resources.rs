//! The resource types the simulator serves. One static table drives discovery, URL routing and
//! per-kind semantics, so kubectl's view (discovery) and the REST behaviour can never disagree.

/// A subresource served under `<plural>/<name>/<sub>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `autoscaling/v1` Scale view of `spec.replicas` (kubectl scale, HPA).
    Scale,
    /// The `status` stanza alone (controllers write here; the main endpoint ignores it).
    Status,
}

/// One served resource type.
#[derive(Debug)]
pub struct ResourceDef {
    pub group: &'static str,
    /// Served versions, preferred first. Objects are stored once and relabelled per request.
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// Custom resources reject strategic merge patch with 415, like a real apiserver.
    pub custom: bool,
    /// Whether `metadata.generation` is tracked (bumped when anything but metadata/status changes).
    pub generation: bool,
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Every resource the simulator knows; anything else is a 404.
pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        versions: &["v1"],
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        subresources: &[],
        custom: false,
        generation: false,
    },
    ResourceDef {
        group: "",
        versions: &["v1"],
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        verbs: ALL_VERBS,
        subresources: &[],
        custom: false,
        generation: false,
    },
    ResourceDef {
        group: "",
        versions: &["v1"],
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        verbs: ALL_VERBS,
        subresources: &[],
        custom: false,
        generation: false,
    },
    ResourceDef {
        group: "apps",
        versions: &["v1"],
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        verbs: ALL_VERBS,
        subresources: &[Subresource::Scale, Subresource::Status],
        custom: false,
        generation: true,
    },
    ResourceDef {
        group: "apps",
        versions: &["v1"],
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        verbs: ALL_VERBS,
        subresources: &[Subresource::Scale, Subresource::Status],
        custom: false,
        generation: true,
    },
    ResourceDef {
        group: "autoscaling",
        versions: &["v2"],
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        short_names: &["hpa"],
        verbs: ALL_VERBS,
        subresources: &[Subresource::Status],
        custom: false,
        generation: true,
    },
    ResourceDef {
        group: "events.k8s.io",
        versions: &["v1"],
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        verbs: ALL_VERBS,
        subresources: &[],
        custom: false,
        generation: false,
    },
    ResourceDef {
        group: "coordination.k8s.io",
        versions: &["v1"],
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        verbs: ALL_VERBS,
        subresources: &[],
        custom: false,
        generation: false,
    },
    ResourceDef {
        group: "networking.istio.io",
        versions: &["v1", "v1beta1"],
        plural: "virtualservices",
        singular: "virtualservice",
        kind: "VirtualService",
        namespaced: true,
        short_names: &["vs"],
        verbs: ALL_VERBS,
        subresources: &[Subresource::Status],
        custom: true,
        generation: true,
    },
    // Gateway API (standard channel): served at v1 and, as the CRD still does, v1beta1.
    ResourceDef {
        group: "gateway.networking.k8s.io",
        versions: &["v1", "v1beta1"],
        plural: "httproutes",
        singular: "httproute",
        kind: "HTTPRoute",
        namespaced: true,
        short_names: &[],
        verbs: ALL_VERBS,
        subresources: &[Subresource::Status],
        custom: true,
        generation: true,
    },
];

impl ResourceDef {
    /// `deployments.apps` / `configmaps`: the name the apiserver uses in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `apps/v1` or `v1`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// `Deployment.apps` as used in "is invalid" messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }
}

/// Finds the resource served at `group/version` under `plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural && r.versions.contains(&version))
}

/// The resource for a stored group and plural (any version).
pub fn by_plural(group: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.is(group, plural))
}
