//! What a request is, for the metrics' labels and the limiter's watch exemption: its verb and
//! resource, read from the method, the URL path and the `watch` query parameter.
//!
//! Labels stay bounded: the verb is a closed set, the resource is the plural from the path (the
//! set of APIs backout calls), and object names and namespaces are never labels.

use hyper::{Method, Request};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

/// Kubernetes verb, as in the API server's own audit and metrics.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Verb {
    get,
    list,
    watch,
    create,
    update,
    patch,
    delete,
    /// Any other method (HEAD, OPTIONS, ...), or a path that is not a resource (discovery).
    other,
}

/// How a request ended, for `backout_kubernetes_requests_total{outcome}`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RequestOutcome {
    /// 1xx-3xx.
    success,
    /// 4xx, including 404 (often expected) and 409 conflicts.
    client_error,
    /// 5xx.
    server_error,
    /// No response headers within the deadline.
    timeout,
    /// No HTTP response at all: connection refused or cut, TLS, auth plugin errors.
    transport_error,
}

impl RequestOutcome {
    pub fn from_status(status: hyper::StatusCode) -> Self {
        if status.is_server_error() {
            Self::server_error
        } else if status.is_client_error() {
            Self::client_error
        } else {
            Self::success
        }
    }
}

/// Labels of `backout_kubernetes_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: Verb,
    pub resource: String,
}

/// Labels of `backout_kubernetes_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestOutcomeLabels {
    pub verb: Verb,
    pub resource: String,
    pub outcome: RequestOutcome,
}

/// Verb and resource of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKind {
    pub verb: Verb,
    /// Plural resource name (`deployments`), or `other` for non-resource paths.
    pub resource: String,
}

impl RequestKind {
    pub fn of<B>(req: &Request<B>) -> Self {
        Self::parse(req.method(), req.uri().path(), req.uri().query())
    }

    /// `GET /apis/apps/v1/namespaces/prod/deployments?watch=true` is a watch of deployments.
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Self {
        let Some((resource, named)) = resource_of(path) else {
            return Self {
                verb: Verb::other,
                resource: "other".into(),
            };
        };
        let verb = match *method {
            Method::GET if is_watch(query) => Verb::watch,
            Method::GET if named => Verb::get,
            Method::GET => Verb::list,
            Method::POST => Verb::create,
            Method::PUT => Verb::update,
            Method::PATCH => Verb::patch,
            Method::DELETE => Verb::delete,
            _ => Verb::other,
        };
        Self {
            verb,
            resource: resource.to_string(),
        }
    }

    pub fn is_watch(&self) -> bool {
        self.verb == Verb::watch
    }

    pub fn is_list(&self) -> bool {
        self.verb == Verb::list
    }
}

/// `watch=true` or `watch=1` (older clients), as the API server reads it.
fn is_watch(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch=True"))
    })
}

/// The resource plural and whether the path names one object. Paths are
/// `/api/v1/...` or `/apis/<group>/<version>/...`, then `[namespaces/<ns>/]<resource>[/<name>[/<sub>]]`.
fn resource_of(path: &str) -> Option<(&str, bool)> {
    let mut segs = path.trim_matches('/').split('/');
    match segs.next()? {
        "api" => {
            segs.next()?;
        }
        "apis" => {
            segs.next()?;
            segs.next()?;
        }
        _ => return None,
    }
    let rest: Vec<&str> = segs.filter(|s| !s.is_empty()).collect();
    match rest.as_slice() {
        [] => None,
        // A namespace's own subresources: /api/v1/namespaces/<ns>/status | finalize.
        ["namespaces", _, "status" | "finalize"] => Some(("namespaces", true)),
        ["namespaces", _, resource, more @ ..] => Some((resource, !more.is_empty())),
        [resource, more @ ..] => Some((resource, !more.is_empty())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(method: Method, uri: &str) -> (Verb, String) {
        let uri: hyper::Uri = uri.parse().unwrap();
        let k = RequestKind::parse(&method, uri.path(), uri.query());
        (k.verb, k.resource)
    }

    #[test]
    fn verbs_and_resources_from_method_path_and_watch() {
        let cases = [
            (
                Method::GET,
                "/apis/apps/v1/namespaces/prod/deployments/web",
                Verb::get,
                "deployments",
            ),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/prod/deployments?labelSelector=a",
                Verb::list,
                "deployments",
            ),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/prod/deployments?watch=true&resourceVersion=5",
                Verb::watch,
                "deployments",
            ),
            (
                Method::GET,
                "/apis/apps/v1/deployments?watch=1",
                Verb::watch,
                "deployments",
            ),
            (
                Method::PATCH,
                "/apis/networking.istio.io/v1/namespaces/prod/virtualservices/web",
                Verb::patch,
                "virtualservices",
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/prod/deployments/web/scale",
                Verb::patch,
                "deployments",
            ),
            (
                Method::POST,
                "/api/v1/namespaces/prod/configmaps",
                Verb::create,
                "configmaps",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/prod/leases/backout",
                Verb::update,
                "leases",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/prod/configmaps/b",
                Verb::delete,
                "configmaps",
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/prod/events",
                Verb::create,
                "events",
            ),
            (Method::GET, "/api/v1/namespaces", Verb::list, "namespaces"),
            (
                Method::GET,
                "/api/v1/namespaces/prod",
                Verb::get,
                "namespaces",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/prod/finalize",
                Verb::update,
                "namespaces",
            ),
            (Method::GET, "/version", Verb::other, "other"),
            (Method::GET, "/apis", Verb::other, "other"),
            (Method::GET, "/apis/apps/v1", Verb::other, "other"),
        ];
        for (method, uri, verb, resource) in cases {
            assert_eq!(kind(method, uri), (verb, resource.to_string()), "{uri}");
        }
    }

    #[test]
    fn watch_false_is_not_a_watch() {
        let (verb, _) = kind(Method::GET, "/api/v1/namespaces/p/configmaps?watch=false");
        assert_eq!(verb, Verb::list);
    }

    #[test]
    fn outcomes_by_status_class() {
        use hyper::StatusCode;
        assert_eq!(
            RequestOutcome::from_status(StatusCode::OK),
            RequestOutcome::success
        );
        assert_eq!(
            RequestOutcome::from_status(StatusCode::NOT_FOUND),
            RequestOutcome::client_error
        );
        assert_eq!(
            RequestOutcome::from_status(StatusCode::SERVICE_UNAVAILABLE),
            RequestOutcome::server_error
        );
    }
}
