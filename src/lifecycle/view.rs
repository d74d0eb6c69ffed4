//! Reading a `DeploymentView` off a real Deployment object.

use super::{DeploymentView, LAST_KNOWN_GOOD_ANNOTATION, REVISION_ANNOTATION};
use k8s_openapi::api::apps::v1::Deployment;

/// The template hash: stable across processes and releases (see [`crate::hash`]), because it
/// ends up in annotations and audit records that outlive the process.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    crate::hash::fnv1a(bytes)
}

impl DeploymentView {
    pub fn from_deployment(d: &Deployment) -> Self {
        let annotations = d.metadata.annotations.as_ref();
        let ann = |k: &str| {
            annotations
                .and_then(|a| a.get(k))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let spec = d.spec.as_ref();
        let template = spec.map(|s| {
            let mut t = s.template.clone();
            if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                labels.remove("pod-template-hash");
            }
            t
        });
        let template_hash = template
            .as_ref()
            .and_then(|t| serde_json::to_vec(t).ok())
            .map(|bytes| format!("{:016x}", stable_hash(&bytes)))
            .unwrap_or_default();
        let image = template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        DeploymentView {
            name: d.metadata.name.clone().unwrap_or_default(),
            revision: ann(REVISION_ANNOTATION),
            template_hash,
            image,
            replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
            last_known_good: ann(LAST_KNOWN_GOOD_ANNOTATION),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str, hash_label: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "annotations": {"deployment.kubernetes.io/revision": "7",
                          "backout.dev/last-known-good-revision": "6"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": hash_label}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn view_reads_revision_image_and_known_good() {
        let v = DeploymentView::from_deployment(&deployment("web:2", "abc"));
        assert_eq!(v.revision, Some(7));
        assert_eq!(v.last_known_good, Some(6));
        assert_eq!(v.image, "web:2");
        assert_eq!(v.replicas, 3);
    }

    #[test]
    fn template_hash_ignores_pod_template_hash_but_not_the_image() {
        let a = DeploymentView::from_deployment(&deployment("web:2", "abc"));
        let b = DeploymentView::from_deployment(&deployment("web:2", "xyz"));
        let c = DeploymentView::from_deployment(&deployment("web:3", "abc"));
        assert_eq!(a.template_hash, b.template_hash);
        assert_ne!(a.template_hash, c.template_hash);
    }
}
