//! The actuator's only contact with the API server: read a snapshot, perform one write, and manage
//! the backup ConfigMap. Every call here is a single request; retries live in the executor.

use super::objects::{self, Observed};
use super::steps::{Mutation, Target};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::Client;
use serde_json::{json, Value};

/// Which Istio API version serves VirtualServices (`v1` since Istio 1.22, `v1beta1` before).
pub fn virtual_service_resource(version: &str) -> ApiResource {
    ApiResource {
        group: "networking.istio.io".into(),
        version: version.into(),
        api_version: format!("networking.istio.io/{version}"),
        kind: "VirtualService".into(),
        plural: "virtualservices".into(),
    }
}

/// Gateway API HTTPRoutes (`gateway.networking.k8s.io/v1`, GA since Gateway API 1.0).
pub fn http_route_resource() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    }
}

/// What one observation reads: the two Deployments and the router object, if any.
#[derive(Debug, Clone)]
pub struct Names {
    pub stable: String,
    pub canary: String,
    /// `VirtualService` or `HttpRoute`; `None` in `replicas` mode.
    pub router: Option<Target>,
}

#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// This rollback's place at the shared gate (see `pace`).
    pub pace: super::pace::Pace,
    pub namespace: String,
    pub vs_resource: ApiResource,
}

fn to_value<T: serde::Serialize>(x: &T) -> Result<Value, kube::Error> {
    serde_json::to_value(x).map_err(kube::Error::SerdeError)
}

impl Cluster {
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    fn hpas(&self) -> Api<HorizontalPodAutoscaler> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    fn vs(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &self.vs_resource)
    }
    fn http_routes(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &http_route_resource())
    }
    /// The API of a router target (`None` for Deployments and HPAs).
    fn router_api(&self, target: &Target) -> Option<(Api<DynamicObject>, String)> {
        match target {
            Target::VirtualService(n) => Some((self.vs(), n.clone())),
            Target::HttpRoute(n) => Some((self.http_routes(), n.clone())),
            Target::Deployment(_) | Target::Hpa(_) => None,
        }
    }
    pub fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Read everything the plan looks at.
    pub async fn observe(&self, names: &Names) -> Result<Observed, kube::Error> {
        let stable_obj = to_value(&self.deployments().get(&names.stable).await?)?;
        let canary_obj = to_value(&self.deployments().get(&names.canary).await?)?;
        let selector = stable_obj
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let rs_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let replica_sets = rs_api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .map(to_value)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|rs| objects::controlled_by(rs, &stable_obj))
            .collect();
        let router = match names.router.as_ref().and_then(|t| self.router_api(t)) {
            Some((api, name)) => to_value(&api.get(&name).await?)?,
            None => Value::Null,
        };
        let hpas = self
            .hpas()
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(to_value)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Observed {
            stable: stable_obj,
            canary: canary_obj,
            stable_replica_sets: replica_sets,
            router,
            hpas,
        })
    }

    /// Perform one write. With `dry_run`, the server validates and answers without persisting.
    pub async fn apply(&self, m: &Mutation, dry_run: bool) -> Result<(), kube::Error> {
        let pp = if dry_run {
            PatchParams::default().dry_run()
        } else {
            PatchParams::default()
        };
        let json_patch = |v: &Value| -> Result<json_patch::Patch, kube::Error> {
            serde_json::from_value(v.clone()).map_err(kube::Error::SerdeError)
        };
        match m {
            Mutation::Patch { target, patch } => {
                let p = Patch::Json::<()>(json_patch(patch)?);
                match target {
                    Target::Deployment(n) => {
                        self.deployments().patch(n, &pp, &p).await?;
                    }
                    Target::VirtualService(n) => {
                        self.vs().patch(n, &pp, &p).await?;
                    }
                    Target::HttpRoute(n) => {
                        self.http_routes().patch(n, &pp, &p).await?;
                    }
                    Target::Hpa(n) => {
                        self.hpas().patch(n, &pp, &p).await?;
                    }
                }
            }
            Mutation::Scale { target, replicas } => {
                let p = Patch::Merge(json!({"spec": {"replicas": replicas}}));
                match target {
                    Target::Deployment(n) => {
                        self.deployments().patch_scale(n, &pp, &p).await?;
                    }
                    Target::Hpa(n) | Target::VirtualService(n) | Target::HttpRoute(n) => {
                        return Err(kube::Error::Api(Box::new(kube::core::Status {
                            code: 400,
                            reason: "BadRequest".into(),
                            message: format!("{n:?} has no scale subresource"),
                            ..Default::default()
                        })));
                    }
                }
            }
            Mutation::Delete { target } => {
                let dp = DeleteParams {
                    dry_run,
                    ..DeleteParams::default()
                };
                let result = match target {
                    Target::Hpa(n) => self.hpas().delete(n, &dp).await.map(|_| ()),
                    Target::Deployment(n) => self.deployments().delete(n, &dp).await.map(|_| ()),
                    Target::VirtualService(n) => self.vs().delete(n, &dp).await.map(|_| ()),
                    Target::HttpRoute(n) => self.http_routes().delete(n, &dp).await.map(|_| ()),
                };
                match result {
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    other => other?,
                }
            }
        }
        Ok(())
    }

    /// Every backup ConfigMap of this namespace (label `app.kubernetes.io/managed-by=backout`).
    pub async fn list_backups(&self) -> Result<Vec<Value>, kube::Error> {
        let lp = ListParams::default().labels(&format!("{}=backout", super::backup::MANAGED_BY));
        let list = self.config_maps().list(&lp).await?;
        list.items.iter().map(to_value).collect()
    }

    /// Sets one annotation on a Deployment with a merge patch (other annotations are kept).
    pub async fn annotate_deployment(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.deployments()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    pub async fn get_backup(&self, name: &str) -> Result<Option<Value>, kube::Error> {
        match self.config_maps().get_opt(name).await? {
            Some(cm) => Ok(Some(to_value(&cm)?)),
            None => Ok(None),
        }
    }

    /// Create the backup; `Ok(false)` when it already exists (a rollback of this canary revision
    /// was started before).
    pub async fn create_backup(&self, cm: &Value) -> Result<bool, kube::Error> {
        let typed: ConfigMap =
            serde_json::from_value(cm.clone()).map_err(kube::Error::SerdeError)?;
        match self
            .config_maps()
            .create(&PostParams::default(), &typed)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn patch_backup(&self, name: &str, patch: &Value) -> Result<(), kube::Error> {
        let p: json_patch::Patch =
            serde_json::from_value(patch.clone()).map_err(kube::Error::SerdeError)?;
        self.config_maps()
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(p))
            .await?;
        Ok(())
    }

    /// Put a saved object back: its spec onto the live object, or re-create it if it is gone.
    pub async fn restore_object(
        &self,
        kind: super::backup::Kind,
        saved: &Value,
    ) -> Result<(), kube::Error> {
        use super::backup::Kind;
        let name = objects::name(saved);
        let spec = saved.get("spec").cloned().unwrap_or(Value::Null);
        let merge = Patch::Merge(json!({"spec": spec}));
        let pp = PatchParams::default();
        match kind {
            Kind::Deployment => {
                // Replace the template whole: a merge patch would keep fields added since.
                let p = json!([{"op": "replace", "path": "/spec", "value": spec}]);
                let p: json_patch::Patch =
                    serde_json::from_value(p).map_err(kube::Error::SerdeError)?;
                self.deployments()
                    .patch(&name, &pp, &Patch::Json::<()>(p))
                    .await?;
            }
            Kind::VirtualService | Kind::HttpRoute => {
                let p = json!([{"op": "replace", "path": "/spec", "value": spec}]);
                let p: json_patch::Patch =
                    serde_json::from_value(p).map_err(kube::Error::SerdeError)?;
                let api = match kind {
                    Kind::HttpRoute => self.http_routes(),
                    _ => self.vs(),
                };
                api.patch(&name, &pp, &Patch::Json::<()>(p)).await?;
            }
            Kind::Hpa => {
                if self.hpas().get_opt(&name).await?.is_some() {
                    self.hpas().patch(&name, &pp, &merge).await?;
                } else {
                    let mut fresh = saved.clone();
                    if let Some(meta) = fresh.get_mut("metadata").and_then(Value::as_object_mut) {
                        for k in ["resourceVersion", "uid", "creationTimestamp", "generation"] {
                            meta.remove(k);
                        }
                    }
                    if let Some(obj) = fresh.as_object_mut() {
                        obj.remove("status");
                    }
                    let typed: HorizontalPodAutoscaler =
                        serde_json::from_value(fresh).map_err(kube::Error::SerdeError)?;
                    self.hpas().create(&PostParams::default(), &typed).await?;
                }
            }
        }
        Ok(())
    }
}
